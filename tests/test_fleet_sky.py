"""The fleet lane (`make test-fleet`, .venv-fleet): SkyPilot 0.14.1 itself reads every task `ppbench fleet`
renders, with no cloud and no network.

- SkyPilot's own schema loader (`sky.Task.from_yaml_config`), its optimizer and its dry-run launch
  (`sky.execution.launch(task, dryrun=True)`, which renders the EC2 node config from
  sky/templates/aws-ray.yml.j2) run in-process.
- The catalog SkyPilot downloads at run time is written here instead, built from
  configs/instances.yaml, under $SKY_RUNTIME_DIR/.sky/catalogs/v8/ and without the `.meta/*.md5`
  files a download leaves: SkyPilot treats such a catalog as edited by hand and never refreshes it
  (sky/catalog/common.py `is_catalog_modified`). SKY_RUNTIME_DIR is read when `sky` is imported
  (the same module's `_ABSOLUTE_VERSIONED_CATALOG_DIR`), so the module fixture sets it first.
- Credential and account checks are patched at the seams SkyPilot's own tests patch
  (skypilot-org/skypilot tests/common_test_fixtures.py `enable_all_clouds`): the enabled-clouds
  cache, `check_capability`, the owner-identity check, the account's zone mapping, the quota check.
- The fixture AMI's root volume, which SkyPilot asks EC2 DescribeImages for, is in SkyPilot's own
  cache, as an earlier lookup would leave it.
- Every socket connection is refused and recorded, and HTTP(S)_PROXY points at a dead local port:
  any network call fails its test (the autouse guard) instead of hanging or passing quietly.
"""

from __future__ import annotations

import csv
import importlib.util
import inspect
import os
import socket
import time
from pathlib import Path

import pytest
import yaml
from conftest import REPO

pytestmark = pytest.mark.fleet
if importlib.util.find_spec("sky") is None:
    pytest.skip("SkyPilot is not installed here: the fleet lane runs in .venv-fleet (make test-fleet)",
                allow_module_level=True)  # fmt: skip

from ppharness.facts import catalog  # noqa: E402
from ppharness.fleet import plan, skypilot  # noqa: E402

CLAIMS = REPO / "configs" / "claims"
JOB = "260101-000000-abcd"
FIXTURE_AMI = "ami-0123456789abcdef0"  # a test value, not a real AMI
DEAD_PROXY = "http://127.0.0.1:9"  # the discard port: nothing listens, so a request through it fails at once
# (file, --side) for every side that can run: the 8B recipes' Trainium sides are refused by the memory plan
SIDES = [
    (CLAIMS / "trn1-vs-p4d-llama3-1b.yaml", "trn1"),
    (CLAIMS / "trn1-vs-p4d-llama3-1b.yaml", "p4d"),
    (CLAIMS / "trn1-vs-p4d-llama3-8b.yaml", "p4d"),
    (CLAIMS / "trn2-vs-p5en-llama3-1b.yaml", "trn2"),
    (CLAIMS / "trn2-vs-p5en-llama3-1b.yaml", "p5en"),
    (CLAIMS / "trn2-vs-p5en-llama3-8b.yaml", "p5en"),
    (REPO / "configs" / "runs" / "default.yaml", "c7a"),
]
# SkyPilot's accelerator names (its catalog's AcceleratorName) for the keys of configs/accelerators.yaml
SKY_NAMES = {"trainium1": "Trainium", "trainium2": "Trainium2", "inferentia1": "Inferentia", "inferentia2": "Inferentia2",
             "a100-sxm4-40gb": "A100", "a100-sxm4-80gb": "A100-80GB", "h100-sxm": "H100", "h200-sxm": "H200",
             "l40s": "L40S", "a10g": "A10G", "l4": "L4"}  # fmt: skip
ZONE = {"us-east-1": "use1-az4", "us-east-2": "use2-az3", "us-west-2": "usw2-az1"}  # one fixture zone id per region
VMS_COLUMNS = ["InstanceType", "AcceleratorName", "AcceleratorCount", "vCPUs", "MemoryGiB", "GpuInfo", "Price",
               "SpotPrice", "Region", "AvailabilityZone", "Arch"]  # fmt: skip


def write_catalog(root: Path) -> list[dict]:
    """SkyPilot's AWS catalog (v8 schema, as skypilot-org/skypilot-catalog publishes it) from
    configs/instances.yaml: one row per instance and region with today's on-demand and spot prices."""
    rows = []
    for inst in catalog.instances().values():
        for region in sorted({p.region for p in inst.prices if p.basis in ("on_demand", "spot")}):
            if region not in ZONE:
                continue
            price = {b: _today(inst.name, b, region) for b in ("on_demand", "spot")}
            acc = catalog.accelerator(inst.accelerator) if inst.accelerator else None
            name = SKY_NAMES.get(inst.accelerator, "") if acc else ""
            gpu_info = {"Gpus": [{"Name": name, "Count": inst.chips,
                                  "MemoryInfo": {"SizeInMiB": int((acc.memory_gib or 0) * 1024)}}]} if acc else ""  # fmt: skip
            rows.append({"InstanceType": inst.name, "AcceleratorName": name, "AcceleratorCount": inst.chips or "",
                         "vCPUs": float(inst.vcpus), "MemoryGiB": inst.memory_gib, "GpuInfo": str(gpu_info) if acc else "",
                         "Price": price["on_demand"] or "", "SpotPrice": price["spot"] or "", "Region": region,
                         "AvailabilityZone": ZONE[region], "Arch": "x86_64"})  # fmt: skip
    aws = root / "aws"
    aws.mkdir(parents=True)
    _csv(aws / "vms.csv", VMS_COLUMNS, rows)
    _csv(aws / "images.csv", ["Tag", "Region", "OS", "OSVersion", "ImageId", "CreationDate"], [])
    _csv(aws / "instance_quota_mapping.csv", ["InstanceType", "OnDemandInstanceCode", "SpotInstanceCode"], [])
    (root / "common").mkdir()
    names = sorted({r["AcceleratorName"] for r in rows if r["AcceleratorName"]})
    _csv(
        root / "common" / "accelerators.csv",
        ["AcceleratorName", "Clouds"],
        [{"AcceleratorName": n, "Clouds": "['AWS']"} for n in names],
    )
    _csv(root / "common" / "metadata.csv", ["GPU", "MemoryGB", "Manufacturer"], [])
    return rows


def _today(instance: str, basis: str, region: str) -> float | None:
    try:
        return catalog.price(instance, basis, region).usd_per_hour
    except catalog.CatalogError:
        return None


def _csv(path: Path, columns: list[str], rows: list[dict]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


class NetworkGuard:
    """Refuses every AF_INET/AF_INET6 connection and remembers where it was headed."""

    def __init__(self) -> None:
        self.attempts: list[str] = []
        self._connect = socket.socket.connect
        self._connect_ex = socket.socket.connect_ex

    def install(self, mp: pytest.MonkeyPatch) -> None:
        guard = self

        def connect(sock, address):
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                guard.attempts.append(str(address))
                raise ConnectionRefusedError(f"the fleet lane is offline: connection to {address} refused")
            return guard._connect(sock, address)

        def connect_ex(sock, address):
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                guard.attempts.append(str(address))
                return 111  # ECONNREFUSED
            return guard._connect_ex(sock, address)

        mp.setattr(socket.socket, "connect", connect)
        mp.setattr(socket.socket, "connect_ex", connect_ex)


@pytest.fixture(scope="module")
def sky(tmp_path_factory):
    """SkyPilot, imported offline: runtime dir, catalog, dead proxies, no AWS credentials, patched seams."""
    tmp = tmp_path_factory.mktemp("sky")
    runtime, home = tmp / "runtime", tmp / "home"
    home.mkdir()
    (tmp / "aws-config").write_text("")
    rows = write_catalog(runtime / ".sky" / "catalogs" / "v8")
    mp = pytest.MonkeyPatch()
    guard = NetworkGuard()
    try:
        for key in (
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "AWS_PROFILE",
            "NO_PROXY",
            "no_proxy",
        ):
            mp.delenv(key, raising=False)
        env = {"SKY_RUNTIME_DIR": str(runtime), "HOME": str(home), "SKYPILOT_DISABLE_USAGE_COLLECTION": "1",
               "AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": str(tmp / "aws-config"),
               "AWS_SHARED_CREDENTIALS_FILE": str(tmp / "aws-config"), "HTTP_PROXY": DEAD_PROXY,
               "HTTPS_PROXY": DEAD_PROXY, "http_proxy": DEAD_PROXY, "https_proxy": DEAD_PROXY,
               # SkyPilot packages itself (`pip wheel`, sky/backends/wheel_utils.py) for the cluster: offline,
               # from this venv's setuptools, never an index ("0" is pip's inverted spelling of --no-build-isolation)
               "PIP_NO_BUILD_ISOLATION": "0", "PIP_NO_INDEX": "1"}  # fmt: skip
        for key, value in env.items():
            mp.setenv(key, value)
        guard.install(mp)
        import sky as sky_module  # after SKY_RUNTIME_DIR is set: SkyPilot reads it at import
        from sky import clouds
        from sky.adaptors import aws as aws_adaptor
        from sky.utils.db import kv_cache

        aws = clouds.AWS()
        # the seams skypilot-org/skypilot tests/common_test_fixtures.py `enable_all_clouds` patches
        mp.setattr("sky.check.get_cached_enabled_clouds_or_refresh", lambda *a, **k: [aws])
        mp.setattr("sky.check.check_capability", lambda *a, **k: None)
        mp.setattr("sky.backends.backend_utils.check_owner_identity", lambda *a, **k: None)
        mp.setattr("sky.catalog.aws_catalog._get_az_mappings", lambda *a, **k: None)  # the catalog's zone ids stand
        mp.setattr(clouds.AWS, "check_quota_available", classmethod(lambda cls, *a, **k: True))
        # SkyPilot asks EC2 DescribeImages for a custom AMI's root volume size and device, and keeps the
        # answers in its own cache for a day (sky/clouds/aws.py get_image_size): put the fixture AMI's there
        profile = aws_adaptor.get_workspace_profile()
        for region in ZONE:
            for what, value in (("size", "100"), ("root_device_name", "/dev/sda1")):
                kv_cache.add_or_update_cache_entry(
                    f"aws:ami:{what}:{profile}:{region}:{FIXTURE_AMI}", value, time.time() + 86400
                )
        yield sky_module, guard, rows, runtime
    finally:
        mp.undo()


@pytest.fixture(autouse=True)
def offline(sky):
    """Fails the test that made any network attempt, even one SkyPilot caught and logged."""
    _, guard, _, _ = sky
    before = len(guard.attempts)
    yield
    assert guard.attempts[before:] == [], f"network attempts during the test: {guard.attempts[before:]}"


def _task(file: Path, side: str, ami: str | None = FIXTURE_AMI) -> tuple[plan.Plan, plan.Side, dict]:
    p = plan.make_plan([file], only=[side], job_id=JOB)
    (s,) = p.sides
    return p, s, plan.task(p, s, {s.name: ami} if ami else None)


@pytest.mark.parametrize(("file", "side"), SIDES, ids=[f"{f.stem}:{s}" for f, s in SIDES])
def test_skypilots_loader_and_optimizer_take_every_side(sky, file, side):
    sky_module, _, _, _ = sky
    from sky import optimizer
    from sky.utils import common_utils, schemas

    p, s, task_dict = _task(file, side)
    common_utils.validate_schema(task_dict, schemas.get_task_schema(), "Invalid task YAML: ")
    task = sky_module.Task.from_yaml_config(task_dict)
    (res,) = task.resources
    assert (res.instance_type, res.region, res.image_id, res.disk_size) == (
        s.instance,
        s.region,
        {s.region: FIXTURE_AMI},
        512,
    )
    assert (res.use_spot, res.autostop_config.down, res.autostop_config.idle_minutes) == (s.use_spot, True, 10)
    assert task.envs["PPBENCH_JOB_ID"] == f"{JOB}-{side}" and task.workdir == str(REPO)
    dag = optimizer.Optimizer.optimize(_dag(sky_module, task), quiet=True)
    best = dag.tasks[0].best_resources
    assert (best.instance_type, best.region, best.use_spot) == (s.instance, s.region, s.use_spot)
    # SkyPilot's own price for what it would launch is the price the plan's bound used
    facts = skypilot.launched_facts("c", 1, best, "skypilot")
    assert facts.usd_per_hour == pytest.approx(s.price.usd_per_hour, rel=1e-9)
    assert facts.usd_per_hour == pytest.approx(catalog.price(s.instance, s.price.basis, s.region).usd_per_hour)


def _dag(sky_module, task):
    with sky_module.Dag() as dag:
        dag.add(task)
    return dag


@pytest.mark.parametrize(("file", "side"), SIDES, ids=[f"{f.stem}:{s}" for f, s in SIDES])
def test_a_dry_run_launch_renders_the_ec2_node_of_every_side(sky, file, side, monkeypatch):
    sky_module, _, _, _ = sky
    from sky import execution
    from sky.backends import backend_utils

    rendered = []
    real = backend_utils.write_cluster_config

    def spy(*args, **kwargs):  # SkyPilot's own function, called through; only its result is kept
        out = real(*args, **kwargs)
        rendered.append(yaml.safe_load(Path(out["ray"]).read_text()))
        return out

    monkeypatch.setattr(backend_utils, "write_cluster_config", spy)
    p, s, task_dict = _task(file, side)
    job_id, handle = execution.launch(
        sky_module.Task.from_yaml_config(task_dict), cluster_name=p.cluster(s), dryrun=True
    )
    assert (job_id, handle) == (None, None)  # a dry run launches nothing
    (cluster,) = rendered
    node = cluster["available_node_types"]["ray.head.default"]["node_config"]
    assert node["InstanceType"] == s.instance and node["ImageId"] == FIXTURE_AMI
    assert node["BlockDeviceMappings"][0]["Ebs"]["VolumeSize"] == 512
    assert cluster["provider"]["region"] == s.region
    assert ("InstanceMarketOptions" in node) == s.use_spot
    assert cluster["max_workers"] == 0  # one instance per side


def test_the_fixture_catalog_is_configs_instances_and_is_never_refreshed(sky):
    _, _, rows, runtime = sky
    by_type = {(r["InstanceType"], r["Region"]): r for r in rows}
    trn1 = by_type[("trn1.32xlarge", "us-east-1")]
    assert (trn1["AcceleratorName"], trn1["AcceleratorCount"], trn1["Price"]) == (
        "Trainium",
        16,
        21.5,
    )  # chips, not cores
    assert (
        by_type[("trn2.48xlarge", "us-east-2")]["SpotPrice"]
        == catalog.price("trn2.48xlarge", "spot", "us-east-2").usd_per_hour
    )
    from sky import catalog as sky_catalog

    assert sky_catalog.get_hourly_cost("p4d.24xlarge", use_spot=False, region="us-east-1", zone=None, clouds="aws") == (
        catalog.price("p4d.24xlarge", "on_demand", "us-east-1").usd_per_hour
    )
    assert not list((runtime / ".sky" / "catalogs").rglob("*.md5"))  # nothing was downloaded over it


def test_the_sky_client_calls_exist_in_skypilot_0_14(sky):
    """What SkyPilotClient calls, checked against the installed SkyPilot (the pin is skypilot[aws]==0.14.1)."""
    sky_module, _, _, _ = sky
    assert sky_module.__version__ == "0.14.1"
    params = {f: set(inspect.signature(getattr(sky_module, f)).parameters) for f in
              ("launch", "stream_and_get", "tail_logs", "job_status", "down", "status", "api_cancel", "get")}  # fmt: skip
    assert {"task", "cluster_name"} <= params["launch"]
    assert {"request_id", "output_stream"} <= params["stream_and_get"]
    assert {"cluster_name", "job_id", "follow", "output_stream"} <= params["tail_logs"]
    assert {"cluster_name", "job_ids"} <= params["job_status"] and "cluster_name" in params["down"]
    assert {"request_ids", "silent"} <= params["api_cancel"]
    assert issubclass(sky_module.exceptions.ClusterDoesNotExist, Exception)
    assert callable(sky_module.Task.from_yaml_config)
    from sky import resources

    for attr in ("instance_type", "region", "zone", "use_spot", "get_cost"):
        assert hasattr(resources.Resources, attr), attr


def test_skypilot_is_imported_only_where_it_launches():
    source = (REPO / "ppharness" / "fleet").glob("*.py")
    importers = sorted(p.name for p in source if "import sky" in p.read_text())
    assert importers == ["skypilot.py"]
    text = (REPO / "ppharness" / "fleet" / "skypilot.py").read_text()
    assert "\nimport sky" not in text and "\nfrom sky" not in text  # never at module level
    assert os.environ["HTTPS_PROXY"] == DEAD_PROXY  # the lane's own premise still holds
