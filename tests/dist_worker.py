"""A torchrun worker for tests/test_launch.py: the real runner on a CPU backend that fails on one
rank only, as one GPU of eight running out of memory would. Not a test module (no test_ prefix).

Usage (under `python -m torch.distributed.run --nproc-per-node 2 ...`): dist_worker.py OUT_DIR
"""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist

from ppharness import backends
from ppharness.backends.cpu import CPUBackend
from ppharness.run import config, runner

SMOKE = "configs/runs/smoke.yaml"


class OneRankFails(CPUBackend):
    """Rank 1 alone: out of memory preparing batch 2; its first step fails at batch 3."""

    def prepare(self, module, example_inputs, scenario, compile_mode):
        fwd = super().prepare(module, example_inputs, scenario, compile_mode)
        batch = example_inputs[0].shape[0]
        if dist.get_rank() != 1 or scenario == "check":
            return fwd
        if batch == 2:
            raise torch.OutOfMemoryError("out of memory on rank 1 (test)")
        if batch == 3:

            def broken(*args):
                raise RuntimeError("step failed on rank 1 (test)")

            return broken
        return fwd


def main(out_dir: str) -> None:
    backends.REGISTRY["onerank"] = OneRankFails
    OneRankFails.name = "onerank"
    overrides = ["timing.min_iters=2", "timing.min_seconds=0", "timing.warmup=1",
                 "scenarios={train: {batch: [1, 2, 3, 4], seq_len: 8}, prefill: {batch: [3, 1], prompt_len: 8}}"]  # fmt: skip
    cfg = config.load(SMOKE, overrides, backend="onerank")
    torch.set_num_threads(1)  # two ranks share the test machine's cores
    runner.run(cfg, out_dir)


if __name__ == "__main__":
    main(sys.argv[1])
