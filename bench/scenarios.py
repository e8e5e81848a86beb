"""Train, prefill and decode steps built on the shared workload, and the correctness check.

Each scenario turns (model config, case, dtype, backend) into a `Step`: a zero-argument callable
that runs one step on the backend's device and returns a small device tensor (loss or next
tokens) without reading it back, so no host synchronization happens inside a timed step.
Shapes are static: XLA, Neuron and CUDA graphs compile each step once.

Precision: `train` keeps float32 master weights and runs matmuls under the backend's autocast in
the run's dtype; `prefill` and `decode` cast the weights to the dtype.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from bench.backends.base import DTYPES, Backend
from bench.workload import ModelConfig, build_model, random_tokens

SCENARIOS = ("train", "prefill", "decode")
# Which scenario fields each scenario takes (the run file's `scenarios.<name>` keys).
FIELDS = {
    "train": ("batch", "seq_len"),
    "prefill": ("batch", "prompt_len"),
    "decode": ("batch", "prompt_len", "new_tokens"),
}


@dataclass(frozen=True)
class Case:
    """One measured point: scenario and sizes, plus the run-wide dtype and compile mode."""

    scenario: str
    batch: int
    dtype: str
    compile: str
    seq_len: int | None = None
    prompt_len: int | None = None
    new_tokens: int | None = None

    @property
    def tokens_per_step(self) -> int:
        if self.scenario == "train":
            return self.batch * self.seq_len
        if self.scenario == "prefill":
            return self.batch * self.prompt_len
        return self.batch  # decode: one new token per sequence

    @property
    def length(self) -> int:
        """The attention length the FLOP model uses: trained sequence, prompt, or decode cache."""
        if self.scenario == "train":
            return self.seq_len
        if self.scenario == "prefill":
            return self.prompt_len
        return self.prompt_len + self.new_tokens

    def label(self) -> str:
        sizes = [
            f"{k}={getattr(self, k)}" for k in ("batch", "seq_len", "prompt_len", "new_tokens") if getattr(self, k)
        ]
        return f"{self.scenario} {' '.join(sizes)} {self.dtype} compile={self.compile}"


@dataclass
class Step:
    run: Callable[[], Tensor]  # one step; returns a device tensor, never synchronizes
    prepare_s: float  # wall time of moving, casting and backend.prepare


def build_step(case: Case, cfg: ModelConfig, backend: Backend, seed: int = 0) -> Step:
    builders = {"train": _train_step, "prefill": _prefill_step, "decode": _decode_step}
    backend.set_precision(case.dtype)
    t0 = time.perf_counter()
    model = build_model(cfg, seed)  # identical weights on every backend (built on the CPU)
    run = builders[case.scenario](case, cfg, backend, model, seed)
    backend.synchronize()
    return Step(run=run, prepare_s=time.perf_counter() - t0)


def _train_step(case: Case, cfg: ModelConfig, backend: Backend, model: torch.nn.Module, seed: int) -> Callable:
    dev = backend.device
    model.to(dev)  # float32 master weights; autocast supplies the low-precision matmuls
    data = random_tokens(cfg, case.batch, case.seq_len + 1, seed + 1).to(dev)
    inputs, targets = data[:, :-1].contiguous(), data[:, 1:].contiguous()  # (B, T) each
    optimizer = backend.make_optimizer(model.parameters())
    fwd = backend.prepare(model, (inputs,), "train", case.compile)

    def step() -> Tensor:
        with backend.autocast(case.dtype):
            logits = fwd(inputs)  # (B, T, V)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())
        loss.backward()
        backend.optimizer_step(optimizer)
        optimizer.zero_grad(set_to_none=True)
        backend.step_end()
        return loss.detach()

    return step


def _inference_model(case: Case, backend: Backend, model: torch.nn.Module, cache_len: int) -> torch.nn.Module:
    _cast(model, backend.device_for(case.scenario), case.dtype)
    model.setup_caches(case.batch, cache_len, DTYPES[case.dtype])
    return model


def _cast(model: torch.nn.Module, device: torch.device, dtype: str) -> torch.nn.Module:
    """Inference weights in `dtype` on `device`; the RoPE table stays float32, as in Llama."""
    model.to(device=device, dtype=DTYPES[dtype]).eval().requires_grad_(False)
    model.rope = model.rope.float()
    return model


def _prefill_step(case: Case, cfg: ModelConfig, backend: Backend, model: torch.nn.Module, seed: int) -> Callable:
    dev = backend.device_for("prefill")  # traced Neuron inference takes CPU tensors (see base.py)
    model = _inference_model(case, backend, model, case.prompt_len)
    prompt = random_tokens(cfg, case.batch, case.prompt_len, seed + 2).to(dev)  # (B, P)
    pos = torch.arange(case.prompt_len, device=dev)  # (P,)
    fwd = backend.prepare(model, (prompt, pos), "prefill", case.compile)

    @torch.no_grad()
    def step() -> Tensor:
        logits = fwd(prompt, pos)  # (B, P, V); K/V of the prompt land in the static cache
        first = logits[:, -1].argmax(-1)  # (B,): the first generated token ends TTFT
        backend.step_end()
        return first

    return step


def _decode_step(case: Case, cfg: ModelConfig, backend: Backend, model: torch.nn.Module, seed: int) -> Callable:
    dev = backend.device_for("decode")
    cache_len = case.prompt_len + case.new_tokens
    model = _inference_model(case, backend, model, cache_len)
    prompt = random_tokens(cfg, case.batch, case.prompt_len, seed + 3).to(dev)
    with torch.no_grad():  # fill the cache once, eagerly and untimed: decode is what is measured
        logits = model(prompt, torch.arange(case.prompt_len, device=dev))
    token = logits[:, -1:].argmax(-1)  # (B, 1) static buffer, updated in place each step
    pos = torch.tensor([case.prompt_len], device=dev)  # (1,) on the device: no host sync to advance
    start, end = torch.tensor([case.prompt_len], device=dev), torch.tensor([cache_len], device=dev)
    fwd = backend.prepare(model, (token, pos), "decode", case.compile)

    @torch.no_grad()
    def step() -> Tensor:
        logits = fwd(token, pos)  # (B, 1, V), attending over the whole static cache up to pos
        token.copy_(logits[:, -1:].argmax(-1))  # greedy
        # Advance the position, wrapping to the prompt end so the step's cost never changes.
        pos.copy_(torch.where(pos + 1 < end, pos + 1, start))
        backend.step_end()
        return token

    return step


# Largest max|out - ref| / max|ref| allowed per dtype. bf16 keeps 8 mantissa bits (~4e-3 per
# rounding) and errors compound over layers; fp32 allows reassociation by compilers.
TOLERANCE = {"float32": 1e-3, "tf32": 2e-2, "bfloat16": 6e-2, "float16": 2e-2}


@dataclass
class CheckResult:
    passed: bool
    max_rel_err: float
    tolerance: float
    detail: str = ""


def check(cfg: ModelConfig, backend: Backend, dtype: str, compile_mode: str, seed: int = 0) -> CheckResult:
    """Logits on a fixed input, on this backend, against a CPU float32 reference."""
    tokens = random_tokens(cfg, 2, min(16, cfg.max_seq_len), seed + 4)
    reference = build_model(cfg, seed)
    with torch.no_grad():
        want = reference(tokens).float()
    backend.set_precision(dtype)
    dev = backend.device_for("check")
    model = _cast(build_model(cfg, seed), dev, dtype)
    fwd = backend.prepare(model, (tokens.to(dev),), "check", compile_mode)
    with torch.no_grad():
        got = fwd(tokens.to(dev)).float().cpu()
    if not torch.isfinite(got).all():
        return CheckResult(False, float("inf"), TOLERANCE[dtype], "non-finite logits")
    err = ((got - want).abs().max() / want.abs().max()).item()
    ok = err <= TOLERANCE[dtype]
    detail = "" if ok else f"logits differ from the CPU float32 reference by {err:.2e} (tolerance {TOLERANCE[dtype]:g})"
    return CheckResult(ok, err, TOLERANCE[dtype], detail)
