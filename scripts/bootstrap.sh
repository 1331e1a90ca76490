#!/bin/sh
# From a fresh Debian/Ubuntu host to a running target in one command:
#   sudo sh scripts/bootstrap.sh demo    # the live demo in network namespaces
#   sudo sh scripts/bootstrap.sh test    # the whole test suite
# Installs the system packages (apt) and npm packages, builds, runs `make TARGET`.
set -eu
cd "$(dirname "$0")/.."

target=${1:-demo}
case "$target" in
demo | test | all | bench) ;;
*) echo "usage: sudo sh scripts/bootstrap.sh demo|test" >&2; exit 2 ;;
esac
if [ "$(id -u)" -ne 0 ]; then
	echo "bootstrap: run as root: sudo sh scripts/bootstrap.sh $target" >&2
	exit 1
fi
# make needs to be there before make can install the rest.
if [ "$target" = demo ]; then sh scripts/install-deps.sh --no-test-tools; else sh scripts/install-deps.sh; fi
exec make "$target"
