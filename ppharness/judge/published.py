"""A claim's verdict from published evidence (seeds/evidence.yaml), beside the one from our records.

Owns how evidence pairs become a verdict -- `reproduced`, `not reproduced`, `inconclusive` or
`no evidence`, each with its reasons -- at the claim's date, today, and every date in between
where an input changed (ppharness.judge.timeline). A pair's tokens-per-dollar ratio is its speed
ratio x price_baseline / price_subject, held against the claimed ratio: the same test as its speed
ratio against the break-even speed. Throughput claims hold the speed ratio against the claimed
one; spec claims (peak TFLOPS) the catalog's published peaks of each date. What one pair can
decide -- instance ambiguity priced as an interval, a different-scale pair's scaling bound, a
batch-1 latency pair, the closest-dated baseline as the headline -- is ppharness.judge.rules'.

Pairs count for a claim when the subject entry runs on the claim's subject family, the baseline
entry on its baseline family, and the scenario matches (train claims: train; inference claims:
serve and encode, serve pairs within the claim's TPOT bound); on a date, only pairs whose both
figures had been published by then. The headline verdict is at on-demand prices; other bases
(reserved, Capacity Blocks) are judged beside it where both sides have one. A range claim
("30-40%") is judged at both ends; its verdict is the lower end's (a range holds at its lower end).
Our own measurement is the result; this verdict is evidence from others, labelled as such.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from ppharness.facts import catalog
from ppharness.facts.catalog import peak_per_instance
from ppharness.judge import evidence, rules, timeline
from ppharness.judge.claim import Claim
from ppharness.judge.evidence import Entry, Evidence, Pair, PairFigure
from ppharness.judge.rules import Reading

VERDICTS = ("reproduced", "not reproduced", "inconclusive", "no evidence")
PRICE_METRICS = rules.PRICE_METRICS
HEADLINE_BASIS = "on_demand"
WHENS = ("claim date", "today")
_SCENARIO = {"train": ("train",), "inference": ("serve", "encode"), "decode": ("serve",)}  # claim -> evidence


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
    figures: dict[str, PairFigure | None]  # "claim date" / "today" -> the pair at on-demand prices
    readings: dict[str, Reading | None] = field(default_factory=dict)  # when -> what the rules read
    counted: bool = True
    why_not: str = ""  # why a matching pair does not count (a latency bound)
    aside: dict[str, str] = field(default_factory=dict)  # when -> why the headline rule set it aside

    @property
    def published_on(self) -> date:
        """When both figures of the pair were public: the later source date."""
        return max(self.subject.source_date, self.baseline.source_date)


@dataclass
class Decision:
    """The verdict on one date at one threshold and basis, with what it rests on."""

    verdict: str
    why: str
    values: list[tuple[PairCheck, Reading]] = field(default_factory=list)
    aside: dict[str, str] = field(default_factory=dict)  # pair id -> why not counted (headline rule)
    threshold: float = 0.0
    up_to: bool = False

    @property
    def figure(self) -> str:
        """The deciding pair in a few words, for a timeline: of the pairs that count (rule 4), the
        most favourable to the subject for an "up to" claim, else the least."""
        if not self.values:
            return self.why
        counted = [(c, r) for c, r in self.values if rules.counts(r, c.pair.grade, self.threshold)] or self.values
        if self.up_to:
            c, r = max(counted, key=lambda cr: (cr[1].hi, cr[1].point))
            return f"best pair {r.text}, {c.pair.id}"
        c, r = min(counted, key=lambda cr: (cr[1].lo, cr[1].point))
        return f"lowest pair {r.text}, {c.pair.id}"


@dataclass
class Published:
    verdict: str  # at the claim's date
    verdict_today: str
    checks: list[PairCheck] = field(default_factory=list)
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)  # when -> (lowest, highest) point
    best: dict[str, str] = field(default_factory=dict)  # when -> id of the highest pair
    reasons: list[str] = field(default_factory=list)
    figure: str = "tokens/$ ratio"  # what `ranges` holds
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)  # when -> (lowest lo, highest hi)
    range_ends: dict[str, dict[str, str]] = field(default_factory=dict)  # when -> {"1.40x": verdict, ...}
    by_basis: dict[str, dict[str, str]] = field(default_factory=dict)  # other basis -> when -> verdict
    timeline: list[timeline.Window] = field(default_factory=list)
    basis: str = HEADLINE_BASIS

    @property
    def held(self) -> list[timeline.Window]:
        return timeline.held(self.timeline, "reproduced")


def _family(instance: str) -> str:
    return instance.split(".")[0]


def _fmt_range(lo: float, hi: float) -> str:
    return f"{lo:.2f}x" if round(lo, 2) == round(hi, 2) else f"{lo:.2f}-{hi:.2f}x"


def _peaks(claim: Claim, today: date) -> Published:
    """Spec claims: the catalog's peaks as published on each date (cited in configs/accelerators.yaml)."""
    out = Published("no evidence", "no evidence", figure="peak ratio")
    insts = (claim.subject.instance, claim.baseline.instance)

    def ratio(on: date) -> float | None:
        sp, bp = (peak_per_instance(i, claim.dtype, on) for i in insts)
        return sp / bp if sp and bp else None

    def judge(on: date) -> tuple[str, str]:
        r = ratio(on)
        if r is None:
            return "no evidence", f"no published {claim.dtype} peak for both instances"
        return ("reproduced" if r >= claim.threshold else "not reproduced"), f"peak ratio {r:.2f}x"

    verdicts = {}
    for when, on in (("claim date", claim.date), ("today", today)):
        sp, bp = (peak_per_instance(i, claim.dtype, on) for i in insts)
        verdicts[when] = judge(on)[0]
        if not (sp and bp):
            out.reasons.append(f"no published {claim.dtype} peak for both instances on {on}")
            continue
        out.ranges[when] = (sp / bp, sp / bp)
        out.reasons.append(
            f"published {claim.dtype} peaks on {on} ({when}): {sp:,.0f} vs {bp:,.0f} TFLOP/s per instance"
            f" = {sp / bp:.2f}x against the claimed {claim.threshold:.2f}x (vendor spec sheets, configs/accelerators.yaml)"
        )
    out.verdict, out.verdict_today = verdicts["claim date"], verdicts["today"]
    out.timeline = timeline.windows(
        claim.date, today, timeline.peak_changes(insts, claim.dtype, claim.date, today), judge
    )
    out.reasons += timeline.lines(out.timeline, "reproduced", f"the {claim.dtype} peaks published on each date")
    return out


def _matching(claim: Claim, ev: Evidence, today: date) -> list[PairCheck]:
    scenarios = _SCENARIO.get(claim.scenario, ())
    checks = []
    for p in ev.pairs:
        sub, base = ev.entries[p.subject], ev.entries[p.baseline]
        if (_family(sub.instance), _family(base.instance)) != (claim.subject.family, claim.baseline.family):
            continue
        if sub.workload.scenario not in scenarios:
            continue
        figs = {w: evidence.pair_figure(ev, p, on, HEADLINE_BASIS) for w, on in zip(WHENS, (claim.date, today))}
        check = PairCheck(p, sub, base, figs)
        if claim.metric not in PRICE_METRICS:  # per-instance speed: the claim's instance sizes only
            for e, inst in ((sub, claim.subject.instance), (base, claim.baseline.instance)):
                if why := rules.speed_mismatch(e, inst):
                    check.counted, check.why_not = False, why
        if sub.workload.scenario == "serve":  # generated tokens: held to the claim's TPOT bound
            for side, e in (("subject", sub), ("baseline", base)):
                if e.tpot is None:
                    check.counted, check.why_not = False, f"{side} {e.id} publishes no TPOT to hold to the bound"
                elif e.tpot > claim.tpot_ms:
                    check.counted = False
                    check.why_not = f"{side} {e.id} TPOT {e.tpot:g} ms is over the claim's {claim.tpot_ms:g} ms bound"
        checks.append(check)
    return checks


def _reading(claim: Claim, c: PairCheck, on: date, basis: str) -> Reading | None:
    """The pair read by the rules at the first comparable basis of that name pricing it on `on`."""
    bases = evidence.basis_named(c.subject.instance, c.baseline.instance, basis) or [None]
    for b in bases:
        r = rules.read(c.subject, c.baseline, c.pair.grade, claim.metric, b, on)
        if r is not None:
            return r
    return None


def decide_on(claim: Claim, checks: list[PairCheck], on: date, threshold: float, basis: str) -> Decision:
    """The verdict from the pairs published by `on`, at that date's `basis` prices."""
    known = [c for c in checks if c.counted and c.published_on <= on]
    if not known:
        return Decision("no evidence", f"no pair had been published by {on}")
    kept, aside_at = rules.headline(known)
    aside = {known[i].pair.id: why for i, why in aside_at.items()}
    values = [(c, r) for c in kept if (r := _reading(claim, c, on, basis)) is not None]
    if not values:
        c = kept[0]
        why = (
            f"no {basis} price on {on} shared by {c.subject.instance} ({evidence.bases_of(c.subject.instance)})"
            f" and {c.baseline.instance} ({evidence.bases_of(c.baseline.instance)})"
        )
        return Decision("inconclusive", why, aside=aside)
    up_to = claim.qualifier == "up to"
    verdict, why = rules.decide([(c.pair.id, c.pair.grade, r) for c, r in values], threshold, up_to)
    return Decision(verdict, why, values, aside, threshold, up_to)


def judge(claim: Claim, ev: Evidence | None, today: date | None = None) -> Published:
    """The published-evidence verdict of one claim at its date, today and in between, with reasons."""
    today = today or date.today()
    if claim.metric == "peak_tflops":
        return _peaks(claim, today)
    if ev is None:
        return Published("no evidence", "no evidence", reasons=["no evidence file (seeds/evidence.yaml)"])
    checks = _matching(claim, ev, today)
    figure = "tokens/$ ratio" if claim.metric in PRICE_METRICS else "speed ratio"
    out = Published("no evidence", "no evidence", checks, figure=figure)
    scen = "/".join(_SCENARIO.get(claim.scenario, (claim.scenario,)))
    if not checks:
        out.reasons.append(
            f"no published pair of {claim.subject.family} vs {claim.baseline.family} {scen} measurements in {ev.path.name}"
        )
        return out
    for c in checks:
        c.readings = {w: _reading(claim, c, on, HEADLINE_BASIS) for w, on in zip(WHENS, (claim.date, today))}
    out.reasons += [_pair_line(c, claim) for c in checks]
    if not any(c.counted for c in checks):
        out.reasons.append("no pair counts: each misses the claim's latency bound or instance sizes (above)")
        return out
    lo_thr, hi_thr = claim.ratio
    verdicts = {}
    for when, on in zip(WHENS, (claim.date, today)):
        d = decide_on(claim, checks, on, lo_thr, HEADLINE_BASIS)
        _later_line(out, claim, checks, when)
        verdicts[when] = d.verdict
        for c in checks:
            if c.pair.id in d.aside:
                c.aside[when] = d.aside[c.pair.id]
                out.reasons.append(f"{when}: {c.pair.id} shown, not counted: {d.aside[c.pair.id]}")
        if d.verdict == "no evidence":
            out.reasons.append(f"{when}: no pair had been published by {claim.date}")
            continue
        if not d.values:
            out.reasons.append(f"{when}: {d.why}")
            continue
        points = [r.point for _, r in d.values]
        out.ranges[when] = (min(points), max(points))
        out.intervals[when] = (min(r.lo for _, r in d.values), max(r.hi for _, r in d.values))
        out.best[when] = max(d.values, key=lambda cr: cr[1].point)[0].pair.id
        out.reasons.append(f"{when}: {figure} over {len(d.values)} pair(s) {_fmt_range(*out.ranges[when])}; {d.why}")
        if hi_thr != lo_thr:
            top = decide_on(claim, checks, on, hi_thr, HEADLINE_BASIS).verdict
            out.range_ends[when] = {f"{lo_thr:.2f}x": d.verdict, f"{hi_thr:.2f}x": top}
            out.reasons.append(
                f"{when}: a range claim, judged at both ends: {d.verdict} at its lower end ({lo_thr:.2f}x),"
                f" {top} at its upper end ({hi_thr:.2f}x); the verdict is the lower end's"
            )
    out.verdict, out.verdict_today = verdicts["claim date"], verdicts["today"]
    if claim.metric in PRICE_METRICS:
        _what_would_decide(out, claim, checks, today)
        _other_bases(out, claim, checks, today)
    _timeline(out, claim, checks, today)
    return out


def _later_line(out: Published, claim: Claim, checks: list[PairCheck], when: str) -> None:
    """At the claim's date, the pairs published after it, with what they give at its prices."""
    if when != "claim date":
        return
    later = [c.readings[when] for c in checks if c.counted and c.published_on > claim.date]
    values = [r.point for r in later if r is not None]
    if values:
        out.reasons.append(
            f"{when}: {len(values)} pair(s) published after {claim.date} not counted for that date"
            f" (at its prices they give {_fmt_range(min(values), max(values))})"
        )


def _what_would_decide(out: Published, claim: Claim, checks: list[PairCheck], today: date) -> None:
    """When no pair decides a price claim today, the subject throughput that would: the claimed
    tokens-per-dollar ratio against the best baseline figure under load (not batch 1)."""
    d = decide_on(claim, checks, today, claim.threshold, HEADLINE_BASIS)
    if not d.values or any(rules.counts(r, c.pair.grade, claim.threshold) for c, r in d.values):
        return
    loaded = {c.baseline.id: c.baseline for c, _ in d.values if not c.baseline.batch_1}
    priced = [(e, e.tokens_per_s * 3600 / p) for e in loaded.values() if (p := _usd_today(e.instance, today))]
    usd_sub = _usd_today(claim.subject.instance, today)
    if not priced or usd_sub is None:
        return
    e, per_usd = max(priced, key=lambda ep: ep[1])
    need = claim.threshold * per_usd * usd_sub / 3600
    out.reasons.append(
        f"what would decide it: against the best published baseline under load ({e.id}, {evidence.fmt(e.tokens_per_s)}"
        f" tokens/s on {e.instance}, {per_usd:,.0f} tokens/$ today), {claim.subject.instance} needs at least"
        f" {evidence.fmt(need)} tokens/s on the same workload for the claimed {claim.threshold:.2f}x"
        + (f", within the claim's {claim.tpot_ms:g} ms TPOT" if e.workload.scenario == "serve" else "")
    )


def _usd_today(instance: str, on: date) -> float | None:
    """The instance's on-demand price on `on` in its first region, or None."""
    for b in evidence.basis_named(instance, instance, HEADLINE_BASIS):
        try:
            return catalog.price(instance, b.basis, b.region, on).usd_per_hour
        except catalog.CatalogError:
            continue
    return None


def _other_bases(out: Published, claim: Claim, checks: list[PairCheck], today: date) -> None:
    """The verdict at reserved and Capacity Block prices where the pairs' instances have them, and
    in one line per basis why not where they do not."""
    for basis in catalog.BASES:
        if basis == HEADLINE_BASIS:
            continue
        priced = [c for c in checks if evidence.basis_named(c.subject.instance, c.baseline.instance, basis)]
        if not priced:
            have = [i for i in (claim.subject.instance, claim.baseline.instance) if _has(i, basis)]
            if have:
                out.reasons.append(
                    f"{basis}: only {' and '.join(have)} has a {basis} price in the catalog, so no pair is priced on it"
                )
            continue
        where = "; ".join(
            sorted(
                {b.label for c in priced for b in evidence.basis_named(c.subject.instance, c.baseline.instance, basis)}
            )
        )
        got = {}
        for when, on in zip(WHENS, (claim.date, today)):
            d = decide_on(claim, priced, on, claim.threshold, basis)
            got[when] = d.verdict
            out.reasons.append(f"{when} at {basis} prices ({where}): {d.verdict}; {d.why}")
        out.by_basis[basis] = got


def _has(instance: str, basis: str) -> bool:
    return any(p.basis == basis for p in catalog.instance(instance).prices)


def _timeline(out: Published, claim: Claim, checks: list[PairCheck], today: date) -> None:
    """The verdict at every date a price of the pairs' instances changed or one of their figures
    was published, from the claim's date to today."""
    counted = [c for c in checks if c.counted]
    instances = [i for c in counted for e in (c.subject, c.baseline) for i in e.instances]
    priced = claim.metric in PRICE_METRICS
    changes = timeline.price_changes(instances, HEADLINE_BASIS, claim.date, today) if priced else []
    entries = {e.id: e for c in counted for e in (c.subject, c.baseline)}
    changes += [timeline.Change(e.source_date, f"published: {e.id} ({e.measured})") for e in entries.values()]

    def judge(on: date) -> tuple[str, str]:
        d = decide_on(claim, checks, on, claim.threshold, HEADLINE_BASIS)
        return d.verdict, d.figure

    out.timeline = timeline.windows(claim.date, today, changes, judge)
    where = "pairs published by each date" + (f", {HEADLINE_BASIS} prices of each date" if priced else "")
    out.reasons += timeline.lines(out.timeline, "reproduced", where)


def _pair_line(c: PairCheck, claim: Claim) -> str:
    """`bertlarge-...` (grade): subject vs baseline, ratios and the sources' dates, in one line."""
    speed = c.subject.tokens_per_s / c.baseline.tokens_per_s
    parts = [f"published pair {c.pair.id} ({c.pair.grade}): {evidence.describe(c.subject)} vs "]
    parts.append(f"{evidence.describe(c.baseline)}, {speed:.2f}x tokens/s per instance")
    figs = {w: f for w, f in c.figures.items() if f is not None}
    if claim.metric in PRICE_METRICS and figs:
        shown = []
        for w, f in figs.items():
            r = rules.price_interval(c.subject, c.baseline, f.basis, f.on)  # rule 1 alone: the instance range
            widened = f" [{r.lo:.2f}-{r.hi:.2f}x by instance]" if r and round(r.lo, 2) != round(r.hi, 2) else ""
            shown.append(f"{f.per_usd:.2f}x{widened} ({w}, {f.at})")
        parts.append(", tokens/$ " + " -> ".join(shown))
    parts.append(f"; published {c.subject.source_date} and {c.baseline.source_date}")
    if gap := rules.vintage(c.subject, c.baseline):
        parts.append(f" ({gap})")
    today_reading = c.readings.get("today")
    if today_reading is not None and c.pair.grade in rules.WEAK_GRADES:
        decisive = today_reading.decides(claim.threshold)
        parts.append(
            f"; read as {today_reading.text} today ({'decisive' if decisive else 'not decisive'} at"
            f" {claim.threshold:.2f}x: {'; '.join(today_reading.notes)})"
        )
    if not c.counted:
        parts.append(f"; not counted: {c.why_not}")
    return "".join(parts)
