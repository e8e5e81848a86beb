"""`--resume`: which cases a results folder already holds, by a hash of what was measured.

Every record carries `config_hash`: a SHA-256 of the resolved run config as it bears on that one
case (model, timing, seed, check, pricing, this backend's options), the case itself (scenario,
sizes, dtype, compile mode), the backend, the kind of device and the instance, and the world size
and node count. Keys that only select cases (name, backends, scenarios, the dtype/compile lists)
are left out, so widening a sweep or adding a backend still resumes the cases already measured.
The device kind (`device_kind`: "NVIDIA H200", a CPU model and its core count), not the host's
name, says whether a case was measured already: a rented GPU machine is a new host every time,
and a second H200 finishes what the first left, while an H100 measures everything again.
(Records written before the hash named the device carry the hostname's: measured once more.)

`ppbench run --resume` skips a case whose hash matches a record with status ok or invalid in the
target folder; a failed case (oom, compile_error, error) is measured again. With `--repeat N` a
case held k times is measured N - k more times (the rounds after k).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import warnings
from pathlib import Path

from ppharness.core.device import DeviceInfo
from ppharness.core.scenarios import Case
from ppharness.errors import BenchError
from ppharness.record.load import read_records, result_files
from ppharness.run.config import RunConfig

MEASURED = ("ok", "invalid")  # statuses --resume does not measure again
_CASE_SELECTORS = ("name", "backends", "scenarios", "dtype", "compile", "backend_options")


def device_kind(info: DeviceInfo) -> str:
    """What makes two devices the same for --resume: the backend's `kind`, else the name."""
    return f"{info.backend}: {info.kind or info.name}"


def config_hash(
    cfg: RunConfig, case: Case, backend: str, device: str, instance: str | None, world: tuple[int, int]
) -> str:
    """The hash of one case's resolved configuration (module docstring); `device` is
    device_kind(...), `world` = (ranks, nodes)."""
    resolved = {k: v for k, v in cfg.to_dict().items() if k not in _CASE_SELECTORS}
    payload = {
        "config": resolved,
        "backend_options": cfg.backend_options.get(backend, {}),
        "case": dataclasses.asdict(case),
        "backend": backend,
        "device": device,
        "instance": instance,
        "world_size": world[0],
        "nodes": world[1],
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def read_folder(out_dir: Path) -> list[dict]:
    """Every record under `out_dir` (none if it does not exist). A damaged file is skipped with a
    warning rather than stopping a run that only looks for earlier records."""
    if not Path(out_dir).is_dir():
        return []
    records = []
    for path in result_files([out_dir]):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # a torn last line is expected after a kill
                records += [r for r in read_records(path) if isinstance(r, dict)]
        except BenchError as exc:
            warnings.warn(f"--resume/scaling: skipped {exc}", stacklevel=2)
    return records


def measured(records: list[dict]) -> dict[str, list[dict]]:
    """config_hash -> the records with that hash and status ok or invalid, oldest first."""
    done: dict[str, list[dict]] = {}
    for rec in sorted(records, key=lambda r: str(r.get("created_at", ""))):
        h = rec.get("config_hash")
        if isinstance(h, str) and rec.get("status") in MEASURED:
            done.setdefault(h, []).append(rec)
    return done
