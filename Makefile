# Two commands do all the set-up on a fresh Debian 12 machine (as root):
#   make demo   - install, bring the lab up, run the example flow
#   make test   - install, bring the lab up, run every test
SHELL := /bin/bash
VENV ?= .venv
BIN := $(VENV)/bin
PYTHON ?= python3

# What the controller needs: the lab builder's tools, SSH and Vagrant (the
# Vagrantfile is validated by a test), DNS tools for people, Pebble (the
# ACME test CA that tests/unit/test_acme.py runs on 127.0.0.1), PostgreSQL
# (the state database tests start a throwaway server on 127.0.0.1, tests/unit/pg.py),
# and restic (backups run here; the lab's backup host only serves SFTP).
APT_PACKAGES := debootstrap iproute2 util-linux mount openssh-client \
	python3-venv vagrant bind9-dnsutils curl ca-certificates \
	libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz-subset0 fonts-liberation2 poppler-utils \
	pebble postgresql restic

.PHONY: install apt venv demo test unit bench lab-up lab-down clean

install: apt venv

apt:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing: $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

$(BIN)/provision: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	@touch $@

venv: $(BIN)/provision

lab-up: install
	$(BIN)/provision lab up

lab-down:
	$(BIN)/provision lab down

demo: install
	examples/demo.sh

unit: install
	$(BIN)/pytest -q tests/unit

# The unit tests need no lab: they run beside the lab tests (which spend much of
# their time waiting on the lab's hosts), their report printed after the lab's.
test: lab-up
	@unit_log=$$(mktemp); \
	PROVISIONER_REQUIRE_PG=1 $(BIN)/pytest -q -p no:cacheprovider tests/unit >"$$unit_log" 2>&1 & unit=$$!; \
	PROVISIONER_REQUIRE_LAB=1 $(BIN)/pytest -q -p no:cacheprovider --durations=40 tests/lab; lab=$$?; \
	wait $$unit; unit_rc=$$?; \
	echo "== unit tests (run beside the lab tests)"; cat "$$unit_log"; rm -f "$$unit_log"; \
	echo "== lab tests: exit $$lab; unit tests: exit $$unit_rc"; \
	[ $$lab -eq 0 ] && [ $$unit_rc -eq 0 ]

# How fast the toolkit is on the lab (docs/benchmarks.md); it removes every site it made.
# A quick run: make bench BENCH_ARGS="--batch 10 --audit-sites 20 --serial-sample 3"
bench: lab-up
	$(BIN)/python benchmarks/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
