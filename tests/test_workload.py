"""The shared workload: shapes, presets, determinism, and the static KV cache."""

import pytest
import torch
import torch.nn.functional as F

from ppharness.core.workload import (
    PRESETS,
    ModelConfig,
    build_model,
    matmul_params,
    model_config,
    random_tokens,
    total_params,
)


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


def test_each_public_shape_has_its_namesakes_parameter_count():
    """Every parameter, embeddings included and a tied head counted once (as the released
    checkpoints count them: Llama 3.2 1B 1,235,814,400 and Llama 3 8B 8,030,261,248 in their
    safetensors; GPT-2 124M 124,439,808)."""
    # The Llama shapes are the Llama architecture: exactly the released count.
    assert total_params(PRESETS["llama3-1b-shape"]) == 1_235_814_400  # tied embeddings
    assert total_params(PRESETS["llama3-8b-shape"]) == 8_030_261_248  # untied head
    # GPT-2 small: what the Llama-style shape keeps is the same to the parameter; what it drops
    # is GPT-2's learned position table (1024 x 768) and its biases (qkv, proj, fc, fc-proj and
    # both LayerNorms per layer, and ln_f). Its SwiGLU MLP at hidden 2048 holds exactly GPT-2's
    # 2 x 768 x 3072 MLP weights.
    g = PRESETS["gpt2-124m-shape"]
    d, L = g.dim, g.n_layers
    assert 3 * d * g.ffn_dim == 2 * d * 3072
    positions = 1024 * d
    biases = L * (3 * d + d + 4 * d + d + 2 * d) + d  # linear biases + LayerNorm betas
    assert total_params(g) + positions + biases == 124_439_808
    assert total_params(g) == pytest.approx(124_439_808, rel=0.01)  # 123.55M: within 0.8%


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


def test_a_rebuilt_model_is_fresh_even_after_the_last_one_trained():
    """Builds reuse the seeded draw; a model changed in place (a train step) never leaks into the next."""
    cfg = PRESETS["tiny"]
    first = build_model(cfg, seed=5)
    want = {k: v.clone() for k, v in first.state_dict().items()}
    with torch.no_grad():
        first.output.weight.add_(1.0)
    again = build_model(cfg, seed=5)
    assert all(torch.equal(again.state_dict()[k], v) for k, v in want.items())
    assert again.output.weight.data_ptr() != first.output.weight.data_ptr()


def test_last_only_logits_are_the_last_row_of_the_full_forward():
    cfg = PRESETS["tiny"]
    model = build_model(cfg).eval()
    tokens = random_tokens(cfg, 2, 12, seed=1)
    with torch.no_grad():
        full, last = model(tokens), model(tokens, last_only=True)
    assert last.shape == (2, 1, cfg.vocab_size)
    torch.testing.assert_close(last, full[:, -1:])


def test_prefill_step_returns_the_first_token_of_the_full_forward():
    """The timed prefill computes logits at the last prompt position only; its first generated
    token is the full forward's, and the cache it fills serves the next decode step exactly."""
    from ppharness import backends
    from ppharness.core.scenarios import Case, _prefill_step

    cfg = PRESETS["tiny"]
    case = Case("prefill", batch=2, dtype="float32", compile="none", prompt_len=12)
    model = build_model(cfg)
    first = _prefill_step(case, cfg, backends.make("cpu"), model, seed=0)()
    prompt = random_tokens(cfg, 2, 12, seed=2)  # the step's prompt (seed + 2)
    with torch.no_grad():
        full = build_model(cfg)(prompt)  # (B, T, V)
        assert torch.equal(first, full[:, -1].argmax(-1))
        padded = build_model(cfg).eval()
        padded.setup_caches(2, 16, torch.float32)
        at = padded(F.pad(prompt, (0, 4)), torch.arange(16), at=torch.tensor([11]))  # right-padded
    torch.testing.assert_close(at, full[:, -1:], rtol=1e-4, atol=1e-5)


def test_inference_cast_keeps_the_rope_table_exact():
    from ppharness.core.scenarios import _cast

    cfg = PRESETS["tiny"]
    exact = build_model(cfg).rope.clone()
    model = _cast(build_model(cfg), torch.device("cpu"), "bfloat16")
    assert model.output.weight.dtype == torch.bfloat16
    assert model.rope.dtype == torch.float32 and torch.equal(model.rope, exact)


@pytest.mark.parametrize("scenario", ["train", "prefill", "decode"])
def test_attention_probe_mirrors_the_workloads_own_sdpa_call(monkeypatch, scenario):
    """attention_kernel asks torch about stand-ins; they must match what the model really passes."""
    import ppharness.core.workload as wl
    from ppharness.core.scenarios import _cast

    cfg, seen = PRESETS["tiny"], []
    real = F.scaled_dot_product_attention

    def spy(q, k, v, **kw):
        seen.append((q, k, v, kw))
        return real(q, k, v, **kw)

    monkeypatch.setattr(wl.F, "scaled_dot_product_attention", spy)
    batch, length = 2, 12
    model = build_model(cfg)
    tokens = random_tokens(cfg, batch, length, seed=0)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        if scenario == "train":
            model(tokens)
        else:
            model = _cast(model, torch.device("cpu"), "bfloat16")
            model.setup_caches(batch, length, torch.bfloat16)
            if scenario == "prefill":
                model(tokens, torch.arange(length))
            else:
                model(tokens[:, :1], torch.tensor([3]))
    q, k, v, kw = seen[0]
    pq, pk, pv, pkw = wl.attention_inputs(cfg, scenario, batch, length, torch.bfloat16, torch.device("cpu"))
    for got, want in ((q, pq), (k, pk), (v, pv)):
        assert (got.shape, got.dtype, got.stride(-1), got.is_contiguous()) == (
            want.shape,
            want.dtype,
            want.stride(-1),
            want.is_contiguous(),
        )
    assert kw.keys() == pkw.keys() and kw.get("enable_gqa") == pkw.get("enable_gqa")
    if "attn_mask" in kw:
        assert (kw["attn_mask"].shape, kw["attn_mask"].dtype) == (pkw["attn_mask"].shape, pkw["attn_mask"].dtype)
    assert wl.attention_kernel(cfg, scenario, batch, length, torch.bfloat16, torch.device("cpu")) in {
        "flash_attention",
        "math",
    }


def test_decode_packs_query_heads_by_kv_group_so_no_kernel_needs_gqa(monkeypatch):
    """Decode's masked SDPA call has as many query heads as KV heads (the G heads of a group as G
    rows): flash refuses masks and torch <= 2.11's memory-efficient kernel refuses GQA, so with
    grouped heads only cuDNN or math could run it; packed, the memory-efficient kernel can, and
    math reads the cache once per KV head. The result is the grouped call's."""
    import ppharness.core.workload as wl

    cfg, seen = PRESETS["tiny"], []
    real = F.scaled_dot_product_attention
    monkeypatch.setattr(
        wl.F, "scaled_dot_product_attention", lambda q, k, v, **kw: seen.append((q, k, v, kw)) or real(q, k, v, **kw)
    )
    model = build_model(cfg).eval()
    model.setup_caches(2, 12, torch.float32)
    with torch.no_grad():
        model(random_tokens(cfg, 2, 5, seed=0), torch.arange(5))
        seen.clear()
        model(random_tokens(cfg, 2, 1, seed=1), torch.tensor([5]))
    q, k, v, kw = seen[0]
    assert q.shape == (2, cfg.n_kv_heads, cfg.n_heads // cfg.n_kv_heads, cfg.head_dim) and k.shape[1] == q.shape[1]
    assert "enable_gqa" not in kw and kw["attn_mask"].dtype == torch.bool
    grouped = real(q.reshape(2, cfg.n_heads, 1, cfg.head_dim), k, v, attn_mask=kw["attn_mask"], enable_gqa=True)
    torch.testing.assert_close(real(q, k, v, **kw).reshape(grouped.shape), grouped)


def test_seeded_weights_are_kept_as_the_override_says(monkeypatch):
    """A host whose MemTotal reads low (a VM that grows as it is used) keeps the draw when told to,
    instead of redrawing every build; "0" never keeps; anything else is one clear error."""
    import ppharness.core.workload as wl
    from ppharness.errors import BenchError

    monkeypatch.setattr(wl, "_host_memory_bytes", lambda: 0)  # auto: too little memory to keep anything
    monkeypatch.delenv(wl.KEEP_WEIGHTS_ENV, raising=False)
    build_model(PRESETS["tiny"], seed=7)
    assert not wl._KEPT
    monkeypatch.setenv(wl.KEEP_WEIGHTS_ENV, "1")
    first = wl._seeded_weights(PRESETS["tiny"], 7)
    assert wl._seeded_weights(PRESETS["tiny"], 7) is first  # not drawn again
    monkeypatch.setattr(wl, "_host_memory_bytes", lambda: 2**50)
    monkeypatch.setenv(wl.KEEP_WEIGHTS_ENV, "0")
    wl._KEPT.clear()
    wl._seeded_weights(PRESETS["tiny"], 7)
    assert not wl._KEPT
    monkeypatch.setenv(wl.KEEP_WEIGHTS_ENV, "yes")
    with pytest.raises(BenchError, match="PPBENCH_KEEP_WEIGHTS must be 1"):
        wl._seeded_weights(PRESETS["tiny"], 8)


def test_attention_probe_says_none_where_torch_cannot_answer(monkeypatch):
    import ppharness.core.workload as wl

    def refuse(*args, **kwargs):
        raise RuntimeError("no SDPA dispatch for this device")

    monkeypatch.setattr(torch, "_fused_sdp_choice", refuse)
    assert wl.attention_kernel(PRESETS["tiny"], "decode", 1, 8, torch.float32, torch.device("cpu")) is None
