"""The shared workload: one Llama-style decoder, defined once, run unchanged on every backend.

RMSNorm, rotary position embeddings (RoPE), grouped-query attention through
`F.scaled_dot_product_attention`, a SwiGLU MLP, optional tied embeddings and a static KV cache
for inference. Weights are random from a fixed seed and built on the CPU in float32, so every
backend starts from the same bytes; nothing is downloaded. The shapes of public models are kept
in `PRESETS` ("-shape": the dimensions, not the trained weights).

Shape legend: B batch, T tokens in this call, S cache length, D model dim, H heads,
KV key/value heads, hd head dim, V vocabulary.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.attention import SDPBackend

from ppharness.errors import BenchError


@dataclass
class ModelConfig:
    vocab_size: int = 8192
    dim: int = 256
    n_layers: int = 4
    n_heads: int = 8
    n_kv_heads: int | None = None  # None: multi-head attention (n_kv_heads == n_heads)
    ffn_dim: int | None = None  # None: the Llama rule, about 8/3 * dim rounded up to 256
    max_seq_len: int = 512
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    tie_embeddings: bool = False

    def __post_init__(self) -> None:
        if self.n_kv_heads is None:
            self.n_kv_heads = self.n_heads
        if self.ffn_dim is None:
            self.ffn_dim = 256 * ((int(8 * self.dim / 3) + 255) // 256)
        for name in ("vocab_size", "dim", "n_layers", "n_heads", "n_kv_heads", "ffn_dim", "max_seq_len"):
            if getattr(self, name) <= 0:
                raise ValueError(f"model.{name} must be positive, got {getattr(self, name)}")
        if self.dim % self.n_heads:
            raise ValueError(f"model.dim ({self.dim}) must be divisible by model.n_heads ({self.n_heads})")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(
                f"model.n_heads ({self.n_heads}) must be divisible by model.n_kv_heads ({self.n_kv_heads})"
            )
        if self.head_dim % 2:
            raise ValueError(f"head dim dim/n_heads ({self.head_dim}) must be even for RoPE")

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# Public models' shapes (config.json of each model). max_seq_len bounds the benchmark's lengths
# and the RoPE table, not the model's trained context.
PRESETS: dict[str, ModelConfig] = {
    "tiny": ModelConfig(vocab_size=256, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=128, max_seq_len=128),
    "small": ModelConfig(vocab_size=8192, dim=256, n_layers=4, n_heads=8, n_kv_heads=4, ffn_dim=768, max_seq_len=512),
    # GPT-2 small: 12 x 768, 12 heads, tied embeddings, 1024 positions. Its GELU MLP (768 -> 3072
    # -> 768) is two matrices; a SwiGLU MLP has three, so the same 4.72M MLP weights per layer take
    # a hidden width of 2048 = 8/3 x 768. RoPE, RMSNorm and no biases drop GPT-2's learned position
    # table and biases: 123.55M parameters against GPT-2's 124.44M (tests/test_workload.py).
    "gpt2-124m-shape": ModelConfig(
        vocab_size=50257, dim=768, n_layers=12, n_heads=12, ffn_dim=2048, max_seq_len=1024, tie_embeddings=True
    ),
    # Llama 3.2 1B: 16 x 2048, 32 heads / 8 KV heads, MLP 8192, RoPE theta 500k, tied embeddings.
    "llama3-1b-shape": ModelConfig(
        vocab_size=128256, dim=2048, n_layers=16, n_heads=32, n_kv_heads=8, ffn_dim=8192,
        max_seq_len=8192, rope_theta=500000.0, tie_embeddings=True,
    ),
    # Llama 3 8B: 32 x 4096, 32 heads / 8 KV heads, MLP 14336, RoPE theta 500k, untied.
    "llama3-8b-shape": ModelConfig(
        vocab_size=128256, dim=4096, n_layers=32, n_heads=32, n_kv_heads=8, ffn_dim=14336,
        max_seq_len=8192, rope_theta=500000.0,
    ),
}  # fmt: skip


def model_config(spec: str | dict) -> ModelConfig:
    """A preset name, or a mapping of ModelConfig fields (optionally with `preset:` as a base)."""
    if isinstance(spec, str):
        if spec not in PRESETS:
            raise KeyError(f"unknown model preset {spec!r}; valid: {', '.join(PRESETS)}")
        return dataclasses.replace(PRESETS[spec])
    fields = dict(spec)
    base = fields.pop("preset", None)
    if base is not None:
        return dataclasses.replace(model_config(base), **fields)
    return ModelConfig(**fields)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        # Normalise in float32 for stability under bf16, as Llama does, then cast back.
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return xf.type_as(x) * self.weight


def rope_table(head_dim: int, max_seq_len: int, theta: float) -> Tensor:
    """cos/sin for every position: (max_seq_len, hd/2, 2), float32."""
    freqs = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    angles = torch.outer(torch.arange(max_seq_len, dtype=torch.float32), freqs)  # (S, hd/2)
    return torch.stack([angles.cos(), angles.sin()], dim=-1)


def apply_rope(x: Tensor, rope: Tensor) -> Tensor:
    """Rotate pairs (x0, x1) of x (B, T, h, hd) by the angles of rope (T, hd/2, 2)."""
    xp = x.float().reshape(*x.shape[:-1], -1, 2)  # (B, T, h, hd/2, 2)
    cos, sin = rope[None, :, None, :, 0], rope[None, :, None, :, 1]  # (1, T, 1, hd/2)
    out = torch.stack([xp[..., 0] * cos - xp[..., 1] * sin, xp[..., 1] * cos + xp[..., 0] * sin], -1)
    return out.flatten(3).type_as(x)


class KVCache(nn.Module):
    """A static cache: fixed shape, written in place with index_copy_, so graphs compile once."""

    def __init__(self, batch: int, n_kv_heads: int, length: int, head_dim: int, dtype: torch.dtype):
        super().__init__()
        shape = (batch, n_kv_heads, length, head_dim)
        self.register_buffer("k", torch.zeros(shape, dtype=dtype), persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=dtype), persistent=False)

    def update(self, pos: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        # pos: (T,) positions; k, v: (B, KV, T, hd)
        self.k.index_copy_(2, pos, k)
        self.v.index_copy_(2, pos, v)
        return self.k, self.v


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.wq = nn.Linear(cfg.dim, cfg.n_heads * cfg.head_dim, bias=False)
        self.wk = nn.Linear(cfg.dim, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.wv = nn.Linear(cfg.dim, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.wo = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.dim, bias=False)
        self.gqa = cfg.n_kv_heads != cfg.n_heads
        self.cache: KVCache | None = None

    def forward(self, x: Tensor, rope: Tensor, pos: Tensor | None, mask: Tensor | None) -> Tensor:
        B, T, _ = x.shape
        q = self.wq(x).view(B, T, self.n_heads, self.head_dim)
        k = self.wk(x).view(B, T, self.n_kv_heads, self.head_dim)
        v = self.wv(x).view(B, T, self.n_kv_heads, self.head_dim)
        q, k = apply_rope(q, rope), apply_rope(k, rope)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, h, T, hd)
        if self.cache is not None and pos is not None:
            k_all, v_all = self.cache.update(pos, k, v)  # (B, KV, S, hd)
            if mask is not None:  # decode: attend over the whole static cache, masked to pos
                k, v = k_all, v_all
        # GQA without copying K/V per query head (enable_gqa): decode reads the cache once.
        if mask is None:  # training and prefill: causal over this call's own tokens (flash path)
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=self.gqa)
        elif T == 1 and self.gqa:
            # Decode: the G query heads that share a KV head attend as G rows over its cache (the
            # mask is the same for all of them), an ordinary equal-heads call. Flash refuses any
            # mask, and torch's memory-efficient kernel (<= 2.11) refuses GQA: with heads packed,
            # it, cuDNN (which also wants more than one query row on some versions) and even math
            # read the cache once per KV head instead of copying it per query head.
            G = self.n_heads // self.n_kv_heads
            y = F.scaled_dot_product_attention(q.reshape(B, self.n_kv_heads, G, self.head_dim), k, v, attn_mask=mask)
            y = y.reshape(B, self.n_heads, 1, self.head_dim)  # (B, KV, G, hd) -> (B, H, 1, hd)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=self.gqa)
        return self.wo(y.transpose(1, 2).reshape(B, T, -1))  # (B, T, D)


class FeedForward(nn.Module):
    """SwiGLU: w2(silu(w1 x) * w3 x)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.w1 = nn.Linear(cfg.dim, cfg.ffn_dim, bias=False)
        self.w3 = nn.Linear(cfg.dim, cfg.ffn_dim, bias=False)
        self.w2 = nn.Linear(cfg.ffn_dim, cfg.dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.attention_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.attention = Attention(cfg)
        self.ffn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.feed_forward = FeedForward(cfg)

    def forward(self, x: Tensor, rope: Tensor, pos: Tensor | None, mask: Tensor | None) -> Tensor:
        x = x + self.attention(self.attention_norm(x), rope, pos, mask)
        return x + self.feed_forward(self.ffn_norm(x))


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.tok_embeddings = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.output = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.output.weight = self.tok_embeddings.weight
        self.register_buffer("rope", rope_table(cfg.head_dim, cfg.max_seq_len, cfg.rope_theta), persistent=False)
        self.cache_len = 0

    def setup_caches(self, batch: int, length: int, dtype: torch.dtype) -> None:
        """Allocate a static KV cache of `length` positions per layer, on the model's device."""
        if length > self.cfg.max_seq_len:
            raise ValueError(f"cache length {length} exceeds model.max_seq_len {self.cfg.max_seq_len}")
        device = self.output.weight.device
        for layer in self.layers:
            cache = KVCache(batch, self.cfg.n_kv_heads, length, self.cfg.head_dim, dtype)
            layer.attention.cache = cache.to(device)
        self.cache_len = length

    def forward(
        self, tokens: Tensor, pos: Tensor | None = None, last_only: bool = False, at: Tensor | None = None
    ) -> Tensor:
        """tokens (B, T) -> logits (B, T, V), or (B, 1, V) for one position: the last with
        `last_only`, or position `at` (1,) (a right-padded prompt's last real token).

        Without `pos`: a plain causal forward (training). With `pos` (T,) and a cache: prefill
        when T > 1 (causal over the prompt, K/V written to the cache), decode when T == 1
        (attend over the whole static cache, masked to positions <= pos). A server's prefill
        needs only the last position's logits (the first generated token): the scenarios ask for
        one position, so the vocabulary head runs once per sequence, not once per prompt token.
        """
        T = tokens.shape[1]
        x = self.tok_embeddings(tokens)  # (B, T, D)
        if pos is None:
            rope, mask = self.rope[:T], None
        else:
            rope = self.rope.index_select(0, pos)
            mask = None
            if T == 1:  # (1, 1, 1, S) boolean: a tensor op on pos, so no graph depends on its value
                mask = (torch.arange(self.cache_len, device=tokens.device) <= pos)[None, None, None, :]
        for layer in self.layers:
            x = layer(x, rope, pos, mask)
        if at is not None:
            x = x.index_select(1, at)  # (B, 1, D)
        elif last_only:
            x = x[:, -1:]  # the head over one position, not T: (B, T, V) logits can outweigh the model
        return self.output(self.norm(x))  # (B, T, V), or (B, 1, V)


def build_model(cfg: ModelConfig, seed: int = 0) -> Transformer:
    """The model in float32 on the CPU, with weights drawn from `seed` (same bytes everywhere).

    Built without nn.Linear's default init (on the meta device, then given storage), since every
    weight is overwritten by the seeded draw anyway; the draw itself is kept for the next build of
    the same model (a sweep builds one per case, plus two per `check`). On llama3-1b-shape that
    cuts a build from ~22 s to ~2 s, time an accelerator would otherwise sit idle."""
    with torch.device("meta"):
        model = Transformer(cfg)
    model.to_empty(device="cpu")
    if cfg.tie_embeddings:
        model.output.weight = model.tok_embeddings.weight  # to_empty gives each module its own tensor
    model.rope = rope_table(cfg.head_dim, cfg.max_seq_len, cfg.rope_theta)  # the meta buffer held no values
    weights = _seeded_weights(cfg, seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(weights[name])
    return model


_KEPT: dict[tuple, dict[str, Tensor]] = {}  # one model's seeded weights, for the next build


def _seeded_weights(cfg: ModelConfig, seed: int) -> dict[str, Tensor]:
    """GPT-2 style scaled init from `seed`, drawn in named_parameters() order (the bytes never
    depend on whether they were kept). Kept while under a quarter of the host's memory, unless
    KEEP_WEIGHTS_ENV says otherwise (`keep_weights`)."""
    key = (*dataclasses.astuple(cfg), seed)
    if key in _KEPT:
        return _KEPT[key]
    gen = torch.Generator().manual_seed(seed)
    with torch.device("meta"):
        shapes = [(name, p.shape) for name, p in Transformer(cfg).named_parameters()]
    weights = {}
    for name, shape in shapes:
        if name.endswith("norm.weight"):
            weights[name] = torch.ones(shape)  # RMSNorm gains stay 1
            continue
        std = 0.02 / (2 * cfg.n_layers) ** 0.5 if name.endswith(("wo.weight", "w2.weight")) else 0.02
        weights[name] = torch.randn(shape, generator=gen) * std
    _KEPT.clear()
    if keep_weights(4 * total_params(cfg)):
        _KEPT[key] = weights
    return weights


# "1": keep the seeded weights for the next build whatever the host's memory; "0": never; unset:
# while they take under a quarter of MemTotal. A VM whose memory grows as it is used (the lent
# GPU machines) starts with a MemTotal far under its size; redrawing llama3-1b-shape's 1.2 B
# numbers costs ~20 s per build there.
KEEP_WEIGHTS_ENV = "PPBENCH_KEEP_WEIGHTS"


def keep_weights(nbytes: int) -> bool:
    """Whether `nbytes` of seeded weights are kept for the next build (KEEP_WEIGHTS_ENV)."""
    said = os.environ.get(KEEP_WEIGHTS_ENV, "").strip()
    if said not in ("", "0", "1"):
        raise BenchError(
            f"{KEEP_WEIGHTS_ENV} must be 1 (keep), 0 (never) or unset (by the host's memory), got {said!r}"
        )
    if said:
        return said == "1"
    return 4 * nbytes < _host_memory_bytes()


def _host_memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not POSIX: keep nothing
        return 0


def attention_inputs(
    cfg: ModelConfig, scenario: str, batch: int, length: int, dtype: torch.dtype, device: torch.device
) -> tuple[Tensor, Tensor, Tensor, dict]:
    """Stand-ins for one layer's SDPA call in `scenario`, with Attention.forward's shapes, dtypes
    and layouts: q is a transposed (B, T, H, hd) view; train/prefill pass this call's transposed
    (B, T, KV, hd) k/v views with is_causal; decode passes the contiguous static cache
    (B, KV, S, hd) with a boolean (1, 1, 1, S) mask, and with grouped heads q packed as
    (B, KV, H/KV, hd). `length` is T, or S for decode."""
    H, KV, hd = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
    T = 1 if scenario == "decode" else length
    q = torch.randn(batch, T, H, hd, device=device, dtype=dtype).transpose(1, 2)
    kw: dict = {"enable_gqa": H != KV}
    if scenario == "decode":
        k = torch.randn(batch, KV, length, hd, device=device, dtype=dtype)
        v = torch.randn_like(k)
        if H != KV:  # Attention.forward's packed decode call: equal heads, no enable_gqa
            q, kw = q.reshape(batch, KV, H // KV, hd), {}
        kw["attn_mask"] = torch.ones(1, 1, 1, length, device=device, dtype=torch.bool)
    else:
        k = torch.randn(batch, T, KV, hd, device=device, dtype=dtype).transpose(1, 2)
        v = torch.randn(batch, T, KV, hd, device=device, dtype=dtype).transpose(1, 2)
        kw["is_causal"] = True
    return q, k, v, kw


def attention_kernel(
    cfg: ModelConfig, scenario: str, batch: int, length: int, dtype: torch.dtype, device: torch.device
) -> str | None:
    """The SDPA kernel torch's dispatcher picks for the workload's attention in `scenario` on
    `device` ("flash_attention", "cudnn_attention", "efficient_attention", "math"), through
    torch._fused_sdp_choice, the function F.scaled_dot_product_attention and inductor consult,
    under the priority in force (call it inside Backend.sdpa_context(scenario)). A prediction
    for stand-in tensors: what a step really ran is ppharness.core.sdpa.observe's. None where
    torch cannot say (a device it has no SDPA dispatch for)."""
    try:
        q, k, v, kw = attention_inputs(cfg, scenario, batch, length, dtype, device)
        choice = torch._fused_sdp_choice(q, k, v, **kw)
    except Exception:  # noqa: BLE001 - XLA and other devices: no answer, never a failed case
        return None
    names = {member.value: name.lower() for name, member in SDPBackend.__members__.items()}
    return names.get(int(choice))


def matmul_params(cfg: ModelConfig) -> int:
    """N of the FLOP formulas: weights used in matmuls. The input embedding is a lookup, not a
    matmul, so it counts only when tied to the output head (then it *is* the head)."""
    d, hd = cfg.dim, cfg.head_dim
    attn = d * cfg.n_heads * hd + 2 * d * cfg.n_kv_heads * hd + cfg.n_heads * hd * d
    mlp = 3 * d * cfg.ffn_dim
    return cfg.n_layers * (attn + mlp) + d * cfg.vocab_size


def total_params(cfg: ModelConfig) -> int:
    """Every parameter, the input embedding included (what the weights occupy in memory)."""
    untied_embedding = 0 if cfg.tie_embeddings else cfg.vocab_size * cfg.dim
    norms = (2 * cfg.n_layers + 1) * cfg.dim
    return matmul_params(cfg) + untied_embedding + norms


def random_tokens(cfg: ModelConfig, batch: int, length: int, seed: int) -> Tensor:
    """Seeded random token ids in [1, vocab): never zeros, never constant."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(1, cfg.vocab_size, (batch, length), generator=gen)
