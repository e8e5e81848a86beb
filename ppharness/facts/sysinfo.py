"""Provenance: harness version and git state, host, OS, library versions, EC2 instance type.

Everything is read locally. The EC2 instance type comes from the DMI file that Nitro hosts
expose (/sys/devices/virtual/dmi/id/product_name); the instance metadata service is never
called, so nothing here touches the network.
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import platform
import re
import socket
import subprocess
from pathlib import Path

import ppharness
from ppharness import paths

DMI = Path("/sys/devices/virtual/dmi/id")
REPO = paths.CHECKOUT  # where `git rev-parse` is asked for the commit
EC2_TYPE = re.compile(r"^[a-z][a-z0-9-]*\.[a-z0-9-]+$")  # e.g. trn1.32xlarge, p5.48xlarge


def harness() -> dict:
    sha, dirty = git_state()
    if sha is None and os.environ.get("PPBENCH_GIT_SHA"):
        # A copy of a checkout without its .git (a container image, a rented machine): the commit
        # it was copied from, as the person running it states it; whether it was edited is unknown.
        return {"version": ppharness.__version__, "git_sha": os.environ["PPBENCH_GIT_SHA"], "dirty": None,
                "git_sha_source": "PPBENCH_GIT_SHA"}  # fmt: skip
    return {"version": ppharness.__version__, "git_sha": sha, "dirty": dirty}


def git_state() -> tuple[str | None, bool | None]:
    """The checkout's commit and whether tracked files differ from it: (None, None) without git,
    outside a repository, or where the repository git finds is not this checkout's own (a copy
    without .git inside another repository's folder must not take that repository's commit)."""
    try:
        if Path(_git("rev-parse", "--show-toplevel")).resolve() != Path(REPO).resolve():
            return None, None
        sha = _git("rev-parse", "HEAD")
        dirty = bool(_git("status", "--porcelain", "--untracked-files=no"))
        return sha, dirty
    except (OSError, subprocess.CalledProcessError):
        return None, None


def _git(*args: str) -> str:
    out = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, check=True, timeout=10)
    return out.stdout.strip()


def ec2_instance_type(dmi: Path = DMI) -> str | None:
    """The instance type on EC2 Nitro hosts, from DMI; None elsewhere."""
    try:
        vendor = (dmi / "sys_vendor").read_text().strip()
        product = (dmi / "product_name").read_text().strip()
    except OSError:
        return None
    return product if vendor.startswith("Amazon") and EC2_TYPE.match(product) else None


def memory_available(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    """Bytes of memory the host can give a new process without swapping (Linux MemAvailable: free
    memory plus the page cache and reclaimable slabs it can drop); None where it cannot be read."""
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    return None


@functools.cache
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def versions(*packages: str) -> dict[str, str]:
    out = {}
    for name in packages:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def system(backend_versions: dict[str, str] | None = None) -> dict:
    import torch  # slow import: `ppbench env`, `show` and the report never pay for it

    return {
        "hostname": socket.gethostname(),
        "instance_type": ec2_instance_type(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "versions": {**versions("numpy", "pandas", "scipy", "typer"), **(backend_versions or {})},
    }
