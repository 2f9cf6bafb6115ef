#!/usr/bin/env bash
# Live, incremental sync between three send-receive agents (A, B, C, all
# paired): a scripted series of creates, edits, appends, truncations,
# deletes, renames, directory moves, mode changes and type changes made while
# the agents run converges on every device; then concurrent edits made while
# B is down leave the winner under the file's name and the loser as a
# conflict copy everywhere, and a delete racing an edit keeps the edit.
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"
e2e_begin e2e_live "$@"

FOLDER=live
for n in A B C; do node_new "$n"; done
pair A B; pair A C; pair B C
a=${NODE_DIR[A]} b=${NODE_DIR[B]} c=${NODE_DIR[C]}
gen_tree "$a" --seed 21 --files 200 --large-mib 8 >/dev/null
for n in A B C; do
	folder_add "$n" "$FOLDER" send-receive
	for m in A B C; do [ "$n" = "$m" ] || folder_share "$n" "$FOLDER" "$m"; done
done

converged()
{
	compare "$a" "$b" >/dev/null 2>&1 && compare "$a" "$c" >/dev/null 2>&1
}

wait_converged()
{
	local what=$1
	if ! wait_for converged "${2:-60}"; then
		compare "$a" "$b" || true
		compare "$a" "$c" || true
		fail "$what: the three folders did not converge"
	fi
	log "$what: converged"
}

for n in A B C; do start_agent "$n"; done
for n in A B C; do wait_listening "$n"; done
wait_converged "initial sync" 120

# A scripted series on A, with the agents running (the watcher sees it).
python3 - "$a" <<'PY'
import os, random, shutil, sys
root = sys.argv[1]
rng = random.Random(5)
def p(*x): return os.path.join(root, *x)
os.makedirs(p("new", "deep", "er"))
for i in range(20):
    with open(p("new", "deep", "er", f"f{i}.txt"), "wb") as f:
        f.write(rng.randbytes(rng.randrange(0, 50000)))
files = sorted(os.path.relpath(os.path.join(d, n), root)
               for d, _, ns in os.walk(root) for n in ns
               if not n.startswith(".shoal") and not os.path.islink(os.path.join(d, n))
               and "new" not in d and os.path.getsize(os.path.join(d, n)) > 2000)
edit, app, trunc, dele, ren, mod = files[:6]
big = [x for x in files[6:] if os.path.getsize(p(x)) > 4_000_000]
with open(p(edit), "r+b") as f:          # in-place edit in the middle
    f.seek(os.path.getsize(p(edit)) // 2); f.write(b"EDITED" * 100)
with open(p(app), "ab") as f:            # append
    f.write(b"appended\n" * 1000)
with open(p(trunc), "r+b") as f:         # truncate
    f.truncate(1000)
os.unlink(p(dele))                       # delete
os.rename(p(ren), p(ren + ".renamed"))   # rename
os.chmod(p(mod), 0o600)                  # mode change
if big:                                  # move the large file into another dir
    os.rename(p(big[0]), p("new", "moved-large.bin"))
dirs = sorted(d for d in os.listdir(root) if os.path.isdir(p(d)) and d.startswith("d0"))
if len(dirs) >= 2:
    shutil.move(p(dirs[0]), p("new", "moved-dir"))     # directory move
    shutil.rmtree(p(dirs[1]))                          # directory removal
with open(p("was-a-file"), "w") as f: f.write("x")
os.makedirs(p("was-a-dir", "inner"))
with open(p("was-a-dir", "inner", "g"), "w") as f: f.write("g")
PY
wait_converged "series on A (creates, edits, deletes, renames, moves)"

# Type changes: a file becomes a directory and a directory becomes a file.
rm "$a/was-a-file"
mkdir "$a/was-a-file"
echo inside >"$a/was-a-file/now-a-dir.txt"
rm -r "$a/was-a-dir"
echo "now a file" >"$a/was-a-dir"
wait_converged "type changes on A"

# Changes on B travel too.
echo "from B" >"$b/from-b.txt"
rm -f "$b/new/deep/er/f3.txt"
wait_converged "changes on B"

# Concurrent edits: B is down while A and B edit the same file; B's edit is
# later, so B wins and A's edit becomes a conflict copy on every device.
echo "base" >"$a/conflict.txt"
echo "keep-me" >"$a/race.txt"
wait_converged "conflict set-up"
stop_agent B
[ "$STOP_RC" = 0 ] || fail "B did not stop cleanly"
echo "edit from A" >"$a/conflict.txt"
rm "$a/race.txt"                                  # A deletes ...
sleep 1.2
echo "edit from B, later" >"$b/conflict.txt"
echo "edited on B while A deleted it" >"$b/race.txt"   # ... while B edits
start_agent B
wait_listening B
if ! wait_for "converged && [ -n \"\$(ls $a | grep 'conflict.sync-conflict-' || true)\" ]" 60; then
	ls -la "$a" "$b" >&2
	fail "the conflict did not resolve into a conflict copy on every device"
fi
wait_converged "after the conflict"
[ "$(cat "$a/conflict.txt")" = "edit from B, later" ] || fail "conflict.txt: the later edit did not win"
copies=$(find "$a" -maxdepth 1 -name 'conflict.sync-conflict-*.txt' | wc -l)
[ "$copies" = 1 ] || fail "expected one conflict copy, found $copies"
copy=$(find "$a" -maxdepth 1 -name 'conflict.sync-conflict-*.txt')
[ "$(cat "$copy")" = "edit from A" ] || fail "the conflict copy does not hold A's edit"
[[ $(basename "$copy") =~ ^conflict\.sync-conflict-[0-9]{8}-[0-9]{6}-${NODE_ID[A]:0:7}\.txt$ ]] ||
	fail "conflict copy name $(basename "$copy") is not NAME.sync-conflict-YYYYMMDD-HHMMSS-<A's short ID>.txt"
[ "$(cat "$a/race.txt" 2>/dev/null)" = "edited on B while A deleted it" ] ||
	fail "a delete racing an edit must keep the edit"
listed=$(shoal_ok C conflicts)
grep -q "conflict.sync-conflict-" <<<"$listed" || fail "shoal conflicts on C does not list the copy"
pass
