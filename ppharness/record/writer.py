"""Writing the result record: append-only JSONL, one complete line per record or a loud error.

One JSON object per measured case (DESIGN.md, "The result record, by key"). Each record is
written with a single O_APPEND write, then flushed and fsynced, so a run killed at any moment
keeps every finished case and concurrent writers never interleave within a line. A record that
cannot be written whole (a full disk) raises WriteError: the run fails instead of losing it.
Reading them back is ppharness/record/load.py's; what a record must hold, schema.py's.
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
from pathlib import Path

from ppharness.errors import BenchError, WriteError


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


def check_file_destination(path: Path, what: str, folder_hint: str = "") -> None:
    """Raise BenchError unless the file `path` can be written: not a folder, not some other kind of
    file, in a folder that exists and is writable. `what` opens each message ("--summary x:")."""
    path = Path(path)
    if path.is_dir():
        raise BenchError(f"{what} it is a folder; name a file{folder_hint}")
    if path.exists() and not path.is_file():
        raise BenchError(f"{what} it exists and is not a regular file")
    if not path.parent.is_dir():
        raise BenchError(f"{what} folder {path.parent} does not exist")
    check_destination(path.parent, what)


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
