"""`make gpu-check`: one prepared check of a GPU that fits a short lease, driven by a plan file
(configs/checks/gpu-check.yaml).

A lent GPU machine gives minutes, start and idle included, so the check is written and rehearsed
before any device call: stages run in the plan's order (a probe, the GPU tests that matter most,
llama3-1b-shape train/prefill and CUDA-graph decode, the gemm and attention kernels), each as its
own child process through the ordinary front doors (`ppharness.cli run`, `ppharness.cli kernels`,
pytest), with its own timeout, and all of them inside one wall-time budget. Why children:

- a hung compile or graph capture is killed with its process group, and the next stage runs;
- this process never touches the GPU: a CUDA context here would sit on the device through every
  measured window, and the NVML guard (ppharness/core/guards.py) would rightly call that another process.

Everything lands in one folder (OUT): the records (the runner's and the kernels' results file),
`gpucheck.log` (every stage's output), `gpucheck-probe.yaml` and `gpucheck-state.yaml` (what each
stage did). With `--resume` a stage that finished is not run again and the run stages skip the
cases OUT already holds (ppharness/run/resume.py), so a rerun finishes what a cut-off run left. A short
table comes last: stages, then MFU/MBU, energy and $/1M tokens per case against the plan's targets.

`--rehearse` runs the same plan on the CPU backend with the tiny model (the plan's `rehearse`
blocks), so the stages, timeouts, resume, log and table are exercised in CI
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
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import yaml

from ppharness import errors, paths
from ppharness.errors import BenchError
from ppharness.facts import catalog
from ppharness.serve import endpoint

REPO = paths.CHECKOUT
PLAN = paths.configs() / "checks" / "gpu-check.yaml"
RUNS = paths.configs() / "runs"
LOG, STATE, PROBE = "gpucheck.log", "gpucheck-state.yaml", "gpucheck-probe.yaml"  # not .json: not results
KINDS = ("probe", "pytest", "run", "kernels")
FINISHED = "ok"  # a stage in this state is never run again by --resume
KILL_GRACE_S = 5.0


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
    spec: dict[str, Any]  # the kind's own keys (set, run_file, args, kernels, ...)
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
    run_set: list[str] = field(default_factory=list)  # after every run stage's own `set`
    rehearse: bool = False


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
        try:
            timeout, estimate = float(s["timeout_s"]), float(s.get("estimate_s", s["timeout_s"]))
        except (KeyError, TypeError, ValueError):
            raise BenchError(f"gpu-check plan {path}: stage {s['name']} needs a number timeout_s") from None
        stages.append(Stage(s["name"], s["kind"], timeout, estimate, spec, bool(s.get("rerun_failed", True))))
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
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise BenchError(f"gpu-check plan {path}: bad or missing top-level key ({exc})") from None


# ---------------------------------------------------------------- stages -> commands
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
        sets = [*stage.spec.get("set", []), *plan.run_set]
        argv = [*py, "-m", "ppharness.cli", "run", str(run_file), "--backend", plan.backend, "--out", str(out)]
        return argv + [a for s in sets for a in ("--set", str(s))] + (["--resume"] if resume else [])
    # kernels: priced as the instance the GPU's train run file names
    instance = (errors.read_yaml(run_file, "run file") or {}).get("instance", "none")
    s = stage.spec
    argv = [*py, "-m", "ppharness.cli", "kernels", "--backend", plan.backend, "--out", str(out)]
    argv += [a for k in s.get("kernels", []) for a in ("--kernel", str(k))]
    for key in ("dtype", "preset", "batch", "seq_len", "min_seconds", "max_other_cpu"):
        if key in s:
            argv += [f"--{key.replace('_', '-')}", str(s[key])]
    return argv + ["--instance", str(instance)]


def fingerprint(argv: list[str]) -> str:
    """What a stage ran, so --resume reruns a stage whose command the plan has since changed. The
    interpreter, the checkout's place and --resume itself are left out: a copy elsewhere, or a
    first run without --resume, still resumes."""
    kept = [a.replace(str(REPO), "<repo>") for a in argv[1:] if a != "--resume"]
    return hashlib.sha256(json.dumps(kept).encode()).hexdigest()[:16]


# ---------------------------------------------------------------- running one child
class Interrupted(Exception):
    """SIGTERM arrived (an outer `timeout`, a closing session): stop the stage, keep the state,
    print the table."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Interrupted(f"stopped by signal {signum}")


@dataclass
class Outcome:
    status: str  # ok | failed | timeout | not_run | skipped
    rc: int | None
    seconds: float
    note: str = ""


def execute(argv: list[str], timeout_s: float, log: IO[str], echo: IO[str] | None = None) -> Outcome:
    """Run `argv` from the repository root, its output (stdout and stderr) into `log` and `echo`
    line by line; past `timeout_s` its whole process group is stopped (SIGTERM, then SIGKILL)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    t0 = time.monotonic()
    proc = subprocess.Popen(
        argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        text=True, errors="replace", bufsize=1, start_new_session=True,
    )  # fmt: skip

    def pump() -> None:
        for line in proc.stdout:
            log.write(line)
            log.flush()
            if echo is not None:
                echo.write(line)
                echo.flush()

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        rc = proc.wait(timeout=max(timeout_s, 0.1))
    except subprocess.TimeoutExpired:
        endpoint.stop_group(proc, KILL_GRACE_S)
        reader.join(KILL_GRACE_S)
        return Outcome("timeout", None, time.monotonic() - t0, f"stopped after {timeout_s:.0f} s")
    except BaseException:  # Interrupted (SIGTERM, e.g. an outer `timeout`), KeyboardInterrupt
        endpoint.stop_group(proc, KILL_GRACE_S)  # the child leads its own group: it would outlive us otherwise
        reader.join(KILL_GRACE_S)
        raise
    reader.join(KILL_GRACE_S)
    seconds = time.monotonic() - t0
    if rc == errors.Exit.SOME_INVALID:  # it measured; its INVALID or failed cases are recorded with why
        return Outcome("ok", rc, seconds, "some cases not valid (exit code 3)")
    return Outcome("ok" if rc == 0 else "failed", rc, seconds, "" if rc == 0 else f"exit code {rc}")


# ---------------------------------------------------------------- the check
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
) -> dict[str, Outcome]:
    """Every stage in order inside plan.budget_s; returns each stage's outcome. The children's
    output goes to OUT/gpucheck.log and, when given, to `echo` (the command line's stdout)."""
    out.mkdir(parents=True, exist_ok=True)
    start = clock()
    deadline = start + plan.budget_s - plan.reserve_s
    state = read_state(out) if resume else {}
    stages_state: dict = state.setdefault("stages", {})
    state.update(plan=plan.name, rehearse=plan.rehearse, budget_s=plan.budget_s)
    gpu = gpu or plan.gpu
    outcomes: dict[str, Outcome] = {}
    with (out / LOG).open("a") as log:
        _say(log, echo, f"== {plan.name}{' (rehearsal)' if plan.rehearse else ''} into {out}, budget "
                        f"{plan.budget_s:.0f} s, {'resuming' if resume else 'fresh'}, at {_now()}")  # fmt: skip
        asked = False  # the --which child runs once at most
        for stage in plan.stages:
            if gpu is None and stage.kind in ("run", "kernels") and not asked:
                gpu, asked = _gpu_from_probe(out) or _which(plan, log, echo), True
            try:
                argv = stage_argv(stage, plan, out, resume, gpu, plan_path)
            except BenchError as exc:
                outcomes[stage.name] = Outcome("failed", None, 0.0, str(exc))
                _say(log, echo, f"== {stage.name}: not run: {exc}")
                stages_state[stage.name] = {"status": "failed", "note": str(exc)}
                write_state(out, state)
                continue
            before = stages_state.get(stage.name) or {}
            same = before.get("fingerprint") == fingerprint(argv)
            if (
                resume
                and same
                and (before.get("status") == FINISHED or (before.get("status") == "failed" and not stage.rerun_failed))
            ):
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
                stages_state[stage.name] = {"status": "not_run", "note": note, "fingerprint": fingerprint(argv)}
                write_state(out, state)
                continue
            timeout = min(stage.timeout_s, left)
            _say(log, echo, f"== {stage.name} ({stage.kind}; timeout {timeout:.0f} s, estimate {stage.estimate_s:.0f} s) "
                            f"at {_now()}: {' '.join(argv[1:])}")  # fmt: skip
            stages_state[stage.name] = {"status": "running", "started_at": _now(), "fingerprint": fingerprint(argv)}
            write_state(out, state)
            t0 = clock()
            try:
                res = execute(argv, timeout, log, echo)
            except (Interrupted, KeyboardInterrupt) as exc:
                res = Outcome("interrupted", None, clock() - t0, f"{exc or 'interrupted'}; rerun with --resume")
            outcomes[stage.name] = res
            stages_state[stage.name] = {
                "status": res.status, "rc": res.rc, "seconds": round(res.seconds, 1), "timeout_s": round(timeout, 1),
                "estimate_s": stage.estimate_s, "note": res.note, "finished_at": _now(), "fingerprint": fingerprint(argv),
            }  # fmt: skip
            write_state(out, state)
            _say(
                log,
                echo,
                f"== {stage.name}: {res.status} in {res.seconds:.1f} s{' (' + res.note + ')' if res.note else ''}",
            )
            if res.status == "interrupted":
                break  # the stages left are neither run nor marked: --resume runs them
        state["wall_s"] = round(clock() - start, 1)
        write_state(out, state)
        text = table(plan, out, outcomes, clock() - start)
        _say(log, echo, text)
    return outcomes


def _gpu_from_probe(out: Path) -> str | None:
    try:
        data = errors.safe_load(errors.read_bounded(out / PROBE, "gpu-check probe", errors.MAX_YAML_BYTES)) or {}
    except (BenchError, yaml.YAMLError, ValueError, RecursionError):
        return None
    return data.get("gpu") if isinstance(data, dict) and isinstance(data.get("gpu"), str) else None


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
    """Versions, the device's accelerator key and run-file prefix, the SDPA kernel each planned
    case gets, what NVML can do, and the measured ceilings (copy bandwidth for MBU, GEMM rate);
    written to OUT/gpucheck-probe.yaml."""
    # torch and CUDA: only the probe stage (a child process) imports them, never the parent
    import importlib.metadata

    import torch

    from ppharness import backends
    from ppharness.core import ceilings, workload
    from ppharness.facts import sysinfo

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
        dev = be.device_for(scenario)
        sdpa[f"{scenario} b{batch} x{length}"] = workload.attention_kernel(
            cfg, scenario, batch, length, backends.DTYPES[dtype], dev
        )
    versions = {"python": sys.version.split()[0], "torch": torch.__version__}
    for pkg in ("triton", "nvidia-ml-py", "numpy"):
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            versions[pkg] = None
    sampler = be.power_sampler()
    guard = {"energy_counter": sampler is not None, "other_processes": be.busy_processes(),
             "clock_slowdowns": be.throttle_reasons()}  # fmt: skip
    t0 = time.perf_counter()
    ceil = ceilings.get_ceilings(be, dtype, info.name)
    acc = catalog.accelerator(info.accelerator) if info.accelerator else None
    facts = {
        "measured_at": _now(), "harness": sysinfo.harness(), "backend": plan.backend, "device": info.name,
        "accelerator": info.accelerator, "accelerator_reason": info.accelerator_reason, "gpu": gpu,
        "gpu_reason": gpu_reason, "versions": {**versions, **info.versions}, "sdpa": sdpa, "nvml": guard,
        "ceilings": {k: v for k, v in ceil.items() if k != "measured_at"}, "ceilings_s": round(time.perf_counter() - t0, 2),
        "peak": None if acc is None else {"bf16_tflops": acc.peak_tflops_for("bfloat16"), "mem_gbps": acc.mem_bw_gbps},
    }  # fmt: skip
    if acc is not None and acc.mem_bw_gbps:
        facts["copy_over_datasheet"] = ceil["copy_gbps"] / acc.mem_bw_gbps
    facts = json.loads(json.dumps(facts, default=str))  # plain types only (torch's version is a str subclass)
    (out / PROBE).write_text(yaml.safe_dump(facts, sort_keys=False))
    return facts


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


def table(plan: Plan, out: Path, outcomes: dict[str, Outcome], wall_s: float) -> str:
    """The short table printed last: stages, then each case's MFU/MBU, energy and $/1M tokens."""
    from ppharness.run.resume import read_folder  # imports torch: the parent reads records only here

    lines = [f"== {plan.name}{' (rehearsal: CPU, tiny model)' if plan.rehearse else ''}: {wall_s:.0f} s of the "
             f"{plan.budget_s:.0f} s budget; records, log and state in {out}"]  # fmt: skip
    probe_facts = {}
    try:
        probe_facts = errors.safe_load(errors.read_bounded(out / PROBE, "gpu-check probe", errors.MAX_YAML_BYTES))
    except (BenchError, yaml.YAMLError, ValueError, RecursionError):
        pass
    probe_facts = probe_facts if isinstance(probe_facts, dict) else {}
    if probe_facts:
        v, c = probe_facts.get("versions") or {}, probe_facts.get("ceilings") or {}
        lines.append(
            f"device: {probe_facts.get('device')} ({probe_facts.get('accelerator')}); torch {v.get('torch')}, "
            f"CUDA {v.get('cuda_runtime', '-')}, cuDNN {v.get('cudnn', '-')}, driver {v.get('driver', '-')}; "
            f"copy {_num(c.get('copy_gbps'))} GB/s, GEMM {_num(c.get('gemm_tflops'), '{:,.1f}')} TFLOP/s"
        )
        lines.append("sdpa: " + ", ".join(f"{k}={val}" for k, val in (probe_facts.get("sdpa") or {}).items()))
    lines.append(f"{'stage':<16}{'status':<10}{'seconds':>8}  note")
    for name, o in outcomes.items():
        lines.append(f"{name:<16}{o.status:<10}{o.seconds:>8.1f}  {o.note}")
    records = read_folder(out)
    model = [r for r in records if not str((r.get("workload") or {}).get("scenario", "")).startswith("kernel:")]
    kern = [r for r in records if str((r.get("workload") or {}).get("scenario", "")).startswith("kernel:")]

    def case_key(r: dict) -> tuple:
        w = r.get("workload") or {}
        return (
            w.get("scenario"),
            w.get("batch"),
            w.get("seq_len") or w.get("prompt_len"),
            w.get("compile"),
            w.get("dtype"),
        )

    order = {"train": 0, "prefill": 1, "decode": 2}
    rows = sorted(_latest(model, case_key).values(), key=lambda r: (order.get(case_key(r)[0], 9), case_key(r)[1] or 0))
    head = f"{'case':<34}{'status':<9}{'tokens/s':>12}{'MFU':>8}{'MBU':>8}{'MBU/copy':>9}{'J/token':>10}{'$/1M':>9}  target"
    lines += ["", head]
    for r in rows:
        w, m, c = r.get("workload") or {}, r.get("metrics") or {}, r.get("cost") or {}
        ceil = r.get("ceilings") or {}
        size = f"{w.get('batch')}x{w.get('seq_len') or w.get('prompt_len')}" + (
            f"+{w.get('new_tokens')}" if w.get("new_tokens") else ""
        )
        label = f"{w.get('scenario')} {size} {w.get('dtype')} {w.get('compile')}"
        gbps, copy_gbps = m.get("achieved_gbps"), ceil.get("copy_gbps")
        per_copy = gbps / copy_gbps if gbps and copy_gbps else None
        lines.append(
            f"{label:<34}{r.get('status', '?'):<9}{_num(m.get('tokens_per_s')):>12}{_pct(m.get('mfu')):>8}"
            f"{_pct(m.get('mbu')):>8}{_pct(per_copy):>9}{_num(m.get('energy_j_per_token'), '{:.3g}'):>10}"
            f"{_num(c.get('usd_per_million_tokens'), '{:.3g}'):>9}  {_target(plan, w, m)}"
        )
        if r.get("status") != "ok" and r.get("reason"):
            lines.append(f"{'':<4}{str(r['reason'])[:150]}")
    if not rows:
        lines.append("(no model records)")
    if kern:
        lines += ["", f"{'kernel':<34}{'status':<9}{'TFLOP/s':>10}{'GB/s':>10}{'of peak':>9}{'roofline':>9}"]
        for r in sorted(_latest(kern, lambda r: (r["workload"].get("kernel"), r["workload"].get("shape"),
                                                   r["workload"].get("variant"))).values(),
                        key=lambda r: str(r.get("created_at"))):  # fmt: skip
            w, m = r.get("workload") or {}, r.get("metrics") or {}
            label = f"{w.get('kernel')} {w.get('shape')} {w.get('variant')}"
            lines.append(
                f"{label:<34}{r.get('status', '?'):<9}{_num(m.get('achieved_tflops'), '{:,.1f}'):>10}"
                f"{_num(m.get('achieved_gbps')):>10}{_pct(m.get('peak_fraction')):>9}{_pct(m.get('roofline_fraction')):>9}"
            )
    lines.append("MFU: of the dense bf16 peak; MBU: of the datasheet memory bandwidth; MBU/copy: of the copy "
                 "bandwidth measured here (ppharness/core/ceilings.py)")  # fmt: skip
    return "\n".join(lines)


def _target(plan: Plan, w: dict, m: dict) -> str:
    for t in plan.targets:
        if t.get("scenario") != w.get("scenario") or ("batch" in t and t["batch"] != w.get("batch")):
            continue
        value = m.get(t["metric"])
        want = f"{t['metric'].upper()} >= {100 * t['min']:.0f}%"
        if value is None:
            return f"{want}: no figure"
        return f"{want}: {'met' if value >= t['min'] else 'short'}"
    return ""


# ---------------------------------------------------------------- command line
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ppharness.run.gpucheck", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "out" / "gpu-check", help="folder for records, log, state")
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
        plan = load_plan(args.plan, args.rehearse)
        if args.gpu:
            plan.gpu = args.gpu
        if args.budget is not None:
            if not args.budget > plan.reserve_s:
                raise BenchError(
                    f"--budget must exceed the {plan.reserve_s:g} s kept for the table, got {args.budget:g}"
                )
            plan.budget_s = args.budget
        out = args.out.resolve()
        if args.probe:
            out.mkdir(parents=True, exist_ok=True)
            facts = probe(plan, args.probe, out)
            print(yaml.safe_dump(facts, sort_keys=False), end="")
            return 0
        signal.signal(signal.SIGTERM, _on_sigterm)
        outcomes = run_check(copy.deepcopy(plan), out, args.resume, args.gpu, args.plan.resolve(), echo=sys.stdout)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (Interrupted, KeyboardInterrupt):  # between stages: the state file already says where it stood
        print("gpu-check: interrupted; run it again with --resume", file=sys.stderr)
        return 130
    return 0 if all(o.status in ("ok", "skipped") for o in outcomes.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
