"""The measured ceilings: what is measured, and the per-host cache."""

import json

from bench import ceilings
from bench.backends.cpu import CPUBackend


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
