# vfiowatch: every target does its own set-up on a fresh Debian/Ubuntu machine (as root),
# idempotently and quickly when already done.
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV  := .venv
PY    := $(VENV)/bin/python
RUN_STAMP  := $(VENV)/.run-stamp
TEST_STAMP := $(VENV)/.test-stamp
PYTEST_ARGS ?=

.PHONY: help setup setup-run host host-run venv venv-run run test test-fast lint bench lab \
	image screenshots wheel man clean

help:
	@echo "make run          set up what running needs (no test tools), then open the live dashboard"
	@echo "make test         set up the test tools too, then run every test tier (as CI does)"
	@echo "make bench        set up, then run the benchmarks side by side with the usual tools"
	@echo "make lab          the QEMU SR-IOV lab alone"
	@echo "make image        the agent's container image (podman/buildah; no registry needed)"
	@echo "make screenshots  regenerate screenshots/ from the bundled demo journal"
	@echo "make lint         ruff, mypy --strict on the pure core, import-linter contracts"
	@echo "make wheel        the wheel to install elsewhere (README: Installing elsewhere), in dist/"
	@echo "make man          regenerate docs/vfiowatch.1 from the argparse definitions"

# Two set-ups. `make run` installs what running the agent needs and nothing else: the `run`
# group of deploy/packages.txt (bcc, iproute2, pciutils, pci.ids; no server, no service is
# enabled) and a venv with the runtime dependencies only. Every other target sets up the test
# tools as well (groups run, test and image; the venv with the test extras).
setup: host venv
setup-run: host-run venv-run

host:
	@deploy/setup-host.sh run test image

host-run:
	@deploy/setup-host.sh run

# The venv comes from the system Python so that Debian's bcc (python3-bpfcc) is importable.
$(RUN_STAMP): pyproject.toml | host-run
	@test -x $(PY) || /usr/bin/python3 -m venv --system-site-packages $(VENV)
	@$(PY) -m pip install -q -e .
	@touch $@

$(TEST_STAMP): pyproject.toml | host
	@test -x $(PY) || /usr/bin/python3 -m venv --system-site-packages $(VENV)
	@$(PY) -m pip install -q --upgrade pip
	@$(PY) -m pip install -q -e '.[test]'
	@touch $@ $(RUN_STAMP)

venv-run: $(RUN_STAMP)
venv: $(TEST_STAMP)

# The agent's modules compiled to bytecode, as an installed wheel or the image has them: the
# checkout is installed editable, and an environment with PYTHONDONTWRITEBYTECODE would
# otherwise compile every module from source at each start (0.1-0.2 s of the first frame).
BYTECODE = $(PY) -m compileall -q diag

# The live dashboard on this host (`vfiowatch demo` plays the bundled incident instead).
run: setup-run
	@$(BYTECODE)
	$(VENV)/bin/vfiowatch tui

lint: setup
	$(VENV)/bin/ruff check diag tests
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

test: setup lint
	$(PY) -m pytest -m "not bench" $(PYTEST_ARGS) tests

test-fast: setup
	$(PY) -m pytest -m "not bench and not lab and not kernel and not ebpf" $(PYTEST_ARGS) tests

# The QEMU SR-IOV lab (tests/lab): builds the guest (slow steps cached in .cache/lab), boots
# its scenarios and prints how long it took. `make test` runs the same tests with the others.
lab: setup
	@start=$$(date +%s); rc=0; $(PY) -m pytest -m lab -p no:randomly $(PYTEST_ARGS) tests/lab || rc=$$?; \
	  echo "lab: took $$(( $$(date +%s) - start )) s"; exit $$rc

bench: setup
	@$(BYTECODE)
	$(PY) -m pytest -m bench -s -p no:randomly tests/bench

# The agent's container image, localhost/vfiowatch:<version> (README: Running fleet-wide).
image: setup
	@deploy/build-image.sh

# The wheel operators install (README: Installing elsewhere): $(DIST)/vfiowatch-<version>-py3-none-any.whl,
# the eBPF probes inside it as diag/_probes.
DIST ?= dist
wheel: setup-run
	@rm -f $(DIST)/vfiowatch-*.whl
	$(PY) -m pip wheel -q --no-deps --wheel-dir $(DIST) .

# docs/vfiowatch.1, the manual page generated from the argparse definitions (a test keeps it
# equal to `vfiowatch man`).
man: setup-run
	$(PY) -m diag man > docs/vfiowatch.1

screenshots: setup
	$(PY) -m diag.tui.screenshots screenshots

clean:
	rm -rf $(VENV) .cache .pytest_cache .mypy_cache .ruff_cache dist
