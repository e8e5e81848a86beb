"""The pytest-benchmark front door: `pytest -m benchmark benchmarks/ --backend B --benchmark-json out.json`.

The same cases, inputs, checks and cost models as `ppbench kernels` (ppharness.kernels.run.KernelSession);
only the clock differs: pytest-benchmark's pedantic mode with explicit rounds, the device sync
inside the timed callable (its timer is the host's, and never synchronizes a device). Device,
system and measured ceilings go into the JSON's machine_info (pytest_benchmark_update_machine_info),
FLOPs and bytes into each benchmark's extra_info; `ppbench show out.json` reads the file back.

The options below mirror `ppbench kernels`; tests/test_kernels.py checks that their defaults
match the CLI's, so the two front doors cannot drift.
"""

from __future__ import annotations

import pytest

from ppharness.errors import BenchError
from ppharness.kernels import pbjson
from ppharness.kernels.run import KernelOptions, KernelSession

SESSION = pytest.StashKey[KernelSession]()

# flag, type, default, help (defaults: those of `ppbench kernels`)
OPTIONS = [
    ("--backend", str, "cpu", "backend to run the kernels on"),
    ("--preset", str, "small", "workload preset the kernel shapes come from"),
    ("--dtype", str, "float32", "element type of the inputs"),
    ("--batch", int, 4, "sequences per step (decode shapes: tokens per step)"),
    ("--seq-len", int, 256, "tokens per sequence (decode shapes: the KV cache length)"),
    ("--compile", str, "none", "also benchmark each kernel compiled with this mode"),
    ("--min-seconds", float, 0.5, "timed seconds per benchmark at least (sets the rounds)"),
]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("ppbench", "ppbench kernels (pytest -m benchmark benchmarks/)")
    for flag, kind, default, text in OPTIONS:
        try:
            group.addoption(flag, type=kind, default=default, help=f"{text} (default: {default})")
        except ValueError:  # another conftest of the same run declared it already
            pass


def options(config: pytest.Config) -> KernelOptions:
    get = config.getoption
    return KernelOptions(
        backend=get("backend"), kernels=[], dtype=get("dtype"), preset=get("preset"), batch=get("batch"),
        seq_len=get("seq_len"), compile=get("compile"), min_seconds=get("min_seconds"),
    )  # fmt: skip


def session(config: pytest.Config) -> KernelSession:
    if SESSION not in config.stash:
        try:
            config.stash[SESSION] = KernelSession(options(config))
        except BenchError as exc:
            raise pytest.UsageError(f"ppbench kernels: {exc}") from None
    return config.stash[SESSION]


def pytest_configure(config: pytest.Config) -> None:
    session(config)  # bad options stop the run here, as one usage error naming the valid values


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "kcase" not in metafunc.fixturenames:
        return
    cases = session(metafunc.config).cases()
    params = [pytest.param(c, id=c.id, marks=[pytest.mark.skip(reason=c.skip)] if c.skip else []) for c in cases]
    metafunc.parametrize("kcase", params)


@pytest.fixture(scope="session")
def ksession(request: pytest.FixtureRequest) -> KernelSession:
    return session(request.config)


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict) -> None:
    if SESSION in config.stash:
        machine_info["ppbench"] = pbjson.machine_info(config.stash[SESSION])
