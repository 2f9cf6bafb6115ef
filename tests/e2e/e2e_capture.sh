#!/usr/bin/env bash
# Everything on the wire is encrypted: sync a small tree whose names and
# contents carry marker strings while tcpdump records all TCP traffic to and
# from both agents' ports, then check that no marker appears in the capture,
# and that the capture is large enough to have contained the data.
# tcpdump missing: skipped (77), or a failure with SHOAL_E2E_REQUIRE_TCPDUMP=1.
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"
e2e_begin e2e_capture "$@"

if ! command -v tcpdump >/dev/null; then
	[ "${SHOAL_E2E_REQUIRE_TCPDUMP:-0}" != 1 ] || fail "tcpdump not installed"
	skip "tcpdump not installed"
fi

FOLDER=e2e-capture
NAME_MARKER=secret-marker-name-XYZ
DIR_MARKER=secret-dir-marker-JKL
CONTENT_MARKER=plaintext-content-marker-QRS
LONG_MARKER=LONG-CONTENT-MARKER-0123456789-abcdefghijklmnopqrstuvwxyz-0123456789-END

node_new A
node_new B
src=${NODE_DIR[A]}
mkdir -p "$src/$DIR_MARKER"
python3 - "$src" "$NAME_MARKER" "$DIR_MARKER" "$CONTENT_MARKER" "$LONG_MARKER" <<'PY'
import os, random, sys
src, name_m, dir_m, content_m, long_m = sys.argv[1:6]
rng = random.Random(42)
def w(rel, data):
    with open(os.path.join(src, rel), "wb") as f:
        f.write(data)
w(name_m + ".txt", (content_m + "\n").encode() * 4000)           # ~116 KB
w(os.path.join(dir_m, "another-" + name_m + ".txt"), (long_m + "\n").encode() * 2000)
w(os.path.join(dir_m, "mixed.txt"),
  b"".join(rng.randbytes(rng.randrange(1, 500)) + content_m.encode() for _ in range(300)))
# Incompressible data: the capture must be large even if the agent compresses.
w("random-" + name_m + ".bin", rng.randbytes(256 * 1024))
for i in range(20):
    w("small-%02d-%s.txt" % (i, name_m), ("%s %d\n" % (content_m, i)).encode())
PY
entries=$(count_entries "$src")

pair A B
share_one_way A B "$FOLDER"

pcap=$E2E_TMP/capture.pcap   # .pcap: AppArmor's tcpdump profile allows that
tcpdump_args=(--immediate-mode -i lo -s 0 -B 32768 -U -w "$pcap"
	"tcp port ${NODE_PORT[A]} or tcp port ${NODE_PORT[B]}")
[ "$(id -u)" -ne 0 ] || tcpdump_args=(-Z root "${tcpdump_args[@]}")
tcpdump "${tcpdump_args[@]}" >"$E2E_TMP/tcpdump.out" 2>&1 &
tcpdump_pid=$!
EXTRA_PIDS+=("$tcpdump_pid")
# shellcheck disable=SC2317  # called through wait_for
tcpdump_ready() {
	kill -0 "$tcpdump_pid" 2>/dev/null || fail "tcpdump exited: $(cat "$E2E_TMP/tcpdump.out")"
	grep -q 'listening on' "$E2E_TMP/tcpdump.out"
}
wait_for tcpdump_ready 10 || fail "tcpdump did not start: $(cat "$E2E_TMP/tcpdump.out")"

start_agent A
start_agent B
wait_listening A
wait_listening B
wait_synced --files "$entries" --peer A B "$FOLDER"
compare "$src" "${NODE_DIR[B]}" || fail "B's folder differs from A's (see above)"

sleep 1   # let the last packets reach the capture file
stop_pid "$tcpdump_pid" 10
EXTRA_PIDS=()
[ "$STOP_RC" = 0 ] || fail "tcpdump exited with status $STOP_RC: $(cat "$E2E_TMP/tcpdump.out")"
cat "$E2E_TMP/tcpdump.out" >&2
dropped=$(sed -n 's/^\([0-9][0-9]*\) packets\{0,1\} dropped by kernel.*/\1/p' "$E2E_TMP/tcpdump.out")
[ "${dropped:-0}" = 0 ] || fail "tcpdump dropped $dropped packets; the capture is incomplete"

python3 - "$pcap" "$NAME_MARKER" "$DIR_MARKER" "$CONTENT_MARKER" "$LONG_MARKER" <<'PY' || fail "plaintext found in the capture (see above)"
import sys
path, *markers = sys.argv[1:]
data = open(path, "rb").read()
print("capture: %d bytes" % len(data), file=sys.stderr)
if len(data) <= 10 * 1024:
    sys.exit("capture is only %d bytes: traffic was not captured" % len(data))
if data[:4] not in (b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d"):
    sys.exit("%s is not a pcap file" % path)
# Whole markers, and their halves in case a marker straddles two segments.
needles = set()
for m in markers:
    needles |= {m, m[: len(m) // 2 + 1], m[len(m) // 2 - 1 :]}
bad = 0
for n in sorted(needles, key=len, reverse=True):
    c = data.count(n.encode())
    if c:
        print("found %r %d time(s) in the capture" % (n, c), file=sys.stderr)
        bad = 1
sys.exit(bad)
PY
pass
