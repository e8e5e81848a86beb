"""The report's figures (matplotlib, Agg backend), each returned as a base64 PNG to embed.

Owns what is plotted: cost per 1M tokens by system, throughput against batch size, and MFU with
the measured-ceiling fraction. Labels come from results files (untrusted): control characters are
replaced and "$" escaped so mathtext never parses them, and usetex is off. bench.report places the
figures in the page.
"""

from __future__ import annotations

import base64
import io
import re

import pandas as pd

from bench.compare import Comparison

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _safe_label(text: object) -> str:
    """A results-file string as plain figure text: "$" escaped so mathtext never parses it."""
    return _CONTROL.sub("?", str(text))[:80].replace("$", r"\$")


def figures(comparison: Comparison) -> list[tuple[str, str]]:
    """(caption, base64 PNG) for each figure that has data: cost per 1M tokens by instance,
    throughput against batch size, MFU (and measured-ceiling fraction) by scenario."""
    import matplotlib

    matplotlib.use("Agg")  # no display; must precede pyplot
    import matplotlib.pyplot as plt

    out: list[tuple[str, str]] = []
    # The workload scenarios only: kernel rows have their own roofline table (`ppbench show`).
    best, table = (t[~t["scenario"].astype(str).str.startswith("kernel:")] for t in (comparison.best, comparison.table))
    serving = table["scenario"].astype(str).str.startswith("serve") if not table.empty else table.get("scenario")
    # Labels come from results files and go through _safe_label; usetex would run LaTeX on them.
    with plt.rc_context({"text.usetex": False}):
        for caption, draw, frame in (
            ("Cost per 1M tokens by system (best batch, lower is better)", _cost_figure, best),
            ("Throughput against batch size", _throughput_figure, table if table.empty else table[~serving]),
            ("MFU and measured-ceiling fraction by scenario (best batch)", _mfu_figure, best),
            (
                "Serving: throughput per dollar against tokens/s per user, one point per concurrency",
                _frontier_figure,
                table,
            ),
        ):
            fig = draw(plt, frame)
            if fig is not None:
                out.append((caption, _png(fig)))
                plt.close(fig)
    return out


def _grouped_bars(ax, frame: pd.DataFrame, value: str) -> bool:
    data = frame[frame[value].notna()]
    if data.empty:
        return False
    pivot = data.pivot_table(index="system", columns="scenario", values=value, aggfunc="max")
    width = 0.8 / max(len(pivot.columns), 1)
    for j, scen in enumerate(pivot.columns):
        xs = [i + j * width for i in range(len(pivot.index))]
        ax.bar(xs, pivot[scen].fillna(0).to_numpy(), width, label=_safe_label(scen))
    ax.set_xticks([i + width * (len(pivot.columns) - 1) / 2 for i in range(len(pivot.index))])
    ax.set_xticklabels([_safe_label(s) for s in pivot.index], rotation=20, ha="right", fontsize=8)
    ax.legend(fontsize=8)
    return True


def _cost_figure(plt, best: pd.DataFrame):
    if best.empty or best["usd_per_mtok"].notna().sum() == 0:
        return None
    fig, ax = plt.subplots(figsize=(8, 4), layout="constrained")
    _grouped_bars(ax, best, "usd_per_mtok")
    values = best["usd_per_mtok"].dropna()
    if values.max() / values.min() > 100:
        ax.set_yscale("log")
    ax.set_ylabel("$ per 1M tokens")
    return fig


def _throughput_figure(plt, table: pd.DataFrame):
    from matplotlib.ticker import FuncFormatter

    data = table[table["tokens_per_s"].notna() & table["batch"].notna()] if not table.empty else table
    if data.empty:
        return None
    scenarios = sorted(data["scenario"].unique())
    fig, axes = plt.subplots(1, len(scenarios), figsize=(4 * len(scenarios), 3.5), squeeze=False, layout="constrained")
    for ax, scen in zip(axes[0], scenarios, strict=True):
        for (system, preset, dtype), g in data[data["scenario"] == scen].groupby(["system", "preset", "dtype"]):
            g = g.sort_values("batch")
            ax.plot(g["batch"], g["tokens_per_s"], marker="o", label=_safe_label(f"{system} {preset} {dtype}"))
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))  # 1, 2, 4 rather than 2^0, 2^1
        ax.set_title(_safe_label(scen))
        ax.set_xlabel("batch")
        ax.set_ylabel("tokens/s")
        ax.legend(fontsize=7)
    return fig


def _mfu_figure(plt, best: pd.DataFrame):
    if best.empty or (best["mfu"].notna().sum() == 0 and best["ceiling_fraction"].notna().sum() == 0):
        return None
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
    for ax, col, title in (
        (axes[0], "mfu", "MFU (vendor peak)"),
        (axes[1], "ceiling_fraction", "fraction of measured ceiling"),
    ):
        if not _grouped_bars(ax, best, col):
            ax.text(0.5, 0.5, "no data (no peak known for these devices)", ha="center", va="center")
        ax.set_title(title)
        ax.set_ylim(0, 1)
    return fig


def _frontier_figure(plt, table: pd.DataFrame):
    """Serving levels (bench/serve.py) as InferenceX draws them: interactivity (a user's output
    tokens/s, 1 / median TPOT) on x, output tokens per dollar on y (tokens/s when unpriced);
    each system's points joined in order of concurrency, so the curve is its frontier."""
    if table.empty or "tokens_per_s_per_user" not in table:
        return None
    data = table[table["scenario"].astype(str).str.startswith("serve") & table["tokens_per_s_per_user"].notna()]
    if data.empty:
        return None
    priced = data["tokens_per_usd"].notna().any()
    y = "tokens_per_usd" if priced else "tokens_per_s"
    data = data[data[y].notna()]
    fig, ax = plt.subplots(figsize=(7, 4.5), layout="constrained")
    for (system, preset, scen), g in data.groupby(["system", "preset", "scenario"]):
        g = g.sort_values("batch")
        ax.plot(g["tokens_per_s_per_user"], g[y], marker="o", label=_safe_label(f"{system} {preset} {scen}"))
        for _, r in g.iterrows():
            ax.annotate(f"{r['batch']:.0f}", (r["tokens_per_s_per_user"], r[y]), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")  # fmt: skip
    ax.set_xlabel("output tokens/s per user (1 / median TPOT)")
    ax.set_ylabel("output tokens per $" if priced else "output tokens/s (unpriced)")
    ax.legend(fontsize=7)
    return fig
