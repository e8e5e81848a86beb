"""Runs a validated RunConfig: for each backend and case, build, measure, score, price, record.

A case that fails (out of memory, a compiler error, anything else) is recorded with its status
and reason, its memory is released, and the run goes on. Records are written as each case
finishes, so nothing measured is lost if the run is killed.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import socket
import time
import traceback
import uuid
from collections.abc import Callable
from pathlib import Path

from ppharness import backends
from ppharness.core import ceilings, metrics, parallel, scenarios, timing, workload
from ppharness.errors import BenchError
from ppharness.facts import catalog, sysinfo
from ppharness.facts.instance import Pricing, resolve_instance
from ppharness.record import flags
from ppharness.record.schema import SCHEMA_VERSION
from ppharness.record.writer import ResultWriter, results_path
from ppharness.run import distributed, memplan, sweep
from ppharness.run.config import RunConfig, check_world, expand
from ppharness.run.resume import config_hash, device_kind, measured, read_folder

_RESUMED = "_resumed"  # marks a record --resume found in the folder: reused by sweeps, never rewritten


def check_instance(
    pricing: Pricing, info: backends.DeviceInfo, basis: str = "on_demand", region: str = "us-east-1"
) -> None:
    """Refuse to price a device as an instance built around another accelerator (H200 rows priced
    as a p5.48xlarge's H100s): the cost would be another machine's. Unknown devices can't tell."""
    if pricing.instance is None or info.accelerator is None:
        return
    has = catalog.instance(pricing.instance).accelerator
    if has is None or has == info.accelerator:
        return
    same = [n for n, i in sorted(catalog.instances().items()) if i.accelerator == info.accelerator]
    priced = [n for n in same if catalog.price_history(n, basis, region)]  # those with a price at this basis
    hint = ", ".join(f"--set instance={n}" for n in priced or same) or "instance: none"
    where = "" if priced or not same else f" (none has a {basis} price in {region}: set price_basis/region too)"
    raise BenchError(
        f"instance {pricing.instance} has {has} accelerators, but this device is {info.accelerator} "
        f"({info.name}); price it as an instance that has one: {hint}{where}"
    )


def check_caches() -> None:
    """What a run reads besides its run file, checked before anything is measured: a ceilings cache
    too large to be ours is refused (BenchError, one line, exit 2; ppharness/core/ceilings.py)."""
    ceilings.check_cache()


def run(
    cfg: RunConfig,
    out_dir: Path,
    on_case: Callable[[str, dict | None], None] | None = None,
    resume: bool = False,
    repeat: int = 1,
) -> list[Path]:
    """Measure every case of `cfg` on every backend; returns the results files written. With
    `repeat` N, every case is measured N times, interleaved (A B A B, not A A B B): round r measures
    each case once, so a host that drifts during the run drifts for every case alike; each record
    carries `repeat: {index, of}` and compare pools the repetitions as replicates. With `resume`,
    a case `out_dir` already holds k times with the same config_hash is measured only in rounds
    after k (ppharness/run/resume.py). Under torchrun every rank calls this and rank 0 alone writes
    (ppharness/run/distributed.py)."""
    pricing = resolve_instance(cfg)
    chosen = []
    for name in cfg.backends:  # fail before measuring anything if a backend is unusable
        ok, why = backends.get(name).available()
        if not ok:
            raise BenchError(f"backend {name} is not available here: {why}")
        chosen.append(backends.make(name, cfg.backend_options.get(name)))
    env = distributed.torchrun_env()
    check_world(cfg, env["world_size"] if env else 1)  # the global batch over the ranks (launch checks too)
    with distributed.session(chosen) as group:
        lead = group is None or group.rank == 0
        on_case = on_case if lead else None
        if lead:  # every results file this run appends to is checked before anything is measured
            check_caches()  # and the ceilings cache it reads
            host = pricing.instance or socket.gethostname()  # RunContext.host: rank 0 names the file
            for backend in chosen:
                ResultWriter(results_path(out_dir, host, backend.name)).check()
        prior = read_folder(out_dir) if lead and (resume or group) else []  # earlier records: resume, scaling
        run_id = uuid.uuid4().hex[:12]
        run_id = group.broadcast(run_id) if group else run_id
        lanes = []  # per backend: its context, what --resume found, its results file
        for backend in chosen:
            ctx = RunContext(cfg, backend, backend.describe(), pricing, run_id, group)
            done = measured(prior) if resume else {}
            done = group.broadcast(done) if group else done  # every rank skips the same cases
            writer = ResultWriter(results_path(out_dir, ctx.host, backend.name)) if lead else None
            lanes.append((ctx, done, writer))
        for index in range(1, repeat + 1):
            for ctx, done, writer in lanes:
                _round(cfg, ctx, done, writer, on_case, prior, group, (index, repeat))
    return [writer.path for _, _, writer in lanes if writer and writer.count]


def _round(
    cfg: RunConfig,
    ctx: RunContext,
    done: dict[str, list[dict]],
    writer: ResultWriter | None,
    on_case: Callable[[str, dict | None], None] | None,
    prior: list[dict],
    group: distributed.Group | None,
    rep: tuple[int, int],
) -> None:
    """Repetition rep[0] of rep[1]: every case of `cfg` measured once on ctx's backend."""
    index, repeat = rep
    tag = f" [{index}/{repeat}]" if repeat > 1 else ""

    def measure(case: scenarios.Case) -> dict:
        earlier = done.get(ctx.config_hash(case), [])
        if len(earlier) >= index:  # --resume: this repetition was measured before, same resolved config
            rec = earlier[index - 1]
            return {**rec, "workload": dict(rec.get("workload") or {}), _RESUMED: True}
        if on_case:
            on_case(case.label() + tag, None)
        record = ctx.measure_case(case)
        record["repeat"] = {"index": index, "of": repeat}
        if group and writer is not None:  # rank 0, which alone writes
            distributed.add_scaling(record, prior)
        return record

    world = group.world_size if group else 1
    for first in expand(cfg):
        first = with_layout(cfg, first, world)
        # `batch: auto` measures batch 1, 2, 4, ... until OOM or no gain (ppharness/run/sweep.py)
        auto = sweep.is_auto(cfg.scenarios, first)
        fits = functools.partial(memplan.host_refusal, cfg, ctx.info.backend, world=world)
        for case, record in sweep.auto_batches(first, measure, fits=fits) if auto else [(first, measure(first))]:
            if record.pop(_RESUMED, False):
                if on_case:
                    on_case(case.label() + tag, {"status": "skipped", "reason": "measured earlier, --resume"})
                continue
            if writer:
                writer.write(record, case.label() + tag)  # whole on disk, or WriteError ends the run
            if on_case:
                on_case(case.label() + tag, record)


def with_layout(cfg: RunConfig, case: scenarios.Case, world: int) -> scenarios.Case:
    """A train case with its gradient accumulation on `world` ranks (ppharness/core/parallel.py)."""
    if case.scenario != "train":
        return case
    return dataclasses.replace(case, accum=parallel.layout(cfg.parallel, case.batch, world).accum)


class RunContext:
    """What every case of one backend shares: device facts, system facts, checks, ceilings."""

    def __init__(
        self,
        cfg: RunConfig,
        backend: backends.Backend,
        info: backends.DeviceInfo,
        pricing: Pricing,
        run_id: str,
        group: distributed.Group | None = None,
    ):
        self.cfg, self.backend, self.info, self.pricing, self.run_id = cfg, backend, info, pricing, run_id
        self.model_cfg = cfg.model_config
        self.system = sysinfo.system(info.versions)
        self.group = group  # torchrun ranks: measure together, rank 0 records (ppharness/run/distributed.py)
        self.world, self.nodes = (group.world_size, group.nodes) if group else (1, 1)
        if group:
            self.backend = distributed.DataParallel(backend, group, cfg.parallel.strategy)
        # Rank 0's host names the results file and the config hash: it alone writes (a collective).
        self.hostname = group.broadcast(self.system["hostname"]) if group else self.system["hostname"]
        self.host = pricing.instance or self.hostname
        self.harness = sysinfo.harness()
        self.acc = catalog.accelerator(info.accelerator) if info.accelerator else None
        check_instance(pricing, info, cfg.price_basis, cfg.region)
        self._checks: dict[tuple, scenarios.CheckResult] = {}

    def check(self, case: scenarios.Case) -> tuple[scenarios.CheckResult | None, float]:
        """The case's check and the seconds it took here (0 when an earlier case of the same dtype
        and compile mode ran it: one of each per run)."""
        if not self.cfg.check:
            return None, 0.0
        # Train and prefill: the plain forward's logits. Decode: its cached steps alone, which compare
        # every step's logits with a CPU float32 full forward too (scenarios.check_decode), so a
        # forward check there would repeat it, at the cost of one more compiled graph.
        part, run_check = (
            ("decode", scenarios.check_decode) if case.scenario == "decode" else ("forward", scenarios.check)
        )
        key, t0 = (case.dtype, case.compile, part), time.perf_counter()
        if key not in self._checks:
            self._checks[key] = run_check(self.model_cfg, self.backend, case.dtype, case.compile, self.cfg.seed)
            self.backend.release_memory()  # the check's model copy, before the case builds its own
        return self._checks[key], time.perf_counter() - t0

    def config_hash(self, case: scenarios.Case) -> str:
        world = (self.world, self.nodes)
        return config_hash(self.cfg, case, self.info.backend, device_kind(self.info), self.pricing.instance, world)

    def measure_case(self, case: scenarios.Case) -> dict:
        if self.group is not None:
            return distributed.measure_case(self, case)
        rec, step = self.skeleton(case), None
        try:
            chk, check_s = self.check(case)
            step = scenarios.build_step(
                case, self.model_cfg, self.backend, self.cfg.seed, self.cfg.parallel.activation_checkpointing
            )
            # The peak from here on: weights and cache count (still held), the untimed set-up's
            # temporaries (decode's cache fill) do not; optimizer state is created by step 1.
            self.backend.reset_peak_memory()
            m = timing.measure(step.run, self.backend, self.cfg.timing, step.prepare_s)
            mem = self.backend.memory()  # the case's own peak, before anything else runs
            ran = self.backend.observe_attention(step.run)  # one more, untimed step: which SDPA kernel ran
            step = None
            self.fill(rec, case, m, chk, mem, ran)
            rec["timing"]["check_s"] = check_s
        except Exception as exc:  # noqa: BLE001 - any failure becomes a recorded row, the run goes on
            rec["status"], rec["reason"] = self.classify(exc)
            rec["validity"] = {"valid": False, "reasons": [rec["reason"]], "warnings": []}
        finally:
            del step  # after a failure the step (model, optimizer, cache) is still referenced here
            self.backend.release_memory()
        return rec

    def classify(self, exc: BaseException) -> tuple[str, str]:
        msg = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}".strip(": ")
        if self.backend.is_oom(exc):
            return "oom", msg
        if isinstance(exc, metrics.MetricError):
            return "error", str(exc)
        if "BackendCompilerFailed" in type(exc).__name__ or "compile" in type(exc).__module__:
            return "compile_error", msg
        where = traceback.extract_tb(exc.__traceback__)[-1]
        return "error", f"{msg} (at {Path(where.filename).name}:{where.lineno})"

    def skeleton(self, case: scenarios.Case) -> dict:
        info = self.info
        return {
            "schema_version": SCHEMA_VERSION,
            "run_id": self.run_id,
            "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "status": "error",
            "reason": "",
            "config_hash": self.config_hash(case),
            "harness": self.harness,
            "system": self.system,
            "device": {
                "backend": info.backend, "accelerator": info.accelerator, "accelerator_reason": info.accelerator_reason,
                "name": info.name, "devices_used": info.devices_used * self.world, "devices_on_host": info.devices_on_host,
                "world_size": self.world, "nodes": self.nodes, "hosts": self.group.hosts if self.group else [self.hostname],
            },
            "workload": {
                "preset": self.cfg.model if isinstance(self.cfg.model, str) else self.cfg.model.get("preset", "custom"),
                "model": self.model_cfg.to_dict(), "scenario": case.scenario, "batch": case.batch,
                "seq_len": case.seq_len, "prompt_len": case.prompt_len, "new_tokens": case.new_tokens,
                "dtype": case.dtype, "compile": case.compile,
                # what prefill's vocabulary head covers: the last prompt position, as a server does
                # (records without the key, from before, computed it at every position)
                **({"prefill_logits": "last"} if case.scenario == "prefill" else {}),
            },
            "parallel": parallel.record(self.cfg.parallel, self.layout(case)),
            "timing": {}, "metrics": {}, "cost": self.cost(None), "validity": {}, "ceilings": None,
            "config": self.cfg.to_dict(),
        }  # fmt: skip

    def layout(self, case: scenarios.Case) -> parallel.Layout | None:
        """A train case's step: micro-batch x accumulation x ranks (None for inference)."""
        return parallel.Layout(case.batch, case.accum, self.world) if case.scenario == "train" else None

    def fill(
        self,
        rec: dict,
        case: scenarios.Case,
        m: timing.Measurement,
        chk: scenarios.CheckResult | None,
        mem: backends.MemoryStats | None = None,
        ran: dict | None = None,
    ) -> None:
        """`mem`: the case's peak memory; `ran`: Backend.observe_attention's finding."""
        summary = timing.summarize(m.samples_s)
        rec["timing"] = {
            "compile_s": m.compile_s, "warmup_iters": m.warmup_iters, "samples_s": m.samples_s,
            "host_samples_s": m.host_samples_s, "window_s": m.window_s,
            "compiles_in_window": m.compiles_in_window, "compiler_s": m.compiler_s,
            "steps_per_sample": m.steps_per_sample, "blocking": m.blocking, "launch_bound": m.launch_bound,
            "windows": m.windows, **summary,
        }  # fmt: skip
        execution, notes = self.backend.execution_notes()
        dev = self.backend.device_for(case.scenario)
        with self.backend.sdpa_context(case.scenario):  # the dispatcher asked under the order the case ran with
            sdpa = workload.attention_kernel(
                self.model_cfg, case.scenario, case.batch, case.length, backends.DTYPES[case.dtype], dev
            )
        # `sdpa`: the dispatcher's answer for stand-ins; `sdpa_ran`: what one more step showed the profiler
        execution = {**execution, "sdpa": sdpa, **(ran or {})}
        rec["timing"]["execution"] = execution if any(v is not None for v in execution.values()) else None
        if ran and ran.get("sdpa_ran") and sdpa and ran["sdpa_ran"] != sdpa:
            notes = [*notes, f"SDPA: the step ran {ran['sdpa_ran']}, the dispatcher's answer for stand-ins was {sdpa}"]
        mem = mem if mem is not None else self.backend.memory()  # before the ceilings, which allocate too
        ceil = ceilings.get_ceilings(self.backend, case.dtype, self.info.name, self.cfg.timing.max_other_cpu)
        rec["ceilings"] = ceil
        met = metrics.compute_metrics(self.model_cfg, case, summary["median_s"], self.acc, self.info, ceil)
        met["peak_mem_bytes"] = mem.peak_allocated_bytes if mem else None
        met["peak_mem_reserved_bytes"] = mem.peak_reserved_bytes if mem else None
        energy = m.energy or {}
        tokens = case.tokens_per_step * len(m.samples_s) * m.steps_per_sample  # every step of the window
        met["energy_j_per_token"] = energy["energy_j"] / tokens if energy.get("energy_j") is not None else None
        met["mean_power_w"] = energy.get("mean_w")
        # a sampler's other readings (Neuron: sysfs power percent, neuron-monitor core utilization)
        met["telemetry"] = {k: v for k, v in energy.items() if k not in ("energy_j", "mean_w")} or None
        if self.world > 1:
            distributed.scale_metrics(met, self.world)  # one device's figures -> the whole group's
        rec["metrics"] = met
        rec["cost"] = self.cost(met["tokens_per_s"])
        reasons = list(m.reasons)
        if chk is not None and not chk.passed:
            reasons.append(f"check failed: {chk.detail}")
        if ceil and ceil.get("interference"):  # a ceiling measured low makes ceiling_fraction high
            notes = [*notes, f"{flags.UNDER_INTERFERENCE}: not cached; ceiling_fraction may be too high"]
        if (met.get("ceiling_fraction") or 0) > 1:  # no workload beats a true ceiling
            notes = [*notes, f"{flags.ABOVE_CEILING} ({met['ceiling_fraction']:.2f}): the cached ceiling is too "
                     "low; ppbench ceilings --remeasure on a quiet host"]  # fmt: skip
        rec["validity"] = {
            "valid": not reasons, "reasons": reasons, "warnings": [*m.warnings, *notes], "interference": m.interference,
            "check": None if chk is None else {"passed": chk.passed, "max_rel_err": chk.max_rel_err, "tolerance": chk.tolerance, "part": chk.part},
        }  # fmt: skip
        rec["status"] = "ok" if not reasons else "invalid"
        rec["reason"] = "; ".join(reasons)

    def cost(self, tokens_per_s: float | None) -> dict:
        p = self.pricing
        base_cost = {"instance": p.instance, "priced_as": p.source == "config", "instance_source": p.source,
                     "basis": self.cfg.price_basis, "region": self.cfg.region}  # fmt: skip
        if p.instance is None:
            return {**base_cost, "usd_per_hour": None, "share": None, "prorated": None,
                    "usd_per_million_tokens": None, "price_source": None, "price_date": None, "reason": p.reason}  # fmt: skip
        inst = catalog.instance(p.instance)
        price = catalog.price(p.instance, self.cfg.price_basis, self.cfg.region)
        # Several nodes: the price of all the instances, and the share of each that was used.
        per_node = self.info.devices_used * self.world // self.nodes
        share = catalog.share(per_node, inst) if inst.accelerator else 1.0
        usd_per_hour = price.usd_per_hour * self.nodes
        usd = catalog.usd_per_million_tokens(usd_per_hour, tokens_per_s, share) if tokens_per_s else None
        return {**base_cost, "usd_per_hour": usd_per_hour, "instances": self.nodes, "share": share, "prorated": share < 1.0,
                "usd_per_million_tokens": usd, "price_source": price.source, "price_date": price.date,
                "price_since": price.since.isoformat() if price.since else None}  # fmt: skip
