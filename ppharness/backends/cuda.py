"""The CUDA backend: one NVIDIA GPU (or an AMD GPU through a ROCm build of torch) at full speed.

What it owns, and why each choice:

- Precision: `train` keeps float32 master weights under bf16/fp16 autocast (scenarios.py);
  `prefill`/`decode` cast the weights. `tf32` turns on TF32 tensor-core matmuls for float32
  tensors; every other dtype turns them off, so a float32 row is IEEE float32 and the record's
  dtype says what ran.
- Speed paths: train and prefill leave SDPA's kernel to torch (causal, no mask: flash or cuDNN);
  decode attends through a boolean mask over the static cache, which flash refuses, so every
  decode call runs under DECODE_SDPA, a deliberate priority (cuDNN, then memory-efficient, math
  last), and the record says which kernel the step then ran (ppharness/core/sdpa.py, read from the
  profiler). AdamW runs as one fused kernel; torch.compile modes come from the run file, with
  static shapes (`dynamic=False`); the CUDA-graph modes (`reduce-overhead`, `max-autotune`)
  record the step as CUDA graphs, which the static KV cache and in-place token/position buffers
  of the decode step allow. Nothing here reads a device value back inside a step.
- Timing: CUDA events around each step, read after one synchronize on the end event; host wall
  time kept beside (ppharness/core/timing.py keeps both), and the host's time to queue the work.
  Steps under BLOCK_UNDER_S are timed in blocks with one wait each (ppharness/core/timing.py).
- Device facts: the GPU name maps to a key of configs/accelerators.yaml (catalog `match:` lists,
  refined below so a PCIe/NVL part or a MIG slice never borrows an SXM peak); unknown GPUs get
  accelerator None with a reason, hence a null MFU, never another GPU's peak.
- Memory, OOM and energy: torch's peak allocated/reserved bytes; out-of-memory errors are
  recognised (also when wrapped by the compiler) so the runner records `status: oom`; NVML's
  energy counter (nvidia-ml-py, the `cuda` extra) over the measured window, else None.
- Validity guards (ppharness/core/guards.py): through NVML, other processes computing on this GPU and
  abnormal clock slowdowns (heat, hardware slowdown, power brake) make a window INVALID; where
  NVML cannot tell (absent, MIG, PIDs of another namespace) the guard says so instead.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from ppharness.core import sdpa
from ppharness.core.device import Backend, DeviceInfo, MemoryStats, Sampler, Timer, register, torch_compile
from ppharness.core.guards import own_pids
from ppharness.facts import catalog

# Messages of out-of-memory failures that do not arrive as torch.OutOfMemoryError: a CUDA error
# from a kernel launch or graph capture, cuBLAS/cuDNN workspace allocation, ROCm's allocator.
_OOM_TEXT = re.compile(
    r"out of memory|CUBLAS_STATUS_ALLOC_FAILED|CUDNN_STATUS_ALLOC_FAILED|hipErrorOutOfMemory|can't allocate memory",
    re.IGNORECASE,
)
# Board form factors that change a GPU's peaks (an H100 PCIe is not an H100 SXM).
_FORM_FACTOR = re.compile(r"(?<![0-9A-Za-z])(PCIE|NVL|SXM)", re.IGNORECASE)
_MIG = re.compile(r"(?<![0-9A-Za-z])MIG(?![A-Za-z])")


# Decode's SDPA priority: cuDNN first (Hopper's cuDNN SDPA takes masks and grouped heads, and
# torch >= 2.10 with cuDNN > 9.15 prefers it on sm90 by itself), then the memory-efficient kernel
# (takes the boolean mask; the workload packs query heads by KV group, so no GQA support is
# needed), flash (refuses any mask: listed for completeness), the math fallback last.
DECODE_SDPA = ("CUDNN_ATTENTION", "EFFICIENT_ATTENTION", "FLASH_ATTENTION", "MATH")
# Steps under this are timed in blocks (ppharness/core/timing.py): a wait after each sub-millisecond
# step would time the host's launch work and an idle GPU with it.
BLOCK_UNDER_S = 2e-3


@dataclass
class CUDAOptions:
    device_index: int = -1  # -1: torch's current device (what a torchrun launcher sets per rank)
    fused_adamw: bool = True  # one fused AdamW kernel; False falls back to torch's foreach path


@register("cuda")
class CUDABackend(Backend):
    Options = CUDAOptions
    compile_modes = ("none", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
    graph_modes = ("reduce-overhead", "max-autotune")  # inductor's CUDA-graph modes
    dtypes = ("float32", "tf32", "bfloat16", "float16")
    strategies = ("ddp", "zero1", "fsdp")  # gloo on the CPU, NCCL on GPUs (ppharness/core/parallel.py)

    def __init__(self, options: CUDAOptions | None = None):
        super().__init__(options)
        self._cudagraphs = False  # the last prepared callable replays CUDA graphs
        self._watch: CudagraphWatch | None = None  # what inductor did with them (execution_notes)

    # --- availability and identity -------------------------------------------------------
    @classmethod
    def available(cls) -> tuple[bool, str]:
        try:
            if torch.version.cuda is None and getattr(torch.version, "hip", None) is None:
                return False, f"torch was built without CUDA (torch {torch.__version__})"
            if not torch.cuda.is_available() or torch.cuda.device_count() == 0:
                return False, "no CUDA device visible (driver missing, or CUDA_VISIBLE_DEVICES hides every GPU)"
            return True, ""
        except Exception as exc:  # noqa: BLE001 - available() must never raise
            return False, f"CUDA check failed: {type(exc).__name__}: {exc}"

    @property
    def index(self) -> int:
        i = self.options.device_index
        return torch.cuda.current_device() if i < 0 else i

    @property
    def device(self) -> torch.device:
        return torch.device("cuda", self.index)

    def device_count(self) -> int:
        return torch.cuda.device_count()

    def describe(self) -> DeviceInfo:
        props = torch.cuda.get_device_properties(self.index)
        nvml = load_nvml()
        handle = nvml_handle(nvml, *self._nvml_ids()) if nvml else None
        key, reason = accelerator_for(props.name, mig=nvml_mig_enabled(nvml, handle))
        versions = {
            "gpu": props.name,
            "compute_capability": f"{props.major}.{props.minor}",
            "sm_count": str(props.multi_processor_count),
            "gpu_memory_gib": f"{props.total_memory / 2**30:.1f}",
            "driver": driver_version(nvml),
            "cuda_runtime": str(torch.version.cuda or "none (ROCm build)"),
            "cudnn": str(torch.backends.cudnn.version()),
            "nvml": "yes" if nvml else "no (install the cuda extra: nvidia-ml-py)",
            # the caching allocator's settings (expandable segments), read by torch at start-up
            "alloc_conf": os.environ.get("PYTORCH_ALLOC_CONF")
            or os.environ.get("PYTORCH_CUDA_ALLOC_CONF")
            or "default",
        }
        if getattr(torch.version, "hip", None):
            versions["hip"] = str(torch.version.hip)
        return DeviceInfo(
            backend=self.name,
            name=props.name,
            accelerator=key,
            accelerator_reason=reason,
            devices_used=1,
            devices_on_host=torch.cuda.device_count(),
            versions=versions,
            kind=f"{props.name}, {props.total_memory // 2**20} MiB",
        )

    # --- preparing and running steps -----------------------------------------------------
    def prepare(self, module: torch.nn.Module, example_inputs: tuple, scenario: str, compile_mode: str) -> Callable:
        # Static shapes: one graph per case and no dynamic-shape kernels if anything recompiles.
        self._cudagraphs = compile_mode in self.graph_modes
        if self._watch is not None:
            self._watch.close()  # the previous case's (or the check's) watch
        self._watch = CudagraphWatch() if self._cudagraphs else None
        fn = torch_compile(module, compile_mode, dynamic=False)
        if scenario != "decode":
            return fn
        sdpa_order = self.sdpa_context

        def decode(*args: Any, **kwargs: Any) -> Any:
            # A compiled graph fixes its SDPA kernel when traced (the first calls), eager calls
            # choose per call: every call runs under the decode order, so both get it.
            with sdpa_order("decode"):
                return fn(*args, **kwargs)

        return decode

    def sdpa_context(self, scenario: str) -> contextlib.AbstractContextManager:
        if scenario != "decode":
            return contextlib.nullcontext()
        return sdpa_kernel([getattr(SDPBackend, name) for name in DECODE_SDPA], set_priority=True)

    def block_under_s(self) -> float:
        return BLOCK_UNDER_S

    def observe_attention(self, step: Callable[[], Any]) -> dict[str, Any]:
        return sdpa.observe(step, self.synchronize, device_kernels=True)

    def execution_notes(self) -> tuple[dict[str, Any], list[str]]:
        if self._watch is None:
            return {}, []
        watch, self._watch = self._watch, None
        return watch.close()

    def set_precision(self, dtype: str) -> None:
        # The legacy switch only: torch >= 2.9 raises if legacy and new (fp32_precision) APIs
        # are mixed, and inductor still reads the legacy one. "high" = TF32 tensor cores.
        torch.set_float32_matmul_precision("high" if dtype == "tf32" else "highest")

    def optimizer_spec(self) -> tuple[type[torch.optim.Optimizer], dict[str, Any]]:
        # fused=True: one kernel for the whole update, and no host sync (step counts stay on the GPU).
        # ZeRO-1 (zero1_optimizer) wraps the same class and arguments.
        if self.options.fused_adamw:
            return torch.optim.AdamW, {"lr": 1e-4, "fused": True}
        return torch.optim.AdamW, {"lr": 1e-4, "foreach": True}

    def step_end(self) -> None:
        # CUDA graph trees reuse output memory from one replay to the next; marking the step
        # boundary tells them the previous step's outputs are dead (no host work, no sync).
        if self._cudagraphs:
            torch.compiler.cudagraph_mark_step_begin()

    # --- clocks and accounting -----------------------------------------------------------
    def synchronize(self) -> None:
        torch.cuda.synchronize(self.device)

    @contextlib.contextmanager
    def timer(self) -> Iterator[Timer]:
        t = Timer()
        stream = torch.cuda.current_stream(self.device)  # where this device's kernels are queued
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        t0 = time.perf_counter()
        start.record(stream)
        yield t
        t.enqueue_s = time.perf_counter() - t0  # the host's part: queueing the block's work
        end.record(stream)
        end.synchronize()  # the one synchronize: after it, both events have their timestamps
        t.host_s = time.perf_counter() - t0
        t.elapsed_s = start.elapsed_time(end) / 1e3  # ms -> s, on the GPU's own clock

    def memory(self) -> MemoryStats:
        return MemoryStats(
            peak_allocated_bytes=torch.cuda.max_memory_allocated(self.index),
            peak_reserved_bytes=torch.cuda.max_memory_reserved(self.index),
        )

    def reset_peak_memory(self) -> None:
        torch.cuda.reset_peak_memory_stats(self.index)

    def release_memory(self) -> None:
        # Let go of compiled code first (dynamo's caches hold the case's graphs; CUDA graph trees
        # keep a private memory pool per device), then collect what that freed, then hand cached
        # blocks back, so the next case starts clean.
        if "torch._dynamo" in sys.modules:
            torch._dynamo.reset()
        if "torch._inductor.cudagraph_trees" in sys.modules:
            # private torch module, imported only where compiling
            from torch._inductor.cudagraph_trees import reset_cudagraph_trees

            reset_cudagraph_trees()
        gc.collect()
        torch.cuda.empty_cache()

    def is_oom(self, exc: BaseException) -> bool:
        return is_oom_error(exc)

    def power_sampler(self) -> Sampler | None:
        nvml, handle = self._nvml_device()
        if handle is None:
            return None  # no NVML, GPU not found, or a MIG slice (charged the whole GPU's energy)
        try:
            nvml.nvmlDeviceGetTotalEnergyConsumption(handle)  # pre-Volta and MIG slices: unsupported
        except nvml.NVMLError:
            return None
        return NvmlEnergySampler(nvml, handle)

    # --- validity guards (ppharness/core/guards.py): read through NVML, None when it cannot tell ------
    def busy_processes(self) -> list[str] | None:
        nvml, handle = self._nvml_device()
        return None if handle is None else other_gpu_processes(nvml, handle, own_pids())

    def throttle_reasons(self) -> list[str] | None:
        nvml, handle = self._nvml_device()
        return None if handle is None else clock_slowdowns(nvml, handle)

    def _nvml_device(self) -> tuple[Any | None, Any | None]:
        """NVML and this GPU's handle; (nvml, None) for a MIG slice, whose processes and clocks
        the parent GPU's counters do not describe."""
        nvml = load_nvml()
        handle = nvml_handle(nvml, *self._nvml_ids()) if nvml else None
        return nvml, None if nvml_mig_enabled(nvml, handle) else handle

    def _nvml_ids(self) -> tuple[str | None, str | None]:
        """(NVML UUID "GPU-...", PCI bus id) of this device: NVML's order can differ from CUDA's
        (CUDA_VISIBLE_DEVICES, CUDA_DEVICE_ORDER), so the device is found by identity, not index."""
        props = torch.cuda.get_device_properties(self.index)
        uuid = getattr(props, "uuid", None)
        uuid_s = None if uuid is None else (str(uuid) if str(uuid).startswith(("GPU-", "MIG-")) else f"GPU-{uuid}")
        bus = getattr(props, "pci_bus_id", None)
        pci = None
        if bus is not None:
            pci = f"{getattr(props, 'pci_domain_id', 0):08X}:{bus:02X}:{getattr(props, 'pci_device_id', 0):02X}.0"
        return uuid_s, pci


# --- device name -> accelerator key ---------------------------------------------------------
def accelerator_for(device_name: str, mig: bool = False) -> tuple[str | None, str]:
    """(accelerators.yaml key, "") for a GPU name, or (None, why) when no vendor peak applies."""
    if mig or _MIG.search(device_name):
        return None, f"{device_name!r} is a MIG slice: a whole GPU's peaks do not apply"
    key = catalog.match_device_name(device_name)
    if key is None:
        return None, (
            f"GPU {device_name!r} matches no `match:` pattern in configs/accelerators.yaml "
            "(no sourced peak), so MFU/MBU are null"
        )
    acc = catalog.accelerator(key)
    named = {m.upper() for m in _FORM_FACTOR.findall(device_name)}
    listed = {m.upper() for m in _FORM_FACTOR.findall(f"{acc.name} {key}")}
    if named and not named & listed:
        # e.g. "NVIDIA H200 NVL" contains the H200 SXM pattern but has lower clocks and power.
        form = "/".join(sorted(named))
        return None, f"GPU {device_name!r} has form factor {form}; the {key} peaks are for {acc.name}"
    return key, ""


# --- CUDA graphs: captured, or skipped by inductor ---------------------------------------------
class CudagraphWatch:
    """Whether inductor skipped the CUDA graphs `reduce-overhead` asks for, over one case.

    A graph inductor cannot capture (an input mutated that is not a parameter or buffer, a CPU
    tensor, a dynamic shape, ...) runs as ordinary kernel launches instead, silently: inductor
    bumps counters["inductor"]["cudagraph_skips"] and, for CUDA graphs, logs "skipping cudagraphs
    due to <reason>" on its `cudagraphs` artifact logger (torch/_inductor/cudagraph_utils.py,
    log_cudagraph_skip_and_bump_counter; the counter alone for graphs on other devices). A
    decode row labelled reduce-overhead that was in fact launch-bound must say so."""

    LOGGER = "torch._inductor.cudagraph_utils.__cudagraphs"

    def __init__(self) -> None:
        self._start = _cudagraph_skips()
        self.reasons: list[str] = []
        self._handler = _Collect(self.reasons)
        logging.getLogger(self.LOGGER).addHandler(self._handler)

    def close(self) -> tuple[dict[str, Any], list[str]]:
        """(facts for timing.execution, warnings); the watch stops listening."""
        logging.getLogger(self.LOGGER).removeHandler(self._handler)
        skipped = _cudagraph_skips() - self._start
        reasons = list(dict.fromkeys(self.reasons))[:5]  # distinct, in order; a few are enough
        facts = {"cudagraphs": "requested", "cudagraph_skips": skipped, "cudagraph_skip_reasons": reasons}
        if not skipped:
            return facts, []
        why = "; ".join(reasons) or "reason not logged"
        return facts, [
            f"compile=reduce-overhead, but inductor skipped CUDA graphs for {skipped} graph(s) ({why}): "
            "those ran as separate kernel launches"
        ]


def _cudagraph_skips() -> int:
    from torch._dynamo.utils import counters  # private torch module, imported only where compiling

    return int(counters["inductor"]["cudagraph_skips"])


class _Collect(logging.Handler):
    def __init__(self, sink: list[str]):
        super().__init__(logging.WARNING)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        self.sink.append(record.getMessage().strip().splitlines()[0][:300])


# --- out of memory --------------------------------------------------------------------------
def is_oom_error(exc: BaseException | None) -> bool:
    """True for an out-of-memory failure, also when a compiler wrapped it (BackendCompilerFailed
    raises `from` the original) or when CUDA reports it as a plain RuntimeError."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, torch.OutOfMemoryError):
            return True
        if isinstance(exc, RuntimeError) and _OOM_TEXT.search(str(exc)):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


# --- NVML: driver version, MIG mode, energy ---------------------------------------------------
@functools.cache
def load_nvml() -> Any | None:
    """The initialised `pynvml` module, or None when nvidia-ml-py or the NVML library is absent."""
    try:
        import pynvml  # optional vendor package (the cuda extra)
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - NVMLError_LibraryNotFound, DriverNotLoaded, OSError, ...
        return None
    return pynvml


def nvml_handle(nvml: Any, uuid: str | None, pci_bus_id: str | None) -> Any | None:
    """The NVML handle of the GPU with this UUID (else PCI bus id); None when neither resolves."""
    lookups = ((nvml.nvmlDeviceGetHandleByUUID, uuid), (nvml.nvmlDeviceGetHandleByPciBusId, pci_bus_id))
    for lookup, ident in lookups:
        if ident is None:
            continue
        try:
            return lookup(ident)
        except nvml.NVMLError:
            continue
    return None  # never guess by index: another GPU's energy would be attributed to this one


def nvml_mig_enabled(nvml: Any | None, handle: Any | None) -> bool:
    if nvml is None or handle is None:
        return False
    try:
        return bool(nvml.nvmlDeviceGetMigMode(handle)[0])
    except (nvml.NVMLError, AttributeError):
        return False  # GPUs without MIG report NotSupported


def driver_version(nvml: Any | None) -> str:
    """The NVIDIA driver version from NVML, else from /proc (Linux), else 'unknown'."""
    if nvml is not None:
        try:
            version = nvml.nvmlSystemGetDriverVersion()
            return version.decode() if isinstance(version, bytes) else str(version)
        except nvml.NVMLError:
            pass
    try:  # "NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.15  ..."
        text = Path("/proc/driver/nvidia/version").read_text()
        found = re.search(r"Kernel Module\s+([0-9][0-9.]+)", text)
        if found:
            return found.group(1)
    except OSError:
        pass
    return "unknown"


# Clock-event bits (nvml.h, nvmlClocksEventReason*) that slow the GPU below its normal boost
# behaviour: a hardware slowdown signal, heat, an external power brake. The software power cap
# (0x4) is left out on purpose: it is how a GPU holds its rated power under full load, so every
# well-fed H100 reports it; idle (0x1), application clocks (0x2) and sync boost (0x10) are settings.
_SLOWDOWNS = {
    0x8: "hardware slowdown",
    0x20: "software thermal slowdown",
    0x40: "hardware thermal slowdown",
    0x80: "hardware power brake",
}


def clock_slowdowns(nvml: Any, handle: Any) -> list[str] | None:
    """Active clock slowdowns of the GPU ([] when none), or None when NVML cannot say."""
    read = getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None) or getattr(
        nvml,
        "nvmlDeviceGetCurrentClocksThrottleReasons",
        None,  # the name before driver 535
    )
    try:
        mask = int(read(handle)) if read else None
    except nvml.NVMLError:
        mask = None
    return None if mask is None else [name for bit, name in _SLOWDOWNS.items() if mask & bit]


def other_gpu_processes(nvml: Any, handle: Any, own: set[int]) -> list[str] | None:
    """Compute processes on the GPU other than this run's, e.g. "pid 4242 python (3.1 GiB)".

    None when NVML cannot list them, or when this process is not among them although it holds a
    context on the GPU: then NVML reports PIDs of another PID namespace (a container without
    --pid=host) and no PID can be told apart from ours."""
    try:
        procs = list(nvml.nvmlDeviceGetComputeRunningProcesses(handle))
    except nvml.NVMLError:
        return None
    if not {p.pid for p in procs} & own:
        return None
    others = []
    for p in procs:
        if p.pid in own:
            continue
        try:
            name = nvml.nvmlSystemGetProcessName(p.pid)
            name = Path(name.decode() if isinstance(name, bytes) else str(name)).name
        except nvml.NVMLError:
            name = "?"
        mem = f" ({p.usedGpuMemory / 2**30:.1f} GiB)" if p.usedGpuMemory else ""
        others.append(f"pid {p.pid} {name}{mem}")
    return others


class NvmlEnergySampler(Sampler):
    """Energy over a window from NVML's cumulative counter (millijoules since driver load,
    nvmlDeviceGetTotalEnergyConsumption; Volta and later). The driver refreshes the counter
    periodically, not per kernel, so a window shorter than MIN_WINDOW_S, or one in which the
    counter did not move, gives None rather than a misleading (often zero) figure."""

    MIN_WINDOW_S = 1.0

    def __init__(self, nvml: Any, handle: Any, clock: Callable[[], float] = time.perf_counter):
        self.nvml, self.handle, self.clock = nvml, handle, clock
        self._mj0: int | None = None
        self._t0 = 0.0

    def start(self) -> None:
        self._t0 = self.clock()
        self._mj0 = self._read()

    def stop(self) -> dict[str, float | None]:
        mj1, seconds = self._read(), self.clock() - self._t0
        if self._mj0 is None or mj1 is None or mj1 <= self._mj0 or seconds < self.MIN_WINDOW_S:
            return {"energy_j": None, "mean_w": None}  # unreadable, driver reloaded, or too short
        energy_j = (mj1 - self._mj0) / 1e3
        return {"energy_j": energy_j, "mean_w": energy_j / seconds}

    def _read(self) -> int | None:
        try:
            return int(self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle))
        except self.nvml.NVMLError:
            return None
