"""Multi-device runs through torchrun (torch.distributed.run), never a home-made launcher.

`ppbench run FILE --nproc-per-node N [--nnodes M --rdzv-endpoint HOST:PORT]` checks the run file
and the options here, in the launching process, so bad input is one line before any rank starts.
It then hands torchrun the same `run` command without these options: torchrun starts N ranks on
this node (one per device), meets the other nodes' ranks at the rendezvous (c10d, at HOST:PORT;
one node without an endpoint uses a standalone local rendezvous) and restarts nothing
(`--max-restarts 0`: a rank that dies fails the run; finished cases are already written).
Each rank finds torchrun's RANK / LOCAL_RANK / WORLD_SIZE in its environment, so it measures
instead of launching again (ppharness/run/distributed.py).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from ppharness import backends
from ppharness.errors import BenchError, Exit
from ppharness.run.config import RunConfig, check_world

RDZV_ID = "ppbench"  # the same on every node, so all nodes of one run meet in one rendezvous
_ENDPOINT = re.compile(r"^(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):(?P<port>[0-9]{1,5})$")


@dataclass(frozen=True)
class Launch:
    nproc_per_node: int
    nnodes: int = 1
    rdzv_endpoint: str | None = None


def options(nproc_per_node: int | None, nnodes: int | None, rdzv_endpoint: str | None) -> Launch | None:
    """The validated launch options; None for a plain single-process run."""
    if nproc_per_node is None:
        if nnodes is not None or rdzv_endpoint is not None:
            raise BenchError("--nnodes and --rdzv-endpoint need --nproc-per-node (ranks per node)")
        return None
    if nproc_per_node < 1 or (nnodes is not None and nnodes < 1):
        raise BenchError(f"--nproc-per-node and --nnodes must be at least 1, got {nproc_per_node} and {nnodes}")
    nnodes = nnodes or 1
    if rdzv_endpoint is not None:
        match = _ENDPOINT.match(rdzv_endpoint)
        if not match or not 1 <= int(match["port"]) <= 65535:
            raise BenchError(f"--rdzv-endpoint must be HOST:PORT with a port in 1-65535, got {rdzv_endpoint!r}")
    elif nnodes > 1:
        raise BenchError(f"--nnodes {nnodes} needs --rdzv-endpoint HOST:PORT (a host every node can reach)")
    return Launch(nproc_per_node, nnodes, rdzv_endpoint)


def check(cfg: RunConfig, world: int = 1) -> None:
    """What every rank would fail on, found once here: one backend, usable on this node, and a
    global batch the `world` ranks can split (ppharness/core/parallel.py)."""
    check_world(cfg, world)
    if len(cfg.backends) != 1:
        names = ", ".join(cfg.backends)
        raise BenchError(f"a multi-device run measures one backend, the run file names {names}; choose with --backend")
    ok, why = backends.get(cfg.backends[0]).available()
    if not ok:
        raise BenchError(f"backend {cfg.backends[0]} is not available here: {why}")


def torchrun_args(launch: Launch, worker_argv: list[str]) -> list[str]:
    """torchrun's command line: `python -m torch.distributed.run <these>`."""
    args = ["--nproc-per-node", str(launch.nproc_per_node), "--nnodes", str(launch.nnodes), "--max-restarts", "0"]
    if launch.rdzv_endpoint:
        args += ["--rdzv-backend", "c10d", "--rdzv-endpoint", launch.rdzv_endpoint, "--rdzv-id", RDZV_ID]
    else:
        args += ["--standalone"]
    return [*args, "-m", "ppharness.cli", "run", *worker_argv]


def launch(spec: Launch, worker_argv: list[str]) -> None:
    """Run `ppbench run <worker_argv>` on every rank under torchrun, in this process (torchrun's
    own entry point, as the `torchrun` script calls it); raises LaunchFailed if a rank failed."""
    # torch.distributed: multi-rank paths only (slow; absent from some builds)
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    args = get_args_parser().parse_args(torchrun_args(spec, worker_argv))
    saved = os.environ.get("OMP_NUM_THREADS")  # torchrun sets it for the ranks, in this process
    try:
        run(args)
    except ChildFailedError as exc:
        rank, first = exc.get_first_failure()  # torchrun then stops the other ranks (SIGTERM)
        others = f" ({len(exc.failures) - 1} other rank(s) stopped)" if len(exc.failures) > 1 else ""
        message = f"rank {rank} failed first, with exit code {first.exitcode}{others}; see its output above"
        raise LaunchFailed(message, first.exitcode) from None
    except SignalException as exc:
        raise LaunchFailed(f"interrupted by signal {exc.sigval}; finished cases are already written", 130) from None
    finally:
        if saved is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = saved


class LaunchFailed(RuntimeError):
    """A rank failed: its output says why. `code` is the exit code to leave with: the first failing
    rank's when it is one a single run leaves with for a reason (ppharness.errors.Exit: 2 bad input,
    3 some cases not valid, 4 none valid, 130 an interrupt), else 1."""

    def __init__(self, message: str, first_code: int):
        super().__init__(message)
        passed = (Exit.BAD_INPUT, Exit.SOME_INVALID, Exit.NONE_VALID, Exit.INTERRUPTED)
        self.code = first_code if first_code in passed else Exit.FAILED
