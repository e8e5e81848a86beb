"""SwiGLU MLP block: y = W2 (silu(W1 x) * W3 x) (Shazeer 2020), the workload's FeedForward.

Math, for x (M, D), W1 and W3 (F, D), W2 (D, F):
    FLOPs  = 6*M*D*F   (three matmuls at 2*M*D*F; the silu and the product, ~5*M*F, are not
                        counted, as FlopCounterMode does not count them either)
    bytes >= (2*M*D + 3*D*F) * element   (x in, y out, the three weights once; the (M, F)
                                          intermediates are extra traffic unless fused)
Compute-bound at prefill (M = batch*seq_len); memory-bound at decode (M = batch: the weights
dominate the bytes).

Variant: `eager` is the workload's three F.linear calls; `--compile` fuses the elementwise part.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ppharness.kernels import Cost, Geometry, Kernel, Shape, element_size, kernel, randn


@kernel("swiglu")
class SwiGLU(Kernel):
    def shapes(self, geo: Geometry) -> list[Shape]:
        D, Fd = geo.model.dim, geo.model.ffn_dim
        return [
            Shape("prefill", {"M": geo.tokens, "D": D, "F": Fd}, "compute", geo.tokens),
            Shape("decode", {"M": geo.batch, "D": D, "F": Fd}, "memory", geo.batch),
        ]

    def make_inputs(self, shape: Shape, dtype: str, seed: int) -> tuple[Tensor, ...]:
        M, D, Fd = shape.dims["M"], shape.dims["D"], shape.dims["F"]
        gen = torch.Generator().manual_seed(seed)
        x = randn((M, D), gen, dtype)  # (M, D)
        w1 = randn((Fd, D), gen, dtype, scale=D**-0.5)  # (F, D)
        w3 = randn((Fd, D), gen, dtype, scale=D**-0.5)  # (F, D)
        w2 = randn((D, Fd), gen, dtype, scale=Fd**-0.5)  # (D, F)
        return x, w1, w3, w2

    def cost(self, shape: Shape, dtype: str) -> Cost:
        M, D, Fd = shape.dims["M"], shape.dims["D"], shape.dims["F"]
        return Cost(flops=6.0 * M * D * Fd, bytes=float(2 * M * D + 3 * D * Fd) * element_size(dtype))

    def reference(self, shape: Shape, x: Tensor, w1: Tensor, w3: Tensor, w2: Tensor) -> Tensor:
        a, b = x @ w1.T, x @ w3.T  # (M, F) each
        return (a * torch.sigmoid(a) * b) @ w2.T  # (M, D)

    def variants(self, shape: Shape) -> dict[str, Callable]:
        def eager(x: Tensor, w1: Tensor, w3: Tensor, w2: Tensor) -> Tensor:
            return F.linear(F.silu(F.linear(x, w1)) * F.linear(x, w3), w2)

        return {"eager": eager}
