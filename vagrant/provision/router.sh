#!/usr/bin/env bash
# Provisions the router between the front and the remote segment: addresses
# (one per family) on each interface, IPv4 and IPv6 forwarding on.
#
#   router.sh --interface eth0 --address 10.10.0.1/24 [--address fd00:10::1/64] \
#             --interface eth1 --address 10.20.0.1/24 [--address fd00:20::1/64] \
#             [--route PREFIX=GW]... [--install]
#
# Each --address applies to the --interface before it (at most one per
# family); --mtu N applies to all. --interface auto: the interface that
# already holds an --address after it (a Vagrant VM).
# --install (Vagrant only) installs iproute2, ethtool and tcpdump.
# shellcheck source=vagrant/provision/common.sh
. "$(dirname "$0")/common.sh"


mtu="" ifaces=() addrs=() routes=() install=0
while [ $# -gt 0 ]; do
	case $1 in
	--interface) need_value "$@"; check_ifname "$1" "$2"; ifaces+=("$2"); addrs+=(""); shift 2 ;;
	--address)
		need_value "$@"; check_ip_cidr "$1" "$2"
		[ ${#ifaces[@]} -gt 0 ] || die "--address $2 comes before any --interface"
		# shellcheck disable=SC2086 # the interface's addresses, space-separated
		check_family_once "$1" "$2" ${addrs[${#addrs[@]} - 1]}
		addrs[${#addrs[@]} - 1]+="${addrs[${#addrs[@]} - 1]:+ }$2"; shift 2 ;;
	--mtu) need_value "$@"; check_mtu "$1" "$2"; mtu=$2; shift 2 ;;
	--route) need_value "$@"; check_route "$1" "$2"; routes+=("$2"); shift 2 ;;
	--install) install=1; shift ;;
	-h | --help) usage; exit 0 ;;
	*) die "unknown argument: $1 (see --help)" ;;
	esac
done
[ ${#ifaces[@]} -ge 2 ] || die "a router needs at least two --interface/--address pairs"

if [ "$install" = 1 ]; then
	require_vm
	apt_install iproute2 ethtool tcpdump
fi

ip link set dev lo up
for i in "${!ifaces[@]}"; do
	[ -n "${addrs[$i]}" ] || die "--interface ${ifaces[$i]} has no --address"
	read -r -a here <<<"${addrs[$i]}"
	ifaces[i]=$(resolve_interface "${ifaces[$i]}" "${here[@]}")
	require_link "${ifaces[$i]}"
	link_up "${ifaces[$i]}" "$mtu"
	for address in "${here[@]}"; do address_set "${ifaces[$i]}" "$address"; done
done
routes_set "${routes[@]}"
sysctl_set net.ipv4.ip_forward 1
# IPv6: forwarding on every interface (all.forwarding sets each one's).
[ ! -e /proc/sys/net/ipv6 ] || sysctl_set net.ipv6.conf.all.forwarding 1
# Direct server return: replies leave the remote backends from VIP addresses
# that no interface here routes back to, so strict reverse-path checks drop them.
ipv4_conf_all rp_filter 0
provisioned "forwarding between ${ifaces[*]}"
