# sca_rs — see README.md. Every target that builds or runs things first
# runs the set-up (idempotent, quiet when already done).

CARGO ?= cargo
RUN_DIR := .build/run

# The Kamailio to build and test against: the host's own (default), or
# another Debian suite's (bookworm, trixie, forky) running in a root made by
# scripts/suite.sh under .build/suites/<suite>/; each suite builds into its
# own target/<suite>/.
HOST_SUITE := $(shell . /etc/os-release 2>/dev/null && echo $$VERSION_CODENAME)
KAMAILIO_SUITE ?= $(HOST_SUITE)
ifeq ($(KAMAILIO_SUITE),$(HOST_SUITE))
TARGET_DIR := target
KAMAILIO_MODDIR ?= $(shell dpkg -L kamailio 2>/dev/null | grep -m1 '/kamailio/modules$$' || echo /usr/lib/x86_64-linux-gnu/kamailio/modules)
else
SUITE_DIR := $(CURDIR)/.build/suites/$(KAMAILIO_SUITE)
TARGET_DIR := target/$(KAMAILIO_SUITE)
KAMAILIO_MODDIR := /usr/lib/x86_64-linux-gnu/kamailio/modules
# build.rs: that suite's headers, kamailio -v and libsrdb1 (RUNPATH as seen
# inside the root); the test harness: its binaries and modules
export SCA_RS_KAMAILIO_HEADERS := $(SUITE_DIR)/headers
export SCA_RS_KAMAILIO_LIBDIR := $(SUITE_DIR)/root/usr/lib/x86_64-linux-gnu/kamailio
export SCA_RS_KAMAILIO_RUNPATH := /usr/lib/x86_64-linux-gnu/kamailio
export KAMAILIO_BIN := $(SUITE_DIR)/bin/kamailio
export KAMCMD_BIN := $(SUITE_DIR)/bin/kamcmd
export KAMAILIO_MPATH := $(SUITE_DIR)/root$(KAMAILIO_MODDIR)
export KAMAILIO_SUITE_ROOT := $(SUITE_DIR)/root
export SCA_RS_MODULE := $(CURDIR)/$(TARGET_DIR)/release/sca_rs.so
endif
export CARGO_TARGET_DIR := $(CURDIR)/$(TARGET_DIR)
MODULE := $(TARGET_DIR)/release/sca_rs.so

.PHONY: all setup build install test unit-test integration-test fuzz-smoke valgrind run clean fmt clippy soak bench fuzz deb deb-test

all: build

setup:
	@bash scripts/setup.sh
	@bash scripts/suite.sh $(KAMAILIO_SUITE)

build: setup
	$(CARGO) build --release --locked -p sca_rs
	@# a new file renamed over the old one: a Kamailio that has the old
	@# module mapped (make run in another terminal) keeps its copy intact
	@cp -f $(TARGET_DIR)/release/libsca_rs.so $(MODULE).tmp && mv -f $(MODULE).tmp $(MODULE)
	@echo "module: $(MODULE)"

install: build
ifneq ($(KAMAILIO_SUITE),$(HOST_SUITE))
	@echo "make install installs into the host's Kamailio; for $(KAMAILIO_SUITE) use make deb KAMAILIO_SUITE=$(KAMAILIO_SUITE)" >&2; exit 1
endif
	install -m 0644 $(MODULE) $(KAMAILIO_MODDIR)/sca_rs.so

# A Debian package of the module for the Kamailio it was built against
# (depends on exactly that upstream version); the .deb's path is the last
# line of the output.
deb: build
	@bash scripts/deb.sh $(KAMAILIO_SUITE) $(MODULE)

# Installs that package with dpkg -i in a fresh copy (overlay) of the
# suite's root and serves a SUBSCRIBE with the installed example config.
deb-test: deb
	@bash scripts/deb-test.sh $(KAMAILIO_SUITE) "$$(bash scripts/deb.sh --path $(KAMAILIO_SUITE) $(MODULE))"

unit-test: setup
	$(CARGO) test --locked -p sca_core

# the module with test hooks, for the panic-boundary test only
HOOKS_MODULE := $(TARGET_DIR)/hooks/release/libsca_rs.so

# TESTS="--test rpc --test kemi" runs only those (default: all of tests/)
integration-test: build
	$(CARGO) build --release --locked -p sca_rs --features test-hooks --target-dir $(TARGET_DIR)/hooks
	SCA_RS_HOOKS_MODULE=$(CURDIR)/$(HOOKS_MODULE) $(CARGO) test --release --locked -p sca_rs --no-fail-fast $(or $(TESTS),--tests)

# every fuzz target for a few seconds over the kept corpus
fuzz-smoke: setup
	FUZZ_SECONDS=$${FUZZ_SECONDS:-10} bash scripts/fuzz.sh

# sca-core's unit, leak and property tests under valgrind (memcheck), then
# integration tests with every Kamailio process under memcheck (host layer)
valgrind: build
	bash scripts/valgrind.sh

ifeq ($(KAMAILIO_SUITE),$(HOST_SUITE))
test: unit-test valgrind fuzz-smoke integration-test
else
# another suite: the integration suite against its Kamailio, and the package
# (unit tests, valgrind and fuzzing do not depend on the Kamailio version)
test: integration-test deb-test
endif

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
# docs/performance.md, .json and .png, then instructions per SUBSCRIBE
# under callgrind (bench/callgrind.py, printed only). The plot needs Debian's
# python3-matplotlib, installed here rather than in setup: only bench needs it.
BENCH_ARGS ?=
bench: build
	@/usr/bin/python3 -c 'import matplotlib' 2>/dev/null || \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-matplotlib >/dev/null
	python3 bench/bench.py $(BENCH_ARGS)
	python3 bench/callgrind.py --variants floor,rust-nodb,rust

# Run Kamailio in the foreground with the module on the example config
# (sqlite DB under .build/run, SIP on udp 127.0.0.1:5060, kamcmd socket
# unixs:.build/run/kamailio_ctl).
run: build
ifneq ($(KAMAILIO_SUITE),$(HOST_SUITE))
	@echo "make run runs the host's Kamailio; for $(KAMAILIO_SUITE) install make deb KAMAILIO_SUITE=$(KAMAILIO_SUITE)'s package on a $(KAMAILIO_SUITE) machine" >&2; exit 1
endif
	@bash scripts/run-example.sh

fmt:
	$(CARGO) fmt --all

clippy: setup
	$(CARGO) clippy --all-targets --release -- -D warnings

clean:
	$(CARGO) clean
	bash scripts/suite.sh --clean
