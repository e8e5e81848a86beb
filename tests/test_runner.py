"""The runner: failures become recorded rows and the run goes on; wrong-but-fast is INVALID."""

import pytest
import torch
from conftest import SMOKE

from ppharness import backends
from ppharness.backends.cpu import CPUBackend
from ppharness.errors import BenchError
from ppharness.facts import sysinfo
from ppharness.record.load import load
from ppharness.run import config, runner


class WrongBackend(CPUBackend):
    """Fast but wrong: perturbs every forward's output, as a broken kernel would."""

    def prepare(self, module, example_inputs, scenario, compile_mode):
        return lambda *args, **kwargs: module(*args, **kwargs) * 1.5


class FlakyBackend(CPUBackend):
    """Runs out of memory on batch 2 and fails to compile on batch 3, like a real sweep."""

    def prepare(self, module, example_inputs, scenario, compile_mode):
        batch = example_inputs[0].shape[0] if scenario == "train" else 0
        if batch == 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        if batch == 3:
            raise type("BackendCompilerFailed", (RuntimeError,), {})("inductor failed")
        return module


def _run(tmp_path, monkeypatch, cls, name, overrides):
    monkeypatch.setitem(backends.REGISTRY, name, cls)
    monkeypatch.setattr(cls, "name", name)
    cfg = config.load(SMOKE, ["timing.min_seconds=0", *overrides], backend=name)
    files = runner.run(cfg, tmp_path)
    return load(files)


def test_fast_but_wrong_backend_gets_invalid_rows(tmp_path, monkeypatch):
    df = _run(tmp_path, monkeypatch, WrongBackend, "wrong", ["scenarios={prefill: {batch: 1, prompt_len: 8}}"])
    assert list(df["status"]) == ["invalid"]
    assert "check failed" in df["reason"].iloc[0] and not df["validity.valid"].iloc[0]


def test_failures_are_recorded_and_the_sweep_goes_on(tmp_path, monkeypatch):
    df = _run(tmp_path, monkeypatch, FlakyBackend, "flaky", ["scenarios={train: {batch: [1, 2, 3, 4], seq_len: 8}}"])
    assert list(df["status"]) == ["ok", "oom", "compile_error", "ok"]
    assert "out of memory" in df["reason"].iloc[1]
    assert df["metrics.tokens_per_s"].notna().tolist() == [True, False, False, True]


def test_unavailable_backend_fails_before_writing(tmp_path, monkeypatch):
    class Absent(CPUBackend):
        @classmethod
        def available(cls):
            return False, "no such device"

    with pytest.raises(BenchError, match="not available here: no such device"):
        _run(tmp_path, monkeypatch, Absent, "absent", [])
    assert not list(tmp_path.iterdir())


def test_pricing_resolution(monkeypatch):
    cfg = config.load(SMOKE, ["instance=c7a.large"])
    monkeypatch.setattr(sysinfo, "ec2_instance_type", lambda: None)
    assert runner.resolve_instance(cfg).source == "config"  # priced as, not ran on
    monkeypatch.setattr(sysinfo, "ec2_instance_type", lambda: "c7a.large")
    assert runner.resolve_instance(cfg).source == "dmi"
    auto = config.load(SMOKE, ["instance=auto"])
    assert runner.resolve_instance(auto).instance == "c7a.large"
    monkeypatch.setattr(sysinfo, "ec2_instance_type", lambda: None)
    p = runner.resolve_instance(auto)
    assert p.instance is None and "not an EC2 instance" in p.reason


def test_a_device_is_never_priced_as_another_accelerators_instance():
    h200 = backends.DeviceInfo(backend="cuda", name="NVIDIA H200", accelerator="h200-sxm")
    with pytest.raises(
        BenchError,
        match=r"p5\.48xlarge has h100-sxm accelerators, but this device is h200-sxm.*: --set instance=p5en\.48xlarge$",
    ):
        runner.check_instance(runner.Pricing("p5.48xlarge", "config"), h200)
    runner.check_instance(runner.Pricing("p5e.48xlarge", "config"), h200)  # the H200 instance
    runner.check_instance(runner.Pricing("p5.48xlarge", "config"), backends.DeviceInfo("cuda", "NVIDIA H100 NVL", None))
    runner.check_instance(runner.Pricing("c7a.large", "config"), backends.DeviceInfo("cpu", "AMD EPYC", None))
    runner.check_instance(runner.Pricing(None, "none"), h200)


def test_host_out_of_memory_is_recorded_as_oom(tmp_path, monkeypatch):
    """c10's CPU allocator reports exhaustion as a plain RuntimeError, "[enforce fail at
    alloc_cpu.cpp:...] ... can't allocate memory": a real one is still an `oom`, not an `error`."""
    try:
        torch.empty(2**50, dtype=torch.uint8)  # 1 PiB: refused by the allocator at once
    except RuntimeError as exc:
        real = exc
    else:  # pragma: no cover - a host that overcommits a petabyte
        pytest.skip("this host allocated 1 PiB lazily")
    assert CPUBackend().is_oom(real), str(real)

    class HostOOM(CPUBackend):
        def prepare(self, module, example_inputs, scenario, compile_mode):
            raise real

    df = _run(
        tmp_path, monkeypatch, HostOOM, "hostoom", ["scenarios={prefill: {batch: 1, prompt_len: 8}}", "check=false"]
    )
    assert list(df["status"]) == ["oom"] and "enforce fail" in df["reason"].iloc[0]
