#!/usr/bin/env bash
# Provisions the balancer host: its address, routes to the backends, and the
# kernel settings a direct-server-return balancer wants. It does not start
# lbctl (tests and the demo start it; a VM runs it as a service).
#
#   balancer.sh --interface eth0 --address 10.10.0.2/24 \
#               --route 10.20.0.0/24=10.10.0.1 [--ip-forward] [--mtu N]
#               [--root DIR] [--install]
#
# --ip-forward  turn IPv4 forwarding on (default off: packets for a VIP that
#               the XDP program passes up are dropped, not routed)
# --root DIR    the lbctl project (default: two levels above this script)
# --install     (Vagrant only) install the toolchain and build lbctl in --root
# shellcheck source=vagrant/provision/common.sh
. "$(dirname "$0")/common.sh"


mtu="" iface=eth0 address="" routes=() forward=0 root=$PROJECT_ROOT install=0
while [ $# -gt 0 ]; do
	case $1 in
	--interface) need_value "$@"; check_ifname "$1" "$2"; iface=$2; shift 2 ;;
	--address) need_value "$@"; check_ipv4_cidr "$1" "$2"; address=$2; shift 2 ;;
	--mtu) need_value "$@"; check_mtu "$1" "$2"; mtu=$2; shift 2 ;;
	--route) need_value "$@"; check_route "$1" "$2"; routes+=("$2"); shift 2 ;;
	--gateway) need_value "$@"; check_ipv4 "$1" "$2"; routes+=("default=$2"); shift 2 ;;
	--ip-forward) forward=1; shift ;;
	--root) need_value "$@"; root=$2; shift 2 ;;
	--install) install=1; shift ;;
	-h | --help) usage; exit 0 ;;
	*) die "unknown argument: $1 (see --help)" ;;
	esac
done
[ -n "$address" ] || die "--address is required"

if [ "$install" = 1 ]; then
	require_vm
	build_project "$root"
fi

require_link "$iface"
ip link set dev lo up
link_up "$iface" "$mtu"
address_set "$iface" "$address"
routes_set "${routes[@]}"
sysctl_set net.ipv4.ip_forward "$forward"
# The XDP program transmits frames back out of the interface they arrived on;
# if the kernel ever forwards such a packet it must not answer with ICMP
# redirects (all/default/each interface: the effective value is an OR).
ipv4_conf_all send_redirects 0
ipv4_conf_all rp_filter 0
log "configured $iface $address"
