# shellcheck shell=bash
# Shared helpers for the per-role provisioning scripts (client.sh, router.sh,
# backend.sh, balancer.sh). The same scripts configure a Vagrant VM (with
# --install and `--interface auto`; vagrant/Vagrantfile) and a network
# namespace of the test lab (test/lab/lab.sh, never with --install), both with
# arguments derived from vagrant/topology.json (docs/topology.md). Each ends a
# successful run with the line "ROLE: provisioned with: ARGS" (provisioned()).
# Source it from a role script:
#
#   . "$(dirname "$0")/common.sh"
#
# Everything here works inside a namespace entered with
# `nsenter --net=/run/netns/NS` (the lab's way: it keeps /sys/fs/bpf visible)
# as well as with `ip netns exec`: nothing reads /sys/class/net, which shows the
# host's interfaces under nsenter; /proc/sys/net and `ip` follow the network
# namespace of the calling process.
set -euo pipefail

PROVISION_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# The project root (holds bin/lbctl, build/, scripts/); role scripts take --root.
# shellcheck disable=SC2034 # used by the role scripts
PROJECT_ROOT=$(cd "$PROVISION_DIR/../.." && pwd)
ROLE=${ROLE:-$(basename "$0" .sh)}
# The role script's arguments (this file is sourced before they are parsed),
# repeated by provisioned().
PROVISION_ARGS=("$@")

log() { printf '%s: %s\n' "$ROLE" "$*" >&2; }
die() { printf '%s: error: %s\n' "$ROLE" "$*" >&2; exit 1; }

# ---------------------------------------------------------------- arguments

# usage: prints the calling script's header comment (after the #! line, up to
# the first line that is not a comment).
usage() {
	awk 'NR == 1 { next } /^# shellcheck/ || !/^#/ { exit } { sub(/^# ?/, ""); print }' "$0"
}

# need_value OPTION "$@": fails unless OPTION is followed by a value.
need_value() {
	[ $# -ge 2 ] && [ -n "$2" ] || die "option $1 needs a value"
}

# split_list "a,b c": prints one item a line (commas and blanks separate).
split_list() {
	local item
	for item in ${1//,/ }; do printf '%s\n' "$item"; done
}

is_ipv4() {
	local re='^([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})$'
	[[ $1 =~ $re ]] || return 1
	local i
	for i in 1 2 3 4; do
		[ "${BASH_REMATCH[$i]}" -le 255 ] || return 1
	done
}

# is_ipv6 fd00:10::1: hexadecimal groups of 1-4 digits, eight of them or
# fewer with one "::" (no embedded IPv4 form, no zone).
is_ipv6() {
	local a=$1 side groups=() g n=0
	[[ $a =~ ^[0-9A-Fa-f:]+$ && $a == *:*:* ]] || return 1
	case $a in *:::* | *::*::*) return 1 ;; esac
	# Both sides of a "::" (or the whole address without one).
	for side in "${a%%::*}" "$([[ $a == *::* ]] && printf '%s' "${a#*::}")"; do
		[ -n "$side" ] || continue
		[[ $side != :* && $side != *: ]] || return 1
		IFS=: read -r -a groups <<<"$side"
		for g in "${groups[@]}"; do
			[[ $g =~ ^[0-9A-Fa-f]{1,4}$ ]] || return 1
			n=$((n + 1))
		done
	done
	if [[ $a == *::* ]]; then [ "$n" -le 7 ]; else [ "$n" -eq 8 ]; fi
}

is_ip() { is_ipv4 "$1" || is_ipv6 "$1"; }

# ip_family ADDRESS[/LEN]: 6 for an IPv6 address, else 4.
ip_family() { case $1 in *:*) echo 6 ;; *) echo 4 ;; esac; }

# is_ipv4_cidr 10.0.0.1/24
is_ipv4_cidr() {
	local addr=${1%/*} len=${1##*/}
	[ "$addr" != "$1" ] && is_ipv4 "$addr" && [[ $len =~ ^[0-9]{1,2}$ ]] && [ "$len" -le 32 ]
}

# is_ipv6_cidr fd00:10::1/64
is_ipv6_cidr() {
	local addr=${1%/*} len=${1##*/}
	[ "$addr" != "$1" ] && is_ipv6 "$addr" && [[ $len =~ ^[0-9]{1,3}$ ]] && [ "$len" -le 128 ]
}

is_ip_cidr() { is_ipv4_cidr "$1" || is_ipv6_cidr "$1"; }

check_ipv4() { is_ipv4 "$2" || die "$1: \"$2\" is not an IPv4 address"; }
check_ip() { is_ip "$2" || die "$1: \"$2\" is not an IPv4 or IPv6 address"; }
check_ipv4_cidr() { is_ipv4_cidr "$2" || die "$1: \"$2\" is not ADDRESS/PREFIXLEN (IPv4)"; }
check_ip_cidr() { is_ip_cidr "$2" || die "$1: \"$2\" is not ADDRESS/PREFIXLEN (IPv4 or IPv6)"; }

# check_family_once OPTION VALUE LIST...: fails when LIST already holds a
# value of VALUE's family (one address or gateway per family).
check_family_once() {
	local option=$1 value=$2 v
	shift 2
	for v in "$@"; do
		[ "$(ip_family "$v")" != "$(ip_family "$value")" ] ||
			die "$option: \"$value\": there is already an IPv$(ip_family "$value") one (\"$v\"); one per family"
	done
}

# check_route OPTION PREFIX=GATEWAY: validates a --route argument; prefix and
# gateway of one family ("default" takes the gateway's).
check_route() {
	local dst=${2%%=*} via=${2#*=}
	[ "$dst" != "$2" ] || die "$1: \"$2\" is not PREFIX=GATEWAY (e.g. 10.100.0.0/24=10.10.0.2 or fd00:100::/64=fd00:10::2)"
	is_ip "$via" || die "$1: \"$via\" is not an IPv4 or IPv6 gateway"
	[ "$dst" = default ] && return 0
	is_ip_cidr "$dst" || die "$1: \"$dst\" is not a prefix (ADDRESS/LEN or default)"
	[ "$(ip_family "$dst")" = "$(ip_family "$via")" ] || die "$1: \"$2\" mixes IPv4 and IPv6"
}

check_mtu() {
	[[ $2 =~ ^[0-9]+$ ]] && [ "$2" -ge 576 ] && [ "$2" -le 65535 ] || die "$1: \"$2\" is not an MTU (576-65535)"
}

# check_ifname OPTION NAME: an interface name, or "auto" (see resolve_interface).
check_ifname() {
	[[ $2 =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}$ ]] || die "$1: \"$2\" is not an interface name (at most 15 characters) or auto"
}

# resolve_interface NAME ADDRESS[/LEN]...: prints NAME; for NAME "auto", the
# interface that already holds one of the ADDRESSes (tried in order). In a
# Vagrant VM the provider names the NICs (eth1, ens6, enp0s8, ...) but Vagrant
# has put the private network's IPv4 address on it at boot: finding the
# interface by its address works with every provider and box. (The IPv6
# address is the role script's to add: Vagrant configures only IPv4.)
resolve_interface() {
	local name=$1 a addr family dev=""
	shift
	if [ "$name" != auto ]; then
		printf '%s\n' "$name"
		return 0
	fi
	for a in "$@"; do
		addr=${a%/*}
		family=$(ip_family "$addr")
		dev=$(ip -o "-$family" addr show to "$addr/$([ "$family" = 6 ] && echo 128 || echo 32)" | awk '$2 != "lo" { print $2; exit }')
		dev=${dev%%@*}
		[ -z "$dev" ] || break
	done
	[ -n "$dev" ] || die "--interface auto: no interface holds ${*%/*} (interfaces:" \
		"$(ip -o addr show | awk '$3 == "inet" || $3 == "inet6" { printf "%s %s; ", $2, $4 }'))"
	printf '%s\n' "$dev"
}

# provisioned SUMMARY: the last lines of every successful run; the lab's tests
# check the final one ("ROLE: provisioned with: ARGS") to know that this script,
# with these arguments, configured the host.
provisioned() {
	log "$1"
	log "provisioned with: ${PROVISION_ARGS[*]}"
}

# ------------------------------------------------------------------ sysctls

# sysctl_path net.ipv4.conf.eth0.rp_filter -> /proc/sys/net/ipv4/conf/eth0/rp_filter
# (interface names containing dots are not supported).
sysctl_path() { printf '/proc/sys/%s' "${1//.//}"; }

# sysctl_set KEY VALUE: writes through /proc (per network namespace; no fork).
sysctl_set() {
	local path
	path=$(sysctl_path "$1")
	[ -e "$path" ] || die "sysctl $1 does not exist"
	printf '%s\n' "$2" >"$path" || die "cannot set sysctl $1=$2"
}

sysctl_get() { cat "$(sysctl_path "$1")"; }

# ipv4_conf_all KEY VALUE: net.ipv4.conf.{all,default,<every interface>}.KEY
ipv4_conf_all() {
	local dir
	for dir in /proc/sys/net/ipv4/conf/*/; do
		dir=${dir%/}
		printf '%s\n' "$2" >"$dir/$1" || die "cannot set net.ipv4.conf.${dir##*/}.$1=$2"
	done
}

# ---------------------------------------------------------------- interfaces

link_exists() { ip link show dev "$1" >/dev/null 2>&1; }

require_link() { link_exists "$1" || die "interface $1 does not exist"; }

# link_up IFACE [MTU]: sets the MTU when given, turns IPv6 duplicate address
# detection off, brings the link up. The topology's addresses are static on
# private segments; with DAD a fresh namespace holds its link-local and static
# IPv6 addresses "tentative" for a second or two, during which they cannot be
# used, and neighbour discovery solicits nothing without a usable link-local
# address. (Addresses are added with nodad too: see address_set.)
link_up() {
	local dad=/proc/sys/net/ipv6/conf/$1/accept_dad
	[ ! -e "$dad" ] || printf '0\n' >"$dad" || die "cannot set net.ipv6.conf.$1.accept_dad=0"
	if [ -n "${2:-}" ]; then
		ip link set dev "$1" mtu "$2" up
	else
		ip link set dev "$1" up
	fi
}

# address_set IFACE ADDR/LEN: idempotent (replace); an IPv6 address without
# duplicate address detection (usable at once; see link_up).
address_set() {
	if [ "$(ip_family "$2")" = 6 ]; then
		[ -e /proc/sys/net/ipv6 ] || die "cannot add $2: IPv6 is disabled on this host (ipv6.disable=1?)"
		ip -6 addr replace "$2" dev "$1" nodad
	else
		ip -4 addr replace "$2" dev "$1"
	fi
}

# route_set PREFIX GATEWAY: idempotent (replace); PREFIX may be "default";
# the gateway's family picks the table.
route_set() { ip "-$(ip_family "$2")" route replace "$1" via "$2"; }

# routes_set PREFIX=GATEWAY...
routes_set() {
	local r
	for r in "$@"; do route_set "${r%%=*}" "${r#*=}"; done
}

# ---------------------------------------------------------------------- BIRD

check_number() {
	[[ $2 =~ ^[0-9]{1,10}$ ]] && [ "$2" -ge "$3" ] && [ "$2" -le "$4" ] || die "$1: \"$2\" is not a number from $3 to $4"
}

check_asn() { check_number "$1" "$2" 1 4294967295; }

# first_of_family FAMILY ITEM...: the first ITEM (an address or prefix) of
# FAMILY (4 or 6); fails when there is none.
first_of_family() {
	local family=$1 item
	shift
	for item in "$@"; do
		if [ "$(ip_family "$item")" = "$family" ]; then
			printf '%s\n' "$item"
			return 0
		fi
	done
	return 1
}

# bird_config NAME KEY=VALUE...: packaging/bird/NAME.conf.in with every @KEY@
# replaced by VALUE (the one source of the BIRD configurations that the lab,
# the VMs and docs/fleet.md use). Fails if a placeholder is left.
bird_config() {
	local template=$PROJECT_ROOT/packaging/bird/$1.conf.in text pair
	shift
	[ -f "$template" ] || die "no BIRD template $template"
	text=$(<"$template")
	shopt -u patsub_replacement 2>/dev/null || true # "&" in a value stays "&"
	for pair in "$@"; do text=${text//@${pair%%=*}@/${pair#*=}}; done
	if [[ $text =~ @[A-Z0-9_]+@ ]]; then die "$template: no value for ${BASH_REMATCH[0]}"; fi
	printf '%s\n' "$text"
}

# bird_run CONFIG [DIR]: runs BIRD with the configuration text CONFIG.
# With DIR (the lab: one BIRD per namespace): DIR/bird.conf, its own control
# socket DIR/bird.ctl and pid file DIR/bird.pid; a BIRD already running from
# DIR re-reads the file (no session flaps), else one is started. Without DIR
# (a VM): /etc/bird/bird.conf and Debian's bird.service. Prints what it did.
bird_run() {
	local config=$1 dir=${2:-} pid
	command -v bird >/dev/null 2>&1 || die "bird is missing (Debian package bird2; scripts/install-deps.sh installs it)"
	if [ -z "$dir" ]; then
		use_systemd || die "BIRD without --bird-dir runs as bird.service: that needs a VM booted with systemd (the lab passes --bird-dir)"
		printf '%s\n' "$config" >/etc/bird/bird.conf.new
		bird -p -c /etc/bird/bird.conf.new || die "BIRD rejects /etc/bird/bird.conf.new"
		chown bird:bird /etc/bird/bird.conf.new && chmod 640 /etc/bird/bird.conf.new
		mv /etc/bird/bird.conf.new /etc/bird/bird.conf
		systemctl enable bird.service >/dev/null 2>&1
		systemctl reload-or-restart bird.service
		echo "bird.service with /etc/bird/bird.conf"
		return 0
	fi
	mkdir -p "$dir"
	printf '%s\n' "$config" >"$dir/bird.conf.new"
	bird -p -c "$dir/bird.conf.new" || die "BIRD rejects $dir/bird.conf.new"
	mv "$dir/bird.conf.new" "$dir/bird.conf"
	pid=$(cat "$dir/bird.pid" 2>/dev/null || true)
	if [[ $pid =~ ^[0-9]+$ ]] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = bird ]; then
		birdc -s "$dir/bird.ctl" configure >/dev/null || die "birdc -s $dir/bird.ctl configure failed"
		echo "bird (pid $pid) reconfigured from $dir/bird.conf"
	else
		bird -c "$dir/bird.conf" -s "$dir/bird.ctl" -P "$dir/bird.pid" || die "bird -c $dir/bird.conf failed to start"
		echo "bird started with $dir/bird.conf (control socket $dir/bird.ctl)"
	fi
}

# use_systemd: a VM (this process in the initial network namespace) booted with systemd.
use_systemd() {
	in_init_netns && [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1
}

# ----------------------------------------------------- VM-only install steps

# in_init_netns: true when this process shares the network namespace of PID 1,
# i.e. it is not inside a lab namespace.
in_init_netns() {
	[ "$(stat -L -c %i /proc/self/ns/net)" = "$(stat -L -c %i /proc/1/ns/net 2>/dev/null || echo none)" ]
}

# require_vm: guards the --install steps (apt-get, building the project), which
# belong on a disposable Vagrant VM and never on a developer's host, a CI
# container or a lab namespace. Set LBCTL_PROVISION_FORCE_INSTALL=1 to run them
# elsewhere on purpose (e.g. a cloud VM without the Vagrant share).
require_vm() {
	[ "${LBCTL_PROVISION_FORCE_INSTALL:-0}" = 1 ] && return 0
	in_init_netns || die "--install refused: running inside a network namespace (the lab never installs)"
	if command -v systemd-detect-virt >/dev/null 2>&1; then
		if systemd-detect-virt --container -q; then
			die "--install refused: running in a container ($(systemd-detect-virt --container)), not a VM" \
				"(set LBCTL_PROVISION_FORCE_INSTALL=1 to override)"
		fi
		systemd-detect-virt --vm -q ||
			die "--install refused: not a virtual machine (set LBCTL_PROVISION_FORCE_INSTALL=1 to override)"
	elif [ ! -d /vagrant ]; then
		die "--install refused: cannot tell that this is a VM (no systemd-detect-virt, no /vagrant);" \
			"set LBCTL_PROVISION_FORCE_INSTALL=1 to override"
	fi
}

# apt_install PKG...: installs what is missing (VM only; call require_vm first).
apt_install() {
	local missing=() pkg
	for pkg in "$@"; do
		dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	log "apt-get install ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q
	apt-get install -y -q --no-install-recommends "${missing[@]}"
}

# build_project ROOT: installs the toolchain (apt: clang, libbpf, Node.js >= 18
# and npm; then `npm ci`), builds lbctl in ROOT and installs it
# (/usr/local/bin/lbctl). VM only. ROOT is the rsync copy of the project that
# Vagrant keeps at /vagrant (its build/, dist/ and node_modules/ are not
# synced: they are the VM's own), so building there never touches the host's
# checkout. Quick when nothing changed.
build_project() {
	[ -x "$1/scripts/install-deps.sh" ] || die "$1 is not the lbctl project root (no scripts/install-deps.sh)"
	log "building lbctl in $1"
	"$1/scripts/install-deps.sh" --no-test-tools
	make -C "$1"
	make -C "$1" install
}
