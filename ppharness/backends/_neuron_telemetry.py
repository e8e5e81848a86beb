"""Neuron host telemetry: the `neuron-ls -j` inventory, the `neuronx-cc` version, and a sampler
that runs `neuron-monitor` over the measured window and polls the sysfs power files through it.

Everything is optional: a tool or file that is absent gives None, never an error, so these work
(and are tested) on hosts without Neuron. Section numbers (§N) refer to neuron.md, "audit N" to
neuron-audit.md, "round 2" to neuron-round2.md.

- Power (ppharness/backends/_neuron_power.py): the files are found, not guessed, and polled
  through the window; the epoch minutes wholly inside it are averaged, with their coverage of the
  window. The figure is power *above background* (the driver backs background power out), so it
  is recorded under `power_above_background_w` / `energy_above_background_j`, never as the chip's
  `mean_w` / `energy_j`, which on other backends mean the whole device's power (round 2, item 4).
  One reading per chip, by one process per chip (audit 5).
- neuron-monitor: one per host (local rank 0), not one per rank (audit 5).
- Interference: `neuron-ls -j` lists processes per chip, not per core (SDK
  tools/neuron-sys-tools/neuron-ls.rst: pid, command, neuron_runtime_version). A process is
  attributed to cores through its NEURON_RT_VISIBLE_CORES (/proc/<pid>/environ, readable for the
  same user); this job's ranks and the processes started with the same PPBENCH_JOB_ID are never
  interference; a process whose cores cannot be told is a warning, not INVALID (audit 2).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from statistics import mean

from ppharness.backends import _neuron_power as power
from ppharness.backends._neuron_env import SYSFS, parse_cores
from ppharness.core.device import Sampler
from ppharness.core.guards import Interference, Monitor
from ppharness.errors import BenchError

JOB_VAR = "PPBENCH_JOB_ID"  # the same value in every process of one job (per-core processes)

# neuron-monitor config: one report per second, the runtime's core counters only (§6).
MONITOR_CONFIG = {
    "period": "1s",
    "neuron_runtimes": [{"tag_filter": ".*", "metrics": [{"type": "neuroncore_counters"}, {"type": "memory_used"}]}],
    "system_metrics": [],
}


def run_tool(args: list[str], timeout: float = 30) -> str | None:
    """A Neuron tool's stdout, or None when it is not installed or fails."""
    if shutil.which(args[0]) is None:
        return None
    try:
        out = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout


def neuron_ls() -> list[dict] | None:
    """`neuron-ls -j`: one entry per chip with nc_count, logical_neuroncore_config, memory_size,
    neuroncore_ids, neuron_processes (§6)."""
    text = run_tool(["neuron-ls", "-j"])
    try:
        data = json.loads(text) if text else None
    except ValueError:
        return None
    return data if isinstance(data, list) else None


def neuronx_cc_version() -> str | None:
    """`neuronx-cc --version`, first line (§9.1: record exact compiler versions, see §8 #692)."""
    text = run_tool(["neuronx-cc", "--version"])
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return lines[0] if lines else None


def mean_utilization(lines: list[str]) -> float | None:
    """Mean neuroncore_utilization (percent) over every report and core in use (§6 field paths)."""
    values = []
    for line in lines:
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        for runtime in doc.get("neuron_runtime_data") or []:
            counters = ((runtime.get("report") or {}).get("neuroncore_counters") or {}).get("neuroncores_in_use") or {}
            values += [c["neuroncore_utilization"] for c in counters.values() if "neuroncore_utilization" in c]
    return mean(values) if values else None


class NeuronSampler(Sampler):
    """Utilization from neuron-monitor and power from sysfs over one measured window.

    neuron-monitor reports no power (§6); the sysfs per-minute file does, in percent of the
    chip's maximum above background (_neuron_power.py). Watts need a TDP the run file supplies
    (AWS publishes none). `chips` are the chips this process reads (the first of the job's
    processes on each chip; [] when another rank reads them or they are unknown, `unread` says
    which); `monitor` says whether this process runs the host's one neuron-monitor; `share`
    says which part of the chips' work is this process's.
    """

    def __init__(self, chips: list[int], tdp_watts: float = 0.0, root: str = SYSFS, monitor: bool = True,
                 share: str = "", clock: Callable[[], float] = time.time, unread: str = "",
                 poll_s: float = power.POLL_S):  # fmt: skip
        self.chips, self.tdp_watts, self.root, self.monitor, self.share = chips, tdp_watts, root, monitor, share
        # why `chips` is empty: by default another process of the job reads them
        self.unread = unread or "read by another process of this job on the same chip (one reading per chip)"
        self.clock, self.poll_s = clock, poll_s
        self.proc: subprocess.Popen | None = None
        self.poller: power.PowerPoller | None = None
        self.files: list[power.PowerFiles] = []
        self.t0 = 0.0

    def start(self) -> None:
        self.t0 = self.clock()
        self.files = [power.discover(chip, self.root) for chip in self.chips]
        found = [f for f in self.files if f.minute]
        self.poller = power.PowerPoller(found, self.poll_s, self.clock) if found else None
        if self.poller is not None:
            self.poller.start()
        if not self.monitor or shutil.which("neuron-monitor") is None:
            return
        cfg = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)  # noqa: SIM115 - outlives start()
        json.dump(MONITOR_CONFIG, cfg)
        cfg.close()
        try:
            self.proc = subprocess.Popen(["neuron-monitor", "-c", cfg.name], stdout=subprocess.PIPE, text=True)
        except OSError:
            self.proc = None

    def stop(self) -> dict:
        t1 = self.clock()
        if self.poller is not None:
            self.poller.stop()
        util = None
        if self.proc is not None:
            self.proc.terminate()
            try:
                out, _ = self.proc.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                out, _ = self.proc.communicate()
            util = mean_utilization((out or "").splitlines())
        minutes = self.poller.minutes if self.poller is not None else {}
        fields = power.window_average(minutes, self.t0, t1, self.tdp_watts)
        lost = [f for f in self.files if not f.minute]
        if lost:  # a chip without a readable per-minute file: no partial sum
            fields.update(power_pct=None, power_above_background_w=None, energy_above_background_j=None,
                          power_coverage=None,
                          power_reason=f"no readable per-minute power file under {self.root}/neuron{lost[0].chip} "
                                       f"(power files seen: {', '.join(lost[0].candidates) or 'none'})")  # fmt: skip
        if not self.chips:
            fields["power_reason"] = self.unread
        return {
            # Not the chip's power (background is backed out): null here, the labelled figure below.
            "energy_j": None, "mean_w": None, **fields,
            "power_paths": {f"neuron{f.chip}": f.minute for f in self.files},
            "power_raw": {f"neuron{f.chip}": {"path": f.raw, "reads": self.poller.raw.get(f.chip, []) if self.poller else []}
                          for f in self.files if f.raw} or None,
            "power_polls": self.poller.polls if self.poller else 0,
            "power_chips": list(self.chips), "power_scope": self.share or None,
            "neuroncore_utilization_pct": util,
        }  # fmt: skip


def read_environ(pid: int) -> dict[str, str] | None:
    """Another process's environment (/proc/<pid>/environ; same user or root), None if unreadable."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return None
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in pairs}


def classify_processes(chips: list[int] | None, own: set[int], my_cores: list[int] | None, job: str = "",
                       inventory: list[dict] | None = None,
                       environ: Callable[[int], dict | None] = read_environ) -> tuple[list[str], list[str]] | None:  # fmt: skip
    """(processes on this process's cores: interference, processes that cannot be told apart or
    share the chip on other cores: warnings) on the given chips (all when None), from
    `neuron-ls -j` (§6); None when neuron-ls is not there to ask. `my_cores` None: this process's
    cores are not known exactly (the runtime picked them), so no process can be attributed."""
    inventory = neuron_ls() if inventory is None else inventory
    if inventory is None:
        return None
    busy, unsure = [], []
    for i, chip in enumerate(inventory):
        index = chip.get("neuron_device", i)
        if chips is not None and index not in chips:
            continue
        for proc in chip.get("neuron_processes") or []:
            pid = proc.get("pid")
            if pid in own:
                continue
            env = environ(pid) if isinstance(pid, int) else None
            if env is not None and job and env.get(JOB_VAR) == job:
                continue  # a sibling per-core process of this job
            what = f"pid {pid} {proc.get('command', '?')} on neuron{index}"
            spec = (env or {}).get("NEURON_RT_VISIBLE_CORES", "")
            try:
                theirs = parse_cores(spec) if spec else None
            except BenchError:
                theirs = None
            if theirs is None or my_cores is None:
                unsure.append(f"{what} (cannot tell which NeuronCores it holds)")
            elif set(theirs) & set(my_cores):
                busy.append(f"{what} core(s) {spec}")
            else:
                unsure.append(f"{what} on other core(s) {spec} of the same chip (shares its power reading)")
    return busy, unsure


def other_processes(chips: list[int] | None, own: set[int], inventory: list[dict] | None = None) -> list[str] | None:
    """Processes other than `own` on the given chips, unattributed (kept for callers that only
    need the list); None when neuron-ls is not there to ask."""
    found = classify_processes(chips, own, None, "", inventory, environ=lambda pid: None)
    return None if found is None else found[0] + found[1]


class NeuronGuard(Monitor):
    """`classify_processes` at the start and the end of the window: processes on this process's
    cores make it INVALID; those it cannot attribute, or that share the chip on other cores, are
    warnings. Neuron exposes no clock-throttling state, so `throttled` is None (cannot tell)."""

    def __init__(self, poll: Callable[[], tuple[list[str], list[str]] | None]):
        self.poll = poll
        self._seen: list[tuple[list[str], list[str]] | None] = []

    def start(self) -> None:
        self._seen = [self.poll()]

    def stop(self) -> Interference:
        self._seen.append(self.poll())
        out = Interference(detail={"throttled": None})
        if all(p is None for p in self._seen):
            out.detail.update(busy=None, unattributed=None)
            return out
        busy = list(dict.fromkeys(x for p in self._seen if p for x in p[0]))
        unsure = list(dict.fromkeys(x for p in self._seen if p for x in p[1]))
        out.detail.update(busy=busy, unattributed=unsure)
        if busy:
            out.invalid.append(f"device shared with other processes during the measured window: {', '.join(busy)}")
        if unsure:
            out.warnings.append(f"other processes on this job's chip(s) during the window: {', '.join(unsure)}")
        return out
