"""The device backends: one file per device family, each a `@register("name")` class implementing
the seam defined in ppharness/core/device.py. `get`/`make` import them on first use."""

from __future__ import annotations

import importlib
import pkgutil

from ppharness.core.device import (
    DTYPES,
    REGISTRY,
    Backend,
    DeviceInfo,
    MemoryStats,
    NoOptions,
    Sampler,
    Timer,
    parse_options,
    register,
    torch_compile,
)
from ppharness.errors import BenchError

__all__ = [
    "DTYPES",
    "REGISTRY",
    "Backend",
    "DeviceInfo",
    "MemoryStats",
    "NoOptions",
    "Sampler",
    "Timer",
    "discover",
    "get",
    "make",
    "parse_options",
    "register",
    "torch_compile",
]


def discover() -> dict[str, type[Backend]]:
    """Import every module of ppharness/backends/ once; each registers itself."""
    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"ppharness.backends.{info.name}")
    return REGISTRY


def get(name: str) -> type[Backend]:
    backends = discover()
    if name not in backends:
        raise BenchError(f"unknown backend {name!r}; valid: {', '.join(sorted(backends))}")
    return backends[name]


def make(name: str, options: dict | None = None) -> Backend:
    """Instantiate a backend with validated run-file options (unknown keys are errors)."""
    cls = get(name)
    return cls(parse_options(cls, options or {}))
