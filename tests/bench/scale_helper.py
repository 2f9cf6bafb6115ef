#!/usr/bin/env python3
"""Helper of tests/bench/scale.sh (the million-file benchmark).

Every subcommand prints one line of JSON and exits 0, or 1 on failure.

  gen DIR N SEED        N tiny files (0-64 bytes, deterministic from SEED and
                        the file's number) in ceil(N/1000) leaf directories of
                        at most 1000 files, grouped 100 to a top directory:
                        DIR/gGG/dDDDD/fFFFFFFF. Prints files, dirs, items
                        (files + directories, as `shoal status` counts them),
                        bytes, and mid: the name in the middle of the byte-sorted
                        list of items (a cursor for a page in the middle).
  tree-sum DIR          count of files and directories and a SHA-256 over the
                        sorted (relative name, type, content) of the tree.
  ls-time BIN HOME FOLDER LIMIT REPS [CURSOR]
                        runs `shoal ls FOLDER --limit LIMIT --json [--cursor C]`
                        REPS times; prints the median and min wall in ms of the
                        CLI process (ls reads LMDB itself, read-only: there is
                        no server side), the items on the page, the next cursor.
  rss-peak OUT PID...   samples RssAnon and RssFile of the PIDs every 0.1 s
                        until killed, rewriting OUT with the peaks seen
                        ("anonA fileA anonB fileB ..." in MiB) after each sample.
  cli-time REPS CMD...  median wall ms of a command (for the process start-up
                        baseline and `status --json`).
  stall-probe OUT BIN HOME
                        runs `shoal status --json` (answered on the agent's
                        event loop) back to back until OUT.stop exists, then
                        writes the median and slowest wall ms to OUT.
  edit-latency A_FILE B_FILE REPS
                        rewrites A_FILE with a new line and times until B_FILE
                        holds it; median and slowest of REPS, 1 s apart.
"""
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time


def out(d):
    print(json.dumps(d))
    sys.stdout.flush()


def size_of(i, seed):
    return ((i * 2654435761 + seed * 40503) >> 7) % 65


def content_of(i, seed, n):
    unit = b"%x:%d;" % (i, seed)
    return (unit * (n // len(unit) + 1))[:n]


def gen(root, n, seed):
    n, seed = int(n), int(seed)
    leaves = (n + 999) // 1000
    total = 0
    names = []
    for leaf in range(leaves):
        g = leaf // 100
        gdir = "g%02d" % g
        ldir = "%s/d%05d" % (gdir, leaf)
        if leaf % 100 == 0:
            os.makedirs(os.path.join(root, gdir), exist_ok=True)
            names.append(gdir)
        os.makedirs(os.path.join(root, ldir), exist_ok=True)
        names.append(ldir)
        for i in range(leaf * 1000, min(n, leaf * 1000 + 1000)):
            rel = "%s/f%07d" % (ldir, i)
            sz = size_of(i, seed)
            fd = os.open(os.path.join(root, rel), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            if sz:
                os.write(fd, content_of(i, seed, sz))
            os.close(fd)
            total += sz
            names.append(rel)
    names.sort(key=lambda s: s.encode())
    dirs = leaves + (leaves + 99) // 100
    out({"files": n, "dirs": dirs, "items": n + dirs, "bytes": total,
         "mid": names[len(names) // 2]})
    return 0


def tree_sum(root):
    h = hashlib.sha256()
    files = dirs = 0
    entries = []
    for dp, dn, fn in os.walk(root):
        rel = os.path.relpath(dp, root)
        for d in dn:
            entries.append((os.path.normpath(os.path.join(rel, d)), "d"))
        for f in fn:
            entries.append((os.path.normpath(os.path.join(rel, f)), "f"))
    entries.sort()
    for name, t in entries:
        if name.startswith(".shoal") or "/.shoal" in name:
            continue
        h.update(name.encode() + b"\0" + t.encode() + b"\0")
        if t == "f":
            files += 1
            with open(os.path.join(root, name), "rb") as fh:
                h.update(fh.read())
            h.update(b"\0")
        else:
            dirs += 1
    out({"files": files, "dirs": dirs, "sha256": h.hexdigest()})
    return 0


def ls_time(binary, home, folder, limit, reps, cursor=None):
    cmd = [binary, "--home", home, "ls", folder, "--limit", str(limit), "--json"]
    if cursor:
        cmd += ["--cursor", cursor]
    walls = []
    page = None
    for _ in range(int(reps)):
        t0 = time.perf_counter()
        p = subprocess.run(cmd, capture_output=True)
        walls.append((time.perf_counter() - t0) * 1000)
        if p.returncode != 0:
            out({"error": p.stderr.decode(errors="replace")[:300]})
            return 1
        page = json.loads(p.stdout)
    res = {"wall_ms": round(statistics.median(walls), 2), "wall_min_ms": round(min(walls), 2),
           "items": len(page["items"]), "next_cursor": page.get("next_cursor"),
           "first": page["items"][0]["name"] if page["items"] else None}
    out(res)
    return 0


def cli_time(reps, *cmd):
    walls = []
    for _ in range(int(reps)):
        t0 = time.perf_counter()
        subprocess.run(list(cmd), capture_output=True)
        walls.append((time.perf_counter() - t0) * 1000)
    out({"wall_ms": round(statistics.median(walls), 2), "wall_min_ms": round(min(walls), 2)})
    return 0


def rss_peak(outp, *pids):
    peak = [[0, 0] for _ in pids]
    while True:
        for i, pid in enumerate(pids):
            try:
                with open("/proc/%s/status" % pid) as f:
                    for line in f:
                        if line.startswith("RssAnon:"):
                            peak[i][0] = max(peak[i][0], int(line.split()[1]))
                        elif line.startswith("RssFile:"):
                            peak[i][1] = max(peak[i][1], int(line.split()[1]))
            except OSError:
                pass
        with open(outp + ".tmp", "w") as f:
            f.write(" ".join("%.1f %.1f" % (a / 1024, b / 1024) for a, b in peak) + "\n")
        os.replace(outp + ".tmp", outp)
        time.sleep(0.1)


def stall_probe(outp, binary, home):
    """Asks the agent for its status (over its control socket, answered on its
    event loop) again and again until outp.stop exists: the slowest answer is
    how long the loop was busy with something else."""
    walls = []
    while not os.path.exists(outp + ".stop"):
        t0 = time.perf_counter()
        subprocess.run([binary, "--home", home, "status", "--json"], capture_output=True)
        walls.append((time.perf_counter() - t0) * 1000)
    with open(outp, "w") as f:
        json.dump({"n": len(walls), "median_ms": round(statistics.median(walls), 1) if walls else None,
                   "max_ms": round(max(walls), 1) if walls else None}, f)
    return 0


def edit_latency(a_file, b_file, reps, timeout_s=120):
    """Writes new content into a_file (a few dozen bytes, in place, like an
    editor's save) and times how long until b_file has it; median of reps,
    one second apart."""
    walls = []
    for r in range(int(reps)):
        want = b"edit %d at %.6f\n" % (r, time.time())
        t0 = time.perf_counter()
        with open(a_file, "wb") as f:
            f.write(want)
        while True:
            try:
                with open(b_file, "rb") as f:
                    if f.read() == want:
                        break
            except OSError:
                pass
            if time.perf_counter() - t0 > float(timeout_s):
                out({"error": "B did not get edit %d in %s s" % (r, timeout_s)})
                return 1
            time.sleep(0.005)
        walls.append((time.perf_counter() - t0) * 1000)
        time.sleep(1)
    out({"median_ms": round(statistics.median(walls), 1), "max_ms": round(max(walls), 1),
         "walls_ms": [round(w, 1) for w in walls]})
    return 0


CMDS = {"rss-peak": rss_peak, "stall-probe": stall_probe, "edit-latency": edit_latency, "gen": gen, "tree-sum": tree_sum, "ls-time": ls_time, "cli-time": cli_time}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in CMDS:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(CMDS[sys.argv[1]](*sys.argv[2:]))
