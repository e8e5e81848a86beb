"""The serve scenario on the CPU, without vLLM: run-file validation, the load generator's JSON to
records, validity rules, and every wait bounded (an unreachable port, a server that never answers
or exits at once, a load generator that hangs). A fake OpenAI-compatible server (http.server in a
thread) stands in where only the endpoint's answers matter; the real engine and load generator
run in the serve lane (tests/test_serve_lane.py, `make test-serve`).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

import fake_openai
import pytest

from ppharness.errors import BenchError
from ppharness.record.load import load
from ppharness.run import config
from ppharness.serve import endpoint
from ppharness.serve import loadgen as serve_results
from ppharness.serve import runner as serve

DATA = Path(__file__).parent / "data"
CAPTURED = DATA / "vllm_bench_serve_0.32.0_cpu.json"  # a real `vllm bench serve` result (see tests/data/README.md)


def free_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_raw(url: str, **extra) -> dict:
    s = {"endpoint": url, "model": "tiny", "input_len": 8, "output_len": 4, "concurrency": [1, 2], "requests": 4,
         "min_requests": 4, "ready_timeout_s": 2, "level_timeout_s": 20}  # fmt: skip
    s.update(extra)
    return {"name": "t", "serve": s}


@pytest.fixture
def fake_server():
    srv, url = fake_openai.start()
    yield url
    srv.shutdown()
    srv.server_close()


def fake_generator(monkeypatch, result: dict | None, sleep_s: float = 0.0) -> None:
    """A stand-in for `vllm bench serve`: writes `result` where --result-dir says (or hangs)."""
    script = (
        "import json, sys, time, pathlib; a = sys.argv; time.sleep(float(a[1])); res = json.loads(a[2]);"
        "d = pathlib.Path(a[a.index('--result-dir') + 1]);"
        "res is None or (d / a[a.index('--result-filename') + 1]).write_text(json.dumps(res))"
    )
    monkeypatch.setattr(
        serve_results, "generator_cmd", lambda: [sys.executable, "-c", script, str(sleep_s), json.dumps(result)]
    )
    monkeypatch.setattr(serve_results, "generator_version", lambda cmd: "fake-generator")


def vllm_result(output_lens, errors=None, duration=2.0, input_len=8) -> dict:
    """The per-request fields of a `vllm bench serve --save-detailed` result (vllm 0.32.0)."""
    n = len(output_lens)
    errors = errors or [""] * n
    ttfts = [0.1 if not e else 0.0 for e in errors]
    lat = [0.1 + 0.05 * (k - 1) if not e else 0.0 for k, e in zip(output_lens, errors)]
    return {
        "duration": duration, "completed": sum(not e for e in errors), "failed": sum(bool(e) for e in errors),
        "input_lens": [input_len] * n, "output_lens": output_lens, "ttfts": ttfts,
        "itls": [[0.05] * max(k - 1, 0) for k in output_lens], "latencies": lat, "errors": errors,
    }  # fmt: skip


# ---------------------------------------------------------------- run file
def test_serve_file_validates_and_overrides(tmp_path):
    cfg = config.load("configs/runs/serve-cpu-tiny.yaml", ["serve.concurrency=[1, 8]", "serve.output_len=32"])
    assert isinstance(cfg, serve.ServeRunConfig)
    assert [(lv.concurrency, lv.output_len) for lv in serve.levels(cfg.serve)] == [(1, 32), (8, 32)]
    assert cfg.serve.launch[:3] == ["python", "-m", "ppharness.serve.vllm_cli"]


@pytest.mark.parametrize(
    "edit, message",
    [
        ({"endpoint": "http://user:secret@127.0.0.1:1"}, "must not carry credentials"),
        ({"endpoint": "ftp://x"}, "http(s)://host:port"),
        ({"concurrency": [1, 0]}, "serve.concurrency must be a positive integer"),
        ({"bogus": 1}, "unknown key serve.bogus"),
        ({"max_error_fraction": 1.5}, "max_error_fraction must be in [0, 1)"),
        ({"ready_timeout_s": 0}, "ready_timeout_s must be a positive number"),
        ({"generator": "locust"}, "unknown serve.generator 'locust'; valid: vllm"),
        ({"launch": []}, "serve.launch must be a command line"),
    ],
)
def test_bad_serve_file_is_one_line(edit, message):
    with pytest.raises(BenchError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        serve.validate(serve_raw("http://127.0.0.1:1", **edit))


def test_serve_file_rejects_backend_and_unknown_set_key(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(json.dumps(serve_raw("http://127.0.0.1:1")))
    with pytest.raises(BenchError, match="--backend does not apply"):
        config.load(path, [], "cpu")
    with pytest.raises(BenchError, match="unknown key 'scenarios.x'"):
        config.load(path, ["scenarios.x=1"])
    with pytest.raises(BenchError, match="devices_used must be between 1 and 2"):
        config.load(path, ["instance=inf2.xlarge", "serve.devices_used=3"])


# ---------------------------------------------------------------- the generator's JSON
def test_parse_and_metrics_follow_vllms_definitions():
    res = vllm_result([4, 4, 4, 0], errors=["", "", "", "HTTP 500: boom\nmore"], duration=2.0)
    req = serve_results.parse_vllm(res)
    assert (req.completed, req.failed, req.errors) == (3, 1, ["HTTP 500: boom"])
    # TPOT = (e2e - TTFT) / (output tokens - 1): (0.25 - 0.1) / 3
    assert req.tpot_s == pytest.approx([0.05] * 3)
    m = serve_results.metrics(req)
    assert m["tokens_per_s"] == pytest.approx(12 / 2.0)  # output tokens over the window
    assert m["tokens_per_s_per_user"] == pytest.approx(1 / 0.05)
    assert m["ttft_p90_s"] == pytest.approx(0.1) and m["itl_p50_s"] == pytest.approx(0.05)
    assert m["tokens_per_step"] == 12


def test_parse_rejects_summary_only_json():
    with pytest.raises(serve_results.GeneratorOutputError, match="--save-detailed"):
        serve_results.parse_vllm({"duration": 1.0, "completed": 3})


@pytest.mark.skipif(not CAPTURED.exists(), reason="captured vllm bench serve JSON not present")
def test_captured_vllm_result_parses_into_a_valid_level():
    data = json.loads(CAPTURED.read_text())
    req = serve_results.parse_vllm(data)
    assert req.completed == data["completed"] and req.failed == data["failed"]
    assert sum(req.output_lens) == data["total_output_tokens"]
    m = serve_results.metrics(req)
    assert m["tokens_per_s"] == pytest.approx(data["output_throughput"], rel=1e-9)
    # vLLM's own median TPOT (ms) from the same samples
    assert m["tpot_p50_s"] * 1e3 == pytest.approx(data["median_tpot_ms"], rel=1e-6)
    assert m["ttft_p99_s"] * 1e3 == pytest.approx(data["p99_ttft_ms"], rel=1e-6)


@pytest.mark.parametrize(
    "lens, errors, min_requests, fraction, expect",
    [
        ([4, 4, 4, 4], None, 4, 0.0, []),
        ([4, 4, 3, 4], None, 4, 0.0, ["1 of 4 requests produced other than the 4 output tokens asked (min 3, max 3)"]),
        ([4, 4, 4, 0], ["", "", "", "timeout"], 4, 0.0, ["3 requests completed, fewer than min_requests 4",
                                                        "1 of 4 requests failed (25.0% > max_error_fraction 0.0%; first: timeout)"]),
        ([4, 4, 4, 4, 4, 0], ["", "", "", "", "", "x"], 4, 0.2, []),  # 1 of 6 failed: under the stated 20%
        ([4, 4], None, 2, 0.0, ["2 of 4 requests were sent"]),
    ],
)  # fmt: skip
def test_validity_rules(lens, errors, min_requests, fraction, expect):
    req = serve_results.parse_vllm(vllm_result(lens, errors))
    reasons, _ = serve_results.validity(req, serve_results.Rules(8, 4, 4, min_requests, fraction))
    assert reasons == expect


# ---------------------------------------------------------------- bounded waits, clear records
def test_unreachable_endpoint_is_an_error_record_not_a_hang(tmp_path):
    cfg = serve.validate(serve_raw(f"http://127.0.0.1:{free_port()}", ready_timeout_s=1.0))
    t0 = time.monotonic()
    files = serve.run(cfg, tmp_path)
    assert time.monotonic() - t0 < 30
    df = load(files)
    assert list(df["status"]) == ["error", "error"]  # one record per level, each saying why
    assert all("not ready after 1 s" in r for r in df["reason"])


def test_server_that_accepts_but_never_answers_times_out():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)  # connections complete in the backlog; nothing ever reads or replies
        with pytest.raises(endpoint.EndpointError, match="not ready after 1.5 s"):
            endpoint.wait_ready(f"http://127.0.0.1:{s.getsockname()[1]}", 1.5)


def test_launched_server_that_exits_is_reported_with_its_output(tmp_path):
    launch = [sys.executable, "-c", "import sys; print('no model here'); sys.exit(3)"]
    cfg = serve.validate(serve_raw(f"http://127.0.0.1:{free_port()}", launch=launch, ready_timeout_s=60))
    df = load(serve.run(cfg, tmp_path))
    assert set(df["status"]) == {"error"}
    assert "server exited with code 3 before it was ready: no model here" in df["reason"].iloc[0]


def test_launched_server_never_ready_is_stopped(tmp_path):
    pid_file = tmp_path / "pid"
    launch = [
        sys.executable,
        "-c",
        f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(600)",
    ]
    cfg = serve.validate(serve_raw(f"http://127.0.0.1:{free_port()}", launch=launch, ready_timeout_s=2))
    df = load(serve.run(cfg, tmp_path / "out"))
    assert "not ready after 2 s" in df["reason"].iloc[0]
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):  # the server's process is gone (stopped and reaped)
        os.kill(pid, 0)


def test_model_the_server_does_not_serve_is_an_error(tmp_path, fake_server, monkeypatch):
    fake_generator(monkeypatch, vllm_result([4] * 4))
    cfg = serve.validate(serve_raw(fake_server, model="llama-70b"))
    df = load(serve.run(cfg, tmp_path))
    assert df["reason"].iloc[0] == "the server serves tiny, not serve.model 'llama-70b'"


def test_hung_load_generator_is_killed(tmp_path, fake_server, monkeypatch):
    fake_generator(monkeypatch, None, sleep_s=600)
    cfg = serve.validate(serve_raw(fake_server, concurrency=1, level_timeout_s=1.5))
    df = load(serve.run(cfg, tmp_path))
    assert df["reason"].iloc[0] == "load generator did not finish within 1.5 s (killed)"


def test_levels_become_records_that_show_and_compare_read(tmp_path, fake_server, monkeypatch):
    from ppharness.judge import compare
    from ppharness.present.tables import summary

    fake_generator(monkeypatch, vllm_result([4] * 4, duration=2.0))
    cfg = serve.validate({**serve_raw(fake_server), "instance": "inf2.xlarge"})
    files = serve.run(cfg, tmp_path)
    df = load(files)
    assert list(df["status"]) == ["ok", "ok"] and list(df["workload.concurrency"]) == [1, 2]
    rec = json.loads(files[0].read_text().splitlines()[0])
    assert rec["serve"]["version"] == "0.0.0-fake" and rec["serve"]["version_source"] == "/version"
    assert rec["serve"]["requests"]["output_lens"] == [4] * 4 and len(rec["serve"]["requests"]["tpot_s"]) == 4
    assert rec["metrics"]["tokens_per_s"] == pytest.approx(16 / 2.0)
    # $/1M output tokens = usd_per_hour / (tokens/s * 3600) * 1e6 at the whole instance
    usd = rec["cost"]["usd_per_hour"] / (8.0 * 3600) * 1e6
    assert rec["cost"]["usd_per_million_tokens"] == pytest.approx(usd)
    assert "secret" not in files[0].read_text()
    assert list(summary(df)["status"]) == ["ok", "ok"]
    cmp = compare.compare(df)
    assert sorted(cmp.table["batch"]) == [1, 2] and set(cmp.table["scenario"]) == {"serve 8/4"}
    assert cmp.table["tokens_per_s"].tolist() == pytest.approx([8.0, 8.0])
    assert cmp.table["tokens_per_s_per_user"].tolist() == pytest.approx([20.0, 20.0])  # 1 / 50 ms TPOT
    from ppharness.present import report
    from ppharness.present.figures import figures

    assert list(report.compare_frame(cmp.table, False)["tok/s/user"]) == ["20", "20"]

    frontier = figures(report.workload_rows(cmp, df), [], df.iloc[0:0])[3]  # the report's serving figure
    assert frontier.png and frontier.caption.startswith("Serving: throughput per dollar")


def test_short_outputs_and_errors_make_invalid_records(tmp_path, fake_server, monkeypatch):
    fake_generator(monkeypatch, vllm_result([4, 4, 2, 0], errors=["", "", "", "HTTP 503"]))
    cfg = serve.validate(serve_raw(fake_server, concurrency=1, min_requests=2))
    rec = load(serve.run(cfg, tmp_path)).iloc[0]
    assert rec["status"] == "invalid"
    assert "1 of 4 requests failed" in rec["reason"] and "1 of 3 requests produced other than the 4" in rec["reason"]
