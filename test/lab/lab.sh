#!/usr/bin/env bash
# A network-namespace lab with the topology of the Vagrant VMs, configured by
# the same per-role scripts (vagrant/provision/*.sh). Hosts, segments,
# addresses, routes and VIPs come from vagrant/topology.json, which the
# Vagrantfile reads too (test/lab/topology.jq turns it into the lab's shape).
#
#   lab.sh up PREFIX [--no-decap] [--fleet] [--vips A,B,C] [--vips6 A,B,C|none] [--mtu N] [--owner PID]
#   lab.sh down PREFIX
#   lab.sh list
#
# With the topology as shipped (dual stack: every host has the IPv6 twin of
# its IPv4 address, fd00:10::/64 on the front and fd00:20::/64 on the remote
# segment, e.g. 10.10.0.11 and fd00:10::11):
#   PREFIX-sw      bridges br0 (front, 10.10.0.0/24, fd00:10::/64) and br1
#                  (remote, 10.20.0.0/24, fd00:20::/64)
#   PREFIX-client  eth0 10.10.0.10   VIPs (10.100.0.0/24, fd00:100::/64) via the
#                  balancer (10.10.0.2, fd00:10::2), default via .1 (fd00:10::1)
#   PREFIX-lb      eth0 10.10.0.2    the remote segment via the router (the balancer)
#   PREFIX-router  eth0 10.10.0.1, eth1 10.20.0.1, IPv4 and IPv6 forwarding
#   PREFIX-be1..3  eth0 10.10.0.11-13  default via 10.10.0.1, nginx, VIPs on lo
#   PREFIX-be4..5  eth0 10.20.0.14-15  default via 10.20.0.1, nginx, VIPs on lo
# and with --fleet:
#   PREFIX-lb2     eth0 10.10.0.3    a second balancer
#   PREFIX-fclient eth0 10.20.0.10   a client behind the router: VIPs via 10.20.0.1
# with BIRD on both balancers and the router (BGP; the router installs each
# VIP the balancers announce as an ECMP route over them; docs/fleet.md).
# Each host of the topology is a namespace PREFIX-<namespace>; its interfaces
# are eth0, eth1, ... in topology order, each a veth to a port of the switch
# namespace (named after the host; <host>0, <host>1 for a host with several)
# on the bridge of its segment.
#
# up        creates the namespaces, bridges and veth pairs (checksum offload
#           off on both ends, xdp_pass on the switch port of each balancer so
#           that frames a balancer XDP_TXes reach the bridge), then runs each
#           host's role script (vagrant/provision/ROLE.sh) in its namespace with
#           the arguments derived from the topology plus the lab's own
#           (--gateway, --mtu, --runtime-dir, --root, --decap xdp). The
#           arguments go to /run/lbctl-lab/PREFIX/provision-NS.args (NUL-
#           separated), the script's output to provision-NS.log, whose last
#           line is the script's "provisioned with: ARGS".
#           Fails if a lab with PREFIX exists; on any failure it tears down
#           what it created and exits non-zero.
# --no-decap  do not run `lbctl decap attach` on the backends
# --fleet   also the topology's "fleet" hosts, and BIRD on every balancer
#           and the router (--bgp-* arguments, --bird-dir
#           /run/lbctl-lab/PREFIX/NAME: config, control socket bird.ctl, pid
#           file); xdp_pass on the switch port of every balancer
# --vips    IPv4 VIPs the backends hold on lo (default: the topology's "vips")
# --vips6   IPv6 VIPs the backends hold on lo (default: the topology's "vips6";
#           "none" for none)
# --mtu N   MTU of every lab interface except the client's (default: the
#           topology's mtu.lab.interior, 1600), so that a full 1500-byte client
#           packet still fits once the balancer encapsulates it in IP-in-IP
#           (+20 bytes with an IPv4 outer header, +40 with IPv6); the client
#           keeps mtu.lab.client (1500). --mtu 1500 makes encapsulated
#           full-size packets too big: the balancer answers them with ICMP
#           too-big and the client's path MTU discovery takes over.
# --owner PID  record the process that owns the lab (test/lab/lab.ts reaps
#           labs whose owner died)
# down      kills every process in the lab's namespaces (nginx first, through
#           its pid files), deletes the namespaces and the runtime directory
#           /run/lbctl-lab/PREFIX. Safe after a failed up and when repeated.
# list      prints the prefixes of the labs that exist.
#
# PREFIX: a lower-case letter then up to 11 letters or digits.
# LBCTL_TOPOLOGY=FILE reads another topology file (test/lab/lab.ts honours it too).
# Needs root, `make` (build/bpf/xdp_pass.bpf.o), jq, nginx, ethtool, nsenter, flock.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PROVISION=$ROOT/vagrant/provision
TOPOLOGY=${LBCTL_TOPOLOGY:-$ROOT/vagrant/topology.json}
TOPOLOGY_JQ=$ROOT/test/lab/topology.jq
RUN_BASE=/run/lbctl-lab
XDP_PASS=$ROOT/build/bpf/xdp_pass.bpf.o

usage() { awk 'NR == 1 { next } !/^#/ { exit } { sub(/^# ?/, ""); print }' "$0"; }
die() { printf 'lab.sh: %s\n' "$*" >&2; exit 1; }

check_prefix() {
	[[ ${1:-} =~ ^[a-z][a-z0-9]{0,11}$ ]] || die "bad PREFIX \"${1:-}\": a lower-case letter then up to 11 letters or digits"
}

ns_path() { printf '/run/netns/%s' "$1"; }
# in_ns NS CMD...: runs CMD in the network namespace NS only (keeps the host's
# mount namespace, so /sys/fs/bpf stays visible; unlike `ip netns exec`).
# The lock (fd 9) is not passed on: a daemon (nginx) would hold it forever.
in_ns() { local ns=$1; shift; nsenter --net="$(ns_path "$ns")" -- "$@" 9>&-; }

# lab_namespaces P: the namespaces of lab P that exist. Prefixes contain no
# dash, so lab "a" never matches the namespaces of lab "ab" or "a1".
lab_namespaces() {
	ip netns list 2>/dev/null | awk -v p="$1-" 'index($1, p) == 1 && substr($1, length(p) + 1) ~ /^[a-z0-9]+$/ { print $1 }'
}

# lock P: serialises up and down of one prefix (e.g. a SIGTERMed test runner
# calling down while its `up` child is still tearing down).
lock() {
	mkdir -p "$RUN_BASE/.locks"
	exec 9>"$RUN_BASE/.locks/$1.lock"
	flock -w 60 9 || die "timed out waiting for the lock of lab $1"
}

# ------------------------------------------------------------------- down

pid_alive() { kill -0 "$1" 2>/dev/null; }

# wait_gone SECONDS PID...: waits until none of the PIDs runs; returns 1 on timeout.
wait_gone() {
	local deadline=$((SECONDS + $1)) pid left
	shift
	while :; do
		left=0
		for pid in "$@"; do
			if pid_alive "$pid" && [ "$(cut -d' ' -f3 "/proc/$pid/stat" 2>/dev/null)" != Z ]; then
				left=1
				break
			fi
		done
		[ "$left" = 0 ] && return 0
		[ "$SECONDS" -lt "$deadline" ] || return 1
		sleep 0.05
	done
}

do_down() {
	local p=$1 rundir=$RUN_BASE/$1 ns ino pidfile pid pids=() nss
	nss=$(lab_namespaces "$p")

	# nginx first, through its pid files (also catches an nginx that a
	# failed up left outside the namespaces' process lists, if any).
	for pidfile in "$rundir"/*/nginx.pid; do
		[ -f "$pidfile" ] || continue
		pid=$(cat "$pidfile" 2>/dev/null || true)
		if [[ $pid =~ ^[0-9]+$ ]] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = nginx ]; then
			kill -TERM "$pid" 2>/dev/null || true
			pids+=("$pid")
		fi
	done
	# Then everything else that runs in the lab: lbctl, tcpdump, ...
	for ns in $nss; do
		for pid in $(ip netns pids "$ns" 2>/dev/null || true); do
			[ "$pid" = $$ ] && continue
			kill -TERM "$pid" 2>/dev/null || true
			pids+=("$pid")
		done
	done
	if [ ${#pids[@]} -gt 0 ] && ! wait_gone 3 "${pids[@]}"; then
		for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
		for ns in $nss; do
			for pid in $(ip netns pids "$ns" 2>/dev/null || true); do kill -KILL "$pid" 2>/dev/null || true; done
		done
		wait_gone 2 "${pids[@]}" || printf 'lab.sh: warning: processes of lab %s survived SIGKILL\n' "$p" >&2
	fi

	# A balancer killed hard leaves its pins behind: lbctl pins under
	# /sys/fs/bpf/lbctl/netns-<inode of the namespace>/ by default.
	for ns in $nss; do
		ino=$(stat -L -c %i "$(ns_path "$ns")" 2>/dev/null || true)
		[ -n "$ino" ] && rm -rf "/sys/fs/bpf/lbctl/netns-$ino"
	done
	rmdir /sys/fs/bpf/lbctl 2>/dev/null || true

	# Deleting a namespace destroys its interfaces, their veth peers and the
	# XDP programs attached to them.
	for ns in $nss; do
		ip netns del "$ns" 2>/dev/null || [ ! -e "$(ns_path "$ns")" ] ||
			printf 'lab.sh: warning: cannot delete namespace %s\n' "$ns" >&2
	done
	rm -rf "$rundir"
	rm -f "$RUN_BASE/.locks/$p.lock"
	rmdir "$RUN_BASE/.locks" "$RUN_BASE" 2>/dev/null || true
	[ -z "$(lab_namespaces "$p")" ] || die "down $p: namespaces remain: $(lab_namespaces "$p" | tr '\n' ' ')"
}

cmd_down() {
	[ $# -eq 1 ] || die "usage: lab.sh down PREFIX"
	check_prefix "$1"
	lock "$1"
	do_down "$1"
}

# --------------------------------------------------------------------- up

UP_PREFIX="" UP_DONE=0 UP_STEP="checking prerequisites"

on_up_exit() {
	local rc=$?
	[ "$UP_DONE" = 1 ] && return 0
	[ "$rc" -ne 0 ] || rc=1
	trap - EXIT INT TERM
	printf 'lab.sh: up %s failed while %s (exit %s); tearing down\n' "$UP_PREFIX" "$UP_STEP" "$rc" >&2
	do_down "$UP_PREFIX" || printf 'lab.sh: teardown of %s failed; run: %s down %s\n' "$UP_PREFIX" "$0" "$UP_PREFIX" >&2
	exit "$rc"
}

# load_topology VIPS VIPS6 FLEET: defines the TOPO_* variables (see
# test/lab/topology.jq) from the topology file; VIPS and VIPS6
# (comma-separated) replace its "vips" and "vips6" when set; FLEET 1 adds
# the fleet's hosts and BGP arguments.
load_topology() {
	local code
	[ -f "$TOPOLOGY" ] || die "topology $TOPOLOGY is missing"
	code=$(jq -r --arg vips "$1" --arg vips6 "$2" --arg fleet "$3" -f "$TOPOLOGY_JQ" "$TOPOLOGY") || die "cannot read the topology $TOPOLOGY"
	eval "$code"
	[ ${#TOPO_NS[@]} -gt 0 ] || die "topology $TOPOLOGY has no hosts"
}

# provision NS ARGS...: runs the role script of host NS in its namespace with
# ARGS (in the background; see wait_provision).
PROV_PIDS=() PROV_NAMES=()
provision() {
	local ns=$1 dir=$RUN_BASE/$UP_PREFIX
	shift
	printf '%s\0' "$@" >"$dir/provision-$ns.args"
	in_ns "$UP_PREFIX-$ns" "$PROVISION/${TOPO_ROLE[$ns]}.sh" "$@" >"$dir/provision-$ns.log" 2>&1 &
	PROV_PIDS+=($!)
	PROV_NAMES+=("$ns")
}

wait_provision() {
	local i failed=()
	for i in "${!PROV_PIDS[@]}"; do
		if ! wait "${PROV_PIDS[$i]}"; then
			failed+=("${PROV_NAMES[$i]}")
			printf 'lab.sh: provisioning %s failed:\n' "${PROV_NAMES[$i]}" >&2
			sed 's/^/    /' "$RUN_BASE/$UP_PREFIX/provision-${PROV_NAMES[$i]}.log" >&2
		fi
	done
	[ ${#failed[@]} -eq 0 ] || die "provisioning failed: ${failed[*]}"
}

cmd_up() {
	local p="" decap=1 fleet=0 vips="" vips6="" mtu="" owner=""
	while [ $# -gt 0 ]; do
		case $1 in
		--no-decap) decap=0; shift ;;
		--decap) decap=1; shift ;;
		--fleet) fleet=1; shift ;;
		--vips) [ $# -ge 2 ] || die "--vips needs a value"; vips=$2; shift 2 ;;
		--vips6) [ $# -ge 2 ] || die "--vips6 needs a value"; vips6=$2; shift 2 ;;
		--mtu) [ $# -ge 2 ] && [[ $2 =~ ^[0-9]+$ ]] || die "--mtu needs a number"; mtu=$2; shift 2 ;;
		--owner) [ $# -ge 2 ] && [[ $2 =~ ^[0-9]+$ ]] || die "--owner needs a PID"; owner=$2; shift 2 ;;
		-*) die "unknown option $1 (lab.sh up PREFIX [--no-decap] [--fleet] [--vips A,B,C] [--vips6 A,B,C|none] [--mtu N] [--owner PID])" ;;
		*) [ -z "$p" ] || die "unexpected argument $1"; p=$1; shift ;;
		esac
	done
	check_prefix "$p"
	[ -z "$vips" ] || [[ $vips =~ ^[0-9.]+(,[0-9.]+)*$ ]] || die "--vips: expected comma-separated IPv4 addresses, got \"$vips\""
	[ -z "$vips6" ] || [ "$vips6" = none ] || [[ $vips6 =~ ^[0-9A-Fa-f:]+(,[0-9A-Fa-f:]+)*$ ]] ||
		die "--vips6: expected comma-separated IPv6 addresses or none, got \"$vips6\""
	[ "$(id -u)" = 0 ] || die "run as root"
	local tool
	for tool in ip nsenter ethtool nginx flock jq; do
		command -v "$tool" >/dev/null 2>&1 || die "$tool is missing (scripts/install-deps.sh installs it)"
	done
	[ -f "$XDP_PASS" ] || die "$XDP_PASS is missing: run make first"
	if [ "$decap" = 1 ] && [ ! -x "$ROOT/bin/lbctl" ]; then
		die "$ROOT/bin/lbctl is missing (needed to attach the decapsulator; pass --no-decap to skip it)"
	fi
	load_topology "$vips" "$vips6" "$fleet"
	vips=$TOPO_VIPS${TOPO_VIPS6:+,$TOPO_VIPS6}
	mtu=${mtu:-$TOPO_MTU_INTERIOR}

	lock "$p"
	[ -z "$(lab_namespaces "$p")" ] || die "lab $p exists already (namespaces: $(lab_namespaces "$p" | tr '\n' ' ')); run: $0 down $p"
	[ ! -e "$RUN_BASE/$p" ] || die "lab $p exists already ($RUN_BASE/$p); run: $0 down $p"

	UP_PREFIX=$p
	trap on_up_exit EXIT
	trap 'UP_STEP="$UP_STEP (interrupted)"; exit 130' INT
	trap 'UP_STEP="$UP_STEP (terminated)"; exit 143' TERM

	local rundir=$RUN_BASE/$p started=$EPOCHREALTIME
	mkdir -p "$rundir"
	[ -z "$owner" ] || echo "$owner" >"$rundir/owner"

	UP_STEP="creating namespaces"
	local ns sw=$p-sw
	for ns in sw "${TOPO_NS[@]}"; do
		ip netns add "$p-$ns"
	done

	UP_STEP="creating bridges and veth pairs"
	# TOPO_LINKS: "NS IFNAME PORT BRIDGE": IFNAME in host NS, PORT on the switch.
	local link ifname port bridge host_mtu ports=() lb_ports=()
	for link in "${TOPO_LINKS[@]}"; do
		read -r ns ifname port bridge <<<"$link"
		ports+=("$port")
		[ "${TOPO_ROLE[$ns]}" != balancer ] || lb_ports+=("$port")
	done
	[ ${#lb_ports[@]} -gt 0 ] || die "the topology has no balancer"
	{
		for link in "${TOPO_LINKS[@]}"; do
			read -r ns ifname port bridge <<<"$link"
			host_mtu=$mtu
			[ "${TOPO_ROLE[$ns]}" != client ] || host_mtu=$TOPO_MTU_CLIENT
			echo "link add $ifname netns $p-$ns mtu $host_mtu type veth peer name $port netns $sw mtu $mtu"
		done
	} | ip -batch -
	# No multicast snooping: the bridges flood IPv6 neighbour solicitations
	# (multicast) to every port, whatever MLD reports they saw or missed.
	{
		echo "link set dev lo up"
		for bridge in "${TOPO_BRIDGES[@]}"; do
			echo "link add $bridge type bridge stp_state 0 forward_delay 0 mcast_snooping 0"
		done
		for link in "${TOPO_LINKS[@]}"; do
			read -r ns ifname port bridge <<<"$link"
			echo "link set dev $port master $bridge"
		done
	} | ip -n "$sw" -batch -

	UP_STEP="turning checksum offload off"
	# Both ends of every veth: a forwarded frame may otherwise carry a partial
	# checksum that the next hop never completes. One shell per namespace.
	in_ns "$sw" sh -ec "for d in ${ports[*]}; do ethtool -K \$d rx off tx off >/dev/null; done"
	local -A host_ifs=()
	for link in "${TOPO_LINKS[@]}"; do
		read -r ns ifname port bridge <<<"$link"
		host_ifs[$ns]+=" $ifname"
	done
	for ns in "${TOPO_NS[@]}"; do
		in_ns "$p-$ns" sh -ec "for d in ${host_ifs[$ns]}; do ethtool -K \$d rx off tx off >/dev/null; done"
	done

	UP_STEP="attaching xdp_pass to the switch ports ${lb_ports[*]}"
	# veth delivers frames that a balancer XDP_TXes out of its eth0 only if
	# the peer (its port) runs an XDP program; xdp_pass just passes them on.
	for port in "${lb_ports[@]}"; do
		ip -n "$sw" link set dev "$port" xdpdrv obj "$XDP_PASS" sec xdp
	done

	UP_STEP="bringing the switch up"
	{
		for port in "${TOPO_BRIDGES[@]}" "${ports[@]}"; do echo "link set dev $port up"; done
	} | ip -n "$sw" -batch -
	# The switch only bridges: no rp_filter, no bridge netfilter. Its ports
	# carry no addresses: no IPv6 link-local ones either (nor their DAD and
	# router solicitations on the segments).
	in_ns "$sw" sh -c 'for f in /proc/sys/net/ipv4/conf/*/rp_filter; do echo 0 >"$f"; done
		for f in /proc/sys/net/ipv6/conf/*/disable_ipv6; do [ -e "$f" ] && echo 1 >"$f"; done
		for f in /proc/sys/net/bridge/bridge-nf-call-*; do [ -e "$f" ] && echo 0 >"$f"; done; true'

	UP_STEP="provisioning the hosts"
	# The topology's arguments, then the lab's: the default gateways, one per
	# family (a VM keeps Vagrant's), MTUs, where the lab's files go, the XDP
	# decapsulator, BIRD's files.
	local topo_args extra gw
	for ns in "${TOPO_NS[@]}"; do
		eval "topo_args=(\"\${TOPO_ARGS_${ns}[@]}\")" # ns: [a-z][a-z0-9]* (topology.jq checks)
		extra=()
		for gw in ${TOPO_GATEWAY[$ns]:-}; do extra+=(--gateway "$gw"); done
		case ${TOPO_ROLE[$ns]} in
		client) extra+=(--mtu "$TOPO_MTU_CLIENT") ;;
		balancer) extra+=(--mtu "$mtu" --root "$ROOT") ;;
		router) extra+=(--mtu "$mtu") ;;
		backend)
			extra+=(--mtu "$mtu" --runtime-dir "$rundir/${TOPO_NAME[$ns]}" --root "$ROOT")
			if [ "$decap" = 1 ]; then extra+=(--decap xdp); else extra+=(--no-decap); fi ;;
		esac
		# A BIRD of its own per namespace, beside the host's other lab files.
		if [ "$fleet" = 1 ] && [[ ${TOPO_ROLE[$ns]} == balancer || ${TOPO_ROLE[$ns]} == router ]]; then
			extra+=(--bird-dir "$rundir/${TOPO_NAME[$ns]}")
		fi
		provision "$ns" "${topo_args[@]}" "${extra[@]}"
	done
	wait_provision

	UP_DONE=1
	trap - EXIT INT TERM
	local ms=$(( (${EPOCHREALTIME/./} - ${started/./}) / 1000 ))
	printf 'lab.sh: lab %s up in %d ms (decap %s, fleet %s, VIPs %s)\n' "$p" "$ms" "$([ "$decap" = 1 ] && echo on || echo off)" \
		"$([ "$fleet" = 1 ] && echo on || echo off)" "$vips" >&2
}

cmd_list() {
	ip netns list 2>/dev/null | awk '{ print $1 }' | sed -n 's/^\([a-z][a-z0-9]*\)-sw$/\1/p' | sort -u
}

case ${1:-} in
up) shift; cmd_up "$@" ;;
down) shift; cmd_down "$@" ;;
list) cmd_list ;;
-h | --help | help) usage ;;
*) usage >&2; exit 2 ;;
esac
