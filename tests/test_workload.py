"""The shared workload: shapes, presets, determinism, and the static KV cache."""

import pytest
import torch

from bench.workload import PRESETS, ModelConfig, build_model, matmul_params, model_config, random_tokens, total_params


def test_presets_are_valid_and_public_shapes_match():
    assert {"tiny", "small", "gpt2-124m-shape", "llama3-1b-shape", "llama3-8b-shape"} <= set(PRESETS)
    l1 = PRESETS["llama3-1b-shape"]
    assert (l1.dim, l1.n_layers, l1.n_heads, l1.n_kv_heads, l1.ffn_dim, l1.vocab_size) == (
        2048,
        16,
        32,
        8,
        8192,
        128256,
    )
    # Llama 3.2 1B has 1.236e9 parameters (tied embeddings): our shape must land on it.
    assert total_params(l1) == pytest.approx(1.236e9, rel=0.01)
    assert total_params(PRESETS["llama3-8b-shape"]) == pytest.approx(8.03e9, rel=0.01)


def test_param_count_matches_module():
    for name in ("tiny", "small"):
        cfg = PRESETS[name]
        model = build_model(cfg)
        assert sum(p.numel() for p in model.parameters()) == total_params(cfg)
        tied = ModelConfig(**{**cfg.to_dict(), "tie_embeddings": True})
        assert sum(p.numel() for p in build_model(tied).parameters()) == total_params(tied)
        assert matmul_params(tied) == matmul_params(cfg)  # the head is a matmul either way


def test_same_seed_same_weights_and_tokens():
    cfg = PRESETS["tiny"]
    a, b = build_model(cfg, seed=3), build_model(cfg, seed=3)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(build_model(cfg, seed=4).output.weight, a.output.weight)
    toks = random_tokens(cfg, 4, 32, seed=1)
    assert torch.equal(toks, random_tokens(cfg, 4, 32, seed=1))
    assert toks.min() >= 1 and toks.unique().numel() > 1  # never zeros, never constant


def test_cached_prefill_and_decode_match_full_forward():
    """Prefill + decode through the static cache give the logits of a plain causal forward."""
    cfg = PRESETS["tiny"]
    model = build_model(cfg).eval()
    toks = random_tokens(cfg, 2, 12, seed=0)
    with torch.no_grad():
        full = model(toks)  # (B, T, V)
        model.setup_caches(batch=2, length=16, dtype=torch.float32)
        pre = model(toks[:, :8], torch.arange(8))
        steps = [model(toks[:, t : t + 1], torch.tensor([t])) for t in range(8, 12)]
    torch.testing.assert_close(pre, full[:, :8], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(torch.cat(steps, 1), full[:, 8:12], rtol=1e-4, atol=1e-5)


def test_model_config_from_mapping_and_errors():
    cfg = model_config({"preset": "tiny", "n_layers": 3})
    assert cfg.n_layers == 3 and cfg.dim == PRESETS["tiny"].dim
    with pytest.raises(KeyError, match="valid: tiny"):
        model_config("gpt5")
    with pytest.raises(ValueError, match="divisible"):
        ModelConfig(dim=64, n_heads=5)
    with pytest.raises(ValueError, match="exceeds"):
        build_model(PRESETS["tiny"]).setup_caches(1, 1000, torch.float32)
