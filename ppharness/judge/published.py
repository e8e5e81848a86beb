"""A claim's verdict from published evidence (seeds/evidence.yaml), beside the one from our records.

Owns the rule that turns evidence pairs into a verdict -- `reproduced`, `not reproduced`,
`inconclusive` or `no evidence`, each with its reasons -- computed with the claims' own break-even
machinery: a pair's tokens-per-dollar ratio (its speed ratio x price_baseline / price_subject, at
the first price basis both instances share) at the claim's date and today, held against the
claimed tokens-per-dollar ratio. That is the same test as the pair's speed ratio against the
break-even speed ratio. Throughput claims hold the speed ratio against the claimed one; spec
claims (peak TFLOPS) the catalog's published peaks of each date.

Pairs count for a claim when the subject entry runs on the claim's subject family, the baseline
entry on its baseline family, and the scenario matches (train claims: train; inference claims:
serve, with both sides within the claim's TPOT bound); at the claim's date, only pairs whose both
figures had been published by then. Pairs graded `different-scale` are shown but
decide a verdict only when nothing better exists, and then only as `inconclusive`.
Our own measurement is the result; this verdict is evidence from others, labelled as such.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from ppharness.facts.catalog import peak_per_instance
from ppharness.judge import evidence
from ppharness.judge.claim import Claim
from ppharness.judge.evidence import Entry, Evidence, Pair, PairFigure

VERDICTS = ("reproduced", "not reproduced", "inconclusive", "no evidence")
PRICE_METRICS = ("tokens_per_dollar", "cost_per_token")
WEAK_GRADE = "different-scale"
_SCENARIO = {"train": "train", "inference": "serve", "decode": "serve"}  # claim scenario -> evidence


def load_or_none(path: Path | None = None) -> Evidence | None:
    """The evidence file, or None when the default file does not exist (a named one must)."""
    if path is None and not evidence.EVIDENCE_PATH.exists():
        return None
    return evidence.load(path)


@dataclass
class PairCheck:
    """One published pair held against a claim."""

    pair: Pair
    subject: Entry
    baseline: Entry
    figures: dict[str, PairFigure | None]  # "claim date" / "today" -> the pair at that date's prices
    counted: bool = True
    why_not: str = ""  # why a matching pair does not count (a latency bound)

    @property
    def published_on(self) -> date:
        """When both figures of the pair were public: the later source date."""
        return max(self.subject.source_date, self.baseline.source_date)

    def value(self, when: str, metric: str) -> float | None:
        """The pair's ratio in the claim's terms: tokens per dollar, or speed for throughput claims."""
        if metric not in PRICE_METRICS:
            return self.subject.tokens_per_s / self.baseline.tokens_per_s
        fig = self.figures.get(when)
        return None if fig is None else fig.per_usd


@dataclass
class Published:
    verdict: str  # at the claim's date
    verdict_today: str
    checks: list[PairCheck] = field(default_factory=list)
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)  # when -> (lowest, highest)
    best: dict[str, str] = field(default_factory=dict)  # when -> id of the highest pair
    reasons: list[str] = field(default_factory=list)
    figure: str = "tokens/$ ratio"  # what `ranges` holds


def _family(instance: str) -> str:
    return instance.split(".")[0]


def _fmt_range(lo: float, hi: float) -> str:
    return f"{lo:.2f}x" if round(lo, 2) == round(hi, 2) else f"{lo:.2f}-{hi:.2f}x"


def _peaks(claim: Claim, today: date) -> Published:
    """Spec claims: the catalog's peaks as published on each date (cited in configs/accelerators.yaml)."""
    out = Published("no evidence", "no evidence", figure="peak ratio")
    verdicts = {}
    for when, on in (("claim date", claim.date), ("today", today)):
        sp = peak_per_instance(claim.subject.instance, claim.dtype, on)
        bp = peak_per_instance(claim.baseline.instance, claim.dtype, on)
        if not (sp and bp):
            verdicts[when] = "no evidence"
            out.reasons.append(f"no published {claim.dtype} peak for both instances on {on}")
            continue
        r = sp / bp
        out.ranges[when] = (r, r)
        verdicts[when] = "reproduced" if r >= claim.threshold else "not reproduced"
        out.reasons.append(
            f"published {claim.dtype} peaks on {on} ({when}): {sp:,.0f} vs {bp:,.0f} TFLOP/s per instance = {r:.2f}x"
            f" against the claimed {claim.threshold:.2f}x (vendor spec sheets, configs/accelerators.yaml)"
        )
    out.verdict, out.verdict_today = verdicts["claim date"], verdicts["today"]
    return out


def _matching(claim: Claim, ev: Evidence, today: date) -> list[PairCheck]:
    scenario = _SCENARIO.get(claim.scenario)
    checks = []
    for p in ev.pairs:
        sub, base = ev.entries[p.subject], ev.entries[p.baseline]
        if (_family(sub.instance), _family(base.instance)) != (claim.subject.family, claim.baseline.family):
            continue
        if sub.workload.scenario != scenario:
            continue
        figs = {when: evidence.pair_figure(ev, p, on) for when, on in (("claim date", claim.date), ("today", today))}
        check = PairCheck(p, sub, base, figs)
        if scenario == "serve":
            for side, e in (("subject", sub), ("baseline", base)):
                if e.tpot is None:
                    check.counted, check.why_not = False, f"{side} {e.id} publishes no TPOT to hold to the bound"
                elif e.tpot > claim.tpot_ms:
                    check.counted = False
                    check.why_not = f"{side} {e.id} TPOT {e.tpot:g} ms is over the claim's {claim.tpot_ms:g} ms bound"
        checks.append(check)
    return checks


def _decide(claim: Claim, values: list[tuple[PairCheck, float]]) -> tuple[str, str]:
    """Verdict and its one-line reason from the pairs' ratios at one date."""
    thr, up_to = claim.threshold, claim.qualifier == "up to"
    strong = [(c, v) for c, v in values if c.pair.grade != WEAK_GRADE]
    deciding = strong or values
    lo, hi = min(v for _, v in deciding), max(v for _, v in deciding)
    if up_to:  # a best case: the best pair decides
        verdict = "reproduced" if hi >= thr else "not reproduced"
        why = f"best pair {hi:.2f}x {'reaches' if hi >= thr else 'is below'} the claimed {thr:.2f}x"
    elif lo >= thr:
        verdict, why = "reproduced", f"every pair reaches the claimed {thr:.2f}x (lowest {lo:.2f}x)"
    elif hi < thr:
        verdict, why = "not reproduced", f"no pair reaches the claimed {thr:.2f}x (highest {hi:.2f}x)"
    else:
        verdict, why = "inconclusive", f"pairs straddle the claimed {thr:.2f}x ({lo:.2f}-{hi:.2f}x)"
    if not strong:
        verdict, why = "inconclusive", f"{why}, but only {WEAK_GRADE} pairs exist (e.g. 32 nodes vs one)"
    return verdict, why


def judge(claim: Claim, ev: Evidence | None, today: date | None = None) -> Published:
    """The published-evidence verdict of one claim at its date and today, with its reasons."""
    today = today or date.today()
    if claim.metric == "peak_tflops":
        return _peaks(claim, today)
    if ev is None:
        return Published("no evidence", "no evidence", reasons=["no evidence file (seeds/evidence.yaml)"])
    checks = _matching(claim, ev, today)
    figure = "tokens/$ ratio" if claim.metric in PRICE_METRICS else "speed ratio"
    out = Published("no evidence", "no evidence", checks, figure=figure)
    scen = _SCENARIO.get(claim.scenario, claim.scenario)
    if not checks:
        out.reasons.append(
            f"no published pair of {claim.subject.family} vs {claim.baseline.family} {scen} measurements in {ev.path.name}"
        )
        return out
    out.reasons += [_pair_line(c, claim) for c in checks]
    counted = [c for c in checks if c.counted]
    if not counted:
        out.reasons.append("no pair meets the claim's latency bound, so none counts")
        return out
    verdicts = {}
    for when in ("claim date", "today"):
        # At the claim's date only what had been published by then counts: a 2024 SDK's figure at
        # 2022 prices answers neither "was it true then" nor "is it true now" (reasons still show it).
        known = [c for c in counted if when == "today" or c.published_on <= claim.date]
        later = [v for c in counted if c not in known and (v := c.value(when, claim.metric)) is not None]
        if later:
            out.reasons.append(
                f"{when}: {len(later)} pair(s) published after {claim.date} not counted for that date"
                f" (at its prices they give {_fmt_range(min(later), max(later))})"
            )
        if not known:
            verdicts[when] = "no evidence"
            out.reasons.append(f"{when}: no pair had been published by {claim.date}")
            continue
        values = [(c, v) for c in known if (v := c.value(when, claim.metric)) is not None]
        if not values:
            verdicts[when] = "inconclusive"
            c = known[0]
            out.reasons.append(
                f"{when}: no price basis shared on that date by {c.subject.instance} "
                f"({evidence.bases_of(c.subject.instance)}) and {c.baseline.instance} ({evidence.bases_of(c.baseline.instance)})"
            )
            continue
        out.ranges[when] = (min(v for _, v in values), max(v for _, v in values))
        out.best[when] = max(values, key=lambda cv: cv[1])[0].pair.id
        verdicts[when], why = _decide(claim, values)
        out.reasons.append(f"{when}: {figure} over {len(values)} pair(s) {_fmt_range(*out.ranges[when])}; {why}")
    out.verdict, out.verdict_today = verdicts["claim date"], verdicts["today"]
    return out


def _pair_line(c: PairCheck, claim: Claim) -> str:
    """`bertlarge-...` (grade): subject vs baseline, ratios and the sources' dates, in one line."""
    speed = c.subject.tokens_per_s / c.baseline.tokens_per_s
    parts = [f"published pair {c.pair.id} ({c.pair.grade}): {evidence.describe(c.subject)} vs "]
    parts.append(f"{evidence.describe(c.baseline)}, {speed:.2f}x tokens/s per instance")
    figs = {w: f for w, f in c.figures.items() if f is not None}
    if claim.metric in PRICE_METRICS and figs:
        shown = [f"{f.per_usd:.2f}x ({w}, {f.at})" for w, f in figs.items()]
        parts.append(", tokens/$ " + " -> ".join(shown))
    parts.append(f"; published {c.subject.source_date} and {c.baseline.source_date}")
    if not c.counted:
        parts.append(f"; not counted: {c.why_not}")
    return "".join(parts)
