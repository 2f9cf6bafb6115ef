#!/usr/bin/env bash
# Sync, stop both agents, change A's folder while they are down (5 new files,
# one of them in a new directory, and one file rewritten in place with the
# same size), start both again: B must converge.  Every SIGTERM must end the
# agent with status 0 within 5 s.
#   SHOAL_E2E_FILES (500), SHOAL_E2E_LARGE_MIB (4) size the tree.
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"
e2e_begin e2e_restart "$@"

FOLDER=e2e-restart
node_new A
node_new B
src=${NODE_DIR[A]}
entries=$(gen_tree "$src" --seed 9 --files "${SHOAL_E2E_FILES:-500}" \
	--large-mib "${SHOAL_E2E_LARGE_MIB:-4}")

pair A B
share_one_way A B "$FOLDER"

# stop_clean NAME: SIGTERM; the agent must exit 0 without needing SIGKILL.
stop_clean()
{
	stop_agent "$1" 5
	[ "$STOP_KILLED" = 0 ] || fail "agent $1 did not exit within 5 s of SIGTERM"
	[ "$STOP_RC" = 0 ] || fail "agent $1 exited with status $STOP_RC on SIGTERM, want 0"
}

start_agent A
start_agent B
wait_listening A
wait_listening B
wait_synced --files "$entries" --peer A B "$FOLDER"
compare "$src" "${NODE_DIR[B]}" || fail "first sync: B's folder differs from A's (see above)"
log "first sync done; stopping both"
stop_clean B
stop_clean A

# Offline changes on A.  The modified file keeps its size (only the contents
# and the mtime show the change).
modified=$(python3 - "$src" <<'PY'
import os, random, sys
src = sys.argv[1]
rng = random.Random(99)
# Rewrite one existing file of at least 1000 bytes, the first in sorted order,
# then add the new files.
cands = []
for dirpath, dirnames, filenames in os.walk(src):
    dirnames[:] = [d for d in dirnames if not d.startswith(".shoal")]
    for n in filenames:
        p = os.path.join(dirpath, n)
        if not n.startswith(".shoal") and not os.path.islink(p) and os.path.getsize(p) >= 1000:
            cands.append(os.path.relpath(p, src))
rel = sorted(cands)[0]
p = os.path.join(src, rel)
st = os.stat(p)
os.chmod(p, st.st_mode | 0o200)
with open(p, "r+b") as f:
    old = f.read(64)
    f.seek(0)
    f.write(bytes(b ^ 0xFF for b in old))
os.chmod(p, st.st_mode)
m = st.st_mtime_ns + 3_600_000_000_123
os.utime(p, ns=(m, m))
os.mkdir(os.path.join(src, "added-dir"))
for new in ["added-1.txt", "added 2 é.txt", "added-3.bin",
            "added-dir/added-4.txt", "added-dir/added-5.bin"]:
    with open(os.path.join(src, new), "wb") as f:
        f.write(rng.randbytes(rng.randrange(1, 100000)))
    m = 1_700_000_000_000_000_000 + rng.randrange(10**15)
    os.utime(os.path.join(src, new), ns=(m, m))
print(rel)
PY
)
log "added 5 files (and added-dir), modified '$modified'"
entries2=$(count_entries "$src")
[ "$entries2" = $((entries + 6)) ] || fail "expected $((entries + 6)) entries on A after the changes, found $entries2"

start_agent A
start_agent B
wait_listening A
wait_listening B
# B's own database says "synced" right away with the old count; --files makes
# us wait for the new index, and the comparison for the modified contents.
wait_synced --files "$entries2" --peer A B "$FOLDER"
# shellcheck disable=SC2016  # expanded by wait_for's eval
if ! wait_for 'compare "$src" "${NODE_DIR[B]}" >/dev/null' 30; then
	compare "$src" "${NODE_DIR[B]}" || true
	fail "after the restart B's folder does not converge to A's (see above)"
fi
wait_synced --files "$entries2" --peer A B "$FOLDER"
log "B converged after the restart"

stop_clean B
stop_clean A
pass
