#!/usr/bin/env bash
# tests/fuzz/run.sh [SECONDS] [TARGET...] - build the libFuzzer targets with
# clang in build-fuzz/ and run each for SECONDS (default 60).
#
# Each target starts from a scratch copy of tests/fuzz/corpus/<name>/ (the
# repository's corpus is not modified; new inputs are thrown away). Crashes,
# leaks, timeouts and out-of-memory inputs are written to
# tests/fuzz/findings/<name>/ (gitignored), with the full log in
# tests/fuzz/findings/<name>.log. Prints, per target, the executions done and
# the path of any finding; exits 1 when a target found something.
#
# A finding is minimized with
#   build-fuzz/tests/fuzz_<name> -minimize_crash=1 -max_total_time=60 FILE
# and kept as tests/fuzz/corpus/<name>/regress-<what>, so ctest replays it.
# Set FUZZ_NICE (default 10) to change the priority, FUZZ_ARGS to pass more
# libFuzzer flags.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"

secs=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(frame msg path devid handshake invite)

# Inputs larger than these are not interesting (a frame body is at most
# 65,535 bytes, a path 4,095); bigger inputs only slow the fuzzer down.
declare -A max_len=([frame]=8192 [msg]=16384 [path]=4200 [devid]=256 [handshake]=1024
	[invite]=2048)

build="build-fuzz"
findings=tests/fuzz/findings
bins=()
for t in "${targets[@]}"; do
	bins+=("fuzz_$t")
done

echo "== building ${bins[*]} in $build/ (clang, ASan+UBSan+libFuzzer)" >&2
cmake -S . -B "$build" -DSHOAL_FUZZ=ON -DCMAKE_C_COMPILER=clang -DSHOAL_TESTS=ON >/dev/null
nice -n "${FUZZ_NICE:-10}" cmake --build "$build" -j "$(nproc)" --target "${bins[@]}" >/dev/null

scratch=$(mktemp -d "${TMPDIR:-/tmp}/shoal-fuzz.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
mkdir -p "$findings"

status=0
printf '%-10s %12s  %s\n' target executions findings
for t in "${targets[@]}"; do
	mkdir -p "$scratch/$t" "$findings/$t"
	cp tests/fuzz/corpus/"$t"/* "$scratch/$t/"
	log="$findings/$t.log"
	rc=0
	# shellcheck disable=SC2086 # FUZZ_ARGS is a list of flags
	ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1} \
	UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1} \
		nice -n "${FUZZ_NICE:-10}" "$build/tests/fuzz_$t" \
		-max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
		-max_len="${max_len[$t]}" -print_final_stats=1 \
		-artifact_prefix="$findings/$t/" ${FUZZ_ARGS:-} \
		"$scratch/$t" >"$log" 2>&1 || rc=$?
	execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
	# Without the final stats (a crash), the last status line's count.
	[ -n "$execs" ] || execs=$(sed -n 's/^#\([0-9][0-9]*\).*/\1/p' "$log" | tail -n 1)
	found=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tr '\n' ' ')
	if [ "$rc" -ne 0 ] || [ -n "$found" ]; then
		status=1
		[ -n "$found" ] || found="exit status $rc, see $log"
	fi
	printf '%-10s %12s  %s\n' "$t" "${execs:-?}" "${found:--}"
done
exit "$status"
