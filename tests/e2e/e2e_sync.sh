#!/usr/bin/env bash
# A (send) shares a generated tree with B (receive); B must end up with an
# identical tree and report it in `status --json`.
#   SHOAL_E2E_FILES (3000), SHOAL_E2E_LARGE_MIB (64), SHOAL_E2E_SEED (1)
#   shrink the tree for quick runs.
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"
e2e_begin e2e_sync "$@"

FOLDER=e2e-sync
node_new A
node_new B
log "generating tree"
entries=$(gen_tree "${NODE_DIR[A]}" --seed "${SHOAL_E2E_SEED:-1}" \
	--files "${SHOAL_E2E_FILES:-3000}" --large-mib "${SHOAL_E2E_LARGE_MIB:-64}")
[ "$entries" = "$(count_entries "${NODE_DIR[A]}")" ] || fail "gen_tree.py entry count $entries != find count"
log "tree: $entries entries"

pair A B
share_one_way A B "$FOLDER"

start_agent A
wait_listening A
t0=$(now_ns)
start_agent B
wait_listening B
wait_synced --files "$entries" --peer A B "$FOLDER"
t1=$(now_ns)
secs=$(python3 -c "print('%.2f' % (($t1 - $t0) / 1e9))")
log "B synced after $secs s"

compare "${NODE_DIR[A]}" "${NODE_DIR[B]}" || fail "B's folder differs from A's (see above)"

st=$(status_json B)
state=$(jq_py "$st" "folder('$FOLDER')['state']")
[ "$state" = idle ] || fail "B folder state is '$state', want idle; status: $st"
need=$(jq_py "$st" "folder('$FOLDER')['need']['files']")
[ "$need" = 0 ] || fail "B need.files is $need, want 0; status: $st"
local_files=$(jq_py "$st" "folder('$FOLDER')['local']['files']")
[ "$local_files" = "$entries" ] || fail "B local.files is $local_files, want $entries (entries in the tree); status: $st"
err=$(jq_py "$st" "folder('$FOLDER')['error']")
[ "$err" = null ] || fail "B folder error is $err, want null; status: $st"
running=$(jq_py "$st" "d['running']")
[ "$running" = true ] || fail "B status says running=$running while its agent runs; status: $st"
conn=$(jq_py "$st" "(device('${NODE_ID[A]}') or {}).get('connected')")
[ "$conn" = true ] || fail "B does not show A connected (connected=$conn); status: $st"

# A directory of the receive-only copy whose only change is its mtime (files
# written into it, as a pull cut short by a crash leaves it) gets A's back.
dir=$(cd "${NODE_DIR[B]}" && find . -mindepth 1 -type d ! -name '.shoal*' | sort | sed -n 1p)
[ -n "$dir" ] || fail "the tree has no directory"
touch -m -d '2001-02-03 04:05:06' "${NODE_DIR[B]}/$dir"
shoal_ok B scan "$FOLDER" --wait >/dev/null
# shellcheck disable=SC2016  # expanded by wait_for's eval
wait_for 'compare "${NODE_DIR[A]}" "${NODE_DIR[B]}" >/dev/null 2>&1' 30 ||
	{ compare "${NODE_DIR[A]}" "${NODE_DIR[B]}" || true; fail "B kept a changed mtime on $dir instead of restoring A's"; }

echo "sync-seconds: $secs"
pass
