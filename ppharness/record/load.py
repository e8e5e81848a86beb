"""Loading result records into one pandas DataFrame: `load` turns any number of files or folders
into one frame, flattened one level (`metrics.tokens_per_s`); every table and figure is rendered
from that frame. A torn last line (a killed writer) is skipped with a warning; anything else that
is not a record is one BenchError line."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path

import pandas as pd

from ppharness.errors import MAX_RECORD_BYTES, MAX_RESULTS_BYTES, BenchError, read_bounded, size_words
from ppharness.record.schema import RECORD_START, TORN, check_record

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
    text = read_bounded(path, "results file", MAX_RESULTS_BYTES)  # one line, exit 2 beyond the bound
    lines = text.split("\n")
    records = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if len(line) > MAX_RECORD_BYTES:  # characters: at least as many bytes
            raise BenchError(f"results file {path} line {i}: longer than {size_words(MAX_RECORD_BYTES)}; not a record")
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


def load(paths: list[Path | str], readers: Readers | None = None) -> pd.DataFrame:
    """All records under `paths` as one frame, one row per record, keys flattened one level. More
    than MAX_RESULTS_BYTES of files together is refused before any is read (ppharness/errors.py)."""
    records = []
    files = result_files(paths, readers)
    total = sum(f.stat().st_size for f in files)
    if total > MAX_RESULTS_BYTES:
        raise BenchError(
            f"{len(files)} results file(s) hold {size_words(total)}, more than the {size_words(MAX_RESULTS_BYTES)} "
            "ppbench reads at once (about 30,000 records); pass fewer files or folders"
        )
    for f in files:
        for rec in read_records(f, readers):
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
