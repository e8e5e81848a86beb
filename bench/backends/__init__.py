"""Backends: one file per device family, each `@register("name")`; see base.py for the seam."""

from bench.backends.base import Backend, DeviceInfo, MemoryStats, Sampler, Timer, discover, get, make, register

__all__ = ["Backend", "DeviceInfo", "MemoryStats", "Sampler", "Timer", "discover", "get", "make", "register"]
