#!/usr/bin/env bash
# Old deletions are forgotten, but not while a device still has the files.
# A shares a folder with B and C (all send-receive), 30 files reach everyone,
# C stops, A deletes 12 files.  With a retention of 3 s (the test hook
# SHOAL_FORGET_DELETED_S; the setting's minimum is 60 s):
# - B, which has deleted them too and knows of no one else, forgets all 12;
# - A keeps all 12 tombstones, because its copy of C's index still holds the
#   files;
# Then C comes back: it must delete the 12 files (not bring them back to A or
# B), and once it has, A forgets the tombstones as well.  A file re-created
# under a forgotten name syncs like a new one.
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"
e2e_begin e2e_forget "$@"

FOLDER=e2e-forget
export SHOAL_FORGET_DELETED_S=3
node_new A
node_new B
node_new C
src=${NODE_DIR[A]}
entries=$(gen_tree "$src" --seed 21 --files 30 --dirs 6 --large-mib 0)

pair A B
pair A C
for n in A B C; do folder_add "$n" "$FOLDER" sendreceive; done
folder_share A "$FOLDER" B
folder_share A "$FOLDER" C
folder_share B "$FOLDER" A
folder_share C "$FOLDER" A

# tombstones NAME: the number of deletions NAME's own index remembers.
tombstones() { jq_py "$(status_json "$1")" "folder('$FOLDER')['tombstones']"; }

start_agent A
start_agent B
start_agent C
wait_listening A
wait_synced --files "$entries" --peer A B "$FOLDER"
wait_synced --files "$entries" --peer A C "$FOLDER"
compare "$src" "${NODE_DIR[B]}" || fail "first sync: B differs from A"
compare "$src" "${NODE_DIR[C]}" || fail "first sync: C differs from A"
stop_agent C 5

mapfile -t victims < <(cd "$src" && find . -type f ! -name '.shoal*' | sort | sed -n '1~2p' | sed -n '1,12p')
[ "${#victims[@]}" = 12 ] || fail "the tree has fewer than 24 files"
for v in "${victims[@]}"; do rm -- "$src/$v"; done
shoal_ok A scan "$FOLDER" --wait >/dev/null
left=$((entries - 12))
wait_synced --files "$left" --peer A B "$FOLDER"
compare "$src" "${NODE_DIR[B]}" || fail "B did not apply the deletions"
[ "$(tombstones A)" = 12 ] || fail "A should remember 12 deletions right after them, has $(tombstones A)"

# shellcheck disable=SC2016  # expanded by wait_for's eval
wait_for '[ "$(tombstones B)" = 0 ]' 30 ||
	fail "B still remembers $(tombstones B) deletions well after the 3 s retention"
sleep 3 # A has had several passes too
[ "$(tombstones A)" = 12 ] ||
	fail "A forgot deletions although C (offline) still has the files: $(tombstones A) left of 12"
grep -Eq "forgot [0-9]+ deletions" "${AGENT_LOG[B]}" || fail "B did not log what it forgot"
log "B forgot its 12 tombstones; A keeps them while C is away"

# C comes back: it must delete the files, not resurrect them.
start_agent C
wait_synced --files "$left" --peer A C "$FOLDER"
compare "$src" "${NODE_DIR[C]}" || fail "C did not apply the deletions it missed"
# shellcheck disable=SC2016
wait_for '[ "$(tombstones A)" = 0 ] && [ "$(tombstones C)" = 0 ]' 30 ||
	fail "A ($(tombstones A)) and C ($(tombstones C)) still remember deletions after C caught up"
sleep 2
for n in A B C; do
	[ "$(count_entries "${NODE_DIR[$n]}")" = "$left" ] ||
		fail "$n has $(count_entries "${NODE_DIR[$n]}") entries, want $left: a deleted file came back"
done
compare "$src" "${NODE_DIR[B]}" || fail "B differs from A after C came back"

# A forgotten name can be used again.
printf 'born again\n' >"$src/${victims[0]}"
shoal_ok A scan "$FOLDER" --wait >/dev/null
wait_synced --files "$((left + 1))" --peer A B "$FOLDER"
wait_synced --files "$((left + 1))" --peer A C "$FOLDER"
compare "$src" "${NODE_DIR[B]}" || fail "a re-created file did not reach B"
compare "$src" "${NODE_DIR[C]}" || fail "a re-created file did not reach C"

stop_agent A 5
stop_agent B 5
stop_agent C 5
pass
