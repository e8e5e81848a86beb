"""The backend contract, run against every registered backend that is available here.

Unavailable backends (no GPU, no Neuron device) are skipped with the backend's own reason.
"""

import pytest
import torch

from ppharness import backends
from ppharness.backends import discover
from ppharness.core import scenarios
from ppharness.core.scenarios import Case
from ppharness.core.timing import TimingConfig, measure
from ppharness.core.workload import PRESETS

TINY = PRESETS["tiny"]
CASES = [
    Case("train", batch=2, dtype="float32", compile="none", seq_len=16),
    Case("prefill", batch=2, dtype="float32", compile="none", prompt_len=16),
    Case("decode", batch=2, dtype="float32", compile="none", prompt_len=8, new_tokens=4),
]


@pytest.fixture(params=sorted(discover()))
def backend(request) -> backends.Backend:
    cls = discover()[request.param]
    ok, why = cls.available()
    if not ok:
        pytest.skip(f"{request.param} unavailable: {why}")
    return backends.make(request.param)


def test_identity(backend):
    info = backend.describe()
    assert info.backend == backend.name and info.name
    assert info.devices_used >= 1 and info.devices_on_host >= info.devices_used
    assert info.accelerator is not None or info.accelerator_reason  # unknown peak: say why
    assert backend.device_count() >= 1
    assert "none" in backend.compile_modes and "float32" in backend.dtypes


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.scenario)
def test_every_scenario_runs_and_measures(backend, case):
    step = scenarios.build_step(case, TINY, backend, seed=0)
    m = measure(step.run, backend, TimingConfig(warmup=1, min_iters=3, min_seconds=0), step.prepare_s)
    assert m.valid, m.reasons
    assert len(m.samples_s) >= 3 and all(s > 0 for s in m.samples_s)
    assert m.compiles_in_window in (0, None)
    out = m.last_output.cpu()
    assert out.ndim == 0 if case.scenario == "train" else out.shape[0] == case.batch


def test_check_passes_in_float32(backend):
    res = scenarios.check(TINY, backend, "float32", "none")
    assert res.passed, res.detail


def test_decode_check_passes_in_float32(backend):
    """The cached decode path, step by step, against a full forward (tests/test_check.py)."""
    res = scenarios.check_decode(TINY, backend, "float32", "none")
    assert res.passed, res.detail


def test_training_reduces_the_loss(backend):
    """The train step really trains: the same batch's loss falls over a few steps."""
    case = Case("train", batch=2, dtype="float32", compile="none", seq_len=16)
    step = scenarios.build_step(case, TINY, backend)
    losses = [step.run().item() for _ in range(8)]
    assert losses[-1] < losses[0]


def test_timer_and_sync(backend):
    with backend.timer() as t:
        torch.ones(64, 64, device=backend.device).sum()
    backend.synchronize()
    assert t.elapsed_s > 0 and t.host_s > 0
    count = backend.compile_count()
    assert count is None or count >= 0
