"""Timed kernels (ppharness/kernels/): every variant against its reference on every available backend, the
cost models against torch.utils.flop_counter.FlopCounterMode where it counts them, the roofline
figures, and both front doors as users run them (`ppbench kernels` through CliRunner, and
`pytest -m benchmark benchmarks/` in a subprocess whose JSON `ppbench show` reads back).

Shapes are the `tiny` preset at batch 2 x 16 tokens; nothing here times anything for a verdict.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import math
import os
import re
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from conftest import REPO
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode
from typer.testing import CliRunner

from ppharness import backends
from ppharness.cli import app
from ppharness.core import ceilings
from ppharness.core.metrics import MetricError
from ppharness.core.workload import model_config
from ppharness.errors import BenchError
from ppharness.facts.catalog import Accelerator
from ppharness.kernels import BOUNDS, Cost, Geometry, discover, max_rel_err, pbjson, tensors
from ppharness.kernels.roofline import cost_block, priced, roofline_metrics
from ppharness.kernels.run import KernelOptions, KernelSession, make_ring
from ppharness.record.load import load

TINY = Geometry("tiny", model_config("tiny"), batch=2, seq_len=16)
KERNELS = discover()
FIXTURE_CEILINGS = {
    "gemm_tflops": 1.0,
    "gemm_n": 2048,
    "copy_gbps": 8.0,
    "read_gbps": 10.0,
    "mem_gbps": 10.0,
    "copy_bytes": 1,
    "measured_at": "fixture",
}
runner = CliRunner()


def backend_params() -> list:
    out = []
    for name, cls in sorted(backends.discover().items()):
        ok, why = cls.available()
        out.append(pytest.param(name, marks=pytest.mark.skipif(not ok, reason=f"{name}: {why}")))
    return out


_SESSIONS: dict[tuple, KernelSession] = {}


def session(backend: str, dtype: str, compile_mode: str = "none") -> KernelSession:
    key = (backend, dtype, compile_mode)
    if key not in _SESSIONS:
        opts = KernelOptions(backend, [], dtype, "tiny", TINY.batch, TINY.seq_len, compile_mode, 0.01)
        _SESSIONS[key] = KernelSession(opts)
    return _SESSIONS[key]


def check_cases(s: KernelSession, kernel: str, compiled_only: bool = False) -> int:
    """Prepare (run once and check) every case of `kernel`; returns how many were checked."""
    cases = [c for c in s.cases() if c.kernel.name == kernel and (c.compile != "none" or not compiled_only)]
    cases = [c for c in cases if not c.skip] or pytest.skip("; ".join(sorted({c.skip for c in cases})))
    with cases[0].kernel.session(s.backend), torch.no_grad():
        for case in cases:
            p = s.prepare(case, ring_bytes=0)
            assert p.check["passed"], (case.id, p.check)
            assert math.isfinite(p.check["max_rel_err"])
    return len(cases)


# --- every variant against its reference ---------------------------------------------------
@pytest.mark.parametrize("backend", backend_params())
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("kernel", list(KERNELS))
def test_every_variant_matches_its_reference(backend, dtype, kernel):
    if dtype not in backends.get(backend).dtypes:
        pytest.skip(f"{backend} has no {dtype}")
    assert check_cases(session(backend, dtype), kernel) >= 1


@pytest.mark.slow
@pytest.mark.parametrize("backend", backend_params())
@pytest.mark.parametrize("kernel", [k for k, v in KERNELS.items() if v.compile_variant])
def test_compiled_variants_match_their_reference(backend, kernel):
    modes = [m for m in backends.get(backend).compile_modes if m != "none"]
    if not modes:
        pytest.skip(f"{backend} has no compile mode")
    assert check_cases(session(backend, "float32", modes[0]), kernel, compiled_only=True) >= 1


def test_a_wrong_variant_fails_the_check():
    s = session("cpu", "float32")
    case = next(c for c in s.cases() if c.kernel.name == "rmsnorm")
    broken = type(case.kernel)()
    broken.variants = lambda shape: {"eager": lambda x, g: x * g}  # forgot to normalise
    p = s.prepare(type(case)(broken, case.shape, "eager", "none"), ring_bytes=0)
    assert not p.check["passed"] and p.check["max_rel_err"] > 0.1


# --- the registry contract -----------------------------------------------------------------
@pytest.mark.parametrize("name", list(KERNELS))
def test_kernel_contract(name):
    k = KERNELS[name]
    doc = inspect.getmodule(type(k)).__doc__ or ""
    assert re.search(r"(compute|memory|communication)-bound", doc, re.I), f"{name}: docstring must say what bounds it"
    shapes = k.shapes(TINY)
    assert shapes and len({s.name for s in shapes}) == len(shapes)
    for shape in shapes:
        assert shape.bound in BOUNDS
        a, b = k.make_inputs(shape, "float32", 0), k.make_inputs(shape, "float32", 0)
        assert all(t.device.type == "cpu" for t in tensors(a))
        assert all(torch.equal(x, y) for x, y in zip(tensors(a), tensors(b))), "same seed, same bytes"
        c = k.make_inputs(shape, "float32", 1)
        assert any(not torch.equal(x, y) for x, y in zip(tensors(a), tensors(c)) if x.is_floating_point())
        variants = k.variants(shape)
        assert variants and (k.compile_variant is None or k.compile_variant in variants)
        cost = k.cost(shape, "float32")
        moved = sum(t.nbytes for i, x in enumerate(a) if i not in k.host_inputs for t in tensors(x))
        assert cost.flops >= 0 and cost.bytes >= moved, "each input is read at least once"


def test_unknown_kernel_names_the_valid_ones():
    from ppharness.kernels import get

    with pytest.raises(BenchError, match="valid: .*gemm"):
        get("gemmm")


def test_shapes_trace_back_to_the_preset():
    m = TINY.model
    gemm = {s.name: s.dims for s in KERNELS["gemm"].shapes(TINY)}
    assert gemm["head@prefill"] == {"M": TINY.tokens, "N": m.vocab_size, "K": m.dim}
    assert gemm["wk@decode"] == {"M": TINY.batch, "N": m.n_kv_heads * m.head_dim, "K": m.dim}
    attn = {s.name: s.dims for s in KERNELS["attention"].shapes(TINY)}
    assert attn["decode"]["Sq"] == 1 and attn["decode"]["Sk"] == TINY.seq_len and attn["prefill"]["KV"] == m.n_kv_heads


# --- cost models against FlopCounterMode ---------------------------------------------------
def counted(fn, *inputs) -> int:
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        fn(*inputs)
    return fc.get_total_flops()


@pytest.mark.parametrize("name", ["gemm", "swiglu", "cross_entropy"])
def test_matmul_flops_match_flop_counter(name):
    k = KERNELS[name]
    for shape in k.shapes(TINY):
        inputs = k.make_inputs(shape, "float32", 0)
        assert counted(k.variants(shape)["eager"], *inputs) == k.cost(shape, "float32").flops, shape.name


def test_attention_flops_match_flop_counter_and_the_causal_count():
    k = KERNELS["attention"]
    for shape in k.shapes(TINY):
        d, cost = shape.dims, k.cost(shape, "float32")
        inputs = k.make_inputs(shape, "float32", 0)
        with sdpa_kernel(SDPBackend.MATH):  # FlopCounterMode counts SDPA's math path (no causal discount)
            assert counted(k.variants(shape)["sdpa"], *inputs) == cost.extra["flops_dense"]
        assert counted(k.variants(shape)["math"], *inputs) == cost.extra["flops_dense"]
        T = d["Sq"]
        pairs = T * (T + 1) / 2 if d["causal"] else d["Sq"] * d["Sk"]
        assert cost.flops == 4 * d["B"] * d["H"] * d["hd"] * pairs


def test_memory_bound_byte_models():
    rms = next(iter(KERNELS["rmsnorm"].shapes(TINY)))
    M, D = rms.dims["M"], rms.dims["D"]
    assert KERNELS["rmsnorm"].cost(rms, "bfloat16").bytes == (2 * M * D + D) * 2
    adam = KERNELS["adamw"].shapes(TINY)[0]
    assert KERNELS["adamw"].cost(adam, "float32").bytes == 7 * 4 * adam.dims["params"]  # p,g,m,v in; p,m,v out
    ar = KERNELS["all_reduce"].shapes(TINY)[0]
    assert KERNELS["all_reduce"].cost(ar, "float32").extra["bus_bytes"] == 0  # one rank: nothing crosses a link


# --- rings, error metric, roofline -----------------------------------------------------------
def test_ring_copies_are_distinct_and_sized():
    first = (torch.ones(1024), [torch.zeros(256)])  # 5 KiB per set
    ring = make_ring(first, ring_bytes=50 * 1024)
    assert len(ring) == 10 and ring[0] is first
    ptrs = {t.data_ptr() for t in tensors(ring)}
    assert len(ptrs) == 20, "every set lives at its own address"
    assert len(make_ring(first, ring_bytes=0)) == 1


def test_max_rel_err_never_passes_a_wrong_answer():
    x = torch.randn(8)
    assert max_rel_err(x, x.clone()) == 0
    assert max_rel_err(torch.full((8,), float("nan")), x) == math.inf
    assert max_rel_err(x[:4], x) == math.inf
    assert max_rel_err((x,), (x, x)) == math.inf


ACC = Accelerator("fixture-gpu", "fixture", "Fixture GPU", 1, {"float32": 100.0}, 2000.0, 80, "fixture", "2026-01-01")


def test_roofline_figures():
    cost = Cost(flops=50e12, bytes=1e12)
    m = roofline_metrics(cost, "compute", 1.0, ACC, "float32", 1, "", FIXTURE_CEILINGS)
    assert m["achieved_tflops"] == 50 and m["mfu"] == pytest.approx(0.5) and m["peak_fraction"] == m["mfu"]
    assert m["ceiling_fraction"] == pytest.approx(50.0) and m["ceiling_kind"] == "gemm_tflops"
    mem = roofline_metrics(Cost(1e9, 1e12), "memory", 1.0, ACC, "float32", 1, "", FIXTURE_CEILINGS)
    assert mem["mbu"] == pytest.approx(0.5) and mem["peak_fraction"] == mem["mbu"] and mem["ceiling_kind"] == "mem_gbps"
    cpu = roofline_metrics(cost, "compute", 1.0, None, "float32", 1, "CPU: no vendor peak", FIXTURE_CEILINGS)
    assert cpu["mfu"] is None and "no vendor peak" in cpu["mfu_reason"] and cpu["ceiling_fraction"] is not None
    comm = roofline_metrics(
        Cost(0, 1e9, {"bus_bytes": 1.5e9}), "communication", 1.0, ACC, "float32", 1, "", FIXTURE_CEILINGS
    )
    assert comm["bus_gbps"] == 1.5 and comm["ceiling_fraction"] is None and comm["mbu"] is None
    with pytest.raises(MetricError):
        roofline_metrics(Cost(200e12, 1.0), "compute", 1.0, ACC, "float32", 1, "", None)


def test_every_shape_says_how_many_tokens_one_call_stands_for():
    """Prefill, training, optimizer and all-reduce shapes stand for batch x seq_len tokens (one
    step's); decode shapes for `batch` (one new token per sequence)."""
    for k in discover().values():
        for s in k.shapes(TINY):
            want = TINY.batch if "decode" in s.name else TINY.tokens
            assert s.tokens == want, (k.name, s.name, s.tokens)
    assert TINY.tokens != TINY.batch  # the two cases are told apart


def test_kernel_tokens_per_s_and_cost_per_token():
    m = roofline_metrics(Cost(2e9, 1e9), "memory", 0.004, ACC, "float32", 1, "", FIXTURE_CEILINGS, tokens=64)
    assert m["tokens_per_step"] == 64 and m["tokens_per_s"] == pytest.approx(64 / 0.004)
    assert roofline_metrics(Cost(2e9, 1e9), "memory", 0.004, ACC, "float32", 1, "", None)["tokens_per_s"] is None
    cost = cost_block("c7a.large", 1)
    usd = priced(cost, 16000.0)["usd_per_million_tokens"]
    assert usd == pytest.approx(cost["usd_per_hour"] * cost["share"] / (16000.0 * 3600) * 1e6)
    assert priced(cost, None)["usd_per_million_tokens"] is None and "no tokens" in priced(cost, None)["reason"]
    unpriced = cost_block("none", 1)
    assert priced(unpriced, 16000.0) == unpriced  # no instance: nothing to price, reason kept


def test_cli_prices_kernels_per_token_at_the_instance_and_basis(tmp_path, monkeypatch):
    monkeypatch.setattr(ceilings, "measure_ceilings", lambda backend, dtype: dict(FIXTURE_CEILINGS))
    monkeypatch.setenv("PPBENCH_CACHE_DIR", str(tmp_path / "cache"))
    args = ["kernels", "--kernel", "rmsnorm", *TINY_ARGS, "--instance", "c7a.large", "--out", str(tmp_path)]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    row = load(list(tmp_path.glob("*.jsonl"))).iloc[0]
    assert row["metrics.tokens_per_step"] == TINY.tokens
    assert row["metrics.tokens_per_s"] == pytest.approx(TINY.tokens / row["timing.median_s"])
    want = row["cost.usd_per_hour"] * row["cost.share"] / (row["metrics.tokens_per_s"] * 3600) * 1e6
    assert row["cost.instance"] == "c7a.large" and row["cost.basis"] == "on_demand"
    assert row["cost.usd_per_million_tokens"] == pytest.approx(want)
    bad = runner.invoke(app, [*args[:-2], "--price-basis", "capacity_block", "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2 and bad.stderr.startswith("error: ") and "capacity_block" in bad.stderr


def test_all_reduce_session_cleans_up_its_process_group():
    import torch.distributed as dist

    s = session("cpu", "float32")
    check_cases(s, "all_reduce")
    assert not dist.is_initialized(), "a world-size-1 group made by ppbench is destroyed afterwards"


def test_no_device_calls_in_kernels():
    leaks = [
        f"{p.name}:{i}" for p in (REPO / "ppharness" / "kernels").rglob("*.py")
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if re.search(r"torch\.cuda|torch_xla|torch_neuronx|torch\.neuron\b", line)
    ]  # fmt: skip
    assert not leaks


# --- front door 1: ppbench kernels ---------------------------------------------------------
TINY_ARGS = ["--preset", "tiny", "--batch", "2", "--seq-len", "16", "--min-seconds", "0.01"]


def test_cli_writes_loadable_records(tmp_path, monkeypatch):
    monkeypatch.setattr(ceilings, "measure_ceilings", lambda backend, dtype: dict(FIXTURE_CEILINGS))  # fixture ceilings
    monkeypatch.setenv("PPBENCH_CACHE_DIR", str(tmp_path / "cache"))  # not the session's real, cached ones
    # nor what an earlier test measured in this process beside an unwritable cache (test_cli.py)
    monkeypatch.setattr(ceilings, "_UNCACHED", {})
    res = runner.invoke(app, ["kernels", "--backend", "cpu", "--kernel", "rmsnorm", *TINY_ARGS, "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "roofline" in res.stdout and "rmsnorm" in res.stdout
    files = list(tmp_path.glob("*_cpu.jsonl"))
    assert len(files) == 1
    df = load(files)
    assert sorted(df["workload.variant"]) == ["eager", "fused"]
    assert set(df["workload.scenario"]) == {"kernel:rmsnorm"} and set(df["status"]) == {"ok"}
    row = df.iloc[0]
    assert row["workload.preset"] == "tiny" and row["workload.dims"]["M"] == TINY.tokens
    assert row["metrics.achieved_gbps"] > 0 and row["metrics.ceiling_kind"] == "mem_gbps"
    assert row["metrics.ceiling_fraction"] == pytest.approx(row["metrics.achieved_gbps"] / FIXTURE_CEILINGS["mem_gbps"])
    assert row["metrics.mfu"] is None and row["cost.instance"] is None and row["validity.valid"]
    assert len(row["timing.samples_s"]) == row["timing.n"] >= 10 and row["workload.ring_sets"] >= 1
    assert row["validity.check"]["passed"]
    show = runner.invoke(app, ["show", str(files[0])])
    assert show.exit_code == 0 and "rmsnorm" in show.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--kernel", "gemmm"], "unknown kernel 'gemmm'; valid: adamw, all_reduce, attention"),
        (["--backend", "tpu"], "unknown backend 'tpu'; valid: "),
        (["--dtype", "float8"], "valid: float32"),
        (["--preset", "huge"], "valid: tiny, small"),
        (["--seq-len", "4096"], "exceeds max_seq_len 128"),
        (["--compile", "fast"], "valid: none, default"),
        (["--instance", "p9.huge"], "p9.huge"),
    ],
)
def test_cli_bad_input_exits_2_naming_the_valid_values(tmp_path, args, message):
    res = runner.invoke(app, ["kernels", *TINY_ARGS, *args, "--out", str(tmp_path)])
    assert res.exit_code == 2, res.output
    assert message in res.stderr and res.stderr.startswith("error: ") and "Traceback" not in res.output
    assert not list(tmp_path.iterdir()), "nothing half-written"


def test_pytest_front_door_defaults_match_the_cli():
    """The two front doors declare their options separately; their defaults must agree."""
    spec = importlib.util.spec_from_file_location("benchmarks_conftest", REPO / "benchmarks" / "conftest.py")
    front_door = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(front_door)
    OPTIONS = front_door.OPTIONS

    command = next(c.callback for c in app.registered_commands if c.callback.__name__ == "kernels")
    cli = {name: p.default for name, p in inspect.signature(command).parameters.items()}
    for flag, _, default, _ in OPTIONS:
        name = {"--compile": "compile_"}.get(flag, flag.lstrip("-").replace("-", "_"))
        assert cli[name] == default, flag


# --- front door 2: pytest-benchmark JSON -----------------------------------------------------
@pytest.mark.slow
def test_pytest_benchmark_json_reads_into_the_same_table(tmp_path, monkeypatch):
    out, cache = tmp_path / "out.json", tmp_path / "cache"
    # Seed the subprocess's ceilings cache with fixture ceilings (its key is computed by the real code).
    monkeypatch.setenv("PPBENCH_CACHE_DIR", str(cache))
    monkeypatch.setattr(ceilings, "measure_ceilings", lambda backend, dtype: dict(FIXTURE_CEILINGS))
    cpu = backends.make("cpu")
    ceilings.get_ceilings(cpu, "float32", cpu.describe().name)
    cmd = [sys.executable, "-m", "pytest", "-m", "benchmark", "benchmarks/", "--backend", "cpu", *TINY_ARGS,
           "-k", "rmsnorm", "--benchmark-json", str(out), "-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-q"]  # fmt: skip
    env = {**os.environ, "PPBENCH_CACHE_DIR": str(cache)}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    doc = json.loads(out.read_text())
    assert doc["machine_info"]["ppbench"]["device"]["backend"] == "cpu"
    bench = doc["benchmarks"][0]
    assert {"flops", "bytes", "kernel", "dims"} <= set(bench["extra_info"]) and bench["stats"]["rounds"] >= 5
    df = load([out], pbjson.READERS)
    assert len(df) == 2 and set(df["workload.scenario"]) == {"kernel:rmsnorm"}
    assert set(df["timing.source"]) == {"pytest-benchmark"} and (df["metrics.achieved_gbps"] > 0).all()
    assert df["metrics.ceiling_fraction"].notna().all() and set(df["status"]) == {"ok"}
    show = runner.invoke(app, ["show", str(out)])
    assert show.exit_code == 0, show.output
    assert "kernels: roofline" in show.stdout and "fused" in show.stdout


def test_a_json_that_is_not_pytest_benchmark_is_refused(tmp_path):
    bad = tmp_path / "other.json"
    bad.write_text(json.dumps({"hello": 1}))
    with pytest.raises(BenchError, match="not a pytest-benchmark JSON"):
        load([bad], pbjson.READERS)
    res = runner.invoke(app, ["show", str(bad)])
    assert res.exit_code == 2 and "not a pytest-benchmark JSON" in res.stderr


def test_foreign_pytest_benchmark_rows_are_kept(tmp_path):
    """A pytest-benchmark file ppbench did not write (FIXTURE: the keys pytest-benchmark 5 writes)."""
    doc = {"machine_info": {"node": "h", "cpu": {"brand_raw": "x"}}, "commit_info": {"id": "abc", "dirty": False},
           "datetime": "2026-01-01T00:00:00", "version": "5.1.0",
           "benchmarks": [{"name": "test_sum", "fullname": "t.py::test_sum", "extra_info": {"bytes": 8e6},
                           "options": {"timer": "perf_counter"},
                           "stats": {"data": [1e-3, 1.1e-3, 0.9e-3, 1e-3, 1e-3], "rounds": 5, "iterations": 1}}]}  # fmt: skip
    path = tmp_path / "foreign.json"
    path.write_text(json.dumps(doc))
    rec = load([path], pbjson.READERS).iloc[0]
    assert rec["workload.scenario"] == "pytest:test_sum" and rec["status"] == "ok"
    assert rec["metrics.achieved_gbps"] == pytest.approx(8.0) and rec["metrics.mbu"] is None


def test_flop_counter_sees_the_cross_entropy_projection_only():
    """Why the cross_entropy cost counts the projection: FlopCounterMode counts no softmax FLOPs."""
    h, w = torch.randn(4, 8), torch.randn(16, 8)
    assert counted(lambda: F.cross_entropy(F.linear(h, w), torch.zeros(4, dtype=torch.long))) == 2 * 4 * 8 * 16


@pytest.mark.xla
@pytest.mark.parametrize("kernel", list(KERNELS))
def test_kernels_on_the_xla_lane(kernel):
    """neuron-xla on torch-xla's CPU PJRT device (`make test-xla`): every runnable variant runs as
    lazy XLA graphs and matches its reference (no NeuronCore: XLA's CPU compiler stands in)."""
    if os.environ.setdefault("PJRT_DEVICE", "CPU") != "CPU":
        pytest.skip(f"the XLA lane runs on PJRT_DEVICE=CPU, not {os.environ['PJRT_DEVICE']}")
    os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")  # before the runtime starts
    pytest.importorskip("torch_xla", reason="the XLA lane needs torch-xla (make test-xla)")
    assert check_cases(session("neuron-xla", "float32"), kernel) >= 1


def test_graph_replaying_compile_modes_are_refused_for_kernels(tmp_path, monkeypatch):
    """Replayed graphs copy each ring input into their own buffers: the copy would be timed."""
    from ppharness.backends.cpu import CPUBackend

    class Graphing(CPUBackend):
        compile_modes = (*CPUBackend.compile_modes, "reduce-overhead")
        graph_modes = ("reduce-overhead",)

    monkeypatch.setitem(backends.REGISTRY, "graphing", Graphing)
    res = runner.invoke(
        app, ["kernels", *TINY_ARGS, "--backend", "graphing", "--compile", "reduce-overhead", "--out", str(tmp_path)]
    )
    assert res.exit_code == 2 and "would time input copies; valid: none, default" in res.stderr, res.output
    assert not list(tmp_path.iterdir())


def test_a_kernel_whose_setup_fails_is_recorded_and_the_others_still_run(tmp_path, monkeypatch):
    """E.g. NCCL cannot start for all_reduce: its cases become error rows, rmsnorm still runs."""
    import contextlib

    from ppharness.kernels import REGISTRY as KERNELS

    @contextlib.contextmanager
    def broken(backend):
        raise RuntimeError("NCCL error: unhandled system error")
        yield

    monkeypatch.setattr(ceilings, "measure_ceilings", lambda backend, dtype: dict(FIXTURE_CEILINGS))
    monkeypatch.setenv("PPBENCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(KERNELS["all_reduce"], "session", broken)
    args = ["kernels", *TINY_ARGS, "--kernel", "all_reduce", "--kernel", "rmsnorm", "--out", str(tmp_path)]
    res = runner.invoke(app, args)
    assert res.exit_code == 3, res.output  # some cases failed, some valid (README, exit status)
    df = load(list(tmp_path.glob("*_cpu.jsonl")))
    failed = df[df["workload.scenario"] == "kernel:all_reduce"]
    assert len(failed) >= 1 and set(failed["status"]) == {"error"}
    assert failed["reason"].str.contains("NCCL error").all()
    assert set(df[df["workload.scenario"] == "kernel:rmsnorm"]["status"]) == {"ok"}
