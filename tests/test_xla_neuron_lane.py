"""The XLA lane: the neuron-xla backend's own code, run for real on torch-xla's CPU PJRT device.

`make test-xla` runs these in .venv-xla (torch 2.9.0 + torch-xla 2.9.0) with PJRT_DEVICE=CPU;
the default `pytest` run deselects them (marker `xla`). No NeuronCore and no neuronx-cc are
involved: XLA's CPU compiler stands in for neuronx-cc, so what is tested is the lazy-tensor
protocol (sync per step, one wait per timed block of steps, compile accounting from XLA's
metrics), the compiler-flag routing into NEURON_CC_FLAGS, the inference graph's aliasing
contract and the trace cache's torch.jit.save/load round trip (with the stand-in trace of
tests/test_neuron_trace.py, under this lane's torch 2.9), not Neuron's speed.

XLA_FLAGS=--xla_backend_optimization_level=0 (set by `make test-xla`, or here if unset) makes
XLA's CPU compiles several times faster; it changes nothing these tests check.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import test_contract as contract  # tests/ is on sys.path (the rootdir conftest)
import torch
import torch.nn.functional as F

from ppharness import backends
from ppharness.backends import _neuron_trace_cache as trace_cache
from ppharness.backends._neuron_trace import TraceableLM
from ppharness.core import scenarios
from ppharness.core.scenarios import Case
from ppharness.core.timing import TimingConfig, measure
from ppharness.core.workload import PRESETS, build_model, random_tokens
from ppharness.run import config, runner

pytestmark = pytest.mark.xla
TINY = PRESETS["tiny"]
RUN = {
    "name": "xla-lane", "backends": ["neuron-xla"], "model": "tiny", "dtype": "float32", "compile": "none",
    "scenarios": {"train": {"batch": 2, "seq_len": 32}, "prefill": {"batch": 2, "prompt_len": 32},
                  "decode": {"batch": 2, "prompt_len": 16, "new_tokens": 8}},
    "timing": {"warmup": 1, "min_iters": 3, "min_seconds": 0.0, "max_seconds": 60.0},
}  # fmt: skip


@pytest.fixture(scope="module")
def xla():
    if os.environ.setdefault("PJRT_DEVICE", "CPU") != "CPU":
        pytest.skip(f"the XLA lane runs on PJRT_DEVICE=CPU, not {os.environ['PJRT_DEVICE']}")
    os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")  # before the runtime starts
    torch_xla = pytest.importorskip("torch_xla", reason="the XLA lane needs torch-xla (make test-xla)")
    import torch_xla.debug.metrics as met

    return torch_xla, met


@pytest.fixture(scope="module")
def nx(xla):
    return backends.make("neuron-xla")


@pytest.fixture(scope="module")
def lane_records(xla, tmp_path_factory):
    """One real run through ppharness.run.runner: train, prefill and decode. Must be the first thing in
    this process to compile these shapes (compile-time assertions below rely on it)."""
    with pytest.MonkeyPatch.context() as mp:
        # The GEMM/copy ceilings are sized for accelerators (8192^2, 2 GiB): minutes on a CPU, and
        # not what this lane tests.
        mp.setattr(runner.ceilings, "get_ceilings", lambda *a, **k: None)
        # A module fixture runs before conftest's per-test relaxation of the contamination
        # threshold: relax it here too (this lane tests the XLA path, not the host's quiet).
        from ppharness.core import timing

        mp.setattr(timing, "MAX_OTHER_CPU", 1.0)
        files = runner.run(config.validate(RUN), tmp_path_factory.mktemp("xla-results"))
    import json

    return {r["workload"]["scenario"]: r for r in map(json.loads, Path(files[0]).read_text().splitlines())}


def executions(met) -> tuple[int, float]:
    """(finished executions, seconds executing) from XLA's ExecuteTime metric."""
    data = met.metric_data("ExecuteTime")
    return (data[0], data[1] / 1e9) if data else (0, 0.0)


# --- the whole protocol through the runner ----------------------------------------------------
def test_every_scenario_runs_valid_through_the_runner(lane_records):
    assert set(lane_records) == {"train", "prefill", "decode"}
    for scenario, rec in lane_records.items():
        assert rec["status"] == "ok", (scenario, rec["reason"])
        assert rec["validity"]["check"]["passed"] and rec["timing"]["compiles_in_window"] == 0
        assert rec["timing"]["n"] >= 3 and all(s > 0 for s in rec["timing"]["samples_s"])


def test_lazy_cases_are_timed_in_blocks_of_steps(lane_records):
    """Lazy XLA graphs: a sample is 10 steps with one wait (audit 7); summaries are per step."""
    for scenario in ("train", "prefill", "decode"):  # inference is lazy too on this lane (no trace)
        t = lane_records[scenario]["timing"]
        assert t["steps_per_sample"] == 10 and t["execution"]["steps_per_sample_default"] == 10
        assert t["median_s"] == pytest.approx(sorted(t["samples_s"])[len(t["samples_s"]) // 2], rel=0.5)


def test_compile_time_is_kept_out_of_step_times(lane_records):
    t = lane_records["train"]["timing"]
    # The first two train steps compile different graphs (AdamW creates its state on the first),
    # so warm-up ran until XLA's UncachedCompile counter stopped moving.
    assert t["warmup_iters"] >= 2
    assert t["compiler_s"] > 0  # XLA's own CompileTime metric during warm-up
    assert t["compile_s"] >= t["compiler_s"]  # the warm-up steps that compiled were added to compile_s
    assert max(t["samples_s"]) < t["compiler_s"]  # no measured step contains a compile


def test_the_lane_is_recorded_as_not_a_neuroncore(lane_records):
    rec = lane_records["train"]
    assert rec["device"]["accelerator"] is None
    assert rec["device"]["accelerator_reason"] == "torch-xla CPU PJRT device (test lane), not a NeuronCore"
    assert rec["metrics"]["mfu"] is None and "not a NeuronCore" in rec["metrics"]["mfu_reason"]
    versions = rec["system"]["versions"]
    assert versions["pjrt_device"] == "CPU (test lane)" and versions["torch-xla"].startswith("2.9")
    assert "unused" in versions["neuronx_cc_flags"] and "test lane" in versions["inference_path"]


# --- the classic timing mistakes --------------------------------------------------------------
def test_the_timer_includes_execution_not_only_tracing(xla, nx):
    """Lazy tensors: the step's Python code only records a graph; torch_xla.sync() launches it
    asynchronously. A clock stopped there (or after sync(wait=True), which on this device also
    returns early) times tracing; the backend's timer waits with wait_device_ops()."""
    torch_xla, met = xla
    a = torch.randn(768, 768, device=nx.device)

    def heavy_step() -> torch.Tensor:  # ~11 GFLOP: far longer to execute than to trace
        x = a
        for _ in range(12):
            x = torch.tanh(x @ a)
        nx.step_end()
        return x

    with nx.timer():
        heavy_step()  # compile outside the comparisons
    for stop_clock in (lambda: None, lambda: torch_xla.sync(wait=True)):
        n0, _ = executions(met)
        heavy_step()
        stop_clock()
        n1, _ = executions(met)
        nx.synchronize()
        assert n1 == n0, "the naive clock stopped before the step's graph had finished executing"
        assert executions(met)[0] == n0 + 1
    n0, busy0 = executions(met)
    with nx.timer() as t:
        out = heavy_step()
    n1, busy1 = executions(met)
    assert n1 == n0 + 1, "the step's execution finished inside the timed window"
    assert busy1 - busy0 <= t.elapsed_s + 1e-3  # the execution lies within the window
    assert "IR: None" in torch_xla._XLAC._get_xla_tensor_debug_info(out)  # materialized, nothing pending
    out.cpu()
    assert executions(met)[0] == n1  # reading it back ran nothing more


def test_a_shape_change_inside_the_window_is_invalid(xla, nx):
    """A train step whose input shape changes after warm-up (a short last batch, no drop_last)
    compiles a new graph inside the measured window: the case must be INVALID."""
    dev = nx.device
    model = build_model(TINY).to(dev)
    optimizer = nx.make_optimizer(model.parameters())
    data = {T: random_tokens(TINY, 2, T + 1, seed=T).to(dev) for T in (16, 12)}
    calls = 0

    def step() -> torch.Tensor:
        nonlocal calls
        calls += 1
        tokens = data[16 if calls <= 5 else 12]  # warm-up settles within 5 steps, then the shape changes
        logits = model(tokens[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten())
        loss.backward()
        nx.optimizer_step(optimizer)
        optimizer.zero_grad(set_to_none=True)
        nx.step_end()
        return loss.detach()

    m = measure(step, nx, TimingConfig(warmup=5, min_iters=4, min_seconds=0))
    assert m.warmup_iters == 5
    assert not m.valid and m.compiles_in_window >= 1
    assert any("compiled inside the measured window" in r for r in m.reasons)


def test_training_through_lazy_tensors_reduces_the_loss(xla, nx):
    case = Case("train", batch=2, dtype="float32", compile="none", seq_len=32)  # the shapes already compiled
    step = scenarios.build_step(case, TINY, nx)
    losses = [step.run().item() for _ in range(6)]
    assert losses[-1] < losses[0]


def test_bf16_autocast_trains_on_the_xla_device(xla, nx):
    case = Case("train", batch=2, dtype="bfloat16", compile="none", seq_len=16)
    step = scenarios.build_step(case, TINY, nx)
    m = measure(step.run, nx, TimingConfig(warmup=1, min_iters=2, min_seconds=0), step.prepare_s)
    assert m.valid, m.reasons
    with nx.autocast("bfloat16"):
        y = torch.ones(4, 4, device=nx.device) @ torch.ones(4, 4, device=nx.device)
    assert y.dtype == torch.bfloat16  # precision from autocast, never from a compiler auto-cast


def test_block_sampling_does_the_same_work_per_step(xla, nx):
    """The same training steps, waited for after each step or once per block of 5: the same
    graph executions per step, no new graph, and the same losses step by step. The step times of
    both modes are printed (run with -s) for the issue note; this test asserts no speed."""
    _, met = xla
    case = Case("train", batch=2, dtype="float32", compile="none", seq_len=32)  # compiled above
    losses, per_step, times = {}, {}, {}
    for k in (1, 5):
        step = scenarios.build_step(case, TINY, nx)  # same seed: same weights and data
        step.run()
        nx.synchronize()  # the first step creates AdamW's state: a different graph, outside
        n0, compiles0, out = executions(met)[0], nx.compile_count(), []
        t0 = time.perf_counter()
        for _block in range(20 // k):
            for _ in range(k):
                out.append(step.run())
            nx.synchronize()
        times[k] = (time.perf_counter() - t0) / 20
        per_step[k] = (executions(met)[0] - n0) / 20
        assert nx.compile_count() == compiles0, "a mode compiled a new graph"
        losses[k] = [x.cpu().item() for x in out]
    assert per_step[1] == per_step[5] >= 1
    assert losses[1] == pytest.approx(losses[5], rel=1e-6)
    print(f"\nstep time, wait per step: {times[1] * 1e3:.2f} ms; wait per 5-step block: {times[5] * 1e3:.2f} ms")


def test_measure_in_blocks_on_the_lane(xla, nx):
    case = Case("train", batch=2, dtype="float32", compile="none", seq_len=32)
    step = scenarios.build_step(case, TINY, nx)
    m = measure(step.run, nx, TimingConfig(warmup=2, min_iters=3, max_iters=3, min_seconds=0), step.prepare_s)
    assert m.valid, m.reasons
    assert m.steps_per_sample == 10 and len(m.samples_s) == 3 and m.compiles_in_window == 0
    m = measure(step.run, nx, TimingConfig(warmup=1, min_iters=3, max_iters=3, min_seconds=0, steps_per_sample=1))
    assert m.valid and m.steps_per_sample == 1  # per-step waiting stays available


def test_wrapper_flags_route_into_neuron_cc_flags_only(xla):
    """neuron_cc_wrapper flags reach lazy graphs through NEURON_CC_FLAGS (SDK neuron-caching.rst)
    and never the compiler list trace would get; lazy training runs with them."""
    backend = backends.make("neuron-xla", {"cc_flags": ["--retry_failed_compilation", "--verbose=info"]})
    assert backend._env_values()["NEURON_CC_FLAGS"].endswith("--verbose=info --retry_failed_compilation")
    assert "--retry_failed_compilation" not in backend.flags
    case = Case("train", batch=2, dtype="float32", compile="none", seq_len=32)
    assert torch.isfinite(scenarios.build_step(case, TINY, backend).run().cpu())


def test_device_memory_where_torch_xla_reports_it(xla, nx, monkeypatch):
    """xm.get_memory_info (bytes_used, peak_bytes_used): this CPU PJRT device does not implement
    it (UNIMPLEMENTED: GetAllocatorStats), so memory is None; with a device that reports it, a
    case gets the peak when it set a new one (the peak cannot be reset)."""
    import torch_xla.core.xla_model as xm

    nx.device  # noqa: B018 - the XLA device is in use
    nx.reset_peak_memory()
    assert nx.memory() is None
    reports = iter([{"bytes_used": 10, "peak_bytes_used": 100}, {"bytes_used": 50, "peak_bytes_used": 400},
                    {"bytes_used": 10, "peak_bytes_used": 400}, {"bytes_used": 10, "peak_bytes_used": 400}])  # fmt: skip
    monkeypatch.setattr(xm, "get_memory_info", lambda device=None: next(reports))
    nx.reset_peak_memory()
    assert nx.memory().peak_allocated_bytes == 400
    nx.reset_peak_memory()
    assert nx.memory().peak_allocated_bytes is None  # no new peak: not this case's


def test_trace_cache_round_trip_under_torch_2_9(xla, tmp_path):
    """The stand-in trace (tests/test_neuron_trace.py, which encodes SDK api-torch-neuronx-trace.rst)
    gives a ScriptModule with the KV state aliased; torch.jit.save/load under this lane's torch 2.9
    (torch-neuronx 2.9's torch) keeps the graph, its state and its key."""
    from test_neuron_trace import StandInNeuronx

    model = build_model(TINY).eval().requires_grad_(False)
    model.setup_caches(2, 24, torch.float32)
    lm = TraceableLM(model, 24)
    example = (random_tokens(TINY, 2, 1, seed=9), torch.tensor([5]), torch.zeros(1, dtype=torch.long))
    traced = StandInNeuronx().trace(lm, example, input_output_aliases=lm.aliases())
    cache = trace_cache.TraceCache(str(tmp_path))
    key = trace_cache.graph_key(lm, example, lm.aliases(), "decode-b2-s24", ["-O2"], {"torch-neuronx": "2.9"})
    assert key == trace_cache.graph_key(lm, example, lm.aliases(), "decode-b2-s24", ["-O2"], {"torch-neuronx": "2.9"})
    assert cache.save("decode-b2-s24", key, traced) == ""
    loaded = cache.load("decode-b2-s24", key)
    assert loaded.graph is not None and loaded.error == ""
    for p in range(5, 9):  # the loaded graph carries its own aliased cache forward, like the original
        a = traced(example[0], torch.tensor([p]), example[2])[0]
        b = loaded.graph(example[0], torch.tensor([p]), example[2])[0]
        assert torch.equal(a, b)


# --- the inference graph that trace would compile ---------------------------------------------
def test_the_traceable_graph_lowers_without_host_reads(xla, nx):
    """What torch_neuronx.trace records is this lazy graph: building it must not read any
    device value back (that would cut the graph), and it must be one static graph."""
    torch_xla, met = xla
    dev = nx.device
    model = build_model(TINY).to(dev).eval().requires_grad_(False)
    model.setup_caches(2, 24, torch.float32)
    lm = TraceableLM(model, 24)
    tokens, pos, last = random_tokens(TINY, 2, 1, seed=9).to(dev), torch.tensor([5], device=dev), torch.zeros(1, dtype=torch.long, device=dev)  # fmt: skip
    nx.synchronize()
    n0, compiles0 = executions(met)[0], nx.compile_count()
    with torch.no_grad():
        out = lm(tokens, pos, last)
    assert executions(met)[0] == n0 and nx.compile_count() == compiles0  # nothing ran while tracing
    assert len(out) == 1 + 2 * TINY.n_layers
    for param, index in lm.aliases().items():  # each aliased output can take its input's buffer
        assert out[index].shape == param.shape and out[index].dtype == param.dtype
    assert "HloModule" in torch_xla._XLAC._get_xla_tensors_hlo(list(out))
    nx.step_end()
    nx.synchronize()
    assert nx.compile_count() == compiles0 + 1  # one graph for the whole step
    with torch.no_grad():
        lm.write_back(lm(tokens, pos, last))
    nx.step_end()
    nx.synchronize()
    assert nx.compile_count() == compiles0 + 2  # the write-back step: one more graph, then static
    with torch.no_grad():
        lm.write_back(lm(tokens, pos, last))
    nx.step_end()
    nx.synchronize()
    assert nx.compile_count() == compiles0 + 2


def test_lazy_decode_matches_the_cpu_backend(xla, nx):
    """The same aliasing contract, with the write-back done on the XLA device: greedy tokens
    equal the plain CPU backend's, step after step."""
    case = Case("decode", batch=2, dtype="float32", compile="none", prompt_len=16, new_tokens=8)  # compiled above
    step = scenarios.build_step(case, TINY, nx)
    reference = scenarios.build_step(case, TINY, backends.make("cpu"))
    for _ in range(4):
        got = step.run()
        nx.synchronize()
        assert torch.equal(got.cpu(), reference.run())


# --- the shared backend contract (tests/test_contract.py), which skips neuron-xla elsewhere ------
@pytest.mark.parametrize("case", contract.CASES, ids=lambda c: c.scenario)
def test_backend_contract_scenarios(nx, case):
    contract.test_every_scenario_runs_and_measures(nx, case)


def test_backend_contract_identity_check_and_timer(nx):
    contract.test_identity(nx)
    contract.test_check_passes_in_float32(nx)
    contract.test_timer_and_sync(nx)
