#!/usr/bin/env bash
# scripts/setup.sh - set up, build, run and test shoal on Debian 12.
#
#   scripts/setup.sh run    install what is missing, build, start the agent on ~/Shoal
#   scripts/setup.sh test   install what is missing, build twice (normal and
#                           ASan+UBSan) and run every test in both builds
#   scripts/setup.sh deps   only install the Debian packages
#   scripts/setup.sh build  only build (build/agent/shoal)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

# Debian packages: the libraries, the build tools, and what the tests use
# (python3 for tree generation and comparison, tcpdump for the capture test,
# iproute2 and util-linux for private network namespaces, xfsprogs for the
# tests that clone blocks on an XFS image).
PKGS=(build-essential cmake pkg-config
      libsodium-dev libuv1-dev libavahi-client-dev liblmdb-dev libmsgpack-dev
      python3 tcpdump iproute2 util-linux procps
      systemd man-db dpkg-dev adduser
      avahi-daemon avahi-utils dbus xfsprogs)

log() { printf '== %s\n' "$*" >&2; }

deps() {
	local missing=()
	for p in "${PKGS[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
			missing+=("$p")
	done
	if [ ${#missing[@]} -eq 0 ]; then
		log "all Debian packages present"
		return
	fi
	log "installing: ${missing[*]}"
	local sudo=()
	[ "$(id -u)" -eq 0 ] || sudo=(sudo)
	"${sudo[@]}" apt-get update -q
	DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y --no-install-recommends "${missing[@]}"
}

build() { # build DIR [cmake options...]
	local dir=$1
	shift
	cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
	cmake --build "$dir" -j "$(nproc)"
}

run_tests() { # run_tests DIR
	(cd "$1" && ctest --output-on-failure -j 2)
}

case "${1:-}" in
deps)
	deps
	;;
build)
	deps
	build build
	;;
run)
	deps
	build build
	log "starting the agent (Ctrl-C stops it); state in ${SHOAL_HOME:-~/.local/state/shoal}"
	exec build/agent/shoal run
	;;
test)
	deps
	log "normal build (with the Debian package test)"
	export SHOAL_PKG_TEST=1
	build build
	run_tests build
	log "ASan + UBSan build"
	build build-asan -DSHOAL_SANITIZE=ON
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 run_tests build-asan
	;;
*)
	sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
	exit 2
	;;
esac
