"""The backend seam: the one place where device-specific behaviour is allowed to differ.

A backend is one class in one file of this folder, decorated with `@register("name")`; the
registry discovers the files itself, so adding a backend edits nothing else. The runner, the
scenarios and the metrics only call the methods below and never branch on a backend's name.

Every method has a device-neutral default that is correct for a synchronous host device, so a
new backend overrides only what its device does differently (clock, sync, compile, memory).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import inspect
import math
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from ppharness.core.guards import DeviceGuard, Monitor
from ppharness.core.parallel import checkpoint_blocks, fully_shard
from ppharness.errors import BenchError

# Host memory exhausted: c10's CPU allocator raises a plain RuntimeError, "[enforce fail at
# alloc_cpu.cpp:...] ... DefaultCPUAllocator: can't allocate memory: you tried to allocate N bytes".
HOST_OOM = re.compile(r"can't allocate memory|DefaultCPUAllocator|out of memory", re.IGNORECASE)
DTYPES = {"float32": torch.float32, "tf32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class DeviceInfo:
    backend: str
    name: str  # what the device calls itself ("NVIDIA H100 80GB HBM3", the CPU model)
    accelerator: str | None  # key into configs/accelerators.yaml; None when no vendor peak applies
    accelerator_reason: str = ""  # why accelerator is None
    devices_used: int = 1  # GPUs, NeuronCores, or 1 for a whole CPU host
    devices_on_host: int = 1
    versions: dict[str, str] = field(default_factory=dict)  # driver, SDK, compiler versions
    # What makes two devices the same for --resume (ppharness/run/resume.py): another host with the
    # same kind of device resumes, another kind measures again. Empty: the name.
    kind: str = ""


@dataclass
class MemoryStats:
    peak_allocated_bytes: int | None = None
    peak_reserved_bytes: int | None = None


class Sampler:
    """Energy over a window: start(), then stop() -> {"energy_j": ..., "mean_w": ...}."""

    def start(self) -> None: ...

    def stop(self) -> dict[str, float | None]:
        return {"energy_j": None, "mean_w": None}


@dataclass
class Timer:
    """Filled in when the `timer()` context exits. elapsed_s is device time where the device has
    a clock (CUDA events), else synchronized host time; host_s is always host wall time."""

    elapsed_s: float = float("nan")
    host_s: float = float("nan")
    # Host time to queue the block, before the wait: where it is close to elapsed_s the device ran
    # as fast as the host could launch (launch-bound). NaN where the timer cannot tell (host clocks).
    enqueue_s: float = float("nan")


@dataclass
class NoOptions:
    """Backends without run-file options (`backend_options.<name>` must then be empty)."""


class Backend:
    name: ClassVar[str] = ""
    Options: ClassVar[type] = NoOptions  # dataclass of the run file's backend_options.<name>
    compile_modes: ClassVar[tuple[str, ...]] = ("none",)
    graph_modes: ClassVar[tuple[str, ...]] = ()  # compile modes that record and replay graphs (CUDA graphs)
    dtypes: ClassVar[tuple[str, ...]] = ("float32",)
    # How a multi-rank train step may spread (ppharness/core/parallel.py): the run file's parallel.strategy
    strategies: ClassVar[tuple[str, ...]] = ("ddp",)
    # The device's memory is the host's (the CPU): a case the memory plan cannot fit there would
    # swap or wake the OOM killer instead of failing with an out-of-memory error, so it is refused
    # (ppharness/run/memplan.py); an accelerator's out-of-memory case is a result worth recording.
    memory_is_host: ClassVar[bool] = False

    def __init__(self, options: Any = None):
        self.options = options if options is not None else self.Options()

    # --- availability and identity -------------------------------------------------------
    @classmethod
    def available(cls) -> tuple[bool, str]:
        """(usable here, why). Never raises: vendor imports are guarded inside."""
        return True, ""

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def device_for(self, scenario: str) -> torch.device:
        """Where `scenario`'s model and inputs live: `device`, unless the backend's execution
        path consumes them elsewhere (traced Neuron inference takes CPU tensors in and out)."""
        return self.device

    def device_count(self) -> int:
        return 1

    def describe(self) -> DeviceInfo:
        raise NotImplementedError

    # --- preparing and running steps -----------------------------------------------------
    def prepare(self, module: torch.nn.Module, example_inputs: tuple, scenario: str, compile_mode: str) -> Callable:
        """Return the callable that runs `module` on this device (compiled, traced or as is).
        The caller times this call as part of compile_s."""
        return module

    def set_precision(self, dtype: str) -> None:
        """Process-wide numeric switches for `dtype` (e.g. TF32 matmuls on CUDA)."""

    def autocast(self, dtype: str) -> contextlib.AbstractContextManager:
        """Mixed precision for training: fp32 master weights, matmuls in `dtype`."""
        if DTYPES[dtype] in (torch.bfloat16, torch.float16):
            return torch.autocast(self.device.type, dtype=DTYPES[dtype])
        return contextlib.nullcontext()

    def optimizer_spec(self) -> tuple[type[torch.optim.Optimizer], dict[str, Any]]:
        """The training optimizer as (class, keyword arguments): AdamW. ZeRO-1 wraps the same."""
        return torch.optim.AdamW, {"lr": 1e-4}

    def make_optimizer(self, params: Any) -> torch.optim.Optimizer:
        cls, kwargs = self.optimizer_spec()
        return cls(params, **kwargs)

    def zero1_optimizer(self, params: Any) -> torch.optim.Optimizer:
        """ZeRO-1 over the default process group: torch's ZeroRedundancyOptimizer, each rank
        holding the optimizer state of its share of the parameters and broadcasting them after
        its step. Gradients are still all-reduced by DDP (`data_parallel`)."""
        # torch.distributed: multi-rank paths only (slow; absent from some builds)
        from torch.distributed.optim import ZeroRedundancyOptimizer

        cls, kwargs = self.optimizer_spec()
        return ZeroRedundancyOptimizer(params, optimizer_class=cls, **kwargs)

    def grad_sync(self, sync: bool) -> contextlib.AbstractContextManager:
        """A micro-batch's forward and backward: `sync` False keeps its gradients local (gradient
        accumulation under a data-parallel wrapper, ppharness/run/distributed.py); alone, nothing to do."""
        return contextlib.nullcontext()

    def data_shard(self) -> tuple[int, int]:
        """(this rank, ranks) over which a train step's global batch is split; (0, 1) alone."""
        return 0, 1

    def optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        optimizer.step()

    def step_end(self) -> None:
        """Called at the end of every step (XLA cuts its lazy graph here). Must not block."""

    def steps_per_sample(self) -> int:
        """Steps in one timed sample when the run file leaves `timing.steps_per_sample` at 0: 1, a
        wait after every step. Read after `prepare`, per case. A lazy device (XLA) returns more, so
        host tracing of one step overlaps device execution of the previous (ppharness/core/timing.py)."""
        return 1

    def block_under_s(self) -> float | None:
        """Steps shorter than this are timed in blocks of several steps with one wait at the
        block's end (ppharness/core/timing.py), when neither the run file nor the backend fixes
        the steps per sample: a wait after every step of a sub-millisecond step times the host's
        launch work and the idle device with it. None: never (host devices: the wait is free)."""
        return None

    def sdpa_context(self, scenario: str) -> contextlib.AbstractContextManager:
        """The SDPA kernel choice `scenario`'s attention runs under (the backend's `prepare`
        applies it to every call it returns, and ppharness.core.workload.attention_kernel asks
        the dispatcher under it): by default torch's own order."""
        return contextlib.nullcontext()

    def observe_attention(self, step: Callable[[], Any]) -> dict[str, Any] | None:
        """Which SDPA kernel one more call of `step` actually ran, read from torch's profiler
        (ppharness/core/workload.py sdpa_ran): the op or kernel seen, not the dispatcher's
        answer for stand-in tensors. None where the backend cannot observe it."""
        return None

    def execution_notes(self) -> tuple[dict[str, Any], list[str]]:
        """How the callable last returned by `prepare` actually ran, where the run file cannot
        say it (e.g. whether CUDA graphs were captured or the compiler skipped them), as
        (facts for the record's `timing.execution`, warnings for its validity). Read after the
        case's steps ran: lazy compilers decide on the first call, not in `prepare`."""
        return {}, []

    # --- clocks and accounting -----------------------------------------------------------
    def synchronize(self) -> None:
        """After this returns, all queued device work has finished."""

    @contextlib.contextmanager
    def timer(self) -> Iterator[Timer]:
        t = Timer()
        self.synchronize()
        t0 = time.perf_counter()
        yield t
        self.synchronize()
        t.host_s = t.elapsed_s = time.perf_counter() - t0

    def compile_count(self) -> int | None:
        """Graphs compiled so far in this process (None: the backend cannot tell)."""
        return dynamo_compile_count()

    def compile_time_s(self) -> float | None:
        """Seconds the device compiler has spent so far in this process, by its own metrics
        (XLA's CompileTime); None when the backend cannot tell."""
        return None

    def memory(self) -> MemoryStats | None:
        return None

    def reset_peak_memory(self) -> None: ...

    def release_memory(self) -> None:
        gc.collect()

    def power_sampler(self) -> Sampler | None:
        return None

    @classmethod
    def check_host_options(cls, options: Any) -> None:
        """Checks of validated options against this host (e.g. threads <= its CPUs), made only
        for the backends a run uses; raise BenchError."""

    def is_oom(self, exc: BaseException) -> bool:
        """Out of memory, also when a compiler wrapped it (raised `from` the original) or when the
        host allocator reports it as a plain RuntimeError ("[enforce fail at alloc_cpu.cpp...]")."""
        seen: set[int] = set()
        while exc is not None and id(exc) not in seen:
            seen.add(id(exc))
            if isinstance(exc, torch.OutOfMemoryError) or HOST_OOM.search(str(exc)):
                return True
            exc = exc.__cause__ or exc.__context__
        return False

    # --- validity guards (ppharness/core/guards.py) -------------------------------------------------
    def busy_processes(self) -> list[str] | None:
        """Other processes computing on this device now, e.g. ["pid 4242 python (3.1 GiB)"];
        [] when none; None when the backend cannot tell. Processes in `guards.own_pids()` (this
        run's ranks) are not "other". Any entry makes the measured window INVALID."""
        return None

    def throttle_reasons(self) -> list[str] | None:
        """Clock-throttling reasons active now that slow the device below its normal clocks
        (thermal, hardware slowdown, power brake), [] when none, None when the backend cannot
        tell. Any entry makes the measured window INVALID."""
        return None

    def monitor(self) -> Monitor | None:
        """What watches the measured window for interference; by default polls
        busy_processes() and throttle_reasons() at its start and end."""
        return DeviceGuard(self.busy_processes, self.throttle_reasons)

    # --- one rank of a multi-device run (ppharness/run/distributed.py) --------------------------------
    def distributed_backend(self) -> str:
        """The torch.distributed backend for collectives between devices of this kind (DDP's
        gradient all-reduce): torch's own default for the device type (gloo for CPU, nccl for
        CUDA). An XLA backend returns "xla" once its process-group module is imported."""
        import torch.distributed as dist  # torch.distributed: multi-rank paths only (slow; absent from some builds)

        return dist.Backend.default_device_backend_map.get(self.device.type, "gloo")

    def distributed_init_method(self) -> str:
        """init_process_group's init_method: torchrun's environment by default ("xla://" on XLA)."""
        return "env://"

    def bind_local_rank(self, local_rank: int) -> None:
        """Make this process use its host's device number `local_rank` (one rank per device),
        before anything touches the device. Default: for a torch accelerator of this backend's
        device type (CUDA, XPU, ...) set the current device; host CPU ranks share the cores."""
        acc = torch.accelerator.current_accelerator() if hasattr(torch, "accelerator") else None
        if acc is None or acc.type != self.device.type:
            return
        count = torch.accelerator.device_count()
        if local_rank >= count:
            raise BenchError(
                f"local rank {local_rank} needs {acc.type} device {local_rank}, but this host has {count}; "
                f"use --nproc-per-node {count} or fewer"
            )
        torch.accelerator.set_device_index(local_rank)

    def data_parallel(self, module: torch.nn.Module) -> torch.nn.Module:
        """`module`, already on this device, wrapped for data-parallel training over the default
        process group: DDP (gradients all-reduced in buckets during backward). Buffers are not
        re-broadcast each step: the workload's buffers are constants built from the same seed on
        every rank. A backend whose optimizer step all-reduces itself may return `module`."""
        # torch.distributed: multi-rank paths only (slow; absent from some builds)
        from torch.nn.parallel import DistributedDataParallel

        # torch 2.13 renamed the switch; `forward_sync_buffers=False` still syncs once at init (harmless here).
        params = inspect.signature(DistributedDataParallel).parameters
        no_sync = {"forward_sync_buffers": False} if "forward_sync_buffers" in params else {"broadcast_buffers": False}
        # Gradients as views into the all-reduce buckets: no second gradient-sized copy (the
        # memory plan, ppharness/run/memplan.py, counts one copy of the gradients).
        return DistributedDataParallel(module, gradient_as_bucket_view=True, **no_sync)

    def fully_shard(self, module: torch.nn.Module) -> torch.nn.Module:
        """FSDP2 (torch.distributed.fsdp.fully_shard) over the default process group."""
        return fully_shard(module)

    def checkpoint_blocks(self, module: torch.nn.Module) -> None:
        """Activation checkpointing on every decoder block (torch's checkpoint_wrapper)."""
        checkpoint_blocks(module)


def dynamo_compile_count() -> int:
    """Graphs torch.compile (dynamo) has produced in this process; recompiles count too."""
    from torch._dynamo.utils import counters  # private torch module, imported only where compiling

    return int(counters["stats"]["unique_graphs"])


def torch_compile(module: torch.nn.Module, compile_mode: str, **kwargs: Any) -> Callable:
    """torch.compile by run-file mode name: 'none' keeps eager, 'default' is compile's default."""
    if compile_mode == "none":
        return module
    # A fresh dynamo state per case: every case builds a new model, and dynamo guards on module
    # identity, so without a reset a sweep would hit its recompile limit (8) and silently fall
    # back to eager for the later cases.
    torch._dynamo.reset()
    mode = None if compile_mode == "default" else compile_mode
    return torch.compile(module, mode=mode, **kwargs)


# --- registry --------------------------------------------------------------------------
REGISTRY: dict[str, type[Backend]] = {}


def register(name: str) -> Callable[[type[Backend]], type[Backend]]:
    def deco(cls: type[Backend]) -> type[Backend]:
        cls.name = name
        REGISTRY[name] = cls
        return cls

    return deco


def parse_options(cls: type[Backend], options: dict) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls.Options)}
    for key, value in options.items():
        if key not in fields:
            valid = ", ".join(fields) or "none"
            raise BenchError(f"unknown key backend_options.{cls.name}.{key}; valid: {valid}")
        f = fields[key]
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default  # lists too
        _check_type(f"backend_options.{cls.name}.{key}", value, default)
    try:
        return cls.Options(**options)
    except BenchError:
        raise
    except (TypeError, ValueError) as exc:  # an Options check that met a value of an unexpected shape
        raise BenchError(f"backend_options.{cls.name}: {exc}") from None


def _check_type(where: str, value: Any, default: Any) -> None:
    """Options are typed by their defaults (bool, int, float, str, list, dict or None)."""
    if default is None or default is dataclasses.MISSING:
        return
    kind = type(default)
    ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        ok = True
    if not ok:
        raise BenchError(f"{where} must be {kind.__name__}, got {_show(value)}")
    # Every float option is a non-negative quantity (a fraction, watts); ints are counts or indices.
    if kind is float and not (math.isfinite(value) and value >= 0):
        raise BenchError(f"{where} must be a finite number >= 0, got {_show(value)}")
    if kind is int and abs(value) > 2**31 - 1:
        raise BenchError(f"{where} is out of range, got {_show(value)}")


def _show(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
