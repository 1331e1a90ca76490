#!/usr/bin/env bash
# Provisions the client host: one address, the route to the VIPs through the
# balancer, the default route through the router.
#
#   client.sh --interface eth0 --address 10.10.0.10/24 \
#             --route 10.100.0.0/24=10.10.0.2 --route 10.20.0.0/24=10.10.0.1 \
#             [--gateway 10.10.0.1] [--mtu N] [--install]
#
# --interface auto  the interface that already holds --address (a Vagrant VM)
# --route PREFIX=GATEWAY may repeat; --gateway G is --route default=G.
# --install (Vagrant only) installs the client tools (curl, wrk, ab).
# shellcheck source=vagrant/provision/common.sh
. "$(dirname "$0")/common.sh"


mtu="" iface=eth0 address="" install=0 routes=()
while [ $# -gt 0 ]; do
	case $1 in
	--interface) need_value "$@"; check_ifname "$1" "$2"; iface=$2; shift 2 ;;
	--address) need_value "$@"; check_ipv4_cidr "$1" "$2"; address=$2; shift 2 ;;
	--mtu) need_value "$@"; check_mtu "$1" "$2"; mtu=$2; shift 2 ;;
	--route) need_value "$@"; check_route "$1" "$2"; routes+=("$2"); shift 2 ;;
	--gateway) need_value "$@"; check_ipv4 "$1" "$2"; routes+=("default=$2"); shift 2 ;;
	--install) install=1; shift ;;
	-h | --help) usage; exit 0 ;;
	*) die "unknown argument: $1 (see --help)" ;;
	esac
done
[ -n "$address" ] || die "--address is required"

if [ "$install" = 1 ]; then
	require_vm
	apt_install iproute2 ethtool curl wrk apache2-utils tcpdump
fi

iface=$(resolve_interface "$iface" "$address")
require_link "$iface"
ip link set dev lo up
link_up "$iface" "$mtu"
address_set "$iface" "$address"
routes_set "${routes[@]}"
# Replies from backends come straight from the VIPs (direct server return),
# not from the address the request went to: no reverse-path filtering.
ipv4_conf_all rp_filter 0
provisioned "configured $iface $address${mtu:+ mtu $mtu}, routes ${routes[*]:-none}"
