"""The CPU backend: eager PyTorch or torch.compile (inductor) on the host's cores.

A first-class backend, not a mock: CI runs every scenario here, and the host's measured GEMM and
copy ceilings (ppharness/core/ceilings.py) give CPU rows a meaningful efficiency figure where no vendor
peak exists. The host clock is the device clock; CPU ops are synchronous, so no sync is needed.
"""

from __future__ import annotations

import os
import platform
import resource
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ppharness.core import sdpa
from ppharness.core.device import Backend, DeviceInfo, MemoryStats, register, torch_compile
from ppharness.core.guards import Monitor
from ppharness.errors import BenchError
from ppharness.facts.sysinfo import cpu_model

MAX_THREADS = 4096  # a sane cap for any run file; check_host_options then bounds it by this host


@dataclass
class CPUOptions:
    threads: int = 0  # torch intra-op threads; 0 keeps torch's default (one per core)

    def __post_init__(self) -> None:
        # Types are checked by base.parse_options first; the host's CPU count by check_host_options.
        if isinstance(self.threads, int) and not 0 <= self.threads <= MAX_THREADS:
            raise BenchError(
                f"backend_options.cpu.threads must be 0 (torch's default) to {MAX_THREADS}, got {self.threads}"
            )


@register("cpu")
class CPUBackend(Backend):
    Options = CPUOptions
    compile_modes = ("none", "default", "max-autotune", "max-autotune-no-cudagraphs")
    dtypes = ("float32", "bfloat16", "float16")
    strategies = ("ddp", "zero1", "fsdp")  # gloo on the CPU, NCCL on GPUs (ppharness/core/parallel.py)
    memory_is_host = True

    @classmethod
    def check_host_options(cls, options: CPUOptions) -> None:
        cpus = os.cpu_count() or 1
        if options.threads > cpus:
            raise BenchError(
                f"backend_options.cpu.threads {options.threads} exceeds this host's {cpus} CPUs (os.cpu_count)"
            )

    def __init__(self, options: CPUOptions | None = None):
        super().__init__(options)
        if self.options.threads:
            torch.set_num_threads(self.options.threads)

    def describe(self) -> DeviceInfo:
        return DeviceInfo(
            backend=self.name,
            name=cpu_model(),
            accelerator=None,
            accelerator_reason="CPU: no vendor peak in configs/accelerators.yaml; see ceiling_fraction",
            devices_used=1,
            devices_on_host=1,
            versions={"torch_threads": str(torch.get_num_threads()), "cpu_capability": cpu_capability()},
            kind=f"{cpu_model()}, {os.cpu_count()} CPUs",  # the device is the host's processor
        )

    def prepare(self, module: torch.nn.Module, example_inputs: tuple, scenario: str, compile_mode: str) -> Callable:
        return torch_compile(module, compile_mode)

    def observe_attention(self, step: Callable[[], Any]) -> dict[str, Any]:
        return sdpa.observe(step, self.synchronize, device_kernels=False)

    def monitor(self) -> Monitor:
        # The device is the host, which the timing protocol watches on every backend (other
        # processes' CPU time, ppharness/core/guards.py): nothing device-specific is left to poll.
        return Monitor()

    def memory(self) -> MemoryStats:
        # The process's peak resident set: the CPU's equivalent of peak device memory.
        rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return MemoryStats(peak_allocated_bytes=rss_kib * 1024, peak_reserved_bytes=None)


def cpu_capability() -> str:
    """The SIMD level ATen's CPU kernels were dispatched to (e.g. AVX2, AVX512)."""
    try:
        return torch.backends.cpu.get_cpu_capability()
    except AttributeError:  # older torch
        return platform.machine() + (f" x{os.cpu_count()}" if os.cpu_count() else "")
