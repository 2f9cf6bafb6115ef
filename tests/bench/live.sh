#!/usr/bin/env bash
# tests/bench/live.sh - figures for live, incremental sync (not a test: it
# prints numbers and does not judge them).
#
#   latency   a 4 KiB file rewritten on A until the same bytes are on B:
#             median and 90th percentile over LIVE_EDITS edits (default 50)
#   reconnect bytes B receives when it restarts and nothing changed
#   modify    1 MiB overwritten in the middle of a large file: bytes and time
#   rename    the large file renamed: bytes and time
#
# Two agents on loopback inside a private network namespace (lib.sh), A
# send-receive, B receive-only. Environment: SHOAL_BIN, LIVE_EDITS (50),
# LIVE_LARGE_MIB (1024), KEEP=1.
# shellcheck source-path=SCRIPTDIR source=../e2e/lib.sh
source "$(dirname "$0")/../e2e/lib.sh"
e2e_begin bench_live "$@"

EDITS=${LIVE_EDITS:-50}
LARGE_MIB=${LIVE_LARGE_MIB:-1024}
FOLDER=live
node_new A
node_new B
a=${NODE_DIR[A]} b=${NODE_DIR[B]}
mkdir -p "$a"
python3 "$E2E_DIR/gen_tree.py" "$a" --seed 3 --files 1000 --large-mib 0 >/dev/null
pair A B
folder_add A "$FOLDER" send-receive
folder_share A "$FOLDER" B
folder_add B "$FOLDER" receive
folder_share B "$FOLDER" A
start_agent A
start_agent B
wait_listening A
wait_listening B
wait_synced --peer A B "$FOLDER"

# in_bytes B has received from A since its agent started.
b_in() { status_json B | python3 -c 'import json,sys; d=json.load(sys.stdin); print(sum(x["in_bytes"] for x in d["devices"]))'; }

log "latency: $EDITS edits of a 4 KiB file"
python3 - "$a/probe.bin" "$b/probe.bin" "$EDITS" <<'PY'
import os, statistics, sys, time
src, dst, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
lat = []
for i in range(n):
    data = os.urandom(4096)
    t0 = time.monotonic()
    with open(src + ".new", "wb") as f:
        f.write(data)
    os.rename(src + ".new", src)
    deadline = t0 + 10
    while time.monotonic() < deadline:
        try:
            with open(dst, "rb") as f:
                if f.read() == data:
                    break
        except FileNotFoundError:
            pass
        time.sleep(0.002)
    else:
        print(f"edit {i}: not on B after 10 s"); continue
    lat.append((time.monotonic() - t0) * 1000)
    time.sleep(0.3)
lat.sort()
print(f"latency-4k-edit  median {statistics.median(lat):.0f} ms  p90 {lat[int(len(lat)*0.9)-1]:.0f} ms  min {lat[0]:.0f} ms  max {lat[-1]:.0f} ms  (n={len(lat)})")
PY

log "idle reconnect"
stop_agent B
start_agent B
wait_listening B
wait_connected B A 30
sleep 2
echo "idle-reconnect   B received $(b_in) bytes (handshake, hello, index catch-up)"

log "large file: $LARGE_MIB MiB"
python3 - "$a/large.bin" "$LARGE_MIB" <<'PY'
import os, random, sys
rng = random.Random(7)
with open(sys.argv[1], "wb") as f:
    for _ in range(int(sys.argv[2])):
        f.write(rng.randbytes(1 << 20))
PY
wait_for "cmp -s '$a/large.bin' '$b/large.bin' 2>/dev/null" 600 || fail "large file did not sync"
sleep 1
before=$(b_in)
t0=$(now_ns)
python3 - "$a/large.bin" <<'PY'
import os, sys
p = sys.argv[1]
size = os.path.getsize(p)
with open(p, "r+b") as f:
    f.seek((size - (1 << 20)) // 2)
    f.write(os.urandom(1 << 20))
PY
wait_for "cmp -s '$a/large.bin' '$b/large.bin' 2>/dev/null" 600 || fail "modify did not sync"
t1=$(now_ns)
sleep 1
after=$(b_in)
echo "modify-1MiB      $((after - before)) bytes on the wire, $(( (t1 - t0) / 1000000 )) ms write-to-identical"
before=$after
t0=$(now_ns)
mv "$a/large.bin" "$a/large-renamed.bin"
wait_for "[ ! -e '$b/large.bin' ] && cmp -s '$a/large-renamed.bin' '$b/large-renamed.bin' 2>/dev/null" 600 ||
	fail "rename did not sync"
t1=$(now_ns)
sleep 1
after=$(b_in)
echo "rename-large     $((after - before)) bytes on the wire, $(( (t1 - t0) / 1000000 )) ms"
pass
