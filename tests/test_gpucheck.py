"""The GPU check (ppharness/run/gpucheck.py, gpuhost.py, gpureport.py): the run files each GPU gets,
the plan (stage order, per-GPU sizes against the memory plan, the allocator), the check's own
plumbing (the output folder, the versions line, stages as child processes that die with the check,
timeouts, the budget, --resume across machines, compile seconds, the log and the table), and the
exact command a GPU machine runs, rehearsed end to end on the CPU backend with the tiny model."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from conftest import REPO

from ppharness.core.device import DeviceInfo
from ppharness.errors import BenchError
from ppharness.facts import catalog
from ppharness.run import config, gpucheck, gpuhost, gpureport, memplan, runner
from ppharness.run.gpucheck import Plan, Stage
from ppharness.run.gpuhost import GPU, HostFacts, Outcome


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


def test_the_plan_puts_the_headline_figures_first_and_fits_its_budget(tmp_path):
    plan = gpucheck.load_plan()
    assert [s.name for s in plan.stages] == ["probe", "decode", "train-prefill", "kernels", "tests"]
    assert plan.budget_s <= 480 and plan.backend == "cuda"
    assert sum(s.estimate_s for s in plan.stages) <= plan.budget_s - plan.reserve_s
    assert all(s.estimate_s <= s.timeout_s for s in plan.stages)
    decode = gpucheck.stage_argv(plan.stages[1], plan, tmp_path, True, "h200", gpucheck.PLAN)
    assert str(REPO / "configs/runs/h200-llama3-1b-decode.yaml") in decode and "--resume" in decode
    assert "compile=reduce-overhead" in decode and "scenarios.decode.batch=[1, 32, 128]" in decode
    kernels = gpucheck.stage_argv(plan.stages[3], plan, tmp_path, True, "h200", gpucheck.PLAN)
    assert kernels[kernels.index("--instance") + 1] == "p5en.48xlarge"

    cpu = gpucheck.load_plan(rehearse=True)
    assert cpu.backend == "cpu" and cpu.gpu == "h200" and cpu.rehearse
    train = gpucheck.stage_argv(cpu.stages[2], cpu, tmp_path, False, "h200", gpucheck.PLAN)
    assert train[train.index("--backend") + 1] == "cpu" and "model=tiny" in train and "--resume" not in train
    assert "scenarios={train: {batch: 2, seq_len: 32}, prefill: {batch: 2, prompt_len: 32}}" in train  # h200's size
    assert train[-1] == "compile=none"  # the rehearsal's run_set comes after the stage's own `set` and `sizes`


def _planned_train(plan: Plan, gpu: str) -> tuple[list, str, list]:
    stage = next(s for s in plan.stages if s.name == "train-prefill")
    cfg = config.load(REPO / "configs" / "runs" / f"{gpu}-llama3-1b.yaml", gpucheck.stage_sets(stage, plan, gpu))
    return memplan.plan_run(cfg, 1)


@pytest.mark.parametrize("gpu", ["h200", "h100", "a100"])
def test_each_gpu_trains_at_a_size_its_memory_plan_fits(gpu):
    """The plan's per-GPU sizes fit each device by the memory plan (90% of its memory); the one
    size for all, 8 x 2048, is planned at 77.1 GiB, over an H100's 72 GiB usable."""
    rows, device, refusals = _planned_train(gpucheck.load_plan(), gpu)
    assert rows and not refusals, refusals
    assert all(p.fits and p.seq_len == 2048 for _, p in rows), device
    one_size = config.load(REPO / "configs/runs/h100-llama3-1b.yaml", ["scenarios={train: {batch: 8, seq_len: 2048}}"])
    assert memplan.plan_run(one_size, 1)[2]  # what the plan used to run on an H100: refused by the memory plan


def test_a_gpu_the_plan_does_not_size_is_one_clear_line(tmp_path):
    plan = gpucheck.load_plan()
    stage = next(s for s in plan.stages if s.name == "train-prefill")
    with pytest.raises(BenchError, match=r"no entry for l40s; add sizes.l40s"):
        gpucheck.stage_argv(stage, plan, tmp_path, False, "l40s", gpucheck.PLAN)
    decode = next(s for s in plan.stages if s.name == "decode")  # not sized per GPU: any GPU's run files
    assert "--set" in gpucheck.stage_argv(decode, plan, tmp_path, False, "a100", gpucheck.PLAN)


def test_run_stages_get_expandable_segments_unless_the_user_set_the_allocator():
    plan = gpucheck.load_plan()
    by = {s.name: s for s in plan.stages}
    env = gpucheck.stage_env(by["decode"], plan, environ={})
    assert env["PYTORCH_ALLOC_CONF"] == env["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True"
    assert env["PPBENCH_KEEP_WEIGHTS"] == "1"
    assert gpucheck.stage_env(by["tests"], plan, environ={}) == {}  # the tests run as a user runs them
    mine = gpucheck.stage_env(by["kernels"], plan, environ={"PYTORCH_CUDA_ALLOC_CONF": "max_split_size_mb:512"})
    assert "PYTORCH_ALLOC_CONF" not in mine and "PYTORCH_CUDA_ALLOC_CONF" not in mine  # torch reads the new one first
    assert (
        gpucheck.stage_env(by["decode"], plan, environ={"PPBENCH_KEEP_WEIGHTS": "0"}).get("PPBENCH_KEEP_WEIGHTS")
        is None
    )


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
REAL_HOST_FACTS = gpuhost.host_facts


def _facts(kind: str = "cuda: NVIDIA H200 143771 MiB") -> HostFacts:
    versions = {"python": "3.12.3", "torch": "2.11.0+cu130", "cuda": "13.0", "nvidia-cudnn-cu13": "9.15.1.9",
                "triton": "3.6.0", "scipy": "1.16.3", "numpy": "2.5.2", "pandas": "2.3.3", "pytest": "9.0.1"}  # fmt: skip
    gpus = [GPU(kind.split(": ", 1)[1].rsplit(" ", 2)[0], 143771, "580.159.03")]
    return HostFacts(versions, gpus, "NVML", 12 * 2**30, {"git_sha": "abc1234"}, kind)


@pytest.fixture(autouse=True)
def _no_gpu_query(monkeypatch):
    """The stand-in plumbing tests run as on an H200 host; the tests of host_facts itself use REAL_HOST_FACTS."""
    monkeypatch.setattr(gpuhost, "host_facts", lambda rehearse: _facts())


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
    assert echo.getvalue().rstrip().endswith(gpureport.LEGEND)  # the table comes last


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


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_signal_stops_the_stage_keeps_the_state_and_prints_the_table(tmp_path, monkeypatch, sig):
    """An outer `timeout` sends SIGTERM, a closing session SIGHUP: the running child's group is
    stopped, the state says interrupted, the table still comes, and the stages left run on --resume."""
    _stand_ins(monkeypatch, {
        "term": f"import os, time; os.kill(os.getppid(), {int(sig)}); time.sleep(60)",
        "left": "print('left ran')",
    })  # fmt: skip
    stages = [Stage("term", "run", 30, 1, {}), Stage("left", "run", 10, 1, {})]
    previous = signal.signal(sig, gpucheck._on_signal)
    try:
        echo = io.StringIO()
        got = gpucheck.run_check(_plan(*stages), tmp_path, echo=echo)
    finally:
        signal.signal(sig, previous)
    assert got["term"].status == "interrupted" and got["term"].seconds < 30 and "left" not in got
    assert echo.getvalue().rstrip().endswith(gpureport.LEGEND)
    assert yaml.safe_load((tmp_path / gpucheck.STATE).read_text())["stages"]["term"]["status"] == "interrupted"
    _stand_ins(monkeypatch, {"term": "print('term ran')", "left": "print('left ran')"})
    again = gpucheck.run_check(_plan(*stages), tmp_path, resume=True, echo=None)
    assert [o.status for o in again.values()] == ["ok", "ok"]


def test_a_second_machine_of_the_same_kind_resumes_and_another_kind_starts_over(tmp_path, monkeypatch):
    """Resuming on another H200 (another host) skips what finished; on an H100 every stage runs
    again, and the H200 probe's run files are not handed to it."""
    _stand_ins(monkeypatch, {"probe": "print('probe')", "decode": "print('decode')"})
    stages = [Stage("probe", "probe", 10, 1, {}), Stage("decode", "run", 10, 1, {})]
    h200, h100 = _facts(), _facts("cuda: NVIDIA H100 80GB HBM3 81559 MiB")
    (tmp_path / gpucheck.PROBE).write_text(yaml.safe_dump({"gpu": "h200", "device_kind": h200.device_kind}))
    assert [o.status for o in gpucheck.run_check(_plan(*stages), tmp_path, echo=None, facts=h200).values()] == [
        "ok"
    ] * 2
    again = gpucheck.run_check(_plan(*stages), tmp_path, resume=True, echo=None, facts=_facts())  # another H200 host
    assert [o.status for o in again.values()] == ["skipped", "skipped"]
    other = gpucheck.run_check(_plan(*stages), tmp_path, resume=True, echo=None, facts=h100)
    assert [o.status for o in other.values()] == ["ok", "ok"]
    assert gpucheck._gpu_from_probe(tmp_path, h200.device_kind) == "h200"
    assert gpucheck._gpu_from_probe(tmp_path, h100.device_kind) is None  # re-probed, never borrowed
    assert gpucheck.fingerprint(["py", "-m", "x"], h200.device_kind) != gpucheck.fingerprint(
        ["py", "-m", "x"], h100.device_kind
    )
    # the folder carried to the next machine sits elsewhere: still the same stage
    here, there = Path("/tmp/a/out"), Path("/work/repo/.gpu-check")
    same = [gpucheck.fingerprint(["py", "--out", str(p)], "k", None, p) for p in (here, there)]
    assert same[0] == same[1]


def test_each_stage_prints_and_records_its_compile_seconds(tmp_path, monkeypatch):
    """From the records the stage appended: each case's compile_s plus the checks it ran."""
    (tmp_path / "old.jsonl").write_text(json.dumps({"timing": {"compile_s": 99.0}}) + "\n")  # an earlier run's
    write = textwrap.dedent(f"""
        import json
        with open({str(tmp_path / "old.jsonl")!r}, "a") as f:
            f.write(json.dumps({{"timing": {{"compile_s": 30.0, "check_s": 12.5}}}}) + "\\n")
            f.write(json.dumps({{"timing": {{"compile_s": 20.0, "check_s": 0.0}}}}) + "\\n")
            f.write('{{"torn')
    """)
    _stand_ins(monkeypatch, {"decode": write, "tests": "print('no records')"})
    echo = io.StringIO()
    got = gpucheck.run_check(_plan(Stage("decode", "run", 10, 1, {}), Stage("tests", "pytest", 10, 1, {})),
                             tmp_path, echo=echo)  # fmt: skip
    assert got["decode"].compile_s == 62.5 and got["tests"].compile_s is None
    state = yaml.safe_load((tmp_path / gpucheck.STATE).read_text())["stages"]
    assert (state["decode"]["compile_s"], state["decode"]["check_s"], state["decode"]["records"]) == (62.5, 12.5, 2)
    assert (
        "== decode: ok in" in echo.getvalue()
        and "compile 62.5 s over 2 record(s), checks 12.5 s of it" in echo.getvalue()
    )
    row = next(line for line in echo.getvalue().splitlines() if line.startswith("decode ") and " ok " in line)
    assert row.split()[3] == "62.5"  # the table's compile column


def test_a_killed_check_takes_its_stage_with_it(tmp_path):
    """SIGKILL to the check (no handler can run) must not leave its stage on the GPU: the stage
    process asked the kernel for SIGKILL when its parent dies (PR_SET_PDEATHSIG)."""
    if not sys.platform.startswith("linux"):
        pytest.skip("PR_SET_PDEATHSIG is Linux's")
    pid_file = tmp_path / "child.pid"
    child = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(120)"
    parent = textwrap.dedent(f"""
        import io, sys
        from ppharness.run import gpuhost
        gpuhost.execute([sys.executable, "-c", {child!r}], 120, io.StringIO())
    """)
    proc = subprocess.Popen([sys.executable, "-c", parent], cwd=REPO)
    try:
        deadline = time.monotonic() + 60
        while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
            time.sleep(0.1)
        pid = int(pid_file.read_text())
        assert _alive(pid)
        proc.kill()  # SIGKILL: the check gets no chance to stop its child itself
        proc.wait(10)
        deadline = time.monotonic() + 10
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(pid), "the stage outlived the killed check"
    finally:
        proc.kill()
        if pid_file.exists() and pid_file.read_text() and _alive(int(pid_file.read_text())):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for its reaper counts as dead)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status and "\nState:\tX" not in status


# ---------------------------------------------------------------- before anything runs
def test_the_output_folder_is_required_and_the_cache_is_kept_out_of_it(tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    assert gpucheck.main(["--rehearse"]) == 2
    assert "--out DIR is required" in capsys.readouterr().err
    monkeypatch.setenv("PPBENCH_CACHE_DIR", str(out / "cache"))
    assert gpucheck.main(["--rehearse", "--out", str(out)]) == 2
    got = capsys.readouterr()
    assert got.out.startswith(f"gpu-check: output folder {out}\n")  # first, whatever follows
    assert "is inside the output folder" in got.err and got.err.count("\n") == 1 and not out.exists()
    monkeypatch.setenv("PPBENCH_CACHE_DIR", str(tmp_path / "cache"))  # a sibling: fine
    gpucheck.check_out(out.resolve())


def test_the_versions_line_names_what_the_numbers_depend_on():
    line = _facts().line()
    for part in ("torch 2.11.0+cu130", "CUDA 13.0", "cuDNN 9.15.1.9 (nvidia-cudnn-cu13)", "triton 3.6.0", "scipy 1.16.3",
                 "numpy 2.5.2", "GPU NVIDIA H200 x1, 143,771 MiB, driver 580.159.03", "host MemTotal 12.0 GiB",
                 "commit abc1234"):  # fmt: skip
        assert part in line, (part, line)
    here = REAL_HOST_FACTS(rehearse=True)  # this host: read without importing torch
    assert here.versions["torch"] and here.versions["scipy"] and here.device_kind.startswith("cpu: ")
    assert here.versions["cuda"] is None  # CPU torch's version.py says cuda = None
    assert "commit " in here.line() and "versions: python" in here.line()


def test_a_python_that_lacks_what_the_checkout_needs_is_refused_before_anything_runs():
    have = {"torch": "2.11.0+cu130", "scipy": "1.11.4", "numpy": "2.5.2"}.get
    assert gpuhost.unmet(["torch>=2.9", "scipy>=1.13", "numpy>=1.26", "typer>=0.12"], have) == [
        "scipy>=1.13 (has 1.11.4)", "typer>=0.12 (not installed)"
    ]  # fmt: skip
    with pytest.raises(BenchError, match=r"lacks what the checkout needs: scipy>=99 \(has .*versions: python"):
        gpucheck.check_versions(_facts(), ["scipy>=99"])
    assert gpucheck.check_versions(_facts(), ["matplotlib>=99"]) == [
        "warning: matplotlib>=99 (has " + gpuhost.version("matplotlib") + "): reports need it, the check does not"
    ]
    assert "torch>=2.9" in gpuhost.requirements() and gpucheck.check_versions(_facts()) == []  # this venv has all


def test_host_facts_read_files_and_nvidia_smi_not_the_gpu(tmp_path, monkeypatch):
    (tmp_path / "meminfo").write_text("MemTotal:       12582912 kB\nMemFree: 1 kB\n")
    assert gpuhost.mem_total_bytes(tmp_path / "meminfo") == 12 * 2**30
    assert gpuhost.mem_total_bytes(tmp_path / "missing") is None
    monkeypatch.setitem(sys.modules, "pynvml", None)  # no nvidia-ml-py: nvidia-smi's CSV instead
    smi = lambda argv, **kw: subprocess.CompletedProcess(argv, 0, "NVIDIA H100 80GB HBM3, 81559, 580.159.04\n", "")  # noqa: E731
    assert gpuhost.gpus(run=smi) == ([GPU("NVIDIA H100 80GB HBM3", 81559, "580.159.04")], "nvidia-smi")

    def absent(argv, **kw):
        raise FileNotFoundError("nvidia-smi")

    assert gpuhost.gpus(run=absent)[0] == []
    pkg = tmp_path / "torch"
    pkg.mkdir()
    (pkg / "version.py").write_text("__version__ = '2.11.0+cu130'\ncuda: Optional[str] = '13.0'\n")
    spec = SimpleNamespace(submodule_search_locations=[str(pkg)])
    monkeypatch.setattr(gpuhost.importlib.util, "find_spec", lambda name: spec)
    assert gpuhost.torch_cuda() == "13.0"


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
    train = {**rec, "workload": {"scenario": "train", "batch": 8, "seq_len": 2048, "dtype": "bfloat16", "compile": "default"},
             "metrics": {"tokens_per_s": 5e4, "mfu": 0.47, "mfu_causal": 0.41}}  # fmt: skip
    rec["timing"] = {"execution": {"sdpa": "math", "sdpa_ran": "cudnn_attention"}, "launch_bound": True}
    ResultWriter(tmp_path / "x.jsonl").write(rec)
    ResultWriter(tmp_path / "x.jsonl").write(train)
    plan = gpucheck.load_plan()
    text = gpureport.table(plan, tmp_path, {"decode": Outcome("ok", 0, 12.0, compile_s=40.0)}, 13.0)
    row = next(line for line in text.splitlines() if line.startswith("decode 1x512+128"))
    assert "62.0%" in row and "74.4%" in row and "MBU >= 60%: met" in row and "1.47" in row
    assert " cudnn " in row and row.endswith("launch-bound")  # the kernel the step ran, not the dispatcher's guess
    row = next(line for line in text.splitlines() if line.startswith("train 8x2048"))
    assert "47.0%" in row and "41.0%" in row and "MFU >= 45%: met (causal 41.0%)" in row
    assert next(line for line in text.splitlines() if line.startswith("decode   ")).split()[3] == "40.0"


# ---------------------------------------------------------------- the dress rehearsal
def test_the_docs_give_the_command_a_gpu_machine_runs():
    text = (REPO / "docs" / "gpu.md").read_text()
    assert " ".join(gpucheck.COMMAND) in text and "PPBENCH_GIT_SHA=" in text


@pytest.mark.slow
def test_the_rehearsal_runs_the_gpu_command_into_a_named_folder_and_resumes_with_nothing_left(tmp_path):
    """The command a GPU machine runs (COMMAND, from the checkout, no make), with --rehearse: the
    real plan and stages on the CPU backend (tiny model) in the new order, sized for the GPU the
    plan names; every file in the named folder, the ceilings cache outside it; then --resume
    finds nothing left to do."""
    out = tmp_path / "gpu-check"
    argv = [sys.executable, *gpucheck.COMMAND[1:], str(out), "--rehearse"]
    env = {**os.environ, "PPBENCH_CACHE_DIR": str(tmp_path / "cache")}  # a sibling, as on a GPU machine
    env.pop("PYTORCH_ALLOC_CONF", None), env.pop("PYTORCH_CUDA_ALLOC_CONF", None)
    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[0] == f"gpu-check: output folder {out}"
    first_stage = next(i for i, line in enumerate(lines) if line.startswith("== probe (probe;"))
    assert any(line.startswith("== versions: python") for line in lines[:first_stage])  # before anything runs
    started = [line.split()[1] for line in lines if line.startswith("== ") and "; timeout " in line]
    assert started == ["probe", "decode", "train-prefill", "kernels", "tests"]  # headline figures first
    assert "PYTORCH_ALLOC_CONF=expandable_segments:True" in next(x for x in lines if x.startswith("== decode (run;"))
    assert "scenarios={train: {batch: 2, seq_len: 32}" in next(
        x for x in lines if x.startswith("== train-prefill (run;")
    )
    state = yaml.safe_load((out / gpucheck.STATE).read_text())
    assert {k: v["status"] for k, v in state["stages"].items()} == dict.fromkeys(started, "ok")
    assert all(state["stages"][k]["compile_s"] is not None for k in ("decode", "train-prefill", "kernels"))
    assert state["stages"]["decode"]["check_s"] > 0  # the decode check ran, once, and its time is said
    probe = yaml.safe_load((out / gpucheck.PROBE).read_text())
    assert probe["gpu"] == "h200" and probe["ceilings"]["copy_gbps"] > 0 and probe["sdpa"]
    assert probe["device_kind"] == state["device_kind"]
    files = sorted(p.name for p in out.iterdir())
    assert [f for f in files if not f.endswith(".jsonl")] == sorted([gpucheck.LOG, gpucheck.PROBE, gpucheck.STATE])
    assert not list(out.rglob("*.json"))  # the ceilings cache (if a quiet enough host wrote one) is the sibling's
    records = gpureport.read_out(out)
    model = sorted(
        (r["workload"]["scenario"], r["workload"]["batch"]) for r in records if "kernel" not in r["workload"]
    )
    assert model == [("decode", 1), ("decode", 2), ("prefill", 2), ("train", 2)]
    assert all(r["status"] == "ok" for r in records), [(r["workload"]["scenario"], r["reason"]) for r in records]
    assert len(records) > len(model)  # the kernel rows
    assert all(r["cost"]["instance"] == "p5en.48xlarge" for r in records)
    for r in records:
        if r["workload"]["scenario"] == "decode":
            assert r["timing"]["steps_per_sample"] > 1, r["timing"]["blocking"]  # timed in blocks, as on a GPU
            assert r["timing"]["execution"]["sdpa_ran"] == "flash_attention"  # what the step ran, seen
            assert r["validity"]["check"]["part"] == "decode"  # no repeated forward check
    assert "train 2x32 float32 none" in done.stdout.split("== gpu-check (rehearsal")[-1]

    again = subprocess.run([*argv, "--resume"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert again.stdout.count(": skipped,") == 5 and len(gpureport.read_out(out)) == len(records)
    assert "decode 1x16+8 float32 none" in again.stdout  # the table is rebuilt from the records
