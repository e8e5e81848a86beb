"""Inputs of any size (ppharness/errors.py read_bounded): every file ppbench reads is read with a
bound and refused beyond it with one line and exit code 2, never read whole into memory first and
never a MemoryError traceback. Oversized files are sparse (no disk used); /dev/zero, whose size
stat() cannot tell, shows the bound is on the bytes read."""

from __future__ import annotations

import json
import os

import pytest
from conftest import SMOKE
from typer.testing import CliRunner

from ppharness import errors
from ppharness.cli import app

runner = CliRunner()
ZERO = "/dev/zero"


def _sparse(path, size: int):
    with open(path, "wb") as f:
        f.truncate(size)  # a hole: `size` bytes long, no blocks written
    return path


def _refused(res, *needles: str) -> str:
    assert res.exit_code == 2, (res.exit_code, res.output)
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in res.output, res.output
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def test_read_bounded_reads_at_most_the_bound():
    with pytest.raises(errors.BenchError, match=r"run file /dev/zero is larger than 4 MiB"):
        errors.read_bounded(ZERO, "run file", errors.MAX_YAML_BYTES)


@pytest.mark.skipif(not os.path.exists(ZERO), reason="needs /dev/zero")
@pytest.mark.parametrize(
    "args,what",
    [
        (["run", ZERO], "run file /dev/zero is larger than 4 MiB"),
        (["claims", "--claims", ZERO], "claims file /dev/zero is larger than 4 MiB"),
        (["evidence", "--evidence-file", ZERO], "evidence file /dev/zero is larger than 4 MiB"),
    ],
)
def test_a_yaml_input_without_end_is_refused_in_one_line(tmp_path, args, what):
    res = runner.invoke(app, [*args, *(["--out", str(tmp_path / "out")] if args[0] == "run" else [])])
    _refused(res, what)
    assert not (tmp_path / "out").exists()


def test_results_beyond_the_bound_are_refused_before_reading(tmp_path):
    """More than MAX_RESULTS_BYTES of results (a sparse 600 MiB file) is refused by its size."""
    _sparse(tmp_path / "big.jsonl", 600 * 2**20)
    for cmd in ("show", "compare", "claims"):
        _refused(runner.invoke(app, [cmd, str(tmp_path)]), "hold 600 MiB, more than the 512 MiB ppbench reads at once")


def test_results_over_the_bound_together_are_refused(tmp_path, monkeypatch):
    from results_fixtures import record

    from ppharness.record import load as load_mod

    line = json.dumps(record()) + "\n"
    for name in ("a", "b"):
        (tmp_path / f"{name}.jsonl").write_text(line)
    monkeypatch.setattr(load_mod, "MAX_RESULTS_BYTES", int(1.5 * len(line)))  # each file fits, both do not
    _refused(runner.invoke(app, ["show", str(tmp_path)]), "2 results file(s) hold")


def test_a_record_line_over_the_bound_is_refused(tmp_path, monkeypatch):
    from ppharness.record import load as load_mod

    (tmp_path / "r.jsonl").write_text('{"schema_version": 1, "x": "' + "y" * 200 + '"}\n')
    monkeypatch.setattr(load_mod, "MAX_RECORD_BYTES", 100)
    _refused(runner.invoke(app, ["show", str(tmp_path)]), "line 1: longer than 100 bytes; not a record")


def test_a_pytest_benchmark_file_over_the_bound_is_refused(tmp_path):
    _sparse(tmp_path / "bench.json", errors.MAX_JSON_BYTES + 1)
    _refused(runner.invoke(app, ["show", str(tmp_path / "bench.json")]), "is larger than 64 MiB")


def test_a_run_file_over_the_bound_is_refused(tmp_path):
    _sparse(tmp_path / "run.yaml", errors.MAX_YAML_BYTES + 1)
    _refused(runner.invoke(app, ["run", str(tmp_path / "run.yaml"), "--out", str(tmp_path / "o")]), "larger than 4 MiB")


def test_a_ceilings_cache_too_large_to_be_ours_is_refused_before_measuring(tmp_path, monkeypatch, fast_timing):
    cache = tmp_path / "cache"
    cache.mkdir()
    _sparse(cache / "ceilings.json", errors.MAX_JSON_BYTES + 1)
    monkeypatch.setenv("PPBENCH_CACHE_DIR", str(cache))
    out = tmp_path / "out"
    sets = [a for s in [*fast_timing, "scenarios={prefill: {batch: 1, prompt_len: 8}}"] for a in ("--set", s)]
    line = _refused(runner.invoke(app, ["run", str(SMOKE), "--out", str(out), *sets]), "ceilings cache")
    assert "delete it" in line and not list(out.glob("*.jsonl"))  # nothing measured, nothing written
    _refused(runner.invoke(app, ["ceilings"]), "ceilings cache")
    assert (cache / "ceilings.json").stat().st_size == errors.MAX_JSON_BYTES + 1  # never overwritten


def test_a_damaged_small_ceilings_cache_is_still_just_measured_again(tmp_path):
    from ppharness.core import ceilings

    (tmp_path / "ceilings.json").write_text("{not json")
    assert ceilings.read_cache(tmp_path / "ceilings.json") == {}
    assert ceilings.read_cache(tmp_path / "none.json") == {}


def test_the_gpu_checks_state_over_the_bound_is_refused(tmp_path):
    from ppharness.run import gpucheck

    _sparse(tmp_path / gpucheck.STATE, errors.MAX_YAML_BYTES + 1)
    with pytest.raises(errors.BenchError, match="gpu-check state .* is larger than 4 MiB"):
        gpucheck.read_state(tmp_path)
    (tmp_path / gpucheck.STATE).write_text("stages: [torn")
    assert gpucheck.read_state(tmp_path) == {}  # torn by a kill: every stage counts as not run


def test_out_of_memory_is_one_line_not_a_traceback(monkeypatch):
    from ppharness import cli

    def oom(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(cli, "load", oom)
    res = runner.invoke(app, ["show", "results"])
    assert res.exit_code == errors.Exit.FAILED and res.stderr.startswith("error: out of memory"), res.output
    assert "Traceback" not in res.output
