#!/usr/bin/env bash
# Provisions the client host: its address(es), the routes to the VIPs through
# the balancer, the default routes through the router.
#
#   client.sh --interface eth0 --address 10.10.0.10/24 [--address fd00:10::10/64] \
#             --route 10.100.0.0/24=10.10.0.2 --route 10.20.0.0/24=10.10.0.1 \
#             [--route fd00:100::/64=fd00:10::2 ...] \
#             [--gateway 10.10.0.1] [--gateway fd00:10::1] [--mtu N] [--install]
#
# --address         one per family (IPv4, IPv6)
# --interface auto  the interface that already holds an --address (a Vagrant VM)
# --route PREFIX=GATEWAY may repeat, either family; --gateway G (one per
#                   family) is --route default=G.
# --install (Vagrant only) installs the client tools (curl, wrk, ab).
# shellcheck source=vagrant/provision/common.sh
. "$(dirname "$0")/common.sh"


mtu="" iface=eth0 addresses=() gateways=() install=0 routes=()
while [ $# -gt 0 ]; do
	case $1 in
	--interface) need_value "$@"; check_ifname "$1" "$2"; iface=$2; shift 2 ;;
	--address) need_value "$@"; check_ip_cidr "$1" "$2"; check_family_once "$1" "$2" "${addresses[@]}"; addresses+=("$2"); shift 2 ;;
	--mtu) need_value "$@"; check_mtu "$1" "$2"; mtu=$2; shift 2 ;;
	--route) need_value "$@"; check_route "$1" "$2"; routes+=("$2"); shift 2 ;;
	--gateway) need_value "$@"; check_ip "$1" "$2"; check_family_once "$1" "$2" "${gateways[@]}"; gateways+=("$2"); routes+=("default=$2"); shift 2 ;;
	--install) install=1; shift ;;
	-h | --help) usage; exit 0 ;;
	*) die "unknown argument: $1 (see --help)" ;;
	esac
done
[ ${#addresses[@]} -gt 0 ] || die "--address is required"

if [ "$install" = 1 ]; then
	require_vm
	apt_install iproute2 ethtool curl wrk apache2-utils tcpdump
fi

iface=$(resolve_interface "$iface" "${addresses[@]}")
require_link "$iface"
ip link set dev lo up
link_up "$iface" "$mtu"
for address in "${addresses[@]}"; do address_set "$iface" "$address"; done
routes_set "${routes[@]}"
# Replies from backends come straight from the VIPs (direct server return),
# not from the address the request went to: no reverse-path filtering.
ipv4_conf_all rp_filter 0
# A connection keeps its hash: TCP otherwise re-randomises it after a
# retransmission timeout, and a router in the same host (the lab) spreads
# ECMP paths by that hash, so the connection would move to another node.
[ ! -e /proc/sys/net/core/txrehash ] || sysctl_set net.core.txrehash 0
provisioned "configured $iface ${addresses[*]}${mtu:+ mtu $mtu}, routes ${routes[*]:-none}"
