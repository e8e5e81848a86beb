"""Cross-run comparison: who ran what, matched workloads, and ratios with bootstrap CIs.

Owns the "system" notion (a machine + backend + accelerator + compile mode), the split of loaded
records into usable rows and excluded rows (with the reason), how repeated runs of one system and
workload become one row (pooled as replicates by default, or the newest run only), the per-row
derived figures (tokens/s, $/1M tokens, tokens per dollar) and the ratios of two rows with their
bootstrap CIs (ppharness.core.stats: runs resampled, then step times within each run). `ppharness.judge.claims` and
`ppharness.present.report` build on this.

Everything here works on the DataFrame of `ppharness.record.load.load`; nothing reads files.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ppharness.core import stats
from ppharness.errors import BenchError
from ppharness.record import flags

# Workloads are matched on these; the batch is part of the match for the row-by-row table.
WORKLOAD = ["preset", "scenario", "dtype"]
MATCH = [*WORKLOAD, "batch"]
REQUIRED = ["status", "workload.preset", "workload.scenario"]
# The record fields system_label and _exclusion read.
ROW_FIELDS = ["cost.instance", "system.hostname", "device.backend", "device.accelerator", "workload.compile",
              "device.devices_used", "status", "reason", "validity.valid", "validity.reasons", "workload.scenario"]  # fmt: skip
N_RESAMPLES, CONFIDENCE, MIN_SAMPLES_FOR_CI = stats.N_RESAMPLES, stats.CONFIDENCE, stats.MIN_SAMPLES_FOR_CI
# Serving rows' latency figures (ppharness/serve/runner.py; NaN elsewhere): a user's tokens/s and TTFT/TPOT percentiles.
SERVING = ("tokens_per_s_per_user", "ttft_p50_s", "ttft_p90_s", "tpot_p50_s", "tpot_p90_s", "tpot_p99_s")
# per-record metrics a pooled row takes the median of (achieved_gbps: memory-bound kernels)
POOLED = ("mfu", "ceiling_fraction", "achieved_tflops", "achieved_gbps", *SERVING)


def _col(df: pd.DataFrame, name: str, default: object = None) -> pd.Series:
    return df[name] if name in df.columns else pd.Series([default] * len(df), index=df.index, dtype=object)


def _num(df: pd.DataFrame, name: str) -> pd.Series:
    return pd.to_numeric(_col(df, name), errors="coerce")


def _text(value: object, empty: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return empty
    return str(value)


def _samples(value: object) -> np.ndarray:
    """Raw step times as a float array; anything that is not a list of positive finite numbers -> empty."""
    if not isinstance(value, (list, tuple, np.ndarray)) or len(value) == 0:
        return np.empty(0)
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        return np.empty(0)
    if arr.ndim != 1 or not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        return np.empty(0)
    return arr


def _median(s: np.ndarray) -> float:
    """np.median of a 1-D float array (the same partition and midpoint), without its per-call
    overhead: a third of prepare's time on 5,000 records."""
    k = s.size // 2
    if s.size % 2:
        return float(np.partition(s, k)[k])
    part = np.partition(s, [k - 1, k])
    return float((part[k - 1] + part[k]) / 2)


def system_label(row: pd.Series | dict) -> str:
    """`instance-or-host/backend/accelerator/compile`, e.g. `trn1.32xlarge/neuron-xla/trainium1/none`;
    multi-device runs add `xN` so an 8-GPU record never stands in for the 1-GPU one."""
    where = _text(row.get("cost.instance")) or _text(row.get("system.hostname"), "unknown-host")
    parts = [where, _text(row.get("device.backend"), "?"), _text(row.get("device.accelerator"), "-")]
    label = "/".join([*parts, _text(row.get("workload.compile"), "none")])
    devices = row.get("device.devices_used")
    if isinstance(devices, (int, float, np.integer, np.floating)) and devices == devices and devices > 1:
        label += f"/x{int(devices)}"
    return label


def _exclusion(row: pd.Series | dict, samples: np.ndarray, median_s: float, tokens_per_s: float) -> str:
    status = _text(row.get("status"), "missing")
    if status != "ok":
        reason = _text(row.get("reason"))
        return f"status {status}" + (f": {reason}" if reason else "")
    valid = row.get("validity.valid")
    if not (isinstance(valid, (bool, np.bool_)) and valid):
        reasons = row.get("validity.reasons")
        why = "; ".join(map(str, reasons)) if isinstance(reasons, (list, tuple)) else _text(reasons)
        return "INVALID" + (f": {why}" if why else " (validity.valid is not true)")
    if samples.size == 0 and not (math.isfinite(median_s) and median_s > 0):
        return "no usable timing (timing.samples_s and timing.median_s missing or not positive)"
    kernel = _text(row.get("workload.scenario")).startswith("kernel:")  # kernels have no tokens
    if not kernel and not (math.isfinite(tokens_per_s) and tokens_per_s > 0):
        return "no usable metrics.tokens_per_step (missing or not positive)"
    return ""


@dataclass
class Rows:
    """Loaded records split into rows fit for comparison and rows excluded, each with a reason."""

    usable: pd.DataFrame
    excluded: pd.DataFrame
    systems: list[str] = field(default_factory=list)


def prepare(df: pd.DataFrame, latest: bool = False) -> Rows:
    """Derive per-row figures and split usable (status ok, valid, timed) from excluded rows.

    Usable records of one (system, preset, scenario, dtype, batch) become one row: all their runs
    pooled as replicates (see `_pool`), or with `latest` the newest record only. Derived columns:
    system, preset, scenario, dtype, batch, runs, run_ids, run_samples (one np.ndarray of step
    times per run), run_times (when each run measured it: its first record's created_at), median_s
    (median of the runs' medians), work_per_step (tokens per step; 1 for
    kernels, so the ratio is of steps per second), tokens_per_s, usd_per_hour_eff (price x share),
    usd_per_mtok, tokens_per_usd, mfu, ceiling_fraction, created_at (the newest run's).
    """
    if df.empty:
        empty = pd.DataFrame(columns=["system", "instance", *MATCH, "excluded_reason"])
        return Rows(usable=empty, excluded=empty.copy(), systems=[])
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise BenchError(f"results have no column(s) {', '.join(missing)}: not ppbench result records")
    out = pd.DataFrame(index=df.index)
    # What system_label and _exclusion read, one dict a record: a pandas Series a row cost most of
    # prepare's time on 5,000 records.
    rows = df[[c for c in ROW_FIELDS if c in df.columns]].to_dict("records")
    out["system"] = [system_label(r) for r in rows]
    out["instance"] = [_text(v) for v in _col(df, "cost.instance")]
    out["accelerator"] = [_text(v) for v in _col(df, "device.accelerator")]
    for short in WORKLOAD:
        out[short] = [_text(v, "-") for v in _col(df, f"workload.{short}")]
    # A kernel scenario holds several variants and shapes (ppharness/kernels/run.py); keep them apart.
    cases = zip(out["scenario"], _col(df, "workload.variant"), _col(df, "workload.shape"), strict=True)
    out["scenario"] = [
        " ".join(filter(None, (sc, _text(v), _text(sh)))) if sc.startswith("kernel:") else sc for sc, v, sh in cases
    ]
    # A kernel's own table (`compare`'s kernel table) names its parts; workload rows leave them blank.
    kern = out["scenario"].str.startswith("kernel:")
    for name in ("kernel", "variant", "shape"):
        out[name] = [_text(v) if k else "" for v, k in zip(_col(df, f"workload.{name}"), kern, strict=True)]
    named = zip(out["kernel"], out["scenario"], kern, strict=True)  # no workload.kernel: from the scenario
    out["kernel"] = [(k or sc.split()[0].removeprefix("kernel:")) if is_k else "" for k, sc, is_k in named]
    bound = [_text(m) or _text(w) for m, w in zip(_col(df, "metrics.bound"), _col(df, "workload.bound"), strict=True)]
    out["bound"] = [b if k else "" for b, k in zip(bound, kern, strict=True)]
    # A serving level (ppharness/serve/runner.py) pairs by model (preset), input/output lengths and concurrency (batch).
    lengths = zip(out["scenario"], _num(df, "workload.input_len"), _num(df, "workload.output_len"), strict=True)
    out["scenario"] = [f"serve {i:.0f}/{o:.0f}" if sc == "serve" and i == i and o == o else sc for sc, i, o in lengths]
    # Prefill records made before prefill computed the last position's logits only (no
    # workload.prefill_logits) timed the vocabulary head at every prompt position: other work,
    # never pooled with today's prefill.
    heads = zip(out["scenario"], _col(df, "workload.prefill_logits"), strict=True)
    out["scenario"] = [f"{sc} (all logits)" if sc == "prefill" and not _text(h) else sc for sc, h in heads]
    out["batch"] = _num(df, "workload.batch")
    out["samples"] = pd.Series([_samples(v) for v in _col(df, "timing.samples_s")], index=df.index, dtype=object)
    median = _num(df, "timing.median_s")
    from_samples = [_median(s) if s.size else math.nan for s in out["samples"]]
    out["median_s"] = np.where(np.isnan(from_samples), median, from_samples)
    # tokens_per_s = tokens_per_step / median_s (the contract); derive tokens_per_step if absent.
    per_step = _num(df, "metrics.tokens_per_step")
    per_step = per_step.fillna(_num(df, "metrics.tokens_per_s") * median)
    no_tokens = out["scenario"].str.startswith("kernel:") & per_step.isna()
    out["has_tokens"] = ~no_tokens
    out["work_per_step"] = np.where(no_tokens, 1.0, per_step)
    share = _num(df, "cost.share").fillna(1.0)
    share = share.where((share > 0) & (share <= 1))  # outside (0, 1]: not a share, so unpriced
    price = _num(df, "cost.usd_per_hour")
    out["usd_per_hour_eff"] = price.where(price > 0) * share
    _figures(out)
    for name in (*POOLED, "flops_per_token"):
        out[name] = _num(df, f"metrics.{name}")
    out["share"] = share
    out["devices_used"] = _num(df, "device.devices_used")
    out["created_at"] = [_text(v) for v in _col(df, "created_at")]
    out["run_id"] = [_text(v) for v in _col(df, "run_id")]
    out["repeat"] = _num(df, "repeat.index").fillna(1).astype(int)  # repetition within its run (--repeat)
    out["flags"] = pd.Series([flags.codes(w) for w in _col(df, "validity.warnings")], index=df.index, dtype=object)
    derived = zip(rows, out["samples"], out["median_s"], out["tokens_per_s"], strict=True)
    reasons = [_exclusion(r, s, m, t) for r, s, m, t in derived]
    out["excluded_reason"] = reasons
    keep = out["excluded_reason"] == ""
    records = out[keep].sort_values("created_at", kind="stable")
    usable = _figures(_latest(records) if latest or records.empty else _pool(records))
    usable = usable.drop(columns="samples")  # run_samples holds them, run by run
    excluded = out[~keep].copy()
    # how many records of each pooled row's system and workload were left out (said in its flags)
    left_out = _keys(excluded).value_counts()
    usable["excluded"] = [int(left_out.get(k, 0)) for k in _keys(usable)]
    return Rows(usable=usable, excluded=excluded, systems=sorted(out["system"].unique()))


def _keys(rows: pd.DataFrame) -> pd.Series:
    """One string per row naming its system and workload (NaN batches compare equal as text)."""
    cols = rows[["system", *MATCH]].astype(str)
    return cols.apply("|".join, axis=1) if len(rows) else pd.Series([], dtype=str)


def _figures(rows: pd.DataFrame) -> pd.DataFrame:
    """tokens_per_s = tokens_per_step / median_s (the contract) and the cost figures, in place."""
    rows["tokens_per_s"] = (rows["work_per_step"] / rows["median_s"]).where(rows["has_tokens"].astype(bool))
    # $/1M tokens = usd_per_hour * share / (tokens_per_s * 3600) * 1e6 (DESIGN.md, Cost).
    rows["usd_per_mtok"] = rows["usd_per_hour_eff"] / (rows["tokens_per_s"] * 3600) * 1e6
    rows["tokens_per_usd"] = 1e6 / rows["usd_per_mtok"]
    return rows


def _run_samples(samples: np.ndarray, median_s: float) -> np.ndarray:
    return samples if samples.size else np.array([median_s])  # a record without samples: its median


def _latest(records: pd.DataFrame) -> pd.DataFrame:
    """One row per (system, workload, batch): the newest run (records sorted oldest first): its
    newest record, or all its repetitions when it measured the case several times (--repeat)."""
    newest = records.groupby(["system", *MATCH], sort=False, dropna=False)["run_id"].transform("last")
    same_run = (records["run_id"] == newest) & (newest != "")
    last = ~records.duplicated(subset=["system", *MATCH], keep="last")
    return _pool(records[same_run | last])


def _pool(records: pd.DataFrame) -> pd.DataFrame:
    """One row per (system, workload, batch) from all its runs, as replicates (oldest first in)."""
    # The same record read twice (a results file copied into two folders) is one run, not two.
    records = records.drop_duplicates(subset=["system", *MATCH, "run_id", "repeat", "created_at", "median_s"])
    groups = records.groupby(["system", *MATCH], sort=False, dropna=False)
    return pd.DataFrame([_pool_group(g) for _, g in groups]).reset_index(drop=True)


def _pool_group(g: pd.DataFrame) -> dict:
    """The runs of one group as one row. A run is a distinct run_id (its records' samples together);
    a record without a run_id is a run of its own. The step time is the median of the runs' medians
    (ppharness.core.stats.center: every run weighs the same); mfu and the like are medians over runs. The
    newest record describes the row (instance, price, tokens per step), and an older run with other
    tokens per step (another seq_len under the same batch) measured another workload: left out."""
    row = g.iloc[-1].to_dict()
    g = g[np.isclose(g["work_per_step"].astype(float), row["work_per_step"])]
    # A repetition of `ppbench run --repeat N` is a replicate of its own (ppharness/run/runner.py).
    ids = [f"{r}#{rep}" if r and rep > 1 else r for r, rep in zip(g["run_id"], g["repeat"], strict=True)]
    key = np.array(["id:" + r if r else f"record:{i}" for i, r in zip(g.index, ids, strict=True)], object)
    samples, medians, created = list(g["samples"]), g["median_s"].to_numpy(), g["created_at"].to_numpy()
    values = {name: g[name].to_numpy(dtype=float) for name in POOLED}
    runs, per_run, times = [], {name: [] for name in POOLED}, []
    for run in dict.fromkeys(key):  # each run once, in order of first appearance
        at = np.flatnonzero(key == run)
        runs.append(np.concatenate([_run_samples(samples[i], medians[i]) for i in at]))
        times.append(created[at[0]])  # when the run measured this case (its first record's created_at)
        for name in POOLED:
            per_run[name].append(_nanmedian(values[name][at]))
    row.update({name: pd.Series(v, dtype=float).median() for name, v in per_run.items()})
    row.update(run_samples=runs, runs=len(runs), median_s=stats.center(runs), run_times=times)
    row["flags"] = list(dict.fromkeys(c for codes in g["flags"] for c in codes))  # every pooled record's
    row["run_ids"] = [k[3:] for k in dict.fromkeys(key) if k.startswith("id:")]
    return row


def _nanmedian(values: np.ndarray) -> float:
    """The median of the values present (pandas' Series.median): NaN when none is."""
    present = values[~np.isnan(values)]
    return float(np.median(present)) if present.size else math.nan


def ratio_ci(
    num_samples: np.ndarray,
    den_samples: np.ndarray,
    *,
    n_resamples: int = N_RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Speed ratio median(den)/median(num) of one run a side, with a percentile bootstrap CI.

    A run with step time t has speed 1/t, so "num is this many times faster than den" is
    median(t_den) / median(t_num). Both sides are resampled independently (the runs are unpaired).
    Multiply the result by a positive constant (tokens per step, price) to get throughput or
    tokens-per-dollar ratios; the CI scales with it. Returns (point, lo, hi); lo/hi are NaN when a
    side has fewer than MIN_SAMPLES_FOR_CI samples. Several runs a side: `ppharness.core.stats.ratio_ci`.
    """
    return stats.ratio_ci([num_samples], [den_samples], n_resamples=n_resamples, confidence=confidence, seed=seed)


def row_ratios(sub: pd.Series, base: pd.Series, seed: int = 0) -> dict[str, float]:
    """Throughput and tokens-per-dollar ratios (sub / base) with CIs for two prepared rows; the CI
    resamples each side's runs, then the step times within them (ppharness.core.stats)."""
    point, lo, hi = stats.ratio_ci(sub["run_samples"], base["run_samples"], seed=seed)
    work = sub["work_per_step"] / base["work_per_step"]
    out = {"speed_ratio": point * work, "speed_lo": lo * work, "speed_hi": hi * work}
    price = base["usd_per_hour_eff"] / sub["usd_per_hour_eff"]  # NaN when either side is unpriced
    out.update(value_ratio=out["speed_ratio"] * price, value_lo=out["speed_lo"] * price)
    out["value_hi"] = out["speed_hi"] * price
    return out


def resolve_baseline(baseline: str, systems: list[str]) -> str:
    """A baseline given as a full system label or any unambiguous part of one (e.g. an instance)."""
    if baseline in systems:
        return baseline
    hits = [s for s in systems if baseline in s.split("/")] or [s for s in systems if s.startswith(baseline)]
    if len(hits) == 1:
        return hits[0]
    listing = ", ".join(systems) if systems else "(none)"
    if hits:
        raise BenchError(f"baseline {baseline!r} matches several systems: {', '.join(hits)}; name one of them")
    raise BenchError(f"unknown baseline {baseline!r}; systems in these results: {listing}")


@dataclass
class Comparison:
    """The comparison tables, as numbers (rendering lives in ppharness.present.report)."""

    table: pd.DataFrame  # one row per system x workload x batch, ratios vs the baseline's same batch
    best: pd.DataFrame  # each system's best batch by tokens per dollar, ratios vs the baseline's best
    excluded: pd.DataFrame
    baseline: str | None
    systems: list[str]
    latest: bool = False  # rows hold each system's newest run only, not every run pooled
    # Timed kernels (scenario "kernel:..."): no tokens and no price per token, so their own table
    # (KERNEL_COLUMNS), one row per system x kernel x variant x shape, speed vs the baseline's.
    kernels: pd.DataFrame = field(default_factory=pd.DataFrame)


COLUMNS = [
    "system",
    *MATCH,
    "runs",
    "tokens_per_s",
    "usd_per_mtok",
    "tokens_per_usd",
    "mfu",
    "ceiling_fraction",
    *SERVING,
    "run_ids",
    "flags",  # the pooled records' warning codes (ppharness.record.flags)
    "excluded",  # records of this system and workload left out (INVALID or failed)
]
# The kernel table's columns: what ran (kernel, variant, shape), its step time, what it achieved
# (TFLOP/s for compute-bound shapes, GB/s for memory-bound ones) and the fraction of the device's
# measured ceiling for its bound.
KERNEL_COLUMNS = [
    "system",
    "preset",
    "kernel",
    "variant",
    "shape",
    "dtype",
    "batch",
    "runs",
    "median_s",
    "bound",
    "achieved_tflops",
    "achieved_gbps",
    "ceiling_fraction",
    "run_ids",
    "flags",  # the pooled records' warning codes (ppharness.record.flags)
    "excluded",  # records of this system and workload left out (INVALID or failed)
]
# within_run_ci: the ratio has a CI and a side has one run, so the CI says nothing of run-to-run spread.
RATIOS = ["speed_ratio", "speed_lo", "speed_hi", "value_ratio", "value_lo", "value_hi", "within_run_ci"]
_INTERNAL = ["run_samples", "median_s", "work_per_step", "usd_per_hour_eff"]


def _with_ratios(
    rows: pd.DataFrame,
    baseline: str | None,
    keys: list[str],
    seed: int,
    columns: list[str] = COLUMNS,
    done: dict | None = None,
) -> pd.DataFrame:
    """`rows[columns]` with ratios vs the baseline's row of the same `keys`. `done` keeps each
    pair's ratios for the next table (a best-batch row is usually a matched row too, and the
    bootstrap gives the same figures for the same pair and seed)."""
    table = rows[list(dict.fromkeys([*columns, *MATCH, *_INTERNAL]))].copy()
    for name in RATIOS:
        table[name] = math.nan
    table["within_run_ci"] = False
    if baseline is None:
        return table
    done = {} if done is None else done
    base = rows[rows["system"] == baseline].set_index(keys)
    for i, row in table.iterrows():
        key = tuple(row[k] for k in keys)
        if row["system"] == baseline:  # the baseline against itself: exactly 1, no interval
            table.loc[i, ["speed_ratio", "value_ratio"]] = 1.0
        elif key in base.index:
            other = base.loc[[key]].iloc[0]
            # The pair of rows, whichever table asks: this row's case, then the baseline row's.
            pair = (row["system"], *(row[k] for k in MATCH), *(row[k] if k in keys else other[k] for k in MATCH))
            if pair not in done:
                done[pair] = row_ratios(row, other, seed=seed)
            for name, value in done[pair].items():
                table.at[i, name] = value
            single = min(row["runs"], other["runs"]) == 1
            table.at[i, "within_run_ci"] = bool(single and math.isfinite(table.at[i, "speed_lo"]))
    return table


def best_batches(rows: pd.DataFrame) -> pd.DataFrame:
    """Per system and workload, the batch with the most tokens per dollar (tokens/s when unpriced)."""
    if rows.empty:
        return rows
    score = rows["tokens_per_usd"].where(rows["tokens_per_usd"].notna(), rows["tokens_per_s"])
    score = score.fillna(1 / rows["median_s"])  # kernels: fastest step
    ranked = rows.assign(_score=score).sort_values("_score", ascending=False, kind="stable")
    return ranked.drop_duplicates(subset=["system", *WORKLOAD]).drop(columns="_score")


def compare(df: pd.DataFrame, baseline: str | None = None, seed: int = 0, latest: bool = False) -> Comparison:
    """Build the comparison from loaded records; `baseline` names a system (see resolve_baseline);
    `latest` keeps each system's newest run per workload instead of pooling every run."""
    rows = prepare(df, latest=latest)
    usable_systems = sorted(rows.usable["system"].unique())
    chosen = resolve_baseline(baseline, usable_systems) if baseline is not None else None
    excluded = rows.excluded[["system", *MATCH, "excluded_reason"]].reset_index(drop=True)
    kern = rows.usable["scenario"].str.startswith("kernel:") if not rows.usable.empty else None
    kernel_rows = rows.usable[kern] if kern is not None else rows.usable
    workload_rows = rows.usable[~kern] if kern is not None else rows.usable
    kernels = _kernel_table(kernel_rows, chosen, seed)
    if workload_rows.empty:
        empty = pd.DataFrame(columns=[*COLUMNS, *RATIOS])
        return Comparison(empty, empty.copy(), excluded, chosen, usable_systems, latest, kernels)
    order = ["system", *MATCH]
    done: dict = {}  # ratios per pair, shared by the matched and the best-batch table
    table = _with_ratios(workload_rows, chosen, MATCH, seed, done=done).sort_values(order, kind="stable")
    best = _with_ratios(best_batches(workload_rows), chosen, WORKLOAD, seed, done=done)
    best = best.sort_values(order, kind="stable")
    return Comparison(
        table=table.drop(columns=_INTERNAL).reset_index(drop=True),
        best=best.drop(columns=_INTERNAL).reset_index(drop=True),
        excluded=excluded,
        baseline=chosen,
        systems=usable_systems,
        latest=latest,
        kernels=kernels,
    )


def _kernel_table(rows: pd.DataFrame, baseline: str | None, seed: int) -> pd.DataFrame:
    """One row per system x kernel x variant x shape (x dtype, preset, batch), speed vs the
    baseline's same kernel case (steps per second: kernels have no tokens)."""
    columns = [*KERNEL_COLUMNS, "speed_ratio", "speed_lo", "speed_hi", "within_run_ci"]
    if rows.empty:
        return pd.DataFrame(columns=columns)
    table = _with_ratios(rows, baseline, MATCH, seed, columns=KERNEL_COLUMNS)
    order = ["system", "preset", "kernel", "variant", "shape", "dtype", "batch"]
    return table.sort_values(order, kind="stable")[columns].reset_index(drop=True)
