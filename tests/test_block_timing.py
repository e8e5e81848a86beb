"""Block sampling in the measurement loop: a sample is k steps with one device wait at its end.

AWS times lazy-XLA training over many pipelined steps: its scripts log through
`xm.add_step_closure` ("won't block the tracing for next step") and report throughput over a
window of steps (aws-neuron/neuronx-distributed examples/training/llama/
tp_zero1_llama_hf_pretrain/, training_utils.py; audit 7). ppharness/core/timing.py keeps per-step waiting
(k = 1) as the default for every backend but lazy ones, and `timing.steps_per_sample` sets k.
"""

from __future__ import annotations

import contextlib
import json

import pytest
import torch

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
