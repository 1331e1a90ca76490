#!/usr/bin/env bash
# Provisions a backend (real server) for direct server return: its addresses
# and routes, the VIPs on lo with ARP hidden, optionally IP-in-IP
# decapsulation, and an nginx that names the backend in every response.
#
#   backend.sh --name be1 --interface eth0 --address 10.10.0.11/24 [--address fd00:10::11/64] \
#              --route 10.20.0.0/24=10.10.0.1 [--route fd00:20::/64=fd00:10::1] \
#              [--gateway 10.10.0.1] [--gateway fd00:10::1] \
#              --vips 10.100.0.100,10.100.0.101,fd00:100::100 --runtime-dir /run/lbctl-backend/be1 \
#              [--port 80] [--mtu N] [--decap xdp|kernel|auto|none] [--root DIR]
#              [--lbctl PATH] [--install]
#
# --address          one per family (IPv4, IPv6)
# --interface auto   the interface that already holds an --address (a Vagrant VM)
# --route PREFIX=GATEWAY may repeat, either family; --gateway G (one per
#                    family) is --route default=G.
# --vips LIST        comma-separated VIP addresses of either family, added to lo
#                    as /32 (IPv4) or /128 (IPv6)
# --runtime-dir DIR  nginx prefix: nginx.conf, nginx.pid, logs/, temp/
#                    (default /run/lbctl-backend/NAME); a previous nginx of the
#                    same DIR is stopped first
# --decap MODE       unwrap IP-in-IP from the balancer (ipip backends):
#                    xdp     `lbctl decap attach --interface IFACE` (lbctl's XDP
#                            decapsulator, for both outer families: 4in4, 6in6,
#                            4in6, 6in4; needs the project built)
#                    kernel  the kernel's drivers: ipip (tunl0) for IPv4 outer
#                            headers; when the backend holds IPv6 VIPs, sit
#                            (sit0: 6in4); when it has an IPv6 --address,
#                            ip6_tunnel (ip6tnl0 in mode any: 6in6 and 4in6)
#                    auto    kernel where the drivers exist (Debian's kernels),
#                            else xdp
#                    none    (default; also --no-decap) l2dsr traffic only
# --root DIR         the lbctl project (default: two levels above this script)
# --lbctl PATH       the lbctl command (default ROOT/bin/lbctl)
# --install          (Vagrant only) install nginx and, for xdp decapsulation,
#                    build and install lbctl from --root
#
# nginx listens on port --port of every address of both families. GET /
# answers "backend=NAME client=$remote_addr port=$remote_port server=$server_addr"
# (IPv6 addresses unbracketed: client=fd00:10::10); PUT /upload/FILE stores the
# request body as DIR/upload/FILE (up to 64 MB; "X-Backend: NAME" in the
# answer), so a test can see that a large request arrived whole. The access
# log (DIR/logs/access.log) starts each line with $remote_addr.
# shellcheck source=vagrant/provision/common.sh
. "$(dirname "$0")/common.sh"


mtu="" name="" iface=eth0 addresses=() gateways=() routes=() vips=() rundir="" port=80 decap=none
root=$PROJECT_ROOT lbctl="" install=0
while [ $# -gt 0 ]; do
	case $1 in
	--name) need_value "$@"; [[ $2 =~ ^[A-Za-z0-9_.-]+$ ]] || die "--name: \"$2\" is not a simple name"; name=$2; shift 2 ;;
	--interface) need_value "$@"; check_ifname "$1" "$2"; iface=$2; shift 2 ;;
	--address) need_value "$@"; check_ip_cidr "$1" "$2"; check_family_once "$1" "$2" "${addresses[@]}"; addresses+=("$2"); shift 2 ;;
	--mtu) need_value "$@"; check_mtu "$1" "$2"; mtu=$2; shift 2 ;;
	--gateway) need_value "$@"; check_ip "$1" "$2"; check_family_once "$1" "$2" "${gateways[@]}"; gateways+=("$2"); routes+=("default=$2"); shift 2 ;;
	--route) need_value "$@"; check_route "$1" "$2"; routes+=("$2"); shift 2 ;;
	--vips)
		need_value "$@"
		while read -r vip; do check_ip "$1" "$vip"; vips+=("$vip"); done < <(split_list "$2")
		shift 2 ;;
	--runtime-dir) need_value "$@"; rundir=$2; shift 2 ;;
	--port) need_value "$@"; [[ $2 =~ ^[0-9]+$ ]] && [ "$2" -ge 1 ] && [ "$2" -le 65535 ] || die "--port: \"$2\" is not a port"; port=$2; shift 2 ;;
	--decap)
		need_value "$@"
		case $2 in xdp | kernel | auto | none) decap=$2 ;; *) die "--decap: \"$2\" is not one of xdp, kernel, auto, none" ;; esac
		shift 2 ;;
	--no-decap) decap=none; shift ;;
	--root) need_value "$@"; root=$2; shift 2 ;;
	--lbctl) need_value "$@"; lbctl=$2; shift 2 ;;
	--install) install=1; shift ;;
	-h | --help) usage; exit 0 ;;
	*) die "unknown argument: $1 (see --help)" ;;
	esac
done
[ -n "$name" ] || die "--name is required"
[ ${#addresses[@]} -gt 0 ] || die "--address is required"
# shellcheck disable=SC2034 # read by log() and die()
ROLE="backend $name"
rundir=${rundir:-/run/lbctl-backend/$name}
case $rundir in /*) ;; *) die "--runtime-dir must be an absolute path" ;; esac
lbctl=${lbctl:-$root/bin/lbctl}

# kernel_ipip: the kernel can decapsulate IP-in-IP (tunl0 exists in this
# network namespace, or loading the ipip module creates it).
kernel_ipip() {
	link_exists tunl0 && return 0
	command -v modprobe >/dev/null 2>&1 && modprobe -q ipip 2>/dev/null && link_exists tunl0
}

# has_ipv6: the backend has an IPv6 --address (and so may get IPv6 outer headers).
has_ipv6() {
	local a
	for a in "${addresses[@]}"; do [ "$(ip_family "$a")" = 4 ] || return 0; done
	return 1
}

# has_ipv6_vip: the backend holds an IPv6 VIP (and so may get IPv6 inner
# packets, also inside IPv4 outer headers).
has_ipv6_vip() {
	local v
	for v in "${vips[@]}"; do [ "$(ip_family "$v")" = 4 ] || return 0; done
	return 1
}

# kernel_tunnel DEVICE MODULE: the catch-all device of a tunnel driver exists
# in this network namespace, or loading the module creates it.
kernel_tunnel() {
	link_exists "$1" && return 0
	command -v modprobe >/dev/null 2>&1 && modprobe -q "$2" 2>/dev/null && link_exists "$1"
}

# kernel_decap: the kernel can decapsulate everything this backend may
# receive: tunl0 for IPv4 in IPv4; sit0 (the sit module's catch-all device)
# for IPv6 in IPv4 when it holds IPv6 VIPs; ip6tnl0 (ip6_tunnel's) for IPv6
# outer headers when it has an IPv6 address.
kernel_decap() {
	kernel_ipip || return 1
	if has_ipv6_vip; then kernel_tunnel sit0 sit || return 1; fi
	if has_ipv6; then kernel_tunnel ip6tnl0 ip6_tunnel || return 1; fi
	return 0
}

if [ "$install" = 1 ]; then
	require_vm
	apt_install iproute2 ethtool nginx curl tcpdump kmod
	# The package starts its own nginx on port 80: ours replaces it.
	if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
		systemctl disable --now nginx >/dev/null 2>&1 || true
	fi
fi
if [ "$decap" = auto ]; then
	if kernel_decap; then decap=kernel; else decap=xdp; fi
	log "--decap auto: using $decap"
fi
[ "$decap" != kernel ] || kernel_decap || die "--decap kernel: this kernel lacks the ipip driver (or sit for IPv6 VIPs, ip6_tunnel for IPv6 addresses): use --decap xdp"
if [ "$install" = 1 ] && [ "$decap" = xdp ]; then
	build_project "$root"
fi

# --------------------------------------------------------------- network
iface=$(resolve_interface "$iface" "${addresses[@]}")
require_link "$iface"
ip link set dev lo up
link_up "$iface" "$mtu"
# The addresses first: `lbctl decap attach` below takes the interface's
# addresses (both families) as its tunnel endpoints.
for address in "${addresses[@]}"; do address_set "$iface" "$address"; done
routes_set "${routes[@]}"
for vip in "${vips[@]}"; do
	if [ "$(ip_family "$vip")" = 6 ]; then address_set lo "$vip/128"; else address_set lo "$vip/32"; fi
done
# The VIPs live on lo: never answer ARP for them on the wire (arp_ignore=1:
# only for addresses of the receiving interface) and never use them as the
# source of our own ARP requests (arp_announce=2). IPv6 needs no setting:
# Linux answers a neighbour solicitation only for an address of the
# interface it arrived on (ndisc_recv_ns looks the target up strictly on that
# device), and solicits from an address of the outgoing interface or its
# link-local one, never from one on lo.
for scope in all "$iface"; do
	sysctl_set "net.ipv4.conf.$scope.arp_ignore" 1
	sysctl_set "net.ipv4.conf.$scope.arp_announce" 2
done
case $decap in
xdp)
	[ -x "$lbctl" ] || die "--decap xdp: $lbctl is not an executable (build lbctl, or pass --lbctl)"
	"$lbctl" decap attach --interface "$iface" || die "lbctl decap attach --interface $iface failed"
	;;
kernel)
	# Packets to this host's addresses with protocol 4 come out of tunl0
	# unwrapped; the inner destination (a VIP on lo) is local.
	ip link set dev tunl0 up
	# IPv6 in IPv4 (protocol 41) comes out of sit0.
	if has_ipv6_vip; then ip link set dev sit0 up; fi
	if has_ipv6; then
		# IPv6 outer headers come out of ip6tnl0; "any" takes an inner IPv6
		# (6in6) or IPv4 (4in6) packet (the fallback device's default is 6in6 only).
		ip -6 tunnel change ip6tnl0 mode any
		ip link set dev ip6tnl0 up
	fi
	;;
esac
# Requests arrive for a VIP that is not on the receiving interface, replies
# leave from the VIP: no reverse-path filtering (set after tunl0 exists).
ipv4_conf_all rp_filter 0

# ----------------------------------------------------------------- nginx

# pid_is_nginx PID: an nginx runs with that pid (not a reused pid, not a
# zombie: whoever reaps orphans may take a while).
pid_is_nginx() {
	local stat
	[[ $1 =~ ^[0-9]+$ ]] && stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
	[[ $stat =~ ^[0-9]+\ \(nginx\)\ [^Z] ]]
}

stop_nginx() {
	local pid _
	pid=$(cat "$rundir/nginx.pid" 2>/dev/null || true)
	pid_is_nginx "$pid" || return 0
	log "stopping previous nginx (pid $pid)"
	kill -TERM "$pid" 2>/dev/null || true
	for _ in $(seq 50); do
		pid_is_nginx "$pid" || return 0
		sleep 0.05
	done
	kill -KILL "$pid" 2>/dev/null || true
}

command -v nginx >/dev/null 2>&1 || die "nginx is not installed (Debian package nginx)"
stop_nginx
mkdir -p "$rundir/logs" "$rundir/temp"
# Both families; IPv6 only where the kernel has it (ipv6.disable=1 would make
# nginx fail to bind [::]).
listen6="# no IPv6 on this host"
[ ! -e /proc/sys/net/ipv6 ] || listen6="listen [::]:$port default_server ipv6only=on;"
cat >"$rundir/nginx.conf.new" <<CONF
# Written by backend.sh for backend $name; rewritten on every provisioning.
user root;
daemon on;
worker_processes 1;
worker_rlimit_nofile 16384;
pid $rundir/nginx.pid;
error_log $rundir/logs/error.log warn;

events {
    worker_connections 8192;
}

http {
    log_format lab '\$remote_addr \$server_addr:\$server_port [\$time_iso8601] "\$request" \$status'
                   ' conn=\$connection req=\$connection_requests';
    access_log $rundir/logs/access.log lab;
    client_body_temp_path $rundir/temp/client_body;
    proxy_temp_path $rundir/temp/proxy;
    fastcgi_temp_path $rundir/temp/fastcgi;
    uwsgi_temp_path $rundir/temp/uwsgi;
    scgi_temp_path $rundir/temp/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    server_tokens off;

    server {
        listen $port default_server;
        $listen6
        location / {
            default_type text/plain;
            return 200 "backend=$name client=\$remote_addr port=\$remote_port server=\$server_addr\n";
        }
        location /upload/ {
            root $rundir;
            dav_methods PUT;
            create_full_put_path on;
            client_max_body_size 64m;
            add_header X-Backend $name always;
        }
    }
}
CONF
mv "$rundir/nginx.conf.new" "$rundir/nginx.conf"
if ! nginx -p "$rundir/" -c "$rundir/nginx.conf" -e "$rundir/logs/error.log"; then
	tail -n 5 "$rundir/logs/error.log" >&2 2>/dev/null || true
	die "nginx did not start (config $rundir/nginx.conf)"
fi
case $decap in
xdp) extra=", decap xdp (lbctl decap attach)" ;;
kernel)
	devices=tunl0
	if has_ipv6_vip; then devices+=", sit0"; fi
	if has_ipv6; then devices+=", ip6tnl0"; fi
	extra=", decap kernel ($devices)" ;;
*) extra="" ;;
esac
provisioned "configured $iface ${addresses[*]}, routes ${routes[*]:-none}, VIPs ${vips[*]:-none}, nginx on port $port$extra"
