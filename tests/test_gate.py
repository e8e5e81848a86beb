"""The regression gate (`ppbench compare NEW --against BASE --fail-if-slower PCT`,
ppharness/judge/gate.py): verdicts, pairing in time, the paired bootstrap, the exit codes, the
markdown summary, a git revision as BASE, and two end-to-end runs of the real machinery on a busy
host: the same code twice passes; a step made 30 ms slower fails."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import SMOKE
from results_fixtures import record, write
from typer.testing import CliRunner

from ppharness.backends import REGISTRY
from ppharness.backends.cpu import CPUBackend
from ppharness.cli import app
from ppharness.core import stats
from ppharness.errors import BenchError
from ppharness.judge import gate
from ppharness.record.load import load

SYSTEM = "c7a.large/cpu/-/none"


def _runs(side: str, times: list[str], step_s: float, scenario: str = "train", seed0: int = 0) -> list[dict]:
    """One record a run of one case, each run its own run_id and created_at."""
    return [
        {**record(scenario=scenario, step_s=step_s, seed=seed0 + i, created_at=t), "run_id": f"{side}-{scenario}-{i}"}
        for i, t in enumerate(times)
    ]


def _at(*minutes: int) -> list[str]:
    return [f"2026-01-01T00:{m:02d}:00+00:00" for m in minutes]


BASE_AT, NEW_AT = _at(0, 3, 4, 7, 8, 11), _at(1, 2, 5, 6, 9, 10)  # six pairs in turn: A B, B A, ...


def test_verdicts_against_the_threshold():
    assert gate.verdict(0.12, 0.30, 0.10) == "slower"  # the whole CI above +10%
    assert gate.verdict(0.05, 0.30, 0.10) == "inconclusive"  # straddles +10%
    assert gate.verdict(-0.02, 0.08, 0.10) == "within"
    assert gate.verdict(0.02, 0.10, 0.10) == "within"  # at the threshold: not more than it
    assert gate.verdict(-0.30, -0.01, 0.10) == "faster"
    assert gate.verdict(float("nan"), float("nan"), 0.10) == "inconclusive"  # no CI: never fails


@pytest.mark.parametrize(("text", "fraction"), [("10", 0.10), ("10%", 0.10), (" 2.5 % ", 0.025), ("0", 0.0)])
def test_the_threshold_is_a_percentage(text, fraction):
    assert gate.parse_threshold(text) == pytest.approx(fraction)


@pytest.mark.parametrize("text", ["-5", "x", "nan", "inf", "", "%"])
def test_a_bad_threshold_is_bad_input(text):
    with pytest.raises(BenchError, match="--fail-if-slower takes a percentage"):
        gate.parse_threshold(text)


def test_runs_pair_only_when_measured_in_turn():
    assert gate.pairing(_at(0, 2, 4), _at(1, 3, 5)) == (True, "3 pairs, measured in turn")
    assert gate.pairing(_at(0, 3, 4), _at(1, 2, 5))[0]  # A B, B A, A B: counterbalanced, still in turn
    paired, why = gate.pairing(_at(0, 1, 2), _at(3, 4, 5))  # all of BASE, then all of NEW
    assert not paired and "not measured in turn" in why
    assert gate.pairing(_at(0, 2), _at(1, 3, 5)) == (False, "unpaired: 2 base run(s), 3 new")
    assert not gate.pairing(_at(0), _at(1))[0]
    assert not gate.pairing(["", "2026-01-01T00:02:00+00:00"], _at(1, 3))[0]  # a run without a time


def test_the_paired_ci_cancels_drift_that_the_unpaired_one_counts():
    """Four pairs on a host whose speed drifts 2x between pairs, the new side 10% slower in each
    pair: the paired CI is narrow around 1/1.1; the unpaired one spans the drift."""
    rng = np.random.default_rng(0)
    drift = [1.0, 2.0, 0.8, 1.5]
    base = [rng.normal(1e-3 * d, 1e-5, 200) for d in drift]
    new = [rng.normal(1.1e-3 * d, 1e-5, 200) for d in drift]
    point, lo, hi = stats.paired_ratio_ci(new, base)
    assert lo < 1 / 1.1 < hi and hi - lo < 0.02 and point == pytest.approx(1 / 1.1, rel=0.01)
    _, ulo, uhi = stats.ratio_ci(new, base)
    assert uhi - ulo > 0.5 and ulo < 1 / 1.1 < uhi
    assert stats.paired_ratio_ci(new, base, seed=3) == stats.paired_ratio_ci(new, base, seed=3)


def test_one_pair_is_the_within_run_bootstrap():
    num, den = np.array([2.0, 2.1, 1.9, 2.0]), np.array([1.0, 1.1, 0.9, 1.0])
    point, lo, hi = stats.paired_ratio_ci([num], [den])
    assert point == pytest.approx(0.5) and lo <= point <= hi
    assert np.isnan(stats.paired_ratio_ci([num[:2]], [den[:2]])[1])  # under MIN_SAMPLES_FOR_CI: no CI
    with pytest.raises(ValueError):
        stats.paired_ratio_ci([num], [den, den])


def test_the_gate_matches_cases_and_says_what_it_could_not_compare(tmp_path):
    base = _runs("b", BASE_AT, 0.010) + _runs("b", BASE_AT, 0.010, "prefill", 10)
    new = _runs("n", NEW_AT, 0.020) + _runs("n", NEW_AT, 0.0101, "prefill", 10)
    base += _runs("b", _at(12), 0.010, "decode", 20)  # measured in BASE only
    broken = {**record(scenario="decode", valid=False, reasons=["check failed"], created_at=_at(13)[0]), "run_id": "x"}
    b, n = write(tmp_path / "b.jsonl", base), write(tmp_path / "n.jsonl", [*new, broken])
    g = gate.evaluate(load([b]), load([n]), 0.10)
    by = {c.scenario: c for c in g.cases}
    train, prefill = by["train"], by["prefill"]
    assert train.verdict == "slower" and train.paired and train.change == pytest.approx(1.0, rel=0.05)
    assert train.lo > 0.10 and train.label == f"train b2 float32 tiny on {SYSTEM}"
    assert train.note == "runs agree: 6/6 pairs slower than +10% (p=0.016)"
    assert prefill.verdict == "within" and abs(prefill.change - 0.01) < 0.02
    assert g.failed and [c.scenario for c in g.slower] == ["train"]
    why = "no usable NEW record (1 excluded; INVALID: check failed)"
    assert g.not_compared == [(f"decode b2 float32 tiny on {SYSTEM}", why)]
    assert not gate.evaluate(load([b]), load([n]), 0.10, enforced=False).failed
    other = write(tmp_path / "o.jsonl", _runs("o", _at(1), 0.01, "x"))
    with pytest.raises(BenchError, match="nothing to compare"):
        gate.evaluate(load([b]), load([other]), 0.1)


def test_too_few_runs_cannot_fail_a_case(tmp_path):
    """Three pairs 3x slower: the bootstrap CI is far above +10%, but three pairs can show a
    slowdown at 95% confidence no better than p = 1/8 (a sign test): inconclusive, said why.
    Unpaired (all of BASE, then all of NEW), four runs a side can (a rank test, p = 1/70)."""
    b = write(tmp_path / "b.jsonl", _runs("b", BASE_AT[:3], 0.010))
    n = write(tmp_path / "n.jsonl", _runs("n", NEW_AT[:3], 0.030))
    (case,) = gate.evaluate(load([b]), load([n]), 0.10).cases
    assert case.verdict == "inconclusive" and case.lo > 0.10
    assert (
        case.note
        == "runs disagree: the CI says slower, but 3/3 pairs slower than +10% gives only p=0.125 "
        "(it takes 6 pairs at least)"
    )
    b = write(tmp_path / "b4.jsonl", _runs("b", _at(0, 1, 2, 3), 0.010))
    n = write(tmp_path / "n4.jsonl", _runs("n", _at(4, 5, 6, 7), 0.030))
    (case,) = gate.evaluate(load([b]), load([n]), 0.10).cases
    assert not case.paired and case.verdict == "slower" and case.note == "runs agree: runs ranked slower than +10% (p=0.014)"


def _gate_files(tmp_path, slow: float):
    b = write(tmp_path / "base" / "b.jsonl", _runs("b", BASE_AT, 0.010))
    n = write(tmp_path / "new" / "n.jsonl", _runs("n", NEW_AT, 0.010 * slow))
    return b.parent, n.parent


def test_cli_exit_codes_and_the_summary(tmp_path, monkeypatch):
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    base, new = _gate_files(tmp_path, 3.0)
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    args = ["compare", str(new), "--against", str(base), "--fail-if-slower", "10%", "--summary", str(summary)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == gate.GATE_FAILED == 10, res.output
    assert "FAILED (exit 10): 1 case(s) slower by more than 10%" in res.output
    assert f"train b2 float32 tiny on {SYSTEM}: step time +200" in res.output
    text = summary.read_text()
    assert text.startswith("earlier step\n## ppbench regression gate: FAILED")  # appended
    assert "| **SLOWER** | train b2 float32 tiny on c7a.large/cpu/-/none |" in text
    # the same, with no threshold: a report that never fails; into $GITHUB_STEP_SUMMARY
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(tmp_path / "gh.md"))
    res = CliRunner().invoke(app, ["compare", str(new), "--against", str(base)])
    assert res.exit_code == 0 and "report only" in res.output
    assert (tmp_path / "gh.md").read_text().startswith("## ppbench regression gate: report only")
    same_base, same_new = _gate_files(tmp_path / "same", 1.0)
    res = CliRunner().invoke(app, ["compare", str(same_new), "--against", str(same_base), "--fail-if-slower", "10"])
    assert res.exit_code == 0 and "passed: no case slower by more than 10%" in res.output


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--fail-if-slower", "10"], "--fail-if-slower and --summary need --against BASE"),
        (["--against", "BASE", "--fail-if-slower", "ten"], "--fail-if-slower takes a percentage"),
        (["--against", "BASE", "--baseline", "c7a.large"], "use one or the other"),
        (["--against", "no-such-thing"], "'no-such-thing' is neither a results file or folder nor a git revision"),
        (["--against", "BASE", "--summary", "TMP"], "a folder; name a file"),
        (["--against", "BASE", "--confidence", "1.5"], "confidence"),
    ],
)
def test_bad_gate_input_is_one_line_and_exit_2(tmp_path, extra, message):
    base, new = _gate_files(tmp_path, 1.0)
    extra = [str(base) if x == "BASE" else str(tmp_path) if x == "TMP" else x for x in extra]
    res = CliRunner().invoke(app, ["compare", str(new), *extra])
    assert res.exit_code == 2, res.output
    assert message in res.output


def _git(repo, *args):
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def test_base_from_a_git_revision_without_a_checkout(tmp_path, monkeypatch):
    """`--against REF` reads REF's results/ with git (`REF:PATH` another folder); the work tree,
    which holds other records by then, is left as it is."""
    repo = tmp_path / "repo"
    write(repo / "results" / "r.jsonl", _runs("b", BASE_AT, 0.010))
    _git(repo, "init", "-q")
    _git(repo, "add", "results")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "base")
    changed = write(repo / "results" / "r.jsonl", _runs("x", _at(0), 0.5))  # the work tree moved on
    new = write(tmp_path / "new" / "n.jsonl", _runs("n", NEW_AT, 0.030))
    monkeypatch.chdir(repo)
    for spec in ("HEAD", "HEAD:results"):
        args = ["compare", str(new.parent), "--against", spec, "--fail-if-slower", "10", "--wide"]  # cells on one line
        res = CliRunner().invoke(app, args)
        assert res.exit_code == gate.GATE_FAILED, res.output
        assert "6/6" in res.output and "6 pairs, measured in turn" in res.output  # BASE: the committed 6 runs
    assert len(load([changed])) == 1  # untouched
    res = CliRunner().invoke(app, ["compare", str(new.parent), "--against", "HEAD:nothing-here"])
    assert res.exit_code == 2 and "holds no .jsonl results file under nothing-here/" in res.output


# --- the real machinery: `ppbench run` measured in turn, then the gate --------------------------

SLEEP_S = 0.03  # added to every step of the slowed side: >10x a tiny step, >2x one slowed by a busy host
THRESHOLD = "50"  # the gate of both end-to-end tests: far below the slowdown, far above a pair's noise
PAIRS = 6  # the fewest pairs that can fail a case at 95% (a sign test: 2^-6 < 0.025)


class SlowedCPU(CPUBackend):
    """The CPU backend with a slower step: `step_end`, called once at the end of every step of every
    scenario, sleeps. Its records name the `cpu` backend (the device, the results file, the
    ceilings' cache key), as a code change that slowed the step would: same system, same cases."""

    name = "cpu"

    def step_end(self) -> None:
        time.sleep(SLEEP_S)


def _busy_neighbour() -> int:
    """A CPU-bound process beside the runs, bounded (it exits by itself after 120 s), left to init
    so the runs do not count it as their own (ppharness.core.guards). Its pid."""
    code = "import time\nend = time.time() + 120\nwhile time.time() < end: pass"
    shell = f"{shlex.quote(sys.executable)} -c {shlex.quote(code)} >/dev/null 2>&1 & echo $!"
    return int(subprocess.run(["sh", "-c", shell], capture_output=True, text=True, check=True).stdout.strip())


def _measure_in_turn(tmp_path, new_backend: str, pairs: int) -> None:
    """The CI recipe (docs/ci-gate.md) in one process: `ppbench run` into base/ and new/ in turn,
    counterbalanced (A B, B A, ...), beside a CPU-bound process. One thread, so the neighbour
    takes a core rather than splitting the step's threads."""
    sets = [
        "scenarios={prefill: {batch: 1, prompt_len: 16}}",  # one case: 12 runs take seconds each
        "check=false",
        "timing={warmup: 1, min_iters: 5, min_seconds: 0.1, max_seconds: 10, max_other_cpu: 1.0, remeasure: 0}",
    ]
    sides = {"base": "cpu", "new": new_backend}
    child = _busy_neighbour()
    try:
        for i in range(pairs):
            for side in ("base", "new") if i % 2 == 0 else ("new", "base"):
                backend = sides[side]
                args = ["run", str(SMOKE), "--out", str(tmp_path / side), "--backend", backend]
                for item in [*sets, f"backend_options={{{backend}: {{threads: 1}}}}"]:
                    args += ["--set", item]
                res = CliRunner().invoke(app, args)
                assert res.exit_code == 0, res.output
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)


def _gate(tmp_path):
    summary = tmp_path / "summary.md"
    args = ["compare", str(tmp_path / "new"), "--against", str(tmp_path / "base"), "--fail-if-slower", THRESHOLD]
    res = CliRunner().invoke(app, [*args, "--summary", str(summary), "--wide"])  # --wide: each cell on one line
    return res, summary.read_text()


@pytest.mark.slow
def test_the_same_code_twice_on_a_busy_host_passes_the_gate(tmp_path):
    """Six pairs of runs of the same code beside a CPU-bound process. On this 2-core host one pair's
    step times can differ by 2x (+144% and -82% seen), but failing takes the CI above +50% and all
    six pairs slower by more than 50%. Exit 0, the case compared in pairs, not slower."""
    _measure_in_turn(tmp_path, "cpu", pairs=PAIRS)
    res, summary = _gate(tmp_path)
    assert res.exit_code == 0, res.output
    assert "passed: no case slower by more than 50%" in res.output and "**SLOWER**" not in summary
    assert "6 pairs, measured in turn" in res.output
    assert summary.startswith("## ppbench regression gate: passed")


@pytest.mark.slow
def test_a_slower_step_fails_the_gate(tmp_path, monkeypatch):
    """The same case with 30 ms slept in every step on the new side (a tiny step takes about 1-2 ms):
    `slower` than +50% at 95% confidence, the gate exits 10, and the output and the summary name
    the case and by how much."""
    monkeypatch.setitem(REGISTRY, "cpu-slowed", SlowedCPU)
    _measure_in_turn(tmp_path, "cpu-slowed", pairs=PAIRS)
    res, summary = _gate(tmp_path)
    assert res.exit_code == gate.GATE_FAILED, res.output
    assert "FAILED (exit 10): 1 case(s) slower by more than 50%" in res.output
    line = next(x for x in res.output.splitlines() if x.strip().startswith("prefill b1") and "step time +" in x)
    change = float(line.split("step time +")[1].split("%")[0])
    assert change > 200, line  # by how much: far above the threshold, not near it
    assert "| **SLOWER** | prefill b1 float32 tiny on " in summary
    assert r"6/6 pairs slower than \+50% \(p=0.016\)" in summary  # markdown-escaped
