"""AdamW optimizer update (Loshchilov & Hutter 2019, algorithm 2; the form of torch.optim.AdamW)
over the parameters of one transformer block of the preset, in float32 master weights.

Math, per element with gradient g at step t:
    p <- p - lr*wd*p
    m <- b1*m + (1-b1)*g;   v <- b2*v + (1-b2)*g^2
    p <- p - lr * (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps)
    FLOPs ~ 12 per element   (an approximate count of the elementwise arithmetic above)
    bytes >= 7 * 4 per element   (p, g, m, v read; p, m, v written; float32)
Memory-bound: under 0.5 FLOP per byte. A whole model's update is n_layers times this block plus
the embeddings and head (the same per-element cost).

Variants: `foreach` and `fused` are torch.optim.adamw.adamw's multi-tensor and fused
implementations (what torch.optim.AdamW(foreach=True / fused=True) calls). Step counters stay
on the host for `foreach`, as torch keeps them, and on the device for `fused` and for the
compiled `foreach` (capturable), as those require.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch.optim.adamw import adamw

from ppharness.core.device import Backend
from ppharness.kernels import Cost, Geometry, Kernel, Shape, kernel, randn

HYPER = {
    "lr": 1e-4,
    "beta1": 0.9,
    "beta2": 0.999,
    "eps": 1e-8,
    "weight_decay": 0.01,
}  # torch defaults, lr as the workload
START_STEP = 10.0  # a mid-training step count, so the bias corrections are not trivial


def block_shapes(geo: Geometry) -> list[list[int]]:
    m = geo.model
    q, kv = m.n_heads * m.head_dim, m.n_kv_heads * m.head_dim
    return [[q, m.dim], [kv, m.dim], [kv, m.dim], [m.dim, q], [m.ffn_dim, m.dim], [m.ffn_dim, m.dim],
            [m.dim, m.ffn_dim], [m.dim], [m.dim]]  # fmt: skip


@kernel("adamw")
class AdamW(Kernel):
    dtypes = ("float32",)  # the update runs on float32 master weights whatever the compute dtype
    compile_variant = "foreach"
    host_inputs = (4,)  # the foreach variant's step counters stay on the host
    tolerance = {"float32": 1e-5}

    def shapes(self, geo: Geometry) -> list[Shape]:
        parts = block_shapes(geo)
        n = sum(torch.Size(s).numel() for s in parts)
        return [
            Shape("layer", {"params": n, "tensors": parts}, "memory", tokens=geo.tokens)
        ]  # one update per training step

    def make_inputs(self, shape: Shape, dtype: str, seed: int) -> tuple:
        gen = torch.Generator().manual_seed(seed)
        parts = shape.dims["tensors"]
        params = [randn(s, gen, "float32", scale=0.02) for s in parts]  # the workload's init scale
        grads = [randn(s, gen, "float32", scale=1e-3) for s in parts]
        exp_avgs = [randn(s, gen, "float32", scale=1e-4) for s in parts]
        exp_avg_sqs = [randn(s, gen, "float32", scale=1e-3).square() for s in parts]  # v >= 0
        steps_host = [torch.tensor(START_STEP) for _ in parts]
        steps_dev = [torch.tensor(START_STEP) for _ in parts]
        return params, grads, exp_avgs, exp_avg_sqs, steps_host, steps_dev

    def cost(self, shape: Shape, dtype: str) -> Cost:
        n = shape.dims["params"]
        return Cost(flops=12.0 * n, bytes=7.0 * 4 * n)

    def reference(self, shape: Shape, params, grads, exp_avgs, exp_avg_sqs, steps_host, steps_dev) -> tuple:
        lr, b1, b2, eps, wd = (HYPER[k] for k in ("lr", "beta1", "beta2", "eps", "weight_decay"))
        out_p, out_m, out_v = [], [], []
        for p, g, m, v, s in zip(params, grads, exp_avgs, exp_avg_sqs, steps_host):
            t = s.item() + 1
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g * g
            m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
            out_p.append(p * (1 - lr * wd) - lr * m_hat / (v_hat.sqrt() + eps))
            out_m.append(m)
            out_v.append(v)
        return (*out_p, *out_m, *out_v)

    def skip_variant(self, variant: str, backend: Backend) -> str:
        if variant != "fused":
            return ""
        try:  # the device types torch ships a fused AdamW kernel for (XLA has none)
            # private torch helper, absent from some releases
            from torch.optim.optimizer import _get_fused_kernels_supported_devices as fused_devices
        except ImportError:
            return ""
        kind = backend.device.type
        return "" if kind in fused_devices() else f"torch has no fused AdamW kernel for device type {kind}"

    def variants(self, shape: Shape) -> dict[str, Callable]:
        def foreach(params, grads, exp_avgs, exp_avg_sqs, steps_host, steps_dev) -> tuple[Tensor, ...]:
            if torch.compiler.is_compiling():
                # Compiled, the counters must live with the parameters (capturable), as in a
                # torch.compile'd optimizer step; dynamo cannot trace host counters here.
                adamw(params, grads, exp_avgs, exp_avg_sqs, [], steps_dev, foreach=True, capturable=True,
                      amsgrad=False, maximize=False, **HYPER)  # fmt: skip
            else:
                adamw(
                    params,
                    grads,
                    exp_avgs,
                    exp_avg_sqs,
                    [],
                    steps_host,
                    foreach=True,
                    amsgrad=False,
                    maximize=False,
                    **HYPER,
                )
            return (*params, *exp_avgs, *exp_avg_sqs)

        def fused(params, grads, exp_avgs, exp_avg_sqs, steps_host, steps_dev) -> tuple[Tensor, ...]:
            adamw(
                params, grads, exp_avgs, exp_avg_sqs, [], steps_dev, fused=True, amsgrad=False, maximize=False, **HYPER
            )
            return (*params, *exp_avgs, *exp_avg_sqs)

        return {"foreach": foreach, "fused": fused}
