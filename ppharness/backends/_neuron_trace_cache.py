"""Compile once: traced Neuron graphs saved with `torch.jit.save` and loaded in later processes.

torch-neuronx's traced graphs (weights inlined as constants) are not kept in Neuron's persistent
compile cache ("traced graphs with frozen weights/parameters are not cached", SDK
about-neuron/arch/neuron-features/neuron-caching.rst), so without this every process recompiles
every graph: 24 per-core processes x 9 graphs on inf2.48xlarge (audit 9). The trace API documents
the round trip: `torch.jit.save(trace, path)`, then `torch.jit.load(path)` gives a model that runs
"like a normally traced model" (SDK frameworks/torch/torch-neuronx/api-reference-guide/inference/
api-torch-neuronx-trace.rst).

A graph is stored under a key of everything that changes what it computes or how it was compiled:
its tag (prefill-b2-s128, ...), the module's structure, the name, shape, dtype and content of every
parameter and buffer (weights and the KV-cache state the graph starts from), the example inputs'
shapes and dtypes, the input/output aliases, the compiler flags, and the torch-neuronx and
neuronx-cc versions. A file is written under a temporary name and renamed, so per-core processes
that compile the same graph at once never read a half-written file.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

DEFAULT_DIR = "/var/tmp/ppbench-trace-cache"


def _digest(t: torch.Tensor) -> str:
    data = t.detach().cpu().contiguous().reshape(-1)
    raw = data.view(torch.uint8) if data.numel() else data
    return hashlib.sha256(raw.numpy().tobytes() if raw.numel() else b"").hexdigest()


def graph_key(module: nn.Module, example: tuple, aliases: dict, tag: str, flags: list[str],
              versions: dict[str, str]) -> str:  # fmt: skip
    """A hex key that changes whenever the traced graph or its compilation could."""
    h = hashlib.sha256()
    index = {id(p): i for i, (_, p) in enumerate(module.named_parameters())}

    def put(*parts: Any) -> None:
        for part in parts:
            h.update(repr(part).encode())
            h.update(b"\0")

    put("ppbench-trace-v1", tag, type(module).__qualname__, str(module), list(flags), sorted(versions.items()))
    put([(tuple(t.shape), str(t.dtype)) for t in example])
    put(sorted((index.get(id(p), -1), i) for p, i in aliases.items()))
    for name, t in [*module.named_parameters(), *module.named_buffers()]:
        put(name, tuple(t.shape), str(t.dtype), _digest(t))
    return h.hexdigest()[:32]


@dataclass
class Loaded:
    graph: Any | None  # the loaded ScriptModule, or None (not cached, or unreadable)
    load_s: float = 0.0
    error: str = ""


class TraceCache:
    """Save and load traced graphs under `root`; `root` "" turns the cache off."""

    def __init__(self, root: str):
        self.root = Path(root) if root else None

    def path(self, tag: str, key: str) -> Path | None:
        return self.root / f"{tag}-{key}.pt" if self.root else None

    def load(self, tag: str, key: str) -> Loaded:
        path = self.path(tag, key)
        if path is None or not path.is_file():
            return Loaded(None)
        t0 = time.perf_counter()
        try:
            graph = torch.jit.load(str(path))
        except Exception as exc:  # noqa: BLE001 - a damaged file means compiling again, not failing
            return Loaded(None, time.perf_counter() - t0, f"{type(exc).__name__}: {str(exc)[:100]}")
        return Loaded(graph, time.perf_counter() - t0)

    def save(self, tag: str, key: str, graph: Any) -> str:
        """Write the graph; returns "" or why it was not saved (never raises: the run goes on)."""
        path = self.path(tag, key)
        if path is None:
            return "trace cache off"
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.jit.save(graph, str(tmp))
            os.replace(tmp, path)
        except Exception as exc:  # noqa: BLE001
            tmp.unlink(missing_ok=True)
            return f"not saved: {type(exc).__name__}: {str(exc)[:100]}"
        return ""
