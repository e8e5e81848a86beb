"""Every kernel case under pytest-benchmark (deselected by default; run with -m benchmark).

Per case: the KernelSession prepares inputs, compiles if asked and checks the variant against
its reference (a wrong kernel fails here, before any timing); ppharness.core.timing.measure warms it up
until compilation stops and estimates a call's time, which sets the explicit round count; then
benchmark.pedantic times one call per round on the next input set of the ring, with the device
sync inside the timed callable.
"""

from __future__ import annotations

import math

import pytest
import torch

from ppharness.core import timing
from ppharness.kernels import pbjson
from ppharness.kernels.run import Case, KernelSession, rotating_step

pytestmark = pytest.mark.benchmark

MAX_ROUNDS = 100_000


def test_kernel(benchmark, kcase: Case, ksession: KernelSession) -> None:
    s = ksession
    with kcase.kernel.session(s.backend), torch.no_grad():
        p = s.prepare(kcase)
        benchmark.group = kcase.kernel.name
        step = rotating_step(p.fn, p.ring, s.backend)
        # Warm-up through the shared protocol: until the compile count settles, plus a time estimate.
        warm = timing.measure(step, s.backend, timing.TimingConfig(warmup=2, min_iters=3, min_seconds=0.0), p.prepare_s)
        benchmark.extra_info.update(pbjson.extra_info(s, kcase, p, warm.compile_s))
        if not p.check["passed"]:
            pytest.fail(f"{kcase.id}: output differs from the reference by {p.check['max_rel_err']:.2e} "
                        f"(tolerance {p.check['tolerance']:g})")  # fmt: skip
        per_call = timing.summarize(warm.samples_s)["median_s"]
        rounds = max(pbjson.MIN_ROUNDS, min(MAX_ROUNDS, math.ceil(s.opts.min_seconds / max(per_call, 1e-9))))

        def target() -> None:
            step()
            s.backend.synchronize()  # inside the timed region: pytest-benchmark's clock is the host's

        s.backend.synchronize()
        try:
            benchmark.pedantic(target, rounds=rounds, warmup_rounds=1, iterations=1)
        finally:
            p.ring.clear()  # the ring (up to RING_BYTES) must not outlive its case
            s.backend.release_memory()
