#!/usr/bin/env bash
# A pull works through its plan in windows (PULL_WINDOW items per device, in
# index key order; SHOAL_PULL_WINDOW=5 here), creations first, deletions in
# a second sweep. A and C (send-receive) hold the same tree; B (receive-only)
# pulls from both at once, so each window is cut where either device's part
# ends and the names both offer are planned once.
# 1. First sync: about 250 items, directories nested four deep, symlinks,
#    and paths longer than 400 bytes (whose index keys are not in byte
#    order). B must match A byte for byte after dozens of windows.
# 2. A renames a directory, deletes another with everything in it, adds,
#    edits and deletes files. B must match again: the deletions may only run
#    after every creation (the renamed files are copied from the old ones,
#    which must still be there: B reuses them locally), and a directory
#    only once what was in it is gone, whichever window held it.
# 3. One edit and one deletion: B's pull plans only the changed names.
# With SHOAL_SLICE=7 every scan compares with the index, and finds its
# deletions, in slices of 7 entries between other work of the loop, and the
# status figures are counted the same way.
# Also: B's watcher does not rescan what B's puller wrote (watch_expect).
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"
e2e_begin e2e_window "$@"

FOLDER=window
export SHOAL_PULL_WINDOW=5
export SHOAL_SLICE=7 # scans compare, and counts walk, 7 index entries per loop turn
export SHOAL_LOG_LEVEL=debug # the watcher's scoped scans are logged at debug
node_new A
node_new B
node_new C
src=${NODE_DIR[A]}
gen_tree "$src" --seed 31 --files 200 --dirs 24 --large-mib 0 >/dev/null
# Paths over 400 bytes: a directory of 390 bytes with files in it.
long_dir=$src/deep/$(printf 'd%.0s' {1..190})/$(printf 'e%.0s' {1..193})
mkdir -p "$long_dir"
for i in 1 2 3 4 5 6; do head -c $((i * 1000)) /dev/urandom >"$long_dir/file-$i"; done
# The two top-level directories with the most below them (not deep/): one
# is deleted in step 2, the other renamed, with 3 MB that B must not fetch again.
mapfile -t tops < <(cd "$src" && for d in */; do
	d=${d%/}
	[ "$d" = deep ] || printf '%s %s\n' "$(find "./$d" -mindepth 2 | wc -l)" "$d"
done | sort -rn | head -n 2 | cut -d' ' -f2-)
gone=${tops[0]:-}
moved=${tops[1]:-}
[ -n "$moved" ] && [ -n "$gone" ] || fail "the tree has too few directories"
[ "$(find "$src/$gone" -mindepth 2 | wc -l)" -gt 0 ] || fail "$gone has nothing nested to delete"
head -c 3000000 /dev/urandom >"$src/$moved/big.bin"
entries=$(count_entries "$src")

pair A B
pair A C
pair C B
folder_add A "$FOLDER" sendreceive
folder_add C "$FOLDER" sendreceive
folder_add B "$FOLDER" receive
folder_share A "$FOLDER" B
folder_share A "$FOLDER" C
folder_share C "$FOLDER" A
folder_share C "$FOLDER" B
folder_share B "$FOLDER" A
folder_share B "$FOLDER" C
start_agent A
start_agent C
wait_listening A
wait_synced --files "$entries" --peer A C "$FOLDER"
compare "$src" "${NODE_DIR[C]}" || fail "first sync: C differs from A"
start_agent B
wait_connected B A || fail "B did not connect to A"
wait_connected B C || fail "B did not connect to C"
wait_synced --files "$entries" --peer A B "$FOLDER"
compare "$src" "${NODE_DIR[B]}" || fail "first sync: B differs from A"

# last_pull NAME: NAME's last "pulled" log line.
last_pull() { grep "pulled $FOLDER:" "${AGENT_LOG[$1]}" | tail -n 1; }
windows=$(grep "pulled $FOLDER:" "${AGENT_LOG[B]}" | sed -n 's/.*(\([0-9]*\) windows).*/\1/p' |
	awk '{ s += $1 } END { print s + 0 }')
log "B's pulls planned $windows windows for $entries items"
[ "$windows" -ge 20 ] || fail "B planned $windows windows, want at least 20 with a window of 5"

# B's watcher drops the events of B's own renames, creations and deletes:
# the puller records those, so B must not scan what it just pulled (it
# scanned about 1,000 entries after this pull before).
rescanned=$(grep "scanned [0-9]* paths\? of $FOLDER" "${AGENT_LOG[B]}" |
	sed -n 's/.*: \([0-9]*\) entries.*/\1/p' | awk '{ s += $1 } END { print s + 0 }')
log "B's watcher scanned $rescanned entries after the pull of $entries"
[ "$rescanned" -lt $((entries / 2)) ] ||
	fail "B rescanned $rescanned entries after pulling $entries: its own changes were not told apart"

# 2. Rename, delete a whole subtree, add, edit, delete.
mv "$src/$moved" "$src/$moved-renamed"
rm -rf "${src:?}/$gone"
rm -f "$long_dir/file-2"
for i in 1 2 3 4 5 6 7 8; do head -c $((i * 3000)) /dev/urandom >"$src/new-$i.bin"; done
mapfile -t edits < <(cd "$src" && find . -type f -size +1k ! -path './.shoal*' | sort | sed -n '1~7p' | head -n 6)
for e in "${edits[@]}"; do printf 'edited' >>"$src/$e"; done
entries=$(count_entries "$src")
shoal_ok A scan "$FOLDER" --wait >/dev/null
wait_synced --files "$entries" --peer A C "$FOLDER"
wait_synced --files "$entries" --peer A B "$FOLDER"
compare "$src" "${NODE_DIR[B]}" || fail "after the changes: B differs from A"
compare "$src" "${NODE_DIR[C]}" || fail "after the changes: C differs from A"
[ ! -e "${NODE_DIR[B]}/$gone" ] || fail "B still has the deleted directory $gone"
slices=$(grep -c "compared $FOLDER with its index in [0-9]* slices" "${AGENT_LOG[A]}" || true)
[ "$slices" -ge 1 ] || fail "A's scans never compared in slices"

# The renamed directory's files came from B's own old copies.
reused=$(grep "pulled $FOLDER:" "${AGENT_LOG[B]}" | tail -n 3 |
	sed -n 's/.*, \([0-9.]*\) MB reused locally.*/\1/p' | awk '{ s += $1 } END { print s }')
log "renamed $moved with its 3 MB big.bin; B reused $reused MB locally"
python3 -c "import sys; sys.exit(0 if $reused >= 3.0 else 1)" ||
	fail "B reused $reused MB locally, want at least the 3 MB of the renamed big.bin"

# 3. One edit and one deletion: fewer names changed than a window holds, so
#    B's pull plans just those names (folder_dirty_name), not the whole index.
pulls_before=$(grep -c "pulled $FOLDER:" "${AGENT_LOG[B]}")
printf 'one more edit' >>"$src/new-1.bin"
rm -f "$src/new-2.bin"
entries=$(count_entries "$src")
shoal_ok A scan "$FOLDER" --wait >/dev/null
wait_synced --files "$entries" --peer A B "$FOLDER"
compare "$src" "${NODE_DIR[B]}" || fail "after one edit and one deletion: B differs from A"
[ "$(grep -c "pulled $FOLDER:" "${AGENT_LOG[B]}")" -gt "$pulls_before" ] || fail "B did not pull"
grep "pulled $FOLDER:" "${AGENT_LOG[B]}" | tail -n +$((pulls_before + 1)) | grep -v -q 'changed names' &&
	fail "B planned its whole index for one edit: $(last_pull B)"
log "B's pull of one edit and one deletion: $(last_pull B)"
pass
