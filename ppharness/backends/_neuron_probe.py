"""The items of the Neuron first-run probe (the command is ppharness/run/neuronprobe.py), one
function each: `item_<name>(opts) -> data`, raising `Skip` with the reason where this host cannot
answer; `run_item` runs one in a child process of the probe and writes OUT/<item>.json.

Device code stays behind the backend seam (DESIGN.md), so the items live here, and the probe's
parent, which must not import torch (on a TorchNeuron host `import torch` autoloads a package
that writes environment variables its children would inherit), never imports this module. A
child imports it, and with it torch (ppharness/backends/__init__.py); the vendor packages are
imported inside the items, the `env` item one at a time, each step's environment changes
measured against the snapshot taken when the child started (ppharness/startenv.py).
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import socket
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ppharness import backends, startenv
from ppharness.backends import _neuron_env as env
from ppharness.backends import _neuron_power as power
from ppharness.backends import _neuron_vars as nvars
from ppharness.backends.neuron_xla import state_devices
from ppharness.core import scenarios, timing
from ppharness.core.scenarios import Case
from ppharness.core.workload import PRESETS, build_model, random_tokens

QUESTIONS = {
    "env": "Which environment variables do the vendor imports write?",
    "memory_info": "What does xm.get_memory_info report on this PJRT device, before and after one lazy step?",
    "torchneuron": "TorchNeuron: which ops fall back to the CPU, does torch.neuron report peak memory, is the "
    "'neuron' process group registered, is eager synchronous?",
    "trace_state": "Where does a traced graph's aliased state live after move_trace_to_device, and after torch.jit.load?",
    "compiler_cmd": "What neuronx-cc command line does torch_neuronx.trace run, and does it accept a caching-wrapper flag?",
    "power": "Where is the per-minute power file, how do its timestamps step, and what does it read idle against busy?",
    "train": "How does a training step's time differ between a wait after every step and one wait per block of 10?",
}
STAMP_MARGIN_S = 5.0  # after a minute boundary: the driver's 50 ms sampler has stamped the minute by then
# The packages whose import may write the environment, in the order the env item imports them.
VENDOR_MODULES = ("torch", "torch_neuronx", "torch_xla", "libneuronxla")
# Variables whose values the env item records; of any other changed variable only the name.
VALUE_PREFIXES = ("NEURON_", "TORCH_NEURONX_", "XLA_", "PJRT_", "JAX_", "FI_", "ALLREDUCE_", "TPU_", "TORCH_",
                  "TF_CPP_", "GRPC_VERBOSITY")  # fmt: skip


@dataclass
class Opts:
    out: Path
    power_s: float = 180.0  # half idle, half busy
    poll_s: float = 5.0
    sysfs: str = ""  # "" = the driver's /sys/devices/virtual/neuron_device
    model: str = "tiny"
    quick: bool = False


class Skip(Exception):
    """An item that cannot run on this host: the message says why."""


def _present(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _pjrt_lane() -> str:
    return "cpu" if os.environ.get("PJRT_DEVICE") == "CPU" else "neuron"


def _neuron_chips(opts: Opts) -> list[int]:
    root = opts.sysfs or env.SYSFS
    names = sorted(p.name for p in Path(root).glob("neuron[0-9]*")) if Path(root).is_dir() else []
    return [int(n.removeprefix("neuron")) for n in names]


def _need_neuroncore(what: str) -> None:
    """Skip unless torch-neuronx 2.9 (the XLA path) and a Neuron chip are here."""
    if _pjrt_lane() == "cpu":
        raise Skip(f"{what} needs a NeuronCore; PJRT_DEVICE=CPU is the test lane")
    probe = env.probe_neuronx(env.XLA_SERIES)
    if not probe.ok:
        raise Skip(f"{what} needs torch-neuronx 2.9 (the XLA path): {probe.reason}")
    if not env.neuron_devices():
        raise Skip(f"{what} needs a Neuron device; none under /dev or {env.SYSFS}")


# ---------------------------------------------------------------- items (each in a child)
def item_env(opts: Opts) -> dict:
    """The environment as the child started (startenv), then after each vendor import in turn. A
    module already imported (torch, by ppharness.backends; TorchNeuron, autoloaded with torch) has
    its writes in the step that imported it."""
    steps, before = [], startenv.user_environ()
    for module in VENDOR_MODULES:
        if module in sys.modules:
            after = dict(os.environ)
            steps.append({"import": module, "status": "ok", "reason": "imported before this step (torch: by "
                          "ppharness.backends; others: loaded by an earlier import)",
                          "changed": _changes(before, after)})  # fmt: skip
            before = after
            continue
        if not _present(module):
            steps.append({"import": module, "status": "skipped", "reason": "not installed"})
            continue
        t0 = time.perf_counter()
        try:
            __import__(module)  # vendor package, imported to see what it writes (the item's question)
            status, reason = "ok", ""
        except Exception as exc:  # noqa: BLE001 - PyPI's placeholders raise ImportError: that is an answer
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
            status, reason = "failed", f"{type(exc).__name__}: {first}"
        after = dict(os.environ)
        steps.append({"import": module, "status": status, "reason": reason,
                      "seconds": round(time.perf_counter() - t0, 2), "changed": _changes(before, after)})  # fmt: skip
        before = after
    return {"snapshot": startenv.describe(), "steps": steps, "observed_after_imports": nvars.observed_env(),
            "vendor_vars_at_start": {k: v for k, v in startenv.SNAPSHOT.items() if k.startswith(VALUE_PREFIXES)}}  # fmt: skip


def _changes(before: dict, after: dict) -> dict:
    """{name: [before, after]} for vendor-looking variables; other changed names with null values
    (their values may be anyone's secrets)."""
    out = {}
    for key in sorted(set(before) | set(after)):
        if before.get(key) != after.get(key):
            shown = key.startswith(VALUE_PREFIXES)
            out[key] = [before.get(key), after.get(key)] if shown else None
    return out


def item_memory_info(opts: Opts) -> dict:
    if not _present("torch_xla"):
        raise Skip("torch-xla is not installed (the XLA path: torch-neuronx 2.9, or the CPU test lane)")
    import torch_xla  # vendor package: the XLA path (and the CPU test lane)
    import torch_xla.core.xla_model as xm

    dev = torch_xla.device()

    def info() -> dict:
        try:
            return {"ok": True, "value": {k: int(v) for k, v in dict(xm.get_memory_info(dev)).items()}}
        except Exception as exc:  # noqa: BLE001 - "unimplemented for CPU" (pytorch/xla#7086) is an answer
            return {"ok": False, "error": f"{type(exc).__name__}: {str(exc)[:300]}"}

    readings = {"before": info()}
    n = 256 if opts.quick or _pjrt_lane() == "cpu" else 4096
    x = torch.randn(n, n, device=dev)
    y = (x @ x).relu().sum()
    torch_xla.sync()
    xm.wait_device_ops()
    readings["after_step"] = info()
    del x, y
    readings["after_free"] = info()
    return {"pjrt_device": os.environ.get("PJRT_DEVICE", "unset"), "device": str(dev), "matmul_n": n,
            "torch_xla": getattr(torch_xla, "__version__", None), **readings}  # fmt: skip


def item_torchneuron(opts: Opts) -> dict:
    ok, why = backends.get("neuron").available()
    if not ok:
        raise Skip(f"backend neuron (TorchNeuron) is not available here: {why}")
    import torch.distributed as dist  # torch.distributed: this item only (slow; absent from some builds)
    import torch_neuronx  # vendor package (TorchNeuron): autoloaded with torch already

    data: dict = {"torch_neuronx": getattr(torch_neuronx, "__version__", None),
                  "launch_blocking": os.environ.get("NEURON_LAUNCH_BLOCKING", "unset"),
                  "fallback_only_for_unimplemented": os.environ.get("TORCH_NEURONX_FALLBACK_ONLY_FOR_UNIMPLEMENTED_OPS", "unset"),
                  "device_count_before_init": _try(torch.accelerator.device_count)}  # fmt: skip
    # The process group first: TorchNeuron asserts the runtime is not initialised before it.
    data["process_group"] = {"registered": "neuron" in dist.Backend.backend_list,
                             "device_map": dist.Backend.default_device_backend_map.get("neuron"),
                             "ppbench_asks_for": _try(lambda: backends.make("neuron").distributed_backend())}  # fmt: skip
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(_free_port()))
    data["process_group"]["init_world_1"] = _try(lambda: _init_world_1(dist))
    tracked = all(callable(getattr(torch_neuronx, f, None)) for f in ("get_fallback_ops", "clear_op_tracking"))
    data["fallback_api"] = tracked
    mem = getattr(torch, "neuron", None)
    data["memory_api"] = {
        f: callable(getattr(mem, f, None)) for f in ("max_memory_allocated", "reset_peak_memory_stats")
    }
    if tracked:
        torch_neuronx.clear_op_tracking()
    _try(lambda: mem.reset_peak_memory_stats())
    data["step"] = _try(lambda: _neuron_train_step(opts))
    if tracked:
        data["fallback_ops"] = sorted({str(o) for o in torch_neuronx.get_fallback_ops()})
        data["executed_ops"] = len(set(torch_neuronx.get_executed_ops()))
    data["peak_torch_neuron"] = _try(lambda: int(mem.max_memory_allocated()))
    data["peak_torch_accelerator"] = _try(lambda: int(torch.accelerator.max_memory_allocated()))
    return data


def _init_world_1(dist) -> str:
    dist.init_process_group(backend="neuron", rank=0, world_size=1)
    name = dist.get_backend()
    dist.destroy_process_group()
    return name


def _neuron_train_step(opts: Opts) -> dict:
    """One eager train step of the workload on the `neuron` device (forward, loss, backward, AdamW)."""
    cfg = PRESETS[opts.model]
    model = build_model(cfg, seed=0).to("neuron")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    tokens = random_tokens(cfg, 2, 64, seed=0).to("neuron")
    t0 = time.perf_counter()
    logits = model(tokens[:, :-1])
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), tokens[:, 1:].flatten())
    loss.backward()
    opt.step()
    torch.neuron.synchronize()
    return {"loss": float(loss.item()), "seconds": round(time.perf_counter() - t0, 3)}


def _toy_state_module():
    """out = 2x and the state advanced by x, the new state aliased back over the Parameter (the
    workload's KV-cache pattern, ppharness/backends/_neuron_trace.py)."""

    class Toy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.state = nn.Parameter(torch.zeros(4, 128), requires_grad=False)

        def forward(self, x):
            new = self.state + x
            return x * 2, new

    return Toy()


def item_trace_state(opts: Opts) -> dict:
    _need_neuroncore("torch_neuronx.trace")
    import torch_neuronx  # vendor package: the XLA path on a Neuron host

    toy, x = _toy_state_module(), torch.ones(4, 128)
    work = opts.out / "trace_state"
    traced = torch_neuronx.trace(toy, (x,), input_output_aliases={toy.state: 1}, compiler_workdir=str(work / "graph"))
    data: dict = {"fresh": state_devices(traced), "calls_s": {}}
    data["calls_s"]["before_move"] = _time_calls(traced, x)
    path = work / "traced.pt"
    torch.jit.save(traced, str(path))  # before moving, as ppbench's trace cache does
    mover = getattr(torch_neuronx, "move_trace_to_device", None)
    data["move_trace_to_device"] = callable(mover)
    if callable(mover):
        data["move_fresh"] = _try(lambda: mover(traced, 0))
        data["after_move"] = state_devices(traced)
        data["calls_s"]["after_move"] = _time_calls(traced, x)
    loaded = torch.jit.load(str(path))
    data["loaded"] = state_devices(loaded)
    data["loaded_output_matches"] = _try(lambda: bool(torch.equal(loaded(x)[0], traced(x)[0])))
    if callable(mover):
        data["move_loaded"] = _try(lambda: mover(loaded, 0))
        data["loaded_after_move"] = state_devices(loaded)
        data["calls_s"]["loaded_after_move"] = _time_calls(loaded, x)
    data["visible_cores"] = os.environ.get("NEURON_RT_VISIBLE_CORES", "unset")
    return data


def _time_calls(fn: Callable, x, n: int = 50) -> float:
    """Median seconds of one blocking traced call."""
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def item_compiler_cmd(opts: Opts) -> dict:
    _need_neuroncore("torch_neuronx.trace")
    import torch_neuronx  # vendor package: the XLA path on a Neuron host

    flags = list(backends.make("neuron-xla").flags)  # what ppbench hands trace, for this host
    out: dict = {"ppbench_flags": flags}
    for name, extra in (("own_flags", []), ("with_wrapper_flag", ["--retry_failed_compilation"])):
        work = opts.out / "compiler_cmd" / name
        t0 = time.perf_counter()
        try:
            torch_neuronx.trace(lambda a, b: a @ b + 1, (torch.ones(8, 8), torch.ones(8, 8)),
                                compiler_workdir=str(work), compiler_args=flags + extra)  # fmt: skip
            result = {"ok": True}
        except Exception as exc:  # noqa: BLE001 - a refusal is the answer the item looks for
            result = {"ok": False, "error": f"{type(exc).__name__}: {str(exc)[-1500:]}"}
        result["seconds"] = round(time.perf_counter() - t0, 1)
        result["command_txt"] = read_text(work / "command.txt")
        result["files"] = (
            sorted(str(p.relative_to(work)) for p in work.rglob("*") if p.is_file())[:50] if work.is_dir() else []
        )
        out[name] = result
    return out


def read_text(path: Path, limit: int = 4000) -> str | None:
    try:
        return path.read_text(errors="replace")[:limit]
    except OSError:
        return None


def item_power(opts: Opts) -> dict:
    root = opts.sysfs or power.SYSFS
    chips = _neuron_chips(opts)
    if not chips:
        raise Skip(f"no Neuron chip (neuron<N> folder) under {root}")
    files = [power.discover(c, root) for c in chips]
    found = [f for f in files if f.minute]
    data: dict = {"root": root, "files": {f"neuron{f.chip}": {"minute": f.minute, "raw": f.raw, "candidates": f.candidates}
                                          for f in files}}  # fmt: skip
    if not found:
        data["reason"] = "no file under neuron<N>/ parses as the per-minute power format"
        return data
    poller = power.PowerPoller(found, opts.poll_s)
    poller.start()
    t0 = time.time()
    idle_end, end = phase_bounds(t0, opts.power_s, aligned=not opts.quick)
    time.sleep(max(0.0, idle_end - t0))  # idle: this process holds no NeuronCore yet
    t1 = time.time()
    data["busy_work"] = _busy(end - t1)
    t2 = time.time()
    poller.stop()
    data["phases"] = {"idle": [t0, t1], "busy": [t1, t2]}
    data["history"] = poller.history
    data["raw_reads"] = {f"neuron{c}": r for c, r in poller.raw.items() if r}
    data["idle"] = power.window_average(poller.minutes, t0, t1)
    data["busy"] = power.window_average(poller.minutes, t1, t2)
    stamps = sorted({h["ts"] for h in poller.history})
    data["stamp_steps_s"] = [b - a for a, b in zip(stamps, stamps[1:])]
    return data


def phase_bounds(now: float, seconds: float, aligned: bool) -> tuple[float, float]:
    """(end of the idle phase, end of the busy phase). Aligned: the idle phase ends one whole
    epoch minute after the next boundary, and the busy phase runs whole minutes until `seconds`
    have passed, plus a few seconds for the driver to stamp its last minute (_neuron_power.py),
    so each phase holds at least one whole minute. Not aligned (a rehearsal): halves."""
    if not aligned:
        return now + seconds / 2, now + seconds
    idle_end = math.ceil(now / power.MINUTE) * power.MINUTE + power.MINUTE
    end = idle_end + power.MINUTE
    while end - now < seconds:
        end += power.MINUTE
    return idle_end, end + STAMP_MARGIN_S


def _busy(seconds: float) -> dict:
    """Matmuls on the first device found (XLA's, TorchNeuron's, else the CPU) for `seconds`."""

    deadline, steps = time.time() + seconds, 0
    if _present("torch_xla"):
        import torch_xla  # vendor package: the XLA path (and the CPU test lane)
        import torch_xla.core.xla_model as xm

        dev, n = torch_xla.device(), 256 if _pjrt_lane() == "cpu" else 4096
        x = torch.randn(n, n, device=dev)
        while time.time() < deadline:
            x = (x @ x).tanh()
            torch_xla.sync()
            xm.wait_device_ops()
            steps += 1
        return {"device": str(dev), "n": n, "steps": steps}
    acc = torch.accelerator.current_accelerator()
    dev = acc.type if acc is not None else "cpu"
    x = torch.randn(256 if dev == "cpu" else 4096, 256 if dev == "cpu" else 4096, device=dev)
    while time.time() < deadline:
        x = (x @ x).tanh()
        if dev != "cpu":
            torch.accelerator.synchronize()
        steps += 1
    note = "no Neuron device: busy on the host" if dev == "cpu" else ""
    return {"device": dev, "n": x.shape[0], "steps": steps, "note": note}


def item_train(opts: Opts) -> dict:
    """One train case built once, measured by the timing protocol (ppharness/core/timing.py) with a
    wait after every step (k=1) and one per block of 10 (k=10), alternated twice (1, 10, 1, 10) so
    a drifting host drifts for both. The runner's records and ceilings are left out: this item
    asks only how the two ways of waiting differ."""
    name = next((b for b in ("neuron-xla", "neuron") if backends.get(b).available()[0]), None)
    if name is None:
        why = "; ".join(f"{b}: {backends.get(b).available()[1]}" for b in ("neuron-xla", "neuron"))
        raise Skip(f"no Neuron backend is available here ({why})")
    backend = backends.make(name)
    lane = getattr(backend, "lane", "neuron")
    # The CPU test lane: float32 and a small step (XLA's CPU device emulates bf16 slowly).
    small = opts.quick or lane == "cpu"
    case = Case("train", batch=2 if small else 8, dtype="float32" if small else "bfloat16",
                compile="none" if name == "neuron-xla" else "default", seq_len=32 if small else 128)  # fmt: skip
    cfg = (timing.TimingConfig(warmup=2, min_iters=3, min_seconds=0.0, max_seconds=60.0, max_other_cpu=1.0)
           if opts.quick else
           timing.TimingConfig(warmup=10, min_iters=20, min_seconds=5.0, max_seconds=120.0, max_other_cpu=1.0))  # fmt: skip
    step = scenarios.build_step(case, PRESETS[opts.model], backend)
    runs = []
    for k in (1, 10, 1, 10):
        m = timing.measure(step.run, backend, cfg, step.prepare_s, steps_per_sample=k)
        s = timing.summarize(m.samples_s)
        runs.append({"steps_per_sample": k, "median_s": s["median_s"], "ci95_s": s["ci95_s"], "n": s["n"],
                     "steps": s["n"] * k, "window_s": round(m.window_s, 3), "compile_s": round(m.compile_s, 3),
                     "compiles_in_window": m.compiles_in_window, "reasons": m.reasons, "warnings": m.warnings})  # fmt: skip
    per_step = [r["median_s"] for r in runs if r["steps_per_sample"] == 1]
    block = [r["median_s"] for r in runs if r["steps_per_sample"] == 10]
    ratio = [a / b for a, b in zip(per_step, block) if a and b]
    return {"backend": name, "lane": lane, "model": opts.model, "case": case.label(), "timing": vars(cfg),
            "runs": runs, "per_step_over_block": ratio}  # fmt: skip


def _try(fn: Callable) -> object:
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - the error is the finding
        return {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


ITEM_FNS: dict[str, Callable[[Opts], dict]] = {
    "env": item_env, "memory_info": item_memory_info, "torchneuron": item_torchneuron, "trace_state": item_trace_state,
    "compiler_cmd": item_compiler_cmd, "power": item_power, "train": item_train,
}  # fmt: skip


def run_item(name: str, opts: Opts) -> dict:
    """One item, in this process: its result written to OUT/<item>.json (atomically) and returned."""
    opts.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    result = {"item": name, "question": QUESTIONS[name], "status": "ok", "reason": "", "data": None}
    try:
        result["data"] = ITEM_FNS[name](opts)
    except Skip as exc:
        result.update(status="skipped", reason=str(exc))
    except Exception as exc:  # noqa: BLE001 - recorded; the other items still run
        result.update(status="failed", reason=f"{type(exc).__name__}: {str(exc)[:500]}",
                      traceback=traceback.format_exc()[-4000:])  # fmt: skip
    result["seconds"] = round(time.perf_counter() - t0, 2)
    _write_json(opts.out / f"{name}.json", result)
    return result


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str) + "\n")
    tmp.replace(path)


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str) + "\n")
    tmp.replace(path)
