"""Result-record FIXTURES for the compare / claims / report tests.

These are made-up records with the keys of DESIGN.md "The result record, by key"; they are test
inputs only and never go near results/. `record()` builds one; `frame()` writes records to a JSONL
file and loads them back through `ppharness.record.load.load`, so tests see exactly what the CLI sees.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ppharness.record.load import load


def record(
    instance: str | None = "c7a.large",
    *,
    backend: str = "cpu",
    accelerator: str | None = None,
    hostname: str = "fixture-host",
    compile: str = "none",
    preset: str = "tiny",
    scenario: str = "train",
    dtype: str = "float32",
    batch: int = 2,
    seq_len: int = 32,
    step_s: float = 0.01,
    n: int = 20,
    spread: float = 0.02,
    usd_per_hour: float | None = 0.10264,
    share: float = 1.0,
    devices_used: int = 1,
    mfu: float | None = None,
    flops_per_token: float = 1e6,
    status: str = "ok",
    valid: bool = True,
    reasons: list[str] | None = None,
    created_at: str = "2026-01-01T00:00:00+00:00",
    seed: int = 0,
) -> dict:
    """One record whose step times scatter +-spread around step_s (seeded)."""
    rng = np.random.default_rng(seed)
    samples = (step_s * (1 + spread * rng.uniform(-1, 1, n))).tolist()
    tokens_per_step = batch * (1 if scenario == "decode" else seq_len)
    median = float(np.median(samples))
    tps = tokens_per_step / median
    usd_mtok = None if usd_per_hour is None else usd_per_hour * share / (tps * 3600) * 1e6
    return {
        "schema_version": 1,
        "run_id": f"run-{seed}",
        "created_at": created_at,
        "status": status,
        "reason": None if status == "ok" else f"{status} happened",
        "harness": {"version": "0.1.0", "git_sha": "0" * 40, "dirty": False},
        "system": {"hostname": hostname, "instance_type": instance},
        "device": {"backend": backend, "accelerator": accelerator, "name": "fixture", "devices_used": devices_used},
        "workload": {
            "preset": preset,
            "scenario": scenario,
            "batch": batch,
            "seq_len": seq_len,
            "prompt_len": seq_len,
            "new_tokens": 8,
            "dtype": dtype,
            "compile": compile,
            **({"prefill_logits": "last"} if scenario == "prefill" else {}),
        },
        "timing": {"samples_s": samples, "n": n, "median_s": median, "ci95_s": [median * 0.99, median * 1.01]},
        "metrics": {
            "tokens_per_s": tps,
            "tokens_per_step": tokens_per_step,
            "flops_per_token": flops_per_token,
            "achieved_tflops": tps * flops_per_token / 1e12,
            "mfu": mfu,
            "ceiling_fraction": 0.5,
        },
        "cost": {
            "instance": instance,
            "basis": "on_demand",
            "region": "us-east-1",
            "usd_per_hour": usd_per_hour,
            "share": share,
            "prorated": share < 1,
            "priced_as": True,
            "usd_per_million_tokens": usd_mtok,
            "price_date": "2026-07-20",
        },
        "validity": {"valid": valid, "reasons": reasons or []},
        "config": {},
    }


def write(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def frame(tmp_path: Path, records: list[dict], name: str = "fixture.jsonl") -> pd.DataFrame:
    """Records -> JSONL -> ppharness.record.load.load, the path every command takes."""
    return load([write(tmp_path / name, records)])
