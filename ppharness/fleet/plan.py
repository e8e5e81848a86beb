"""The fleet's plan: one SkyPilot task per side, and what the sides may cost, from any host.

A side is one `ppbench run` command on one EC2 instance: the run file, validated as `ppbench run`
would (run/config.py), with that side's --backend and --set from configs/fleet.yaml, on every device
of its instance when the file has a `parallel:` section (a whole-instance recipe), and refused here
when the memory plan (run/memplan.py) says it cannot fit, so nothing is launched to fail.

Each task names the exact `instance_type` (SkyPilot counts Trainium in chips, 16 on a trn1.32xlarge,
not the 32 NeuronCores ppbench drives, so an accelerator request would not say the same), its region
and disk, the AMI (resolved at launch from its public SSM parameter: ami.py), autostop with down, the
checkout as the workdir, a `setup` that prepares the environment docs/neuron.md or docs/gpu.md name,
and a `run` that is the side's `ppbench run` command. Rendering needs no SkyPilot: the task is plain
YAML that SkyPilot's own loader reads (tests/test_fleet_sky.py checks that it does, offline).

Cost: a side's setup and run are stopped at their budgets (`timeout`), so its bound is
(provision + setup + run + idle) minutes x the hourly price configs/instances.yaml gives for how the
side is billed (on demand, or spot when the run file is priced at spot). The sum over sides is the
fleet's bound, printed before anything is launched and refused above --max-usd.
"""

from __future__ import annotations

import math
import re
import secrets
import shlex
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import yaml

from ppharness import paths
from ppharness.core import parallel
from ppharness.errors import BenchError
from ppharness.facts import catalog, sysinfo
from ppharness.fleet import spec as spec_mod
from ppharness.fleet.spec import Environment, FleetSpec, SideSpec
from ppharness.run import config, memplan

PREFIX = (
    "ppbench-"  # every cluster this tool launches is `ppbench-<side>-<job id>`; `fleet down --all` takes only those
)
CLUSTER_NAME = re.compile(r"^ppbench-[a-z][a-z0-9]{0,11}-[0-9]{6}-[0-9]{6}-[0-9a-f]{4}$")
REMOTE_OUT = "$HOME/ppbench-fleet/out"  # where a side's records are written on its instance
PRECOMPILE_OUT = "/tmp/ppbench-precompile"  # neuron_parallel_compile's garbage records, never collected


@dataclass(frozen=True)
class Minutes:
    provision: int
    setup: int
    compile: int
    cases: int
    per_case: int
    idle: int

    @property
    def run(self) -> int:
        return self.compile + self.cases * self.per_case

    @property
    def total(self) -> int:
        return self.provision + self.setup + self.run + self.idle


@dataclass(frozen=True)
class Side:
    name: str
    rel: str  # the run file, relative to the checkout (the workdir the instance gets)
    backend: str
    backend_option: str | None  # the --backend this side passes (None: the file's own)
    sets: tuple[str, ...]
    cfg: config.RunConfig
    env: Environment
    ranks: int | None  # --nproc-per-node; None: one process
    price: catalog.Price  # how the instance is billed: on demand, or spot
    minutes: Minutes
    precompile: bool
    warnings: tuple[str, ...] = ()

    @property
    def instance(self) -> str:
        return self.cfg.instance

    @property
    def region(self) -> str:
        return self.cfg.region

    @property
    def use_spot(self) -> bool:
        return self.price.basis == "spot"

    @property
    def bound_usd(self) -> float:
        return self.minutes.total / 60 * self.price.usd_per_hour

    def command(self, out: str = REMOTE_OUT) -> str:
        """The side's `ppbench run` command line, as docs/training.md writes it."""
        argv = ["ppbench", "run", self.rel]
        argv += ["--backend", self.backend_option] if self.backend_option else []
        argv += [a for s in self.sets for a in ("--set", s)]
        argv += ["--nproc-per-node", str(self.ranks)] if self.ranks else []
        return f'{shlex.join(argv)} --out "{out}"'


@dataclass(frozen=True)
class Plan:
    job_id: str
    checkout: Path
    commit: str | None
    dirty: bool | None
    spec: FleetSpec
    sides: tuple[Side, ...]
    notes: tuple[str, ...] = field(default=())

    @property
    def bound_usd(self) -> float:
        return sum(s.bound_usd for s in self.sides)

    def cluster(self, side: Side) -> str:
        return f"{PREFIX}{side.name}-{self.job_id}"


def new_job_id(now: datetime | None = None) -> str:
    """UTC time to the second plus 4 random hex digits: sortable, unique, short enough for a cluster name."""
    now = now or datetime.now(timezone.utc)
    return f"{now:%y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def checkout() -> Path:
    """The repository root the instances get as their workdir; a wheel install has none."""
    root = paths.CHECKOUT
    if not (root / "pyproject.toml").is_file() or not (root / "configs").is_dir():
        raise BenchError(
            f"ppbench fleet sends a checkout of ppbench to each instance; {root} is not one (git clone it)"
        )
    return root


def make_plan(files: list[Path], only: list[str] | None = None, fleet: FleetSpec | None = None,
              job_id: str | None = None) -> Plan:  # fmt: skip
    """Every side of every file (a recipe's sides from configs/fleet.yaml; any other run file is
    one side as written), or only the sides named in `only`. Bad input: BenchError, one line."""
    fleet = fleet or spec_mod.load()
    root = checkout()
    known = [s.name for f in files for s in _side_specs(f, fleet)]
    unknown = sorted(set(only or []) - set(known))
    if unknown:
        raise BenchError(f"no side named {unknown[0]!r}; the sides are: {', '.join(sorted(set(known)))}")
    sides: list[Side] = []
    for file in files:
        for side_spec in _side_specs(file, fleet):
            if only and side_spec.name not in only:
                continue
            side = plan_side(file, side_spec, fleet, root)
            if any(s.name == side.name for s in sides):
                raise BenchError(f"two sides are named {side.name!r}; plan them one file at a time or pick with --side")
            sides.append(side)
    sha, dirty = sysinfo.git_state()
    notes = ()
    if dirty:
        notes = ("the checkout has uncommitted changes: the records will say harness.dirty (fleet run refuses "
                 "unless --allow-dirty)",)  # fmt: skip
    return Plan(job_id or new_job_id(), root, sha, dirty, fleet, tuple(sides), notes)


def _side_specs(file: Path, fleet: FleetSpec) -> tuple[SideSpec, ...]:
    if file.stem in fleet.recipes:
        return fleet.recipes[file.stem]
    raw = config.read_yaml(file) if file.is_file() else {}
    family = str(raw.get("instance", "side")).split(".")[0].replace("-", "")[:12].lower() or "side"
    return (SideSpec(family if spec_mod.SIDE_NAME.match(family) else "side"),)


def plan_side(file: Path, side: SideSpec, fleet: FleetSpec, root: Path) -> Side:
    where = f"side {side.name} ({file.name})"
    try:
        rel = file.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        raise BenchError(f"{where}: the run file lies outside the checkout {root} that the instances get; "
                         "copy it into the checkout") from None  # fmt: skip
    cfg = config.load(file, list(side.sets), side.backend)
    if not isinstance(cfg, config.RunConfig):
        raise BenchError(f"{where}: a serve run file needs its server set up on the instance; fleet runs run files")
    if cfg.instance in ("none", "auto"):
        raise BenchError(f"{where}: the run file must name its EC2 instance (instance: {cfg.instance})")
    if len(cfg.backends) != 1:
        raise BenchError(f"{where}: one backend per side, the run file names {', '.join(cfg.backends)}")
    backend = cfg.backends[0]
    env = fleet.environment(backend)
    whole = cfg.parallel != parallel.ParallelConfig()  # a `parallel:` section: every device of the instance
    world = memplan.world_for(cfg, None, None) if whole else 1
    config.check_world(cfg, world)
    _, _, refusals = memplan.plan_run(cfg, world)
    if refusals and whole:  # what `ppbench run` itself refuses (docs/training.md, the memory plan)
        raise BenchError(f"{where}: {refusals[0]}")
    warnings = tuple(f"the memory plan says {r}" for r in refusals)
    price = billing_price(cfg, where)
    cases = config.expand(cfg)
    minutes = Minutes(
        provision=fleet.limits.provision_minutes,
        setup=env.setup_minutes,
        compile=env.compile_minutes,
        cases=len(cases),
        per_case=math.ceil(2 * cfg.timing.max_seconds / 60),
        idle=fleet.limits.idle_minutes,
    )
    precompile = backend == "neuron-xla" and any(c.scenario == "train" for c in cases)
    return Side(side.name, rel, backend, side.backend, side.sets, cfg, env, world if whole else None, price,
                minutes, precompile, warnings)  # fmt: skip


def billing_price(cfg: config.RunConfig, where: str) -> catalog.Price:
    """What AWS bills for the side: spot when the run file is priced at spot (the side launches on
    spot), else on demand; RI and Capacity Block rates are prices a record can be held at, not ways
    to launch."""
    if cfg.price_basis == "capacity_block":
        raise BenchError(f"{where}: a Capacity Block is bought ahead in the EC2 console and launched into; "
                         "fleet launches on demand or spot (price_basis: on_demand or spot)")  # fmt: skip
    basis = "spot" if cfg.price_basis == "spot" else "on_demand"
    try:
        return catalog.price(cfg.instance, basis, cfg.region)
    except catalog.CatalogError as exc:
        raise BenchError(f"{where}: {exc}; the cost bound needs it") from None


def check_budget(plan: Plan, max_usd: float | None) -> None:
    if max_usd is not None and plan.bound_usd > max_usd:
        parts = " + ".join(f"{s.name} ${s.bound_usd:.2f}" for s in plan.sides)
        raise BenchError(f"the fleet may cost up to ${plan.bound_usd:.2f} ({parts}), above --max-usd {max_usd:g}; "
                         "nothing was launched")  # fmt: skip


def image_ref(side: Side, amis: dict[str, str] | None) -> str:
    """The AMI id resolved for the side's region, or the SSM parameter as EC2's own `resolve:ssm:`
    reference where it was not resolved (no credentials here: `fleet plan`)."""
    return (amis or {}).get(side.name) or f"resolve:ssm:{side.env.image_ssm}"


def task(plan: Plan, side: Side, amis: dict[str, str] | None = None) -> dict:
    """The SkyPilot task of one side, as the dict its YAML loader reads (`sky.Task.from_yaml_config`)."""
    return {
        "name": plan.cluster(side),
        "workdir": str(plan.checkout),
        "num_nodes": 1,  # one instance per side: multi-node Trainium through SkyPilot gets no EFA (docs/fleet.md)
        "resources": {
            "infra": f"aws/{side.region}",
            "instance_type": side.instance,
            "image_id": image_ref(side, amis),
            "disk_size": plan.spec.limits.disk_gb,
            "use_spot": side.use_spot,
            "autostop": {"idle_minutes": plan.spec.limits.idle_minutes, "down": True, "wait_for": "jobs"},
        },
        "envs": {
            "PPBENCH_JOB_ID": f"{plan.job_id}-{side.name}",  # one value in every rank (ppharness/backends)
            "PPBENCH_GIT_SHA": plan.commit or "unknown",  # the records' commit when the copy has no usable .git
            "PPBENCH_FLEET_SIDE": side.name,
        },
        "setup": setup_script(side),
        "run": run_script(side),
    }


class _TaskDumper(yaml.SafeDumper):
    """Multi-line strings (setup, run) as YAML literal blocks, so the printed task reads like the scripts."""


_TaskDumper.add_representer(
    str, lambda d, v: d.represent_scalar("tag:yaml.org,2002:str", v, style="|" if "\n" in v else None)
)


def task_yaml(task_dict: dict) -> str:
    return yaml.dump(task_dict, Dumper=_TaskDumper, sort_keys=False, width=1000)


def _bounded(name: str, minutes: int, body: list[str]) -> str:
    """`body` written to a script on the instance, then run with no stdin and stopped after `minutes`
    (killed 60 s later): the cost bound. A file, not `bash <<EOF`, so no command can read the rest
    of the script as its input."""
    path = f"$HOME/ppbench-fleet/{name}.sh"
    tag = f"PPBENCH_{name.upper()}"
    return "\n".join(["set -euo pipefail", 'mkdir -p "$HOME/ppbench-fleet"', f"cat > \"{path}\" <<'{tag}'",
                      "set -euo pipefail", *body, tag,
                      f'timeout --kill-after=60 {minutes}m bash "{path}" < /dev/null', ""])  # fmt: skip


def _activate(env: Environment) -> str:
    """The venv first on PATH (what `activate` does, without sourcing a script `set -u` may trip on)."""
    return f'export VIRTUAL_ENV="{env.venv_shell}" PATH="{env.venv_shell}/bin:$PATH"'


def setup_script(side: Side) -> str:
    env = side.env
    body = []
    if env.apt:
        body.append("sudo apt-get update -q && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -q "
                    + " ".join(env.apt))  # fmt: skip
    if env.create_venv:
        body.append(f'test -x "{env.venv_shell}/bin/python" || python3 -m venv "{env.venv_shell}"')
    body.append(_activate(env))
    pip = "python -m pip install -q" + (f" --extra-index-url {env.index_url}" if env.index_url else "")
    if env.packages:
        body.append(f"{pip} {' '.join(env.packages)}")
    # ppbench into the same venv, keeping the torch it now has (the Neuron SDK's, or the pin above)
    body.append("python -c 'import torch; print(\"torch==\" + torch.__version__)' > /tmp/ppbench-keep-torch.txt")
    body.append(
        f"python -m pip install -q -c /tmp/ppbench-keep-torch.txt -e '.{f'[{env.extras}]' if env.extras else ''}'"
    )
    body.append("python -c 'import sys; from ppharness import backends; ok, why = backends.get(sys.argv[1]).available(); "
                f"print(sys.argv[1], \"available:\", ok, why); sys.exit(0 if ok else 1)' {side.backend}")  # fmt: skip
    return _bounded("setup", side.minutes.setup, body)


def run_script(side: Side) -> str:
    body = [_activate(side.env), f'mkdir -p "{REMOTE_OUT}"']
    if side.precompile:  # docs/neuron.md "Pre-compile": graph extraction, then the real run hits the cache
        body += [f"neuron_parallel_compile {side.command(PRECOMPILE_OUT)}", f"rm -rf {PRECOMPILE_OUT}"]
    body.append(side.command())
    return _bounded("run", side.minutes.run, body)


def describe(plan: Plan, amis: dict[str, str] | None = None) -> list[str]:
    """The plan in lines: each side's instance, billing, command and cost bound, then the total."""
    lines = [f"fleet {plan.job_id}: checkout {plan.checkout} at commit {(plan.commit or 'unknown')[:12]}"]
    for s in plan.sides:
        m = s.minutes
        billed = "spot" if s.use_spot else "on demand"
        ranks = f"{s.ranks} ranks" if s.ranks else "one process"
        lines.append(
            f"side {s.name}: {s.instance} {billed} in {s.region}, {s.backend}, {ranks}, cluster {plan.cluster(s)}"
        )
        image = image_ref(s, amis)
        if image.startswith("resolve:ssm:"):
            lines.append(f"  image: SSM {s.env.image_ssm}, resolved in {s.region} at launch (no AWS credentials here)")
        else:
            lines.append(f"  image: {image} (SSM {s.env.image_ssm} in {s.region})")
        lines.append(f"  run: {s.command()}")
        lines.append(f"  bound: {m.provision} provision + {m.setup} setup + {m.run} run ({m.compile} compile + "
                     f"{m.cases} case(s) x {m.per_case}) + {m.idle} idle = {m.total} min x ${s.price.usd_per_hour:g}/h "
                     f"= ${s.bound_usd:.2f} ({s.price.basis} {s.price.region}, configs/instances.yaml, {s.price.date})")  # fmt: skip
        if s.cfg.price_basis not in (s.price.basis,):
            lines.append(
                f"  note: launched {billed}; the records are priced at {s.cfg.price_basis}, as the run file says"
            )
        lines += [f"  warning: {w}" for w in s.warnings]
    lines += [f"note: {n}" for n in plan.notes]
    total = " + ".join(f"${s.bound_usd:.2f}" for s in plan.sides)
    lines.append(f"expected cost: at most ${plan.bound_usd:.2f} ({total}) at the prices of configs/instances.yaml")
    return lines
