"""Where the harness finds its data files: the checkout's `configs/` and `seeds/`, or the copies a
wheel carries.

In a checkout (or an editable install) the folders beside `ppharness/` are the source of truth.
A wheel installs them as `ppharness/_data/{configs,seeds}` (pyproject.toml, package-dir), because a
non-editable install has no checkout to read. Every module asks here instead of counting parents.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
CHECKOUT = PACKAGE.parent  # the repository root when running from a clone
_WHEEL_DATA = PACKAGE / "_data"


def data_dir(name: str) -> Path:
    """`configs` or `seeds`: the wheel's copy where one is installed, else the checkout's folder."""
    packaged = _WHEEL_DATA / name
    return packaged if packaged.is_dir() else CHECKOUT / name


def configs() -> Path:
    return data_dir("configs")


def seeds() -> Path:
    return data_dir("seeds")


def cache_dir() -> Path:
    """Where derived, rebuildable data lives (measured ceilings, the results cache):
    `$PPBENCH_CACHE_DIR`, else `~/.cache/ppbench`. Never inside a results folder: loading reads
    every *.json there as pytest-benchmark output."""
    return Path(os.environ.get("PPBENCH_CACHE_DIR") or Path.home() / ".cache" / "ppbench")
