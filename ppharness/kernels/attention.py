"""Attention: causal prefill over the prompt, and one decode token against a full KV cache.

Math (per batch b and query head h, with grouped-query K/V head h // (H/KV)):
    O = softmax(Q K^T / sqrt(hd) + mask) V,   Q (Sq, hd), K and V (Sk, hd)
    FLOPs  = 4*B*H*hd*P, P = attended (query, key) pairs: Sq*(Sq+1)/2 causal with Sq = Sk
             (prefill), Sq*Sk otherwise (decode: Sq = 1, Sk = the cache length). Two matmuls
             (Q K^T and P V) at 2 FLOPs per multiply-add; softmax exponentials are not counted,
             the convention of FlashAttention's benchmarks and the anchors (attention 4*B*H*Sq*Sk*D,
             halved when causal). `flops_dense` (4*B*H*Sq*Sk*hd, no causal discount) is what
             FlopCounterMode reports for the math path.
    bytes >= (2*B*H*Sq*hd + 2*B*KV*Sk*hd) * element   (Q and O; K and V, each read once)
Prefill is compute-bound (intensity grows with the sequence); decode is memory-bound: every byte
of the KV cache is read for a single query row per head.

Variants: `sdpa` is F.scaled_dot_product_attention with enable_gqa, as the workload calls it for
training and prefill (the backend picks flash/efficient/math); decode here is that unmasked grouped
call, while the workload's decode masks its static cache and packs query heads by KV group
(ppharness/core/workload.py). `math` materialises the scores, as the reference does.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ppharness.kernels import Cost, Geometry, Kernel, Shape, element_size, kernel, randn


def math_attention(q: Tensor, k: Tensor, v: Tensor, causal: bool) -> Tensor:
    """Scores materialised, softmax in float32, GQA by repeating K/V heads."""
    H, KV, hd = q.shape[1], k.shape[1], q.shape[-1]
    k = k.repeat_interleave(H // KV, dim=1)  # (B, H, Sk, hd)
    v = v.repeat_interleave(H // KV, dim=1)
    scores = (q @ k.transpose(-2, -1)).float() * hd**-0.5  # (B, H, Sq, Sk)
    if causal:
        Sq, Sk = scores.shape[-2:]
        keep = torch.ones(Sq, Sk, dtype=torch.bool, device=q.device).tril(Sk - Sq)  # (Sq, Sk)
        scores = scores.masked_fill(~keep, float("-inf"))
    return scores.softmax(-1).to(v.dtype) @ v  # (B, H, Sq, hd)


@kernel("attention")
class Attention(Kernel):
    compile_variant = "math"  # compiling sdpa only wraps the same library kernel

    def shapes(self, geo: Geometry) -> list[Shape]:
        m = geo.model
        heads = {"B": geo.batch, "H": m.n_heads, "KV": m.n_kv_heads, "hd": m.head_dim}
        return [
            Shape("prefill", {**heads, "Sq": geo.seq_len, "Sk": geo.seq_len, "causal": 1}, "compute", geo.tokens),
            Shape("decode", {**heads, "Sq": 1, "Sk": geo.seq_len, "causal": 0}, "memory", geo.batch),
        ]

    def make_inputs(self, shape: Shape, dtype: str, seed: int) -> tuple[Tensor, Tensor, Tensor]:
        d = shape.dims
        gen = torch.Generator().manual_seed(seed)
        q = randn((d["B"], d["H"], d["Sq"], d["hd"]), gen, dtype)  # (B, H, Sq, hd)
        k = randn((d["B"], d["KV"], d["Sk"], d["hd"]), gen, dtype)  # (B, KV, Sk, hd)
        v = randn((d["B"], d["KV"], d["Sk"], d["hd"]), gen, dtype)
        return q, k, v

    def cost(self, shape: Shape, dtype: str) -> Cost:
        d = shape.dims
        B, H, KV, Sq, Sk, hd = d["B"], d["H"], d["KV"], d["Sq"], d["Sk"], d["hd"]
        pairs = Sq * (Sq + 1) / 2 if d["causal"] and Sq == Sk else Sq * Sk
        moved = (2 * B * H * Sq * hd + 2 * B * KV * Sk * hd) * element_size(dtype)
        return Cost(
            flops=4.0 * B * H * hd * pairs, bytes=float(moved), extra={"flops_dense": 4.0 * B * H * Sq * Sk * hd}
        )

    def reference(self, shape: Shape, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        return math_attention(q, k, v, bool(shape.dims["causal"]))

    def variants(self, shape: Shape) -> dict[str, Callable]:
        causal, gqa = bool(shape.dims["causal"]), shape.dims["H"] != shape.dims["KV"]

        def sdpa(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=gqa)

        def math(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
            return math_attention(q, k, v, causal)

        return {"sdpa": sdpa, "math": math}
