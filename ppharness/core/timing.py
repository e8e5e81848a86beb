"""The measurement protocol: compile time apart, warm-up until compilation stops, a measured
window of raw samples, robust summaries with a bootstrap CI, and VALID/INVALID with reasons.

1. `prepare` (compile/trace) is timed by the caller as part of compile_s.
2. Warm-up: at least `warmup` steps, and on until the backend's compile count stops changing
   (lazy compilers such as torch.compile and XLA compile on the first calls, not in prepare).
   Warm-up steps that compiled are added to compile_s, never to the step times.
3. Measure: samples until both `min_iters` and `min_seconds` are met, capped by `max_iters` and
   `max_seconds`. A sample is a block of k steps (`steps_per_sample`; 0 = the backend's choice,
   1 except on lazy devices such as XLA) timed by the backend's timer (device clock where one
   exists, synchronized host time elsewhere), so it waits for the device once, at the block's end:
   on a lazy device the host then traces step n+1 while the device runs step n, as in AWS's own
   training scripts. Each sample is stored as the block's time / k (seconds per step); every raw
   sample is kept. k = 1 is the wait-after-every-step mode. Where neither the run file nor the
   backend fixes k, a backend with a device clock names a step time under which steps are timed
   in blocks (`block_under_s`; CUDA: 2 ms): three probe steps after the warm-up give the step
   time, and k = ceil(BLOCK_S / step time), so a sub-millisecond CUDA-graph decode step or a
   10 us kernel is not timed together with the host's launch work and the idle device around a
   wait. The probe steps also give the host's time to queue one step (`enqueue`): at
   LAUNCH_BOUND or more of the measured step time the row is flagged launch-bound (the device
   ran as fast as the host could launch). A window that max_iters cut short of
   `min_seconds` still stands when it holds PLENTY_SAMPLES samples or more (a warning says so): a
   GPU decode step under 0.5 ms reaches max_iters = 10,000 in under 5 s, with a far tighter median
   than min_seconds aims for.
4. Summaries (per step): median (the headline), mean, p10/p90/p99, IQR, coefficient of variation, and a
   95% bootstrap confidence interval of the median.
5. Validity: enough samples and seconds, no compile inside the window, finite outputs, and
   nothing else on the device or the host during the window (the backend's monitor and the host
   CPU monitor, ppharness/core/guards.py: other processes, throttled clocks). A contaminated window is
   measured again, up to `remeasure` times after a pause of `remeasure_pause_s`; one still
   contaminated makes the row INVALID with the figure, and a clean one after contaminated ones
   is kept with a `re-measured` warning. A high CoV is a warning, not a failure: the CI carries
   the spread.
"""

from __future__ import annotations

import functools
import inspect
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy import stats

from ppharness.core import guards
from ppharness.core.device import Backend

# A window cut short by max_iters is kept (with a warning) when it holds at least this many samples.
PLENTY_SAMPLES = 1000

# Other processes may use at most this fraction of the host's CPU capacity during a window (a
# quiet host's daemons use a few percent; a contaminated 2-core host in issue #14 showed 48-82%).
# The test suite relaxes this module default for tests that are not about contamination
# (tests/conftest.py): they run on shared CI hosts.
MAX_OTHER_CPU = 0.25

# Block timing of short steps (module docstring, step 3): a block lasts about BLOCK_S of device
# time, one wait per block; at most MAX_BLOCK steps. PROBE_STEPS single steps give the step time.
BLOCK_S = 0.01
MAX_BLOCK = 1000
PROBE_STEPS = 3
# Queueing one step on the host took at least this fraction of the measured step: launch-bound.
LAUNCH_BOUND = 0.9


@dataclass
class TimingConfig:
    warmup: int = 1  # warm-up steps at least
    max_warmup: int = 50  # give up (INVALID) if still compiling after this many
    min_iters: int = 5
    min_seconds: float = 1.0
    max_iters: int = 10_000
    max_seconds: float = 60.0
    cov_warn: float = 0.10  # warn when std/mean of the samples exceeds this
    steps_per_sample: int = 0  # steps per timed sample (one device wait per block); 0 = the backend's choice
    # Steps shorter than this are timed in blocks (module docstring); None: the backend's choice
    # (Backend.block_under_s: CUDA 2 ms, host devices never); 0: never.
    block_under_s: float | None = None
    # A window in which other processes used more than this fraction of the host's CPU (or any
    # device monitor finding) is contaminated; 1.0 never is. A run file relaxes it explicitly.
    max_other_cpu: float = field(default_factory=lambda: MAX_OTHER_CPU)
    remeasure: int = 2  # a contaminated window is measured again up to this many times (0: never)
    remeasure_pause_s: float = 5.0  # the pause before each new window: let the other load pass


@dataclass
class Measurement:
    compile_s: float
    warmup_iters: int
    samples_s: list[float]  # per-step times from the backend's timer (a block's time / steps_per_sample)
    host_samples_s: list[float]  # per-step host wall times, kept beside
    window_s: float  # wall time of the measured window, overhead included
    compiles_in_window: int | None
    energy: dict | None = None  # the backend's power sampler over the window: energy_j, mean_w
    reasons: list[str] = field(default_factory=list)  # why INVALID (empty: valid)
    warnings: list[str] = field(default_factory=list)
    last_output: torch.Tensor | None = None
    compiler_s: float | None = None  # the backend's own compiler-time metric over warm-up + window
    interference: dict | None = None  # what the backend's monitor saw during the window (ppharness/core/guards.py)
    steps_per_sample: int = 1  # steps in each timed sample (the measured window ran n x this many steps)
    windows: int = 1  # measured windows: more than 1 when contaminated ones were measured again
    contaminated: list[str] = field(default_factory=list)  # the monitors' INVALID findings (also in reasons)
    # How k was chosen, when probe steps timed the step: {under_s, probe_step_s, probe_enqueue_s}
    blocking: dict | None = None
    launch_bound: bool | None = None  # None: the timer cannot tell (host clocks)

    @property
    def valid(self) -> bool:
        return not self.reasons


def measure(
    step: Callable[[], torch.Tensor],
    backend: Backend,
    cfg: TimingConfig,
    prepare_s: float = 0.0,
    agree: Callable[[bool], bool] | None = None,
    steps_per_sample: int | None = None,
    pause: Callable[[float], None] = time.sleep,
) -> Measurement:
    """The protocol above. `agree` turns this process's decision to stop a loop into its group's
    (ppharness/run/distributed.py: every rank runs the same number of steps, so none waits forever in a
    collective); alone, a process agrees with itself. `steps_per_sample` overrides the config's
    (which, at 0, leaves it to `backend.steps_per_sample()`). `pause` waits between windows."""
    alone = agree is None  # one process: a block size of its own cannot desynchronise a group
    agree = agree or (lambda stop: stop)
    fixed = steps_per_sample or cfg.steps_per_sample
    k = fixed or backend.steps_per_sample()
    compiler_t0 = backend.compile_time_s()
    compile_s, warm, count, reasons = _warm_up(step, backend, cfg, prepare_s, agree)
    under = backend.block_under_s() if cfg.block_under_s is None else cfg.block_under_s
    blocking = None
    if under and alone and k == 1:
        step_s, enqueue_s = _probe(step, backend)
        if not fixed:
            k = block_steps(step_s, under)
        blocking = {"under_s": under, "probe_step_s": step_s, "probe_enqueue_s": enqueue_s}
    earlier: list[dict] = []  # what made each re-measured window contaminated
    while True:
        m = _window(step, backend, cfg, agree, count, k)
        # Every rank votes each time: the group measures again unless all its windows were clean.
        if agree(not m.contaminated) or len(earlier) >= cfg.remeasure:
            break
        earlier.append({**(m.interference or {}), "invalid": m.contaminated})
        pause(cfg.remeasure_pause_s)
        for _ in range(cfg.warmup):  # after the pause, as before the first window
            step()
        count = backend.compile_count()
    m.compile_s, m.warmup_iters, m.reasons = compile_s, warm, reasons + m.reasons
    m.windows = len(earlier) + 1
    m.blocking = blocking
    if blocking and math.isfinite(blocking["probe_enqueue_s"]) and m.samples_s:
        median = float(np.median(m.samples_s))
        m.launch_bound = blocking["probe_enqueue_s"] >= LAUNCH_BOUND * median
        if m.launch_bound:
            m.warnings.append(
                f"launch-bound: queueing one step took {blocking['probe_enqueue_s'] * 1e6:.0f} us on the host, "
                f"{blocking['probe_enqueue_s'] / median:.0%} of the {median * 1e6:.0f} us step: the device ran as fast "
                "as the host launched, so the step time is the launch rate, not the device's"
            )
    # the backend compiler's own time over warm-up and windows (None when it cannot tell)
    m.compiler_s = None if compiler_t0 is None or m.compiler_s is None else m.compiler_s - compiler_t0
    if earlier:
        m.interference = {**(m.interference or {}), "remeasured": earlier}
        figures = ", ".join(_figure(w) for w in earlier)
        if m.contaminated:
            m.reasons.append(f"contaminated in all {m.windows} windows, {cfg.remeasure_pause_s:g}s apart ({figures})")
        else:
            m.warnings.append(f"re-measured: {len(earlier)} earlier window(s) contaminated ({figures})")
    return m


def block_steps(step_s: float, under_s: float) -> int:
    """Steps per sample for a step of `step_s`: 1 at or above `under_s`, else enough for a block
    of about BLOCK_S (at least 2, at most MAX_BLOCK)."""
    if not under_s or not step_s > 0 or step_s >= under_s:
        return 1
    return max(2, min(MAX_BLOCK, math.ceil(BLOCK_S / step_s)))


def _probe(step, backend: Backend) -> tuple[float, float]:
    """(median step time, median host time to queue one step) over PROBE_STEPS single steps,
    each starting on an idle device; enqueue is NaN where the backend's timer cannot tell."""
    times, queued = [], []
    for _ in range(PROBE_STEPS):
        with backend.timer() as t:
            step()
        times.append(t.elapsed_s)
        queued.append(t.enqueue_s)
    return float(np.median(times)), float(np.median(queued))


def _figure(window: dict) -> str:
    """What contaminated one window, short: the other processes' share of the host, or the finding."""
    parts = [w for w in window["invalid"] if not w.startswith(guards.OTHER_CPU)]
    frac = window.get("other_cpu_fraction")
    if isinstance(frac, float) and len(parts) < len(window["invalid"]):
        parts.insert(0, f"other processes {frac:.0%} of the host")
    return "; ".join(parts) or "on another rank"  # clean here: the group measures again together


def _warm_up(step, backend: Backend, cfg: TimingConfig, prepare_s: float, agree) -> tuple[float, int, int | None, list]:
    """Warm-up steps until compilation stops: (compile_s, steps, compile count, reasons)."""
    compile_s, warm, reasons = prepare_s, 0, []
    count = backend.compile_count()
    while True:
        with backend.timer() as t:
            step()
        warm += 1
        now = backend.compile_count()
        compiled = now is None and warm == 1 or (now is not None and now != count)
        if compiled:  # unknown compile count: assume the first call compiled (lazy compilers)
            compile_s += t.host_s
        count = now
        settled = warm >= cfg.warmup and not (compiled and now is not None)
        if agree(settled or warm >= cfg.max_warmup):
            if not settled:
                reasons.append(f"still compiling after {warm} warm-up steps (max_warmup)")
            return compile_s, warm, count, reasons


def _window(step, backend: Backend, cfg: TimingConfig, agree, count: int | None, k: int) -> Measurement:
    """One measured window of k-step samples, watched by the backend's monitor and the host CPU monitor."""
    samples, host, out = [], [], None
    reasons: list[str] = []
    sampler = backend.power_sampler()
    if sampler is not None:
        sampler.start()
    # other processes on the device or the host, throttled clocks: never inside a window silently
    monitor = guards.Watch([backend.monitor(), guards.HostCPUMonitor(cfg.max_other_cpu)])
    monitor.start()
    t_start = time.perf_counter()
    while True:
        with backend.timer() as t:  # one wait for the device, at the end of the block
            for _ in range(k):
                out = step()
        samples.append(t.elapsed_s / k)
        host.append(t.host_s / k)
        elapsed = time.perf_counter() - t_start
        done = len(samples) >= cfg.min_iters and elapsed >= cfg.min_seconds
        if agree(done or len(samples) >= cfg.max_iters or elapsed >= cfg.max_seconds):
            break
    window = time.perf_counter() - t_start
    seen = monitor.stop()
    energy = sampler.stop() if sampler is not None else None
    end_count = backend.compile_count()
    in_window = None if end_count is None or count is None else end_count - count
    compiler_t1 = backend.compile_time_s()  # before the finiteness check below, which may compile

    if len(samples) < cfg.min_iters:
        reasons.append(f"only {len(samples)} samples in max_seconds={cfg.max_seconds:g} (min_iters {cfg.min_iters})")
    short_window = window < cfg.min_seconds  # max_iters (or another rank) ended the loop first
    if short_window and len(samples) < PLENTY_SAMPLES:
        reasons.append(f"measured window {window:.3f}s < min_seconds {cfg.min_seconds:g} (max_iters reached)")
    if in_window:
        reasons.append(f"{in_window} graph(s) compiled inside the measured window")
    if out is not None and out.is_floating_point() and not torch.isfinite(out.detach()).all():
        reasons.append("non-finite output (loss or logits)")
    m = Measurement(0.0, 0, samples, host, window, in_window, energy, reasons, last_output=out)
    m.compiler_s = compiler_t1  # the reading: measure() subtracts the one taken before warm-up
    m.steps_per_sample = k
    m.reasons += seen.invalid
    m.warnings += seen.warnings
    m.interference = seen.detail
    m.contaminated = list(seen.invalid)
    if short_window and len(samples) >= PLENTY_SAMPLES:
        m.warnings.append(
            f"measured window {window:.3f}s < min_seconds {cfg.min_seconds:g}: max_iters reached with "
            f"{len(samples)} samples (>= {PLENTY_SAMPLES}), kept"
        )
    cov = summarize(samples)["cov"]
    if cov is not None and cov > cfg.cov_warn:
        m.warnings.append(f"noisy: coefficient of variation {cov:.1%} > {cfg.cov_warn:.0%}")
    return m


def summarize(samples: list[float], seed: int = 0) -> dict:
    """Summaries of per-step times (seconds). The CI is a percentile bootstrap of the median."""
    x = np.asarray(samples, dtype=float)
    if x.size == 0:
        return dict.fromkeys(("n", "median_s", "mean_s", "p10_s", "p90_s", "p99_s", "iqr_s", "cov", "ci95_s"))
    p10, p25, p50, p75, p90, p99 = np.percentile(x, [10, 25, 50, 75, 90, 99])
    mean = float(x.mean())
    return {
        "n": int(x.size),
        "median_s": float(p50),
        "mean_s": mean,
        "p10_s": float(p10),
        "p90_s": float(p90),
        "p99_s": float(p99),
        "iqr_s": float(p75 - p25),
        "cov": float(x.std(ddof=1) / mean) if x.size > 1 and mean > 0 else None,
        "ci95_s": bootstrap_ci(x, np.median, seed),
    }


def bootstrap_ci(x: np.ndarray, statistic: Callable, seed: int = 0, level: float = 0.95) -> list[float] | None:
    """Percentile bootstrap CI (scipy.stats.bootstrap); None with fewer than 2 samples."""
    if len(x) < 2:
        return None
    if np.all(x == x[0]):
        return [float(x[0]), float(x[0])]
    res = stats.bootstrap(
        (x,), statistic, confidence_level=level, n_resamples=2000, method="percentile",
        **{_rng_keyword(): np.random.default_rng(seed)},
    )  # fmt: skip
    low, high = res.confidence_interval
    return [float(low), float(high)] if math.isfinite(low) and math.isfinite(high) else None


@functools.cache
def _rng_keyword() -> str:
    """scipy.stats.bootstrap's name for its random generator: `rng` from SciPy 1.15, before that
    `random_state` (which takes a numpy Generator too, and draws the same resamples from it)."""
    return "rng" if "rng" in inspect.signature(stats.bootstrap).parameters else "random_state"
