"""`make gpu-check` (ppharness/run/gpucheck.py): the run files each GPU gets, the plan, and the check's own
plumbing (stages as child processes, timeouts, the budget, --resume, the log and the table),
rehearsed end to end on the CPU backend with the tiny model, so none of it is what fails on a GPU."""

from __future__ import annotations

import io
import sys

import pytest
import yaml
from conftest import REPO

from ppharness.core.device import DeviceInfo
from ppharness.errors import BenchError
from ppharness.facts import catalog
from ppharness.run import config, gpucheck, runner
from ppharness.run.gpucheck import Outcome, Plan, Stage


@pytest.mark.parametrize(
    ("name", "prefix", "instance"),
    [
        ("NVIDIA H200", "h200", "p5en.48xlarge"),
        ("NVIDIA H100 80GB HBM3", "h100", "p5.48xlarge"),
        ("NVIDIA A100-SXM4-40GB", "a100", "p4d.24xlarge"),
    ],
)
def test_each_gpu_gets_the_run_files_priced_as_its_instance(name, prefix, instance):
    assert gpucheck.prefix_for_device_name(name) == prefix
    for tail in ("", "-decode", "-auto"):
        cfg = config.load(REPO / "configs" / "runs" / f"{prefix}-llama3-1b{tail}.yaml")
        assert cfg.instance == instance and cfg.backends == ["cuda"] and cfg.model == "llama3-1b-shape"
        assert catalog.price(instance, cfg.price_basis, cfg.region).usd_per_hour > 0


@pytest.mark.parametrize("name", ["NVIDIA H200 NVL", "NVIDIA A100-SXM4-80GB", "NVIDIA GeForce RTX 4090"])
def test_a_gpu_without_run_files_is_one_clear_error(name):
    with pytest.raises(BenchError, match="run files"):
        gpucheck.prefix_for_device_name(name)


def test_h200_files_pass_the_instance_check_and_h100_files_refuse_an_h200():
    h200 = DeviceInfo(backend="cuda", name="NVIDIA H200", accelerator="h200-sxm", devices_used=1, devices_on_host=1)
    ok = runner.Pricing("p5en.48xlarge", "config")
    runner.check_instance(ok, h200)  # no error: priced as the instance built around it
    with pytest.raises(BenchError, match="p5en.48xlarge"):
        runner.check_instance(runner.Pricing("p5.48xlarge", "config"), h200)


def test_the_plan_fits_its_budget_and_rehearses_on_the_cpu(tmp_path):
    plan = gpucheck.load_plan()
    assert [s.name for s in plan.stages] == ["probe", "tests", "train-prefill", "decode", "kernels"]
    assert plan.budget_s <= 480 and plan.backend == "cuda"
    assert sum(s.estimate_s for s in plan.stages) <= plan.budget_s - plan.reserve_s
    assert all(s.estimate_s <= s.timeout_s for s in plan.stages)
    decode = gpucheck.stage_argv(plan.stages[3], plan, tmp_path, True, "h200", gpucheck.PLAN)
    assert str(REPO / "configs/runs/h200-llama3-1b-decode.yaml") in decode and "--resume" in decode
    assert "compile=reduce-overhead" in decode and "scenarios.decode.batch=[1, 32, 128]" in decode
    kernels = gpucheck.stage_argv(plan.stages[4], plan, tmp_path, True, "h200", gpucheck.PLAN)
    assert kernels[kernels.index("--instance") + 1] == "p5en.48xlarge"

    cpu = gpucheck.load_plan(rehearse=True)
    assert cpu.backend == "cpu" and cpu.gpu == "h200" and cpu.rehearse
    train = gpucheck.stage_argv(cpu.stages[2], cpu, tmp_path, False, "h200", gpucheck.PLAN)
    assert train[train.index("--backend") + 1] == "cpu" and "model=tiny" in train and "--resume" not in train
    assert train[-1] == "compile=none"  # the rehearsal's run_set comes after the stage's own `set`


def test_a_bad_plan_is_one_line_and_exit_code_2(tmp_path, capsys):
    bad = tmp_path / "plan.yaml"
    bad.write_text(yaml.safe_dump({"budget_s": 10, "stages": [{"name": "x", "kind": "nope", "timeout_s": 1}]}))
    assert gpucheck.main(["--plan", str(bad), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "kind" in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()
    assert gpucheck.main(["--budget", "5", "--out", str(tmp_path / "out")]) == 2
    assert "--budget must exceed" in capsys.readouterr().err and not (tmp_path / "out").exists()


# ---------------------------------------------------------------- plumbing, with stand-in children
def _plan(*stages: Stage, budget: float = 60) -> Plan:
    return Plan("fake", budget, 0, 0.5, "cpu", list(stages), gpu="h200")


def _stand_ins(monkeypatch, scripts: dict[str, str]) -> None:
    """Each stage runs a short python script instead of its real command."""

    def argv(stage, plan, out, resume, gpu, plan_path):
        return [sys.executable, "-c", scripts[stage.name]]

    monkeypatch.setattr(gpucheck, "stage_argv", argv)


def test_a_stage_past_its_timeout_is_stopped_and_the_next_runs(tmp_path, monkeypatch):
    _stand_ins(monkeypatch, {
        "hang": "import time; print('started', flush=True); time.sleep(60)",
        "after": "print('after ran')",
    })  # fmt: skip
    plan = _plan(Stage("hang", "run", 1.0, 1.0, {}), Stage("after", "run", 10, 1, {}))
    echo = io.StringIO()
    got = gpucheck.run_check(plan, tmp_path, echo=echo)
    assert got["hang"].status == "timeout" and got["hang"].seconds < 30
    assert got["after"].status == "ok"
    log = (tmp_path / gpucheck.LOG).read_text()
    assert "started" in log and "after ran" in log and "== hang: timeout" in log
    state = yaml.safe_load((tmp_path / gpucheck.STATE).read_text())["stages"]
    assert state["hang"]["status"] == "timeout" and state["after"]["status"] == "ok"
    assert echo.getvalue().rstrip().endswith("ppharness/core/ceilings.py)")  # the table comes last


def test_resume_skips_finished_stages_and_runs_the_rest(tmp_path, monkeypatch):
    flag = tmp_path / "fail-once"
    flag.write_text("")
    script = f"import os, sys; p = {str(flag)!r}; sys.exit(1 if os.path.exists(p) and not os.remove(p) else 0)"
    _stand_ins(monkeypatch, {"one": "print('one')", "flaky": script, "tests": "import sys; sys.exit(1)"})
    stages = [Stage("one", "run", 10, 1, {}), Stage("flaky", "run", 10, 1, {}),
              Stage("tests", "pytest", 10, 1, {}, rerun_failed=False)]  # fmt: skip
    first = gpucheck.run_check(_plan(*stages), tmp_path, echo=None)
    assert [o.status for o in first.values()] == ["ok", "failed", "failed"]
    again = gpucheck.run_check(_plan(*stages), tmp_path, resume=True, echo=None)
    # finished: skipped; failed: run again; failed tests are a result, not run again
    assert [o.status for o in again.values()] == ["skipped", "ok", "skipped"]
    fresh = gpucheck.run_check(_plan(*stages), tmp_path, resume=False, echo=None)
    assert [o.status for o in fresh.values()] == ["ok", "ok", "failed"]


def test_a_stage_the_budget_cannot_fit_is_left_for_resume(tmp_path, monkeypatch):
    _stand_ins(monkeypatch, {"slow": "print('slow')", "late": "print('late')"})
    stages = [Stage("slow", "run", 10, 1, {}), Stage("late", "run", 10, 1, {})]
    ticks = iter(range(0, 10_000, 60))  # each look at the clock: one more minute gone
    got = gpucheck.run_check(_plan(*stages, budget=100), tmp_path, echo=None, clock=lambda: next(ticks))
    assert got["slow"].status == "ok" and got["late"].status == "not_run" and "--resume" in got["late"].note
    again = gpucheck.run_check(_plan(*stages), tmp_path, resume=True, echo=None)
    assert again["slow"].status == "skipped" and again["late"].status == "ok"


def test_sigterm_stops_the_stage_keeps_the_state_and_prints_the_table(tmp_path, monkeypatch):
    """An outer `timeout` sends SIGTERM: the running child's group is stopped, the state says
    interrupted, the table still comes, and the stages left run on --resume."""
    import signal

    _stand_ins(monkeypatch, {
        "term": "import os, signal, time; os.kill(os.getppid(), signal.SIGTERM); time.sleep(60)",
        "left": "print('left ran')",
    })  # fmt: skip
    stages = [Stage("term", "run", 30, 1, {}), Stage("left", "run", 10, 1, {})]
    previous = signal.signal(signal.SIGTERM, gpucheck._on_sigterm)
    try:
        echo = io.StringIO()
        got = gpucheck.run_check(_plan(*stages), tmp_path, echo=echo)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert got["term"].status == "interrupted" and got["term"].seconds < 30 and "left" not in got
    assert echo.getvalue().rstrip().endswith("ppharness/core/ceilings.py)")
    assert yaml.safe_load((tmp_path / gpucheck.STATE).read_text())["stages"]["term"]["status"] == "interrupted"
    _stand_ins(monkeypatch, {"term": "print('term ran')", "left": "print('left ran')"})
    again = gpucheck.run_check(_plan(*stages), tmp_path, resume=True, echo=None)
    assert [o.status for o in again.values()] == ["ok", "ok"]


def test_the_table_scores_records_against_the_targets(tmp_path):
    from ppharness.record.writer import ResultWriter

    rec = {
        "schema_version": 1, "run_id": "r", "created_at": "2026-11-30T00:00:00+00:00", "status": "ok", "reason": "",
        "device": {}, "timing": {}, "ceilings": {"copy_gbps": 4000.0},
        "workload": {"scenario": "decode", "batch": 1, "prompt_len": 512, "new_tokens": 128, "dtype": "bfloat16",
                     "compile": "reduce-overhead"},
        "metrics": {"tokens_per_s": 1500.0, "mfu": None, "mbu": 0.62, "achieved_gbps": 2976.0,
                    "energy_j_per_token": 0.4},
        "cost": {"usd_per_million_tokens": 1.47},
    }  # fmt: skip
    ResultWriter(tmp_path / "x.jsonl").write(rec)
    plan = gpucheck.load_plan()
    text = gpucheck.table(plan, tmp_path, {"decode": Outcome("ok", 0, 12.0)}, 13.0)
    row = next(line for line in text.splitlines() if line.startswith("decode 1x512+128"))
    assert "62.0%" in row and "74.4%" in row and "MBU >= 60%: met" in row and "1.47" in row


# ---------------------------------------------------------------- the dress rehearsal
@pytest.mark.slow
def test_the_rehearsal_runs_every_stage_and_resumes_with_nothing_left(tmp_path, capsys):
    """The real plan and commands on the CPU backend (tiny model): probe, pytest, two runs, the
    kernels, the table; then --resume finds nothing left to do."""
    assert gpucheck.main(["--rehearse", "--out", str(tmp_path)]) == 0, (tmp_path / gpucheck.LOG).read_text()[-3000:]
    out = capsys.readouterr().out
    state = yaml.safe_load((tmp_path / gpucheck.STATE).read_text())
    assert {k: v["status"] for k, v in state["stages"].items()} == dict.fromkeys(
        ["probe", "tests", "train-prefill", "decode", "kernels"], "ok"
    )
    probe = yaml.safe_load((tmp_path / gpucheck.PROBE).read_text())
    assert probe["gpu"] == "h200" and probe["ceilings"]["copy_gbps"] > 0 and probe["sdpa"]
    from ppharness.run.resume import read_folder

    records = read_folder(tmp_path)
    model = sorted(
        (r["workload"]["scenario"], r["workload"]["batch"]) for r in records if "kernel" not in r["workload"]
    )
    assert model == [("decode", 1), ("decode", 2), ("prefill", 2), ("train", 2)]
    assert all(r["status"] == "ok" for r in records), [(r["workload"]["scenario"], r["reason"]) for r in records]
    assert len(records) > len(model)  # the kernel rows
    assert all(r["cost"]["instance"] == "p5en.48xlarge" for r in records)
    assert "train 2x32 float32 none" in out.split("== gpu-check (rehearsal")[-1]

    assert gpucheck.main(["--rehearse", "--out", str(tmp_path), "--resume"]) == 0
    again = capsys.readouterr().out
    assert again.count(": skipped,") == 5 and len(read_folder(tmp_path)) == len(records)
    assert "decode 1x16+8 float32 none" in again  # the table is rebuilt from the records
