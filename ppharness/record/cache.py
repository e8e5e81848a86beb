"""A derived cache of JSONL results files, so `show` and `compare` on thousands of records do not
parse every line again.

The JSONL files stay the record of truth. Each file read by `load` (ppharness/record/load.py) with
raw samples as arrays or left out gets one entry here, in the cache folder (`$PPBENCH_CACHE_DIR`
or `~/.cache/ppbench`, `records/`; never beside the results): its records flattened, without their
raw sample lists, as orjson text, and those lists as one float64 array with offsets (the columns
`compare` reads), in one file of the layout below (no pickle). An entry is used only when the
file's size, mtime and SHA-256 are those it was built from, checked on every read; a file that
changed (appended to, edited, replaced) is read again and its entry rebuilt. Only a file whose
every line was a whole record orjson read is cached, so an entry gives back exactly what reading
the file gives (a torn line's warning, a NaN the standard library read: such a file is read each
time). An entry that cannot be read is a miss; one that cannot be written is said once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ppharness import paths

try:  # a dependency (pyproject.toml); without it nothing is cached (load.py reads every file)
    import orjson
except ImportError:
    orjson = None

VERSION = 1  # bump when an entry's layout or what `load` makes of a record changes
# The raw sample lists of a flattened record: most of its bytes, and read by compare's CIs alone.
SAMPLE_COLUMNS = ("timing.samples_s", "timing.host_samples_s")
MAX_BYTES = 2**30  # past this, the least recently used entries go (an entry is about a results file's size)
SUFFIX = ".records"
_SAID: set[str] = set()


def folder() -> Path:
    return paths.cache_dir() / "records"


def _entry_path(path: Path) -> Path:
    return folder() / (hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:32] + SUFFIX)


def _key(path: Path, data: bytes, stat: os.stat_result) -> dict:
    """What an entry must match, the hash aside (computed only when the rest matches)."""
    return {"version": VERSION, "path": str(path.resolve()), "size": len(data), "mtime_ns": stat.st_mtime_ns}


@dataclass
class Entry:
    """One file's cached records: flattened rows (raw samples as placeholders) and, when asked
    for, the samples: per column (has a list, values, offsets)."""

    rows_json: bytes
    samples: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]

    def rows(self, source_file: str, samples: str | None) -> list[dict]:
        """The rows as `load` gives them: `source_file` set, raw samples as arrays or left out."""
        rows = orjson.loads(self.rows_json)
        for row in rows:
            row["source_file"] = source_file
            if samples is None:
                for name in SAMPLE_COLUMNS:
                    row.pop(name, None)
        for name, (has, values, offsets) in self.samples.items():
            for i in np.flatnonzero(has):
                rows[i][name] = values[offsets[i] : offsets[i + 1]]  # a view: one array holds the file's
        return rows


# An entry: MAGIC, the header's length (8 bytes, little-endian), the header (JSON: the key, the
# SHA-256, and each part's offset, length and dtype after the header), then the parts: the rows
# (orjson text) and per sample column its `has`, `values` and `offsets` arrays. No pickle.
MAGIC = b"PPBRC\x00\x00\x01"
_DTYPES = {"u1": "u1", "i1": "i1", "i8": "<i8", "f8": "<f8"}  # little-endian, as written


def lookup(path: Path, data: bytes, stat: os.stat_result, samples: bool = True) -> Entry | None:
    """The entry of `path` if it was built from exactly `data` (same size, mtime and SHA-256);
    `samples=False` reads no sample part."""
    if orjson is None:
        return None
    try:
        with _entry_path(path).open("rb") as f:
            own = os.fstat(f.fileno())
            if own.st_uid != os.getuid() or own.st_mode & 0o022:
                return None  # written by someone else, or writable by others: not ours to trust
            head = f.read(16)
            if len(head) != 16 or head[:8] != MAGIC:
                return None
            header = json.loads(f.read(int.from_bytes(head[8:], "little")))
            if {k: header.get(k) for k in ("version", "path", "size", "mtime_ns")} != _key(path, data, stat):
                return None
            if header.get("sha256") != hashlib.sha256(data).hexdigest():
                return None
            start, parts = f.tell(), header["parts"]

            def part(name: str) -> bytes:
                offset, length, _ = parts[name]
                f.seek(start + offset)
                blob = f.read(length)
                if len(blob) != length:
                    raise ValueError(f"entry part {name} cut short")
                return blob

            def array(name: str) -> np.ndarray:  # writable, as the arrays of a file read afresh are
                return np.frombuffer(bytearray(part(name)), dtype=_DTYPES[parts[name][2]])

            names = SAMPLE_COLUMNS if samples else ()
            hit = Entry(
                part("rows"), {n: tuple(array(f"{n}.{k}") for k in ("has", "values", "offsets")) for n in names}
            )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):  # missing or damaged: a miss
        return None
    with contextlib.suppress(OSError):
        os.utime(_entry_path(path))  # recently used: pruned last
    return hit


def store(path: Path, data: bytes, stat: os.stat_result, rows: list[dict]) -> None:
    """Keep `rows` (the flattened records read from `data`, `path`'s bytes) as `path`'s entry;
    a file with raw samples that are not lists of numbers is not cached (it is read each time)."""
    if orjson is None:
        return
    kept = [{**row, "source_file": ""} for row in rows]
    arrays: dict[str, np.ndarray] = {}
    for name in SAMPLE_COLUMNS:
        has, chunks = np.zeros(len(kept), dtype=np.int8), []
        for i, row in enumerate(kept):
            if isinstance(row.get(name), list):
                try:
                    values = np.asarray(row[name], dtype=np.float64)
                except (TypeError, ValueError, OverflowError):
                    return
                if values.ndim != 1:
                    return
                has[i], row[name] = 1, None
                chunks.append(values)
        sizes = np.zeros(len(kept), dtype=np.int64)
        sizes[has == 1] = [c.size for c in chunks]
        arrays[f"{name}.has"] = has
        arrays[f"{name}.values"] = np.concatenate(chunks) if chunks else np.empty(0)
        arrays[f"{name}.offsets"] = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)  # i: [o[i], o[i+1])
    try:
        blobs = {"rows": (orjson.dumps(kept), "u1")}
    except TypeError:
        return
    blobs.update({k: (a.astype(a.dtype.newbyteorder("<")).tobytes(), a.dtype.str[1:]) for k, a in arrays.items()})
    parts, offset = {}, 0
    for name, (blob, dtype) in blobs.items():
        parts[name], offset = [offset, len(blob), dtype], offset + len(blob)
    header = json.dumps({**_key(path, data, stat), "sha256": hashlib.sha256(data).hexdigest(), "parts": parts}).encode()
    _write(_entry_path(path), [MAGIC, len(header).to_bytes(8, "little"), header, *(b for b, _ in blobs.values())])


def _write(entry: Path, chunks: list[bytes]) -> None:
    """Write an entry atomically (readers never see a torn one), then prune; a cache that cannot
    be written is said once and costs nothing but speed."""
    tmp = None
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=entry.parent, suffix=".tmp", delete=False) as f:  # mode 0600
            tmp = Path(f.name)
            f.writelines(chunks)
        tmp.replace(entry)
        tmp = None
        _prune(entry.parent)
    except OSError as exc:
        if tmp is not None:
            with contextlib.suppress(OSError):
                tmp.unlink()
        message = f"results cache {entry.parent} cannot be written ({exc.strerror or exc}): reading without it"
        if message not in _SAID:
            _SAID.add(message)
            warnings.warn(message, stacklevel=4)


def _prune(where: Path, limit: int = MAX_BYTES) -> None:
    """Remove the least recently used entries while the folder holds more than `limit` bytes."""
    entries = [(e.stat(), e) for e in where.glob(f"*{SUFFIX}")]
    total = sum(st.st_size for st, _ in entries)
    for st, e in sorted(entries, key=lambda x: x[0].st_mtime_ns):
        if total <= limit:
            break
        with contextlib.suppress(OSError):
            e.unlink()
            total -= st.st_size
