"""GEMM: the workload's linear projections, y = x W^T (F.linear, as nn.Linear runs them).

Math: x (M, K) times W^T (K, N) -> y (M, N).
    FLOPs  = 2*M*N*K                      (one multiply and one add per multiply-accumulate)
    bytes >= (M*K + N*K + M*N) * element   (each operand read once, the output written once)
Compute-bound at prefill/training, where M = batch*seq_len tokens share each weight; memory-bound
at decode, where M = batch and every weight byte feeds only `batch` multiply-adds (arithmetic
intensity ~ M FLOPs per weight element).

Shapes, for one layer of the preset: wq (D -> H*hd; wo is the same size transposed), wk (D ->
KV*hd; wv is the same), w1 (D -> ffn; w3 is the same), w2 (ffn -> D) and the output head
(D -> V), each at prefill (M = batch*seq_len) and decode (M = batch).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ppharness.kernels import Cost, Geometry, Kernel, Shape, element_size, kernel, randn


def projections(geo: Geometry) -> dict[str, tuple[int, int]]:
    """name -> (K in, N out) of the preset's matmul weights."""
    m = geo.model
    return {
        "wq": (m.dim, m.n_heads * m.head_dim),
        "wk": (m.dim, m.n_kv_heads * m.head_dim),
        "w1": (m.dim, m.ffn_dim),
        "w2": (m.ffn_dim, m.dim),
        "head": (m.dim, m.vocab_size),
    }


@kernel("gemm")
class Gemm(Kernel):
    def shapes(self, geo: Geometry) -> list[Shape]:
        out = []
        for phase, M, bound in (("prefill", geo.tokens, "compute"), ("decode", geo.batch, "memory")):
            for name, (K, N) in projections(geo).items():
                out.append(Shape(f"{name}@{phase}", {"M": M, "N": N, "K": K}, bound, M))  # a row per token
        return out

    def make_inputs(self, shape: Shape, dtype: str, seed: int) -> tuple[Tensor, Tensor]:
        M, N, K = shape.dims["M"], shape.dims["N"], shape.dims["K"]
        gen = torch.Generator().manual_seed(seed)
        x = randn((M, K), gen, dtype)  # (M, K) activations
        w = randn((N, K), gen, dtype, scale=K**-0.5)  # (N, K) weight, scaled so y stays O(1)
        return x, w

    def cost(self, shape: Shape, dtype: str) -> Cost:
        M, N, K = shape.dims["M"], shape.dims["N"], shape.dims["K"]
        return Cost(flops=2.0 * M * N * K, bytes=float(M * K + N * K + M * N) * element_size(dtype))

    def reference(self, shape: Shape, x: Tensor, w: Tensor) -> Tensor:
        return x @ w.T  # (M, N)

    def variants(self, shape: Shape) -> dict[str, Callable]:
        return {"eager": F.linear}
