"""A verdict over time: the dates where an input of a claim's verdict changed, and the windows of
one verdict between them.

A verdict depends on prices (configs/instances.yaml, each price's `since`), on published figures
(seeds/evidence.yaml, each entry's `source_date`) and on peaks (configs/accelerators.yaml,
`peak_history`). Between two such dates none of them changes, so judging at the claim's date and
at each change up to today judges every day; windows of equal verdict are merged, and each keeps
the changes that opened it (a GPU price cut, a new SDK figure): why the verdict changed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, timedelta

from ppharness.facts import catalog

CLAIM_DATE = "the claim's date"


@dataclass(frozen=True)
class Change:
    on: date
    what: str


@dataclass(frozen=True)
class Window:
    """From `start` to `end` (inclusive; None: still so today) the verdict was `verdict`."""

    start: date
    end: date | None
    verdict: str
    figure: str  # what decided it, in words (the best pair's ratio, the break-even)
    because: tuple[str, ...]  # the changes on `start`; the first window opens on the claim's date

    @property
    def span(self) -> str:
        return f"{self.start} .. {self.end or 'today'}"


def price_changes(
    instances: Iterable[str], basis: str, after: date, until: date, regions: Iterable[str] | None = None
) -> list[Change]:
    """Every price of `basis` (in `regions`, default all) of these instances that took effect after
    `after` and by `until`, as `p4d.24xlarge on_demand us-east-1 32.77 -> 21.96 USD/h`, or
    `... first priced 63.3 USD/h` where no earlier price is known."""
    out = []
    for name in dict.fromkeys(instances):
        have = sorted({p.region for p in catalog.instance(name).prices if p.basis == basis})
        for region in [r for r in have if regions is None or r in set(regions)]:
            history = catalog.price_history(name, basis, region)
            for before, now in zip([None, *history], history):
                if now.since and after < now.since <= until:
                    was = f"{before.usd_per_hour:.4g} -> " if before else "first priced "
                    out.append(Change(now.since, f"{name} {basis} {region} {was}{now.usd_per_hour:.4g} USD/h"))
    return out


def peak_changes(instances: Iterable[str], dtype: str, after: date, until: date) -> list[Change]:
    """Every change of a published peak of these instances' accelerators after `after` and by `until`."""
    out = []
    keys = {catalog.instance(n).accelerator for n in instances} - {None}
    for key in sorted(keys):  # type: ignore[type-var]
        history = catalog.accelerator(key).peak_history  # type: ignore[arg-type]
        for before, now in zip(history, history[1:]):
            old, new = before.peak_tflops.get(dtype), now.peak_tflops.get(dtype)
            if now.since and after < now.since <= until and old != new:
                out.append(Change(now.since, f"{key} {dtype} peak {old:g} -> {new:g} TFLOP/s per chip published"))
    return out


def windows(
    start: date,
    today: date,
    changes: Iterable[Change],
    judge: Callable[[date], tuple[str, str]],
    merge: bool = True,
) -> list[Window]:
    """The verdict at `start` and at each change date up to `today`, merged into windows of one
    verdict (`merge`; else one window per change); `judge(on)` gives (verdict, figure)."""
    by_day: dict[date, list[str]] = {start: [CLAIM_DATE]}
    for c in changes:
        if start < c.on <= today:
            by_day.setdefault(c.on, []).append(c.what)
    days = sorted(by_day)
    out: list[Window] = []
    for i, day in enumerate(days):
        verdict, figure = judge(day)
        end = days[i + 1] - timedelta(days=1) if i + 1 < len(days) else None
        if merge and out and out[-1].verdict == verdict:
            last = out[-1]
            out[-1] = Window(last.start, end, verdict, last.figure, last.because)
        else:
            out.append(Window(day, end, verdict, figure, tuple(by_day[day])))
    return out


def held(wins: list[Window], verdict: str) -> list[Window]:
    """The windows in which the claim held by our rule (`verdict`: supported / reproduced)."""
    return [w for w in wins if w.verdict == verdict]


def lines(wins: list[Window], verdict: str, where: str) -> list[str]:
    """Reason lines: one per window (its verdict, figure and why it changed), then when it held."""
    out = [f"timeline ({where}):"]
    for w in wins:
        out.append(f"  {w.span}: {w.verdict} ({w.figure}) since {'; '.join(w.because)}")
    ok = held(wins, verdict)
    if ok:
        out.append(f"held by our rule ({verdict}): " + ", ".join(w.span for w in ok))
    elif wins:
        out.append(f"held by our rule ({verdict}): never between {wins[0].start} and today")
    return out
