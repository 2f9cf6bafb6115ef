#!/usr/bin/env bash
# Network faults between two agents, injected by tests/tools/faultproxy.py at
# chosen byte offsets.  A (send) shares a tree with B (receive).  B knows A
# only by the proxy's port and A knows B without an address, so only B dials
# and every byte between them crosses the proxy.  Each scenario uses a fresh
# pair, one fault rule (it fires once, so the reconnect goes through), and
# must end with byte-identical trees:
#
#   handshake   close the first connection at "up" byte 20 (inside Noise
#               message 1)
#   reset       RST both sockets 3 MiB into the "down" stream (mid-block of
#               the 16 MiB file)
#   frame       close at the start of "down" frame 10
#   corrupt     flip one ciphertext bit mid-stream ("down" frame 40): the
#               agent must drop the connection on the failed decryption and
#               reconnect
#   throttle    "down" at 2 MB/s: sync completes, no reconnect
#   stopread    the proxy stops reading A's answers for 20 s (small socket
#               buffers): A's VmRSS stays below 64 MiB, sampled every 0.5 s,
#               no reconnect, then B converges
#   truncate    (SLOW, only with SHOAL_E2E_SLOW=1) "down" goes silent after
#               3 MiB with the socket open: the agent's 60 s idle timeout must
#               notice it, as the agent has no knob to shorten it
#
# The proxy's own self-test (tests/tools/faultproxy_test.py) runs first.
#   SHOAL_E2E_FAULTS="reset corrupt" (or arguments) picks scenarios;
#   SHOAL_E2E_SLOW=1 adds truncate; SHOAL_E2E_RSS_MAX_KIB (65536) is the bound.
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"
e2e_begin e2e_fault_proxy "$@"

TOOLS=$E2E_DIR/../tools
PROXY=$TOOLS/faultproxy.py
FOLDER=fault
RSS_MAX_KIB=${SHOAL_E2E_RSS_MAX_KIB:-65536}
# An ASan build keeps freed memory in quarantine (256 MiB by default), which
# would hide what the bound is about: keep the quarantine small for this test.
if ldd "$SHOAL_BIN" 2>/dev/null | grep -q libasan; then
	export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}quarantine_size_mb=4:thread_local_quarantine_size_kb=64"
fi

all="handshake reset frame corrupt throttle stopread"
[ "${SHOAL_E2E_SLOW:-0}" != 1 ] || all="$all truncate"
want=${*:-${SHOAL_E2E_FAULTS:-$all}}

log "proxy self-test"
python3 "$TOOLS/faultproxy_test.py" >"$E2E_TMP/selftest.out" 2>&1 ||
	{ cat "$E2E_TMP/selftest.out" >&2; fail "faultproxy_test.py failed"; }
tail -n 1 "$E2E_TMP/selftest.out" >&2

# Two template trees, copied (with mtimes) into each scenario's A.
log "generating trees"
TREE16=$E2E_TMP/tree16
TREE64=$E2E_TMP/tree64
ENTRIES16=$(gen_tree "$TREE16" --seed 5 --files 200 --large-mib 16)
ENTRIES64=$(gen_tree "$TREE64" --seed 6 --files 200 --large-mib 64)

declare -a RESULTS=()
FAILED=0
SCEN=0

# scenario_fail MSG: records the failure of the current scenario (the test
# goes on with the next one and fails at the end).
scenario_fail()
{
	log "scenario $SCEN_NAME FAILED: $*"
	SCEN_ERR="${SCEN_ERR:+$SCEN_ERR; }$*"
}

# converge B A TIMEOUT ENTRIES: waits for B's folder to be synced with A
# connected and the trees equal.  Returns 1 on timeout or a dead agent.
converge()
{
	local b=$1 a=$2 timeout=$3 entries=$4 deadline st=''
	deadline=$(($(now_ns) + timeout * 1000000000))
	while [ "$(now_ns)" -lt "$deadline" ]; do
		for n in "$a" "$b"; do
			if ! kill -0 "${AGENT_PID[$n]}" 2>/dev/null; then
				local rc=0
				wait "${AGENT_PID[$n]}" 2>/dev/null || rc=$?
				AGENT_PID[$n]=
				scenario_fail "agent $n died (status $rc)"
				return 1
			fi
		done
		st=$("$SHOAL_BIN" --home "${NODE_HOME[$b]}" status --json 2>/dev/null) || st=''
		if [ -n "$st" ] && folder_synced "$st" "$FOLDER" "$entries" "${NODE_ID[$a]}" 2>/dev/null &&
			compare "${NODE_DIR[$a]}" "${NODE_DIR[$b]}" >/dev/null 2>&1; then
			return 0
		fi
		sleep 0.2
	done
	printf 'last status of %s:\n%s\n' "$b" "$st" >&2
	compare "${NODE_DIR[$a]}" "${NODE_DIR[$b]}" >&2 || true
	scenario_fail "not converged after $timeout s"
	return 1
}

# run_scenario NAME TREE ENTRIES TIMEOUT_S CONNS PROXY-ARGS...: CONNS is
# "1" (the fault must not cost the connection) or "2+" (a reconnect is needed).
run_scenario()
{
	local name=$1 tree=$2 entries=$3 timeout=$4 conns=$5
	shift 5
	SCEN=$((SCEN + 1))
	SCEN_NAME=$name
	SCEN_ERR=
	local a=A$SCEN b=B$SCEN
	log "===== scenario $name: proxy $*"
	node_new "$a"
	node_new "$b"
	mkdir -p "$(dirname "${NODE_DIR[$a]}")"
	cp -a "$tree" "${NODE_DIR[$a]}"
	local pport plog=$E2E_TMP/proxy-$name.log stats=$E2E_TMP/proxy-$name.json
	pport=$(free_ports 1)
	python3 "$PROXY" --listen "$pport" --target "${NODE_PORT[$a]}" --stats "$stats" "$@" 2>"$plog" &
	local ppid=$!
	EXTRA_PIDS+=("$ppid")
	wait_for "is_listening $pport" 10 || fail "the proxy does not listen on $pport"
	# B reaches A only through the proxy; A has no address for B.
	shoal_ok "$b" device add "${NODE_ID[$a]}" --name "$a" --addr "127.0.0.1:$pport" >/dev/null
	shoal_ok "$a" device add "${NODE_ID[$b]}" --name "$b" >/dev/null
	folder_add "$a" "$FOLDER" send
	folder_share "$a" "$FOLDER" "$b"
	folder_add "$b" "$FOLDER" receive
	folder_share "$b" "$FOLDER" "$a"

	start_agent "$a"
	wait_listening "$a"
	local sampler='' rssf=$E2E_TMP/rss-$name.txt
	if [ "$name" = stopread ]; then
		# A's resident set every 0.5 s while the scenario runs.
		(
			while :; do
				awk '/^VmRSS:/ { print $2 }' "/proc/${AGENT_PID[$a]}/status" 2>/dev/null || exit 0
				sleep 0.5
			done
		) >"$rssf" &
		sampler=$!
		EXTRA_PIDS+=("$sampler")
	fi
	local t0 t1 secs
	t0=$(now_ns)
	start_agent "$b"
	converge "$b" "$a" "$timeout" "$entries" || true
	t1=$(now_ns)
	secs=$(python3 -c "print('%.1f' % (($t1 - $t0) / 1e9))")
	[ -z "$sampler" ] || kill "$sampler" 2>/dev/null || true

	# Both agents must still stop cleanly.
	local n
	for n in "$b" "$a"; do
		if [ -n "${AGENT_PID[$n]:-}" ]; then
			stop_agent "$n"
			[ "$STOP_RC" = 0 ] && [ "$STOP_KILLED" = 0 ] ||
				scenario_fail "agent $n: exit status $STOP_RC on SIGTERM$([ "$STOP_KILLED" = 0 ] || echo ', needed SIGKILL')"
		fi
	done
	stop_pid "$ppid" 5
	[ "$STOP_RC" = 0 ] || scenario_fail "the proxy exited with status $STOP_RC"
	local nconn='?' faults='?'
	if [ -f "$stats" ]; then
		nconn=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["connections"])' "$stats")
		faults=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["faults_applied"])' "$stats")
	fi
	[ "$faults" = 1 ] || scenario_fail "the proxy applied $faults faults, want 1 (see $plog)"
	case $conns in
	1) [ "$nconn" = 1 ] || scenario_fail "$nconn connections through the proxy, want 1 (the fault should not cost the connection)" ;;
	2+) [ "$nconn" != '?' ] && [ "$nconn" -ge 2 ] || scenario_fail "$nconn connections through the proxy, want a reconnect" ;;
	esac
	local extra=''
	if [ -n "$sampler" ]; then
		local max
		max=$(sort -n "$rssf" | tail -n 1)
		extra=", A max VmRSS ${max:-?} KiB over $(wc -l <"$rssf") samples"
		[ -n "$max" ] && [ "$max" -lt "$RSS_MAX_KIB" ] ||
			scenario_fail "A's VmRSS reached ${max:-?} KiB, bound $RSS_MAX_KIB KiB"
		grep -q 'reading stopped' "$plog" || scenario_fail "the proxy never stopped reading"
	fi
	# The agents' view of the fault, for the report.
	local why
	why=$(for n in "$b" "$a"; do
		awk -v n="$n" '/stopping: SIG/ { exit }
			/disconnected from|closes the connection|closed the connection|WARN|ERROR/ { print n ": " $0 }' \
			"${AGENT_LOG[$n]}"
	done | head -n 6 | tr '\n' '|' || true)
	if [ -z "$SCEN_ERR" ]; then
		RESULTS+=("PASS $name: ${secs} s, $nconn connections$extra; agents: ${why:-nothing logged}")
	else
		FAILED=$((FAILED + 1))
		RESULTS+=("FAIL $name: ${secs} s, $nconn connections$extra: $SCEN_ERR; agents: ${why:-nothing logged}")
	fi
	log "${RESULTS[-1]}"
}

for s in $want; do
	case $s in
	handshake) run_scenario handshake "$TREE16" "$ENTRIES16" 60 2+ --fault close,dir=up,at=20 ;;
	reset) run_scenario reset "$TREE16" "$ENTRIES16" 60 2+ --fault reset,dir=down,at=3Mi ;;
	frame) run_scenario frame "$TREE16" "$ENTRIES16" 60 2+ --fault close,dir=down,frame=10 ;;
	corrupt) run_scenario corrupt "$TREE16" "$ENTRIES16" 60 2+ --fault corrupt,dir=down,frame=40,plus=2 ;;
	throttle) run_scenario throttle "$TREE16" "$ENTRIES16" 60 1 --fault throttle,dir=down,rate=2M ;;
	stopread)
		run_scenario stopread "$TREE64" "$ENTRIES64" 120 1 --rcvbuf 65536 \
			--fault stopread,dir=down,at=4Mi,secs=20
		;;
	truncate)
		# SLOW: the agent's only way out is its 60 s receive timeout
		# (IDLE_TIMEOUT_MS in agent/conn.c, no environment override).
		run_scenario truncate "$TREE16" "$ENTRIES16" 180 2+ --fault truncate,dir=down,at=3Mi
		;;
	*) fail "unknown scenario $s (known: $all truncate)" ;;
	esac
done

printf '%s\n' "${RESULTS[@]}" >&2
[ "$FAILED" = 0 ] || fail "$FAILED scenario(s) failed (see above)"
pass
