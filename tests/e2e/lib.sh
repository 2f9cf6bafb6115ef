# shellcheck shell=bash
# Shared helpers for the shoal end-to-end tests.  A test script does:
#
#   source "$(dirname "$0")/lib.sh"
#   e2e_begin my_test_name "$@"     # re-exec in a private netns, make $E2E_TMP
#   node_new A; node_new B          # homes, device IDs, ports
#   ...
#   pass                            # prints "PASS: my_test_name", exits 0
#
# Environment:
#   SHOAL_BIN      the agent binary (default <repo>/build/agent/shoal)
#   KEEP=1         keep the work directory (it is printed on exit)
#   SYNC_TIMEOUT   default timeout of wait_synced in seconds (default 120)
#   SHOAL_E2E_IGNORE_DIR_MTIME=1  compare_trees ignores directory mtimes
#
# Every node NAME has: NODE_HOME[NAME] (its --home), NODE_DIR[NAME] (a folder
# path the test may use), NODE_PORT[NAME] (its listen port), NODE_ID[NAME]
# (its device ID), and once started AGENT_PID[NAME] and AGENT_LOG[NAME].
#
# All processes run in a private network namespace (only loopback, brought up
# here) and, where the kernel allows, a private PID namespace whose init is
# the test script, so an agent cannot outlive a test that was killed.

set -Eeuo pipefail

E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
E2E_REPO=$(cd "$E2E_DIR/../.." && pwd)
SHOAL_BIN=${SHOAL_BIN:-$E2E_REPO/build/agent/shoal}
SYNC_TIMEOUT=${SYNC_TIMEOUT:-120}
E2E_NAME=${E2E_NAME:-$(basename "$0" .sh)}
E2E_TMP=

declare -A NODE_HOME=() NODE_DIR=() NODE_PORT=() NODE_ID=()
declare -A AGENT_PID=() AGENT_LOG=()
AGENT_NAMES=()     # every node whose agent was started at least once
EXTRA_PIDS=()      # other background processes (tcpdump) to stop on exit
STOP_RC=0          # exit status of the last stop_agent
STOP_KILLED=0      # 1 if the last stop_agent needed SIGKILL

log() { printf '[%s %s] %s\n' "$(date +%H:%M:%S.%N | cut -c1-12)" "$E2E_NAME" "$*" >&2; }

fail()
{
	printf 'FAIL: %s: %s\n' "$E2E_NAME" "$*" >&2
	exit 1
}

skip()
{
	printf 'SKIP: %s: %s\n' "$E2E_NAME" "$*" >&2
	exit 77
}

pass()
{
	# Every agent must stop cleanly: exit 0 on SIGTERM within the grace time
	# (in the ASan build a leak or sanitizer report makes this fail).
	local n bad=""
	for n in "${AGENT_NAMES[@]}"; do
		if [ -n "${AGENT_PID[$n]:-}" ]; then
			stop_agent "$n" || true
			if [ "$STOP_RC" != 0 ] || [ "$STOP_KILLED" != 0 ]; then
				bad="$bad $n(status $STOP_RC)"
			fi
		fi
	done
	[ -z "$bad" ] || fail "agents did not exit cleanly:$bad"
	E2E_PASSED=1
	e2e_cleanup_agents
	printf 'PASS: %s\n' "$E2E_NAME"
	exit 0
}

# e2e_begin NAME "$@": re-executes the calling script in private network and
# PID namespaces (once), brings loopback up, checks the tools, creates
# $E2E_TMP and installs the exit trap.
e2e_begin()
{
	E2E_NAME=$1
	shift
	if [ -z "${SHOAL_NETNS:-}" ]; then
		command -v unshare >/dev/null || fail "unshare (util-linux) is required"
		local -a ns=(-n)
		[ "$(id -u)" -eq 0 ] || ns=(-r -n)  # unprivileged: map ourselves to root in a user ns
		# A private PID namespace with --kill-child: if the test is killed
		# (ctest timeout), the kernel kills every agent it started.
		# --mount-proc gives the namespace its own /proc, so tools that read
		# /proc/PID (LeakSanitizer in the ASan build) see the right processes.
		if unshare "${ns[@]}" -p -f --mount-proc --kill-child true 2>/dev/null; then
			ns+=(-p -f --mount-proc --kill-child)
		fi
		exec unshare "${ns[@]}" -- env SHOAL_NETNS=1 bash "$0" "$@"
	fi
	ip link set lo up || fail "cannot bring up loopback in the test network namespace"

	command -v python3 >/dev/null || fail "python3 is required"
	[ -x "$SHOAL_BIN" ] || fail "agent binary not found or not executable: $SHOAL_BIN (set SHOAL_BIN)"
	E2E_TMP=$(mktemp -d "${TMPDIR:-/tmp}/shoal-e2e.$E2E_NAME.XXXXXX")
	trap 'e2e_on_exit' EXIT
	trap 'fail "interrupted"' INT TERM
	trap 'e2e_on_err "$LINENO" "$BASH_COMMAND"' ERR
	log "work directory $E2E_TMP, agent $SHOAL_BIN"
}

e2e_on_err()
{
	printf 'FAIL: %s: command failed at line %s: %s\n' "$E2E_NAME" "$1" "$2" >&2
}

# Stops every agent and extra process still running.  Quiet.
e2e_cleanup_agents()
{
	local n p
	for n in "${AGENT_NAMES[@]}"; do
		if [ -n "${AGENT_PID[$n]:-}" ]; then
			stop_agent "$n" || true
		fi
	done
	for p in "${EXTRA_PIDS[@]}"; do
		stop_pid "$p" || true
	done
	EXTRA_PIDS=()
}

e2e_on_exit()
{
	local rc=$?
	trap - ERR INT TERM
	set +e
	e2e_cleanup_agents
	if [ "$rc" -ne 0 ] && [ "$rc" -ne 77 ]; then
		[ "${E2E_PASSED:-0}" = 1 ] || printf 'FAIL: %s: exit status %d\n' "$E2E_NAME" "$rc" >&2
		local f
		for f in "$E2E_TMP"/*.log; do
			[ -f "$f" ] || continue
			printf '\n----- last 50 lines of %s -----\n' "$(basename "$f")" >&2
			tail -n 50 "$f" >&2
		done
		printf -- '-----\n' >&2
	fi
	if [ "${KEEP:-0}" = 1 ]; then
		printf 'KEEP=1: work directory kept: %s\n' "$E2E_TMP" >&2
	else
		[ "$rc" -eq 0 ] || [ "$rc" -eq 77 ] || printf '(rerun with KEEP=1 to keep %s)\n' "$E2E_TMP" >&2
		rm -rf "$E2E_TMP"
	fi
	exit "$rc"
}

# free_ports N: prints N distinct free TCP ports on 127.0.0.1, one a line.
free_ports()
{
	python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
for s in socks:
    print(s.getsockname()[1])
EOF
}

# shoal NAME ARGS...: runs the binary with NAME's home.
shoal() { "$SHOAL_BIN" --home "${NODE_HOME[$1]}" "${@:2}"; }

# shoal_ok NAME ARGS...: like shoal, but fails the test (showing the output)
# if the command exits non-zero.  Prints the command's stdout.
shoal_ok()
{
	local out rc=0
	out=$(shoal "$@" 2>"$E2E_TMP/cmd.err") || rc=$?
	if [ "$rc" -ne 0 ]; then
		fail "'shoal --home ${NODE_HOME[$1]} ${*:2}' exited $rc; stdout: $out; stderr: $(cat "$E2E_TMP/cmd.err")"
	fi
	[ -z "$out" ] || printf '%s\n' "$out"
}

# node_new NAME: makes a home, runs init --name NAME, checks the device ID and
# picks a listen port.  NODE_DIR[NAME] is set but not created.
node_new()
{
	local n=$1 out id n2
	NODE_HOME[$n]=$E2E_TMP/$n/home
	NODE_DIR[$n]=$E2E_TMP/$n/folder
	mkdir -p "$E2E_TMP/$n"
	out=$(shoal_ok "$n" init --name "$n")
	id=$(printf '%s\n' "$out" | sed '/^[[:space:]]*$/d' | tail -n 1 | tr -d '[:space:]')
	[[ $id =~ ^[A-Z2-7]{7}(-[A-Z2-7]{7}){7}$ ]] ||
		fail "init of $n printed '$id' as its last line, not a device ID (XXXXXXX-... 8 groups)"
	local again
	again=$(shoal_ok "$n" id | sed '/^[[:space:]]*$/d' | tail -n 1 | tr -d '[:space:]')
	[ "$again" = "$id" ] || fail "'id' of $n printed '$again', init printed '$id'"
	NODE_ID[$n]=$id
	local port used=1
	while [ "$used" = 1 ]; do  # distinct from the other nodes' ports
		port=$(free_ports 1)
		used=0
		for n2 in "${!NODE_PORT[@]}"; do [ "${NODE_PORT[$n2]}" != "$port" ] || used=1; done
	done
	NODE_PORT[$n]=$port
	log "node $n: id $id, port ${NODE_PORT[$n]}"
}

# introduce X Y: X learns Y's device ID, name and address.
introduce() { shoal_ok "$1" device add "${NODE_ID[$2]}" --name "$2" --addr "127.0.0.1:${NODE_PORT[$2]}" >/dev/null; }

# pair X Y: X and Y both know each other.
pair() { introduce "$1" "$2"; introduce "$2" "$1"; }

# folder_add NAME FOLDER MODE [PATH]: PATH defaults to NODE_DIR[NAME] and is
# created if missing.
folder_add()
{
	local path=${4:-${NODE_DIR[$1]}}
	mkdir -p "$path"
	shoal_ok "$1" folder add "$2" "$path" --mode "$3" >/dev/null
}

# folder_share NAME FOLDER PEER
folder_share() { shoal_ok "$1" folder share "$2" "${NODE_ID[$3]}" >/dev/null; }

# share_one_way A B FOLDER: A sends FOLDER (at A's folder path), B receives it
# (at B's), each sharing it with the other. A and B must know each other (pair).
share_one_way()
{
	folder_add "$1" "$3" send
	folder_share "$1" "$3" "$2"
	folder_add "$2" "$3" receive
	folder_share "$2" "$3" "$1"
}

# start_agent NAME [EXTRA RUN ARGS...]: starts NAME's agent in the
# background, listening on its port, logging to $E2E_TMP/NAME.log (appended,
# so a restarted agent keeps its earlier log).
start_agent()
{
	local n=$1
	shift
	[ -z "${AGENT_PID[$n]:-}" ] || fail "agent $n already running"
	AGENT_LOG[$n]=$E2E_TMP/$n.log
	printf '===== %s: start: shoal --home %s run --listen 127.0.0.1:%s --no-mdns %s\n' \
		"$(date +%T.%N)" "${NODE_HOME[$n]}" "${NODE_PORT[$n]}" "$*" >>"${AGENT_LOG[$n]}"
	"$SHOAL_BIN" --home "${NODE_HOME[$n]}" run --listen "127.0.0.1:${NODE_PORT[$n]}" --no-mdns "$@" \
		</dev/null >>"${AGENT_LOG[$n]}" 2>&1 &
	AGENT_PID[$n]=$!
	local a found=0
	for a in "${AGENT_NAMES[@]}"; do [ "$a" != "$n" ] || found=1; done
	[ "$found" = 1 ] || AGENT_NAMES+=("$n")
	log "agent $n started, pid ${AGENT_PID[$n]}"
}

# stop_pid PID [GRACE_S]: SIGTERM, then SIGKILL after GRACE_S (default 5)
# seconds.  Sets STOP_RC to the exit status and STOP_KILLED.
stop_pid()
{
	local pid=$1 grace=${2:-5} i=0
	STOP_KILLED=0
	kill -TERM "$pid" 2>/dev/null || true
	while kill -0 "$pid" 2>/dev/null; do
		if [ "$i" -ge $((grace * 10)) ]; then
			kill -KILL "$pid" 2>/dev/null || true
			STOP_KILLED=1
			break
		fi
		sleep 0.1
		i=$((i + 1))
	done
	STOP_RC=0
	wait "$pid" 2>/dev/null || STOP_RC=$?
}

# stop_agent NAME [GRACE_S]: stops NAME's agent as stop_pid does.
stop_agent()
{
	local n=$1
	[ -n "${AGENT_PID[$n]:-}" ] || fail "stop_agent: agent $n is not running"
	stop_pid "${AGENT_PID[$n]}" "${2:-5}"
	AGENT_PID[$n]=
	printf '===== %s: stopped: exit status %s%s\n' "$(date +%T.%N)" "$STOP_RC" \
		"$([ "$STOP_KILLED" = 0 ] || echo ' (needed SIGKILL)')" >>"${AGENT_LOG[$n]}"
	[ -n "${E2E_PASSED:-}" ] || log "agent $n stopped, exit status $STOP_RC$([ "$STOP_KILLED" = 0 ] || echo ' after SIGKILL')"
	return 0
}

# check_agents: fails if an agent that should be running has exited.
check_agents()
{
	local n rc
	for n in "${AGENT_NAMES[@]}"; do
		[ -n "${AGENT_PID[$n]:-}" ] || continue
		if ! kill -0 "${AGENT_PID[$n]}" 2>/dev/null; then
			rc=0
			wait "${AGENT_PID[$n]}" 2>/dev/null || rc=$?
			AGENT_PID[$n]=
			fail "agent $n exited unexpectedly with status $rc"
		fi
	done
}

# wait_for CMD TIMEOUT_S: evaluates CMD (a string, run with eval in this
# shell, so functions work) every 0.1 s until it succeeds (returns 0) or
# TIMEOUT_S (whole) seconds pass (returns 1).  Fails the test if an agent
# started by start_agent has died.
wait_for()
{
	local cmd=$1 timeout=$2 deadline
	deadline=$(($(date +%s%N) + timeout * 1000000000))
	while :; do
		if eval "$cmd"; then
			return 0
		fi
		check_agents
		[ "$(date +%s%N)" -lt "$deadline" ] || return 1
		sleep 0.1
	done
}

# is_listening PORT: something listens on 127.0.0.1:PORT (no connection is
# made, so the agent's logs are not disturbed).
is_listening()
{
	if command -v ss >/dev/null; then
		ss -Hltn "sport = :$1" 2>/dev/null | grep -q .
	else  # no iproute2 ss: read the kernel's table (state 0A is LISTEN)
		python3 - "$1" <<'EOF'
import sys
port = "%04X" % int(sys.argv[1])
for t in ("/proc/net/tcp", "/proc/net/tcp6"):
    try:
        rows = open(t).read().splitlines()[1:]
    except OSError:
        continue
    if any(r.split()[1].endswith(":" + port) and r.split()[3] == "0A" for r in rows):
        sys.exit(0)
sys.exit(1)
EOF
	fi
}

# wait_listening NAME [TIMEOUT_S]
wait_listening()
{
	wait_for "is_listening ${NODE_PORT[$1]}" "${2:-20}" ||
		fail "agent $1 is not listening on 127.0.0.1:${NODE_PORT[$1]} after ${2:-20} s"
}

# status_json NAME: prints NAME's `status --json` output (fails the test if
# the command fails).
status_json() { shoal_ok "$1" status --json; }

# jq_py JSON EXPR: evaluates the Python expression EXPR with d = the parsed
# JSON, folder(ID) = that folder's object, device(ID) = that device's object
# (None if absent), and prints the result (JSON for lists/dicts/bools/None).
jq_py()
{
	python3 - "$1" "$2" <<'EOF'
import json, sys
text = sys.argv[1]
try:
    d = json.loads(text)
except ValueError:
    lines = [l for l in text.splitlines() if l.strip()]
    d = json.loads(lines[-1])
def folder(fid):
    for f in d.get("folders") or []:
        if f.get("id") == fid:
            return f
    raise SystemExit("no folder %r in status: %s" % (fid, text))
def device(did):
    for x in d.get("devices") or []:
        if x.get("id") == did:
            return x
    return None
v = eval(sys.argv[2])
print(v if isinstance(v, str) else json.dumps(v))
EOF
}

# folder_synced JSON FOLDER [FILES] [PEER_ID]: true if the folder is idle,
# needs nothing, global == local (files and bytes), and, if given, local.files
# == FILES and the device PEER_ID is connected.
folder_synced()
{
	python3 - "$1" "$2" "${3:-}" "${4:-}" <<'EOF'
import json, sys
text, fid, files, peer = sys.argv[1:5]
try:
    d = json.loads(text)
except ValueError:
    d = json.loads([l for l in text.splitlines() if l.strip()][-1])
f = next((x for x in d.get("folders") or [] if x.get("id") == fid), None)
ok = (f is not None and f.get("state") == "idle" and f["need"]["files"] == 0
      and f["global"]["files"] == f["local"]["files"]
      and f["global"]["bytes"] == f["local"]["bytes"]
      and (files == "" or f["local"]["files"] == int(files)))
if ok and peer:
    ok = any(x.get("id") == peer and x.get("connected") is True for x in d.get("devices") or [])
sys.exit(0 if ok else 1)
EOF
}

# wait_synced [--timeout S] [--files N] [--peer NAME] HOME|NAME FOLDER
# Polls `status --json` until folder_synced holds.  Without --files a fresh
# receiver that has not yet heard of its peer looks "synced" (empty and idle),
# so tests pass --files and --peer.  On timeout prints the last status and
# fails the test.
wait_synced()
{
	local timeout=$SYNC_TIMEOUT files='' peer='' peer_id=''
	while [ $# -gt 2 ]; do
		case $1 in
		--timeout) timeout=$2; shift 2 ;;
		--files) files=$2; shift 2 ;;
		--peer) peer=$2; peer_id=${NODE_ID[$2]}; shift 2 ;;
		*) fail "wait_synced: bad argument $1" ;;
		esac
	done
	local who=$1 fid=$2 home n
	home=$who
	for n in "${!NODE_HOME[@]}"; do
		if [ "$n" = "$who" ] || [ "${NODE_HOME[$n]}" = "$who" ]; then home=${NODE_HOME[$n]}; fi
	done
	local deadline st=
	deadline=$(($(date +%s%N) + timeout * 1000000000))
	while :; do
		st=$("$SHOAL_BIN" --home "$home" status --json 2>"$E2E_TMP/status.err") ||
			st="(status failed: $st $(cat "$E2E_TMP/status.err"))"
		if folder_synced "$st" "$fid" "$files" "$peer_id" 2>/dev/null; then
			return 0
		fi
		check_agents
		if [ "$(date +%s%N)" -ge "$deadline" ]; then
			printf 'last status of %s:\n%s\n' "$home" "$st" >&2
			fail "folder $fid in $home not synced after $timeout s (want idle, need.files 0, global == local${files:+, local.files $files}${peer:+, $peer connected})"
		fi
		sleep 0.2
	done
}

# is_connected NAME PEER: NAME's status lists PEER as connected.
is_connected()
{
	local st
	st=$("$SHOAL_BIN" --home "${NODE_HOME[$1]}" status --json 2>/dev/null) || return 1
	[ "$(jq_py "$st" "(device('${NODE_ID[$2]}') or {}).get('connected')" 2>/dev/null)" = true ]
}

# wait_connected NAME PEER [TIMEOUT_S]: returns 1 on timeout.
wait_connected() { wait_for "is_connected $1 $2" "${3:-30}"; }

# count_entries DIR: entries below DIR (not DIR itself), skipping .shoal*.
count_entries() { find "$1" -mindepth 1 -name '.shoal*' -prune -o -print | wc -l | tr -d ' '; }

# compare DIR_A DIR_B: runs compare_trees.py; prints its report and returns
# its status.
compare()
{
	local -a opt=()
	[ "${SHOAL_E2E_IGNORE_DIR_MTIME:-0}" != 1 ] || opt=(--ignore-dir-mtime)
	python3 "$E2E_DIR/compare_trees.py" "${opt[@]}" "$1" "$2"
}

# gen_tree OUT [ARGS...]: runs gen_tree.py; prints the number of entries.
gen_tree()
{
	local out
	out=$(python3 "$E2E_DIR/gen_tree.py" "$@") || fail "gen_tree.py $* failed"
	printf '%s\n' "$out" | sed -n 's/^entries: //p'
}

# now_ns: a monotonic-enough clock for durations.
now_ns() { date +%s%N; }
