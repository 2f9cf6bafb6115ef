#!/usr/bin/env bash
# tests/bench/soak.sh [MINUTES] - a long run under steady churn (default 10
# minutes): does memory, the number of open descriptors or the database grow,
# and does the copy keep up?
#
# In a private network and PID namespace (lib.sh's e2e_begin: unshare -n -p -f
# --mount-proc --kill-child, loopback up), two agents A and B, both
# send-receive, share one folder over 127.0.0.1 (--no-mdns), set up with the
# CLI (init, device add --addr, folder add, folder share, run --listen) and
# with SHOAL_RESCAN_S=5. churn.py keeps changing A's folder at a fixed rate
# (creates, edits, deletes and renames of small files in a tree of a few
# hundred, seeded). At the end of every minute of churn the script pauses the
# churn, waits for B to match A (compare_trees.py: names, types, sizes,
# contents, modes, mtimes) and prints one line: each agent's VmRSS, open
# descriptors and LMDB size (du of HOME/index.lmdb), the operations done, and
# whether and how fast B matched. It then resumes. At the end it prints the
# first and the last minute's figures and fails if B does not match A or an
# agent does not exit cleanly.
#
# Environment: SHOAL_BIN (default build/agent/shoal), SOAK_RATE (operations
# per second, default 5), SOAK_FILES (files in the tree, default 300),
# SOAK_SEED (default 1), SOAK_SETTLE (seconds to wait for B to match at each
# minute, default 60), SOAK_FORGET (the agents' forget_deleted setting,
# default 2m: the churn deletes and renames files all the time, and old
# deletions are what a long-running index would otherwise keep adding; the
# shipped default is 30d), KEEP=1 (keep the work directory).
# RSS is printed as the total and, in brackets, its anonymous part (heap):
# the rest is LMDB's map and the binary, file pages that the kernel can drop.
# shellcheck source-path=SCRIPTDIR source=../e2e/lib.sh
source "$(dirname "$0")/../e2e/lib.sh"
MINUTES=${1:-10}
[[ $MINUTES =~ ^[1-9][0-9]*$ ]] || { echo "usage: $0 [MINUTES]" >&2; exit 2; }
e2e_begin soak "$@"

RATE=${SOAK_RATE:-5}
FILES=${SOAK_FILES:-300}
SEED=${SOAK_SEED:-1}
SETTLE=${SOAK_SETTLE:-60}
FOLDER=soak
CTL=$E2E_TMP/churn
BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
export SHOAL_RESCAN_S=5

node_new A
node_new B
mkdir -p "$CTL" "${NODE_DIR[A]}"
python3 "$BENCH_DIR/churn.py" "${NODE_DIR[A]}" --init "$FILES" --seed "$SEED" >/dev/null
pair A B
for n in A B; do
	sed -i "/^\[device\]/a forget_deleted = ${SOAK_FORGET:-2m}" "${NODE_HOME[$n]}/config"
done
folder_add A "$FOLDER" send-receive
folder_share A "$FOLDER" B
folder_add B "$FOLDER" send-receive
folder_share B "$FOLDER" A
start_agent A
wait_listening A
start_agent B
wait_listening B
entries=$(count_entries "${NODE_DIR[A]}")
wait_synced --files "$entries" --peer A B "$FOLDER"
log "initial tree of $entries entries synced; churning at $RATE operations/s for $MINUTES min"

python3 "$BENCH_DIR/churn.py" "${NODE_DIR[A]}" --rate "$RATE" --seed "$((SEED + 1))" \
	--control "$CTL" >"$E2E_TMP/churn.log" 2>&1 &
CHURN_PID=$!
EXTRA_PIDS+=("$CHURN_PID")

# rss_kib PID, fds PID, lmdb_kib HOME
rss_kib() { sed -n 's/^VmRSS:[[:space:]]*\([0-9]*\) kB/\1/p' "/proc/$1/status"; }
anon_kib() { sed -n 's/^RssAnon:[[:space:]]*\([0-9]*\) kB/\1/p' "/proc/$1/status"; }
fds() { find "/proc/$1/fd" -mindepth 1 -maxdepth 1 | wc -l; }
lmdb_kib() { du -sk "$1/index.lmdb" | cut -f1; }
mib() { python3 -c "print('%.1f' % ($1 / 1024))"; }

churn_pause()
{
	touch "$CTL/pause"
	wait_for "[ -e '$CTL/paused' ]" 10 || fail "the churn did not pause"
}
churn_resume()
{
	rm -f "$CTL/pause"
	wait_for "[ ! -e '$CTL/paused' ]" 10 || fail "the churn did not resume"
}

# match_within S: waits up to S seconds for B to match A; prints the seconds
# it took, or "no" (and the first differences to the log).
match_within()
{
	local t0 now
	t0=$(now_ns)
	while :; do
		if compare "${NODE_DIR[A]}" "${NODE_DIR[B]}" >"$E2E_TMP/compare.out" 2>&1; then
			now=$(now_ns)
			python3 -c "print('%.1f' % (($now - $t0) / 1e9))"
			return 0
		fi
		check_agents
		if [ $(($(now_ns) - t0)) -ge $(($1 * 1000000000)) ]; then
			head -n 5 "$E2E_TMP/compare.out" >&2
			echo no
			return 1
		fi
		sleep 0.5
	done
}

LINES=()
mismatches=0
for ((m = 1; m <= MINUTES; m++)); do
	sleep 60
	check_agents
	churn_pause
	took=$(match_within "$SETTLE") || mismatches=$((mismatches + 1))
	read -r ops files <"$CTL/ops"
	tombs="$(jq_py "$(status_json A)" "folder('$FOLDER')['tombstones']")/$(jq_py "$(status_json B)" "folder('$FOLDER')['tombstones']")"
	line=$(printf 'minute %d: A rss %s (%s) MiB, %s fds, lmdb %s MiB | B rss %s (%s) MiB, %s fds, lmdb %s MiB | tombstones A/B %s | %s ops, %s files | B matches A: %s' \
		"$m" "$(mib "$(rss_kib "${AGENT_PID[A]}")")" "$(mib "$(anon_kib "${AGENT_PID[A]}")")" \
		"$(fds "${AGENT_PID[A]}")" "$(mib "$(lmdb_kib "${NODE_HOME[A]}")")" \
		"$(mib "$(rss_kib "${AGENT_PID[B]}")")" "$(mib "$(anon_kib "${AGENT_PID[B]}")")" \
		"$(fds "${AGENT_PID[B]}")" \
		"$(mib "$(lmdb_kib "${NODE_HOME[B]}")")" "$tombs" "$ops" "$files" \
		"$([ "$took" = no ] && echo "NO after ${SETTLE} s" || echo "yes, after $took s")")
	echo "$line"
	LINES+=("$line")
	churn_resume
done

stop_pid "$CHURN_PID"
EXTRA_PIDS=()
read -r ops files <"$CTL/ops"
took=$(match_within "$((SETTLE * 2))") || fail "B does not match A $((SETTLE * 2)) s after the churn stopped (see above)"
conflicts=$(find "${NODE_DIR[A]}" "${NODE_DIR[B]}" -name '*.sync-conflict-*' | wc -l)
echo "first: ${LINES[0]}"
echo "last:  ${LINES[${#LINES[@]} - 1]}"
echo "total: $ops operations in $MINUTES min; B matched A $took s after the churn stopped; $mismatches minute(s) without a match within $SETTLE s; $conflicts conflict copies"
[ "$conflicts" = 0 ] || fail "$conflicts conflict copies appeared, but only A changed files"
pass
