"""The XLA lane: neuron-xla's ZeRO-1 (torch-xla's ZeroRedundancyOptimizer) and activation
checkpointing (torch-xla's checkpoint), run for real on torch-xla's CPU PJRT device.

One rank only: torch-xla 2.9's CPU PJRT client is one process's. Under torchrun each process sees
`xr.world_size() == 1` and `global_ordinal() == 0`; in one process with CPU_NUM_DEVICES=2 and
xmp.spawn the ZeRO-1 reduce-scatter never meets ("Termination timeout for `reduce scatter
RendezvousKey{... global_devices=[0,1], num_local_participants=2 ...}` ... Expected 2 threads to
join the rendezvous, but only 1 of them arrived on time"). So several ranks of torch-xla ZeRO-1
need NeuronCores; here its one-rank step (reduce-scatter and all-gather over one device, AdamW on
the flat shard) must equal plain AdamW, and the step must bypass xm.optimizer_step.
"""

from __future__ import annotations

import os

import pytest
import torch

from ppharness import backends
from ppharness.backends.cpu import CPUBackend
from ppharness.core import parallel, scenarios
from ppharness.core.workload import PRESETS

pytestmark = pytest.mark.xla


@pytest.fixture(scope="module")
def nx():
    if os.environ.setdefault("PJRT_DEVICE", "CPU") != "CPU":
        pytest.skip(f"the XLA lane runs on PJRT_DEVICE=CPU, not {os.environ['PJRT_DEVICE']}")
    os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")
    pytest.importorskip("torch_xla", reason="the XLA lane needs torch-xla (make test-xla)")
    return backends.get("neuron-xla")


def test_torch_xla_zero1_with_checkpointing_steps_like_adamw(nx):
    from torch_xla.distributed.zero_redundancy_optimizer import ZeroRedundancyOptimizer

    made = []

    class Zero1(nx):
        def make_optimizer(self, params):
            made.append(self.zero1_optimizer(params))
            return made[-1]

    case = scenarios.Case("train", batch=2, dtype="float32", compile="none", seq_len=16, accum=2)
    got_step = scenarios.build_step(case, PRESETS["tiny"], Zero1(), seed=0, checkpointing=True)
    want_step = scenarios.build_step(case, PRESETS["tiny"], CPUBackend(), seed=0)
    for _ in range(2):
        got_loss, want_loss = got_step.run(), want_step.run()
        torch.testing.assert_close(got_loss.cpu(), want_loss, atol=1e-5, rtol=1e-5)
    assert isinstance(made[0], ZeroRedundancyOptimizer) and made[0].grad_clipping is False
    got, want = parallel.full_state(got_step.model), parallel.full_state(want_step.model)
    assert got.keys() == want.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name], atol=1e-5, rtol=1e-4, msg=name)
    wrapped = [m for m in got_step.model.modules() if type(m).__name__ == "CheckpointWrapper"]
    assert len(wrapped) == PRESETS["tiny"].n_layers
