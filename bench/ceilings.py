"""The device's own measured ceilings: dense GEMM TFLOP/s and copy GB/s.

Vendor peaks exist for GPUs and NeuronCores but not for a CPU host, and even on accelerators the
achievable figure is what a row should be held against. So each (host, device, dtype) measures
its ceilings once through the backend seam and caches them in ~/.cache/ppbench/ceilings.json
(or $PPBENCH_CACHE_DIR); `metrics.ceiling_fraction` divides by them.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import socket
import warnings
from pathlib import Path

import torch

from bench.backends.base import DTYPES, Backend


def cache_path() -> Path:
    root = os.environ.get("PPBENCH_CACHE_DIR") or Path.home() / ".cache" / "ppbench"
    return Path(root) / "ceilings.json"


VERSION = 3  # bump when what is measured changes: older cache entries are then re-measured


def get_ceilings(backend: Backend, dtype: str, device_name: str) -> dict:
    """Cached ceilings for this host, device and dtype; measured on first use."""
    key = "|".join(
        [f"v{VERSION}", socket.gethostname(), backend.name, device_name, dtype, torch.__version__,
         str(torch.get_num_threads())]
    )  # fmt: skip
    path = cache_path()
    cache = _read(path)
    if key in _UNCACHED:  # measured already by this process, with a cache it could not write
        return {**_UNCACHED[key], "cached": False}
    if _usable(cache.get(key)):
        return {**cache[key], "cached": True}
    if key in cache:
        _say_once(f"ceilings cache {path}: a damaged entry for this device ({_what(cache[key])}) is re-measured")
    entry = measure_ceilings(backend, dtype)
    cache[key] = entry
    _save(path, cache, key, entry)
    return {**entry, "cached": False}


# --- the cache file: any damage (not a folder, read-only, zeros, strings) is re-measured or bypassed
REQUIRED = ("gemm_tflops", "mem_gbps")  # what metrics.ceiling_fraction divides by
_UNCACHED: dict[str, dict] = {}  # key -> entry this process measured but could not cache
_SAID: set[str] = set()


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError, RecursionError):
        return {}  # a missing or damaged cache is simply re-measured


def _usable(entry: object) -> bool:
    """An entry a ceiling fraction can divide by: a mapping whose ceilings are finite numbers > 0."""
    if not isinstance(entry, dict):
        return False
    for k in REQUIRED:
        v = entry.get(k)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not (0 < v < float("inf")):
            return False
    return True


def _what(entry: object) -> str:
    if not isinstance(entry, dict):
        return f"a {type(entry).__name__}, not a mapping"
    return ", ".join(f"{k}={entry.get(k)!r}"[:60] for k in REQUIRED)


def _save(path: Path, cache: dict, key: str, entry: dict) -> None:
    """Write the cache atomically; if it cannot be written (its folder is a file or read-only, the
    disk is full), say so once and keep the entry in memory: the run measures without caching."""
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(cache, indent=1))
        tmp.replace(path)  # atomic: concurrent runs never see a torn file
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        _UNCACHED[key] = entry
        _say_once(f"ceilings cache {path} cannot be written ({exc.strerror or exc}): measuring without caching")


def _say_once(message: str) -> None:
    if message not in _SAID:
        _SAID.add(message)
        warnings.warn(message, stacklevel=3)


def measure_ceilings(backend: Backend, dtype: str, reps: int = 5) -> dict:
    """Best of `reps` timed runs (after one warm-up) of a square GEMM and, each far larger than
    any cache, a copy, a read (a sum) and an add (y += x)."""
    dev, tdtype = backend.device, DTYPES[dtype]
    backend.set_precision(dtype)
    n = 2048 if dev.type == "cpu" else 8192  # big enough to reach the plateau on each kind
    nbytes = (256 if dev.type == "cpu" else 2048) * 2**20  # well beyond any last-level cache
    gemm_s = _best(backend, _gemm(n, dev, tdtype), reps)
    copy_s = _best(backend, _copy(nbytes, dev), reps)
    read_s = _best(backend, _read_all(nbytes, dev), reps)
    add_s = _best(backend, _add(nbytes, dev), reps)
    backend.release_memory()
    copy_gbps, read_gbps = 2 * nbytes / copy_s / 1e9, nbytes / read_s / 1e9  # copy: read + write
    add_gbps = 3 * nbytes / add_s / 1e9  # y += x: two reads, one write (STREAM's "add")
    return {
        "gemm_tflops": 2 * n**3 / gemm_s / 1e12,
        "gemm_n": n,
        "copy_gbps": copy_gbps,
        "read_gbps": read_gbps,
        "add_gbps": add_gbps,
        # The memory ceiling, STREAM-style: the best of the three. Streams with several inputs
        # (AdamW, decode's weights plus cache) run faster than a 1:1 copy on many hosts.
        "mem_gbps": max(copy_gbps, read_gbps, add_gbps),
        "copy_bytes": nbytes,
        "measured_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def _gemm(n: int, dev: torch.device, dtype: torch.dtype):
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(dev, dtype)
    b = torch.randn(n, n, generator=gen).to(dev, dtype)
    return lambda: torch.mm(a, b)


def _copy(nbytes: int, dev: torch.device):
    src = torch.ones(nbytes // 4, dtype=torch.float32).to(dev)
    dst = torch.empty_like(src)
    return lambda: dst.copy_(src)


def _read_all(nbytes: int, dev: torch.device):
    src = torch.ones(nbytes // 4, dtype=torch.float32).to(dev)
    return lambda: src.sum()  # reads every byte once; the result is one number


def _add(nbytes: int, dev: torch.device):
    x = torch.ones(nbytes // 4, dtype=torch.float32).to(dev)
    y = torch.ones_like(x)
    return lambda: y.add_(x)


def _best(backend: Backend, fn, reps: int) -> float:
    fn()  # warm-up: allocation, kernel selection
    times = []
    for _ in range(reps):
        with backend.timer() as t:
            out = fn()  # kept alive until the timer synchronizes: a dropped lazy (XLA) result never runs
        del out
        times.append(t.elapsed_s)
    return min(times)
