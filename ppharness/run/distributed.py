"""One rank of a multi-device run: process group, data parallelism, agreement, and the record.

`ppbench run --nproc-per-node N` re-runs itself under torchrun (ppharness/run/launch.py), one rank per
device. Each rank measures the same case on its own device: `train` is data-parallel (the
backend's `data_parallel`, DDP by default: each rank steps on its own batch and gradients are
all-reduced), `prefill` and `decode` are replicated (each rank serves its own batch). Then:

- Step time: per-rank samples are gathered on rank 0 and the slowest rank defines each step
  (max over ranks per step), since a synchronous group moves at its slowest member's pace.
- Throughput: tokens/s sums over ranks (world x tokens per step / step time); MFU, MBU and the
  ceiling fraction stay per device (the sum over the sum of peaks). Only rank 0 writes.
- Agreement: ranks never decide alone. A control process group (gloo, on the host) carries a
  vote after every warm-up and measured step (ppharness/core/timing.py `agree`), so all ranks run the same
  steps; a rank that fails (out of memory, compile error, anything) casts one "failed" vote at
  the others' next checkpoint, and every rank ends the case there, recorded with the failing
  rank's reason, and goes on to the next case. The first `train` step runs without the gradient
  all-reduce (DDP `no_sync`), so a first-step failure cannot leave the others inside a collective.
  A rank that fails in a later training step, or dies, leaves the others in DDP's all-reduce until
  the process group's timeout; torchrun then ends the job (finished cases are written).
- Scaling: rank 0 adds `metrics.scaling_efficiency` against the single-device record of the same
  case in the results folder (`add_scaling`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import os
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from ppharness.core import guards, scenarios, timing
from ppharness.core.device import Backend
from ppharness.core.parallel import no_grad_sync
from ppharness.errors import BenchError

PEER = "peer_failed"  # a rank that stopped because another failed: not a failure of its own
CONTROL_TIMEOUT = dt.timedelta(hours=2)  # long enough for a rank's first compile (Neuron: minutes)


class PeerFailed(RuntimeError):
    """Another rank failed this case; this rank stops at the same checkpoint."""


def torchrun_env(env: dict[str, str] | None = None) -> dict[str, int] | None:
    """rank, local_rank, world_size, node (torchrun's GROUP_RANK) when run by torchrun, else None."""
    env = os.environ if env is None else env
    if not all(k in env for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE")):
        return None
    try:
        out = {
            k: int(env[v]) for k, v in (("rank", "RANK"), ("local_rank", "LOCAL_RANK"), ("world_size", "WORLD_SIZE"))
        }
        out["node"] = int(env.get("GROUP_RANK", "0"))
    except ValueError:
        raise BenchError("RANK, LOCAL_RANK, WORLD_SIZE and GROUP_RANK must be integers (set by torchrun)") from None
    return out


@dataclass
class Group:
    rank: int
    local_rank: int
    world_size: int
    nodes: int
    hosts: list[str]
    ctrl: Any  # the control process group (gloo)

    def _vote(self, ok: bool, stop: bool) -> tuple[bool, bool]:
        t = torch.tensor([int(ok), int(stop)])
        dist.all_reduce(t, op=dist.ReduceOp.MIN, group=self.ctrl)  # all ok? all want to stop?
        return bool(t[0]), bool(t[1])

    def agree(self, stop: bool = True) -> bool:
        """A checkpoint: True when every rank wants to stop; raises PeerFailed if one failed."""
        ok, all_stop = self._vote(True, stop)
        if not ok:
            raise PeerFailed("stopped: another rank failed")
        return all_stop

    def fail(self) -> None:
        """This rank's one vote after a failure; it meets the others' next checkpoint."""
        self._vote(False, True)

    def gather(self, obj: Any) -> list:
        out = [None] * self.world_size
        dist.all_gather_object(out, obj, group=self.ctrl)
        return out

    def broadcast(self, obj: Any) -> Any:
        box = [obj]
        dist.broadcast_object_list(box, src=0, group=self.ctrl)
        return box[0]


@contextlib.contextmanager
def session(backends: list[Backend]) -> Iterator[Group | None]:
    """The process group of a torchrun rank (None when not run by torchrun)."""
    env = torchrun_env()
    if env is None or env["world_size"] == 1:  # one rank: the plain single-device run
        yield None
        return
    if len(backends) != 1:
        names = ", ".join(b.name for b in backends)
        raise BenchError(f"a multi-device run measures one backend, the run file names {names}; choose with --backend")
    backend = backends[0]
    backend.bind_local_rank(env["local_rank"])  # before anything touches the device
    dist.init_process_group(backend=backend.distributed_backend(), init_method=backend.distributed_init_method())
    try:
        ctrl = dist.new_group(backend="gloo", timeout=CONTROL_TIMEOUT)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "node": env["node"]}
        group = Group(env["rank"], env["local_rank"], env["world_size"], 1, [], ctrl)
        peers = group.gather(me)
        guards.set_siblings({p["pid"] for p in peers if p["host"] == me["host"]} - {me["pid"]})
        group.nodes = len({(p["node"], p["host"]) for p in peers})
        group.hosts = sorted({p["host"] for p in peers})
        yield group
    finally:
        guards.set_siblings(set())
        dist.destroy_process_group()


class DataParallel:
    """A backend as one rank sees it: `train` modules are wrapped for the run file's
    `parallel.strategy` (after a checkpoint: every rank built its model, so all enter the
    collectives): DDP (`data_parallel`), ZeRO-1 (the same, with `zero1_optimizer`) or FSDP2
    (`fully_shard`); each rank steps on its share of the global batch (`data_shard`).
    Everything else is the backend's own."""

    def __init__(self, inner: Backend, group: Group, strategy: str = "ddp"):
        self._inner, self._group, self._strategy = inner, group, strategy
        self._wrapped: torch.nn.Module | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def prepare(self, module: torch.nn.Module, example_inputs: tuple, scenario: str, compile_mode: str) -> Callable:
        if scenario != "train":
            return self._inner.prepare(module, example_inputs, scenario, compile_mode)
        self._group.agree()
        if self._strategy == "fsdp":
            # FSDP2 all-gathers in every forward, so a local first step cannot shield the others.
            self._wrapped = self._inner.fully_shard(module)
            return self._inner.prepare(self._wrapped, example_inputs, scenario, compile_mode)
        self._wrapped = self._inner.data_parallel(module)
        return _LocalFirstStep(
            self._inner.prepare(self._wrapped, example_inputs, scenario, compile_mode), self._wrapped
        )

    def make_optimizer(self, params: Any) -> torch.optim.Optimizer:
        if self._strategy == "zero1":
            return self._inner.zero1_optimizer(params)
        return self._inner.make_optimizer(params)

    def grad_sync(self, sync: bool) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext() if sync else no_grad_sync(self._wrapped)

    def data_shard(self) -> tuple[int, int]:
        return self._group.rank, self._group.world_size


class _LocalFirstStep:
    """Runs the first call under DDP's `no_sync` (no gradient all-reduce in that step's
    backward): a rank whose first step fails cannot leave the others waiting in a collective,
    and the step's vote then ends the case everywhere. Later calls all-reduce as usual. With
    gradient accumulation that first call is the first micro-batch, whose gradients the step's
    last micro-batch all-reduces with the rest, so the first step is the exact global step; with
    one micro-batch per step the replicas differ by that one local warm-up update, which changes
    no step's cost. (ZeRO-1's optimizer step broadcasts parameters: a rank that fails in the
    first forward then leaves the others there until the process group's timeout.)"""

    def __init__(self, fwd: Callable, ddp: torch.nn.Module):
        self.fwd, self.ddp, self.first = fwd, ddp, True

    def __call__(self, *args: Any) -> Any:
        if not self.first:
            return self.fwd(*args)
        self.first = False
        no_sync = getattr(self.ddp, "no_sync", None)
        with no_sync() if no_sync is not None else contextlib.nullcontext():
            return self.fwd(*args)


def measure_case(ctx: Any, case: scenarios.Case) -> dict:
    """Measure `case` on every rank; rank 0 builds the record and every rank returns it.
    `ctx` is the runner's RunContext (skeleton, check, fill, classify)."""
    group: Group = ctx.group
    parts = group.gather(_measure_here(ctx, case))
    return group.broadcast(_record(ctx, case, parts) if group.rank == 0 else None)


def _measure_here(ctx: Any, case: scenarios.Case) -> dict:
    group: Group = ctx.group
    here = {"rank": group.rank, "status": "ok", "reason": ""}
    step = None
    try:
        chk, _ = ctx.check(case)
        step = scenarios.build_step(
            case, ctx.model_cfg, ctx.backend, ctx.cfg.seed, ctx.cfg.parallel.activation_checkpointing
        )
        ctx.backend.reset_peak_memory()  # after set-up, as in runner.measure_case
        m = timing.measure(step.run, ctx.backend, ctx.cfg.timing, step.prepare_s, agree=group.agree)
        m.last_output = None  # a device tensor: not sent to rank 0
        mem = ctx.backend.memory()
        group.agree()  # the case's last checkpoint: nothing below can fail
        return {**here, "m": m, "chk": chk, "peak_mem": mem.peak_allocated_bytes if mem else None}
    except PeerFailed as exc:
        return {**here, "status": PEER, "reason": str(exc)}
    except dist.DistError:
        raise  # the group itself is broken (a rank died): nothing left to agree with
    except Exception as exc:  # noqa: BLE001 - any failure becomes a recorded row, the sweep goes on
        group.fail()
        status, reason = ctx.classify(exc)
        return {**here, "status": status, "reason": reason}
    finally:
        step = None  # after a failure the step (model, optimizer, cache) is still referenced here
        ctx.backend.release_memory()


def _record(ctx: Any, case: scenarios.Case, parts: list[dict]) -> dict:
    rec = ctx.skeleton(case)
    failed = [p for p in parts if p["status"] not in ("ok", PEER)]
    try:
        if failed or any(p["status"] == PEER for p in parts):
            first = (
                failed[0] if failed else {"rank": "?", "status": "error", "reason": "a rank stopped without a reason"}
            )
            more = f" (and {len(failed) - 1} more rank(s))" if len(failed) > 1 else ""
            rec["status"], rec["reason"] = first["status"], f"rank {first['rank']}: {first['reason']}{more}"
            reasons = [f"rank {p['rank']}: {p['reason']}" for p in failed] or [rec["reason"]]
            rec["validity"] = {"valid": False, "reasons": reasons, "warnings": []}
            return rec
        m = combine([p["m"] for p in parts])
        m.reasons += [
            f"rank {p['rank']}: check failed: {p['chk'].detail}" for p in parts[1:] if p["chk"] and not p["chk"].passed
        ]
        ctx.fill(rec, case, m, parts[0]["chk"])
        mems = [p["peak_mem"] for p in parts if p["peak_mem"] is not None]
        rec["metrics"]["peak_mem_bytes"] = max(mems) if mems else None  # the fullest device
        rec["timing"]["step_time"] = "slowest rank per step"
        rec["timing"]["rank_median_s"] = [timing.summarize(p["m"].samples_s)["median_s"] for p in parts]
    except Exception as exc:  # noqa: BLE001 - e.g. MFU above 1: an error row, never a number
        rec["status"], rec["reason"] = ctx.classify(exc)
        rec["validity"] = {"valid": False, "reasons": [rec["reason"]], "warnings": []}
    return rec


# Sampler readings other than energy_j/mean_w that add up over the chips the ranks read.
ADDITIVE_TELEMETRY = ("power_above_background_w", "energy_above_background_j")


def combine(parts: list[timing.Measurement]) -> timing.Measurement:
    """One measurement of the group from each rank's: each step takes the slowest rank's time;
    compile and window times the longest; energy and power add up; reasons are kept by rank."""
    n = min(len(p.samples_s) for p in parts)

    def slowest(attr: str) -> list[float]:
        return [max(getattr(p, attr)[i] for p in parts) for i in range(n)]

    energy = None
    if all(p.energy for p in parts):
        # A rank whose sampler read no chip (`power_chips: []`: another rank on its chip read it,
        # Neuron) adds nothing: one reading per chip, not one per rank.
        readers = [p.energy for p in parts if p.energy.get("power_chips", True) != []] or [parts[0].energy]
        # Neuron labels its figure as power above background (ppharness/backends/_neuron_power.py)
        extra = [k for k in ADDITIVE_TELEMETRY if any(k in e for e in readers)]
        energy = {k: _sum_or_none(e.get(k) for e in readers) for k in ("energy_j", "mean_w", *extra)}
        if extra and readers[0].get("power_basis"):
            energy["power_basis"] = readers[0]["power_basis"]  # what the summed figure is
        why = list(dict.fromkeys(e["power_reason"] for e in readers if e.get("power_reason")))
        if why:
            energy["power_reason"] = "; ".join(why)
    counts = [p.compiles_in_window for p in parts]
    return dataclasses.replace(
        parts[0],
        compile_s=max(p.compile_s for p in parts),
        warmup_iters=max(p.warmup_iters for p in parts),
        samples_s=slowest("samples_s"),
        host_samples_s=slowest("host_samples_s"),
        window_s=max(p.window_s for p in parts),
        compiles_in_window=None if None in counts else sum(counts),
        energy=energy,
        reasons=_by_rank([p.reasons for p in parts]),
        warnings=_by_rank([p.warnings for p in parts]),
        last_output=None,
        interference={str(r): getattr(p, "interference", None) for r, p in enumerate(parts)},
    )


def _sum_or_none(values: Iterator[float | None]) -> float | None:
    values = list(values)
    return None if any(v is None for v in values) else float(sum(values))


def _by_rank(lists: list[list[str]]) -> list[str]:
    """Each distinct message once, prefixed with the ranks that reported it."""
    seen: dict[str, list[int]] = {}
    for rank, messages in enumerate(lists):
        for msg in messages:
            seen.setdefault(msg, []).append(rank)
    everyone = len(lists)
    return [
        f"{'all ranks' if len(r) == everyone > 1 else 'rank ' + ','.join(map(str, r))}: {msg}"
        for msg, r in seen.items()
    ]


def scale_metrics(met: dict, world: int) -> None:
    """One device's figures (at the slowest rank's step time) -> the whole group's: work per
    step, tokens/s, achieved TFLOP/s and GB/s add up over `world` devices; per-device fractions
    (MFU, MBU, ceiling) are unchanged; energy per token divides the summed energy by all tokens."""
    for key in ("tokens_per_step", "tokens_per_s", "achieved_tflops", "achieved_gbps"):
        if met.get(key) is not None:
            met[key] *= world
    met["tokens_per_s_per_device"] = met["tokens_per_s"] / world
    if met.get("energy_j_per_token") is not None:
        met["energy_j_per_token"] /= world


SAME_CASE = [("device", "backend"), ("device", "name"), ("workload", "preset"), ("workload", "model"),
             ("workload", "scenario"), ("workload", "batch"), ("workload", "seq_len"), ("workload", "prompt_len"),
             ("workload", "new_tokens"), ("workload", "dtype"), ("workload", "compile")]  # fmt: skip


def add_scaling(rec: dict, prior: list[dict]) -> None:
    """`metrics.scaling_efficiency` = tokens/s on N devices / (N x tokens/s on one device), against
    the latest valid single-device record of the same case (backend, device, model, sizes, dtype,
    compile) in the results folder; null with `scaling_reason` when there is none."""
    world = (rec.get("device") or {}).get("world_size", 1)
    met = rec.get("metrics") or {}
    out = {"scaling_efficiency": None, "scaling_baseline_tokens_per_s": None, "scaling_baseline_run_id": None}
    if rec.get("status") not in ("ok", "invalid") or not met.get("tokens_per_s"):
        met.update(out, scaling_reason=f"this case did not measure ({rec.get('status')})")
        return

    def same(other: dict) -> bool:
        return all((other.get(a) or {}).get(b) == (rec.get(a) or {}).get(b) for a, b in SAME_CASE)

    singles = [r for r in prior if (r.get("device") or {}).get("world_size", 1) == 1 and same(r)]
    ok = [r for r in singles if r.get("status") == "ok" and (r.get("metrics") or {}).get("tokens_per_s")]
    if not ok:
        why = "only invalid or failed ones" if singles else "none"
        met.update(out, scaling_reason=f"no valid single-device record of this case in the results folder ({why})")
        return
    base = max(ok, key=lambda r: str(r.get("created_at", "")))
    base_tps = base["metrics"]["tokens_per_s"]
    out.update(
        scaling_efficiency=met["tokens_per_s"] / (world * base_tps),
        scaling_baseline_tokens_per_s=base_tps,
        scaling_baseline_run_id=base.get("run_id"),
    )
    met.update(out, scaling_reason="")
