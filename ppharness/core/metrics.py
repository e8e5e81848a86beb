"""FLOP and byte models, MFU, MBU and ceiling fractions. Every formula cites its source.

Notation: N = matmul parameters (workload.matmul_params), N_head = D*V the vocabulary head's
share of N, L = layers, d = attention width (n_heads * head_dim), T = sequence (or prompt)
length, ctx = attended cache length.
"""

from __future__ import annotations

from dataclasses import dataclass

from ppharness.core.workload import ModelConfig, matmul_params
from ppharness.errors import BenchError
from ppharness.facts.catalog import Accelerator

DTYPE_BYTES = {"float32": 4, "tf32": 4, "bfloat16": 2, "float16": 2}


class MetricError(BenchError):
    """A figure that cannot be right (e.g. MFU above 1): the case becomes an error row."""


def flops_per_token(cfg: ModelConfig, scenario: str, length: int, causal: bool = False) -> float:
    """Model FLOPs per token.

    train:   6N + 12*L*d*T  (PaLM, Chowdhery et al. 2022, appendix B: 2 FLOPs per MAC, backward
             twice forward; attention QK^T and AV counted over the full T x T, no causal discount;
             the loss needs logits at every position, so the head runs on every token)
    prefill: 2(N - N_head) + 4*L*d*T + 2*N_head/T
             (the forward third of the above for the layers; the head runs once per sequence, at
             the last prompt position, as in a server: one sequence of T tokens costs
             2(N - N_head)*T + 4*L*d*T^2 + 2*N_head, divided here by its T tokens)
    decode:  2N + 4*L*d*ctx (one query row attending to ctx cached keys; the head on that row)
    causal=True halves the attention term (only the lower triangle is needed).
    """
    n = matmul_params(cfg)
    d = cfg.n_heads * cfg.head_dim
    attn_factor = {"train": 12, "prefill": 4, "decode": 4}[scenario]
    dense_factor = {"train": 6, "prefill": 2, "decode": 2}[scenario]
    attn = attn_factor * cfg.n_layers * d * length
    if causal and scenario != "decode":
        attn /= 2
    if scenario == "prefill":
        head = cfg.dim * cfg.vocab_size  # N_head: one (B, 1, D) x (D, V) matmul per sequence
        return float(dense_factor * (n - head) + attn + dense_factor * head / length)
    return float(dense_factor * n + attn)


def decode_bytes_per_step(cfg: ModelConfig, batch: int, cache_len: int, dtype: str) -> float:
    """HBM bytes one decode step must move at least: every matmul weight read once, the whole
    static KV cache read (attention spans all cache_len slots, masked), one K/V row written per
    sequence and layer. Activations are ignored (tiny at T=1)."""
    b = DTYPE_BYTES[dtype]
    kv_row = 2 * cfg.n_layers * cfg.n_kv_heads * cfg.head_dim * b  # K and V, all layers, 1 position
    return float(matmul_params(cfg) * b + batch * cache_len * kv_row + batch * kv_row)


@dataclass
class Efficiency:
    value: float | None
    reason: str = ""  # why value is None


def mfu(
    achieved_tflops: float, acc: Accelerator | None, dtype: str, devices_used: int, why_none: str = ""
) -> Efficiency:
    """Model FLOPs utilisation: achieved / (dense peak per device in `dtype` x devices used)."""
    if acc is None:
        return Efficiency(None, why_none or "no accelerator peak known for this device")
    per_chip = acc.peak_tflops_for(dtype)
    if per_chip is None:
        return Efficiency(None, f"no {dtype} peak for {acc.key} in configs/accelerators.yaml")
    peak = per_chip / acc.cores_per_chip * devices_used  # devices_used counts NeuronCores on Neuron
    value = achieved_tflops / peak
    if value > 1.0:
        raise MetricError(f"MFU {value:.2f} > 1 on {acc.key}: the FLOP count, timing or peak is wrong")
    return Efficiency(value)


def mbu(achieved_gbps: float, acc: Accelerator | None, devices_used: int, why_none: str = "") -> Efficiency:
    """Memory-bandwidth utilisation: achieved bytes/s over peak memory bandwidth."""
    if acc is None:
        return Efficiency(None, why_none or "no accelerator bandwidth known for this device")
    if not acc.mem_bw_gbps:
        return Efficiency(None, f"no memory bandwidth for {acc.key} in configs/accelerators.yaml")
    value = achieved_gbps / (acc.mem_bw_gbps / acc.cores_per_chip * devices_used)
    if value > 1.0:
        raise MetricError(f"MBU {value:.2f} > 1 on {acc.key}: the byte count, timing or peak is wrong")
    return Efficiency(value)


def compute_metrics(
    cfg: ModelConfig, case, median_s: float, acc: Accelerator | None, dev, ceilings: dict | None
) -> dict:
    """The record's `metrics` block from the median step time. `case` is a scenarios.Case,
    `dev` a DeviceInfo, `ceilings` the measured host/device ceilings (ppharness.core.ceilings)."""
    tokens_per_s = case.tokens_per_step / median_s
    fpt = flops_per_token(cfg, case.scenario, case.length)
    achieved_tflops = fpt * tokens_per_s / 1e12
    m_fu = mfu(achieved_tflops, acc, case.dtype, dev.devices_used, dev.accelerator_reason)
    fpt_causal = flops_per_token(cfg, case.scenario, case.length, causal=True)
    out = {
        "tokens_per_s": tokens_per_s,
        "tokens_per_step": case.tokens_per_step,
        "flops_per_token": fpt,
        "flops_per_token_causal": fpt_causal,
        "achieved_tflops": achieved_tflops,
        "mfu": m_fu.value,
        # the same step counted with the causal discount (only the lower triangle of attention):
        # what a causal-aware count such as FlashAttention's reports beside PaLM's `mfu`
        "mfu_causal": None if m_fu.value is None else m_fu.value * fpt_causal / fpt,
        "mfu_reason": m_fu.reason,
        "mbu": None,
        "mbu_reason": "only decode is memory-bound",
        "achieved_gbps": None,
        "ttft_s": median_s if case.scenario == "prefill" else None,
        "tpot_s": median_s if case.scenario == "decode" else None,
    }
    if case.scenario == "decode":
        gbps = decode_bytes_per_step(cfg, case.batch, case.length, case.dtype) / median_s / 1e9
        m_bu = mbu(gbps, acc, dev.devices_used, dev.accelerator_reason)
        out.update(achieved_gbps=gbps, mbu=m_bu.value, mbu_reason=m_bu.reason)
    out.update(ceiling_fraction(out, case.scenario, ceilings))
    return out


def ceiling_fraction(metrics: dict, scenario: str, ceilings: dict | None) -> dict:
    """Fraction of the device's own measured ceiling: GEMM TFLOP/s for compute-bound train and
    prefill, memory GB/s (the best of copy, read and add bandwidth) for memory-bound decode.
    Meaningful where no vendor peak exists (CPUs)."""
    if not ceilings:
        return {"ceiling_fraction": None, "ceiling_kind": None}
    if scenario == "decode":
        return {"ceiling_fraction": metrics["achieved_gbps"] / ceilings["mem_gbps"], "ceiling_kind": "mem_gbps"}
    return {"ceiling_fraction": metrics["achieved_tflops"] / ceilings["gemm_tflops"], "ceiling_kind": "gemm_tflops"}
