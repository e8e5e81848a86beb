"""Neuron power from sysfs (ppharness/backends/_neuron_power.py and the sampler in
_neuron_telemetry.py), against fake sysfs trees in tmp_path. No Neuron driver is here.

The trees follow the layouts the sources show:

- DOCUMENTED: SDK tools/neuron-sys-tools/neuron-sysfs-user-guide.rst L20-70 (aws-neuron/aws-neuron-sdk
  @81ce03ae): neuron<N>/{core_count, power/ (Linux runtime PM: async, control, runtime_*; L273),
  info/architecture/, stats/{hardware, memory_usage/host_mem, power/utilization}, neuron_core<M>/};
  the driver adds exactly stats/power/utilization (aws-neuron/aws-neuron-driver@fca19f7
  neuron_sysfs_metrics.c L964-971) and formats it "%s,%lld,%u.%02u,%u.%02u,%u.%02u"
  (neuron_power.c L410).
- MOVED: driver 2.31 "moved several nodes to new paths" (SDK v2.33.0 sysfs guide) and driver 2.29
  added `utilization_raw` (SDK release-notes/components/runtime.rst L311). The new paths are not
  public, so this tree puts the per-minute file and utilization_raw at an assumed new place
  (stats/hardware/power/): what is tested is that discovery does not depend on the old path.

The minute arithmetic follows the driver: stats roll up when `tv_sec / 60` changes and carry
that moment's time (neuron_power.c L153), so a stamp ts describes [60*floor(ts/60) - 60,
60*floor(ts/60)].
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ppharness.backends import _neuron_power as power
from ppharness.backends import _neuron_telemetry as tel
from ppharness.run import distributed

M = 1_800_000_000 - 1_800_000_000 % 60  # an epoch-minute boundary


def line(ts: int, avg: float, status: str = "POWER_STATUS_VALID") -> str:
    return f"{status},{ts},{avg / 2:.2f},{avg * 2:.2f},{avg:.2f}\n"


def documented_tree(root: Path, chip: int = 0, text: str | None = None) -> Path:
    """neuron<chip>/ as the sysfs guide draws it (module docstring)."""
    base = root / f"neuron{chip}"
    for rel, content in {
        "core_count": "2\n",
        "power/async": "disabled\n",
        "power/control": "auto\n",
        "power/runtime_status": "unsupported\n",
        "info/architecture/arch_type": "NCv2\n",
        "stats/hardware/mem_ecc_uncorrected": "0\n",
        "stats/memory_usage/host_mem/tensors/total": "0\n",
        "neuron_core0/stats/status/success/total": "0\n",
        "stats/power/utilization": text if text is not None else line(M + 60, 12.5),
    }.items():
        (base / rel).parent.mkdir(parents=True, exist_ok=True)
        (base / rel).write_text(content)
    return base


def moved_tree(root: Path, chip: int = 0, text: str | None = None, raw: str = "die0=1.25 die1=3.50\n") -> Path:
    """The per-minute file and utilization_raw at an assumed post-2.31 place (module docstring)."""
    base = root / f"neuron{chip}"
    (base / "power").mkdir(parents=True, exist_ok=True)
    (base / "power" / "control").write_text("auto\n")
    folder = base / "stats" / "hardware" / "power"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "utilization").write_text(text if text is not None else line(M + 60, 12.5))
    (folder / "utilization_raw").write_text(raw)
    return base


# --- where the files are ------------------------------------------------------------------------
def test_discovery_finds_the_documented_file(tmp_path):
    documented_tree(tmp_path)
    found = power.discover(0, str(tmp_path))
    assert found.minute == str(tmp_path / "neuron0/stats/power/utilization")
    assert found.raw is None and found.candidates == ["stats/power/utilization"]


def test_discovery_does_not_depend_on_the_old_path(tmp_path):
    moved_tree(tmp_path)
    found = power.discover(0, str(tmp_path))
    assert found.minute == str(tmp_path / "neuron0/stats/hardware/power/utilization")
    assert found.raw == str(tmp_path / "neuron0/stats/hardware/power/utilization_raw")


def test_linux_power_management_folder_is_never_read(tmp_path):
    """neuron<N>/power/ is the kernel's runtime PM (sysfs guide L273): even a file there that
    parses is not Neuron's power."""
    base = documented_tree(tmp_path)
    (base / "power" / "utilization").write_text(line(M + 60, 99.0))
    (base / "stats" / "power" / "utilization").unlink()
    found = power.discover(0, str(tmp_path))
    assert found.minute is None and found.candidates == []


def test_a_file_that_does_not_parse_is_not_used(tmp_path):
    base = documented_tree(tmp_path, text="garbage\n")
    (base / "stats" / "power" / "extra").mkdir()
    (base / "stats" / "power" / "extra" / "utilization").write_text(line(M + 60, 5.0))
    found = power.discover(0, str(tmp_path))
    assert found.minute == str(base / "stats/power/extra/utilization")
    assert found.candidates[0] == "stats/power/utilization"  # seen, recorded, not used
    assert power.discover(7, str(tmp_path)).minute is None  # no such chip


def test_parse_minute():
    assert power.parse_minute("POWER_STATUS_VALID,1700000000,10.50,40.00,25.25\n") == {
        "status": "POWER_STATUS_VALID", "ts": 1700000000, "min_pct": 10.5, "max_pct": 40.0, "avg_pct": 25.25}  # fmt: skip
    assert power.parse_minute("garbage") is None and power.parse_minute("A,b,1,2,3") is None


# --- which minutes describe the window ------------------------------------------------------------
def test_a_stamp_describes_the_minute_before_its_boundary():
    assert power.minute_of(M + 60) == (M, M + 60)
    assert power.minute_of(M + 61) == (M, M + 60)  # stamped a second late: the same minute


def minutes(*pairs: tuple[int, float], status: str = "POWER_STATUS_VALID") -> dict[int, dict]:
    return {ts: power.parse_minute(line(ts, avg, status)) for ts, avg in pairs}


def test_every_whole_minute_inside_the_window_is_averaged_with_its_coverage():
    """[M+30, M+180]: the minutes ending at M+120 and M+180 lie inside; the one ending at M+60
    began before the window and the one ending at M+240 after it ended."""
    seen = {0: minutes((M + 60, 50.0), (M + 121, 10.0), (M + 180, 20.0), (M + 240, 90.0))}
    out = power.window_average(seen, M + 30, M + 180, tdp_watts=400.0)
    assert out["power_minutes"]["neuron0"] == [{"ts": M + 121, "avg_pct": 10.0, "max_pct": 20.0},
                                               {"ts": M + 180, "avg_pct": 20.0, "max_pct": 40.0}]  # fmt: skip
    assert out["power_pct"] == pytest.approx(15.0)
    assert out["power_coverage"] == pytest.approx(120 / 150)
    assert out["power_above_background_w"] == pytest.approx(60.0)  # 15 % of 400 W, above background
    assert out["energy_above_background_j"] == pytest.approx(60.0 * 150)
    assert out["power_basis"].startswith("above background") and out["power_reason"] == ""


def test_a_short_window_without_a_whole_minute_is_null_with_the_reason():
    seen = {0: minutes((M + 60, 50.0), (M + 120, 10.0))}
    out = power.window_average(seen, M + 10, M + 100)  # 90 s, no whole epoch minute inside
    assert out["power_pct"] is None and "120 s" in out["power_reason"]
    assert power.window_average(seen, M, M + 90)["power_pct"] == 50.0  # by luck: [M, M+60] is inside


def test_chips_add_up_and_a_chip_without_a_minute_voids_the_sum():
    seen = {0: minutes((M + 120, 10.0)), 1: minutes((M + 120, 30.0))}
    out = power.window_average(seen, M + 60, M + 120, tdp_watts=100.0)
    assert out["power_pct"] == pytest.approx(20.0) and out["power_above_background_w"] == pytest.approx(40.0)
    seen[1] = minutes((M + 120, 30.0), status="POWER_STATUS_NO_DATA")
    out = power.window_average(seen, M + 60, M + 120, tdp_watts=100.0)
    assert out["power_pct"] is None and "neuron1" in out["power_reason"]
    out = power.window_average({0: minutes((M + 120, 10.0))}, M + 60, M + 120)  # no TDP: percent only
    assert out["power_pct"] == 10.0 and out["power_above_background_w"] is None and "tdp_watts" in out["power_reason"]


# --- polling through the window -------------------------------------------------------------------
class Clock:
    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_the_poller_keeps_each_minute_once_and_every_read(tmp_path):
    base = moved_tree(tmp_path)
    minute_file = base / "stats/hardware/power/utilization"
    clock = Clock(M + 30)
    poller = power.PowerPoller([power.discover(0, str(tmp_path))], clock=clock)
    poller.poll()
    clock.now = M + 40
    poller.poll()  # the same minute again: kept once
    minute_file.write_text(line(M + 120, 40.0))
    (base / "stats/hardware/power/utilization_raw").write_text("die0=7.00 die1=9.00\n")
    clock.now = M + 125
    poller.poll()
    assert sorted(poller.minutes[0]) == [M + 60, M + 120]
    assert poller.minutes[0][M + 60]["read_at"] == M + 30  # the first read of that minute
    assert [h["ts"] for h in poller.history] == [M + 60, M + 60, M + 120] and poller.polls == 3
    assert [r["text"] for r in poller.raw[0]] == ["die0=1.25 die1=3.50", "die0=7.00 die1=9.00"]  # kept as read


def test_the_poller_reads_at_start_and_at_stop(tmp_path):
    documented_tree(tmp_path)
    poller = power.PowerPoller([power.discover(0, str(tmp_path))], interval_s=3600)  # the thread never fires
    poller.start()
    poller.stop()
    assert poller.polls == 2 and list(poller.minutes[0]) == [M + 60]


def test_the_sampler_averages_the_minutes_it_polled(tmp_path, monkeypatch):
    """The sampler end to end: the minute that rolls over during the window is the one used; the
    chip's mean_w/energy_j stay null (background is backed out), the labelled figure is kept."""
    monkeypatch.setattr(tel.shutil, "which", lambda name: None)  # no neuron-monitor here
    base = documented_tree(tmp_path, text=line(M + 60, 5.0))
    clock = Clock(M + 50)
    sampler = tel.NeuronSampler([0], tdp_watts=500.0, root=str(tmp_path), clock=clock, poll_s=3600)
    sampler.start()  # reads the minute ending at M+60: it began before the window
    (base / "stats/power/utilization").write_text(line(M + 120, 20.0))
    clock.now = M + 130
    out = sampler.stop()  # reads the minute ending at M+120: inside [M+50, M+130]
    assert out["mean_w"] is None and out["energy_j"] is None
    assert out["power_pct"] == 20.0 and out["power_above_background_w"] == pytest.approx(100.0)
    assert out["energy_above_background_j"] == pytest.approx(100.0 * 80)
    assert out["power_coverage"] == pytest.approx(60 / 80)
    assert out["power_paths"] == {"neuron0": str(base / "stats/power/utilization")} and out["power_polls"] == 2


def test_the_sampler_says_why_when_a_chip_has_no_power_file(tmp_path, monkeypatch):
    monkeypatch.setattr(tel.shutil, "which", lambda name: None)
    documented_tree(tmp_path, chip=0)
    (tmp_path / "neuron1" / "stats").mkdir(parents=True)
    sampler = tel.NeuronSampler([0, 1], tdp_watts=500.0, root=str(tmp_path), clock=Clock(M), poll_s=3600)
    sampler.start()
    sampler.clock.now = M + 120
    out = sampler.stop()
    assert out["power_pct"] is None and "neuron1" in out["power_reason"]
    sampler = tel.NeuronSampler([], root=str(tmp_path), clock=Clock(M), unread="read by rank 0")
    sampler.start()
    assert sampler.stop()["power_reason"] == "read by rank 0"


def test_ranks_add_the_labelled_figure_once_per_chip():
    from ppharness.core import timing

    def part(energy: dict) -> timing.Measurement:
        return timing.Measurement(1.0, 1, [0.1, 0.1], [0.1, 0.1], 1.0, 0, energy)

    reader = {"energy_j": None, "mean_w": None, "power_above_background_w": 50.0, "energy_above_background_j": 500.0,
              "power_basis": power.BASIS, "power_reason": "", "power_chips": [0]}  # fmt: skip
    other = {"energy_j": None, "mean_w": None, "power_reason": "read by another process", "power_chips": []}
    combined = distributed.combine([part(reader), part(other), part({**reader, "power_chips": [1]})])
    assert combined.energy["power_above_background_w"] == pytest.approx(100.0)
    assert combined.energy["energy_above_background_j"] == pytest.approx(1000.0)
    assert combined.energy["mean_w"] is None and combined.energy["power_basis"] == power.BASIS
    cpu = {"energy_j": 5.0, "mean_w": 1.0}  # other backends: no labelled keys appear
    assert set(distributed.combine([part(cpu), part(cpu)]).energy) == {"energy_j", "mean_w"}
