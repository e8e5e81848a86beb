"""The measured ceilings: what is measured, and the per-host cache."""

import json
import os

import pytest
import torch

from ppharness.backends.cpu import CPUBackend
from ppharness.core import ceilings, guards


def test_measured_once_then_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("PPBENCH_CACHE_DIR", str(tmp_path))
    calls = []
    fake = {"gemm_tflops": 1.0, "copy_gbps": 8.0, "read_gbps": 10.0, "mem_gbps": 10.0}
    monkeypatch.setattr(ceilings, "measure_ceilings", lambda b, d: calls.append(d) or dict(fake))
    first = ceilings.get_ceilings(CPUBackend(), "float32", "some cpu")
    again = ceilings.get_ceilings(CPUBackend(), "float32", "some cpu")
    assert calls == ["float32"] and not first["cached"] and again["cached"]
    ceilings.get_ceilings(CPUBackend(), "bfloat16", "some cpu")  # another dtype is another ceiling
    assert calls == ["float32", "bfloat16"]
    (tmp_path / "ceilings.json").write_text("{torn")  # a damaged cache is re-measured, not an error
    ceilings.get_ceilings(CPUBackend(), "float32", "some cpu")
    assert len(calls) == 3 and json.loads((tmp_path / "ceilings.json").read_text())


def test_real_measurement_on_this_cpu():
    got = ceilings.measure_ceilings(CPUBackend(), "float32", reps=1)
    assert got["gemm_tflops"] > 0 and got["copy_gbps"] > 0 and got["read_gbps"] > 0 and got["add_gbps"] > 0
    assert got["mem_gbps"] == max(got["copy_gbps"], got["read_gbps"], got["add_gbps"])


class Interfered(guards.Monitor):
    """A stub host monitor: trials listed in `bad` (0-based) saw other processes take 70%."""

    def __init__(self, count: list[int], bad: set[int]):
        self.count, self.bad = count, bad

    def stop(self) -> guards.Interference:
        i = len(self.count)
        self.count.append(i)
        if i in self.bad:
            return guards.Interference(
                invalid=[f"{guards.OTHER_CPU} 70% of the host"], detail={"other_cpu_fraction": 0.7}
            )
        return guards.Interference(detail={"other_cpu_fraction": 0.01})


def _scripted(monkeypatch, bad: set[int], slow: set[int]):
    """Every kernel takes 1 s in the trials of `slow`, else 0.5 s; trials in `bad` interfered."""
    count: list[int] = []
    monkeypatch.setattr(guards, "HostCPUMonitor", lambda limit: Interfered(count, bad))
    monkeypatch.setattr(ceilings, "_best", lambda backend, fn, reps: 1.0 if len(count) in slow else 0.5)
    return count


def test_the_best_clean_trial_sets_the_ceiling(monkeypatch):
    count = _scripted(monkeypatch, bad={1}, slow={0, 2})  # the fastest trial interfered: it does not count
    got = ceilings.measure_ceilings(CPUBackend(), "float32", reps=1, trials=3)
    assert count == [0, 1, 2] and got["trials"] == 3 and got["clean_trials"] == 2 and "interference" not in got
    assert got["gemm_tflops"] == pytest.approx(2 * 2048**3 / 1.0 / 1e12)  # the clean trials' best: 1 s
    assert got["gemm_by_source"][got["gemm_source"]] == got["gemm_tflops"]
    count = _scripted(monkeypatch, bad=set(), slow={0, 2})
    best = ceilings.measure_ceilings(CPUBackend(), "float32", reps=1, trials=3)
    assert best["gemm_tflops"] == pytest.approx(2 * got["gemm_tflops"])  # best of several: trial 1's 0.5 s
    assert best["mem_gbps"] == pytest.approx(3 * 256 * 2**20 / 0.5 / 1e9)  # add: 3 streams in 0.5 s


def test_a_measurement_under_interference_is_used_but_never_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("PPBENCH_CACHE_DIR", str(tmp_path))
    _scripted(monkeypatch, bad={0, 1, 2, 3, 4, 5}, slow=set())
    first = ceilings.get_ceilings(CPUBackend(), "float32", "some cpu")
    assert not first["cached"] and len(first["interference"]) == 3 and first["gemm_tflops"] > 0
    assert not (tmp_path / "ceilings.json").exists()  # refused
    again = ceilings.get_ceilings(CPUBackend(), "float32", "some cpu")
    assert not again["cached"]  # measured again, still under interference
    _scripted(monkeypatch, bad=set(), slow=set())
    clean = ceilings.get_ceilings(CPUBackend(), "float32", "some cpu")
    cached = ceilings.get_ceilings(CPUBackend(), "float32", "some cpu")
    assert not clean["cached"] and cached["cached"] and "interference" not in cached
    assert cached["versions"]["torch"] == torch.__version__ and cached["measured_at"]
    redo = ceilings.get_ceilings(CPUBackend(), "float32", "some cpu", remeasure=True)
    assert not redo["cached"]


def test_gemm_ceiling_races_the_blas_libraries_at_hand():
    names = list(ceilings._gemms(8, torch.device("cpu"), torch.float32, "float32"))
    assert names[0].startswith("torch (")
    if torch.get_num_threads() >= (os.cpu_count() or 1):  # numpy's BLAS uses every core: a fair race
        assert len(names) == 2 and names[1].startswith("numpy (")
    assert len(ceilings._gemms(8, torch.device("cpu"), torch.bfloat16, "bfloat16")) == 1  # numpy has no bf16


def test_ceilings_command_shows_the_cache(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from ppharness.cli import app

    monkeypatch.setenv("PPBENCH_CACHE_DIR", str(tmp_path))
    res = CliRunner().invoke(app, ["ceilings"])
    assert res.exit_code == 0 and "no cached ceilings" in res.output
    _scripted(monkeypatch, bad=set(), slow=set())
    res = CliRunner().invoke(app, ["ceilings", "--remeasure", "--dtype", "float32"])
    assert res.exit_code == 0, res.output
    shown = CliRunner().invoke(app, ["ceilings"]).output
    assert "float32" in shown and "torch (" in shown and json.loads((tmp_path / "ceilings.json").read_text())
    bad = CliRunner().invoke(app, ["ceilings", "--remeasure", "--backend", "tpu"])
    assert bad.exit_code == 2
    assert CliRunner().invoke(app, ["ceilings", "--remeasure", "--dtype", "int8"]).exit_code == 2
    (tmp_path / "ceilings.json").unlink()
    _scripted(monkeypatch, bad={0, 1, 2}, slow=set())  # every trial under interference: shown, not cached
    res = CliRunner().invoke(app, ["ceilings", "--remeasure"])
    text = " ".join(res.output.split())
    assert res.exit_code == 0 and "NOT cached" in text and "trial 3: other processes used 70%" in text
    assert "no cached ceilings" in text and not (tmp_path / "ceilings.json").exists()


class Busy(guards.Monitor):
    """A stub host monitor: other processes took 60% of the host, which the run's relaxed threshold
    (max_other_cpu 1.0) accepts."""

    def __init__(self, limit: float):
        self.limit = limit

    def stop(self) -> guards.Interference:
        return guards.Interference(detail={"other_cpu_fraction": 0.6, "max_other_cpu": self.limit})


def test_a_relaxed_run_uses_its_ceilings_but_never_caches_them(tmp_path, monkeypatch):
    """A run that relaxes timing.max_other_cpu accepts a busy host for its own rows; the cache
    serves every later run, so only a trial under CACHE_MAX_OTHER_CPU may write it."""
    monkeypatch.setenv("PPBENCH_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(ceilings, "CACHE_MAX_OTHER_CPU", 0.25)  # conftest relaxes it for other tests
    monkeypatch.setattr(guards, "HostCPUMonitor", Busy)
    monkeypatch.setattr(ceilings, "_best", lambda backend, fn, reps: 0.5)
    got = ceilings.get_ceilings(CPUBackend(), "float32", "some cpu", max_other_cpu=1.0)
    assert got["clean_trials"] == 3 and got["cacheable_trials"] == 0 and not got["cached"]
    assert not (tmp_path / "ceilings.json").exists()


def test_a_row_above_its_ceiling_is_flagged():
    from ppharness.record import flags

    warning = f"{flags.ABOVE_CEILING} (3.01): the cached ceiling is too low"
    assert flags.codes([warning]) == ["ceiling"]


def test_an_accelerator_runs_gemms_for_warm_s_before_its_gemm_ceiling_is_timed(monkeypatch):
    """A GPU idles at a few hundred MHz: back-to-back GEMMs for WARM_S come before the first timed
    one, so the ceiling is not set by a cold clock. A CPU has no such clock to raise."""
    events = []
    real_warm, real_best = ceilings._warm, ceilings._best
    monkeypatch.setattr(ceilings, "_warm", lambda b, fn, s: events.append(("warm", s)) or real_warm(b, fn, s))
    monkeypatch.setattr(ceilings, "_best", lambda b, fn, reps: events.append(("timed",)) or real_best(b, fn, reps))
    monkeypatch.setattr(ceilings, "_gemms", lambda n, dev, dt, name: {"torch": lambda: ceilings._gemm(64, dev, dt)})
    got = ceilings.measure_ceilings(CPUBackend(), "float32", reps=1, trials=1, warm_s=0.05)
    assert events[0] == ("warm", 0.05) and events[1] == ("timed",)  # warmed first, then every timed kernel
    assert got["warm"]["seconds"] == 0.05 and got["warm"]["gemms"] >= 8
    events.clear()
    assert ceilings.measure_ceilings(CPUBackend(), "float32", reps=1, trials=1)["warm"] == {"seconds": 0.0, "gemms": 0}
    assert not any(e[0] == "warm" for e in events)  # the CPU default: none


def test_warm_runs_the_kernel_back_to_back_for_the_time_asked():
    calls, syncs = [], []
    backend = CPUBackend()
    backend.synchronize = lambda: syncs.append(1)
    n = ceilings._warm(backend, lambda: calls.append(1), 0.02)
    assert n == len(calls) >= 8 and n % 8 == 0 and len(syncs) == n // 8  # a wait every 8 calls
