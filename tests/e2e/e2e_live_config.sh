#!/usr/bin/env bash
# A running agent picks up configuration changes: A and B run with the folder
# configured on both sides but not yet shared by A; `folder share` on A while
# it runs must get the tree to B within 10 s, with no restart.
#   SHOAL_E2E_FILES (200), SHOAL_E2E_LARGE_MIB (0) size the tree.
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"
e2e_begin e2e_live_config "$@"

FOLDER=e2e-live
node_new A
node_new B
entries=$(gen_tree "${NODE_DIR[A]}" --seed 5 --files "${SHOAL_E2E_FILES:-200}" \
	--large-mib "${SHOAL_E2E_LARGE_MIB:-0}")

pair A B
folder_add A "$FOLDER" send            # not shared with B yet
folder_add B "$FOLDER" receive
folder_share B "$FOLDER" A

start_agent A
start_agent B
wait_listening A
wait_listening B
# Devices that know each other may connect before sharing anything; if this
# agent only connects once a folder is shared, the 10 s below include that.
if wait_connected B A 15; then
	log "A and B connected before the share"
else
	log "note: A and B not connected before the share; continuing"
fi
# Let A finish its scan, and make sure nothing leaks before the share.
sleep 2
n=$(count_entries "${NODE_DIR[B]}")
[ "$n" = 0 ] || fail "B received $n entries before A shared the folder"

log "sharing the folder on the running A"
t0=$(now_ns)
folder_share A "$FOLDER" B
wait_synced --timeout 10 --files "$entries" --peer A B "$FOLDER"
t1=$(now_ns)
log "B synced $(python3 -c "print('%.2f' % (($t1 - $t0) / 1e9))") s after the share"
compare "${NODE_DIR[A]}" "${NODE_DIR[B]}" || fail "B's folder differs from A's (see above)"
check_agents   # both agents still the original processes
pass
