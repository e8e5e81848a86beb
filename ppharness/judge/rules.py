"""What a published pair can decide: the grading rules, each written once.

A pair's ratio on a date (tokens per dollar for a price claim, the speed ratio for a throughput
claim) is read as an interval [lo, hi] of what the comparison could be, given what its sources
leave open. One function per rule (tests/test_rules.py tests each):

1. `price_interval`: an entry whose source names two instances ("trn1.32xlarge/trn1n.32xlarge")
   is priced at each, and the ratio runs from the dearest to the cheapest combination.
2. `scale_bound`: in a `different-scale` pair the side on more accelerators carries scaling losses
   its per-instance figure includes; dividing by the scaling efficiency its source publishes is
   the most any scaling correction could add, and with none published that side is unbounded.
3. `latency_unbounded`: a `batch-1-latency` pair is one request at a time on each side. Under
   load both sides batch (one A10G serves a 7B model at about ten times its batch-1 rate within a
   100 ms TPOT: TGI's rows in seeds/evidence.yaml), so it bounds neither throughput nor
   price-performance, the two things pairs are held to (a latency claim could read it as is).
4. `counts`: `same-workload-*` pairs always count; `different-scale` and `batch-1-latency` pairs
   count only where decisive, their whole interval on one side of the claimed figure.
5. `decide`: an "up to" claim is `reproduced` when some counted pair's interval is at or above the
   figure, `not reproduced` when every one is below, else `inconclusive` (the verdict flips inside
   an interval); other claims need every pair at or above it. With no pair counting, the rest
   decide, and then only `inconclusive`.
6. `headline`: of the pairs sharing one subject figure and baseline instance, the one whose
   baseline figure was published closest to the subject's counts; the others are shown.
7. `speed_mismatch`: a throughput claim compares tokens/s per instance of the claim's instances,
   so a pair on an instance with another number of accelerators does not count for it (a price
   claim's tokens per dollar already divides by the instance's size).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date
from typing import Protocol

from ppharness.facts import catalog
from ppharness.judge.evidence import LATENCY_GRADE, SCALE_GRADE, Entry

PRICE_METRICS = ("tokens_per_dollar", "cost_per_token")
WEAK_GRADES = (SCALE_GRADE, LATENCY_GRADE)  # count only where decisive (rule 4)
VINTAGE_DAYS = 365  # figures published further apart than this get a vintage warning


@dataclass(frozen=True)
class Reading:
    """What one pair says on one date: its ratio at the instances the entries name (`point`), and
    the interval the rules allow it (`lo` least, `hi` most favourable to the subject)."""

    point: float
    lo: float
    hi: float
    notes: tuple[str, ...] = ()  # what widened the interval, in words

    def decides(self, threshold: float) -> bool:
        """The whole interval on one side of the threshold."""
        return self.hi < threshold or self.lo >= threshold

    @property
    def text(self) -> str:
        """`1.43x`, `1.24-1.43x`, or `0.22x or more` when unbounded above."""
        if math.isinf(self.hi):
            return "unbounded" if self.lo == 0 else f"{self.lo:.2f}x or more"
        if round(self.lo, 2) == round(self.hi, 2):
            return f"{self.point:.2f}x"
        return f"{self.lo:.2f}-{self.hi:.2f}x"


class Paired(Protocol):
    """What the rules need of a pair: its two entries (ppharness.judge.published.PairCheck)."""

    subject: Entry
    baseline: Entry


def _usd(instance: str, basis: str, region: str, on: date) -> float | None:
    try:
        return catalog.price(instance, basis, region, on).usd_per_hour
    except catalog.CatalogError:
        return None


def price_interval(sub: Entry, base: Entry, basis: catalog.Basis, on: date) -> Reading | None:
    """Rule 1: tokens-per-dollar ratio at the named instances, and over every instance each
    source's label allows; None when the named instances have no price at `basis` on `on`."""
    speed = sub.tokens_per_s / base.tokens_per_s
    usd_sub = {i: _usd(i, basis.basis, basis.region, on) for i in sub.instances}
    usd_base = {i: _usd(i, basis.basis, basis.other_region, on) for i in base.instances}
    if usd_sub[sub.instance] is None or usd_base[base.instance] is None:
        return None
    point = speed * usd_base[base.instance] / usd_sub[sub.instance]  # type: ignore[operator]
    ratios = {(s, b): speed * pb / ps for s, ps in usd_sub.items() if ps for b, pb in usd_base.items() if pb}
    notes = []
    for entry, prices in ((sub, usd_sub), (base, usd_base)):
        if len(entry.instances) > 1:
            priced = [i for i, p in prices.items() if p]
            unpriced = [i for i, p in prices.items() if not p]
            line = f"{entry.id}'s source does not say whether {' or '.join(entry.instances)} ran"
            if len(priced) > 1:
                at = ", ".join(f"{i} {prices[i]:.4g} USD/h" for i in priced)
                line += f": priced at each ({at})"
            if unpriced:
                line += f"; {', '.join(unpriced)} has no {basis.basis} price, so it is left out"
            notes.append(line)
    return Reading(point, min(ratios.values()), max(ratios.values()), tuple(notes))


def devices(entry: Entry) -> int:
    """Accelerator chips the figure ran on: instances x chips per instance."""
    return entry.count * catalog.instance(entry.instance).chips


def scale_bound(reading: Reading, sub: Entry, base: Entry) -> Reading:
    """Rule 2 (`different-scale`): the side on more accelerators lost throughput to scaling, so its
    per-instance figure is a lower bound on what fewer would do. Dividing by the scaling efficiency
    its source publishes is the most a correction can add; with none published, no bound."""
    big, small = (sub, base) if devices(sub) >= devices(base) else (base, sub)
    if devices(big) == devices(small):
        return reading
    eff = big.scaling_efficiency
    factor = 1 / eff if eff else math.inf
    lo, hi = (reading.lo, reading.hi * factor) if big is sub else (reading.lo / factor, reading.hi)
    where = f"{big.id} runs on {devices(big)} accelerators against {devices(small)}"
    if eff:
        note = (
            f"{where}: divided by the scaling efficiency its source publishes ({eff:.1%}: {big.scaling_source}),"
            " the most a scaling correction could add"
        )
    else:
        note = f"{where} and its source publishes no scaling efficiency, so no correction bounds it"
    return Reading(reading.point, lo, hi, (*reading.notes, note))


def latency_unbounded(reading: Reading) -> Reading:
    """Rule 3 (`batch-1-latency`): one request at a time on each side measures latency; under
    load both sides batch, so the pair bounds no throughput or price-performance ratio."""
    note = "one request at a time on each side: a latency comparison that bounds no ratio under load"
    return Reading(reading.point, 0.0, math.inf, (*reading.notes, note))


def read(sub: Entry, base: Entry, grade: str, metric: str, basis: catalog.Basis | None, on: date) -> Reading | None:
    """A pair's reading on `on`: rule 1 for price claims (speed ratios need no price), then rule 2
    or 3 by its grade. None when the named instances are not both priced at `basis` then."""
    if metric in PRICE_METRICS:
        reading = None if basis is None else price_interval(sub, base, basis, on)
        if reading is None:
            return None
    else:
        speed = sub.tokens_per_s / base.tokens_per_s
        reading = Reading(speed, speed, speed)
    if grade == SCALE_GRADE:
        reading = scale_bound(reading, sub, base)
    elif grade == LATENCY_GRADE:
        reading = latency_unbounded(reading)
    return reading


def counts(reading: Reading, grade: str, threshold: float) -> bool:
    """Rule 4: weak grades count only where decisive."""
    return grade not in WEAK_GRADES or reading.decides(threshold)


def decide(readings: list[tuple[str, str, Reading]], threshold: float, up_to: bool) -> tuple[str, str]:
    """Rule 5: the verdict and its reason from (pair id, grade, reading) at one threshold."""
    if not readings:
        raise ValueError("decide needs at least one reading")
    counted = [r for r in readings if counts(r[2], r[1], threshold)]
    use = counted or readings
    thr = f"{threshold:.2f}x"
    if up_to:  # a best case: the most favourable pair decides
        best = max(use, key=lambda r: (r[2].lo, r[2].hi))
        top = max(use, key=lambda r: (r[2].hi, r[2].lo))
        if best[2].lo >= threshold:
            verdict, why = "reproduced", f"best pair {best[0]} {best[2].text} reaches the claimed {thr}"
        elif top[2].hi < threshold:
            verdict, why = "not reproduced", f"best pair {top[0]} {top[2].text} is below the claimed {thr}"
        else:
            verdict, why = "inconclusive", f"best pair {top[0]} {top[2].text} straddles the claimed {thr}"
            why += "".join(f" ({n})" for n in top[2].notes)
    else:
        low = min(use, key=lambda r: (r[2].lo, r[2].hi))
        if low[2].lo >= threshold:
            verdict, why = "reproduced", f"every pair reaches the claimed {thr} (lowest {low[0]} {low[2].text})"
        elif all(r[2].hi < threshold for r in use):
            top = max(use, key=lambda r: r[2].hi)
            verdict, why = "not reproduced", f"no pair reaches the claimed {thr} (highest {top[0]} {top[2].text})"
        else:
            verdict, why = "inconclusive", f"the pairs straddle the claimed {thr} (lowest {low[0]} {low[2].text})"
    if not counted:
        grades = sorted({r[1] for r in readings})
        verdict, why = "inconclusive", f"{why}; but only {' and '.join(grades)} pairs exist and none is decisive"
    return verdict, why


def headline(checks: list[Paired]) -> tuple[list[Paired], dict[int, str]]:
    """Rule 6: of the pairs sharing a subject figure and a baseline instance, keep the one whose
    baseline was published closest to the subject (the later one on a tie); the others are set
    aside, keyed by their index in `checks`, with the reason."""
    best: dict[tuple[str, str], int] = {}
    for i, c in enumerate(checks):
        key = (c.subject.id, c.baseline.instance)
        gap = abs((c.baseline.source_date - c.subject.source_date).days)
        j = best.get(key)
        if j is None:
            best[key] = i
            continue
        other = checks[j]
        other_gap = abs((other.baseline.source_date - other.subject.source_date).days)
        if (gap, -c.baseline.source_date.toordinal()) < (other_gap, -other.baseline.source_date.toordinal()):
            best[key] = i
    kept = set(best.values())
    aside = {}
    for i, c in enumerate(checks):
        if i not in kept:
            chosen = checks[best[(c.subject.id, c.baseline.instance)]].baseline
            aside[i] = (
                f"a closer-dated {c.baseline.instance} figure is paired with {c.subject.id}"
                f" ({chosen.id}, published {chosen.source_date})"
            )
    return [c for i, c in enumerate(checks) if i in kept], aside


def vintage(sub: Entry, base: Entry) -> str:
    """`figures published 4.2 years apart: software vintages differ`, or "" within a year."""
    days = abs((sub.source_date - base.source_date).days)
    if days <= VINTAGE_DAYS:
        return ""
    return f"figures published {days / 365.25:.1f} years apart: software vintages differ"


def speed_mismatch(entry: Entry, claim_instance: str) -> str:
    """Rule 7: why `entry`'s per-instance speed cannot stand for `claim_instance`'s ("" if it can)."""
    own, want = catalog.instance(entry.instance).chips, catalog.instance(claim_instance).chips
    if own == want:
        return ""
    return (
        f"{entry.id} runs on {entry.instance} ({own} accelerators), not the claim's {claim_instance} ({want}):"
        " tokens/s per instance do not compare"
    )
