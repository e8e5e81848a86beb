"""The neuron backend: TorchNeuron, PyTorch's native `neuron` device (Trn2/Trn3, torch >= 2.13).

Section numbers (§N) refer to neuron.md, "audit N" to neuron-audit.md, "round 2" to
neuron-round2.md; TN-SRC is the public TorchNeuron source (torch-neuronx 0.1.0 dev build,
parmoham-aws/test-repo-parmoham@98154b86). TorchNeuron is torch-neuronx 2.13/2.14 (Neuron 2.33,
public beta, Trn2 and Trn3 only); it registers the `neuron` device through PrivateUse1 and
autoloads with torch, so no import is needed to use it (§3 API).

- Modes: `none` is eager; whether it is asynchronous depends on NEURON_LAUNCH_BLOCKING, which
  TorchNeuron `setdefault`s at import from its build configuration ("1", synchronous, in release
  builds; "0" in dev builds: TN-SRC torch_neuronx/__init__.py L46, _build_config.py), so the
  record's `execution` note is derived from the value seen after import (round 2, item 11).
  `default` is `torch.compile(backend="neuron", fullgraph=True)`: Dynamo -> AOTAutograd ->
  StableHLO -> neuronx-cc, no Inductor; `dynamic=True` is rejected, so every new shape
  recompiles (§3 limits).
- Timing: `torch.neuron.synchronize()` before each clock read (§3, §9.4).
- Compile count: Dynamo's graph counter (base.dynamo_compile_count); `fullgraph=True` turns a
  graph break into an error instead of a silent split.
- CPU fallback: eager operators without a Neuron kernel run on the CPU, and with
  TORCH_NEURONX_FALLBACK_ONLY_FOR_UNIMPLEMENTED_OPS=0 (the release default) so does an op that
  fails on the device (TN-SRC docs/environment_variables.md). TorchNeuron tracks them:
  `torch_neuronx.get_fallback_ops()`, `get_executed_ops()`, `clear_op_tracking()` (TN-SRC
  torch_neuronx/__init__.py L251-278; a de-duplicated set of op names fed by the PrivateUse1
  boxed CPU fallback and the execution-error recovery, not by the Python-registered linalg
  fallbacks). The tracking is cleared when the measured window starts and read when it ends
  (`FallbackWatch`); any op makes a warning; where the API is absent the record says `unknown`
  (round 2, item 8). TORCH_NEURONX_DISABLE_FALLBACK_EXECUTION is another thing: it only makes
  a `torch.compile(backend="neuron")` graph that fails to compile raise instead of running
  eagerly (docs /en/latest/torch/reference/env-vars.html, audit 4).
- Peak memory: `torch.neuron.max_memory_allocated` / `reset_peak_memory_stats` (TN-SRC
  torch_neuronx/neuron.py L305, L344; `torch.neuron` is registered at import, __init__.py L122).
  torch.accelerator's would route through c10's DeviceAllocator, which TorchNeuron's allocator
  is not (round 2, item 10), so it is only the fallback.
- Process group: "neuron", asked for by name (AWS's examples call
  `init_process_group(backend="neuron")`); TorchNeuron registers it when imported (TN-SRC
  torch_neuronx/distributed/backend.py L58); if it is missing, the run stops with that reason
  rather than falling back to gloo (round 2, item 7).
- Precision: `torch.autocast(device_type="neuron", dtype=torch.bfloat16)` for train, bf16
  weights for inference (§3 API).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ppharness.backends import _neuron_env as env
from ppharness.backends import _neuron_vars as nvars
from ppharness.backends._neuron_telemetry import (  # fmt: skip
    JOB_VAR,
    NeuronGuard,
    NeuronSampler,
    classify_processes,
    neuron_ls,
    neuronx_cc_version,
)
from ppharness.core import guards
from ppharness.core.device import DTYPES, Backend, DeviceInfo, MemoryStats, Sampler, register, torch_compile
from ppharness.core.guards import Interference, Monitor, Watch
from ppharness.errors import BenchError
from ppharness.facts import catalog

NAME = "neuron"
_OOM = re.compile(r"RESOURCE_EXHAUSTED|out of memory|Failed to allocate", re.IGNORECASE)
FALLBACK_UNKNOWN = ("unknown: this torch_neuronx has no get_fallback_ops(); eager ops without a Neuron kernel may "
                    "run on the CPU")  # fmt: skip
FALLBACK_SCOPE = ("ops torch_neuronx.get_fallback_ops() tracked in the measured window (cleared at its start); "
                  "Python-registered linalg CPU fallbacks are not tracked")  # fmt: skip


@dataclass
class NeuronOptions:
    lnc: int = 0  # logical NeuronCore config 1 or 2; 0 keeps the chip's default (LNC=2 on Trn2, §1)
    num_cores: int = 1  # NEURON_RT_NUM_CORES per process; 0 = the runtime's default (all cores)
    visible_cores: str = ""  # NEURON_RT_VISIBLE_CORES, e.g. "0-1"; wins over num_cores (§1)
    # TORCH_NEURONX_DISABLE_FALLBACK_EXECUTION: a compile failure raises instead of running the graph
    # eagerly (compile: default only); it does not stop eager ops from falling back to the CPU (audit 4)
    disable_fallback_execution: bool = True
    debug_dir: str = ""  # TORCH_NEURONX_DEBUG_DIR; "" = /tmp/neuron_backend (§3)
    tdp_watts: float = 0.0  # a chip's maximum power: the sysfs percentage as watts above background (§6)

    def __post_init__(self) -> None:
        env.validate_runtime_options(NAME, self.lnc, self.num_cores, self.visible_cores, self.tdp_watts)
        env.check_driven(NAME, self.visible_cores, self.num_cores)  # one process drives one `neuron` device


def _registered_device() -> tuple[bool, str]:
    """Is torch's accelerator the `neuron` device, with at least one core? Never raises."""
    try:
        acc = torch.accelerator.current_accelerator()
        count = torch.accelerator.device_count() if acc is not None else 0
    except Exception as exc:  # noqa: BLE001 - a half-installed plug-in must not crash `ppbench backends`
        return False, f"torch.accelerator failed: {type(exc).__name__}: {str(exc)[:100]}"
    if acc is None or acc.type != "neuron":
        return False, f"torch's accelerator is {acc.type if acc else 'none'}, not 'neuron'"
    if not count:
        return False, "the 'neuron' device is registered but reports no NeuronCore"
    return True, f"{count} neuron device(s)"


def execution_note(blocking: str | None) -> str:
    """The `execution` record line from NEURON_LAUNCH_BLOCKING as seen after import."""
    if blocking == "1":
        eager = "synchronous eager (NEURON_LAUNCH_BLOCKING=1: each op waits for the device)"
    elif blocking == "0":
        eager = "asynchronous eager (NEURON_LAUNCH_BLOCKING=0: ops are queued)"
    else:
        eager = (f"eager, synchronous or not unknown (NEURON_LAUNCH_BLOCKING={blocking!r} after import; "
                 "TorchNeuron release builds default it to 1, dev builds to 0)")  # fmt: skip
    return f"compile none: {eager}; default: torch.compile(backend='neuron', fullgraph=True)"


def _fallback_api() -> object | None:
    """torch_neuronx where it tracks CPU fallbacks (get_fallback_ops, clear_op_tracking), else None."""
    try:
        import torch_neuronx  # vendor package (TorchNeuron): loaded already when torch autoloaded it
    except ImportError:
        return None
    ok = all(callable(getattr(torch_neuronx, f, None)) for f in ("get_fallback_ops", "clear_op_tracking"))
    return torch_neuronx if ok else None


def _memory_api() -> tuple[object, str]:
    """(the module whose max_memory_allocated/reset_peak_memory_stats to use, its name)."""
    neuron = getattr(torch, "neuron", None)
    if all(callable(getattr(neuron, f, None)) for f in ("max_memory_allocated", "reset_peak_memory_stats")):
        return neuron, "torch.neuron.max_memory_allocated"
    return torch.accelerator, "torch.accelerator.max_memory_allocated (no torch.neuron memory API)"


class FallbackWatch(Monitor):
    """CPU fallbacks during one measured window: `clear_op_tracking()` at its start,
    `get_fallback_ops()` at its end (sorted names; None until a window ended, or without the API)."""

    def __init__(self, api: object | None):
        self.api = api
        self.ops: list[str] | None = None
        self.error = ""

    def start(self) -> None:
        self.ops, self.error = None, ""
        if self.api is not None:
            try:
                self.api.clear_op_tracking()
            except Exception as exc:  # noqa: BLE001 - a broken tracker must not stop the measurement
                self.error = f"clear_op_tracking raised {type(exc).__name__}: {str(exc)[:100]}"

    def stop(self) -> Interference:
        if self.api is not None and not self.error:
            try:
                self.ops = sorted({str(op) for op in self.api.get_fallback_ops()})
            except Exception as exc:  # noqa: BLE001 - recorded as the reason the list is unknown
                self.error = f"get_fallback_ops raised {type(exc).__name__}: {str(exc)[:100]}"
        return Interference(detail={"cpu_fallback_ops": self.ops})


@register(NAME)
class NeuronBackend(Backend):
    """Native TorchNeuron: eager or torch.compile(backend="neuron") (module docstring)."""

    Options = NeuronOptions
    compile_modes = ("none", "default")
    dtypes = ("float32", "bfloat16")

    def __init__(self, options: NeuronOptions | None = None):
        super().__init__(options)
        o = self.options
        self.inventory = neuron_ls()
        self.topo = env.topology(o.lnc, self.inventory)
        env.check_lnc(NAME, o.lnc, self.topo.accelerator)
        values = {**nvars.runtime_env(o.visible_cores, o.num_cores, o.lnc), **nvars.efa_env(self.topo.accelerator)}
        values["TORCH_NEURONX_DISABLE_FALLBACK_EXECUTION"] = "1" if o.disable_fallback_execution else "0"
        if o.debug_dir:
            values["TORCH_NEURONX_DEBUG_DIR"] = o.debug_dir
        self.env = nvars.plan_env(values)  # against what the user set, not what imports wrote
        self._started = False
        self._fallback = FallbackWatch(_fallback_api())
        self._memory_error = ""

    @classmethod
    def available(cls) -> tuple[bool, str]:
        have = env.series(torch.__version__)
        if have is None or have < env.NATIVE_MIN:
            return False, f"torch {torch.__version__} is older than 2.13, which TorchNeuron needs (Trn2/Trn3 only)"
        probe = env.probe_neuronx(env.NATIVE_MIN)
        if not probe.ok:
            return False, f"{probe.reason} (TorchNeuron is torch-neuronx 2.13+/2.14+, Neuron SDK 2.33+, Trn2/Trn3)"
        ok, why = _registered_device()
        if not ok:
            return False, f"torch-neuronx {probe.version} is installed, but {why}"
        return True, f"torch-neuronx {probe.version}, {why}"

    def _start(self) -> None:
        if not self._started:
            nvars.apply_env(self.env)  # before the runtime claims cores or anything compiles
            self._started = True

    @property
    def device(self) -> torch.device:
        self._start()
        return torch.device("neuron")

    def device_count(self) -> int:
        try:
            return max(1, torch.accelerator.device_count())
        except Exception:  # noqa: BLE001
            return 1

    def describe(self) -> DeviceInfo:
        topo = self.topo
        logical = env.logical_cores(self.options.visible_cores, self.options.num_cores, topo)
        used = logical * topo.lnc  # physical cores, the catalog's unit (_neuron_env.Topology)
        chip = catalog.accelerator(topo.accelerator).name if topo.accelerator else "AWS Neuron device"
        name = f"{chip}: {logical} NeuronCore(s) at LNC={topo.lnc}"
        return DeviceInfo(
            self.name, name, topo.accelerator, topo.reason, used, max(topo.cores_on_host, used), self.versions()
        )

    def versions(self) -> dict[str, str]:
        out = {dist: v for dist in ("torch-neuronx", "neuronx-cc", "nki") if (v := env.dist_version(dist))}
        cc = neuronx_cc_version()
        if cc:
            out["neuronx-cc --version"] = cc
        out.update(nvars.env_record(self.env))
        out["lnc"] = f"{self.topo.lnc} ({self.topo.lnc_source})"
        if self.inventory is not None:
            out["neuron-ls"] = json.dumps(self.inventory, separators=(",", ":"), sort_keys=True)
        out["execution"] = execution_note(os.environ.get("NEURON_LAUNCH_BLOCKING"))
        out["cpu_fallback"] = FALLBACK_SCOPE if self._fallback.api is not None else FALLBACK_UNKNOWN
        out["compile_fallback"] = (
            "compile default: fullgraph (graph breaks are errors); a graph that fails to compile "
            + ("raises" if self.options.disable_fallback_execution else "runs eagerly")
            + " (TORCH_NEURONX_DISABLE_FALLBACK_EXECUTION)"
        )
        out["peak_memory"] = _memory_api()[1]
        return out

    # --- preparing and running steps -----------------------------------------------------
    def prepare(self, module: torch.nn.Module, example_inputs: tuple, scenario: str, compile_mode: str) -> Callable:
        self._start()
        # Static shapes (dynamic=True is rejected, §3); fullgraph so a graph break fails loudly.
        return torch_compile(module, compile_mode, backend="neuron", fullgraph=True, dynamic=False)

    def autocast(self, dtype: str) -> contextlib.AbstractContextManager:
        if DTYPES[dtype] is torch.bfloat16:
            return torch.autocast(device_type="neuron", dtype=torch.bfloat16)  # §3 mixed precision
        return contextlib.nullcontext()

    def synchronize(self) -> None:
        neuron = getattr(torch, "neuron", None)
        if neuron is not None and hasattr(neuron, "synchronize"):
            neuron.synchronize()  # §3: what TorchNeuron's own tests and benchmarks use
        else:
            torch.accelerator.synchronize()  # §3: should also work

    def memory(self) -> MemoryStats | None:
        api, name = _memory_api()
        try:
            self._memory_error = ""
            return MemoryStats(peak_allocated_bytes=int(api.max_memory_allocated()))
        except Exception as exc:  # noqa: BLE001 - recorded (execution_notes), the row goes on without it
            self._memory_error = f"{name} raised {type(exc).__name__}: {str(exc)[:100]}"
            return None

    def reset_peak_memory(self) -> None:
        api, _ = _memory_api()
        with contextlib.suppress(Exception):  # memory() says why the peak is missing
            api.reset_peak_memory_stats()

    def chips(self) -> list[int]:
        """The chips (neuron<N>) holding this job's logical cores."""
        o = self.options
        cores = env.core_ids(o.visible_cores, o.num_cores, self.topo)
        return env.chips_of(cores, self.topo)

    def execution_notes(self) -> tuple[dict, list[str]]:
        fb, warnings = self._fallback, []
        if fb.api is None:
            facts: dict = {"cpu_fallback": "unknown", "cpu_fallback_note": FALLBACK_UNKNOWN}
        elif fb.ops is None:
            facts = {"cpu_fallback": "unknown", "cpu_fallback_note": fb.error or "unknown: no measured window ended"}
        else:
            facts = {"cpu_fallback": fb.ops, "cpu_fallback_note": FALLBACK_SCOPE}
            if fb.ops:
                warnings.append(
                    f"{len(fb.ops)} op(s) fell back to the CPU during the measured window: {', '.join(fb.ops)}"
                )
        if self._memory_error:
            facts["peak_memory_error"] = self._memory_error
        return facts, warnings

    def power_sampler(self) -> Sampler | None:
        o = self.options
        cores = env.core_ids(o.visible_cores, o.num_cores, self.topo)
        unknown = env.unknown_chip(o.visible_cores, self.inventory)
        return NeuronSampler([] if unknown else env.power_chips(cores, self.topo), o.tdp_watts,
                             monitor=env.is_local_lead(), share=env.power_share(cores, self.topo), unread=unknown)  # fmt: skip

    def monitor(self) -> Monitor | None:
        exact = env.exact_cores(self.options.visible_cores)
        guard = NeuronGuard(
            lambda: classify_processes(self.chips(), guards.own_pids(), exact, os.environ.get(JOB_VAR, ""))
        )
        return Watch([guard, self._fallback])  # the fallback tracking spans exactly the window

    # --- one rank of a multi-device run (ppharness/run/distributed.py) ------------------------------
    def distributed_backend(self) -> str:
        """ "neuron", by name (module docstring), once torch_neuronx has registered it."""
        import torch.distributed as dist  # torch.distributed: multi-rank paths only (slow; absent from some builds)

        try:
            import torch_neuronx  # noqa: F401 - vendor package (TorchNeuron): registers the "neuron" process group
        except ImportError as exc:
            raise BenchError(f"the 'neuron' process group needs torch_neuronx, which failed to import: {exc}") from None
        if "neuron" not in dist.Backend.backend_list:
            raise BenchError(
                "torch_neuronx is imported but registered no 'neuron' process-group backend "
                f"(torch.distributed knows {', '.join(dist.Backend.backend_list)}); this TorchNeuron cannot run multi-device"
            )
        return "neuron"

    def is_oom(self, exc: BaseException) -> bool:
        return isinstance(exc, torch.OutOfMemoryError) or bool(_OOM.search(str(exc)))
