"""Text from outside is data, never markup: one place that makes a string safe for each output.

A string that came from a file (a results file, a run file, the claims file), an argument or an
exception is untrusted. On a terminal it must not carry escape sequences (ANSI colours, OSC 8
links, cursor moves, a window title) or bidirectional overrides, and it must never be read as rich
markup (`[/x]` crashes rich, `[bold]` vanishes). In markdown it must not become a link, an image,
emphasis or raw HTML. In HTML it is escaped. Every output path goes through these helpers.
"""

from __future__ import annotations

import html
import re

from rich.markup import escape

# C0 controls except tab and newline, DEL, C1 controls (CSI/OSC start bytes in 8-bit form), and the
# Unicode bidirectional overrides/isolates that reorder how a line reads ("Trojan Source").
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
# Every ASCII punctuation character that can start or end markdown syntax inline: links and
# images ([]()!), emphasis (*_~), code (`), headings (#), HTML (<>, escaped by html.escape first),
# tables (|) and the backslash itself. CommonMark lets any ASCII punctuation be backslash-escaped.
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+!|~])")


def _inert(text: str) -> bool:
    """Printable ASCII: no control character, no line break, nothing to replace (most cells; a
    5,000-row table is 84,000 of them)."""
    return text.isascii() and text.isprintable()


def plain(value: object) -> str:
    """`value` as text with every control character (escape sequences) shown as `?`."""
    text = str(value)
    return text if _inert(text) else CONTROL.sub("?", text)


def line(value: object) -> str:
    """`value` as one terminal line: control characters as `?`, line breaks as spaces."""
    text = str(value)
    return text if _inert(text) else plain(" ".join(text.splitlines()))


def markup(value: object) -> str:
    """`value` for a string that rich renders as markup (a progress description, a title given as
    str): control characters replaced and every `[` escaped, so nothing in it is a tag."""
    return escape(line(value))


def markdown(value: object) -> str:
    """`value` as inert markdown text for one table cell or list item: no link, image, emphasis,
    code span, heading, raw HTML or table break can come from it."""
    # <, > and & escaped; quotes are inert in markdown text, and escaping them made entities whose
    # "#" the next step escaped, so a reader saw "&\#x27;" for an apostrophe.
    text = html.escape(CONTROL.sub(" ", " ".join(str(value).splitlines())), quote=False)
    return _MD_SPECIAL.sub(r"\\\1", text)


def html_text(value: object) -> str:
    """`value` as HTML text or an attribute value (quotes escaped too)."""
    return html.escape(CONTROL.sub(" ", str(value)))
