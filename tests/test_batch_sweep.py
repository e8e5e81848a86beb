"""OOM handling through the runner, `batch: auto` (ppharness/run/sweep.py), and the shipped GPU run files.

No GPU needed: out-of-memory is injected (a CPU backend whose compile step raises a wrapped
torch.OutOfMemoryError, classified by the CUDA backend's is_oom), and the auto sweep's stopping
rules are driven by a fake throughput curve. The run files are loaded and validated, not run.
"""

from __future__ import annotations

import pytest
import torch
from conftest import REPO, SMOKE

from ppharness import backends
from ppharness.backends.cpu import CPUBackend
from ppharness.backends.cuda import CUDABackend
from ppharness.core.device import MemoryStats
from ppharness.core.scenarios import Case
from ppharness.errors import BenchError
from ppharness.facts import catalog
from ppharness.record.load import load
from ppharness.run import config, runner, sweep


@pytest.fixture(autouse=True)
def _shipped_catalog(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PPBENCH_CONFIG_DIR", raising=False)


# ---------------------------------------------------------------- out of memory, through the runner


class OOMBackend(CPUBackend):
    """A CPU backend that runs out of memory like a GPU: from batch `limit` up, the compiler
    fails with a wrapped torch.OutOfMemoryError (as inductor's autotuning does). OOM errors are
    classified by the CUDA backend's is_oom; releases are counted."""

    limit = 4
    released = 0
    is_oom = CUDABackend.is_oom

    def prepare(self, module, example_inputs, scenario, compile_mode):
        if scenario != "check" and example_inputs[0].shape[0] >= self.limit:
            inner = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
            raise type("BackendCompilerFailed", (RuntimeError,), {})("backend='inductor' raised") from inner
        return module

    def release_memory(self) -> None:
        type(self).released += 1
        super().release_memory()


def _run(tmp_path, monkeypatch, overrides, limit, ceilings=lambda *a: None):
    monkeypatch.setitem(backends.REGISTRY, "oom-fake", OOMBackend)
    monkeypatch.setattr(OOMBackend, "name", "oom-fake")
    monkeypatch.setattr(OOMBackend, "limit", limit)
    monkeypatch.setattr(OOMBackend, "released", 0)
    monkeypatch.setattr(runner.ceilings, "get_ceilings", ceilings)  # measured ceilings: not tested here
    cfg = config.load(SMOKE, ["timing.min_seconds=0", "timing.min_iters=2", *overrides], backend="oom-fake")
    return load(runner.run(cfg, tmp_path))


def test_oom_in_a_batch_list_is_recorded_and_the_sweep_goes_on(tmp_path, monkeypatch):
    scen = "scenarios={train: {batch: [1, 2, 4, 8], seq_len: 8}, prefill: {batch: 1, prompt_len: 8}}"
    df = _run(tmp_path, monkeypatch, [scen], limit=4)
    assert list(df["workload.scenario"]) == ["train"] * 4 + ["prefill"]
    assert list(df["status"]) == ["ok", "ok", "oom", "oom", "ok"]  # wrapped OOM: oom, not compile_error
    assert "BackendCompilerFailed" in df["reason"].iloc[2]
    assert df["metrics.tokens_per_s"].isna().tolist() == [False, False, True, True, False]
    assert OOMBackend.released == 5 + 1  # after every case, the failed ones included, and after the one check


def test_batch_auto_stops_at_the_first_oom(tmp_path, monkeypatch):
    df = _run(tmp_path, monkeypatch, ["scenarios={prefill: {batch: auto, prompt_len: 8}}"], limit=2)
    assert list(df["workload.batch"]) == [1, 2] and list(df["status"]) == ["ok", "oom"]
    assert df["workload.batch_auto"].all()
    assert df["workload.batch_auto_stop"].isna().iloc[0] and df["workload.batch_auto_stop"].iloc[1] == "oom at batch 2"


def test_peak_memory_is_the_cases_not_the_ceiling_measurements(tmp_path, monkeypatch):
    """The first case of a dtype also measures the device's ceilings (big GEMM and copy
    buffers); the case's peak memory is read before that, so it is the step's own."""
    measured = []  # non-empty once the ceilings were measured
    monkeypatch.setattr(OOMBackend, "memory", lambda self: MemoryStats(2 if measured else 1, 3 if measured else 1))
    monkeypatch.setattr(OOMBackend, "reset_peak_memory", lambda self: measured.clear())  # a new case's peak
    scen = ["scenarios={prefill: {batch: [1, 2], prompt_len: 8}}"]
    df = _run(tmp_path, monkeypatch, scen, limit=99, ceilings=lambda *a: measured.append(1))
    assert list(df["metrics.peak_mem_bytes"]) == [1, 1]
    assert list(df["metrics.peak_mem_reserved_bytes"]) == [1, 1]


# ---------------------------------------------------------------- batch: auto, the logic


def _curve(tokens_per_s: dict[int, float | str]):
    """A fake `measure`: tokens/s per batch, or a status string for a failed case."""
    seen = []

    def measure_case(case: Case) -> dict:
        seen.append(case.batch)
        value = tokens_per_s[case.batch]
        if isinstance(value, str):
            return {"status": value, "metrics": {}, "workload": {}}
        return {"status": "ok", "metrics": {"tokens_per_s": value}, "workload": {}}

    return measure_case, seen


FIRST = Case("decode", batch=1, dtype="bfloat16", compile="none", prompt_len=8, new_tokens=4)


def test_auto_doubles_until_throughput_stops_rising():
    measure_case, seen = _curve({1: 100.0, 2: 190.0, 4: 360.0, 8: 365.0, 16: 900.0})
    records = [r for _, r in sweep.auto_batches(FIRST, measure_case)]
    assert seen == [1, 2, 4, 8]  # 365 is only +1.4% over 360: stop, never try 16
    assert [r["workload"]["batch_auto_stop"] for r in records][:-1] == [None, None, None]
    assert "+1.4%" in records[-1]["workload"]["batch_auto_stop"]


def test_auto_compares_with_the_best_so_far_and_stops_on_a_drop():
    measure_case, seen = _curve({1: 100.0, 2: 250.0, 4: 240.0})
    list(sweep.auto_batches(FIRST, measure_case))
    assert seen == [1, 2, 4]


def test_auto_stops_on_oom_or_error_and_at_the_cap():
    measure_case, seen = _curve({1: 100.0, 2: 200.0, 4: "oom"})
    last = list(sweep.auto_batches(FIRST, measure_case))[-1][1]
    assert seen == [1, 2, 4] and last["workload"]["batch_auto_stop"] == "oom at batch 4"
    measure_case, seen = _curve({1: "compile_error"})
    assert [c.batch for c, _ in sweep.auto_batches(FIRST, measure_case)] == [1]
    measure_case, seen = _curve({b: float(b) for b in (1, 2, 4, 8)})
    last = list(sweep.auto_batches(FIRST, measure_case, max_batch=8))[-1][1]
    assert seen == [1, 2, 4, 8] and "maximum batch 8" in last["workload"]["batch_auto_stop"]


def test_batch_auto_in_run_files():
    cfg = config.load(SMOKE, ["scenarios.train.batch=auto"])
    train = [c for c in config.expand(cfg) if c.scenario == "train"]
    assert [c.batch for c in train] == [sweep.START_BATCH] and sweep.is_auto(cfg.scenarios, train[0])
    assert not any(sweep.is_auto(cfg.scenarios, c) for c in config.expand(cfg) if c.scenario != "train")


@pytest.mark.parametrize(
    "override",
    [
        "scenarios.train.batch=Auto",
        "scenarios.train.batch=[auto, 2]",
        "scenarios.train.batch=max",
        "scenarios.train.seq_len=auto",
    ],
)
def test_auto_is_only_the_exact_string_for_batch(override):
    with pytest.raises(BenchError) as exc:
        config.load(SMOKE, [override])
    assert "must be a positive integer" in str(exc.value) and "\n" not in str(exc.value)


# ---------------------------------------------------------------- the shipped GPU run files

GPU_RUNS = {"h100": ("h100-sxm", "p5.48xlarge"), "a100": ("a100-sxm4-40gb", "p4d.24xlarge")}


@pytest.mark.parametrize("path", sorted((REPO / "configs" / "runs").glob("[ah]100-*.yaml")), ids=lambda p: p.stem)
def test_gpu_run_files_validate_and_price_one_gpu_of_the_instance(path, monkeypatch):
    cfg = config.load(path)
    accelerator, instance = GPU_RUNS[path.stem.split("-")[0]]
    assert cfg.backends == ["cuda"] and cfg.model == "llama3-1b-shape" and cfg.dtype == "bfloat16"
    assert cfg.instance == instance and catalog.instance(instance).accelerator == accelerator
    assert catalog.share(1, catalog.instance(instance)) == 1 / 8  # one of the instance's 8 GPUs
    assert config.expand(cfg)
    monkeypatch.setattr(runner.sysinfo, "ec2_instance_type", lambda: None)
    assert runner.resolve_instance(cfg).source == "config"  # off that instance: "priced as"


def test_gpu_run_files_cover_every_scenario_and_cuda_graph_decode():
    cases = [c for p in (REPO / "configs" / "runs").glob("h100-*.yaml") for c in config.expand(config.load(p))]
    assert {c.scenario for c in cases} == {"train", "prefill", "decode"}
    assert any(c.scenario == "decode" and c.compile == "reduce-overhead" for c in cases)
    assert len({c.batch for c in cases if c.scenario == "decode"}) > 1  # several batches


@pytest.mark.parametrize("gpu", ["a100", "h100", "h200"])
def test_make_gpu_bench_measures_the_three_target_figures(gpu):
    """`make gpu-bench` (docs/gpu.md: a GPU host with torch already installed) loads and expands to a
    compiled bf16 train and prefill at 4 x 2048 and CUDA-graph decode from batch 1, on cuda, for
    each GPU's run files (GPU_RUNS names them; on a GPU host `ppharness.run.gpucheck --which` does)."""
    import shlex
    import shutil
    import subprocess

    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    dry = subprocess.run(
        ["make", "-s", "-n", "gpu-bench", f"GPU_RUNS={gpu}"], cwd=REPO, capture_output=True, text=True, check=True
    )
    text = dry.stdout.replace("\\\n", " ").replace("$gpu", gpu)  # make -n prints, the shell would expand
    commands = [shlex.split(line) for line in text.splitlines() if " run " in line]
    commands = [argv for line in commands for argv in _split_and(line)]
    assert len(commands) == 2, dry.stdout
    cases = []
    for argv in commands:
        args = argv[argv.index("run") + 1 :]
        path = next(a for a in args if a.endswith(".yaml"))
        assert path.startswith(f"configs/runs/{gpu}-")
        sets = [args[i + 1] for i, a in enumerate(args) if a == "--set"]
        assert "--resume" in args and "--out" in args
        cfg = config.load(REPO / path, sets)
        assert cfg.backends == ["cuda"] and cfg.model == "llama3-1b-shape" and cfg.dtype == "bfloat16"
        cases += config.expand(cfg)
    got = {(c.scenario, c.batch, c.compile, c.seq_len or c.prompt_len) for c in cases}
    assert {("train", 4, "default", 2048), ("prefill", 4, "default", 2048)} <= got
    decode = {g for g in got if g[0] == "decode"}
    assert decode and all(g[2] == "reduce-overhead" for g in decode) and ("decode", 1, "reduce-overhead", 512) in got
    assert got - decode == {("train", 4, "default", 2048), ("prefill", 4, "default", 2048)}


def _split_and(argv: list[str]) -> list[list[str]]:
    """One shell line `a ... && b ...` (after `gpu=...;`) as its commands that run `ppharness.cli run`."""
    parts, cur = [], []
    for tok in argv:
        if tok in ("&&", ";") or tok.endswith(";"):
            if tok.endswith(";") and tok != ";":
                cur.append(tok[:-1])
            parts.append(cur)
            cur = []
        else:
            cur.append(tok)
    parts.append(cur)
    return [p for p in parts if "run" in p and "ppharness.cli" in p]
