"""The `serve` scenario: serving benchmarks against an OpenAI-compatible endpoint, priced per token.

A serve run file (a top-level `serve:` block instead of `scenarios:`) names the endpoint, or the
command that starts it on this host, and a sweep of fixed input/output lengths and client
concurrency. For each level the real load generator, vLLM's `vllm bench serve` (random prompts of
exactly `input_len` tokens, `--ignore-eos` so every request asks for `output_len` tokens, greedy),
measures every request's TTFT, inter-token latencies and end-to-end time, and ppbench writes one
record per level like every other record (ppharness/record/writer.py): the per-request samples, their
p50/p90/p99, output tokens/s in total and per user, the engine and version the server reports,
$/1M output tokens, and validity (enough requests, errors under a bound, the requested output
length produced). The server's life and every wait live in ppharness/serve/endpoint.py.

How a level maps onto the record contract: the benchmark window is the one "step"
(`timing.samples_s = [duration]`) and its output tokens are `metrics.tokens_per_step`, so
`tokens_per_s = tokens_per_step / median_s` holds as for every scenario, and repeated runs of a
level pool as replicates in `compare`. TPOT per request is (e2e - TTFT) / (output tokens - 1),
as vLLM computes it; tokens/s per user is 1 / median TPOT (InferenceX's "interactivity").
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from ppharness import errors
from ppharness.core import timing
from ppharness.facts import catalog, sysinfo
from ppharness.facts.instance import resolve_instance
from ppharness.record.schema import SCHEMA_VERSION
from ppharness.record.writer import ResultWriter, results_path
from ppharness.serve import endpoint
from ppharness.serve import loadgen as serve_results
from ppharness.serve.config import (  # noqa: F401  (validate, levels: the serve package's front door)
    PRICE_BASES,
    TOP_KEYS,
    Level,
    ServeConfig,
    ServeRunConfig,
    levels,
    requests_for,
    validate,
)


# ---------------------------------------------------------------- running a serve file
def run(cfg: ServeRunConfig, out_dir: Path, on_case: Callable[[str, dict | None], None] | None = None) -> list[Path]:
    """Start the server if the file says how, measure every level, stop the server (always);
    one record per level, written as it finishes. Returns the results files written."""

    s = cfg.serve
    pricing = resolve_instance(cfg)
    exe = serve_results.generator_cmd()
    ctx = _Context(cfg, pricing, uuid.uuid4().hex[:12], exe, serve_results.generator_version(exe))
    writer = ResultWriter(results_path(out_dir, ctx.host, f"serve-{_safe(s.engine)}"))
    server, failure = None, None
    try:
        try:
            started = _now()
            server = endpoint.launch(s.launch) if s.launch else None
            endpoint.wait_ready(s.endpoint, s.ready_timeout_s, server)
            ctx.server = {"launched": server is not None, "ready_s": _now() - started if server else None,
                          **endpoint.describe(s.endpoint)}  # fmt: skip
            if ctx.server["models"] and s.model not in ctx.server["models"]:
                failure = f"the server serves {', '.join(ctx.server['models'])}, not serve.model {s.model!r}"
        except endpoint.EndpointError as exc:
            failure = str(exc)
        if failure is None and exe is None:
            failure = "load generator not found: vllm does not import in this python and no `vllm` is on PATH (pip install vllm)"
        for level in levels(s):
            if on_case:
                on_case(level.label(), None)
            if failure is None and server is not None and server.proc.poll() is not None:
                failure = f"server exited with code {server.proc.returncode}: {server.tail()}"
            rec = ctx.record(level, failure)
            writer.write(rec)
            if on_case:
                on_case(level.label(), rec)
    finally:
        if server is not None:
            endpoint.stop(server)
            server.log.unlink(missing_ok=True)
    return [writer.path] if writer.count else []


def _now() -> float:
    return time.monotonic()


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in ".-" else "-" for c in name) or "engine"


class _Context:
    """What every level of one run shares: provenance, pricing, the server's self-description."""

    def __init__(self, cfg: ServeRunConfig, pricing, run_id: str, exe: list[str] | None, gen_version: str | None):
        self.cfg, self.pricing, self.run_id, self.exe = cfg, pricing, run_id, exe
        self.gen_version = gen_version
        self.system = sysinfo.system({"load_generator": gen_version} if gen_version else None)
        self.host = pricing.instance or self.system["hostname"]
        self.harness = sysinfo.harness()
        self.server: dict = {"launched": bool(cfg.serve.launch), "version": None, "models": []}
        inst = catalog.instance(pricing.instance) if pricing.instance else None
        self.inst = inst
        self.accelerator = (inst.accelerator if inst else None) or cfg.serve.accelerator
        self.devices_used = cfg.serve.devices_used or (inst.devices if inst else None)

    def record(self, level: Level, failure: str | None) -> dict:
        rec = self.skeleton(level)
        if failure is not None:
            return _failed(rec, failure)
        try:
            req, argv = self.measure(level)
        except (endpoint.EndpointError, serve_results.GeneratorOutputError) as exc:
            return _failed(rec, str(exc))
        self.fill(rec, level, req, argv)
        return rec

    def measure(self, level: Level) -> tuple[serve_results.Requests, list[str]]:
        s = self.cfg.serve
        with tempfile.TemporaryDirectory(prefix="ppbench-serve-") as tmp:
            argv = serve_results.generator_argv(self.exe, s, level, requests_for(s, level), Path(tmp))
            log = Path(tmp) / "generator.log"
            rc = endpoint.run_generator(argv, s.level_timeout_s, log)
            result = Path(tmp) / "result.json"
            if rc != 0 or not result.exists():
                tail = " | ".join(log.read_text(errors="replace").strip().splitlines()[-2:]) if log.exists() else ""
                raise endpoint.EndpointError(f"load generator exited with code {rc} and no result: {tail}"[:500])
            try:
                data = json.loads(errors.read_bounded(result, "load generator result", errors.MAX_JSON_BYTES))
            except (errors.BenchError, ValueError, RecursionError) as exc:
                raise serve_results.GeneratorOutputError(f"load generator result is not JSON: {exc}") from None
        return serve_results.parse_vllm(data), argv

    def skeleton(self, level: Level) -> dict:
        s, info = self.cfg.serve, self.server
        acc = catalog.accelerators().get(self.accelerator) if self.accelerator else None
        return {
            "schema_version": SCHEMA_VERSION, "run_id": self.run_id,
            "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "status": "error", "reason": "", "harness": self.harness, "system": self.system,
            "device": {"backend": s.engine, "accelerator": self.accelerator,
                       "accelerator_reason": None if self.accelerator else "no instance or serve.accelerator names one",
                       "name": acc.name if acc else self.system.get("cpu_model"), "devices_used": self.devices_used,
                       "devices_on_host": self.inst.devices if self.inst else None, "world_size": 1, "nodes": 1,
                       "hosts": [self.system["hostname"]]},
            "workload": {"preset": s.model, "model": {"name": s.model, "tokenizer": s.tokenizer or s.model},
                         "scenario": "serve", "batch": level.concurrency, "concurrency": level.concurrency,
                         "seq_len": None, "prompt_len": level.input_len, "new_tokens": level.output_len,
                         "input_len": level.input_len, "output_len": level.output_len,
                         "requests": requests_for(s, level), "warmup_requests": s.warmup_requests,
                         "request_rate": "inf", "dtype": s.dtype, "compile": "none"},
            "timing": {}, "metrics": {}, "cost": self.cost(None), "validity": {},
            "serve": {"engine": s.engine, "endpoint": s.endpoint, **info, "generator": None, "requests": None},
            "config": self.cfg.to_dict(),
        }  # fmt: skip

    def fill(self, rec: dict, level: Level, req: serve_results.Requests, argv: list[str]) -> None:
        s = self.cfg.serve
        met = serve_results.metrics(req)
        rec["metrics"] = met
        summary = timing.summarize([req.duration_s])
        rec["timing"] = {"compile_s": None, "warmup_iters": s.warmup_requests, "samples_s": [req.duration_s],
                         "window_s": req.duration_s, **summary}  # fmt: skip
        rec["serve"]["generator"] = {
            "name": "vllm bench serve",
            "version": self.gen_version,
            "argv": argv[argv.index("bench") :],
        }
        rec["serve"]["requests"] = {"input_lens": req.input_lens, "output_lens": req.output_lens,
                                    "ttft_s": req.ttft_s, "tpot_s": req.tpot_s, "e2e_s": req.e2e_s,
                                    "itl_s": req.itl_s, "errors": req.errors}  # fmt: skip
        rec["cost"] = self.cost(met["tokens_per_s"])
        rules = serve_results.Rules(level.input_len, level.output_len, requests_for(s, level), s.min_requests,
                                    s.max_error_fraction)  # fmt: skip
        reasons, warns = serve_results.validity(req, rules)
        rec["validity"] = {"valid": not reasons, "reasons": reasons, "warnings": warns,
                           "rules": dataclasses.asdict(rules)}  # fmt: skip
        if req.completed == 0:
            rec["status"] = "error"
            rec["reason"] = f"all {req.failed} requests failed: {req.errors[0] if req.errors else 'no requests'}"
            rec["validity"]["valid"] = False
        else:
            rec["status"] = "ok" if not reasons else "invalid"
            rec["reason"] = "; ".join(reasons)

    def cost(self, tokens_per_s: float | None) -> dict:
        """$/1M output tokens: the instance's price (times the share of its accelerators the
        server used, when serve.devices_used says so) over output tokens/s (DESIGN.md, Cost)."""
        p, cfg = self.pricing, self.cfg
        out = {"instance": p.instance, "priced_as": p.source == "config", "instance_source": p.source,
               "basis": cfg.price_basis, "region": cfg.region, "tokens": "output"}  # fmt: skip
        if p.instance is None:
            return {**out, "usd_per_hour": None, "share": None, "prorated": None, "usd_per_million_tokens": None,
                    "price_source": None, "price_date": None, "reason": p.reason}  # fmt: skip
        price = catalog.price(p.instance, cfg.price_basis, cfg.region)
        share = catalog.share(cfg.serve.devices_used, self.inst) if cfg.serve.devices_used else 1.0
        usd = catalog.usd_per_million_tokens(price.usd_per_hour, tokens_per_s, share) if tokens_per_s else None
        return {**out, "usd_per_hour": price.usd_per_hour, "instances": 1, "share": share, "prorated": share < 1.0,
                "usd_per_million_tokens": usd, "price_source": price.source, "price_date": price.date,
                "price_since": price.since.isoformat() if price.since else None}  # fmt: skip


def _failed(rec: dict, reason: str) -> dict:
    rec["status"], rec["reason"] = "error", reason
    rec["validity"] = {"valid": False, "reasons": [reason], "warnings": []}
    return rec
