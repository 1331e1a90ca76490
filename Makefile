# lbctl: `make` builds the BPF objects, the native shim and the TypeScript.
# `sudo make demo` and `sudo make test` install what they need first.

CLANG ?= clang
CC ?= gcc
PREFIX ?= /usr/local
SYSCONFDIR ?= /etc
UNITDIR ?= $(PREFIX)/lib/systemd/system
ARCH_INCLUDE := /usr/include/$(shell uname -m)-linux-gnu

BPF_SRC := $(wildcard bpf/*.bpf.c)
BPF_OBJ := $(patsubst bpf/%.bpf.c,build/bpf/%.bpf.o,$(BPF_SRC))
BENCH_BPF_OBJ := $(patsubst bench/%.bpf.c,build/bench/%.bpf.o,$(wildcard bench/*.bpf.c))
BPF_HDR := $(wildcard bpf/lib/*.h)
# The shipped native library: libbpf adapters and the DSR probe. What only
# tests and benchmarks call is a library of its own, never installed.
NATIVE_LIB := build/native/liblbctl.so
NATIVE_TESTING_LIB := build/native/liblbctl-testing.so
NATIVE_CFLAGS := -shared -fPIC -O2 -Wall -Wextra -Werror
TS_SRC := $(shell find src test bench -name '*.ts' 2>/dev/null)
TS_STAMP := dist/.stamp

.PHONY: all bpf native ts deps deps-demo deps-bench demo lint unit test bench install uninstall clean

all: bpf native ts

bpf: $(BPF_OBJ) $(BENCH_BPF_OBJ)
native: $(NATIVE_LIB) $(NATIVE_TESTING_LIB)
ts: $(TS_STAMP)

build/bpf/%.bpf.o: bpf/%.bpf.c $(BPF_HDR)
	@mkdir -p $(@D)
	$(CLANG) -O2 -g -Wall -Werror -target bpf -I$(ARCH_INCLUDE) -Ibpf -c $< -o $@

build/bench/%.bpf.o: bench/%.bpf.c
	@mkdir -p $(@D)
	$(CLANG) -O2 -g -Wall -Werror -target bpf -I$(ARCH_INCLUDE) -c $< -o $@

$(NATIVE_LIB): native/libbpf_adapters.c native/dsr_probe.c
	@mkdir -p $(@D)
	$(CC) $(NATIVE_CFLAGS) -o $@ $^ -lbpf

$(NATIVE_TESTING_LIB): native/testing.c
	@mkdir -p $(@D)
	$(CC) $(NATIVE_CFLAGS) -pthread -o $@ $^ -lbpf

$(TS_STAMP): $(TS_SRC) tsconfig.json package.json scripts/bundle-cli.mjs
	node_modules/.bin/tsc -p tsconfig.json
	node scripts/bundle-cli.mjs
	@touch $@

deps:
	scripts/install-deps.sh

# The demo needs no Vagrant (only the tests validate the Vagrantfile).
deps-demo:
	scripts/install-deps.sh --no-test-tools

demo: deps-demo all
	node dist/test/lab/demo.js

# Formatting (prettier) and lint rules (eslint); `npm run format` fixes most.
lint:
	npm run --silent lint

# The unit tests alone: no root, no kernel, seconds (only the TypeScript is built).
unit: ts
	node --test dist/test/unit/*.test.js

# Lint, then unit and packet tests first (fast, precise failures), then the lab.
test: deps all lint
	scripts/run-tests.sh

# Speed and memory, measured side by side (~15 minutes): the build tools and
# lab plus what only the benchmarks use (wrk, HAProxy, nginx stream,
# iptables; no test-only tools), then bench/run.js writes
# bench/results/latest.md, latest.json and latest-http.svg.
deps-bench:
	scripts/install-deps.sh --no-test-tools --bench

bench: deps-bench all
	node dist/bench/run.js

# Only what runs (scripts/install-tree.sh): no tests, benchmarks or testing
# library, production packages only, koffi's binary for this platform only.
install: all
	install -d $(DESTDIR)$(PREFIX)/lib $(DESTDIR)$(PREFIX)/bin
	scripts/install-tree.sh $(DESTDIR)$(PREFIX)/lib/lbctl
	ln -sf $(PREFIX)/lib/lbctl/bin/lbctl $(DESTDIR)$(PREFIX)/bin/lbctl
	install -d $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSCONFDIR)/lbctl
	sed 's|@PREFIX@|$(PREFIX)|g' packaging/lbctl.service.in > $(DESTDIR)$(UNITDIR)/lbctl.service
	chmod 644 $(DESTDIR)$(UNITDIR)/lbctl.service
	install -m 644 packaging/lbctl.example.yaml $(DESTDIR)$(SYSCONFDIR)/lbctl/lbctl.example.yaml
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi

uninstall:
	rm -rf $(DESTDIR)$(PREFIX)/lib/lbctl $(DESTDIR)$(PREFIX)/lib/lbctl.new $(DESTDIR)$(PREFIX)/lib/lbctl.old $(DESTDIR)$(PREFIX)/bin/lbctl $(DESTDIR)$(UNITDIR)/lbctl.service $(DESTDIR)$(SYSCONFDIR)/lbctl/lbctl.example.yaml

clean:
	rm -rf build dist
