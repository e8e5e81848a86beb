"""The device's own measured ceilings: dense GEMM TFLOP/s and memory GB/s, the host's best.

Vendor peaks exist for GPUs and NeuronCores but not for a CPU host, and even on accelerators the
achievable figure is what a row should be held against. So each (host, device, dtype) measures
its ceilings through the backend seam and caches them in ~/.cache/ppbench/ceilings.json (or
$PPBENCH_CACHE_DIR); `metrics.ceiling_fraction` divides by them. A ceiling too low would inflate
every later fraction, so:

- it is the best of TRIALS trials, each the best of `reps` timed runs of every kernel, after
  WARM_S of back-to-back GEMMs on an accelerator so its clocks are up;
- each trial is watched like a measured window (ppharness/core/guards.py: the backend's monitor and other
  processes' share of the host CPU); a trial that saw interference does not count, and when none
  was clean the figures are used for this run but never cached (`cached: false`,
  `interference` says what was seen), so the next run measures again;
- on a CPU the GEMM ceiling is the best of the BLAS libraries at hand: torch.mm (MKL or
  OpenBLAS, as torch was built) and, in float32 with torch on every core, numpy's matmul (its own
  BLAS, often OpenBLAS); `gemm_source` says which set it, `gemm_by_source` keeps each;
- each entry says when it was measured and with what (`measured_at`, `versions`); `ppbench
  ceilings` shows the cache and `--remeasure` measures again.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import socket
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import ppharness
from ppharness import errors, paths
from ppharness.core import guards, timing
from ppharness.core.device import DTYPES, Backend


def cache_path() -> Path:
    return paths.cache_dir() / "ceilings.json"


VERSION = 5  # bump when what is measured changes: older cache entries are then re-measured (5: clocks warmed)
TRIALS = 3  # the ceiling is the best of this many trials
# Seconds of back-to-back GEMMs before the first timed one on an accelerator: a GPU idles at a few
# hundred MHz (an H200 here read 345 MHz idle, 1980 MHz after matrix products) and a GEMM ceiling
# timed from a cold start would be set low, inflating every later ceiling_fraction.
WARM_S = 1.0
# A ceiling is cached for every later run, so only a trial this quiet may set it, whatever threshold
# the measuring run relaxed to (`timing.max_other_cpu`): a run may accept a noisy host for its own
# rows, never for every later run's ceiling_fraction.
CACHE_MAX_OTHER_CPU = 0.25


def cache_key(backend: Backend, dtype: str, device_name: str) -> str:
    return "|".join(
        [f"v{VERSION}", socket.gethostname(), backend.name, device_name, dtype, torch.__version__,
         str(torch.get_num_threads())]
    )  # fmt: skip


def get_ceilings(
    backend: Backend, dtype: str, device_name: str, max_other_cpu: float | None = None, remeasure: bool = False
) -> dict:
    """Cached ceilings for this host, device and dtype; measured on first use (or `remeasure`)
    and cached only when at least one trial was free of interference (`max_other_cpu`: the
    threshold of ppharness/core/guards.py; None: the timing protocol's default)."""
    key = cache_key(backend, dtype, device_name)
    path = cache_path()
    cache = read_cache(path)
    if key in _UNCACHED and not remeasure:  # measured already by this process, with a cache it could not write
        return {**_UNCACHED[key], "cached": False}
    if _usable(cache.get(key)) and not remeasure:
        return {**cache[key], "cached": True}
    if key in cache and not remeasure:
        _say_once(f"ceilings cache {path}: a damaged entry for this device ({_what(cache[key])}) is re-measured")
    limit = {} if max_other_cpu is None else {"max_other_cpu": max_other_cpu}
    entry = measure_ceilings(backend, dtype, **limit)
    if entry.get("interference") or not entry.get("cacheable_trials", 1):  # used once, never cached
        return {**entry, "cached": False}
    cache = read_cache(path)  # another run may have written meanwhile
    cache[key] = entry
    _save(path, cache, key, entry)
    return {**entry, "cached": False}


# --- the cache file: any damage (not a folder, read-only, zeros, strings) is re-measured or bypassed
REQUIRED = ("gemm_tflops", "mem_gbps")  # what metrics.ceiling_fraction divides by
_UNCACHED: dict[str, dict] = {}  # key -> entry this process measured but could not cache
_SAID: set[str] = set()


def read_cache(path: Path | None = None) -> dict:
    """The cache file as {key: entry}; a missing or damaged one is empty (simply re-measured). One
    larger than MAX_JSON_BYTES is no cache of ours (a few KiB): BenchError, before a run measures
    anything (check_cache), rather than read whole or overwritten."""
    path = path or cache_path()
    if not path.is_file():
        return {}  # none yet (or a folder: _save says so once)
    try:
        data = json.loads(errors.read_bounded(path, "ceilings cache", errors.MAX_JSON_BYTES))
        return data if isinstance(data, dict) else {}
    except errors.BenchError as exc:
        if "larger than" in str(exc):
            raise errors.BenchError(f"{exc} (delete it: the ceilings are measured again)") from None
        return {}  # unreadable, not UTF-8: re-measured
    except (ValueError, RecursionError):
        return {}  # a damaged cache is simply re-measured


def check_cache() -> None:
    """Refuse a run before it measures anything when the ceilings cache is too large to be ours."""
    read_cache()


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


def cache_frame(cache: dict):
    """The cache as a display table (strings), one row per host, device, dtype and threads."""
    rows = []
    for key, e in sorted(cache.items()):
        parts = key.split("|")
        if len(parts) != 7 or not isinstance(e, dict):
            continue  # not an entry this version wrote
        ver, host, backend, device, dtype, torch_v, threads = parts
        trials = f"{e['clean_trials']}/{e['trials']} clean" if "trials" in e else "1 (before v4)"
        rows.append({
            "host": host, "backend": backend, "device": device, "dtype": dtype, "threads": threads,
            "GEMM TFLOP/s": f"{e.get('gemm_tflops', float('nan')):.3f}", "GEMM set by": e.get("gemm_source", "torch"),
            "mem GB/s": f"{e.get('mem_gbps', float('nan')):.1f}", "trials": trials,
            "measured at": e.get("measured_at", ""), "with": f"torch {torch_v}, cache {ver}",
        })  # fmt: skip
    return pd.DataFrame(rows)


def measure_ceilings(
    backend: Backend,
    dtype: str,
    reps: int = 5,
    trials: int = TRIALS,
    max_other_cpu: float | None = None,
    warm_s: float | None = None,
) -> dict:
    """The best over `trials` clean trials (all trials if none was clean, then with
    `interference`) of: a square GEMM per BLAS library at hand and, each far larger than any
    cache, a copy, a read (a sum) and an add (y += x); each kernel the best of `reps` runs.
    `warm_s` of GEMMs come first (None: WARM_S on an accelerator, none on a CPU)."""
    limit = timing.MAX_OTHER_CPU if max_other_cpu is None else max_other_cpu
    dev, tdtype = backend.device, DTYPES[dtype]
    backend.set_precision(dtype)
    n = 2048 if dev.type == "cpu" else 8192  # big enough to reach the plateau on each kind
    nbytes = (256 if dev.type == "cpu" else 2048) * 2**20  # well beyond any last-level cache
    # name -> a factory of the timed callable: one kernel's buffers are alive at a time
    kernels = {f"gemm:{name}": make for name, make in _gemms(n, dev, tdtype, dtype).items()}  # "gemm:numpy (...)"
    kernels.update(copy=lambda: _copy(nbytes, dev), read=lambda: _read_all(nbytes, dev), add=lambda: _add(nbytes, dev))
    warm_s = (0.0 if dev.type == "cpu" else WARM_S) if warm_s is None else warm_s
    warmed = _warm(backend, next(iter(kernels.values()))(), warm_s) if warm_s > 0 else 0
    done: list[tuple[dict[str, float], guards.Interference]] = []
    for _ in range(trials):
        watch = guards.Watch([backend.monitor(), guards.HostCPUMonitor(limit)])
        watch.start()
        times = {name: _best(backend, make(), reps) for name, make in kernels.items()}
        done.append((times, watch.stop()))
    backend.release_memory()
    clean = [t for t, found in done if not found.invalid]
    best = {name: min(t[name] for t in clean or [t for t, _ in done]) for name in done[0][0]}
    entry = _entry(best, n, nbytes, trials, len(clean))
    entry["warm"] = {"seconds": warm_s, "gemms": warmed}
    # trials quiet enough to cache from (unknown host accounting, e.g. off Linux: as before, clean)
    fracs = [found.detail.get("other_cpu_fraction") for t, found in done if not found.invalid]
    entry["cacheable_trials"] = sum(f is None or f <= CACHE_MAX_OTHER_CPU for f in fracs)
    if not clean:  # every trial saw interference: what it saw (ppharness.core.ceilings.get_ceilings won't cache)
        entry["interference"] = [{**found.detail, "invalid": found.invalid} for _, found in done]
    return entry


def _entry(best: dict[str, float], n: int, nbytes: int, trials: int, clean: int) -> dict:
    gemm = {name.split(":", 1)[1]: 2 * n**3 / s / 1e12 for name, s in best.items() if name.startswith("gemm:")}
    source = max(gemm, key=gemm.get)
    copy_gbps, read_gbps = 2 * nbytes / best["copy"] / 1e9, nbytes / best["read"] / 1e9  # copy: read + write
    add_gbps = 3 * nbytes / best["add"] / 1e9  # y += x: two reads, one write (STREAM's "add")
    return {
        "gemm_tflops": gemm[source],
        "gemm_source": source,  # the BLAS library that set the GEMM ceiling
        "gemm_by_source": gemm,
        "gemm_n": n,
        "copy_gbps": copy_gbps,
        "read_gbps": read_gbps,
        "add_gbps": add_gbps,
        # The memory ceiling, STREAM-style: the best of the three. Streams with several inputs
        # (AdamW, decode's weights plus cache) run faster than a 1:1 copy on many hosts.
        "mem_gbps": max(copy_gbps, read_gbps, add_gbps),
        "copy_bytes": nbytes,
        "trials": trials,
        "clean_trials": clean,
        "measured_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": versions(),
    }


def versions() -> dict:
    """What a ceiling was measured with: the harness, torch and numpy with their BLAS, threads."""
    return {
        "ppbench": ppharness.__version__,
        "ceilings": VERSION,
        "torch": torch.__version__,
        "torch_blas": _torch_blas(),
        "torch_threads": torch.get_num_threads(),
        "numpy": np.__version__,
        "numpy_blas": _numpy_blas(),
        "cpus": os.cpu_count(),
    }


def _torch_blas() -> str:
    """torch's CPU BLAS, from its build configuration (e.g. "MKL", "OpenBLAS")."""
    for line in torch.__config__.show().splitlines():
        if "BLAS_INFO=" in line:
            return line.split("BLAS_INFO=", 1)[1].split(",", 1)[0].strip() or "unknown"
    return "MKL" if torch.backends.mkl.is_available() else "unknown"


def _numpy_blas() -> str:
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return f"{blas.get('name', '?')} {blas.get('version', '')}".strip()
    except (TypeError, KeyError, AttributeError):  # numpy < 1.26 has no mode="dicts"
        return "unknown"


def _gemms(n: int, dev: torch.device, dtype: torch.dtype, name: str) -> dict:
    """A factory of a square GEMM per BLAS library at hand: torch's always; on a CPU in float32, numpy's too,
    when torch uses every core as numpy's BLAS does (a fair race: the same cores)."""
    out = {f"torch ({_torch_blas()})" if dev.type == "cpu" else "torch": lambda: _gemm(n, dev, dtype)}
    if dev.type == "cpu" and name == "float32" and torch.get_num_threads() >= (os.cpu_count() or 1):
        out[f"numpy ({_numpy_blas()})"] = lambda: _numpy_gemm(n)
    return out


def _numpy_gemm(n: int):
    gen = np.random.default_rng(0)
    a, b = gen.standard_normal((n, n), dtype=np.float32), gen.standard_normal((n, n), dtype=np.float32)
    return lambda: torch.from_numpy(a @ b)


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


def _warm(backend: Backend, fn, seconds: float) -> int:
    """Run `fn` back to back for `seconds` of wall time (a wait every 8 calls, so the queue never
    runs dry nor far ahead); returns the calls made."""
    calls, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(8):
            fn()
        backend.synchronize()
        calls += 8
    return calls


def _best(backend: Backend, fn, reps: int) -> float:
    fn()  # warm-up: allocation, kernel selection
    times = []
    for _ in range(reps):
        with backend.timer() as t:
            out = fn()  # kept alive until the timer synchronizes: a dropped lazy (XLA) result never runs
        del out
        times.append(t.elapsed_s)
    return min(times)
