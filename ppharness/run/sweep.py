"""`batch: auto`: find a scenario's batch size by measurement.

A run file may give `batch: auto` for a scenario instead of a number or a list. The runner then
measures batch 1, 2, 4, ... (doubling) and stops at the first of:

- a case that did not measure (out of memory, compile error, any error): that row is recorded
  with its status, and its memory released by the runner, before the run moves on;
- tokens/s that no longer rises by more than MIN_GAIN (2%) over the best so far: a bigger batch
  only adds latency and memory;
- MAX_BATCH, a guard for devices that never run out of memory in reasonable time;
- a next batch the memory plan says the host cannot hold, on a backend whose memory is the
  host's (the CPU would swap or be killed rather than fail with an out-of-memory error):
  `fits(case)` gives why (ppharness/run/memplan.py host_refusal).

Every measured point is a normal record, marked `workload.batch_auto = true`; the last one
carries `workload.batch_auto_stop`, why the sweep stopped. Nothing here touches a device: the
caller's `measure(case) -> record` does, so the logic is tested with a fake throughput curve.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator

from ppharness.core.scenarios import Case

AUTO = "auto"  # the only non-integer value a run file may give for `batch`
START_BATCH = 1
MAX_BATCH = 4096
MIN_GAIN = 0.02  # keep doubling only while tokens/s rises by more than 2% over the best so far

Measure = Callable[[Case], dict]
Fits = Callable[[Case], "str | None"]  # why a case cannot fit, or None


def is_auto(scenarios: dict[str, dict], case: Case) -> bool:
    """True when `case` is the first point of an auto batch sweep (see ppharness.run.config.expand)."""
    return scenarios.get(case.scenario, {}).get("batch") == AUTO


def auto_batches(
    first: Case, measure: Measure, max_batch: int = MAX_BATCH, min_gain: float = MIN_GAIN, fits: Fits | None = None
) -> Iterator[tuple[Case, dict]]:
    """Measure `first` at batch 1, 2, 4, ... and yield each (case, record) as it is measured,
    so the caller writes it before the next, larger, batch is tried."""
    best: float | None = None
    batch = first.batch
    while True:
        case = dataclasses.replace(first, batch=batch)
        record = measure(case)
        stop = _stop_reason(record, batch, best, max_batch, min_gain)
        if stop is None and fits is not None and (why := fits(dataclasses.replace(first, batch=batch * 2))):
            stop = f"batch {batch * 2} would not fit: {why}"
        tokens_per_s = (record.get("metrics") or {}).get("tokens_per_s")
        if tokens_per_s is not None:
            best = tokens_per_s if best is None else max(best, tokens_per_s)
        workload = record.setdefault("workload", {})
        workload["batch_auto"] = True
        workload["batch_auto_stop"] = stop
        yield case, record
        if stop is not None:
            return
        batch *= 2


def _stop_reason(record: dict, batch: int, best: float | None, max_batch: int, min_gain: float) -> str | None:
    status = record.get("status")
    if status not in ("ok", "invalid"):
        return f"{status} at batch {batch}"
    tokens_per_s = (record.get("metrics") or {}).get("tokens_per_s")
    if tokens_per_s is None:
        return f"no tokens/s at batch {batch}"
    if best is not None and tokens_per_s <= best * (1 + min_gain):
        gain = tokens_per_s / best - 1
        return f"tokens/s gain {gain:+.1%} at batch {batch} is not above {min_gain:.0%}"
    if batch * 2 > max_batch:
        return f"reached the maximum batch {max_batch}"
    return None
