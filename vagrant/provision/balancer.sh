#!/usr/bin/env bash
# Provisions the balancer host: its address(es), routes to the backends, the
# kernel settings a direct-server-return balancer wants, and (--start) lbctl
# itself. The lab never passes --start (tests and the demo start lbctl); a
# Vagrant VM does, and runs it as a systemd service.
#
#   balancer.sh --interface eth0 --address 10.10.0.2/24 [--address fd00:10::2/64] \
#               --route 10.20.0.0/24=10.10.0.1 [--route fd00:20::/64=fd00:10::1]
#               [--ip-forward] [--mtu N]
#               [--root DIR] [--install]
#               [--start [--xdp-mode native|generic|auto] [--lbctl PATH]
#                        [--socket PATH] [--state-dir DIR]]
#               [--bgp-as N --bgp-peer ADDR --bgp-peer ADDR6 --bgp-peer-as N
#                [--announce-table N] [--announce-proto N] [--bird-dir DIR]]
#
# --address     one per family (IPv4, IPv6); lbctl takes each family's as the
#               default tunnel source of ipip backends of that family
# --interface auto  the interface that already holds an --address (a Vagrant VM)
# --route PREFIX=GATEWAY may repeat, either family; --gateway G (one per
#               family) is --route default=G.
# --ip-forward  turn IPv4 and IPv6 forwarding on (default off: packets for a
#               VIP that the XDP program passes up are dropped, not routed)
# --root DIR    the lbctl project (default: two levels above this script)
# --install     (Vagrant only) install the toolchain, build lbctl in --root
#               and install it (make install: /usr/local/bin/lbctl)
# --start       start lbctl on the interface unless it runs already (`lbctl
#               status` answers): as the systemd service lbctl.service when
#               this is a VM with systemd (enabled: it comes back after a
#               reboot, with the VIPs kept in /var/lib/lbctl), else with
#               `lbctl start` (a background daemon)
# --xdp-mode M  for --start: native, generic, or auto (default): native if the
#               NIC's driver takes an XDP program (tried with xdp_pass first),
#               else generic
# --lbctl PATH  the lbctl command (default /usr/local/bin/lbctl with
#               --install, else ROOT/bin/lbctl)
# --socket PATH, --state-dir DIR   passed to `lbctl start` (default: lbctl's)
# --bgp-as N    this node is part of a fleet (docs/fleet.md): run BIRD with
#               packaging/bird/node.conf.in, which announces from AS N to the
#               router over BGP every VIP that lbctl announces here; with
#               --start, lbctl announces (lbctl start --announce-table N
#               --announce-proto N)
# --bgp-peer A  the router: one address of each family
# --bgp-peer-as N  the router's AS
# --announce-table N, --announce-proto N  where lbctl announces VIPs: the
#               kernel routing table and route protocol number BIRD learns
#               (default 100 and 201, lbctl's defaults)
# --bird-dir DIR  BIRD's configuration, control socket and pid file, for one
#               BIRD per network namespace (the lab); default: /etc/bird and
#               the bird.service of a VM
# shellcheck source=vagrant/provision/common.sh
. "$(dirname "$0")/common.sh"


mtu="" iface=eth0 addresses=() gateways=() routes=() forward=0 root=$PROJECT_ROOT install=0
start=0 xdp_mode=auto lbctl="" socket="" state_dir=""
bgp_as="" bgp_peers=() bgp_peer_as="" announce_table=100 announce_proto=201 bird_dir=""
while [ $# -gt 0 ]; do
	case $1 in
	--interface) need_value "$@"; check_ifname "$1" "$2"; iface=$2; shift 2 ;;
	--address) need_value "$@"; check_ip_cidr "$1" "$2"; check_family_once "$1" "$2" "${addresses[@]}"; addresses+=("$2"); shift 2 ;;
	--mtu) need_value "$@"; check_mtu "$1" "$2"; mtu=$2; shift 2 ;;
	--route) need_value "$@"; check_route "$1" "$2"; routes+=("$2"); shift 2 ;;
	--gateway) need_value "$@"; check_ip "$1" "$2"; check_family_once "$1" "$2" "${gateways[@]}"; gateways+=("$2"); routes+=("default=$2"); shift 2 ;;
	--ip-forward) forward=1; shift ;;
	--root) need_value "$@"; root=$2; shift 2 ;;
	--install) install=1; shift ;;
	--start) start=1; shift ;;
	--xdp-mode)
		need_value "$@"
		case $2 in native | generic | auto) xdp_mode=$2 ;; *) die "--xdp-mode: \"$2\" is not native, generic or auto" ;; esac
		shift 2 ;;
	--lbctl) need_value "$@"; lbctl=$2; shift 2 ;;
	--socket) need_value "$@"; socket=$2; shift 2 ;;
	--state-dir) need_value "$@"; state_dir=$2; shift 2 ;;
	--bgp-as) need_value "$@"; check_asn "$1" "$2"; bgp_as=$2; shift 2 ;;
	--bgp-peer) need_value "$@"; check_ip "$1" "$2"; check_family_once "$1" "$2" "${bgp_peers[@]}"; bgp_peers+=("$2"); shift 2 ;;
	--bgp-peer-as) need_value "$@"; check_asn "$1" "$2"; bgp_peer_as=$2; shift 2 ;;
	--announce-table)
		need_value "$@"; check_number "$1" "$2" 1 4294967295
		case $2 in 253 | 254 | 255) die "$1: table $2 is the kernel's (default, main, local)" ;; esac
		announce_table=$2; shift 2 ;;
	--announce-proto) need_value "$@"; check_number "$1" "$2" 1 255; announce_proto=$2; shift 2 ;;
	--bird-dir) need_value "$@"; bird_dir=$2; shift 2 ;;
	-h | --help) usage; exit 0 ;;
	*) die "unknown argument: $1 (see --help)" ;;
	esac
done
[ ${#addresses[@]} -gt 0 ] || die "--address is required"
if [ -n "$bgp_as" ] || [ ${#bgp_peers[@]} -gt 0 ] || [ -n "$bgp_peer_as" ]; then
	[ -n "$bgp_as" ] && [ ${#bgp_peers[@]} -eq 2 ] && [ -n "$bgp_peer_as" ] ||
		die "BGP needs --bgp-as, --bgp-peer-as and one --bgp-peer per family (the configuration announces both)"
	router_id=$(first_of_family 4 "${addresses[@]}") || die "BGP needs an IPv4 --address (BIRD's router id)"
fi
if [ -z "$lbctl" ]; then
	if [ "$install" = 1 ]; then lbctl=/usr/local/bin/lbctl; else lbctl=$root/bin/lbctl; fi
fi

if [ "$install" = 1 ]; then
	require_vm
	build_project "$root"
fi

iface=$(resolve_interface "$iface" "${addresses[@]}")
require_link "$iface"
ip link set dev lo up
link_up "$iface" "$mtu"
for address in "${addresses[@]}"; do address_set "$iface" "$address"; done
routes_set "${routes[@]}"
sysctl_set net.ipv4.ip_forward "$forward"
[ ! -e /proc/sys/net/ipv6 ] || sysctl_set net.ipv6.conf.all.forwarding "$forward"
# The XDP program transmits frames back out of the interface they arrived on;
# if the kernel ever forwards such a packet it must not answer with ICMP
# redirects (all/default/each interface: the effective value is an OR).
ipv4_conf_all send_redirects 0
ipv4_conf_all rp_filter 0

# ------------------------------------------------------------------ lbctl

lbctl_flags=()
[ -z "$socket" ] || lbctl_flags+=(--socket "$socket")
# A fleet's node announces its VIPs where its BIRD learns them.
announce_flags=()
[ -z "$bgp_as" ] || announce_flags=(--announce-table "$announce_table" --announce-proto "$announce_proto")

lbctl_running() { "$lbctl" status "${lbctl_flags[@]}" >/dev/null 2>&1; }

# native_xdp_works: the interface's driver accepts a native XDP program
# (virtio-net and veth do; e1000, VirtualBox's default NIC, does not).
native_xdp_works() {
	local obj=$root/build/bpf/xdp_pass.bpf.o
	[ -f "$obj" ] || obj=/usr/local/lib/lbctl/build/bpf/xdp_pass.bpf.o
	[ -f "$obj" ] || die "--xdp-mode auto: no xdp_pass.bpf.o to probe the driver with (run make)"
	# In a mount namespace of its own with a bpffs of its own: iproute2's
	# loader leaves tc/globals directories in whatever bpffs it finds.
	unshare --mount sh -c 'mount -t bpf bpf /sys/fs/bpf && ip link set dev "$1" xdpdrv obj "$2" sec xdp' sh "$iface" "$obj" 2>/dev/null || return 1
	ip link set dev "$iface" xdpdrv off
}

# start_service MODE: the unit `make install` put in /usr/local/lib/systemd/system
# (Type=notify: `systemctl restart` returns once lbctl answers). VIPs and
# backends go in /etc/lbctl/lbctl.yaml (created empty, never overwritten) or
# come at runtime from the CLI; the interface and flags go in /etc/default/lbctl.
start_service() {
	local config=/etc/lbctl/lbctl.yaml env=/etc/default/lbctl i
	local args=(--interface "$iface" --xdp-mode "$1" "${lbctl_flags[@]}" "${announce_flags[@]}")
	[ -z "$state_dir" ] || args+=(--state-dir "$state_dir")
	systemctl cat lbctl.service >/dev/null 2>&1 || die "no lbctl.service: install lbctl with make install (--install)"
	mkdir -p /etc/lbctl
	[ -e "$config" ] || printf '# VIPs and backends: see lbctl.example.yaml beside this file.\n# The interface and start flags are in %s.\n' "$env" >"$config"
	printf '# Written by vagrant/provision/balancer.sh: extra lbctl start flags.\nLBCTL_ARGS="%s"\n' "${args[*]}" >"$env.new"
	mv "$env.new" "$env"
	systemctl enable lbctl.service >/dev/null 2>&1
	systemctl restart lbctl.service
	for i in $(seq 120); do
		lbctl_running && return 0
		sleep 0.25
	done
	journalctl -u lbctl.service -n 20 --no-pager >&2 || true
	die "lbctl.service did not answer within 30 s (journalctl -u lbctl)"
}

started=""
if [ "$start" = 1 ]; then
	[ -x "$lbctl" ] || die "--start: $lbctl is not an executable (build lbctl, or pass --lbctl)"
	if lbctl_running; then
		started=", lbctl runs already"
	else
		mode=$xdp_mode
		if [ "$mode" = auto ]; then
			if native_xdp_works; then mode=native; else
				mode=generic
				log "warning: the driver of $iface has no native XDP; lbctl runs in generic (skb) mode, much slower"
			fi
		fi
		if use_systemd; then
			start_service "$mode"
			started=", lbctl.service started ($mode XDP)"
		else
			start_flags=(--interface "$iface" --xdp-mode "$mode" "${lbctl_flags[@]}" "${announce_flags[@]}")
			[ -z "$state_dir" ] || start_flags+=(--state-dir "$state_dir")
			"$lbctl" start "${start_flags[@]}" >&2 || die "lbctl start ${start_flags[*]} failed"
			started=", lbctl started ($mode XDP)"
		fi
	fi
fi
# ------------------------------------------------------------------ BIRD

bird=""
if [ -n "$bgp_as" ]; then
	config=$(bird_config node ROUTER_ID="${router_id%/*}" LOCAL_AS="$bgp_as" PEER_AS="$bgp_peer_as" \
		PEER4="$(first_of_family 4 "${bgp_peers[@]}")" PEER6="$(first_of_family 6 "${bgp_peers[@]}")" \
		TABLE="$announce_table" PROTO="$announce_proto")
	bird=", $(bird_run "$config" "$bird_dir")"
fi
provisioned "configured $iface ${addresses[*]}${mtu:+ mtu $mtu}, routes ${routes[*]:-none}$started$bird"
