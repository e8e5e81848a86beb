"""A row's warnings in every table: the `flags` column of show, compare, claims and the report,
its legend, `show --explain`, and the count of INVALID records a pooled row left out."""

from __future__ import annotations

from results_fixtures import frame, record, write
from typer.testing import CliRunner

from ppharness.cli import app
from ppharness.judge import compare
from ppharness.present import report
from ppharness.record import flags

BUSY = "other processes used 14% of the host's 2 CPUs during the measured window"
NOISY = "noisy: coefficient of variation 12.3% > 10%"
REMEASURED = "re-measured: 1 earlier window(s) contaminated (other processes 48% of the host)"


def _warned(seed: int, *warnings: str, **kw) -> dict:
    rec = record(seed=seed, **kw)
    rec["validity"]["warnings"] = list(warnings)
    return rec


def test_codes_and_cells():
    assert flags.codes([BUSY, NOISY, BUSY, "CUDA graphs skipped"]) == ["busy", "noisy", "note"]
    assert flags.codes(None) == [] and flags.codes(float("nan")) == []
    assert flags.codes([REMEASURED, "ceilings measured under interference: not cached"]) == ["remeasured", "ceiling"]
    assert flags.cell([["busy"], ["noisy", "busy"]], excluded=2) == "busy noisy 2 invalid excluded"
    assert flags.cell([[]]) == "" and flags.legend(["", ""]) == ""


def test_compare_pools_flags_and_says_how_many_records_were_left_out(tmp_path):
    contaminated = record(seed=3, status="invalid", valid=False, reasons=[f"{BUSY} (max_other_cpu 10%)"])
    other_batch = record(seed=4, batch=4)
    df = frame(tmp_path, [_warned(1, BUSY), _warned(2, NOISY), contaminated, other_batch])
    cmp = compare.compare(df)
    rows = cmp.table.set_index("batch")
    assert rows.loc[2, "runs"] == 2 and rows.loc[2, "flags"] == ["busy", "noisy"] and rows.loc[2, "excluded"] == 1
    assert rows.loc[4, "flags"] == [] and rows.loc[4, "excluded"] == 0
    shown = report.compare_frame(cmp.table, with_ratios=False)
    assert list(shown["flags"]) == ["busy noisy 1 invalid excluded", ""]
    note = shown.attrs["note"]
    assert "busy = other processes" in note and "noisy = " in note and "1 invalid excluded" not in note
    assert "invalid excluded = records" in note and "remeasured" not in note  # the codes used, only
    assert len(cmp.excluded) == 1 and "status invalid" in cmp.excluded["excluded_reason"].iloc[0]


def test_show_flags_rows_and_explains_them(tmp_path):
    path = write(tmp_path / "r.jsonl", [_warned(1, BUSY, REMEASURED), record(seed=2)])
    res = CliRunner().invoke(app, ["show", str(path)])
    assert res.exit_code == 0, res.output
    assert "flags" in res.output and "busy remeasured" in res.output and "busy = other processes" in res.output
    assert BUSY not in res.output  # the full text only on request
    res = CliRunner().invoke(app, ["show", str(path), "--explain"])
    assert res.exit_code == 0 and BUSY in " ".join(res.output.split()) and "run-1 train 2 none" in res.output
    clean = write(tmp_path / "clean.jsonl", [record(seed=2)])
    assert "busy =" not in CliRunner().invoke(app, ["show", str(clean)]).output  # no flags: no legend


def test_claims_and_report_show_flags(tmp_path):
    path = write(tmp_path / "r.jsonl", [_warned(1, BUSY)])
    res = CliRunner().invoke(app, ["claims", str(path), "--wide"])  # the table: one column per figure
    assert res.exit_code == 0 and "flags" in res.output
    md = tmp_path / "report.md"
    assert CliRunner().invoke(app, ["report", str(path), "-o", str(md), "--format", "md"]).exit_code == 0
    text = md.read_text()
    assert "| flags" in text or "flags |" in text
    assert "busy" in text and "busy = other processes" in text
