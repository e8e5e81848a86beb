"""The neuron backend: TorchNeuron, PyTorch's native `neuron` device (Trn2/Trn3, torch >= 2.13).

Section numbers (§N) refer to neuron.md, "audit N" to neuron-audit.md. TorchNeuron is torch-neuronx 2.13/2.14 (Neuron 2.33,
public beta, Trn2 and Trn3 only); it registers the `neuron` device through PrivateUse1 and
autoloads with torch, so no import is needed to use it (§3 API).

- Modes: `none` is eager, which TorchNeuron runs asynchronously ("adaptive eager execution"
  fuses queued ops); `default` is `torch.compile(backend="neuron", fullgraph=True)`: Dynamo ->
  AOTAutograd -> StableHLO -> neuronx-cc, no Inductor. Only mode="default" exists, and
  `dynamic=True` is rejected, so every new shape recompiles (§3 limits).
- Timing: `torch.neuron.synchronize()` before each clock read (§3, §9.4); eager execution is
  asynchronous, so without it a step would be timed at enqueue.
- Compile count: Dynamo's graph counter (base.dynamo_compile_count); `fullgraph=True` turns a
  graph break into an error instead of a silent split.
- CPU fallback: eager operators without a Neuron kernel run on the CPU by default, a performance
  trap (§3). TORCH_NEURONX_DISABLE_FALLBACK_EXECUTION does not stop that: per the TorchNeuron
  environment-variable reference (docs /en/latest/torch/reference/env-vars.html, 2026-10-14) it
  only makes a `torch.compile(backend="neuron")` graph that fails to compile raise instead of
  running the original graph eagerly (audit 4). That reference and the torch.compile reference
  name no counter or log of eager CPU fallbacks, so the record says `cpu_fallback: unknown`
  rather than claiming none ran.
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
from ppharness.core.guards import Monitor
from ppharness.facts import catalog

NAME = "neuron"
_OOM = re.compile(r"RESOURCE_EXHAUSTED|out of memory|Failed to allocate", re.IGNORECASE)
CPU_FALLBACK = ("unknown: eager ops without a Neuron kernel may run on the CPU and no documented API counts them; "
                "TORCH_NEURONX_DISABLE_FALLBACK_EXECUTION only governs torch.compile graph fallback")  # fmt: skip


@dataclass
class NeuronOptions:
    lnc: int = 0  # logical NeuronCore config 1 or 2; 0 keeps the chip's default (LNC=2 on Trn2, §1)
    num_cores: int = 1  # NEURON_RT_NUM_CORES per process; 0 = the runtime's default (all cores)
    visible_cores: str = ""  # NEURON_RT_VISIBLE_CORES, e.g. "0-1"; wins over num_cores (§1)
    # TORCH_NEURONX_DISABLE_FALLBACK_EXECUTION: a compile failure raises instead of running the graph
    # eagerly (compile: default only); it does not stop eager ops from falling back to the CPU (audit 4)
    disable_fallback_execution: bool = True
    debug_dir: str = ""  # TORCH_NEURONX_DEBUG_DIR; "" = /tmp/neuron_backend (§3)
    tdp_watts: float = 0.0  # a chip's maximum power, to turn the sysfs percentage into watts (§6)

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
        values = {**env.runtime_env(o.visible_cores, o.num_cores, o.lnc), **env.efa_env(self.topo.accelerator)}
        values["TORCH_NEURONX_DISABLE_FALLBACK_EXECUTION"] = "1" if o.disable_fallback_execution else "0"
        if o.debug_dir:
            values["TORCH_NEURONX_DEBUG_DIR"] = o.debug_dir
        self.env = env.plan_env(values)
        self._started = False

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
            env.apply_env(self.env)  # before the runtime claims cores or anything compiles
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
        out.update({f"env.{k}": v for k, v in self.env.items()})
        out["lnc"] = f"{self.topo.lnc} ({self.topo.lnc_source})"
        if self.inventory is not None:
            out["neuron-ls"] = json.dumps(self.inventory, separators=(",", ":"), sort_keys=True)
        out["execution"] = "compile none: asynchronous eager; default: torch.compile(backend='neuron', fullgraph=True)"
        out["cpu_fallback"] = CPU_FALLBACK
        out["compile_fallback"] = (
            "compile default: fullgraph (graph breaks are errors); a graph that fails to compile "
            + ("raises" if self.options.disable_fallback_execution else "runs eagerly")
            + " (TORCH_NEURONX_DISABLE_FALLBACK_EXECUTION)"
        )
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
        try:
            return MemoryStats(peak_allocated_bytes=int(torch.accelerator.max_memory_allocated()))
        except Exception:  # noqa: BLE001 - not every PrivateUse1 backend implements memory stats
            return None

    def reset_peak_memory(self) -> None:
        with contextlib.suppress(Exception):
            torch.accelerator.reset_peak_memory_stats()

    def chips(self) -> list[int]:
        """The chips (neuron<N>) holding this job's logical cores."""
        o = self.options
        cores = env.core_ids(o.visible_cores, o.num_cores, self.topo)
        return env.chips_of(cores, self.topo)

    def execution_notes(self) -> tuple[dict, list[str]]:
        return {"cpu_fallback": "unknown"}, []

    def power_sampler(self) -> Sampler | None:
        o = self.options
        cores = env.core_ids(o.visible_cores, o.num_cores, self.topo)
        unknown = env.unknown_chip(o.visible_cores, self.inventory)
        return NeuronSampler([] if unknown else env.power_chips(cores, self.topo), o.tdp_watts,
                             monitor=env.is_local_lead(), share=env.power_share(cores, self.topo), unread=unknown)  # fmt: skip

    def monitor(self) -> Monitor | None:
        exact = env.exact_cores(self.options.visible_cores)
        return NeuronGuard(
            lambda: classify_processes(self.chips(), guards.own_pids(), exact, os.environ.get(JOB_VAR, ""))
        )

    def is_oom(self, exc: BaseException) -> bool:
        return isinstance(exc, torch.OutOfMemoryError) or bool(_OOM.search(str(exc)))
