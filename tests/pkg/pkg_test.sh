#!/usr/bin/env bash
# tests/pkg/pkg_test.sh - builds the Debian package, installs it on this
# machine, checks what it installed, syncs with it, and purges it.
#
# Needs root (it installs a package, creates the system user "shoal" and
# writes /var/lib/shoal) and, as Debian packages: cmake, dpkg-dev (CPack's
# dpkg-shlibdeps), systemd (systemd-analyze, systemd-sysusers), man-db,
# adduser, util-linux (setpriv, unshare), iproute2, python3.
#
#   1. packaging/build-deb.sh builds shoal_VERSION_ARCH.deb (prefix /usr);
#      its name, Depends (from dpkg-shlibdeps) and file list are checked;
#   2. apt-get installs it; the user, the state directory, the units, the
#      sysusers entry and the man page must be there;
#   3. systemd-analyze verify must print nothing for both units, and
#      systemd-analyze security must rate shoal.service "OK" or better
#      (exposure below 5.0; the figure is printed);
#   4. pkg_sync.sh syncs with the installed agent run as shoal;
#   5. if the installed binary has `doctor`: for the state dir /var/lib/shoal
#      it must fail a folder outside the service's ReadWritePaths= and pass it
#      once a drop-in lists it;
#   6. apt-get purge removes the binary, the units and /var/lib/shoal.
#
# Idempotent: a package this test installed earlier (marker in /run) is purged
# first; one it did not install makes it skip (exit 77) unless
# SHOAL_PKG_TEST_FORCE=1. Everything is undone on exit, failed or not.
# Environment: SHOAL_BIN (the build tree's agent for the second node),
# SHOAL_PKG_BUILD_DIR (where to build the package; default a temp dir),
# KEEP=1 (keep the work directory).
set -Eeuo pipefail

NAME=pkg_test
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
SHOAL_BIN=${SHOAL_BIN:-$REPO/build/agent/shoal}
MARK=/run/shoal-pkg-test.installed
DROPIN_DIR=/etc/systemd/system/shoal.service.d
DROPIN=$DROPIN_DIR/zz-shoal-pkg-test.conf
UNITDIR=/usr/lib/systemd/system
WORK=
OUTSIDE=

log() { printf '[%s %s] %s\n' "$(date +%T)" "$NAME" "$*" >&2; }
fail() { printf 'FAIL: %s: %s\n' "$NAME" "$*" >&2; exit 1; }
skip() { printf 'SKIP: %s: %s\n' "$NAME" "$*" >&2; exit 77; }

pkg_state() { dpkg-query -W -f='${db:Status-Status}' shoal 2>/dev/null || true; }

purge()
{
	DEBIAN_FRONTEND=noninteractive apt-get purge -y -q shoal >"$1" 2>&1 ||
		dpkg --purge shoal >>"$1" 2>&1
}

on_exit()
{
	local rc=$?
	trap - EXIT ERR INT TERM
	set +e
	rm -f "$DROPIN"
	rmdir "$DROPIN_DIR" 2>/dev/null
	[ -z "$OUTSIDE" ] || rm -rf "$OUTSIDE"
	if [ -e "$MARK" ] && [ -n "$(pkg_state)" ]; then
		log "cleanup: purging the package"
		purge "${WORK:-/tmp}/cleanup-purge.log"
	fi
	[ -n "$(pkg_state)" ] || rm -f "$MARK"
	if [ "$rc" -ne 0 ] && [ "$rc" -ne 77 ]; then
		printf 'FAIL: %s: exit status %d\n' "$NAME" "$rc" >&2
		for f in "$WORK"/*.log; do
			[ -f "$f" ] || continue
			printf '\n----- last 30 lines of %s -----\n' "$(basename "$f")" >&2
			tail -n 30 "$f" >&2
		done
	fi
	if [ -n "$WORK" ]; then
		if [ "${KEEP:-0}" = 1 ]; then
			printf 'KEEP=1: work directory kept: %s\n' "$WORK" >&2
		else
			rm -rf "$WORK"
		fi
	fi
	exit "$rc"
}

[ "$(id -u)" -eq 0 ] || skip "needs root: it installs and purges the package"
missing=()
for t in cmake cpack dpkg-shlibdeps dpkg-deb apt-get systemd-analyze man setpriv unshare ip python3; do
	command -v "$t" >/dev/null || missing+=("$t")
done
[ ${#missing[@]} -eq 0 ] || fail "missing tools: ${missing[*]} (packages: cmake dpkg-dev systemd man-db util-linux iproute2 python3)"
[ -x "$SHOAL_BIN" ] || fail "the build tree's agent is missing: $SHOAL_BIN (set SHOAL_BIN)"

case "$(pkg_state)" in
"") ;;
*)
	if [ -e "$MARK" ] || [ "${SHOAL_PKG_TEST_FORCE:-0}" = 1 ]; then
		log "purging a shoal package left by an earlier run"
		purge /dev/null || fail "cannot purge the shoal package left by an earlier run"
	else
		skip "a shoal package this test did not install is on this machine ($(pkg_state)); refusing to purge it (SHOAL_PKG_TEST_FORCE=1 overrides)"
	fi
	;;
esac
if [ -e /var/lib/shoal ] && [ ! -e "$MARK" ] && [ "${SHOAL_PKG_TEST_FORCE:-0}" != 1 ]; then
	skip "/var/lib/shoal exists without the package: refusing to touch it (SHOAL_PKG_TEST_FORCE=1 overrides)"
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/shoal-pkg.XXXXXX")
chmod 755 "$WORK"
trap on_exit EXIT
trap 'fail "interrupted"' INT TERM
trap 'printf "FAIL: %s: command failed at line %s: %s\n" "$NAME" "$LINENO" "$BASH_COMMAND" >&2' ERR

# ---- 1. build ----
BUILD=${SHOAL_PKG_BUILD_DIR:-$WORK/build}
log "building the package in $BUILD"
nice "$REPO/packaging/build-deb.sh" "$BUILD" >"$WORK/build.log" 2>&1 || fail "packaging/build-deb.sh failed"
deb=$(tail -n 1 "$WORK/build.log")
version=$(sed -n 's/^project(shoal VERSION \([0-9.]*\).*/\1/p' "$REPO/CMakeLists.txt")
arch=$(dpkg --print-architecture)
[ "$(basename "$deb")" = "shoal_${version}_${arch}.deb" ] ||
	fail "package file is $(basename "$deb"), want shoal_${version}_${arch}.deb"
depends=$(dpkg-deb -f "$deb" Depends)
log "built $(basename "$deb"); Depends: $depends"
for lib in libc6 libsodium23 libuv1 liblmdb0; do
	[[ $depends == *"$lib"* ]] || fail "Depends lacks $lib (dpkg-shlibdeps did not run?): $depends"
done
dpkg-deb -c "$deb" | awk '{print $NF}' >"$WORK/contents.txt"
for f in ./usr/bin/shoal ./usr/lib/systemd/system/shoal.service ./usr/lib/systemd/system/shoal@.service \
	./usr/lib/sysusers.d/shoal.conf ./usr/share/man/man1/shoal.1.gz \
	./usr/share/doc/shoal/config.example ./usr/share/doc/shoal/folders.conf.example \
	./usr/share/doc/shoal/operations.md; do
	grep -qxF "$f" "$WORK/contents.txt" || fail "the package lacks $f"
done

# ---- 2. install ----
touch "$MARK"
log "installing"
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$deb" \
	>"$WORK/install.log" 2>&1 || fail "apt-get install $deb failed"
[ "$(pkg_state)" = installed ] || fail "dpkg says the package is '$(pkg_state)', not installed"
for f in /usr/bin/shoal "$UNITDIR/shoal.service" "$UNITDIR/shoal@.service" /usr/lib/sysusers.d/shoal.conf; do
	[ -e "$f" ] || fail "$f is not installed"
done
IFS=: read -r _ _ uid _ _ home shell < <(getent passwd shoal) || fail "no user shoal after install"
getent group shoal >/dev/null || fail "no group shoal after install"
[ "$home" = /var/lib/shoal ] || fail "shoal's home is $home, want /var/lib/shoal"
[[ $shell == */nologin ]] || fail "shoal's shell is $shell, want nologin"
[ "$uid" -lt 1000 ] || fail "shoal's uid $uid is not a system uid"
[ "$(stat -c '%U:%G %a' /var/lib/shoal)" = "shoal:shoal 700" ] ||
	fail "/var/lib/shoal is $(stat -c '%U:%G %a' /var/lib/shoal), want shoal:shoal 700"
/usr/bin/shoal --version >/dev/null || fail "the installed binary does not run"
log "installed: user shoal (uid $uid), /var/lib/shoal 0700"

# ---- 3. man page and units ----
manpath=$(man -w shoal 2>&1) || fail "man -w shoal finds no page: $manpath"
MANPAGER=cat MANWIDTH=80 man shoal 2>/dev/null | grep -q 'shoal doctor' ||
	fail "man shoal does not render the doctor section"
log "man page: $manpath"
mkdir -p "$WORK/units"
cp "$UNITDIR/shoal@.service" "$WORK/units/shoal@shoal.service"
for u in "$UNITDIR/shoal.service" "$UNITDIR/shoal@.service" "$WORK/units/shoal@shoal.service"; do
	out=$(cd "$WORK" && systemd-analyze verify --man=no "$u" 2>&1) ||
		fail "systemd-analyze verify $u failed: $out"
	[ -z "$out" ] || fail "systemd-analyze verify $u said something (any output counts): $out"
done
log "systemd-analyze verify: both units clean"
for u in shoal.service "$WORK/units/shoal@shoal.service"; do
	sec=$(systemd-analyze security --offline=yes "$u" 2>&1 | tee "$WORK/security-$(basename "$u").txt" |
		sed -n 's/.*Overall exposure level for \([^:]*\): \([0-9.]*\) \([A-Z]*\).*/\2 \3/p')
	[ -n "$sec" ] || fail "no exposure level in systemd-analyze security $u"
	read -r figure word <<<"$sec"
	echo "security exposure of $(basename "$u"): $figure $word"
	if [ "$u" = shoal.service ]; then
		case $word in
		PERFECT | SAFE | OK) ;;
		*) fail "shoal.service is rated $figure $word; want OK or better (below 5.0)" ;;
		esac
	fi
done

# ---- 4. sync with the installed agent ----
log "syncing with the installed agent as shoal"
SHOAL_BIN=$SHOAL_BIN bash "$HERE/pkg_sync.sh" >"$WORK/sync.log" 2>&1 ||
	{ cat "$WORK/sync.log" >&2; fail "pkg_sync.sh failed"; }
grep '^PASS' "$WORK/sync.log" >&2

# ---- 5. doctor and the service's sandbox ----
if /usr/bin/shoal doctor --help >/dev/null 2>&1; then
	svc() { setpriv --reuid=shoal --regid=shoal --clear-groups env HOME=/var/lib/shoal \
		/usr/bin/shoal --home /var/lib/shoal "$@"; }
	# Not in /tmp: the service's PrivateTmp= hides that whatever the drop-in says.
	OUTSIDE=$(mktemp -d /srv/shoal-pkg-test.XXXXXX)
	outside=$OUTSIDE
	chown shoal:shoal "$outside"
	svc init --name pkg-svc >/dev/null
	svc folder add outside "$outside" >/dev/null
	folder_status()
	{
		{ svc doctor --json || true; } | python3 -c '
import json, sys
d = json.load(sys.stdin)
c = next(c for c in d["checks"] if c["name"] == "folder outside")
print(c["status"], c["message"])'
	}
	st=$(folder_status)
	[[ $st == fail*ReadWritePaths* ]] ||
		fail "doctor should fail a folder outside ReadWritePaths=; it said: $st"
	mkdir -p "$DROPIN_DIR"
	printf '[Service]\nReadWritePaths=%s\n' "$outside" >"$DROPIN"
	st=$(folder_status)
	[[ $st != fail* ]] || fail "doctor still fails the folder with a ReadWritePaths= drop-in: $st"
	rm -f "$DROPIN"
	rmdir "$DROPIN_DIR" 2>/dev/null || true
	log "doctor: sees the service's ReadWritePaths= and drop-ins"
else
	log "the installed binary has no doctor command yet: skipped the sandbox check"
fi

# ---- 6. purge ----
log "purging"
purge "$WORK/purge.log" || fail "apt-get purge shoal failed"
[ -z "$(pkg_state)" ] || fail "after purge dpkg still knows the package: $(pkg_state)"
for f in /usr/bin/shoal "$UNITDIR/shoal.service" "$UNITDIR/shoal@.service" \
	/usr/lib/sysusers.d/shoal.conf /usr/share/man/man1/shoal.1.gz /var/lib/shoal; do
	[ ! -e "$f" ] || fail "$f is still there after purge"
done
rm -f "$MARK"
log "purged: binary, units and /var/lib/shoal are gone (the user shoal stays, as for Debian system users)"
echo "PASS: $NAME"
