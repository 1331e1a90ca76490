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

# is_ipv4_cidr 10.0.0.1/24
is_ipv4_cidr() {
	local addr=${1%/*} len=${1##*/}
	[ "$addr" != "$1" ] && is_ipv4 "$addr" && [[ $len =~ ^[0-9]{1,2}$ ]] && [ "$len" -le 32 ]
}

check_ipv4() { is_ipv4 "$2" || die "$1: \"$2\" is not an IPv4 address"; }
check_ipv4_cidr() { is_ipv4_cidr "$2" || die "$1: \"$2\" is not ADDRESS/PREFIXLEN (IPv4)"; }

# check_route OPTION PREFIX=GATEWAY: validates a --route argument.
check_route() {
	local dst=${2%%=*} via=${2#*=}
	[ "$dst" != "$2" ] || die "$1: \"$2\" is not PREFIX=GATEWAY (e.g. 10.100.0.0/24=10.10.0.2)"
	[ "$dst" = default ] || is_ipv4_cidr "$dst" || die "$1: \"$dst\" is not a prefix (ADDRESS/LEN or default)"
	is_ipv4 "$via" || die "$1: \"$via\" is not an IPv4 gateway"
}

check_mtu() {
	[[ $2 =~ ^[0-9]+$ ]] && [ "$2" -ge 576 ] && [ "$2" -le 65535 ] || die "$1: \"$2\" is not an MTU (576-65535)"
}

# check_ifname OPTION NAME: an interface name, or "auto" (see resolve_interface).
check_ifname() {
	[[ $2 =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}$ ]] || die "$1: \"$2\" is not an interface name (at most 15 characters) or auto"
}

# resolve_interface NAME ADDRESS[/LEN]: prints NAME; for NAME "auto", the
# interface that already holds ADDRESS. In a Vagrant VM the provider names the
# NICs (eth1, ens6, enp0s8, ...) but Vagrant has put the private network's
# address on it at boot: finding the interface by its address works with every
# provider and box.
resolve_interface() {
	local addr=${2%/*} dev
	if [ "$1" != auto ]; then
		printf '%s\n' "$1"
		return 0
	fi
	dev=$(ip -o -4 addr show to "$addr/32" | awk '$2 != "lo" { print $2; exit }')
	dev=${dev%%@*}
	[ -n "$dev" ] || die "--interface auto: no interface holds $addr (interfaces:" \
		"$(ip -o -4 addr show | awk '{ printf "%s %s; ", $2, $4 }'))"
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

# link_up IFACE [MTU]: sets the MTU when given, brings the link up.
link_up() {
	if [ -n "${2:-}" ]; then
		ip link set dev "$1" mtu "$2" up
	else
		ip link set dev "$1" up
	fi
}

# address_set IFACE ADDR/LEN: idempotent (replace).
address_set() { ip addr replace "$2" dev "$1"; }

# route_set PREFIX GATEWAY: idempotent (replace); PREFIX may be "default".
route_set() { ip route replace "$1" via "$2"; }

# routes_set PREFIX=GATEWAY...
routes_set() {
	local r
	for r in "$@"; do route_set "${r%%=*}" "${r#*=}"; done
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
	"$1/scripts/install-deps.sh" --no-vagrant
	make -C "$1"
	make -C "$1" install
}
