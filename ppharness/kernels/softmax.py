"""Softmax over the last dimension: y_i = exp(x_i - max x) / sum_j exp(x_j - max x).

Two places in the workload: the attention probabilities of the math path (B*H rows of length
seq_len per query, (B*H, T, T)) and the next-token distribution over the vocabulary (B*T, V).
    FLOPs ~ 5 per element   (max, subtract, exp, sum, divide; exp counted as one)
    bytes >= 2 * elements * element size   (x read once, y written once; a fused kernel keeps
                                            the row in cache between its passes)
Memory-bound: ~1 FLOP per byte in float32.

Variant: `eager` is torch.softmax in the input dtype (ATen accumulates in float32).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ppharness.kernels import Cost, Geometry, Kernel, Shape, element_size, kernel, randn


@kernel("softmax")
class Softmax(Kernel):
    def shapes(self, geo: Geometry) -> list[Shape]:
        m = geo.model
        return [
            Shape("scores", {"R": geo.batch * m.n_heads * geo.seq_len, "N": geo.seq_len}, "memory", geo.tokens),
            Shape("vocab", {"R": geo.tokens, "N": m.vocab_size}, "memory", geo.tokens),
        ]

    def make_inputs(self, shape: Shape, dtype: str, seed: int) -> tuple[Tensor]:
        gen = torch.Generator().manual_seed(seed)
        return (randn((shape.dims["R"], shape.dims["N"]), gen, dtype, scale=3.0),)  # (rows, N) logits

    def cost(self, shape: Shape, dtype: str) -> Cost:
        n = shape.dims["R"] * shape.dims["N"]
        return Cost(flops=5.0 * n, bytes=2.0 * n * element_size(dtype))

    def reference(self, shape: Shape, x: Tensor) -> Tensor:
        e = (x - x.max(-1, keepdim=True).values).exp()
        return e / e.sum(-1, keepdim=True)

    def variants(self, shape: Shape) -> dict[str, Callable]:
        return {"eager": lambda x: torch.softmax(x, dim=-1)}
