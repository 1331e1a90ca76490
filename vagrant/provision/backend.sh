#!/usr/bin/env bash
# Provisions a backend (real server) for direct server return: its address and
# routes, the VIPs on lo with ARP hidden, optionally IP-in-IP decapsulation,
# and an nginx that names the backend in every response.
#
#   backend.sh --name be1 --interface eth0 --address 10.10.0.11/24 \
#              --route 10.20.0.0/24=10.10.0.1 [--gateway 10.10.0.1] \
#              --vips 10.100.0.100,10.100.0.101 --runtime-dir /run/lbctl-backend/be1 \
#              [--port 80] [--mtu N] [--decap xdp|kernel|auto|none] [--root DIR]
#              [--lbctl PATH] [--install]
#
# --interface auto   the interface that already holds --address (a Vagrant VM)
# --route PREFIX=GATEWAY may repeat; --gateway G is --route default=G.
# --vips LIST        comma-separated VIP addresses, added as /32 on lo
# --runtime-dir DIR  nginx prefix: nginx.conf, nginx.pid, logs/, temp/
#                    (default /run/lbctl-backend/NAME); a previous nginx of the
#                    same DIR is stopped first
# --decap MODE       unwrap IP-in-IP from the balancer (ipip backends):
#                    xdp     `lbctl decap attach --interface IFACE` (lbctl's XDP
#                            decapsulator; needs the project built)
#                    kernel  the kernel's ipip driver (modprobe ipip; tunl0 up)
#                    auto    kernel where the driver exists (Debian's kernels),
#                            else xdp
#                    none    (default; also --no-decap) l2dsr traffic only
# --root DIR         the lbctl project (default: two levels above this script)
# --lbctl PATH       the lbctl command (default ROOT/bin/lbctl)
# --install          (Vagrant only) install nginx and, for xdp decapsulation,
#                    build and install lbctl from --root
#
# GET / answers "backend=NAME client=$remote_addr server=$server_addr"; the
# access log (DIR/logs/access.log) starts each line with $remote_addr.
# shellcheck source=vagrant/provision/common.sh
. "$(dirname "$0")/common.sh"


mtu="" name="" iface=eth0 address="" routes=() vips=() rundir="" port=80 decap=none
root=$PROJECT_ROOT lbctl="" install=0
while [ $# -gt 0 ]; do
	case $1 in
	--name) need_value "$@"; [[ $2 =~ ^[A-Za-z0-9_.-]+$ ]] || die "--name: \"$2\" is not a simple name"; name=$2; shift 2 ;;
	--interface) need_value "$@"; check_ifname "$1" "$2"; iface=$2; shift 2 ;;
	--address) need_value "$@"; check_ipv4_cidr "$1" "$2"; address=$2; shift 2 ;;
	--mtu) need_value "$@"; check_mtu "$1" "$2"; mtu=$2; shift 2 ;;
	--gateway) need_value "$@"; check_ipv4 "$1" "$2"; routes+=("default=$2"); shift 2 ;;
	--route) need_value "$@"; check_route "$1" "$2"; routes+=("$2"); shift 2 ;;
	--vips)
		need_value "$@"
		while read -r vip; do check_ipv4 "$1" "$vip"; vips+=("$vip"); done < <(split_list "$2")
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
[ -n "$address" ] || die "--address is required"
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

if [ "$install" = 1 ]; then
	require_vm
	apt_install iproute2 ethtool nginx curl tcpdump kmod
	# The package starts its own nginx on port 80: ours replaces it.
	if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
		systemctl disable --now nginx >/dev/null 2>&1 || true
	fi
fi
if [ "$decap" = auto ]; then
	if kernel_ipip; then decap=kernel; else decap=xdp; fi
	log "--decap auto: using $decap"
fi
[ "$decap" != kernel ] || kernel_ipip || die "--decap kernel: this kernel has no ipip driver (use --decap xdp)"
if [ "$install" = 1 ] && [ "$decap" = xdp ]; then
	build_project "$root"
fi

# --------------------------------------------------------------- network
iface=$(resolve_interface "$iface" "$address")
require_link "$iface"
ip link set dev lo up
link_up "$iface" "$mtu"
address_set "$iface" "$address"
routes_set "${routes[@]}"
for vip in "${vips[@]}"; do
	address_set lo "$vip/32"
done
# The VIPs live on lo: never answer ARP for them on the wire (arp_ignore=1:
# only for addresses of the receiving interface) and never use them as the
# source of our own ARP requests (arp_announce=2).
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
        location / {
            default_type text/plain;
            return 200 "backend=$name client=\$remote_addr port=\$remote_port server=\$server_addr\n";
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
kernel) extra=", decap kernel (tunl0)" ;;
*) extra="" ;;
esac
provisioned "configured $iface $address, routes ${routes[*]:-none}, VIPs ${vips[*]:-none}, nginx on port $port$extra"
