# The README's two commands: `make bench` (set up + the main job) and `make test` (set up + tests).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TORCH  := torch==2.13.0   # the CPU build; an unpinned torch would pull a multi-GB CUDA build

XLA_VENV  := .venv-xla
XLA_STAMP := $(XLA_VENV)/.installed
XLA_PKGS  := torch==2.9.0 torch-xla==2.9.0

.PHONY: bench test test-xla setup clean browser

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

bench: $(STAMP)
	$(BIN)/ppbench run configs/runs/default.yaml --backend cpu --out results
	$(BIN)/ppbench claims results

test: $(STAMP)
	$(BIN)/python -m pytest

$(XLA_STAMP): pyproject.toml
	test -x $(XLA_VENV)/bin/python || $(PYTHON) -m venv $(XLA_VENV)
	$(XLA_VENV)/bin/python -m pip install -q $(XLA_PKGS)
	$(XLA_VENV)/bin/python -m pip install -q -e '.[dev]'
	touch $@

# The neuron-xla backend on torch-xla's CPU PJRT device (tests marked `xla`). XLA's CPU compiler
# stands in for neuronx-cc; optimization level 0 makes its compiles ~5x faster, changing no result.
test-xla: $(XLA_STAMP)
	PJRT_DEVICE=CPU XLA_FLAGS=--xla_backend_optimization_level=0 $(XLA_VENV)/bin/python -m pytest -m xla

# Debian's chromium for the report's headless-browser test (tests/test_report.py skips without it).
browser:
	test -x /usr/bin/chromium || { SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update && $$SUDO apt-get install -y chromium; }

clean:
	rm -rf $(VENV) $(XLA_VENV) build *.egg-info
