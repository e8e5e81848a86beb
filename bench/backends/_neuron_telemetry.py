"""Neuron host telemetry: the `neuron-ls -j` inventory, the `neuronx-cc` version, and a sampler
that runs `neuron-monitor` over the measured window and reads the sysfs power percentage.

Everything is optional: a tool or file that is absent gives None, never an error, so these work
(and are tested) on hosts without Neuron. Section numbers (§N) refer to neuron.md.
"""

from __future__ import annotations

import glob
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from statistics import mean

from bench.backends._neuron_env import SYSFS
from bench.backends.base import Sampler

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
    chip's maximum. Watts need a TDP the run file supplies (AWS publishes none), and energy is
    only reported when the window covers that minute, so a short window gives None, not a guess.
    """

    def __init__(self, chips: list[int], tdp_watts: float = 0.0, root: str = SYSFS):
        self.chips, self.tdp_watts, self.root = chips, tdp_watts, root
        self.proc: subprocess.Popen | None = None
        self.t0 = 0.0

    def start(self) -> None:
        self.t0 = time.perf_counter()
        if shutil.which("neuron-monitor") is None:
            return
        cfg = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)  # noqa: SIM115 - outlives start()
        json.dump(MONITOR_CONFIG, cfg)
        cfg.close()
        try:
            self.proc = subprocess.Popen(["neuron-monitor", "-c", cfg.name], stdout=subprocess.PIPE, text=True)
        except OSError:
            self.proc = None

    def stop(self) -> dict[str, float | None]:
        window = time.perf_counter() - self.t0
        util = None
        if self.proc is not None:
            self.proc.terminate()
            try:
                out, _ = self.proc.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                out, _ = self.proc.communicate()
            util = mean_utilization((out or "").splitlines())
        power = read_power(self.chips, self.root)
        pct = mean(r["avg_pct"] for r in power) if power else None
        mean_w = pct / 100 * self.tdp_watts * len(power) if pct is not None and self.tdp_watts else None
        energy = mean_w * window if mean_w is not None and window >= 60 else None
        return {"energy_j": energy, "mean_w": mean_w, "power_pct": pct, "neuroncore_utilization_pct": util}


def other_processes(chips: list[int] | None, own: set[int], inventory: list[dict] | None = None) -> list[str] | None:
    """Processes other than this run's on the given chips (all chips when None), from the
    `neuron_processes` of `neuron-ls -j` (§6); None when neuron-ls is not there to ask."""
    inventory = neuron_ls() if inventory is None else inventory
    if inventory is None:
        return None
    busy = []
    for i, chip in enumerate(inventory):
        if chips is not None and chip.get("neuron_device", i) not in chips:
            continue
        for proc in chip.get("neuron_processes") or []:
            if proc.get("pid") not in own:
                busy.append(f"pid {proc.get('pid')} {proc.get('command', '?')} on neuron{chip.get('neuron_device', i)}")
    return busy
