#!/usr/bin/env bash
# A network-namespace lab with the topology of the Vagrant VMs, configured by
# the same per-role scripts (vagrant/provision/*.sh).
#
#   lab.sh up PREFIX [--no-decap] [--vips A,B,C] [--mtu N] [--owner PID]
#   lab.sh down PREFIX
#   lab.sh list
#
#   PREFIX-sw      bridges br0 (front, 10.10.0.0/24) and br1 (remote, 10.20.0.0/24)
#   PREFIX-client  eth0 10.10.0.10   VIPs (10.100.0.0/24) via 10.10.0.2, default via .1
#   PREFIX-lb      eth0 10.10.0.2    10.20.0.0/24 via 10.10.0.1 (the balancer)
#   PREFIX-router  eth0 10.10.0.1, eth1 10.20.0.1, forwarding
#   PREFIX-be1..3  eth0 10.10.0.11-13  default via 10.10.0.1, nginx, VIPs on lo
#   PREFIX-be4..5  eth0 10.20.0.14-15  default via 10.20.0.1, nginx, VIPs on lo
#
# up        creates the namespaces, bridges and veth pairs (checksum offload
#           off on both ends, xdp_pass on the switch port `lb` so that frames
#           the balancer XDP_TXes reach the bridge), then provisions every host.
#           Fails if a lab with PREFIX exists; on any failure it tears down
#           what it created and exits non-zero.
# --no-decap  do not run `lbctl decap attach` on the backends
# --vips    VIPs the backends hold on lo (default 10.100.0.100,10.100.0.101,10.100.0.102)
# --mtu N   MTU of every lab interface except the client's (default 1600), so
#           that a full 1500-byte client packet still fits once the balancer
#           encapsulates it in IP-in-IP (+20 bytes); the client keeps 1500.
# --owner PID  record the process that owns the lab (test/lab/lab.ts reaps
#           labs whose owner died)
# down      kills every process in the lab's namespaces (nginx first, through
#           its pid files), deletes the namespaces and the runtime directory
#           /run/lbctl-lab/PREFIX. Safe after a failed up and when repeated.
# list      prints the prefixes of the labs that exist.
#
# PREFIX: a lower-case letter then up to 11 letters or digits.
# Needs root, `make` (build/bpf/xdp_pass.bpf.o), nginx, ethtool, nsenter, flock.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PROVISION=$ROOT/vagrant/provision
RUN_BASE=/run/lbctl-lab
XDP_PASS=$ROOT/build/bpf/xdp_pass.bpf.o
DEFAULT_VIPS=10.100.0.100,10.100.0.101,10.100.0.102

# Host roles of the topology: namespace suffix, switch port, bridge, address.
BACKENDS=(be1 be2 be3 be4 be5)
declare -A BE_ADDR=([be1]=10.10.0.11 [be2]=10.10.0.12 [be3]=10.10.0.13 [be4]=10.20.0.14 [be5]=10.20.0.15)
declare -A BE_BRIDGE=([be1]=br0 [be2]=br0 [be3]=br0 [be4]=br1 [be5]=br1)
declare -A BE_GW=([be1]=10.10.0.1 [be2]=10.10.0.1 [be3]=10.10.0.1 [be4]=10.20.0.1 [be5]=10.20.0.1)
ROLES=(sw client lb router "${BACKENDS[@]}")

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

# provision ROLE LOG SCRIPT ARGS...: runs a role script in the role's namespace
# (in the background; see wait_provision).
PROV_PIDS=() PROV_NAMES=()
provision() {
	local role=$1 script=$2
	shift 2
	in_ns "$UP_PREFIX-$role" "$PROVISION/$script" "$@" >"$RUN_BASE/$UP_PREFIX/provision-$role.log" 2>&1 &
	PROV_PIDS+=($!)
	PROV_NAMES+=("$role")
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
	local p="" decap=1 vips=$DEFAULT_VIPS mtu=1600 owner=""
	while [ $# -gt 0 ]; do
		case $1 in
		--no-decap) decap=0; shift ;;
		--decap) decap=1; shift ;;
		--vips) [ $# -ge 2 ] || die "--vips needs a value"; vips=$2; shift 2 ;;
		--mtu) [ $# -ge 2 ] && [[ $2 =~ ^[0-9]+$ ]] || die "--mtu needs a number"; mtu=$2; shift 2 ;;
		--owner) [ $# -ge 2 ] && [[ $2 =~ ^[0-9]+$ ]] || die "--owner needs a PID"; owner=$2; shift 2 ;;
		-*) die "unknown option $1 (lab.sh up PREFIX [--no-decap] [--vips A,B,C] [--mtu N] [--owner PID])" ;;
		*) [ -z "$p" ] || die "unexpected argument $1"; p=$1; shift ;;
		esac
	done
	check_prefix "$p"
	[[ $vips =~ ^[0-9.]+(,[0-9.]+)*$ ]] || die "--vips: expected comma-separated IPv4 addresses, got \"$vips\""
	[ "$(id -u)" = 0 ] || die "run as root"
	local tool
	for tool in ip nsenter ethtool nginx flock; do
		command -v "$tool" >/dev/null 2>&1 || die "$tool is missing (scripts/install-deps.sh installs it)"
	done
	[ -f "$XDP_PASS" ] || die "$XDP_PASS is missing: run make first"
	if [ "$decap" = 1 ] && [ ! -x "$ROOT/bin/lbctl" ]; then
		die "$ROOT/bin/lbctl is missing (needed to attach the decapsulator; pass --no-decap to skip it)"
	fi

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
	local role be sw=$p-sw
	for role in "${ROLES[@]}"; do
		ip netns add "$p-$role"
	done

	UP_STEP="creating bridges and veth pairs"
	{
		# Switch-side port named after the host, host side eth0 (router: eth0/eth1).
		echo "link add eth0 netns $p-client mtu 1500 type veth peer name client netns $sw mtu $mtu"
		echo "link add eth0 netns $p-lb mtu $mtu type veth peer name lb netns $sw mtu $mtu"
		echo "link add eth0 netns $p-router mtu $mtu type veth peer name router0 netns $sw mtu $mtu"
		echo "link add eth1 netns $p-router mtu $mtu type veth peer name router1 netns $sw mtu $mtu"
		for be in "${BACKENDS[@]}"; do
			echo "link add eth0 netns $p-$be mtu $mtu type veth peer name $be netns $sw mtu $mtu"
		done
	} | ip -batch -
	{
		echo "link set dev lo up"
		echo "link add br0 type bridge stp_state 0 forward_delay 0"
		echo "link add br1 type bridge stp_state 0 forward_delay 0"
		for role in client lb router0; do echo "link set dev $role master br0"; done
		echo "link set dev router1 master br1"
		for be in "${BACKENDS[@]}"; do echo "link set dev $be master ${BE_BRIDGE[$be]}"; done
	} | ip -n "$sw" -batch -

	UP_STEP="turning checksum offload off"
	# Both ends of every veth: a forwarded frame may otherwise carry a partial
	# checksum that the next hop never completes. One shell per namespace.
	local ports="client lb router0 router1 ${BACKENDS[*]}"
	in_ns "$sw" sh -ec "for d in $ports; do ethtool -K \$d rx off tx off >/dev/null; done"
	in_ns "$p-router" sh -ec 'for d in eth0 eth1; do ethtool -K $d rx off tx off >/dev/null; done'
	for role in client lb "${BACKENDS[@]}"; do
		in_ns "$p-$role" ethtool -K eth0 rx off tx off >/dev/null
	done

	UP_STEP="attaching xdp_pass to the switch port lb"
	# veth delivers frames that the balancer XDP_TXes out of its eth0 only if
	# the peer (this port) runs an XDP program; xdp_pass just passes them on.
	ip -n "$sw" link set dev lb xdpdrv obj "$XDP_PASS" sec xdp

	UP_STEP="bringing the switch up"
	{
		for role in br0 br1 $ports; do echo "link set dev $role up"; done
	} | ip -n "$sw" -batch -
	# The switch only bridges: no rp_filter, no bridge netfilter.
	in_ns "$sw" sh -c 'for f in /proc/sys/net/ipv4/conf/*/rp_filter; do echo 0 >"$f"; done
		for f in /proc/sys/net/bridge/bridge-nf-call-*; do [ -e "$f" ] && echo 0 >"$f"; done; true'

	UP_STEP="provisioning the hosts"
	local client_routes=(--route 10.100.0.0/24=10.10.0.2) vip
	for vip in ${vips//,/ }; do
		case $vip in 10.100.0.*) ;; *) client_routes+=(--route "$vip/32=10.10.0.2") ;; esac
	done
	provision client client.sh --interface eth0 --address 10.10.0.10/24 --mtu 1500 \
		"${client_routes[@]}" --gateway 10.10.0.1
	provision lb balancer.sh --interface eth0 --address 10.10.0.2/24 --mtu "$mtu" \
		--route 10.20.0.0/24=10.10.0.1 --root "$ROOT"
	provision router router.sh --mtu "$mtu" --interface eth0 --address 10.10.0.1/24 \
		--interface eth1 --address 10.20.0.1/24
	local decap_flag=--no-decap
	[ "$decap" = 0 ] || decap_flag=--decap
	for be in "${BACKENDS[@]}"; do
		provision "$be" backend.sh --name "$be" --interface eth0 --address "${BE_ADDR[$be]}/24" \
			--mtu "$mtu" --gateway "${BE_GW[$be]}" --vips "$vips" --runtime-dir "$rundir/$be" \
			--root "$ROOT" "$decap_flag"
	done
	wait_provision

	UP_DONE=1
	trap - EXIT INT TERM
	local ms=$(( (${EPOCHREALTIME/./} - ${started/./}) / 1000 ))
	printf 'lab.sh: lab %s up in %d ms (decap %s, VIPs %s)\n' "$p" "$ms" "$([ "$decap" = 1 ] && echo on || echo off)" "$vips" >&2
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
