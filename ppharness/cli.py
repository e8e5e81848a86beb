"""The `ppbench` command line. Every command is a thin wrapper over a library function; the
typed signatures below are the only place a CLI default lives.

Bad input anywhere (run file, --set, a results file, an argument) prints one line
`error: ...` to stderr and exits with code 2, without a traceback; so does a destination that
cannot be written, checked before anything is measured. Output that fails mid-run (a full disk)
is one line and exit code 1. A run's exit status says whether its measurements are valid: 0 all,
3 some, 4 none (ppharness.errors.Exit); the regression gate (`compare --against BASE
--fail-if-slower PCT`) exits 10 when a case is slower (ppharness/judge/gate.py). Tables fit the
output's width (ppharness/present/terminal.py). Every string that came from a file, an argument or
an exception is printed as data (ppharness/present/textsafe.py): never as rich markup, never with
its escape sequences.
"""

from __future__ import annotations

import functools
import json
import os
import shlex
import sys
import warnings
from enum import Enum
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from rich.text import Text

from ppharness import __version__, paths
from ppharness.errors import BenchError, Exit, size_words
from ppharness.facts import prices, sysinfo
from ppharness.judge import claims, compare, evidence, gate
from ppharness.present import gate as gate_view
from ppharness.present import report, terminal, textsafe
from ppharness.present import tables as views
from ppharness.present.kernel_table import is_kernel
from ppharness.present.kernel_table import table as kernel_table
from ppharness.present.tables import summary
from ppharness.record import flags, gitref
from ppharness.record.load import load
from ppharness.record.writer import check_destination

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Accelerator price-performance benchmarks.")
# Tables are laid out for $COLUMNS, the terminal, or 120 columns when piped (ppharness/present/terminal.py).
out = Console()
err = Console(stderr=True)

DEFAULT_RUN = paths.configs() / "runs" / "default.yaml"


def _read_pytest_benchmark(path: Path) -> list[dict]:
    from ppharness.kernels.pbjson import read  # imports torch: only when a .json is among the inputs

    return read(path)


# Files of other formats read as records: pytest-benchmark's JSON (`pytest -m benchmark
# tests/benchmarks --benchmark-json out.json`, ppharness/kernels/pbjson.py).
READERS = {".json": _read_pytest_benchmark}
ResultsArg = Annotated[list[Path] | None, typer.Argument(help="Results files or folders (default: results/).")]


def command(fn=None, *, on: typer.Typer | None = None, name: str | None = None):
    """Register `fn` as a command (of `app`, or of the sub-app `on`) whose bad input becomes
    `error: ...` and exit code 2."""
    if fn is None:
        return functools.partial(command, on=on, name=name)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            with warnings.catch_warnings():
                warnings.showwarning = _one_line_warning
                return fn(*args, **kwargs)
        except BenchError as exc:
            say(f"error: {exc}")
            raise typer.Exit(exc.exit_code) from None
        except MemoryError:  # inputs are size-bounded (ppharness/errors.py); this is the host running out
            say("error: out of memory (the host could not allocate what this command needed)")
            raise typer.Exit(Exit.FAILED) from None

    return (on or app).command(name)(wrapper)


def say(text: object) -> None:
    """One line to stderr, as data: no rich markup, control characters (escape sequences) shown as ?."""
    err.print(textsafe.line(text), markup=False, highlight=False, soft_wrap=True)


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A warning (a torn record skipped, a cache that cannot be written) is one `warning:` line."""
    say(f"warning: {message}")


def _version(value: bool) -> None:
    if value:
        out.print(f"ppbench {__version__}", markup=False, highlight=False)
        raise typer.Exit(0)


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, metavar="", help="Print the version and exit."),
    ] = False,
) -> None:
    """Accelerator price-performance benchmarks."""


# Above this many rows a table is printed as plain aligned text: rich measures and wraps every cell
# (about 33 of 45 s for `show` on 5,000 records), which a table that long gains nothing from.
PLAIN_ROWS = 500


WideOpt = Annotated[
    bool, typer.Option("--wide", metavar="", help="Show every column, each cell on one line, however wide.")
]


def columns() -> int:
    """The width output is laid out for: $COLUMNS, the terminal's, or 120 when piped."""
    tty = sys.stdout.isatty()
    return terminal.width(tty, os.get_terminal_size(sys.stdout.fileno()).columns if tty else 0)


def print_frame(frame, title: str = "", wide: bool = False) -> None:
    """Render a display-ready DataFrame (strings) as a table that fits the output's width
    (ppharness/present/terminal.py). Cells are plain Text, so a results file's strings are never
    read as rich markup (a results file is untrusted input)."""
    width = columns()
    layout = terminal.fit(frame, title, width, wide)
    if len(frame) > PLAIN_ROWS:
        sys.stdout.write(terminal.plain(layout))
        return
    out.width = max(width, layout.total)  # never narrower than the table: rich would break its cells
    if layout.title:
        out.print(Text(layout.title, style="bold"))
    out.print(terminal.table(layout))
    for line in (*layout.notes, layout.note, layout.hidden_note):
        if line:
            out.print(Text(terminal.wrap(line, width, "    ")), soft_wrap=True)


@command
def run(
    config: Annotated[Path | None, typer.Argument(help="Run file (YAML).")] = DEFAULT_RUN,
    backend: Annotated[str | None, typer.Option(help="Run on this backend instead of the file's `backends`.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a run-file key: dotted.key=value.")] = None,
    out_dir: Annotated[Path, typer.Option("--out", help="Folder the results file is appended to.")] = Path("results"),
    resume: Annotated[
        bool, typer.Option("--resume", metavar="", help="Skip cases OUT holds with the same config.")
    ] = False,
    repeat: Annotated[
        int, typer.Option(min=1, help="Measure every case N times, interleaved (A B A B): N replicates for compare.")
    ] = 1,
    nproc_per_node: Annotated[
        int | None, typer.Option(min=1, help="Ranks per node, one per device: runs under torchrun.")
    ] = None,
    nnodes: Annotated[int | None, typer.Option(min=1, help="Nodes of a multi-node run (default 1).")] = None,
    rdzv_endpoint: Annotated[
        str | None, typer.Option(help="HOST:PORT every node reaches: torchrun's c10d rendezvous.")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List the cases and each case's memory plan; measure nothing.")
    ] = False,
    wide: WideOpt = False,
) -> None:
    """Measure the run file's cases and append one record per case to OUT."""
    from ppharness.run import config as config_mod  # imports torch (seconds): only the commands that measure pay for it
    from ppharness.run import distributed, launch, runner

    cfg = config_mod.load(config, set_ or [], backend)
    check_destination(out_dir, "--out")  # before anything is measured: one line, exit 2
    if not isinstance(cfg, config_mod.RunConfig):  # a serve run file: ppharness/serve/runner.py
        if dry_run:
            raise BenchError("--dry-run plans a training run's memory; a serve run file has nothing to plan")
        _run_serve(cfg, out_dir, nproc_per_node or nnodes or rdzv_endpoint, resume)
        return
    runner.check_caches()  # as runner.run does, but before the progress bar: one line, exit 2
    spec = launch.options(nproc_per_node, nnodes, rdzv_endpoint)
    rank = distributed.torchrun_env()  # set by torchrun: this process is a rank, never a launcher
    if dry_run:
        _dry_run(cfg, nproc_per_node, nnodes, wide)
        return
    if rank is None:  # the launcher or a single process: a case that cannot fit is refused here
        per_host = spec.nproc_per_node if spec else 1
        _refuse_what_cannot_fit(cfg, per_host * (spec.nnodes if spec else 1), per_host)
    if spec is not None and rank is None:
        launch.check(cfg, spec.nproc_per_node * spec.nnodes)
        sets = [arg for item in set_ or [] for arg in ("--set", item)]
        argv = [str(config), "--out", str(out_dir), *(["--backend", backend] if backend else []), *sets]
        argv += ["--repeat", str(repeat)] if repeat > 1 else []
        try:
            launch.launch(spec, argv + (["--resume"] if resume else []))
        except launch.LaunchFailed as exc:
            if exc.code not in (Exit.SOME_INVALID, Exit.NONE_VALID):  # those rank 0 has said itself
                say(f"error: {exc}")
            raise typer.Exit(exc.code) from None
        return
    if rank is not None and rank["rank"] != 0:
        runner.run(cfg, out_dir, None, resume, repeat)  # rank 0 reports and writes
        return
    cases = len(config_mod.expand(cfg)) * len(cfg.backends) * repeat
    tally = Tally()
    try:
        with Progress(console=err, transient=True) as progress:
            task = progress.add_task(textsafe.markup(cfg.name), total=cases)  # a description is markup

            def on_case(label: str, record: dict | None) -> None:
                if record is None:
                    progress.update(task, description=textsafe.markup(label))
                else:
                    progress.advance(task)
                    tally.add(label, record)

            files = runner.run(cfg, out_dir, on_case, resume, repeat)
    except KeyboardInterrupt:  # after the progress bar is gone: one line, what was kept, how to go on
        argv = ["ppbench", "run", str(config), "--out", str(out_dir), *(["--backend", backend] if backend else [])]
        argv += ["--repeat", str(repeat)] if repeat > 1 else []
        again = shlex.join([*argv, *(a for item in set_ or [] for a in ("--set", item)), "--resume"])
        say(f"interrupted: {tally.kept} finished case(s) kept in {out_dir}; to measure the rest: {again}")
        raise typer.Exit(Exit.INTERRUPTED) from None
    if files:
        df = load(files)
        this = df[df["run_id"] == df["run_id"].iloc[-1]]
        print_frame(flagged(this, summary(this)), title=f"{cfg.name}: this run", wide=wide)
        for f in files:
            say(f"results appended to {f}")
    tally.check()


def _dry_run(cfg, nproc_per_node: int | None, nnodes: int | None, wide: bool = False) -> None:
    """The cases, and each one's plan per device: the run file's instance's, or this host's memory
    for the CPU (ppharness/run/memplan.py)."""
    from ppharness.run import config as config_mod  # imports torch (seconds): only the commands that measure pay for it
    from ppharness.run import memplan

    world = memplan.world_for(cfg, nproc_per_node, nnodes)
    config_mod.check_world(cfg, world)
    for case in config_mod.expand(cfg):
        out.print(f"case: {case.label()}", markup=False, highlight=False)
    host = sysinfo.memory_available()
    planned, device = memplan.plan_cases(cfg, world, host, nproc_per_node or 1)
    if planned:
        unit, name = (memplan.GIB, "GiB") if max(x.plan.total for x in planned) >= memplan.GIB else (2**20, "MiB")
        cells = [{"backend": x.backend, **memplan.case_cells(x.case), **x.plan.row(unit)} for x in planned]
        frame = pd.DataFrame(cells)
        frame.attrs.update(optional=memplan.ROW_OPTIONAL, wrap=("sizes",))
        title = f"{cfg.name}: memory per device ({name}), {world} rank(s), against {device}"
        print_frame(frame, title=title, wide=wide)
    build = memplan.host_build(cfg.model_config, cfg.check) * (nproc_per_node or 1)
    fits_here = host is None or build <= host * memplan.HEADROOM
    here = "" if fits_here else ": more than this host has (a run here is refused)"
    out.print(f"host: building the model takes {size_words(build)}{here}", markup=False, highlight=False)
    refusals = [x.refusal for x in planned if x.refusal]  # a device's, or the CPU's host memory
    if refusals:
        raise BenchError(refusals[0] + (f" (and {len(refusals) - 1} more case(s))" if len(refusals) > 1 else ""))


def _refuse_what_cannot_fit(cfg, world: int, ranks_per_host: int) -> None:
    """Before any model is built: a case that cannot fit the CPU's host memory, a model the host
    cannot build, and on an accelerator a case that cannot fit in a run file with a `parallel:`
    section (or a run none of whose cases fits) are refused, exit 2; otherwise an accelerator's
    out-of-memory case is a result worth recording, so the plan only warns (memplan.check_run)."""
    from ppharness.run import memplan  # imports torch (seconds): only the commands that measure pay for it

    errors, warnings = memplan.check_run(cfg, world, ranks_per_host)
    if errors:
        more = f" (and {len(errors) - 1} more case(s))" if len(errors) > 1 else ""
        raise BenchError(errors[0] + more + "; see ppbench run FILE --dry-run")
    for line in warnings:
        err.print(f"warning: the memory plan says {line}", markup=False, highlight=False, soft_wrap=True)


def _run_serve(cfg, out_dir: Path, launcher: object, resume: bool) -> None:
    """A serve run file: one record per level against the endpoint (ppharness/serve/runner.py)."""
    from ppharness.serve import runner as serve  # imports torch (seconds): only the commands that measure pay for it

    if launcher or resume:
        raise BenchError("--nproc-per-node/--nnodes/--rdzv-endpoint/--resume do not apply to a serve run file")
    tally = Tally()

    def on_case(label: str, record: dict | None) -> None:
        if record is None:
            say(f"{label}: measuring")
        else:
            tally.add(label, record)

    files = serve.run(cfg, out_dir, on_case)
    if files:
        df = load(files)
        print_frame(summary(df[df["run_id"] == df["run_id"].iloc[-1]]), title=f"{cfg.name}: this run")
        for f in files:
            say(f"results appended to {f}")
    tally.check()


class Tally:
    """The per-case status lines of a run, its closing line (what was measured, how much of it is
    valid) and its exit status (ppharness.errors.Exit): 0 when every measured case is valid, 3 when
    some are INVALID or failed (oom, compile_error, error), 4 when none is valid."""

    def __init__(self) -> None:
        self.kept = self.valid = self.invalid = self.failed = self.skipped = 0
        self.first_problem = ""

    def add(self, label: str, record: dict) -> None:
        status, reason = record["status"], record.get("reason")
        say(f"{label}: {status}" + (f" ({reason})" if reason else ""))  # reasons are exception text: data
        if status == "skipped":
            self.skipped += 1
            return
        self.kept += 1
        if status == "ok":
            self.valid += 1
            return
        if status == "invalid":
            self.invalid += 1
        else:
            self.failed += 1
        self.first_problem = self.first_problem or f"{label}: {status}" + (f", {reason}" if reason else "")

    def summary(self) -> str:
        parts = [f"{self.valid} valid", *(f"{n} {what}" for n, what in ((self.invalid, "INVALID"),
                 (self.failed, "failed")) if n)]  # fmt: skip
        skipped = f"; {self.skipped} found in --out already (--resume)" if self.skipped else ""
        return f"measured {self.kept} case(s): {', '.join(parts)}{skipped}"

    def check(self) -> None:
        say(self.summary())
        if self.valid == self.kept:  # every case valid, or none left to measure
            return
        if not self.valid:
            bad = self.invalid + self.failed
            say(f"error: no valid measurement ({bad} of {self.kept} case(s); first: {self.first_problem})")
            raise typer.Exit(Exit.NONE_VALID)
        say(f"warning: {self.kept - self.valid} of {self.kept} case(s) not valid (first: {self.first_problem})")
        raise typer.Exit(Exit.SOME_INVALID)


def flagged(df, frame):
    """`frame` (one display row per record of `df`, in order) with the records' `flags` column
    (ppharness.record.flags) and, when any row is flagged, the legend as its footnote."""
    warnings = df["validity.warnings"] if "validity.warnings" in df else [None] * len(df)
    frame = frame.copy()
    frame["flags"] = [flags.cell([flags.codes(w)]) for w in warnings]
    return flags.with_legend(frame, "(ppbench show --explain: each warning in full)")


def explain(df) -> None:
    """Every flagged record's warnings in full, one record per line."""
    for i, rec in enumerate(df.to_dict("records")):
        warnings = rec.get("validity.warnings")
        if isinstance(warnings, list) and warnings:
            what = " ".join(
                str(rec.get(k)) for k in ("run_id", "workload.scenario", "workload.batch", "workload.compile")
            )
            out.print(f"[{i}] {what}: " + "; ".join(map(str, warnings)), markup=False, highlight=False, soft_wrap=True)


@command
def show(
    results: ResultsArg = None,
    explain_: Annotated[bool, typer.Option("--explain", help="Print each flagged row's warnings in full.")] = False,
    wide: WideOpt = False,
) -> None:
    """Print the results table of RESULTS."""
    df = _load_results(results, samples=None)  # the summaries: no table here reads raw samples

    kern = is_kernel(df)  # kernel rows (ppbench kernels, pytest-benchmark JSON) get the roofline table
    if not kern.all():
        print_frame(flagged(df[~kern], summary(df[~kern])), wide=wide)
    if kern.any():
        print_frame(flagged(df[kern], kernel_table(df[kern])), title="kernels: roofline", wide=wide)
    if explain_:
        explain(df)


@command
def backends() -> None:
    """List every backend, whether it is available here, and why not."""
    from ppharness.backends import discover  # imports torch (seconds): only the commands that measure pay for it

    table = Table("backend", "available", "compile modes", "dtypes", "why")
    for name, cls in sorted(discover().items()):
        ok, why = cls.available()  # `why` may quote an exception: data, not markup
        cells = (name, "yes" if ok else "no", ", ".join(cls.compile_modes), ", ".join(cls.dtypes), why)
        table.add_row(*(Text(textsafe.plain(c)) for c in cells))
    out.print(table)


@command
def env() -> None:
    """Print this host's provenance: what a record's `harness` and `system` blocks will say."""
    out.print_json(json.dumps({"harness": sysinfo.harness(), "system": sysinfo.system()}))


@command
def kernels(
    backend: Annotated[str, typer.Option(help="Backend to run on (see `ppbench backends`).")] = "cpu",
    kernel: Annotated[
        list[str] | None, typer.Option("--kernel", help="Kernel to run; repeat for several (default: all).")
    ] = None,
    dtype: Annotated[str, typer.Option(help="Element type of the inputs (one of the backend's dtypes).")] = "float32",
    preset: Annotated[str, typer.Option(help="Workload preset the kernel shapes come from.")] = "small",
    batch: Annotated[int, typer.Option(help="Sequences per step (decode shapes: tokens per step).")] = 4,
    seq_len: Annotated[int, typer.Option(help="Tokens per sequence (decode shapes: the KV cache length).")] = 256,
    compile_: Annotated[
        str, typer.Option("--compile", help="Also time each kernel compiled with this mode (none: eager only).")
    ] = "none",
    min_seconds: Annotated[float, typer.Option(help="Measured seconds per row at least.")] = 0.5,
    instance: Annotated[str, typer.Option(help="EC2 type to price rows as, auto (DMI), or none.")] = "none",
    price_basis: Annotated[str, typer.Option(help="Price basis of --instance (as a run file's price_basis).")] = (
        "on_demand"
    ),
    region: Annotated[str, typer.Option(help="Region of --instance's price.")] = "us-east-1",
    max_other_cpu: Annotated[
        float | None,
        typer.Option(
            help="Other processes' share of the host above which a row is re-measured, then INVALID "
            "(as a run file's timing.max_other_cpu; default 0.25)."
        ),
    ] = None,
    out_dir: Annotated[Path, typer.Option("--out", help="Folder the results file is appended to.")] = Path("results"),
    wide: WideOpt = False,
) -> None:
    """Time the kernels against the device's roofline (tokens/s, and $/1M tokens with --instance);
    append one record per kernel row to OUT."""
    from ppharness.kernels.run import (  # imports torch (seconds): only the commands that measure pay for it
        KernelOptions,
        run,
    )

    check_destination(out_dir, "--out")  # before anything is measured: one line, exit 2
    opts = KernelOptions(
        backend, list(kernel or []), dtype, preset, batch, seq_len, compile_, min_seconds, instance,
        price_basis=price_basis, region=region, max_other_cpu=max_other_cpu,
    )  # fmt: skip
    tally = Tally()

    def on_case(case, record: dict | None) -> None:
        if record is None:
            say(f"{case.id}: skipped, {case.skip}")
        else:
            tally.add(case.id, record)

    path, run_id = run(opts, out_dir, on_case)
    if path is not None:
        df = load([path])
        this = df[df["run_id"] == run_id]
        title = f"kernels on {backend}: roofline ({preset}, {dtype})"
        print_frame(flagged(this, kernel_table(this)), title=title, wide=wide)
        say(f"results appended to {path}")
    tally.check()


@command(name="ceilings")
def ceilings_cmd(
    remeasure: Annotated[bool, typer.Option("--remeasure", help="Measure this host's ceilings again now.")] = False,
    backend: Annotated[str, typer.Option(help="Backend whose device to measure (with --remeasure).")] = "cpu",
    dtype: Annotated[
        list[str] | None, typer.Option("--dtype", help="Element type to measure; repeatable (default: float32).")
    ] = None,
) -> None:
    """Show the cached measured ceilings (GEMM, memory): when, with what, which BLAS set them."""
    from ppharness import backends  # imports torch (seconds): only the commands that measure pay for it
    from ppharness.core import ceilings

    if remeasure:
        cls = backends.get(backend)  # an unknown name lists the valid ones
        ok, why = cls.available()
        if not ok:
            raise BenchError(f"backend {backend} is not available here: {why}")
        for name in dtype or ["float32"]:
            if name not in cls.dtypes:
                raise BenchError(f"unknown dtype {name!r} for backend {backend}; valid: {', '.join(cls.dtypes)}")
        dev = backends.make(backend, None)
        for name in dtype or ["float32"]:
            got = ceilings.get_ceilings(dev, name, dev.describe().name, remeasure=True)
            if got.get("interference"):  # shown, never cached: the next run measures again
                seen = "; ".join(
                    f"trial {i + 1}: " + ", ".join(t["invalid"]) for i, t in enumerate(got["interference"])
                )
                title = f"{backend} {name}: measured under interference in every trial, NOT cached ({seen})"
                print_frame(
                    ceilings.cache_frame({ceilings.cache_key(dev, name, dev.describe().name): got}), title=title
                )
    cache = ceilings.read_cache()
    if not cache:
        out.print(f"no cached ceilings in {ceilings.cache_path()}", markup=False, highlight=False)
        return
    print_frame(ceilings.cache_frame(cache), title=f"measured ceilings ({ceilings.cache_path()})")


# ---------------------------------------------------------------- compare, claims, report, prices
DEFAULT_CLAIMS = paths.seeds() / "claims.yaml"
BaselineOpt = Annotated[
    str | None,
    typer.Option(help="System to take ratios against: a label from the table or an unambiguous part of one."),
]
ClaimsOpt = Annotated[Path, typer.Option("--claims", help="Claims file (YAML, schema 1).")]
LatestOpt = Annotated[
    bool,
    typer.Option(
        "--latest",
        metavar="",
        help="Keep only each system's newest run per workload (default: pool every run as replicates, "
        "so CIs include run-to-run spread).",
    ),
]


class ReportFormat(str, Enum):
    html = "html"
    md = "md"


def _load_results(results: list[Path] | None, required: bool = True, samples: str | None = "arrays"):
    """Records under RESULTS (default results/); with `required`, no records is an error. The raw
    samples come as arrays (compare's CIs read them) or, with `samples=None`, not at all."""
    if results is None and not Path("results").exists() and not required:
        return pd.DataFrame()
    df = load(results or [Path("results")], READERS, samples=samples)
    if df.empty and required:
        raise BenchError(f"no records found in {', '.join(map(str, results or ['results']))}")
    return df


EvidenceFileOpt = Annotated[
    Path | None, typer.Option("--evidence-file", help="Published evidence file (default: seeds/evidence.yaml).")
]


class ClaimsFormat(str, Enum):
    table = "table"
    json = "json"


class EvidenceFormat(str, Enum):
    table = "table"
    md = "md"
    json = "json"


@command(name="compare")
def compare_cmd(
    results: ResultsArg = None,
    baseline: BaselineOpt = None,
    latest: LatestOpt = False,
    evidence_: Annotated[
        bool, typer.Option("--evidence", help="Also show published rows (seeds/evidence.yaml) of the same scenarios.")
    ] = False,
    evidence_file: EvidenceFileOpt = None,
    against: Annotated[
        str | None,
        typer.Option(
            "--against",
            metavar="BASE",
            help="Regression gate: hold RESULTS case by case against BASE, the records from before a change: "
            "a results file or folder, or a git revision's (REF or REF:PATH; default PATH results).",
        ),
    ] = None,
    fail_if_slower: Annotated[
        str | None,
        typer.Option(
            "--fail-if-slower",
            metavar="PCT",
            help=f"With --against: exit {gate.GATE_FAILED} when a case's step time is, at --confidence, "
            "more than PCT percent (10 or 10%) above BASE's.",
        ),
    ] = None,
    confidence: Annotated[
        float, typer.Option(min=0.5, max=0.999, help="With --against: the CIs' confidence, two-sided.")
    ] = 0.95,
    summary_md: Annotated[
        Path | None,
        typer.Option(
            "--summary",
            metavar="FILE",
            help="With --against: append the gate's markdown summary to FILE (default: $GITHUB_STEP_SUMMARY when set).",
        ),
    ] = None,
    wide: WideOpt = False,
) -> None:
    """Compare systems across RESULTS: tokens/s, $/1M tokens, MFU, ratios with bootstrap 95% CIs.
    With --against: the regression gate, RESULTS against BASE case by case (docs/ci-gate.md)."""
    if against is not None:
        if baseline or evidence_ or evidence_file:
            raise BenchError("--against holds RESULTS against BASE case by case; --baseline and --evidence compare "
                             "systems within RESULTS: use one or the other")  # fmt: skip
        _gate(results, against, fail_if_slower, confidence, summary_md, latest, wide)
        return
    if fail_if_slower is not None or summary_md is not None:
        raise BenchError("--fail-if-slower and --summary need --against BASE: the records to hold RESULTS against")
    ev = evidence.load(evidence_file) if evidence_ or evidence_file else None  # bad file: exit 2 first
    cmp = compare.compare(_load_results(results), baseline, latest=latest)
    ratios = cmp.baseline is not None
    title = f"vs baseline {cmp.baseline}" if ratios else "no --baseline: no ratios"
    print_frame(report.compare_frame(cmp.table, ratios), title=f"Matched runs, {title}", wide=wide)
    print_frame(report.compare_frame(cmp.best, ratios), title="Best batch by tokens per dollar", wide=wide)
    if not cmp.kernels.empty:  # kernels have no tokens or $/token: their own table
        print_frame(report.kernels_frame(cmp.kernels, ratios), title="Timed kernels", wide=wide)
    if not cmp.excluded.empty:
        print_frame(report.excluded_frame(cmp.excluded), title="Excluded records", wide=wide)
    if ev is not None:
        title = "Measured (best batch) beside PUBLISHED figures of the same scenarios (published: not our measurements)"
        print_frame(views.evidence_compare_frame(cmp.best, ev), title=title, wide=wide)
    if not ratios:
        say(f"systems: {', '.join(cmp.systems) or '(none usable)'}")  # labels from results files: data


def _gate(
    results: list[Path] | None,
    against: str,
    pct: str | None,
    confidence: float,
    md: Path | None,
    latest: bool,
    wide: bool = False,
):
    """`compare --against`: the regression gate (ppharness/judge/gate.py); exits GATE_FAILED when
    it fails. Its markdown goes to --summary, else to $GITHUB_STEP_SUMMARY when that is set."""
    threshold = gate.parse_threshold(pct) if pct is not None else 0.0
    env_md = os.environ.get("GITHUB_STEP_SUMMARY") if md is None else None
    if md is not None:
        gate_view.check_summary(md)  # before anything is loaded: one line, exit 2
    base_df = gitref.load_base(against, READERS, samples="arrays")
    if base_df.empty:
        raise BenchError(f"no records found in --against {against}")
    new_df = _load_results(results)
    g = gate.evaluate(base_df, new_df, threshold, enforced=pct is not None, confidence=confidence, latest=latest)
    base, new = against, " ".join(map(str, results or ["results"]))
    print_frame(gate_view.frame(g), title=gate_view.title(g, base, new), wide=wide)
    if g.not_compared:
        print_frame(pd.DataFrame(g.not_compared, columns=["case", "not compared (never failed)"]), wide=wide)
    for line in gate_view.lines(g):
        out.print(textsafe.line(line), markup=False, highlight=False, soft_wrap=True)
    code = gate.GATE_FAILED if g.failed else 0
    target = md or (Path(env_md) if env_md else None)
    if target is not None:
        try:
            gate_view.append_summary(target, gate_view.markdown(g, base, new))
        except OSError as exc:
            say(f"error: cannot write the summary to {target}: {exc.strerror or exc}")
            code = code or 1
    if code:
        raise typer.Exit(code)


@command(name="claims")
def claims_cmd(
    results: ResultsArg = None,
    claims_file: ClaimsOpt = DEFAULT_CLAIMS,
    latest: LatestOpt = False,
    evidence_file: EvidenceFileOpt = None,
    explain: Annotated[bool, typer.Option("--explain", help="Also print why each claim got its verdicts.")] = False,
    format_: Annotated[ClaimsFormat, typer.Option("--format", help="table, or json for scripts and CI.")] = (
        ClaimsFormat.table
    ),
    brief: Annotated[bool, typer.Option("--brief", help="One line per claim: today's two verdicts.")] = False,
    wide: Annotated[
        bool, typer.Option("--wide", help="One table row per claim, every column (instead of a block per claim).")
    ] = False,
) -> None:
    """Hold every claim against RESULTS (our verdict, the result) and published evidence (a second verdict)."""
    df = _load_results(results, required=False)
    evaluated = claims.evaluate_all(df, claims.load_claims(claims_file), latest=latest, evidence_path=evidence_file)
    if format_ is ClaimsFormat.json:
        sys.stdout.write(json.dumps(views.claims_json(evaluated), indent=2, allow_nan=False) + "\n")
        return
    title = "Claims: our verdict is the result; published evidence is others'"
    if brief:
        print_frame(terminal.claim_lines(evaluated), title=f"{title} (today)")
        out.print("Each claim's figures: ppbench claims; every reason: --explain.", markup=False, highlight=False)
        return
    if wide:
        print_frame(report.claims_frame(evaluated), title=title, wide=True)
    else:
        _print_claim_blocks(evaluated, title)
    if not explain:
        out.print("Why each verdict: ppbench claims --explain (or --format json).", markup=False, highlight=False)
        return
    for r in evaluated:  # one reason a line; the terminal wraps them (soft_wrap), so each greps whole
        lines = [r.claim.id, "  our measurements (the result):", *(f"    - {x}" for x in report.reasons(r))]
        if r.published:
            lines += ["  published evidence (others' measurements):", *(f"    - {x}" for x in r.published.reasons)]
        out.print("\n".join(textsafe.line(x) for x in lines), markup=False, highlight=False, soft_wrap=True)


def _print_claim_blocks(evaluated, title: str) -> None:
    """A block per claim, wrapped to the output's width (ppharness/present/terminal.py)."""
    width = columns()
    blocks, note = terminal.claim_blocks(evaluated, width)
    out.width = width
    out.print(Text(terminal.wrap(title, width), style="bold"), soft_wrap=True)
    for head, body in blocks:
        out.print()
        out.print(Text(head, style="bold"), soft_wrap=True)
        out.print(Text(body), soft_wrap=True)
    out.print()
    out.print(Text(terminal.wrap(note, width)), soft_wrap=True)


@command(name="evidence")
def evidence_cmd(
    evidence_file: EvidenceFileOpt = None,
    format_: Annotated[EvidenceFormat, typer.Option("--format", help="table, md (the README's table) or json.")] = (
        EvidenceFormat.table
    ),
    wide: WideOpt = False,
) -> None:
    """Validate the published evidence file and show its pairs: tokens/$ ratios, grades, sources."""
    ev = evidence.load(evidence_file)
    if format_ is EvidenceFormat.md:
        sys.stdout.write(views.markdown(ev))
        return
    if format_ is EvidenceFormat.json:
        sys.stdout.write(json.dumps(views.evidence_json(ev), indent=2, allow_nan=False) + "\n")
        return
    print_frame(views.evidence_entries_frame(ev), title=f"Published measurements ({ev.path.name}): not ours", wide=wide)
    print_frame(views.pairs_frame(ev), title="Published pairs", wide=wide)


@command(name="report")
def report_cmd(
    results: ResultsArg = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="File to write (replaced whole).")] = Path(
        "report.html"
    ),
    format_: Annotated[
        ReportFormat,
        typer.Option("--format", help="html (one self-contained file) or md (figures as PNG files beside it)."),
    ] = (ReportFormat.html),
    baseline: BaselineOpt = None,
    claims_file: ClaimsOpt = DEFAULT_CLAIMS,
    latest: LatestOpt = False,
    evidence_file: EvidenceFileOpt = None,
) -> None:
    """Write the report of RESULTS: verdicts first, figures with their CIs, then the tables."""
    report.check_output(output)  # before loading or rendering anything: one line, exit 2
    df = _load_results(results)
    cmp = compare.compare(df, baseline, latest=latest)
    evaluated = claims.evaluate_all(df, claims.load_claims(claims_file), latest=latest, evidence_path=evidence_file)
    sources = sorted({str(s) for s in df.get("source_file", [])})
    if format_ is ReportFormat.html:
        text, files = report.render_html(cmp, evaluated, sources, df), {}
    else:  # markdown: the figures are PNG files beside it
        text, files = report.render_md(cmp, evaluated, sources, df, stem=output.stem)
    say(f"report written to {report.write_report(text, output, files)}")


prices_app = typer.Typer(no_args_is_help=True, help="EC2 prices in configs/instances.yaml.")
app.add_typer(prices_app, name="prices")


@command(on=prices_app, name="refresh")
def prices_refresh(
    instance: Annotated[
        list[str] | None, typer.Option("--instance", help="Instance type (repeatable; default: all in the catalog).")
    ] = None,
    region: Annotated[str, typer.Option(help="AWS region to price.")] = "us-east-1",
    dry_run: Annotated[
        bool, typer.Option("--dry-run", metavar="", help="Show what would change; write nothing.")
    ] = False,
) -> None:
    """Fetch EC2 prices (AWS Price List API; aws extra + credentials) and append changed ones, dated, to the catalog."""
    changes = prices.refresh(instance, region, dry_run=dry_run)
    table = Table("instance", "basis", "region", "catalog $/h", "API $/h", "action")
    for c in changes:
        old, new = (f"{v:g}" if v is not None else "-" for v in (c.old, c.new))
        table.add_row(*(Text(textsafe.plain(v)) for v in (c.instance, c.basis, c.region, old, new, c.action)))
    out.print(table)


fleet_app = typer.Typer(
    no_args_is_help=True, help="Claim recipes on real EC2 instances, through SkyPilot (docs/fleet.md)."
)
app.add_typer(fleet_app, name="fleet")
FleetFiles = Annotated[list[Path], typer.Argument(help="Claim recipes (configs/claims/) or run files: one side each.")]
SideOpt = Annotated[list[str] | None, typer.Option("--side", help="Only this side of the recipe (repeatable).")]


def _fleet_plan(files: list[Path], sides: list[str] | None):
    from ppharness.fleet import plan as fleet_plan  # imports torch (the run-file checks): only the fleet commands pay

    return fleet_plan, fleet_plan.make_plan(files, sides)


@command(on=fleet_app, name="plan")
def fleet_plan_cmd(
    files: FleetFiles,
    side: SideOpt = None,
    max_usd: Annotated[
        float | None, typer.Option("--max-usd", min=0, help="Exit 2 if the bound is above this.")
    ] = None,
) -> None:
    """Print each side's SkyPilot task and what the fleet may cost; launches nothing, needs no SkyPilot."""
    from ppharness.fleet import ami  # imports torch (run-file checks)

    mod, plan = _fleet_plan(files, side)
    amis = ami.resolve_all(list(plan.sides)) if ami.credentials_available() else None
    for s in plan.sides:
        sys.stdout.write(f"# SkyPilot task of side {s.name}\n{mod.task_yaml(mod.task(plan, s, amis))}---\n")
    sys.stdout.write("\n".join(mod.describe(plan, amis)) + "\n")
    mod.check_budget(plan, max_usd)


@command(on=fleet_app, name="run")
def fleet_run_cmd(
    files: FleetFiles,
    max_usd: Annotated[float, typer.Option("--max-usd", min=0, help="Refuse (exit 2) if the bound is above this.")],
    side: SideOpt = None,
    out_dir: Annotated[Path, typer.Option("--out", help="Records land in OUT/fleet/<job id>/<side>/.")] = Path(
        "results"
    ),
    logs: Annotated[
        Path | None, typer.Option(help="Launch and job logs, and the report (default out/fleet/<job id>).")
    ] = None,
    allow_dirty: Annotated[bool, typer.Option("--allow-dirty", help="Launch uncommitted changes.")] = False,
) -> None:
    """Launch every side in parallel, wait, bring the records back, tear every cluster down; then claims and report."""
    from ppharness.fleet import ami, orchestrate, skypilot  # imports torch (run-file checks)

    mod, plan = _fleet_plan(files, side)
    for line in mod.describe(plan):
        say(line)
    mod.check_budget(plan, max_usd)
    if plan.commit is None:
        raise BenchError(f"{plan.checkout} has no git commit for the records to name: commit it first")
    if plan.dirty and not allow_dirty:
        raise BenchError(
            f"{plan.checkout} has uncommitted changes: commit them (the records name the commit), or --allow-dirty"
        )
    check_destination(out_dir, "--out")
    client = skypilot.client()  # needs the fleet extra: one line if it is missing, before anything is paid for
    logs = logs or Path("out") / "fleet" / plan.job_id
    try:
        outcomes = orchestrate.run_fleet(plan, client, out_dir, logs, ami.resolve_all(list(plan.sides)), say)
    except orchestrate.Interrupted as exc:
        say(f"{exc}; finished sides' records stay in {orchestrate.job_folder(out_dir, plan)}")
        raise typer.Exit(130) from None
    for o in outcomes:
        say(f"side {o.side}: {o.status}, {len(o.files)} results file(s), {'torn down' if o.torn_down else 'NOT torn down'}"
            + (f"; {o.error}" if o.error else ""))  # fmt: skip
    folder = orchestrate.job_folder(out_dir, plan)
    if any(o.files for o in outcomes):
        claims_cmd([folder])
        report_cmd([folder], output=logs / "report.html")
    if not all(o.status == "SUCCEEDED" and o.torn_down for o in outcomes):
        raise typer.Exit(1)


@command(on=fleet_app, name="collect")
def fleet_collect_cmd(
    cluster: Annotated[str, typer.Argument(help="A fleet cluster that is still up (ppbench fleet status).")],
    out_dir: Annotated[Path, typer.Option("--out", help="Records land in OUT/fleet/<job id>/<side>/.")] = Path(
        "results"
    ),
) -> None:
    """Bring a live cluster's records back, after a `fleet run` that did not finish; tears nothing down."""
    from ppharness.fleet import orchestrate, skypilot  # imports torch (run-file checks)

    check_destination(out_dir, "--out")
    folder, files = orchestrate.collect_cluster(skypilot.client(), cluster, out_dir)
    say(f"{len(files)} results file(s) in {folder}; tear the cluster down with: ppbench fleet down {cluster}")


@command(on=fleet_app, name="down")
def fleet_down_cmd(
    clusters: Annotated[list[str] | None, typer.Argument(help="Cluster names (ppbench-<side>-<job id>).")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every cluster `ppbench fleet` launched.")] = False,
) -> None:
    """Tear down fleet clusters; only those named ppbench-<side>-<job id>, whatever else is up."""
    from ppharness.fleet import orchestrate, skypilot  # imports torch (run-file checks)

    if bool(clusters) == all_:
        raise BenchError("name the clusters to tear down, or --all (not both)")
    bad = [c for c in clusters or [] if not orchestrate.is_ours(c)]
    if bad:
        raise BenchError(f"{bad[0]} is not a ppbench fleet cluster (ppbench-<side>-<job id>); use sky down for others")
    client = skypilot.client()
    left = orchestrate.down_all(client, say) if all_ else orchestrate.teardown(client, clusters, say)
    if left:
        raise typer.Exit(1)


@command(on=fleet_app, name="status")
def fleet_status_cmd() -> None:
    """The fleet clusters that are up: status, region, resources, autostop."""
    from ppharness.fleet import orchestrate, skypilot  # imports torch (run-file checks)

    rows = [c for c in skypilot.client().clusters() if orchestrate.is_ours(c["name"])]
    print_frame(pd.DataFrame(rows or [{"name": "(none)"}]).astype(str), title="ppbench fleet clusters")


def main() -> None:
    """The console script. Click's usage errors (unknown option, bad choice) become the same one
    line and exit code 2 as every other bad input, instead of a multi-line usage panel."""
    try:  # typer >= 0.22 vendors click; older releases depend on it
        from typer._click import exceptions as click_exc
    except ImportError:
        from click import exceptions as click_exc  # older typer: click is a dependency of its own

    try:
        code = app(standalone_mode=False)
    except click_exc.NoArgsIsHelpError:
        code = app(["--help"], standalone_mode=False)
    except click_exc.UsageError as exc:
        hint = (
            f" (see `ppbench {exc.ctx.info_name} --help`)" if exc.ctx and exc.ctx.parent else " (see `ppbench --help`)"
        )
        say(f"error: {exc.format_message()}{hint}")
        code = 2
    except typer.Abort:  # Ctrl-C outside a run (a run says what it kept itself)
        say("interrupted")
        code = 130
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
