"""Bootstrap statistics for comparing runs: a speed ratio with a two-level (hierarchical) CI.

A system's step time for one workload is measured by one or more runs (two `make bench` runs are
two runs), each with its raw step times. Run-to-run spread (another process, allocator and cache
state, CPU frequency, neighbours on the host) is often larger than the spread within a run, so a CI
from one run's samples claims more certainty than the data has. Here the run is the unit:

- point estimate: the median over runs of each run's median step time. Every run weighs the same
  however many samples it holds, so one long run cannot outvote several short ones, and one odd
  run among three cannot move the point much.
- CI: resample the runs with replacement, then each chosen run's step times with replacement, and
  take the median of the resampled runs' medians (resampling at both stages of a two-stage design,
  Davison & Hinkley 1997, "Bootstrap Methods and their Application", on hierarchical data). The
  ratio's percentile interval resamples both sides independently: the runs are unpaired.

With one run on a side the run level is fixed and this is the ordinary percentile bootstrap of that
run's median: its CI covers within-run noise only. Everything is vectorised, chunked so no index
matrix grows past a few million entries, and deterministic for a seed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

N_RESAMPLES = 2000
CONFIDENCE = 0.95
MIN_SAMPLES_FOR_CI = 3  # one run with fewer raw samples: no CI (a resample of 1-2 points says nothing)
_CHUNK_ELEMENTS = 2_000_000  # index entries per chunk and side, at most (about 16 MB of int64)

Runs = Sequence[np.ndarray]  # one array of raw step times (seconds) per run


def center(runs: Runs) -> float:
    """The point estimate of a step time: median over runs of each run's median."""
    return float(np.median([np.median(r) for r in runs]))


def has_ci(runs: Runs) -> bool:
    """Two or more runs can be resampled at the run level, whatever each run holds; a single run
    needs MIN_SAMPLES_FOR_CI samples."""
    return len(runs) >= 2 or (len(runs) == 1 and runs[0].size >= MIN_SAMPLES_FOR_CI)


class _Ranked:
    """One run's step times sorted, and each time's rank among them. The median of a resample is
    taken over the drawn ranks (small integers partition faster than floats) and read back from
    the sorted times: bit for bit np.median of the drawn times (rank order is value order, and
    an even count averages the two middle values as np.median does)."""

    def __init__(self, s: np.ndarray):
        order = np.argsort(s, kind="stable")
        self.size, self.sorted = s.size, s[order]
        self.rank = np.empty(s.size, dtype=np.int16 if s.size <= np.iinfo(np.int16).max else np.int64)
        self.rank[order] = np.arange(s.size)

    def medians(self, idx: np.ndarray) -> np.ndarray:
        """Median of each row of drawn indices idx (n, size): np.median(s[idx], axis=1)."""
        m, ranks = idx.shape[1], self.rank[idx]
        if m % 2:
            return self.sorted[np.partition(ranks, m // 2, axis=1)[:, m // 2]]
        middle = np.partition(ranks, [m // 2 - 1, m // 2], axis=1)
        return (self.sorted[middle[:, m // 2 - 1]] + self.sorted[middle[:, m // 2]]) / 2


def resample_centers(runs: Runs, k: int, rng: np.random.Generator, ranked: list[_Ranked] | None = None) -> np.ndarray:
    """`k` bootstrap draws of `center(runs)`: runs resampled, then step times within each run.
    `ranked` (the runs as _Ranked, built once per side by ratio_ci) only saves the sorting."""
    ranked = ranked or [_Ranked(np.asarray(s)) for s in runs]
    if len(runs) == 1:  # the run level is fixed: the plain bootstrap of one run's median
        s = ranked[0]
        return s.medians(rng.integers(0, s.size, (k, s.size)))
    pick = rng.integers(0, len(runs), (k, len(runs)))  # (resample, slot) -> which run fills the slot
    medians = np.empty(pick.shape)
    for r, s in enumerate(ranked):
        slots = pick == r
        n = int(slots.sum())
        if n:  # each slot gets its own within-run resample, even when a run is picked twice
            medians[slots] = s.medians(rng.integers(0, s.size, (n, s.size)))
    return np.median(medians, axis=1)


def _cost(runs: Runs) -> int:
    """Index entries one resample of a side needs, at most (one run: its sample count)."""
    return len(runs) * max(r.size for r in runs)


def ratio_ci(
    num_runs: Runs,
    den_runs: Runs,
    *,
    n_resamples: int = N_RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Speed ratio center(den) / center(num) of two sides' step times, with a two-level percentile
    bootstrap CI. A side's step time t means speed 1/t, so this is "num is this many times faster
    than den". Returns (point, lo, hi); lo/hi are NaN unless both sides pass `has_ci`."""
    num_runs = [np.asarray(r, dtype=float).ravel() for r in num_runs]
    den_runs = [np.asarray(r, dtype=float).ravel() for r in den_runs]
    if not num_runs or not den_runs or any(r.size == 0 for r in (*num_runs, *den_runs)):
        raise ValueError("ratio_ci needs at least one run a side, each with at least one step time")
    point = center(den_runs) / center(num_runs)
    if not (has_ci(num_runs) and has_ci(den_runs)):
        return point, math.nan, math.nan
    rng = np.random.default_rng(seed)
    chunk = max(1, min(500, _CHUNK_ELEMENTS // max(_cost(num_runs), _cost(den_runs))))
    num_ranked, den_ranked = [_Ranked(r) for r in num_runs], [_Ranked(r) for r in den_runs]
    stats = []
    for start in range(0, n_resamples, chunk):
        k = min(chunk, n_resamples - start)
        num = resample_centers(num_runs, k, rng, num_ranked)  # num before den: one run a side draws as it always did
        den = resample_centers(den_runs, k, rng, den_ranked)
        stats.append(den / num)
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(np.concatenate(stats), [alpha, 1 - alpha])
    return point, float(lo), float(hi)


def paired(num_runs: Runs, den_runs: Runs) -> float:
    """The paired point estimate: the median over pairs of median(den_i) / median(num_i)."""
    return float(np.median([np.median(d) / np.median(n) for n, d in zip(num_runs, den_runs, strict=True)]))


def paired_ratio_ci(
    num_runs: Runs,
    den_runs: Runs,
    *,
    n_resamples: int = N_RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Speed ratio of two sides measured in pairs (run i of each side close together in time, as
    `ppbench run` alternated between them): per pair median(den_i) / median(num_i), and the median
    over pairs, with a two-level percentile bootstrap CI that resamples pairs, then step times
    within each run of a chosen pair. A host that drifts between pairs moves both runs of a pair
    alike, so the drift cancels in each pair's ratio instead of widening the CI (the unpaired
    `ratio_ci` counts it as run-to-run spread). Returns (point, lo, hi); lo/hi are NaN when one
    pair's runs hold fewer than MIN_SAMPLES_FOR_CI samples."""
    num_runs = [np.asarray(r, dtype=float).ravel() for r in num_runs]
    den_runs = [np.asarray(r, dtype=float).ravel() for r in den_runs]
    if not num_runs or len(num_runs) != len(den_runs) or any(r.size == 0 for r in (*num_runs, *den_runs)):
        raise ValueError("paired_ratio_ci needs as many runs a side, at least one, each with a step time")
    point = paired(num_runs, den_runs)
    if len(num_runs) == 1 and not (has_ci(num_runs) and has_ci(den_runs)):
        return point, math.nan, math.nan
    rng = np.random.default_rng(seed)
    num_ranked, den_ranked = [_Ranked(r) for r in num_runs], [_Ranked(r) for r in den_runs]
    pairs = len(num_runs)
    chunk = max(1, min(500, _CHUNK_ELEMENTS // max(_cost(num_runs), _cost(den_runs))))
    stats = []
    for start in range(0, n_resamples, chunk):
        k = min(chunk, n_resamples - start)
        pick = rng.integers(0, pairs, (k, pairs))  # (resample, slot) -> which pair fills the slot
        ratios = np.empty(pick.shape)
        for p in range(pairs):
            slots = pick == p
            m = int(slots.sum())
            if m:  # each slot draws its own within-run resample of both runs of the pair
                n, d = num_ranked[p], den_ranked[p]
                ratios[slots] = d.medians(rng.integers(0, d.size, (m, d.size))) / n.medians(
                    rng.integers(0, n.size, (m, n.size))
                )
        stats.append(np.median(ratios, axis=1))
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(np.concatenate(stats), [alpha, 1 - alpha])
    return point, float(lo), float(hi)


def sign_test(above: int, n: int) -> float:
    """One-sided p-value of a sign test: the chance that `above` or more of `n` pairs fall on one
    side of a value that is the pairs' true median (each pair a fair coin), sum C(n, j) / 2^n."""
    return sum(math.comb(n, j) for j in range(above, n + 1)) / 2**n


def rank_test(x: Sequence[float], y: Sequence[float]) -> float:
    """One-sided exact p-value of the Mann-Whitney test that `x` tends to exceed `y`: the chance,
    every ordering of the pooled values equally likely (no difference), that at least as many
    (x_i, y_j) pairs have x_i > y_j as here. Ties count as not exceeding (conservative). Exact up
    to 2,500 pairs (Mann & Whitney 1947's recursion), a normal approximation beyond."""
    m, n = len(x), len(y)
    u = sum(xi > yj for xi in x for yj in y)
    if m * n > 2500:
        mean, sd = m * n / 2, math.sqrt(m * n * (m + n + 1) / 12)
        return 0.5 * math.erfc((u - 0.5 - mean) / (sd * math.sqrt(2)))
    # ways[j][k]: orderings of i x's and j y's with U = k, for i = 0 .. m in turn. The largest
    # value is an x (it exceeds all j y's: i - 1 x's left) or a y (it adds nothing: j - 1 y's left).
    ways = [[1] for _ in range(n + 1)]
    for i in range(1, m + 1):
        row = [[1]]
        for j in range(1, n + 1):
            counts = [0] * (i * j + 1)
            for k, c in enumerate(ways[j]):
                counts[k + j] += c
            for k, c in enumerate(row[j - 1]):
                counts[k] += c
            row.append(counts)
        ways = row
    counts = ways[n]
    return sum(counts[u:]) / sum(counts)
