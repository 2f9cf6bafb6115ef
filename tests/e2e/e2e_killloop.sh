#!/usr/bin/env bash
# Crash safety of the puller: A (send) shares a few thousand small files and
# one 200 MiB file with B (receive).  While B pulls, B is killed with SIGKILL
# at seeded random moments (at least 20 times) and restarted at once.  At the
# end B must converge byte-identical, leave no .shoal-tmp-* file behind, and
# report idle with nothing needed.
#
# A runs throughout, so its `status --json` devices[].out_bytes is everything
# it sent to B over the whole test.  With resumable downloads a kill costs at
# most the blocks in flight (the puller keeps at most 16 MiB of requests
# outstanding), so the test asserts
#     sent <= (dataset + kills * 16 MiB) * 1.10
# and prints the figures.
#
# A kill moment is a pair drawn from the seed: an amount A must have sent
# since B's (re)start (0.05..0.8 x dataset / kills, so that even with a
# perfect resume the kills add up to well under the dataset and fall while B
# pulls; about one kill in seven uses 0 instead, to hit the start-up: scan,
# handshake, index exchange), and a minimum time since the (re)start
# (0.1..0.6 s, or 0.05..0.5 s for the start-up kills).  B is killed once both
# are reached.  If B finishes early anyway (A sends nothing for 3 s and B
# reports synced) the kill happens then and is counted as an idle kill; the
# summary line gives both counts.
#   SHOAL_E2E_SEED (random, printed), SHOAL_E2E_KILLS (20),
#   SHOAL_E2E_FILES (3000), SHOAL_E2E_LARGE_MIB (200)
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"
e2e_begin e2e_killloop "$@"

FOLDER=killloop
SEED=${SHOAL_E2E_SEED:-$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}
KILLS=${SHOAL_E2E_KILLS:-20}
INFLIGHT=$((16 << 20))
log "seed $SEED (set SHOAL_E2E_SEED=$SEED to repeat), $KILLS kills"
echo "seed: $SEED"

node_new A
node_new B
src=${NODE_DIR[A]} dst=${NODE_DIR[B]}
log "generating tree"
entries=$(gen_tree "$src" --seed "$((SEED % 100000))" --files "${SHOAL_E2E_FILES:-3000}" \
	--large-mib "${SHOAL_E2E_LARGE_MIB:-200}")
dataset=$(python3 - "$src" <<'EOF'
import os, sys
t = 0
for d, _, fs in os.walk(sys.argv[1]):
    for f in fs:
        p = os.path.join(d, f)
        if not os.path.islink(p):
            t += os.path.getsize(p)
print(t)
EOF
)
log "tree: $entries entries, $dataset bytes"

# A knows B without an address: only B dials.
introduce B A
shoal_ok A device add "${NODE_ID[B]}" --name B >/dev/null
share_one_way A B "$FOLDER"

# The kill plan: "bytes_since_start min_up_s" per line.
plan=$(python3 - "$SEED" "$KILLS" "$dataset" <<'EOF'
import random, sys
seed, kills, dataset = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(seed)
for _ in range(kills):
    if rng.random() < 0.15:
        print(0, "%.2f" % rng.uniform(0.05, 0.5))
    else:
        print(int(rng.uniform(0.05, 0.8) * dataset / kills), "%.2f" % rng.uniform(0.1, 0.6))
EOF
)

# a_out: A's out_bytes towards B (0 before the first connection).  A knows
# only B, so the first "out_bytes" of its status is B's; a regular expression
# keeps the poll cheap (no python start), so kills follow the plan closely.
a_out()
{
	local st
	st=$("$SHOAL_BIN" --home "${NODE_HOME[A]}" status --json 2>/dev/null) || { echo 0; return; }
	if [[ $st =~ \"out_bytes\":([0-9]+) ]]; then echo "${BASH_REMATCH[1]}"; else echo 0; fi
}

# kill_b: SIGKILL, reap, note it in B's log.
kill_b()
{
	local pid=${AGENT_PID[B]} rc=0
	kill -KILL "$pid"
	wait "$pid" 2>/dev/null || rc=$?
	AGENT_PID[B]=
	printf '===== %s: SIGKILL by the test (exit status %s)\n' "$(date +%T.%N)" "$rc" >>"${AGENT_LOG[B]}"
}

start_agent A
wait_listening A
t_start=$(now_ns)
base=0
start_agent B
b_started=$(now_ns)
i=0
idle_kills=0
while read -r want min_up; do
	i=$((i + 1))
	min_up_ns=$(python3 -c "print(int($min_up * 1e9))")
	last_out=-1 last_move=$(now_ns) kind=pulling
	while :; do
		check_agents
		out=$(a_out)
		[ $((out - base)) -lt "$want" ] || [ $(($(now_ns) - b_started)) -lt "$min_up_ns" ] || break
		now=$(now_ns)
		if [ "$out" != "$last_out" ]; then
			last_out=$out last_move=$now
		elif [ $((now - last_move)) -gt 3000000000 ]; then
			st=$("$SHOAL_BIN" --home "${NODE_HOME[B]}" status --json 2>/dev/null) || st=
			if [ -n "$st" ] && folder_synced "$st" "$FOLDER" "" "${NODE_ID[A]}" 2>/dev/null; then
				kind=idle
				idle_kills=$((idle_kills + 1))
				break
			fi
			[ $((now - last_move)) -lt 60000000000 ] ||
				fail "kill $i: A has sent nothing for 60 s and B is not synced (A sent $((out - base)) bytes since B's start; want $want); B's status: $st"
		fi
		sleep 0.02
	done
	kill_b  # at once: at full speed A queues several MB in 10 ms
	up=$(python3 -c "print('%.2f' % (($(now_ns) - $b_started) / 1e9))")
	log "kill $i/$KILLS ($kind): B up ${up} s, A sent $((out - base)) bytes since B's start (want $want), $out in all"
	base=$(a_out)
	start_agent B
	b_started=$(now_ns)
done <<<"$plan"

log "last restart done; waiting for B to converge"
# Converged: B idle, nothing needed, A connected, the tree's entry count (a
# conflict copy or a stray file makes it differ) and equal trees.
b_converged()
{
	local st
	st=$("$SHOAL_BIN" --home "${NODE_HOME[B]}" status --json 2>/dev/null) || return 1
	folder_synced "$st" "$FOLDER" "$entries" "${NODE_ID[A]}" 2>/dev/null &&
		compare "$src" "$dst" >/dev/null 2>&1
}
# b_settled: idle, nothing needed, A connected (whatever the entry count).
b_settled()
{
	local st
	st=$("$SHOAL_BIN" --home "${NODE_HOME[B]}" status --json 2>/dev/null) || return 1
	folder_synced "$st" "$FOLDER" "" "${NODE_ID[A]}" 2>/dev/null
}
errs=()
converged=1
# Once B has settled the trees must match soon (30 s for directory metadata
# and late index updates); a wrong tree fails without the full timeout.
if wait_for b_settled "$SYNC_TIMEOUT"; then
	wait_for b_converged 30 || converged=0
else
	converged=0
fi
secs=$(python3 -c "print('%.1f' % (($(now_ns) - $t_start) / 1e9))")

# The figures, whether or not B converged.
sent=$(a_out)
bound=$(python3 -c "print(int(($dataset + $KILLS * $INFLIGHT) * 1.10))")
ratio=$(python3 -c "print('%.2f' % ($sent / $dataset))")
conflicts=$(find "$dst" -name '*.sync-conflict-*' | wc -l)
tmps=$(find "$dst" -name '.shoal-tmp-*' | wc -l)
st=$(status_json B)
state=$(jq_py "$st" "folder('$FOLDER')['state']")
need=$(jq_py "$st" "folder('$FOLDER')['need']['files']")
lfiles=$(jq_py "$st" "folder('$FOLDER')['local']['files']")
echo "killloop: seed $SEED, kills $KILLS ($idle_kills after B had finished), dataset $dataset bytes, A sent $sent bytes (x$ratio of the dataset), bound $bound; after ${secs} s: B $state, need $need, local.files $lfiles of $entries, $conflicts conflict copies, $tmps .shoal-tmp files"

if [ "$converged" = 0 ]; then
	compare "$src" "$dst" >&2 || true
	errs+=("B did not converge (idle, nothing needed, $entries entries, trees equal) after the last restart (status: $st)")
fi
[ "$conflicts" = 0 ] || errs+=("B made $conflicts conflict copies in a receive-only folder, e.g. $(find "$dst" -name '*.sync-conflict-*' -print -quit)")
[ "$tmps" = 0 ] || errs+=("$tmps temporary files left in B's folder, e.g. $(find "$dst" -name '.shoal-tmp-*' -print -quit)")
[ "$state" = idle ] && [ "$need" = 0 ] ||
	errs+=("B after the last restart: state '$state', need.files $need; want idle, 0")
[ "$sent" -le "$bound" ] ||
	errs+=("A sent $sent bytes, more than (dataset $dataset + $KILLS kills x 16 MiB) x 1.1 = $bound: verified blocks were fetched again")
if [ "${#errs[@]}" -gt 0 ]; then
	printf 'FAIL: e2e_killloop: %s\n' "${errs[@]}" >&2
	fail "${#errs[@]} check(s) failed (seed $SEED)"
fi
pass
