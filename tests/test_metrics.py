"""FLOP and byte models against torch's own FLOP counter, and MFU/MBU rules."""

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from ppharness import backends
from ppharness.core.metrics import MetricError, decode_bytes_per_step, flops_per_token, mbu, mfu
from ppharness.core.scenarios import Case, build_step
from ppharness.core.workload import PRESETS, build_model, matmul_params, random_tokens
from ppharness.facts import catalog


def _counted(fn) -> tuple[int, int]:
    """(dense matmul FLOPs, attention FLOPs) counted by FlopCounterMode while running fn.

    SDPA runs on its math backend here, which computes QK^T and AV as batched matmuls over the
    full T x T (as the PaLM formula counts them); the linear layers are plain mm/addmm.
    """
    counter = FlopCounterMode(display=False)
    with counter, sdpa_kernel(SDPBackend.MATH):
        fn()
    ops = {str(op).split(".")[1]: n for op, n in counter.get_flop_counts()["Global"].items()}
    return ops.get("mm", 0) + ops.get("addmm", 0), ops.get("bmm", 0)


def _head(cfg) -> int:
    return cfg.dim * cfg.vocab_size


@pytest.mark.parametrize("preset,length", [("tiny", 32), ("tiny", 128), ("small", 64), ("small", 256)])
def test_prefill_step_flops_match_counter(preset, length):
    """The timed prefill step itself (ppharness.core.scenarios, on the CPU backend): the layers on every
    prompt token, the vocabulary head once per sequence (at the last position)."""
    cfg, batch = PRESETS[preset], 2
    case = Case("prefill", batch=batch, dtype="float32", compile="none", prompt_len=length)
    step = build_step(case, cfg, backends.make("cpu"))
    mm, attn = _counted(step.run)
    tokens = batch * length
    n, head = matmul_params(cfg), _head(cfg)
    assert mm == pytest.approx(2 * (n - head) * tokens + 2 * head * batch, rel=0.01)
    dense = 2 * (n - head) + 2 * head / length  # flops_per_token's non-attention part
    assert attn == pytest.approx((flops_per_token(cfg, "prefill", length) - dense) * tokens, rel=0.01)
    assert flops_per_token(cfg, "prefill", length) * tokens == pytest.approx(mm + attn, rel=0.01)


@pytest.mark.parametrize("preset,length", [("tiny", 32), ("small", 64)])
def test_full_forward_flops_match_counter(preset, length):
    """A plain forward (training's, the check's) runs the head on every token: 2N + 4*L*d*T."""
    cfg = PRESETS[preset]
    model = build_model(cfg)
    toks = random_tokens(cfg, 2, length, 0)
    with torch.no_grad():
        mm, attn = _counted(lambda: model(toks))
    tokens = 2 * length
    assert mm == pytest.approx(2 * matmul_params(cfg) * tokens, rel=0.01)
    assert attn == pytest.approx(4 * cfg.n_layers * cfg.dim * length * tokens, rel=0.01)


def test_prefill_counts_the_head_once_per_sequence():
    """Against the old every-position count, the head term shrinks by the prompt length; the
    causal variant halves the attention term only."""
    cfg = PRESETS["llama3-1b-shape"]
    n, head, T = matmul_params(cfg), _head(cfg), 2048
    everywhere = 2 * n + 4 * cfg.n_layers * cfg.dim * T
    assert everywhere - flops_per_token(cfg, "prefill", T) == pytest.approx(2 * head * (1 - 1 / T))
    assert flops_per_token(cfg, "prefill", T) - flops_per_token(cfg, "prefill", T, causal=True) == pytest.approx(
        2 * cfg.n_layers * cfg.dim * T
    )


@pytest.mark.parametrize("preset,length", [("tiny", 64), ("small", 128)])
def test_train_matmul_flops_match_counter(preset, length):
    cfg = PRESETS[preset]
    model = build_model(cfg)
    data = random_tokens(cfg, 2, length + 1, 0)

    def step():
        logits = model(data[:, :-1])
        F.cross_entropy(logits.flatten(0, 1), data[:, 1:].flatten()).backward()

    mm, attn = _counted(step)
    tokens = 2 * length
    assert mm == pytest.approx(6 * matmul_params(cfg) * tokens, rel=0.01)  # forward + 2x backward
    assert attn == pytest.approx((flops_per_token(cfg, "train", length) - 6 * matmul_params(cfg)) * tokens, rel=0.01)


def test_formulas_by_hand():
    cfg = PRESETS["tiny"]  # L=2, d=64
    n = matmul_params(cfg)
    assert flops_per_token(cfg, "train", 32) == 6 * n + 12 * 2 * 64 * 32
    assert flops_per_token(cfg, "train", 32, causal=True) == 6 * n + 6 * 2 * 64 * 32
    head = 64 * 256  # D x V
    assert flops_per_token(cfg, "prefill", 32) == 2 * (n - head) + 4 * 2 * 64 * 32 + 2 * head / 32
    assert flops_per_token(cfg, "prefill", 32, causal=True) == 2 * (n - head) + 2 * 2 * 64 * 32 + 2 * head / 32
    assert flops_per_token(cfg, "decode", 40) == 2 * n + 4 * 2 * 64 * 40
    # decode bytes: weights once + whole cache read + one row written, per sequence
    row = 2 * 2 * cfg.n_kv_heads * cfg.head_dim * 2  # K+V, 2 layers, bf16
    assert decode_bytes_per_step(cfg, 3, 40, "bfloat16") == n * 2 + 3 * 40 * row + 3 * row


def test_mfu_rules():
    h100 = catalog.accelerator("h100-sxm")
    assert mfu(494.7, h100, "bfloat16", 1).value == pytest.approx(0.5, rel=1e-3)
    assert mfu(494.7, h100, "bfloat16", 2).value == pytest.approx(0.25, rel=1e-3)
    none = mfu(1.0, None, "bfloat16", 1, "CPU: no vendor peak")
    assert none.value is None and "CPU" in none.reason
    with pytest.raises(MetricError, match="MFU"):
        mfu(2000.0, h100, "bfloat16", 1)
    # Neuron: peaks are per chip; 2 of trn1's 32 NeuronCores are one chip's worth.
    trn1 = catalog.accelerator("trainium1")
    assert mfu(95.0, trn1, "bfloat16", 2).value == pytest.approx(95.0 / trn1.peak_tflops_for("bfloat16"), rel=1e-6)
    assert mfu(10.0, trn1, "bfloat16", 1).value == pytest.approx(10.0 / (trn1.peak_tflops_for("bfloat16") / 2))


def test_mbu_rules():
    h100 = catalog.accelerator("h100-sxm")
    assert mbu(1675.0, h100, 1).value == pytest.approx(0.5)
    with pytest.raises(MetricError, match="MBU"):
        mbu(5000.0, h100, 1)
    assert mbu(1.0, None, 1).value is None


def test_causal_mfu_is_reported_beside_palms():
    """`mfu` counts attention over the full T x T (PaLM, the figure MFU targets use); `mfu_causal`
    the same step with only the lower triangle, as a causal-aware count reports it."""
    from ppharness.core.metrics import compute_metrics

    cfg, h100 = PRESETS["llama3-1b-shape"], catalog.accelerator("h100-sxm")
    dev = backends.DeviceInfo("cuda", "NVIDIA H100 80GB HBM3", "h100-sxm")
    for case in (
        Case("train", 4, "bfloat16", "default", seq_len=2048),
        Case("prefill", 16, "bfloat16", "default", prompt_len=2048),
    ):
        m = compute_metrics(cfg, case, 0.3, h100, dev, None)
        assert m["mfu_causal"] == pytest.approx(m["mfu"] * m["flops_per_token_causal"] / m["flops_per_token"])
        assert m["mfu_causal"] < m["mfu"]
    decode = compute_metrics(
        cfg, Case("decode", 1, "bfloat16", "none", prompt_len=512, new_tokens=128), 1e-3, h100, dev, None
    )
    assert decode["mfu_causal"] == pytest.approx(decode["mfu"])  # one new token attends to all: nothing to discount
    cpu = compute_metrics(
        cfg, Case("train", 1, "float32", "none", seq_len=64), 1.0, None, backends.DeviceInfo("cpu", "x", None), None
    )
    assert cpu["mfu"] is None and cpu["mfu_causal"] is None
