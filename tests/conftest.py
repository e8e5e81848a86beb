"""Shared fixtures. Tests run on the CPU; hardware-specific tests skip with a reason."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "configs" / "runs" / "smoke.yaml"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Measured ceilings go to a per-session temp cache, never the user's ~/.cache."""
    monkeypatch.setenv("PPBENCH_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "ppbench-cache"))


@pytest.fixture
def fast_timing() -> list[str]:
    """--set overrides that keep an end-to-end run to a few seconds."""
    return ["timing.min_iters=2", "timing.min_seconds=0", "timing.warmup=1"]
