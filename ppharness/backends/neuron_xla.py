"""The neuron-xla backend: torch-neuronx 2.9 + torch-xla on Trn1, Inf2 and Trn2 NeuronCores.

Section numbers (§N) refer to neuron.md; "audit N" to neuron-audit.md, which corrects it.

- train: XLA lazy tensors (§2). `torch_xla.device()`, `xm.optimizer_step`, `torch_xla.sync()`
  at the end of every step (it cuts the graph and launches it asynchronously), and
  `xm.wait_device_ops()` before every clock read, so a timed sample includes execution, not only
  tracing (§2 "Timing pitfalls" 1; pytorch/xla#8858). `torch_xla.sync(wait=True)` is not enough:
  on torch-xla 2.9's CPU PJRT device it returns before the graph has finished. A sample is a
  block of `steps_per_sample()` steps (default 10) with that one wait at its end, so the host
  traces step n+1 while the device runs step n, as AWS's own training scripts measure (audit 7).
- prefill/decode: `torch_neuronx.trace` (§1): one graph per prompt bucket, one per decode step,
  the KV cache kept as aliased state (see _neuron_trace.py) and moved to the NeuronCore with
  `torch_neuronx.move_trace_to_device`, without which the state stays a CPU Parameter that
  crosses the host link on every call (audit 1). Each graph is saved with `torch.jit.save` and
  loaded by later processes (_neuron_trace_cache.py, audit 9). Traced calls take and return CPU
  tensors and block, so their times include host<->device transfers of inputs and logits.
- Compile accounting: `compile_count()` is XLA's `UncachedCompile` counter plus our traces;
  `compile_time_s()` is XLA's `CompileTime` metric plus trace wall time (§2 pitfalls 3).
  UncachedCompile counts misses of XLA's in-memory cache, so a graph fetched from Neuron's
  persistent cache counts too (audit 10): right for "nothing compiled in the window", not a
  count of neuronx-cc runs.
- Precision is the run's dtype: bf16 autocast for train, bf16 weights for inference, and always
  `--auto-cast=none`, because the compiler's default flipped in Neuron 2.27 (§0, §9.2). The
  deprecated XLA_USE_BF16 / XLA_DOWNCAST_BF16 are refused (§2 BF16).
- Environment: NEURON_CC_FLAGS, NEURON_COMPILE_CACHE_URL, NEURON_RT_*, NEURON_LOGICAL_NC_CONFIG
  and, for multi-node Trainium jobs, FI_PROVIDER/FI_EFA_USE_DEVICE_RDMA are derived from the
  validated `backend_options.neuron-xla`, checked in the constructor against what the user set
  (the environment at process start, before the vendor imports wrote theirs: _neuron_vars.py),
  set on first use and recorded with what the imports changed. The compiler caching wrapper's own flags
  (--retry_failed_compilation, ...) go to NEURON_CC_FLAGS only and are refused for trace (audit 3).
- Cores: one process drives one NeuronCore, so a process that claims more is refused (audit 8).
- Test lane: with PJRT_DEVICE=CPU the same class runs on torch-xla's CPU PJRT device (no
  NeuronCore, no neuronx-cc); its rows say so and carry no accelerator peak.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ppharness.backends import _neuron_env as env
from ppharness.backends import _neuron_trace_cache as trace_cache
from ppharness.backends import _neuron_vars as nvars
from ppharness.backends._neuron_telemetry import (  # fmt: skip
    JOB_VAR,
    NeuronGuard,
    NeuronSampler,
    classify_processes,
    neuron_ls,
    neuronx_cc_version,
)
from ppharness.backends._neuron_trace import lazy_compile_fn, prepare_inference
from ppharness.core import guards
from ppharness.core.device import Backend, DeviceInfo, MemoryStats, Sampler, register
from ppharness.core.guards import Monitor
from ppharness.core.workload import Block
from ppharness.errors import BenchError
from ppharness.facts import catalog

NAME = "neuron-xla"
CPU_LANE = "torch-xla CPU PJRT device (test lane), not a NeuronCore"
TRAINING_CAVEAT = "PyTorch/XLA training is officially supported up to Neuron SDK 2.29 and unsupported from 2.30"
TRACED_NOTE = "prefill/decode are torch_neuronx.trace calls: blocking, CPU tensors in and out, times include host<->device transfers"  # fmt: skip
LAZY_STEPS_PER_SAMPLE = 10  # steps per timed sample on lazy XLA graphs (audit 7); timing.steps_per_sample overrides
_OOM = re.compile(r"RESOURCE_EXHAUSTED|out of memory|Failed to allocate", re.IGNORECASE)


@dataclass
class NeuronXLAOptions:
    model_type: str = "transformer"  # neuronx-cc --model-type (§2)
    optlevel: int = 2  # neuronx-cc -O1/-O2/-O3; 2 is the compiler's default (§2)
    target: str = ""  # neuronx-cc --target; "" derives it from the EC2 instance type
    lnc: int = 0  # Trn2 logical NeuronCore config 1 or 2; 0 keeps the chip's default (§1)
    cc_flags: list = field(default_factory=list)  # further neuronx-cc flags (wrapper flags: NEURON_CC_FLAGS only)
    cache_dir: str = ""  # NEURON_COMPILE_CACHE_URL (local path or s3://); "" = /var/tmp/neuron-compile-cache
    trace_cache_dir: str = ""  # torch.jit.save'd traced graphs; "" = /var/tmp/ppbench-trace-cache, "off" = none
    compiler_workdir: str = ""  # torch_neuronx.trace keeps each graph's HLO/NEFF under <dir>/<graph>
    num_cores: int = 1  # NEURON_RT_NUM_CORES per process; 0 = the runtime's default (all cores, §1)
    visible_cores: str = ""  # NEURON_RT_VISIBLE_CORES, e.g. "0-1"; wins over num_cores (§1)
    prefill_buckets: list = field(default_factory=list)  # traced prompt lengths; [] = each case's own
    tdp_watts: float = 0.0  # a chip's maximum power: the sysfs percentage as watts above background (§6)

    def __post_init__(self) -> None:
        env.check_choice(NAME, "model_type", self.model_type, env.MODEL_TYPES)
        env.check_choice(NAME, "optlevel", self.optlevel, (1, 2, 3))
        env.check_choice(NAME, "target", self.target, env.TARGETS)
        env.validate_runtime_options(NAME, self.lnc, self.num_cores, self.visible_cores, self.tdp_watts)
        env.check_extra_flags(NAME, self.cc_flags)
        env.check_lnc(NAME, self.lnc, None, self.target)
        env.check_driven(NAME, self.visible_cores, self.num_cores)
        if not all(isinstance(b, int) and not isinstance(b, bool) and b > 0 for b in self.prefill_buckets):
            raise BenchError(f"backend_options.{NAME}.prefill_buckets must be a list of positive prompt lengths")


def state_devices(traced: object) -> list[str]:
    """The device type of each aliased state tensor of a traced graph (`traced.states`, a
    ParameterList in torch-neuronx's NeuronModule; named_parameters(), since iterating a
    scripted ParameterList raises), [] when they cannot be read."""
    states = getattr(traced, "states", None)
    try:
        return [p.device.type for _, p in states.named_parameters()] if states is not None else []
    except Exception:  # noqa: BLE001 - a loaded ScriptModule may not expose them: unknown, not an error
        return []


@register(NAME)
class NeuronXLABackend(Backend):
    """XLA lazy tensors for training, torch_neuronx.trace for inference (module docstring)."""

    Options = NeuronXLAOptions
    # XLA compiles every graph itself (lazy tensors, or trace); no torch.compile layer on top.
    compile_modes = ("none",)
    dtypes = ("float32", "bfloat16")
    # ZeRO-1 through torch-xla's own optimizer (zero1_optimizer); FSDP is not offered here: torch's
    # fully_shard runs on torch.distributed process groups, not on XLA's collectives.
    strategies = ("ddp", "zero1")

    def __init__(self, options: NeuronXLAOptions | None = None):
        super().__init__(options)
        o = self.options
        for var in ("XLA_USE_BF16", "XLA_DOWNCAST_BF16"):  # deprecated global downcasts (§2 BF16)
            if os.environ.get(var, "0") not in ("", "0"):
                raise BenchError(f"{var} is set: precision must come from the run's dtype (unset {var})")
        self.lane = "cpu" if os.environ.get("PJRT_DEVICE") == "CPU" else "neuron"
        self.inventory = neuron_ls() if self.lane == "neuron" else None
        self.topo = env.topology(o.lnc, self.inventory) if self.lane == "neuron" else None
        env.check_lnc(NAME, o.lnc, self.topo.accelerator if self.topo else None)
        family = env.instance_family(self.topo.instance) if self.topo else None
        target = o.target or env.FAMILIES.get(family or "", ("", ""))[1]
        self.flags = env.cc_flags(o.model_type, o.optlevel, target, o.lnc, o.cc_flags)  # the compiler's own
        self.wrapper_flags = env.split_flags(o.cc_flags)[1]  # NEURON_CC_FLAGS only (audit 3)
        # against what the user set, not what imports wrote (_neuron_vars.py)
        self.env = nvars.plan_env(self._env_values()) if self.lane == "neuron" else {}
        probe = env.probe_neuronx(env.XLA_SERIES)
        self.neuronx_version = probe.version if probe.ok else None
        # The CPU lane never traces, even where torch-neuronx is installed: trace targets a NeuronCore.
        self.inference = "trace" if probe.ok and self.lane == "neuron" else "xla-lazy"
        self.mover = self._mover() if self.inference == "trace" else None
        cache_dir = {"": trace_cache.DEFAULT_DIR, "off": ""}.get(o.trace_cache_dir, o.trace_cache_dir)
        self.trace_cache = trace_cache.TraceCache(cache_dir)
        self._started = self._xla_used = False
        self._traces, self._trace_s, self._loads = 0, 0.0, 0
        self.traced: list[str] = []  # one tag per compiled graph: prefill-b<B>-s<bucket>, decode-...
        self._lazy_case = True  # whether the case last prepared runs as lazy XLA graphs
        self._graphs: dict[str, dict] = {}  # this case's graphs: compiled or loaded, KV-cache placement
        self._peak_at_reset: int | None = None

    def _env_values(self) -> dict[str, str]:
        o = self.options
        values = {"NEURON_CC_FLAGS": " ".join(self.flags + self.wrapper_flags)}  # read at compile time (§2)
        if o.cache_dir:
            values["NEURON_COMPILE_CACHE_URL"] = o.cache_dir  # §2 compile cache
        efa = nvars.efa_env(self.topo.accelerator if self.topo else None)  # multi-node Trainium (audit 10)
        return {**values, **nvars.runtime_env(o.visible_cores, o.num_cores, o.lnc), **efa}

    def _mover(self) -> Callable | None:
        """torch_neuronx.move_trace_to_device(trace, device_id), where this torch-neuronx has it
        (SDK api-torch-neuronx-trace.rst; the T5 KV-cache tutorial calls it after jit.load).
        Unverified on torch-neuronx 2.9 (audit 1), so guarded and recorded."""
        try:
            import torch_neuronx  # vendor package: Neuron hosts (and the XLA test lane) only
        except ImportError:
            return None
        fn = getattr(torch_neuronx, "move_trace_to_device", None)
        return fn if callable(fn) else None

    # --- availability and identity -------------------------------------------------------
    @classmethod
    def available(cls) -> tuple[bool, str]:
        xla_version = env.dist_version("torch-xla")
        if os.environ.get("PJRT_DEVICE") == "CPU":
            if not env.present("torch_xla"):
                return False, "PJRT_DEVICE=CPU selects the test lane, but torch-xla is not installed"
            return True, f"torch-xla {xla_version} with PJRT_DEVICE=CPU: {CPU_LANE}"
        probe = env.probe_neuronx(env.XLA_SERIES)
        if not probe.ok:
            return False, f"{probe.reason} (test lane: PJRT_DEVICE=CPU with torch-xla installed)"
        if not env.present("torch_xla"):
            return False, f"torch-neuronx {probe.version} is installed but torch-xla is not"
        chips = env.neuron_devices()
        if not chips:
            return False, f"torch-neuronx {probe.version} is installed but this host has no Neuron device"
        return True, f"torch-neuronx {probe.version}, torch-xla {xla_version}, {len(chips)} Neuron chip(s)"

    def _start(self) -> None:
        """First use: the environment is set before the runtime starts or anything compiles."""
        if not self._started:
            nvars.apply_env(self.env)
            if self.lane == "neuron" and "PJRT_DEVICE" not in os.environ:
                nvars.apply_env({"PJRT_DEVICE": "NEURON"})  # harmless, as Neuron's own code does (§2)
            self._started = True

    def _xla(self):
        self._start()
        import torch_xla  # vendor package: Neuron hosts (and the XLA test lane) only

        self._xla_used = True
        return torch_xla

    @property
    def device(self) -> torch.device:
        return self._xla().device()  # xm.xla_device() is deprecated since 2.8 (§2)

    def device_for(self, scenario: str) -> torch.device:
        # A traced module consumes CPU tensors (§1), so inference inputs stay on the host.
        if scenario in ("prefill", "decode", "check") and self.inference == "trace":
            return torch.device("cpu")
        return self.device

    def logical_cores(self) -> int:
        return env.logical_cores(self.options.visible_cores, self.options.num_cores, self.topo)

    def device_count(self) -> int:
        if self.lane == "cpu" or not self.topo or not self.topo.cores_on_host:
            return 1
        return max(1, self.topo.cores_on_host // self.topo.lnc)

    def describe(self) -> DeviceInfo:
        if self.lane == "cpu":
            return DeviceInfo(self.name, "torch-xla CPU PJRT device (test lane)", None, CPU_LANE, 1, 1, self.versions())
        topo = self.topo
        used = self.logical_cores() * topo.lnc  # physical cores: the catalog's unit (_neuron_env.Topology)
        on_host = max(topo.cores_on_host, used)
        chip = catalog.accelerator(topo.accelerator).name if topo.accelerator else "AWS Neuron device"
        name = f"{chip}: {self.logical_cores()} NeuronCore(s) at LNC={topo.lnc}"
        return DeviceInfo(self.name, name, topo.accelerator, topo.reason, used, on_host, self.versions())

    def versions(self) -> dict[str, str]:
        out = {"pjrt_device": "CPU (test lane)" if self.lane == "cpu" else "NEURON"}
        for dist in ("torch-neuronx", "neuronx-cc", "torch-xla", "libneuronxla"):
            version = env.dist_version(dist)
            if version:
                out[dist] = version
        if self.neuronx_version:
            out["torch-neuronx"] = self.neuronx_version
        cc = neuronx_cc_version() if self.lane == "neuron" else None
        if cc:
            out["neuronx-cc --version"] = cc
        out["neuronx_cc_flags"] = " ".join(self.flags) + (
            " (unused: no neuronx-cc on the CPU lane)" if self.lane == "cpu" else ""
        )
        if self.wrapper_flags:
            out["neuron_cc_wrapper_flags"] = " ".join(self.wrapper_flags) + " (NEURON_CC_FLAGS only: lazy XLA graphs)"
        out["neuron_compile_cache"] = (self.options.cache_dir or "/var/tmp/neuron-compile-cache (default)") + (
            ": lazy XLA graphs only; traced graphs are not kept there (SDK neuron-caching.rst)"
        )
        out["trace_cache"] = str(self.trace_cache.root or "off") + " (torch.jit.save of each traced graph)"
        if self.inference == "trace":
            out["move_trace_to_device"] = (
                "present: called on each traced graph with KV-cache state (per case: timing.execution.graphs)"
                if self.mover
                else f"absent in torch-neuronx {self.neuronx_version}: KV-cache state stays on the host"
            )
        out.update(nvars.env_record(self.env))
        if self.topo:
            out["lnc"] = f"{self.topo.lnc} ({self.topo.lnc_source})"
        if self.inventory is not None:
            out["neuron-ls"] = json.dumps(self.inventory, separators=(",", ":"), sort_keys=True)
        out["train_path"] = (
            "torch-xla lazy tensors; sync() per step, wait_device_ops() at the end of each timed block of steps"
        )
        out["inference_path"] = TRACED_NOTE if self.inference == "trace" else "torch-xla lazy tensors (test lane: torch_neuronx.trace needs the Neuron SDK)"  # fmt: skip
        out["training_support"] = TRAINING_CAVEAT
        out["precision"] = "run dtype: bf16 autocast (train) or bf16 weights (inference); neuronx-cc --auto-cast=none"
        return out

    # --- preparing and running steps -----------------------------------------------------
    def prepare(self, module: torch.nn.Module, example_inputs: tuple, scenario: str, compile_mode: str) -> Callable:
        self._start()
        if scenario != "check":  # the case's own graphs (the logits check prepares its own first)
            self._lazy_case = scenario == "train" or self.inference != "trace"
            self._graphs = {}
        if scenario == "train":
            return module  # lazy tensors: XLA compiles each new graph at the step's sync (§2)
        compile_fn = self._trace if self.inference == "trace" else lazy_compile_fn
        return prepare_inference(module, example_inputs, scenario, self.options.prefill_buckets, compile_fn)

    def _trace(self, module: torch.nn.Module, example: tuple, aliases: dict, tag: str) -> Callable:
        """One traced graph: loaded from the trace cache if an identical one was saved, else
        compiled and saved; then its aliased state is moved to the NeuronCore."""
        if self.wrapper_flags:
            raise BenchError(
                f"cc_flags {' '.join(self.wrapper_flags)}: flags of neuronx-cc's caching wrapper, which only "
                "lazy XLA graphs go through (NEURON_CC_FLAGS); torch_neuronx.trace passes compiler_args to "
                "neuronx-cc itself, which does not know them (SDK neuron-caching.rst): remove them for "
                "prefill/decode and the logits check"
            )
        import torch_neuronx  # vendor package: Neuron hosts (and the XLA test lane) only

        versions = {"torch-neuronx": str(self.neuronx_version), "neuronx-cc": env.dist_version("neuronx-cc") or "",
                    "neuronx-cc --version": neuronx_cc_version() or ""}  # fmt: skip
        key = trace_cache.graph_key(module, example, aliases, tag, self.flags, versions)
        loaded = self.trace_cache.load(tag, key)
        fact: dict = {"key": key}
        if loaded.graph is not None:
            traced = loaded.graph
            self._loads += 1
            fact.update(source="trace cache", load_s=loaded.load_s)
        else:
            kwargs = {"input_output_aliases": aliases, "compiler_args": list(self.flags)}
            if self.options.compiler_workdir:
                kwargs["compiler_workdir"] = str(Path(self.options.compiler_workdir) / tag)
            t0 = time.perf_counter()
            traced = torch_neuronx.trace(module, example, **kwargs)  # §1 signature
            seconds = time.perf_counter() - t0
            self._trace_s += seconds
            self._traces += 1
            self.traced.append(tag)
            fact.update(source="compiled", compile_s=seconds)
            if loaded.error:
                fact["cache_error"] = loaded.error
            why = self.trace_cache.save(tag, key, traced)
            fact["saved"] = not why
            if why and self.trace_cache.root:
                fact["save_error"] = why
        if aliases:
            fact["kv_cache"] = self._move(traced)
        self._graphs[tag] = fact
        return traced

    def _move(self, traced: object) -> str:
        """Move a traced graph's aliased state (the KV cache) to this process's NeuronCore, and say
        where the state is afterwards, as the tensors report it (round 2, item 1)."""
        if self.mover is None:
            return "host: torch_neuronx.move_trace_to_device is absent; the cache crosses the host link every call"
        try:
            # Device ids count this process's visible cores from 0: "The first NeuronCore owned by the
            # application will always have the index 0" (SDK nrt-developer-guide.rst L1096), so 0 is
            # the core NEURON_RT_VISIBLE_CORES pins, whichever it is on the instance.
            self.mover(traced, 0)
        except Exception as exc:  # noqa: BLE001 - recorded; the run goes on with the state on the host
            return f"host: move_trace_to_device raised {type(exc).__name__}: {str(exc)[:100]}"
        seen = state_devices(traced)
        if seen and set(seen) == {"cpu"}:
            return "host: move_trace_to_device(trace, 0) returned but the state is still on the cpu"
        where = f"; state on {', '.join(sorted(set(seen)))}" if seen else "; state devices not readable"
        return f"device: moved with torch_neuronx.move_trace_to_device(trace, 0){where}"

    def execution_notes(self) -> tuple[dict, list[str]]:
        facts: dict = {"steps_per_sample_default": self.steps_per_sample()}
        if self._graphs:
            facts["graphs"] = dict(self._graphs)
        warnings = [
            f"{tag}: KV cache on the {fact['kv_cache']}" for tag, fact in self._graphs.items()
            if fact.get("kv_cache", "device").startswith("host")
        ]  # fmt: skip
        return facts, warnings

    def steps_per_sample(self) -> int:
        # Lazy XLA graphs run asynchronously: wait once per block of steps (audit 7). A traced call
        # blocks by itself, so each call is its own sample.
        return LAZY_STEPS_PER_SAMPLE if self._lazy_case else 1

    def optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        import torch_xla.core.xla_model as xm  # vendor package: Neuron hosts (and the XLA test lane) only

        if getattr(optimizer, "ppbench_zero1", False):
            optimizer.step()  # reduce-scatters the gradients itself: no xm all-reduce first
            return
        xm.optimizer_step(optimizer)  # all-reduces gradients across ranks, then steps (§2)

    def zero1_optimizer(self, params: object) -> torch.optim.Optimizer:
        """ZeRO-1 on XLA: torch_xla.distributed.zero_redundancy_optimizer.ZeroRedundancyOptimizer
        (pytorch/xla, read in the torch-xla 2.9.0 wheel), the class aws-neuron/neuronx-distributed's
        NeuronZero1Optimizer subclasses (src/neuronx_distributed/optimizer/zero_redundancy_optimizer.py
        @0598cd8b). Its step reduce-scatters the gradients over every rank, steps AdamW on this
        rank's flat shard of each parameter and all-gathers the result. grad_clipping=False: the
        other strategies do not clip, and the equivalence tests compare them step for step."""
        # vendor package: Neuron hosts (and the XLA test lane) only
        from torch_xla.distributed.zero_redundancy_optimizer import ZeroRedundancyOptimizer

        cls, kwargs = self.optimizer_spec()
        opt = ZeroRedundancyOptimizer(params, cls, grad_clipping=False, pin_layout=True, **kwargs)
        opt.ppbench_zero1 = True
        return opt

    def checkpoint_blocks(self, module: torch.nn.Module) -> None:
        """Activation checkpointing with torch_xla.utils.checkpoint.checkpoint, which adds the
        optimization barrier that keeps XLA from folding the recomputation away."""
        # torch.distributed: multi-rank paths only (slow; absent from some builds)
        from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import (
            apply_activation_checkpointing,
            checkpoint_wrapper,
        )
        from torch_xla.utils.checkpoint import checkpoint  # vendor package: Neuron hosts (and the XLA test lane) only

        def wrap(m: torch.nn.Module) -> torch.nn.Module:
            return checkpoint_wrapper(m, checkpoint_fn=checkpoint)  # torch-xla's default: reentrant

        apply_activation_checkpointing(module, wrap, check_fn=lambda m: isinstance(m, Block))

    def step_end(self) -> None:
        if self._xla_used:
            self._xla().sync()  # cut the lazy graph and launch it; returns before it finishes

    # --- clocks and accounting -----------------------------------------------------------
    def synchronize(self) -> None:
        # Traced calls already block (§1); XLA work must be cut *and* waited for (§2, #8858).
        # sync() launches whatever is still pending; wait_device_ops() is what waits: on the
        # CPU PJRT device of torch-xla 2.9, sync(wait=True) alone returned before the graph
        # finished executing (tests/test_xla_neuron_lane.py shows it).
        if self._xla_used:
            import torch_xla.core.xla_model as xm  # vendor package: Neuron hosts (and the XLA test lane) only

            self._xla().sync()
            xm.wait_device_ops()

    def compile_count(self) -> int:
        count = self._traces  # graphs loaded from the trace cache are not compiles
        if "torch_xla" in sys.modules:
            import torch_xla.debug.metrics as met  # vendor package: Neuron hosts (and the XLA test lane) only

            # Misses of XLA's in-memory graph cache: a graph that Neuron's persistent cache supplies
            # counts too (audit 10), which is what "no new graph inside the window" needs.
            count += int(met.counter_value("UncachedCompile") or 0)
        return count

    def compile_time_s(self) -> float:
        seconds = self._trace_s
        if "torch_xla" in sys.modules:
            import torch_xla.debug.metrics as met  # vendor package: Neuron hosts (and the XLA test lane) only

            data = met.metric_data("CompileTime")  # (samples, accumulator_ns, ...) or None (§2)
            seconds += data[1] / 1e9 if data else 0.0
        return seconds

    def memory(self) -> MemoryStats | None:
        """XLA's device memory (xm.get_memory_info: bytes_used, peak_bytes_used) where the PJRT
        device reports it. The peak cannot be reset, so a case gets it only when it set a new one."""
        info = self._memory_info()
        if info is None or self._peak_at_reset is None:
            return None
        peak = int(info.get("peak_bytes_used", 0))
        return MemoryStats(peak_allocated_bytes=peak if peak > self._peak_at_reset else None)

    def reset_peak_memory(self) -> None:
        info = self._memory_info()
        self._peak_at_reset = int(info.get("peak_bytes_used", 0)) if info is not None else None

    def _memory_info(self) -> dict | None:
        if not self._xla_used or not self._lazy_case:
            return None  # traced graphs hold their memory outside XLA's view
        try:
            import torch_xla.core.xla_model as xm  # vendor package: Neuron hosts (and the XLA test lane) only

            info = xm.get_memory_info(self.device)
        except Exception:  # noqa: BLE001 - not every PJRT device implements it
            return None
        return dict(info) if isinstance(info, dict) and "peak_bytes_used" in info else None

    def power_sampler(self) -> Sampler | None:
        if self.lane == "cpu" or not self.topo:
            return None
        cores, unknown = self._cores(), env.unknown_chip(self.options.visible_cores, self.inventory)
        return NeuronSampler([] if unknown else env.power_chips(cores, self.topo), self.options.tdp_watts,
                             monitor=env.is_local_lead(), share=env.power_share(cores, self.topo), unread=unknown)  # fmt: skip

    def _cores(self) -> list[int]:
        o = self.options
        return env.core_ids(o.visible_cores, o.num_cores, self.topo)

    def chips(self) -> list[int]:
        """The chips (neuron<N>) holding this job's logical cores."""
        return env.chips_of(self._cores(), self.topo)

    def monitor(self) -> Monitor | None:
        if self.lane == "cpu":
            return None  # the CPU PJRT device is this host's CPU: nothing to ask
        exact = env.exact_cores(self.options.visible_cores)
        return NeuronGuard(
            lambda: classify_processes(self.chips(), guards.own_pids(), exact, os.environ.get(JOB_VAR, ""))
        )

    # --- one rank of a multi-device run (ppharness/run/distributed.py) ------------------------------
    def distributed_backend(self) -> str:
        import torch_xla.distributed.xla_backend  # noqa: F401 - registers the "xla" process group (§2)

        return "xla"

    def distributed_init_method(self) -> str:
        return "xla://"

    def bind_local_rank(self, local_rank: int) -> None:
        """Nothing to do: torchrun starts one process per NeuronCore and the Neuron PJRT runtime
        places each rank on its own core (§2 Distributed); touching the device here would start
        the runtime before the process group exists."""

    def data_parallel(self, module: torch.nn.Module) -> torch.nn.Module:
        return module  # xm.optimizer_step all-reduces the gradients itself (§2), no DDP wrapper

    def is_oom(self, exc: BaseException) -> bool:
        return isinstance(exc, torch.OutOfMemoryError) or bool(_OOM.search(str(exc)))
