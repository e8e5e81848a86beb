"""The environment as this process started, before any vendor package was imported.

Vendor packages write environment variables when they are imported: TorchNeuron `setdefault`s
NEURON_LAUNCH_BLOCKING, TORCH_NEURONX_FALLBACK_ONLY_FOR_UNIMPLEMENTED_OPS and others at
`import torch`, which autoloads it (its `__init__.py` L41-65 in the public TorchNeuron source,
parmoham-aws/test-repo-parmoham@98154b86), and torch-neuronx 2.x's `xla.init()` sets
NEURON_RT_NUM_CORES and PJRT variables when torch-xla is imported (pytorch/xla v2.9.0, the
package's `__init__.py` L119-140). A Neuron backend compares the variables it plans with what
the user set, which is this snapshot, not with what the imports left behind
(ppharness/backends/_neuron_vars.py).

`ppharness/__init__.py` imports this module first, so the snapshot is taken when ppharness is
first imported: before torch whenever ppharness is what the process runs (`ppbench`, `python -m
ppharness...`). Every Neuron vendor package imports torch first, so `TORCH_FIRST` tells whether
the snapshot may already hold their writes (a program that imported torch before ppharness).
A leaf: it imports nothing of ours.
"""

from __future__ import annotations

import os
import sys

SNAPSHOT: dict[str, str] = dict(os.environ)
TORCH_FIRST: bool = "torch" in sys.modules


def user_environ() -> dict[str, str]:
    """The environment the user started this process with (a copy)."""
    return dict(SNAPSHOT)


def describe() -> str:
    """When the snapshot was taken, for the record."""
    if not TORCH_FIRST:
        return "taken at ppharness import, before any vendor import"
    return ("taken at ppharness import, after torch had been imported: what torch and the packages it "
            "loaded wrote at import counts as the user's")  # fmt: skip
