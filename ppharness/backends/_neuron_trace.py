"""Neuron inference for the neuron-xla backend: prefill and decode through `torch_neuronx.trace`
(§1 and §9.5 of neuron.md), with the static KV cache as aliased state.

The shared workload writes its KV cache in place (workload.KVCache, buffers). A traced graph
must be functional and buffers cannot be aliased (torch-neuronx matches `input_output_aliases`
keys against `func.named_parameters()` by data_ptr, §1), so `TraceableLM` swaps each layer's
cache for an `AliasedKVCache`: K and V are `nn.Parameter(requires_grad=False)`, `update` is out
of place, and the graph returns the updated K/V as extra outputs mapped back onto those
Parameters by `input_output_aliases` (what NxDI does: aliases[kv[i]] = num_outputs + i).
Aliasing alone does not put that state on the device: torch-neuronx's traced module passes its
alias states on each call and they are CPU Parameters until `move_trace_to_device` moves them
(neuron-audit.md 1), which the backend does after tracing or loading each graph (neuron_xla.py).

One trace per prompt bucket (a prompt is right-padded to the smallest bucket that holds it;
causal attention keeps the real positions exact) and one trace per decode step shape. A traced
module takes CPU tensors and returns CPU tensors; each call is blocking and includes the
host<->device transfers (§1 "Synchronous or not"), which the record states.

Without torch_neuronx (the CPU PJRT test lane) the same `TraceableLM` runs as XLA lazy tensors,
with the alias write-back done by a copy: the graph and its aliasing contract are exercised,
only the Neuron compiler is missing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ppharness.errors import BenchError

# compile_fn(module, example_inputs, aliases, tag) -> callable returning the graph's outputs
CompileFn = Callable[[nn.Module, tuple, dict, str], Callable[..., Any]]


class AliasedKVCache(nn.Module):
    """A drop-in for workload.KVCache whose state is Parameters and whose update is functional."""

    def __init__(self, k: Tensor, v: Tensor):
        super().__init__()
        self.k = nn.Parameter(k, requires_grad=False)  # (B, KV, S, hd)
        self.v = nn.Parameter(v, requires_grad=False)
        self.new_k: Tensor | None = None
        self.new_v: Tensor | None = None

    def update(self, pos: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        # Out of place: the graph returns new_k/new_v and the runtime writes them over k/v.
        self.new_k = self.k.index_copy(2, pos, k)  # (B, KV, S, hd)
        self.new_v = self.v.index_copy(2, pos, v)
        return self.new_k, self.new_v


class TraceableLM(nn.Module):
    """(tokens, pos, last) -> (logits at `last` (B, 1, V), K of every layer..., V of every layer...).

    `last` (1,) selects the one position the step reads, so only (B, 1, V) logits cross back to
    the host. Existing cache contents (a decode's prefilled prompt) are carried over."""

    def __init__(self, model: nn.Module, cache_len: int):
        super().__init__()
        self.model = model
        self.caches: list[AliasedKVCache] = []
        for layer in model.layers:
            old = layer.attention.cache  # workload.KVCache: k, v (B, KV, S0, hd)
            B, KV, S0, hd = old.k.shape
            k, v = old.k.new_zeros(B, KV, cache_len, hd), old.v.new_zeros(B, KV, cache_len, hd)
            keep = min(S0, cache_len)
            k[:, :, :keep], v[:, :, :keep] = old.k[:, :, :keep], old.v[:, :, :keep]
            layer.attention.cache = AliasedKVCache(k, v)
            self.caches.append(layer.attention.cache)
        model.cache_len = cache_len  # the decode mask spans the whole static cache

    def forward(self, tokens: Tensor, pos: Tensor, last: Tensor) -> tuple[Tensor, ...]:
        logits = self.model(tokens, pos, at=last)  # (B, 1, V): the head at `last` only
        return (logits, *(c.new_k for c in self.caches), *(c.new_v for c in self.caches))

    def aliases(self) -> dict[nn.Parameter, int]:
        """input_output_aliases: each cache Parameter -> the output index of its update (§1)."""
        n = len(self.caches)
        return {
            **{c.k: 1 + i for i, c in enumerate(self.caches)},
            **{c.v: 1 + n + i for i, c in enumerate(self.caches)},
        }

    @torch.no_grad()
    def write_back(self, outputs: Sequence[Tensor]) -> None:
        """The aliasing done by hand (lazy-tensor path): updated K/V become the state."""
        for param, index in self.aliases().items():
            param.copy_(outputs[index])


def first_output(out: Any) -> Tensor:
    """The logits, whether the compiled graph returns every output or drops the aliased ones."""
    return out[0] if isinstance(out, (tuple, list)) else out


def bucket_for(prompt_len: int, buckets: Sequence[int], max_len: int) -> int:
    """The smallest configured bucket that holds the prompt (no buckets: the prompt length)."""
    fits = sorted(b for b in buckets if b >= prompt_len)
    if buckets and not fits:
        raise BenchError(f"prompt_len {prompt_len} exceeds the largest prefill bucket {max(buckets)}")
    bucket = fits[0] if fits else prompt_len
    if bucket > max_len:
        raise BenchError(f"prefill bucket {bucket} exceeds the model's max_seq_len {max_len}")
    return bucket


class Prefill:
    """The prepared prefill: pad to the bucket, run the compiled graph, return (B, 1, V) logits."""

    def __init__(self, fn: Callable, prompt_len: int, bucket: int, device: torch.device):
        self.fn, self.prompt_len, self.bucket = fn, prompt_len, bucket
        self.pos = torch.arange(bucket, device=device)  # (bucket,)
        self.last = torch.tensor([prompt_len - 1], device=device)  # the last real prompt token

    def __call__(self, tokens: Tensor, pos: Tensor, last_only: bool = True) -> Tensor:
        if not last_only:  # the graph computes the head at the last real prompt token only
            raise ValueError("a traced prefill returns the last prompt position's logits only")
        if tokens.shape[1] != self.prompt_len:  # a traced graph has fixed shapes (§1 Restrictions)
            raise ValueError(f"prompt of length {tokens.shape[1]} given to a graph prepared for {self.prompt_len}")
        if self.bucket > self.prompt_len:  # right padding: causal attention keeps positions < P exact
            tokens, pos = F.pad(tokens, (0, self.bucket - self.prompt_len)), self.pos
        return first_output(self.fn(tokens, pos, self.last))


class Decode:
    """The prepared decode step: one token per sequence against the on-device cache."""

    def __init__(self, fn: Callable, device: torch.device):
        self.fn = fn
        self.last = torch.zeros(1, dtype=torch.long, device=device)

    def __call__(self, tokens: Tensor, pos: Tensor) -> Tensor:
        return first_output(self.fn(tokens, pos, self.last))


def prepare_inference(module: nn.Module, example_inputs: tuple, scenario: str, buckets: Sequence[int],
                      compile_fn: CompileFn) -> Callable:  # fmt: skip
    """check: the plain forward; prefill: one graph for the prompt's bucket; decode: one graph."""
    if scenario == "check":
        return compile_fn(module, example_inputs, {}, "check")
    tokens, pos = example_inputs  # (B, T), (T,)
    B, T = tokens.shape
    dev = tokens.device
    if scenario == "prefill":
        bucket = bucket_for(T, buckets, module.cfg.max_seq_len)
        lm = TraceableLM(module, max(bucket, module.cache_len))
        example = (F.pad(tokens, (0, bucket - T)), torch.arange(bucket, device=dev), torch.tensor([T - 1], device=dev))
        return Prefill(compile_fn(lm, example, lm.aliases(), f"prefill-b{B}-s{bucket}"), T, bucket, dev)
    if scenario == "decode":
        lm = TraceableLM(module, module.cache_len)
        example = (tokens, pos, torch.zeros(1, dtype=torch.long, device=dev))
        return Decode(compile_fn(lm, example, lm.aliases(), f"decode-b{B}-s{module.cache_len}"), dev)
    raise BenchError(f"no Neuron inference path for scenario {scenario!r}")


def lazy_compile_fn(module: nn.Module, example_inputs: tuple, aliases: dict, tag: str) -> Callable:
    """The CPU-lane stand-in for trace: run the module as XLA lazy tensors and apply the
    aliasing by copy; the graph is compiled by XLA at the step's sync, like training."""

    def run(*inputs: Tensor) -> Any:
        out = module(*inputs)
        if isinstance(module, TraceableLM):
            module.write_back(out)
        return out

    return run
