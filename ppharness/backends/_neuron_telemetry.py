"""Neuron host telemetry: the `neuron-ls -j` inventory, the `neuronx-cc` version, and a sampler
that runs `neuron-monitor` over the measured window and reads the sysfs power percentage.

Everything is optional: a tool or file that is absent gives None, never an error, so these work
(and are tested) on hosts without Neuron. Section numbers (§N) refer to neuron.md, "audit N" to
neuron-audit.md.

- Power: one reading per chip, by one process per chip (audit 5), and only when the reading
  describes the measured window: sysfs gives the past minute's average with a timestamp, so a
  window shorter than that minute, or a reading whose minute is not inside the window, gives
  `mean_w: None` with `power_reason` (audit 6).
- neuron-monitor: one per host (local rank 0), not one per rank (audit 5).
- Interference: `neuron-ls -j` lists processes per chip, not per core (SDK
  tools/neuron-sys-tools/neuron-ls.rst: pid, command, neuron_runtime_version). A process is
  attributed to cores through its NEURON_RT_VISIBLE_CORES (/proc/<pid>/environ, readable for the
  same user); this job's ranks and the processes started with the same PPBENCH_JOB_ID are never
  interference; a process whose cores cannot be told is a warning, not INVALID (audit 2).
"""

from __future__ import annotations

import glob
import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from statistics import mean

from ppharness.backends._neuron_env import SYSFS, parse_cores
from ppharness.core.device import Sampler
from ppharness.core.guards import Interference, Monitor
from ppharness.errors import BenchError

JOB_VAR = "PPBENCH_JOB_ID"  # the same value in every process of one job (per-core processes)
AVERAGE_S = 60  # the sysfs power reading is the past minute's average (§6)

# neuron-monitor config: one report per second, the runtime's core counters only (§6).
MONITOR_CONFIG = {
    "period": "1s",
    "neuron_runtimes": [{"tag_filter": ".*", "metrics": [{"type": "neuroncore_counters"}, {"type": "memory_used"}]}],
    "system_metrics": [],
}
# Where a chip's power reading lives. Driver 2.31 (SDK 2.33) reorganised the tree incompatibly,
# so several layouts are probed (§6); neuronN/power/ without stats/ is Linux PM, not Neuron.
POWER_FILES = ("stats/power/utilization", "stats/*/power/utilization")


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


def parse_power(text: str) -> dict | None:
    """`<status>,<unix_ts>,<min%>,<max%>,<avg%>`: the past minute, as a percentage of the chip's
    maximum power, not watts (§6)."""
    parts = [p.strip() for p in text.strip().split(",")]
    if len(parts) != 5:
        return None
    try:
        ts, low, high, avg = int(parts[1]), float(parts[2]), float(parts[3]), float(parts[4])
    except ValueError:
        return None
    return {"status": parts[0], "ts": ts, "min_pct": low, "max_pct": high, "avg_pct": avg}


def read_power(chips: list[int], root: str = SYSFS) -> list[dict]:
    """Valid power readings of the given chips (POWER_STATUS_VALID only)."""
    readings = []
    for chip in chips:
        for pattern in POWER_FILES:
            files = sorted(glob.glob(f"{root}/neuron{chip}/{pattern}"))
            parsed = parse_power(Path(files[0]).read_text()) if files else None
            if parsed:
                if parsed["status"] == "POWER_STATUS_VALID":
                    readings.append(parsed)
                break
    return readings


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

    neuron-monitor reports no power (§6); sysfs gives a one-minute average in percent of the
    chip's maximum, stamped with a unix time. Watts need a TDP the run file supplies (AWS
    publishes none). `chips` are the chips this process reads (the first of the job's processes
    on each chip; [] when another rank reads them or they are unknown, `unread` says which);
    `monitor` says whether this process runs the
    host's one neuron-monitor; `share` says which part of the chips' work is this process's.
    """

    def __init__(self, chips: list[int], tdp_watts: float = 0.0, root: str = SYSFS, monitor: bool = True,
                 share: str = "", clock: Callable[[], float] = time.time, unread: str = ""):  # fmt: skip
        self.chips, self.tdp_watts, self.root, self.monitor, self.share = chips, tdp_watts, root, monitor, share
        # why `chips` is empty: by default another process of the job reads them
        self.unread = unread or "read by another process of this job on the same chip (one reading per chip)"
        self.clock = clock
        self.proc: subprocess.Popen | None = None
        self.t0 = 0.0

    def start(self) -> None:
        self.t0 = self.clock()
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
        util = None
        if self.proc is not None:
            self.proc.terminate()
            try:
                out, _ = self.proc.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                out, _ = self.proc.communicate()
            util = mean_utilization((out or "").splitlines())
        power = read_power(self.chips, self.root) if self.chips else []
        pct, reason = window_power(power, self.t0, t1, len(self.chips))
        mean_w = pct / 100 * self.tdp_watts * len(power) if pct is not None and self.tdp_watts else None
        if pct is not None and not self.tdp_watts:
            reason = "no tdp_watts in backend_options: power in percent of the chip's maximum only"
        if not self.chips:
            reason = self.unread
        energy = mean_w * (t1 - self.t0) if mean_w is not None else None
        return {"energy_j": energy, "mean_w": mean_w, "power_pct": pct, "power_reason": reason,
                "power_chips": list(self.chips), "power_scope": self.share or None,
                "neuroncore_utilization_pct": util}  # fmt: skip


def window_power(readings: list[dict], t0: float, t1: float, chips: int) -> tuple[float | None, str]:
    """(mean power percent over the chips, "") when every chip's one-minute reading lies inside
    [t0, t1] (unix seconds; the stamp is whole seconds, so 1 s of slack), else (None, why)."""
    window = t1 - t0
    if window < AVERAGE_S:
        return None, f"window {window:.1f}s is shorter than the {AVERAGE_S}s average the sysfs reading covers"
    if len(readings) < chips or not readings:
        return None, "no POWER_STATUS_VALID sysfs reading for every chip"
    outside = [r["ts"] for r in readings if r["ts"] - AVERAGE_S < t0 - 1 or r["ts"] > t1 + 1]
    if outside:
        return None, (f"sysfs power timestamp {outside[0]} is outside the window: its minute "
                      f"[{outside[0] - AVERAGE_S}, {outside[0]}] is not within [{t0:.0f}, {t1:.0f}]")  # fmt: skip
    return mean(r["avg_pct"] for r in readings), ""


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
