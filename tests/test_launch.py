"""Multi-device runs through torchrun: launch options, the group's arithmetic (slowest rank per
step, summed throughput, scaling efficiency), and real 2-process CPU runs over gloo on 127.0.0.1."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys

import pytest
import torch
from conftest import REPO, SMOKE
from typer.testing import CliRunner

from ppharness.cli import app
from ppharness.core.timing import Measurement
from ppharness.errors import BenchError
from ppharness.record.load import load
from ppharness.run import config, distributed, launch, runner

cli = CliRunner()
# Two ranks share this machine's cores: one thread each, tiny shapes, a few steps.
FAST = ["timing.min_iters=3", "timing.min_seconds=0", "timing.warmup=1", "backend_options={cpu: {threads: 1}}",
        "scenarios={train: {batch: 2, seq_len: 16}, decode: {batch: 2, prompt_len: 8, new_tokens: 4}}"]  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- options and the torchrun command line ------------------------------------------------
@pytest.mark.parametrize(
    "args,message",
    [
        ((None, 2, None), "--nnodes and --rdzv-endpoint need --nproc-per-node"),
        ((None, None, "h:1"), "need --nproc-per-node"),
        ((2, 2, None), "--nnodes 2 needs --rdzv-endpoint HOST:PORT"),
        ((2, 1, "no-port"), "--rdzv-endpoint must be HOST:PORT"),
        ((2, 1, "host:99999"), "port in 1-65535"),
        ((2, 1, "a b:80"), "must be HOST:PORT"),
        ((0, 1, None), "at least 1"),
    ],
)
def test_bad_launch_options_are_one_line(args, message):
    with pytest.raises(BenchError, match=re.escape(message)):
        launch.options(*args)


def test_launch_options():
    assert launch.options(None, None, None) is None
    assert launch.options(8, None, None) == launch.Launch(8, 1, None)
    assert launch.options(32, 2, "10.0.0.1:29500") == launch.Launch(32, 2, "10.0.0.1:29500")
    assert launch.options(2, 1, "[::1]:29500").rdzv_endpoint == "[::1]:29500"


def test_torchrun_command_line_is_torchruns_own():
    """The arguments parse with torchrun's own parser, as `python -m torch.distributed.run` would."""
    from torch.distributed.run import get_args_parser

    multi = launch.torchrun_args(launch.Launch(8, 2, "node0:29500"), ["run.yaml", "--out", "results"])
    a = get_args_parser().parse_args(multi)
    assert (a.nproc_per_node, a.nnodes, a.rdzv_backend, a.rdzv_endpoint) == ("8", "2", "c10d", "node0:29500")
    assert a.rdzv_id == launch.RDZV_ID and a.max_restarts == 0 and not a.standalone
    assert (
        a.module
        and a.training_script == "ppharness.cli"
        and a.training_script_args == ["run", "run.yaml", "--out", "results"]
    )
    local = get_args_parser().parse_args(launch.torchrun_args(launch.Launch(2), ["run.yaml"]))
    assert local.standalone and local.nnodes == "1"


def test_cli_rejects_bad_launches_before_starting_ranks(tmp_path):
    cases = [
        (["--nnodes", "2", "--nproc-per-node", "2"], "needs --rdzv-endpoint"),
        (["--nproc-per-node", "2", "--set", "backends=[cpu, cuda]"], "measures one backend"),
        (["--rdzv-endpoint", "127.0.0.1:1"], "need --nproc-per-node"),
    ]
    for extra, message in cases:
        res = cli.invoke(app, ["run", str(SMOKE), "--out", str(tmp_path), *extra])
        assert res.exit_code == 2, res.output
        assert message in res.output and len(res.output.strip().splitlines()) == 1, res.output
    assert not list(tmp_path.iterdir())


def test_torchrun_env():
    assert distributed.torchrun_env({}) is None
    env = {"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4", "GROUP_RANK": "1"}
    assert distributed.torchrun_env(env) == {"rank": 3, "local_rank": 1, "world_size": 4, "node": 1}
    with pytest.raises(BenchError, match="must be integers"):
        distributed.torchrun_env({**env, "RANK": "x"})


# --- the group's arithmetic -----------------------------------------------------------------
def _m(samples, **kw) -> Measurement:
    base = dict(compile_s=1.0, warmup_iters=1, samples_s=samples, host_samples_s=samples, window_s=sum(samples),
                compiles_in_window=0, energy={"energy_j": 10.0, "mean_w": 100.0})  # fmt: skip
    return Measurement(**{**base, **kw})


def test_combine_takes_the_slowest_rank_per_step():
    a = _m([1.0, 3.0, 2.0], reasons=["x"], warnings=["noisy"])
    b = _m([2.0, 1.0, 2.5, 9.0], compile_s=4.0, compiles_in_window=1, warnings=["noisy"])
    m = distributed.combine([a, b])
    assert m.samples_s == [2.0, 3.0, 2.5]  # per step: max over ranks; extra steps of one rank are dropped
    assert m.compile_s == 4.0 and m.compiles_in_window == 1 and m.window_s == 14.5
    assert m.energy == {"energy_j": 20.0, "mean_w": 200.0}  # energy and power of all devices add up
    assert m.reasons == ["rank 0: x"] and m.warnings == ["all ranks: noisy"]
    assert distributed.combine([a, _m([1.0], energy=None)]).energy is None


def test_scale_metrics_sums_throughput_and_keeps_per_device_fractions():
    met = {"tokens_per_step": 64, "tokens_per_s": 1000.0, "achieved_tflops": 2.0, "achieved_gbps": None,
           "mfu": 0.4, "mbu": None, "ceiling_fraction": 0.5, "energy_j_per_token": 0.2}  # fmt: skip
    distributed.scale_metrics(met, 8)
    assert (met["tokens_per_step"], met["tokens_per_s"], met["achieved_tflops"]) == (512, 8000.0, 16.0)
    assert met["tokens_per_s_per_device"] == 1000.0 and met["mfu"] == 0.4 and met["ceiling_fraction"] == 0.5
    assert met["energy_j_per_token"] == pytest.approx(0.025)  # 8 devices' energy over 8x the tokens


def _rec(world, tps, status="ok", created="2026-01-01T00:00:00", run_id="r1", batch=2):
    return {"status": status, "created_at": created, "run_id": run_id, "metrics": {"tokens_per_s": tps},
            "device": {"backend": "cpu", "name": "AMD EPYC", "world_size": world},
            "workload": {"preset": "tiny", "model": {"dim": 64}, "scenario": "train", "batch": batch, "seq_len": 16,
                         "prompt_len": None, "new_tokens": None, "dtype": "float32", "compile": "none"}}  # fmt: skip


def test_scaling_efficiency_against_the_single_device_record():
    rec = _rec(2, 1500.0)
    prior = [_rec(1, 900.0, created="2026-01-01"), _rec(1, 1000.0, created="2026-01-02", run_id="latest"),
             _rec(1, 5000.0, batch=4), _rec(2, 99.0), _rec(1, 9999.0, status="invalid", created="2027")]  # fmt: skip
    distributed.add_scaling(rec, prior)
    m = rec["metrics"]
    assert m["scaling_efficiency"] == pytest.approx(1500.0 / (2 * 1000.0))  # latest valid single-device record
    assert m["scaling_baseline_run_id"] == "latest" and m["scaling_reason"] == ""


def test_scaling_efficiency_is_null_with_a_reason_without_a_baseline():
    rec = _rec(2, 1500.0)
    distributed.add_scaling(rec, [_rec(1, 1000.0, batch=8)])
    assert rec["metrics"]["scaling_efficiency"] is None and "(none)" in rec["metrics"]["scaling_reason"]
    rec = _rec(2, 1500.0)
    distributed.add_scaling(rec, [_rec(1, 1000.0, status="invalid")])
    assert "only invalid or failed" in rec["metrics"]["scaling_reason"]
    failed = _rec(2, None, status="oom")
    distributed.add_scaling(failed, [_rec(1, 1000.0)])
    assert failed["metrics"]["scaling_efficiency"] is None and "oom" in failed["metrics"]["scaling_reason"]


# --- real 2-process runs (torchrun, gloo, 127.0.0.1) ------------------------------------------
def _records(out):
    return [json.loads(line) for f in sorted(out.glob("*.jsonl")) for line in f.read_text().splitlines()]


@pytest.mark.slow
def test_two_process_cpu_run_sums_throughput_and_scales_against_one_device(tmp_path):
    out = tmp_path / "results"
    threads = torch.get_num_threads()
    try:
        runner.run(config.load(SMOKE, FAST), out)  # the single-device baseline, in this folder
    finally:
        torch.set_num_threads(threads)  # the cpu backend's `threads: 1` is process-wide
    baseline = {r["workload"]["scenario"]: r for r in _records(out)}
    sets = [arg for item in FAST for arg in ("--set", item)]
    cmd = [sys.executable, "-m", "ppharness.cli", "run", str(SMOKE), "--out", str(out), *sets,
           "--nproc-per-node", "2", "--rdzv-endpoint", f"127.0.0.1:{free_port()}"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = [r for r in _records(out) if r["run_id"] != baseline["train"]["run_id"]]
    assert [r["workload"]["scenario"] for r in runs] == ["train", "decode"]  # one record per case, rank 0's
    for rec in runs:
        base, met, tim = baseline[rec["workload"]["scenario"]], rec["metrics"], rec["timing"]
        assert rec["status"] == "ok", rec["reason"]
        assert rec["device"]["world_size"] == rec["device"]["devices_used"] == 2 and rec["device"]["nodes"] == 1
        assert met["tokens_per_step"] == 2 * base["metrics"]["tokens_per_step"]  # both ranks' batches
        assert met["tokens_per_s"] == pytest.approx(met["tokens_per_step"] / tim["median_s"])
        assert met["tokens_per_s_per_device"] == pytest.approx(met["tokens_per_s"] / 2)
        assert len(tim["rank_median_s"]) == 2 and tim["median_s"] >= max(tim["rank_median_s"]) - 1e-12
        assert met["scaling_efficiency"] == pytest.approx(met["tokens_per_s"] / (2 * base["metrics"]["tokens_per_s"]))
        assert met["scaling_baseline_run_id"] == base["run_id"]
        assert rec["config_hash"] != base["config_hash"]  # a 2-rank case is not the 1-rank case
    again = subprocess.run([*cmd[:-1], f"127.0.0.1:{free_port()}", "--resume"], cwd=REPO, capture_output=True,
                           text=True, timeout=600)  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(_records(out)) == 4  # every rank skipped both cases alike; nothing new was written
    assert " ".join(again.stderr.split()).count("skipped (measured earlier, --resume)") == 2


@pytest.mark.slow
def test_a_rank_that_fails_is_recorded_and_the_sweep_goes_on(tmp_path):
    """Rank 1 alone runs out of memory or fails its first step: every rank ends that case at the
    same checkpoint (no hang), the record names rank 1's reason, and the next cases run."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--rdzv-backend", "c10d",
           "--rdzv-endpoint", f"127.0.0.1:{free_port()}", "--max-restarts", "0",
           str(REPO / "tests" / "dist_worker.py"), str(tmp_path)]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600, env=_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    df = load([tmp_path])
    got = list(zip(df["workload.scenario"], df["workload.batch"], df["status"], strict=True))
    assert got == [("train", 1, "ok"), ("train", 2, "oom"), ("train", 3, "error"), ("train", 4, "ok"),
                   ("prefill", 3, "error"), ("prefill", 1, "ok")]  # fmt: skip
    assert df["reason"].iloc[1].startswith("rank 1: OutOfMemoryError")
    assert "rank 1: RuntimeError: step failed" in df["reason"].iloc[2]
    assert (df["device.world_size"] == 2).all()


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO)}  # dist_worker.py imports bench from this checkout


def test_a_failed_rank_leaves_with_its_exit_code():
    assert launch.LaunchFailed("x", 2).code == 2  # a rank rejected its input, as one process would
    assert launch.LaunchFailed("x", 130).code == 130 and launch.LaunchFailed("x", -9).code == 1


@pytest.mark.slow
def test_ranks_that_fail_are_reported_in_one_line(capfd):
    omp = os.environ.get("OMP_NUM_THREADS")
    with pytest.raises(launch.LaunchFailed, match=r"rank [01] failed first, with exit code 2") as exc:
        launch.launch(launch.Launch(2), ["no-such-run-file.yaml"])
    assert exc.value.code == 2 and "error: cannot read run file no-such-run-file.yaml" in capfd.readouterr().err
    assert os.environ.get("OMP_NUM_THREADS") == omp  # torchrun's per-rank setting does not leak into this process
