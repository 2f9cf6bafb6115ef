# shellcheck shell=bash
# tests/bench/netns.sh - sourced by the benchmarks that start agents
# themselves (compare.sh, scale.sh): the first time, re-executes the calling
# script in a private network namespace (and, where the kernel allows, a PID
# namespace whose init it is, so no agent outlives it); inside, brings up lo
# and refuses to go on if any other interface is there. Nothing a benchmark
# sends can leave the machine.
#
#   bench_netns GUARD SCRIPT ARGS...
# GUARD names the environment variable that marks the second run.
bench_netns()
{
	local guard=$1 self=$2
	shift 2
	if [[ ${!guard:-0} != 1 ]]; then
		local ns=(-n)
		[[ $(id -u) -eq 0 ]] || ns=(-r -n)
		unshare "${ns[@]}" true 2>/dev/null || { echo "FATAL: cannot unshare a network namespace" >&2; exit 2; }
		if unshare "${ns[@]}" -p -f --mount-proc --kill-child true 2>/dev/null; then
			ns+=(-p -f --mount-proc --kill-child)
		fi
		exec unshare "${ns[@]}" -- env "$guard=1" bash "$self" "$@"
	fi
	ip link set lo up
	if ip -o link show | awk -F': ' '{print $2}' | grep -qv '^lo$'; then
		echo "FATAL: the network namespace has interfaces other than lo" >&2
		exit 2
	fi
}
