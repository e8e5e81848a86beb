"""`ppbench run --repeat N`: every case measured N times, interleaved across the run's cases
(A B A B), each repetition a replicate of compare's pooling; --resume measures the missing ones."""

from __future__ import annotations

from conftest import SMOKE
from typer.testing import CliRunner

from ppharness.cli import app
from ppharness.judge import compare
from ppharness.record.load import load
from ppharness.run import config, runner

FAST = ["timing.min_iters=2", "timing.min_seconds=0", "timing.warmup=1", "check=false"]
TWO = "scenarios={train: {batch: [1, 2], seq_len: 8}}"


def _run(out, repeat, resume=False, *overrides):
    seen = []
    cfg = config.load(SMOKE, [*FAST, TWO, *overrides])
    runner.run(cfg, out, lambda label, rec: seen.append((label, rec["status"])) if rec else None, resume, repeat)
    return seen


def test_repetitions_interleave_across_cases_and_pool_as_replicates(tmp_path):
    seen = _run(tmp_path, 3)
    labels = [label for label, _ in seen]
    assert [label.rsplit(" ", 1)[1] for label in labels] == ["[1/3]", "[1/3]", "[2/3]", "[2/3]", "[3/3]", "[3/3]"]
    assert labels[0] != labels[1] and labels[0].split(" [")[0] == labels[2].split(" [")[0]  # A B A B A B
    df = load([tmp_path])
    assert df["run_id"].nunique() == 1 and list(df["repeat.index"]) == [1, 1, 2, 2, 3, 3]
    assert list(df["workload.batch"]) == [1, 2, 1, 2, 1, 2] and set(df["repeat.of"]) == {3}
    rows = compare.prepare(df).usable
    assert list(rows["runs"]) == [3, 3]  # one run, three replicates per case
    # --latest keeps the newest run, and with it all of its repetitions
    assert list(compare.prepare(df, latest=True).usable["runs"]) == [3, 3]


def test_resume_measures_only_the_missing_repetitions(tmp_path):
    _run(tmp_path, 1)
    seen = _run(tmp_path, 3, True)
    assert [s for _, s in seen] == ["skipped", "skipped", "ok", "ok", "ok", "ok"]
    assert [label.rsplit(" ", 1)[1] for label, s in seen if s == "ok"] == ["[2/3]", "[2/3]", "[3/3]", "[3/3]"]
    assert [s for _, s in _run(tmp_path, 3, True)] == ["skipped"] * 6  # all three held: nothing to do
    df = load([tmp_path])
    assert len(df) == 6 and df.groupby("workload.batch").size().tolist() == [3, 3]
    # two runs: the first's one record and the second's two repetitions are three replicates a case
    assert list(compare.prepare(df).usable["runs"]) == [3, 3]
    assert list(compare.prepare(df, latest=True).usable["runs"]) == [2, 2]  # the newest run's repetitions


def test_cli_repeat(tmp_path):
    args = ["run", str(SMOKE), "--out", str(tmp_path), "--repeat", "2", "--set", TWO]
    res = CliRunner().invoke(app, [*args, *(x for f in FAST for x in ("--set", f))])
    assert res.exit_code == 0, res.output
    assert sorted(load([tmp_path])["repeat.index"]) == [1, 1, 2, 2]
    bad = CliRunner().invoke(app, ["run", str(SMOKE), "--repeat", "0"])
    assert bad.exit_code == 2
