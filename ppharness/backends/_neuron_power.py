"""Neuron chip power from the driver's sysfs files: where they are, what they mean, and their
average over a measured window.

What the sources say (SDK = aws-neuron/aws-neuron-sdk@81ce03ae, Neuron 2.32; DRV =
aws-neuron/aws-neuron-driver@fca19f7, dkms 2.24.7.0, the same power code in 2.26.5.0 at
thaotruong-aws/aws-neuron-driver@3906209):

- The file: `neuron<N>/stats/power/utilization` holds `<status>,<timestamp>,<min>,<max>,<avg>`,
  "per-minute power usage statistics as a percentage of max power", status POWER_STATUS_VALID,
  _NO_DATA or _INVALID, the timestamp "Time when the sample was collected in Unix epoch seconds",
  updated "every minute" (SDK tools/neuron-sys-tools/neuron-sysfs-user-guide.rst L64, L194-221;
  DRV neuron_sysfs_metrics.c L964-971 adds node stats/power with attribute `utilization`,
  neuron_power.c L410 formats it `%s,%lld,%u.%02u,%u.%02u,%u.%02u`). `neuron<N>/power/` beside
  it is Linux runtime power management, not Neuron's (the same guide, L273).
- What it means: "power utilization, measured as a percentage of max power with background power
  backed out" (DRV neuron_power.c L9-11): power above the idle background, not chip power. Each
  50 ms sample keeps the largest die's value (npower_select_power, L261; two dies on Trn2).
- When: the driver rolls its samples up when the epoch minute changes (`tv_sec / 60`, L153: "a
  number at the top of each minute") and stamps the result with that moment, so a stamp `ts`
  describes the minute [60*floor(ts/60) - 60, 60*floor(ts/60)]; VALID needs at least 60
  samples (neuron_power.h L61, neuron_power.c L184). A window holds a whole epoch minute only
  by luck below 120 s, so the file is polled through the window and every minute inside it is
  averaged; a single read at the end would describe only the last minute.
- Where, now: "Neuron Driver 2.31 reorganized the Neuron sysfs tree and moved several nodes to
  new paths" (SDK v2.33.0 sysfs guide, its "Important" note; the new paths are not in a public
  source), and driver 2.29 added `utilization_raw`, "live per-die power utilization from a
  cached sampler, pollable at the firmware refresh rate" (SDK release-notes/components/
  runtime.rst L311; its format is not published). So the files are found by walking
  `neuron<N>/` (`discover`), the path used is recorded, and `utilization_raw`'s text is kept
  as read, not interpreted, until a first hardware run (`ppharness.run.neuronprobe`) shows it.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from statistics import mean

from ppharness.backends._neuron_env import SYSFS

MINUTE = 60  # the per-minute file's period (the epoch minute, above)
POLL_S = 10.0  # seconds between reads during a window: several per minute, so no minute is missed
MAX_DEPTH = 5  # how deep `discover` walks below neuron<N>/
DOCUMENTED = "stats/power/utilization"  # the path before driver 2.31
BASIS = ("above background: the driver reports percent of max power with background power backed out "
         "(neuron_power.c), per sample the larger die on Trn2")  # fmt: skip
RAW_KEEP = 8  # distinct utilization_raw texts kept per chip (format unknown: evidence, not a figure)
HISTORY_KEEP = 2000  # reads kept for the probe's timestamp record (a 3-minute poll every 5 s is ~36 per chip)


@dataclass
class PowerFiles:
    """One chip's power files: the per-minute one and the live one, as found (None: none)."""

    chip: int
    minute: str | None = None
    raw: str | None = None
    candidates: list[str] = field(default_factory=list)  # every power-like file seen, for the record


def parse_minute(text: str) -> dict | None:
    """`<status>,<unix_ts>,<min%>,<max%>,<avg%>` (the format above), or None."""
    parts = [p.strip() for p in text.strip().split(",")]
    if len(parts) != 5:
        return None
    try:
        ts, low, high, avg = int(parts[1]), float(parts[2]), float(parts[3]), float(parts[4])
    except ValueError:
        return None
    return {"status": parts[0], "ts": ts, "min_pct": low, "max_pct": high, "avg_pct": avg}


def _is_power_file(rel: str) -> bool:
    """A file that may hold Neuron power: named utilization* under a folder named power, or
    power_utilization*."""
    parts = rel.split("/")
    name = parts[-1]
    return (name.startswith("utilization") and "power" in parts[:-1]) or name.startswith("power_utilization")


def discover(chip: int, root: str = SYSFS, read: Callable[[str], str] | None = None) -> PowerFiles:
    """Walk `root/neuron<chip>/` (links not followed, MAX_DEPTH deep, the Linux PM folder
    `neuron<chip>/power/` skipped) for power files. The per-minute file is the first candidate
    whose text parses as the per-minute format, the documented path first; the live one is a
    file named utilization_raw."""
    read = read or (lambda p: Path(p).read_text())
    base = os.path.join(root, f"neuron{chip}")
    found = PowerFiles(chip)
    if not os.path.isdir(base):
        return found
    for folder, dirs, files in os.walk(base, followlinks=False):
        rel_dir = os.path.relpath(folder, base)
        depth = 0 if rel_dir == "." else rel_dir.count(os.sep) + 1
        if rel_dir == ".":
            dirs[:] = [d for d in dirs if d != "power"]  # Linux runtime PM, not Neuron's (sysfs guide L273)
        if depth >= MAX_DEPTH:
            dirs[:] = []
        dirs.sort()
        for name in sorted(files):
            rel = name if rel_dir == "." else f"{rel_dir.replace(os.sep, '/')}/{name}"
            if _is_power_file(rel):
                found.candidates.append(rel)
    found.candidates.sort(key=lambda rel: (rel != DOCUMENTED, rel.count("/"), rel))
    for rel in found.candidates:
        path = os.path.join(base, rel)
        if "raw" in rel.split("/")[-1]:  # utilization_raw: live, format unknown
            found.raw = found.raw or path
            continue
        if found.minute is None and _read(read, path, parse_minute) is not None:
            found.minute = path
    return found


def _read(read: Callable[[str], str], path: str, parse: Callable[[str], dict | None] | None = None):
    try:
        text = read(path)
    except OSError:
        return None
    return parse(text) if parse else text


class PowerPoller:
    """Reads each chip's per-minute file (and utilization_raw where found) at start, every
    `interval_s` in a background thread, and at stop; keeps each distinct minute by its stamp."""

    def __init__(self, files: list[PowerFiles], interval_s: float = POLL_S, clock: Callable[[], float] = time.time,
                 read: Callable[[str], str] | None = None):  # fmt: skip
        self.files, self.interval_s, self.clock = files, interval_s, clock
        self.read = read or (lambda p: Path(p).read_text())
        self.minutes: dict[int, dict[int, dict]] = {f.chip: {} for f in files}  # chip -> ts -> reading
        self.raw: dict[int, list[dict]] = {f.chip: [] for f in files}
        self.polls = 0
        self.history: list[dict] = []  # every read: when, which chip, the stamp and value it showed
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def poll(self) -> None:
        """One read of every file (thread-safe)."""
        now = self.clock()
        with self._lock:
            self.polls += 1
            for f in self.files:
                reading = _read(self.read, f.minute, parse_minute) if f.minute else None
                if reading is not None:
                    reading["read_at"] = round(now, 3)
                    self.minutes[f.chip].setdefault(reading["ts"], reading)  # first read of each minute
                    if len(self.history) < HISTORY_KEEP:
                        self.history.append({"t": round(now, 3), "chip": f.chip, "ts": reading["ts"],
                                             "status": reading["status"], "avg_pct": reading["avg_pct"]})  # fmt: skip
                text = _read(self.read, f.raw) if f.raw else None
                seen = self.raw[f.chip]
                if text is not None and (not seen or seen[-1]["text"] != text.strip()) and len(seen) < RAW_KEEP:
                    seen.append({"t": round(now, 3), "text": text.strip()[:200]})

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.poll()

    def start(self) -> None:
        self.poll()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="neuron-power-poll", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.interval_s + 5)
            self._thread = None
        self.poll()


def minute_of(ts: int) -> tuple[int, int]:
    """The epoch minute a stamp describes: it ends at the minute boundary the stamp follows."""
    end = ts - ts % MINUTE
    return end - MINUTE, end


def window_average(minutes: dict[int, dict[int, dict]], t0: float, t1: float, tdp_watts: float = 0.0) -> dict:
    """Per chip, the VALID minutes that lie wholly inside [t0, t1] (unix seconds), averaged; the
    chips' power summed. Returns the record's power fields; `power_pct` None with `power_reason`
    when some chip has no such minute."""
    window = t1 - t0
    used: dict[str, list[dict]] = {}
    for chip, by_ts in sorted(minutes.items()):
        inside = [r for ts, r in sorted(by_ts.items())
                  if r["status"] == "POWER_STATUS_VALID" and minute_of(ts)[0] >= t0 and minute_of(ts)[1] <= t1]  # fmt: skip
        used[f"neuron{chip}"] = [{"ts": r["ts"], "avg_pct": r["avg_pct"], "max_pct": r["max_pct"]} for r in inside]
    out: dict = {"power_pct": None, "power_minutes": used, "power_coverage": None, "power_basis": BASIS,
                 "power_above_background_w": None, "energy_above_background_j": None, "power_reason": ""}  # fmt: skip
    if not minutes:
        out["power_reason"] = "no power file was read"
        return out
    missing = [chip for chip, rs in used.items() if not rs]
    if missing:
        seen = sum(len(v) for v in minutes.values())
        out["power_reason"] = (
            f"no whole VALID epoch minute inside the {window:.0f}s window for {', '.join(missing)} "
            f"({seen} minute reading(s) seen); a window of 120 s or more always holds one"
        )
        return out
    per_chip = [mean(r["avg_pct"] for r in rs) for rs in used.values()]
    out["power_pct"] = mean(per_chip)  # percent above background, mean over the chips
    out["power_coverage"] = round(min(len(rs) for rs in used.values()) * MINUTE / window, 3) if window > 0 else None
    if tdp_watts:
        watts = sum(p / 100 * tdp_watts for p in per_chip)
        out["power_above_background_w"] = watts
        out["energy_above_background_j"] = watts * window
    else:
        out["power_reason"] = "no tdp_watts in backend_options: power in percent of the chip's maximum only"
    return out
