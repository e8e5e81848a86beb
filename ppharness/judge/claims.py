"""Vendor claims against measurements: seeds/claims.yaml -> break-even figures and verdicts.

Owns the claims file format (strict loading), and per claim:

- break-even throughput ratio: the subject/baseline speed the claim needs at a price basis and
  date, `claimed tokens-per-dollar ratio x price_subject / price_baseline` (reference section 2b);
- equal-MFU ratio: the tokens-per-dollar ratio if both sides ran at the same MFU,
  `(peak_sub / price_sub) / (peak_base / price_base)` with peaks per instance (reference section 7);
- required MFU: the subject MFU the claim needs given the baseline's measured throughput,
  `break_even x T_base x flops_per_token / (peak_sub_per_chip x chips_sub)`, and the converse
  (the baseline MFU above which the claim fails) when only the subject was measured;
- the measured speed ratio with its bootstrap CI (ppharness.core.stats: each side's runs resampled, then
  their step times) and a verdict per workload and per claim: supported / not supported /
  not reproduced ("up to" claims below their figure) / inconclusive / not measured, at the
  claim's date, today, and every date a price in between changed (ppharness.judge.timeline); a
  range claim ("30-40%") is judged at both ends, its verdict the lower end's;
- beside it, the verdict from published evidence (ppharness.judge.published, seeds/evidence.yaml).

Peaks are those published on each date (ppharness.facts.catalog peak_history). Inference claims count
decode/serving rows within the claim's TPOT bound, never prefill alone. Throughput is compared per
instance of the claim: a row that used part of an instance, or a smaller instance of the same
family, is scaled linearly by devices (the same assumption as prorating its cost by `share`), and
the verdict is also given at SUBLINEAR_PER_DOUBLING. The words that explain a verdict are
ppharness.present.report.reasons.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import pandas as pd

from ppharness.core import stats
from ppharness.facts import catalog
from ppharness.facts.catalog import peak_per_instance
from ppharness.judge import compare, timeline
from ppharness.judge import published as published_mod
from ppharness.judge.claim import (  # noqa: F401  (the claims file's names, used by callers as claims.X)
    CLAIMS_PATH,
    DEFAULT_TPOT_MS,
    LATENCY_SCENARIOS,
    METRICS,
    PRICE_METRICS,
    QUALIFIERS,
    SCENARIOS,
    Claim,
    Side,
    load_claims,
)

# "not reproduced": an "up to" claim is a best case, so no workload of ours reaching it fails to
# reproduce the claim without refuting it; "not supported" is kept for claims meant to hold broadly.
VERDICTS = ("supported", "not supported", "not reproduced", "inconclusive", "not measured")
# Partial-instance runs are scaled to a whole instance linearly by devices; the verdict is also
# given with each doubling of devices adding 2 x 0.8 = 1.6x, not 2x: a stated assumption, not a
# sourced figure (README, "Comparing machines and checking the claims").
SUBLINEAR_PER_DOUBLING = 0.8
IMPLAUSIBLE_MFU = 0.6  # well-tuned LLM training reaches ~0.4-0.6 MFU; above this is doubtful
HEADLINE_BASIS = "on_demand"


# ------------------------------------------------------------------ prices and peaks


@dataclass(frozen=True)
class BreakEven:
    basis: str
    region: str  # the subject's region
    when: str  # "claim date" or "today"
    on: date
    usd_subject: float
    usd_baseline: float
    ratio: float  # speed ratio the claim needs: claimed x usd_subject / usd_baseline
    equal_mfu: float | None  # tokens/$ ratio if both ran at the same MFU (None: a peak unknown)
    baseline_region: str = ""  # where it differs from the subject's (Capacity Blocks), else ""

    @property
    def at(self) -> str:
        """`on_demand us-east-1`, or `capacity_block ap-southeast-4 vs us-east-2`."""
        other = f" vs {self.baseline_region}" if self.baseline_region else ""
        return f"{self.basis} {self.region}{other}"


def _instance(name: str) -> catalog.Instance | None:
    return catalog.instances().get(name)  # a broken catalog still raises CatalogError


def break_even_on(claim: Claim, b: catalog.Basis, on: date, ratio: float | None = None) -> BreakEven | None:
    """The break-even speed ratio at basis `b` on `on` (at the claimed `ratio`, default its lower
    end), or None when either instance has no price there then. A price only known from after a
    date is not used for that date."""
    try:
        ps = catalog.price(claim.subject.instance, b.basis, b.region, on).usd_per_hour
        pb = catalog.price(claim.baseline.instance, b.basis, b.other_region, on).usd_per_hour
    except catalog.CatalogError:
        return None
    peak_sub = peak_per_instance(claim.subject.instance, claim.dtype, on)
    peak_base = peak_per_instance(claim.baseline.instance, claim.dtype, on)
    equal = None if not (peak_sub and peak_base) else (peak_sub / ps) / (peak_base / pb)
    when = "claim date" if on == claim.date else "today"
    other = b.other_region if b.other_region != b.region else ""
    return BreakEven(b.basis, b.region, when, on, ps, pb, (ratio or claim.threshold) * ps / pb, equal, other)


def break_evens(claim: Claim, today: date) -> list[BreakEven]:
    """Break-even speed ratios at every basis both instances are priced in (a shared region, else
    each one's own: catalog.comparable_bases), at the claim's date and today."""
    if _instance(claim.subject.instance) is None or _instance(claim.baseline.instance) is None:
        return []
    out = []
    for b in catalog.comparable_bases(claim.subject.instance, claim.baseline.instance):
        for when, on in (("claim date", claim.date), ("today", today)):
            be = break_even_on(claim, b, on)
            if be is not None:
                out.append(dataclasses.replace(be, when=when))  # a claim dated today is both
    return out


def unpriced(claim: Claim) -> str:
    """Why a claim cannot be priced, in one line: the bases each instance is sold on, and for a
    baseline sold on one basis only (p5e.48xlarge: Capacity Blocks), that the subject lacks it."""
    sub, base = claim.subject.instance, claim.baseline.instance
    have = {n: sorted({p.basis for p in catalog.instance(n).prices}) for n in (sub, base)}
    line = f"no price basis shared by {sub} ({_bases_of(sub)}) and {base} ({_bases_of(base)})"
    if len(have[base]) == 1:
        only = have[base][0]
        line = (
            f"cannot be priced on the basis {base} is sold on ({_bases_of(base)} only): no {only} price for {sub}"
            f" is known ({_bases_of(sub)}), and a {only} rate against another basis's would compare two kinds of price"
        )
    return line


def _bases_of(name: str) -> str:
    return ", ".join(sorted({f"{p.basis} {p.region}" for p in catalog.instance(name).prices})) or "no price"


# ------------------------------------------------------------------ measurements


@dataclass
class Skipped:
    """Rows of a claim's families that did not count, by why (for the reasons)."""

    foreign: int = 0  # priced as a side's family but run on another device
    prefill: int = 0  # prefill rows under a serving claim
    slow: int = 0  # decode/serve rows over the claim's TPOT bound


def _kind(rows: pd.DataFrame) -> pd.Series:
    """The scenario without its qualifiers: compare labels a serving level `serve 1024/128`."""
    return rows["scenario"].astype(str).str.split(" ").str[0]


def _tpot_s(rows: pd.DataFrame) -> pd.Series:
    """Seconds per output token per sequence: a decode step makes one token for every sequence, so
    its median step time is the TPOT. A serving level is held to its p99 TPOT over requests, the
    percentile MLPerf Inference's server scenario bounds (`tpot_p99_s`; `tpot_s` where only that is
    recorded)."""
    nan = pd.Series(math.nan, rows.index)
    own = pd.to_numeric(rows["tpot_s"], errors="coerce") if "tpot_s" in rows else nan
    p99 = pd.to_numeric(rows["tpot_p99_s"], errors="coerce") if "tpot_p99_s" in rows else nan
    own = p99.where(p99.notna(), own)
    return own.where(_kind(rows) != "decode", rows["median_s"])


def _side_rows(rows: pd.DataFrame, claim: Claim, side: Side, skipped: Skipped) -> pd.DataFrame:
    """Usable rows of the side's family and the claim's scenarios, with throughput scaled to the
    claim's instance, best first. Rows that do not count are tallied in `skipped`: priced as the
    family but run on another device (a laptop run priced as a trn1 is not a trn1 measurement),
    prefill under a serving claim, or over the claim's TPOT bound."""
    if rows.empty:
        return rows
    family = rows["instance"].str.split(".").str[0] == side.family
    picked = rows[family & _kind(rows).isin(SCENARIOS[claim.scenario])].copy()
    if claim.scenario in LATENCY_SCENARIOS:
        skipped.prefill += int((family & (_kind(rows) == "prefill")).sum()) if claim.scenario == "inference" else 0
        fast = _tpot_s(picked) <= claim.tpot_ms / 1000  # unknown TPOT (NaN) does not count
        skipped.slow += int((~fast).sum())
        picked = picked[fast]
    target, scale = _instance(side.instance), []
    for _, r in picked.iterrows():
        own = _instance(r["instance"])
        same_device = own is not None and own.accelerator == (r["accelerator"] or None)
        skipped.foreign += not same_device
        ok = target is not None and same_device and r["share"] > 0
        scale.append(target.devices / (r["share"] * own.devices) if ok else math.nan)
    picked["scale"] = scale
    picked["instance_tps"] = picked["work_per_step"] / picked["median_s"] * picked["scale"]
    return picked[picked["instance_tps"].notna()].sort_values("instance_tps", ascending=False, kind="stable")


def _best_per_workload(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per workload: the fastest whole-instance record if there is one, else the fastest
    scaled one (rows arrive sorted fastest first)."""
    if rows.empty:
        return rows
    scaled = (rows["scale"] != 1.0).astype(int)
    order = rows.assign(_scaled=scaled).sort_values("_scaled", kind="stable")
    return order.drop_duplicates(subset=compare.WORKLOAD).drop(columns="_scaled")


def sublinear(scale: float) -> float:
    """The factor by which linear scaling overstates a run scaled up `scale` times: each doubling
    of devices gives 2 x SUBLINEAR_PER_DOUBLING, not 2 (1.0 for a whole instance or a scale-down)."""
    return SUBLINEAR_PER_DOUBLING ** math.log2(scale) if scale > 1 else 1.0


@dataclass
class Check:
    """One workload (preset, scenario, dtype) measured on both sides, each at its best batch."""

    workload: str
    subject: pd.Series
    baseline: pd.Series
    speed: tuple[float, float, float]  # subject/baseline per-instance throughput ratio (point, lo, hi)
    runs: tuple[int, int] = (1, 1)  # runs pooled on the subject and baseline side
    verdicts: dict[str, str] = field(default_factory=dict)  # "claim date" / "today" -> verdict

    @property
    def scaled(self) -> bool:
        return self.subject["scale"] != 1.0 or self.baseline["scale"] != 1.0

    @property
    def rests_on(self) -> str:
        """Which kind of record each side's throughput is: measured on the whole instance (no
        scaling applied) or scaled linearly from fewer devices."""
        return f"subject {record_kind(self.subject['scale'])}, baseline {record_kind(self.baseline['scale'])}"

    @property
    def sublinear_factor(self) -> float:
        """What the speed ratio becomes, relative to linear, when both sides scale sublinearly."""
        return sublinear(self.subject["scale"]) / sublinear(self.baseline["scale"])


def record_kind(scale: float) -> str:
    """A side's record kind: `scale` is claim-instance devices / devices the record used."""
    if scale == 1.0:
        return "instance-level record (whole instance, no scaling)"
    return f"scaled {scale:g}x linearly from a partial-instance record (assumed)"


def _verdict(speed: tuple[float, float, float], need: float, qualifier: str = "") -> str:
    _, lo, hi = speed
    if math.isnan(lo):
        return "inconclusive"
    if lo >= need:
        return "supported"
    if hi < need:  # below the figure: an "up to" claim is not reproduced here, not refuted
        return "not reproduced" if qualifier == "up to" else "not supported"
    return "inconclusive"


def _combine(verdicts: list[str], qualifier: str) -> str:
    if not verdicts:
        return "not measured"
    if qualifier == "up to":  # a best case: one workload reaching it is enough
        if "supported" in verdicts:
            return "supported"
        return "not reproduced" if set(verdicts) == {"not reproduced"} else "inconclusive"
    if "not supported" in verdicts:
        return "not supported"
    return "supported" if set(verdicts) == {"supported"} else "inconclusive"


@dataclass
class ClaimResult:
    claim: Claim
    break_even: list[BreakEven]
    checks: list[Check]
    n_subject: int
    n_baseline: int
    verdict: str  # at the claim's date, headline basis
    verdict_today: str
    basis: str = ""  # the headline basis and region the verdicts use ("" for non-price claims)
    needs: dict[str, float] = field(default_factory=dict)  # when -> speed ratio needed
    required_mfu: dict[str, float] = field(default_factory=dict)  # when -> subject MFU needed
    baseline_mfu_limit: dict[str, float] = field(default_factory=dict)  # when -> baseline MFU cap
    skipped: Skipped = field(default_factory=Skipped)  # rows of the families that did not count
    sublinear: dict[str, str] = field(default_factory=dict)  # when -> verdict at sublinear scaling
    published: published_mod.Published | None = None  # the verdict from published evidence
    timeline: list[timeline.Window] = field(default_factory=list)  # the verdict between price changes
    range_ends: dict[str, dict[str, str]] = field(default_factory=dict)  # when -> {"1.30x": verdict, ...}
    by_basis: dict[str, dict[str, str]] = field(default_factory=dict)  # other basis -> when -> verdict

    @property
    def foreign(self) -> int:
        return self.skipped.foreign

    @property
    def held(self) -> list[timeline.Window]:
        return timeline.held(self.timeline, "supported")

    @property
    def best(self) -> Check | None:
        """The deciding workload: the highest ratio for "up to" claims, the lowest otherwise."""
        if not self.checks:
            return None
        pick = max if self.claim.qualifier == "up to" else min
        return pick(self.checks, key=lambda c: c.speed[0])


def _needs(claim: Claim, bes: list[BreakEven]) -> tuple[str, dict[str, float]]:
    """The speed ratio the claim needs by "claim date"/"today", and the price basis it is at.

    Price claims use the break-even at the headline basis (on-demand where both have it, else the
    first shared basis); other claims need their stated ratio."""
    if claim.metric not in PRICE_METRICS:
        return "", {"claim date": claim.threshold, "today": claim.threshold}
    if not bes:
        return "", {}
    head = [b for b in bes if b.at == bes[0].at]
    return bes[0].at, {b.when: b.ratio for b in head}


def _headline_basis(claim: Claim, bes: list[BreakEven]) -> catalog.Basis | None:
    if claim.metric not in PRICE_METRICS or not bes:
        return None
    b = bes[0]
    return catalog.Basis(b.basis, b.region, b.baseline_region or b.region)


def _mfu_of(tps: float, flops_per_token: float, instance: str, dtype: str, on: date | None = None) -> float:
    """MFU of a whole instance running at `tps` tokens/s (DESIGN.md Metrics: achieved / peak),
    against the peak published on `on` (today if None)."""
    peak = peak_per_instance(instance, dtype, on)
    return tps * flops_per_token / (peak * 1e12) if peak and flops_per_token > 0 else math.nan


def _checks(sub: pd.DataFrame, base: pd.DataFrame, seed: int) -> list[Check]:
    """Pair each side's best row per workload; the speed ratio is per instance of the claim."""
    best_sub = sub.set_index(compare.WORKLOAD)
    checks = []
    for key, brow in base.set_index(compare.WORKLOAD).iterrows():
        if key not in best_sub.index:
            continue
        srow = best_sub.loc[[key]].iloc[0]
        point, lo, hi = stats.ratio_ci(srow["run_samples"], brow["run_samples"], seed=seed)
        k = srow["work_per_step"] * srow["scale"] / (brow["work_per_step"] * brow["scale"])
        runs = (int(srow["runs"]), int(brow["runs"]))
        checks.append(Check("/".join(map(str, key)), srow, brow, (point * k, lo * k, hi * k), runs))
    return checks


def _finite(values) -> list[float]:
    return [v for v in values if math.isfinite(v)]


def _mfu_bounds(res: ClaimResult, sub: pd.DataFrame, base: pd.DataFrame, today: date) -> None:
    """Subject MFU the claim needs (from the baseline's rows) and the baseline MFU that breaks it
    (from the subject's rows); for "up to" the most favourable workload counts, else the least.
    Each date uses the peaks published on it."""
    c = res.claim
    up_to = c.qualifier == "up to"
    for when, need in res.needs.items():
        on = c.date if when == "claim date" else today
        req = _finite(
            _mfu_of(need * r.instance_tps, r.flops_per_token, c.subject.instance, r.dtype, on)
            for r in base.itertuples()
        )
        cap = _finite(
            _mfu_of(r.instance_tps / need, r.flops_per_token, c.baseline.instance, r.dtype, on)
            for r in sub.itertuples()
        )
        if req:
            res.required_mfu[when] = min(req) if up_to else max(req)
        if cap:
            res.baseline_mfu_limit[when] = max(cap) if up_to else min(cap)


def _verdict_at(res: ClaimResult, need: float | None, factor: bool = False) -> str:
    """The claim's verdict over its checks at one needed speed; with `factor`, at sublinear scaling."""
    if res.checks and need is None:  # measured, but no shared price for that date to judge by
        return "inconclusive"
    verdicts = []
    for check in res.checks:
        k = check.sublinear_factor if factor else 1.0
        verdicts.append(_verdict(tuple(v * k for v in check.speed), need, res.claim.qualifier))
    return _combine(verdicts, res.claim.qualifier)


def _judge(res: ClaimResult, factor: bool = False) -> dict[str, str]:
    """The claim's verdict by date over its checks; with `factor`, at sublinear scaling."""
    return {when: _verdict_at(res, res.needs.get(when), factor) for when in ("claim date", "today")}


def _need_on(claim: Claim, head: catalog.Basis | None, on: date, ratio: float) -> float | None:
    """The speed the claim needs on `on` at the claimed `ratio` (at the headline basis's prices for a
    price claim), None when it is not priced then."""
    if claim.metric not in PRICE_METRICS:
        return ratio
    be = break_even_on(claim, head, on, ratio) if head else None
    return be.ratio if be else None


def _over_time(res: ClaimResult, head: catalog.Basis | None, today: date) -> None:
    """Range ends at the claim's date and today, and the timeline: the verdict at every date a
    price of the claim's instances (at the headline basis) changed, from the claim's date on."""
    c = res.claim
    for b in res.break_even:  # reserved and Capacity Block prices beside the headline basis
        if b.at != res.basis:
            res.by_basis.setdefault(b.at, {})[b.when] = _verdict_at(res, b.ratio)
    lo, hi = c.ratio
    if hi != lo:
        for when, on in (("claim date", c.date), ("today", today)):
            res.range_ends[when] = {f"{r:.2f}x": _verdict_at(res, _need_on(c, head, on, r)) for r in (lo, hi)}
    changes = []
    if head is not None:
        insts, regions = (c.subject.instance, c.baseline.instance), (head.region, head.other_region)
        changes = timeline.price_changes(insts, head.basis, c.date, today, regions)

    def judge(on: date) -> tuple[str, str]:
        need = _need_on(c, head, on, c.threshold)
        figure = "no shared price" if need is None else f"needs {need:.2f}x the baseline's throughput"
        return _verdict_at(res, need), figure

    # Not merged: with no records the verdict stays `not measured`, and the break-even moving with
    # each price change is the news.
    res.timeline = timeline.windows(c.date, today, changes, judge, merge=False)


def evaluate(claim: Claim, rows: pd.DataFrame, today: date | None = None, seed: int = 0) -> ClaimResult:
    """Everything `ppbench claims` says about one claim from our own records (usable rows of
    ppharness.judge.compare.prepare); `evaluate_all` adds the verdict from published evidence."""
    today = today or date.today()
    bes = break_evens(claim, today) if claim.metric in PRICE_METRICS else []
    basis, needs = _needs(claim, bes)
    skipped = Skipped()
    sub, base = (_side_rows(rows, claim, s, skipped) for s in (claim.subject, claim.baseline))
    # Each side's best batch per workload (rows are sorted by per-instance throughput, best first),
    # a whole-instance record before any scaled one: a measured instance beats an assumed scaling.
    sub, base = (_best_per_workload(s) for s in (sub, base))
    checks = _checks(sub, base, seed) if not (sub.empty or base.empty) else []
    res = ClaimResult(claim, bes, checks, len(sub), len(base), "not measured", "not measured", basis, needs)
    res.skipped = skipped
    for check in checks:
        check.verdicts = {when: _verdict(check.speed, need, claim.qualifier) for when, need in needs.items()}
    linear = _judge(res)
    res.verdict, res.verdict_today = linear["claim date"], linear["today"]
    if any(check.scaled for check in checks):
        res.sublinear = _judge(res, factor=True)
    _over_time(res, _headline_basis(claim, bes), today)
    _mfu_bounds(res, sub, base, today)
    return res


def evaluate_all(
    df: pd.DataFrame,
    claims: list[Claim] | None = None,
    today: date | None = None,
    seed: int = 0,
    latest: bool = False,
    evidence_path: Path | None = None,
) -> list[ClaimResult]:
    """Evaluate every claim against loaded records (an empty frame is fine: all `not measured`)
    and against the published evidence (seeds/evidence.yaml, or `evidence_path`); `latest` keeps
    each system's newest run per workload instead of pooling every run."""
    today = today or date.today()
    rows = compare.prepare(df, latest=latest).usable
    ev = published_mod.load_or_none(evidence_path)
    results = [evaluate(c, rows, today, seed) for c in (claims if claims is not None else load_claims())]
    for res in results:
        res.published = published_mod.judge(res.claim, ev, today)
    return results
