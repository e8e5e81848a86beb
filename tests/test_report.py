"""bench.report and the compare / claims / report commands, hostile input, and a headless-Chromium
check that the HTML report renders its tables and figures. Records are fixtures
(tests/results_fixtures.py); nothing is written to results/.
"""

from __future__ import annotations

import base64
import re
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from results_fixtures import record, write
from typer.testing import CliRunner

from bench import claims, compare, report
from bench.cli import app

CHROMIUM = Path("/usr/bin/chromium")
HOSTILE = "<script>alert(1)</script>"
runner = CliRunner()


def _records(**hostile) -> list[dict]:
    recs = []
    for i, (scenario, batch) in enumerate((s, b) for s in ("train", "prefill", "decode") for b in (1, 2, 4)):
        recs.append(record(scenario=scenario, batch=batch, step_s=0.01 * batch, seed=i, **hostile))
        recs.append(
            record(scenario=scenario, batch=batch, compile="default", step_s=0.006 * batch, seed=50 + i, mfu=0.3)
        )
    recs.append(record(status="oom", batch=64, seed=99, **hostile))
    return recs


def _hostile_records() -> list[dict]:
    recs = _records(hostname=HOSTILE, instance=None, usd_per_hour=None)
    recs[0]["workload"]["preset"] = '<img src=x onerror="alert(2)">'
    recs[1]["workload"]["dtype"] = "$\\frac{1}{$ [bold red]markup[/] \x1b[31m"
    recs[-1]["reason"] = "</td></tr></table><script>alert(3)</script>"
    return recs


@pytest.fixture
def results_file(tmp_path) -> Path:
    return write(tmp_path / "results" / "fixture.jsonl", _records())


@pytest.fixture
def hostile_file(tmp_path) -> Path:
    return write(tmp_path / "results" / "hostile.jsonl", _hostile_records())


class Dom(HTMLParser):
    """Counts elements and collects text of a page, as a browser's parser sees it."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: dict[str, int] = {}
        self.imgs: list[dict] = []
        self.text: list[str] = []
        self.attrs_seen: set[str] = set()
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags[tag] = self.tags.get(tag, 0) + 1
        self.attrs_seen |= {k for k, _ in attrs}
        if tag == "img":
            self.imgs.append(dict(attrs))

    def handle_data(self, data):
        self.text.append(data)


# ------------------------------------------------------------------ the page


def test_html_report_is_self_contained(tmp_path, results_file):
    out = tmp_path / "report.html"
    result = runner.invoke(app, ["report", str(results_file), "-o", str(out), "--baseline", "none"])
    assert result.exit_code == 0, result.output
    page = out.read_text()
    dom = Dom(page)
    assert dom.tags["table"] >= 4  # claims, comparison, best batches, excluded
    assert len(dom.imgs) == 3  # cost, throughput vs batch, MFU
    for img in dom.imgs:
        assert img["src"].startswith("data:image/png;base64,")
        assert base64.b64decode(img["src"].split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Content-Security-Policy" in page and "script-src" not in page
    assert not re.search(r"(src|href)=\"(?!data:)", page)  # nothing fetched from anywhere
    assert "trn1-vs-p4d-cost-to-train" in page and "1.31x (claim date) -&gt; 1.96x (today)" in page


def test_markdown_report(tmp_path, results_file):
    out = tmp_path / "report.md"
    result = runner.invoke(app, ["report", str(results_file), "-o", str(out), "--format", "md"])
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert "## Claims" in text and "| claim |" in text
    assert text.count("](data:image/png;base64,") == 3


def test_hostile_strings_are_rendered_harmlessly(tmp_path, hostile_file):
    out = tmp_path / "report.html"
    assert runner.invoke(app, ["report", str(hostile_file), "-o", str(out)]).exit_code == 0
    page = out.read_text()
    dom = Dom(page)
    assert "script" not in dom.tags and "onerror" not in dom.attrs_seen
    assert len(dom.imgs) == 3
    text = "".join(dom.text)
    assert HOSTILE in text and "alert(3)" in text  # shown as text, not run
    md = tmp_path / "report.md"
    assert runner.invoke(app, ["report", str(hostile_file), "-o", str(md), "--format", "md"]).exit_code == 0
    assert "<script" not in md.read_text() and "&lt;script&gt;" in md.read_text()


def test_terminal_output_is_escaped(hostile_file):
    result = runner.invoke(app, ["compare", str(hostile_file)])
    assert result.exit_code == 0, result.output
    assert "\x1b[31m" not in result.output and "[bold red]markup[/]" in result.output


def test_a_failed_report_writes_nothing(tmp_path, results_file):
    out = tmp_path / "missing-dir" / "report.html"
    result = runner.invoke(app, ["report", str(results_file), "-o", str(out)])
    assert result.exit_code == 2 and "does not exist" in result.output
    assert not out.parent.exists()
    assert runner.invoke(app, ["report", str(results_file), "--format", "pdf"]).exit_code == 2


# ------------------------------------------------------------------ compare and claims commands


def test_compare_command(results_file):
    result = runner.invoke(app, ["compare", str(results_file), "--baseline", "c7a.large/cpu/-/none"])
    assert result.exit_code == 0, result.output
    assert "speed vs baseline" in result.output and "Excluded records" in result.output
    assert "status oom" in result.output


def test_compare_unknown_baseline_is_one_line(results_file):
    result = runner.invoke(app, ["compare", str(results_file), "--baseline", "p4d.24xlarge"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "error: unknown baseline 'p4d.24xlarge'; systems in these results: c7a.large/cpu/-/default, c7a.large/cpu/-/none"
    ]


def test_bad_results_file_is_one_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"not": "a record"}\n')
    for cmd in (["compare"], ["claims"], ["report", "-o", str(tmp_path / "r.html")]):
        result = runner.invoke(app, [*cmd, str(bad)])
        assert result.exit_code == 2 and result.output.startswith("error: "), (cmd, result.output)
    assert not (tmp_path / "r.html").exists()


def test_claims_command_lists_every_claim(results_file):
    result = runner.invoke(app, ["claims", str(results_file)])
    assert result.exit_code == 0, result.output
    for c in claims.load_claims():
        assert c.id in result.output
    assert "1.31x (claim date) -> 1.96x (today)" in result.output


def test_claims_frame_and_numbers():
    evaluated = claims.evaluate_all(compare.prepare(__import__("pandas").DataFrame()).usable)
    frame = report.claims_frame(evaluated)
    assert list(frame["claim"]) == [c.id for c in claims.load_claims()]
    assert set(frame["our verdict (the result)"]) == {"not measured"}
    assert "published evidence" in frame.columns and "speed needed (break-even)" in frame.columns
    assert report.ratio(1.234, 1.2, 1.25) == "1.23x [1.20-1.25]" and report.ratio(2.0) == "2.00x"
    assert report.num(123456.7) == "123,457" and report.num(0.012345) == "0.0123" and report.num(None) == ""


# ------------------------------------------------------------------ in a real browser


def _chromium(page: Path, profile: Path) -> str:
    """The DOM Chromium builds from `page` (headless, no network, no GPU)."""
    cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"]
    cmd += ["--disable-background-networking", "--disable-component-update", "--disable-sync"]
    cmd += ["--disable-dev-shm-usage", f"--user-data-dir={profile}", "--virtual-time-budget=5000"]
    done = subprocess.run([*cmd, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


PROBE = "<script>addEventListener('load',()=>document.body.setAttribute('data-widths',[...document.images].map(i=>i.naturalWidth).join(',')))</script>"


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Chromium not installed (CI installs Debian's `chromium`)")
def test_report_renders_in_headless_chromium(tmp_path, hostile_file, results_file):
    page = tmp_path / "report.html"
    assert runner.invoke(app, ["report", str(results_file), str(hostile_file), "-o", str(page)]).exit_code == 0
    dom = Dom(_chromium(page, tmp_path / "profile-1"))
    assert dom.tags.get("table", 0) >= 4 and dom.tags.get("td", 0) > 50
    assert len(dom.imgs) == 3 and "script" not in dom.tags
    assert HOSTILE in "".join(dom.text)
    # Decode check: a copy without the CSP gets a probe script that records each image's width.
    html = page.read_text()
    open_copy = tmp_path / "probe.html"
    open_copy.write_text(
        re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", html).replace("</body>", PROBE + "</body>")
    )
    widths = re.search(r'<body[^>]*data-widths="([^"]*)"', _chromium(open_copy, tmp_path / "profile-2")).group(1)
    assert len(widths.split(",")) == 3 and all(int(w) > 100 for w in widths.split(","))
    # The CSP itself: the same probe in the page as written never runs.
    csp_copy = tmp_path / "csp.html"
    csp_copy.write_text(html.replace("</body>", PROBE + "</body>"))
    assert not re.search(r"<body[^>]*data-widths=", _chromium(csp_copy, tmp_path / "profile-3"))


# ------------------------------------------------------------------ repeated runs


def _second_run(path: Path) -> Path:
    """Another run of the same cases (new run ids, 10% slower), in a file of its own."""
    recs = _records()
    for r in recs:
        r["run_id"] += "-again"
        r["created_at"] = "2026-02-01T00:00:00+00:00"
        r["timing"]["samples_s"] = [t * 1.1 for t in r["timing"]["samples_s"]]
    return write(path, recs)


def test_single_run_cis_are_marked_and_pooled_runs_are_not(tmp_path, results_file):
    base = ["--baseline", "c7a.large/cpu/-/none"]
    one = runner.invoke(app, ["compare", str(results_file), *base])
    assert one.exit_code == 0 and report.WITHIN_RUN_NOTE in one.output
    assert f"]{report.WITHIN_RUN}" in one.output  # the marker sits on the CI cells
    again = _second_run(tmp_path / "results" / "again.jsonl")
    pooled = runner.invoke(app, ["compare", str(tmp_path / "results"), *base])
    assert pooled.exit_code == 0 and report.WITHIN_RUN not in pooled.output
    latest = runner.invoke(app, ["compare", str(results_file), str(again), *base, "--latest"])
    assert latest.exit_code == 0 and report.WITHIN_RUN_NOTE in latest.output
    for fmt in ("md", "html"):
        out = tmp_path / f"r.{fmt}"
        args = ["report", str(results_file), "-o", str(out), "--format", fmt, *base]
        assert runner.invoke(app, args).exit_code == 0
        assert report.WITHIN_RUN_NOTE in out.read_text() and "runs" in out.read_text()
    md = tmp_path / "pooled.md"
    assert (
        runner.invoke(app, ["report", str(tmp_path / "results"), "-o", str(md), "--format", "md", *base]).exit_code == 0
    )
    text = md.read_text()
    assert (
        "| batch | runs |" in text and report.WITHIN_RUN_NOTE not in text and "step time = median of the runs" in text
    )
    assert runner.invoke(app, ["claims", str(tmp_path / "results"), "--latest"]).exit_code == 0


def test_kernels_get_their_own_table_in_compare_and_the_report(tmp_path):
    """Kernel records are not workload rows: no blank-priced rows in the workload tables, one
    kernel table (kernel, variant, shape, achieved on its bound's axis, ceiling fraction)."""
    recs = _records()
    for i, (compile_mode, step_s) in enumerate((("none", 0.002), ("default", 0.001))):
        k = record(scenario="kernel:gemm", compile=compile_mode, step_s=step_s, seed=200 + i)
        k["workload"].update(kernel="gemm", variant="eager", shape="wq@prefill")
        k["metrics"] = {"achieved_tflops": 0.15 * (i + 1), "bound": "compute", "ceiling_fraction": 0.8}
        recs.append(k)
    from bench.results import load

    path = write(tmp_path / "results" / "mixed.jsonl", recs)
    cmp = compare.compare(load([path]), "c7a.large/cpu/-/none")
    assert not cmp.table["scenario"].str.startswith("kernel:").any()
    assert not cmp.best["scenario"].str.startswith("kernel:").any()
    frame = report.kernels_frame(cmp.kernels, with_ratios=True)
    assert list(frame["kernel"]) == ["gemm", "gemm"] and list(frame["shape"]) == ["wq@prefill"] * 2
    assert list(frame["achieved"]) == ["0.3 TFLOP/s", "0.15 TFLOP/s"]  # default sorts before none
    assert list(frame["ceiling"]) == ["0.8", "0.8"]
    assert frame["speed vs baseline [95% CI]"].iloc[0].startswith(("1.9", "2.0"))  # twice as fast
    out = tmp_path / "report.md"
    result = runner.invoke(
        app, ["report", str(path), "-o", str(out), "--format", "md", "--baseline", "c7a.large/cpu/-/none"]
    )
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert "## Timed kernels" in text and "| wq@prefill |" in text
    matched = text.split("## Comparison")[1].split("## Timed kernels")[0]
    assert "kernel:gemm" not in matched
    shown = runner.invoke(app, ["compare", str(path)], env={"COLUMNS": "300"})
    assert shown.exit_code == 0 and "Timed kernels" in shown.output and "kernel:gemm" not in shown.output
