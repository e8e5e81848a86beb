"""Tables that fit the terminal they are printed in: 80 to 120 columns, no cell ever broken.

A display frame (strings, one row per record or case) is laid out for a width before it is
printed (`fit`):
- a column that holds one value in every row (two rows or more) moves into the title line
  ("all rows: backend cpu, dtype float32"); a column empty in every row is left out; a column
  named in `attrs["shared_head"]` (column -> separator, name) whose cells all start with the same
  part moves that part to the title ("instance c7a.large", cells "cpu/-/none");
- a cell is never broken inside a word or a number: a column is at least as wide as its widest
  cell, except prose (a column with a cell of four words or more, unless the frame names it in
  `attrs["no_wrap"]`), which wraps at spaces only and is never narrower than its longest word; a
  column the frame names in `attrs["wrap"]` stays whole while an optional column can be hidden,
  then wraps at spaces too; a heading wraps at its spaces (`attrs["keep"]`: columns never moved
  to the title);
- a status's reason ("invalid: other processes used ...", a column named in `attrs["notes"]`)
  becomes a numbered note under the table, so a long reason never makes a tall, narrow column;
- when the columns still do not fit, those the frame names in `attrs["optional"]` are hidden, in
  that order, and the caption says which (`--wide` shows them).
`wide` keeps every column and every cell whole on one line, however long the lines become.

Where the output goes decides the width (`width`): $COLUMNS when set, else the terminal's, else
DEFAULT_WIDTH for a file, a pipe or a CI log. The claims view is a block per claim (`claim_blocks`:
the verdicts first, then the figure that decides it and the break-even), or one line per claim
(`claim_lines`, the end of `make bench`); `--wide` gives the nine-column table.
"""

from __future__ import annotations

import math
import os
import textwrap
from dataclasses import dataclass, field

import pandas as pd
from rich import box
from rich.cells import cell_len
from rich.table import Table
from rich.text import Text

from ppharness.judge.claims import ClaimResult
from ppharness.present import report, textsafe
from ppharness.record import flags

DEFAULT_WIDTH = 120  # a file, a pipe, a CI log: wide enough for the tables, narrow enough to read
MIN_WIDTH = 40
GAP = 2  # between two columns: one space of padding and the (blank) divider
PROSE_WORDS = 4  # a cell of this many words or more is prose: its column may wrap at spaces


def width(is_terminal: bool, terminal_columns: int) -> int:
    """The width to lay tables out for: $COLUMNS (a number of at least MIN_WIDTH) when set, else
    the terminal's own, else DEFAULT_WIDTH (output to a file or a pipe)."""
    env = os.environ.get("COLUMNS", "").strip()
    if env.isdigit() and int(env) >= MIN_WIDTH:
        return int(env)
    if is_terminal and terminal_columns >= MIN_WIDTH:
        return terminal_columns
    return DEFAULT_WIDTH


@dataclass
class Layout:
    """A frame laid out for one width: the columns shown, each column's width, the title with the
    columns every row shares, and the caption (the frame's note, the columns hidden)."""

    frame: pd.DataFrame  # the shown columns, cells one line each
    title: str
    note: str
    widths: list[int]
    hidden: list[str] = field(default_factory=list)
    columns: int = 0  # the width laid out for
    notes: list[str] = field(default_factory=list)  # "[1] why": a status's reason, under the table

    @property
    def hidden_note(self) -> str:
        if not self.hidden:
            return ""
        return f"not shown at {self.columns} columns: {', '.join(self.hidden)} (--wide shows every column)"

    @property
    def total(self) -> int:
        return sum(self.widths) + GAP * max(len(self.widths) - 1, 0)


def _words(text: str) -> list[str]:
    return text.split() or [""]


def _measure(header: str, cells: list[str]) -> tuple[int, int]:
    """(narrowest, natural) width of a column: the longest word of its cells and heading (it
    wraps at spaces only), and its widest cell or heading."""
    natural = max([cell_len(header), *(cell_len(c) for c in cells)])
    return max(cell_len(w) for text in (header, *cells) for w in _words(text)), natural


def _prose(cells: list[str]) -> bool:
    return any(c.count(" ") >= PROSE_WORDS - 1 for c in cells)


def _notes(cells: dict[str, list[str]], columns: dict[str, str]) -> list[str]:
    """Moves the tail of each cell of `columns` (column -> separator: "invalid: <reason>") into a
    numbered note, leaving "invalid [1]" in the cell; cells with the same tail share a number."""
    notes: list[str] = []
    for col, sep in columns.items():
        for i, text in enumerate(cells.get(col, [])):
            head, found, tail = text.partition(sep)
            if not found or not tail.strip():
                continue
            if tail not in notes:
                notes.append(tail)
            cells[col][i] = f"{head} [{notes.index(tail) + 1}]"
    return [f"[{i}] {text}" for i, text in enumerate(notes, 1)]


def _distribute(mins: list[int], naturals: list[int], room: int) -> list[int]:
    """Widths from the narrowest up: the room left goes to the columns that want more, the one
    short of its natural width by least first, so as many columns as possible are whole."""
    widths = list(mins)
    spare = room - sum(widths)
    for i in sorted(range(len(widths)), key=lambda i: naturals[i] - mins[i]):
        give = min(spare, naturals[i] - widths[i])
        widths[i] += give
        spare -= give
    return widths


def _fold(frame: pd.DataFrame, cells: dict[str, list[str]], title: str) -> tuple[list[str], str]:
    """The columns left after those empty in every row are dropped and those holding one value in
    every row (of two or more) move into the title; and that title."""
    shown, shared, keep = list(cells), [], set(frame.attrs.get("keep", ()))
    for c, (sep, name) in frame.attrs.get("shared_head", {}).items():  # "c7a.large/cpu/-/none" -> "cpu/-/none"
        heads = {v.partition(sep)[0] if sep in v else None for v in cells.get(c, [])}
        if len(frame) > 1 and len(heads) == 1 and None not in heads:
            (head,) = heads
            cells[c] = [v[len(head) + len(sep) :] for v in cells[c]]
            shared.append(f"{name} {head}")
    for c in [c for c in shown if c not in keep]:
        values = set(cells[c])
        if values == {""}:
            shown.remove(c)
        elif len(frame) > 1 and len(values) == 1:
            shown.remove(c)
            shared.append(f"{c} {next(iter(values))}")
    if shared:
        title = f"{title} (all rows: {', '.join(shared)})" if title else f"all rows: {', '.join(shared)}"
    return shown, title


def fit(frame: pd.DataFrame, title: str, columns: int, wide: bool = False) -> Layout:
    """`frame` laid out for `columns` (module docstring); `wide`: every column, cells whole."""
    note = textsafe.line(frame.attrs.get("note") or "")
    title = textsafe.line(title or "")
    original = {str(c): [textsafe.line(v) for v in frame[c]] for c in frame.columns}
    cells = {c: list(v) for c, v in original.items()}
    noted = frame.attrs.get("notes", {})
    notes = [] if wide else _notes(cells, noted)
    shown, title = (list(cells), title) if wide else _fold(frame, cells, title)
    keep_whole, wraps = set(frame.attrs.get("no_wrap", ())), set(frame.attrs.get("wrap", ()))
    # Three widths per column: its natural one (widest cell or heading); the narrowest it takes
    # while an optional column can still be hidden (prose at its longest word, other columns
    # whole, headings wrapped); the narrowest it ever takes (`wrap` columns at their longest word).
    naturals, soft, hard = {}, {}, {}

    def measure(cols: list[str]) -> None:
        for c in cols:
            words, naturals[c] = _measure(c, cells[c])
            whole = max([*(cell_len(w) for w in _words(c)), *(cell_len(v) for v in cells[c])])
            prose = c not in keep_whole and c not in wraps and _prose(cells[c])
            soft[c] = words if prose else whole
            hard[c] = words if prose or (c in wraps and c not in keep_whole) else whole

    measure(shown)
    room = lambda cols: columns - GAP * max(len(cols) - 1, 0)  # noqa: E731
    fits = lambda cols, size: sum(size[c] for c in cols) <= room(cols)  # noqa: E731
    order, hidden = list(shown), []
    for c in [c for c in frame.attrs.get("optional", ()) if c in shown] if not wide else []:
        if fits(shown, soft):
            break
        shown.remove(c)
        hidden.append(c)
    for c in reversed(list(hidden)):  # one hidden late may leave room for one hidden early, whole
        again = [x for x in order if x in shown or x == c]
        if fits(again, {**soft, c: naturals[c]}):
            shown, hidden = again, [x for x in hidden if x != c]
    if any(c in noted for c in hidden):  # number only the notes of the columns shown
        cells = {c: list(v) for c, v in original.items()}
        notes = _notes(cells, {c: sep for c, sep in noted.items() if c in shown})
        measure(shown)
    if wide or fits(shown, naturals):
        widths = [naturals[c] for c in shown]
    else:
        mins = [(soft if fits(shown, soft) else hard)[c] for c in shown]
        widths = _distribute(mins, [naturals[c] for c in shown], max(room(shown), sum(mins)))
    out = pd.DataFrame({c: cells[c] for c in shown}, columns=shown)
    return Layout(out, title, note, widths, hidden, columns, notes)


def table(layout: Layout) -> Table:
    """The laid-out frame as a rich table; every cell is Text (data, never markup)."""
    grid = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1, 0, 0), show_header=True)
    for col, w in zip(layout.frame.columns, layout.widths):
        grid.add_column(Text(col), width=w, no_wrap=False, overflow="fold")
    for row in layout.frame.itertuples(index=False):
        grid.add_row(*(Text(v) for v in row))
    return grid


def plain(layout: Layout) -> str:
    """The laid-out frame as aligned text, one line per row, no wrapping: the fast path for long
    tables (ppharness.cli.PLAIN_ROWS), where rich's measuring of every cell costs seconds."""
    cols = list(layout.frame.columns)
    rows = list(layout.frame.itertuples(index=False))
    widths = [max([cell_len(c), *(cell_len(r[i]) for r in rows)]) for i, c in enumerate(cols)]
    pad = lambda text, w: text + " " * (w - cell_len(text))  # noqa: E731
    lines = [layout.title] if layout.title else []
    lines += ["  ".join(pad(c, w) for c, w in zip(cols, widths)).rstrip(), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(pad(v, w) for v, w in zip(r, widths)).rstrip() for r in rows]
    lines += [*layout.notes, *(x for x in (layout.note, layout.hidden_note) if x)]
    return "\n".join(lines) + "\n"


def wrap(text: str, columns: int, indent: str = "", first: str = "") -> str:
    """`first` + `text` wrapped at spaces to `columns`, later lines under `indent`; a word longer
    than a line stays whole (the line runs over rather than break it)."""
    return textwrap.fill(
        text, columns, initial_indent=first, subsequent_indent=indent, break_long_words=False, break_on_hyphens=False
    )


# ------------------------------------------------------------------ claims: a block per claim

LABEL = 12  # the width of a block's labels ("decides it", "break-even")


def claim_blocks(results: list[ClaimResult], columns: int) -> tuple[list[tuple[str, str]], str]:
    """Per claim, a short block, as (heading, body): the heading is the claim and its verdicts
    (ours, the result; published, others' measurements), the body what was claimed, the figure
    that decides it and the break-even speed, wrapped to `columns`. The report's verdict cards
    (ppharness.present.report.verdict_lines) give the words. Returns the blocks and the footnote."""
    blocks, marked, legend = [], False, []
    for r, card in zip(results, report.verdict_lines(results)):
        best = r.best
        decides = card["decides it"]
        if best is not None and min(best.runs) == 1 and math.isfinite(best.speed[1]):
            decides += f" {report.WITHIN_RUN}"
            marked = True
        lines = [("claimed", card["claimed"]), ("decides it", decides), ("break-even", card["break-even"])]
        held = report.held_spans(r)
        if held:  # the windows in which it held by our rule (judge/timeline.py)
            lines.append(("held", held))
        elif r.verdict_today != "not measured" or (r.published and r.published.verdict_today != "no evidence"):
            lines.append(("held", f"never, since the claim's date ({r.claim.date})"))
        if best is not None:
            codes = flags.cell([s["flags"] for s in (best.subject, best.baseline)])
            if codes:
                lines.append(("flags", codes))
                legend.append(codes)
        head = f"{card['claim']}: ours: {card['ours']}; published: {card['published']}"
        body = "\n".join(
            wrap(textsafe.line(text), columns, " " * (LABEL + 4), f"    {label:<{LABEL}}") for label, text in lines
        )
        blocks.append((wrap(textsafe.line(head), columns, "    "), body))
    notes = ["Two figures: at the claim's date -> today.", marked and report.WITHIN_RUN_NOTE, flags.legend(legend)]
    note = " ".join(filter(None, notes))
    return blocks, note


def claim_lines(results: list[ClaimResult]) -> pd.DataFrame:
    """One row per claim with today's verdicts: ours (the result) and the published evidence's."""
    rows = [
        {
            "claim": r.claim.id,
            "ours today": r.verdict_today,
            "published today": r.published.verdict_today if r.published else "no evidence file",
        }
        for r in results
    ]
    frame = pd.DataFrame(rows, columns=["claim", "ours today", "published today"])
    frame.attrs["no_wrap"] = frame.attrs["keep"] = tuple(frame.columns)  # a verdict shared by all is still read per row
    return frame
