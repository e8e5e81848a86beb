"""Timed kernels: the transformer's building blocks, one per file, each with a reference and a cost model.

A kernel is one class in one file of this folder, decorated with `@kernel("name")`; `discover()`
imports the files itself, so adding a kernel edits nothing else, and the tests and both front
doors (`ppbench kernels`, `pytest -m benchmark benchmarks/`) pick it up from the registry.

Each kernel provides:
- `shapes(geo)`: named shapes taken from a workload preset (`Geometry`), so every row traces back
  to the model it explains; each shape says whether it is compute- or memory-bound;
- `make_inputs(shape, dtype, seed)`: seeded inputs built on the CPU (same bytes on every backend);
- `cost(shape, dtype)`: FLOPs and the minimum bytes moved (the roofline's two axes);
- `reference(shape, *inputs)`: plain PyTorch, run in float32, that every variant is checked against;
- `variants(shape)`: the timed implementations (eager, fused, ...); `compile_variant` names the one
  `ppbench kernels --compile MODE` also times through the backend's `prepare` (torch.compile, ...);
  `available` and `skip_variant` say what cannot run on a backend, and why.

Error metric (as ppharness.core.scenarios.check): max|out - ref| / max|ref| per output tensor, worst tensor.

Reading kernel records needs none of this (ppharness/present/kernel_table.py), so `ppbench show`
never imports torch.
"""

from __future__ import annotations

import contextlib
import importlib
import math
import pkgutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor

from ppharness.core.device import DTYPES, Backend
from ppharness.core.workload import ModelConfig
from ppharness.errors import BenchError

BOUNDS = ("compute", "memory", "communication")

# Largest max|out - ref| / max|ref| per dtype, for a single kernel (no error compounding over
# layers, unlike the workload check): fp32 leaves room for reassociated sums (compilers, BLAS
# blocking); bf16 keeps 8 mantissa bits (~4e-3 per rounding), fp16 11 bits.
TOLERANCE = {"float32": 1e-4, "tf32": 5e-3, "bfloat16": 3e-2, "float16": 5e-3}


@dataclass(frozen=True)
class Geometry:
    """Where the shapes come from: a workload preset and one step's token layout. Prefill and
    training shapes use batch x seq_len tokens; decode shapes use `batch` tokens attending to a
    full cache of seq_len positions."""

    preset: str
    model: ModelConfig
    batch: int
    seq_len: int

    @property
    def tokens(self) -> int:
        return self.batch * self.seq_len


@dataclass(frozen=True)
class Shape:
    name: str  # e.g. "wq@prefill": which part of the model, in which phase
    dims: dict[str, Any]  # JSON-able sizes (ints, or lists of tensor shapes)
    bound: str  # "compute" | "memory" | "communication": which roofline ceiling applies
    # Tokens one call stands for in the model step it comes from: batch x seq_len for prefill and
    # training shapes (and the optimizer step / gradient all-reduce: once per training step),
    # batch for decode shapes. Gives the kernel's tokens/s and $/1M tokens; None: not counted.
    tokens: int | None = None

    def label(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.dims.items() if isinstance(v, int))


@dataclass(frozen=True)
class Cost:
    flops: float  # useful floating-point operations (2 per multiply-add)
    bytes: float  # minimum bytes moved to and from memory (each input read once, output written once)
    extra: dict[str, float] = field(default_factory=dict)  # e.g. flops_dense, bus_bytes


class Kernel:
    name: ClassVar[str] = ""
    dtypes: ClassVar[tuple[str, ...]] = ("float32", "tf32", "bfloat16", "float16")
    compile_variant: ClassVar[str | None] = "eager"  # the variant `--compile` also times compiled
    host_inputs: ClassVar[tuple[int, ...]] = ()  # input positions that stay on the host
    tolerance: ClassVar[dict[str, float]] = TOLERANCE

    def shapes(self, geo: Geometry) -> list[Shape]:
        raise NotImplementedError

    def make_inputs(self, shape: Shape, dtype: str, seed: int) -> tuple:
        raise NotImplementedError

    def cost(self, shape: Shape, dtype: str) -> Cost:
        raise NotImplementedError

    def reference(self, shape: Shape, *inputs: Any) -> Tensor | tuple[Tensor, ...]:
        raise NotImplementedError

    def variants(self, shape: Shape) -> dict[str, Callable[..., Any]]:
        raise NotImplementedError

    def available(self, backend: Backend, dtype: str) -> tuple[bool, str]:
        """(runs here, why not). Never raises."""
        if dtype not in self.dtypes:
            return False, f"{self.name} runs in {', '.join(self.dtypes)} only"
        return True, ""

    def skip_variant(self, variant: str, backend: Backend) -> str:
        """Why `variant` cannot run on this backend's device ("" when it can)."""
        return ""

    @contextlib.contextmanager
    def session(self, backend: Backend) -> Iterator[None]:
        """Process-wide setup the kernel needs while it runs (all_reduce: a process group)."""
        yield

    def tolerance_for(self, dtype: str) -> float:
        return self.tolerance.get(dtype, TOLERANCE[dtype])


# --- registry ------------------------------------------------------------------------------
REGISTRY: dict[str, Kernel] = {}


def kernel(name: str) -> Callable[[type[Kernel]], type[Kernel]]:
    def deco(cls: type[Kernel]) -> type[Kernel]:
        cls.name = name
        REGISTRY[name] = cls()
        return cls

    return deco


NOT_KERNELS = ("run", "roofline", "pbjson")


def discover() -> dict[str, Kernel]:
    """Import every kernel module of this folder once; each registers itself. The modules that
    run, cost and read kernels (NOT_KERNELS) are not kernels and are not imported here."""
    for info in pkgutil.iter_modules(__path__):
        if info.name not in NOT_KERNELS and not info.name.startswith("_"):
            importlib.import_module(f"ppharness.kernels.{info.name}")
    return dict(sorted(REGISTRY.items()))


def get(name: str) -> Kernel:
    found = discover()
    if name not in found:
        raise BenchError(f"unknown kernel {name!r}; valid: {', '.join(found)}")
    return found[name]


# --- helpers shared by kernel files --------------------------------------------------------
def randn(shape: tuple[int, ...] | list[int], gen: torch.Generator, dtype: str, scale: float = 1.0) -> Tensor:
    """Seeded normal values drawn in float32 on the CPU, then cast: identical bytes everywhere."""
    return (torch.randn(tuple(shape), generator=gen) * scale).to(DTYPES[dtype])


def element_size(dtype: str) -> int:
    return torch.empty((), dtype=DTYPES[dtype]).element_size()


def tensors(obj: Any) -> list[Tensor]:
    """The tensors of a (nested) output or input structure, in order."""
    if isinstance(obj, Tensor):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [t for item in obj for t in tensors(item)]
    return []


def map_tensors(obj: Any, fn: Callable[[Tensor], Tensor]) -> Any:
    if isinstance(obj, Tensor):
        return fn(obj)
    if isinstance(obj, (list, tuple)):
        return type(obj)(map_tensors(item, fn) for item in obj)
    return obj


def max_rel_err(out: Any, ref: Any) -> float:
    """Worst over output tensors of max|out - ref| / max|ref| (inf on a shape mismatch or a
    non-finite value: a wrong answer must never pass)."""
    got, want = tensors(out), tensors(ref)
    if len(got) != len(want):
        return math.inf
    worst = 0.0
    for g, w in zip(got, want):
        g, w = g.detach().float().cpu(), w.detach().float().cpu()
        if g.shape != w.shape or not torch.isfinite(g).all():
            return math.inf
        scale = w.abs().max().item() if w.numel() else 0.0
        err = (g - w).abs().max().item() if w.numel() else 0.0
        worst = max(worst, err / scale if scale > 0 else err)
    return worst
