# sca_rs — see README.md. Every target that builds or runs things first
# runs the set-up (idempotent, quiet when already done).

CARGO ?= cargo
MODULE := target/release/sca_rs.so
KAMAILIO_MODDIR ?= $(shell dpkg -L kamailio 2>/dev/null | grep -m1 '/kamailio/modules$$' || echo /usr/lib/x86_64-linux-gnu/kamailio/modules)
RUN_DIR := .build/run

.PHONY: all setup build install test unit-test integration-test fuzz-smoke valgrind run clean fmt clippy soak bench fuzz

all: build

setup:
	@bash scripts/setup.sh

build: setup
	$(CARGO) build --release --locked -p sca_rs
	@# a new file renamed over the old one: a Kamailio that has the old
	@# module mapped (make run in another terminal) keeps its copy intact
	@cp -f target/release/libsca_rs.so $(MODULE).tmp && mv -f $(MODULE).tmp $(MODULE)
	@echo "module: $(MODULE)"

install: build
	install -m 0644 $(MODULE) $(KAMAILIO_MODDIR)/sca_rs.so

unit-test: setup
	$(CARGO) test --locked -p sca_core

# the module with test hooks, for the panic-boundary test only
HOOKS_MODULE := target/hooks/release/libsca_rs.so

integration-test: build
	$(CARGO) build --release --locked -p sca_rs --features test-hooks --target-dir target/hooks
	SCA_RS_HOOKS_MODULE=$(CURDIR)/$(HOOKS_MODULE) $(CARGO) test --release --locked -p sca_rs --tests

# every fuzz target for a few seconds over the kept corpus
fuzz-smoke: setup
	FUZZ_SECONDS=$${FUZZ_SECONDS:-10} bash scripts/fuzz.sh

# sca-core's unit, leak and property tests under valgrind (memcheck), then
# integration tests with every Kamailio process under memcheck (host layer)
valgrind: build
	bash scripts/valgrind.sh

test: unit-test valgrind fuzz-smoke integration-test

# Coverage-guided fuzzing, minutes per target (FUZZ_SECONDS, FUZZ_TARGETS;
# FUZZ_MERGE=1 keeps what it found in fuzz/corpus/).
fuzz: setup
	FUZZ_SECONDS=$${FUZZ_SECONDS:-300} bash scripts/fuzz.sh

# The shm-leak soak with many more cycles than make test runs: a million
# subscribe/seize/release/unsubscribe cycles from 8 phones at 1200/s
# (about 14 minutes).
SOAK_CYCLES ?= 1000000
SOAK_PHONES ?= 8
SOAK_RATE ?= 1200
soak: build
	SOAK_CYCLES=$(SOAK_CYCLES) SOAK_PHONES=$(SOAK_PHONES) SOAK_RATE=$(SOAK_RATE) $(CARGO) test --release --locked -p sca_rs --test soak -- --nocapture

# Benchmarks against Debian's C sca.so / keepalive.so and a floor config
# (bench/bench.py); prints the tables and ratios and rewrites
# docs/performance.md, .json and .png (the plot needs Debian's
# python3-matplotlib, installed here rather than in setup: only bench needs it).
BENCH_ARGS ?=
bench: build
	@/usr/bin/python3 -c 'import matplotlib' 2>/dev/null || \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-matplotlib >/dev/null
	python3 bench/bench.py $(BENCH_ARGS)

# Run Kamailio in the foreground with the module on the example config
# (sqlite DB under .build/run, SIP on udp 127.0.0.1:5060, kamcmd socket
# unixs:.build/run/kamailio_ctl).
run: build
	@bash scripts/run-example.sh

fmt:
	$(CARGO) fmt --all

clippy: setup
	$(CARGO) clippy --all-targets --release -- -D warnings

clean:
	$(CARGO) clean
	rm -rf .build
