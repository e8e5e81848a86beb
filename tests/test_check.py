"""The correctness check: the plain forward, and the cached decode path step by step.

The broken backends below are CPU backends with one decode-only fault each, the kind a fast
kernel or a graph runtime can have while the plain forward stays right: a mask the attention
ignores (pytorch/pytorch#177842), a cache written at the wrong position, a token or position
that a replayed graph no longer reads. Each must fail the decode check and invalidate decode rows
only.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import SMOKE

from ppharness import backends
from ppharness.backends.cpu import CPUBackend
from ppharness.core import scenarios, workload
from ppharness.core.scenarios import CheckResult
from ppharness.core.workload import PRESETS
from ppharness.record.load import load
from ppharness.run import config, runner

TINY = PRESETS["tiny"]


class _AllTrueMask:
    """ppharness.core.workload's `F` as a kernel that ignores attn_mask sees it: every position attended."""

    def __getattr__(self, name: str):
        return getattr(F, name)

    @staticmethod
    def scaled_dot_product_attention(q, k, v, attn_mask=None, **kw):
        mask = None if attn_mask is None else torch.ones_like(attn_mask)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, **kw)


class IgnoresMask(CPUBackend):
    """Decode attends over the whole static cache, zeros past `pos` included."""

    def prepare(self, module, example_inputs, scenario, compile_mode):
        fwd = super().prepare(module, example_inputs, scenario, compile_mode)
        if scenario != "decode":
            return fwd

        def run(*args):
            kept, workload.F = workload.F, _AllTrueMask()
            try:
                return fwd(*args)
            finally:
                workload.F = kept

        return run


class StuckCacheWrite(CPUBackend):
    """Every decode step writes its K/V at the prompt end; mask and RoPE still follow `pos`."""

    def prepare(self, module, example_inputs, scenario, compile_mode):
        if scenario == "decode":
            at = example_inputs[1].clone()  # (1,): the prompt end
            for layer in module.layers:
                write = layer.attention.cache.update
                layer.attention.cache.update = lambda pos, k, v, write=write: write(at, k, v)
        return super().prepare(module, example_inputs, scenario, compile_mode)


class StaleInput(CPUBackend):
    """Replays decode with the token or position it saw when prepared, as a graph that captured
    a copy of its input instead of the buffer the step updates in place would."""

    stale = 0  # which argument of fwd(token, pos) goes stale

    def prepare(self, module, example_inputs, scenario, compile_mode):
        fwd = super().prepare(module, example_inputs, scenario, compile_mode)
        if scenario != "decode":
            return fwd
        frozen = example_inputs[self.stale].clone()

        def run(*args):
            args = list(args)
            args[self.stale] = frozen
            return fwd(*args)

        return run


class StaleToken(StaleInput):
    stale = 0


class StalePosition(StaleInput):
    stale = 1


@pytest.mark.parametrize("compile_mode", ["none", "default"])
def test_decode_check_passes_on_the_cpu(compile_mode):
    res = scenarios.check_decode(TINY, backends.make("cpu"), "float32", compile_mode)
    assert res.passed and res.part == "decode", res.detail
    assert 0 <= res.max_rel_err <= res.tolerance == scenarios.TOLERANCE["float32"]


def test_decode_check_passes_in_bfloat16():
    res = scenarios.check_decode(TINY, backends.make("cpu"), "bfloat16", "none")
    assert res.passed, res.detail
    assert res.max_rel_err > 0  # bf16 weights really ran: not a float32 path compared with itself


@pytest.mark.parametrize("broken", [IgnoresMask, StuckCacheWrite, StaleToken, StalePosition])
def test_a_broken_decode_path_fails_while_the_forward_passes(broken):
    backend = broken()
    assert scenarios.check(TINY, backend, "float32", "none").passed  # the plain forward cannot see it
    res = scenarios.check_decode(TINY, backend, "float32", "none")
    assert not res.passed and res.max_rel_err > 10 * res.tolerance
    assert res.detail.startswith("decode step ") and "of 8" in res.detail


def test_a_broken_decode_path_fails_in_bfloat16_too():
    res = scenarios.check_decode(TINY, IgnoresMask(), "bfloat16", "none")
    assert not res.passed, res.max_rel_err


def _judge(got, want, generated):
    return scenarios._judge_decode(got, want, generated, tol=1e-3)


def test_greedy_tokens_must_match_the_reference_where_the_margin_is_clear():
    want = torch.tensor([[[0.0, 1.0, 0.5], [0.9995, 1.0, 0.0]]])  # (B=1, k=2, V=3)
    assert _judge(want.clone(), want, torch.tensor([[1, 1]])).passed
    # Step 2's top two are 5e-4 apart, inside 2 x tolerance: either token is right.
    assert _judge(want.clone(), want, torch.tensor([[1, 0]])).passed
    res = _judge(want.clone(), want, torch.tensor([[2, 1]]))  # step 1: a clear margin, wrong token
    assert not res.passed and res.max_rel_err == 0 and "step 1 of 2: greedy token 2" in res.detail


def test_non_finite_decode_logits_fail():
    want = torch.ones(1, 2, 3)
    got = want.clone()
    got[0, 1, 2] = float("nan")
    res = _judge(got, want, torch.zeros(1, 2, dtype=torch.long))
    assert not res.passed and res.max_rel_err == float("inf")


def test_combined_verdict_keeps_the_worst_error_and_names_the_failed_part():
    fwd = CheckResult(True, 2e-4, 1e-3, "", "forward")
    dec = CheckResult(False, 5e-2, 1e-3, "decode step 1 of 8: ...", "decode")
    both = scenarios.combine_checks([fwd, dec])
    assert not both.passed and both.max_rel_err == 5e-2 and both.part == "forward+decode"
    assert both.detail == "decode check: decode step 1 of 8: ..."
    ok = scenarios.combine_checks([fwd, CheckResult(True, 1e-4, 1e-3, "", "decode")])
    assert ok.passed and ok.max_rel_err == 2e-4 and ok.detail == ""


def test_runner_invalidates_decode_rows_only_and_checks_once_per_dtype_and_compile(tmp_path, monkeypatch):
    calls = []
    for name in ("check", "check_decode"):
        real = getattr(scenarios, name)
        monkeypatch.setattr(scenarios, name, lambda *a, real=real, name=name, **k: calls.append(name) or real(*a, **k))
    monkeypatch.setattr(runner.ceilings, "get_ceilings", lambda *a, **k: None)  # not what this tests
    monkeypatch.setitem(backends.REGISTRY, "ignores-mask", IgnoresMask)
    monkeypatch.setattr(IgnoresMask, "name", "ignores-mask")
    scen = "scenarios={prefill: {batch: 1, prompt_len: 8}, decode: {batch: [1, 2], prompt_len: 8, new_tokens: 4}}"
    cfg = config.load(SMOKE, ["timing.min_seconds=0", "timing.min_iters=2", scen], backend="ignores-mask")
    df = load(runner.run(cfg, tmp_path)).set_index(["workload.scenario", "workload.batch"])
    assert df.loc[("prefill", 1), "status"] == "ok"
    assert df.loc[("prefill", 1), "validity.check"]["part"] == "forward"
    for batch in (1, 2):
        row = df.loc[("decode", batch)]
        assert row["status"] == "invalid" and not row["validity.valid"]
        assert "check failed: decode step" in row["reason"]
        chk = row["validity.check"]
        assert chk["part"] == "decode" and not chk["passed"] and chk["max_rel_err"] > chk["tolerance"]
    # cached: one per dtype and compile mode; decode runs its step-by-step check alone (it compares
    # every step's logits with a CPU float32 forward: a plain forward check would repeat it)
    assert sorted(calls) == ["check", "check_decode"]
    assert df.loc[("decode", 1), "timing.check_s"] > 0 and df.loc[("decode", 2), "timing.check_s"] < 0.05
