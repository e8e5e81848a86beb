"""Runs kernels through the backend seam and records each (kernel, shape, variant) as a result row.

One implementation behind both front doors: `ppbench kernels` (`run`, writing results records)
and `pytest -m benchmark benchmarks/` (conftest.py, timing under pytest-benchmark) share
`KernelSession`: validation, the plan of cases, input rings, compilation, the correctness check
against the kernel's float32 reference, and the roofline figures (ppharness.kernels.roofline).

Per case: inputs are made on the CPU from the seed and copied to the device; the variant runs
once on a fresh copy and is checked against the reference (a fast but wrong kernel gets an
INVALID row); then ppharness.core.timing.measure times it, each call on the next input set of a ring
whose total size (RING_BYTES) exceeds any device's last-level cache, so memory-bound kernels
read from memory as they would inside the model, not from a warm cache. Calls shorter than the
backend's `block_under_s` (CUDA: 2 ms) are timed in blocks of calls with one wait each, and a row
whose host could not queue calls as fast as the device ran them says `timing.launch_bound`
(ppharness/core/timing.py): a 10 us kernel timed one call at a time measures the launch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import math
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from ppharness import backends
from ppharness.core import ceilings, timing
from ppharness.core.workload import PRESETS, model_config
from ppharness.errors import BenchError
from ppharness.facts import catalog, sysinfo
from ppharness.kernels import Geometry, Kernel, Shape, discover, map_tensors, max_rel_err, tensors
from ppharness.kernels.roofline import cost_block, priced, roofline_metrics
from ppharness.record.schema import SCHEMA_VERSION
from ppharness.record.writer import ResultWriter, results_path

# Input sets per ring until their total passes this: above the last-level cache of the devices
# ppbench targets (H100/H200 L2 50 MiB, a server CPU's L3 32-384 MiB, MI300X Infinity Cache 256 MiB).
RING_BYTES = 512 * 2**20
MAX_RING = 1024  # tiny inputs: launch overhead dominates anyway; bound the Python-side list
REF_ON_HOST_MAX_FLOPS = 2e10  # larger references run on the device (still float32, plain PyTorch)
# Backends know the scenarios train/prefill/decode/check. A kernel runs the way the training step
# does: eager or lazy (XLA), compiled per the compile mode, never traced into an inference graph.
PREPARE_AS = "train"


@dataclass
class KernelOptions:
    """A resolved `ppbench kernels` invocation (stored as each record's `config`)."""

    backend: str
    kernels: list[str]  # empty: every registered kernel
    dtype: str
    preset: str
    batch: int
    seq_len: int
    compile: str  # "none": eager variants only; else also the compiled variant
    min_seconds: float
    instance: str = "none"  # an EC2 type from configs/instances.yaml, "auto" (DMI) or "none"
    seed: int = 0
    price_basis: str = "on_demand"  # the instance's price basis and region, as a run file's
    region: str = "us-east-1"
    max_other_cpu: float | None = None  # timing.max_other_cpu for every row; None: the protocol's default

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def timing(self) -> timing.TimingConfig:
        limit = {} if self.max_other_cpu is None else {"max_other_cpu": self.max_other_cpu}
        return timing.TimingConfig(
            warmup=2, max_warmup=20, min_iters=10, min_seconds=self.min_seconds, max_iters=100_000, **limit
        )


@dataclass(frozen=True)
class Case:
    kernel: Kernel
    shape: Shape
    variant: str
    compile: str  # "none", or the backend compile mode applied to `variant`
    skip: str = ""  # why this case cannot run here (empty: it can)

    @property
    def id(self) -> str:
        tail = "" if self.compile == "none" else f"+compile-{self.compile}"
        return f"{self.kernel.name}-{self.shape.name}-{self.variant}{tail}"


@dataclass
class Prepared:
    fn: Callable
    ring: list[tuple]
    prepare_s: float  # backend.prepare plus the first (checked) call: compile time
    check: dict


class _Fn(nn.Module):
    """A kernel function as a module, the unit `Backend.prepare` compiles or traces."""

    def __init__(self, fn: Callable):
        super().__init__()
        self.fn = fn

    def forward(self, *args):
        return self.fn(*args)


def validate(opts: KernelOptions) -> tuple[backends.Backend, list[Kernel], Geometry]:
    """Every bad option raises BenchError naming the valid values, before anything is measured."""
    cls = backends.get(opts.backend)
    found = discover()
    unknown = [k for k in opts.kernels if k not in found]
    if unknown:
        raise BenchError(f"unknown kernel {unknown[0]!r}; valid: {', '.join(found)}")
    if opts.dtype not in cls.dtypes:
        raise BenchError(
            f"dtype {opts.dtype!r} is not supported by backend {opts.backend}; valid: {', '.join(cls.dtypes)}"
        )
    if opts.compile not in cls.compile_modes:
        raise BenchError(
            f"compile mode {opts.compile!r} is not supported by backend {opts.backend}; valid: {', '.join(cls.compile_modes)}"
        )
    if opts.compile in cls.graph_modes:
        # A replayed graph copies every non-static input into its own buffers first, and each step
        # here takes the next input set of the ring: the copies would be timed with the kernel.
        valid = [m for m in cls.compile_modes if m not in cls.graph_modes]
        raise BenchError(
            f"--compile {opts.compile} replays graphs on {opts.backend}, which would time input copies; "
            f"valid: {', '.join(valid)}"
        )
    if opts.preset not in PRESETS:
        raise BenchError(f"unknown preset {opts.preset!r}; valid: {', '.join(PRESETS)}")
    cfg = model_config(opts.preset)
    for name in ("batch", "seq_len"):
        if getattr(opts, name) <= 0:
            raise BenchError(f"--{name.replace('_', '-')} must be positive, got {getattr(opts, name)}")
    if opts.seq_len > cfg.max_seq_len:
        raise BenchError(f"--seq-len {opts.seq_len} exceeds max_seq_len {cfg.max_seq_len} of preset {opts.preset}")
    if not opts.min_seconds > 0:
        raise BenchError(f"--min-seconds must be positive, got {opts.min_seconds}")
    if opts.max_other_cpu is not None and not 0 < opts.max_other_cpu <= 1:
        raise BenchError(f"--max-other-cpu must be a fraction of the host in (0, 1], got {opts.max_other_cpu}")
    if opts.instance not in ("none", "auto"):
        catalog.price(opts.instance, opts.price_basis, opts.region)  # CatalogError names the valid ones
    ok, why = cls.available()
    if not ok:
        raise BenchError(f"backend {opts.backend} is not available here: {why}")
    kernels = [found[k] for k in (opts.kernels or found)]
    return backends.make(opts.backend), kernels, Geometry(opts.preset, cfg, opts.batch, opts.seq_len)


def to_device(k: Kernel, inputs: tuple, device: torch.device) -> tuple:
    """A fresh copy of `inputs` on `device` (positions in k.host_inputs stay on the host)."""
    return tuple(
        map_tensors(x, torch.clone) if i in k.host_inputs else map_tensors(x, lambda t: t.to(device, copy=True))
        for i, x in enumerate(inputs)
    )


def make_ring(first: tuple, ring_bytes: int = RING_BYTES) -> list[tuple]:
    """`first` plus copies until the ring holds ring_bytes (at least one set, at most MAX_RING)."""
    set_bytes = sum(t.nbytes for t in tensors(first)) or 1
    n = min(MAX_RING, max(1, math.ceil(ring_bytes / set_bytes)))
    return [first] + [map_tensors(first, torch.clone) for _ in range(n - 1)]


def rotating_step(fn: Callable, ring: list[tuple], backend: backends.Backend) -> Callable[[], Tensor]:
    """One call per step on the next input set; returns a device tensor, never synchronizes."""
    state = {"i": 0}

    def step() -> Tensor:
        args = ring[state["i"] % len(ring)]
        state["i"] += 1
        out = fn(*args)
        backend.step_end()  # lazy backends (XLA) cut and dispatch the graph here
        found = tensors(out)
        return found[0] if found else torch.zeros(())

    return step


class KernelSession:
    """What every case of one run shares: the backend, device facts, geometry, ceilings, the
    reference of the current shape, and the record skeleton."""

    def __init__(self, opts: KernelOptions):
        self.opts = opts
        self.backend, self.kernels, self.geo = validate(opts)
        self.backend.set_precision(opts.dtype)
        self.info = self.backend.describe()
        self.acc = catalog.accelerator(self.info.accelerator) if self.info.accelerator else None
        self.run_id = uuid.uuid4().hex[:12]
        self.harness, self.system = sysinfo.harness(), sysinfo.system(self.info.versions)
        self._ceilings: dict | None = None
        self._ref: tuple[tuple, object, str] | None = None  # (key, outputs, device): one at a time

    @property
    def ceilings(self) -> dict:
        if self._ceilings is None:
            self._ceilings = ceilings.get_ceilings(self.backend, self.opts.dtype, self.info.name)
        return self._ceilings

    def cases(self) -> list[Case]:
        out = []
        for k in self.kernels:
            ok, why = k.available(self.backend, self.opts.dtype)
            for shape in k.shapes(self.geo):
                names = list(k.variants(shape))
                plan = [(v, "none") for v in names]
                if self.opts.compile != "none" and k.compile_variant:
                    plan.append((k.compile_variant, self.opts.compile))
                out += [Case(k, shape, v, mode, why if not ok else k.skip_variant(v, self.backend)) for v, mode in plan]
        return out

    def reference(self, case: Case, cpu_inputs: tuple) -> tuple[object, str]:
        """The kernel's float32 reference for this shape, on the host unless it is too costly there."""
        key = (case.kernel.name, case.shape.name)
        if self._ref is None or self._ref[0] != key:
            self._ref = None  # free the previous shape's outputs first
            flops = case.kernel.cost(case.shape, self.opts.dtype).flops
            dev = self.backend.device if flops > REF_ON_HOST_MAX_FLOPS else torch.device("cpu")
            inputs = tuple(
                map_tensors(x, lambda t: t.to(dev, torch.float32 if t.is_floating_point() else t.dtype, copy=True))
                for x in cpu_inputs
            )
            out = map_tensors(case.kernel.reference(case.shape, *inputs), lambda t: t.float().cpu())
            self._ref = (key, out, dev.type)
        return self._ref[1], self._ref[2]

    def prepare(self, case: Case, ring_bytes: int = RING_BYTES) -> Prepared:
        k, dev = case.kernel, self.backend.device
        cpu_inputs = k.make_inputs(case.shape, self.opts.dtype, self.opts.seed)
        ref, ref_dev = self.reference(case, cpu_inputs)
        fn = k.variants(case.shape)[case.variant]
        first = to_device(k, cpu_inputs, dev)
        self.backend.synchronize()
        t0 = time.perf_counter()
        module = _Fn(fn)
        prepared = self.backend.prepare(module, first, PREPARE_AS, case.compile)
        fn = fn if prepared is module else prepared  # a no-op prepare: skip nn.Module call overhead
        out = fn(*first)  # the first call: lazy compilers compile here
        self.backend.step_end()
        self.backend.synchronize()
        prepare_s = time.perf_counter() - t0
        err, tol = max_rel_err(out, ref), k.tolerance_for(self.opts.dtype)
        check = {"passed": err <= tol, "max_rel_err": err, "tolerance": tol, "reference_device": ref_dev}
        del out, first
        # In-place kernels (adamw, all_reduce) changed the checked copy: time fresh ones.
        return Prepared(fn, make_ring(to_device(k, cpu_inputs, dev), ring_bytes), prepare_s, check)

    def measure(self, case: Case) -> dict:
        rec = self.skeleton(case)
        try:
            with torch.no_grad():
                p = self.prepare(case)
                rec["workload"]["ring_sets"] = len(p.ring)
                rec["workload"]["ring_bytes"] = sum(t.nbytes for t in tensors(p.ring))
                m = timing.measure(
                    rotating_step(p.fn, p.ring, self.backend), self.backend, self.opts.timing(), p.prepare_s
                )
                del p.ring
            self.fill(rec, case, m, p.check)
        except Exception as exc:  # noqa: BLE001 - any failure becomes a recorded row, the run goes on
            return self.failed(case, exc, rec)
        finally:
            self.backend.release_memory()
        return rec

    def failed(self, case: Case, exc: BaseException, rec: dict | None = None) -> dict:
        """The record of a case that could not be measured, with its status and reason."""
        rec = rec if rec is not None else self.skeleton(case)
        rec["status"], rec["reason"] = self.classify(exc)
        rec["validity"] = {"valid": False, "reasons": [rec["reason"]], "warnings": []}
        return rec

    def fill(self, rec: dict, case: Case, m: timing.Measurement, check: dict) -> None:
        summary = timing.summarize(m.samples_s)
        # Fast kernels give thousands of samples: keep them at 1 ns (below the clocks' resolution),
        # and the host times only where they differ from the device clock's.
        samples, host = ([round(x, 9) for x in xs] for xs in (m.samples_s, m.host_samples_s))
        rec["timing"] = {
            "compile_s": m.compile_s, "warmup_iters": m.warmup_iters, "samples_s": samples,
            "host_samples_s": None if host == samples else host, "window_s": m.window_s,
            "compiles_in_window": m.compiles_in_window, "steps_per_sample": m.steps_per_sample,
            "blocking": m.blocking, "launch_bound": m.launch_bound, "source": "ppbench", **summary,
        }  # fmt: skip
        rec["ceilings"] = self.ceilings
        rec["metrics"] = self.metrics(case, summary["median_s"])
        rec["cost"] = priced(rec["cost"], rec["metrics"]["tokens_per_s"])
        reasons = list(m.reasons)
        if not check["passed"]:
            reasons.append(f"check failed: max_rel_err {check['max_rel_err']:.2e} > tolerance {check['tolerance']:g}")
        rec["validity"] = {"valid": not reasons, "reasons": reasons, "warnings": m.warnings, "check": check}
        rec["status"] = "ok" if not reasons else "invalid"
        rec["reason"] = "; ".join(reasons)

    def metrics(self, case: Case, median_s: float) -> dict:
        cost = case.kernel.cost(case.shape, self.opts.dtype)
        return roofline_metrics(
            cost, case.shape.bound, median_s, self.acc, self.opts.dtype, self.info.devices_used,
            self.info.accelerator_reason, self.ceilings, case.shape.tokens,
        )  # fmt: skip

    def classify(self, exc: BaseException) -> tuple[str, str]:
        text = str(exc).strip()
        msg = f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__
        if self.backend.is_oom(exc):
            return "oom", msg
        if isinstance(exc, BenchError):  # e.g. MetricError: MFU above 1
            return "error", str(exc)
        if "BackendCompilerFailed" in type(exc).__name__ or "compile" in type(exc).__module__:
            return "compile_error", msg
        where = traceback.extract_tb(exc.__traceback__)[-1]
        return "error", f"{msg} (at {Path(where.filename).name}:{where.lineno})"

    def skeleton(self, case: Case) -> dict:
        info, geo = self.info, self.geo
        return {
            "schema_version": SCHEMA_VERSION, "run_id": self.run_id,
            "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "status": "error", "reason": "",
            "harness": self.harness, "system": self.system,
            "device": {
                "backend": info.backend, "accelerator": info.accelerator, "accelerator_reason": info.accelerator_reason,
                "name": info.name, "devices_used": info.devices_used, "devices_on_host": info.devices_on_host,
            },
            "workload": {
                "preset": geo.preset, "model": geo.model.to_dict(), "scenario": f"kernel:{case.kernel.name}",
                "batch": geo.batch, "seq_len": geo.seq_len, "prompt_len": None, "new_tokens": None,
                "dtype": self.opts.dtype, "compile": case.compile, "kernel": case.kernel.name,
                "variant": case.variant, "shape": case.shape.name, "dims": case.shape.dims, "bound": case.shape.bound,
            },
            "timing": {}, "metrics": {}, "cost": cost_block(self.opts.instance, info.devices_used, self.opts.price_basis, self.opts.region),
            "validity": {}, "ceilings": None, "config": self.opts.to_dict(),
        }  # fmt: skip


def run(
    opts: KernelOptions,
    out_dir: Path,
    on_case: Callable[[Case, dict | None], None] | None = None,
) -> tuple[Path | None, str]:
    """Measure every planned case; returns (the results file written, or None; the run id).
    Cases that cannot run here (dtype, no torch.distributed) are reported through on_case with
    a None record and are not written."""
    session = KernelSession(opts)
    ceilings.check_cache()  # too large to be ours: refused before anything is measured
    host = opts.instance if opts.instance not in ("none", "auto") else session.system["hostname"]
    writer = ResultWriter(results_path(out_dir, host, session.backend.name))
    lead = _rank() == 0  # under torchrun every rank measures (collectives need all); rank 0 writes
    cases = session.cases()
    by_kernel: dict[str, list[Case]] = {}
    for c in cases:
        by_kernel.setdefault(c.kernel.name, []).append(c)
    for group in by_kernel.values():
        runnable = [c for c in group if not c.skip]
        for c in group:
            if c.skip and on_case:
                on_case(c, None)
        if not runnable:
            continue
        with contextlib.ExitStack() as stack:
            setup_error = None
            try:
                stack.enter_context(group[0].kernel.session(session.backend))  # e.g. all_reduce's process group
            except Exception as exc:  # noqa: BLE001 - this kernel's cases become error rows; the others run
                setup_error = exc
            for c in runnable:
                record = session.measure(c) if setup_error is None else session.failed(c, setup_error)
                if lead:
                    writer.write(record)
                if on_case:
                    on_case(c, record)
    return (writer.path if writer.count else None), session.run_id


def _rank() -> int:
    import torch.distributed as dist  # torch.distributed: multi-rank paths only (slow; absent from some builds)

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
