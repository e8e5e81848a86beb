"""The result record: append-only writing, loading, torn lines, hostile files, crash safety."""

import errno
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from conftest import REPO

from ppharness.errors import BenchError, WriteError
from ppharness.present.tables import summary
from ppharness.record import writer
from ppharness.record.load import load, result_files
from ppharness.record.writer import ResultWriter, results_path


def _rec(i: int, **extra) -> dict:
    return {"schema_version": 1, "run_id": "r", "created_at": "2026-01-01T00:00:00+00:00", "status": "ok",
            "reason": "", "device": {"backend": "cpu"}, "workload": {"scenario": "train", "batch": i},
            "timing": {"samples_s": [0.1]}, "metrics": {"tokens_per_s": 10.0 * i}, "cost": {}, **extra}  # fmt: skip


def test_write_and_load_roundtrip(tmp_path):
    path = results_path(tmp_path, "c7a.large", "cpu")
    assert path.name.endswith("_c7a.large_cpu.jsonl")
    w = ResultWriter(path)
    assert not path.exists()  # nothing is created before the first finished record
    for i in (1, 2):
        w.write(_rec(i, metrics={"tokens_per_s": float("nan")} if i == 2 else {"tokens_per_s": 10.0}))
    df = load([tmp_path])
    assert list(df["workload.batch"]) == [1, 2]
    assert df["metrics.tokens_per_s"].isna().iloc[1]  # NaN stored as null: valid JSON for any reader
    assert json.loads(path.read_text().splitlines()[1])["metrics"]["tokens_per_s"] is None


def test_torn_last_line_is_skipped_with_a_warning(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps(_rec(1)) + "\n" + json.dumps(_rec(2))[:40])
    # The warning says what the loader knows (the write was cut short) and not more: a kill and a
    # full disk leave the same torn line.
    with pytest.warns(UserWarning, match="torn last line.*cut short.*killed run, a full disk"):
        assert len(load([path])) == 1


@pytest.mark.parametrize(
    "content,message",
    [
        ("{not json}\n{}\n", "line 1: not valid JSON"),
        ("[1, 2]\n", "must be a JSON object"),
        ('{"schema_version": 1}\n', "not a ppbench record (missing run_id"),
        (json.dumps(_rec(1, schema_version=99)) + "\n", "schema_version 99"),
        (json.dumps(_rec(1, status="great")) + "\n", "unknown status 'great'"),
        (json.dumps(_rec(1, metrics=[1])) + "\n", "metrics must be an object"),
    ],
)
def test_malformed_files_give_one_clear_error(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(BenchError, match=re.escape(message)):
        load([path])


def test_missing_path_and_binary_file(tmp_path):
    with pytest.raises(BenchError, match="no such results file"):
        result_files([tmp_path / "nope"])
    binary = tmp_path / "b.jsonl"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(BenchError, match="cannot read results file"):
        load([binary])


def test_summary_renders_every_status(tmp_path):
    w = ResultWriter(tmp_path / "r.jsonl")
    w.write(_rec(1))
    w.write(_rec(2, status="oom", reason="CUDA out of memory"))
    table = summary(load([tmp_path]))
    assert list(table["status"]) == ["ok", "oom: CUDA out of memory"]


def test_concurrent_writers_never_interleave(tmp_path):
    """Two processes appending to one file: every line is a whole record."""
    path = tmp_path / "shared.jsonl"
    code = (
        "import sys; from ppharness.record.writer import ResultWriter; w = ResultWriter(sys.argv[1]);\n"
        "[w.write({'schema_version': 1, 'run_id': sys.argv[2], 'created_at': '', 'status': 'ok', 'device': {},"
        " 'workload': {}, 'timing': {}, 'metrics': {'pad': 'x' * 5000}, 'cost': {}}) for _ in range(200)]"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, str(path), rid]) for rid in ("a", "b")]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    df = load([path])
    assert len(df) == 400 and set(df["run_id"]) == {"a", "b"}


@pytest.mark.slow
def test_sigkill_after_first_record_keeps_finished_records(tmp_path):
    """A run killed with SIGKILL mid-run leaves every finished record loadable."""
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "ppharness.cli", "run", str(REPO / "configs/runs/smoke.yaml"), "--out", str(out),
           "--set", "scenarios.train.batch=[1, 2, 3, 4, 5, 6]", "--set", "timing.min_seconds=1"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ})
    deadline = time.time() + 120
    while time.time() < deadline and not any(out.glob("*.jsonl")):
        time.sleep(0.05)
    assert any(out.glob("*.jsonl")), "no record was written within 120 s"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    df = load([out])
    assert 1 <= len(df) < 8 and (df["status"] == "ok").all()


def _odd_records() -> list[dict]:
    """Shapes the one-level flatten must lay out as json_normalize does: an empty object (no
    column), a key only some records have, nested objects two levels down (kept as dicts),
    lists, nulls, and a top-level key that looks like a flattened one."""
    a = _rec(1, validity={}, extra_top=[1, 2], config={"model": {"dim": 8}, "x": None})
    b = _rec(2, validity={"valid": True, "reasons": []}, reason=None)
    b["metrics"] = {"tokens_per_s": 5.0, "late": {"deep": [1.0, {"k": 2}]}}
    c = _rec(3, **{"metrics.tokens_per_s": 99.0})
    c["workload"] = {}
    return [a, b, c]


def test_load_lays_the_frame_out_exactly_as_json_normalize(tmp_path):
    """The fast flatten changes no column, order, dtype or value of the frame every table reads:
    on the committed records (read only) and on odd shapes."""
    import pandas as pd

    from ppharness.record.load import read_records, result_files

    write = tmp_path / "odd.jsonl"
    write.write_text("".join(json.dumps(r) + "\n" for r in _odd_records()))
    for paths in ([REPO / "results"], [write], [REPO / "results", write]):
        records = []
        for f in result_files(paths):
            for rec in read_records(f):
                rec["source_file"] = str(f)
                records.append(rec)
        want = pd.json_normalize(records, max_level=1)
        got = load(paths)
        pd.testing.assert_frame_equal(got, want)
        assert list(got.columns) == list(want.columns)


def test_show_renders_kernel_records_without_importing_torch():
    """`ppbench show` on results with kernel rows: both tables, and torch is never imported
    (importing it was a third of show's time on 5,000 records)."""
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from ppharness.cli import app\n"
        f"res = CliRunner().invoke(app, ['show', {str(REPO / 'results')!r}])\n"
        "assert res.exit_code == 0, res.output\n"
        "assert 'kernels: roofline' in res.output and 'prefill' in res.output, res.output\n"
        "print('torch imported' if 'torch' in sys.modules else 'no torch')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "300"}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == "no torch"


# --- a full disk, simulated: os.write in ppharness.record.writer is replaced for the results file only (a
# real full file system needs a mount this test cannot make). The fake writes what a filling disk
# lets through: a few bytes per call, then nothing (ENOSPC).
def _fake_disk(monkeypatch, room: int | None, per_call: int = 7):
    real = os.write
    left = {"room": room}

    def write(fd, data):
        if not os.readlink(f"/proc/self/fd/{fd}").endswith(".jsonl"):
            return real(fd, data)
        n = min(len(data), per_call, left["room"] if left["room"] is not None else len(data))
        if n == 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        if left["room"] is not None:
            left["room"] -= n
        return real(fd, data[:n])

    monkeypatch.setattr(writer.os, "write", write)


def test_short_writes_are_continued_until_the_record_is_whole(tmp_path, monkeypatch):
    _fake_disk(monkeypatch, room=None, per_call=7)  # every write stops after 7 bytes
    path = tmp_path / "r.jsonl"
    w = ResultWriter(path)
    for i in (1, 2, 3):
        w.write(_rec(i))
    assert list(load([path])["workload.batch"]) == [1, 2, 3] and w.count == 3


def test_a_full_disk_fails_loudly_and_leaves_only_whole_records(tmp_path, monkeypatch):
    path = tmp_path / "r.jsonl"
    w = ResultWriter(path)
    w.write(_rec(1))
    _fake_disk(monkeypatch, room=50)  # 50 bytes left: the second record cannot fit
    with pytest.raises(WriteError, match=r"cannot write the record of train b2 to .*r\.jsonl: No space left on device"):
        w.write(_rec(2), "train b2")
    assert w.count == 1
    monkeypatch.undo()
    assert path.read_text() == json.dumps(_rec(1), separators=(",", ":")) + "\n"  # the torn part taken back
    assert list(load([path])["workload.batch"]) == [1]


def test_a_failing_fsync_fails_the_write(tmp_path, monkeypatch):
    def fsync(fd):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(writer.os, "fsync", fsync)
    with pytest.raises(WriteError, match="Input/output error") as exc:
        ResultWriter(tmp_path / "r.jsonl").write(_rec(1))
    assert isinstance(exc.value, BenchError) and "r.jsonl" in str(exc.value)  # one line, the file named


def test_an_unwritable_results_file_is_found_before_measuring(tmp_path):
    (tmp_path / "r.jsonl").mkdir()
    with pytest.raises(BenchError, match="not a regular file"):
        ResultWriter(tmp_path / "r.jsonl").check()
    (tmp_path / "file").write_text("")
    with pytest.raises(BenchError, match="not a folder"):
        ResultWriter(tmp_path / "file" / "r.jsonl").check()
    ResultWriter(tmp_path / "new" / "deeper" / "r.jsonl").check()  # creatable: fine, nothing created
    assert not (tmp_path / "new").exists()
