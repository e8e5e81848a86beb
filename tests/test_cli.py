"""The CLI as users run it (typer's CliRunner), end to end on the smoke run file."""

import json

import pytest
from conftest import SMOKE
from typer.testing import CliRunner

from bench.cli import app

runner = CliRunner()

CONTRACT = {  # DESIGN.md, "The result record, by key"
    "": ["schema_version", "run_id", "created_at", "status", "reason"],
    "harness": ["version", "git_sha", "dirty"],
    "system": ["hostname", "instance_type", "cpu_model", "cpu_count", "os", "python", "torch", "versions"],
    "device": ["backend", "accelerator", "name", "devices_used", "devices_on_host"],
    "workload": ["preset", "model", "scenario", "batch", "seq_len", "prompt_len", "new_tokens", "dtype", "compile"],
    "timing": ["compile_s", "warmup_iters", "samples_s", "n", "median_s", "mean_s", "p10_s", "p90_s", "p99_s",
               "iqr_s", "cov", "ci95_s"],
    "metrics": ["tokens_per_s", "flops_per_token", "achieved_tflops", "mfu", "mbu", "ceiling_fraction", "ttft_s",
                "tpot_s", "peak_mem_bytes", "energy_j_per_token"],
    "cost": ["instance", "basis", "region", "usd_per_hour", "share", "prorated", "usd_per_million_tokens",
             "price_source", "price_date"],
    "validity": ["valid", "reasons"],
    "config": ["name", "backends", "model", "scenarios", "timing"],
}  # fmt: skip


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("smoke")
    args = ["run", str(SMOKE), "--backend", "cpu", "--out", str(out), "--set", "instance=c7a.large",
            "--set", "timing.min_seconds=0"]  # fmt: skip
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    return out, res


def test_smoke_run_writes_every_contract_key(smoke_run):
    out, res = smoke_run
    files = list(out.glob("*_c7a.large_cpu.jsonl"))
    assert len(files) == 1
    records = [json.loads(line) for line in files[0].read_text().splitlines()]
    assert [r["workload"]["scenario"] for r in records] == ["train", "prefill", "decode"]
    for rec in records:
        for block, keys in CONTRACT.items():
            where = rec[block] if block else rec
            assert not (missing := [k for k in keys if k not in where]), (block, missing)
        assert rec["status"] == "ok" and rec["validity"]["valid"]
        assert rec["cost"]["priced_as"] is True and rec["cost"]["usd_per_million_tokens"] > 0
        assert rec["metrics"]["mfu"] is None and "CPU" in rec["metrics"]["mfu_reason"]
        assert 0 < rec["metrics"]["ceiling_fraction"]
        assert rec["timing"]["n"] == len(rec["timing"]["samples_s"]) >= 3
    assert "tokens/s" in res.stdout and "train" in res.stdout


def test_show_reads_the_run(smoke_run):
    out, _ = smoke_run
    res = runner.invoke(app, ["show", str(out)])
    assert res.exit_code == 0 and "prefill" in res.stdout and "c7a.large" in res.stdout


def test_backends_and_env():
    res = runner.invoke(app, ["backends"])
    assert res.exit_code == 0 and "cpu" in res.stdout
    res = runner.invoke(app, ["env"])
    assert res.exit_code == 0 and '"git_sha"' in res.stdout


@pytest.mark.parametrize(
    "args,message",
    [
        (["run", str(SMOKE), "--set", "model=gpt5"], "unknown model preset 'gpt5'"),
        (["run", str(SMOKE), "--backend", "tpu"], "unknown backend 'tpu'"),
        (["run", str(SMOKE), "--set", "scenarios.train.batch=-1"], "must be a positive integer"),
        (["run", str(SMOKE), "--set", "instance=p9.huge"], "p9.huge"),
        (["run", "does-not-exist.yaml"], "cannot read run file"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, args, message):
    res = runner.invoke(app, [*args, "--out", str(tmp_path / "out")])
    assert res.exit_code == 2, res.output
    assert message in res.stderr and res.stderr.count("\n") == 1 and "Traceback" not in res.output
    assert not (tmp_path / "out").exists()


def test_show_bad_results_file(tmp_path):
    bad = tmp_path / "x.jsonl"
    bad.write_text('{"schema_version": 1}\n')
    res = runner.invoke(app, ["show", str(bad)])
    assert res.exit_code == 2 and "not a ppbench record" in res.stderr
    res = runner.invoke(app, ["show", str(tmp_path / "none")])
    assert res.exit_code == 2 and "no such results file" in res.stderr


def test_console_script_usage_errors_are_one_line(tmp_path):
    """Click's own usage errors (unknown option or command) also give one line and exit 2."""
    import subprocess
    import sys

    for args in (["run", "--bakend", "cpu"], ["frobnicate"]):
        res = subprocess.run([sys.executable, "-m", "bench.cli", *args], capture_output=True, text=True, cwd=tmp_path)
        assert res.returncode == 2, res.stderr
        assert res.stderr.startswith("error: ") and res.stderr.count("\n") == 1 and not res.stdout
