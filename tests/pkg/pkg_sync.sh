#!/usr/bin/env bash
# tests/pkg/pkg_sync.sh - the installed agent syncs as the shoal user.
#
# Run by pkg_test.sh after the package is installed. In a private network and
# PID namespace (lib.sh's e2e_begin), node A is the installed /usr/bin/shoal
# run as the system user "shoal" (setpriv, no supplementary groups) with its
# home in a work directory owned by shoal; node B is the build tree's agent
# ($SHOAL_BIN) run as root. A's generated tree must reach B byte for byte, and
# a file made on B must reach A, written by the shoal user. When the installed
# binary has `doctor`, its --json report must parse.
# shellcheck source-path=SCRIPTDIR source=../e2e/lib.sh
source "$(dirname "$0")/../e2e/lib.sh"
e2e_begin pkg_sync "$@"

INSTALLED=${SHOAL_INSTALLED_BIN:-/usr/bin/shoal}
FOLDER=pkg-sync
[ -x "$INSTALLED" ] || fail "$INSTALLED is not installed"
getent passwd shoal >/dev/null || fail "the package did not create the user shoal"

as_shoal() { setpriv --reuid=shoal --regid=shoal --clear-groups env HOME="$E2E_TMP/A" "$@"; }

# Node A's commands go through the installed binary as shoal; B's through lib.sh's.
shoal()
{
	if [ "$1" = A ]; then
		as_shoal "$INSTALLED" --home "${NODE_HOME[A]}" "${@:2}"
	else
		"$SHOAL_BIN" --home "${NODE_HOME[$1]}" "${@:2}"
	fi
}

start_installed_A()
{
	AGENT_LOG[A]=$E2E_TMP/A.log
	# Not through as_shoal: $! must be the agent itself (setpriv and env exec it).
	setpriv --reuid=shoal --regid=shoal --clear-groups env HOME="$E2E_TMP/A" \
		"$INSTALLED" --home "${NODE_HOME[A]}" run --listen "127.0.0.1:${NODE_PORT[A]}" \
		--no-mdns </dev/null >>"${AGENT_LOG[A]}" 2>&1 &
	AGENT_PID[A]=$!
	AGENT_NAMES+=(A)
	log "installed agent A started as shoal, pid ${AGENT_PID[A]}"
}

chmod 755 "$E2E_TMP"
install -d -o shoal -g shoal -m 0755 "$E2E_TMP/A"
node_new A
node_new B
[ "$(stat -c %U "${NODE_HOME[A]}/device.key")" = shoal ] || fail "A's device key is not owned by shoal"

entries=$(gen_tree "${NODE_DIR[A]}" --seed 7 --files 150 --large-mib 2)
chown -R shoal:shoal "${NODE_DIR[A]}"
pair A B
folder_add A "$FOLDER" send-receive
folder_share A "$FOLDER" B
folder_add B "$FOLDER" send-receive
folder_share B "$FOLDER" A

start_installed_A
wait_listening A
start_agent B
wait_listening B
wait_synced --files "$entries" --peer A B "$FOLDER"
compare "${NODE_DIR[A]}" "${NODE_DIR[B]}" || fail "B's copy differs from the installed agent's folder"
log "A -> B: $entries entries synced"

# The other way: the installed agent, as shoal, writes what B has.
echo "made on B" >"${NODE_DIR[B]}/from-b.txt"
wait_for "[ -f '${NODE_DIR[A]}/from-b.txt' ]" 60 || fail "from-b.txt did not reach A within 60 s"
[ "$(stat -c %U "${NODE_DIR[A]}/from-b.txt")" = shoal ] || fail "A's copy of from-b.txt is not owned by shoal"
[ "$(cat "${NODE_DIR[A]}/from-b.txt")" = "made on B" ] || fail "A's copy of from-b.txt has other content"
stray=$(find "${NODE_HOME[A]}" "${NODE_DIR[A]}" ! -user shoal | head -n 5)
[ -z "$stray" ] || fail "files in A's home or folder not owned by shoal: $stray"
log "B -> A: written by shoal"

if "$INSTALLED" doctor --help >/dev/null 2>&1; then
	rep=$(as_shoal "$INSTALLED" --home "${NODE_HOME[A]}" doctor --json) || true
	python3 - "$rep" <<'EOF' || fail "doctor --json is not the documented object: $rep"
import json, sys
d = json.loads(sys.argv[1])
assert isinstance(d["ok"], bool)
for c in d["checks"]:
    assert c["status"] in ("ok", "warn", "fail") and c["name"] and c["message"]
    assert (c["fix"] is None) == (c["status"] == "ok")
listen = next(c for c in d["checks"] if c["name"] == "listen")
assert listen["status"] == "ok", listen  # the port is held by this home's own agent
print("doctor: " + ", ".join("%s %s" % (c["name"], c["status"]) for c in d["checks"]), file=sys.stderr)
EOF
	log "doctor of the running installed agent: report parsed"
else
	log "the installed binary has no doctor command yet: skipped its check"
fi
pass
