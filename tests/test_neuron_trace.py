"""The neuron-xla inference path's contract with `torch_neuronx.trace`, tested with a STAND-IN.

torch-neuronx cannot be installed here (PyPI's package is a placeholder), so `StandInNeuronx`
is put in sys.modules under the name `torch_neuronx`. It is not the vendor package: it encodes
the documented contract (SDK frameworks/torch/torch-neuronx/api-reference-guide/inference/
api-torch-neuronx-trace.rst at aws-neuron/aws-neuron-sdk@81ce03ae; reference neuron.md §1): the
signature, `compiler_args` as a list, `input_output_aliases` keyed by Parameters matched against
`func.named_parameters()` by data_ptr, CPU example inputs, a result that is a TorchScript module
(`torch.jit.save`/`torch.jit.load` round trip), and `move_trace_to_device(trace, device_id)`,
in place, which the T5 KV-cache tutorial (src/examples/pytorch/torch-neuronx/
t5-inference-tutorial.ipynb) calls on the loaded decoder. Its trace returns a real ScriptModule
(torch.jit.trace of the function plus the write-back of each aliased output into its Parameter,
which is what the documented aliasing means for state kept on the device). What is checked is
our side of the contract: one graph per prompt bucket and per decode step, the right flags, the
KV cache state carried only through the aliases and moved to the device, graphs saved and
loaded by later processes, and the same tokens as the plain CPU backend.
"""

from __future__ import annotations

import os
import sys
import types
from pathlib import Path

import pytest
import torch
from torch import nn

from ppharness import backends, startenv
from ppharness.backends._neuron_trace import AliasedKVCache
from ppharness.core import scenarios
from ppharness.core.scenarios import Case
from ppharness.core.timing import TimingConfig, measure
from ppharness.core.workload import PRESETS, build_model, random_tokens
from ppharness.errors import BenchError
from ppharness.run import config, runner

TINY = PRESETS["tiny"]
NEURON_VARS = ("NEURON_CC_FLAGS", "NEURON_COMPILE_CACHE_URL", "NEURON_RT_VISIBLE_CORES", "NEURON_RT_NUM_CORES",
               "NEURON_LOGICAL_NC_CONFIG", "PJRT_DEVICE", "WORLD_SIZE")  # fmt: skip


class AliasWriter(nn.Module):
    """The stand-in's graph: run `func`, then write each aliased output over its Parameter."""

    def __init__(self, func: nn.Module, aliases: dict):
        super().__init__()
        self.func = func
        self.pairs = list(aliases.items())  # plain list: the Parameters stay func's

    def forward(self, *inputs):
        out = self.func(*inputs)
        for param, index in self.pairs:
            param.copy_(out[index])
        return out


class StandInNeuronx(types.ModuleType):
    """A stand-in for torch_neuronx 2.9 (see the module docstring); `calls` records every trace,
    `moved` every (graph, device_id) given to move_trace_to_device."""

    __version__ = "2.9.0.2.15.32035"

    def __init__(self) -> None:
        super().__init__("torch_neuronx")
        self.calls: list[dict] = []
        self.moved: list[tuple[object, int]] = []

    def move_trace_to_device(self, trace, device_id):
        """In place, returns nothing (api-torch-neuronx-trace.rst)."""
        assert isinstance(trace, torch.jit.ScriptModule) and isinstance(device_id, int)
        self.moved.append((trace, device_id))

    def was_moved(self, graph) -> bool:
        return any(g is graph for g, _ in self.moved)

    def trace(self, func, example_inputs, *_, input_output_aliases={}, compiler_workdir=None, compiler_args=None,  # noqa: B006 - the documented signature
              partitioner_config=None, inline_weights_to_neff=True, cpu_backend=False):  # fmt: skip
        params = {p.data_ptr() for _, p in func.named_parameters()}
        for key in input_output_aliases:  # what torch-neuronx requires of the keys (§1)
            if not isinstance(key, nn.Parameter) or key.data_ptr() not in params:
                raise ValueError("input_output_aliases key is not a parameter of func")
        assert all(t.device.type == "cpu" for t in example_inputs), "trace takes CPU example inputs"
        with torch.no_grad():
            example_out = func(*example_inputs)
        aliases = dict(input_output_aliases)
        self.calls.append({"func": func, "example": example_inputs, "aliases": aliases, "compiler_args": compiler_args,
                           "compiler_workdir": compiler_workdir, "example_out": example_out})  # fmt: skip
        with torch.no_grad():
            return torch.jit.trace(AliasWriter(func, aliases), tuple(example_inputs), check_trace=False)


@pytest.fixture
def neuronx(monkeypatch, tmp_path):
    """The stand-in installed, no Neuron variables inherited, no EC2 instance type, and the trace
    cache in a fresh folder."""
    saved = dict(os.environ)
    for var in NEURON_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(startenv, "SNAPSHOT", dict(os.environ))  # what "the user set" (ppharness/startenv.py)
    stand_in = StandInNeuronx()
    monkeypatch.setitem(sys.modules, "torch_neuronx", stand_in)
    monkeypatch.setattr("ppharness.facts.sysinfo.ec2_instance_type", lambda *a, **k: None)
    monkeypatch.setattr("ppharness.backends._neuron_trace_cache.DEFAULT_DIR", str(tmp_path / "traces"))
    yield stand_in
    os.environ.clear()
    os.environ.update(saved)


def prefill_case(prompt_len: int = 16, dtype: str = "float32") -> Case:
    return Case("prefill", batch=2, dtype=dtype, compile="none", prompt_len=prompt_len)


def test_prefill_is_one_trace_with_the_documented_arguments(neuronx):
    backend = backends.make("neuron-xla")
    assert backend.inference == "trace"
    step = scenarios.build_step(prefill_case(), TINY, backend)
    assert len(neuronx.calls) == 1
    call = neuronx.calls[0]
    assert call["compiler_args"] == backend.flags and isinstance(call["compiler_args"], list)
    assert {"--model-type=transformer", "-O2", "--auto-cast=none"} <= set(call["compiler_args"])
    tokens, pos, last = call["example"]
    assert tokens.shape == (2, 16) and pos.tolist() == list(range(16)) and last.tolist() == [15]
    caches = [m for m in call["func"].modules() if isinstance(m, AliasedKVCache)]
    assert len(caches) == TINY.n_layers
    params = [p for c in caches for p in (c.k, c.v)]
    assert {id(k) for k in call["aliases"]} == {id(p) for p in params}  # keyed by the cache Parameters
    assert sorted(call["aliases"].values()) == list(range(1, 2 * TINY.n_layers + 1))  # output 0 is the logits
    for param, index in call["aliases"].items():  # an aliased output can overwrite its input
        assert call["example_out"][index].shape == param.shape and call["example_out"][index].dtype == param.dtype
    assert call["example_out"][0].shape == (2, 1, TINY.vocab_size)  # only the last position crosses back
    first = step.run()
    reference = scenarios.build_step(prefill_case(), TINY, backends.make("cpu")).run()
    assert first.device.type == "cpu" and torch.equal(first, reference)


def test_one_trace_per_prompt_bucket_and_padding_is_exact(neuronx):
    backend = backends.make("neuron-xla", {"prefill_buckets": [16, 32]})
    for prompt_len in (10, 16, 20):
        model = build_model(TINY).eval().requires_grad_(False)
        model.setup_caches(2, prompt_len, torch.float32)
        prompt = random_tokens(TINY, 2, prompt_len, seed=5)
        fwd = backend.prepare(model, (prompt, torch.arange(prompt_len)), "prefill", "none")
        logits = fwd(prompt, torch.arange(prompt_len))  # (B, 1, V)
        with torch.no_grad():
            want = build_model(TINY)(prompt)[:, -1:]  # a plain forward over the unpadded prompt
        torch.testing.assert_close(logits, want, rtol=1e-4, atol=1e-5)  # right padding changes nothing
    # prompt 16 reuses the graph saved for prompt 10 (same bucket, weights and flags): compiled once
    assert [c["example"][0].shape[1] for c in neuronx.calls] == [16, 32]
    assert backend.traced == ["prefill-b2-s16", "prefill-b2-s32"]


def test_a_prompt_beyond_every_bucket_is_refused(neuronx):
    backend = backends.make("neuron-xla", {"prefill_buckets": [8]})
    with pytest.raises(BenchError, match="largest prefill bucket 8"):
        scenarios.build_step(prefill_case(16), TINY, backend)


def test_decode_state_lives_only_in_the_aliased_parameters(neuronx):
    """The stand-in keeps state only by writing aliased outputs back, so greedy tokens equal the
    CPU backend's step after step only if the KV cache contract is right."""
    case = Case("decode", batch=2, dtype="float32", compile="none", prompt_len=8, new_tokens=6)
    backend = backends.make("neuron-xla")
    step = scenarios.build_step(case, TINY, backend)
    assert len(neuronx.calls) == 1 and backend.traced == ["decode-b2-s14"]
    tokens, pos, last = neuronx.calls[0]["example"]
    assert tokens.shape == (2, 1) and pos.tolist() == [8] and last.tolist() == [0]
    assert len(neuronx.calls[0]["aliases"]) == 2 * TINY.n_layers
    reference = scenarios.build_step(case, TINY, backends.make("cpu"))
    for _ in range(case.new_tokens + 2):  # past the end: the position wraps, as on every backend
        assert torch.equal(step.run().clone(), reference.run().clone())


def test_bf16_cache_parameters_and_outputs_agree(neuronx):
    step = scenarios.build_step(prefill_case(dtype="bfloat16"), TINY, backends.make("neuron-xla"))
    call = neuronx.calls[0]
    assert all(p.dtype == torch.bfloat16 for p in call["aliases"])
    assert call["example_out"][0].dtype == torch.bfloat16 and step.run().shape == (2,)


def test_check_traces_the_plain_forward(neuronx):
    result = scenarios.check(TINY, backends.make("neuron-xla"), "float32", "none")
    assert result.passed, result.detail
    (call,) = neuronx.calls
    assert call["aliases"] == {} and len(call["example"]) == 1 and call["example"][0].device.type == "cpu"


def test_decode_check_runs_the_traced_decode_graph(neuronx):
    """The decode check goes through the one traced decode graph with CPU tensors, as the timed
    decode step does, and the aliased cache keeps it equal to a full forward step by step."""
    backend = backends.make("neuron-xla")
    result = scenarios.check_decode(TINY, backend, "float32", "none")
    assert result.passed, result.detail
    assert backend.traced == ["decode-b2-s16"] and len(neuronx.calls[0]["aliases"]) == 2 * TINY.n_layers


def test_compiler_workdir_is_one_folder_per_graph(neuronx, tmp_path):
    backend = backends.make("neuron-xla", {"compiler_workdir": str(tmp_path)})
    scenarios.build_step(prefill_case(), TINY, backend)
    assert neuronx.calls[0]["compiler_workdir"] == str(Path(tmp_path) / "prefill-b2-s16")


def test_traces_count_as_compiles_outside_the_window(neuronx):
    backend = backends.make("neuron-xla")
    step = scenarios.build_step(prefill_case(), TINY, backend)
    assert backend.compile_count() == 1 and backend.compile_time_s() > 0
    m = measure(step.run, backend, TimingConfig(warmup=1, min_iters=3, min_seconds=0), step.prepare_s)
    assert m.valid, m.reasons
    assert m.compiles_in_window == 0 and m.compiler_s == 0.0 and m.compile_s >= step.prepare_s


def test_the_record_says_traced_times_include_host_transfers(neuronx, monkeypatch):
    monkeypatch.setattr(runner.ceilings, "get_ceilings", lambda *a, **k: None)  # no GEMM ceiling on a stand-in
    cfg = config.validate({"name": "t", "backends": ["neuron-xla"], "model": "tiny", "check": True,
                           "scenarios": {"prefill": {"batch": 2, "prompt_len": 16}},
                           "timing": {"warmup": 1, "min_iters": 3, "min_seconds": 0.0}})  # fmt: skip
    backend = backends.make("neuron-xla")
    info = backend.describe()
    ctx = runner.RunContext(cfg, backend, info, runner.Pricing(None, "none", "test"), "run")
    rec = ctx.measure_case(config.expand(cfg)[0])
    assert rec["status"] == "ok", rec["reason"]
    assert "host<->device transfers" in rec["system"]["versions"]["inference_path"]
    assert rec["system"]["versions"]["neuronx_cc_flags"].startswith("--model-type=transformer -O2 --auto-cast=none")
    assert rec["timing"]["compiles_in_window"] == 0


# --- KV cache on the device (audit 1) ----------------------------------------------------------
def test_kv_cache_state_is_moved_to_the_device(neuronx):
    """Every graph with aliased state goes through move_trace_to_device(trace, 0), as the T5
    KV-cache tutorial does after loading its decoder; without it the state is a CPU Parameter
    that crosses the host link on every call. This test fails if the states stay on the host."""
    case = Case("decode", batch=2, dtype="float32", compile="none", prompt_len=8, new_tokens=4)
    backend = backends.make("neuron-xla")
    assert "present" in backend.describe().versions["move_trace_to_device"]
    step = scenarios.build_step(case, TINY, backend)
    facts, warnings = backend.execution_notes()
    (fact,) = facts["graphs"].values()
    assert fact["kv_cache"].startswith("device") and warnings == []
    assert len(neuronx.moved) == 1 and neuronx.moved[0][1] == 0
    step.run()
    prefill = scenarios.build_step(prefill_case(), TINY, backend)
    assert len(neuronx.moved) == 2 and prefill.run().shape == (2,)
    assert all(neuronx.was_moved(g) for g, _ in neuronx.moved)


def test_a_torch_neuronx_without_the_mover_is_recorded_and_warned(neuronx, monkeypatch):
    """Unverified on torch-neuronx 2.9 (audit 1): where the function is absent the run goes on,
    and the record says the KV cache stayed on the host."""
    monkeypatch.delattr(StandInNeuronx, "move_trace_to_device")
    backend = backends.make("neuron-xla")
    assert "absent" in backend.describe().versions["move_trace_to_device"]
    scenarios.build_step(prefill_case(), TINY, backend)
    facts, warnings = backend.execution_notes()
    assert next(iter(facts["graphs"].values()))["kv_cache"].startswith("host")
    assert len(warnings) == 1 and "KV cache on the host" in warnings[0]


# --- compile once (audit 9) ---------------------------------------------------------------------
def test_a_later_process_loads_the_saved_graph_instead_of_compiling(neuronx, tmp_path):
    """torch.jit.save of each traced graph, torch.jit.load in a later process (the trace API's
    documented round trip); a fresh backend stands for the later process. The loaded graph is
    moved to the device too and decodes the same tokens as the CPU backend."""
    case = Case("decode", batch=2, dtype="float32", compile="none", prompt_len=8, new_tokens=6)
    first = backends.make("neuron-xla")
    scenarios.build_step(case, TINY, first)
    (fact,) = first.execution_notes()[0]["graphs"].values()
    assert fact["source"] == "compiled" and fact["saved"] and fact["compile_s"] > 0
    assert len(list((tmp_path / "traces").glob("decode-b2-s14-*.pt"))) == 1

    later = backends.make("neuron-xla")
    step = scenarios.build_step(case, TINY, later)
    (fact,) = later.execution_notes()[0]["graphs"].values()
    assert fact["source"] == "trace cache" and fact["load_s"] > 0 and "compile_s" not in fact
    assert len(neuronx.calls) == 1 and later.traced == [] and later.compile_count() == 0
    assert fact["kv_cache"].startswith("device") and len(neuronx.moved) == 2
    reference = scenarios.build_step(case, TINY, backends.make("cpu"))
    for _ in range(case.new_tokens):
        assert torch.equal(step.run().clone(), reference.run().clone())


def process(options: dict | None = None):
    """A backend as a fresh process would make it: nothing set by an earlier one inherited."""
    os.environ.pop("NEURON_CC_FLAGS", None)
    return backends.make("neuron-xla", options)


def test_the_cache_key_follows_flags_and_weights(neuronx):
    scenarios.build_step(prefill_case(), TINY, process())
    scenarios.build_step(prefill_case(), TINY, process({"optlevel": 1}))  # other flags
    scenarios.build_step(prefill_case(), TINY, process(), seed=1)  # other weights
    assert len(neuronx.calls) == 3
    scenarios.build_step(prefill_case(), TINY, process({"optlevel": 1}))
    assert len(neuronx.calls) == 3  # the -O1 graph was saved: loaded


def test_a_damaged_cache_file_is_compiled_again(neuronx, tmp_path):
    scenarios.build_step(prefill_case(), TINY, backends.make("neuron-xla"))
    (saved,) = (tmp_path / "traces").glob("*.pt")
    saved.write_bytes(b"not a torchscript archive")
    backend = backends.make("neuron-xla")
    scenarios.build_step(prefill_case(), TINY, backend)
    (fact,) = backend.execution_notes()[0]["graphs"].values()
    assert fact["source"] == "compiled" and "cache_error" in fact and len(neuronx.calls) == 2


def test_trace_cache_off(neuronx, tmp_path):
    backend = backends.make("neuron-xla", {"trace_cache_dir": "off"})
    scenarios.build_step(prefill_case(), TINY, backend)
    assert not (tmp_path / "traces").exists() and "off" in backend.describe().versions["trace_cache"]


# --- compiler flags by destination (audit 3) -----------------------------------------------------
def test_wrapper_flags_are_refused_for_trace(neuronx):
    """--retry_failed_compilation and the other neuron_cc_wrapper flags "will not be passed into
    Neuron Compiler CLI" (SDK neuron-caching.rst); trace hands compiler_args to neuronx-cc itself,
    so a traced graph with them is refused with the reason, before anything compiles."""
    backend = backends.make("neuron-xla", {"cc_flags": ["--retry_failed_compilation"]})
    with pytest.raises(BenchError, match="caching wrapper.*NEURON_CC_FLAGS"):
        scenarios.build_step(prefill_case(), TINY, backend)
    assert neuronx.calls == []
