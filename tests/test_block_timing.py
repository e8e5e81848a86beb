"""Block sampling in the measurement loop: a sample is k steps with one device wait at its end, k
fixed by the run file or the backend, or chosen from the step time for short steps (a CUDA-graph
decode step, a 10 us kernel), which are also flagged when the host could not launch them fast enough.

AWS times lazy-XLA training over many pipelined steps: its scripts log through
`xm.add_step_closure` ("won't block the tracing for next step") and report throughput over a
window of steps (aws-neuron/neuronx-distributed examples/training/llama/
tp_zero1_llama_hf_pretrain/, training_utils.py; audit 7). ppharness/core/timing.py keeps per-step waiting
(k = 1) as the default for every backend but lazy ones, and `timing.steps_per_sample` sets k.
"""

from __future__ import annotations

import contextlib
import json
import math

import pytest
import torch

from ppharness.core import timing
from ppharness.core.device import Backend, Timer
from ppharness.core.timing import TimingConfig, measure
from ppharness.errors import BenchError
from ppharness.run import config, runner


class CountingBackend(Backend):
    """Counts steps and device waits; each timed block 'takes' 0.1 s per step it holds."""

    def __init__(self, default_k: int = 1):
        super().__init__()
        self.default_k, self.steps, self.waits, self.in_block = default_k, 0, 0, 0

    def steps_per_sample(self) -> int:
        return self.default_k

    def synchronize(self) -> None:
        self.waits += 1

    @contextlib.contextmanager
    def timer(self):
        t = Timer()
        self.synchronize()
        start = self.steps
        yield t
        self.synchronize()
        t.elapsed_s = t.host_s = 0.1 * (self.steps - start)

    def compile_count(self) -> int:
        return 0

    def step(self) -> torch.Tensor:
        self.steps += 1
        return torch.tensor(1.0)


def test_a_sample_is_a_block_of_steps_with_one_wait_and_per_step_times():
    be = CountingBackend()
    m = measure(be.step, be, TimingConfig(warmup=1, min_iters=3, min_seconds=0, max_iters=3, steps_per_sample=4))
    assert m.steps_per_sample == 4 and len(m.samples_s) == 3
    assert be.steps == 1 + 3 * 4  # one warm-up step, then 3 blocks of 4
    assert be.waits == 2 * (1 + 3)  # the timer's two waits per warm-up step and per block, none inside a block
    assert m.samples_s == pytest.approx([0.1, 0.1, 0.1]) and m.host_samples_s == pytest.approx([0.1] * 3)


def test_the_backend_chooses_k_unless_the_run_file_does():
    be = CountingBackend(default_k=10)
    m = measure(be.step, be, TimingConfig(warmup=1, min_iters=2, min_seconds=0, max_iters=2))
    assert m.steps_per_sample == 10 and be.steps == 1 + 20
    be = CountingBackend(default_k=10)
    m = measure(be.step, be, TimingConfig(warmup=1, min_iters=2, min_seconds=0, max_iters=2, steps_per_sample=1))
    assert m.steps_per_sample == 1 and be.steps == 1 + 2  # per-step waiting, on request
    assert Backend().steps_per_sample() == 1  # every other backend waits after each step by default


def test_the_record_states_k_and_counts_every_step_of_the_window(monkeypatch, tmp_path):
    monkeypatch.setattr(runner.ceilings, "get_ceilings", lambda *a, **k: None)  # not what this tests
    raw = {"name": "block", "backends": ["cpu"], "model": "tiny", "check": False,
           "scenarios": {"train": {"batch": 1, "seq_len": 8}},
           "timing": {"warmup": 1, "min_iters": 2, "max_iters": 2, "min_seconds": 0.0, "steps_per_sample": 3}}  # fmt: skip
    (path,) = runner.run(config.validate(raw), tmp_path)
    (rec,) = [json.loads(line) for line in path.read_text().splitlines()]
    assert rec["timing"]["steps_per_sample"] == 3 and rec["timing"]["n"] == 2
    assert rec["metrics"]["tokens_per_s"] == pytest.approx(8 / rec["timing"]["median_s"])  # per step


def test_steps_per_sample_must_be_positive_in_a_run_file():
    raw = {"name": "x", "backends": ["cpu"], "model": "tiny", "scenarios": {"train": {"batch": 1, "seq_len": 8}},
           "timing": {"steps_per_sample": 0}}  # fmt: skip
    with pytest.raises(BenchError, match="timing.steps_per_sample must be a positive integer"):
        config.validate(raw)


# ---------------------------------------------------------------- short steps: blocks chosen by the step time
class ShortSteps(CountingBackend):
    """A device-clocked backend whose steps take `step_s` of device time and `enqueue_s` of host
    time to queue; it times short steps in blocks below `under_s` (as CUDA does below 2 ms)."""

    def __init__(self, step_s: float, enqueue_s: float = float("nan"), under_s: float | None = 2e-3):
        super().__init__()
        self.step_s, self.enqueue_s, self.under_s = step_s, enqueue_s, under_s

    def block_under_s(self):
        return self.under_s

    @contextlib.contextmanager
    def timer(self):
        t = Timer()
        start = self.steps
        yield t
        n = self.steps - start
        t.elapsed_s = t.host_s = self.step_s * n
        t.enqueue_s = self.enqueue_s * n


def test_a_sub_millisecond_step_is_timed_in_blocks_of_about_block_s():
    be = ShortSteps(step_s=5e-4)
    m = measure(be.step, be, TimingConfig(warmup=2, min_iters=4, min_seconds=0, max_iters=4))
    k = timing.block_steps(5e-4, 2e-3)
    assert k == math.ceil(timing.BLOCK_S / 5e-4) == 20 and m.steps_per_sample == k
    assert be.steps == 2 + timing.PROBE_STEPS + 4 * k  # warm-up, the probe steps, then 4 blocks
    assert m.samples_s == pytest.approx([5e-4] * 4)  # per step, whatever the block
    assert m.blocking == {
        "under_s": 2e-3,
        "probe_step_s": 5e-4,
        "probe_enqueue_s": pytest.approx(float("nan"), nan_ok=True),
    }
    assert m.launch_bound is None  # this timer cannot say how long queueing took


def test_block_size_formula():
    assert timing.block_steps(3e-3, 2e-3) == 1  # long enough: a wait after each step
    assert timing.block_steps(1.9e-3, 2e-3) == 6  # ceil(10 ms / 1.9 ms)
    assert timing.block_steps(1e-6, 2e-3) == timing.MAX_BLOCK
    assert timing.block_steps(1e-3, 0) == 1 and timing.block_steps(0.0, 2e-3) == 1  # never; a clock reading 0


def test_a_long_step_a_fixed_k_a_group_or_a_host_device_keeps_one_wait_per_step():
    assert (
        measure(
            *_pair(ShortSteps(5e-3)), TimingConfig(warmup=1, min_iters=2, min_seconds=0, max_iters=2)
        ).steps_per_sample
        == 1
    )
    fixed = TimingConfig(warmup=1, min_iters=2, min_seconds=0, max_iters=2, steps_per_sample=3)
    assert measure(*_pair(ShortSteps(5e-4)), fixed).steps_per_sample == 3  # the run file's k wins
    never = TimingConfig(warmup=1, min_iters=2, min_seconds=0, max_iters=2, block_under_s=0.0)
    assert measure(*_pair(ShortSteps(5e-4)), never).steps_per_sample == 1
    be = ShortSteps(5e-4)
    m = measure(be.step, be, TimingConfig(warmup=1, min_iters=2, min_seconds=0, max_iters=2), agree=lambda stop: stop)
    assert m.steps_per_sample == 1 and m.blocking is None  # ranks must run the same steps: no k of their own
    host = CountingBackend()  # a host device: block_under_s None
    assert measure(host.step, host, TimingConfig(warmup=1, min_iters=2, min_seconds=0, max_iters=2)).blocking is None


def _pair(be):
    return be.step, be


def test_a_step_the_host_cannot_queue_faster_than_the_device_runs_is_launch_bound():
    cfg = TimingConfig(warmup=1, min_iters=3, min_seconds=0, max_iters=3)
    m = measure(*_pair(ShortSteps(step_s=2e-5, enqueue_s=1.9e-5)), cfg)  # a 20 us kernel, 19 us to launch
    assert m.launch_bound is True and m.valid
    assert any(w.startswith("launch-bound: queueing one step took 19 us") for w in m.warnings), m.warnings
    m = measure(*_pair(ShortSteps(step_s=5e-4, enqueue_s=1e-4)), cfg)  # a graph replay: 100 us to queue 500 us
    assert m.launch_bound is False and not any("launch-bound" in w for w in m.warnings)


def test_the_cpu_backend_times_blocks_when_the_run_file_asks(tmp_path, monkeypatch):
    """The block logic on the real CPU backend, end to end through the runner: the record states
    the block size, the probe's step time, and tokens/s per step."""
    monkeypatch.setattr(runner.ceilings, "get_ceilings", lambda *a, **k: None)  # not what this tests
    raw = {"name": "block", "backends": ["cpu"], "model": "tiny", "check": False,
           "scenarios": {"decode": {"batch": 1, "prompt_len": 8, "new_tokens": 4}},
           "timing": {"warmup": 1, "min_iters": 3, "max_iters": 3, "min_seconds": 0.0, "block_under_s": 10.0}}  # fmt: skip
    (path,) = runner.run(config.validate(raw), tmp_path)
    (rec,) = [json.loads(line) for line in path.read_text().splitlines()]
    t = rec["timing"]
    assert t["blocking"]["under_s"] == 10.0 and 0 < t["blocking"]["probe_step_s"] < 10.0
    assert t["steps_per_sample"] == timing.block_steps(t["blocking"]["probe_step_s"], 10.0) > 1
    assert t["launch_bound"] is None and t["n"] == 3
    assert rec["metrics"]["tokens_per_s"] == pytest.approx(1 / t["median_s"])
    with pytest.raises(BenchError, match="timing.block_under_s must be a finite number >= 0"):
        config.validate({**raw, "timing": {"block_under_s": -1}})
