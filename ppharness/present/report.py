"""Rendering: display tables (strings) for the terminal, and the self-contained HTML/markdown report.

Owns how comparison and claim results look: number formats, the display frames the CLI prints,
and the report page (the figures it embeds are ppharness.present.figures). A results file is
untrusted input: every string taken from it is escaped for the medium it lands in
(ppharness/present/textsafe.py: HTML escaping; markdown syntax backslash-escaped, so no link or image can come
from a field; control characters replaced for the terminal, which prints cells as plain Text;
mathtext off in figures), and the HTML page carries a Content-Security-Policy that allows no
script at all.
"""

from __future__ import annotations

import base64
import math
import os
import re
import tempfile
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from ppharness.core import stats
from ppharness.errors import WriteError
from ppharness.judge import claims, compare, timeline
from ppharness.judge.claims import ClaimResult
from ppharness.judge.compare import Comparison
from ppharness.present import textsafe
from ppharness.present.figures import figures
from ppharness.record import flags
from ppharness.record.writer import check_file_destination

FORMATS = ("html", "md")
WITHIN_RUN = "†"  # marks a CI with one run on a side; a display frame's attrs["note"] explains it
WITHIN_RUN_NOTE = f"{WITHIN_RUN} one run on a side: the CI covers within-run noise only, not run-to-run spread."


# ------------------------------------------------------------------ numbers and display frames


def num(x: object, digits: int = 3) -> str:
    """A figure to `digits` significant digits, thousands separated; blank when missing."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return ""
    x = float(x)
    if abs(x) >= 10**digits:
        return f"{x:,.0f}"
    return f"{x:.{digits}g}"


def ratio(point: float, lo: float = math.nan, hi: float = math.nan) -> str:
    """`1.23x [1.20-1.26]`, or `1.23x` without a CI."""
    if not math.isfinite(point):
        return ""
    ci = f" [{lo:.2f}-{hi:.2f}]" if math.isfinite(lo) and math.isfinite(hi) else ""
    return f"{point:.2f}x{ci}"


def compare_frame(table: pd.DataFrame, with_ratios: bool) -> pd.DataFrame:
    """The comparison table as display strings (one row per system x workload x batch)."""
    out = pd.DataFrame(
        {
            "system": table["system"],
            "preset": table["preset"],
            "scenario": table["scenario"],
            "dtype": table["dtype"],
            "batch": [num(b) for b in table["batch"]],
            "runs": [num(r) for r in table["runs"]],
            "tokens/s": [num(v) for v in table["tokens_per_s"]],
            "$/1M tokens": [num(v) for v in table["usd_per_mtok"]],
            "tokens/$": [compact(v) if _finite(v) else "" for v in table["tokens_per_usd"]],
            "MFU": [num(v, 2) for v in table["mfu"]],
            "ceiling": [num(v, 2) for v in table["ceiling_fraction"]],
            "flags": [flags.cell([f], e) for f, e in zip(table["flags"], table["excluded"], strict=True)],
        }
    )
    serving = table.get("tokens_per_s_per_user")
    if (
        serving is not None and serving.notna().any()
    ):  # serving rows (ppharness/serve/runner.py): latency as users see it
        out["tok/s/user"] = [num(v) for v in serving]
        out["TTFT p90 ms"] = [num(v * 1e3) for v in table["ttft_p90_s"]]
        out["TPOT p90 ms"] = [num(v * 1e3, 2) for v in table["tpot_p90_s"]]
    if with_ratios:
        marks = [WITHIN_RUN if flag else "" for flag in table["within_run_ci"].fillna(False).astype(bool)]
        for col, name in (("speed vs baseline [95% CI]", "speed"), ("tokens/$ vs baseline [95% CI]", "value")):
            cells = table[[f"{name}_ratio", f"{name}_lo", f"{name}_hi"]].itertuples(index=False)
            out[col] = [ratio(*v) + (m if math.isfinite(v[1]) else "") for v, m in zip(cells, marks, strict=True)]
        if any(marks):
            out.attrs["note"] = WITHIN_RUN_NOTE
    out.attrs["optional"] = COMPARE_OPTIONAL  # what a narrow terminal leaves out first (present/terminal.py)
    out.attrs["shared_head"] = SHARED_INSTANCE
    out.attrs["wrap"] = ("scenario", *RATIO_COLUMNS)  # "1.39x [1.16-1.50]" may take two lines, never break
    return flags.with_legend(out)


RATIO_COLUMNS = ("speed vs baseline [95% CI]", "tokens/$ vs baseline [95% CI]")
SHARED_INSTANCE = {"system": ("/", "instance")}  # one instance in every row: said once, in the title
# A row's identity (system, preset, scenario, dtype, batch; a kernel's variant and shape) is never hidden.
COMPARE_OPTIONAL = ("$/1M tokens", "MFU", "ceiling", "runs", "TTFT p90 ms", "tok/s/user", "tokens/$ vs baseline [95% CI]",
                    "TPOT p90 ms", "flags")  # fmt: skip
KERNELS_OPTIONAL = ("bound", "runs", "step ms", "ceiling", "flags")


def _achieved(bound: object, tflops: float, gbps: float) -> str:
    """A kernel's figure on the axis of its bound: TFLOP/s when compute-bound, GB/s otherwise."""
    if bound == "compute" or (bound not in ("memory", "communication") and num(tflops)):
        return f"{num(tflops)} TFLOP/s" if num(tflops) else ""
    return f"{num(gbps)} GB/s" if num(gbps) else ""


def _kernel_cells(g: pd.DataFrame, with_ratios: bool) -> dict:
    """The display cells every kernel table shares (by column name), and the speed ratio with its
    CI when a baseline was chosen (`note`: the footnote a one-run side needs, else "")."""
    cells = zip(g["bound"], g["achieved_tflops"], g["achieved_gbps"], strict=True)
    out = {
        "batch": [num(b) for b in g["batch"]],
        "runs": [num(r) for r in g["runs"]],
        "step ms": [num(v * 1e3) for v in g["median_s"]],
        "tokens/s": [num(v) for v in g["tokens_per_s"]] if "tokens_per_s" in g else [""] * len(g),
        "$/1M tokens": [num(v) for v in g["usd_per_mtok"]] if "usd_per_mtok" in g else [""] * len(g),
        "achieved": [_achieved(*c) for c in cells],
        "ceiling": [num(v, 2) for v in g["ceiling_fraction"]],
        "flags": [
            flags.cell([f if isinstance(f, list) else []], int(e) if e == e else 0)
            for f, e in zip(g.get("flags", [[]] * len(g)), g.get("excluded", [0] * len(g)), strict=True)
        ],
        "note": "",
    }
    if with_ratios:
        marks = [WITHIN_RUN if f is not None and f == f and bool(f) else "" for f in g["within_run_ci"]]
        spans = g[["speed_ratio", "speed_lo", "speed_hi"]].itertuples(index=False)
        out["speed vs baseline [95% CI]"] = [
            ratio(*v) + (m if math.isfinite(v[1]) else "") for v, m in zip(spans, marks, strict=True)
        ]
        out["note"] = WITHIN_RUN_NOTE if any(marks) else ""
    return out


def kernels_frame(kernels: pd.DataFrame, with_ratios: bool) -> pd.DataFrame:
    """The timed kernels as display strings, one row per system x kernel x variant x shape:
    step time, what it achieved on its bound's axis, and the fraction of the measured ceiling."""
    cells = _kernel_cells(kernels, with_ratios)
    cols = ["batch", "runs", "step ms", "bound", "achieved", "ceiling", "flags", "speed vs baseline [95% CI]"]
    out = pd.DataFrame(
        {
            **{c: kernels[c] for c in ("system", "preset", "kernel", "variant", "shape", "dtype")},
            **{c: (kernels[c] if c == "bound" else cells[c]) for c in cols if c == "bound" or c in cells},
        }
    )
    if cells["note"]:
        out.attrs["note"] = cells["note"]
    out.attrs["optional"] = KERNELS_OPTIONAL
    out.attrs["wrap"] = (*RATIO_COLUMNS, "achieved")  # "0.0275 TFLOP/s" may take two lines
    out.attrs["shared_head"] = SHARED_INSTANCE
    return out


def excluded_frame(excluded: pd.DataFrame) -> pd.DataFrame:
    cols = {"system": "system", "preset": "preset", "scenario": "scenario", "dtype": "dtype"}
    out = excluded[list(cols)].rename(columns=cols).copy()
    out["batch"] = [num(b) for b in excluded["batch"]]
    out["excluded because"] = excluded["excluded_reason"]
    return out


def claims_frame(results: list[ClaimResult]) -> pd.DataFrame:
    """One row per claim, for a newcomer: what was claimed, the verdict from our measurements (the
    result), the verdict from published evidence, and the speed the claim needs (break-even).
    Verdicts and ranges read "at the claim's date -> today" where the two differ."""
    rows, marked = [], False
    for r in results:
        c, best, pub = r.claim, r.best, r.published
        mark = WITHIN_RUN if best and min(best.runs) == 1 and math.isfinite(best.speed[1]) else ""
        marked = marked or bool(mark)
        rows.append(
            {
                "claim": c.id,
                "subject vs baseline": f"{c.subject.instance} vs {c.baseline.instance} ({c.scenario})",
                "claimed": claimed_words(c),
                "our verdict (the result)": arrow([r.verdict, r.verdict_today]),
                "measured speed [95% CI]": ratio(*best.speed) + mark if best else "",
                "published evidence": arrow([pub.verdict, pub.verdict_today]) if pub else "",
                "published ratio": published_range(pub) if pub else "",
                "speed needed (break-even)": when_pair(r.needs) if r.needs else "no shared price",
                # the deciding rows' warnings, both sides (ppharness.record.flags)
                "flags": flags.cell([s["flags"] for s in (best.subject, best.baseline)]) if best else "",
            }
        )
    frame = pd.DataFrame(rows)
    frame.attrs["no_wrap"] = ("claim", "speed needed (break-even)")
    frame.attrs["note"] = "Two figures: at the claim's date -> today. " + (WITHIN_RUN_NOTE if marked else "")
    return flags.with_legend(frame)


_AS = {"tokens_per_dollar": "tokens/$", "cost_per_token": "tokens/$", "throughput": "tokens/s", "peak_tflops": "TFLOPS"}


def claimed_words(c: claims.Claim) -> str:
    """`up to 50% lower cost to train (2.00x tokens/$)`: the claim's words, then what they mean."""
    v = c.value
    figure = f"{v[0]:g}-{v[-1]:g}" if isinstance(v, list) else ("" if v is None else f"{v:g}")
    words = f"{c.qualifier} {figure}{'' if c.unit[:1] in '%x' else ' '}{c.unit}".strip()
    ratio_ = f"{c.ratio[0]:.2f}x" + (f"-{c.ratio[1]:.2f}x" if c.ratio[1] != c.ratio[0] else "")
    return f"{words} (= {ratio_} {_AS.get(c.metric, c.metric)})"


def arrow(values: list[str]) -> str:
    """`a -> b` (the claim's date -> today), or one value when both agree."""
    return values[0] if len(set(values)) == 1 else " -> ".join(values)


def published_range(pub) -> str:
    """`0.82-1.18x -> 0.54-0.79x tokens/$ ratio`: the range over the pairs by date, or blank."""
    if not pub.ranges:
        return ""
    shown = [f"{lo:.2f}x" if round(lo, 2) == round(hi, 2) else f"{lo:.2f}-{hi:.2f}x" for lo, hi in pub.ranges.values()]
    only = f" ({next(iter(pub.ranges))} only)" if len(pub.ranges) == 1 else ""
    return f"{arrow(shown)} {pub.figure}{only}"


def when_pair(values: dict[str, float], fmt: str = "{:.2f}x") -> str:
    """`1.31x (claim date) -> 1.96x (today)`, or one figure when both dates agree."""
    shown = {when: fmt.format(v) for when, v in values.items()}
    if len(set(shown.values())) == 1:
        return next(iter(shown.values()))
    return " -> ".join(f"{v} ({when})" for when, v in shown.items())


def _flag(mfu: float) -> str:
    if mfu > 1:
        return " - impossible, above peak"
    return f" - implausible, above {claims.IMPLAUSIBLE_MFU}" if mfu > claims.IMPLAUSIBLE_MFU else ""


def reasons(res: ClaimResult) -> list[str]:
    """Why a claim got its verdict: what is missing, measured, needed and (im)plausible."""
    c, out = res.claim, []
    for side, n in ((c.subject, res.n_subject), (c.baseline, res.n_baseline)):
        if n == 0:
            out.append(
                f"no valid {'/'.join(claims.SCENARIOS[c.scenario])} results for the {side.family} family ({side.instance})"
            )
    if res.foreign:
        out.append(f"ignored {res.foreign} record(s) priced as a claimed instance but run on another device")
    if res.skipped.prefill:
        out.append(f"{res.skipped.prefill} prefill row(s) not counted: prefill alone cannot satisfy a serving claim")
    if c.scenario in claims.LATENCY_SCENARIOS:
        slow = f"; {res.skipped.slow} row(s) over it not counted" if res.skipped.slow else ""
        out.append(f"decode/serve rows count within the claim's TPOT bound of {c.tpot_ms:g} ms per output token{slow}")
    if c.metric in claims.PRICE_METRICS and not res.break_even:
        out.append(claims.unpriced(c))
    if (best := res.best) is not None:
        lo, hi = best.speed[1:]
        runs = f"{best.runs[0]} and {best.runs[1]} run(s)"
        ci = f"95% CI {lo:.2f}-{hi:.2f}, {runs}" + (", within-run noise only" if min(best.runs) == 1 else "")
        ci = f"no CI: one run with fewer than 3 samples on a side, {runs}" if math.isnan(lo) else ci
        out.append(f"measured {best.speed[0]:.2f}x per-instance throughput on {best.workload} ({ci})")
        if c.metric in claims.PRICE_METRICS and res.needs:  # tokens/$ ratio = speed x threshold / need
            per_usd = {when: best.speed[0] * c.threshold / need for when, need in res.needs.items()}
            out.append(f"that is {when_pair(per_usd)} the baseline's tokens per dollar at {res.basis} prices")
        out.append(f"the verdict rests on: {best.rests_on}")  # whole-instance records win over scaled ones
        if best.subject["scale"] != 1.0 or best.baseline["scale"] != 1.0:
            out.append("throughput scaled linearly by devices to the claim's instances (assumed, not measured)")
    if res.sublinear:
        out.append(
            f"at sublinear scaling ({claims.SUBLINEAR_PER_DOUBLING:g} per doubling of devices) the verdict would be "
            + when_pair({w: v for w, v in res.sublinear.items()}, "{}")
        )
    if res.needs:
        at = f" at {res.basis} prices" if res.basis else ""
        out.append(f"needs {when_pair(res.needs)} the baseline's throughput{at}")
    others = [b for b in res.break_even if b.at != res.basis]
    if others:
        out.append("break-even at other bases: " + ", ".join(f"{b.at} {b.ratio:.2f}x ({b.when})" for b in others))
    if c.metric == "peak_tflops":
        for when, on in (("claim date", c.date), ("today", None)):
            sp = claims.peak_per_instance(c.subject.instance, c.dtype, on)
            bp = claims.peak_per_instance(c.baseline.instance, c.dtype, on)
            if sp and bp:
                out.append(
                    f"catalog {c.dtype} peaks ({when}): {sp:.0f} vs {bp:.0f} TFLOP/s per instance = {sp / bp:.2f}x"
                )
    equal = {b.when: b.equal_mfu for b in res.break_even if b.at == res.basis and b.equal_mfu}
    if equal:
        needed = {when: c.threshold / v for when, v in equal.items()}
        out.append(
            f"at equal MFU the subject gives {when_pair(equal)} the tokens per dollar, "
            f"so the claim needs {when_pair(needed)} the baseline's MFU"
        )
    if res.required_mfu:
        out.append(f"subject needs MFU {when_pair(res.required_mfu, '{:.2f}')}{_flag(max(res.required_mfu.values()))}")
    if res.baseline_mfu_limit:
        out.append(f"claim fails if the baseline reaches MFU {when_pair(res.baseline_mfu_limit, '{:.2f}')}")
    for when, ends in res.range_ends.items():  # a range claim, judged at both ends
        shown = "; ".join(f"at {end}: {v}" for end, v in ends.items())
        out.append(f"{when}: a range claim, judged at both ends: {shown}; the verdict is the lower end's")
    if res.timeline:
        where = f"{res.basis} prices of each date" if res.basis else "no price involved"
        out += timeline.lines(res.timeline, "supported", where)
    return out


def terminal_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """Strings safe for a terminal: control characters (escape sequences) replaced. Rich markup is
    neutralised where the strings are printed (ppharness.cli.print_frame renders cells as Text)."""
    return frame.map(textsafe.plain)


# ------------------------------------------------------------------ what the page shows, as numbers


def _records(records: pd.DataFrame | None) -> pd.DataFrame:
    return records if records is not None else pd.DataFrame()


def _is_kernel(frame: pd.DataFrame) -> pd.Series:
    return frame["scenario"].astype(str).str.startswith("kernel:") if "scenario" in frame else pd.Series(dtype=bool)


def _step_ci(runs: list, seed: int = 0) -> tuple[float, float]:
    """95% bootstrap CI of a row's step time (ppharness.core.stats: runs, then step times within each run);
    NaN when the runs are too few to resample."""
    runs = [np.asarray(r, dtype=float).ravel() for r in runs]
    if not runs or not stats.has_ci(runs):
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    chunk = max(1, min(stats.N_RESAMPLES, 2_000_000 // (len(runs) * max(r.size for r in runs))))
    draws = [
        stats.resample_centers(runs, min(chunk, stats.N_RESAMPLES - s), rng) for s in range(0, stats.N_RESAMPLES, chunk)
    ]
    alpha = (1 - stats.CONFIDENCE) / 2
    lo, hi = np.quantile(np.concatenate(draws), [alpha, 1 - alpha])
    return float(lo), float(hi)


def workload_rows(comparison: Comparison, records: pd.DataFrame | None) -> pd.DataFrame:
    """The comparison's workload rows (kernels apart) with 95% CIs of tokens/s and tokens per
    dollar (the step time's bootstrap CI, turned into each figure), the step time, and `best`:
    the system's best batch for the workload."""
    table = comparison.table[~_is_kernel(comparison.table)].copy() if not comparison.table.empty else comparison.table
    for col in ("median_s", "tokens_per_s_lo", "tokens_per_s_hi", "tokens_per_usd_lo", "tokens_per_usd_hi"):
        table[col] = math.nan
    if table.empty:
        table["best"] = pd.Series(dtype=bool)
        return table
    best = comparison.best
    best_keys = {tuple(r) for r in best[["system", *compare.MATCH]].itertuples(index=False)}
    table["best"] = [tuple(r) in best_keys for r in table[["system", *compare.MATCH]].itertuples(index=False)]
    records = _records(records)
    if records.empty:
        return table.reset_index(drop=True)
    usable = compare.prepare(records, latest=comparison.latest).usable
    usable = usable[~_is_kernel(usable)]
    found = {}
    for _, u in usable.iterrows():
        lo_s, hi_s = _step_ci(u["run_samples"])
        tps = (u["work_per_step"] / hi_s, u["work_per_step"] / lo_s)  # a longer step: fewer tokens/s
        usd = u["usd_per_hour_eff"]
        per_usd = tuple(v * 3600 / usd if usd and math.isfinite(usd) else math.nan for v in tps)
        found[tuple(u[k] for k in ("system", *compare.MATCH))] = (u["median_s"], *tps, *per_usd)
    cols = ["median_s", "tokens_per_s_lo", "tokens_per_s_hi", "tokens_per_usd_lo", "tokens_per_usd_hi"]
    for i, r in table.iterrows():
        key = tuple(r[k] for k in ("system", *compare.MATCH))
        if key in found:
            table.loc[i, cols] = found[key]
    return table.reset_index(drop=True)


def kernel_rows(records: pd.DataFrame | None, comparison: Comparison | None = None) -> pd.DataFrame:
    """Timed kernels, one row per system x kernel x variant x shape x dtype x batch (runs pooled as
    for workloads): step time, tokens/s and $/1M tokens (at the record's instance and price),
    what it achieved on its bound's axis, the fraction of the device's measured ceiling, and the
    speed ratio against the baseline's same case (compare's kernel table) when there is one."""
    records = _records(records)
    if records.empty:
        return pd.DataFrame()
    usable = compare.prepare(records, latest=comparison.latest if comparison else False).usable
    usable = usable[_is_kernel(usable)].copy()
    if usable.empty:
        return usable
    parts = usable["scenario"].str.removeprefix("kernel:").str.split(" ", n=2, expand=True).reindex(columns=range(3))
    for i, name in enumerate(("kernel", "variant", "shape")):  # compare names them; older versions: the scenario
        given = usable[name] if name in usable else pd.Series("", index=usable.index)
        usable[name] = given.where(given.astype(bool), parts[i].fillna(""))
    for name in ("bound", "achieved_gbps"):
        if name not in usable:
            usable[name] = "" if name == "bound" else math.nan
    kern = getattr(comparison, "kernels", None)
    ratios = ["speed_ratio", "speed_lo", "speed_hi", "within_run_ci"]
    keys = ["system", "preset", "kernel", "variant", "shape", "dtype", "batch"]
    if kern is not None and not kern.empty and all(c in kern for c in ratios):
        usable = usable.merge(kern[[*keys, *ratios]], on=keys, how="left")
    for name in ratios:
        if name not in usable:
            usable[name] = False if name == "within_run_ci" else math.nan
    return usable.sort_values(["kernel", "system", "shape", "variant", "dtype", "batch"], kind="stable")


def roofline_points(records: pd.DataFrame | None) -> pd.DataFrame:
    """Valid kernel records with FLOPs as roofline points, one per device x kernel case (medians
    over its records), with the device's measured ceilings and, where MFU/MBU exist, the vendor
    peaks they were taken against (achieved / fraction)."""
    records = _records(records)
    cols = ["device", "kernel", "intensity", "tflops", "gemm_tflops", "mem_gbps", "peak_tflops", "peak_gbps"]
    need = ["status", "workload.scenario", "metrics.arithmetic_intensity", "metrics.achieved_tflops"]
    if records.empty or any(c not in records for c in need):
        return pd.DataFrame(columns=cols)

    def col(name: str) -> pd.Series:
        return pd.to_numeric(records[name], errors="coerce") if name in records else pd.Series(math.nan, records.index)

    valid = records["validity.valid"].fillna(False).astype(bool) if "validity.valid" in records else False
    ok = (records["status"] == "ok") & valid & records["workload.scenario"].astype(str).str.startswith("kernel:")
    ok &= (col("metrics.arithmetic_intensity") > 0) & (col("metrics.achieved_tflops") > 0)
    if not ok.any():
        return pd.DataFrame(columns=cols)
    r = records[ok]
    name = r["device.name"].astype(str) if "device.name" in r else pd.Series("device", r.index)
    backend = r["device.backend"].astype(str) if "device.backend" in r else ""
    frame = pd.DataFrame(
        {
            "device": name + " (" + backend + ")",
            "kernel": r["workload.scenario"].astype(str).str.removeprefix("kernel:").str.split(" ").str[0],
            "case": r["workload.scenario"].astype(str) + " " + r.get("workload.variant", "").astype(str)
            + " " + r.get("workload.shape", "").astype(str) + " " + r.get("workload.dtype", "").astype(str),
            "intensity": col("metrics.arithmetic_intensity")[ok],
            "tflops": col("metrics.achieved_tflops")[ok],
            "gemm_tflops": col("ceilings.gemm_tflops")[ok],
            "mem_gbps": col("ceilings.mem_gbps")[ok],
            "peak_tflops": (col("metrics.achieved_tflops") / col("metrics.mfu"))[ok],
            "peak_gbps": (col("metrics.achieved_gbps") / col("metrics.mbu"))[ok],
        }
    )  # fmt: skip
    grouped = frame.groupby(["device", "kernel", "case"], sort=False, as_index=False).median(numeric_only=True)
    return grouped[cols]


def claim_points(results: list[ClaimResult]) -> list[dict]:
    """Per claim, what the claim chart plots: the measured speed ratio with its CI, the published
    pairs' speed ratios (peak ratios for a peak claim) and the speed needed by date."""
    out = []
    for r in results:
        c, pub = r.claim, r.published
        published: list[float] = []
        if pub is not None and c.metric == "peak_tflops":
            published = sorted({v for lo_hi in pub.ranges.values() for v in lo_hi})
        elif pub is not None and c.metric in claims.PRICE_METRICS and "today" in r.needs:
            # a pair's tokens/$ ratio as the speed the claim's own instances would need for it
            # (tokens/$ x price_subject / price_baseline): pairs on other instance sizes compare
            k = r.needs["today"] / c.threshold
            published = [x.point * k for p in pub.checks if p.counted and (x := p.readings.get("today"))]
        elif pub is not None:
            published = [p.subject.tokens_per_s / p.baseline.tokens_per_s for p in pub.checks if p.counted]
        out.append(
            {
                "claim": c.id,
                "measured": r.best.speed if r.best else None,
                "published": published,
                "needs": dict(r.needs),
                "held": held_words(r),
            }
        )
    return out


def held_spans(r: ClaimResult) -> str:
    """`2024-11-08 .. 2025-06-22 (published)`: the windows in which the claim held by our rule, by
    our records and by published evidence; empty when it never held."""
    parts = []
    for who, wins in (("ours", r.held), ("published", r.published.held if r.published else [])):
        if wins:
            parts.append(", ".join(w.span for w in wins) + f" ({who})")
    return "; ".join(parts)


def held_words(r: ClaimResult) -> str:
    """`held <held_spans>`, or `never held since <claim date>`."""
    spans = held_spans(r)
    return f"held {spans}" if spans else f"never held since {r.claim.date}"


# ------------------------------------------------------------------ display frames of the page


class Fold(str):
    """A long cell: HTML shows its start and folds the rest into <details>; markdown shows it whole."""


FOLD_AT = 90


def _fold(text: str) -> str:
    return Fold(text) if len(text) > FOLD_AT else text


def verdict_lines(results: list[ClaimResult]) -> list[dict[str, str]]:
    """Per claim, the quotable summary: what was claimed, our verdict, the published one, the
    break-even speed, and the one figure that decides it. Verdicts read "claim date -> today"."""
    lines = []
    for r in results:
        c, best, pub = r.claim, r.best, r.published
        need = when_pair(r.needs) if r.needs else "no shared price"
        if best is not None:
            decides = f"measured {ratio(*best.speed)} speed on {best.workload} against {need} needed"
        elif pub is not None and pub.ranges:
            decides = f"published {published_range(pub)} against {c.threshold:.2f}x claimed"
        else:
            decides = "nothing measured or published yet"
        lines.append(
            {
                "claim": c.id,
                "claimed": f"{claimed_words(c)}, {c.subject.instance} vs {c.baseline.instance}",
                "ours": arrow([r.verdict, r.verdict_today]),
                "published": arrow([pub.verdict, pub.verdict_today]) if pub else "no evidence file",
                "break-even": need,
                "decides it": decides,
            }
        )
    return lines


def headline(results: list[ClaimResult]) -> str:
    """One sentence over all claims: how many our measurements decide, and the published verdicts today."""
    if not results:
        return "No claims to check."
    decided = sum(r.verdict_today not in ("not measured", "inconclusive") for r in results)
    today: dict[str, int] = {}
    for r in results:
        v = r.published.verdict_today if r.published else "no evidence"
        today[v] = today.get(v, 0) + 1
    pub = ", ".join(f"{n} {v}" for v, n in sorted(today.items(), key=lambda kv: -kv[1]))
    return f"{len(results)} claims: our measurements decide {decided} of them today; published evidence today: {pub}."


def systems_frame(records: pd.DataFrame | None, systems: list[str]) -> pd.DataFrame:
    """One row per system compared, with its host facts from its newest record."""
    records = _records(records)
    if records.empty:
        return pd.DataFrame()
    labels = pd.Series([compare.system_label(r) for _, r in records.iterrows()], index=records.index)
    rows = []
    for system in systems or sorted(labels.unique()):
        mine = records[labels == system]
        if mine.empty:
            continue
        newest = mine.sort_values("created_at", kind="stable").iloc[-1] if "created_at" in mine else mine.iloc[-1]
        g = newest.get
        instance = _text(g("cost.instance"))
        where = ("priced as " if _true(g("cost.priced_as")) else "") + instance if instance else "not priced"
        price = g("cost.usd_per_hour")
        if instance and isinstance(price, (int, float)) and math.isfinite(price):
            where += f" (${price:.4g}/h {_text(g('cost.basis'))} {_text(g('cost.region'))})"
        cpu = _text(g("system.cpu_model"))
        count = g("system.cpu_count")
        device = _text(g("device.name")) or _text(g("device.accelerator")) or "?"
        devices = g("device.devices_used")
        if isinstance(devices, (int, float)) and devices == devices and devices > 1:
            device += f" x{int(devices)}"
        versions = g("system.versions") if isinstance(g("system.versions"), dict) else {}
        sdk = ", ".join(f"{k} {v}" for k, v in versions.items() if k not in _GENERIC_PACKAGES)
        rows.append(
            {
                "system": system,
                "device": device,
                "host CPU": f"{cpu} x{count}" if cpu and count else cpu,
                "instance": where,
                "torch": _text(g("system.torch")),
                "SDK and runtime": sdk or "-",
                "commit": _commits(mine),
                "records": str(len(mine)),
            }
        )
    return pd.DataFrame(rows)


def _true(v: object) -> bool:
    """A record's boolean as the frame holds it (numpy's bool is not `True`)."""
    return isinstance(v, (bool, np.bool_)) and bool(v)


def _commits(mine: pd.DataFrame) -> str:
    """Every commit the system's records were measured at, newest first: pooled runs may span several."""
    if "harness.git_sha" not in mine:
        return "?"
    order = mine.sort_values("created_at", kind="stable") if "created_at" in mine else mine
    dirty = order["harness.dirty"] if "harness.dirty" in order else pd.Series(False, index=order.index)
    seen: list[str] = []
    for sha, d in zip(reversed(order["harness.git_sha"].tolist()), reversed(dirty.tolist())):
        label = _text(sha)[:10] + ("+dirty" if _true(d) else "")
        if label and label not in seen:
            seen.append(label)
    return ", ".join(seen) or "?"


_GENERIC_PACKAGES = {"numpy", "pandas", "scipy", "typer", "pyyaml", "matplotlib", "rich"}


def _text(v: object) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)


def compact(x: float) -> str:
    """`19.4M`, `292k`, `0.0517`: three significant digits with a k/M/G suffix for large figures."""
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.3g}{unit}"
    return num(x)


def _ci(point: float, lo: float, hi: float, fmt=num) -> str:
    if not _finite(point):
        return ""
    return fmt(point) + (f" [{fmt(lo)}-{fmt(hi)}]" if _finite(lo, hi) else "")


def _finite(*values: object) -> bool:
    return all(isinstance(v, (int, float, np.floating)) and math.isfinite(v) for v in values)


def workload_frame(rows: pd.DataFrame, with_ratios: bool) -> pd.DataFrame:
    """compare_frame with 95% CIs on tokens/s and tokens/$ and the step time."""
    if rows.empty:
        return pd.DataFrame()
    out = compare_frame(rows, with_ratios)
    out["tokens/s"] = [
        _ci(*v) for v in rows[["tokens_per_s", "tokens_per_s_lo", "tokens_per_s_hi"]].itertuples(index=False)
    ]
    out["tokens/$"] = [
        _ci(*v, fmt=compact)
        for v in rows[["tokens_per_usd", "tokens_per_usd_lo", "tokens_per_usd_hi"]].itertuples(index=False)
    ]
    out.insert(out.columns.get_loc("tokens/s"), "step ms", [num(v * 1e3) for v in rows["median_s"]])
    out = out.rename(columns={"tokens/s": "tokens/s [95% CI]", "tokens/$": "tokens/$ [95% CI]"})
    return out.drop(columns=[c for c in ("MFU", "ceiling") if (out[c] == "").all()])


def kernels_frames(kernels: pd.DataFrame, with_ratios: bool = False) -> list[tuple[str, pd.DataFrame]]:
    """(kernel, its table) per kernel: what each case costs per token, what it achieved on its
    bound's axis (TFLOP/s or GB/s) and how close it runs to the device's measured ceiling."""
    out = []
    for name, g in kernels.groupby("kernel", sort=True):
        cells = _kernel_cells(g, with_ratios)
        cols = ["batch", "runs", "step ms", "tokens/s", "$/1M tokens", "achieved", "ceiling", "flags"]
        cols += ["speed vs baseline [95% CI]"] if with_ratios else []
        frame = pd.DataFrame(
            {**{c: g[c] for c in ("system", "shape", "variant", "dtype")}, **{c: cells[c] for c in cols}}
        )
        if cells["note"]:
            frame.attrs["note"] = cells["note"]
        empty = [c for c in ("tokens/s", "$/1M tokens", "achieved", "ceiling") if (frame[c] == "").all()]
        if "tokens/s" in empty:
            note = "tokens/s blank: recorded before kernel cases counted their tokens."
        elif "$/1M tokens" in empty:
            note = "$/1M tokens blank: not priced (ppbench kernels --instance)."
        else:
            note = ""
        frame.attrs["note"] = " ".join(filter(None, [frame.attrs.get("note"), note]))
        frame = flags.with_legend(frame)
        out.append((str(name), frame.drop(columns=empty).reset_index(drop=True)))
    return out


def best_differs(rows: pd.DataFrame) -> pd.DataFrame:
    """The best-batch rows of workloads that ran at more than one batch (elsewhere the best batch is the only one)."""
    if rows.empty:
        return rows
    counts = rows.groupby(["system", *compare.WORKLOAD])["batch"].transform("nunique")
    return rows[rows["best"] & (counts > 1)]


def problems_frame(comparison: Comparison, records: pd.DataFrame | None) -> pd.DataFrame:
    """Excluded records (with why), then counted records that carry warnings: one row per system
    and workload (a kernel's cases together) with how many records and their distinct warnings,
    so forty noisy kernel cases are a few rows, not a wall."""
    rows = [
        {"record": "excluded", "system": r.system, "workload": f"{r.preset} {r.scenario} {r.dtype} batch {num(r.batch)}",
         "records": "1", "reason": _fold(str(r.excluded_reason))}
        for r in comparison.excluded.itertuples(index=False)
    ]  # fmt: skip
    records = _records(records)
    if records.empty or "validity.warnings" not in records:
        return pd.DataFrame(rows)
    flagged: dict[tuple[str, str], list[list[str]]] = {}
    for _, r in records.iterrows():
        warnings = r.get("validity.warnings")
        if r.get("status") == "ok" and isinstance(warnings, list) and warnings:
            w = {k: _text(r.get(f"workload.{k}")) for k in ("preset", "scenario", "dtype", "batch")}
            key = (compare.system_label(r), f"{w['preset']} {w['scenario']} {w['dtype']} batch {w['batch']}")
            flagged.setdefault(key, []).append([str(x) for x in warnings])
    for (system, workload), found in flagged.items():
        distinct = list(dict.fromkeys(x for ws in found for x in ws))
        rows.append(
            {"record": "flagged (counted)", "system": system, "workload": workload, "records": str(len(found)),
             "reason": _fold("; ".join(distinct))}
        )  # fmt: skip
    return pd.DataFrame(rows)


# ------------------------------------------------------------------ the page


@dataclass
class Page:
    """The report's content, in order, for either medium."""

    title: str
    context: list[str]
    blocks: list[tuple[str, str, object]] = field(default_factory=list)  # (kind, heading, body)


def build(comparison: Comparison, claim_results: list[ClaimResult], sources: list[str], records=None) -> Page:
    with_ratios = comparison.baseline is not None
    rows = workload_rows(comparison, records)
    kernels = kernel_rows(records, comparison)
    figs = figures(rows, claim_points(claim_results), roofline_points(records))
    base = f"ratios against baseline {comparison.baseline}" if with_ratios else "no baseline (--baseline): no ratios"
    page = Page(
        "ppbench report",
        [
            f"{len(comparison.systems)} system(s): {', '.join(comparison.systems) or '(none)'}; {base}.",
            f"Results: {', '.join(sources) or '(none)'}.",
        ],
    )
    add = page.blocks.append
    add(("verdicts", "Verdicts", (headline(claim_results), verdict_lines(claim_results))))
    add(("table", "Systems compared", systems_frame(records, comparison.systems)))
    for fig in figs:
        add(("figure", fig.question, fig))
    add(("table", "Workloads: every system and batch", workload_frame(rows, with_ratios)))
    differs = best_differs(rows)
    if not differs.empty:
        add(
            (
                "table",
                "Best batch by tokens per dollar (workloads run at several batches)",
                workload_frame(differs, with_ratios),
            )
        )
    if not kernels.empty:
        add(
            (
                "kernels",
                "Kernels: cost per token and fraction of the measured ceiling",
                kernels_frames(kernels, with_ratios),
            )
        )
    add(("table", "Claims in detail", claims_frame(claim_results)))
    add(
        (
            "reasons",
            "Why each verdict",
            [(r.claim.id, reasons(r), r.published.reasons if r.published else []) for r in claim_results],
        )
    )
    add(("table", "Excluded and flagged records", problems_frame(comparison, records)))
    pooling = (
        "Rows: each system's newest run of a workload only (--latest)."
        if comparison.latest
        else "Rows: every run of a system and workload pooled (runs); step time = median of the runs' medians."
    )
    add(
        (
            "lines",
            "Method",
            [
                "$/1M tokens = usd_per_hour x share / (tokens_per_s x 3600) x 1e6; tokens/$ is its inverse x 1e6.",
                pooling,
                "95% CIs: two-level percentile bootstrap (each side's runs resampled, then the step times within each"
                " run); tokens/s and tokens/$ CIs are the step time's, ratios' the ratio's. With one run a side a CI"
                " covers within-run noise only.",
                "Kernels: tokens/s = the tokens one call stands for (batch x seq_len for prefill and training shapes,"
                " batch for decode) / step time, priced like a workload at the record's instance.",
                "Break-even speed ratio = claimed tokens-per-dollar ratio x price_subject / price_baseline.",
                "Our verdict (the result): supported if the CI's lower end reaches the break-even, not supported if its upper end"
                " is below it (not reproduced for an 'up to' claim), else inconclusive.",
                "Published verdict: the same test on published pairs (seeds/evidence.yaml), tokens/$ ratio = speed ratio x"
                " price_baseline / price_subject; reproduced, not reproduced, inconclusive or no evidence. Evidence, not our measurement.",
                "Both verdicts are judged at the claim's date, today and every date a price or a published figure changed"
                " in between; a pair is read as the interval its sources allow (an unnamed instance priced at both"
                " candidates, a different-scale pair's scaling bound, a batch-1 latency pair unbounded).",
            ],
        )
    )
    return page


_CSS = """*{box-sizing:border-box}
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0 auto;padding:1.2em 1.5em;max-width:1400px;color:#1b1b1b}
h1{font-size:1.6em;margin:0 0 .2em} h2{font-size:1.2em;margin:1.6em 0 .4em;border-bottom:1px solid #ddd}
h3{font-size:1em;margin:1.2em 0 .3em} .muted{color:#555;font-size:.9em}
.lead{font-size:1.05em;margin:.4em 0} .v{font-weight:600}
.verdicts{list-style:none;padding:0;margin:.5em 0} .verdicts li{margin:.35em 0;padding:.45em .7em;border-left:4px solid #4a78b5;background:#f5f8fc}
.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;margin:.5em 0;font-size:.85em}
th,td{border:1px solid #ccc;padding:.25em .5em;text-align:left;vertical-align:top}
th{background:#eef1f5;position:sticky;top:0} td{font-variant-numeric:tabular-nums}
figure{margin:.5em 0} img{max-width:100%;height:auto;display:block} figcaption{font-size:.88em;color:#444;max-width:75em}
details summary{cursor:pointer}
@media (max-width:700px){body{font-size:14px;padding:.6em} table{font-size:.78em} th,td{padding:.15em .3em}}
@media print{body{max-width:none;padding:0;font-size:11px} figure,table,li{break-inside:avoid} h2{break-after:avoid} .scroll{overflow:visible}}"""
_VERDICT_KEYS = ("ours", "published", "break-even", "decides it")
_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def _esc(value: object) -> str:
    """HTML text or attribute value (ppharness.present.textsafe)."""
    return textsafe.html_text(value)


def _html_cell(value: object) -> str:
    if isinstance(value, Fold):
        return f"<details><summary>{_esc(value[: FOLD_AT - 30])}…</summary>{_esc(value)}</details>"
    return _esc(value)


def _html_table(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "<p><em>none</em></p>"
    head = "".join(f"<th>{_esc(c)}</th>" for c in frame.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{_html_cell(v)}</td>" for v in row) + "</tr>" for row in frame.itertuples(index=False)
    )
    note = f'<p class="muted">{_esc(frame.attrs["note"])}</p>' if frame.attrs.get("note") else ""
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>{note}'


def render_html(comparison: Comparison, claim_results: list[ClaimResult], sources: list[str], records=None) -> str:
    page = build(comparison, claim_results, sources, records)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><meta http-equiv="Content-Security-Policy" content="{_CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_esc(page.title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_esc(page.title)}</h1>",
        *(f'<p class="muted">{_esc(line)}</p>' for line in page.context),
        f'<p class="muted">generated {stamp}</p>',
    ]
    for kind, heading, body in page.blocks:
        parts.append(f"<h2>{_esc(heading)}</h2>")
        if kind == "verdicts":
            lead, lines = body
            items = "".join(
                f"<li><strong>{_esc(v['claim'])}</strong>: {_esc(v['claimed'])}<br>"
                + " · ".join(f'{_esc(k.capitalize())} <b class="v">{_esc(v[k])}</b>' for k in _VERDICT_KEYS)
                + "</li>"
                for v in lines
            )
            parts.append(f'<p class="lead">{_esc(lead)}</p><ul class="verdicts">{items}</ul>')
        elif kind == "figure":
            if body.png:
                cap = _esc(body.caption)
                parts.append(
                    f'<figure><img alt="{_esc(body.question)}" src="data:image/png;base64,{body.png}">'
                    f"<figcaption>{cap}</figcaption></figure>"
                )
            else:
                parts.append(f'<p class="muted omitted">{_esc(body.omitted)}</p>')
        elif kind == "table":
            parts.append(_html_table(body))
        elif kind == "kernels":
            for name, frame in body:
                parts.append(f"<h3>{_esc(name)}</h3>{_html_table(frame)}")
        elif kind == "reasons":
            for cid, ours, theirs in body:
                items = "".join(f"<li>{_esc(x)}</li>" for x in ours)
                pub = "".join(f"<li>{_esc(x)}</li>" for x in theirs)
                parts.append(
                    f"<details><summary>{_esc(cid)}</summary><p>Our measurements (the result):</p><ul>{items}</ul>"
                    + (f"<p>Published evidence (others' measurements):</p><ul>{pub}</ul>" if pub else "")
                    + "</details>"
                )
        else:
            parts.append("<ul>" + "".join(f"<li>{_esc(x)}</li>" for x in body) + "</ul>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _md_cell(value: object) -> str:
    """Inert markdown: no link (`[c](javascript:...)`), image, emphasis, HTML or table break."""
    return textsafe.markdown(value)


def _md_table(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "_none_\n"
    lines = ["| " + " | ".join(_md_cell(c) for c in frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    note = f"\n{_md_cell(frame.attrs['note'])}\n" if frame.attrs.get("note") else ""
    return "\n".join(lines) + "\n" + note


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40]


def render_md(
    comparison: Comparison, claim_results: list[ClaimResult], sources: list[str], records=None, stem: str = "report"
) -> tuple[str, dict[str, bytes]]:
    """The report as markdown, and its figures as PNG files (name -> bytes) to write beside it."""
    page = build(comparison, claim_results, sources, records)
    files: dict[str, bytes] = {}
    parts = [f"# {_md_cell(page.title)}\n", *(f"{_md_cell(line)}\n" for line in page.context)]
    parts.append(f"_generated {date.today().isoformat()}_\n")
    for kind, heading, body in page.blocks:
        parts.append(f"## {_md_cell(heading)}\n")
        if kind == "verdicts":
            lead, lines = body
            parts.append(f"{_md_cell(lead)}\n")
            parts.append(
                "".join(
                    f"- **{_md_cell(v['claim'])}**: {_md_cell(v['claimed'])}. "
                    + "; ".join(f"{k.capitalize()}: **{_md_cell(v[k])}**" for k in _VERDICT_KEYS)
                    + "\n"
                    for v in lines
                )
            )
        elif kind == "figure":
            if body.png:
                name = f"{stem}-{len(files) + 1}-{_slug(body.question)}.png"
                files[name] = base64.b64decode(body.png)
                parts.append(f"![{_md_cell(body.question)}]({name})\n\n{_md_cell(body.caption)}\n")
            else:
                parts.append(f"_{_md_cell(body.omitted)}_\n")
        elif kind == "table":
            parts.append(_md_table(body))
        elif kind == "kernels":
            parts.extend(f"### {_md_cell(name)}\n\n{_md_table(frame)}" for name, frame in body)
        elif kind == "reasons":
            for cid, ours, theirs in body:
                lines = [
                    f"<details><summary>{_md_cell(cid)}</summary>\n",
                    f"- {_md_cell(cid)} (our measurements): " + _md_cell("; ".join(ours)),
                ]
                if theirs:
                    lines.append(f"- {_md_cell(cid)} (published evidence): " + _md_cell("; ".join(theirs)))
                parts.append("\n".join(lines) + "\n\n</details>\n")
        else:
            parts.append("".join(f"- {_md_cell(x)}\n" for x in body))
    return "\n".join(parts), files


def check_output(output: Path) -> None:
    """Raise BenchError unless `output` can be written: its folder exists and is writable, and it
    is not itself a folder. `ppbench report` checks this before loading or rendering anything."""
    output = Path(output)
    check_file_destination(output, f"cannot write report {output}:", f" (-o {output / 'report.html'})")


def write_report(text: str, output: Path, files: dict[str, bytes] | None = None) -> Path:
    """Write atomically (temp file + rename), so a failure never leaves half a report; `files`
    (a markdown report's figures) go beside it first, each written the same way. A failure (no
    space left, the folder became read-only) is WriteError, one line."""
    output = Path(output)
    check_output(output)
    for name, data in (files or {}).items():
        _atomic(output.parent / name, data, output)
    _atomic(output, text.encode("utf-8"), output)
    return output


def _atomic(path: Path, data: bytes, report: Path) -> None:
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise WriteError(f"cannot write report {report}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())  # a full disk can surface only here
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a report is an ordinary file
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise WriteError(f"cannot write report {report}: {exc.strerror or exc}; nothing was written") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
