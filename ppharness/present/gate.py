"""The regression gate's output: a terminal table, the verdict lines, and a markdown summary for a
CI job's summary page (GitHub's `$GITHUB_STEP_SUMMARY`). The figures come from
ppharness.judge.gate; every string from a results file goes through textsafe."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from ppharness.judge.gate import GATE_FAILED, Case, Gate
from ppharness.present import textsafe
from ppharness.record import flags
from ppharness.record.writer import check_file_destination


def _seconds(s: float) -> str:
    if not math.isfinite(s):
        return "-"
    return f"{s * 1e6:.1f} us" if s < 1e-3 else f"{s * 1e3:.2f} ms" if s < 1 else f"{s:.2f} s"


def _pct(x: float) -> str:
    return f"{x:+.1%}" if math.isfinite(x) else "?"


def change(c: Case) -> str:
    """`+212.0% [+180.3%, +250.1%]`: the step time's change with its CI (none: `no CI`)."""
    ci = f" [{_pct(c.lo)}, {_pct(c.hi)}]" if math.isfinite(c.lo) and math.isfinite(c.hi) else " (no CI)"
    return _pct(c.change) + ci


def title(g: Gate, base: str, new: str) -> str:
    rule = f"fail if slower by more than {g.threshold:.0%}" if g.enforced else "report only (no --fail-if-slower)"
    return f"Regression gate: {new} against {base}; {rule}, {g.confidence:.0%} confidence"


def frame(g: Gate) -> pd.DataFrame:
    """One display row per compared case, failing cases first."""
    rows = [
        {
            "verdict": c.verdict.upper() if c.verdict == "slower" and g.enforced else c.verdict,
            "case": c.label,
            "runs base/new": f"{c.base_runs}/{c.new_runs}",
            "base step": _seconds(c.base_s),
            "new step": _seconds(c.new_s),
            f"step time change [{g.confidence:.0%} CI]": change(c),
            "compared": c.pairing,
            "why": c.note,
            "flags": flags.cell([c.flags]),
        }
        for c in g.cases
    ]
    out = pd.DataFrame(rows)
    # At 80-120 columns the long explanations go under the table as numbered notes, cases that
    # share one share its number ("unpaired [1]"); --wide keeps them in their cells.
    out.attrs["notes"] = {"compared": ": ", "why": ": "}
    out.attrs["keep"] = ("verdict", "case")  # a verdict shared by every row is still read per row
    out.attrs["optional"] = ("compared", "runs base/new", "base step", "new step")  # left out first
    out.attrs["wrap"] = (f"step time change [{g.confidence:.0%} CI]",)  # at 80 columns: its CI under it
    return out


def lines(g: Gate) -> list[str]:
    """What the gate decided, one line each: the outcome, then each failing case with its change."""
    counts = ", ".join(f"{g.count(v)} {v}" for v in ("slower", "inconclusive", "within", "faster") if g.count(v))
    if g.failed:
        head = [
            f"FAILED (exit {GATE_FAILED}): {len(g.slower)} case(s) slower by more than {g.threshold:.0%} "
            f"at {g.confidence:.0%} confidence ({counts})"
        ]
        return head + [f"  {c.label}: step time {change(c)}" for c in g.slower]
    if not g.enforced:
        return [f"report only: {len(g.cases)} case(s) compared ({counts})"]
    return [f"passed: no case slower by more than {g.threshold:.0%} at {g.confidence:.0%} confidence ({counts})"]


def markdown(g: Gate, base: str, new: str) -> str:
    """The summary for a CI job's page: outcome, the cases, what was not compared, the method."""
    md = textsafe.markdown
    outcome = "FAILED" if g.failed else "passed" if g.enforced else "report only"
    out = [f"## ppbench regression gate: {outcome}", ""]
    out += [f"{md(new)} against {md(base)}. " + md(lines(g)[0]), ""]
    out += ["| verdict | case | runs base/new | base step | new step | step time change [CI] | compared | why |"]
    out += ["|---|---|---|---|---|---|---|---|"]
    for c in g.cases:
        verdict = f"**{c.verdict.upper()}**" if c.verdict == "slower" and g.enforced else c.verdict
        cells = [c.label, f"{c.base_runs}/{c.new_runs}", _seconds(c.base_s), _seconds(c.new_s), change(c), c.pairing]
        cells.append(c.note)
        out.append("| " + " | ".join([verdict, *(md(x) for x in cells)]) + " |")
    if g.not_compared:
        out += ["", "Not compared (never failed):", ""]
        out += [f"- {md(case)}: {md(why)}" for case, why in g.not_compared]
    out += [
        "",
        f"A case fails when the whole {g.confidence:.0%} bootstrap CI of its step time change lies above "
        f"+{g.threshold:.0%} and its runs show it too (a sign test on pairs, a rank test on unpaired runs); "
        "`inconclusive` is listed, not failed. Runs measured in turn (A B, B A, ...) are compared in pairs, "
        "so drift of the host between pairs cancels.",
        "",
    ]
    return "\n".join(out)


def check_summary(path: Path) -> None:
    """Raise BenchError unless the summary can be appended to `path` (a file in a writable folder)."""
    check_file_destination(path, f"--summary {path}:")


def append_summary(path: Path, text: str) -> None:
    """Append, as GitHub's job summary expects (earlier steps' text stays); OSError on failure."""
    with Path(path).open("a", encoding="utf-8") as f:
        f.write(text + "\n")
