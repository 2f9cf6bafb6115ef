#!/usr/bin/env bash
# Deltas of large files rebuilt from B's own blocks.  A (send) shares a 40 MiB
# file; after the first sync A changes it in ways that keep most blocks (1 MiB
# overwritten in the middle, 100 bytes inserted at the start, 3 MiB appended,
# cut to 30 MiB, its halves swapped) and adds a near-copy of it under another
# name.  After each change B must hold A's exact bytes, and its log must say
# that most of the file was reused locally: the puller copies runs of blocks
# that lie back to back in B's old copy with one kernel copy each, and this
# test checks that the runs put every byte in the right place.
#
# When the test runs as root with mkfs.xfs and loop devices, it does it all
# again with B's folder on an XFS image (reflink=1) in a private mount
# namespace, and the overwrite in the middle must then be mostly cloned
# (shared extents, "MB cloned" in B's log).  Without them that part is
# skipped with a message; the ext4/tmpfs part always runs.
#   SHOAL_E2E_DELTA_MIB (40) sizes the file.
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"

if [ -z "${SHOAL_MNTNS:-}" ]; then
	mntns=(-m)
	[ "$(id -u)" -eq 0 ] || mntns=(-r -m)
	if unshare "${mntns[@]}" true 2>/dev/null; then
		exec unshare "${mntns[@]}" --propagation private -- env SHOAL_MNTNS=1 bash "$0" "$@"
	fi
	export SHOAL_MNTNS=none
fi
e2e_begin e2e_delta_local "$@"

MIB=${SHOAL_E2E_DELTA_MIB:-40}
XFS_MNT=
cleanup_xfs()
{
	[ -z "$XFS_MNT" ] || umount -l "$XFS_MNT" 2>/dev/null || true
}
trap 'rc=$?; trap - ERR; cleanup_xfs; (exit $rc); e2e_on_exit' EXIT

# mutate KIND FILE: changes FILE on A in place (same inode, like an editor
# that rewrites the file).
mutate()
{
	python3 - "$1" "$2" <<'EOF'
import os, random, sys
kind, path = sys.argv[1:3]
rng = random.Random(kind)
with open(path, "r+b") as f:
    data = f.read()
    if kind == "modify":
        mid = len(data) // 2
        data = data[:mid] + rng.randbytes(1 << 20) + data[mid + (1 << 20):]
    elif kind == "insert":
        data = rng.randbytes(100) + data
    elif kind == "append":
        data = data + rng.randbytes(3 << 20)
    elif kind == "truncate":
        data = data[:30 << 20]
    elif kind == "swap":
        h = len(data) // 2
        data = data[h:] + data[:h]
    f.seek(0)
    f.write(data)
    f.truncate(len(data))
EOF
}

# same_version A_FILE B_FILE: B's copy has A's size and nanosecond mtime.
same_version()
{
	[ -f "$2" ] && [ "$(stat -c '%s %Y' "$1")" = "$(stat -c '%s %Y' "$2")" ] &&
		python3 -c 'import os,sys; sys.exit(os.stat(sys.argv[1]).st_mtime_ns != os.stat(sys.argv[2]).st_mtime_ns)' "$1" "$2"
}

# last_pull B: B's last "pulled FOLDER: ..." log line.
last_pull() { grep "pulled $FOLDER:" "${AGENT_LOG[$1]}" | tail -n 1; }

# step A B NAME KIND MIN_REUSED_MB [MIN_CLONED_MB]: one change and its checks.
step()
{
	local a=$1 b=$2 name=$3 kind=$4 min_reused=$5 min_cloned=${6:-} before line reused cloned
	before=$(grep -c "pulled $FOLDER:" "${AGENT_LOG[$b]}" || true)
	if [ "$kind" = copy ]; then
		# Made outside the folder, then moved in: A never sees it half-written.
		cp "${NODE_DIR[$a]}/big.bin" "$E2E_TMP/$name.tmp"
		python3 -c 'import sys; f=open(sys.argv[1],"r+b"); f.seek(10<<20); f.write(b"x"*4096)' \
			"$E2E_TMP/$name.tmp"
		mv "$E2E_TMP/$name.tmp" "${NODE_DIR[$a]}/$name"
	else
		mutate "$kind" "${NODE_DIR[$a]}/$name"
	fi
	shoal_ok "$a" scan "$FOLDER" --wait >/dev/null
	wait_for "same_version '${NODE_DIR[$a]}/$name' '$B_DIR/$name'" 120 ||
		fail "$kind: B did not get A's new $name within 120 s"
	wait_synced --peer "$a" "$b" "$FOLDER"
	cmp "${NODE_DIR[$a]}/$name" "$B_DIR/$name" || fail "$kind: B's $name differs from A's"
	compare "${NODE_DIR[$a]}" "$B_DIR" || fail "$kind: B's folder differs from A's"
	[ "$(grep -c "pulled $FOLDER:" "${AGENT_LOG[$b]}")" -gt "$before" ] || fail "$kind: B logged no pull"
	line=$(last_pull "$b")
	reused=$(sed -n 's/.* \([0-9.]*\) MB reused locally.*/\1/p' <<<"$line")
	cloned=$(sed -n 's/.*reused locally (\([0-9.]*\) MB cloned).*/\1/p' <<<"$line")
	[ -n "$reused" ] && [ -n "$cloned" ] || fail "$kind: cannot read B's pull line: $line"
	log "$kind: $line"
	python3 -c "import sys; sys.exit(0 if float('$reused') >= $min_reused else 1)" ||
		fail "$kind: B reused $reused MB locally, want at least $min_reused MB ($line)"
	if [ -n "$min_cloned" ]; then
		python3 -c "import sys; sys.exit(0 if float('$cloned') >= $min_cloned else 1)" ||
			fail "$kind: B cloned $cloned MB, want at least $min_cloned MB on XFS ($line)"
	fi
}

# run_all A B B_DIR [XFS]: a fresh pair of agents syncs the file, then each change.
run_all()
{
	local a=$1 b=$2 xfs=${4:-}
	B_DIR=$3
	FOLDER=delta
	node_new "$a"
	node_new "$b"
	mkdir -p "${NODE_DIR[$a]}"
	python3 -c 'import random,sys; sys.stdout.buffer.write(random.Random(5).randbytes(int(sys.argv[1]) << 20))' \
		"$MIB" >"${NODE_DIR[$a]}/big.bin"
	pair "$a" "$b"
	folder_add "$a" "$FOLDER" send
	folder_share "$a" "$FOLDER" "$b"
	folder_add "$b" "$FOLDER" receive "$B_DIR"
	folder_share "$b" "$FOLDER" "$a"
	start_agent "$a"
	start_agent "$b"
	wait_listening "$a"
	wait_listening "$b"
	wait_synced --files 1 --peer "$a" "$b" "$FOLDER"
	cmp "${NODE_DIR[$a]}/big.bin" "$B_DIR/big.bin" || fail "first sync: B's big.bin differs"
	local m=$((MIB - 2))  # what must be reused, in MB, for the changes that keep ~the whole file
	if [ -n "$xfs" ]; then
		step "$a" "$b" big.bin modify "$m" $((MIB - 4))
	else
		step "$a" "$b" big.bin modify "$m"
	fi
	step "$a" "$b" big.bin insert "$m"
	step "$a" "$b" big.bin append "$m"
	step "$a" "$b" big.bin truncate 28
	step "$a" "$b" big.bin swap 28
	step "$a" "$b" near-copy.bin copy 28
	local n
	for n in "$a" "$b"; do
		stop_agent "$n"
		[ "$STOP_RC" = 0 ] && [ "$STOP_KILLED" = 0 ] || fail "agent $n did not exit cleanly (status $STOP_RC)"
	done
}

node_dir_b=$E2E_TMP/B-folder
run_all A B "$node_dir_b"

if [ "$SHOAL_MNTNS" = none ]; then
	log "SKIP the XFS part: cannot create a private mount namespace"
elif [ "$(id -u)" -ne 0 ]; then
	log "SKIP the XFS part: needs root to loop-mount an XFS image"
elif ! command -v mkfs.xfs >/dev/null; then
	log "SKIP the XFS part: no mkfs.xfs (apt-get install xfsprogs)"
else
	truncate -s 1G "$E2E_TMP/xfs.img"
	mkdir -p "$E2E_TMP/xfs"
	if mkfs.xfs -q -f -m reflink=1 "$E2E_TMP/xfs.img" &&
		mount -o loop "$E2E_TMP/xfs.img" "$E2E_TMP/xfs"; then
		XFS_MNT=$E2E_TMP/xfs
		log "B's folder on XFS with reflink at $XFS_MNT"
		run_all C D "$XFS_MNT/D-folder" xfs
	else
		log "SKIP the XFS part: cannot create or loop-mount an XFS image"
	fi
fi
pass
