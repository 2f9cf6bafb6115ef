#!/usr/bin/env bash
# The small-file pull alone, for profiling the receiver: A (send) holds the
# anchors' 10,000-file tree (gen-dataset.py small, seed 42) and has scanned
# it; B (receive) starts with an empty folder. Prints the time from B's start
# to its "pulled" log line, the pull's own duration, the CPU seconds of both
# agents (A's includes its scan) and of each of B's threads (event loop
# first, then the thread pool).
# Runs in a private network namespace like the end-to-end tests.
#
#   tests/bench/small_sync.sh                  # folders under $TMPDIR (/tmp)
#   TMPDIR=/mnt/ext4 tests/bench/small_sync.sh # pick the filesystem
#   PERF=1 tests/bench/small_sync.sh           # also perf record B (perf.data in $OUT)
#   PERF=1 PERF_WHO=A ...                      # perf record the sender instead
#   DATASET=large LARGE_SIZE=1GiB tests/bench/small_sync.sh  # one large file instead
#   DATASET=tiny FILES=100000 ...              # scale.sh's tiny files (0-64 bytes) instead
#   SHOAL_BIN=... SEED=... FILES=... DIRS=... OUT=... (default /tmp/shoal-small-sync)
#
# On an ext4 without a journal (this test machine's root), creating many
# files within a few minutes of deleting many costs the kernel a linear scan
# per new inode (recently_deleted() in ext4's inode allocator): wait or use
# another filesystem when the previous run just deleted its tree.
# shellcheck source-path=SCRIPTDIR source=../e2e/lib.sh
source "$(dirname "$0")/../e2e/lib.sh"
e2e_begin bench_small_sync "$@"

GEN=${GEN:-$E2E_REPO/../shared/anchors/gen-dataset.py}
[ -f "$GEN" ] || GEN=/work/shared/anchors/gen-dataset.py
[ -f "$GEN" ] || fail "no dataset generator (set GEN=.../gen-dataset.py)"
OUT=${OUT:-/tmp/shoal-small-sync}
mkdir -p "$OUT"

node_new A
node_new B
mkdir -p "${NODE_DIR[A]}"
if [ "${DATASET:-small}" = large ]; then
	python3 "$GEN" --seed "${SEED:-42}" large "${NODE_DIR[A]}" --size "${LARGE_SIZE:-1GiB}" >/dev/null
elif [ "${DATASET:-small}" = tiny ]; then
	python3 "$E2E_REPO/tests/bench/scale_helper.py" gen "${NODE_DIR[A]}" "${FILES:-100000}" \
		"${SEED:-1}" >/dev/null
else
	python3 "$GEN" --seed "${SEED:-42}" small "${NODE_DIR[A]}" --files "${FILES:-10000}" \
		--dirs "${DIRS:-100}" >/dev/null
fi
pair A B
folder_add A f send
start_agent A
wait_listening A
shoal_ok A scan f --wait >/dev/null
folder_share A f B
folder_add B f receive
folder_share B f A
sync
sleep 1

cpu() { awk '{print ($14 + $15) / 100}' "$1"; }
t0=$(date +%s.%N)
start_agent B
perf_pid=
if [ "${PERF:-0}" = 1 ]; then
	perf record -F 999 -g -o "$OUT/perf.data" -p "${AGENT_PID[${PERF_WHO:-B}]}" >/dev/null 2>&1 &
	perf_pid=$!
fi
wait_for "grep -q 'pulled f:' '${AGENT_LOG[B]}'" 600 || fail "B did not finish its pull in 600 s"
t1=$(date +%s.%N)
threads=$(for t in /proc/"${AGENT_PID[B]}"/task/*; do cpu "$t/stat"; done | tr '\n' ' ')
if [ -n "$perf_pid" ]; then
	kill -INT "$perf_pid"
	wait "$perf_pid" || true
fi
pull=$(sed -n 's/.*pulled f: .*failed, \([0-9.]*\) s$/\1/p' "${AGENT_LOG[B]}" | tail -n 1)
printf '%s sync: %.3f s from B'"'"'s start (pull %s s); CPU A %s s, B %s s; B threads: %s\n' \
	"${DATASET:-small}" "$(python3 -c "print($t1 - $t0)")" "$pull" "$(cpu /proc/"${AGENT_PID[A]}"/stat)" \
	"$(cpu /proc/"${AGENT_PID[B]}"/stat)" "$threads"
rss() { awk '/^(VmHWM|VmRSS|RssAnon):/ {printf "%s %.1f ", $1, $2 / 1024}' "/proc/$1/status"; }
echo "peak and current memory (MiB): A $(rss "${AGENT_PID[A]}"); B $(rss "${AGENT_PID[B]}")"
sleep 4
echo "after 4 s idle (MiB): A $(rss "${AGENT_PID[A]}"); B $(rss "${AGENT_PID[B]}")"
compare "${NODE_DIR[A]}" "${NODE_DIR[B]}" || fail "B's tree differs from A's"
pass
