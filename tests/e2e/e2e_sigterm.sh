#!/usr/bin/env bash
# SIGTERM in the middle of a large pull: B exits 0 within a few seconds, no
# file appears half-written under its real name, the LMDB database opens
# cleanly afterwards, and the restarted B resumes (the blocks it had verified
# are not fetched again) and ends byte-identical.
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"
e2e_begin e2e_sigterm "$@"

SIZE_MIB=${SHOAL_E2E_SIGTERM_MIB:-256}
node_new A
node_new B
a=${NODE_DIR[A]} b=${NODE_DIR[B]}
mkdir -p "$a"
head -c $((SIZE_MIB << 20)) /dev/urandom >"$a/big.bin"
pair A B
folder_add A big send
folder_share A big B
folder_add B big receive
folder_share B big A
start_agent A
wait_listening A
start_agent B
wait_listening B

# Wait until B has pulled part of the file, then stop it.
got_some()
{
	local t
	t=$(find "$b" -maxdepth 1 -name '.shoal-tmp-*' -size +16M 2>/dev/null | sed -n 1p)
	[ -n "$t" ]
}
wait_for got_some 60 || fail "B never started pulling"
sleep 0.5
[ ! -e "$b/big.bin" ] || cmp -s "$a/big.bin" "$b/big.bin" || fail "big.bin appeared before it was complete"
stop_agent B 5
[ "$STOP_KILLED" = 0 ] || fail "B did not exit within 5 s of SIGTERM"
[ "$STOP_RC" = 0 ] || fail "B exited with status $STOP_RC on SIGTERM"
if [ -e "$b/big.bin" ]; then
	cmp -s "$a/big.bin" "$b/big.bin" || fail "a half-written big.bin is visible under its real name"
	log "the pull had finished before SIGTERM; nothing to resume (raise SHOAL_E2E_SIGTERM_MIB)"
fi
ls "$b"/.shoal-tmp-* >/dev/null 2>&1 || [ -e "$b/big.bin" ] || fail "the temp file of the stopped pull is gone"
# The database is consistent: a read-only CLI opens it and reports the folder.
shoal_ok B status --json >/dev/null
sent_before=$(status_json A | python3 -c 'import json,sys; print(sum(d["out_bytes"] for d in json.load(sys.stdin)["devices"]))')
start_agent B
wait_listening B
wait_for "cmp -s '$a/big.bin' '$b/big.bin' 2>/dev/null" 120 || fail "B did not finish after the restart"
sleep 1
if ! grep -q "resuming big.bin" "${AGENT_LOG[B]}"; then
	[ -e "$b/big.bin" ] || fail "the restarted B did not resume the partial download"
fi
sent=$(status_json A | python3 -c 'import json,sys; print(sum(d["out_bytes"] for d in json.load(sys.stdin)["devices"]))')
total=$((SIZE_MIB << 20))
log "A sent $sent bytes for a $total-byte file (before the restart: $sent_before)"
# Verified blocks were not fetched again: at most the file, what was in flight (8 MiB), and slack.
[ "$sent" -le $((total + (24 << 20))) ] || fail "A sent $sent bytes: more than the file plus what was in flight"
[ -z "$(find "$b" -name '.shoal-tmp-*')" ] || fail "a temp file was left behind"
pass
