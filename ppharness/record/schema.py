"""What a result record must hold (DESIGN.md, "The result record, by key"): the schema version,
the required objects, the statuses, and the check every loaded record passes."""

from __future__ import annotations

from ppharness.errors import BenchError

SCHEMA_VERSION = 1


REQUIRED = ("schema_version", "run_id", "created_at", "status", "device", "workload", "timing", "metrics", "cost")


STATUSES = ("ok", "invalid", "oom", "compile_error", "error")


RECORD_START = '{"schema_version":'  # how every line ResultWriter writes begins (json.dumps keeps key order)


# What a torn line tells: its write was cut short. ppbench's writer fails the run when a write
# comes up short, so a torn line comes from a process killed mid-write, a full disk under an older
# writer, or another program; the loader cannot tell which.
TORN = "an incomplete record, its write cut short: a killed run, a full disk or another writer"


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
