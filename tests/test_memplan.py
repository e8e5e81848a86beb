"""The memory plan beyond training (ppharness/run/memplan.py): prefill and decode estimated
(weights, KV cache, activations) and checked against measured peaks on the CPU; a run whose
cases cannot fit the host (the CPU) or the device is refused before any model is built, with
the figures; `batch: auto` stops before a batch the host cannot hold.

The training estimate's own check against a measured peak is tests/test_parallel.py's."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import REPO, SMOKE
from typer.testing import CliRunner

from ppharness.cli import app
from ppharness.core import scenarios, workload
from ppharness.run import config, memplan, sweep

runner = CliRunner()
GIB = 2**30


def _cfg(*sets: str, path=SMOKE, backend: str | None = None):
    return config.load(path, list(sets), backend)


def test_the_inference_plan_counts_weights_cache_and_activations():
    cfg = workload.model_config("small")
    p = sum(memplan.parameter_sizes(cfg)["all"])
    case = scenarios.Case("decode", batch=8, dtype="bfloat16", compile="none", prompt_len=256, new_tokens=64)
    plan = memplan.inference(cfg, case)
    assert plan.weights == 2 * p and plan.gradients == plan.optimizer == 0
    # K and V, every layer, every sequence, the whole static cache (prompt + new tokens), in bf16
    assert plan.kv_cache == 2 * cfg.n_layers * 8 * cfg.n_kv_heads * (256 + 64) * cfg.head_dim * 2
    assert plan.total == plan.weights + plan.kv_cache + plan.activations
    prefill = memplan.inference(
        cfg, scenarios.Case("prefill", batch=8, dtype="bfloat16", compile="none", prompt_len=256)
    )
    assert prefill.kv_cache == plan.kv_cache * 256 // 320
    twice = memplan.inference(
        cfg, scenarios.Case("prefill", batch=16, dtype="bfloat16", compile="none", prompt_len=256)
    )
    assert twice.activations > 1.9 * prefill.activations and twice.weights == prefill.weights


def test_autocast_weight_casts_are_counted_in_bf16_training_only():
    cfg = workload.model_config("small")
    fp32 = memplan.plan(cfg, "ddp", 1, 4, 256, "float32", False)
    bf16 = memplan.plan(cfg, "ddp", 1, 4, 256, "bfloat16", False)
    ckpt = memplan.plan(cfg, "ddp", 1, 4, 256, "bfloat16", True)
    assert fp32.weight_casts == 0 and bf16.weight_casts == 2 * workload.matmul_params(cfg)
    head = cfg.dim * cfg.vocab_size
    assert ckpt.weight_casts == 2 * (head + (workload.matmul_params(cfg) - head) // cfg.n_layers)


def _peak(scenario: str, dtype: str, batch: int, prompt: int, new: int) -> tuple[int, int]:
    """Peak RSS of building and running 3 steps of `small` above the RSS before, in a fresh process,
    after the same step at batch 1 has faulted its kernels' code in (tests/test_parallel.py _peak)."""
    sizes = {"prompt_len": prompt, **({"new_tokens": new} if scenario == "decode" else {})}
    code = f"""
import torch
from ppharness.core import scenarios, workload
from ppharness.backends.cpu import CPUBackend
torch.set_num_threads(1)
cfg = workload.model_config("small")
workload._seeded_weights(cfg, 0)  # the kept draw is not part of the step
status = lambda key: int([l for l in open("/proc/self/status") if l.startswith(key)][0].split()[1]) * 1024
warm = scenarios.Case("{scenario}", batch=1, dtype="{dtype}", compile="none", **{ {k: 8 for k in sizes} })
step = scenarios.build_step(warm, cfg, CPUBackend(), 0)
for _ in range(2):
    step.run()
del step
r0 = status("VmRSS")
open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM)
step = scenarios.build_step(scenarios.Case("{scenario}", batch={batch}, dtype="{dtype}", compile="none", **{sizes}),
                            cfg, CPUBackend(), 0)
for _ in range(3):
    step.run()
print(status("VmHWM") - r0)
"""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}  # freed tensors leave RSS (tests/test_parallel.py)
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    case = scenarios.Case(scenario, batch=batch, dtype=dtype, compile="none", **sizes)
    return int(out.stdout.split()[-1]), memplan.inference(workload.model_config("small"), case).total


# Measured on an AMD EPYC with AVX-512 BF16 (2026-12-06, code warmed): plan/measured 1.00 (prefill fp32,
# batch 16 x 256; bf16 at batch 8), 1.02 (decode fp32, batch 8, 256 + 64), 1.07 (decode bf16, batch 16).
# The plan counts SDPA's math path copying the cache per query head in decode, which a fused kernel
# does not: it may run over.
@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
@pytest.mark.parametrize("scenario,dtype", [("prefill", "float32"), ("decode", "bfloat16")])
def test_the_inference_estimate_against_measured_peak_memory_on_cpu(scenario, dtype):
    measured, estimated = _peak(scenario, dtype, 16, 256, 64)
    assert 0.85 <= estimated / measured <= 1.15, (estimated, measured)


# --- refusals -------------------------------------------------------------------------------------
def test_an_absurd_cpu_run_is_refused_before_any_model_is_built(tmp_path, monkeypatch):
    """llama3-8b-shape at train batch 512 on the CPU was built and hung; now: exit 2, one line with
    the figures, nothing written, no model built."""

    def never(*args, **kwargs):
        raise AssertionError("a model was built")

    monkeypatch.setattr(workload, "build_model", never)
    monkeypatch.setattr(scenarios, "build_model", never)
    out = tmp_path / "out"
    args = ["run", str(SMOKE), "--out", str(out), "--set", "model=llama3-8b-shape",
            "--set", "scenarios.train.batch=512"]  # fmt: skip
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    (line,) = [x for x in res.stderr.splitlines() if x.startswith("error: ")]
    assert "cpu train batch=512 seq_len=32" in line and "GiB (weights 29.9, gradients 29.9" in line, line
    assert "this host has" in line and "MemAvailable" in line and "--dry-run" in line, line
    assert not out.exists()


@pytest.mark.parametrize(
    "sets,refused",
    [
        (["scenarios={prefill: {batch: 100000, prompt_len: 128}}"], "cpu prefill batch=100000 prompt_len=128"),
        (["scenarios={decode: {batch: 100000, prompt_len: 64, new_tokens: 64}}"], "cpu decode batch=100000"),
        (["scenarios={train: {batch: 100000, seq_len: 128}}"], "cpu train batch=100000 seq_len=128"),
    ],
)
def test_every_scenario_is_held_against_the_hosts_memory(sets, refused):
    cfg = _cfg(*sets)
    errors, warnings = memplan.check_run(cfg, 1, host=8 * GIB)
    assert len(errors) == 1 and errors[0].startswith(refused) and "7.2 GiB usable" in errors[0], errors
    assert not warnings
    assert memplan.check_run(_cfg(), 1, host=8 * GIB) == ([], [])  # the smoke run fits 8 GiB


def test_the_host_must_hold_the_models_build_on_any_backend():
    cfg = _cfg("model=llama3-1b-shape", "instance=p4d.24xlarge", backend="cuda")
    errors, _ = memplan.check_run(cfg, 1, host=8 * GIB)
    assert any(e.startswith("building the model needs 13.8 GiB of host memory") for e in errors), errors
    assert memplan.host_build(cfg.model_config, check=False) == 8 * sum(
        memplan.parameter_sizes(cfg.model_config)["all"]
    )


def test_on_an_accelerator_an_oom_case_is_a_result_unless_nothing_fits():
    """A sweep whose largest batches cannot fit one A100 runs (their out-of-memory rows are the
    frontier) with a warning; a run none of whose cases fits is refused."""
    some = _cfg("model=llama3-1b-shape", "instance=p4d.24xlarge", "dtype=bfloat16",
                "scenarios={prefill: {batch: [1, 4096], prompt_len: 2048}}", backend="cuda")  # fmt: skip
    errors, warnings = memplan.check_run(some, 1, host=1024 * GIB)
    assert not errors and len(warnings) == 1 and "prefill batch=4096" in warnings[0], warnings
    none = _cfg("model=llama3-8b-shape", "instance=p4d.24xlarge", "dtype=bfloat16",
                "scenarios={train: {batch: [1, 2], seq_len: 2048}}", backend="cuda")  # fmt: skip
    errors, _ = memplan.check_run(none, 1, host=1024 * GIB)
    assert errors and all("GPU of NVIDIA A100 SXM4 40GB" in e for e in errors), errors


def test_the_dry_run_plans_prefill_and_decode_with_their_kv_cache():
    res = runner.invoke(app, ["run", str(SMOKE), "--dry-run", "--wide"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    rows = [line.split() for line in res.stdout.splitlines() if line.startswith("cpu ")]
    assert [r[1] for r in rows] == ["train", "prefill", "decode"], res.stdout
    assert "KV cache" in res.stdout and "host: building the model takes" in res.stdout


def test_an_auto_batch_sweep_stops_before_a_batch_the_host_cannot_hold():
    case = scenarios.Case("prefill", batch=1, dtype="float32", compile="none", prompt_len=8)
    seen = []

    def measure(c):
        seen.append(c.batch)
        return {"status": "ok", "metrics": {"tokens_per_s": 100.0 * c.batch}}

    def fits(c):
        return None if c.batch <= 4 else f"batch {c.batch} needs 99 GiB"

    out = list(sweep.auto_batches(case, measure, fits=fits))
    assert seen == [1, 2, 4]
    assert out[-1][1]["workload"]["batch_auto_stop"] == "batch 8 would not fit: batch 8 needs 99 GiB"


def test_host_refusal_is_the_cpus_only():
    cfg = _cfg("scenarios={prefill: {batch: 100000, prompt_len: 128}}")
    (case,) = config.expand(cfg)
    assert memplan.host_refusal(cfg, "cpu", case) is not None  # MemAvailable of this host: no 100k batch
    assert memplan.host_refusal(cfg, "cuda", case) is None  # a device's out-of-memory row is a result
