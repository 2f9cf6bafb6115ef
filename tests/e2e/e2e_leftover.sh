#!/usr/bin/env bash
# Temp files an earlier run left behind are verified, not fetched again.
# A crash between a file's last write and its rename leaves its temp file
# (".shoal-tmp-" + BLAKE2b-64 of the path) with the version's size and mtime
# and no record. B starts with such leftovers for every file of A's folder:
# one multi-block file and 40 one-block files with the right bytes, one
# one-block file and the multi-block file's twin with the right size and
# mtime but wrong bytes, and one with the wrong mtime. B must end with A's
# exact tree, no temp files, a "resuming" line for each leftover it
# verified, and must have received from A about the bytes of the three bad
# ones only, not the whole folder.
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"
e2e_begin e2e_leftover "$@"

FOLDER=leftover
node_new A
node_new B
src=${NODE_DIR[A]}
dst=${NODE_DIR[B]}
mkdir -p "$src/sub" "$dst/sub"

# A's files, and B's leftovers of them. Prints the bytes B should still need.
need=$(python3 - "$src" "$dst" <<'EOF'
import hashlib, os, random, sys
src, dst = sys.argv[1:3]
rng = random.Random(11)
def put(rel, data, mtime_ns):
    p = os.path.join(src, rel)
    with open(p, "wb") as f:
        f.write(data)
    os.utime(p, ns=(mtime_ns, mtime_ns))
def leftover(rel, data, mtime_ns):
    tmp = ".shoal-tmp-" + hashlib.blake2b(rel.encode(), digest_size=8).hexdigest()
    p = os.path.join(dst, os.path.dirname(rel), tmp)
    with open(p, "wb") as f:
        f.write(data)
    os.utime(p, ns=(mtime_ns, mtime_ns))
need = 0
t = 1_600_000_000_123_456_789
for i in range(40):
    rel = "sub/small%02d.bin" % i if i % 2 else "small%02d.bin" % i
    data = rng.randbytes(rng.randint(1000, 30000))
    put(rel, data, t + i)
    leftover(rel, data, t + i)
big = rng.randbytes(6 << 20)
put("big.bin", big, t + 100)
leftover("big.bin", big, t + 100)
twin = rng.randbytes(5 << 20)
put("sub/twin.bin", twin, t + 101)
bad = bytearray(twin)
bad[len(bad) // 2] ^= 0xFF
leftover("sub/twin.bin", bytes(bad), t + 101)  # right size and mtime, one wrong byte
need += len(twin)  # at most: only its bad blocks must come
data = rng.randbytes(20000)
put("wrongbytes.bin", data, t + 102)
leftover("wrongbytes.bin", b"x" * len(data), t + 102)
need += len(data)
data = rng.randbytes(20000)
put("wrongmtime.bin", data, t + 103)
leftover("wrongmtime.bin", data, t + 103 + 1000)  # not finished by the earlier run
need += len(data)
print(need)
EOF
)
files=$(find "$src" -type f | wc -l)
entries=$(find "$src" -mindepth 1 | wc -l)

pair A B
share_one_way A B "$FOLDER"
start_agent A
wait_listening A
shoal_ok A scan "$FOLDER" --wait >/dev/null
start_agent B
wait_listening B
wait_synced --files "$entries" --peer A B "$FOLDER"
compare "$src" "$dst" || fail "B's folder differs from A's (see above)"

left=$(find "$dst" -name '.shoal-tmp-*' | wc -l)
[ "$left" = 0 ] || fail "$left temp files are left in B's folder"
resumed=$(grep -c "resuming " "${AGENT_LOG[B]}" || true)
# 40 small + big + twin + wrongbytes have the right size and mtime.
[ "$resumed" -ge 43 ] || fail "B verified $resumed leftovers in place, want 43"
got=$(jq_py "$(status_json B)" "device('${NODE_ID[A]}')['in_bytes']")
total=$(find "$src" -type f ! -name '.shoal*' -printf '%s\n' | awk '{s += $1} END {print s}')
log "B received $got bytes from A; the folder holds $total, at most $need needed fetching"
# The bad leftovers, plus the index and message overhead (64 KiB per file is plenty).
[ "$got" -le $((need + files * 65536)) ] ||
	fail "B received $got bytes from A, want at most $need plus overhead: leftovers were fetched again"
[ "$got" -lt $((total / 2)) ] || fail "B received $got of $total bytes: leftovers were not used"
pass
