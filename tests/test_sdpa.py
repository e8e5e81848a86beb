"""Which SDPA kernel a step ran (ppharness/core/sdpa.py): read from the profiler's op and kernel
names, never inferred from their absence, and recorded beside the dispatcher's prediction."""

from __future__ import annotations

import json

import pytest

from ppharness.backends.cpu import CPUBackend
from ppharness.core import scenarios, sdpa
from ppharness.core.workload import PRESETS
from ppharness.run import config, runner


@pytest.mark.parametrize(
    ("ops", "kernels", "want"),
    [
        (["aten::scaled_dot_product_attention", "aten::_scaled_dot_product_cudnn_attention"], [], "cudnn_attention"),
        (["aten::_scaled_dot_product_flash_attention_for_cpu"], [], "flash_attention"),
        (["aten::_scaled_dot_product_efficient_attention", "aten::_efficient_attention_forward"], [], "efficient_attention"),
        (["aten::_scaled_dot_product_attention_math", "aten::bmm"], [], "math"),
        # CUDA-graph replays: no host op, the device kernels (names as CUDA 12/13 libraries print them)
        (["cudaGraphLaunch"], ["cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16_knob_3_64x64x64"], "cudnn_attention"),
        (["cudaGraphLaunch"], ["fmha_cutlassF_bf16_aligned_64x64_rf_sm80(PyTorchMemEffAttention::AttentionKernel)"], "efficient_attention"),
        (["cudaGraphLaunch"], ["void pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits<64, 128>>"], "flash_attention"),
    ],
)  # fmt: skip
def test_the_kernel_is_named_from_what_the_profiler_saw(ops, kernels, want):
    assert sdpa.classify(ops, kernels)[0] == want


def test_nothing_seen_is_never_called_math():
    name, why = sdpa.classify(["cudaGraphLaunch", "aten::copy_"], ["triton_poi_fused_0", "nvjet_tst_128x64"])
    assert name is None and "no SDPA op or kernel" in why
    assert sdpa.classify([], []) == (None, "the profiler recorded nothing")


def test_a_failing_profiler_is_a_fact_not_a_failed_case():
    def boom():
        raise RuntimeError("CUPTI_ERROR_NOT_INITIALIZED")

    got = sdpa.observe(boom, lambda: None, device_kernels=False)
    assert got["sdpa_ran"] is None and "CUPTI_ERROR_NOT_INITIALIZED" in got["sdpa_seen"]


@pytest.mark.parametrize("scenario", ["train", "prefill", "decode"])
def test_the_cpu_backend_observes_the_kernel_each_step_ran(scenario):
    sizes = {"train": {"seq_len": 16}, "prefill": {"prompt_len": 16}, "decode": {"prompt_len": 8, "new_tokens": 4}}
    be = CPUBackend()
    step = scenarios.build_step(scenarios.Case(scenario, 2, "float32", "none", **sizes[scenario]), PRESETS["tiny"], be)
    step.run()
    got = be.observe_attention(step.run)
    assert got["sdpa_ran"] == "flash_attention", got  # ATen's CPU flash kernel takes every call, masked decode too
    assert got["sdpa_seen"] == "op aten::_scaled_dot_product_flash_attention_for_cpu"


def test_the_record_keeps_what_ran_beside_the_dispatchers_answer(tmp_path, monkeypatch):
    monkeypatch.setattr(runner.ceilings, "get_ceilings", lambda *a, **k: None)  # not what this tests
    raw = {"name": "sdpa", "backends": ["cpu"], "model": "tiny", "check": False,
           "scenarios": {"decode": {"batch": 1, "prompt_len": 8, "new_tokens": 4}},
           "timing": {"warmup": 1, "min_iters": 2, "min_seconds": 0.0}}  # fmt: skip
    (path,) = runner.run(config.validate(raw), tmp_path)
    (rec,) = [json.loads(line) for line in path.read_text().splitlines()]
    ex = rec["timing"]["execution"]
    assert ex["sdpa"] == ex["sdpa_ran"] == "flash_attention" and ex["sdpa_seen"].startswith("op aten::")
    assert not any(w.startswith("SDPA:") for w in rec["validity"]["warnings"])  # they agree: nothing to say


def test_the_dispatcher_asked_under_the_decode_order_is_recorded_when_they_differ(tmp_path, monkeypatch):
    """Where the step ran another kernel than the dispatcher's answer for stand-ins, the row says so."""
    monkeypatch.setattr(runner.ceilings, "get_ceilings", lambda *a, **k: None)
    monkeypatch.setattr(CPUBackend, "observe_attention", lambda self, step: {"sdpa_ran": "math", "sdpa_seen": "op x"})
    raw = {"name": "sdpa", "backends": ["cpu"], "model": "tiny", "check": False,
           "scenarios": {"prefill": {"batch": 1, "prompt_len": 8}}, "timing": {"warmup": 1, "min_iters": 2, "min_seconds": 0.0}}  # fmt: skip
    (path,) = runner.run(config.validate(raw), tmp_path)
    (rec,) = [json.loads(line) for line in path.read_text().splitlines()]
    assert (
        "SDPA: the step ran math, the dispatcher's answer for stand-ins was flash_attention"
        in rec["validity"]["warnings"]
    )
    assert rec["status"] == "ok"  # a fact about the row, not a reason to drop it


def test_observing_keeps_the_profilers_chatter_out_of_the_output_and_passes_the_rest_on(capfd):
    """kineto prints `USDT: ... profiler_start/stop` to fd 2 from C++ at each start and stop (seen
    in every run's output on this host); observe() drops those lines and nothing else."""
    import os

    def step():
        os.write(2, b"USDT:2026-12-06 00:00:00 1:1 Handler.cpp:52] profiler_start\n")  # as kineto writes it
        os.write(2, b"a warning the step printed\n")

    sdpa.observe(step, lambda: None, device_kernels=False)
    err = capfd.readouterr().err
    assert "USDT:" not in err and "a warning the step printed" in err
