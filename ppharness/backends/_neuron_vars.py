"""The environment variables of the two Neuron backends: the ones a run file plans (core
placement, LNC, EFA), checked against what the user set and applied on first use, and the ones
vendor imports write, recorded as seen. "round 2" refers to neuron-round2.md.

Vendor packages write variables when imported (ppharness/startenv.py), so "what the user set"
is the environment the process started with, not `os.environ` after `available()` has imported
torch_neuronx: the plan is compared with the former, and whatever imports changed is recorded
(`env_set_by_import`), overridden where the plan sets the same variable (round 2, item 6).
"""

from __future__ import annotations

import json
import os

from ppharness import startenv
from ppharness.backends._neuron_env import world_size
from ppharness.errors import BenchError

# Multi-node Trn1 over EFA: what AWS's own multi-node training recipes export before torchrun
# (SDK archive/nxd-training/bert.rst and mlp.rst).
EFA_ENV = {"FI_PROVIDER": "efa", "FI_EFA_USE_DEVICE_RDMA": "1"}


# Variables the vendor packages set at import and that change how the record's numbers come about;
# recorded as seen after the imports (round 2, items 6, 8, 9, 11).
OBSERVED = (
    "NEURON_LAUNCH_BLOCKING",  # TorchNeuron: "1" forces synchronous eager (docs/environment_variables.md)
    "NEURON_RT_ASYNC_EXEC_MAX_INFLIGHT_REQUESTS",  # runtime implicit async; removed in Neuron 2.31
    "TORCH_NEURONX_FALLBACK_ONLY_FOR_UNIMPLEMENTED_OPS",  # "0": an op that fails on the device re-runs on the CPU
)
# Prefixes of the variables a vendor import may write (startenv.py); others are not ours to report.
VENDOR_PREFIXES = ("NEURON_", "TORCH_NEURONX_", "XLA_", "PJRT_", "JAX_", "FI_", "ALLREDUCE_")
_APPLIED: dict[str, str] = {}  # what apply_env set in this process, so it is not reported as an import's


def plan_env(values: dict[str, str]) -> dict[str, str]:
    """The variables a backend will set, checked against what the user set: the environment the
    process started with (ppharness/startenv.py), not what vendor imports have written since. A
    different value the user set would compile or place work unlike the record says: refused.
    A value an import wrote (the user set none) is overridden when the backend starts, and
    `import_changes` records it."""
    user = startenv.user_environ()
    for key, value in values.items():
        have = user.get(key)
        if have is not None and have != value:
            raise BenchError(
                f"environment variable {key}={have!r} differs from what the run file asks ({value!r}); "
                "unset it or set the matching backend_options"
            )
    return dict(values)


def apply_env(values: dict[str, str]) -> None:
    """Set the planned variables (before the runtime starts or the first graph compiles)."""
    os.environ.update(values)
    _APPLIED.update(values)


def import_changes() -> dict[str, list[str | None]]:
    """{variable: [as the user set it, as it is now]} for the vendor variables that changed since
    the process started, other than by apply_env: what imports (torch_neuronx, torch_xla,
    libneuronxla) wrote."""
    user, out = startenv.user_environ(), {}
    for key in sorted(set(user) | set(os.environ)):
        if not key.startswith(VENDOR_PREFIXES):
            continue
        now = os.environ.get(key)
        if user.get(key) != now and _APPLIED.get(key) != now:
            out[key] = [user.get(key), now]
    return out


def observed_env() -> dict[str, str]:
    """OBSERVED as they are now (after the vendor imports), "unset" where absent."""
    return {key: os.environ.get(key, "unset") for key in OBSERVED}


def env_record(planned: dict[str, str]) -> dict[str, str]:
    """What `system.versions` says about the environment: the planned values (env.*), what
    imports changed, the observed variables (seen.*) and when the user's snapshot was taken."""
    out = {f"env.{k}": v for k, v in planned.items()}
    changed = import_changes()
    out["env_set_by_import"] = json.dumps(changed, separators=(",", ":"), sort_keys=True) if changed else "none"
    overridden = sorted(k for k in planned if k in changed)
    if overridden:
        out["env_set_by_import"] += f" (overridden by the run file: {', '.join(overridden)})"
    out.update({f"seen.{k}": v for k, v in observed_env().items()})
    out["runtime_async"] = runtime_async_note(os.environ.get("NEURON_RT_ASYNC_EXEC_MAX_INFLIGHT_REQUESTS"))
    out["env_snapshot"] = startenv.describe()
    return out


def runtime_async_note(value: str | None) -> str:
    """What NEURON_RT_ASYNC_EXEC_MAX_INFLIGHT_REQUESTS means for the timing: the runtime's implicit
    async execution, off by default ("0 is disabled"; 3 recommended, "roughly 12%" for training:
    SDK neuron-runtime/guides/configuration-guide.rst L229-237), removed in Neuron 2.31, where the
    variable only warns (about-neuron/announcements/neuron2.x/announce-no-support-implicit-async-mode.rst)."""
    if value in (None, "", "0"):
        return "implicit async execution off (NEURON_RT_ASYNC_EXEC_MAX_INFLIGHT_REQUESTS unset or 0, the default)"
    return (f"NEURON_RT_ASYNC_EXEC_MAX_INFLIGHT_REQUESTS={value}: up to {value} executions in flight on "
            "Neuron runtimes before 2.31; from Neuron 2.31 the variable only warns")  # fmt: skip


def runtime_env(visible_cores: str, num_cores: int, lnc: int) -> dict[str, str]:
    """Core placement for the Neuron runtime (§1 core allocation): exact cores win over a count;
    under torchrun each rank is placed by the launcher, so no count is forced there."""
    values = {}
    if visible_cores:
        values["NEURON_RT_VISIBLE_CORES"] = visible_cores
    elif num_cores and world_size() == 1:
        values["NEURON_RT_NUM_CORES"] = str(num_cores)
    if lnc:
        values["NEURON_LOGICAL_NC_CONFIG"] = str(lnc)  # must match the compiler's -lnc (§1)
    return values


def multi_node() -> bool:
    """More ranks in the job than on this host (torchrun's WORLD_SIZE vs LOCAL_WORLD_SIZE)."""
    local = os.environ.get("LOCAL_WORLD_SIZE", "")
    return local.isdigit() and 0 < int(local) < world_size()


def efa_env(accelerator: str | None) -> dict[str, str]:
    """EFA variables for a multi-node Trainium job (AWS sets them for multi-node Trn1), else none."""
    return dict(EFA_ENV) if multi_node() and accelerator in ("trainium1", "trainium2") else {}
