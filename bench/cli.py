"""The `ppbench` command line. Every command is a thin wrapper over a library function; the
typed signatures below are the only place a CLI default lives.

Bad input anywhere (run file, --set, a results file, an argument) prints one line
`error: ...` to stderr and exits with code 2, without a traceback.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from bench.errors import BenchError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Accelerator price-performance benchmarks.")
# Piped output (CI logs, `| less`) gets a wide table instead of rich's 80-column default.
out = Console(width=None if sys.stdout.isatty() else 220)
err = Console(stderr=True)

DEFAULT_RUN = Path(__file__).resolve().parents[1] / "configs" / "runs" / "default.yaml"
ResultsArg = Annotated[list[Path] | None, typer.Argument(help="Results files or folders (default: results/).")]


def command(fn):
    """Register `fn` as a command whose bad input becomes `error: ...` and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except BenchError as exc:
            err.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return app.command()(wrapper)


def print_frame(frame, title: str = "") -> None:
    """Render a display-ready DataFrame (strings) as a rich table."""
    table = Table(title=title or None, show_lines=False)
    for col in frame.columns:
        table.add_column(str(col), overflow="fold")
    for row in frame.itertuples(index=False):
        table.add_row(*(str(v) for v in row))
    out.print(table)


@command
def run(
    config: Annotated[Path | None, typer.Argument(help="Run file (YAML).")] = DEFAULT_RUN,
    backend: Annotated[str | None, typer.Option(help="Run on this backend instead of the file's `backends`.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a run-file key: dotted.key=value.")] = None,
    out_dir: Annotated[Path, typer.Option("--out", help="Folder the results file is appended to.")] = Path("results"),
) -> None:
    """Measure the run file's cases and append one record per case to OUT."""
    from rich.progress import Progress

    from bench import config as config_mod
    from bench import runner
    from bench.results import load, summary

    cfg = config_mod.load(config, set_ or [], backend)
    cases = len(config_mod.expand(cfg)) * len(cfg.backends)
    with Progress(console=err, transient=True) as progress:
        task = progress.add_task(f"{cfg.name}", total=cases)

        def on_case(label: str, record: dict | None) -> None:
            if record is None:
                progress.update(task, description=label)
            else:
                progress.advance(task)
                err.print(f"{label}: {record['status']}" + (f" ({record['reason']})" if record["reason"] else ""))

        files = runner.run(cfg, out_dir, on_case)
    if files:
        df = load(files)
        print_frame(summary(df[df["run_id"] == df["run_id"].iloc[-1]]), title=f"{cfg.name}: this run")
        for f in files:
            err.print(f"results appended to {f}")


@command
def show(results: ResultsArg = None) -> None:
    """Print the results table of RESULTS."""
    from bench.results import load, summary

    df = load(results or [Path("results")])
    if df.empty:
        raise BenchError(f"no records found in {', '.join(map(str, results or ['results']))}")
    print_frame(summary(df))


@command
def backends() -> None:
    """List every backend, whether it is available here, and why not."""
    from bench.backends import discover

    table = Table("backend", "available", "compile modes", "dtypes", "why")
    for name, cls in sorted(discover().items()):
        ok, why = cls.available()
        table.add_row(name, "yes" if ok else "no", ", ".join(cls.compile_modes), ", ".join(cls.dtypes), why)
    out.print(table)


@command
def env() -> None:
    """Print this host's provenance: what a record's `harness` and `system` blocks will say."""
    from bench import sysinfo

    out.print_json(json.dumps({"harness": sysinfo.harness(), "system": sysinfo.system()}))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
