"""The Neuron first-run probe (ppharness/run/neuronprobe.py) rehearsed without torch-xla: the
parts that need none run for real (the environment around imports, the power poll against a fake
sysfs tree), the others must say why they were skipped. The XLA parts run in
tests/test_xla_neuronprobe.py (the `xla` lane); the items that need a NeuronCore run only on one.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import REPO
from test_neuron_power import documented_tree

from ppharness.backends import _neuron_probe as items
from ppharness.backends._neuron_probe import Opts
from ppharness.core.workload import PRESETS
from ppharness.run import neuronprobe


def test_bad_arguments_are_one_line_and_exit_code_2(tmp_path, capsys):
    assert neuronprobe.main(["--out", str(tmp_path), "--only", "env,nope"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown probe item 'nope'; valid: env,") and err.count("\n") == 1
    assert neuronprobe.main(["--out", str(tmp_path), "--power-s", "0"]) == 2
    assert not (tmp_path / "probe.json").exists()  # nothing half-written
    assert set(neuronprobe.MODELS) <= set(PRESETS) and set(neuronprobe.ITEMS) == set(items.ITEM_FNS)
    args = neuronprobe.parse_args(["--out", str(tmp_path), "--quick", "--only", "power", "--sysfs", "/x"])
    assert args.items == ["power"] and args.child == ["--power-s", "4.0", "--poll-s", "0.5", "--model", "tiny",
                                                      "--sysfs", "/x", "--quick"]  # fmt: skip


def test_the_parent_imports_no_torch():
    """On a TorchNeuron host `import torch` autoloads torch_neuronx, which writes variables every
    child would inherit: the parent must not import it, or the env item would see nothing change."""
    code = ("import sys; from ppharness.run import neuronprobe, gpucheck; neuronprobe.parse_args(['--out', 'x']); "
            "neuronprobe.host_facts(); print('torch' in sys.modules)")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.stdout.strip() == "False", out.stderr[-2000:]


def test_the_power_item_polls_the_file_it_found(tmp_path):
    documented_tree(tmp_path / "sys")
    result = items.run_item("power", Opts(tmp_path / "out", power_s=0.4, poll_s=0.1, sysfs=str(tmp_path / "sys")))
    assert result["status"] == "ok", result
    data = json.loads((tmp_path / "out" / "power.json").read_text())["data"]
    assert data["files"]["neuron0"]["minute"] == str(tmp_path / "sys/neuron0/stats/power/utilization")
    assert len(data["history"]) >= 2 and {h["status"] for h in data["history"]} == {"POWER_STATUS_VALID"}
    idle, busy = data["phases"]["idle"], data["phases"]["busy"]
    assert idle[0] < idle[1] == busy[0] < busy[1]
    for phase in ("idle", "busy"):  # sub-second phases hold no whole epoch minute, and say so
        assert data[phase]["power_pct"] is None and "120 s" in data[phase]["power_reason"]


def test_items_that_cannot_run_here_are_skipped_with_the_reason(tmp_path, monkeypatch):
    monkeypatch.setenv("PJRT_DEVICE", "CPU")
    result = items.run_item("trace_state", Opts(tmp_path))
    assert result["status"] == "skipped" and "needs a NeuronCore" in result["reason"]
    result = items.run_item("power", Opts(tmp_path, sysfs=str(tmp_path / "none")))
    assert result["status"] == "skipped" and "no Neuron chip" in result["reason"]


def test_a_failing_item_is_recorded_and_the_next_one_runs(tmp_path, monkeypatch):
    monkeypatch.setitem(items.ITEM_FNS, "env", lambda opts: 1 / 0)
    result = items.run_item("env", Opts(tmp_path))
    assert result["status"] == "failed" and "ZeroDivisionError" in result["reason"] and "traceback" in result
    # a child that dies without an answer: failed, with its exit, and the probe goes on
    monkeypatch.setattr(neuronprobe, "child_argv", lambda name, args: [sys.executable, "-c", "raise SystemExit(3)"])
    summary = neuronprobe.probe(neuronprobe.Args(tmp_path / "p", ["env", "power"]), echo=open("/dev/null", "w"))  # noqa: SIM115
    assert [e["status"] for e in summary["items"].values()] == ["failed", "failed"]
    assert "exit code 3" in summary["items"]["power"]["reason"]
    assert json.loads((tmp_path / "p" / "probe.json").read_text())["items"]["env"]["status"] == "failed"


@pytest.mark.slow
def test_the_probe_end_to_end_without_torch_xla(tmp_path):
    """The command as a user runs it (children and all), here without torch-xla: env and power
    run, the rest say why not."""
    documented_tree(tmp_path / "sys")
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "ppharness.run.neuronprobe", "--out", str(out), "--quick", "--sysfs",
            str(tmp_path / "sys"), "--power-s", "0.5", "--only", "env,power,trace_state"]  # fmt: skip
    env = {k: v for k, v in __import__("os").environ.items() if k != "PJRT_DEVICE"}
    done = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, timeout=300, env=env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    summary = json.loads((out / "probe.json").read_text())
    status = {name: e["status"] for name, e in summary["items"].items()}
    assert status == {"env": "ok", "power": "ok", "trace_state": "skipped"}
    assert summary["items"]["trace_state"]["reason"] and summary["host"]["versions"]["torch"]
    env_data = json.loads((out / "env.json").read_text())["data"]
    assert env_data["snapshot"] == "taken at ppharness import, before any vendor import"
    assert env_data["steps"][0]["import"] == "torch" and env_data["steps"][0]["status"] == "ok"
    assert "== power" in (out / "probe.log").read_text()


def test_the_power_phases_hold_whole_epoch_minutes():
    """The driver's minutes are epoch-aligned (tests/test_neuron_power.py): on hardware the idle
    phase ends one whole minute after the next boundary and the busy phase spans whole minutes,
    so each holds at least one; a rehearsal just halves its seconds."""
    m = 1_800_000_000 - 1_800_000_000 % 60
    idle_end, end = items.phase_bounds(m + 20, 180, aligned=True)
    assert idle_end == m + 120 and end == m + 240 + items.STAMP_MARGIN_S  # idle [m+60, m+120]; busy to m+240
    idle_end, end = items.phase_bounds(m, 180, aligned=True)  # on a boundary: that minute is whole
    assert idle_end == m + 60 and end == m + 180 + items.STAMP_MARGIN_S
    assert items.phase_bounds(m + 20, 4, aligned=False) == (m + 22, m + 24)
