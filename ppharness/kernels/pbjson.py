"""pytest-benchmark JSON <-> ppbench result records, for the kernels' second front door.

Writing side (`extra_info`, `machine_info`): what the pytest front door (kernels/conftest.py,
test_bench_kernels.py) puts into pytest-benchmark's JSON: per benchmark, the kernel, shape,
variant, dtype, FLOPs and bytes in `extra_info`; per session, the device, system, harness and
measured ceilings under `machine_info["ppbench"]`.

Reading side (`read`, registered in the `readers` of ppharness.record.load.load for `.json`): turns a
`--benchmark-json` file into records of the results schema, timing summarised by
ppharness.core.timing.summarize from the raw per-round times (`stats.data`) and roofline figures by
ppharness.kernels.roofline, so `ppbench show out.json` renders the same table as `ppbench kernels`.
Benchmarks that ppbench did not write become rows too (scenario `pytest:<name>`), with FLOP and
byte figures only when their extra_info carries `flops` / `bytes`.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from ppharness.core import timing
from ppharness.core.metrics import MetricError
from ppharness.errors import MAX_JSON_BYTES, BenchError, read_bounded
from ppharness.facts import catalog
from ppharness.kernels import Cost, tensors
from ppharness.kernels.roofline import cost_block, roofline_metrics
from ppharness.record.schema import SCHEMA_VERSION, check_record

MIN_ROUNDS = 5  # fewer timed rounds than this: INVALID (pytest-benchmark's own default minimum)


def extra_info(session, case, prepared, compile_s: float) -> dict:
    """The JSON-able facts of one benchmark (session: ppharness.kernels.run.KernelSession)."""
    cost = case.kernel.cost(case.shape, session.opts.dtype)
    geo = session.geo
    return {
        "ppbench": 1, "kernel": case.kernel.name, "variant": case.variant, "shape": case.shape.name,
        "dims": case.shape.dims, "bound": case.shape.bound, "tokens": case.shape.tokens, "flops": cost.flops, "bytes": cost.bytes, **cost.extra,
        "preset": geo.preset, "model": geo.model.to_dict(), "batch": geo.batch, "seq_len": geo.seq_len,
        "dtype": session.opts.dtype, "compile": case.compile, "backend": session.backend.name,
        "ring_sets": len(prepared.ring), "ring_bytes": sum(t.nbytes for t in tensors(prepared.ring)),
        "check": prepared.check, "compile_s": compile_s,
    }  # fmt: skip


def machine_info(session) -> dict:
    return {
        "backend": session.backend.name, "device": dataclasses.asdict(session.info), "harness": session.harness,
        "system": session.system, "ceilings": {session.opts.dtype: session.ceilings}, "options": session.opts.to_dict(),
        "run_id": session.run_id,
    }  # fmt: skip


def read(path: Path) -> list[dict]:
    text = read_bounded(path, "results file", MAX_JSON_BYTES)  # one line, exit 2 beyond the bound
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BenchError(f"results file {path}: not valid JSON ({exc.msg})") from None
    except RecursionError:
        raise BenchError(f"results file {path}: not a pytest-benchmark file (JSON nested too deep)") from None
    if not (
        isinstance(doc, dict) and isinstance(doc.get("benchmarks"), list) and isinstance(doc.get("machine_info"), dict)
    ):
        raise BenchError(
            f"results file {path}: not a pytest-benchmark JSON file (needs machine_info and a benchmarks list); "
            "ppbench reads .jsonl result records and pytest-benchmark --benchmark-json files"
        )
    records = []
    for i, bench in enumerate(doc["benchmarks"]):
        if not isinstance(bench, dict):
            raise BenchError(f"results file {path}: benchmark {i} is not an object")
        rec = to_record(bench, doc)
        check_record(rec, f"{path} benchmark {i} ({bench.get('name', '?')})")
        records.append(rec)
    return records


def _summary(stats: dict) -> dict:
    samples = [float(x) for x in stats.get("data") or []]
    if samples:
        return {"samples_s": samples, **timing.summarize(samples)}
    # Saved without raw data: keep pytest-benchmark's own summaries (quartiles, no p10/p90/CI).
    mean, std = stats.get("mean"), stats.get("stddev")
    return {"samples_s": [], "n": stats.get("rounds"), "median_s": stats.get("median"), "mean_s": mean,
            "p10_s": None, "p90_s": None, "p99_s": None, "iqr_s": stats.get("iqr"),
            "cov": std / mean if mean and std is not None else None, "ci95_s": None}  # fmt: skip


def to_record(bench: dict, doc: dict) -> dict:
    info, stats = bench.get("extra_info") or {}, bench.get("stats") or {}
    mi, pp = doc["machine_info"], doc["machine_info"].get("ppbench") or {}
    dev = pp.get("device") or {"backend": info.get("backend", "pytest"), "name": (mi.get("cpu") or {}).get("brand_raw"),
                               "accelerator": None, "accelerator_reason": "pytest-benchmark JSON without ppbench device facts",
                               "devices_used": 1, "devices_on_host": 1}  # fmt: skip
    dtype = info.get("dtype")
    kernel = info.get("kernel")
    summary = _summary(stats)
    options = bench.get("options") or {}
    commit = doc.get("commit_info") or {}
    rec = {
        "schema_version": SCHEMA_VERSION,
        "run_id": pp.get("run_id") or f"pytest-benchmark-{doc.get('datetime', '')}",
        "created_at": doc.get("datetime"), "status": "ok", "reason": "",
        "harness": pp.get("harness") or {"version": None, "git_sha": commit.get("id"), "dirty": commit.get("dirty")},
        "system": pp.get("system") or {"hostname": mi.get("node"), "cpu_model": (mi.get("cpu") or {}).get("brand_raw"),
                                       "os": f"{mi.get('system')} {mi.get('release')}", "python": mi.get("python_version")},
        "device": {k: dev.get(k) for k in ("backend", "accelerator", "accelerator_reason", "name", "devices_used", "devices_on_host")},
        "workload": {
            "preset": info.get("preset"), "model": info.get("model"),
            "scenario": f"kernel:{kernel}" if kernel else f"pytest:{bench.get('name')}",
            "batch": info.get("batch"), "seq_len": info.get("seq_len"), "prompt_len": None, "new_tokens": None,
            "dtype": dtype, "compile": info.get("compile", "none"), "kernel": kernel, "variant": info.get("variant"),
            "shape": info.get("shape"), "dims": info.get("dims"), "bound": info.get("bound"),
            "ring_sets": info.get("ring_sets"), "ring_bytes": info.get("ring_bytes"), "test": bench.get("fullname"),
        },
        "timing": {"compile_s": info.get("compile_s"), "warmup_iters": options.get("warmup"), "host_samples_s": summary["samples_s"],
                   "source": "pytest-benchmark", "timer": options.get("timer"), "rounds": stats.get("rounds"),
                   "iterations": stats.get("iterations"), **summary},
        "metrics": {}, "cost": {**cost_block("none", 1), "reason": "pytest-benchmark JSON names no instance"},
        "validity": {}, "ceilings": (pp.get("ceilings") or {}).get(dtype), "config": pp.get("options") or {},
    }  # fmt: skip
    reasons, warnings = [], []
    check = info.get("check")
    if isinstance(check, dict) and not check.get("passed", True):
        reasons.append(f"check failed: max_rel_err {check.get('max_rel_err')} > tolerance {check.get('tolerance')}")
    if (summary["n"] or 0) < MIN_ROUNDS:
        reasons.append(f"only {summary['n']} rounds (min {MIN_ROUNDS})")
    if summary.get("cov") is not None and summary["cov"] > timing.TimingConfig.cov_warn:
        warnings.append(f"noisy: coefficient of variation {summary['cov']:.1%} > {timing.TimingConfig.cov_warn:.0%}")
    rec["validity"] = {"valid": not reasons, "reasons": reasons, "warnings": warnings, "check": check}
    rec["status"], rec["reason"] = ("ok" if not reasons else "invalid"), "; ".join(reasons)
    median = summary["median_s"]
    if median and ("flops" in info or "bytes" in info):
        rec["metrics"] = _metrics(info, dev, dtype, median, rec)
    return rec


def _metrics(info: dict, dev: dict, dtype: str | None, median: float, rec: dict) -> dict:
    extra = {k: float(info[k]) for k in ("flops_dense", "bus_bytes") if k in info}
    cost = Cost(float(info.get("flops") or 0.0), float(info.get("bytes") or 0.0), extra)
    acc = catalog.accelerator(dev["accelerator"]) if dev.get("accelerator") else None  # unknown key: CatalogError
    try:
        bound = info.get("bound") or ("compute" if cost.flops else "memory")
        return roofline_metrics(cost, bound, median, acc, dtype or "float32",
                                dev.get("devices_used") or 1, dev.get("accelerator_reason") or "", rec["ceilings"],
                                info.get("tokens") if isinstance(info.get("tokens"), int) else None)  # fmt: skip
    except MetricError as exc:  # e.g. MFU above 1: an error row, as in `ppbench kernels`
        rec["status"], rec["reason"] = "error", str(exc)
        rec["validity"]["valid"] = False
        rec["validity"]["reasons"].append(str(exc))
        return {}


READERS = {".json": read}  # for ppharness.record.load.load: `--benchmark-json` files read as records
