"""The Neuron first-run probe (ppharness/run/neuronprobe.py) rehearsed on the XLA lane: the command
as a user runs it, with torch-xla 2.9 on its CPU PJRT device (`make test-xla`), into tmp_path. The
XLA parts run for real here (the environment around `import torch_xla`, `xm.get_memory_info`
around a lazy step, one training case timed per step and in blocks of 10); power runs against a
fake sysfs tree (tests/test_neuron_power.py); the items that need a NeuronCore or TorchNeuron must
be skipped with their reason. What the CPU lane's numbers say about a NeuronCore: nothing; what is
tested is that the probe's own code runs and writes its answers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO
from test_neuron_power import documented_tree

pytestmark = pytest.mark.xla


@pytest.fixture(scope="module")
def answers(tmp_path_factory):
    pytest.importorskip("torch_xla", reason="the XLA lane needs torch-xla (make test-xla)")
    if os.environ.get("PJRT_DEVICE", "CPU") != "CPU":
        pytest.skip(f"the XLA lane runs on PJRT_DEVICE=CPU, not {os.environ['PJRT_DEVICE']}")
    root = tmp_path_factory.mktemp("probe")
    documented_tree(root / "sys")
    env = {**os.environ, "PJRT_DEVICE": "CPU"}
    env.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")
    argv = [sys.executable, "-m", "ppharness.run.neuronprobe", "--out", str(root / "out"), "--quick",
            "--sysfs", str(root / "sys"), "--power-s", "1"]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, timeout=900, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = root / "out"
    return {p.stem: json.loads(p.read_text()) for p in out.glob("*.json")}


def test_every_item_answers_or_says_why_not(answers):
    status = {name: e["status"] for name, e in answers["probe"]["items"].items()}
    assert status == {"env": "ok", "memory_info": "ok", "torchneuron": "skipped", "trace_state": "skipped",
                      "compiler_cmd": "skipped", "power": "ok", "train": "ok"}  # fmt: skip
    assert "older than 2.13" in answers["torchneuron"]["reason"]
    for item in ("trace_state", "compiler_cmd"):
        assert "PJRT_DEVICE=CPU is the test lane" in answers[item]["reason"]
    assert answers["probe"]["host"]["versions"]["torch-xla"].startswith("2.9")


def test_env_records_what_import_torch_xla_writes(answers):
    steps = {s["import"]: s for s in answers["env"]["data"]["steps"]}
    assert steps["torch"]["status"] == "ok" and steps["torch_xla"]["status"] == "ok"
    assert isinstance(steps["torch_xla"]["changed"], dict)
    assert steps["torch_neuronx"]["status"] == "skipped"
    assert answers["env"]["data"]["vendor_vars_at_start"]["PJRT_DEVICE"] == "CPU"


def test_memory_info_is_read_around_a_lazy_step(answers):
    data = answers["memory_info"]["data"]
    assert data["pjrt_device"] == "CPU" and data["device"].startswith("xla")
    for when in ("before", "after_step", "after_free"):
        reading = data[when]
        if reading["ok"]:  # torch-xla's documented keys (init_python_bindings.cpp GetMemoryInfo)
            assert {"bytes_used", "bytes_limit", "peak_bytes_used"} <= set(reading["value"])
        else:  # the CPU device does not implement it (pytorch/xla#7086): the error is the answer
            assert reading["error"]


def test_train_is_timed_per_step_and_in_blocks(answers):
    data = answers["train"]["data"]
    assert data["backend"] == "neuron-xla" and data["lane"] == "cpu"
    assert [r["steps_per_sample"] for r in data["runs"]] == [1, 10, 1, 10]
    for run in data["runs"]:
        assert run["median_s"] > 0 and run["steps"] == run["n"] * run["steps_per_sample"]
        assert run["compiles_in_window"] == 0 and run["reasons"] == []
    assert len(data["per_step_over_block"]) == 2


def test_power_polls_the_fake_tree_while_the_xla_device_works(answers):
    data = answers["power"]["data"]
    assert data["files"]["neuron0"]["minute"].endswith("neuron0/stats/power/utilization")
    assert data["busy_work"]["device"].startswith("xla") and data["history"]
