# Skiff — the two commands of the quickstart, and what CI runs.
#   make up     run a local HA cluster (three control nodes on loopback, data in ./.skiff/)
#   make test   run every test (unit, storage conformance, end-to-end with real processes)
#   make verify fmt + clippy + tests, as CI

SHELL := /bin/bash
DEBIAN_PACKAGES := protobuf-compiler etcd-server etcd-client nftables iproute2 containerd runc crun containernetworking-plugins busybox-static docker-registry wrk fuse3 iperf3
CARGO ?= cargo

.PHONY: up test verify deps build bench-store bench-objects bench-scheduling bench-controllers bench-pods bench-proxy bench-network bench-watch bench-rolling-restart bench-backup bench-workloads lint chaos chaos-selftest

# Install the Debian packages the build and tests need, only those missing.
deps:
	@missing=""; for p in $(DEBIAN_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

# A build from nothing (CI's clean checkout) gains nothing from incremental state and pays
# for writing it; later builds keep it.
ifeq ($(wildcard target/debug),)
export CARGO_INCREMENTAL := 0
endif

build: deps
	$(CARGO) build --workspace --all-targets

up: deps
	$(CARGO) build --release -p skiff -p skiffctl
	@echo "skiffctl is at target/release/skiffctl (add target/release to PATH)"
	./target/release/skiff up

# Tests that need root (test hosts, containerd, mounts) are skipped, and said to be, when
# not run as root; every other test runs anywhere.
ROOT_TESTS := binary(node) | binary(services) | binary(pod_network) | binary(up) | binary(security) | test(/_as_root$$/)

test: build
	@if ! command -v cargo-nextest >/dev/null 2>&1; then \
	  echo "cargo-nextest is missing: the tests run one at a time with cargo test"; \
	  $(CARGO) test --workspace --no-fail-fast -- --test-threads 1; \
	elif [ "$$(id -u)" = 0 ]; then \
	  $(CARGO) nextest run --workspace --no-fail-fast; \
	elif [ "$${CI:-}" = true ]; then \
	  echo "CI=true but not root: the tests that need root cannot run, and CI must not pass without them"; exit 1; \
	else \
	  echo "not root: the tests that need root are skipped (nextest counts them)"; \
	  $(CARGO) nextest run --workspace --no-fail-fast -E 'not ($(ROOT_TESTS))'; \
	fi
	@if [ "$$(id -u)" = 0 ]; then \
	  ./target/debug/skiff-chaos run --scenario all --duration 8s --parallel 2 --out target/chaos-results; \
	elif [ "$${CI:-}" = true ]; then \
	  echo "CI=true but not root: the chaos suite cannot run"; exit 1; \
	else \
	  echo "not root: the chaos suite (test hosts in network namespaces) is skipped"; \
	fi

# The full chaos run of docs/CHAOS.md: every scenario for 10 minutes, four side by side.
chaos: deps
	$(CARGO) build --release -p skiff -p skiff-chaos
	./target/release/skiff-chaos run --scenario all --duration 10m --parallel 4 --out target/chaos-results

# Planted bugs must be caught: a build whose linearizable reads skip the read index must
# fail the linearizability checker under a leader partition; a build that acknowledges log
# appends before they are fsynced must fail under power cuts of every node.
chaos-selftest: deps
	$(CARGO) build -p skiff -p skiff-chaos --features skiff/planted-bug-stale-read --target-dir target/planted
	@if ./target/planted/debug/skiff-chaos run --scenario partition-leader --duration 30s --seed 1 --out target/planted/results; then \
	  echo "chaos-selftest: the planted stale read was NOT caught"; exit 1; \
	else \
	  echo "chaos-selftest: the planted stale read was caught"; \
	fi
	$(CARGO) build -p skiff -p skiff-chaos --features skiff/planted-bug-early-ack --target-dir target/planted-ack
	@if ./target/planted-ack/debug/skiff-chaos run --scenario power-cut-all --duration 30s --seed 1 --out target/planted-ack/results; then \
	  echo "chaos-selftest: the planted early acknowledgement was NOT caught"; exit 1; \
	else \
	  echo "chaos-selftest: the planted early acknowledgement was caught"; \
	fi

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

verify: deps lint test

# The store benchmark against etcd (see docs/BENCHMARKS.md).
# Both systems with mutual TLS, and a plaintext Skiff beside; `--plaintext` for neither.
bench-store: deps
	$(CARGO) build --release --workspace --bins
	./target/release/skiff-bench store

bench-objects: deps
	$(CARGO) build --release --workspace --bins
	./target/release/skiff-bench objects

bench-scheduling: deps
	$(CARGO) build --release --workspace --bins
	./target/release/skiff-bench scheduling

bench-controllers: deps
	$(CARGO) build --release --workspace --bins
	./target/release/skiff-bench controllers

bench-pods: deps
	$(CARGO) build --release --workspace --bins
	./target/release/skiff-bench pods --oci-runtime runc
	./target/release/skiff-bench pods --oci-runtime crun
	./target/release/skiff-bench pods --oci-runtime crun --agent-flag=--warm-sandboxes=30 --agent-flag=--warm-roots=30

bench-proxy: deps
	$(CARGO) build --release --workspace --bins
	./target/release/skiff-bench proxy

bench-watch: deps
	$(CARGO) build --release --workspace --bins
	./target/release/skiff-bench watch

bench-network: deps
	$(CARGO) build --release --workspace --bins
	./target/release/skiff-bench network

bench-rolling-restart: deps
	$(CARGO) build --release --workspace --bins
	./target/release/skiff-bench rolling-restart

bench-workloads: deps
	$(CARGO) build --release --workspace --bins
	./target/release/skiff-bench workloads

bench-backup: deps
	$(CARGO) build --release --workspace --bins
	./target/release/skiff-bench backup
