"""A torchrun worker for tests/test_parallel.py: two steps of each strategy on this rank's share
of the global batch, through the runner's own DataParallel and train step; rank 0 saves the
updated weights. Not a test module (no test_ prefix).

Usage (under `python -m torch.distributed.run --nproc-per-node 2 ...`): parallel_worker.py OUT_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from ppharness.backends.cpu import CPUBackend
from ppharness.core import parallel, scenarios
from ppharness.run import distributed

# The test's shared sizes: tiny model, global batch 8 = micro 2 x accum 2 x 2 ranks.
MODEL = dict(vocab_size=64, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=64, max_seq_len=32)
MICRO, GLOBAL, SEQ, STEPS = 2, 8, 16, 2


class SGDBackend(CPUBackend):
    """Plain SGD: an update proportional to the gradient, so a gradient off by a factor (a sum
    instead of a mean over ranks) shows in the weights; AdamW's first steps would hide it."""

    def optimizer_spec(self):
        return torch.optim.SGD, {"lr": 0.5}


def run(backend, strategy: str, group, checkpointing: bool) -> dict:
    from ppharness.core.workload import ModelConfig

    cfg = ModelConfig(**MODEL)
    case = scenarios.Case("train", batch=MICRO, dtype="float32", compile="none", seq_len=SEQ,
                          accum=GLOBAL // (MICRO * group.world_size))  # fmt: skip
    dp = distributed.DataParallel(backend, group, strategy) if group else backend
    step = scenarios.build_step(case, cfg, dp, seed=0, checkpointing=checkpointing)
    losses = [float(step.run()) for _ in range(STEPS)]
    return {"weights": parallel.full_state(step.model), "losses": losses}


def main(out_dir: str) -> None:
    torch.set_num_threads(1)
    with distributed.session([CPUBackend()]) as group:
        for opt, cls in (("sgd", SGDBackend), ("adamw", CPUBackend)):
            for strategy in parallel.STRATEGIES:
                result = run(cls(), strategy, group, checkpointing=strategy == "fsdp")
                if group.rank == 0:
                    torch.save(result, Path(out_dir) / f"{strategy}-{opt}.pt")


if __name__ == "__main__":
    main(sys.argv[1])
