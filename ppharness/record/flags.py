"""A row's warnings as a short `flags` cell, the same in every table (show, compare, claims, report).

A record keeps its warnings in full (`validity.warnings`: "other processes used 14% of the host's
2 CPUs during the measured window", "noisy: coefficient of variation 12.3% > 10%", ...). A table
has no room for them, so each becomes a code; `legend` says what the codes used mean (a table's
footnote), and `ppbench show --explain` prints every flagged record's warnings in full. A pooled
row (compare, claims) carries the codes of all its records, and `N invalid excluded` when records
of its system and workload were left out (INVALID, or failed).
"""

from __future__ import annotations

from collections.abc import Iterable

OTHER_CPU = "other processes used"  # how the host monitor's findings begin (ppharness/core/guards.py writes them)

# Warnings ppharness/core/ceilings.py and ppharness/run/runner.py write, defined here so reading flags (`show`) never
# imports torch through ppharness.core.ceilings.
UNDER_INTERFERENCE = "ceilings measured under interference"
ABOVE_CEILING = "ceiling_fraction above 1"  # the workload beat the cached ceiling: the ceiling is too low

# warning prefix -> code; first match wins; anything else is a "note"
CODES = [
    (OTHER_CPU, "busy"),
    ("re-measured", "remeasured"),
    ("noisy", "noisy"),
    (UNDER_INTERFERENCE, "ceiling"),
    (ABOVE_CEILING, "ceiling"),
]
MEANING = {
    "busy": "other processes used over 10% of the host's CPU in the measured window",
    "remeasured": "earlier windows were contaminated and measured again; the kept one was clean",
    "noisy": "step times vary more than timing.cov_warn",
    "ceiling": "the ceilings were measured under interference (or the row beat them), so ceiling_fraction may be too high",
    "note": "the backend noted how the step ran (see the record's validity.warnings)",
    "invalid excluded": "records of this system and workload not pooled (INVALID or failed; see Excluded)",
}


def code(warning: str) -> str:
    return next((c for prefix, c in CODES if str(warning).startswith(prefix)), "note")


def codes(warnings: object) -> list[str]:
    """The codes of one record's warnings (a list of strings; anything else: none), unique, in order."""
    if not isinstance(warnings, (list, tuple)):
        return []
    return list(dict.fromkeys(code(w) for w in warnings))


def cell(groups: Iterable[list[str]], excluded: int = 0) -> str:
    """The flags cell of a row made of records with these codes, and `excluded` records left out."""
    found = list(dict.fromkeys(c for group in groups for c in group))
    if excluded:
        found.append(f"{excluded} invalid excluded")
    return " ".join(found)


def legend(cells: Iterable[str]) -> str:
    """What the codes used in these cells mean ("" when none is used)."""
    text = " ".join(cells)
    used = [c for c in MEANING if c in text.split() or (c == "invalid excluded" and c in text)]
    return "flags: " + "; ".join(f"{c} = {MEANING[c]}" for c in used) if used else ""


def with_legend(frame, note: str | None = None):
    """`frame` with the legend of its flags in its footnote (frame.attrs["note"]), if any is set."""
    text = legend(frame["flags"].astype(str)) if "flags" in frame.columns else ""
    if text:
        frame.attrs["note"] = " ".join(filter(None, [frame.attrs.get("note"), note, text]))
    return frame
