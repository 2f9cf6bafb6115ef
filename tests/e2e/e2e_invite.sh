#!/usr/bin/env bash
# Owner and members: the owner (send-only) invites two members, who join with
# only the code and a path and receive the tree; a later change on the owner
# reaches both; a member's local edit reaches neither the owner nor the other
# member (and is kept as a conflict copy when the owner's next change to that
# file arrives); a removed member gets nothing more; used, expired, revoked
# and mangled codes fail with a message that says which.
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"
e2e_begin e2e_invite "$@"

node_new O
node_new M1
node_new M2
node_new X
o=${NODE_DIR[O]}
gen_tree "$o" --seed 31 --files 150 --large-mib 2 >/dev/null
folder_add O team send
start_agent O
wait_listening O
for n in M1 M2 X; do start_agent "$n"; wait_listening "$n"; done

invite() { shoal_ok O invite team --addr "127.0.0.1:${NODE_PORT[O]}" "$@" 2>/dev/null | tail -n 1; }

code1=$(invite --uses 2)
[[ $code1 == SHOAL1-* ]] || fail "invite did not print a code: $code1"
out=$(shoal_ok M1 join "$code1" "${NODE_DIR[M1]}")
grep -q "accepted" <<<"$out" || fail "M1's join was not accepted: $out"
out=$(shoal_ok M2 join "$code1" "${NODE_DIR[M2]}")
grep -q "accepted" <<<"$out" || fail "M2's join was not accepted: $out"

members_have()
{
	compare "$o" "${NODE_DIR[M1]}" >/dev/null 2>&1 && compare "$o" "${NODE_DIR[M2]}" >/dev/null 2>&1
}
wait_for members_have 60 || { compare "$o" "${NODE_DIR[M1]}"; fail "members did not receive the tree"; }
log "both members hold the owner's tree"

# A later change on the owner reaches both members.
echo "owner's change" >"$o/news.txt"
wait_for members_have 30 || fail "the owner's later change did not reach the members"

# A member's local edit reaches nobody.
target=$(cd "$o" && find . -type f -name '*.dat' | sort | sed -n 1p)
target=${target#./}
echo "M1's private edit" >"${NODE_DIR[M1]}/$target"
echo "M1's own file" >"${NODE_DIR[M1]}/m1-only.txt"
shoal_ok M1 scan team --wait >/dev/null
sleep 2
[ ! -e "$o/m1-only.txt" ] || fail "a member's new file reached the owner"
[ ! -e "${NODE_DIR[M2]}/m1-only.txt" ] || fail "a member's new file reached another member"
grep -q "private edit" "$o/$target" && fail "a member's edit reached the owner"
grep -q "private edit" "${NODE_DIR[M2]}/$target" && fail "a member's edit reached another member"
# ... and survives the owner's next change to that file as a conflict copy.
echo "owner's new version" >"$o/$target"
wait_for "grep -q \"owner's new version\" '${NODE_DIR[M1]}/$target'" 30 ||
	fail "the owner's new version did not replace the member's edit"
copies=$(find "${NODE_DIR[M1]}/$(dirname -- "$target")" -maxdepth 1 -name '*sync-conflict*')
[ -n "$copies" ] || fail "the member's local edit was lost instead of kept as a conflict copy"

# A removed member gets nothing more.
shoal_ok O device remove "${NODE_ID[M2]}" >/dev/null
sleep 1
echo "after removal" >"$o/after-removal.txt"
wait_for "[ -e '${NODE_DIR[M1]}/after-removal.txt' ]" 30 || fail "M1 stopped receiving"
sleep 3
[ ! -e "${NODE_DIR[M2]}/after-removal.txt" ] || fail "a removed member still received a change"
grep -Eq "refused (connection from )?unknown device ${NODE_ID[M2]}" "${AGENT_LOG[O]}" ||
	fail "the owner did not refuse the removed member"

# Used, expired, revoked and mangled codes fail clearly.
expect_refused()
{ # expect_refused WHAT CODE PATTERN
	local out rc=0
	out=$(shoal X join "$2" "$E2E_TMP/x-$1" 2>&1) || rc=$?
	[ "$rc" != 0 ] || fail "$1 code: join succeeded: $out"
	grep -qi "$3" <<<"$out" || fail "$1 code: the message does not say '$3': $out"
	log "$1 code refused: $(tail -n 1 <<<"$out")"
}
expect_refused used "$code1" "used up"
code2=$(invite --expires 1s)
sleep 2.2
expect_refused expired "$code2" "expired"
code3=$(invite)
id3=$(shoal_ok O invite --list | tail -n 1 | cut -f1)
shoal_ok O invite --revoke "$id3" >/dev/null
expect_refused revoked "$code3" "no such invite"
code4=$(invite)
c20=${code4:20:1}
[ "$c20" = A ] && sub=B || sub=A
mangled="${code4:0:20}${sub}${code4:21}"
expect_refused mangled "$mangled" "damaged"
expect_refused garbage "hello" "not an invite code"
[ -z "$(ls -A "$E2E_TMP/x-expired" 2>/dev/null | grep -v '^.shoal')" ] || fail "a refused join left files"

# A device the owner already knows (paired for something else) can join by invite too.
node_new K
pair O K
start_agent K
wait_listening K
code5=$(invite)
out=$(shoal_ok K join "$code5" "${NODE_DIR[K]}")
grep -q "accepted" <<<"$out" || fail "the known device K's join was not accepted: $out"
# shellcheck disable=SC2016  # expanded by wait_for's eval
wait_for 'compare "$o" "${NODE_DIR[K]}" >/dev/null 2>&1' 60 ||
	{ compare "$o" "${NODE_DIR[K]}"; fail "the known device K did not receive the tree after joining"; }
log "a device the owner already knew joined by invite and holds the tree"
pass
