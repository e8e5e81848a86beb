"""What the GPU check (ppharness/run/gpucheck.py) reads back from its output folder, without torch:
the records each stage wrote (for its compile seconds, so the plan can be re-timed after one
run) and the short table printed last.

The table: the probe's device line, each stage's status, seconds and compile seconds, then per
case tokens/s, MFU as PaLM counts it with the causal count beside it, MBU against the datasheet
and against the copy bandwidth the probe measured, the SDPA kernel the step ran, J/token, $/1M
tokens and the plan's target met or short; then each kernel row (launch-bound rows flagged).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from ppharness import errors
from ppharness.errors import BenchError
from ppharness.record.load import read_records, result_files

LOG, STATE, PROBE = "gpucheck.log", "gpucheck-state.yaml", "gpucheck-probe.yaml"  # not .json: not results
LEGEND = (
    "MFU: of the dense bf16 peak, FLOPs as PaLM counts them (causal: attention's lower triangle only); MBU: of "
    "the datasheet memory bandwidth; MBU/copy: of the copy bandwidth measured here (ppharness/core/ceilings.py); "
    "SDPA: the kernel the step ran (profiler)"
)


# ---------------------------------------------------------------- records a stage wrote
def record_offsets(out: Path) -> dict[str, int]:
    """Each results file's size now: what a stage appends comes after it."""
    return {p.name: p.stat().st_size for p in Path(out).glob("*.jsonl") if p.is_file()}


def new_records(out: Path, offsets: dict[str, int]) -> list[dict]:
    """The records appended to OUT's results files since `offsets` (a torn last line skipped)."""
    found = []
    for p in sorted(Path(out).glob("*.jsonl")):
        try:
            with p.open("rb") as f:
                f.seek(offsets.get(p.name, 0))
                text = f.read().decode("utf-8", "replace")
        except OSError:
            continue
        for line in text.splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict):
                found.append(rec)
    return found


def compile_seconds(records: list[dict]) -> dict[str, Any]:
    """A stage's compile time from its records: each case's `timing.compile_s` (prepare, warm-up
    steps that compiled, a kernel's first call) plus the checks it ran (`timing.check_s`, which
    compile the check's own graphs)."""
    timed = [r.get("timing") or {} for r in records]
    compile_s = sum(float(t.get("compile_s") or 0) for t in timed)
    check_s = sum(float(t.get("check_s") or 0) for t in timed)
    if not records:
        return {"compile_s": None, "check_s": None, "records": 0}
    return {"compile_s": round(compile_s + check_s, 1), "check_s": round(check_s, 1), "records": len(records)}


def compile_note(compiled: dict) -> str:
    if compiled.get("compile_s") is None:
        return ""
    return (f"; compile {compiled['compile_s']:.1f} s over {compiled['records']} record(s), "
            f"checks {compiled['check_s']:.1f} s of it")  # fmt: skip


def read_out(out: Path) -> list[dict]:
    """Every record in OUT (a damaged file is skipped: the table must still come)."""
    records: list[dict] = []
    try:
        files = result_files([out])
    except BenchError:
        return records
    for path in files:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # a torn last line is expected after a kill
                records += [r for r in read_records(path) if isinstance(r, dict)]
        except BenchError:
            continue
    return records


# ---------------------------------------------------------------- the table
def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _num(x: float | None, fmt: str = "{:,.0f}") -> str:
    return "-" if x is None else fmt.format(x)


def _latest(records: list[dict], key: Callable[[dict], tuple]) -> dict[tuple, dict]:
    found: dict[tuple, dict] = {}
    for r in sorted(records, key=lambda r: str(r.get("created_at", ""))):
        found[key(r)] = r
    return found


def _case_key(r: dict) -> tuple:
    w = r.get("workload") or {}
    return (
        w.get("scenario"),
        w.get("batch"),
        w.get("seq_len") or w.get("prompt_len"),
        w.get("compile"),
        w.get("dtype"),
    )


def table(plan: Any, out: Path, outcomes: dict[str, Any], wall_s: float) -> str:
    """The short table printed last (module docstring); `plan` is a gpucheck.Plan, `outcomes`
    each stage's gpuhost.Outcome."""
    lines = [f"== {plan.name}{' (rehearsal: CPU, tiny model)' if plan.rehearse else ''}: {wall_s:.0f} s of the "
             f"{plan.budget_s:.0f} s budget; records, log and state in {out}"]  # fmt: skip
    lines += _probe_lines(out)
    lines.append(f"{'stage':<16}{'status':<12}{'seconds':>8}{'compile':>9}  note")
    for name, o in outcomes.items():
        compiled = "-" if getattr(o, "compile_s", None) is None else f"{o.compile_s:.1f}"
        lines.append(f"{name:<16}{o.status:<12}{o.seconds:>8.1f}{compiled:>9}  {o.note}")
    records = read_out(out)
    is_kernel = lambda r: str((r.get("workload") or {}).get("scenario", "")).startswith("kernel:")  # noqa: E731
    lines += _model_lines(plan, [r for r in records if not is_kernel(r)])
    lines += _kernel_lines([r for r in records if is_kernel(r)])
    lines.append(LEGEND)
    return "\n".join(lines)


def _probe_lines(out: Path) -> list[str]:
    try:
        probe = errors.safe_load(errors.read_bounded(out / PROBE, "gpu-check probe", errors.MAX_YAML_BYTES)) or {}
    except (BenchError, yaml.YAMLError, ValueError, RecursionError):
        return []
    if not isinstance(probe, dict):
        return []
    v, c = probe.get("versions") or {}, probe.get("ceilings") or {}
    return [
        f"device: {probe.get('device')} ({probe.get('accelerator')}); torch {v.get('torch')}, "
        f"CUDA {v.get('cuda_runtime', '-')}, cuDNN {v.get('cudnn', '-')}, driver {v.get('driver', '-')}, "
        f"allocator {v.get('alloc_conf', '-')}; copy {_num(c.get('copy_gbps'))} GB/s, "
        f"GEMM {_num(c.get('gemm_tflops'), '{:,.1f}')} TFLOP/s",
        "sdpa (dispatcher, planned cases): " + ", ".join(f"{k}={val}" for k, val in (probe.get("sdpa") or {}).items()),
    ]


def _model_lines(plan: Any, model: list[dict]) -> list[str]:
    order = {"train": 0, "prefill": 1, "decode": 2}
    rows = sorted(
        _latest(model, _case_key).values(), key=lambda r: (order.get(_case_key(r)[0], 9), _case_key(r)[1] or 0)
    )
    head = (f"{'case':<34}{'status':<9}{'tokens/s':>12}{'MFU':>8}{'causal':>8}{'MBU':>8}{'MBU/copy':>9}"
            f"{'SDPA':>11}{'J/token':>10}{'$/1M':>9}  target")  # fmt: skip
    lines = ["", head]
    for r in rows:
        w, m, c = r.get("workload") or {}, r.get("metrics") or {}, r.get("cost") or {}
        t, ceil = r.get("timing") or {}, r.get("ceilings") or {}
        size = f"{w.get('batch')}x{w.get('seq_len') or w.get('prompt_len')}" + (
            f"+{w.get('new_tokens')}" if w.get("new_tokens") else ""
        )
        label = f"{w.get('scenario')} {size} {w.get('dtype')} {w.get('compile')}"
        gbps, copy_gbps = m.get("achieved_gbps"), ceil.get("copy_gbps")
        per_copy = gbps / copy_gbps if gbps and copy_gbps else None
        ran = ((t.get("execution") or {}).get("sdpa_ran") or "?").removesuffix("_attention")
        lines.append(
            f"{label:<34}{r.get('status', '?'):<9}{_num(m.get('tokens_per_s')):>12}{_pct(m.get('mfu')):>8}"
            f"{_pct(m.get('mfu_causal')):>8}{_pct(m.get('mbu')):>8}{_pct(per_copy):>9}{ran:>11}"
            f"{_num(m.get('energy_j_per_token'), '{:.3g}'):>10}{_num(c.get('usd_per_million_tokens'), '{:.3g}'):>9}"
            f"  {_target(plan, w, m)}{'  launch-bound' if t.get('launch_bound') else ''}"
        )
        if r.get("status") != "ok" and r.get("reason"):
            lines.append(f"{'':<4}{str(r['reason'])[:150]}")
    if not rows:
        lines.append("(no model records)")
    return lines


def _kernel_lines(kern: list[dict]) -> list[str]:
    if not kern:
        return []
    lines = ["", f"{'kernel':<34}{'status':<9}{'TFLOP/s':>10}{'GB/s':>10}{'of peak':>9}{'roofline':>9}{'steps':>7}"]
    key = lambda r: (r["workload"].get("kernel"), r["workload"].get("shape"), r["workload"].get("variant"))  # noqa: E731
    for r in sorted(_latest(kern, key).values(), key=lambda r: str(r.get("created_at"))):
        w, m, t = r.get("workload") or {}, r.get("metrics") or {}, r.get("timing") or {}
        label = f"{w.get('kernel')} {w.get('shape')} {w.get('variant')}"
        lines.append(
            f"{label:<34}{r.get('status', '?'):<9}{_num(m.get('achieved_tflops'), '{:,.1f}'):>10}"
            f"{_num(m.get('achieved_gbps')):>10}{_pct(m.get('peak_fraction')):>9}{_pct(m.get('roofline_fraction')):>9}"
            f"{_num(t.get('steps_per_sample'), '{}'):>7}{'  launch-bound' if t.get('launch_bound') else ''}"
        )
    return lines


def _target(plan: Any, w: dict, m: dict) -> str:
    """The plan's target for this case, met or short. An MFU target is judged on PaLM's count
    (the figure published MFUs use) with the causal count said beside it."""
    for t in plan.targets:
        if t.get("scenario") != w.get("scenario") or ("batch" in t and t["batch"] != w.get("batch")):
            continue
        value = m.get(t["metric"])
        want = f"{t['metric'].upper()} >= {100 * t['min']:.0f}%"
        if value is None:
            return f"{want}: no figure"
        causal = f" (causal {_pct(m.get('mfu_causal'))})" if t["metric"] == "mfu" and m.get("mfu_causal") else ""
        return f"{want}: {'met' if value >= t['min'] else 'short'}{causal}"
    return ""
