#!/usr/bin/env bash
# tests/e2e/mdns_lab.sh - a private LAN of emulated hosts for real mDNS tests.
#
#   mdns_lab.sh up [HOST...]       make the hosts (default: a b); the i-th gets
#                                  $MDNS_LAB_NET.i/24 on its eth0
#   mdns_lab.sh exec HOST CMD...   run CMD inside HOST (its network and mount
#                                  namespaces, same cwd); execs, so a caller's
#                                  $! is CMD's own pid
#   mdns_lab.sh addr HOST          print HOST's IPv4 address
#   mdns_lab.sh avahi-stop HOST    stop HOST's avahi-daemon (and wait for it)
#   mdns_lab.sh avahi-start HOST   start it again (and wait until it serves)
#   mdns_lab.sh down               stop what `up` started, by pid; delete the state
#
# Each host is a holder process (`sleep infinity`) in its own network
# namespace and its own mount namespace, where a tmpfs over /run gives the
# host its own system D-Bus at the stock path /run/dbus/system_bus_socket and
# its own /run/avahi-daemon. Each host runs its own dbus-daemon and
# avahi-daemon, configured from files in the state directory: avahi uses eth0
# only, publishes neither the workstation nor HINFO, and no static service
# (/etc/avahi/services is hidden under an empty tmpfs). The hosts' eth0 are
# veth peers of ports on a bridge that lives in a namespace of its own, and
# every link is made inside the lab's namespaces, so nothing is ever added to
# the caller's network namespace, and no packet, multicast or not, reaches a
# real interface. Namespaces are held by processes, not `ip netns` names, so
# they vanish with those processes: killing the caller's PID namespace (as
# tests/e2e/lib.sh arranges) leaves nothing behind.
#
# Environment: MDNS_LAB_DIR (state, default /tmp/shoal-mdns-lab),
# MDNS_LAB_NET (default 10.213.0), MDNS_LAB_IPV6=1 (avahi-daemon also uses
# IPv6, so peers are found at link-local addresses as well).
# Needs root (or a user namespace mapped to root), util-linux (unshare,
# nsenter), iproute2, dbus-daemon and avahi-daemon.
set -euo pipefail

DIR=${MDNS_LAB_DIR:-/tmp/shoal-mdns-lab}
NET=${MDNS_LAB_NET:-10.213.0}

die()
{
	printf 'mdns_lab: %s\n' "$*" >&2
	exit 1
}

# alive PID: the process exists and is not a zombie (an orphan waits for its
# reaper as a zombie, and `kill -0` succeeds on a zombie).
alive()
{
	local st
	st=$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null) || return 1
	[ "$st" != Z ] && [ "$st" != X ]
}

# stop_pid PID: SIGTERM, SIGKILL after 5 s; returns once it is gone.
stop_pid()
{
	local p=$1 i
	alive "$p" || return 0
	kill -TERM "$p" 2>/dev/null || true
	for i in $(seq 50); do
		alive "$p" || return 0
		sleep 0.1
	done
	kill -KILL "$p" 2>/dev/null || true
	for i in $(seq 20); do
		alive "$p" || return 0
		sleep 0.1
	done
}

holder()
{
	[ -f "$DIR/$1/holder.pid" ] || die "no host $1 (run: $0 up)"
	cat "$DIR/$1/holder.pid"
}

# in HOST CMD...: runs CMD in HOST's namespaces. setns() to a mount
# namespace moves the cwd to /, hence --wd.
in_host()
{
	local h
	h=$(holder "$1")
	shift
	nsenter -t "$h" -n -m --wd="$PWD" -- "$@"
}

# A path of HOST's mount namespace, seen from here.
host_path() { printf '/proc/%s/root%s' "$(holder "$1")" "$2"; }

# new_holder FILE ARGS...: starts `sleep infinity` under unshare ARGS (and
# the setup script in $SETUP), writes its pid to FILE, waits until it runs.
new_holder()
{
	local file=$1 pid i
	shift
	unshare "$@" -- sh -c "${SETUP:-true} && exec sleep infinity" \
		</dev/null >>"$(dirname "$file")/holder.log" 2>&1 &
	pid=$!
	echo "$pid" >"$file"
	for i in $(seq 100); do
		alive "$pid" || die "holder failed: $(cat "$(dirname "$file")/holder.log")"
		[ "$(cat "/proc/$pid/comm" 2>/dev/null)" != sleep ] || return 0
		sleep 0.05
	done
	die "holder $pid did not start"
}

write_configs()
{
	local h=$1 d=$DIR/$1 v6=no
	[ "${MDNS_LAB_IPV6:-0}" != 1 ] || v6=yes
	cat >"$d/dbus.conf" <<'EOF'
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<!-- The system bus of one lab host: the stock default policy, plus avahi's. -->
<busconfig>
  <type>system</type>
  <listen>unix:path=/run/dbus/system_bus_socket</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Properties"/>
  </policy>
  <include ignore_missing="yes">/usr/share/dbus-1/system.d/avahi-dbus.conf</include>
  <include ignore_missing="yes">/etc/dbus-1/system.d/avahi-dbus.conf</include>
</busconfig>
EOF
	cat >"$d/avahi.conf" <<EOF
# avahi-daemon of lab host $h: eth0 only, nothing published but what clients ask for.
[server]
host-name=shoal-lab-$h
use-ipv4=yes
use-ipv6=$v6
allow-interfaces=eth0
enable-dbus=yes
ratelimit-interval-usec=1000000
ratelimit-burst=1000

[wide-area]
enable-wide-area=no

[publish]
publish-hinfo=no
publish-workstation=no
publish-aaaa-on-ipv4=no
publish-a-on-ipv6=no

[reflector]
enable-reflector=no

[rlimits]
EOF
}

dbus_start()
{
	local h=$1 d=$DIR/$1 i
	# nsenter execs, so $! is dbus-daemon itself.
	nsenter -t "$(holder "$h")" -n -m -- dbus-daemon --config-file="$d/dbus.conf" --nofork \
		--nopidfile </dev/null >>"$d/dbus.log" 2>&1 &
	echo $! >"$d/dbus.pid"
	for i in $(seq 100); do
		[ ! -S "$(host_path "$h" /run/dbus/system_bus_socket)" ] || return 0
		alive "$(cat "$d/dbus.pid")" || break
		sleep 0.05
	done
	die "dbus-daemon of $h did not start: $(tail -n 5 "$d/dbus.log")"
}

avahi_start()
{
	local h=$1 d=$DIR/$1 from i
	[ ! -f "$d/avahi.pid" ] || ! alive "$(cat "$d/avahi.pid")" || die "avahi-daemon of $h runs already"
	touch "$d/avahi.log"
	from=$(($(wc -l <"$d/avahi.log") + 1))
	nsenter -t "$(holder "$h")" -n -m -- avahi-daemon -f "$d/avahi.conf" --no-drop-root \
		--no-chroot --no-rlimits </dev/null >>"$d/avahi.log" 2>&1 &
	echo $! >"$d/avahi.pid"
	for i in $(seq 100); do
		! tail -n "+$from" "$d/avahi.log" | grep -q 'Server startup complete' || return 0
		alive "$(cat "$d/avahi.pid")" || break
		sleep 0.05
	done
	die "avahi-daemon of $h did not start: $(tail -n 5 "$d/avahi.log")"
}

avahi_stop()
{
	local d=$DIR/$1
	[ -f "$d/avahi.pid" ] || return 0
	stop_pid "$(cat "$d/avahi.pid")"
	rm -f "$d/avahi.pid"
}

up()
{
	local hosts=("$@") h i=0 d sw
	[ ${#hosts[@]} -gt 0 ] || hosts=(a b)
	for cmd in unshare nsenter ip dbus-daemon avahi-daemon; do
		command -v "$cmd" >/dev/null || die "$cmd is missing"
	done
	[ ! -e "$DIR/sw.pid" ] || die "a lab runs already in $DIR (run: $0 down)"
	mkdir -p "$DIR"
	# The switch: a bridge in a namespace of its own. No multicast snooping:
	# there is no IGMP querier, and mDNS must reach every port.
	new_holder "$DIR/sw.pid" --net
	sw=$(cat "$DIR/sw.pid")
	nsenter -t "$sw" -n -- ip link set lo up
	nsenter -t "$sw" -n -- ip link add br0 type bridge mcast_snooping 0
	nsenter -t "$sw" -n -- ip link set br0 up
	for h in "${hosts[@]}"; do
		[[ $h =~ ^[a-z0-9]{1,8}$ ]] || die "bad host name '$h' (1-8 of a-z0-9)"
		i=$((i + 1))
		d=$DIR/$h
		[ ! -e "$d" ] || die "host $h given twice"
		mkdir -p "$d"
		SETUP='mount -t tmpfs -o mode=0755 tmpfs /run && mkdir -p /run/dbus /run/avahi-daemon &&
			{ [ ! -d /etc/avahi/services ] || mount -t tmpfs -o mode=0755 tmpfs /etc/avahi/services; } &&
			{ mount -t sysfs sysfs /sys 2>/dev/null || true; }' \
			new_holder "$d/holder.pid" --net --mount --propagation private
		# Both ends are made from the switch's namespace: "eth0" goes straight
		# into the host, and nothing ever appears in the caller's namespace.
		nsenter -t "$sw" -n -- ip link add "p-$h" type veth peer name eth0 netns "$(holder "$h")"
		nsenter -t "$sw" -n -- ip link set "p-$h" master br0 up
		if [ "${MDNS_LAB_IPV6:-0}" = 1 ]; then
			in_host "$h" sh -c 'echo 0 >/proc/sys/net/ipv6/conf/eth0/accept_dad' 2>/dev/null || true
		fi
		in_host "$h" ip link set lo up
		in_host "$h" ip link set eth0 up multicast on
		in_host "$h" ip addr add "$NET.$i/24" dev eth0
		echo "$NET.$i" >"$d/addr"
		write_configs "$h"
		dbus_start "$h"
		avahi_start "$h"
		echo "$h" >>"$DIR/hosts"
		printf 'host %s: %s, holder %s, dbus-daemon %s, avahi-daemon %s\n' "$h" "$NET.$i" \
			"$(holder "$h")" "$(cat "$d/dbus.pid")" "$(cat "$d/avahi.pid")"
	done
}

down()
{
	local h d
	[ -d "$DIR" ] || return 0
	for d in "$DIR"/*/; do
		[ -f "$d/holder.pid" ] || continue
		h=$(basename "$d")
		avahi_stop "$h"
		[ ! -f "$d/dbus.pid" ] || stop_pid "$(cat "$d/dbus.pid")"
		stop_pid "$(cat "$d/holder.pid")"
		rm -f "$d/dbus.pid" "$d/holder.pid"
	done
	[ ! -f "$DIR/sw.pid" ] || stop_pid "$(cat "$DIR/sw.pid")"
	rm -f "$DIR/sw.pid"
	[ "${MDNS_LAB_KEEP:-0}" = 1 ] || rm -rf "$DIR"
}

cmd=${1:-}
shift || true
case $cmd in
up) up "$@" ;;
exec)
	[ $# -ge 2 ] || die "usage: $0 exec HOST CMD..."
	h=$(holder "$1")
	shift
	exec nsenter -t "$h" -n -m --wd="$PWD" -- "$@"
	;;
addr) cat "$DIR/${1:?host}/addr" ;;
avahi-stop) holder "${1:?host}" >/dev/null && avahi_stop "$1" ;;
avahi-start) holder "${1:?host}" >/dev/null && avahi_start "$1" ;;
down) down ;;
*)
	sed -n '2,/^$/p' "$0" | sed 's/^# \{0,1\}//' >&2
	exit 2
	;;
esac
