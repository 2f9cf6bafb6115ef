#!/usr/bin/env bash
# Discovery over real mDNS. Two emulated hosts (mdns_lab.sh: own network and
# /run per host, own dbus-daemon and avahi-daemon, a private bridge between
# them). A (send) and B (receive) know each other's device ID but no address:
# B must find A through mDNS and get A's small tree within MDNS_TIMEOUT
# (60) seconds. Then avahi-daemon stops on both hosts, B restarts with A's
# static address, and a change on A must still arrive: static addresses work
# without avahi.
#   Skipped (77) when avahi-daemon, dbus-daemon or avahi-utils are missing,
#   unless SHOAL_E2E_REQUIRE_MDNS=1 (then it fails).
#   The agents log at SHOAL_LOG_LEVEL (default debug) to $E2E_TMP/A.log, B.log.
# Functions run from traps and wait_for look unreachable to shellcheck:
# shellcheck disable=SC2317
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"

PATH=$PATH:/usr/sbin:/sbin

# Skips (or, with SHOAL_E2E_REQUIRE_MDNS=1, fails) without the lab's tools.
need_tools()
{
	local tool missing=
	for tool in avahi-daemon dbus-daemon avahi-publish avahi-browse nsenter unshare ip; do
		command -v "$tool" >/dev/null || missing="$missing $tool"
	done
	[ -n "$missing" ] || return 0
	missing="missing:$missing (apt-get install avahi-daemon avahi-utils dbus iproute2 util-linux)"
	if [ "${SHOAL_E2E_REQUIRE_MDNS:-0}" = 1 ]; then
		fail "$missing"
	fi
	skip "$missing"
}
need_tools

e2e_begin e2e_mdns "$@"

LAB="$E2E_DIR/mdns_lab.sh"
export MDNS_LAB_DIR=$E2E_TMP/lab
[ "${KEEP:-0}" != 1 ] || export MDNS_LAB_KEEP=1
export SHOAL_LOG_LEVEL=${SHOAL_LOG_LEVEL:-debug}
PORT=22100
FOLDER=e2e-mdns
MDNS_TIMEOUT=${MDNS_TIMEOUT:-60}

lab() { bash "$LAB" "$@"; }

# Agents first (they live in the lab's namespaces), then the lab, then
# lib.sh's own exit handling (logs, work directory, exit status).
mdns_on_exit()
{
	local rc=$? f
	set +e
	trap - ERR
	e2e_cleanup_agents
	if [ "$rc" -ne 0 ] && [ "$rc" -ne 77 ]; then
		for f in "$MDNS_LAB_DIR"/*/avahi.log "$MDNS_LAB_DIR"/*/dbus.log; do
			[ -s "$f" ] || continue
			printf '\n----- last 20 lines of lab %s -----\n' "${f#"$MDNS_LAB_DIR"/}" >&2
			tail -n 20 "$f" >&2
		done
	fi
	lab down >/dev/null 2>&1
	(exit "$rc")
	e2e_on_exit
}
trap mdns_on_exit EXIT

# start_in_lab NAME HOST [RUN ARGS...]: NAME's agent inside lab host HOST,
# listening on 0.0.0.0:$PORT, mDNS on. `lab exec` execs, so $! is the agent.
start_in_lab()
{
	local n=$1 h=$2 a found=0
	shift 2
	[ -z "${AGENT_PID[$n]:-}" ] || fail "agent $n already running"
	AGENT_LOG[$n]=$E2E_TMP/$n.log
	printf '===== %s: start in host %s: shoal --home %s run --listen 0.0.0.0:%s %s\n' \
		"$(date +%T.%N)" "$h" "${NODE_HOME[$n]}" "$PORT" "$*" >>"${AGENT_LOG[$n]}"
	bash "$LAB" exec "$h" "$SHOAL_BIN" --home "${NODE_HOME[$n]}" run \
		--listen "0.0.0.0:$PORT" "$@" </dev/null >>"${AGENT_LOG[$n]}" 2>&1 &
	AGENT_PID[$n]=$!
	for a in "${AGENT_NAMES[@]}"; do [ "$a" != "$n" ] || found=1; done
	[ "$found" = 1 ] || AGENT_NAMES+=("$n")
	wait_for "lab exec $h ss -Hltn 'sport = :$PORT' 2>/dev/null | grep -q ." 20 ||
		fail "agent $n does not listen on port $PORT in host $h"
	log "agent $n started in host $h, pid ${AGENT_PID[$n]}"
}

# b_synced FILES: B's folder is synced, holds FILES entries, A is connected.
b_synced()
{
	local st
	st=$("$SHOAL_BIN" --home "${NODE_HOME[B]}" status --json 2>/dev/null) || return 1
	folder_synced "$st" "$FOLDER" "$1" "${NODE_ID[A]}"
}

# ---- the lab, and a check that mDNS works in it at all ----
node_new A
node_new B
lab up a b >"$E2E_TMP/lab-up.out" 2>&1 || { cat "$E2E_TMP/lab-up.out" >&2; fail "mdns_lab.sh up failed"; }
ADDR_A=$(lab addr a)
log "lab up: a=$ADDR_A b=$(lab addr b)"

bash "$LAB" exec a avahi-publish -s "shoal-selfcheck-$$" _shoal-check._tcp 9 "id=selfcheck" \
	</dev/null >"$E2E_TMP/selfcheck-publish.out" 2>&1 &
pub=$!
EXTRA_PIDS=("$pub")
t0=$(now_ns)
browse_sees_check()
{
	lab exec b avahi-browse -rpt _shoal-check._tcp 2>/dev/null |
		grep -q "^=;.*;shoal-selfcheck-$$;_shoal-check._tcp;.*;$ADDR_A;9;"
}
wait_for browse_sees_check 15 ||
	fail "lab self-check: avahi-browse in host b does not see avahi-publish of host a"
log "lab self-check: host b resolved host a's test service after $((($(now_ns) - t0) / 1000000)) ms"
stop_pid "$pub"
EXTRA_PIDS=()

# ---- A and B know each other's ID, no address ----
shoal_ok A device add "${NODE_ID[B]}" --name B >/dev/null
shoal_ok B device add "${NODE_ID[A]}" --name A >/dev/null
entries=$(gen_tree "${NODE_DIR[A]}" --seed 7 --files 40 --large-mib 0)
share_one_way A B "$FOLDER"
log "tree: $entries entries"

start_in_lab A a
start_in_lab B b
t0=$(now_ns)
if ! wait_for "b_synced $entries" "$MDNS_TIMEOUT"; then
	grep -i 'mdns' "${AGENT_LOG[B]}" | tail -n 5 >&2 || true
	fail "B did not get A's tree through mDNS within $MDNS_TIMEOUT s (B knows A's ID only; is discovery wired into the agent?)"
fi
log "B synced through mDNS after $(python3 -c "print('%.2f' % (($(now_ns) - $t0) / 1e9))") s"
compare "${NODE_DIR[A]}" "${NODE_DIR[B]}" || fail "B's folder differs from A's after the mDNS sync (see above)"

# ---- no avahi: static addresses still work ----
lab avahi-stop a
lab avahi-stop b
log "avahi-daemon stopped on both hosts"
sleep 1
check_agents
stop_agent B
if [ "$STOP_RC" != 0 ] || [ "$STOP_KILLED" != 0 ]; then
	fail "agent B did not stop cleanly (status $STOP_RC) after avahi-daemon went away"
fi
shoal_ok B device add "${NODE_ID[A]}" --addr "$ADDR_A:$PORT" >/dev/null
start_in_lab B b

# One file changed in place, one added.
changed=$(python3 - "${NODE_DIR[A]}" <<'PY'
import os, stat, sys
root = sys.argv[1]
files = []
for dirpath, dirnames, filenames in os.walk(root):
    dirnames[:] = [d for d in dirnames if not d.startswith(".shoal")]
    for n in filenames:
        p = os.path.join(dirpath, n)
        if not n.startswith(".shoal") and stat.S_ISREG(os.lstat(p).st_mode):
            files.append(os.path.relpath(p, root))
rel = sorted(files)[0]
p = os.path.join(root, rel)
mode = os.stat(p).st_mode
os.chmod(p, mode | 0o200)
with open(p, "ab") as f:
    f.write(b"changed while avahi-daemon was down\n")
os.chmod(p, stat.S_IMODE(mode))
with open(os.path.join(root, "after-avahi.txt"), "w") as f:
    f.write("written while avahi-daemon was down\n")
print(rel)
PY
)
log "changed '$changed' and added after-avahi.txt on A"
arrived()
{
	b_synced $((entries + 1)) &&
		cmp -s "${NODE_DIR[A]}/after-avahi.txt" "${NODE_DIR[B]}/after-avahi.txt" &&
		cmp -s "${NODE_DIR[A]}/$changed" "${NODE_DIR[B]}/$changed"
}
wait_for arrived 60 ||
	fail "the change on A did not reach B at A's static address $ADDR_A:$PORT within 60 s without avahi"
compare "${NODE_DIR[A]}" "${NODE_DIR[B]}" || fail "B's folder differs from A's after the static-address sync"
log "the change arrived through the static address"
pass
