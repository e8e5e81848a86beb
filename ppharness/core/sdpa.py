"""Which scaled-dot-product-attention kernel a step really ran, read from torch's profiler.

torch picks an SDPA kernel (flash, cuDNN, memory-efficient, or the math fallback) per call from
the tensors' shapes, layouts, dtypes and masks and from a process-wide priority order; a
compiled graph fixes the choice when it is traced. Asking the dispatcher about stand-in tensors
(ppharness.core.workload.attention_kernel) predicts it; this module observes it: one more call
of the measured step under torch.profiler, and the SDPA op (eager, compiled without graphs) or
device kernel (CUDA graph replays, where no host op runs) it shows.

What each kernel looks like to the profiler (torch 2.9-2.13: aten/src/ATen/native/transformers/):
- ops: aten::_scaled_dot_product_{flash_attention[_for_cpu], cudnn_attention,
  efficient_attention}; the math fallback is aten::_scaled_dot_product_attention_math, which a
  compiler decomposes into matmuls and a softmax, so under torch.compile math leaves no name;
- kernels: flash's `flash_fwd...`, the memory-efficient CUTLASS kernels `fmha_cutlassF...`,
  cuDNN's generated SDPA engines (`cudnn_generated...sdpa...`, `...fmha...` with `cudnn`).
Nothing is inferred from absence: when no SDPA op or kernel shows, `sdpa_ran` is None with why.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from torch.profiler import ProfilerActivity, profile

# (kernel name, pattern) in the order they are tried: ops first (exact), then device kernels.
_OPS = (
    ("cudnn_attention", re.compile(r"^aten::_scaled_dot_product_cudnn_attention\b")),
    ("flash_attention", re.compile(r"^aten::_scaled_dot_product_flash_attention(_for_cpu)?\b")),
    ("efficient_attention", re.compile(r"^aten::_scaled_dot_product_efficient_attention\b")),
    ("math", re.compile(r"^aten::_scaled_dot_product_attention_math\b")),
)
_KERNELS = (
    ("cudnn_attention", re.compile(r"cudnn.*(sdpa|fmha|fprop|attn)", re.IGNORECASE)),
    ("flash_attention", re.compile(r"flash_fwd|flash::", re.IGNORECASE)),
    ("efficient_attention", re.compile(r"fmha_cutlass|fmha.*cutlass|attention_kernel_batched", re.IGNORECASE)),
)


def classify(op_names: Iterable[str], kernel_names: Iterable[str] = ()) -> tuple[str | None, str]:
    """(the SDPA kernel, what showed it) from profiler event names; (None, why) when none did."""
    ops, kernels = set(op_names), set(kernel_names)
    for name, pattern in _OPS:
        seen = sorted(n for n in ops if pattern.search(n))
        if seen:
            return name, f"op {seen[0]}"
    for name, pattern in _KERNELS:
        seen = sorted(n for n in kernels if pattern.search(n))
        if seen:
            return name, f"kernel {seen[0][:120]}"
    if not ops and not kernels:
        return None, "the profiler recorded nothing"
    return None, (
        f"no SDPA op or kernel among {len(ops)} op(s) and {len(kernels)} kernel(s): a compiled math path, "
        "or graph replays whose kernels the profiler does not list"
    )


@contextlib.contextmanager
def _without_profiler_chatter() -> Iterator[None]:
    """torch's profiler library (kineto) writes `USDT: ... profiler_start` and `profiler_stop` to
    the process's stderr from C++ at every start and stop, below Python's sys.stderr, into every
    run's output. For the span of one profiled step fd 2 goes to a temporary file; those lines are
    dropped and anything else written there meanwhile is passed on."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no fd 2 to redirect: leave the output as it is
        yield
        return
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            kept = [line for line in held.read().decode(errors="replace").splitlines(keepends=True)
                    if not line.startswith("USDT:")]  # fmt: skip
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


def observe(step: Callable[[], Any], synchronize: Callable[[], None], device_kernels: bool) -> dict[str, Any]:
    """One call of `step` under torch.profiler: {"sdpa_ran": name or None, "sdpa_seen": what
    showed it (or why nothing did)}. `device_kernels` adds the CUDA activity (kernels of graph
    replays too, where CUPTI lists them). A profiler that fails says so instead of raising."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device_kernels else [])
    try:
        synchronize()
        with _without_profiler_chatter(), profile(activities=activities) as prof:
            step()
            synchronize()
        ops, kernels = set(), set()
        for event in prof.events():
            device = str(getattr(event, "device_type", "")).rsplit(".", 1)[-1]
            (kernels if device == "CUDA" else ops).add(event.name)
    except Exception as exc:  # noqa: BLE001 - an unobservable kernel is a fact, never a failed case
        return {"sdpa_ran": None, "sdpa_seen": f"profiler failed: {type(exc).__name__}: {str(exc)[:200]}"}
    name, seen = classify(ops, kernels)
    return {"sdpa_ran": name, "sdpa_seen": seen}
