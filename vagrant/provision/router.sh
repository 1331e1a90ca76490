#!/usr/bin/env bash
# Provisions the router between the front and the remote segment: addresses
# (one per family) on each interface, IPv4 and IPv6 forwarding on.
#
#   router.sh --interface eth0 --address 10.10.0.1/24 [--address fd00:10::1/64] \
#             --interface eth1 --address 10.20.0.1/24 [--address fd00:20::1/64] \
#             [--route PREFIX=GW]... [--install]
#             [--bgp-as N --bgp-nodes PREFIX --bgp-nodes PREFIX6 --bgp-peer-as N [--bird-dir DIR]]
#
# Each --address applies to the --interface before it (at most one per
# family); --mtu N applies to all. --interface auto: the interface that
# already holds an --address after it (a Vagrant VM).
# Multipath routes spread flows by addresses and ports (both families'
# fib_multipath_hash_policy=1), so that an ECMP route to a fleet of lbctl
# nodes gives each node its share of one client's connections.
# --bgp-as N    run BIRD (packaging/bird/router.conf.in) in AS N: accept BGP
#               sessions from the lbctl nodes and install each VIP they
#               announce as one route with every announcing node as next hop
# --bgp-nodes P the subnet the nodes peer from, one per family
# --bgp-peer-as N  the nodes' AS
# --bird-dir DIR  BIRD's configuration, control socket and pid file, for one
#               BIRD per network namespace (the lab); default: /etc/bird and
#               the bird.service of a VM
# --install (Vagrant only) installs iproute2, ethtool, tcpdump and bird2.
# shellcheck source=vagrant/provision/common.sh
. "$(dirname "$0")/common.sh"


mtu="" ifaces=() addrs=() routes=() install=0 bgp_as="" bgp_nodes=() bgp_peer_as="" bird_dir=""
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
	--bgp-as) need_value "$@"; check_asn "$1" "$2"; bgp_as=$2; shift 2 ;;
	--bgp-nodes) need_value "$@"; check_ip_cidr "$1" "$2"; check_family_once "$1" "$2" "${bgp_nodes[@]}"; bgp_nodes+=("$2"); shift 2 ;;
	--bgp-peer-as) need_value "$@"; check_asn "$1" "$2"; bgp_peer_as=$2; shift 2 ;;
	--bird-dir) need_value "$@"; bird_dir=$2; shift 2 ;;
	-h | --help) usage; exit 0 ;;
	*) die "unknown argument: $1 (see --help)" ;;
	esac
done
[ ${#ifaces[@]} -ge 2 ] || die "a router needs at least two --interface/--address pairs"
if [ -n "$bgp_as" ] || [ ${#bgp_nodes[@]} -gt 0 ] || [ -n "$bgp_peer_as" ]; then
	[ -n "$bgp_as" ] && [ ${#bgp_nodes[@]} -eq 2 ] && [ -n "$bgp_peer_as" ] ||
		die "BGP needs --bgp-as, --bgp-peer-as and one --bgp-nodes per family (the configuration peers in both)"
	# shellcheck disable=SC2086 # every interface's addresses
	router_id=$(first_of_family 4 ${addrs[*]}) || die "BGP needs an IPv4 --address (BIRD's router id)"
fi

if [ "$install" = 1 ]; then
	require_vm
	apt_install iproute2 ethtool tcpdump bird2
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
sysctl_set net.ipv4.fib_multipath_hash_policy 1
# IPv6: forwarding on every interface (all.forwarding sets each one's).
if [ -e /proc/sys/net/ipv6 ]; then
	sysctl_set net.ipv6.conf.all.forwarding 1
	sysctl_set net.ipv6.fib_multipath_hash_policy 1
fi
# Direct server return: replies leave the remote backends from VIP addresses
# that no interface here routes back to, so strict reverse-path checks drop them.
ipv4_conf_all rp_filter 0
bird=""
if [ -n "$bgp_as" ]; then
	config=$(bird_config router ROUTER_ID="${router_id%/*}" LOCAL_AS="$bgp_as" PEER_AS="$bgp_peer_as" \
		NODES4="$(first_of_family 4 "${bgp_nodes[@]}")" NODES6="$(first_of_family 6 "${bgp_nodes[@]}")")
	bird=", $(bird_run "$config" "$bird_dir")"
fi
provisioned "forwarding between ${ifaces[*]}$bird"
