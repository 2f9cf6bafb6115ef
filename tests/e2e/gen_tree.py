#!/usr/bin/env python3
"""Generate a deterministic directory tree for the shoal end-to-end tests.

The same --seed, --files and --large-mib always give the same names, contents,
permission bits and mtimes (to the nanosecond), on any machine with Python 3.9
or later.  The tree holds:

  * --files regular files of mixed sizes (log-uniform 0..256 KiB, about 5 % of
    them empty), spread over about 80 directories nested up to depth 4;
  * one explicitly empty file and one empty directory;
  * a relative symlink to a file inside the tree and a dangling symlink;
  * unusual but legal names: spaces, UTF-8 "é", a leading dash, '#', and a
    200-byte name;
  * file modes 0644/0600/0755/0444, directory modes 0755/0700;
  * one large file of --large-mib MiB of seeded random bytes (0 to omit it).

OUT must not exist or must be an empty directory.  On success the last line of
stdout is "entries: N", the number of entries below OUT (files, directories and
symlinks, not OUT itself), which is what shoal reports as a folder's "files".
"""

import argparse
import math
import os
import random
import sys

MAX_DEPTH = 4
MAX_SMALL = 256 * 1024
BASE_MTIME_S = 1_500_000_000  # 2017-07-14; everything stays well after 1970
FILE_MODES = [0o644] * 6 + [0o600, 0o755, 0o444]
DIR_MODES = [0o755] * 5 + [0o700]
LONG_NAME = "long-" + "x" * 191 + ".dat"  # 200 bytes
SPECIAL_FILE_NAMES = [
    "name with spaces.txt",
    "caf\u00e9-\u00e9t\u00e9.txt",  # "café-été.txt", UTF-8
    "-leading-dash.txt",
    "#hash#name.txt",
    "trailing space .txt",
    "multi.dots.tar.gz",
    LONG_NAME,
]
SPECIAL_DIR_NAMES = ["dir with spaces", "r\u00e9pertoire-\u00e9", "-dash-dir", "#hash-dir"]


def rand_mtime_ns(rng):
    """An mtime in 2017..2020 with a non-zero sub-second part."""
    sec = BASE_MTIME_S + rng.randrange(0, 3 * 365 * 86400)
    return sec * 1_000_000_000 + rng.randrange(1, 1_000_000_000)


def rand_size(rng):
    if rng.random() < 0.05:
        return 0
    # log-uniform over 1 .. MAX_SMALL
    return min(MAX_SMALL, int(math.exp(rng.uniform(0.0, math.log(MAX_SMALL + 1)))))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", metavar="OUT")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--files", type=int, default=3000, help="regular files (default 3000)")
    ap.add_argument("--dirs", type=int, default=80, help="directories (default 80)")
    ap.add_argument("--large-mib", type=int, default=64, help="size of large.bin in MiB, 0 for none")
    args = ap.parse_args()
    if args.files < 2 or args.dirs < len(SPECIAL_DIR_NAMES) + 2 or args.large_mib < 0:
        ap.error("need --files >= 2, --dirs >= %d, --large-mib >= 0" % (len(SPECIAL_DIR_NAMES) + 2))

    out = args.out
    os.makedirs(out, exist_ok=True)
    if os.listdir(out):
        ap.error("%s is not empty" % out)
    rng = random.Random(args.seed)

    # Directories.  dirs[i] = (relpath, depth); the root is index 0 and is
    # left alone (its mode and mtime are not part of the tree).
    dirs = [("", 0)]
    empty_dir = "empty-dir"
    for i in range(args.dirs - 1):  # one more, empty_dir, comes below
        parents = [d for d in dirs if d[1] < MAX_DEPTH]
        parent, depth = rng.choice(parents)
        name = SPECIAL_DIR_NAMES[i] if i < len(SPECIAL_DIR_NAMES) else "d%03d" % i
        rel = os.path.join(parent, name)
        os.mkdir(os.path.join(out, rel))
        dirs.append((rel, depth + 1))
    os.mkdir(os.path.join(out, empty_dir))

    files = []  # relpaths of regular files

    def write_file(rel, data_or_size, chunked=False):
        path = os.path.join(out, rel)
        with open(path, "wb") as f:
            if chunked:
                for _ in range(data_or_size):
                    f.write(rng.randbytes(1 << 20))
            else:
                f.write(data_or_size)
        files.append(rel)

    # Regular files; the first ones get the special names.
    for i in range(args.files):
        d = rng.choice(dirs)[0]
        name = SPECIAL_FILE_NAMES[i] if i < len(SPECIAL_FILE_NAMES) else "f%05d.dat" % i
        size = rand_size(rng)
        write_file(os.path.join(d, name), rng.randbytes(size))
    write_file("empty-file", b"")
    write_file(os.path.join(dirs[-1][0], "-"), b"just a dash\n")
    if args.large_mib:
        write_file("large.bin", args.large_mib, chunked=True)

    # Symlinks: a relative one to a file in another directory, and a dangling one.
    target = next(f for f in files if os.path.dirname(f))
    link_dir = dirs[1][0]
    link_rel = os.path.join(link_dir, "link-to-file")
    os.symlink(os.path.relpath(target, link_dir or "."), os.path.join(out, link_rel))
    dangling_rel = "dangling-link"
    os.symlink("does-not-exist/nowhere.txt", os.path.join(out, dangling_rel))

    # Modes and mtimes: files first, then directories deepest first so that
    # nothing touches a directory after its mtime is set.
    for rel in files:
        path = os.path.join(out, rel)
        os.chmod(path, rng.choice(FILE_MODES))
        m = rand_mtime_ns(rng)
        os.utime(path, ns=(m, m))
    for rel in (link_rel, dangling_rel):
        m = rand_mtime_ns(rng)
        os.utime(os.path.join(out, rel), ns=(m, m), follow_symlinks=False)
    all_dirs = [d[0] for d in dirs[1:]] + [empty_dir]
    for rel in sorted(all_dirs, key=lambda r: (-r.count(os.sep), r)):
        path = os.path.join(out, rel)
        os.chmod(path, rng.choice(DIR_MODES))
        m = rand_mtime_ns(rng)
        os.utime(path, ns=(m, m))

    entries = len(files) + len(all_dirs) + 2
    total = sum(os.lstat(os.path.join(out, f)).st_size for f in files)
    print("files: %d, dirs: %d, symlinks: 2, bytes: %d" % (len(files), len(all_dirs), total))
    print("entries: %d" % entries)
    return 0


if __name__ == "__main__":
    sys.exit(main())
