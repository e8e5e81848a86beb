"""The README and the pages under docs/: every relative link leads somewhere, every `#fragment`
into a markdown file names one of its headings, the README stays short, and every page is
reachable from it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import REPO

README = REPO / "README.md"
PAGES = sorted((REPO / "docs").glob("*.md"))
MAX_README_LINES = 250

FENCE = re.compile(r"^\s*(```|~~~)")
# [text](target) and ![alt](target): the text may wrap onto the next line (never across a blank
# line) and hold one level of brackets; the target ends at whitespace (a "title") or at ")".
LINK = re.compile(r"!?\[(?:[^\[\]\n]|\n(?!\s*\n)|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+[\"'][^)]*[\"'])?\s*\)")
INLINE_CODE = re.compile(r"(`+)(?:(?!\1)[^\n]|\n(?!\s*\n))+?\1")
EXTERNAL = ("http://", "https://", "mailto:")


def prose(path: Path) -> str:
    """The file's text with every line inside a fenced code block (fences included) blanked, so
    line numbers stay those of the file."""
    out, fenced = [], False
    for line in path.read_text().splitlines():
        if FENCE.match(line):
            fenced = not fenced
            out.append("")
            continue
        out.append("" if fenced else line)
    return "\n".join(out) + "\n"


def links(path: Path) -> list[tuple[int, str]]:
    """(line number, target) of every markdown link and image outside code blocks and code spans."""
    text = prose(path)
    spans = [m.span() for m in INLINE_CODE.finditer(text)]
    return [
        (text.count("\n", 0, m.start()) + 1, m.group(1))
        for m in LINK.finditer(text)
        if not any(a <= m.start() < b for a, b in spans)
    ]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lowercase, punctuation dropped (hyphens, underscores and
    spaces kept), spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip()).lower()  # a link keeps its text
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading's anchor in a markdown file, with GitHub's -1, -2 ... for repeats."""
    seen: dict[str, int] = {}
    out = set()
    for line in prose(path).splitlines():
        m = re.match(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        base = slug(m.group(1))
        k = seen.get(base, 0)
        out.add(base if k == 0 else f"{base}-{k}")
        seen[base] = k + 1
    return out


def relative_links(path: Path):
    for n, target in links(path):
        if target.startswith(EXTERNAL):
            continue
        yield n, target


DOCS = [README, *PAGES]


def test_there_are_pages():
    assert PAGES, "docs/*.md: no pages"
    assert all(p.read_text().startswith("# ") for p in PAGES), "every page starts with a # title"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(doc):
    broken = []
    for n, target in relative_links(doc):
        if target.startswith("#"):
            continue
        file = target.split("#", 1)[0].split("?", 1)[0]
        if not (doc.parent / file).exists():
            broken.append(f"{doc.relative_to(REPO)}:{n}: {target}")
    assert not broken, "links to nothing:\n" + "\n".join(broken)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_fragment_names_a_heading(doc):
    broken = []
    for n, target in relative_links(doc):
        if "#" not in target:
            continue
        file, fragment = target.split("#", 1)
        dest = (doc.parent / file) if file else doc
        if dest.suffix != ".md" or not dest.is_file():
            continue
        if fragment not in anchors(dest):
            broken.append(f"{doc.relative_to(REPO)}:{n}: {target} (headings: {sorted(anchors(dest))})")
    assert not broken, "fragments that name no heading:\n" + "\n".join(broken)


def test_the_readme_is_short():
    lines = len(README.read_text().splitlines())
    assert lines <= MAX_README_LINES, f"README.md has {lines} lines; topics belong in docs/"


def test_every_page_is_linked_from_the_readme():
    linked = {
        (README.parent / t.split("#", 1)[0]).resolve() for _, t in relative_links(README) if not t.startswith("#")
    }
    missing = [str(p.relative_to(REPO)) for p in PAGES if p.resolve() not in linked]
    assert not missing, f"pages the README does not link: {missing}"


# ---------------------------------------------------------------- the checker's own rules


def test_slug_follows_githubs_rule():
    assert slug("Sweeps, kills and `--resume`") == "sweeps-kills-and---resume"
    assert slug("Running on an NVIDIA GPU instance (p4d, p5, p5en, g5, g6e)") == (
        "running-on-an-nvidia-gpu-instance-p4d-p5-p5en-g5-g6e"
    )
    assert slug("Without Neuron hardware (CI)") == "without-neuron-hardware-ci"
    assert slug("Today's answer") == "todays-answer"


def test_the_checker_finds_links_and_skips_code(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "# A page\n\n## Two words\n\n"
        "[ok](#two-words) ![img](pic.png) [ext](https://example.org) `[not](a-link.md)`\n"
        "```\n[also not](inside-a-fence.md)\n```\n"
        '[with `code` text](other.md#x) [titled](t.md "a title") [wrapped\ntext](w.md)\n'
    )
    found = [t for _, t in links(page)]
    assert found == ["#two-words", "pic.png", "https://example.org", "other.md#x", "t.md", "w.md"]
    assert anchors(page) == {"a-page", "two-words"}
