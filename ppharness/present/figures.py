"""The report's figures (matplotlib, Agg backend): one figure per question the report answers.

Each figure is a `Figure`: the question it answers, a caption saying how to read it (what the bars
and whiskers are), and a base64 PNG; a figure without data is a `Figure` with no PNG and a
one-line `omitted` reason, so the page never shows an empty panel. Uncertainty comes from the
bootstrap (ppharness.core.stats, ppharness.present.report.row_cis): whiskers are 95% CIs of the median step time
turned into tokens/s or tokens per dollar, and of the subject/baseline speed ratio.

Labels come from results files (untrusted): control characters are replaced and "$" escaped so
mathtext never parses them, and usetex is off. ppharness.present.report places the figures in the page.
"""

from __future__ import annotations

import base64
import io
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ppharness.present import textsafe

DPI = 110
WIDTH_IN = 11.0  # a figure fills ~1,200 px at DPI; the page scales it down on a phone


@dataclass
class Figure:
    question: str  # the heading: what the figure answers
    caption: str  # how to read it
    png: str = ""  # base64 PNG; empty when omitted
    omitted: str = ""  # why there is no figure (one line)


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _safe_label(text: object) -> str:
    """A results-file string as plain figure text: "$" escaped so mathtext never parses it."""
    return textsafe.plain(text)[:80].replace("$", r"\$")  # control and bidi characters as "?"


def _finite(*values: float) -> bool:
    return all(isinstance(v, (int, float, np.floating)) and math.isfinite(v) for v in values)


def figures(rows: pd.DataFrame, claim_points: list[dict], kernels: pd.DataFrame) -> list[Figure]:
    """The five figures, in the report's order, each drawn or omitted with its reason.

    rows: workload rows (ppharness.present.report.workload_rows: per system x workload x batch, with
        tokens_per_s/tokens_per_usd and their `_lo`/`_hi` CIs, median_s, and `best` marking the
        system's best batch); claim_points: ppharness.present.report.claim_points; kernels: kernel records
        for the roofline (ppharness.present.report.roofline_points)."""
    import matplotlib  # slow import, Agg chosen first: only the report draws

    matplotlib.use("Agg")  # no display; must precede pyplot
    import matplotlib.pyplot as plt  # slow import, Agg chosen first: only the report draws

    with plt.rc_context({"text.usetex": False, "font.size": 9, "axes.titlesize": 10}):
        return [
            _value_figure(plt, rows),
            _claims_figure(plt, claim_points),
            _batch_figure(plt, rows),
            _frontier_figure(plt, rows),
            _roofline_figure(plt, kernels),
        ]


def _draw(plt, figure: Figure, fig) -> Figure:
    figure.png = _png(fig)
    plt.close(fig)
    return figure


# ------------------------------------------------------------------ tokens per dollar


def _value_figure(plt, rows: pd.DataFrame) -> Figure:
    question = "Which system gives the most tokens per dollar?"
    caption = (
        "Tokens per dollar at each system's best batch, one panel per scenario (each with its own scale), "
        "higher is better; whiskers: 95% bootstrap CI of the median step time."
    )
    data = rows[rows["best"] & rows["tokens_per_usd"].notna()] if not rows.empty else rows
    if data.empty:
        return Figure(question, caption, omitted="No figure: no workload row has a price (run with an instance).")
    scenarios = sorted(data["scenario"].unique())
    systems = sorted(data["system"].unique())
    n = len(scenarios)
    cols = min(n, 3)
    nrows = math.ceil(n / cols)
    height = max(1.6, 0.42 * len(systems) + 1.0)
    fig, axes = plt.subplots(nrows, cols, figsize=(WIDTH_IN, height * nrows), squeeze=False, layout="constrained")
    colors = {s: f"C{i % 10}" for i, s in enumerate(systems)}
    for ax, scen in zip(axes.flat, scenarios, strict=False):
        part = data[data["scenario"] == scen].sort_values("system")
        part = part.groupby("system", as_index=False).first()  # one bar per system (presets/dtypes: the first)
        ys = np.arange(len(part))
        vals = part["tokens_per_usd"].to_numpy(float)
        lo = np.where(part["tokens_per_usd_lo"].notna(), vals - part["tokens_per_usd_lo"].to_numpy(float), 0)
        hi = np.where(part["tokens_per_usd_hi"].notna(), part["tokens_per_usd_hi"].to_numpy(float) - vals, 0)
        ax.barh(ys, vals, color=[colors[s] for s in part["system"]], xerr=[lo, hi], capsize=3, ecolor="black")
        for y, v, h in zip(ys, vals, hi, strict=True):
            ax.text(v + h, y, f"  {_short(v)}", va="center", fontsize=8)
        ax.set_yticks(ys, [_safe_label(s) for s in part["system"]], fontsize=8)
        ax.invert_yaxis()
        ax.set_title(_safe_label(scen))
        ax.set_xlabel("tokens per $")
        ax.set_xlim(0, vals.max() * 1.35 + (hi.max() if hi.size else 0))
        ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: _short(v)))
    for ax in list(axes.flat)[n:]:
        ax.remove()  # no empty panel
    return _draw(plt, Figure(question, caption), fig)


def _short(v: float) -> str:
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:.3g}{unit}"
    return f"{v:.3g}"


# ------------------------------------------------------------------ claims


def _claims_figure(plt, points: list[dict]) -> Figure:
    question = "Does each claim hold?"
    caption = (
        "Speed ratio subject/baseline (log scale) per claim: measured (circle, whisker = 95% bootstrap CI) "
        "and published pairs (diamonds, no CI published; for a price claim a pair's tokens/$ ratio is shown as the "
        "speed the claim's instances would need for it), against the speed the claim needs to break even "
        "at the claim's date (dashed) and today (solid). Right of the line: the claim holds. Under each "
        "claim: the dates between which it held by our rule, judged at every price change and publication."
    )
    shown = [p for p in points if p["measured"] or p["published"]]
    missing = [p["claim"] for p in points if not (p["measured"] or p["published"])]
    if missing:
        caption += f" Not shown (no measured or published ratio): {', '.join(missing)}."
    if not shown:
        return Figure(question, caption, omitted="No figure: no claim has a measured or published ratio.")
    fig, ax = plt.subplots(figsize=(WIDTH_IN, 0.6 * len(shown) + 1.2), layout="constrained")  # two-line labels
    xs = []
    labels = {"measured": False, "published": False, "claim date": False, "today": False}
    for y, p in enumerate(shown):
        for when, style in (("claim date", "--"), ("today", "-")):
            if (v := p["needs"].get(when)) and _finite(v):
                ax.vlines(v, y - 0.38, y + 0.38, colors="black", linestyles=style, linewidth=1.6,
                          label=None if labels[when] else f"break-even ({when})")  # fmt: skip
                labels[when], xs = True, [*xs, v]
        for v in p["published"]:
            ax.plot(v, y + 0.12, "D", color="C1", markersize=6, alpha=0.8,
                    label=None if labels["published"] else "published pair")  # fmt: skip
            labels["published"], xs = True, [*xs, v]
        if (m := p["measured"]) is not None:
            point, lo, hi = m
            err = [[point - lo], [hi - point]] if _finite(lo, hi) else None
            ax.errorbar(point, y - 0.12, xerr=err, fmt="o", color="C0", capsize=4, markersize=7,
                        label=None if labels["measured"] else "measured (95% CI)")  # fmt: skip
            labels["measured"], xs = True, [*xs, point, *(v for v in (lo, hi) if _finite(v))]
    xs = [x for x in xs if x > 0]
    ax.set_xscale("log")
    ax.set_xlim(min(xs) / 1.5, max(xs) * 1.5)
    from matplotlib.ticker import FixedLocator, NullLocator  # slow import, Agg chosen first: only the report draws

    lo_x, hi_x = ax.get_xlim()
    ticks = [v for v in (0.1, 0.2, 0.3, 0.5, 0.7, 1, 1.5, 2, 3, 5, 7, 10, 20, 50) if lo_x <= v <= hi_x]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:g}x"))
    labels_ = [_safe_label(p["claim"]) + ("\n" + _safe_label(p["held"]) if p.get("held") else "") for p in shown]
    ax.set_yticks(range(len(shown)), labels_, fontsize=8)
    ax.set_ylim(len(shown) - 0.5, -0.5)
    ax.set_xlabel("speed ratio, subject / baseline (tokens/s per instance)")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8, frameon=False)
    return _draw(plt, Figure(question, caption), fig)


# ------------------------------------------------------------------ throughput against batch


def _batch_figure(plt, rows: pd.DataFrame) -> Figure:
    question = "How does throughput grow with batch size, and at what latency?"
    caption = (
        "Tokens/s against batch (solid, left axis, whiskers: 95% bootstrap CI) and step latency "
        "(dashed, right axis, ms per step: time to first token for prefill, per output token for decode), "
        "for systems measured at two or more batch sizes."
    )
    if rows.empty:
        return Figure(question, caption, omitted="No figure: no workload rows.")
    serving = rows["scenario"].astype(str).str.startswith("serve")  # their own figure: per-user speed
    data = rows[rows["tokens_per_s"].notna() & rows["batch"].notna() & ~serving]
    keys = ["system", "preset", "scenario", "dtype"]
    series = [g.sort_values("batch") for _, g in data.groupby(keys) if g["batch"].nunique() >= 2]
    if not series:
        return Figure(
            question,
            caption,
            omitted="No figure: every system ran one batch size per scenario (nothing to plot against batch).",
        )
    scenarios = sorted({g["scenario"].iloc[0] for g in series})
    cols = min(len(scenarios), 3)
    nrows = math.ceil(len(scenarios) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(WIDTH_IN, 3.4 * nrows), squeeze=False, layout="constrained")
    from matplotlib.ticker import FuncFormatter  # slow import, Agg chosen first: only the report draws

    for ax, scen in zip(axes.flat, scenarios, strict=False):
        twin = ax.twinx()
        for i, g in enumerate(s for s in series if s["scenario"].iloc[0] == scen):
            color = f"C{i % 10}"
            tps = g["tokens_per_s"].to_numpy(float)
            lo = np.nan_to_num(tps - g["tokens_per_s_lo"].to_numpy(float), nan=0.0)
            hi = np.nan_to_num(g["tokens_per_s_hi"].to_numpy(float) - tps, nan=0.0)
            label = _safe_label(f"{g['system'].iloc[0]} {g['preset'].iloc[0]} {g['dtype'].iloc[0]}")
            ax.errorbar(g["batch"], tps, yerr=[lo, hi], marker="o", color=color, capsize=3, label=label)
            twin.plot(g["batch"], g["median_s"] * 1e3, linestyle="--", marker=".", color=color)
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.set_title(_safe_label(scen))
        ax.set_xlabel("batch")
        ax.set_ylabel("tokens/s (solid)")
        twin.set_ylabel("ms per step (dashed)")
        ax.set_ylim(bottom=0)
        twin.set_ylim(bottom=0)
    for ax in list(axes.flat)[len(scenarios) :]:
        ax.remove()
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=min(3, len(labels)), fontsize=8, frameon=False)
    return _draw(plt, Figure(question, caption), fig)


# ------------------------------------------------------------------ serving


def _frontier_figure(plt, rows: pd.DataFrame) -> Figure:
    """Serving levels (ppharness/serve/runner.py) as InferenceX draws them: interactivity (a user's output
    tokens/s, 1 / median TPOT) on x, output tokens per dollar on y (tokens/s when unpriced);
    each system's points joined in order of concurrency, so the curve is its frontier."""
    question = "What does serving cost at each level of interactivity?"
    caption = (
        "Serving: throughput per dollar against tokens/s per user, one point per concurrency (labelled): output "
        "tokens per dollar (tokens/s when unpriced) against a user's output tokens/s (1 / median TPOT), each "
        "system's points joined, so the curve is its frontier. Up and to the right is better; whiskers: 95% "
        "bootstrap CI where the levels carry step samples."
    )
    if rows.empty or "tokens_per_s_per_user" not in rows:
        return Figure(question, caption, omitted="No figure: no serving records (ppbench serve).")
    data = rows[rows["scenario"].astype(str).str.startswith("serve") & rows["tokens_per_s_per_user"].notna()]
    if data.empty:
        return Figure(question, caption, omitted="No figure: no serving records (ppbench serve).")
    priced = data["tokens_per_usd"].notna().any()
    y = "tokens_per_usd" if priced else "tokens_per_s"
    data = data[data[y].notna()]
    fig, ax = plt.subplots(figsize=(WIDTH_IN * 0.7, 4.5), layout="constrained")
    for (system, preset, scen), g in data.groupby(["system", "preset", "scenario"]):
        g = g.sort_values("batch")
        vals = g[y].to_numpy(float)
        lo = np.nan_to_num(vals - g[f"{y}_lo"].to_numpy(float), nan=0.0) if f"{y}_lo" in g else np.zeros_like(vals)
        hi = np.nan_to_num(g[f"{y}_hi"].to_numpy(float) - vals, nan=0.0) if f"{y}_hi" in g else np.zeros_like(vals)
        ax.errorbar(g["tokens_per_s_per_user"], vals, yerr=[lo, hi], marker="o", capsize=3,
                    label=_safe_label(f"{system} {preset} {scen}"))  # fmt: skip
        for _, r in g.iterrows():
            ax.annotate(f"{r['batch']:.0f}", (r["tokens_per_s_per_user"], r[y]), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")  # fmt: skip
    ax.set_xlabel("output tokens/s per user (1 / median TPOT)")
    ax.set_ylabel("output tokens per $" if priced else "output tokens/s (unpriced)")
    ax.yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: _short(v)))
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    return _draw(plt, Figure(question, caption), fig)


# ------------------------------------------------------------------ roofline


def _roofline_figure(plt, points: pd.DataFrame) -> Figure:
    question = "How close do the kernels come to each device's roofline?"
    caption = (
        "Achieved TFLOP/s against arithmetic intensity (FLOP per byte moved), log-log, one panel per device: "
        "each kernel case is a point (median over its runs); lines: the device's measured roofline "
        "(min of the GEMM ceiling and intensity x the measured memory bandwidth, the best of STREAM-style "
        "copy, read and add; solid) and the vendor's peaks (dashed) where known. "
        "A point above the measured line ran faster than the measured ceiling allows (e.g. its data stayed in cache)."
    )
    if points.empty:
        return Figure(question, caption, omitted="No figure: no valid kernel records with FLOPs (ppbench kernels).")
    devices = list(dict.fromkeys(points["device"]))
    fig, axes = plt.subplots(1, len(devices), figsize=(WIDTH_IN, 4.6), squeeze=False, layout="constrained")
    no_peak = []
    for ax, dev in zip(axes[0], devices, strict=True):
        part = points[points["device"] == dev]
        kernels = sorted(part["kernel"].unique())
        markers = "osD^v<>ph*"
        for i, k in enumerate(kernels):
            g = part[part["kernel"] == k]
            ax.scatter(g["intensity"], g["tflops"], s=28, marker=markers[i % len(markers)], color=f"C{i % 10}",
                       label=_safe_label(k), zorder=3)  # fmt: skip
        lo_x, hi_x = part["intensity"].min() / 4, part["intensity"].max() * 4
        x = np.geomspace(lo_x, hi_x, 200)
        gemm, mem = part["gemm_tflops"].dropna(), part["mem_gbps"].dropna()
        if not gemm.empty and not mem.empty:
            g_, m_ = float(gemm.max()), float(mem.max())
            ax.plot(x, np.minimum(g_, x * m_ / 1e3), color="black", linewidth=1.5,
                    label=f"measured: {g_:.3g} TFLOP/s, {m_:.3g} GB/s")  # fmt: skip
        pk, bw = part["peak_tflops"].dropna(), part["peak_gbps"].dropna()
        if not pk.empty and not bw.empty:
            p_, b_ = float(pk.max()), float(bw.max())
            ax.plot(x, np.minimum(p_, x * b_ / 1e3), color="grey", linestyle="--", linewidth=1.2,
                    label=f"vendor peak: {p_:.3g} TFLOP/s, {b_:.3g} GB/s")  # fmt: skip
        else:
            no_peak.append(dev)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(_safe_label(dev))
        ax.set_xlabel("arithmetic intensity (FLOP/byte)")
        ax.set_ylabel("achieved TFLOP/s")
        ax.grid(alpha=0.3, which="both", linewidth=0.4)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    if no_peak:
        caption += f" No vendor peak is known for: {', '.join(no_peak)} (CPUs have none in the catalog)."
    return _draw(plt, Figure(question, caption), fig)
