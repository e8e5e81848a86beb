"""The run file's `parallel:` section: how a training step spreads over the ranks of a run.

    parallel:
      strategy: ddp            # ddp | zero1 | fsdp, as the backend supports (Backend.strategies)
      global_batch: 256        # sequences per optimizer step, over every rank (null: batch x ranks)
      activation_checkpointing: false

With `global_batch` set, the train scenario's `batch` is the micro-batch: the sequences one rank
runs through one forward and backward. The harness derives the gradient accumulation
global_batch / (micro-batch x world size) and refuses a global batch the world cannot divide,
so every rank steps the same number of equal micro-batches and the step is the global batch's
(ppharness/core/scenarios.py `_train_step`: each micro-batch's loss is divided by the accumulation, the
strategy averages over ranks, so the gradient is the mean over the global batch).

Each strategy is the framework's own implementation, never a home-made one:
- ddp:   torch DistributedDataParallel (cpu, cuda); on neuron-xla xm.optimizer_step's all-reduce.
- zero1: DDP's all-reduce plus torch.distributed.optim.ZeroRedundancyOptimizer, which keeps each
         rank's share of the AdamW state and broadcasts the updated parameters (cpu, cuda); on
         neuron-xla torch-xla's own ZeroRedundancyOptimizer (ppharness/backends/neuron_xla.py)
         (reduce-scatter, sharded AdamW, all-gather), what neuronx-distributed's ZeRO-1 builds on.
- fsdp:  FSDP2, torch.distributed.fsdp.fully_shard on every decoder block and then the root.
Activation checkpointing wraps every decoder block with torch's checkpoint_wrapper
(non-reentrant torch.utils.checkpoint), as torch's FSDP recipes apply it.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from ppharness.core.workload import Block
from ppharness.errors import BenchError

STRATEGIES = ("ddp", "zero1", "fsdp")


@dataclass
class ParallelConfig:
    strategy: str = "ddp"
    global_batch: int | None = None  # sequences per optimizer step over all ranks; None: batch x world
    activation_checkpointing: bool = False


KEYS = {f.name for f in dataclasses.fields(ParallelConfig)}


def parse(value: Any, backends: dict[str, tuple[str, ...]]) -> ParallelConfig:
    """The validated section; `backends` maps each backend of the run to the strategies it runs."""
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise BenchError(f"parallel must be a mapping of {', '.join(sorted(KEYS))}, got {value!r}")
    for key in value:
        if key not in KEYS:
            raise BenchError(f"unknown key parallel.{key}; valid: {', '.join(sorted(KEYS))}")
    out = ParallelConfig(**value)
    if out.strategy not in STRATEGIES:
        raise BenchError(f"unknown parallel.strategy {out.strategy!r}; valid: {', '.join(STRATEGIES)}")
    for name, supported in backends.items():
        if out.strategy not in supported:
            raise BenchError(
                f"backend {name} cannot run parallel.strategy {out.strategy}; use one of: {', '.join(supported)}"
            )
    gb = out.global_batch
    if gb is not None and (not isinstance(gb, int) or isinstance(gb, bool) or gb <= 0):
        raise BenchError(f"parallel.global_batch must be a positive integer (sequences) or null, got {gb!r}")
    if not isinstance(out.activation_checkpointing, bool):
        raise BenchError(
            f"parallel.activation_checkpointing must be true or false, got {out.activation_checkpointing!r}"
        )
    return out


@dataclass(frozen=True)
class Layout:
    """One training step's shape: global = micro_batch x accum x world."""

    micro_batch: int
    accum: int
    world: int

    @property
    def global_batch(self) -> int:
        return self.micro_batch * self.accum * self.world


def layout(cfg: ParallelConfig, micro_batch: int, world: int) -> Layout:
    """The step's layout for a train case of `micro_batch` on `world` ranks; one line naming the
    fix when the world cannot divide the global batch into equal micro-batches."""
    if cfg.global_batch is None:
        return Layout(micro_batch, 1, world)
    gb = cfg.global_batch
    if gb % world:
        up = world * -(-gb // world)
        raise BenchError(
            f"parallel.global_batch {gb} is not divisible by the world size {world}; "
            f"use a multiple of {world} (e.g. {up}) or a world size that divides {gb}"
        )
    per_rank = gb // world
    if per_rank % micro_batch:
        ok = [d for d in range(1, per_rank + 1) if per_rank % d == 0 and d <= micro_batch]
        raise BenchError(
            f"parallel.global_batch {gb} over {world} rank(s) is {per_rank} sequences per rank, not a multiple of "
            f"the micro-batch scenarios.train.batch {micro_batch}; use a micro-batch of {ok[-1]}"
        )
    return Layout(micro_batch, per_rank // micro_batch, world)


def record(cfg: ParallelConfig, lay: Layout | None) -> dict:
    """The record's `parallel` block (train cases; other scenarios are replicated per rank)."""
    out = {"strategy": cfg.strategy, "activation_checkpointing": cfg.activation_checkpointing}
    if lay is None:
        return {**out, "global_batch": None, "micro_batch": None, "grad_accum": None, "world_size": None}
    return {**out, "global_batch": lay.global_batch, "micro_batch": lay.micro_batch, "grad_accum": lay.accum,
            "world_size": lay.world}  # fmt: skip


# --- the frameworks' own wrappers (cpu, cuda; neuron-xla overrides where XLA differs) ------------
def checkpoint_blocks(model: torch.nn.Module) -> None:
    """Activation checkpointing on every decoder block: only each block's input is kept, its
    activations are recomputed in backward (torch's checkpoint_wrapper, non-reentrant)."""
    # torch.distributed: multi-rank paths only (slow; absent from some builds)
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import (
        apply_activation_checkpointing,
        checkpoint_wrapper,
    )

    apply_activation_checkpointing(model, checkpoint_wrapper, check_fn=lambda m: isinstance(m, Block))


def fully_shard(model: torch.nn.Module) -> torch.nn.Module:
    """FSDP2: each decoder block is one unit of all-gather/reduce-scatter, the root the rest
    (embeddings, final norm, the head; a tied head shares the embedding's shard)."""
    # torch.distributed: multi-rank paths only (slow; absent from some builds)
    from torch.distributed.fsdp import fully_shard as shard

    for layer in model.layers:
        shard(layer)
    shard(model)
    return model


@contextlib.contextmanager
def no_grad_sync(wrapped: torch.nn.Module | None) -> Iterator[None]:
    """A micro-batch whose gradients stay local (all but the last of a step): DDP's no_sync,
    FSDP2's set_requires_gradient_sync(False); nothing for a module with neither (XLA, one rank)."""
    if wrapped is not None and hasattr(wrapped, "no_sync"):
        with wrapped.no_sync():
            yield
    elif wrapped is not None and hasattr(wrapped, "set_requires_gradient_sync"):
        wrapped.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            wrapped.set_requires_gradient_sync(True)
    else:
        yield


def full_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter as a whole CPU tensor (FSDP2's DTensor shards gathered), by the name it
    has without wrappers: what the equivalence tests compare across strategies."""
    out = {}
    for name, p in model.named_parameters():
        t = p.full_tensor() if hasattr(p, "full_tensor") else p
        out[name.replace("_checkpoint_wrapped_module.", "").replace("module.", "", 1)] = t.detach().cpu().clone()
    return out
