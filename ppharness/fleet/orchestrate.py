"""Launch every side of a plan in parallel, wait for its job, bring its records back, tear it down.

Works against any `Client` (skypilot.py is SkyPilot's; the tests use a stand-in). Per side, in its
own thread: launch (provision, setup, submit the job), wait for the job, copy the records into
`<out>/fleet/<job id>/<side>/`, write the sidecar `launch.yaml` beside them (where SkyPilot put the
side, at what price; records are never edited), and tear the cluster down in a `finally`: SkyPilot
keeps a cluster up when its setup fails, on purpose, and an idle $21.50/h machine is the failure
this module exists to prevent. Ctrl-C tears down every cluster already started, from the main thread,
then exits; a second Ctrl-C leaves the rest to `ppbench fleet down --all`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Protocol

import yaml

from ppharness.errors import BenchError
from ppharness.fleet import plan as plan_mod
from ppharness.fleet.plan import Plan, Side

REMOTE_OUT = "ppbench-fleet/out"  # plan.REMOTE_OUT, relative to the remote home (what rsync takes)
SIDECAR = "launch.yaml"


@dataclass(frozen=True)
class Launched:
    """What SkyPilot actually launched: its region and zone, and its own hourly price for them."""

    job_id: int
    cluster: str
    instance_type: str
    region: str
    zone: str | None
    use_spot: bool
    usd_per_hour: (
        float | None
    )  # SkyPilot's catalog, which may lag AWS: configs/instances.yaml stays the price of record
    launcher: str  # e.g. "skypilot 0.14.1"


class Client(Protocol):
    def launch(self, task: dict, cluster: str, log: Path) -> Launched:
        """Provision, run setup and submit the run; blocks until the job is submitted."""

    def wait(self, cluster: str, job_id: int, log: Path) -> str:
        """Block until the job ends; its final status (SUCCEEDED, FAILED, ...)."""

    def fetch(self, cluster: str, remote: str, local: Path) -> None:
        """Copy the *.jsonl files of the remote folder (relative to the remote home) into `local`."""

    def down(self, cluster: str) -> None:
        """Tear the cluster down (also while its launch is in flight); a cluster that is gone is fine."""

    def clusters(self) -> list[dict]:
        """Every cluster the launcher knows: name, status, region, resources."""


@dataclass
class Outcome:
    side: str
    cluster: str
    status: str = "NOT STARTED"  # the job's final status, or LAUNCH FAILED / INTERRUPTED
    error: str | None = None
    folder: Path | None = None
    files: list[str] = field(default_factory=list)
    torn_down: bool = False


class Interrupted(Exception):
    """Ctrl-C: the started clusters were torn down (those that could not be are named)."""

    def __init__(self, left: list[str]):
        self.left = left
        super().__init__(f"interrupted; clusters still up: {', '.join(left)}" if left else "interrupted")


def job_folder(out: Path, plan: Plan) -> Path:
    return out / "fleet" / plan.job_id


def run_fleet(plan: Plan, client: Client, out: Path, logs: Path, amis: dict[str, str] | None = None,
              say: Callable[[str], None] = print) -> list[Outcome]:  # fmt: skip
    """Every side at once, each in a daemon thread (a launch blocked in SkyPilot cannot hold the
    process open after Ctrl-C); returns each side's outcome."""
    folder = job_folder(out, plan)
    if folder.exists():
        raise BenchError(f"{folder} already exists: a job id is used once")
    logs.mkdir(parents=True, exist_ok=True)
    started: list[str] = []
    lock = threading.Lock()
    outcomes = {s.name: Outcome(s.name, plan.cluster(s)) for s in plan.sides}

    def started_hook(cluster: str) -> None:
        with lock:
            started.append(cluster)

    threads = [
        threading.Thread(
            target=_side_worker,
            name=f"fleet-{s.name}",
            daemon=True,
            args=(plan, s, client, folder, logs, amis, outcomes[s.name], started_hook, say),
        )  # fmt: skip
        for s in plan.sides
    ]
    try:  # from the first start on: a Ctrl-C while the second side is starting still tears the first down
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            time.sleep(0.2)  # short sleeps: Ctrl-C reaches the main thread between them
    except KeyboardInterrupt:
        say(f"interrupted: tearing down {', '.join(started) or 'nothing (no cluster started yet)'}")
        left = teardown(client, list(started), say)
        for o in outcomes.values():
            if o.status in ("NOT STARTED", "RUNNING"):
                o.status = "INTERRUPTED"
        raise Interrupted(left) from None
    return [outcomes[s.name] for s in plan.sides]


def teardown(client: Client, clusters: list[str], say: Callable[[str], None]) -> list[str]:
    left = list(clusters)
    try:
        for cluster in clusters:
            try:
                client.down(cluster)
                left.remove(cluster)
                say(f"{cluster}: torn down")
            except Exception as exc:
                say(f"{cluster}: teardown failed ({type(exc).__name__}: {exc}); run ppbench fleet down {cluster}")
    except KeyboardInterrupt:
        say(f"teardown interrupted; still up: {', '.join(left)} (ppbench fleet down --all)")
    return left


def _side_worker(plan: Plan, side: Side, client: Client, folder: Path, logs: Path, amis: dict[str, str] | None,
                 outcome: Outcome, started: Callable[[str], None], say: Callable[[str], None]) -> None:  # fmt: skip
    cluster = outcome.cluster
    launched: Launched | None = None
    began = _now()
    try:
        started(cluster)  # before launch: a launch that fails half-way leaves a cluster to tear down
        outcome.status = "RUNNING"
        say(
            f"{side.name}: launching {cluster} ({side.instance} in {side.region}); log {logs / f'{side.name}-launch.log'}"
        )
        launched = client.launch(plan_mod.task(plan, side, amis), cluster, logs / f"{side.name}-launch.log")
        say(f"{side.name}: job {launched.job_id} running in {launched.region} {launched.zone or ''}".rstrip())
        outcome.status = client.wait(cluster, launched.job_id, logs / f"{side.name}-job.log")
        say(f"{side.name}: job ended {outcome.status}")
    except Exception as exc:
        outcome.status = "LAUNCH FAILED" if launched is None else "WAIT FAILED"
        outcome.error = f"{type(exc).__name__}: {exc}"
        say(f"{side.name}: {outcome.status.lower()}: {outcome.error}")
    finally:
        if launched is not None:  # the job may have failed after finishing some cases: those are results
            outcome.folder = folder / side.name
            try:
                outcome.files = collect(client, cluster, outcome.folder)
                say(f"{side.name}: {len(outcome.files)} results file(s) in {outcome.folder}")
            except Exception as exc:
                outcome.error = _join(outcome.error, f"collect: {type(exc).__name__}: {exc}")
                say(f"{side.name}: collecting failed: {exc}")
            try:
                write_sidecar(outcome.folder, plan, side, launched, outcome, began, plan_mod.image_ref(side, amis))
            except Exception as exc:
                outcome.error = _join(outcome.error, f"sidecar: {type(exc).__name__}: {exc}")
        try:
            client.down(cluster)
            outcome.torn_down = True
            say(f"{side.name}: {cluster} torn down")
        except Exception as exc:
            say(f"{side.name}: teardown of {cluster} failed ({exc}); run ppbench fleet down {cluster}")


def _join(first: str | None, more: str) -> str:
    return f"{first}; {more}" if first else more


def collect(client: Client, cluster: str, folder: Path) -> list[str]:
    """The side's records copied into `folder`, which must not exist yet: through a temporary folder
    outside results/, then one file at a time under a .part name and renamed, so a results reader never
    sees half a file and no record is overwritten."""
    staging = Path(tempfile.mkdtemp(prefix=f"{cluster}-"))
    try:
        client.fetch(cluster, REMOTE_OUT, staging)
        files = sorted(p for p in staging.iterdir() if p.suffix == ".jsonl" and p.is_file())
        folder.mkdir(parents=True, exist_ok=False)
        for f in files:
            part = folder / (f.name + ".part")
            shutil.copyfile(f, part)
            os.replace(part, folder / f.name)
        return [f.name for f in files]
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_sidecar(folder: Path, plan: Plan, side: Side, launched: Launched, outcome: Outcome, began: str,
                  image: str) -> Path:  # fmt: skip
    """`launch.yaml` beside the side's records: what was asked for, what SkyPilot launched and at what
    price, and a digest of every file as it came back (the records themselves are never edited)."""
    folder.mkdir(parents=True, exist_ok=True)
    price = side.price
    doc = {
        "job_id": plan.job_id,
        "side": side.name,
        "run_file": side.rel,
        "command": side.command(),
        "commit": plan.commit,
        "dirty": plan.dirty,
        "requested": {
            "instance_type": side.instance,
            "region": side.region,
            "use_spot": side.use_spot,
            "image_id": image,
            "image_ssm": side.env.image_ssm,
        },  # fmt: skip
        "launched": asdict(launched),
        "price_of_record": {
            "basis": price.basis,
            "region": price.region,
            "usd_per_hour": price.usd_per_hour,
            "date": price.date,
            "source": "configs/instances.yaml: " + price.source,
        },  # fmt: skip
        "bound_usd": round(side.bound_usd, 2),
        "began": began,
        "ended": _now(),
        "job_status": outcome.status,
        "error": outcome.error,
        "files": [
            {"name": n, "bytes": (folder / n).stat().st_size, "sha256": _sha256(folder / n)} for n in outcome.files
        ],
    }
    path = folder / SIDECAR
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def collect_cluster(client: Client, cluster: str, out: Path) -> tuple[Path, list[str]]:
    """A live cluster's records into OUT/fleet/<job id>/<side>/ (for a `fleet run` that was killed while
    its jobs ran: an instance autodowns `idle_minutes` after its job ends, and its disk goes with it).
    The sidecar says what is known without the run: the cluster's region and resources as listed now."""
    if not is_ours(cluster):
        raise BenchError(f"{cluster} is not a ppbench fleet cluster (ppbench-<side>-<job id>)")
    _, side, job_id = cluster.split("-", 2)
    folder = out / "fleet" / job_id / side
    if folder.exists():
        raise BenchError(f"{folder} already exists: that side was collected")
    info = next((c for c in client.clusters() if c["name"] == cluster), None)
    if info is None:
        raise BenchError(f"{cluster} is not up (torn down, or autodowned after its job)")
    files = collect(client, cluster, folder)
    doc = {"job_id": job_id, "side": side, "cluster": cluster, "collected_by": "ppbench fleet collect",
           "collected": _now(), "listed": {k: info.get(k) for k in ("status", "region", "resources")},
           "note": "collected without the fleet run that launched it: its launch facts were not recorded",
           "files": [{"name": n, "bytes": (folder / n).stat().st_size, "sha256": _sha256(folder / n)} for n in files]}  # fmt: skip
    (folder / SIDECAR).write_text(yaml.safe_dump(doc, sort_keys=False))
    return folder, files


def down_all(client: Client, say: Callable[[str], None] = print) -> list[str]:
    """Tear down every cluster this tool launched (named `ppbench-<side>-<job id>`); the rest are left alone."""
    ours = [c["name"] for c in client.clusters() if is_ours(c["name"])]
    if not ours:
        say("no ppbench fleet clusters are up")
    return teardown(client, ours, say)


def is_ours(name: str) -> bool:
    return plan_mod.CLUSTER_NAME.match(name) is not None


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
