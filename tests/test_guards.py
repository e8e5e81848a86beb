"""Validity guards: other processes on the device, throttled clocks and the group's agreement are
seen by the timing protocol and recorded, never silently inside a measured window."""

from __future__ import annotations

import os

import pytest
from conftest import SMOKE

from bench import config, guards, runner, timing
from bench.backends import base
from bench.backends.cpu import CPUBackend
from bench.results import load

HZ = os.sysconf("SC_CLK_TCK")


def _proc(root, busy_s: float, pids: dict[int, float]) -> None:
    """A fake /proc: host CPU time (busy_s spread over user/system, plus idle) and per-process times."""
    t = int(busy_s * HZ)
    (root / "stat").write_text(f"cpu  {t // 2} 0 {t - t // 2} 999999 5 0 0 0 0 0\ncpu0 1 2 3 4\n")
    for pid, secs in pids.items():
        (root / str(pid)).mkdir(exist_ok=True)
        ticks = int(secs * HZ)
        (root / str(pid) / "stat").write_text(f"{pid} (py thon) R 1 1 1 0 -1 0 0 0 0 0 {ticks} 0 0 0 20 0 4 0")


def _host_monitor(tmp_path, start, stop, busy_invalid=0.0):
    clock = iter([0.0, 1.0])  # a one-second window
    mon = guards.HostCPUMonitor(busy_invalid, proc=tmp_path, cpus=2, clock=lambda: next(clock))
    _proc(tmp_path, *start)
    mon.start()
    _proc(tmp_path, *stop)
    return mon.stop()


def test_other_processes_cpu_time_is_a_warning_by_default(tmp_path):
    me = os.getpid()
    seen = _host_monitor(tmp_path, (10.0, {me: 1.0}), (11.5, {me: 2.0}))  # host +1.5 s, this run +1.0 s
    assert seen.detail["other_cpu_fraction"] == pytest.approx(0.25)  # 0.5 s of 2 CPUs x 1 s
    assert seen.invalid == [] and "other processes used 25%" in seen.warnings[0]


def test_sibling_ranks_are_this_run_and_a_threshold_makes_it_invalid(tmp_path):
    me, sibling = os.getpid(), 999_999
    guards.set_siblings({sibling})
    try:
        seen = _host_monitor(tmp_path, (10.0, {me: 1.0, sibling: 1.0}), (12.0, {me: 2.0, sibling: 1.9}))
        assert seen.detail["other_cpu_fraction"] == pytest.approx(0.05)  # 2.0 - 1.0 - 0.9 = 0.1 s of 2 CPU-s
        assert seen.warnings == [] and seen.invalid == []
        seen = _host_monitor(tmp_path, (10.0, {me: 1.0}), (12.0, {me: 1.2}), busy_invalid=0.5)
        assert "busy_invalid 50%" in seen.invalid[0]
    finally:
        guards.set_siblings(set())


def test_child_processes_are_this_run(tmp_path):
    """torch.compile's worker pool holds a CUDA context: a child's GPU context is never 'another
    process' (the device guards ask own_pids)."""
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert child.pid in guards.own_pids() and os.getpid() in guards.own_pids()
    finally:
        child.kill()
        child.wait()
    for pid, ppid in ((10, 1), (11, 10), (12, 11), (13, 1)):  # a fake /proc: 10 -> 11 -> 12; 13 apart
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "stat").write_text(f"{pid} (py thon) S {ppid} 0 0")
    assert guards.descendants(10, tmp_path) == {11, 12} and guards.descendants(12, tmp_path) == set()
    assert guards.descendants(10, tmp_path / "absent") == set()


def test_unreadable_proc_says_so(tmp_path):
    mon = guards.HostCPUMonitor(proc=tmp_path / "absent")
    mon.start()
    seen = mon.stop()
    assert seen.detail["other_cpu_fraction"] is None and not seen.invalid and not seen.warnings


def test_device_guard_polls_start_and_end():
    polls = iter([[], ["pid 4242 python (3.1 GiB)"]])
    g = guards.DeviceGuard(lambda: next(polls), lambda: ["HW thermal slowdown"])
    g.start()
    seen = g.stop()
    assert seen.detail == {"busy": ["pid 4242 python (3.1 GiB)"], "throttled": ["HW thermal slowdown"]}
    assert seen.invalid == [
        "device shared with other processes during the measured window: pid 4242 python (3.1 GiB)",
        "clocks throttled during the measured window: HW thermal slowdown",
    ]
    blind = guards.DeviceGuard(lambda: None, lambda: None)
    blind.start()
    assert blind.stop() == guards.Interference(detail={"busy": None, "throttled": None})


class SharedGPU(CPUBackend):
    """The default device monitor over a device another process is using (NVML would say so)."""

    monitor = base.Backend.monitor

    def busy_processes(self):
        return ["pid 4242 python (2.0 GiB)"]

    def throttle_reasons(self):
        return []


def test_a_shared_device_makes_the_record_invalid(tmp_path, monkeypatch):
    monkeypatch.setitem(base.REGISTRY, "shared", SharedGPU)
    monkeypatch.setattr(SharedGPU, "name", "shared")
    overrides = ["timing.min_seconds=0", "scenarios={prefill: {batch: 1, prompt_len: 8}}"]
    df = load(runner.run(config.load(SMOKE, overrides, backend="shared"), tmp_path))
    assert list(df["status"]) == ["invalid"] and "device shared with other processes" in df["reason"].iloc[0]
    assert df["validity.interference"].iloc[0] == {"busy": ["pid 4242 python (2.0 GiB)"], "throttled": []}


def test_cpu_backend_watches_the_host():
    mon = CPUBackend(base.parse_options(CPUBackend, {"busy_invalid": 0.3})).monitor()
    assert isinstance(mon, guards.HostCPUMonitor) and mon.busy_invalid == 0.3


def test_every_rank_runs_the_steps_the_group_agrees_on():
    """`agree` (bench/distributed.py) keeps a rank stepping until every rank is done."""
    votes: list[bool] = []

    def agree(stop: bool) -> bool:
        votes.append(stop)
        return len(votes) in (4, 7)  # the group settles after 4 warm-up steps and 3 measured steps

    cfg = timing.TimingConfig(warmup=1, min_iters=1, min_seconds=0.0)
    m = timing.measure(lambda: None, CPUBackend(), cfg, agree=agree)
    assert m.warmup_iters == 4 and len(m.samples_s) == 3 and all(votes) and not m.reasons
