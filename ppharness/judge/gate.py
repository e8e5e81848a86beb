"""The regression gate: did a change make a case slower, beyond what the host's noise explains?

`ppbench compare NEW --against BASE --fail-if-slower PCT` (ppharness/cli.py): BASE holds the
records of the code before a change, NEW those after, measured on the same host (docs/ci-gate.md
gives the recipe). Cases match on system and workload (system, preset, scenario, dtype, batch,
as compare matches rows); each case gets the change of its step time per unit of work from BASE to
NEW (+10% = 10% slower) with a percentile bootstrap CI at the stated confidence, and a verdict:

- `slower`: the whole CI is above +PCT. Fails the gate.
- `within`: the whole CI is at or below +PCT (and not all below 0).
- `faster`: the whole CI is below 0.
- `inconclusive`: the CI straddles +PCT, there is none, or the runs do not show what it says.

A verdict other than `inconclusive` also needs the runs themselves to show it at the same
confidence (one-sided, (1 - confidence) / 2): the bootstrap's run level resamples a handful of
runs, and with 3-5 of them its percentile CI is too narrow (four pairs of runs of the same code on
a busy host gave `faster`, CI [-40%, -12%]). The run-level test is distribution-free: a sign test
on the pairs' step time ratios (at 95%, 6 pairs at least, all beyond +PCT), or for unpaired runs
a Mann-Whitney test (4 runs a side at least). So a case fails only when both the CI and the runs
say so; with fewer runs than that it cannot fail, and the note says how many it would need.

Runs are paired where the records allow it: both sides hold as many runs of a case (two or more),
and run i of each side was measured before run i+1 of either (the recipe alternates `ppbench run`
between the two checkouts: A B, B A, ...). Paired, the CI resamples pairs (stats.paired_ratio_ci),
so a host that drifts between pairs moves both runs of a pair alike and the drift cancels;
unpaired, it resamples each side's runs (stats.ratio_ci), and drift between the sides counts as
spread (or, measured all of BASE then all of NEW, as a change: measure in turn).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ppharness.core import stats
from ppharness.errors import BenchError
from ppharness.judge import compare

GATE_FAILED = 10  # the exit status of a failed gate: 1 is any failure, 2 bad input (ppharness/cli.py)
KEY = ["system", *compare.MATCH]
VERDICTS = ("slower", "inconclusive", "within", "faster")


@dataclass
class Case:
    """One matched case: each side's runs and median step time, the change with its CI, the verdict."""

    system: str
    preset: str
    scenario: str
    dtype: str
    batch: float
    base_runs: int
    new_runs: int
    base_s: float  # median step time (median of the runs' medians)
    new_s: float
    change: float  # new step time per unit of work / base's - 1: +0.10 is 10% slower
    lo: float  # the CI of `change` (NaN: none)
    hi: float
    paired: bool
    pairing: str  # how the runs were compared, in words
    verdict: str
    note: str  # why the verdict: what the runs showed, or what was missing
    flags: list[str] = field(default_factory=list)  # both sides' warning codes (ppharness.record.flags)

    @property
    def label(self) -> str:
        batch = "" if self.batch != self.batch else f" b{self.batch:g}"
        return f"{self.scenario}{batch} {self.dtype} {self.preset} on {self.system}"


@dataclass
class Gate:
    """The gate's result: compared cases, and those that could not be compared, with why."""

    cases: list[Case]
    threshold: float  # a fraction: 0.10 for --fail-if-slower 10
    confidence: float
    enforced: bool  # --fail-if-slower was given: a `slower` case fails the gate
    not_compared: list[tuple[str, str]] = field(default_factory=list)  # (case, why)

    @property
    def slower(self) -> list[Case]:
        return [c for c in self.cases if c.verdict == "slower"]

    @property
    def failed(self) -> bool:
        return self.enforced and bool(self.slower)

    def count(self, verdict: str) -> int:
        return sum(c.verdict == verdict for c in self.cases)


def parse_threshold(text: str) -> float:
    """`--fail-if-slower`'s PCT, `10` or `10%`, as a fraction (0.10)."""
    value = text.strip().removesuffix("%").strip()
    try:
        pct = float(value)
    except ValueError:
        pct = math.nan
    if not (math.isfinite(pct) and pct >= 0):
        raise BenchError(f"--fail-if-slower takes a percentage of 0 or more, such as 10 or 10%; got {text!r}")
    return pct / 100


def verdict(lo: float, hi: float, threshold: float) -> str:
    """`slower` when the whole CI of the change is above +threshold, `faster` when it is all below
    0, `within` when it is all at or below +threshold, else (or with no CI) `inconclusive`."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "inconclusive"
    if lo > threshold:
        return "slower"
    if hi < 0:
        return "faster"
    return "within" if hi <= threshold else "inconclusive"


def pairing(base_times: list, new_times: list) -> tuple[bool, str]:
    """Whether run i of each side can be compared with run i of the other (sides measured in
    turn: pair i wholly before pair i + 1), and how the runs are compared, in words."""
    nb, nn = len(base_times), len(new_times)
    if nb != nn:
        return False, f"unpaired: {nb} base run(s), {nn} new"
    if nb == 1:
        return False, "one run a side: the CI covers within-run noise only"
    tb, tn = (pd.to_datetime(pd.Series(t, dtype=object), utc=True, errors="coerce") for t in (base_times, new_times))
    if tb.isna().any() or tn.isna().any():
        return False, "unpaired: a run without a readable created_at"
    tb, tn = tb.sort_values().to_numpy(), tn.sort_values().to_numpy()
    first, last = np.minimum(tb, tn), np.maximum(tb, tn)
    if (last[:-1] > first[1:]).any():
        return False, f"unpaired: the {nb} runs a side were not measured in turn (A B A B)"
    return True, f"{nb} pairs, measured in turn"


def evaluate(
    base: pd.DataFrame,
    new: pd.DataFrame,
    threshold: float,
    *,
    enforced: bool = True,
    confidence: float = stats.CONFIDENCE,
    latest: bool = False,
    seed: int = 0,
) -> Gate:
    """Hold NEW's records against BASE's, case by case (see the module docstring). A case with no
    usable record on one side (INVALID or failed, or not measured) is listed as not compared."""
    b, n = compare.prepare(base, latest=latest), compare.prepare(new, latest=latest)
    bi, ni = _index(b.usable), _index(n.usable)
    cases, not_compared = [], []
    for key in [k for k in ni if k in bi]:
        cases.append(_case(bi[key], ni[key], threshold, confidence, seed))
    sides = (("NEW", "BASE", ni, bi, n.excluded), ("BASE", "NEW", bi, ni, b.excluded))
    for lacking, having, missing, present, excluded in sides:
        reasons = _excluded(excluded)
        for key in [k for k in present if k not in missing]:
            why = reasons.get(key)
            not_compared.append(
                (_label(key), f"no usable {lacking} record ({why})" if why else f"measured in {having} only")
            )
    if not cases:
        systems = ", ".join(sorted({k[0] for k in bi})) or "(none usable)"
        mine = ", ".join(sorted({k[0] for k in ni})) or "(none usable)"
        raise BenchError(f"nothing to compare: no case of RESULTS (systems: {mine}) matches one of BASE ({systems})")
    cases.sort(key=lambda c: (VERDICTS.index(c.verdict), c.system, c.preset, c.scenario, c.dtype, c.batch))
    return Gate(cases, threshold, confidence, enforced, not_compared)


def _index(rows: pd.DataFrame) -> dict[tuple, pd.Series]:
    return {_key(r): r for _, r in rows.iterrows()}


def _key(row) -> tuple:
    """The case a row measured; a missing batch (NaN) is one key, as compare groups it."""
    return tuple("nan" if isinstance(row[k], float) and row[k] != row[k] else row[k] for k in KEY)


def _label(key: tuple) -> str:
    system, preset, scenario, dtype, batch = key
    batch = "" if batch == "nan" else f" b{float(batch):g}"
    return f"{scenario}{batch} {dtype} {preset} on {system}"


def _excluded(excluded: pd.DataFrame) -> dict[tuple, str]:
    """Per case, how many of its records were left out and the newest one's reason."""
    out: dict[tuple, list] = {}
    for _, r in excluded.iterrows():
        count, _why = out.get(_key(r), (0, ""))
        out[_key(r)] = (count + 1, r["excluded_reason"])
    return {k: f"{count} excluded; {why}" for k, (count, why) in out.items()}


def _case(base: pd.Series, new: pd.Series, threshold: float, confidence: float, seed: int) -> Case:
    paired, how = pairing(list(base["run_times"]), list(new["run_times"]))
    b_runs, n_runs = base["run_samples"], new["run_samples"]
    if paired:  # run i of each side, in the order they were measured
        b_runs, n_runs = (_in_time_order(r) for r in (base, new))
    ci = stats.paired_ratio_ci if paired else stats.ratio_ci
    speed, lo, hi = ci(n_runs, b_runs, confidence=confidence, seed=seed)  # new speed / base speed, per step
    work = float(new["work_per_step"]) / float(base["work_per_step"])  # per unit of work (tokens)
    speed, lo, hi = speed * work, lo * work, hi * work
    change, c_lo, c_hi = 1 / speed - 1, 1 / hi - 1, 1 / lo - 1  # a speed ratio's CI, as a step time's
    # Each run's median step time per unit of work: the runs test's observations.
    t_base = [float(np.median(r)) / float(base["work_per_step"]) for r in b_runs]
    t_new = [float(np.median(r)) / float(new["work_per_step"]) for r in n_runs]
    tests = _runs_tests(t_base, t_new, threshold, paired)
    said, note = decide(c_lo, c_hi, threshold, tests, (1 - confidence) / 2, len(t_base), len(t_new), paired)
    return Case(
        system=str(new["system"]),
        preset=str(new["preset"]),
        scenario=str(new["scenario"]),
        dtype=str(new["dtype"]),
        batch=float(new["batch"]),
        base_runs=int(base["runs"]),
        new_runs=int(new["runs"]),
        base_s=float(base["median_s"]),
        new_s=float(new["median_s"]),
        change=change,
        lo=c_lo,
        hi=c_hi,
        paired=paired,
        pairing=how,
        verdict=said,
        note=note,
        flags=list(dict.fromkeys([*base["flags"], *new["flags"]])),
    )


def _runs_tests(t_base: list[float], t_new: list[float], threshold: float, paired: bool) -> dict[str, tuple]:
    """Per claim (slower than +threshold, faster than the base, within +threshold), the runs
    themselves as evidence: (one-sided p-value, what they showed). Paired: a sign test on the
    pairs' step time ratios; unpaired: a Mann-Whitney test on the runs' step times."""
    limit = 1 + threshold
    if paired:
        ratios = [n / b for b, n in zip(t_base, t_new, strict=True)]
        counts = {
            "slower": sum(r > limit for r in ratios),
            "faster": sum(r < 1 for r in ratios),
            "within": sum(r < limit for r in ratios),
        }
        return {k: (stats.sign_test(c, len(ratios)), f"{c}/{len(ratios)} pairs") for k, c in counts.items()}
    scaled = [b * limit for b in t_base]
    return {
        "slower": (stats.rank_test(t_new, scaled), "runs ranked"),
        "faster": (stats.rank_test(t_base, t_new), "runs ranked"),
        "within": (stats.rank_test(scaled, t_new), "runs ranked"),
    }


def decide(
    lo: float, hi: float, threshold: float, tests: dict[str, tuple], alpha: float, nb: int, nn: int, paired: bool
) -> tuple[str, str]:
    """The verdict and a note saying why: the CI's verdict (`verdict`) stands when the runs show
    it too at the same confidence (one-sided p-value at most `alpha`); else `inconclusive`."""
    ci_says = verdict(lo, hi, threshold)
    pct = f"{threshold:.0%}"
    if ci_says == "inconclusive":
        return ci_says, "no CI" if not (math.isfinite(lo) and math.isfinite(hi)) else f"the CI straddles +{pct}"
    p_value, shown = tests[ci_says]
    claim = {"slower": f"slower than +{pct}", "faster": "faster", "within": f"below +{pct}"}[ci_says]
    if p_value <= alpha:
        return ci_says, f"runs agree: {shown} {claim} (p={p_value:.3f})"
    least = f"{_pairs_needed(alpha)} pairs" if paired else f"{_runs_needed(alpha)} runs a side"
    return (
        "inconclusive",
        f"runs disagree: the CI says {ci_says}, but {shown} {claim} gives only p={p_value:.3f} "
        f"(it takes {least} at least)",
    )


def _pairs_needed(alpha: float) -> int:
    """The fewest pairs whose sign test can reach `alpha`: all n pairs one way, 2^-n <= alpha."""
    return math.ceil(math.log2(1 / alpha))


def _runs_needed(alpha: float) -> int:
    """The fewest runs a side whose rank test can reach `alpha` (every run of one side beyond every
    run of the other: 1 / C(2k, k) <= alpha)."""
    k = 1
    while 1 / math.comb(2 * k, k) > alpha:
        k += 1
    return k


def _in_time_order(row: pd.Series) -> list[np.ndarray]:
    times = pd.to_datetime(pd.Series(row["run_times"], dtype=object), utc=True)
    return [row["run_samples"][i] for i in np.argsort(times.to_numpy(), kind="stable")]
