"""A STAND-IN for the SkyPilot client (ppharness/fleet/skypilot.py), for the orchestration tests.

This is not SkyPilot. It is an in-memory model of the few behaviours `ppbench fleet run` depends on,
as SkyPilot 0.14.1 documents and implements them (sky/execution.py `launch`, sky/client/sdk.py):
- `launch` provisions, runs the task's setup and submits its run; when setup fails it raises and
  leaves the cluster UP, on purpose ("if errors occur during provisioning/data syncing/setting up,
  the cluster will not be torn down for debugging purposes");
- the job then ends with a status (SUCCEEDED, FAILED, ...), its records left in the remote out folder;
- `down` removes a cluster, and one that is gone is no error.
The real client is checked against SkyPilot itself in the fleet lane (tests/test_fleet_sky.py).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

from ppharness.fleet.orchestrate import REMOTE_OUT, Launched


class StandInSkyPilot:
    def __init__(self, records: dict[str, list[dict]] | None = None, fail_setup: tuple[str, ...] = (),
                 status: dict[str, str] | None = None, on_wait=None, others: tuple[str, ...] = ()):  # fmt: skip
        self.records = records or {}  # side -> the records its job leaves in the remote out folder
        self.fail_setup = set(fail_setup)
        self.status = status or {}
        self.on_wait = on_wait  # called in the worker thread when a side starts waiting for its job
        self.up: dict[str, str] = {c: "UP" for c in others}  # cluster -> status, as `sky status` lists them
        self.calls: list[tuple[str, str]] = []
        self.tasks: dict[str, dict] = {}
        self.remote: dict[str, dict[str, bytes]] = {}
        self.gone: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def _call(self, what: str, cluster: str) -> None:
        with self._lock:
            self.calls.append((what, cluster))

    def launch(self, task: dict, cluster: str, log: Path) -> Launched:
        self._call("launch", cluster)
        self.tasks[cluster] = task
        self.gone[cluster] = threading.Event()
        self.up[cluster] = "INIT"
        side = task["envs"]["PPBENCH_FLEET_SIDE"]
        log.write_text(f"stand-in launch of {cluster}\n")
        if side in self.fail_setup:
            self.up[cluster] = "UP"  # SkyPilot keeps a cluster whose setup failed
            raise RuntimeError(f"setup of {cluster} failed with exit code 1 (stand-in)")
        self.up[cluster] = "UP"
        res = task["resources"]
        recs = self.records.get(side, [])
        name = f"2026-01-01_{res['instance_type']}_{recs[0]['device']['backend'] if recs else 'none'}.jsonl"
        self.remote[cluster] = {name: "".join(json.dumps(r) + "\n" for r in recs).encode()} if recs else {}
        region = res["infra"].split("/", 1)[1]
        return Launched(job_id=1, cluster=cluster, instance_type=res["instance_type"], region=region,
                        zone=f"{region}a", use_spot=res["use_spot"], usd_per_hour=None, launcher="stand-in")  # fmt: skip

    def wait(self, cluster: str, job_id: int, log: Path) -> str:
        self._call("wait", cluster)
        if self.on_wait is not None:
            self.on_wait(self, cluster)
        side = self.tasks[cluster]["envs"]["PPBENCH_FLEET_SIDE"]
        return self.status.get(side, "SUCCEEDED")

    def fetch(self, cluster: str, remote: str, local: Path) -> None:
        self._call("fetch", cluster)
        assert remote == REMOTE_OUT
        if self.up.get(cluster) != "UP":
            raise RuntimeError(f"{cluster} is not up")
        for name, data in self.remote.get(cluster, {}).items():
            (local / name).write_bytes(data)

    def down(self, cluster: str) -> None:
        self._call("down", cluster)
        self.up.pop(cluster, None)
        if cluster in self.gone:
            self.gone[cluster].set()

    def clusters(self) -> list[dict]:
        return [{"name": n, "status": s, "region": "us-east-1"} for n, s in self.up.items()]
