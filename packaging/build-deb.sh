#!/usr/bin/env bash
# packaging/build-deb.sh [BUILD_DIR] - builds the Debian package in one command:
# configures a release build with the prefix /usr in BUILD_DIR (default
# build-deb/ in the repository), builds it, and runs `cpack -G DEB`, which
# computes Depends with dpkg-shlibdeps (package dpkg-dev). Prints the path of
# shoal_VERSION_ARCH.deb on the last line.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${1:-$ROOT/build-deb}

for tool in cmake cpack dpkg-shlibdeps dpkg-deb; do
	command -v "$tool" >/dev/null ||
		{ echo "build-deb: $tool is missing (apt-get install cmake dpkg-dev)" >&2; exit 1; }
done
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_INSTALL_PREFIX=/usr \
	-DSHOAL_TESTS=OFF -DSHOAL_SANITIZE=OFF >/dev/null
cmake --build "$BUILD" -j "$(nproc)"
rm -f "$BUILD"/shoal_*.deb
(cd "$BUILD" && cpack -G DEB >/dev/null)
deb=$(ls "$BUILD"/shoal_*.deb)
[ "$(printf '%s\n' "$deb" | wc -l)" -eq 1 ] || { echo "build-deb: no single .deb in $BUILD" >&2; exit 1; }
printf '%s\n' "$deb"
