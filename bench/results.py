"""The result record: append-only JSONL writing and loading into one pandas DataFrame.

One JSON object per measured case (DESIGN.md, "The result record, by key"). Each record is
written with a single O_APPEND write, then flushed and fsynced, so a run killed at any moment
keeps every finished case and concurrent writers never interleave within a line. A record that
cannot be written whole (a full disk) raises WriteError: the run fails instead of losing it. `load` turns
any number of files or folders into one frame, flattened one level (`metrics.tokens_per_s`);
every table and figure is rendered from that frame.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import json
import math
import os
import re
import tempfile
import warnings
from pathlib import Path

import pandas as pd

from bench.errors import BenchError, WriteError

SCHEMA_VERSION = 1
REQUIRED = ("schema_version", "run_id", "created_at", "status", "device", "workload", "timing", "metrics", "cost")
STATUSES = ("ok", "invalid", "oom", "compile_error", "error")
RECORD_START = '{"schema_version":'  # how every line ResultWriter writes begins (json.dumps keeps key order)
# What a torn line tells: its write was cut short. ppbench's writer fails the run when a write
# comes up short, so a torn line comes from a process killed mid-write, a full disk under an older
# writer, or another program; the loader cannot tell which.
TORN = "an incomplete record, its write cut short: a killed run, a full disk or another writer"
READERS: dict[str, callable] = {}  # file suffix -> reader(path) -> list[dict]; e.g. pytest-benchmark JSON


def _read_pytest_benchmark(path: Path) -> list[dict]:
    from kernels.pbjson import read  # the kernels package owns the pytest-benchmark mapping

    return read(path)


READERS[".json"] = _read_pytest_benchmark  # `pytest -m benchmark kernels/ --benchmark-json out.json`


def results_path(out_dir: Path, host_or_instance: str, backend: str, today: dt.date | None = None) -> Path:
    """results/<date>_<host-or-instance>_<backend>.jsonl"""
    day = (today or dt.date.today()).isoformat()
    safe = re.sub(r"[^A-Za-z0-9.-]+", "-", host_or_instance).strip("-") or "host"
    return Path(out_dir) / f"{day}_{safe}_{backend}.jsonl"


class ResultWriter:
    """Appends records to one JSONL file; the file is created only when the first record is.

    A record is either on disk whole (written, fsynced) or `write` raises `WriteError` naming the
    file, the record and the reason (no space left, an I/O error): a run never reports `ok` for a
    record it lost. A record cut short is taken back off the file where no other writer appended
    after it, so the file keeps only whole lines."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.count = 0

    def check(self) -> None:
        """Raise BenchError now if this file could not be written: called before measuring."""
        check_destination(self.path.parent, "--out")
        if self.path.is_dir() or (self.path.exists() and not self.path.is_file()):
            raise BenchError(f"cannot write results file {self.path}: it exists and is not a regular file")
        if self.path.exists() and not os.access(self.path, os.W_OK):
            raise BenchError(f"cannot write results file {self.path}: permission denied")

    def write(self, record: dict, label: str = "") -> None:
        """Append `record` (`label` names its case in an error) completely, or raise WriteError."""
        what = f"the record of {label}" if label else "a record"
        line = (json.dumps(_finite(record), separators=(",", ":")) + "\n").encode()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as exc:
            raise WriteError(f"cannot write {what} to {self.path}: {exc.strerror or exc}") from None
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                # A record torn by a kill ends the file (e.g. before `--resume`): start on a fresh
                # line, so this record is never glued to the fragment and lost with it.
                line = b"\n" + line
            _write_all(fd, line, size)
            os.fsync(fd)  # a full disk can surface only here (delayed allocation, NFS)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise WriteError(f"cannot write {what} to {self.path}: {reason}; the run stopped there") from None
        finally:
            os.close(fd)
        self.count += 1


def _write_all(fd: int, data: bytes, size_before: int) -> None:
    """os.write until every byte is down. One write per record is the norm, so appends from several
    processes stay whole; a short write (a disk filling up) is continued, and a write that makes no
    progress raises OSError. On failure, the partial record is truncated away if nothing else was
    appended after it, so no torn line is left for a reader to meet."""
    done = 0
    try:
        while done < len(data):
            n = os.write(fd, data[done:])
            if n <= 0:
                raise OSError(errno.ENOSPC, f"short write: {done} of {len(data)} bytes written")
            done += n
    except OSError as exc:
        if done and os.fstat(fd).st_size == size_before + done:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size_before)
                done = 0
        if done:  # could not take it back: say so, the loader will skip the torn line
            exc.strerror = f"{exc.strerror or exc}; {done} of {len(data)} bytes of it left as a torn line"
        raise


def check_destination(folder: Path, what: str) -> None:
    """Raise BenchError unless `folder` is a writable folder or can be created as one: checked
    before anything is measured, so an unwritable destination never costs a run."""
    folder = Path(folder)
    if folder.exists():
        if not folder.is_dir():
            raise BenchError(f"{what} {folder}: not a folder")
        if not _writable(folder):
            raise BenchError(f"{what} {folder}: folder is not writable")
        return
    parent = folder.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise BenchError(f"{what} {folder}: cannot be created ({parent} is not a folder)")
    if not _writable(parent):
        raise BenchError(f"{what} {folder}: cannot be created ({parent} is not writable)")


def _writable(folder: Path) -> bool:
    """Permission bits (os.access) and then a real probe: root passes os.access on a read-only
    file system, so an unnamed temporary file is created there and dropped at once."""
    if not os.access(folder, os.W_OK | os.X_OK):
        return False
    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def _finite(obj):
    """JSON has no NaN/Infinity: store them as null so any reader can parse the file."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def result_files(paths: list[Path | str]) -> list[Path]:
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.suffix == ".jsonl" or f.suffix in READERS)
        elif p.is_file():
            files.append(p)
        else:
            raise BenchError(f"no such results file or folder: {p}")
    return files


def read_records(path: Path) -> list[dict]:
    if path.suffix in READERS:
        return READERS[path.suffix](path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise BenchError(f"cannot read results file {path}: {exc}") from None
    lines = text.split("\n")
    records = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            if i == len(lines):  # no trailing newline: a write torn by a kill; earlier lines stand
                warnings.warn(f"{path}:{i}: skipped a torn last line ({TORN})", stacklevel=2)
                continue
            if line.startswith(RECORD_START):  # a torn record that later appends (--resume) followed
                warnings.warn(f"{path}:{i}: skipped a torn record ({TORN})", stacklevel=2)
                continue
            raise BenchError(f"results file {path} line {i}: not valid JSON ({exc.msg})") from None
        except RecursionError:
            raise BenchError(f"results file {path} line {i}: not a ppbench record (JSON nested too deep)") from None
        check_record(rec, f"{path} line {i}")
        records.append(rec)
    return records


def check_record(rec: object, where: str) -> None:
    if not isinstance(rec, dict):
        raise BenchError(f"results file {where}: a record must be a JSON object")
    missing = [k for k in REQUIRED if k not in rec]
    if missing:
        raise BenchError(f"results file {where}: not a ppbench record (missing {', '.join(missing)})")
    if rec["schema_version"] != SCHEMA_VERSION:
        raise BenchError(
            f"results file {where}: schema_version {rec['schema_version']!r} (supported: {SCHEMA_VERSION})"
        )
    if rec["status"] not in STATUSES:
        raise BenchError(f"results file {where}: unknown status {rec['status']!r}; valid: {', '.join(STATUSES)}")
    for k in REQUIRED[4:]:
        if not isinstance(rec[k], dict):
            raise BenchError(f"results file {where}: {k} must be an object")


def load(paths: list[Path | str]) -> pd.DataFrame:
    """All records under `paths` as one frame, one row per record, keys flattened one level."""
    records = []
    for f in result_files(paths):
        for rec in read_records(f):
            rec["source_file"] = str(f)
            records.append(rec)
    if not records:
        return pd.DataFrame()
    return pd.DataFrame([_flatten(rec) for rec in records])


def _flatten(rec: dict) -> dict:
    """A record flattened one level, laid out exactly as `pd.json_normalize(records, max_level=1)`
    lays it out (top-level values first, then each object's keys as `key.sub` in order; an empty
    object gives no column; deeper objects stay dicts), without json_normalize's deep copy of
    every value: copying each record's raw sample lists was two thirds of loading 5,000 records."""
    flat = {k: v for k, v in rec.items() if not isinstance(v, dict)}
    for k, v in rec.items():
        if isinstance(v, dict):
            for sub, value in v.items():
                flat[f"{k}.{sub}"] = value
    return flat


SHOW_COLUMNS = {  # frame column -> table heading
    "run_id": "run",
    "device.backend": "backend",
    "cost.instance": "instance",
    "workload.preset": "preset",
    "workload.scenario": "scenario",
    "workload.batch": "batch",
    "length": "len",
    "workload.dtype": "dtype",
    "workload.compile": "compile",
    "metrics.tokens_per_s": "tokens/s",
    "ci95": "tokens/s 95% CI",
    "latency": "TTFT/TPOT ms",
    "metrics.ceiling_fraction": "ceiling",
    "metrics.mfu": "MFU",
    "metrics.mbu": "MBU",
    "cost.usd_per_million_tokens": "$/1M tok",
    "status": "status",
}


def summary(df: pd.DataFrame) -> pd.DataFrame:
    """The `ppbench show` table: one row per record, display-ready strings."""
    if df.empty:
        return pd.DataFrame(columns=list(SHOW_COLUMNS.values()))
    df = df.copy()

    def col(name: str) -> pd.Series:  # a key no record has is an empty column, not an error
        return df[name] if name in df else pd.Series(float("nan"), index=df.index)

    def ci(row_ci, n):
        if not isinstance(row_ci, list) or len(row_ci) != 2 or not n or not all(row_ci):
            return ""
        return f"{n / row_ci[1]:,.0f}-{n / row_ci[0]:,.0f}"  # a slower step bounds tokens/s from below

    df["length"] = col("workload.seq_len").fillna(col("workload.prompt_len"))
    df["ci95"] = [ci(c, n) for c, n in zip(col("timing.ci95_s"), col("metrics.tokens_per_step"))]
    df["latency"] = col("metrics.ttft_s").fillna(col("metrics.tpot_s")) * 1e3
    out = pd.DataFrame({head: col(name) for name, head in SHOW_COLUMNS.items()})
    out["status"] = [s if s == "ok" else f"{s}: {r}" for s, r in zip(df["status"], col("reason").fillna(""))]
    fmt = {"tokens/s": "{:,.1f}", "TTFT/TPOT ms": "{:.2f}", "ceiling": "{:.1%}", "MFU": "{:.1%}", "MBU": "{:.1%}",
           "$/1M tok": "${:,.3f}", "batch": "{:.0f}", "len": "{:.0f}"}  # fmt: skip
    for head, f in fmt.items():
        out[head] = [f.format(v) if isinstance(v, (int, float)) and v == v else "" for v in out[head]]
    return out.astype(object).where(out.notna(), "").astype(str)
