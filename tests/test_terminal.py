"""Tables that fit a terminal (ppharness/present/terminal.py), as users see them: `run`, `show`,
`compare`, `claims`, `kernels` and `evidence` through the CLI at 80 and 120 columns ($COLUMNS,
what a pipe or a CI log gets too), on the committed results/ and seeds/.

What "fits" means, checked on the printed text: no line is wider than the width, and no cell is
broken inside a word or a number: every word of every shown cell is printed whole, as many times
as the cells hold it (a broken `c7a.large` prints `c7a.` and `large` and is missing once).
"""

from __future__ import annotations

import json
import shutil
from collections import Counter

import pandas as pd
import pytest
from conftest import REPO, SMOKE
from rich.cells import cell_len
from typer.testing import CliRunner

from ppharness.cli import app
from ppharness.judge import claims, compare, evidence
from ppharness.present import report, terminal
from ppharness.present import tables as views
from ppharness.present.kernel_table import is_kernel
from ppharness.present.kernel_table import table as kernel_table
from ppharness.present.tables import summary
from ppharness.record import flags
from ppharness.record.load import load

runner = CliRunner()
RESULTS = REPO / "results"
WIDTHS = (80, 120)
BASELINE = "c7a.large/cpu/-/none"


def _invoke(args: list[str], columns: int):
    res = runner.invoke(app, args, env={"COLUMNS": str(columns)})
    assert res.exit_code == 0, res.output
    return res.stdout


def _words(text: str) -> list[str]:
    return text.split()


def _fits(text: str, columns: int) -> None:
    wide = [line for line in text.splitlines() if cell_len(line.rstrip()) > columns]
    assert not wide, f"{len(wide)} line(s) wider than {columns}: {wide[:2]}"


def _whole(text: str, frames: list[tuple[pd.DataFrame, str]], columns: int) -> None:
    """Every word of every cell `fit` shows at `columns` is printed whole, as often as the cells hold it."""
    printed = Counter(_words(text))
    needed: Counter = Counter()
    for frame, title in frames:
        layout = terminal.fit(frame, title, columns)
        assert layout.total <= columns, (layout.total, list(layout.frame.columns))
        for col in layout.frame.columns:
            needed.update(w for cell in layout.frame[col] for w in _words(cell))
    missing = needed - printed
    assert not missing, f"words broken or missing at {columns} columns: {dict(list(missing.items())[:8])}"


@pytest.fixture(scope="module")
def records():
    return load([RESULTS])


def _show_frames(df):
    kern = is_kernel(df)
    frames = [(_flagged(df[~kern], summary(df[~kern])), "")]
    if kern.any():
        frames.append((_flagged(df[kern], kernel_table(df[kern])), "kernels: roofline"))
    return frames


def _flagged(df, frame):
    from ppharness import cli

    return cli.flagged(df, frame)


@pytest.mark.parametrize("columns", WIDTHS)
def test_show_fits_and_breaks_no_cell(records, columns):
    text = _invoke(["show", str(RESULTS)], columns)
    _fits(text, columns)
    _whole(text, _show_frames(records), columns)
    # one value in every row goes to the title line; a column empty in every row is left out
    assert "all rows: backend cpu" in " ".join(text.split()) and "MFU" not in text.split()


@pytest.mark.parametrize("columns", WIDTHS)
def test_compare_fits_and_breaks_no_cell(records, columns):
    text = _invoke(["compare", str(RESULTS), "--baseline", BASELINE], columns)
    _fits(text, columns)
    cmp = compare.compare(records, BASELINE)
    frames = [(report.compare_frame(cmp.table, True), ""), (report.compare_frame(cmp.best, True), "")]
    frames.append((report.kernels_frame(cmp.kernels, True), ""))
    _whole(text, frames, columns)
    # one instance in every row: said once in the title, the system cells keep the rest
    assert "instance c7a.large" in " ".join(text.split()) and "cpu/-/default" in text.split()
    row = cmp.best[cmp.best["system"] == "c7a.large/cpu/-/default"].iloc[0]
    assert f"[{row['speed_lo']:.2f}-{row['speed_hi']:.2f}]" in text  # the ratio's CI, whole


@pytest.mark.parametrize("columns", WIDTHS)
def test_claims_is_a_block_per_claim_verdicts_first(records, columns):
    text = _invoke(["claims", str(RESULTS)], columns)
    _fits(text, columns)
    evaluated = claims.evaluate_all(records, claims.load_claims())
    blocks, note = terminal.claim_blocks(evaluated, columns)
    lines = text.splitlines()
    for r, (head, body) in zip(evaluated, blocks, strict=True):
        first = [i for i, line in enumerate(lines) if line.startswith(f"{r.claim.id}: ours: ")]
        assert len(first) == 1, r.claim.id  # the block opens with the claim and its verdicts
        block = " ".join(lines[first[0] : first[0] + 1 + body.count("\n") + 1 + head.count("\n")])
        assert f"ours: {report.arrow([r.verdict, r.verdict_today])}" in " ".join(block.split())
        for label in ("claimed", "decides it", "break-even"):  # the deciding figure and break-even follow
            assert f" {label} " in block
        held = report.held_words(r)  # and when it held by our rule, where anything judged it
        if held.startswith("held "):
            assert f" held {held.removeprefix('held ')}" in " ".join(block.split())
        elif r.published and r.published.verdict_today != "no evidence":
            assert f" held never, since the claim's date ({r.claim.date})" in " ".join(block.split())
    needed = Counter(w for head, body in blocks for w in _words(head + " " + body))
    assert not needed - Counter(_words(text))
    assert len(lines) <= (9 if columns < 100 else 7) * len(evaluated) + 4  # short blocks, not 15-line rows


@pytest.mark.parametrize("columns", WIDTHS)
def test_claims_brief_and_wide(records, columns):
    text = _invoke(["claims", str(RESULTS), "--brief"], columns)
    _fits(text, columns)
    evaluated = claims.evaluate_all(records, claims.load_claims())
    for r in evaluated:  # one line a claim: its id and today's two verdicts
        (line,) = [x for x in text.splitlines() if x.startswith(r.claim.id + " ")]
        assert r.verdict_today in line
        assert (r.published.verdict_today if r.published else "no evidence file") in line
    wide = _invoke(["claims", str(RESULTS), "--wide"], columns)
    frame = report.claims_frame(evaluated)
    for col in frame.columns:  # --wide: every column, every cell on one line
        assert all(str(v) in wide for v in frame[col] if str(v)), col


@pytest.mark.parametrize("columns", WIDTHS)
def test_evidence_fits_and_breaks_no_cell(columns):
    text = _invoke(["evidence"], columns)
    _fits(text, columns)
    ev = evidence.load(None)
    _whole(text, [(views.evidence_entries_frame(ev), ""), (views.pairs_frame(ev), "")], columns)
    assert f"not shown at {columns} columns" in text  # what was left out is said, and --wide shows it
    wide = _invoke(["evidence", "--wide"], columns)
    assert all(e.source.cite in wide for e in ev.entries.values())


@pytest.mark.parametrize("columns", WIDTHS)
def test_kernels_fits_and_breaks_no_cell(tmp_path, monkeypatch, columns):
    from test_kernels import FIXTURE_CEILINGS, TINY_ARGS

    from ppharness.core import ceilings

    monkeypatch.setattr(ceilings, "measure_ceilings", lambda backend, dtype: dict(FIXTURE_CEILINGS))
    monkeypatch.setenv("PPBENCH_CACHE_DIR", str(tmp_path / "cache"))
    args = ["kernels", "--kernel", "rmsnorm", "--kernel", "gemm", *TINY_ARGS, "--out", str(tmp_path / "out")]
    text = _invoke(args, columns)
    _fits(text, columns)
    df = load([tmp_path / "out"])
    _whole(text, [(_flagged(df, kernel_table(df)), "kernels on cpu: roofline (tiny, float32)")], columns)


@pytest.mark.slow
@pytest.mark.parametrize("columns", WIDTHS)
def test_run_fits_and_breaks_no_cell(tmp_path, fast_timing, columns):
    out = tmp_path / "out"
    sets = [*fast_timing, "check=false", "instance=c7a.large"]
    args = ["run", str(SMOKE), "--out", str(out), *(a for s in sets for a in ("--set", s))]
    text = _invoke(args, columns)
    _fits(text, columns)
    df = load([out])
    _whole(text, [(_flagged(df, summary(df)), "smoke: this run")], columns)


def test_a_long_reason_becomes_a_note_under_the_table(tmp_path):
    """An INVALID row's reason would make a tall, narrow status column: it goes under the table."""
    from results_fixtures import record

    reason = "other processes used 81% of the host's 2 CPUs during the measured window (max_other_cpu 25%)"
    recs = [record(), {**record(batch=4), "status": "invalid", "reason": reason}]
    path = tmp_path / "r.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    text = _invoke(["show", str(path)], 80)
    _fits(text, 80)
    assert "invalid [1]" in text and "[1] other processes used 81%" in text


def test_layout_rules():
    """The rules on a small frame: shared values to the title, empty columns out, optional ones
    hidden in order (and said), prose wrapped only at spaces, --wide keeping everything."""
    frame = pd.DataFrame(
        {
            "system": ["c7a.large/cpu/-/none", "c7a.large/cpu/-/default"],
            "dtype": ["float32", "float32"],
            "MFU": ["", ""],
            "tokens/s": ["2,268", "2,344"],
            "why": ["a reason in several words that wraps", "another reason that also wraps"],
            "extra": ["1.00x [0.90-1.10]", "1.03x [0.86-1.31]"],
        }
    )
    frame.attrs["optional"] = ("extra",)
    layout = terminal.fit(frame, "T", 60)
    assert layout.title == "T (all rows: dtype float32)"
    assert list(layout.frame.columns) == ["system", "tokens/s", "why"] and layout.hidden == ["extra"]
    assert layout.total <= 60 and "not shown at 60 columns: extra" in layout.hidden_note
    widths = dict(zip(layout.frame.columns, layout.widths))
    assert widths["system"] == len("c7a.large/cpu/-/default") and widths["why"] >= len("another")
    wide = terminal.fit(frame, "T", 60, wide=True)
    assert list(wide.frame.columns) == list(frame.columns) and wide.title == "T"
    assert wide.widths == [max(len(c), *(len(v) for v in frame[c])) for c in frame.columns]


def test_piped_output_is_120_columns_unless_columns_says(monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    assert terminal.width(False, 0) == terminal.DEFAULT_WIDTH == 120
    assert terminal.width(True, 97) == 97
    monkeypatch.setenv("COLUMNS", "100")
    assert terminal.width(False, 0) == 100 and terminal.width(True, 97) == 100
    monkeypatch.setenv("COLUMNS", "7")  # nonsense: ignored
    assert terminal.width(False, 0) == 120


def test_a_long_table_is_plain_text_laid_out_the_same(records, monkeypatch):
    """Above PLAIN_ROWS rows the fast plain path prints the same columns, title and notes."""
    from ppharness import cli

    monkeypatch.setattr(cli, "PLAIN_ROWS", 3)
    text = _invoke(["show", str(RESULTS)], 120)
    frame = _show_frames(records)[0][0]
    layout = terminal.fit(frame, "", 120)
    header = text.splitlines()[1]
    assert text.startswith(layout.title + "\n")
    assert [header.index(c) for c in layout.frame.columns] == sorted(header.index(c) for c in layout.frame.columns)
    assert len(text.splitlines()) >= len(frame) + 3  # one line a row: nothing wraps on the plain path
    assert flags.legend(frame["flags"]) in " ".join(text.split())


@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux for a real terminal")
def test_a_real_terminal_of_120_columns(tmp_path):
    """`ppbench show results` in a real 120-column terminal (tmux, its own server), as a user sees it:
    the width comes from the terminal itself, not $COLUMNS."""
    import subprocess
    import sys
    import time

    tmux = ["tmux", "-L", f"ppbench-test-{tmp_path.name}"]  # a private server: no one else's sessions
    done = tmp_path / "done"
    cmd = f"env -u COLUMNS {sys.executable} -m ppharness.cli show {RESULTS}; touch {done}; sleep 60"
    subprocess.run([*tmux, "new-session", "-d", "-x", "120", "-y", "150", cmd], check=True, cwd=REPO)
    try:
        for _ in range(1200):
            if done.exists():
                break
            time.sleep(0.1)
        screen = subprocess.run([*tmux, "capture-pane", "-p"], capture_output=True, text=True).stdout
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True)
    assert done.exists() and "scenario" in screen and "c7a.large" in screen, screen
    _fits(screen, 120)
    records_table = screen.split("kernels: roofline")[0]
    heading = next(line for line in records_table.splitlines() if line.startswith("backend"))
    # 120 columns show every figure of the records table, serving latency included; only the run id goes
    assert all(c in heading for c in ("tokens/s", "TTFT/TPOT ms", "$/1M tok", "flags")), heading
    assert "not shown at 120 columns: run (--wide" in records_table


@pytest.mark.parametrize("columns", (*WIDTHS, 100))
def test_the_gate_fits_its_reasons_under_the_table(tmp_path, columns):
    """`compare NEW --against BASE`: the long `compared` / `why` cells keep their head and become
    numbered notes; at 80 and 100 columns the optional columns go first (and are said), and the
    notes of a hidden column are not printed. --wide keeps every cell whole."""
    from results_fixtures import record, write

    from ppharness.judge import gate
    from ppharness.present import gate as gate_view

    def runs(side, minutes, step_s, scenario, seed0):
        return [
            {
                **record(scenario=scenario, step_s=step_s, seed=seed0 + i, created_at=f"2026-01-01T00:{m:02d}:00+00:00"),
                "run_id": f"{side}-{scenario}-{i}",
            }
            for i, m in enumerate(minutes)
        ]

    # train: three pairs in turn, 3x slower (the runs cannot show it yet); prefill: four runs a
    # side, all of BASE first (unpaired, the rank test can), 3x slower.
    base = runs("b", (0, 3, 4), 0.010, "train", 0) + runs("b", (20, 21, 22, 23), 0.010, "prefill", 10)
    new = runs("n", (1, 2, 5), 0.030, "train", 0) + runs("n", (30, 31, 32, 33), 0.030, "prefill", 10)
    b, n = write(tmp_path / "b.jsonl", base), write(tmp_path / "n.jsonl", new)
    res = runner.invoke(app, ["compare", str(n), "--against", str(b)], env={"COLUMNS": str(columns)})
    assert res.exit_code == 0, res.output
    text = res.stdout
    _fits(text, columns)
    g = gate.evaluate(load([b]), load([n]), 0.0, enforced=False)
    _whole(text, [(gate_view.frame(g), "")], columns)
    flat = " ".join(text.split())
    assert "runs agree [1]" in flat and "runs disagree [2]" in flat  # the failing kind first
    assert "[2] the CI says slower, but 3/3 pairs slower than +0% gives only p=0.125" in flat
    if "unpaired [3]" in flat:  # `compared` shown: its note is printed
        assert "[3] the 4 runs a side were not measured in turn (A B A B)" in flat
    else:  # hidden, and said; its note is not printed
        assert f"not shown at {columns} columns: compared" in flat and "not measured in turn" not in flat
    wide = runner.invoke(app, ["compare", str(n), "--against", str(b), "--wide"], env={"COLUMNS": str(columns)})
    assert "runs disagree: the CI says slower, but 3/3 pairs" in wide.stdout
