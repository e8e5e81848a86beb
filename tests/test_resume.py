"""`--resume`: a case already measured with the same resolved config is skipped, anything else is
measured; a run killed with SIGKILL and resumed ends with exactly one record per case."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import REPO, SMOKE

from ppharness import backends
from ppharness.backends.cpu import CPUBackend
from ppharness.facts import sysinfo
from ppharness.record.load import load
from ppharness.record.writer import ResultWriter
from ppharness.run import config, runner
from ppharness.run.resume import config_hash, measured, read_folder

FAST = ["timing.min_iters=2", "timing.min_seconds=0", "timing.warmup=1"]


def _cfg(*overrides: str) -> config.RunConfig:
    return config.load(SMOKE, [*FAST, *overrides])


def _run(cfg, out, resume=True):
    seen = []
    runner.run(cfg, out, lambda label, rec: seen.append((label, rec["status"])) if rec else None, resume=resume)
    return seen


def test_config_hash_names_one_case_of_one_resolved_config():
    cfg = _cfg("scenarios={train: {batch: [1, 2], seq_len: 8}}")
    case, other = config.expand(cfg)
    h = config_hash(cfg, case, "cpu", "host", None, (1, 1))
    assert h == config_hash(_cfg("scenarios={train: {batch: [1, 2], seq_len: 8}}"), case, "cpu", "host", None, (1, 1))
    wider = _cfg("scenarios={train: {batch: [1, 2, 4], seq_len: 8}, decode: {batch: 1, prompt_len: 4, new_tokens: 2}}")
    assert h == config_hash(wider, case, "cpu", "host", None, (1, 1))  # a wider sweep resumes its old cases
    assert h == config_hash(_cfg("name=renamed", "scenarios={train: {batch: 1, seq_len: 8}}"), case, "cpu", "host",
                            None, (1, 1))  # fmt: skip
    different = [
        config_hash(cfg, other, "cpu", "host", None, (1, 1)),  # another case
        config_hash(_cfg("timing.min_iters=9"), case, "cpu", "host", None, (1, 1)),  # another protocol
        config_hash(_cfg("model.n_layers=1"), case, "cpu", "host", None, (1, 1)),  # another model
        config_hash(_cfg("backend_options={cpu: {threads: 1}}"), case, "cpu", "host", None, (1, 1)),
        config_hash(cfg, case, "cuda", "host", None, (1, 1)),  # another backend
        config_hash(cfg, case, "cpu", "cpu: another CPU, 8 CPUs", None, (1, 1)),  # another kind of device
        config_hash(cfg, case, "cpu", "host", "c7a.large", (1, 1)),  # priced as another instance
        config_hash(cfg, case, "cpu", "host", None, (2, 1)),  # two ranks
        config_hash(cfg, dataclasses.replace(case, dtype="bfloat16"), "cpu", "host", None, (1, 1)),
    ]
    assert h not in different and len(set(different)) == len(different)


def test_a_second_host_with_the_same_device_resumes_and_another_device_does_not(tmp_path, monkeypatch):
    """The hash names the kind of device, not the host: a rented GPU machine is a new host each
    time, and a second one of the same kind finishes what the first left."""
    cfg = _cfg("scenarios={train: {batch: 1, seq_len: 8}}")
    assert _run(cfg, tmp_path) == [("train batch=1 seq_len=8 float32 compile=none", "ok")]
    monkeypatch.setattr(runner.socket, "gethostname", lambda: "another-host")
    monkeypatch.setattr(sysinfo.socket, "gethostname", lambda: "another-host")
    assert _run(cfg, tmp_path) == [("train batch=1 seq_len=8 float32 compile=none", "skipped")]
    monkeypatch.setattr(
        CPUBackend, "describe", lambda self: dataclasses.replace(real_describe(self), kind="another CPU")
    )
    assert _run(cfg, tmp_path) == [("train batch=1 seq_len=8 float32 compile=none", "ok")]


real_describe = CPUBackend.describe


def test_resume_skips_measured_cases_and_measures_new_ones(tmp_path):
    _run(_cfg("scenarios={train: {batch: [1, 2], seq_len: 8}}"), tmp_path, resume=False)
    seen = _run(_cfg("scenarios={train: {batch: [1, 2, 3], seq_len: 8}}"), tmp_path)
    assert [s for _, s in seen] == ["skipped", "skipped", "ok"]
    df = load([tmp_path])
    assert sorted(df["workload.batch"]) == [1, 2, 3] and df["config_hash"].is_unique
    # Another resolved config (a longer protocol) is another measurement: nothing is skipped.
    seen = _run(_cfg("scenarios={train: {batch: [1, 2, 3], seq_len: 8}}", "timing.min_iters=3"), tmp_path)
    assert [s for _, s in seen] == ["ok", "ok", "ok"] and len(load([tmp_path])) == 6
    # Without --resume everything is measured again.
    assert len(_run(_cfg("scenarios={train: {batch: 1, seq_len: 8}}"), tmp_path, resume=False)) == 1


class OOMAtBatch2(CPUBackend):
    def prepare(self, module, example_inputs, scenario, compile_mode):
        if scenario == "train" and example_inputs[0].shape[0] == 2:
            raise torch.OutOfMemoryError("out of memory (test)")
        return module


def test_failed_cases_are_measured_again(tmp_path, monkeypatch):
    monkeypatch.setitem(backends.REGISTRY, "oom2", OOMAtBatch2)
    monkeypatch.setattr(OOMAtBatch2, "name", "oom2")
    cfg = config.load(SMOKE, [*FAST, "scenarios={train: {batch: [1, 2], seq_len: 8}}"], backend="oom2")
    assert [s for _, s in _run(cfg, tmp_path)] == ["ok", "oom"]
    assert [s for _, s in _run(cfg, tmp_path)] == ["skipped", "oom"]  # only ok/invalid count as measured
    assert list(load([tmp_path])["status"]) == ["ok", "oom", "oom"]


def test_measured_lists_the_ok_or_invalid_records_oldest_first(tmp_path):
    recs = [{"config_hash": "a", "status": "ok", "created_at": "2026-01-02", "run_id": "new"},
            {"config_hash": "a", "status": "invalid", "created_at": "2026-01-01", "run_id": "old"},
            {"config_hash": "b", "status": "oom", "created_at": "2026-01-03"}, {"status": "ok"}]  # fmt: skip
    done = measured(recs)
    assert set(done) == {"a"} and [r["run_id"] for r in done["a"]] == ["old", "new"]


def test_a_damaged_file_in_the_folder_is_skipped_with_a_warning(tmp_path):
    (tmp_path / "bad.jsonl").write_text("{not json}\n{}\n")
    good = {"schema_version": 1, "run_id": "r", "created_at": "", "status": "ok", "device": {}, "workload": {},
            "timing": {}, "metrics": {}, "cost": {}, "config_hash": "h"}  # fmt: skip
    ResultWriter(tmp_path / "good.jsonl").write(good)
    with pytest.warns(UserWarning, match="bad.jsonl"):
        assert [r["config_hash"] for r in read_folder(tmp_path)] == ["h"]
    assert read_folder(tmp_path / "missing") == []


def test_a_record_appended_after_a_torn_one_stands_on_its_own_line(tmp_path):
    """After a kill tore the last record, the next append (--resume) starts a fresh line: the new
    record loads, the fragment is skipped with a warning."""
    path = tmp_path / "r.jsonl"
    rec = {"schema_version": 1, "run_id": "r", "created_at": "", "status": "ok", "device": {}, "workload": {},
           "timing": {}, "metrics": {}, "cost": {}}  # fmt: skip
    path.write_text(json.dumps(rec) + "\n" + json.dumps(rec, separators=(",", ":"))[:30])
    ResultWriter(path).write({**rec, "run_id": "after"})
    with pytest.warns(UserWarning, match="torn record"):
        assert list(load([path])["run_id"]) == ["r", "after"]


@pytest.mark.slow
def test_a_killed_run_resumes_to_one_record_per_case(tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "ppharness.cli", "run", str(SMOKE), "--out", str(out),
           "--set", "scenarios={train: {batch: [1, 2, 3, 4], seq_len: 16}}", "--set", "timing.min_seconds=0.3"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ})
    deadline = time.time() + 120
    while time.time() < deadline and not any(out.glob("*.jsonl")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    first = len(load([out]))
    assert 1 <= first < 4, "the run was not killed mid-sweep"
    done = subprocess.run([*cmd, "--resume"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    df = load([out])
    assert sorted(df["workload.batch"]) == [1, 2, 3, 4] and (df["status"] == "ok").all()
    assert " ".join(done.stderr.split()).count("skipped") == first
