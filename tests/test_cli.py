"""The CLI as users run it (typer's CliRunner), end to end on the smoke run file."""

import json

import pytest
from conftest import SMOKE
from typer.testing import CliRunner

from ppharness.cli import app

runner = CliRunner()

CONTRACT = {  # DESIGN.md, "The result record, by key"
    "": ["schema_version", "run_id", "created_at", "status", "reason"],
    "harness": ["version", "git_sha", "dirty"],
    "system": ["hostname", "instance_type", "cpu_model", "cpu_count", "os", "python", "torch", "versions"],
    "device": ["backend", "accelerator", "name", "devices_used", "devices_on_host"],
    "workload": ["preset", "model", "scenario", "batch", "seq_len", "prompt_len", "new_tokens", "dtype", "compile"],
    "timing": ["compile_s", "warmup_iters", "samples_s", "n", "median_s", "mean_s", "p10_s", "p90_s", "p99_s",
               "iqr_s", "cov", "ci95_s"],
    "metrics": ["tokens_per_s", "flops_per_token", "achieved_tflops", "mfu", "mbu", "ceiling_fraction", "ttft_s",
                "tpot_s", "peak_mem_bytes", "energy_j_per_token"],
    "cost": ["instance", "basis", "region", "usd_per_hour", "share", "prorated", "usd_per_million_tokens",
             "price_source", "price_date"],
    "validity": ["valid", "reasons"],
    "config": ["name", "backends", "model", "scenarios", "timing"],
}  # fmt: skip


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("smoke")
    args = ["run", str(SMOKE), "--backend", "cpu", "--out", str(out), "--set", "instance=c7a.large",
            "--set", "timing.min_seconds=0"]  # fmt: skip
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    return out, res


def test_smoke_run_writes_every_contract_key(smoke_run):
    out, res = smoke_run
    files = list(out.glob("*_c7a.large_cpu.jsonl"))
    assert len(files) == 1
    records = [json.loads(line) for line in files[0].read_text().splitlines()]
    assert [r["workload"]["scenario"] for r in records] == ["train", "prefill", "decode"]
    for rec in records:
        for block, keys in CONTRACT.items():
            where = rec[block] if block else rec
            assert not (missing := [k for k in keys if k not in where]), (block, missing)
        assert rec["status"] == "ok" and rec["validity"]["valid"]
        assert rec["cost"]["priced_as"] is True and rec["cost"]["usd_per_million_tokens"] > 0
        assert rec["metrics"]["mfu"] is None and "CPU" in rec["metrics"]["mfu_reason"]
        assert 0 < rec["metrics"]["ceiling_fraction"]
        assert rec["timing"]["n"] == len(rec["timing"]["samples_s"]) >= 3
    assert "tokens/s" in res.stdout and "train" in res.stdout


def test_show_reads_the_run(smoke_run):
    out, _ = smoke_run
    res = runner.invoke(app, ["show", str(out)])
    assert res.exit_code == 0 and "prefill" in res.stdout and "c7a.large" in res.stdout


def test_backends_and_env():
    res = runner.invoke(app, ["backends"])
    assert res.exit_code == 0 and "cpu" in res.stdout
    res = runner.invoke(app, ["env"])
    assert res.exit_code == 0 and '"git_sha"' in res.stdout


@pytest.mark.parametrize(
    "args,message",
    [
        (["run", str(SMOKE), "--set", "model=gpt5"], "unknown model preset 'gpt5'"),
        (["run", str(SMOKE), "--backend", "tpu"], "unknown backend 'tpu'"),
        (["run", str(SMOKE), "--set", "scenarios.train.batch=-1"], "must be a positive integer"),
        (["run", str(SMOKE), "--set", "instance=p9.huge"], "p9.huge"),
        (["run", "does-not-exist.yaml"], "cannot read run file"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, args, message):
    res = runner.invoke(app, [*args, "--out", str(tmp_path / "out")])
    assert res.exit_code == 2, res.output
    assert message in res.stderr and res.stderr.count("\n") == 1 and "Traceback" not in res.output
    assert not (tmp_path / "out").exists()


def test_show_bad_results_file(tmp_path):
    bad = tmp_path / "x.jsonl"
    bad.write_text('{"schema_version": 1}\n')
    res = runner.invoke(app, ["show", str(bad)])
    assert res.exit_code == 2 and "not a ppbench record" in res.stderr
    res = runner.invoke(app, ["show", str(tmp_path / "none")])
    assert res.exit_code == 2 and "no such results file" in res.stderr


def test_console_script_usage_errors_are_one_line(tmp_path):
    """Click's own usage errors (unknown option or command) also give one line and exit 2."""
    import subprocess
    import sys

    for args in (["run", "--bakend", "cpu"], ["frobnicate"]):
        res = subprocess.run(
            [sys.executable, "-m", "ppharness.cli", *args], capture_output=True, text=True, cwd=tmp_path
        )
        assert res.returncode == 2, res.stderr
        assert res.stderr.startswith("error: ") and res.stderr.count("\n") == 1 and not res.stdout


# --------------------------------------------------------------- issue 17: nothing lost, text as data
FAST = ["--set", "scenarios={prefill: {batch: 1, prompt_len: 8}}", "--set", "check=false",
        "--set", "timing.min_seconds=0", "--set", "timing.min_iters=2"]  # fmt: skip


def _one_error_line(res, code: int, *needles: str) -> None:
    assert res.exit_code == code, (res.exit_code, res.output)
    lines = [line for line in res.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in res.output, res.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def test_a_full_disk_fails_the_run_naming_the_case(tmp_path, monkeypatch):
    """Simulated ENOSPC on the results file (os.write replaced for *.jsonl only: a real full file
    system needs a mount): exit 1, the case and the reason named, never `ok` for a lost record."""
    import errno
    import os

    from ppharness.record import writer

    real, room = os.write, [10]  # 10 bytes left on the "disk"

    def write(fd, data):
        if not os.readlink(f"/proc/self/fd/{fd}").endswith(".jsonl"):
            return real(fd, data)
        if not room[0]:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        n, room[0] = real(fd, data[: room[0]]), 0  # a short write, as a filling disk gives
        return n

    monkeypatch.setattr(writer.os, "write", write)
    res = runner.invoke(app, ["run", str(SMOKE), "--out", str(tmp_path), *FAST])
    _one_error_line(res, 1, "prefill", "No space left on device")
    assert ": ok" not in res.stderr
    assert all(f.read_text() == "" for f in tmp_path.glob("*.jsonl"))  # the torn fragment taken back


@pytest.mark.parametrize("where", ["file", "under a file", "read-only"])
def test_run_destination_is_checked_before_measuring(tmp_path, monkeypatch, where):
    import os

    from ppharness.run import runner as runner_mod

    monkeypatch.setattr(runner_mod, "run", lambda *a, **k: pytest.fail("measured before checking --out"))
    out = tmp_path / "out"
    if where == "file":
        out.write_text("")
        needle = "not a folder"
    elif where == "under a file":
        out.write_text("")
        out = out / "deeper"
        needle = "is not a folder"
    else:
        out.mkdir()
        out.chmod(0o555)
        if os.access(out, os.W_OK):  # root ignores permission bits: deny it as a read-only mount would
            real = os.access
            monkeypatch.setattr(
                os,
                "access",
                lambda p, m, **k: not (m & os.W_OK) and real(p, m, **k) if str(p) == str(out) else real(p, m, **k),
            )
        needle = "not writable"
    res = runner.invoke(app, ["run", str(SMOKE), "--out", str(out), *FAST])
    _one_error_line(res, 2, "--out", needle)


@pytest.mark.parametrize("where", ["a folder", "read-only folder", "missing folder"])
def test_report_destination_is_checked_before_anything(tmp_path, monkeypatch, where):
    import os

    if where == "a folder":
        output, needle = tmp_path, "it is a folder"
    elif where == "read-only folder":
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        if os.access(ro, os.W_OK):
            real = os.access
            monkeypatch.setattr(
                os,
                "access",
                lambda p, m, **k: not (m & os.W_OK) and real(p, m, **k) if str(p) == str(ro) else real(p, m, **k),
            )
        output, needle = ro / "r.html", "not writable"
    else:
        output, needle = tmp_path / "nope" / "r.html", "does not exist"
    # The results do not exist either: the destination is what is reported, checked first.
    res = runner.invoke(app, ["report", str(tmp_path / "no-results"), "-o", str(output)])
    _one_error_line(res, 2, "cannot write report", needle)


def test_an_unwritable_ceilings_cache_falls_back_and_says_so_once(tmp_path, monkeypatch):
    """The cache folder is a file: every case still measures (no error rows), one warning line."""
    cache = tmp_path / "cache-is-a-file"
    cache.write_text("")
    monkeypatch.setenv("PPBENCH_CACHE_DIR", str(cache))
    out = tmp_path / "out"
    res = runner.invoke(app, ["run", str(SMOKE), "--out", str(out), *FAST, "--set", "scenarios.prefill.batch=[1, 2]"])
    assert res.exit_code == 0, res.output
    records = [json.loads(line) for f in out.glob("*.jsonl") for line in f.read_text().splitlines()]
    assert [r["status"] for r in records] == ["ok", "ok"]
    assert all(r["ceilings"]["cached"] is False and r["ceilings"]["gemm_tflops"] > 0 for r in records)
    warnings = [line for line in res.stderr.splitlines() if "measuring without caching" in line]
    assert len(warnings) == 1 and warnings[0].startswith("warning: ceilings cache"), res.stderr


class _Failing:
    """A CPU backend whose every case fails, with markup-like text in the reason."""

    REASON = "bad [/x] input [bold]kept[/bold] \x1b]8;;http://evil\x07link\x1b]8;;\x07"


def _failing_backend(monkeypatch):
    from ppharness import backends
    from ppharness.backends.cpu import CPUBackend

    class Failing(CPUBackend):
        def prepare(self, module, example_inputs, scenario, compile_mode):
            raise RuntimeError(_Failing.REASON)

    monkeypatch.setitem(backends.REGISTRY, "failing", Failing)
    monkeypatch.setattr(Failing, "name", "failing")


def test_a_run_whose_every_case_failed_exits_non_zero_and_reasons_are_data(tmp_path, monkeypatch):
    _failing_backend(monkeypatch)
    name = 'name="[/y] run [red]name[/red]"'  # a run name is markup-free text too (the progress bar)
    res = runner.invoke(app, ["run", str(SMOKE), "--backend", "failing", "--out", str(tmp_path), *FAST, "--set", name])
    _one_error_line(res, 4, "no valid measurement (1 of 1 case(s); first: prefill")
    # The reason is printed as it is, not read as rich markup (`[/x]` crashed the run), and its
    # escape sequence (an OSC 8 hyperlink) never reaches the terminal.
    assert "bad [/x] input [bold]kept[/bold]" in res.stderr and "\x1b" not in res.output
    assert list(tmp_path.glob("*.jsonl"))  # the failed case is still recorded


def test_ctrl_c_says_what_was_kept_and_how_to_resume(tmp_path, monkeypatch):
    from ppharness.run import runner as runner_mod

    def interrupted(cfg, out_dir, on_case, resume, repeat=1):
        on_case("prefill b1 p8 float32 none", {"status": "ok", "reason": ""})
        raise KeyboardInterrupt

    monkeypatch.setattr(runner_mod, "run", interrupted)
    res = runner.invoke(app, ["run", str(SMOKE), "--out", str(tmp_path), "--set", "seed=3"])
    assert res.exit_code == 130, res.output
    last = res.stderr.splitlines()[-1]
    assert last.startswith("interrupted: 1 finished case(s) kept in ") and str(tmp_path) in last
    assert last.endswith(f"ppbench run {SMOKE} --out {tmp_path} --set seed=3 --resume"), last


def test_resume_message_has_no_doubled_bracket(smoke_run):
    out, _ = smoke_run
    args = ["run", str(SMOKE), "--backend", "cpu", "--out", str(out), "--set", "instance=c7a.large",
            "--set", "timing.min_seconds=0", "--resume"]  # fmt: skip
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "skipped (measured earlier, --resume)" in res.stderr and "))" not in res.stderr


def test_version_and_flags_in_help():
    from ppharness import __version__

    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and res.stdout.strip() == f"ppbench {__version__}"
    res = runner.invoke(app, ["run", "--help"], terminal_width=200)
    resume = [line for line in res.stdout.splitlines() if "--resume" in line]
    assert resume and "<bool>" not in resume[0], resume  # a flag takes no value
    for cmd in (["compare", "--help"], ["prices", "refresh", "--help"]):
        text = runner.invoke(app, cmd, terminal_width=200).stdout
        flags = [line for line in text.splitlines() if "--latest" in line or "--dry-run" in line]
        assert flags and not any("<bool>" in line for line in flags), flags


def _hostile_results(tmp_path):
    """A results file whose strings carry an escape sequence and markdown link syntax."""
    from results_fixtures import record

    evil = "\x1b]0;owned\x07\x1b[31mhost[c](javascript:alert(1))"
    path = tmp_path / "evil.jsonl"
    rec = record(instance=None, hostname=evil)
    path.write_text(json.dumps(rec) + "\n")
    return path


def test_compare_never_prints_escape_sequences_from_a_results_file(tmp_path):
    path = _hostile_results(tmp_path)
    res = runner.invoke(app, ["compare", str(path)])
    assert res.exit_code == 0 and "systems: " in res.stderr, res.output
    assert "\x1b" not in res.output and "\x07" not in res.output
    res = runner.invoke(app, ["compare", str(path), "--baseline", "nope"])  # the systems listed in the error
    _one_error_line(res, 2, "unknown baseline 'nope'")
    assert "\x1b" not in res.output and "\x07" not in res.output


def test_markdown_report_keeps_no_link_syntax_from_a_results_field(tmp_path):
    path = _hostile_results(tmp_path)
    out = tmp_path / "r.md"
    res = runner.invoke(app, ["report", str(path), "--format", "md", "-o", str(out)])
    assert res.exit_code == 0, res.output
    text = out.read_text()
    assert "javascript:alert" in text  # the text is kept, as text
    assert "[c](" not in text and "](javascript" not in text and "\x1b" not in text


def test_long_tables_print_as_plain_aligned_text(capsys):
    """Above PLAIN_ROWS rows a table skips rich's per-cell layout (most of `show`'s time on 5,000
    records) for padded columns; every row is there and a file's escape codes stay inert."""
    import pandas as pd

    from ppharness import cli as cli_mod

    n = cli_mod.PLAIN_ROWS + 1
    frame = pd.DataFrame({"run": [f"r{i}" for i in range(n)], "reason": ["ok"] * (n - 1) + ["\x1b]0;pwned\x07x"]})
    cli_mod.print_frame(frame, title="many")
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "many" and lines[1].split() == ["run", "reason"] and len(lines) == n + 3
    assert "\x1b" not in "".join(lines) and "\x07" not in "".join(lines) and lines[-1].startswith(f"r{n - 1} ")
