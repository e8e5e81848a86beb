"""Claim verdicts and published evidence as data: JSON for scripts and CI, and display frames.

`ppbench claims --format json` gives, per claim, the same verdicts, figures and reasons as the
table and `--explain`; `ppbench evidence` and `ppbench compare --evidence` show the published
entries, always labelled as published (never records of ours). Kept apart from ppharness.present.report so
the report can be redesigned without touching these contracts.
"""

from __future__ import annotations

import math
from datetime import date
from typing import Any

import pandas as pd

from ppharness.facts import catalog
from ppharness.judge import claims, evidence, rules
from ppharness.judge.claims import ClaimResult
from ppharness.judge.evidence import Entry, Evidence, PairFigure
from ppharness.judge.timeline import Window
from ppharness.present import report

PUBLISHED = "published"


def _clean(value: Any) -> Any:
    """JSON-safe: NaN/inf -> None, dates -> ISO strings, tuples -> lists, numpy scalars -> floats."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)) or hasattr(value, "item"):
        value = float(value)
        return value if math.isfinite(value) else None
    return str(value)


def _windows(wins: list[Window]) -> list[dict[str, Any]]:
    return [
        {"from": w.start, "to": w.end, "verdict": w.verdict, "figure": w.figure, "because": w.because} for w in wins
    ]


def _held(wins: list[Window]) -> list[dict[str, Any]]:
    return [{"from": w.start, "to": w.end} for w in wins]


def _reading(r: rules.Reading | None) -> dict[str, Any] | None:
    if r is None:
        return None
    return {"point": r.point, "lo": r.lo, "hi": r.hi if r.hi != math.inf else None, "notes": r.notes}


def _judged(x: Any) -> dict[str, Any]:
    """What our verdict and the published one share: both verdicts, when it held, how it changed."""
    return {
        "verdict": {"claim date": x.verdict, "today": x.verdict_today},
        "held": _held(x.held),
        "timeline": _windows(x.timeline),
        "range_ends": x.range_ends or None,
        "by_basis": x.by_basis or None,
    }


def _ours(r: ClaimResult) -> dict[str, Any]:
    best = r.best
    return {
        **_judged(r),
        "unpriced": claims.unpriced(r.claim) if r.claim.metric in claims.PRICE_METRICS and not r.break_even else None,
        "verdict_at_sublinear_scaling": r.sublinear or None,
        "basis": r.basis or None,
        "speed_needed": r.needs,
        "best_workload": best.workload if best else None,
        "measured_speed": {"point": best.speed[0], "ci95": best.speed[1:]} if best else None,
        "runs": best.runs if best else None,
        "subject_mfu_needed": r.required_mfu,
        "baseline_mfu_limit": r.baseline_mfu_limit,
        "rows": {"subject": r.n_subject, "baseline": r.n_baseline},
        "reasons": report.reasons(r),
    }


def _published(r: ClaimResult) -> dict[str, Any] | None:
    pub = r.published
    if pub is None:
        return None
    pairs = []
    for c in pub.checks:
        figs = {w: {"basis": f.at, "tokens_per_usd_ratio": f.per_usd} for w, f in c.figures.items() if f is not None}
        pairs.append(
            {
                "id": c.pair.id,
                "class": c.pair.cls,
                "grade": c.pair.grade,
                "reason": c.pair.reason,
                "subject": c.subject.id,
                "baseline": c.baseline.id,
                "speed_ratio": c.subject.tokens_per_s / c.baseline.tokens_per_s,
                "subject_instances": c.subject.instances,
                "tokens_per_usd": figs,
                "reading": {w: _reading(x) for w, x in c.readings.items()},
                "vintage": rules.vintage(c.subject, c.baseline) or None,
                "counted": c.counted,
                "not_counted_because": c.why_not or None,
                "set_aside": c.aside or None,
            }
        )
    return {
        **_judged(pub),
        "figure": pub.figure,
        "range": {w: list(v) for w, v in pub.ranges.items()},
        "interval": {w: [lo, hi if hi != math.inf else None] for w, (lo, hi) in pub.intervals.items()},
        "best_pair": pub.best,
        "pairs": pairs,
        "reasons": pub.reasons,
    }


def claims_json(results: list[ClaimResult]) -> list[dict[str, Any]]:
    """Every claim with both verdicts, their figures and reasons (`ppbench claims --format json`)."""
    out = []
    for r in results:
        c = r.claim
        out.append(
            {
                "id": c.id,
                "paraphrase": c.paraphrase,
                "date": c.date,
                "subject": c.subject.instance,
                "baseline": c.baseline.instance,
                "scenario": c.scenario,
                "metric": c.metric,
                "claimed": {"value": c.value, "unit": c.unit, "qualifier": c.qualifier, "as_ratio": c.ratio},
                "tpot_ms": c.tpot_ms if c.scenario in ("inference", "decode") else None,
                "ours": _ours(r),
                "published": _published(r),
                "break_even": [
                    {
                        "basis": b.basis,
                        "region": b.region,
                        "baseline_region": b.baseline_region or b.region,
                        "when": b.when,
                        "on": b.on,
                        "usd_subject": b.usd_subject,
                        "usd_baseline": b.usd_baseline,
                        "speed_needed": b.ratio,
                        "equal_mfu_tokens_per_usd_ratio": b.equal_mfu,
                    }
                    for b in r.break_even
                ],
            }
        )
    return _clean(out)


# ------------------------------------------------------------------ the evidence file


def _price(entry: Entry, on: date) -> catalog.Price | None:
    """The entry's instance price on `on` at its first basis (on-demand first)."""
    for b in catalog.comparable_bases(entry.instance, entry.instance):
        try:
            return catalog.price(entry.instance, b.basis, b.region, on)
        except catalog.CatalogError:
            continue
    return None


def _per_usd(ev: Evidence, f: PairFigure, pair) -> str:
    """`1.43x`, or `1.24-1.43x` where a source does not say which of two instances ran."""
    r = rules.price_interval(ev.entries[pair.subject], ev.entries[pair.baseline], f.basis, f.on)
    if r is None or round(r.lo, 2) == round(r.hi, 2):
        return f"{f.per_usd:.2f}x"
    return f"{r.lo:.2f}-{r.hi:.2f}x"


def _sources(sub: Entry, base: Entry) -> str:
    cites = [f"{e.source.cite} ({e.source_date})" for e in (sub, base)]
    return cites[0] if cites[0] == cites[1] else "; ".join(cites)


def pair_rows(ev: Evidence, today: date | None = None) -> list[dict[str, str]]:
    """The pairs table (README "What published measurements say"): one row per pair, tokens per
    dollar ratios at the first shared basis on the later source date and today."""
    today = today or date.today()
    rows = []
    for p in ev.pairs:
        sub, base = ev.entries[p.subject], ev.entries[p.baseline]
        then = max(sub.source_date, base.source_date)
        f_then, f_now = evidence.pair_figure(ev, p, then), evidence.pair_figure(ev, p, today)
        ratio = "no shared price basis"
        if f_now is not None:
            ratio = f"{_per_usd(ev, f_then, p)} -> " if f_then is not None and f_then.basis == f_now.basis else ""
            ratio += f"{_per_usd(ev, f_now, p)} ({f_now.at})"
        rows.append(
            {
                "pair (published)": p.id,
                "workload class": p.cls,
                "subject": evidence.describe(sub),
                "baseline": evidence.describe(base),
                "tokens/s per instance": f"{evidence.fmt(sub.tokens_per_s)} vs {evidence.fmt(base.tokens_per_s)}",
                "tokens/$ ratio (published date -> today)": ratio,
                "grade": p.grade,
                "sources": _sources(sub, base),
            }
        )
    return rows


def markdown(ev: Evidence, today: date | None = None) -> str:
    """The pairs table as markdown (`ppbench evidence --format md`; the README embeds it)."""
    rows = pair_rows(ev, today)
    if not rows:
        return "_no pairs in the evidence file_\n"
    cols = list(rows[0])
    cell = lambda v: str(v).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(cell(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def evidence_json(ev: Evidence, today: date | None = None) -> dict[str, Any]:
    today = today or date.today()
    entries = []
    for e in ev.entries.values():
        p = _price(e, today)
        entries.append(
            {
                "id": e.id,
                "kind": PUBLISHED,
                "instance": e.instance,
                "ambiguous_with": e.ambiguous_with,
                "count": e.count,
                "scaling_efficiency": e.scaling_efficiency,
                "seq_len": e.workload.seq_len,
                "input_len": e.workload.input_len,
                "class": e.workload.cls,
                "scenario": e.workload.scenario,
                "model": e.workload.model,
                "published": {"value": e.value, "unit": e.unit, "scope": e.scope, "tpot_ms": e.tpot},
                "tokens_per_s_per_instance": e.tokens_per_s,
                "conversion": e.conversion,
                "tokens_per_usd_today": e.tokens_per_s * 3600 / p.usd_per_hour if p else None,
                "price_today": {"basis": p.basis, "region": p.region, "usd_per_hour": p.usd_per_hour} if p else None,
                "source": e.source.url or e.source.cite,
                "source_date": e.source_date,
                "measured": e.measured,
            }
        )
    pairs = [{**row, "reason": p.reason} for row, p in zip(pair_rows(ev, today), ev.pairs)]
    return _clean({"kind": PUBLISHED, "entries": entries, "pairs": pairs})


def evidence_entries_frame(ev: Evidence) -> pd.DataFrame:
    rows = [
        {
            "entry (published)": e.id,
            "system": ("priced as " if e.priced_as else "")
            + (f"{e.instance} x{e.count}" if e.count > 1 else e.instance),
            "workload class": e.workload.cls,
            "as published": f"{report.num(e.value)} {e.unit} ({e.scope})",
            "tokens/s per instance": report.num(e.tokens_per_s),
            "conversion": e.conversion,
            "source": e.source.cite,
            "date": e.source_date.isoformat(),
        }
        for e in ev.entries.values()
    ]
    frame = pd.DataFrame(rows)
    frame.attrs["optional"] = ("conversion", "source", "as published", "date", "workload class")
    frame.attrs["wrap"] = ("system", "as published")
    frame.attrs["no_wrap"] = ("entry (published)",)
    return frame


# The pairs table at a narrow width: what `ppbench evidence` leaves out first (--wide, md and json show all).
PAIRS_OPTIONAL = ("sources", "tokens/s per instance", "grade", "subject", "baseline", "workload class")


def pairs_frame(ev: Evidence, today: date | None = None) -> pd.DataFrame:
    """The pairs table for the terminal (pair_rows as a frame, with what a narrow width hides)."""
    frame = pd.DataFrame(pair_rows(ev, today))
    frame.attrs["optional"] = PAIRS_OPTIONAL
    frame.attrs["no_wrap"] = ("pair (published)",)
    frame.attrs["wrap"] = ("tokens/$ ratio (published date -> today)",)  # whole unless nothing else can give way
    return frame


_GROUP = {"train": "train", "decode": "serve", "serve": "serve"}  # measured scenario -> published


def evidence_compare_frame(best: pd.DataFrame, ev: Evidence, today: date | None = None) -> pd.DataFrame:
    """Measured rows (each system's best batch) and, beside them, the published entries of the
    same scenarios, marked `published`. Measured tokens/s are as run (the devices used); published
    ones are per instance; tokens per dollar compares both (a partial run's price is prorated)."""
    today = today or date.today()
    rows = []
    groups = set()
    for r in best.itertuples():
        groups.add(_GROUP.get(r.scenario))
        rows.append(
            {
                "kind": "measured",
                "system": r.system,
                "workload": f"{r.preset}/{r.scenario}/{r.dtype}",
                "tokens/s": report.num(r.tokens_per_s),
                "$/1M tokens": report.num(r.usd_per_mtok),
                "tokens/$": report.num(r.tokens_per_usd),
                "source": "results",
            }
        )
    for e in ev.entries.values():
        if e.workload.scenario not in groups:
            continue
        p = _price(e, today)
        per_usd = e.tokens_per_s * 3600 / p.usd_per_hour if p else math.nan
        rows.append(
            {
                "kind": PUBLISHED,
                "system": ("priced as " if e.priced_as else "")
                + (f"{e.instance} x{e.count}" if e.count > 1 else e.instance),
                "workload": f"{e.workload.cls} ({e.workload.model})",
                "tokens/s": report.num(e.tokens_per_s) + " per instance",
                "$/1M tokens": report.num(1e6 / per_usd if per_usd else math.nan),
                "tokens/$": report.num(per_usd) + (f" ({p.basis} {p.region})" if p else ""),
                "source": f"{e.source.cite} ({e.source_date})",
            }
        )
    frame = pd.DataFrame(rows, columns=["kind", "system", "workload", "tokens/s", "$/1M tokens", "tokens/$", "source"])
    frame.attrs["optional"] = ("source", "$/1M tokens")  # what a narrow terminal leaves out (present/terminal.py)
    frame.attrs["wrap"] = ("system", "workload", "tokens/s", "tokens/$")
    return frame


# ------------------------------------------------------------------ `ppbench show`
SHOW_COLUMNS = {  # frame column -> table heading
    "run_id": "run",
    "device.backend": "backend",
    "cost.instance": "instance",
    "workload.preset": "preset",
    "workload.scenario": "scenario",
    "workload.batch": "batch",
    "length": "len",
    "workload.dtype": "dtype",
    "workload.compile": "compile",
    "metrics.tokens_per_s": "tokens/s",
    "ci95": "tokens/s 95% CI",
    "latency": "TTFT/TPOT ms",
    "metrics.ceiling_fraction": "ceiling",
    "metrics.mfu": "MFU",
    "metrics.mbu": "MBU",
    "cost.usd_per_million_tokens": "$/1M tok",
    "status": "status",
}


def summary(df: pd.DataFrame) -> pd.DataFrame:
    """The `ppbench show` table: one row per record, display-ready strings."""
    if df.empty:
        return pd.DataFrame(columns=list(SHOW_COLUMNS.values()))
    df = df.copy()

    def col(name: str) -> pd.Series:  # a key no record has is an empty column, not an error
        return df[name] if name in df else pd.Series(float("nan"), index=df.index)

    def ci(row_ci, n):
        if not isinstance(row_ci, list) or len(row_ci) != 2 or not n or not all(row_ci):
            return ""
        return f"{n / row_ci[1]:,.0f}-{n / row_ci[0]:,.0f}"  # a slower step bounds tokens/s from below

    df["length"] = col("workload.seq_len").fillna(col("workload.prompt_len"))
    df["ci95"] = [ci(c, n) for c, n in zip(col("timing.ci95_s"), col("metrics.tokens_per_step"))]
    df["latency"] = col("metrics.ttft_s").fillna(col("metrics.tpot_s")) * 1e3
    out = pd.DataFrame({head: col(name) for name, head in SHOW_COLUMNS.items()})
    out["status"] = [s if s == "ok" else f"{s}: {r}" for s, r in zip(df["status"], col("reason").fillna(""))]
    fmt = {"tokens/s": "{:,.1f}", "TTFT/TPOT ms": "{:.2f}", "ceiling": "{:.1%}", "MFU": "{:.1%}", "MBU": "{:.1%}",
           "$/1M tok": "${:,.3f}", "batch": "{:.0f}", "len": "{:.0f}"}  # fmt: skip
    for head, f in fmt.items():
        out[head] = [f.format(v) if isinstance(v, (int, float)) and v == v else "" for v in out[head]]
    out = out.astype(object).where(out.notna(), "").astype(str)
    out.attrs["optional"] = SHOW_OPTIONAL
    out.attrs["notes"] = {"status": ": "}  # "invalid: <reason>": the reason under the table
    return out


# What a narrow terminal leaves out first (ppharness/present/terminal.py); --wide shows them. A record's
# identity (run, backend, instance, preset, scenario, batch, length, dtype, compile mode) is never hidden.
SHOW_OPTIONAL = ("MBU", "MFU", "run", "TTFT/TPOT ms", "ceiling", "tokens/s 95% CI", "$/1M tok", "len")
