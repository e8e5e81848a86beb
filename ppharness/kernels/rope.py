"""Rotary position embedding (Su et al. 2021, RoFormer): rotate each pair (x0, x1) of a query or
key head by the angle pos * theta^(-2i/hd).

Math, for x (B, T, H, hd) and a float32 table of cos/sin (T, hd/2, 2):
    (x0, x1) -> (x0 cos - x1 sin, x1 cos + x0 sin)
    FLOPs  = 6 per pair = 3*B*T*H*hd   (4 multiplies, 2 adds)
    bytes >= 2*B*T*H*hd * element + T*hd * 4   (x read, y written, the float32 table read once)
Memory-bound: under 1 FLOP per byte.

Shape: the queries of one layer at prefill (keys are the same with KV heads).
Variant: `eager` is ppharness.core.workload.apply_rope, exactly what the model runs. The reference is an
independent formulation: complex multiplication by e^(i*angle) (torch.view_as_complex).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ppharness.core.workload import apply_rope, rope_table
from ppharness.kernels import Cost, Geometry, Kernel, Shape, element_size, kernel, randn


@kernel("rope")
class RoPE(Kernel):
    def shapes(self, geo: Geometry) -> list[Shape]:
        m = geo.model
        dims = {"B": geo.batch, "T": geo.seq_len, "H": m.n_heads, "hd": m.head_dim, "theta": m.rope_theta}
        return [Shape("q@prefill", dims, "memory", geo.tokens)]

    def make_inputs(self, shape: Shape, dtype: str, seed: int) -> tuple[Tensor, Tensor]:
        d = shape.dims
        gen = torch.Generator().manual_seed(seed)
        x = randn((d["B"], d["T"], d["H"], d["hd"]), gen, dtype)  # (B, T, H, hd)
        table = rope_table(d["hd"], d["T"], d["theta"])  # (T, hd/2, 2) float32, as the model keeps it
        return x, table

    def cost(self, shape: Shape, dtype: str) -> Cost:
        d = shape.dims
        n = d["B"] * d["T"] * d["H"] * d["hd"]
        return Cost(flops=3.0 * n, bytes=2.0 * n * element_size(dtype) + d["T"] * d["hd"] * 4)

    def reference(self, shape: Shape, x: Tensor, table: Tensor) -> Tensor:
        xc = torch.view_as_complex(x.reshape(*x.shape[:-1], -1, 2).contiguous())  # (B, T, H, hd/2)
        rot = torch.view_as_complex(table.contiguous())[None, :, None, :]  # (1, T, 1, hd/2): cos + i sin
        return torch.view_as_real(xc * rot).flatten(3)  # (B, T, H, hd)

    def variants(self, shape: Shape) -> dict[str, Callable]:
        return {"eager": apply_rope}
