"""Loading result records into one pandas DataFrame: `load` turns any number of files or folders
into one frame, flattened one level (`metrics.tokens_per_s`); every table and figure is rendered
from that frame. A torn last line (a killed writer) is skipped with a warning; anything else that
is not a record is one BenchError line."""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from ppharness.errors import MAX_RECORD_BYTES, MAX_RESULTS_BYTES, BenchError, size_words
from ppharness.record import cache
from ppharness.record.schema import RECORD_START, TORN, check_record

try:  # a dependency (pyproject.toml): parses results 3-4x faster than the standard library
    import orjson
except ImportError:  # a platform without its wheel: the standard library reads every record alike, slower
    orjson = None

SAMPLES = ("lists", "arrays", None)  # how `load` gives the raw samples (cache.SAMPLE_COLUMNS)

# A reader turns a file of another format into records: suffix -> reader(path) -> [record]. The
# record floor knows none; a caller that accepts other files passes its own (the CLI passes the
# kernels' pytest-benchmark JSON reader, ppharness/kernels/pbjson.py).
Readers = Mapping[str, Callable[[Path], list[dict]]]


def result_files(paths: list[Path | str], readers: Readers | None = None) -> list[Path]:
    """The record files under `paths`: JSONL, and files of a suffix `readers` knows."""
    readers = readers or {}
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.suffix == ".jsonl" or f.suffix in readers)
        elif p.is_file():
            files.append(p)
        else:
            raise BenchError(f"no such results file or folder: {p}")
    return files


def read_records(path: Path, readers: Readers | None = None) -> list[dict]:
    """Every record of one file: JSONL, or through the reader `readers` names for its suffix."""
    if readers and path.suffix in readers:
        return readers[path.suffix](path)
    return _records(_read(path)[0], path)[0]


def _read(path: Path) -> tuple[bytes, os.stat_result]:
    """A results file's bytes and its stat from before they were read (a cache key: cache.py)."""
    try:
        with path.open("rb") as f:
            data, stat = f.read(MAX_RESULTS_BYTES + 1), os.fstat(f.fileno())  # bounded: a FIFO or device too
    except OSError as exc:
        raise BenchError(f"cannot read results file {path}: {exc}") from None
    if len(data) > MAX_RESULTS_BYTES:
        raise BenchError(
            f"results file {path} is larger than {size_words(MAX_RESULTS_BYTES)}, the most ppbench reads from one"
        )
    return data, stat


def _records(data: bytes, path: Path | str) -> tuple[list[dict], bool]:
    """The records of one JSONL file's bytes, and whether every line was a whole record that
    orjson read (so the records are exactly what orjson writes back: cache.py may keep them)."""
    try:
        text = data.decode()
    except UnicodeDecodeError as exc:
        raise BenchError(f"cannot read results file {path}: {exc}") from None
    if "\r" in text:  # as text mode reads a file: \r\n and a lone \r end a line
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = text.split("\n")
    records, clean = [], orjson is not None
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if len(line) > MAX_RECORD_BYTES:  # characters: at least as many bytes
            raise BenchError(f"results file {path} line {i}: longer than {size_words(MAX_RECORD_BYTES)}; not a record")
        try:
            rec, fast = _decode(line)
        except json.JSONDecodeError as exc:
            clean = False
            if i == len(lines):  # no trailing newline: a write torn by a kill; earlier lines stand
                warnings.warn(f"{path}:{i}: skipped a torn last line ({TORN})", stacklevel=3)
                continue
            if line.startswith(RECORD_START):  # a torn record that later appends (--resume) followed
                warnings.warn(f"{path}:{i}: skipped a torn record ({TORN})", stacklevel=3)
                continue
            raise BenchError(f"results file {path} line {i}: not valid JSON ({exc.msg})") from None
        except RecursionError:
            raise BenchError(f"results file {path} line {i}: not a ppbench record (JSON nested too deep)") from None
        check_record(rec, f"{path} line {i}")
        records.append(rec)
        clean = clean and fast
    return records, clean


def _decode(line: str) -> tuple[object, bool]:
    """One line's JSON value, and whether orjson read it. orjson first where it is installed; a
    line it refuses (NaN or Infinity, which Python's json writes by default, a lone surrogate,
    nesting past 1,024) goes to the standard library, which decides and words the error as it
    always did. One difference stays: an integer beyond 64 bits, which no ppbench field holds, is
    read by orjson as a float."""
    if orjson is not None:
        try:
            return orjson.loads(line), True
        except orjson.JSONDecodeError:
            pass
    return json.loads(line), False


def load(paths: list[Path | str], readers: Readers | None = None, samples: str | None = "lists") -> pd.DataFrame:
    """All records under `paths` as one frame, one row per record, keys flattened one level.

    The raw sample lists (RAW_SAMPLES of `timing`) are most of a record's bytes, and compare's CIs
    alone read them: `samples="lists"` keeps them as written, `"arrays"` as float64 arrays (a
    quarter of the lists' memory; a list that is not all numbers stays a list), and None leaves
    them out, so memory holds the summaries only. With "arrays" or None a JSONL file's records
    come from the derived cache (ppharness/record/cache.py) when it holds this file's exact
    bytes, and go into it when not; "lists" (every value as written) always reads the file."""
    if samples not in SAMPLES:
        raise ValueError(f"samples must be one of {SAMPLES}, got {samples!r}")
    rows = []
    files = result_files(paths, readers)
    _check_total([f.stat().st_size for f in files])
    for f in files:
        if readers and f.suffix in readers:
            rows += [_with_samples(_flatten({**rec, "source_file": str(f)}), samples) for rec in readers[f.suffix](f)]
        else:
            rows += _file_rows(f, samples)
    return pd.DataFrame(rows) if rows else pd.DataFrame()


def _check_total(sizes: list[int]) -> None:
    """More than MAX_RESULTS_BYTES of results together is refused before any is read: loaded, a
    record takes several times its bytes in memory (ppharness/errors.py)."""
    total = sum(sizes)
    if total > MAX_RESULTS_BYTES:
        raise BenchError(
            f"{len(sizes)} results file(s) hold {size_words(total)}, more than the {size_words(MAX_RESULTS_BYTES)} "
            "ppbench reads at once (about 30,000 records); pass fewer files or folders"
        )


def load_bytes(named: list[tuple[str, bytes]], samples: str | None = "lists") -> pd.DataFrame:
    """Records from JSONL contents that are not files here (a git revision's: gitref.py), each
    named for messages and `source_file`, as `load` lays them out; never cached."""
    if samples not in SAMPLES:
        raise ValueError(f"samples must be one of {SAMPLES}, got {samples!r}")
    rows = []
    _check_total([len(data) for _, data in named])
    for name, data in named:
        rows += [_with_samples(_flatten({**rec, "source_file": name}), samples) for rec in _records(data, name)[0]]
    return pd.DataFrame(rows) if rows else pd.DataFrame()


def _file_rows(path: Path, samples: str | None) -> list[dict]:
    """One JSONL file's records, flattened, with `source_file` and raw samples as `load` asks."""
    data, stat = _read(path)
    if samples != "lists":
        hit = cache.lookup(path, data, stat, samples=samples is not None)
        if hit is not None:
            return hit.rows(str(path), samples)
    records, clean = _records(data, path)
    rows = [_flatten({**rec, "source_file": str(path)}) for rec in records]
    if samples != "lists" and clean:
        cache.store(path, data, stat, rows)
    return [_with_samples(row, samples) for row in rows]


def _with_samples(row: dict, samples: str | None) -> dict:
    """A flattened record with its raw sample lists as `load`'s `samples` asks (in place)."""
    if samples == "lists":
        return row
    for name in cache.SAMPLE_COLUMNS:
        if name not in row:
            continue
        if samples is None:
            del row[name]
        elif isinstance(row[name], list):
            try:
                row[name] = np.asarray(row[name], dtype=float)
            except (TypeError, ValueError, OverflowError):
                pass  # not a list of numbers: left as written, for compare to exclude with its reason
    return row


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
