"""Validity guards: what else was happening on the device while a window was measured.

A timed window must not silently include another process's work or a clock slowed by heat or
power limits. Each backend returns a `Monitor` (`Backend.monitor()`); the timing protocol starts
it before the measured window and stops it after, and the `Interference` it reports goes into the
record: `invalid` reasons make the row INVALID, `warnings` are kept beside, `detail` holds the
numbers (`validity.interference`).

- Accelerators (the default monitor, `DeviceGuard`): the backend's `busy_processes()` (other
  processes computing on this device) and `throttle_reasons()` (clock throttling) are read at the
  start and the end of the window; anything reported makes the row INVALID. A backend that
  cannot tell returns None and the detail says so.
- The host CPU (`HostCPUMonitor`, on every backend: the timing protocol adds it to the backend's
  own monitor, since a host that is busy elsewhere slows the process that feeds any device): the
  CPU time that processes other than this run's used during the window, from /proc/stat minus
  this run's processes (/proc/<pid>/stat; sibling ranks of a multi-process run count as this
  run), as a fraction of the host's capacity (window x cores; steal time counts as other load).
  Above WARN_OTHER_CPU it is a warning; above the run file's `timing.max_other_cpu` (default
  25%) the window is contaminated: the timing protocol measures it again after a pause, and a
  window still contaminated after `timing.remeasure` tries makes the row INVALID with the figure.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ppharness.record.flags import OTHER_CPU  # the words a flag is read from

WARN_OTHER_CPU = 0.10  # warn when other processes used more than 10% of the host's CPU capacity
# /proc/stat counts in clock ticks (10 ms): a shorter window's share is mostly rounding (a 10 ms
# window reads anywhere from 0% to several times the host), so it is recorded but not judged.
MIN_WINDOW_S = 0.25

_SIBLINGS: set[int] = set()  # pids of this run's other ranks on this host (ppharness/run/distributed.py)


def own_pids() -> set[int]:
    """This run's processes on this host: never counted as other load on the device. Its child
    processes count as its own: torch.compile's worker pool starts CUDA in its manager process
    (pytorch/pytorch#184643, #134084), which then holds a context on the GPU, idle, in every window."""
    return {os.getpid(), *_SIBLINGS, *descendants(os.getpid())}


def descendants(pid: int, proc: Path = Path("/proc")) -> set[int]:
    """Every process below `pid` (children, their children, ...), from /proc/<n>/stat; empty
    where /proc cannot be read."""
    children: dict[int, list[int]] = {}
    try:
        entries = [e for e in proc.iterdir() if e.name.isdigit()]
    except OSError:
        return set()
    for entry in entries:
        try:  # the parent pid: the 2nd field after the ")" that ends the command name
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue  # exited meanwhile
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def set_siblings(pids: set[int]) -> None:
    _SIBLINGS.clear()
    _SIBLINGS.update(pids)


@dataclass
class Interference:
    invalid: list[str] = field(default_factory=list)  # reasons that make the window INVALID
    warnings: list[str] = field(default_factory=list)
    detail: dict = field(default_factory=dict)


class Monitor:
    """Watches one measured window: start(), then stop() -> Interference."""

    def start(self) -> None: ...

    def stop(self) -> Interference:
        return Interference()


class Watch(Monitor):
    """Several monitors over one window, their findings merged (the device's and the host's)."""

    def __init__(self, monitors: list[Monitor | None]):
        self.monitors = [m for m in monitors if m is not None]

    def start(self) -> None:
        for m in self.monitors:
            m.start()

    def stop(self) -> Interference:
        out = Interference()
        for m in self.monitors:
            seen = m.stop()
            out.invalid += seen.invalid
            out.warnings += seen.warnings
            out.detail.update(seen.detail)
        return out


class DeviceGuard(Monitor):
    """Polls `busy()` and `throttled()` (each: a list of findings, or None when the backend
    cannot tell) at the start and the end of the window; any finding makes it INVALID."""

    def __init__(self, busy: Callable[[], list[str] | None], throttled: Callable[[], list[str] | None]):
        self.busy, self.throttled = busy, throttled
        self._seen: dict[str, list[list[str] | None]] = {}

    def start(self) -> None:
        self._seen = {"busy": [self.busy()], "throttled": [self.throttled()]}

    def stop(self) -> Interference:
        self._seen["busy"].append(self.busy())
        self._seen["throttled"].append(self.throttled())
        out = Interference()
        for kind, what in (("busy", "device shared with other processes"), ("throttled", "clocks throttled")):
            polls = self._seen[kind]
            if all(p is None for p in polls):
                out.detail[kind] = None  # the backend cannot tell
                continue
            found = list(dict.fromkeys(x for p in polls if p for x in p))  # unique, in order seen
            out.detail[kind] = found
            if found:
                out.invalid.append(f"{what} during the measured window: {', '.join(found)}")
        return out


class HostCPUMonitor(Monitor):
    """Other processes' share of the host CPU over the window (Linux /proc; elsewhere: None).
    Above `max_other` (a fraction of the host; 1.0: never) the window is INVALID."""

    def __init__(
        self,
        max_other: float = 1.0,
        proc: Path = Path("/proc"),
        cpus: int | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ):
        self.max_other, self.proc, self.cpus, self.clock = max_other, proc, cpus or os.cpu_count() or 1, clock
        self._t0: tuple[float, float, float] | None = None

    def _read(self) -> tuple[float, float, float] | None:
        """(wall seconds, busy CPU seconds of the host, CPU seconds of this run's processes)."""
        try:
            fields = (self.proc / "stat").read_text().split("\n", 1)[0].split()
            ticks = [int(x) for x in fields[1:]]
        except (OSError, ValueError, IndexError):
            return None
        hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        # user nice system idle iowait irq softirq steal ...: everything but idle and iowait is busy
        busy = sum(ticks[:8]) - ticks[3] - (ticks[4] if len(ticks) > 4 else 0)
        own = 0
        for pid in own_pids():
            try:  # utime, stime: fields 14 and 15, counted after the ")" that ends the command name
                stat = (self.proc / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
                own += int(stat[11]) + int(stat[12])
            except (OSError, ValueError, IndexError):
                continue  # a sibling that already exited
        return self.clock(), busy / hz, own / hz

    def start(self) -> None:
        self._t0 = self._read()

    def stop(self) -> Interference:
        t1 = self._read()
        if self._t0 is None or t1 is None or t1[0] <= self._t0[0]:
            return Interference(detail={"other_cpu_fraction": None, "reason": "host CPU accounting unavailable"})
        wall = t1[0] - self._t0[0]
        other_s = max(0.0, (t1[1] - self._t0[1]) - (t1[2] - self._t0[2]))
        frac = other_s / (wall * self.cpus)
        detail = {
            "other_cpu_fraction": frac,
            "other_cpu_s": other_s,
            "cpus": self.cpus,
            "max_other_cpu": self.max_other,
        }
        out = Interference(detail=detail)
        if wall < MIN_WINDOW_S:
            detail["reason"] = f"window {wall:.3f}s too short to judge from /proc/stat ticks (< {MIN_WINDOW_S}s)"
            return out
        text = f"{OTHER_CPU} {frac:.0%} of the host's {self.cpus} CPUs during the measured window"
        if frac > self.max_other:
            out.invalid.append(f"{text} (max_other_cpu {self.max_other:.0%})")
        elif frac > WARN_OTHER_CPU:
            out.warnings.append(text)
        return out
