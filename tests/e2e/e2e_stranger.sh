#!/usr/bin/env bash
# C knows A (device ID, address, a receive folder shared with A), but A has
# never heard of C.  A must refuse C: C gets nothing, C never shows A as
# connected, and A's log says why.
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"
e2e_begin e2e_stranger "$@"

FOLDER=e2e-stranger
node_new A
node_new C
gen_tree "${NODE_DIR[A]}" --seed 3 --files 50 --large-mib 0 >/dev/null
folder_add A "$FOLDER" send          # A shares with nobody and knows nobody

introduce C A
folder_add C "$FOLDER" receive
folder_share C "$FOLDER" A

start_agent A
start_agent C
wait_listening A
wait_listening C
log "both listening; letting C try for 5 s"
sleep 5
check_agents

n=$(count_entries "${NODE_DIR[C]}")
[ "$n" = 0 ] || fail "C's folder has $n entries from A: $(find "${NODE_DIR[C]}" -mindepth 1 | head -n 5)"

st=$(status_json C)
conn=$(jq_py "$st" "(device('${NODE_ID[A]}') or {}).get('connected')")
[ "$conn" = false ] || fail "C's status shows A connected=$conn, want false; status: $st"
files=$(jq_py "$st" "folder('$FOLDER')['local']['files']")
[ "$files" = 0 ] || fail "C's status shows local.files=$files, want 0; status: $st"

st=$(status_json A)
conn=$(jq_py "$st" "(device('${NODE_ID[C]}') or {}).get('connected')")
[ "$conn" != true ] || fail "A's status shows the stranger C connected; status: $st"

# Give a slow dialer up to 10 more seconds to have been refused at least once.
# (Lines starting with ===== are the harness's own start/stop markers.)
# shellcheck disable=SC2317  # called through wait_for
refused() { grep -v '^=====' "${AGENT_LOG[A]}" | grep -Eiq 'unknown device|refus'; }
wait_for refused 10 || fail "A's log does not mention refusing C (no 'unknown device' / 'refus')"
grep -v '^=====' "${AGENT_LOG[A]}" | grep -Ei 'unknown device|refus' | head -n 3 >&2 || true

# Still nothing after the checks (no late transfer).
n=$(count_entries "${NODE_DIR[C]}")
[ "$n" = 0 ] || fail "C's folder has $n entries from A"
pass
