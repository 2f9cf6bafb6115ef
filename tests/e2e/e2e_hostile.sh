#!/usr/bin/env bash
# A known but hostile device: tests/tools/evilpeer.c speaks the real protocol
# to one agent V and sends what a malicious or broken peer might (bad paths,
# symlink tricks, blocks that do not match their hash, huge counts and
# offsets, wrong types, deep nesting, indexes and requests for a folder that is
# not shared, an inflated version counter, sequence numbers that go backwards,
# undecryptable and oversized frames). V shares folder "h" with it and keeps a
# second folder "other" that is not shared.
#
# For every scenario the test checks
#   (a) the outcome: the connection closed (malformed input) or still alive
#       (an item refused, a request answered), and the answers the peer got;
#   (b) V still runs and answers `status --json`;
#   (c) nothing appeared, changed or vanished outside V's folder (the whole
#       work directory but V's state dir, and /tmp two levels deep for the
#       names the peer used), and nothing but the scenario's expected entries
#       appeared inside it;
#   (d) V's log says what it refused.
# It prints "ok SCENARIO: OUTCOME" for each, runs all of them, and fails at the
# end naming every scenario that did not hold.
#
#   SHOAL_EVILPEER   the tool (default: shoal_evilpeer next to the agent's build)
#   HOSTILE_ONLY     run only these scenarios (space-separated), after control
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"
e2e_begin e2e_hostile "$@"

EVILPEER=${SHOAL_EVILPEER:-$(cd "$(dirname "$SHOAL_BIN")/.." && pwd)/tests/shoal_evilpeer}
[ -x "$EVILPEER" ] || fail "evil peer tool not found: $EVILPEER (build target shoal_evilpeer, or set SHOAL_EVILPEER)"
command -v timeout >/dev/null || fail "timeout (coreutils) is required"
SEED=e2e-hostile-evil-peer
EVIL_ID=$("$EVILPEER" id "$SEED")
OUT=$E2E_TMP/out
mkdir -p "$OUT"

node_new V
VDIR=${NODE_DIR[V]}
VHOME=${NODE_HOME[V]}
OTHER=$E2E_TMP/V/other
mkdir -p "$VDIR" "$OTHER"
printf 'hello from V\n' >"$VDIR/hello.txt"
printf 'top secret\n' >"$OTHER/secret.txt"
SECRET_SIZE=$(stat -c %s "$OTHER/secret.txt")
# A link a local user made, pointing out of the folder: requests through it
# must not read the other folder.
ln -s .. "$VDIR/up"
folder_add V h send-receive
folder_add V other send-receive "$OTHER"
shoal_ok V device add "$EVIL_ID" --name evil --addr 127.0.0.1:1 >/dev/null
shoal_ok V folder share h "$EVIL_ID" >/dev/null
log "evil peer $EVIL_ID"

start_agent V
wait_listening V
# shellcheck disable=SC2317  # called through wait_for
h_scanned()
{
	local st
	st=$("$SHOAL_BIN" --home "$VHOME" status --json 2>/dev/null) || return 1
	[ "$(jq_py "$st" "folder('h')['local']['files']")" -ge 2 ] 2>/dev/null
}
wait_for h_scanned 30 || fail "V did not scan folder h (want hello.txt and up in its index)"

ETC_X_BEFORE=0
[ ! -e /etc/x ] || ETC_X_BEFORE=1

# snap OUT: NUL-separated "SIZE PATH" records of the work directory (V's
# folder and the tool's output left out) and of /tmp two levels deep
# (the work directory left out); OUT.folder lists V's folder, relative,
# without shoal's own .shoal* files.
snap()
{
	{
		find "$E2E_TMP" \( -path "$VDIR" -o -path "$OUT" \) -prune -o -printf '%s %p\0' || true
		find /tmp -maxdepth 2 -path "$E2E_TMP" -prune -o -printf '%s %p\0' 2>/dev/null || true
	} >"$1"
	find "$VDIR" -mindepth 1 -name '.shoal*' -prune -o -printf '%s %P\0' >"$1.folder"
}

# compare_snaps BEFORE AFTER ALLOWED...: prints one line per breach of (c).
compare_snaps()
{
	python3 - "$E2E_TMP" "$VHOME" "$@" <<'EOF'
import os, sys
tmp, home, before, after = sys.argv[1:5]
allowed = set(sys.argv[5:])
# Every name the evil peer announces or asks for, as a last component.
evil = {"b", "x", "a", "etc", "link", "up", "pre.txt", "steal.txt", "sz.bin", "typed.bin",
        "bad.bin", "vv.txt", "ctl.txt", "seqa", "seqb", "seqc", "secret.txt", "other"}
harness = {os.path.join(tmp, n) for n in ("cmd.err", "status.err", "V.log")}

def load(path):
    d = {}
    with open(path, "rb") as f:
        for rec in f.read().split(b"\0"):
            if rec:
                size, p = rec.split(b" ", 1)
                d[os.fsdecode(p)] = int(size)
    return d

def show(p):
    return p.encode("unicode_escape", "backslashreplace").decode()

def inside(p, d):
    return p == d or p.startswith(d + "/")

b, a = load(before), load(after)
for p in sorted(set(a) - set(b)):
    if inside(p, tmp):
        if not inside(p, home) and p not in harness:
            print("new path outside the folder: %s" % show(p))
        elif inside(p, home) and os.path.basename(p) in evil:
            print("new path in V's state dir: %s" % show(p))
    elif os.path.basename(p) in evil or any(ord(c) < 0x20 for c in p):
        print("new path in /tmp: %s" % show(p))
for p in sorted(set(b) - set(a)):
    if inside(p, tmp) and not inside(p, home) and p not in harness:
        print("path outside the folder vanished: %s" % show(p))
for p in sorted(set(a) & set(b)):
    if inside(p, tmp) and not inside(p, home) and p not in harness and a[p] != b[p]:
        print("size changed outside the folder: %s (%d -> %d)" % (show(p), b[p], a[p]))
fb, fa = load(before + ".folder"), load(after + ".folder")
for p in sorted(set(fa) - set(fb)):
    if p not in allowed:
        print("unexpected new entry in V's folder: %s" % show(p))
for p in sorted(set(fb) - set(fa)):
    print("entry of V's folder vanished: %s" % show(p))
EOF
}

log_since() { tail -c +$(($1 + 1)) "${AGENT_LOG[V]}"; }

FAILED=()
SC=
SC_FAIL=0
bad()
{
	printf 'FAIL %s: %s\n' "$SC" "$*"
	SC_FAIL=1
}

# expect_log OFFSET REGEX: V's log after OFFSET gets a line matching REGEX
# (grep -Ei) within 10 s.
expect_log()
{
	local off=$1 re=$2
	if ! wait_for "log_since $off | grep -Eiq -- \"\$re\"" 10; then
		bad "V's log has no line matching /$re/"
		return 1
	fi
	printf '    log: %s\n' "$(log_since "$off" | grep -Ei -- "$re" | head -n 1 | cut -c1-200)"
}

# blake2b256 FILE
blake2b256()
{
	python3 -c 'import hashlib, sys; print(hashlib.blake2b(open(sys.argv[1], "rb").read(), digest_size=32).hexdigest())' "$1"
}

# scenario NAME EXPECT LOGRE ALLOWED [-- EVILPEER ARGS]: runs one scenario.
# EXPECT is closed, alive or any; LOGRE a regex V's log must match ("" for
# none); ALLOWED the space-separated entries that may appear in V's folder.
scenario()
{
	SC=$1
	local expect=$2 logre=$3 allowed=$4
	shift 4
	[ "${1:-}" != -- ] || shift
	local -a extra=("$@")
	local out=$OUT/$SC.txt off rc=0 result outcome st breaches line

	if [ -n "${HOSTILE_ONLY:-}" ] && [ "$SC" != control ] && [[ " $HOSTILE_ONLY " != *" $SC "* ]]; then
		return 0
	fi
	SC_FAIL=0
	off=$(stat -c %s "${AGENT_LOG[V]}")
	snap "$OUT/$SC.before"
	timeout 60 "$EVILPEER" run --expect "${NODE_ID[V]}" --timeout-ms 10000 "${extra[@]}" \
		"$SEED" "127.0.0.1:${NODE_PORT[V]}" "$SC" >"$out" 2>&1 || rc=$?
	result=$(sed -n 's/^result: //p' "$out")
	outcome=${result%% *}
	if [ "$rc" -ne 0 ] || [ -z "$result" ]; then
		bad "the evil peer failed (status $rc): ${result:-no result line}"
	elif [ "$expect" != any ] && [ "$outcome" != "$expect" ]; then
		bad "want the connection $expect, got: $result"
	fi

	# (a) what else the scenario must show
	case $SC in
	control)
		local want got
		want=$(sed -n 's/^offer: ctl.txt size=[0-9]* blake2b=\([0-9a-f]*\).*/\1/p' "$out")
		if ! wait_for "[ -f '$VDIR/ctl.txt' ]" 20; then
			bad "V did not pull ctl.txt from a well-behaved peer: the tool or the agent is broken"
		else
			got=$(blake2b256 "$VDIR/ctl.txt")
			[ "$got" = "$want" ] || bad "ctl.txt has BLAKE2b $got, the peer offered $want"
		fi
		;;
	bad-block)
		grep -q '^request: .*name="bad.bin".*answer=corrupt' "$out" ||
			bad "V never requested bad.bin, so the bad block was not tested"
		;;
	symlink-escape)
		grep -q '^note: the agent announced link' "$out" ||
			printf '    note: V did not create or announce the link "link" -> ".."\n'
		if [ -L "$VDIR/link" ]; then
			[ "$(readlink "$VDIR/link")" = .. ] || bad "link points to $(readlink "$VDIR/link")"
		elif [ -e "$VDIR/link" ]; then
			bad "link is not a symlink: $(stat -c %F "$VDIR/link")"
		fi
		;;
	far-offset | request-via-link)
		grep -q '^response: id=1 code=1 len=0$' "$out" ||
			bad "want RESPONSE NOTFOUND (code 1) without data, got: $(grep '^response:' "$out" || echo none)"
		;;
	foreign-folder-request)
		grep -q '^response: id=1 code=3 len=0$' "$out" ||
			bad "want RESPONSE DENIED (code 3) without data, got: $(grep '^response:' "$out" || echo none)"
		;;
	vv-inflate)
		if grep -q '^request: .*name="vv.txt"' "$out"; then
			bad "V requested vv.txt: it accepted an entry that claims its own counter is 2^40"
		fi
		;;
	esac

	# (b) V runs and answers
	if ! kill -0 "${AGENT_PID[V]}" 2>/dev/null; then
		bad "V is not running any more"
		FAILED+=("$SC")
		cat "$out" >&2
		fail "V died during scenario $SC"
	fi
	if ! st=$("$SHOAL_BIN" --home "$VHOME" status --json 2>"$E2E_TMP/status.err"); then
		bad "status --json failed: $(cat "$E2E_TMP/status.err")"
	elif [ "$(jq_py "$st" "d['running']")" != true ]; then
		bad "status --json does not say running: $st"
	fi

	# (d) V's log
	if [ -n "$logre" ]; then
		expect_log "$off" "$logre" || true
	elif ! log_since "$off" | grep -Eq '^(WARN|ERROR)'; then
		printf '    note: V logs no warning for this (none is required)\n'
	fi

	# (c) nothing outside the folder, nothing unexpected inside
	snap "$OUT/$SC.after"
	# shellcheck disable=SC2086 # ALLOWED is a list
	breaches=$(compare_snaps "$OUT/$SC.before" "$OUT/$SC.after" $allowed)
	if [ -n "$breaches" ]; then
		while IFS= read -r line; do bad "$line"; done <<<"$breaches"
	fi
	if [ "$ETC_X_BEFORE" = 0 ] && [ -e /etc/x ]; then
		bad "/etc/x exists now"
	fi

	if [ "$SC_FAIL" = 0 ]; then
		printf 'ok %s: %s\n' "$SC" "$result"
	else
		FAILED+=("$SC")
		{
			printf -- '--- evil peer transcript of %s:\n' "$SC"
			cat "$out"
			printf -- '--- V log during %s:\n' "$SC"
			log_since "$off" | cut -c1-300
			printf -- '---\n'
		} >&2
	fi
}

MAL="malformed message from $EVIL_ID"
t0=$(now_ns)
scenario control alive "" "ctl.txt"
scenario path-dotdot closed "$MAL.*path" ""
scenario path-escape closed "$MAL.*path" ""
scenario path-absolute closed "$MAL.*path" ""
scenario path-nul closed "$MAL.*path" ""
scenario path-control closed "$MAL.*path" ""
scenario path-newline closed "$MAL.*path" ""
scenario name-too-long closed "$MAL" ""
scenario symlink-escape any "cannot pull link/x" "link"
scenario bad-block alive "cannot pull bad.bin: .*hash" ""
scenario size-mismatch closed "$MAL" ""
scenario huge-offset closed "$MAL" "" -- --req-name hello.txt
scenario far-offset alive "" "" -- --req-name hello.txt
scenario huge-count closed "$MAL.*(over its limit|too big)" ""
scenario negative-int closed "$MAL" ""
scenario wrong-types closed "$MAL.*type" ""
scenario deep-nesting closed "$MAL.*(nest|deep)" ""
scenario foreign-folder-index closed "$EVIL_ID.*index for folder other.*not shared" ""
scenario foreign-folder-request alive "" "" -- --req-name secret.txt --req-size "$SECRET_SIZE"
scenario request-escape closed "$MAL.*path" "" -- --req-name secret.txt
scenario request-via-link alive "" "" -- --req-name up/other/secret.txt --req-size "$SECRET_SIZE"
scenario vv-inflate any "$EVIL_ID.*vv\.txt.*(inflat|refus)" ""
scenario seq-backwards closed "$EVIL_ID.*sequence.*backwards" "seqa seqb"
scenario seq-backwards-index closed "$EVIL_ID.*sequence.*backwards" "seqa seqb"
scenario garbage-frame closed "decryption failed" ""
scenario oversize-message closed "over its limit|too big|too large" ""
t1=$(now_ns)
secs=$(python3 -c "print('%.1f' % (($t1 - $t0) / 1e9))")
log "scenarios took $secs s"

check_agents
if [ "${#FAILED[@]}" -gt 0 ]; then
	fail "${#FAILED[@]} scenario(s) did not hold: ${FAILED[*]} (details above)"
fi
pass
