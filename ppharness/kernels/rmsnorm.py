"""RMSNorm: y = x / sqrt(mean(x^2) + eps) * g over the model dimension (Zhang & Sennrich 2019).

Math, for x (M, D) with M = batch*seq_len tokens and gain g (D,):
    FLOPs ~ 4*M*D     (square, sum, scale by the reciprocal root, multiply by the gain; the one
                       rsqrt per row is not counted)
    bytes >= (2*M*D + D) * element   (x read, y written, g read once)
Memory-bound: about 2 FLOPs per byte in float32, far below any device's ridge point.

Variants: `eager` is the workload's formula (ppharness.core.workload.RMSNorm: normalise in float32, cast
back, then the gain); `fused` is F.rms_norm, one ATen op.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ppharness.core.device import DTYPES
from ppharness.kernels import Cost, Geometry, Kernel, Shape, element_size, kernel, randn


@kernel("rmsnorm")
class RMSNorm(Kernel):
    def shapes(self, geo: Geometry) -> list[Shape]:
        return [
            Shape("prefill", {"M": geo.tokens, "D": geo.model.dim, "eps": geo.model.norm_eps}, "memory", geo.tokens)
        ]

    def make_inputs(self, shape: Shape, dtype: str, seed: int) -> tuple[Tensor, Tensor]:
        M, D = shape.dims["M"], shape.dims["D"]
        gen = torch.Generator().manual_seed(seed)
        x = randn((M, D), gen, "float32")  # (M, D)
        g = 1.0 + randn((D,), gen, "float32", scale=0.1)  # (D,) gains near 1, not all equal
        return x.to(DTYPES[dtype]), g.to(DTYPES[dtype])

    def cost(self, shape: Shape, dtype: str) -> Cost:
        M, D = shape.dims["M"], shape.dims["D"]
        return Cost(flops=4.0 * M * D, bytes=float(2 * M * D + D) * element_size(dtype))

    def reference(self, shape: Shape, x: Tensor, g: Tensor) -> Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + shape.dims["eps"]) * g  # (M, D)

    def variants(self, shape: Shape) -> dict[str, Callable]:
        D, eps = shape.dims["D"], shape.dims["eps"]

        def eager(x: Tensor, g: Tensor) -> Tensor:
            xf = x.float()  # as ppharness.core.workload.RMSNorm: normalise in float32 for bf16 stability
            return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).type_as(x) * g

        def fused(x: Tensor, g: Tensor) -> Tensor:
            return F.rms_norm(x, (D,), g, eps)

        return {"eager": eager, "fused": fused}
