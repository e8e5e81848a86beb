"""The GPU check: one prepared command that fits a short lease, driven by a plan file
(configs/checks/gpu-check.yaml). On a GPU host, from a bare checkout, with the host's python:

    python3 -m ppharness.run.gpucheck --out DIR

No `make`, no `git` (PPBENCH_GIT_SHA names the commit of a copy without .git), no network. The
output folder's path is the first line printed, and every file the check writes lands in it: the
records (the runner's and the kernels' results file), `gpucheck.log` (every stage's output),
`gpucheck-probe.yaml` and `gpucheck-state.yaml` (what each stage did, with its seconds and
compile seconds). The ceilings cache stays outside it (PPBENCH_CACHE_DIR, else ~/.cache/ppbench):
loading a results folder reads every *.json in it.

A lent GPU machine gives minutes, start and idle included, so stages run in the plan's order, the
headline figures first (a probe, CUDA-graph decode, compiled train/prefill, the kernels, the GPU
tests last), each as its own child process through the ordinary front doors (`ppharness.cli run`,
`ppharness.cli kernels`, pytest), with its own timeout, inside one wall-time budget. Why children:

- a hung compile or graph capture is killed with its process group, and the next stage runs;
  children die with the check too (ppharness/run/gpuhost.py), so none is left on the GPU;
- this process never touches the GPU: a CUDA context here would sit on the device through every
  measured window, and the NVML guard (ppharness/core/guards.py) would rightly call that another process.

Before anything runs it prints a versions line (torch, CUDA, cuDNN, triton, scipy, numpy, the GPU
and its memory, the host's MemTotal, the commit) and stops (exit 2) if this python lacks what the
checkout needs. Run stages are sized per GPU where the plan says (`sizes`: what fits its memory by
ppharness/run/memplan.py, checked in tests/test_gpucheck.py) and get the plan's `env` (expandable
allocator segments). With `--resume` a stage that finished on the same kind of GPU is not run
again and the run stages skip the cases OUT already holds (ppharness/run/resume.py): a second
machine of the same kind finishes what the first left, another kind probes and plans again. A short
table comes last (ppharness/run/gpureport.py).

`--rehearse` runs the same plan on the CPU backend with the tiny model (the plan's `rehearse`
blocks), so the stages, sizes, timeouts, resume, log and table are exercised in CI
(tests/test_gpucheck.py); `--which` prints the run-file prefix for the GPU found here.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import yaml

from ppharness import errors, paths
from ppharness.errors import BenchError
from ppharness.facts import catalog
from ppharness.run import gpuhost, gpureport
from ppharness.run.gpuhost import HostFacts, Outcome

REPO = paths.CHECKOUT
PLAN = paths.configs() / "checks" / "gpu-check.yaml"
RUNS = paths.configs() / "runs"
LOG, STATE, PROBE = gpureport.LOG, gpureport.STATE, gpureport.PROBE  # not .json: not results
KINDS = ("probe", "pytest", "run", "kernels")
FINISHED = "ok"  # a stage in this state is never run again by --resume (on the same kind of device)
ENV_KINDS = ("probe", "run", "kernels")  # the stages that get the plan's `env`
# Either name sets torch's allocator (PYTORCH_ALLOC_CONF from torch 2.9, read first; the older one
# after it): a user who set one keeps theirs, and the plan's pair is left out.
ALLOC_VARS = ("PYTORCH_ALLOC_CONF", "PYTORCH_CUDA_ALLOC_CONF")
# The command a GPU machine runs (docs/gpu.md); the rehearsal runs it with --rehearse added.
COMMAND = ["python3", "-m", "ppharness.run.gpucheck", "--out"]
OPTIONAL = ("matplotlib",)  # needed by reports, not by the check: a warning, not a refusal


# ---------------------------------------------------------------- the GPU -> its run files
def runfile_prefix(accelerator: str | None, what: str = "this device") -> str:
    """The prefix of the llama3-1b run files priced as an instance with this accelerator
    (configs/runs/<prefix>-llama3-1b.yaml and -decode.yaml): h200-sxm -> h200 (p5en.48xlarge),
    h100-sxm -> h100 (p5.48xlarge), a100-sxm4-40gb -> a100 (p4d.24xlarge). Read from the run files'
    own `instance:`, so a new GPU needs run files, not code."""
    found = {}
    for path in sorted(RUNS.glob("*-llama3-1b.yaml")):
        raw = errors.read_yaml(path, "run file") or {}
        inst = raw.get("instance")
        if "cuda" not in (raw.get("backends") or []) or inst not in catalog.instances():
            continue
        prefix = path.name.removesuffix("-llama3-1b.yaml")
        if (RUNS / f"{prefix}-llama3-1b-decode.yaml").exists():
            found[prefix] = catalog.instance(inst).accelerator
    matches = [p for p, acc in found.items() if acc == accelerator and accelerator is not None]
    if not matches:
        have = ", ".join(f"{p} ({acc})" for p, acc in sorted(found.items()))
        raise BenchError(
            f"no llama3-1b run files for {what} (accelerator {accelerator}); configs/runs has: {have}. "
            "Add <prefix>-llama3-1b.yaml and -decode.yaml priced as an instance with it, or pass --gpu PREFIX"
        )
    return matches[0]


def prefix_for_device_name(name: str) -> str:
    """The run-file prefix for a CUDA device name as the driver reports it ("NVIDIA H200")."""
    from ppharness.backends.cuda import accelerator_for  # torch only; never initialises CUDA

    key, why = accelerator_for(name)
    if key is None:
        raise BenchError(f"no run files for GPU {name!r}: {why}")
    return runfile_prefix(key, f"GPU {name!r}")


def detect_prefix(backend: str) -> str:
    """The run-file prefix of the device this process sees (it initialises the device: call it
    in a child, never in the process that runs the stages)."""
    from ppharness import backends  # torch: the parent that runs the stages never imports it

    ok, why = backends.get(backend).available()
    if not ok:
        raise BenchError(f"backend {backend} is not available here: {why}")
    info = backends.make(backend).describe()
    return runfile_prefix(info.accelerator, f"{info.name!r}")


# ---------------------------------------------------------------- the plan
@dataclass
class Stage:
    name: str
    kind: str
    timeout_s: float
    estimate_s: float
    spec: dict[str, Any]  # the kind's own keys (set, sizes, run_file, args, kernels, ...)
    rerun_failed: bool = True


@dataclass
class Plan:
    name: str
    budget_s: float
    reserve_s: float
    min_stage_s: float
    backend: str
    stages: list[Stage]
    targets: list[dict] = field(default_factory=list)
    gpu: str | None = None  # run-file prefix; None: detected (the probe, else a --which child)
    run_set: list[str] = field(default_factory=list)  # after every run stage's own `set` and `sizes`
    rehearse: bool = False
    env: dict[str, str] = field(default_factory=dict)  # for the probe, run and kernels stages


def load_plan(path: Path = PLAN, rehearse: bool = False) -> Plan:
    """The plan file, with its `rehearse` blocks applied when rehearsing. Bad plans raise
    BenchError naming the key."""
    raw = errors.read_yaml(Path(path), "gpu-check plan")
    if not isinstance(raw, dict) or not isinstance(raw.get("stages"), list) or not raw["stages"]:
        raise BenchError(f"gpu-check plan {path}: needs a non-empty `stages` list")
    top = dict(raw)
    extra = top.pop("rehearse", None) or {}
    if rehearse:
        top.update({k: v for k, v in extra.items() if k != "run_set"})
    stages, names = [], set()
    for i, s in enumerate(top.pop("stages")):
        if not isinstance(s, dict) or s.get("kind") not in KINDS or not isinstance(s.get("name"), str):
            raise BenchError(f"gpu-check plan {path}: stage {i + 1} needs a name and a kind ({', '.join(KINDS)})")
        if s["name"] in names:
            raise BenchError(f"gpu-check plan {path}: stage name {s['name']!r} is used twice")
        names.add(s["name"])
        spec = {k: v for k, v in s.items() if k not in ("name", "kind", "timeout_s", "estimate_s", "rerun_failed")}
        own = spec.pop("rehearse", None) or {}
        if rehearse:
            spec.update(own)
        sizes = spec.get("sizes", {})
        if not isinstance(sizes, dict) or not all(isinstance(v, (str, list)) for v in sizes.values()):
            raise BenchError(f"gpu-check plan {path}: stage {s['name']} `sizes` must map a GPU to --set overrides")
        try:
            timeout, estimate = float(s["timeout_s"]), float(s.get("estimate_s", s["timeout_s"]))
        except (KeyError, TypeError, ValueError):
            raise BenchError(f"gpu-check plan {path}: stage {s['name']} needs a number timeout_s") from None
        stages.append(Stage(s["name"], s["kind"], timeout, estimate, spec, bool(s.get("rerun_failed", True))))
    env = top.get("env") or {}
    if not isinstance(env, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
        raise BenchError(f"gpu-check plan {path}: `env` must map variable names to strings")
    try:
        return Plan(
            name=str(top.get("name", "gpu-check")),
            budget_s=float(top["budget_s"]),
            reserve_s=float(top.get("reserve_s", 10)),
            min_stage_s=float(top.get("min_stage_s", 20)),
            backend=str(top.get("backend", "cuda")),
            stages=stages,
            targets=list(top.get("targets") or []),
            gpu=top.get("gpu"),
            run_set=list(extra.get("run_set") or []) if rehearse else [],
            rehearse=rehearse,
            env=dict(env),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise BenchError(f"gpu-check plan {path}: bad or missing top-level key ({exc})") from None


# ---------------------------------------------------------------- stages -> commands
def stage_sets(stage: Stage, plan: Plan, gpu: str) -> list[str]:
    """A run stage's --set overrides: its own `set`, its `sizes` for this GPU, the rehearsal's."""
    sizes = stage.spec.get("sizes") or {}
    if sizes and gpu not in sizes:
        raise BenchError(
            f"stage {stage.name}: the plan sizes it per GPU ({', '.join(sizes)}) and has no entry for {gpu}; "
            f"add sizes.{gpu} (`ppbench run FILE --dry-run` says what fits)"
        )
    sized = sizes.get(gpu, [])
    return [*stage.spec.get("set", []), *([sized] if isinstance(sized, str) else sized), *plan.run_set]


def stage_argv(stage: Stage, plan: Plan, out: Path, resume: bool, gpu: str | None, plan_path: Path) -> list[str]:
    """The child command of one stage (run from the repository root)."""
    py = [sys.executable]
    if stage.kind == "probe":
        argv = [*py, "-m", "ppharness.run.gpucheck", "--probe", stage.name, "--plan", str(plan_path), "--out", str(out)]
        return argv + (["--rehearse"] if plan.rehearse else []) + (["--gpu", gpu] if gpu else [])
    if stage.kind == "pytest":
        return [*py, "-m", "pytest", "-q", "-p", "no:cacheprovider", *map(str, stage.spec.get("args", []))]
    if gpu is None:
        raise BenchError(f"stage {stage.name}: the GPU's run files are unknown (the probe found none); pass --gpu")
    run_file = RUNS / str(stage.spec.get("run_file", "{gpu}-llama3-1b.yaml")).format(gpu=gpu)
    if stage.kind == "run":
        argv = [*py, "-m", "ppharness.cli", "run", str(run_file), "--backend", plan.backend, "--out", str(out)]
        return (
            argv
            + [a for s in stage_sets(stage, plan, gpu) for a in ("--set", str(s))]
            + (["--resume"] if resume else [])
        )
    # kernels: priced as the instance the GPU's train run file names
    instance = (errors.read_yaml(run_file, "run file") or {}).get("instance", "none")
    s = stage.spec
    argv = [*py, "-m", "ppharness.cli", "kernels", "--backend", plan.backend, "--out", str(out)]
    argv += [a for k in s.get("kernels", []) for a in ("--kernel", str(k))]
    for key in ("dtype", "preset", "batch", "seq_len", "min_seconds", "max_other_cpu"):
        if key in s:
            argv += [f"--{key.replace('_', '-')}", str(s[key])]
    return argv + ["--instance", str(instance)]


def stage_env(stage: Stage, plan: Plan, environ: dict | None = None) -> dict[str, str]:
    """The plan's `env` for a probe, run or kernels stage; a variable the user set keeps the
    user's value (either allocator variable counts for both)."""
    environ = os.environ if environ is None else environ
    if stage.kind not in ENV_KINDS:
        return {}
    env = {k: v for k, v in plan.env.items() if k not in environ}
    if any(v in environ for v in ALLOC_VARS):
        env = {k: v for k, v in env.items() if k not in ALLOC_VARS}
    return env


def fingerprint(argv: list[str], device_kind: str = "", env: dict | None = None, out: Path | None = None) -> str:
    """What a stage ran, on what kind of device and with what environment, so --resume reruns a
    stage whose command the plan has since changed, or that ran on another kind of GPU. The
    interpreter, the checkout's and the output folder's places and --resume itself are left out:
    a copy elsewhere, a folder carried to another machine, or a first run without --resume still
    resumes; so is the host's name (a second machine of the same kind resumes)."""
    swap = [(str(out), "<out>")] if out is not None else []
    kept = []
    for a in argv[1:]:
        if a == "--resume":
            continue
        for path, name in [*swap, (str(REPO), "<repo>")]:
            a = a.replace(path, name)
        kept.append(a)
    return hashlib.sha256(json.dumps([kept, device_kind, sorted((env or {}).items())]).encode()).hexdigest()[:16]


# ---------------------------------------------------------------- running the stages
class Interrupted(Exception):
    """SIGTERM or SIGHUP arrived (an outer `timeout`, a closing session): stop the stage, keep
    the state, print the table."""


def _on_signal(signum: int, frame: Any) -> None:
    raise Interrupted(f"stopped by signal {signum}")


_on_sigterm = _on_signal  # the name tests and older callers use


def read_state(out: Path) -> dict:
    if not (out / STATE).exists():
        return {}  # none yet: every stage counts as not run
    text = errors.read_bounded(out / STATE, "gpu-check state", errors.MAX_YAML_BYTES)  # one line beyond it
    try:
        data = errors.safe_load(text)
        return data if isinstance(data, dict) else {}
    except (yaml.YAMLError, ValueError, RecursionError):
        return {}  # torn by a kill: every stage counts as not run


def write_state(out: Path, state: dict) -> None:
    tmp = out / f".{STATE}.tmp"
    tmp.write_text(yaml.safe_dump(state, sort_keys=False))
    tmp.replace(out / STATE)  # atomic: a kill never leaves half a state file


def run_check(
    plan: Plan,
    out: Path,
    resume: bool = False,
    gpu: str | None = None,
    plan_path: Path = PLAN,
    echo: IO[str] | None = None,
    clock: Callable[[], float] = time.monotonic,
    facts: HostFacts | None = None,
) -> dict[str, Outcome]:
    """Every stage in order inside plan.budget_s; returns each stage's outcome. The children's
    output goes to OUT/gpucheck.log and, when given, to `echo` (the command line's stdout)."""
    out.mkdir(parents=True, exist_ok=True)
    facts = facts or gpuhost.host_facts(plan.rehearse)
    start = clock()
    deadline = start + plan.budget_s - plan.reserve_s
    state = read_state(out) if resume else {}
    stages_state: dict = state.setdefault("stages", {})
    state.update(plan=plan.name, rehearse=plan.rehearse, budget_s=plan.budget_s, device_kind=facts.device_kind,
                 versions=facts.line())  # fmt: skip
    gpu = gpu or plan.gpu
    outcomes: dict[str, Outcome] = {}
    with (out / LOG).open("a") as log:
        _say(log, echo, f"== {plan.name}{' (rehearsal)' if plan.rehearse else ''} into {out}, budget "
                        f"{plan.budget_s:.0f} s, {'resuming' if resume else 'fresh'}, at {_now()}")  # fmt: skip
        _say(log, echo, f"== {facts.line()}")
        asked = False  # the --which child runs once at most
        for stage in plan.stages:
            if gpu is None and stage.kind in ("run", "kernels") and not asked:
                gpu, asked = _gpu_from_probe(out, facts.device_kind) or _which(plan, log, echo), True
            env = stage_env(stage, plan)
            try:
                argv = stage_argv(stage, plan, out, resume, gpu, plan_path)
            except BenchError as exc:
                outcomes[stage.name] = Outcome("failed", None, 0.0, str(exc))
                _say(log, echo, f"== {stage.name}: not run: {exc}")
                stages_state[stage.name] = {"status": "failed", "note": str(exc)}
                write_state(out, state)
                continue
            mark = fingerprint(argv, facts.device_kind, env, out)
            before = stages_state.get(stage.name) or {}
            done = before.get("status") == FINISHED or (before.get("status") == "failed" and not stage.rerun_failed)
            if resume and before.get("fingerprint") == mark and done:
                outcomes[stage.name] = Outcome(
                    "skipped", before.get("rc"), 0.0, f"{before.get('status')} earlier (--resume)"
                )
                _say(log, echo, f"== {stage.name}: skipped, {before.get('status')} in an earlier run (--resume)")
                continue
            left = deadline - clock()
            if left < plan.min_stage_s:
                note = f"out of time ({max(left, 0):.0f} s of the budget left); rerun with --resume"
                outcomes[stage.name] = Outcome("not_run", None, 0.0, note)
                _say(log, echo, f"== {stage.name}: not run: {note}")
                stages_state[stage.name] = {"status": "not_run", "note": note, "fingerprint": mark}
                write_state(out, state)
                continue
            timeout = min(stage.timeout_s, left)
            shown = "".join(f"{k}={v} " for k, v in env.items())
            _say(log, echo, f"== {stage.name} ({stage.kind}; timeout {timeout:.0f} s, estimate {stage.estimate_s:.0f} s) "
                            f"at {_now()}: {shown}{' '.join(argv[1:])}")  # fmt: skip
            stages_state[stage.name] = {"status": "running", "started_at": _now(), "fingerprint": mark}
            write_state(out, state)
            offsets = gpureport.record_offsets(out)
            t0 = clock()
            try:
                res = gpuhost.execute(argv, timeout, log, echo, env)
            except (Interrupted, KeyboardInterrupt) as exc:
                res = Outcome("interrupted", None, clock() - t0, f"{exc or 'interrupted'}; rerun with --resume")
            outcomes[stage.name] = res
            compiled = gpureport.compile_seconds(gpureport.new_records(out, offsets))
            res.compile_s = compiled["compile_s"]
            stages_state[stage.name] = {
                "status": res.status, "rc": res.rc, "seconds": round(res.seconds, 1), "timeout_s": round(timeout, 1),
                "estimate_s": stage.estimate_s, **compiled, "note": res.note, "finished_at": _now(), "fingerprint": mark,
            }  # fmt: skip
            write_state(out, state)
            note = f" ({res.note})" if res.note else ""
            _say(
                log,
                echo,
                f"== {stage.name}: {res.status} in {res.seconds:.1f} s{gpureport.compile_note(compiled)}{note}",
            )
            if res.status == "interrupted":
                break  # the stages left are neither run nor marked: --resume runs them
        state["wall_s"] = round(clock() - start, 1)
        write_state(out, state)
        text = gpureport.table(plan, out, outcomes, clock() - start)
        _say(log, echo, text)
    return outcomes


def _gpu_from_probe(out: Path, device_kind: str) -> str | None:
    """The run-file prefix the probe found, if it probed this kind of device (a folder carried
    from an H200 to an H100 must not hand the H100 the H200's run files)."""
    try:
        data = errors.safe_load(errors.read_bounded(out / PROBE, "gpu-check probe", errors.MAX_YAML_BYTES)) or {}
    except (BenchError, yaml.YAMLError, ValueError, RecursionError):
        return None
    if not isinstance(data, dict) or data.get("device_kind") != device_kind:
        return None
    return data.get("gpu") if isinstance(data.get("gpu"), str) else None


def _which(plan: Plan, log: IO[str], echo: IO[str] | None) -> str | None:
    """The run-file prefix from a short child (the probe did not say)."""
    argv = [sys.executable, "-m", "ppharness.run.gpucheck", "--which", "--backend", plan.backend]
    try:
        done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return None
    _say(log, echo, f"== which run files: {done.stdout.strip() or done.stderr.strip()}")
    return (done.stdout.strip() or None) if done.returncode == 0 else None


def _say(log: IO[str], echo: IO[str] | None, text: str) -> None:
    log.write(text + "\n")
    log.flush()
    if echo is not None:
        echo.write(text + "\n")
        echo.flush()


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


# ---------------------------------------------------------------- the probe (a child)
def probe(plan: Plan, stage_name: str, out: Path) -> dict:
    """Versions, the device's accelerator key and run-file prefix, the SDPA kernel the dispatcher
    picks for each planned case (under the order each scenario runs with; the records say what
    the steps then ran), what NVML can do, and the measured ceilings (copy bandwidth for MBU, GEMM
    rate); written to OUT/gpucheck-probe.yaml with the kind of device it probed."""
    # torch and CUDA: only the probe stage (a child process) imports them, never the parent
    import torch

    from ppharness import backends
    from ppharness.core import ceilings, workload

    stage = next(s for s in plan.stages if s.name == stage_name)
    ok, why = backends.get(plan.backend).available()
    if not ok:
        raise BenchError(f"backend {plan.backend} is not available here: {why}")
    be = backends.make(plan.backend)
    info = be.describe()
    dtype, model = str(stage.spec.get("dtype", "bfloat16")), stage.spec.get("model", "llama3-1b-shape")
    try:
        gpu, gpu_reason = plan.gpu or runfile_prefix(info.accelerator, repr(info.name)), ""
    except BenchError as exc:
        gpu, gpu_reason = None, str(exc)
    cfg = workload.model_config(model)
    sdpa = {}
    for scenario, batch, length in stage.spec.get("attention", []):
        with be.sdpa_context(scenario):
            sdpa[f"{scenario} b{batch} x{length}"] = workload.attention_kernel(
                cfg, scenario, batch, length, backends.DTYPES[dtype], be.device_for(scenario)
            )
    host = gpuhost.host_facts(plan.rehearse)
    versions = {**host.versions, "torch": torch.__version__}
    sampler = be.power_sampler()
    guard = {"energy_counter": sampler is not None, "other_processes": be.busy_processes(),
             "clock_slowdowns": be.throttle_reasons()}  # fmt: skip
    t0 = time.perf_counter()
    ceil = ceilings.get_ceilings(be, dtype, info.name)
    acc = catalog.accelerator(info.accelerator) if info.accelerator else None
    facts = {
        "measured_at": _now(), "harness": host.commit, "backend": plan.backend, "device": info.name,
        "device_kind": host.device_kind, "accelerator": info.accelerator, "accelerator_reason": info.accelerator_reason,
        "gpu": gpu, "gpu_reason": gpu_reason, "versions": {**versions, **info.versions}, "host_mem_total": host.mem_total,
        "sdpa": sdpa, "nvml": guard, "ceilings": {k: v for k, v in ceil.items() if k != "measured_at"},
        "ceilings_s": round(time.perf_counter() - t0, 2),
        "peak": None if acc is None else {"bf16_tflops": acc.peak_tflops_for("bfloat16"), "mem_gbps": acc.mem_bw_gbps},
    }  # fmt: skip
    if acc is not None and acc.mem_bw_gbps:
        facts["copy_over_datasheet"] = ceil["copy_gbps"] / acc.mem_bw_gbps
    facts = json.loads(json.dumps(facts, default=str))  # plain types only (torch's version is a str subclass)
    (out / PROBE).write_text(yaml.safe_dump(facts, sort_keys=False))
    return facts


# ---------------------------------------------------------------- command line
def check_out(out: Path) -> None:
    """Refuse a ceilings cache inside the output folder: results loading would read its JSON."""
    cache = paths.cache_dir().resolve()
    if cache == out or out in cache.parents:
        raise BenchError(
            f"the ceilings cache ({cache}, PPBENCH_CACHE_DIR) is inside the output folder {out}, where every *.json "
            "is read as results; point PPBENCH_CACHE_DIR elsewhere (e.g. a sibling folder) or leave it unset"
        )


def check_versions(facts: HostFacts, reqs: list[str] | None = None) -> list[str]:
    """Raise BenchError when this python lacks a package the check needs; the warnings for
    packages only reports need."""
    missing = gpuhost.unmet(gpuhost.requirements() if reqs is None else reqs)
    needed = [m for m in missing if not m.startswith(OPTIONAL)]
    if needed:
        raise BenchError(f"this python lacks what the checkout needs: {'; '.join(needed)} ({facts.line()})")
    return [f"warning: {m}: reports need it, the check does not" for m in missing if m not in needed]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m ppharness.run.gpucheck", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, help="the output folder: records, log, probe and state (required)")
    ap.add_argument("--plan", type=Path, default=PLAN, help="the plan file (YAML)")
    ap.add_argument("--resume", action="store_true", help="skip finished stages and the cases OUT already holds")
    ap.add_argument("--rehearse", action="store_true", help="the plan on the CPU backend with the tiny model")
    ap.add_argument("--gpu", help="run-file prefix (h200, h100, a100) instead of the detected GPU's")
    ap.add_argument("--budget", type=float, help="wall-time budget in seconds instead of the plan's (a rerun)")
    ap.add_argument("--which", action="store_true", help="print the run-file prefix for the GPU here, and exit")
    ap.add_argument("--backend", default="cuda", help="with --which: the backend to ask")
    ap.add_argument("--probe", metavar="STAGE", help=argparse.SUPPRESS)  # the probe stage's child
    args = ap.parse_args(argv)
    try:
        if args.which:
            print(args.gpu or detect_prefix(args.backend))
            return 0
        if args.out is None:
            raise BenchError("--out DIR is required: the folder the records, log, probe and state go to")
        out = args.out.resolve()
        if not args.probe:
            print(f"gpu-check: output folder {out}", flush=True)  # first: where to look, whatever follows
        plan = load_plan(args.plan, args.rehearse)
        if args.gpu:
            plan.gpu = args.gpu
        if args.budget is not None:
            if not args.budget > plan.reserve_s:
                raise BenchError(
                    f"--budget must exceed the {plan.reserve_s:g} s kept for the table, got {args.budget:g}"
                )
            plan.budget_s = args.budget
        if args.probe:
            out.mkdir(parents=True, exist_ok=True)
            facts = probe(plan, args.probe, out)
            print(yaml.safe_dump(facts, sort_keys=False), end="")
            return 0
        check_out(out)
        facts = gpuhost.host_facts(plan.rehearse)
        for line in check_versions(facts):
            print(line, file=sys.stderr)
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, _on_signal)
        outcomes = run_check(
            copy.deepcopy(plan), out, args.resume, args.gpu, args.plan.resolve(), echo=sys.stdout, facts=facts
        )
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (Interrupted, KeyboardInterrupt):  # between stages: the state file already says where it stood
        print("gpu-check: interrupted; run it again with --resume", file=sys.stderr)
        return 130
    return 0 if all(o.status in ("ok", "skipped") for o in outcomes.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
