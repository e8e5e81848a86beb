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

from ppharness.core.device import DTYPES, Backend
from ppharness.core.workload import ModelConfig, build_model, random_tokens

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
    accum: int = 1  # train: micro-batches of `batch` per optimizer step (ppharness/core/parallel.py)

    @property
    def tokens_per_step(self) -> int:
        """Tokens one device processes per step; a train step is `accum` micro-batches."""
        if self.scenario == "train":
            return self.batch * self.accum * self.seq_len
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
        accum = f" accum={self.accum}" if self.accum > 1 else ""
        return f"{self.scenario} {' '.join(sizes)}{accum} {self.dtype} compile={self.compile}"


@dataclass
class Step:
    run: Callable[[], Tensor]  # one step; returns a device tensor, never synchronizes
    prepare_s: float  # wall time of moving, casting and backend.prepare
    model: torch.nn.Module | None = None  # the stepped module (train), for the equivalence tests


def build_step(case: Case, cfg: ModelConfig, backend: Backend, seed: int = 0, checkpointing: bool = False) -> Step:
    builders = {"train": _train_step, "prefill": _prefill_step, "decode": _decode_step}
    backend.set_precision(case.dtype)
    t0 = time.perf_counter()
    model = build_model(cfg, seed)  # identical weights on every backend (built on the CPU)
    if checkpointing and case.scenario == "train":
        backend.checkpoint_blocks(model)  # parallel.activation_checkpointing (ppharness/core/parallel.py)
    run = builders[case.scenario](case, cfg, backend, model, seed)
    backend.synchronize()
    return Step(run=run, prepare_s=time.perf_counter() - t0, model=model if case.scenario == "train" else None)


def train_data(cfg: ModelConfig, case: Case, seed: int, rank: int, world: int) -> Tensor:
    """This rank's (accum, batch, seq_len + 1) share of the step's global batch: the global batch
    is drawn once from `seed` and split by rank, then into micro-batches, so a run on any number
    of ranks steps on the same sequences as one process accumulating them all."""
    per_rank = case.batch * case.accum
    data = random_tokens(cfg, per_rank * world, case.seq_len + 1, seed + 1)
    return data[rank * per_rank : (rank + 1) * per_rank].reshape(case.accum, case.batch, case.seq_len + 1)


def _train_step(case: Case, cfg: ModelConfig, backend: Backend, model: torch.nn.Module, seed: int) -> Callable:
    dev = backend.device
    model.to(dev)  # float32 master weights; autocast supplies the low-precision matmuls
    data = train_data(cfg, case, seed, *backend.data_shard()).to(dev)
    micro = [(d[:, :-1].contiguous(), d[:, 1:].contiguous()) for d in data]  # accum x ((B, T), (B, T))
    fwd = backend.prepare(model, (micro[0][0],), "train", case.compile)
    # After prepare: FSDP2 (a strategy's wrapper, ppharness/run/distributed.py) replaces the parameters
    # with their shards, and the optimizer must hold those.
    optimizer = backend.make_optimizer(model.parameters())

    def step() -> Tensor:
        total = None
        for i, (inputs, targets) in enumerate(micro):
            # All but the step's last micro-batch keep their gradients local; the last one's
            # backward reduces the accumulated sum (DDP no_sync, FSDP2 gradient sync off).
            with backend.grad_sync(i == len(micro) - 1):
                with backend.autocast(case.dtype):
                    logits = fwd(inputs)  # (B, T, V)
                # Inline: the low-precision logits are freed once cast, not held through backward.
                loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten()) / len(micro)
                del logits
                loss.backward()
            total = loss.detach() if total is None else total + loss.detach()
        backend.optimizer_step(optimizer)
        optimizer.zero_grad(set_to_none=True)
        backend.step_end()
        return total

    return step


def _inference_model(case: Case, backend: Backend, model: torch.nn.Module, cache_len: int) -> torch.nn.Module:
    _cast(model, backend.device_for(case.scenario), case.dtype)
    model.setup_caches(case.batch, cache_len, DTYPES[case.dtype])
    return model


def _cast(model: torch.nn.Module, device: torch.device, dtype: str) -> torch.nn.Module:
    """Inference weights in `dtype` on `device`; the RoPE table stays float32, as in Llama (set
    aside before the cast: a float32 table that went through bf16 is off by up to 2e-3)."""
    rope = model.rope
    model.to(device=device, dtype=DTYPES[dtype]).eval().requires_grad_(False)
    model.rope = rope.to(device)
    return model


def _prefill_step(case: Case, cfg: ModelConfig, backend: Backend, model: torch.nn.Module, seed: int) -> Callable:
    dev = backend.device_for("prefill")  # traced Neuron inference takes CPU tensors (see base.py)
    model = _inference_model(case, backend, model, case.prompt_len)
    prompt = random_tokens(cfg, case.batch, case.prompt_len, seed + 2).to(dev)  # (B, P)
    pos = torch.arange(case.prompt_len, device=dev)  # (P,)
    fwd = backend.prepare(model, (prompt, pos), "prefill", case.compile)

    @torch.no_grad()
    def step() -> Tensor:
        # What a server's prefill does: K/V of the whole prompt land in the static cache, and the
        # vocabulary head runs at the last position only (vLLM and HF generate compute the logits
        # of the positions they sample from; a (B, P, V) head is P times the work and memory).
        logits = fwd(prompt, pos, last_only=True)  # (B, 1, V)
        first = logits[:, -1].argmax(-1)  # (B,): the first generated token ends TTFT
        backend.step_end()
        return first

    return step


@dataclass
class _Decoder:
    """A prepared decode: the callable and the static buffers every step reads and updates."""

    fwd: Callable[[Tensor, Tensor], Tensor]  # (token, pos) -> logits (B, 1, V)
    token: Tensor  # (B, 1) the last generated token, updated in place
    pos: Tensor  # (1,) the position it goes to, advanced in place
    start: Tensor  # (1,) the prompt end, where pos wraps to
    end: Tensor  # (1,) the cache length


def _decoder(
    case: Case, cfg: ModelConfig, backend: Backend, model: torch.nn.Module, seed: int
) -> tuple[_Decoder, Tensor]:
    """The decode set-up (the timed step's and the check's): the prompt's cache filled, the
    first token chosen, the model prepared. Returns it with the prompt (B, P)."""
    dev = backend.device_for("decode")
    cache_len = case.prompt_len + case.new_tokens
    model = _inference_model(case, backend, model, cache_len)
    prompt = random_tokens(cfg, case.batch, case.prompt_len, seed + 3).to(dev)
    with torch.no_grad():  # fill the cache once, eagerly and untimed: decode is what is measured
        logits = model(prompt, torch.arange(case.prompt_len, device=dev), last_only=True)  # (B, 1, V)
    token = logits.argmax(-1)  # (B, 1) static buffer, updated in place each step
    del logits
    pos = torch.tensor([case.prompt_len], device=dev)  # (1,) on the device: no host sync to advance
    start, end = torch.tensor([case.prompt_len], device=dev), torch.tensor([cache_len], device=dev)
    fwd = backend.prepare(model, (token, pos), "decode", case.compile)
    return _Decoder(fwd, token, pos, start, end), prompt


def _advance(d: _Decoder, backend: Backend) -> None:
    """One decode step: one token per sequence, attending over the whole static cache up to pos."""
    logits = d.fwd(d.token, d.pos)  # (B, 1, V)
    d.token.copy_(logits[:, -1:].argmax(-1))  # greedy
    # Advance the position, wrapping to the prompt end so the step's cost never changes.
    d.pos.copy_(torch.where(d.pos + 1 < d.end, d.pos + 1, d.start))
    backend.step_end()


def _decode_step(case: Case, cfg: ModelConfig, backend: Backend, model: torch.nn.Module, seed: int) -> Callable:
    d, _ = _decoder(case, cfg, backend, model, seed)

    @torch.no_grad()
    def step() -> Tensor:
        _advance(d, backend)
        return d.token

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
    part: str = "forward"  # what was checked: "forward", "decode", or both ("forward+decode")


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


# The decode check's sizes: a short prompt, then enough steps that CUDA graphs warm up, record
# and replay several times (reduce-overhead records on the second or third call).
DECODE_CHECK_PROMPT, DECODE_CHECK_STEPS = 8, 8


def check_decode(cfg: ModelConfig, backend: Backend, dtype: str, compile_mode: str, seed: int = 0) -> CheckResult:
    """Greedy decode through the prepared callable, step by step exactly as the timed decode
    step runs (static cache, boolean mask, token and pos updated in place, step_end after each),
    against a CPU float32 full causal forward over the prompt and the tokens the backend itself
    generated (teacher forcing: one argmax flipped near a tie cannot carry into later steps).
    Catches what the plain forward check cannot: an ignored mask, a bad cache write, a token or
    position gone stale under CUDA-graph replay or a trace."""
    k = max(1, min(DECODE_CHECK_STEPS, cfg.max_seq_len // 2))
    P = max(1, min(DECODE_CHECK_PROMPT, cfg.max_seq_len - k))
    case = Case("decode", batch=2, dtype=dtype, compile=compile_mode, prompt_len=P, new_tokens=k)
    backend.set_precision(dtype)
    d, prompt = _decoder(case, cfg, backend, build_model(cfg, seed), seed)
    inputs, outputs, fwd = [], [], d.fwd

    def keeping(token: Tensor, pos: Tensor) -> Tensor:
        logits = fwd(token, pos)  # (B, 1, V)
        inputs.append(token.clone())  # the token this step consumed
        # Copied on the device now: under CUDA graphs the next replay overwrites this buffer.
        outputs.append(logits[:, -1].to(torch.float32, copy=True))  # (B, V)
        return logits

    d.fwd = keeping
    with torch.no_grad():
        for _ in range(k):
            _advance(d, backend)
    backend.synchronize()
    got = torch.stack([o.cpu() for o in outputs], 1)  # (B, k, V)
    fed = torch.cat([t.cpu() for t in inputs], 1)  # (B, k): t_0 (from the cache fill) .. t_{k-1}
    generated = torch.cat([fed[:, 1:], d.token.cpu()], 1)  # (B, k): the argmax of each step
    with torch.no_grad():  # logits at positions P .. P+k-1 predict what steps 0 .. k-1 generated
        want = build_model(cfg, seed)(torch.cat([prompt.cpu(), fed], 1))[:, P:].float()  # (B, k, V)
    return _judge_decode(got, want, generated, TOLERANCE[dtype])


def _judge_decode(got: Tensor, want: Tensor, generated: Tensor, tol: float) -> CheckResult:
    """got, want (B, k, V) logits of each step; generated (B, k) the backend's greedy tokens."""
    k = got.shape[1]
    if not torch.isfinite(got).all():
        return CheckResult(False, float("inf"), tol, "non-finite logits in a decode step", "decode")
    scale = want.abs().max()
    per_step = (got - want).abs().amax(dim=(0, 2)) / scale  # (k,)
    err = per_step.max().item()
    if err > tol:
        bad = int((per_step > tol).nonzero()[0])
        detail = (f"decode step {bad + 1} of {k}: logits differ from a CPU float32 full forward by "
                  f"{per_step[bad]:.2e} (worst step {int(per_step.argmax()) + 1}: {err:.2e}; tolerance {tol:g})")  # fmt: skip
        return CheckResult(False, err, tol, detail, "decode")
    # Within tolerance, an argmax can only differ where the reference's top-2 margin is at most
    # 2 * tol * scale (each logit is off by at most tol * scale); above that a mismatch means the
    # greedy token was chosen or written back wrong.
    top = want.topk(2, dim=-1).values  # (B, k, 2)
    clear = (top[..., 0] - top[..., 1]) > 2 * tol * scale
    wrong = clear & (generated != want.argmax(-1))
    if wrong.any():
        b, i = (int(x) for x in wrong.nonzero()[0])
        detail = (f"decode step {i + 1} of {k}: greedy token {int(generated[b, i])} is not the reference's "
                  f"{int(want[b, i].argmax())} (sequence {b}, a clear margin)")  # fmt: skip
        return CheckResult(False, err, tol, detail, "decode")
    return CheckResult(True, err, tol, "", "decode")


def combine_checks(results: list[CheckResult]) -> CheckResult:
    """One verdict for a case from its parts: all must pass; the worst error is the one kept,
    and the detail names the part that failed."""
    worst = max(results, key=lambda r: r.max_rel_err / r.tolerance)
    failed = [r for r in results if not r.passed]
    detail = "; ".join(f"{r.part} check: {r.detail}" for r in failed)
    part = "+".join(r.part for r in results)
    return CheckResult(not failed, worst.max_rel_err, worst.tolerance, detail, part)
