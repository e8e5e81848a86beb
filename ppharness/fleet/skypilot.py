"""The fleet's client for SkyPilot 0.14.1 (`pip install 'ppharness[fleet]'`): launch, wait, fetch, down.

The only module that imports `sky`, and only inside the methods that talk to SkyPilot: the package
is about 680 MB with its AWS extras and has no place on a benchmark host, so `ppbench run` and
`ppbench fleet plan` never import it (tests/test_fleet.py checks). SkyPilot 0.14's SDK sends each
call to a local API server it starts itself; every call returns a request id that `sky.get` or
`sky.stream_and_get` resolves.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from ppharness.errors import BenchError
from ppharness.fleet.orchestrate import Launched

FETCH_TIMEOUT_S = 600  # records are small (KBs per case); a stuck SSH session must not hold a paid instance


def _sky():
    try:
        import sky  # the fleet extra (~680 MB with its AWS extras): only the commands that launch import it
    except ImportError:
        raise BenchError("launching needs SkyPilot: pip install 'ppharness[fleet]' (docs/fleet.md)") from None
    return sky


class SkyPilotClient:
    """`orchestrate.Client` for SkyPilot. Autostop with down comes from each task's resources, so a side
    whose job ended is torn down by its own instance even if this process is gone."""

    def __init__(self) -> None:
        _sky()  # fail in one line before anything is resolved or paid for when the fleet extra is missing
        self._launching: dict[str, str] = {}  # cluster -> its in-flight launch request, cancelled by down()

    def launch(self, task: dict, cluster: str, log: Path) -> Launched:
        sky = _sky()
        request = sky.launch(sky.Task.from_yaml_config(task), cluster_name=cluster)
        self._launching[cluster] = request
        with log.open("a") as stream:
            job_id, handle = sky.stream_and_get(request, output_stream=stream)
        self._launching.pop(cluster, None)
        return launched_facts(cluster, job_id, handle.launched_resources, f"skypilot {sky.__version__}")

    def wait(self, cluster: str, job_id: int, log: Path) -> str:
        sky = _sky()
        with log.open("a") as stream:
            sky.tail_logs(cluster, job_id, follow=True, output_stream=stream)  # returns when the job ends
        status = sky.get(sky.job_status(cluster, [job_id])).get(job_id)
        return getattr(status, "value", str(status)) if status is not None else "UNKNOWN"

    def fetch(self, cluster: str, remote: str, local: Path) -> None:
        # SkyPilot 0.14 has no download command: its SSH host alias for the cluster (which it writes to
        # ~/.sky/generated/ssh/ and includes from ~/.ssh/config) and rsync, records only.
        if shutil.which("rsync") is None:
            raise BenchError("collecting records needs rsync on this host (apt-get install rsync)")
        cmd = ["rsync", "-a", "--include=*.jsonl", "--exclude=*", f"{cluster}:{remote}/", f"{local}/"]
        subprocess.run(cmd, check=True, timeout=FETCH_TIMEOUT_S, capture_output=True, text=True)

    def down(self, cluster: str) -> None:
        sky = _sky()
        request = self._launching.pop(cluster, None)
        if request is not None:  # Ctrl-C during provisioning or setup: stop the launch first
            try:
                sky.get(sky.api_cancel(request, silent=True))
            except Exception:  # already finished or failed: the down below is what matters
                pass
        try:
            sky.get(sky.down(cluster))
        except sky.exceptions.ClusterDoesNotExist:
            pass  # never created, already torn down, or autodowned

    def clusters(self) -> list[dict]:
        sky = _sky()
        return [
            {"name": r["name"], "status": getattr(r["status"], "value", str(r["status"])), "region": r.get("region"),
             "resources": r.get("resources_str"), "autostop": r.get("autostop"), "to_down": r.get("to_down")}
            for r in sky.get(sky.status())
        ]  # fmt: skip


def launched_facts(cluster: str, job_id: int, resources, launcher: str) -> Launched:
    """What a SkyPilot `Resources` says was launched, with its hourly price from SkyPilot's catalog."""
    return Launched(
        job_id=int(job_id),
        cluster=cluster,
        instance_type=resources.instance_type,
        region=resources.region,
        zone=resources.zone,
        use_spot=bool(resources.use_spot),
        usd_per_hour=round(float(resources.get_cost(3600)), 6),
        launcher=launcher,
    )


def client() -> SkyPilotClient:
    """The client `ppbench fleet` uses (tests replace this function with a stand-in's)."""
    return SkyPilotClient()
