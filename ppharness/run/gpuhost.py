"""What the GPU check (ppharness/run/gpucheck.py) learns about its host without touching the GPU,
and how it starts the children that do.

The check's own process never creates a CUDA context (one would sit on the device through every
measured window), so everything here reads files, package metadata and NVML (which counts no
context): the versions line printed before anything runs, the GPUs and their memory, the host's
MemTotal, the commit, and whether this python has what the checkout needs. Stage processes start
their own session (a hung compile is stopped with its whole group) and, on Linux, ask the kernel
to kill them when the check dies (prctl PR_SET_PDEATHSIG): a killed check must not leave a child
holding the GPU for the next run to meet.
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import importlib.util
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ppharness import errors, paths
from ppharness.facts import sysinfo
from ppharness.serve import endpoint

PACKAGES = ("torch", "triton", "scipy", "numpy", "pandas", "pytest", "nvidia-ml-py")
CUDNN_WHEELS = ("nvidia-cudnn-cu13", "nvidia-cudnn-cu12")  # the cuDNN a CUDA wheel of torch loads
KILL_GRACE_S = 5.0
PR_SET_PDEATHSIG = 1  # linux/prctl.h


# ---------------------------------------------------------------- versions and requirements
def version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def torch_cuda() -> str | None:
    """The CUDA version torch was built for, read from torch/version.py (importing torch here
    would cost seconds; reading it creates no CUDA context either way)."""
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return None
    try:
        text = (Path(next(iter(spec.submodule_search_locations))) / "version.py").read_text()
    except OSError:
        return None
    found = re.search(r"^cuda\s*(?::[^=]*)?=\s*['\"]([^'\"]+)['\"]", text, re.MULTILINE)
    return found.group(1) if found else None


def requirements(pyproject: Path | None = None) -> list[str]:
    """This checkout's runtime dependencies (pyproject.toml [project] dependencies); [] where
    the file or a TOML reader (Python < 3.11) is missing."""
    try:
        import tomllib  # Python >= 3.11 only (requires-python is 3.10)
    except ImportError:
        return []
    try:
        data = tomllib.loads((pyproject or paths.CHECKOUT / "pyproject.toml").read_text())
    except (OSError, ValueError):
        return []
    return [str(r) for r in (data.get("project") or {}).get("dependencies") or []]


def unmet(reqs: list[str], have: Callable[[str], str | None] = version) -> list[str]:
    """Each requirement this python does not meet, as one phrase ("scipy>=1.13 (has 1.11.4)");
    [] where `packaging` (pip's and pytest's dependency) is missing: nothing can be compared."""
    try:
        from packaging.requirements import InvalidRequirement, Requirement  # optional vendor package
    except ImportError:
        return []
    out = []
    for text in reqs:
        try:
            req = Requirement(text)
        except InvalidRequirement:
            continue
        got = have(req.name)
        if got is None:
            out.append(f"{text} (not installed)")
        elif req.specifier and not req.specifier.contains(got.split("+")[0], prereleases=True):
            out.append(f"{text} (has {got})")
    return out


@dataclass
class GPU:
    name: str
    memory_mib: int | None
    driver: str | None


def gpus(run: Callable[..., Any] = subprocess.run) -> tuple[list[GPU], str]:
    """The host's NVIDIA GPUs as NVML lists them (nvidia-ml-py), else nvidia-smi's; ([], why)."""
    try:
        import pynvml  # optional vendor package (the cuda extra)

        pynvml.nvmlInit()
        try:
            driver = _text(pynvml.nvmlSystemGetDriverVersion())
            found = []
            for i in range(pynvml.nvmlDeviceGetCount()):
                h = pynvml.nvmlDeviceGetHandleByIndex(i)
                found.append(
                    GPU(_text(pynvml.nvmlDeviceGetName(h)), pynvml.nvmlDeviceGetMemoryInfo(h).total >> 20, driver)
                )
            return found, "NVML"
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # noqa: BLE001 - no nvidia-ml-py, no driver: try nvidia-smi
        pass
    query = ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader,nounits"]
    try:
        done = run(query, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return [], f"no NVML and no nvidia-smi ({type(exc).__name__})"
    if done.returncode != 0:
        return [], f"nvidia-smi failed: {(done.stderr or done.stdout).strip()[:200]}"
    found = []
    for line in done.stdout.strip().splitlines():
        name, mem, driver = ([p.strip() for p in line.split(",")] + ["", "", ""])[:3]
        found.append(GPU(name, int(mem) if mem.isdigit() else None, driver or None))
    return found, "nvidia-smi"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def mem_total_bytes(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    """The host's MemTotal (a VM that grows its memory as it is used starts low)."""
    try:
        found = re.search(r"^MemTotal:\s+(\d+)\s+kB", meminfo.read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(found.group(1)) * 1024 if found else None


@dataclass
class HostFacts:
    """What the check prints and fingerprints before any stage runs."""

    versions: dict[str, str | None]
    gpus: list[GPU]
    gpus_from: str
    mem_total: int | None
    commit: dict
    device_kind: str  # what a stage's results depend on: the GPUs by name (CPU model when rehearsing)

    def line(self) -> str:
        v = self.versions
        cudnn = next((f"{v[w]} ({w})" for w in CUDNN_WHEELS if v.get(w)), "-")
        names: dict[str, int] = {}
        for g in self.gpus:
            names[g.name] = names.get(g.name, 0) + 1
        gpu = ", ".join(f"{n} x{c}" for n, c in names.items()) or f"none ({self.gpus_from})"
        mem = self.gpus[0].memory_mib if self.gpus else None
        driver = self.gpus[0].driver if self.gpus else None
        total = "-" if self.mem_total is None else f"{self.mem_total / 2**30:.1f} GiB"
        sha = self.commit.get("git_sha") or "unknown (no .git: set PPBENCH_GIT_SHA)"
        return (
            f"versions: python {v['python']}, torch {v.get('torch') or '-'} (CUDA {v.get('cuda') or '-'}, cuDNN {cudnn}), "
            f"triton {v.get('triton') or '-'}, scipy {v.get('scipy') or '-'}, numpy {v.get('numpy') or '-'}, "
            f"pandas {v.get('pandas') or '-'}, pytest {v.get('pytest') or '-'}; GPU {gpu}"
            f"{f', {mem:,} MiB' if mem else ''}{f', driver {driver}' if driver else ''}; host MemTotal {total}; "
            f"commit {sha}"
        )


def host_facts(rehearse: bool) -> HostFacts:
    vers = {"python": sys.version.split()[0], **{p: version(p) for p in (*PACKAGES, *CUDNN_WHEELS)}}
    vers["cuda"] = torch_cuda()
    found, where = gpus()
    if rehearse:
        kind = f"cpu: {sysinfo.cpu_model()}, {os.cpu_count()} CPUs"
    else:
        kind = "cuda: " + (", ".join(sorted(f"{g.name} {g.memory_mib} MiB" for g in found)) or "no GPU listed")
    return HostFacts(vers, found, where, mem_total_bytes(), sysinfo.harness(), kind)


# ---------------------------------------------------------------- children
def _die_with_parent(parent: int) -> Callable[[], None]:
    """A preexec_fn: the child gets SIGKILL when the process that started it dies (Linux
    PR_SET_PDEATHSIG), and exits at once if that happened before the request took effect."""

    def arm() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # not Linux: the group stop on the parent's exit remains
            return
        if os.getppid() != parent:  # the parent died between fork and prctl
            os._exit(1)

    return arm


@dataclass
class Outcome:
    status: str  # ok | failed | timeout | not_run | skipped | interrupted
    rc: int | None
    seconds: float
    note: str = ""
    compile_s: float | None = None  # the stage's compiles, from the records it wrote (None: it wrote none)


def execute(
    argv: list[str], timeout_s: float, log: IO[str], echo: IO[str] | None = None, env: dict | None = None
) -> Outcome:
    """Run `argv` from the repository root in its own session, dying with this process, its
    output (stdout and stderr) into `log` and `echo` line by line; past `timeout_s`, or when this
    process is interrupted, its whole process group is stopped (SIGTERM, then SIGKILL)."""
    env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
    t0 = time.monotonic()
    proc = subprocess.Popen(
        argv, cwd=paths.CHECKOUT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL, text=True, errors="replace", bufsize=1, start_new_session=True,
        preexec_fn=_die_with_parent(os.getpid()) if sys.platform.startswith("linux") else None,
    )  # fmt: skip

    def pump() -> None:
        for line in proc.stdout:
            log.write(line)
            log.flush()
            if echo is not None:
                echo.write(line)
                echo.flush()

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        rc = proc.wait(timeout=max(timeout_s, 0.1))
    except subprocess.TimeoutExpired:
        endpoint.stop_group(proc, KILL_GRACE_S)
        reader.join(KILL_GRACE_S)
        return Outcome("timeout", None, time.monotonic() - t0, f"stopped after {timeout_s:.0f} s")
    except BaseException:  # Interrupted (SIGTERM, SIGHUP, e.g. an outer `timeout`), KeyboardInterrupt
        endpoint.stop_group(proc, KILL_GRACE_S)  # the child leads its own group: it would outlive us otherwise
        reader.join(KILL_GRACE_S)
        raise
    reader.join(KILL_GRACE_S)
    endpoint.stop_group(proc, 0.0)  # workers the stage left in its group (a compile pool) go with it
    seconds = time.monotonic() - t0
    if rc == errors.Exit.SOME_INVALID:  # it measured; its INVALID or failed cases are recorded with why
        return Outcome("ok", rc, seconds, "some cases not valid (exit code 3)")
    return Outcome("ok" if rc == 0 else "failed", rc, seconds, "" if rc == 0 else f"exit code {rc}")
