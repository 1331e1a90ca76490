#!/bin/sh
# Installs what `make bench` needs beyond scripts/install-deps.sh: the load
# generator and the alternatives lbctl is compared with. Called by
# bench/run.ts; idempotent and quick when everything is present.
#
#   wrk                  HTTP load from the client namespace
#   haproxy              `mode tcp` proxy in the balancer namespace
#   libnginx-mod-stream  nginx `stream` (TCP proxy) module
#   iptables             DNAT with the statistic match (nft backend is fine)
#   nftables             `nft delete table`: removing iptables-nft's nat table
#                        also unhooks conntrack between runs
set -eu

DEBS="wrk haproxy libnginx-mod-stream iptables nftables"

if [ "$(id -u)" -ne 0 ]; then
	echo "bench/install-deps: run as root (sudo), it installs packages with apt" >&2
	exit 1
fi

missing=""
for deb in $DEBS; do
	dpkg-query -W -f='${Status}' "$deb" 2>/dev/null | grep -q "install ok installed" || missing="$missing $deb"
done
[ -n "$missing" ] || exit 0

echo "bench/install-deps: apt-get install$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# shellcheck disable=SC2086
apt-get install -y -q --no-install-recommends $missing

# The packages start system-wide haproxy/nginx services: the benchmark runs
# its own copies inside the lab's namespaces and leaves the host as it was.
for svc in haproxy nginx; do
	case "$missing" in
	*haproxy*|*nginx*)
		if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
			systemctl disable --now "$svc" >/dev/null 2>&1 || true
		else
			service "$svc" stop >/dev/null 2>&1 || true
		fi
		;;
	esac
done
