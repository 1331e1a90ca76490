#!/bin/sh
# Installs what building, running and testing lbctl needs on Debian/Ubuntu:
# the toolchain and lab tools from apt, then the npm packages. Idempotent and
# quick when everything is present.
#
#   install-deps.sh [--no-test-tools] [--bench]
#
# --no-test-tools  skip what only the tests use: vagrant and vagrant-libvirt
#                  (`vagrant validate`; ~80 MB of Ruby), chromium (renders the
#                  status page), socat and systemd (readiness protocol, unit
#                  check). The demo and the Vagrant VMs build lbctl with this
#                  (vagrant/provision/common.sh).
# --bench          add what `make bench` uses: wrk (HTTP load), haproxy and
#                  libnginx-mod-stream (the proxies lbctl is compared with),
#                  iptables (DNAT with the statistic match) and nftables
#                  (`nft delete table` unhooks conntrack between runs). The
#                  test tools include them: test/bench-smoke runs every part.
set -eu

cd "$(dirname "$0")/.."

test_tools=1
bench=0
for arg in "$@"; do
	case "$arg" in
	--no-test-tools) test_tools=0 ;;
	--bench) bench=1 ;;
	*) echo "install-deps: unknown argument $arg (usage: install-deps.sh [--no-test-tools] [--bench])" >&2; exit 2 ;;
	esac
done

# jq: test/lab/lab.sh reads vagrant/topology.json with it. bird2: the lab's
# fleet (`lab.sh up --fleet`: BGP between the balancers and the router), which
# the tests and the demo run; lbctl itself never needs BIRD.
DEBS="clang llvm libbpf-dev libelf-dev zlib1g-dev libc6-dev gcc make pkg-config \
iproute2 ethtool procps iputils-ping nginx curl tcpdump ca-certificates jq bird2"
# test/vagrant.test.ts runs `vagrant validate` (with the libvirt provider's
# checks too; no VM is ever started by the tests); test/e2e-observability
# renders the status page in chromium and plays systemd's notify socket with
# socat; test/install.test.ts checks the unit with systemd-analyze.
if [ "$test_tools" = 1 ]; then
	DEBS="$DEBS vagrant vagrant-libvirt chromium socat systemd"
fi
if [ "$bench" = 1 ] || [ "$test_tools" = 1 ]; then
	DEBS="$DEBS wrk haproxy libnginx-mod-stream iptables nftables"
fi

if [ "$(id -u)" -ne 0 ]; then
	echo "install-deps: run as root (sudo), it installs packages with apt" >&2
	exit 1
fi

missing=""
for deb in $DEBS; do
	dpkg-query -W -f='${Status}' "$deb" 2>/dev/null | grep -q "install ok installed" || missing="$missing $deb"
done

node_major() { node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0; }
if [ "$(node_major)" -lt 18 ]; then
	missing="$missing nodejs npm"
fi

if [ -n "$missing" ]; then
	echo "install-deps: apt-get install$missing"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q
	# shellcheck disable=SC2086
	apt-get install -y -q --no-install-recommends $missing
fi

if [ "$(node_major)" -lt 18 ]; then
	echo "install-deps: Node.js >= 18 is required, found $(node --version 2>/dev/null || echo none)" >&2
	exit 1
fi

# nginx serves the lab's backends inside namespaces, the benchmark runs its
# own haproxy there, and the fleet lab runs one BIRD per namespace: the copies
# the packages start on this host are not ours to leave running (Debian's
# bird2 starts bird.service, a BGP speaker on the host's own routing tables).
for pair in nginx:nginx haproxy:haproxy bird2:bird; do
	deb=${pair%%:*} svc=${pair#*:}
	case "$missing " in
	*" $deb "*)
		if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
			systemctl disable --now "$svc" >/dev/null 2>&1 || true
		else
			service "$svc" stop >/dev/null 2>&1 || true
		fi
		;;
	esac
done

stamp=node_modules/.lbctl-lock
if [ ! -f "$stamp" ] || ! cmp -s package-lock.json "$stamp"; then
	npm ci --no-audit --no-fund
	cp package-lock.json "$stamp"
fi
