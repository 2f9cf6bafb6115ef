#!/usr/bin/env python3
"""Steady file churn for the shoal soak benchmark (tests/bench/soak.sh).

usage: churn.py ROOT --init N [--seed S]
       churn.py ROOT --rate R [--seed S] [--control DIR]

--init N creates N small files (0..16 KiB of seeded random bytes) spread over
a dozen directories below ROOT and exits. Without --init the script changes
ROOT at R operations per second until it is killed (SIGTERM ends it between
operations): it creates files, edits them in place (overwrite a range,
append, or truncate), deletes them and renames them (within a directory or
into another), keeping the file count near where it started. The same seed
gives the same sequence of operations.

With --control DIR it can be paused: while DIR/pause exists it finishes the
current operation, creates DIR/paused and waits; when DIR/pause is removed it
removes DIR/paused and goes on. Every 1 s it rewrites DIR/ops with the
number of operations done so far.
"""

import argparse
import os
import random
import signal
import sys
import time

DIRS = ["d%02d" % i for i in range(12)]
MAX_SIZE = 16 * 1024

stop = False


def on_term(signum, frame):
    global stop
    stop = True


def blob(rng, n):
    return rng.randbytes(n) if hasattr(rng, "randbytes") else bytes(rng.getrandbits(8) for _ in range(n))


def listing(root):
    files = []
    for d in DIRS:
        p = os.path.join(root, d)
        try:
            files.extend(os.path.join(d, n) for n in os.listdir(p))
        except FileNotFoundError:
            pass
    files.sort()
    return files


def init(root, n, rng):
    for d in DIRS:
        os.makedirs(os.path.join(root, d), exist_ok=True)
    for i in range(n):
        rel = os.path.join(rng.choice(DIRS), "f%05d.bin" % i)
        with open(os.path.join(root, rel), "wb") as f:
            f.write(blob(rng, rng.randrange(MAX_SIZE)))
    print("files: %d" % n)


class Churn:
    def __init__(self, root, rng):
        self.root = root
        self.rng = rng
        self.files = listing(root)
        self.target = max(len(self.files), 10)
        self.serial = 0

    def path(self, rel):
        return os.path.join(self.root, rel)

    def new_name(self):
        self.serial += 1
        return os.path.join(self.rng.choice(DIRS), "n%06d-%d.bin" % (self.serial, self.rng.randrange(1000)))

    def create(self):
        rel = self.new_name()
        with open(self.path(rel), "wb") as f:
            f.write(blob(self.rng, self.rng.randrange(MAX_SIZE)))
        self.files.append(rel)

    def edit(self):
        rel = self.rng.choice(self.files)
        size = os.path.getsize(self.path(rel))
        kind = self.rng.randrange(3)
        with open(self.path(rel), "r+b") as f:
            if kind == 0 and size > 0:  # overwrite a range in place
                off = self.rng.randrange(size)
                f.seek(off)
                f.write(blob(self.rng, self.rng.randrange(1, 4096)))
            elif kind == 1 or size == 0:  # append
                f.seek(0, os.SEEK_END)
                f.write(blob(self.rng, self.rng.randrange(1, 2048)))
            else:  # truncate
                f.truncate(self.rng.randrange(size))

    def delete(self):
        rel = self.files.pop(self.rng.randrange(len(self.files)))
        os.unlink(self.path(rel))

    def rename(self):
        i = self.rng.randrange(len(self.files))
        rel = self.files[i]
        new = self.new_name()
        os.rename(self.path(rel), self.path(new))
        self.files[i] = new

    def step(self):
        n = len(self.files)
        if n < self.target * 0.8:
            op = self.create
        elif n > self.target * 1.2:
            op = self.delete
        else:
            op = self.rng.choices([self.create, self.edit, self.delete, self.rename], [3, 4, 3, 2])[0]
        if op is not self.create and not self.files:
            op = self.create
        op()


def run(root, rate, rng, control):
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    churn = Churn(root, rng)
    interval = 1.0 / rate
    ops = 0
    next_t = time.monotonic()
    last_report = 0.0
    while not stop:
        if control and os.path.exists(os.path.join(control, "pause")):
            open(os.path.join(control, "paused"), "w").close()
            while os.path.exists(os.path.join(control, "pause")) and not stop:
                time.sleep(0.05)
            os.unlink(os.path.join(control, "paused"))
            next_t = time.monotonic()
            continue
        churn.step()
        ops += 1
        now = time.monotonic()
        if control and now - last_report >= 1.0:
            with open(os.path.join(control, "ops.tmp"), "w") as f:
                f.write("%d %d\n" % (ops, len(churn.files)))
            os.replace(os.path.join(control, "ops.tmp"), os.path.join(control, "ops"))
            last_report = now
        next_t += interval
        delay = next_t - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        else:
            next_t = time.monotonic()  # fell behind: do not burst to catch up
    if control:
        with open(os.path.join(control, "ops"), "w") as f:
            f.write("%d %d\n" % (ops, len(churn.files)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root")
    ap.add_argument("--init", type=int)
    ap.add_argument("--rate", type=float, default=5.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--control")
    a = ap.parse_args()
    rng = random.Random(a.seed)
    if a.init is not None:
        init(a.root, a.init, rng)
    else:
        if a.rate <= 0:
            sys.exit("churn.py: --rate must be positive")
        run(a.root, a.rate, rng, a.control)


if __name__ == "__main__":
    main()
