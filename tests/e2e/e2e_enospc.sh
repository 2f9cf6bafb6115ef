#!/usr/bin/env bash
# A full disk on the receiver.  B's folder is a 24 MiB tmpfs (mounted in a
# private mount namespace before `folder add` writes its .shoal-folder
# marker); A (send) shares 40 MiB.  B must stop with a clear error: folder
# state "error" in `status --json` with an error text that mentions space,
# and an "error" event in `shoal events --since 0 --json`.  No file may be
# left half-written under its real name: every file in B's folder (outside
# .shoal*) is byte-identical to A's.  Then the tmpfs grows to 128 MiB
# (remount) and B must converge on its own, with no command, within 60 s.
#   SHOAL_E2E_TMPFS_MIB (24) sizes the small disk.
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"

# A private mount namespace first, so the tmpfs disappears with the test
# (e2e_begin then adds the network and PID namespaces inside it).
if [ -z "${SHOAL_MNTNS:-}" ]; then
	mntns=(-m)
	[ "$(id -u)" -eq 0 ] || mntns=(-r -m)
	unshare "${mntns[@]}" true 2>/dev/null || skip "cannot create a mount namespace (unshare ${mntns[*]})"
	exec unshare "${mntns[@]}" --propagation private -- env SHOAL_MNTNS=1 bash "$0" "$@"
fi
e2e_begin e2e_enospc "$@"

FOLDER=enospc
SMALL_MIB=${SHOAL_E2E_TMPFS_MIB:-24}
node_new A
node_new B
src=${NODE_DIR[A]} dst=${NODE_DIR[B]}

# 40 MiB: 8 files of 4 MiB, 16 of 512 KiB, and 20 small ones.
mkdir -p "$src/big" "$src/mid" "$src/small"
python3 - "$src" <<'EOF'
import os, random, sys
root = sys.argv[1]
rng = random.Random(7)
for i in range(8):
    with open(os.path.join(root, "big", "big-%02d.bin" % i), "wb") as f:
        f.write(rng.randbytes(4 << 20))
for i in range(16):
    with open(os.path.join(root, "mid", "mid-%02d.bin" % i), "wb") as f:
        f.write(rng.randbytes(512 << 10))
for i in range(20):
    with open(os.path.join(root, "small", "small-%02d.txt" % i), "wb") as f:
        f.write(rng.randbytes(1000 + i))
EOF
entries=$(count_entries "$src")
total=$(du -sb --exclude='.shoal*' "$src" | cut -f1)
log "A's tree: $entries entries, about $((total >> 20)) MiB"

mkdir -p "$dst"
mount -t tmpfs -o "size=${SMALL_MIB}m" tmpfs "$dst" || skip "cannot mount a tmpfs at $dst"
# Unmount before lib.sh's exit handler removes the work directory (it keeps
# the exit status: e2e_on_exit reads $? first).
trap 'rc=$?; trap - ERR; umount -l "$dst" 2>/dev/null; (exit $rc); e2e_on_exit' EXIT
log "mounted a ${SMALL_MIB} MiB tmpfs at $dst"

pair A B
folder_add A "$FOLDER" send
folder_share A "$FOLDER" B
folder_add B "$FOLDER" receive  # after the mount: the marker is on the tmpfs
folder_share B "$FOLDER" A
[ -e "$dst/.shoal-folder" ] || fail "no .shoal-folder marker on the tmpfs after folder add"

start_agent A
wait_listening A
start_agent B
wait_listening B
# Keep B's event stream, to show the folder's state changes with their times.
evlog=$E2E_TMP/B-events.jsonl
"$SHOAL_BIN" --home "${NODE_HOME[B]}" events --since 0 --json >"$evlog" 2>/dev/null &
EXTRA_PIDS+=("$!")

# show_states: B's error and folder_state events so far, one a line.
show_states()
{
	python3 - "$evlog" "$FOLDER" <<'PY' >&2 || true
import json, sys
last = None
for l in open(sys.argv[1]):
    try:
        e = json.loads(l)
    except ValueError:
        continue
    if e.get("folder") != sys.argv[2] or e["type"] not in (
            "folder_state", "transfer_failed", "transfer_completed", "error"):
        continue
    if e["type"] == "folder_state":
        print("  %s state %s -> %s" % (e["time"], e["from"], e["to"]))
    elif e["type"] in ("transfer_failed", "transfer_completed"):
        print("  %s %s %s" % (e["time"], e["type"], e.get("failed", "")))
    elif e["type"] == "error":
        # One line per run of errors (the text may name each file in turn).
        if last != "error":
            print("  %s error %s" % (e["time"], e.get("message", "")))
    last = e["type"]
PY
}

# B must reach the error state (state and text from the same status).
b_in_error() { st=$(status_json B) && [ "$(jq_py "$st" "folder('$FOLDER')['state']")" = error ]; }
t0=$(now_ns)
st=
if ! wait_for b_in_error 60; then
	fail "B's folder did not reach state error within 60 s on a full ${SMALL_MIB} MiB disk; status: $st; df: $(df -k "$dst" | tail -n 1)"
fi
log "B in error after $(python3 -c "print('%.1f' % (($(now_ns) - $t0) / 1e9))") s; df: $(df -k "$dst" | tail -n 1)"
err=$(jq_py "$st" "folder('$FOLDER')['error']")
log "B's error: $err"
grep -qi 'space' <<<"$err" || fail "B's error text does not mention space: '$err'"

# A durable "error" event for the folder.
evs=$(timeout 3 "$SHOAL_BIN" --home "${NODE_HOME[B]}" events --since 0 --json 2>"$E2E_TMP/events.err" || true)
python3 - "$FOLDER" "$evs" <<'EOF' || fail "no error event for the folder in 'events --since 0 --json' (see above)"
import json, sys
folder, text = sys.argv[1], sys.argv[2]
evs = [json.loads(l) for l in text.splitlines() if l.strip()]
errs = [e for e in evs if e.get("type") == "error" and e.get("folder") == folder]
if not errs:
    print("events seen: %s" % sorted({e.get("type") for e in evs}), file=sys.stderr)
    sys.exit(1)
print("error event: %s" % json.dumps(errs[0]), file=sys.stderr)
EOF

# The error must stay while the disk is full: sample B for 8 s (longer than
# the puller's 5 s retry period; a retry must not write half files either).
samples=$E2E_TMP/states.txt
: >"$samples"
t_end=$(($(now_ns) + 8000000000))
while [ "$(now_ns)" -lt "$t_end" ]; do
	check_agents
	jq_py "$(status_json B)" "'%s|%s|%s' % (folder('$FOLDER')['state'], folder('$FOLDER')['error'], folder('$FOLDER')['need']['files'])" >>"$samples"
	sleep 0.25
done
log "B's folder state|error|need.files while the disk is full ($(wc -l <"$samples") samples): $(sort "$samples" | uniq -c | tr -s ' \n' ' ')"
cleared=$(grep -c '|None|' "$samples" || true)
python3 - "$src" "$dst" <<'EOF' || fail "B has files that differ from A's (see above)"
import filecmp, os, sys
src, dst = sys.argv[1], sys.argv[2]
bad = []
n = tmp = tmpbytes = 0
for d, dirs, files in os.walk(dst):
    dirs[:] = [x for x in dirs if not x.startswith(".shoal")]
    for f in files:
        p = os.path.join(d, f)
        if f.startswith(".shoal"):
            if f.startswith(".shoal-tmp-"):
                tmp += 1
                tmpbytes += os.path.getsize(p)
            continue
        rel = os.path.relpath(p, dst)
        a = os.path.join(src, rel)
        n += 1
        if not os.path.isfile(a):
            bad.append("%s: not in A" % rel)
        elif not filecmp.cmp(a, p, shallow=False):
            bad.append("%s: %d bytes, A has %d" % (rel, os.path.getsize(p), os.path.getsize(a)))
print("B holds %d complete files and %d .shoal-tmp files (%d bytes) on the full disk" % (n, tmp, tmpbytes),
      file=sys.stderr)
for b in bad:
    print("  differs: " + b, file=sys.stderr)
sys.exit(1 if bad else 0)
EOF
log "B's folder states and errors until now:"
show_states
# From the first error on, the event stream must not show the folder leaving
# the error state while the disk is full (a status poll can miss a short
# "idle" between two retries; the events do not).
flaps=$(python3 - "$evlog" "$FOLDER" <<'PY'
import json, sys
seen_error = False
flaps = []
for l in open(sys.argv[1]):
    try:
        e = json.loads(l)
    except ValueError:
        continue
    if e.get("folder") != sys.argv[2]:
        continue
    if e["type"] == "error":
        seen_error = True
    elif e["type"] == "folder_state" and seen_error and e["from"] == "error":
        flaps.append("%s error -> %s" % (e["time"], e["to"]))
print("; ".join(flaps))
PY
)
errevents=$(grep -c '"type": *"error"' "$evlog" || true)
log "error events while the disk is full: $errevents"
if [ "$cleared" != 0 ] || [ -n "$flaps" ]; then
	fail "B's folder left the error state while the disk is still full: $cleared of $(wc -l <"$samples") status samples had no error; state changes: ${flaps:-none} (events above)"
fi

# Grow the disk: B converges with no command.
mount -o remount,size=128m "$dst" || fail "cannot remount $dst with size=128m"
log "tmpfs grown to 128 MiB; waiting for B"
t0=$(now_ns)
wait_synced --timeout 60 --files "$entries" --peer A B "$FOLDER"
log "B converged $(python3 -c "print('%.1f' % (($(now_ns) - $t0) / 1e9))") s after the remount"
compare "$src" "$dst" || fail "B's folder differs from A's after the disk grew (see above)"
st=$(status_json B)
err=$(jq_py "$st" "folder('$FOLDER')['error']")
[ "$err" = null ] || fail "B's folder error is still '$err' after converging"
tmps=$(find "$dst" -name '.shoal-tmp-*' | sed -n 1,5p)
[ -z "$tmps" ] || fail "temporary files left in B's folder after converging: $tmps"
pass
