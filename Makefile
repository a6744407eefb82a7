# `make` alone lists the targets; each carries its one line after `##`.
SHELL := /bin/bash
VENV := .venv
VENV_STAMP := $(VENV)/.installed-$(shell cksum < tests/requirements.txt | cut -d' ' -f1)
# CI may keep cargo's build directory outside the clone (CARGO_TARGET_DIR, see .ci/run).
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)

.PHONY: help demo emulator emulator-stop test check clean build venv package arm64-tools bench reliability-doc stackset-template build-BootstrapFunction
.DEFAULT_GOAL := help

help: ## list the targets
	@grep -E '^[a-zA-Z0-9-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-zA-Z0-9-]+):.*## (.*)/  make \1\t\2/' | expand -t 24

# The package is what Lambda runs: arm64 (Graviton), static musl, so it needs no glibc of the
# runtime image. rust-lld links it; the C in the TLS stack (aws-lc, ring) is compiled by
# Debian's cross gcc against musl's libc that the Rust target ships.
ARM64_TARGET := aarch64-unknown-linux-musl
PACKAGE_DIR := target/lambda/harness-ecs-delegate-bootstrap
# macOS has no Debian cross gcc: zig (PyPI's ziglang, installed into .venv) compiles that C
# for musl instead (scripts/zig-cc). ARM64_CC=zig selects it on Linux too.
UNAME_S ?= $(shell uname -s)
ifeq ($(UNAME_S),Darwin)
ARM64_CC := zig
endif
ARM64_CC ?= gcc
ZIG_VERSION := 0.14.1
ifeq ($(ARM64_CC),zig)
ARM64_CC_ENV := CC_aarch64_unknown_linux_musl=$(CURDIR)/scripts/zig-cc \
	AR_aarch64_unknown_linux_musl=$(CURDIR)/scripts/zig-ar
else
ARM64_CC_ENV := CC_aarch64_unknown_linux_musl=aarch64-linux-gnu-gcc \
	AR_aarch64_unknown_linux_musl=aarch64-linux-gnu-ar
endif
ARM64_ENV := CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER=rust-lld \
	CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_RUSTFLAGS="-C target-cpu=neoverse-n1" \
	$(ARM64_CC_ENV)

$(VENV_STAMP): tests/requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r tests/requirements.txt
	rm -f $(VENV)/.installed-*
	touch $@

venv: $(VENV_STAMP) ## install moto, cfn-lint, the SAM translator, cargo-lambda and zig into .venv

build: ## build the function for this machine (debug)
	cargo build

demo: venv build ## install a Fargate delegate through the function on moto, heal it, upgrade it, delete it
	cargo build --quiet --example ecs_simulator
	scripts/demo.sh

# The emulator a local run uses (README: Run it locally), left running until emulator-stop:
# moto, behind the ECS simulator of the tests (examples/ecs_simulator.rs), which starts the
# service's tasks that moto never starts, so that a request's wait for the delegate ends.
EMULATOR_PORT := 5000
MOTO_PORT := 5001
SIMULATOR := $(TARGET_DIR)/debug/examples/ecs_simulator
emulator: venv ## start moto behind the ECS simulator on 127.0.0.1:5000, seed it as make demo does, leave it running
	@mkdir -p .moto
	@for p in $(EMULATOR_PORT) $(MOTO_PORT); do if (exec 3<>/dev/tcp/127.0.0.1/$$p) 2>/dev/null; then \
		echo "port $$p is in use (an emulator already running? make emulator-stop)" >&2; exit 1; fi; done
	cargo build --quiet --example ecs_simulator
	@nohup $(VENV)/bin/moto_server -H 127.0.0.1 -p $(MOTO_PORT) >.moto/moto.log 2>&1 & echo $$! >.moto/moto.pid
	@for _ in $$(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$(MOTO_PORT)) 2>/dev/null && break; sleep 0.2; done
	@nohup $(SIMULATOR) 127.0.0.1:$(EMULATOR_PORT) http://127.0.0.1:$(MOTO_PORT) >.moto/simulator.log 2>&1 & echo $$! >.moto/simulator.pid
	@for _ in $$(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$(EMULATOR_PORT)) 2>/dev/null && break; sleep 0.2; done
	@$(VENV)/bin/python scripts/seed_demo.py http://127.0.0.1:$(EMULATOR_PORT) >.moto/seeded.json
	@echo "moto behind the ECS simulator on http://127.0.0.1:$(EMULATOR_PORT), seeded (.moto/seeded.json); now: . scripts/local.env"

emulator-stop: ## stop the emulator make emulator started
	@for p in simulator moto; do if [ -f .moto/$$p.pid ]; then kill "$$(cat .moto/$$p.pid)" 2>/dev/null || true; rm -f .moto/$$p.pid; fi; done

check: venv ## formatting, clippy, template lint and SAM translation, unit tests (no root needed)
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings
	$(VENV)/bin/cfn-lint template.yaml
	$(VENV)/bin/python scripts/sam_translate.py template.yaml
	cargo test --lib

# The package first: the Runtime API test boots it, and refuses one older than the sources.
# The test binaries `cargo test` builds run two at a time (scripts/run_tests.py): they mostly
# wait, each on a moto of its own, and the fault matrix alone is nearly half of their time.
test: venv package check ## check, then the integration tests against moto and the arm64 package under qemu
	rm -rf $(TARGET_DIR)/tmp/reliability
	MOTO_SERVER=$(CURDIR)/$(VENV)/bin/moto_server python3 scripts/run_tests.py --first reliability
	python3 scripts/reliability_report.py $(TARGET_DIR)/tmp/reliability $(TARGET_DIR)/reliability.md

# CloudFormation StackSets refuse the SAM transform under service-managed permissions: the same
# template, translated, with the function's code from the parameters CodeS3Bucket and CodeS3Key.
stackset-template: venv ## write the transform-free template for StackSets: target/stackset/template.json
	$(VENV)/bin/python scripts/sam_translate.py template.yaml --stackset $(TARGET_DIR)/stackset/template.json
	$(VENV)/bin/cfn-lint $(TARGET_DIR)/stackset/template.json

# The committed account of the last make test's faults and figures: regenerated on purpose, so that
# a test run leaves the work tree as it found it.
reliability-doc: ## copy the last make test's reliability report to docs/reliability.md
	@test -f $(TARGET_DIR)/reliability.md || { echo "no report yet: run make test first" >&2; exit 1; }
	cp $(TARGET_DIR)/reliability.md docs/reliability.md

# What a fresh machine lacks for the arm64 package and its tests (on Linux as root, as CI does;
# on macOS, or with ARM64_CC=zig, zig from PyPI instead of Debian's cross gcc, and no qemu).
arm64-tools: ## install the arm64 Rust target, and cross gcc and qemu-user (root) or zig (macOS) if missing
	rustup target list --installed | grep -qx $(ARM64_TARGET) || rustup target add $(ARM64_TARGET)
ifeq ($(ARM64_CC),zig)
	@test -x $(VENV)/bin/python || python3 -m venv $(VENV)
	@$(VENV)/bin/python -c 'import ziglang' 2>/dev/null || \
		$(VENV)/bin/pip install --quiet --disable-pip-version-check ziglang==$(ZIG_VERSION)
else
	command -v aarch64-linux-gnu-gcc >/dev/null && command -v qemu-aarch64 >/dev/null || \
		{ export DEBIAN_FRONTEND=noninteractive; \
		  apt-get install -y -q gcc-aarch64-linux-gnu qemu-user >/dev/null || \
		  { apt-get update -q >/dev/null && apt-get install -y -q gcc-aarch64-linux-gnu qemu-user >/dev/null; }; }
endif

# target-cpu as cargo-lambda sets it for arm64: Graviton2 (Neoverse N1) is the oldest Lambda runs.
package: arm64-tools ## the deployable: target/lambda/harness-ecs-delegate-bootstrap/bootstrap.zip (arm64)
	$(ARM64_ENV) cargo build --release --locked --target $(ARM64_TARGET)
	mkdir -p $(PACKAGE_DIR)
	cp $(TARGET_DIR)/$(ARM64_TARGET)/release/harness-ecs-delegate-bootstrap $(PACKAGE_DIR)/bootstrap
	cd $(PACKAGE_DIR) && rm -f bootstrap.zip && zip -q -X bootstrap.zip bootstrap
	@ls -l $(PACKAGE_DIR)

# `sam build` runs this target (template.yaml: BuildMethod makefile) in this directory
# (samconfig.toml: build_in_source), with ARTIFACTS_DIR set to what SAM zips and deploys: the
# function SAM deploys is the package's bootstrap, the binary make test boots under qemu.
build-BootstrapFunction: package ## sam build's target: the package's bootstrap into $ARTIFACTS_DIR
	@test -n "$(ARTIFACTS_DIR)" || { echo "ARTIFACTS_DIR is not set: this is sam build's target (run sam build, or make package)" >&2; exit 1; }
	cp $(PACKAGE_DIR)/bootstrap $(ARTIFACTS_DIR)/bootstrap

# make bench: the benchmark table (docs/benchmarks.md). Release builds of the host binary, of the
# same code with cargo's default release profile, and of a hello-world lambda_runtime function
# (the floor); the aws CLI from PyPI (in a venv of its own: it pins botocore) runs the install
# guide's steps as the anchor. Binaries are copied aside, because `cargo bench` rebuilds the
# function with the tests' hooks for its own use.
BENCH_VENV := .venv-bench
BENCH_BIN := $(TARGET_DIR)/bench-bin

$(BENCH_VENV)/bin/aws:
	python3 -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install --quiet --disable-pip-version-check awscli==1.46.2

# The package's build (static musl, rust-lld, mimalloc) for this machine's x86_64: init as Lambda
# pays it, beside a hello-world built the same way. Debian's gcc compiles the C for it, as its
# cross gcc does for the package. Not position-independent, as the arm64 package is (its target
# links static executables without PIE; x86_64's would link static-pie, which relocates itself
# at every start): only the final link is changed, so the dependencies are built once.
STATIC_TARGET := x86_64-unknown-linux-musl
STATIC_ENV := CARGO_TARGET_X86_64_UNKNOWN_LINUX_MUSL_LINKER=rust-lld \
	CC_x86_64_unknown_linux_musl=gcc AR_x86_64_unknown_linux_musl=ar

bench: venv package $(BENCH_VENV)/bin/aws ## release builds, then the benchmark table (docs/benchmarks.md)
	mkdir -p $(BENCH_BIN)
	rustup target list --installed | grep -qx $(STATIC_TARGET) || rustup target add $(STATIC_TARGET)
	$(STATIC_ENV) cargo rustc --release --locked --target $(STATIC_TARGET) --bin harness-ecs-delegate-bootstrap -- -C relocation-model=static
	cp $(TARGET_DIR)/$(STATIC_TARGET)/release/harness-ecs-delegate-bootstrap $(BENCH_BIN)/function-static
	$(STATIC_ENV) cargo rustc --release --locked --target $(STATIC_TARGET) --features bench-floor --bin hello-floor -- -C relocation-model=static
	cp $(TARGET_DIR)/$(STATIC_TARGET)/release/hello-floor $(BENCH_BIN)/hello-static
	cargo build --release --locked --bin harness-ecs-delegate-bootstrap
	cp $(TARGET_DIR)/release/harness-ecs-delegate-bootstrap $(BENCH_BIN)/function
	cargo build --profile default-release --locked --bin harness-ecs-delegate-bootstrap
	cp $(TARGET_DIR)/default-release/harness-ecs-delegate-bootstrap $(BENCH_BIN)/function-default
	cargo build --release --locked --features bench-floor --bin hello-floor
	cp $(TARGET_DIR)/release/hello-floor $(BENCH_BIN)/hello
	FUNCTION_BIN=$(BENCH_BIN)/function DEFAULT_BIN=$(BENCH_BIN)/function-default \
	HELLO_BIN=$(BENCH_BIN)/hello AWS_CLI=$(CURDIR)/$(BENCH_VENV)/bin/aws \
	STATIC_BIN=$(BENCH_BIN)/function-static STATIC_HELLO_BIN=$(BENCH_BIN)/hello-static \
	PACKAGE_ZIP=$(CURDIR)/$(PACKAGE_DIR)/bootstrap.zip \
	MOTO_SERVER=$(CURDIR)/$(VENV)/bin/moto_server \
	MOTO_VERSION="$$($(VENV)/bin/pip show moto 2>/dev/null | sed -n 's/^Version: //p')" \
	cargo bench --locked --bench benchmark

clean: ## remove the build directory, the package and the virtualenvs
	cargo clean
	rm -rf target $(VENV) $(BENCH_VENV) .moto
