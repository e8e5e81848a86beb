"""The exit status a pipeline can use (ppharness.errors.Exit, README "Exit status"): 0 every measured
case valid, 3 some INVALID or failed, 4 none valid, 2 bad input, 1 the command itself failed,
130 interrupted. Each through the CLI on the smoke run file, with backends that fail on purpose."""

from __future__ import annotations

import pytest
from conftest import SMOKE
from typer.testing import CliRunner

from ppharness import backends
from ppharness.backends.cpu import CPUBackend
from ppharness.cli import app
from ppharness.errors import Exit
from ppharness.run import launch

runner = CliRunner()
TWO = "scenarios={prefill: {batch: 1, prompt_len: 8}, decode: {batch: 1, prompt_len: 8, new_tokens: 4}}"
FAST = ["--set", TWO, "--set", "timing.min_seconds=0", "--set", "timing.min_iters=2", "--set", "timing.warmup=1"]


def _backend(monkeypatch, name: str, cls: type) -> None:
    monkeypatch.setitem(backends.REGISTRY, name, cls)
    monkeypatch.setattr(cls, "name", name)


def _run(tmp_path, backend: str = "cpu", *sets: str):
    args = ["run", str(SMOKE), "--backend", backend, "--out", str(tmp_path), *FAST, "--set", "check=false"]
    return runner.invoke(app, [*args, *(a for s in sets for a in ("--set", s))])


def test_every_case_valid_exits_0_and_says_what_was_measured(tmp_path):
    res = _run(tmp_path)
    assert res.exit_code == Exit.OK == 0, res.output
    assert "measured 2 case(s): 2 valid" in res.stderr and f"results appended to {tmp_path}" in res.stderr


def test_some_cases_failed_exits_3(tmp_path, monkeypatch):
    class DecodeFails(CPUBackend):
        def prepare(self, module, example_inputs, scenario, compile_mode):
            if scenario == "decode":
                raise RuntimeError("no decode here")
            return super().prepare(module, example_inputs, scenario, compile_mode)

    _backend(monkeypatch, "decode-fails", DecodeFails)
    res = _run(tmp_path, "decode-fails")
    assert res.exit_code == Exit.SOME_INVALID == 3, res.output
    assert "measured 2 case(s): 1 valid, 1 failed" in res.stderr
    assert "warning: 1 of 2 case(s) not valid (first: decode" in res.stderr


def test_every_case_invalid_exits_4(tmp_path, monkeypatch):
    """A backend whose logits are wrong: the check makes every case INVALID (recorded, never fast)."""

    class Wrong(CPUBackend):
        def prepare(self, module, example_inputs, scenario, compile_mode):
            fwd = super().prepare(module, example_inputs, scenario, compile_mode)
            return lambda *args, **kwargs: fwd(*args, **kwargs) * -1.0

    _backend(monkeypatch, "wrong", Wrong)
    res = _run(tmp_path, "wrong", "check=true")
    assert res.exit_code == Exit.NONE_VALID == 4, res.output
    assert "measured 2 case(s): 0 valid, 2 INVALID" in res.stderr
    (line,) = [x for x in res.stderr.splitlines() if x.startswith("error: ")]
    assert line.startswith("error: no valid measurement (2 of 2 case(s); first: prefill") and "check failed" in line
    assert list(tmp_path.glob("*.jsonl"))  # the INVALID rows are still recorded


def test_resumed_cases_only_exit_0(tmp_path):
    assert _run(tmp_path).exit_code == 0
    res = runner.invoke(app, ["run", str(SMOKE), "--out", str(tmp_path), *FAST, "--set", "check=false", "--resume"])
    assert res.exit_code == 0 and "measured 0 case(s): 0 valid; 2 found in --out already" in res.stderr, res.output


def test_bad_input_exits_2(tmp_path):
    res = _run(tmp_path, "cpu", "timing.min_iters=-3")
    assert res.exit_code == Exit.BAD_INPUT == 2, res.output


def test_kernels_exit_like_a_run(tmp_path, monkeypatch):
    from test_kernels import FIXTURE_CEILINGS, TINY_ARGS

    from ppharness.core import ceilings
    from ppharness.kernels import run as kernels_run

    monkeypatch.setattr(ceilings, "measure_ceilings", lambda backend, dtype: dict(FIXTURE_CEILINGS))
    args = ["kernels", "--kernel", "rmsnorm", *TINY_ARGS, "--out", str(tmp_path)]
    res = runner.invoke(app, args)
    assert res.exit_code == 0 and "measured 2 case(s): 2 valid" in res.stderr, res.output
    measure = kernels_run.KernelSession.measure

    def one_invalid(self, case):  # as a contaminated window would make it
        rec = measure(self, case)
        if rec["workload"]["variant"] == "fused":
            rec["status"], rec["reason"] = "invalid", "other processes used 90% of the host"
        return rec

    monkeypatch.setattr(kernels_run.KernelSession, "measure", one_invalid)
    res = runner.invoke(app, args)
    assert res.exit_code == Exit.SOME_INVALID, res.output
    assert "measured 2 case(s): 1 valid, 1 INVALID" in res.stderr


@pytest.mark.parametrize("code", [Exit.BAD_INPUT, Exit.SOME_INVALID, Exit.NONE_VALID, Exit.INTERRUPTED])
def test_a_torchrun_launch_passes_rank_zeros_status_through(code):
    assert launch.LaunchFailed("x", int(code)).code == code
    assert launch.LaunchFailed("x", -9).code == Exit.FAILED  # a rank killed: the run failed


def test_the_gpu_check_counts_a_stage_with_invalid_cases_as_run():
    """A GPU-check stage that measured with some cases not valid (exit 3) is done, not re-run on
    --resume (its out-of-memory rows are the frontier); one with none valid (4) failed."""
    import io
    import sys

    from ppharness.run import gpuhost

    some = gpuhost.execute([sys.executable, "-c", "raise SystemExit(3)"], 60, io.StringIO())
    assert (some.status, some.rc) == ("ok", 3) and "not valid" in some.note
    none = gpuhost.execute([sys.executable, "-c", "raise SystemExit(4)"], 60, io.StringIO())
    assert (none.status, none.rc) == ("failed", 4)
