"""The measurement protocol, driven by a fake backend whose clock and compiler we control."""

import contextlib

import numpy as np
import pytest
import torch

from ppharness.core.device import Backend, Timer
from ppharness.core.timing import PLENTY_SAMPLES, TimingConfig, measure, summarize


class FakeBackend(Backend):
    """Steps 'take' the times we script; compile_count rises when we say it compiled."""

    def __init__(self, times, compiles_at=()):
        super().__init__()
        self.times, self.compiles_at, self.i, self.compiles = list(times), set(compiles_at), 0, 0

    @contextlib.contextmanager
    def timer(self):
        t = Timer()
        yield t
        t.elapsed_s = t.host_s = self.times[min(self.i, len(self.times) - 1)]
        if self.i in self.compiles_at:
            self.compiles += 1
        self.i += 1

    def compile_count(self):
        return self.compiles


def step():
    return torch.tensor(1.0)


def test_warmup_runs_until_compilation_stops_and_counts_it_as_compile_time():
    be = FakeBackend([5.0, 4.0, 0.1, 0.1, 0.1, 0.1], compiles_at={0, 1})
    m = measure(step, be, TimingConfig(warmup=1, min_iters=3, min_seconds=0), prepare_s=1.0)
    assert m.warmup_iters == 3  # two compiling steps, then one clean one
    assert m.compile_s == pytest.approx(1.0 + 5.0 + 4.0)  # never mixed into the samples
    assert m.samples_s == [0.1, 0.1, 0.1] and m.valid


def test_compile_inside_the_window_is_invalid():
    be = FakeBackend([1.0] + [0.1] * 10, compiles_at={0, 4})  # a recompile at the 3rd sample
    m = measure(step, be, TimingConfig(warmup=1, min_iters=5, min_seconds=0))
    assert not m.valid and m.compiles_in_window == 1
    assert any("compiled inside the measured window" in r for r in m.reasons)


def test_still_compiling_after_max_warmup_is_invalid():
    be = FakeBackend([0.1] * 20, compiles_at=set(range(20)))
    m = measure(step, be, TimingConfig(warmup=1, max_warmup=4, min_iters=2, min_seconds=0))
    assert m.warmup_iters == 4 and any("still compiling" in r for r in m.reasons)


def test_too_few_samples_and_non_finite_output_are_invalid():
    m = measure(step, FakeBackend([0.1]), TimingConfig(min_iters=5, min_seconds=0, max_iters=3))
    assert any("only 3 samples" in r for r in m.reasons)
    m = measure(lambda: torch.tensor(float("nan")), FakeBackend([0.1]), TimingConfig(min_iters=2, min_seconds=0))
    assert any("non-finite" in r for r in m.reasons)


def sleepy_step():
    """A step of at least 1 ms on any host: 0.05 s then takes at most 50 steps, far below
    max_iters, however fast the host (a bare tensor step reached max_iters = 10,000 first)."""
    import time

    time.sleep(0.001)
    return torch.tensor(1.0)


def test_min_seconds_keeps_measuring():
    m = measure(sleepy_step, Backend(), TimingConfig(warmup=1, min_iters=1, min_seconds=0.05))
    assert m.window_s >= 0.05 and 1 < len(m.samples_s) <= 50 and m.valid


def test_fast_steps_with_plenty_of_samples_stay_valid():
    """A GPU decode step under 0.5 ms hits max_iters before min_seconds: with that many samples
    the row stands, and a warning says the window was short."""
    m = measure(step, Backend(), TimingConfig(warmup=1, min_iters=5, min_seconds=600, max_iters=PLENTY_SAMPLES))
    assert len(m.samples_s) == PLENTY_SAMPLES and m.window_s < 600
    assert m.valid, m.reasons
    assert any("max_iters reached" in w and "kept" in w for w in m.warnings), m.warnings


def test_short_window_with_few_samples_is_invalid():
    m = measure(step, Backend(), TimingConfig(warmup=1, min_iters=5, min_seconds=600, max_iters=20))
    assert len(m.samples_s) == 20 and not m.valid
    assert any("< min_seconds 600" in r for r in m.reasons), m.reasons


def test_noisy_samples_warn_but_stay_valid():
    be = FakeBackend([0.1, 0.1, 0.3, 0.1, 0.3, 0.1])
    m = measure(step, be, TimingConfig(warmup=1, min_iters=5, min_seconds=0, cov_warn=0.1))
    assert m.valid and m.warnings and "variation" in m.warnings[0]


def test_summaries():
    x = [1.0, 2.0, 3.0, 4.0, 100.0]
    s = summarize(x)
    assert s["n"] == 5 and s["median_s"] == 3.0 and s["mean_s"] == 22.0
    assert s["p10_s"] == pytest.approx(np.percentile(x, 10)) and s["iqr_s"] == pytest.approx(2.0)
    wide = [float(v) for v in range(1, 22)] + [1000.0]
    low, high = summarize(wide)["ci95_s"]
    assert low <= 11.5 <= high < 20  # the median's CI shrugs off the outlier
    assert summarize([2.0])["ci95_s"] is None
    assert summarize([2.0, 2.0])["ci95_s"] == [2.0, 2.0]
    assert summarize(x) == summarize(x)  # seeded bootstrap: reproducible


def test_synchronized_host_timer_measures_the_step():
    """The default timer synchronizes around the step, so the sample covers its work."""
    import time

    m = measure(lambda: time.sleep(0.01) or torch.tensor(0.0), Backend(), TimingConfig(min_iters=3, min_seconds=0))
    assert min(m.samples_s) >= 0.01


def test_the_bootstrap_runs_on_scipy_before_1_15_too(monkeypatch):
    """SciPy 1.15 named bootstrap's generator `rng`; before it was `random_state` (a GPU image
    may carry either): the CI is the same whichever the installed SciPy takes."""
    from scipy import stats

    from ppharness.core import timing

    x = np.array([1.0, 2.0, 3.0, 4.0, 10.0])
    want = timing.bootstrap_ci(x, np.median)
    real = stats.bootstrap
    seen = []

    def old_bootstrap(data, statistic, *, confidence_level=0.95, n_resamples=9999, method="BCa", random_state=None):
        seen.append(random_state)
        return real(data, statistic, confidence_level=confidence_level, n_resamples=n_resamples, method=method,
                    rng=random_state)  # fmt: skip

    monkeypatch.setattr(timing.stats, "bootstrap", old_bootstrap)
    timing._rng_keyword.cache_clear()
    try:
        assert timing._rng_keyword() == "random_state"
        assert timing.bootstrap_ci(x, np.median) == want and isinstance(seen[0], np.random.Generator)
    finally:
        timing._rng_keyword.cache_clear()
