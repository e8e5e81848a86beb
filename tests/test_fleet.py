"""`ppbench fleet` without SkyPilot and without a cloud: the plan (tasks, ranks, AMI parameter, cost
bound, refusals) and the orchestration (launch, collect, sidecar, teardown on every path, Ctrl-C)
against a STAND-IN for the SkyPilot client (tests/fleet_standin.py). SkyPilot's own loader, optimizer
and dry-run launch read the same tasks in the fleet lane (tests/test_fleet_sky.py, `make test-fleet`)."""

from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import botocore.session
import pytest
import yaml
from botocore.stub import Stubber
from conftest import REPO
from fleet_standin import StandInSkyPilot
from results_fixtures import record
from typer.testing import CliRunner

from ppharness.cli import app
from ppharness.errors import BenchError
from ppharness.facts import catalog, sysinfo
from ppharness.fleet import ami, orchestrate, plan, skypilot, spec
from ppharness.run import config

CLAIMS = REPO / "configs" / "claims"
RECIPE = CLAIMS / "trn1-vs-p4d-llama3-1b.yaml"
SHA = "1" * 40
FIXTURE_AMI = {"us-east-1": "ami-0123456789abcdef0", "us-east-2": "ami-0fedcba9876543210"}  # test values, not real AMIs
runner = CliRunner()


@pytest.fixture(autouse=True)
def _no_aws(monkeypatch):
    """No test here reaches AWS: `fleet plan` shows the SSM parameter as on a host without credentials."""
    monkeypatch.setattr(ami, "credentials_available", lambda: False)


@pytest.fixture
def clean_checkout(monkeypatch):
    monkeypatch.setattr(sysinfo, "git_state", lambda: (SHA, False))


def _ssm_clients(sides):
    """botocore's Stubber behind real SSM clients: each GetParameter the plan needs, in order, per region."""
    clients = {}
    for side in sides:
        region = side.region
        if region not in clients:
            client = botocore.session.get_session().create_client(
                "ssm", region_name=region, aws_access_key_id="fixture", aws_secret_access_key="fixture"
            )
            clients[region] = (client, Stubber(client), set())
        client, stub, seen = clients[region]
        if side.env.image_ssm not in seen:
            seen.add(side.env.image_ssm)
            stub.add_response(
                "get_parameter", {"Parameter": {"Value": FIXTURE_AMI[region]}}, {"Name": side.env.image_ssm}
            )
    for _, stub, _ in clients.values():
        stub.activate()
    return {r: c for r, (c, _, _) in clients.items()}


@pytest.fixture
def stubbed_ssm(monkeypatch):
    real = ami.resolve_all

    def resolve_all(sides, client_for=None):
        clients = _ssm_clients(sides)
        return real(sides, client_for=clients.__getitem__)

    monkeypatch.setattr(ami, "resolve_all", resolve_all)


def _tasks_and_summary(output: str) -> tuple[dict[str, dict], list[str]]:
    chunks = output.split("---\n")
    tasks = {t["envs"]["PPBENCH_FLEET_SIDE"]: t for t in map(yaml.safe_load, chunks[:-1])}
    return tasks, chunks[-1].strip().splitlines()


def _bound(side_name: str, instance: str, backend: str, basis: str, region: str, cases: int, max_seconds: float):
    """The cost bound by its formula (docs/fleet.md): (provision + setup + compile + cases x 2 x max_seconds
    + idle) minutes x the hourly price configs/instances.yaml gives."""
    fleet = spec.load()
    env = fleet.environments[backend]
    minutes = (fleet.limits.provision_minutes + env.setup_minutes + env.compile_minutes
               + cases * math.ceil(2 * max_seconds / 60) + fleet.limits.idle_minutes)  # fmt: skip
    return minutes / 60 * catalog.price(instance, basis, region).usd_per_hour


# --- the plan ---------------------------------------------------------------------------------
def test_plan_prints_each_sides_task_and_the_cost_bound(clean_checkout):
    res = runner.invoke(app, ["fleet", "plan", str(RECIPE)])
    assert res.exit_code == 0, res.output
    tasks, summary = _tasks_and_summary(res.stdout)
    trn1, p4d = tasks["trn1"], tasks["p4d"]
    assert trn1["resources"]["instance_type"] == "trn1.32xlarge"  # the exact type, not "Trainium:16"
    assert p4d["resources"]["instance_type"] == "p4d.24xlarge"
    for t in (trn1, p4d):
        assert t["resources"]["infra"] == "aws/us-east-1" and t["resources"]["disk_size"] == 512
        assert t["resources"]["autostop"] == {"idle_minutes": 10, "down": True, "wait_for": "jobs"}
        assert t["workdir"] == str(REPO) and t["envs"]["PPBENCH_GIT_SHA"] == SHA and t["num_nodes"] == 1
        assert "accelerators" not in t["resources"]
    # no credentials here: the SSM parameter each side's AMI is resolved from at launch
    assert (
        trn1["resources"]["image_id"]
        == "resolve:ssm:/aws/service/neuron/dlami/pytorch-2.9/ubuntu-24.04/latest/image_id"
    )
    assert p4d["resources"]["image_id"].startswith("resolve:ssm:/aws/service/deeplearning/ami/x86_64/base-oss-nvidia")
    assert "ppbench run configs/claims/trn1-vs-p4d-llama3-1b.yaml --nproc-per-node 32 --out" in trn1["run"]
    assert "neuron_parallel_compile ppbench run" in trn1["run"]  # docs/neuron.md: pre-compile first
    assert ("ppbench run configs/claims/trn1-vs-p4d-llama3-1b.yaml --backend cuda --set instance=p4d.24xlarge "
            "--set scenarios.train.batch=2 --nproc-per-node 8 --out") in p4d["run"]  # fmt: skip
    assert (
        "/opt/aws_neuronx_venv_pytorch_2_9/bin" in trn1["setup"] and "torch-neuronx==2.9.0.2.13.24727" in trn1["setup"]
    )
    assert "-e '.[cuda]'" in p4d["setup"] and "neuron" not in p4d["setup"]
    expected = _bound("trn1", "trn1.32xlarge", "neuron-xla", "on_demand", "us-east-1", 1, 600)
    expected += _bound("p4d", "p4d.24xlarge", "cuda", "on_demand", "us-east-1", 1, 600)
    assert summary[-1].startswith(f"expected cost: at most ${expected:.2f} ")
    assert any("$21.5/h" in line for line in summary) and any("$21.9576/h" in line for line in summary)


def test_every_rendered_script_is_valid_bash(clean_checkout):
    files = [
        CLAIMS / "trn1-vs-p4d-llama3-1b.yaml",
        CLAIMS / "trn2-vs-p5en-llama3-1b.yaml",
        REPO / "configs/runs/default.yaml",
    ]
    p = plan.make_plan(files, job_id="260101-000000-abcd")
    for side in p.sides:
        t = plan.task(p, side)
        for key in ("setup", "run"):
            res = subprocess.run(["bash", "-n"], input=t[key], text=True, capture_output=True)
            assert res.returncode == 0, (side.name, key, res.stderr)
        assert f"timeout --kill-after=60 {side.minutes.setup}m" in t["setup"]
        assert f"timeout --kill-after=60 {side.minutes.run}m" in t["run"]


def test_a_trn2_side_launches_on_spot_where_its_recipe_is_priced_at_spot(clean_checkout):
    p = plan.make_plan([CLAIMS / "trn2-vs-p5en-llama3-1b.yaml"], job_id="260101-000000-abcd")
    trn2, p5en = p.sides
    assert (trn2.instance, trn2.region, trn2.use_spot, trn2.ranks) == ("trn2.48xlarge", "us-east-2", True, 64)  # lnc 2
    assert trn2.price == catalog.price("trn2.48xlarge", "spot", "us-east-2")
    assert (p5en.instance, p5en.region, p5en.use_spot, p5en.ranks) == ("p5en.48xlarge", "us-east-1", False, 8)
    assert plan.task(p, trn2)["resources"]["use_spot"] is True


def test_the_8b_recipes_are_refused_on_neuroncores_before_anything_launches(clean_checkout):
    res = runner.invoke(app, ["fleet", "plan", str(CLAIMS / "trn1-vs-p4d-llama3-8b.yaml")])
    assert res.exit_code == 2
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("error: side trn1") and "no strategy this backend runs" in last
    res = runner.invoke(app, ["fleet", "plan", str(CLAIMS / "trn1-vs-p4d-llama3-8b.yaml"), "--side", "p4d"])
    assert res.exit_code == 0, res.output
    assert "--set parallel.strategy=fsdp --nproc-per-node 8" in res.stdout and "side trn1" not in res.stdout


def test_a_run_file_without_a_recipe_entry_is_one_side_as_written(clean_checkout):
    p = plan.make_plan([REPO / "configs/runs/default.yaml"], job_id="260101-000000-abcd")
    (side,) = p.sides
    cfg = config.load(REPO / "configs/runs/default.yaml")
    assert (side.name, side.backend, side.ranks, side.instance) == ("c7a", "cpu", None, "c7a.large")
    assert side.minutes.cases == len(config.expand(cfg))
    assert side.command() == 'ppbench run configs/runs/default.yaml --out "$HOME/ppbench-fleet/out"'
    assert plan.task(p, side)["resources"]["image_id"].startswith(
        "resolve:ssm:/aws/service/canonical/ubuntu/server/24.04"
    )


def test_bad_fleet_input_is_one_line(clean_checkout, tmp_path):
    outside = tmp_path / "mine.yaml"
    outside.write_text(RECIPE.read_text())
    for args, words in [
        (["fleet", "plan", str(outside)], "outside the checkout"),
        (["fleet", "plan", str(RECIPE), "--side", "p5"], "the sides are: p4d, trn1"),
        (["fleet", "plan", str(RECIPE), "--max-usd", "50"], "above --max-usd 50; nothing was launched"),
    ]:
        res = runner.invoke(app, args)
        assert res.exit_code == 2, (args, res.output)
        assert words in res.stderr.strip().splitlines()[-1]
    cfg = config.load(RECIPE, ["instance=p4d.24xlarge", "price_basis=capacity_block", "region=us-east-2"], "cuda")
    with pytest.raises(BenchError, match="Capacity Block is bought ahead"):
        plan.billing_price(cfg, "side p4d")
    bad = tmp_path / "fleet.yaml"
    bad.write_text((REPO / "configs/fleet.yaml").read_text().replace("idle_minutes: 10", "idle_minutes: ten"))
    with pytest.raises(BenchError, match=r"limits.idle_minutes must be an integer"):
        spec.load(bad)


def test_the_ami_comes_from_the_public_ssm_parameter_in_each_sides_region(clean_checkout):
    p = plan.make_plan([CLAIMS / "trn2-vs-p5en-llama3-1b.yaml"], job_id="260101-000000-abcd")
    clients = _ssm_clients(p.sides)  # the Stubber asserts Name= for each call, and fails on an extra one
    amis = ami.resolve_all(list(p.sides), client_for=clients.__getitem__)
    assert amis == {"trn2": FIXTURE_AMI["us-east-2"], "p5en": FIXTURE_AMI["us-east-1"]}
    assert plan.task(p, p.sides[0], amis)["resources"]["image_id"] == FIXTURE_AMI["us-east-2"]
    client = botocore.session.get_session().create_client("ssm", region_name="us-east-1", aws_access_key_id="x",
                                                          aws_secret_access_key="x")  # fmt: skip
    with Stubber(client) as stub:
        stub.add_client_error("get_parameter", "ParameterNotFound", "no such parameter")
        with pytest.raises(BenchError, match="cannot read the AMI id from SSM parameter /aws/service/x in us-east-1"):
            ami.resolve("/aws/service/x", "us-east-1", client=client)
        stub.add_response("get_parameter", {"Parameter": {"Value": "not-an-ami"}})
        with pytest.raises(BenchError, match="not an AMI id"):
            ami.resolve("/aws/service/x", "us-east-1", client=client)


def test_run_and_fleet_plan_work_without_skypilot_and_fleet_run_says_what_is_missing(tmp_path):
    script = textwrap.dedent(f"""
        import sys
        sys.modules["sky"] = None  # as on a benchmark host: `import sky` raises ImportError
        from typer.testing import CliRunner
        from ppharness.cli import app
        from ppharness.fleet import ami
        ami.credentials_available = lambda: False
        r = CliRunner().invoke(app, ["run", "--help"])
        assert r.exit_code == 0, r.output
        r = CliRunner().invoke(app, ["fleet", "plan", {str(RECIPE)!r}])
        assert r.exit_code == 0, r.output
        r = CliRunner().invoke(app, ["fleet", "run", {str(RECIPE)!r}, "--max-usd", "1000", "--allow-dirty",
                                     "--out", {str(tmp_path / "r")!r}])
        assert r.exit_code == 2, r.output
        print(r.output.strip().splitlines()[-1])
        assert not [m for m, v in sys.modules.items() if m.split(".")[0] == "sky" and v is not None]
    """)
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "error: launching needs SkyPilot: pip install 'ppharness[fleet]'" in res.stdout
    assert not (tmp_path / "r" / "fleet").exists()


# --- the orchestration, against the stand-in -------------------------------------------------
def _records(side: str) -> list[dict]:
    if side == "trn1":
        return [record("trn1.32xlarge", backend="neuron-xla", accelerator="trainium1", preset="llama3-1b-shape",
                       dtype="bfloat16", batch=8, seq_len=2048, step_s=0.8, usd_per_hour=21.5, devices_used=32)]  # fmt: skip
    return [record("p4d.24xlarge", backend="cuda", accelerator="a100-sxm4-40gb", preset="llama3-1b-shape",
                   dtype="bfloat16", batch=8, seq_len=2048, step_s=1.0, usd_per_hour=21.957642, devices_used=8)]  # fmt: skip


def _fleet_run(tmp_path, standin, monkeypatch, *extra):
    monkeypatch.setattr(skypilot, "client", lambda: standin)
    args = ["fleet", "run", str(RECIPE), "--max-usd", "100", "--out", str(tmp_path / "results"),
            "--logs", str(tmp_path / "logs"), *extra]  # fmt: skip
    return runner.invoke(app, args)


def _job(tmp_path):
    (job,) = (tmp_path / "results" / "fleet").iterdir()
    return job


def test_fleet_run_collects_every_side_tears_everything_down_and_gives_the_verdict(
    tmp_path, monkeypatch, clean_checkout, stubbed_ssm
):
    standin = StandInSkyPilot(records={s: _records(s) for s in ("trn1", "p4d")})
    res = _fleet_run(tmp_path, standin, monkeypatch)
    assert res.exit_code == 0, res.output
    assert standin.up == {}  # nothing left running
    job = _job(tmp_path)
    for side, cluster_task in (("trn1", "trn1.32xlarge"), ("p4d", "p4d.24xlarge")):
        cluster = f"ppbench-{side}-{job.name}"
        assert [w for w, c in standin.calls if c == cluster] == ["launch", "wait", "fetch", "down"]
        assert standin.tasks[cluster]["resources"]["image_id"] == FIXTURE_AMI["us-east-1"]  # resolved at launch
        (jsonl,) = (job / side).glob("*.jsonl")
        served = next(iter(standin.remote[cluster].values()))
        assert jsonl.read_bytes() == served  # the records as they came back, never edited
        car = yaml.safe_load((job / side / "launch.yaml").read_text())
        assert car["launched"]["region"] == "us-east-1" and car["launched"]["zone"] == "us-east-1a"
        assert car["requested"]["instance_type"] == cluster_task and car["job_status"] == "SUCCEEDED"
        assert car["requested"]["image_id"] == FIXTURE_AMI["us-east-1"]
        assert (
            car["price_of_record"]["usd_per_hour"] == catalog.price(cluster_task, "on_demand", "us-east-1").usd_per_hour
        )
        assert car["files"] == [
            {"name": jsonl.name, "bytes": len(served), "sha256": hashlib.sha256(served).hexdigest()}
        ]
        assert car["commit"] == SHA
    assert (tmp_path / "logs" / "report.html").is_file()
    assert "Claims: our verdict is the result" in res.output


def test_a_side_whose_setup_fails_is_torn_down_and_the_other_side_still_comes_back(
    tmp_path, monkeypatch, clean_checkout, stubbed_ssm
):
    standin = StandInSkyPilot(records={"p4d": _records("p4d")}, fail_setup=("trn1",))
    res = _fleet_run(tmp_path, standin, monkeypatch)
    assert res.exit_code == 1
    assert standin.up == {}  # SkyPilot kept the failed cluster up; the fleet's finally tore it down
    job = _job(tmp_path)
    trn1 = f"ppbench-trn1-{job.name}"
    assert [w for w, c in standin.calls if c == trn1] == ["launch", "down"]
    assert "side trn1: LAUNCH FAILED, 0 results file(s), torn down; RuntimeError: setup of" in " ".join(
        res.output.split()
    )
    assert not (job / "trn1").exists() and len(list((job / "p4d").glob("*.jsonl"))) == 1


def test_a_failed_job_still_brings_back_the_cases_it_finished(tmp_path, monkeypatch, clean_checkout, stubbed_ssm):
    standin = StandInSkyPilot(records={s: _records(s) for s in ("trn1", "p4d")}, status={"trn1": "FAILED"})
    res = _fleet_run(tmp_path, standin, monkeypatch)
    assert res.exit_code == 1 and standin.up == {}
    job = _job(tmp_path)
    assert len(list((job / "trn1").glob("*.jsonl"))) == 1
    assert yaml.safe_load((job / "trn1" / "launch.yaml").read_text())["job_status"] == "FAILED"


def test_ctrl_c_tears_down_every_started_cluster(tmp_path, monkeypatch, clean_checkout, stubbed_ssm):
    waiting = threading.Barrier(2)

    def on_wait(standin, cluster):
        waiting.wait(timeout=10)  # both sides launched and waiting on their jobs
        if "-trn1-" in cluster:
            os.kill(os.getpid(), signal.SIGINT)  # the user's Ctrl-C, delivered to the main thread
        standin.gone[cluster].wait(timeout=10)  # the job "runs" until its cluster is torn down

    standin = StandInSkyPilot(records={s: _records(s) for s in ("trn1", "p4d")}, on_wait=on_wait)
    # Python turns SIGINT into KeyboardInterrupt only where it started with SIGINT at its default; a
    # suite started in the background of a non-interactive shell (`.ci/run &`) inherits it ignored.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        res = _fleet_run(tmp_path, standin, monkeypatch)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert res.exit_code == 130, res.output
    assert standin.up == {}
    assert "interrupted: tearing down ppbench-" in res.output
    deadline = time.monotonic() + 10
    while any(t.name.startswith("fleet-") for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.05)  # the side threads finish on their own once their clusters are gone


def test_nothing_launches_above_the_budget_or_from_a_dirty_checkout(tmp_path, monkeypatch, stubbed_ssm):
    standin = StandInSkyPilot()
    monkeypatch.setattr(sysinfo, "git_state", lambda: (SHA, False))
    res = _fleet_run(tmp_path, standin, monkeypatch, "--max-usd", "10")  # the last --max-usd wins
    assert res.exit_code == 2 and "above --max-usd 10; nothing was launched" in res.stderr.strip().splitlines()[-1]
    monkeypatch.setattr(sysinfo, "git_state", lambda: (SHA, True))
    res = _fleet_run(tmp_path, standin, monkeypatch)
    assert res.exit_code == 2 and "uncommitted changes" in res.stderr.strip().splitlines()[-1]
    assert standin.calls == [] and not (tmp_path / "results").exists()


def test_down_all_tears_down_only_the_fleets_own_clusters(monkeypatch):
    ours = "ppbench-trn1-260101-000000-abcd"
    standin = StandInSkyPilot(others=(ours, "my-dev-box", "ppbench-notes"))
    monkeypatch.setattr(skypilot, "client", lambda: standin)
    res = runner.invoke(app, ["fleet", "down", "--all"])
    assert res.exit_code == 0, res.output
    assert set(standin.up) == {"my-dev-box", "ppbench-notes"}
    res = runner.invoke(app, ["fleet", "down", "my-dev-box"])
    assert res.exit_code == 2 and "not a ppbench fleet cluster" in res.output


def test_collect_rescues_a_live_clusters_records_after_a_killed_run(tmp_path, monkeypatch, clean_checkout):
    p = plan.make_plan([RECIPE], only=["p4d"], job_id="260101-000000-abcd")
    standin = StandInSkyPilot(records={"p4d": _records("p4d")})
    cluster = p.cluster(p.sides[0])
    standin.launch(plan.task(p, p.sides[0]), cluster, tmp_path / "launch.log")  # what a killed `fleet run` left up
    monkeypatch.setattr(skypilot, "client", lambda: standin)
    res = runner.invoke(app, ["fleet", "collect", cluster, "--out", str(tmp_path / "results")])
    assert res.exit_code == 0, res.output
    folder = tmp_path / "results" / "fleet" / p.job_id / "p4d"
    (jsonl,) = folder.glob("*.jsonl")
    assert jsonl.read_bytes() == next(iter(standin.remote[cluster].values()))
    assert yaml.safe_load((folder / "launch.yaml").read_text())["collected_by"] == "ppbench fleet collect"
    assert standin.up == {cluster: "UP"}  # collecting tears nothing down
    again = runner.invoke(app, ["fleet", "collect", cluster, "--out", str(tmp_path / "results")])
    assert again.exit_code == 2 and "already exists" in again.stderr
    gone = runner.invoke(app, ["fleet", "collect", "ppbench-p4d-260101-000000-ffff", "--out", str(tmp_path / "r2")])
    assert gone.exit_code == 2 and "is not up" in gone.stderr


def test_a_job_folder_is_never_reused(tmp_path, clean_checkout):
    p = plan.make_plan([RECIPE], job_id="260101-000000-abcd")
    (tmp_path / "fleet" / p.job_id).mkdir(parents=True)
    with pytest.raises(BenchError, match="already exists"):
        orchestrate.run_fleet(p, StandInSkyPilot(), tmp_path, tmp_path / "logs")
    assert json.dumps(sorted(os.listdir(tmp_path / "fleet" / p.job_id))) == "[]"
