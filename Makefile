# make demo: install a Fargate delegate through the function on the moto emulator, show it, delete it.
# make test: formatting, lints, template lint, unit tests and integration tests against moto.
SHELL := /bin/bash
VENV := .venv
VENV_STAMP := $(VENV)/.installed-$(shell cksum < tests/requirements.txt | cut -d' ' -f1)
BIN := target/debug/harness-ecs-delegate-bootstrap

.PHONY: demo test build venv build-BootstrapFunction

$(VENV_STAMP): tests/requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r tests/requirements.txt
	rm -f $(VENV)/.installed-*
	touch $@

venv: $(VENV_STAMP)

build:
	cargo build

# sam build runs this for the BootstrapFunction (BuildMethod: makefile). Keep panic=unwind
# (Cargo.toml's release profile): a panic must still produce a CloudFormation response.
build-BootstrapFunction:
	cargo build --release --locked
	cp target/release/harness-ecs-delegate-bootstrap $(ARTIFACTS_DIR)/bootstrap

demo: venv build
	scripts/demo.sh

test: venv
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings
	$(VENV)/bin/cfn-lint template.yaml
	$(VENV)/bin/python scripts/sam_translate.py template.yaml
	MOTO_SERVER=$(CURDIR)/$(VENV)/bin/moto_server cargo test
