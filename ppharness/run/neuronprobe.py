"""`python3 -m ppharness.run.neuronprobe --out DIR`: the first command to run on a trn1, inf2 or
trn2 host. In a few minutes, with no model download, it answers what the public sources leave
open about the Neuron backends (docs/neuron.md, "Not yet seen on hardware"; the sources are
weighed item by item in neuron-round2.md) and writes every answer into DIR:

| item | file | question |
|---|---|---|
| env | env.json | which variables the vendor imports write (torch, TorchNeuron, torch-xla, libneuronxla) |
| memory_info | memory_info.json | what `xm.get_memory_info` reports before and after a lazy step |
| torchneuron | torchneuron.json | TorchNeuron: fallback ops, peak memory, the "neuron" process group, NEURON_LAUNCH_BLOCKING |
| trace_state | trace_state.json | where traced aliased state lives after `move_trace_to_device`, and after `torch.jit.load` |
| compiler_cmd | compiler_cmd.json | the neuronx-cc command line `trace` runs, with and without a caching-wrapper flag |
| power | power.json | the power file's path, its timestamps and values over a few minutes, idle against busy |
| train | train.json | one training case timed with a wait per step and in blocks of 10 steps |

Each item runs in its own child process (a hang is stopped with its process group, a crash
loses only that item, and `env` sees a fresh interpreter), which writes `<item>.json` with
`status` ok | skipped | failed, a `reason` for a skip or failure, and its `data`. `probe.json`
sums them up with the host's versions; `probe.log` holds every child's output. On a host without
Neuron the items that need a NeuronCore say so and are skipped; with torch-xla installed and
`PJRT_DEVICE=CPU` the XLA parts (env, memory_info, train) run for real on torch-xla's CPU
device, which is how CI rehearses the probe (tests/test_neuronprobe.py,
tests/test_xla_neuronprobe.py). `--sysfs ROOT` points the power item at another sysfs tree
(the tests' fake one); `--quick` shortens the timed parts for a rehearsal.

The items are device code, so they live behind the backend seam
(ppharness/backends/_neuron_probe.py). This module, the parent, imports neither them nor torch:
on a TorchNeuron host `import torch` autoloads a package that writes environment variables the
children would inherit, and the `env` item must see a clean start.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import json
import os
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ppharness.errors import BenchError
from ppharness.run.gpuhost import execute  # the GPU check's child runner: process groups, timeouts, no torch

ITEMS = ("env", "memory_info", "torchneuron", "trace_state", "compiler_cmd", "power", "train")
TIMEOUT_S = {"env": 180, "memory_info": 300, "torchneuron": 600, "trace_state": 900, "compiler_cmd": 900,
             "power": 600, "train": 1200}  # fmt: skip
LOG, SUMMARY = "probe.log", "probe.json"
MODELS = ("tiny", "small", "gpt2-124m-shape")  # workload presets small enough for a first run (core/workload.py)


@dataclass
class Args:
    out: Path
    items: list[str] = field(default_factory=lambda: list(ITEMS))
    item: str = ""  # set in a child: the one item it runs
    power_s: float = 180.0
    poll_s: float = 5.0
    sysfs: str = ""
    model: str = "tiny"
    quick: bool = False

    @property
    def child(self) -> list[str]:
        """The options every child gets."""
        argv = ["--power-s", str(self.power_s), "--poll-s", str(self.poll_s), "--model", self.model]
        return argv + (["--sysfs", self.sysfs] if self.sysfs else []) + (["--quick"] if self.quick else [])


def host_facts() -> dict:
    """What host and software the answers come from (no torch import: the parent stays light)."""
    from ppharness.facts import sysinfo  # no torch: the host's EC2 type from DMI

    versions = {}
    for dist in ("torch", "torch-xla", "torch-neuronx", "neuronx-cc", "libneuronxla"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    try:
        driver = Path("/sys/module/neuron/version").read_text().strip()
    except OSError:
        driver = None
    return {"hostname": socket.gethostname(), "instance_type": sysinfo.ec2_instance_type(), "python": sys.version.split()[0],
            "versions": versions, "neuron_driver": driver, "pjrt_device": os.environ.get("PJRT_DEVICE", "unset")}  # fmt: skip


def child_argv(name: str, args: Args) -> list[str]:
    return [sys.executable, "-m", "ppharness.run.neuronprobe", "--item", name, "--out", str(args.out), *args.child]


def probe(args: Args, echo=sys.stdout) -> dict:
    """Every item in a child, in order; OUT/probe.json holds the summary, rewritten after each."""
    args.out.mkdir(parents=True, exist_ok=True)
    summary = {"started_at": _now(), "host": host_facts(), "options": args.child, "items": {}}
    with (args.out / LOG).open("a") as log:
        for name in args.items:
            (args.out / f"{name}.json").unlink(missing_ok=True)  # a stale answer never stands in for this run's
            log.write(f"== {name} at {_now()}\n")
            log.flush()
            outcome = execute(child_argv(name, args), TIMEOUT_S[name], log)
            try:
                result = json.loads((args.out / f"{name}.json").read_text())
                entry = {"status": result["status"], "reason": result["reason"], "seconds": result["seconds"],
                         "question": result["question"]}  # fmt: skip
            except (OSError, ValueError, KeyError):
                entry = {"status": "failed", "reason": f"the child wrote no answer ({outcome.status}: {outcome.note})",
                         "seconds": round(outcome.seconds, 1)}  # fmt: skip
            entry["file"] = f"{name}.json"
            summary["items"][name] = entry
            _write_json(args.out / SUMMARY, summary)
            line = f"{name:<13} {entry['status']:<8} {entry['seconds']:>7.1f}s  {entry['reason'][:150]}"
            log.write(f"== {line}\n")
            print(line, file=echo, flush=True)
    summary["finished_at"] = _now()
    _write_json(args.out / SUMMARY, summary)
    return summary


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str) + "\n")
    tmp.replace(path)  # atomic: a kill never leaves half a summary


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def parse_args(argv: list[str]) -> Args:
    ap = argparse.ArgumentParser(prog="python3 -m ppharness.run.neuronprobe", description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, type=Path, help="folder for the answers (created)")
    ap.add_argument("--only", default="", help=f"comma-separated items (default: all of {', '.join(ITEMS)})")
    ap.add_argument("--item", default="", help=argparse.SUPPRESS)  # a child: run this one item here
    ap.add_argument("--power-s", type=float, default=None, help="seconds the power item polls (default 180, --quick 4)")
    ap.add_argument("--poll-s", type=float, default=None, help="seconds between power reads (default 5, --quick 0.5)")
    ap.add_argument("--sysfs", default="", help="another Neuron sysfs root (tests)")
    ap.add_argument("--model", default="tiny", choices=MODELS, help="workload preset for train and torchneuron")
    ap.add_argument("--quick", action="store_true", help="short timings: a rehearsal, not answers")
    ns = ap.parse_args(argv)
    items = [i.strip() for i in ns.only.split(",") if i.strip()] if ns.only else list(ITEMS)
    bad = [i for i in items + ([ns.item] if ns.item else []) if i not in ITEMS]
    if bad:
        raise BenchError(f"unknown probe item {bad[0]!r}; valid: {', '.join(ITEMS)}")
    power_s = ns.power_s if ns.power_s is not None else (4.0 if ns.quick else 180.0)
    poll_s = ns.poll_s if ns.poll_s is not None else (0.5 if ns.quick else 5.0)
    if power_s <= 0 or poll_s <= 0:
        raise BenchError("--power-s and --poll-s must be positive")
    return Args(ns.out, items, ns.item, power_s, poll_s, ns.sysfs, ns.model, ns.quick)


def run_child(args: Args) -> int:
    """In a child: the one item, through the backends' probe module (this imports torch)."""
    from ppharness.backends import _neuron_probe as items  # imports torch: only in a child, never the parent

    opts = items.Opts(args.out, args.power_s, args.poll_s, args.sysfs, args.model, args.quick)
    return 0 if items.run_item(args.item, opts)["status"] != "failed" else 1


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
        if args.item:
            return run_child(args)
        summary = probe(args)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    failed = [n for n, e in summary["items"].items() if e["status"] == "failed"]
    print(
        f"answers in {args.out} ({SUMMARY}, one <item>.json each){'; failed: ' + ', '.join(failed) if failed else ''}"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
