"""Cross-entropy loss with the vocabulary projection: loss = mean_i(logsumexp(z_i) - z_i[t_i]),
z = h W^T, the last step of the workload's training forward (ppharness.core.scenarios: logits in float32).

Math, for hidden states h (M, D) with M = batch*seq_len, the output head W (V, D), targets t (M,):
    FLOPs  = 2*M*D*V   (the projection; the softmax's ~5*M*V is not counted, as FlopCounterMode
                        does not count it either, and it is under 1% for D >= 512)
    bytes >= (M*D + V*D) * element + 8*M   (h, W and the int64 targets read once; the (M, V)
                                            logits are extra traffic unless the loss is fused)
Compute-bound: the projection is a GEMM with M tokens sharing each weight.

Variants: `eager` projects, upcasts the logits and calls F.cross_entropy, as the workload does;
`chunked` does the same over blocks of rows, so only a (CHUNK, V) slice of logits exists at once
(the memory-saving form long-vocabulary training uses).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ppharness.kernels import Cost, Geometry, Kernel, Shape, element_size, kernel, randn

CHUNK = 1024  # rows per block of the chunked variant: (1024, V) float32 logits, 0.5 GB at V=128k


@kernel("cross_entropy")
class CrossEntropy(Kernel):
    def shapes(self, geo: Geometry) -> list[Shape]:
        return [
            Shape("head@train", {"M": geo.tokens, "D": geo.model.dim, "V": geo.model.vocab_size}, "compute", geo.tokens)
        ]

    def make_inputs(self, shape: Shape, dtype: str, seed: int) -> tuple[Tensor, Tensor, Tensor]:
        M, D, V = shape.dims["M"], shape.dims["D"], shape.dims["V"]
        gen = torch.Generator().manual_seed(seed)
        h = randn((M, D), gen, dtype)  # (M, D) final hidden states
        w = randn((V, D), gen, dtype, scale=D**-0.5)  # (V, D) output head
        t = torch.randint(0, V, (M,), generator=gen)  # (M,) int64 targets
        return h, w, t

    def cost(self, shape: Shape, dtype: str) -> Cost:
        M, D, V = shape.dims["M"], shape.dims["D"], shape.dims["V"]
        return Cost(flops=2.0 * M * D * V, bytes=float(M * D + V * D) * element_size(dtype) + 8.0 * M)

    def reference(self, shape: Shape, h: Tensor, w: Tensor, t: Tensor) -> Tensor:
        z = h @ w.T  # (M, V)
        return (z.logsumexp(-1) - z.gather(1, t[:, None])[:, 0]).mean()  # () scalar

    def variants(self, shape: Shape) -> dict[str, Callable]:
        def eager(h: Tensor, w: Tensor, t: Tensor) -> Tensor:
            return F.cross_entropy(F.linear(h, w).float(), t)

        def chunked(h: Tensor, w: Tensor, t: Tensor) -> Tensor:
            total = torch.zeros((), dtype=torch.float32, device=h.device)
            for i in range(0, h.shape[0], CHUNK):
                z = F.linear(h[i : i + CHUNK], w).float()  # (<=CHUNK, V)
                total = total + F.cross_entropy(z, t[i : i + CHUNK], reduction="sum")
            return total / h.shape[0]

        return {"eager": eager, "chunked": chunked}
