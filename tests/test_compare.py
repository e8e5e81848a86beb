"""ppharness.judge.compare: derived figures, exclusions, bootstrap ratio CIs, baselines and best batches.

All records here are fixtures (tests/results_fixtures.py), loaded through ppharness.record.load.load.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from results_fixtures import frame, record
from scipy import stats

from ppharness.core import stats as bstats
from ppharness.errors import BenchError
from ppharness.judge import compare

EAGER = "c7a.large/cpu/-/none"
COMPILED = "c7a.large/cpu/-/default"


def test_prepare_derives_throughput_and_cost(tmp_path):
    df = frame(tmp_path, [record(step_s=0.02, batch=2, seq_len=32, usd_per_hour=0.5, share=0.5)])
    row = compare.prepare(df).usable.iloc[0]
    median = float(np.median(df["timing.samples_s"].iloc[0]))
    assert row["tokens_per_s"] == pytest.approx(64 / median)
    # $/1M tokens = usd_per_hour * share / (tokens_per_s * 3600) * 1e6
    assert row["usd_per_mtok"] == pytest.approx(0.5 * 0.5 / (64 / median * 3600) * 1e6)
    assert row["tokens_per_usd"] == pytest.approx(1e6 / row["usd_per_mtok"])
    assert row["system"] == EAGER


def test_prepare_excludes_bad_rows_with_reasons(tmp_path):
    recs = [
        record(seed=1),
        record(status="oom", seed=2, batch=64),
        record(valid=False, reasons=["compiled inside the measured window"], seed=3, batch=4),
        record(seed=4, batch=8),
    ]
    recs[3]["timing"]["samples_s"] = ["fast", "faster"]
    recs[3]["timing"]["median_s"] = -1
    rows = compare.prepare(frame(tmp_path, recs))
    assert len(rows.usable) == 1
    reasons = dict(zip(rows.excluded["batch"], rows.excluded["excluded_reason"], strict=True))
    assert reasons[64] == "status oom: oom happened"
    assert reasons[4] == "INVALID: compiled inside the measured window"
    assert reasons[8].startswith("no usable timing")


def test_nonsense_numbers_are_excluded_or_unpriced(tmp_path):
    recs = [record(share=0.0, seed=1), record(usd_per_hour=-3.0, batch=4, seed=2), record(batch=8, seed=3)]
    recs += [record(batch=16, seed=4)]
    recs[2]["timing"]["samples_s"], recs[2]["timing"]["median_s"] = [], float("inf")
    recs[3]["metrics"]["tokens_per_step"], recs[3]["metrics"]["tokens_per_s"] = -5, None
    rows = compare.prepare(frame(tmp_path, recs))
    assert rows.usable["usd_per_mtok"].isna().all()  # a zero share or negative price is no price
    reasons = dict(zip(rows.excluded["batch"], rows.excluded["excluded_reason"], strict=True))
    assert reasons[8].startswith("no usable timing") and reasons[16].startswith("no usable metrics.tokens_per_step")


def test_prepare_rejects_frames_that_are_not_results():
    with pytest.raises(BenchError, match="not ppbench result records"):
        compare.prepare(pd.DataFrame({"x": [1]}))


def test_ratio_ci_point_is_ratio_of_medians_and_ci_brackets_it():
    rng = np.random.default_rng(0)
    fast = 0.010 * (1 + 0.05 * rng.standard_normal(40))
    slow = 0.025 * (1 + 0.05 * rng.standard_normal(40))
    point, lo, hi = compare.ratio_ci(fast, slow)
    assert point == pytest.approx(np.median(slow) / np.median(fast))
    assert lo < point < hi
    assert compare.ratio_ci(fast, slow) == (point, lo, hi)  # seeded: reproducible
    # Cross-check against scipy's percentile bootstrap of the same statistic.
    ref = stats.bootstrap(
        (fast, slow),
        lambda a, b, axis: np.median(b, axis=axis) / np.median(a, axis=axis),
        method="percentile",
        n_resamples=4000,
        rng=np.random.default_rng(1),
    ).confidence_interval
    assert lo == pytest.approx(ref.low, rel=0.02) and hi == pytest.approx(ref.high, rel=0.02)


def test_ratio_ci_needs_three_samples_a_side():
    point, lo, hi = compare.ratio_ci(np.array([1.0, 1.1]), np.array([2.0, 2.1, 2.2]))
    assert point == pytest.approx(2.1 / 1.05)
    assert math.isnan(lo) and math.isnan(hi)


def _two_systems(tmp_path, **compiled):
    recs = []
    for batch in (1, 2, 4):
        recs.append(record(batch=batch, step_s=0.010 * batch, seed=batch))
        recs.append(record(batch=batch, compile="default", step_s=0.005 * batch, seed=10 + batch, **compiled))
    return frame(tmp_path, recs)


def test_compare_ratios_against_the_baseline(tmp_path):
    result = compare.compare(_two_systems(tmp_path, usd_per_hour=0.2), baseline=EAGER)
    assert result.baseline == EAGER and result.systems == [COMPILED, EAGER]
    sub = result.table[result.table["system"] == COMPILED]
    assert len(sub) == 3
    for _, row in sub.iterrows():
        assert row["speed_ratio"] == pytest.approx(2.0, rel=0.05)
        assert row["speed_lo"] < row["speed_ratio"] < row["speed_hi"]
        # twice as fast at twice the price: the same tokens per dollar
        assert row["value_ratio"] == pytest.approx(row["speed_ratio"] * 0.10264 / 0.2)
    base = result.table[result.table["system"] == EAGER]
    assert base["speed_ratio"].tolist() == [1.0, 1.0, 1.0] and base["speed_lo"].isna().all()


def test_baseline_may_be_named_by_an_unambiguous_part(tmp_path):
    df = _two_systems(tmp_path)
    assert compare.compare(df, baseline="default").baseline == COMPILED
    with pytest.raises(BenchError, match="matches several systems"):
        compare.compare(df, baseline="c7a.large")


def test_unknown_baseline_lists_the_systems_present(tmp_path):
    with pytest.raises(BenchError, match=r"unknown baseline 'p4d.24xlarge'; systems in these results: .*none"):
        compare.compare(_two_systems(tmp_path), baseline="p4d.24xlarge")


def test_best_batch_is_chosen_by_tokens_per_dollar(tmp_path):
    recs = [record(batch=b, step_s=s, seed=b) for b, s in ((1, 0.01), (2, 0.015), (4, 0.05))]
    best = compare.compare(frame(tmp_path, recs)).best
    assert best["batch"].tolist() == [2]  # 2 tokens / 0.015 s beats 1 / 0.01 and 4 / 0.05


def test_best_vs_best_may_pair_different_batches(tmp_path):
    recs = [record(batch=1, step_s=0.01, seed=1), record(batch=2, step_s=0.05, seed=2)]
    recs += [record(batch=1, compile="default", step_s=0.02, seed=3)]
    recs += [record(batch=2, compile="default", step_s=0.01, seed=4)]
    best = compare.compare(frame(tmp_path, recs), baseline=EAGER).best.set_index("system")
    assert best.loc[COMPILED, "batch"] == 2 and best.loc[EAGER, "batch"] == 1
    # (2*32 tokens / 0.01 s) / (1*32 / 0.01 s) = 2x
    assert best.loc[COMPILED, "speed_ratio"] == pytest.approx(2.0, rel=0.05)


def test_with_latest_a_rerun_supersedes_the_older_record(tmp_path):
    old = record(step_s=0.05, created_at="2026-01-01T00:00:00+00:00", seed=1)
    new = record(step_s=0.01, created_at="2026-02-01T00:00:00+00:00", seed=2)
    table = compare.compare(frame(tmp_path, [new, old]), latest=True).table
    assert len(table) == 1 and table["tokens_per_s"].iloc[0] == pytest.approx(64 / 0.01, rel=0.05)
    assert table["runs"].iloc[0] == 1 and table["run_ids"].iloc[0] == ["run-2"]


def test_unpriced_rows_compare_on_speed_only(tmp_path):
    recs = [record(instance=None, hostname="laptop", usd_per_hour=None, seed=1)]
    recs += [record(instance=None, hostname="laptop", usd_per_hour=None, compile="default", step_s=0.005, seed=2)]
    result = compare.compare(frame(tmp_path, recs), baseline="laptop/cpu/-/none")
    row = result.table.set_index("system").loc["laptop/cpu/-/default"]
    assert row["speed_ratio"] == pytest.approx(2.0, rel=0.05)
    assert math.isnan(row["value_ratio"]) and math.isnan(row["usd_per_mtok"])


def test_kernel_rows_compare_steps_per_second(tmp_path):
    recs = [
        record(scenario="kernel:gemm", seed=1),
        record(scenario="kernel:gemm", compile="default", step_s=0.004, seed=2),
    ]
    recs += [record(scenario="kernel:gemm", seed=3), record(scenario="kernel:gemm", compile="default", seed=4)]
    for r, (variant, shape) in zip(
        recs, [("aten", "qkv"), ("aten", "qkv"), ("aten", "mlp"), ("aten", "mlp")], strict=True
    ):
        r["metrics"] = {"achieved_tflops": 1.0}
        r["workload"].update(variant=variant, shape=shape)
    recs[0]["metrics"]["bound"], recs[2]["metrics"] = "compute", {"achieved_gbps": 50.0, "bound": "memory"}
    recs.append(record(scenario="train", seed=5))  # a workload row beside them
    result = compare.compare(frame(tmp_path, recs), baseline=EAGER)
    # Kernels have their own table, never blank-priced rows of the workload tables.
    assert list(result.table["scenario"]) == ["train"] and list(result.best["scenario"]) == ["train"]
    kernels = result.kernels
    assert list(kernels.columns) == [*compare.KERNEL_COLUMNS, "speed_ratio", "speed_lo", "speed_hi", "within_run_ci"]
    assert len(kernels) == 4 and set(kernels["kernel"]) == {"gemm"} and set(kernels["variant"]) == {"aten"}
    ratios = kernels.set_index(["system", "shape"])["speed_ratio"]
    assert ratios[COMPILED, "qkv"] == pytest.approx(2.5, rel=0.05)
    assert ratios[COMPILED, "mlp"] == pytest.approx(1.0, rel=0.05)  # shapes kept apart
    eager = kernels.set_index(["system", "shape"]).loc[EAGER]
    assert eager.loc["qkv", "bound"] == "compute" and eager.loc["qkv", "achieved_tflops"] == 1.0
    assert eager.loc["mlp", "bound"] == "memory" and eager.loc["mlp", "achieved_gbps"] == 50.0
    assert math.isnan(eager.loc["qkv", "ceiling_fraction"])  # none recorded
    only_workloads = compare.compare(frame(tmp_path, recs[-1:], "w.jsonl"), baseline=EAGER)
    assert only_workloads.kernels.empty and list(only_workloads.kernels.columns) == list(kernels.columns)


def test_the_best_batch_table_reuses_the_matched_tables_bootstraps(tmp_path, monkeypatch):
    """One bootstrap per pair of rows: the best-batch table's pairs are matched-table pairs here."""
    recs = [_run(0.010, "a"), _run(0.011, "b"), _run(0.005, "c", "default"), _run(0.006, "d", "default")]
    calls = []
    real = compare.row_ratios
    monkeypatch.setattr(compare, "row_ratios", lambda *a, **k: calls.append(1) or real(*a, **k))
    result = compare.compare(frame(tmp_path, recs), baseline=EAGER)
    assert len(calls) == 1
    row = result.best.set_index("system").loc[COMPILED]
    assert row["speed_ratio"] == result.table.set_index("system").loc[COMPILED, "speed_ratio"]
    assert math.isfinite(row["speed_lo"])


def test_empty_results_give_empty_tables():
    result = compare.compare(pd.DataFrame())
    assert result.table.empty and result.best.empty and result.systems == []


def test_multi_device_runs_are_their_own_system(tmp_path):
    """An 8-device record must not replace the 1-device record of the same case."""
    one = record("p4d.24xlarge", backend="cuda", accelerator="a100-sxm4-40gb")
    eight = record("p4d.24xlarge", backend="cuda", accelerator="a100-sxm4-40gb")
    eight["device"]["devices_used"] = 8
    labels = {compare.system_label(row) for _, row in frame(tmp_path, [one, eight]).iterrows()}
    assert labels == {"p4d.24xlarge/cuda/a100-sxm4-40gb/none", "p4d.24xlarge/cuda/a100-sxm4-40gb/none/x8"}


# ------------------------------------------------------------------ repeated runs as replicates


def _run(step_s: float, run_id: object, compile: str = "none", n: int = 20, **kw) -> dict:
    """One run's record of the tiny train case; `run_id` is written as given (even if malformed)."""
    rec = record(step_s=step_s, compile=compile, n=n, seed=int(step_s * 1e6) + 7 * n + (compile != "none"), **kw)
    rec["run_id"] = run_id
    return rec


def _old_ratio_ci(num, den, n_resamples=2000, confidence=0.95, seed=0):
    """The single-run bootstrap compare.ratio_ci had before runs were pooled: the plain reference."""
    point = float(np.median(den) / np.median(num))
    if min(num.size, den.size) < 3:
        return point, math.nan, math.nan
    rng, out, chunk = np.random.default_rng(seed), [], max(1, min(500, 2_000_000 // max(num.size, den.size)))
    for start in range(0, n_resamples, chunk):
        k = min(chunk, n_resamples - start)
        a = np.median(num[rng.integers(0, num.size, (k, num.size))], axis=1)
        b = np.median(den[rng.integers(0, den.size, (k, den.size))], axis=1)
        out.append(b / a)
    lo, hi = np.quantile(np.concatenate(out), [(1 - confidence) / 2, (1 + confidence) / 2])
    return point, float(lo), float(hi)


def test_runs_of_one_case_pool_into_one_row_weighted_equally(tmp_path):
    recs = [
        _run(0.010, "a", n=50, mfu=0.1, created_at="2026-01-01T00:00:00+00:00"),
        _run(0.020, "b", n=5, mfu=0.2, created_at="2026-01-03T00:00:00+00:00"),
        _run(0.030, "c", n=5, mfu=None, created_at="2026-01-02T00:00:00+00:00"),
    ]
    row = compare.prepare(frame(tmp_path, recs)).usable.iloc[0]
    medians = [float(np.median(r["timing"]["samples_s"])) for r in recs]
    # The median of the run medians (0.02), not of all 60 samples pooled (0.01: the long run's).
    assert row["runs"] == 3 and row["median_s"] == pytest.approx(np.median(medians))
    assert row["tokens_per_s"] == pytest.approx(64 / np.median(medians))
    assert row["run_ids"] == ["a", "c", "b"] and row["created_at"] == "2026-01-03T00:00:00+00:00"
    assert row["mfu"] == pytest.approx(0.15)  # median over the runs that have one
    two = compare.prepare(frame(tmp_path, recs[:2], "two.jsonl")).usable.iloc[0]
    assert two["runs"] == 2 and two["median_s"] == pytest.approx((medians[0] + medians[1]) / 2)


def test_disagreeing_runs_widen_the_ci_to_cover_both(tmp_path):
    eager = [_run(0.010, "r1", spread=0.01), _run(0.013, "r2", spread=0.01)]
    compiled = [_run(0.005, "r1", "default", spread=0.01), _run(0.0075, "r2", "default", spread=0.01)]
    pooled = compare.compare(frame(tmp_path, eager + compiled), baseline=EAGER).table.set_index("system")
    row = pooled.loc[COMPILED]
    assert row["runs"] == 2 and not row["within_run_ci"]
    run_ratios = [float(np.median(e["timing"]["samples_s"]) / np.median(c["timing"]["samples_s"])) for e, c in
                  zip(eager, compiled, strict=True)]  # fmt: skip
    assert row["speed_lo"] < min(run_ratios) and max(run_ratios) < row["speed_hi"]  # 1.73x and 2.0x
    one = compare.compare(frame(tmp_path, [eager[0], compiled[0]], "one.jsonl"), baseline=EAGER).table
    one = one.set_index("system").loc[COMPILED]
    assert row["speed_hi"] - row["speed_lo"] > 5 * (one["speed_hi"] - one["speed_lo"])
    assert one["within_run_ci"]


def test_one_run_a_side_is_the_old_single_run_bootstrap(tmp_path):
    recs = [_run(0.010, "e", spread=0.05), _run(0.006, "c", "default", spread=0.05)]
    row = compare.compare(frame(tmp_path, recs), baseline=EAGER).table.set_index("system").loc[COMPILED]
    sub, base = (np.asarray(r["timing"]["samples_s"]) for r in (recs[1], recs[0]))
    assert (row["speed_ratio"], row["speed_lo"], row["speed_hi"]) == _old_ratio_ci(sub, base)
    assert compare.ratio_ci(sub, base, seed=3) == _old_ratio_ci(sub, base, seed=3)
    assert row["runs"] == 1 and row["within_run_ci"]


def test_latest_keeps_the_newest_run_as_before(tmp_path):
    old = [_run(0.020, "old", created_at="2026-01-01T00:00:00+00:00")]
    old += [_run(0.020, "old", "default", created_at="2026-01-01T00:00:00+00:00")]
    new = [_run(0.010, "new", created_at="2026-02-01T00:00:00+00:00")]
    new += [_run(0.004, "new", "default", created_at="2026-02-01T00:00:00+00:00")]
    latest = compare.compare(frame(tmp_path, old + new), baseline=EAGER, latest=True)
    alone = compare.compare(frame(tmp_path, new, "new.jsonl"), baseline=EAGER)
    assert latest.latest and not alone.latest
    pd.testing.assert_frame_equal(latest.table, alone.table)
    pooled = compare.compare(frame(tmp_path, old + new, "both.jsonl"), baseline=EAGER).table
    assert set(pooled["runs"]) == {2}


def test_two_runs_give_a_ci_however_few_samples_each_has():
    point, lo, hi = bstats.ratio_ci([np.array([1.0]), np.array([1.2])], [np.array([2.0]), np.array([2.2])])
    # Each extreme (both runs drawn from one end on both sides) has probability 1/16 > 2.5%.
    assert point == pytest.approx(2.1 / 1.1) and lo == pytest.approx(2.0 / 1.2) and hi == pytest.approx(2.2)
    _, lo, hi = bstats.ratio_ci([np.array([1.0, 1.1])], [np.array([2.0]), np.array([2.1])])
    assert math.isnan(lo) and math.isnan(hi)  # one run of two samples on a side: still no CI


@pytest.mark.parametrize("run_ids", [[None, None], [7, 7.5], [float("nan"), "x"], [[1], {"a": 1}], ["", None]])
def test_malformed_run_ids_do_not_crash(tmp_path, run_ids):
    recs = [_run(0.010 + i / 1000, rid) for i, rid in enumerate(run_ids)]
    recs += [_run(0.005, "c", "default")]
    table = compare.compare(frame(tmp_path, recs), baseline=EAGER).table.set_index("system")
    assert table.loc[EAGER, "runs"] == 2  # distinct ids, or no usable id: each record its own run
    assert all(isinstance(r, str) for r in table.loc[EAGER, "run_ids"])
    assert math.isfinite(table.loc[COMPILED, "speed_lo"])


def _plain_resample_centers(runs, k, rng):
    """ppharness.core.stats.resample_centers as first written (np.median of the drawn step times): the
    reference the rank-based medians must reproduce exactly."""
    if len(runs) == 1:
        s = runs[0]
        return np.median(s[rng.integers(0, s.size, (k, s.size))], axis=1)
    pick = rng.integers(0, len(runs), (k, len(runs)))
    medians = np.empty(pick.shape)
    for r, s in enumerate(runs):
        slots = pick == r
        n = int(slots.sum())
        if n:
            medians[slots] = np.median(s[rng.integers(0, s.size, (n, s.size))], axis=1)
    return np.median(medians, axis=1)


@pytest.mark.parametrize("sizes", [[1], [2], [7], [40], [3, 4], [13, 13, 14], [1, 200, 2], [5] * 30])
def test_rank_based_bootstrap_draws_exactly_what_np_median_draws(sizes):
    """The faster within-run medians change no figure: same draws, same medians, bit for bit,
    with ties (times rounded to a few values) and odd and even run sizes."""
    gen = np.random.default_rng(len(sizes) * 100 + sum(sizes))
    runs = [np.round(gen.uniform(1.0, 1.1, n), 2) for n in sizes]
    fast = bstats.resample_centers(runs, 64, np.random.default_rng(3))
    plain = _plain_resample_centers(runs, 64, np.random.default_rng(3))
    assert np.array_equal(fast, plain)


def test_ratio_ci_is_unchanged_by_the_rank_based_medians(monkeypatch):
    gen = np.random.default_rng(11)
    num = [gen.uniform(1.0, 1.2, n) for n in (12, 15, 9)]
    den = [gen.uniform(2.0, 2.4, 20)]
    fast = bstats.ratio_ci(num, den, seed=5)
    monkeypatch.setattr(
        bstats, "resample_centers", lambda runs, k, rng, ranked=None: _plain_resample_centers(runs, k, rng)
    )
    assert fast == bstats.ratio_ci(num, den, seed=5)


def test_prefill_records_from_before_the_last_position_head_are_kept_apart(tmp_path):
    """Prefill once computed vocabulary logits at every prompt position; those records timed more
    work and must not pool with today's last-position prefill (issue 14, item 1)."""
    old = record(scenario="prefill", seed=1)
    del old["workload"]["prefill_logits"]
    rows = compare.prepare(frame(tmp_path, [old, record(scenario="prefill", seed=2)])).usable
    assert sorted(rows["scenario"]) == ["prefill", "prefill (all logits)"]
