#!/usr/bin/env python3
"""Compare two directory trees the way shoal must reproduce them.

usage: compare_trees.py [--ignore-dir-mtime] [--max N] A B

For every entry below A and B (the roots themselves are not compared; names
starting with ".shoal" are skipped on both sides, with everything below them):

  * the set of names, so missing/extra files and empty directories show up;
  * the file type (regular file, directory, symlink, other), never following
    symlinks;
  * regular files: size, contents (SHA-256), permission bits, mtime to the ns;
  * directories: permission bits and mtime to the ns;
  * symlinks: the target text only.

Prints each difference (the first --max, default 50, then a count) and exits 1
if there is any, 0 if the trees match, 2 on a usage or I/O error on a root.
"""

import argparse
import hashlib
import os
import stat
import sys

IGNORE_PREFIX = ".shoal"


def kind(mode):
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISLNK(mode):
        return "symlink"
    return "other(%o)" % stat.S_IFMT(mode)


def walk(root):
    """Return {relpath: os.stat_result} for everything below root."""
    out = {}
    stack = [""]
    while stack:
        rel = stack.pop()
        with os.scandir(os.path.join(root, rel)) as it:
            for e in it:
                if e.name.startswith(IGNORE_PREFIX):
                    continue
                r = os.path.join(rel, e.name)
                st = e.stat(follow_symlinks=False)
                out[r] = st
                if stat.S_ISDIR(st.st_mode):
                    stack.append(r)
    return out


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def fmt_ns(ns):
    return "%d.%09d" % divmod(ns, 1_000_000_000)


def compare(a, b, ignore_dir_mtime):
    """Yield one human-readable line per difference."""
    ta, tb = walk(a), walk(b)
    for r in sorted(set(ta) | set(tb)):
        name = repr(r)
        if r not in tb:
            yield "only in A: %s (%s)" % (name, kind(ta[r].st_mode))
            continue
        if r not in ta:
            yield "only in B: %s (%s)" % (name, kind(tb[r].st_mode))
            continue
        sa, sb = ta[r], tb[r]
        ka, kb = kind(sa.st_mode), kind(sb.st_mode)
        if ka != kb:
            yield "type differs: %s: A %s, B %s" % (name, ka, kb)
            continue
        pa, pb = os.path.join(a, r), os.path.join(b, r)
        if ka == "symlink":
            la, lb = os.readlink(pa), os.readlink(pb)
            if la != lb:
                yield "symlink target differs: %s: A %r, B %r" % (name, la, lb)
            continue
        if ka not in ("file", "dir"):
            continue
        ma, mb = stat.S_IMODE(sa.st_mode), stat.S_IMODE(sb.st_mode)
        if ma != mb:
            yield "mode differs: %s: A %04o, B %04o" % (name, ma, mb)
        if sa.st_mtime_ns != sb.st_mtime_ns and not (ka == "dir" and ignore_dir_mtime):
            yield "mtime differs: %s (%s): A %s, B %s" % (
                name, ka, fmt_ns(sa.st_mtime_ns), fmt_ns(sb.st_mtime_ns))
        if ka == "file":
            if sa.st_size != sb.st_size:
                yield "size differs: %s: A %d, B %d" % (name, sa.st_size, sb.st_size)
            elif sha256(pa) != sha256(pb):
                yield "content differs: %s (%d bytes)" % (name, sa.st_size)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("a", metavar="A")
    ap.add_argument("b", metavar="B")
    ap.add_argument("--max", type=int, default=50, help="differences to print (default 50)")
    ap.add_argument("--ignore-dir-mtime", action="store_true",
                    help="do not compare directory mtimes")
    args = ap.parse_args()
    for root in (args.a, args.b):
        if not os.path.isdir(root):
            print("compare_trees: not a directory: %s" % root, file=sys.stderr)
            return 2
    n = 0
    try:
        for line in compare(args.a, args.b, args.ignore_dir_mtime):
            n += 1
            if n <= args.max:
                print(line)
    except OSError as e:
        # A tree changing under us (an agent still writing) is a difference too.
        print("error while comparing: %s" % e)
        n += 1
    if n > args.max:
        print("... and %d more" % (n - args.max))
    if n:
        print("trees differ: %d difference(s) between %s and %s" % (n, args.a, args.b))
        return 1
    print("trees identical: %s and %s" % (args.a, args.b))
    return 0


if __name__ == "__main__":
    sys.exit(main())
