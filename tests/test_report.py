"""ppharness.present.report and the compare / claims / report commands, hostile input, and a headless-Chromium
check that the HTML report renders its tables and figures. Records are fixtures
(tests/results_fixtures.py); nothing is written to results/.
"""

from __future__ import annotations

import base64
import html
import re
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from results_fixtures import frame, record, write
from typer.testing import CliRunner

from ppharness.cli import app
from ppharness.judge import claims, compare
from ppharness.present import report

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
        self.order: list[str] = []  # "h2:Heading", "table", "img", "omitted", "ul.verdicts", in page order
        self._in: str | None = None
        self.cells: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags[tag] = self.tags.get(tag, 0) + 1
        a = dict(attrs)
        self.attrs_seen |= set(a)
        if tag == "img":
            self.imgs.append(a)
            self.order.append("img")
        elif tag == "table":
            self.order.append("table")
        elif tag == "ul" and "verdicts" in (a.get("class") or ""):
            self.order.append("ul.verdicts")
        elif tag == "p" and "omitted" in (a.get("class") or ""):
            self.order.append("omitted")
        elif tag in ("h2", "td"):
            self._in, self.cells = tag, self.cells if tag == "td" else self.cells

    def handle_endtag(self, tag):
        if tag == self._in:
            self._in = None

    def handle_data(self, data):
        self.text.append(data)
        if self._in == "h2":
            self.order.append(f"h2:{data}")
        elif self._in == "td":
            self.cells.append(data)

    def sections(self) -> dict[str, list[str]]:
        """Each h2 heading -> what follows it up to the next one."""
        out: dict[str, list[str]] = {}
        current = None
        for item in self.order:
            if item.startswith("h2:"):
                current = item[3:]
                out[current] = []
            elif current is not None:
                out[current].append(item)
        return out


FIGURE_QUESTIONS = (
    "Which system gives the most tokens per dollar?",
    "Does each claim hold?",
    "How does throughput grow with batch size, and at what latency?",
    "What does serving cost at each level of interactivity?",
    "How close do the kernels come to each device's roofline?",
)
CI_CELL = re.compile(r"^[\d,.]+[kMG]? \[[\d,.]+[kMG]?-[\d,.]+[kMG]?\]$")  # 1,234 [1,200-1,260], 19.4M [18M-22M]


def check_structure(dom: Dom, drawn: int) -> None:
    """What a reader sees: verdicts before any table, each question with one figure or one line
    saying why not, and CIs in the workload table."""
    order = dom.order
    assert order[0] == "h2:Verdicts" and order.index("ul.verdicts") < order.index("table")
    sections = dom.sections()
    for q in FIGURE_QUESTIONS:
        assert sections[q] in (["img"], ["omitted"]), (q, sections[q])  # one figure per question, or why not
    assert sum(sections[q] == ["img"] for q in FIGURE_QUESTIONS) == drawn
    assert [i for i, x in enumerate(order) if x == "img"][-1] < order.index("h2:Workloads: every system and batch")
    assert any(CI_CELL.match(c) for c in dom.cells), "no cell with a 95% CI"


# ------------------------------------------------------------------ the page


def test_html_report_is_self_contained(tmp_path, results_file):
    out = tmp_path / "report.html"
    result = runner.invoke(app, ["report", str(results_file), "-o", str(out), "--baseline", "none"])
    assert result.exit_code == 0, result.output
    page = out.read_text()
    dom = Dom(page)
    assert dom.tags["table"] >= 5  # systems, workloads, best batches, claims, excluded
    check_structure(dom, drawn=3)  # tokens/$, claims, batch; no kernels: no roofline, one line says so
    assert "No figure: no valid kernel records" in page
    for img in dom.imgs:
        assert img["src"].startswith("data:image/png;base64,")
        assert base64.b64decode(img["src"].split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Content-Security-Policy" in page and "script-src" not in page
    assert not re.search(r"(src|href)=\"(?!data:)", page)  # nothing fetched from anywhere
    assert "trn1-vs-p4d-cost-to-train" in page and "1.31x (claim date) -&gt; 1.96x (today)" in page


def test_markdown_report_has_the_same_content_with_figures_beside_it(tmp_path, results_file):
    out = tmp_path / "report.md"
    result = runner.invoke(app, ["report", str(results_file), "-o", str(out), "--format", "md"])
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert text.index("## Verdicts") < text.index("## Systems compared") < text.index("| claim |")
    links = re.findall(r"!\[[^]]*\]\(([^)]+)\)", text)
    assert len(links) == 3 and "base64" not in text
    for name in links:
        assert "/" not in name and (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html_page = tmp_path / "report.html"
    assert runner.invoke(app, ["report", str(results_file), "-o", str(html_page)]).exit_code == 0
    for q in FIGURE_QUESTIONS:  # the same questions in both media
        assert f"## {q}" in text and html.escape(q) in html_page.read_text()
    plain = re.sub(r"\\(.)", r"\1", text)  # markdown's backslash escapes (ppharness.present.textsafe) undone
    assert any(CI_CELL.match(c.strip()) for c in plain.split("|")), "no cell with a 95% CI"


def test_hostile_strings_are_rendered_harmlessly(tmp_path, hostile_file):
    out = tmp_path / "report.html"
    assert runner.invoke(app, ["report", str(hostile_file), "-o", str(out)]).exit_code == 0
    page = out.read_text()
    dom = Dom(page)
    assert "script" not in dom.tags and "onerror" not in dom.attrs_seen
    assert len(dom.imgs) == 3  # "$" and markup in labels do not break a figure
    text = "".join(dom.text)
    assert HOSTILE in text and "alert(3)" in text  # shown as text, not run
    md = tmp_path / "report.md"
    assert runner.invoke(app, ["report", str(hostile_file), "-o", str(md), "--format", "md"]).exit_code == 0
    assert "<script" not in md.read_text() and "&lt;script&gt;" in md.read_text()


def test_terminal_output_is_escaped(hostile_file):
    result = runner.invoke(app, ["compare", str(hostile_file), "--wide"])  # every cell whole, on one line
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
    assert (
        report.compact(19_356_454) == "19.4M"
        and report.compact(292_158.3) == "292k"
        and report.compact(0.0517) == "0.0517"
    )


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
    assert dom.tags.get("table", 0) >= 5 and dom.tags.get("td", 0) > 50
    assert len(dom.imgs) == 3 and "script" not in dom.tags
    check_structure(dom, drawn=3)
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
    from ppharness.record.load import load

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
    assert "## Kernels: cost per token" in text and "| wq@prefill |" in text
    matched = text.split("## Workloads: every system and batch")[1].split("## Kernels")[0]
    assert "kernel:gemm" not in matched
    assert "speed vs baseline \\[95% CI\\]" in text.split("### gemm")[1]  # compare's kernel ratios, in the report
    shown = runner.invoke(app, ["compare", str(path)], env={"COLUMNS": "300"})
    assert shown.exit_code == 0 and "Timed kernels" in shown.output and "kernel:gemm" not in shown.output


# ------------------------------------------------------------------ kernels, omitted figures, the summary


def _kernel_record(kernel: str, shape: str, variant: str, step_s: float, tokens: int | None, seed: int) -> dict:
    """A `ppbench kernels` record (ppharness/kernels/run.py's keys) with FLOPs, bytes and ceilings."""
    rec = record(scenario=f"kernel:{kernel}", batch=2, step_s=step_s, seed=seed)
    rec["workload"].update(kernel=kernel, variant=variant, shape=shape, bound="compute")
    flops, nbytes = 4e9, 4e7
    rec["metrics"] = {
        "flops": flops, "bytes": nbytes, "arithmetic_intensity": flops / nbytes, "bound": "compute",
        "achieved_tflops": flops / step_s / 1e12, "achieved_gbps": nbytes / step_s / 1e9, "mfu": None, "mbu": None,
        "tokens_per_s": tokens / step_s if tokens else None, "tokens_per_step": tokens, "ceiling_fraction": 0.4,
    }  # fmt: skip
    rec["ceilings"] = {"gemm_tflops": 2.0, "mem_gbps": 50.0}
    if tokens is None:
        rec["cost"]["usd_per_million_tokens"] = None
    return rec


def test_kernels_get_their_own_tables_cost_per_token_and_a_roofline(tmp_path):
    recs = [record(scenario="train", batch=2, seed=1)]
    recs += [
        _kernel_record("gemm", s, "eager", 0.004, 64, seed=10 + i) for i, s in enumerate(("wq@prefill", "w1@prefill"))
    ]
    recs += [_kernel_record("rmsnorm", "prefill", v, 0.001, 64, seed=20 + i) for i, v in enumerate(("eager", "fused"))]
    path = write(tmp_path / "results" / "k.jsonl", recs)
    out = tmp_path / "report.html"
    assert runner.invoke(app, ["report", str(path), "-o", str(out)]).exit_code == 0
    page = out.read_text()
    dom = Dom(page)
    assert dom.sections()[FIGURE_QUESTIONS[4]] == ["img"]  # the roofline, drawn
    assert dom.sections()["Kernels: cost per token and fraction of the measured ceiling"] == ["table", "table"]
    assert "<h3>gemm</h3>" in page and "<h3>rmsnorm</h3>" in page
    kern = report.kernel_rows(frame(tmp_path, recs))
    assert sorted(kern["kernel"].unique()) == ["gemm", "rmsnorm"]
    gemm = kern[kern["shape"] == "wq@prefill"].iloc[0]
    assert gemm["tokens_per_s"] == pytest.approx(64 / gemm["median_s"])
    assert gemm["usd_per_mtok"] == pytest.approx(0.10264 / (gemm["tokens_per_s"] * 3600) * 1e6)
    tables = dict(report.kernels_frames(kern))
    assert list(tables["gemm"]["shape"]) == ["w1@prefill", "wq@prefill"] and "$/1M tokens" in tables["gemm"]
    assert "flags" in tables["gemm"] and list(tables["gemm"]["achieved"]) == ["1 TFLOP/s", "1 TFLOP/s"]
    assert "kernel:gemm" not in "".join(dom.cells)  # kernels are not workload rows
    points = report.roofline_points(frame(tmp_path, recs))
    assert len(points) == 4 and set(points["gemm_tflops"]) == {2.0} and points["peak_tflops"].isna().all()
    assert "No vendor peak is known for: fixture (cpu)" in page


def test_kernels_recorded_without_tokens_say_so(tmp_path):
    recs = [_kernel_record("gemm", "wq@prefill", "eager", 0.004, None, seed=3)]
    ((name, table),) = report.kernels_frames(report.kernel_rows(frame(tmp_path, recs)))
    assert name == "gemm" and "tokens/s" not in table and "counted their tokens" in table.attrs["note"]


def test_a_figure_without_data_is_one_line_not_an_empty_panel(tmp_path):
    recs = [
        record(scenario=s, batch=4, seed=i, usd_per_hour=None, instance=None) for i, s in enumerate(("train", "decode"))
    ]
    path = write(tmp_path / "results" / "one.jsonl", recs)
    for fmt in ("html", "md"):
        out = tmp_path / f"report.{fmt}"
        assert runner.invoke(app, ["report", str(path), "-o", str(out), "--format", fmt]).exit_code == 0
        text = out.read_text()
        assert "No figure: no workload row has a price" in text
        assert "No figure: every system ran one batch size per scenario" in text
        assert "No figure: no valid kernel records" in text and "No figure: no serving records" in text
    dom = Dom((tmp_path / "report.html").read_text())
    assert [dom.sections()[q] for q in FIGURE_QUESTIONS] == [
        ["omitted"],
        ["img"],
        ["omitted"],
        ["omitted"],
        ["omitted"],
    ]


def test_summary_gives_both_verdicts_the_break_even_and_the_deciding_figure():
    evaluated = claims.evaluate_all(compare.prepare(__import__("pandas").DataFrame()).usable)
    lines = {v["claim"]: v for v in report.verdict_lines(evaluated)}
    v = lines["trn1-vs-p4d-cost-to-train"]
    assert v["ours"] == "not measured" and v["published"] == "not reproduced"
    assert v["break-even"] == "1.31x (claim date) -> 1.96x (today)"
    assert (
        v["decides it"].startswith("published 1.34x -> 0.54-1.43x tokens/$ ratio")
        and "2.00x claimed" in v["decides it"]
    )
    assert lines["trn2-vs-p5e-price-performance"]["break-even"] == "no shared price"
    assert report.headline(evaluated).startswith(f"{len(evaluated)} claims: our measurements decide 0")
    points = {p["claim"]: p for p in report.claim_points(evaluated)}
    pair = points["trn1-vs-p4d-cost-to-train"]
    assert pair["measured"] is None and pair["published"] and all(x > 0 for x in pair["published"])
    assert pair["needs"] == {"claim date": pytest.approx(1.31, abs=0.01), "today": pytest.approx(1.96, abs=0.01)}


def test_claim_chart_draws_a_measured_ratio_with_its_ci_or_says_why_not():
    import pandas as pd

    from ppharness.present import figures

    empty = pd.DataFrame(
        columns=["system", "preset", "scenario", "dtype", "batch", "best", "tokens_per_s", "tokens_per_usd"]
    )
    measured = {"claim": "c1", "measured": (1.5, 1.2, 1.8), "published": [], "needs": {"claim date": 1.3, "today": 2.0}}
    nothing = {"claim": "c2", "measured": None, "published": [], "needs": {"today": 1.1}}
    value, chart, batch, serving, roof = figures.figures(empty, [measured, nothing], pd.DataFrame())
    assert chart.png and base64.b64decode(chart.png)[:4] == b"\x89PNG" and not chart.omitted
    assert "Not shown (no measured or published ratio): c2." in chart.caption
    assert all(f.omitted and not f.png for f in (value, batch, serving, roof))
    (_, none, _, _, _) = figures.figures(empty, [nothing], pd.DataFrame())
    assert none.omitted == "No figure: no claim has a measured or published ratio." and not none.png


def test_warnings_flag_the_row_and_are_listed_with_their_reasons(tmp_path):
    recs = [record(scenario="train", batch=2, seed=1, created_at=f"2026-01-0{i + 1}T00:00:00+00:00") for i in range(2)]
    recs[1]["run_id"] = "run-again"
    recs[1]["validity"]["warnings"] = ["noisy: coefficient of variation 31.0% > 10%"]
    recs.append(record(status="oom", batch=64, seed=9))
    recs[-1]["reason"] = "CUDA out of memory. " * 10  # a long reason: folded, not a wall of text
    path = write(tmp_path / "results" / "w.jsonl", recs)
    df = frame(tmp_path, recs)
    cmp = compare.compare(df)
    table = report.workload_frame(report.workload_rows(cmp, df), False)
    assert (
        list(table["flags"]) == ["noisy"] and "noisy = " in table.attrs["note"]
    )  # ppharness.record.flags, with its legend
    problems = report.problems_frame(cmp, df)
    assert list(problems["record"]) == ["excluded", "flagged (counted)"]
    assert isinstance(problems["reason"][0], report.Fold) and "31.0%" in problems["reason"][1]
    out = tmp_path / "r.html"
    assert runner.invoke(app, ["report", str(path), "-o", str(out)]).exit_code == 0
    page = out.read_text()
    assert page.count("<details><summary>status oom: CUDA out of memory.") == 1 and "31.0% &gt; 10%" in page


def test_systems_table_says_priced_as_and_names_every_commit_pooled(tmp_path):
    """A CPU host priced as an instance says so, and a system whose runs span two commits names
    both (newest first), with +dirty where a run came from a dirty tree: the loaded frame holds
    numpy booleans, which are never `is True`."""
    old = record(seed=1, created_at="2026-01-01T00:00:00+00:00")
    new = record(seed=2, created_at="2026-02-01T00:00:00+00:00")
    old["harness"] = {"version": "0.1.0", "git_sha": "a" * 40, "dirty": False}
    new["harness"] = {"version": "0.1.0", "git_sha": "b" * 40, "dirty": True}
    for r in (old, new):
        r["cost"]["priced_as"] = True
    frame = report.systems_frame(_load_written(tmp_path, [old, new]), [])
    row = frame.iloc[0]
    assert row["instance"].startswith("priced as c7a.large ($0.1026/h")
    assert row["commit"] == "bbbbbbbbbb+dirty, aaaaaaaaaa"
    assert row["records"] == "2"
    old["cost"]["priced_as"] = new["cost"]["priced_as"] = False
    assert not report.systems_frame(_load_written(tmp_path, [old, new]), []).iloc[0]["instance"].startswith("priced")


def _load_written(tmp_path, recs):
    from ppharness.record.load import load

    return load([write(tmp_path / "results" / "systems.jsonl", recs)])
