"""Rendering: display tables (strings) for the terminal, and the self-contained HTML/markdown report.

Owns how comparison and claim results look: number formats, the display frames the CLI prints,
and the report page (the figures it embeds are bench.figures). A results file is
untrusted input: every string taken from it is escaped for the medium it lands in
(bench/textsafe.py: HTML escaping; markdown syntax backslash-escaped, so no link or image can come
from a field; control characters replaced for the terminal, which prints cells as plain Text;
mathtext off in figures), and the HTML page carries a Content-Security-Policy that allows no
script at all.
"""

from __future__ import annotations

import math
import os
import tempfile
from datetime import date, datetime, timezone
from pathlib import Path

import pandas as pd

from bench import claims, evidence, flags, textsafe
from bench.claims import ClaimResult
from bench.compare import Comparison
from bench.errors import BenchError, WriteError
from bench.figures import figures

FORMATS = ("html", "md")
WITHIN_RUN = "†"  # marks a CI with one run on a side; a display frame's attrs["note"] explains it
WITHIN_RUN_NOTE = f"{WITHIN_RUN} one run on a side: the CI covers within-run noise only, not run-to-run spread."


# ------------------------------------------------------------------ numbers and display frames


def num(x: object, digits: int = 3) -> str:
    """A figure to `digits` significant digits, thousands separated; blank when missing."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return ""
    x = float(x)
    if abs(x) >= 10**digits:
        return f"{x:,.0f}"
    return f"{x:.{digits}g}"


def ratio(point: float, lo: float = math.nan, hi: float = math.nan) -> str:
    """`1.23x [1.20-1.26]`, or `1.23x` without a CI."""
    if not math.isfinite(point):
        return ""
    ci = f" [{lo:.2f}-{hi:.2f}]" if math.isfinite(lo) and math.isfinite(hi) else ""
    return f"{point:.2f}x{ci}"


def compare_frame(table: pd.DataFrame, with_ratios: bool) -> pd.DataFrame:
    """The comparison table as display strings (one row per system x workload x batch)."""
    out = pd.DataFrame(
        {
            "system": table["system"],
            "preset": table["preset"],
            "scenario": table["scenario"],
            "dtype": table["dtype"],
            "batch": [num(b) for b in table["batch"]],
            "runs": [num(r) for r in table["runs"]],
            "tokens/s": [num(v) for v in table["tokens_per_s"]],
            "$/1M tokens": [num(v) for v in table["usd_per_mtok"]],
            "tokens/$": [num(v) for v in table["tokens_per_usd"]],
            "MFU": [num(v, 2) for v in table["mfu"]],
            "ceiling": [num(v, 2) for v in table["ceiling_fraction"]],
            "flags": [flags.cell([f], e) for f, e in zip(table["flags"], table["excluded"], strict=True)],
        }
    )
    serving = table.get("tokens_per_s_per_user")
    if serving is not None and serving.notna().any():  # serving rows (bench/serve.py): latency as users see it
        out["tok/s/user"] = [num(v) for v in serving]
        out["TTFT p90 ms"] = [num(v * 1e3) for v in table["ttft_p90_s"]]
        out["TPOT p90 ms"] = [num(v * 1e3, 2) for v in table["tpot_p90_s"]]
    if with_ratios:
        marks = [WITHIN_RUN if flag else "" for flag in table["within_run_ci"].fillna(False).astype(bool)]
        for col, name in (("speed vs baseline [95% CI]", "speed"), ("tokens/$ vs baseline [95% CI]", "value")):
            cells = table[[f"{name}_ratio", f"{name}_lo", f"{name}_hi"]].itertuples(index=False)
            out[col] = [ratio(*v) + (m if math.isfinite(v[1]) else "") for v, m in zip(cells, marks, strict=True)]
        if any(marks):
            out.attrs["note"] = WITHIN_RUN_NOTE
    return flags.with_legend(out)


def _achieved(bound: object, tflops: float, gbps: float) -> str:
    """A kernel's figure on the axis of its bound: TFLOP/s when compute-bound, GB/s otherwise."""
    if bound == "compute" or (bound not in ("memory", "communication") and num(tflops)):
        return f"{num(tflops)} TFLOP/s" if num(tflops) else ""
    return f"{num(gbps)} GB/s" if num(gbps) else ""


def kernels_frame(kernels: pd.DataFrame, with_ratios: bool) -> pd.DataFrame:
    """The timed kernels as display strings, one row per system x kernel x variant x shape:
    step time, what it achieved on its bound's axis, and the fraction of the measured ceiling."""
    cells = zip(kernels["bound"], kernels["achieved_tflops"], kernels["achieved_gbps"], strict=True)
    out = pd.DataFrame(
        {
            "system": kernels["system"],
            "preset": kernels["preset"],
            "kernel": kernels["kernel"],
            "variant": kernels["variant"],
            "shape": kernels["shape"],
            "dtype": kernels["dtype"],
            "batch": [num(b) for b in kernels["batch"]],
            "runs": [num(r) for r in kernels["runs"]],
            "step ms": [num(v * 1e3) for v in kernels["median_s"]],
            "bound": kernels["bound"],
            "achieved": [_achieved(*c) for c in cells],
            "ceiling": [num(v, 2) for v in kernels["ceiling_fraction"]],
        }
    )
    if with_ratios:
        marks = [WITHIN_RUN if flag else "" for flag in kernels["within_run_ci"].fillna(False).astype(bool)]
        cells = kernels[["speed_ratio", "speed_lo", "speed_hi"]].itertuples(index=False)
        out["speed vs baseline [95% CI]"] = [
            ratio(*v) + (m if math.isfinite(v[1]) else "") for v, m in zip(cells, marks, strict=True)
        ]
        if any(marks):
            out.attrs["note"] = WITHIN_RUN_NOTE
    return out


def excluded_frame(excluded: pd.DataFrame) -> pd.DataFrame:
    cols = {"system": "system", "preset": "preset", "scenario": "scenario", "dtype": "dtype"}
    out = excluded[list(cols)].rename(columns=cols).copy()
    out["batch"] = [num(b) for b in excluded["batch"]]
    out["excluded because"] = excluded["excluded_reason"]
    return out


def claims_frame(results: list[ClaimResult]) -> pd.DataFrame:
    """One row per claim, for a newcomer: what was claimed, the verdict from our measurements (the
    result), the verdict from published evidence, and the speed the claim needs (break-even).
    Verdicts and ranges read "at the claim's date -> today" where the two differ."""
    rows, marked = [], False
    for r in results:
        c, best, pub = r.claim, r.best, r.published
        mark = WITHIN_RUN if best and min(best.runs) == 1 and math.isfinite(best.speed[1]) else ""
        marked = marked or bool(mark)
        rows.append(
            {
                "claim": c.id,
                "subject vs baseline": f"{c.subject.instance} vs {c.baseline.instance} ({c.scenario})",
                "claimed": claimed_words(c),
                "our verdict (the result)": arrow([r.verdict, r.verdict_today]),
                "measured speed [95% CI]": ratio(*best.speed) + mark if best else "",
                "published evidence": arrow([pub.verdict, pub.verdict_today]) if pub else "",
                "published ratio": published_range(pub) if pub else "",
                "speed needed (break-even)": when_pair(r.needs) if r.needs else "no shared price",
                # the deciding rows' warnings, both sides (bench.flags)
                "flags": flags.cell([s["flags"] for s in (best.subject, best.baseline)]) if best else "",
            }
        )
    frame = pd.DataFrame(rows)
    frame.attrs["no_wrap"] = ("claim", "speed needed (break-even)")
    frame.attrs["note"] = "Two figures: at the claim's date -> today. " + (WITHIN_RUN_NOTE if marked else "")
    return flags.with_legend(frame)


_AS = {"tokens_per_dollar": "tokens/$", "cost_per_token": "tokens/$", "throughput": "tokens/s", "peak_tflops": "TFLOPS"}


def claimed_words(c: claims.Claim) -> str:
    """`up to 50% lower cost to train (2.00x tokens/$)`: the claim's words, then what they mean."""
    v = c.value
    figure = f"{v[0]:g}-{v[-1]:g}" if isinstance(v, list) else ("" if v is None else f"{v:g}")
    words = f"{c.qualifier} {figure}{'' if c.unit[:1] in '%x' else ' '}{c.unit}".strip()
    ratio_ = f"{c.ratio[0]:.2f}x" + (f"-{c.ratio[1]:.2f}x" if c.ratio[1] != c.ratio[0] else "")
    return f"{words} (= {ratio_} {_AS.get(c.metric, c.metric)})"


def arrow(values: list[str]) -> str:
    """`a -> b` (the claim's date -> today), or one value when both agree."""
    return values[0] if len(set(values)) == 1 else " -> ".join(values)


def published_range(pub) -> str:
    """`0.82-1.18x -> 0.54-0.79x tokens/$ ratio`: the range over the pairs by date, or blank."""
    if not pub.ranges:
        return ""
    shown = [f"{lo:.2f}x" if round(lo, 2) == round(hi, 2) else f"{lo:.2f}-{hi:.2f}x" for lo, hi in pub.ranges.values()]
    only = f" ({next(iter(pub.ranges))} only)" if len(pub.ranges) == 1 else ""
    return f"{arrow(shown)} {pub.figure}{only}"


def when_pair(values: dict[str, float], fmt: str = "{:.2f}x") -> str:
    """`1.31x (claim date) -> 1.96x (today)`, or one figure when both dates agree."""
    shown = {when: fmt.format(v) for when, v in values.items()}
    if len(set(shown.values())) == 1:
        return next(iter(shown.values()))
    return " -> ".join(f"{v} ({when})" for when, v in shown.items())


def _flag(mfu: float) -> str:
    if mfu > 1:
        return " - impossible, above peak"
    return f" - implausible, above {claims.IMPLAUSIBLE_MFU}" if mfu > claims.IMPLAUSIBLE_MFU else ""


def reasons(res: ClaimResult) -> list[str]:
    """Why a claim got its verdict: what is missing, measured, needed and (im)plausible."""
    c, out = res.claim, []
    for side, n in ((c.subject, res.n_subject), (c.baseline, res.n_baseline)):
        if n == 0:
            out.append(
                f"no valid {'/'.join(claims.SCENARIOS[c.scenario])} results for the {side.family} family ({side.instance})"
            )
    if res.foreign:
        out.append(f"ignored {res.foreign} record(s) priced as a claimed instance but run on another device")
    if res.skipped.prefill:
        out.append(f"{res.skipped.prefill} prefill row(s) not counted: prefill alone cannot satisfy a serving claim")
    if c.scenario in claims.LATENCY_SCENARIOS:
        slow = f"; {res.skipped.slow} row(s) over it not counted" if res.skipped.slow else ""
        out.append(f"decode/serve rows count within the claim's TPOT bound of {c.tpot_ms:g} ms per output token{slow}")
    if c.metric in claims.PRICE_METRICS and not res.break_even:
        out.append(
            f"no price basis and region shared by {c.subject.instance} ({evidence.bases_of(c.subject.instance)})"
            f" and {c.baseline.instance} ({evidence.bases_of(c.baseline.instance)})"
        )
    if (best := res.best) is not None:
        lo, hi = best.speed[1:]
        runs = f"{best.runs[0]} and {best.runs[1]} run(s)"
        ci = f"95% CI {lo:.2f}-{hi:.2f}, {runs}" + (", within-run noise only" if min(best.runs) == 1 else "")
        ci = f"no CI: one run with fewer than 3 samples on a side, {runs}" if math.isnan(lo) else ci
        out.append(f"measured {best.speed[0]:.2f}x per-instance throughput on {best.workload} ({ci})")
        if c.metric in claims.PRICE_METRICS and res.needs:  # tokens/$ ratio = speed x threshold / need
            per_usd = {when: best.speed[0] * c.threshold / need for when, need in res.needs.items()}
            out.append(f"that is {when_pair(per_usd)} the baseline's tokens per dollar at {res.basis} prices")
        out.append(f"the verdict rests on: {best.rests_on}")  # whole-instance records win over scaled ones
        if best.subject["scale"] != 1.0 or best.baseline["scale"] != 1.0:
            out.append("throughput scaled linearly by devices to the claim's instances (assumed, not measured)")
    if res.sublinear:
        out.append(
            f"at sublinear scaling ({claims.SUBLINEAR_PER_DOUBLING:g} per doubling of devices) the verdict would be "
            + when_pair({w: v for w, v in res.sublinear.items()}, "{}")
        )
    if res.needs:
        at = f" at {res.basis} prices" if res.basis else ""
        out.append(f"needs {when_pair(res.needs)} the baseline's throughput{at}")
    others = [b for b in res.break_even if f"{b.basis} {b.region}" != res.basis]
    if others:
        out.append(
            "break-even at other bases: " + ", ".join(f"{b.basis} {b.region} {b.ratio:.2f}x ({b.when})" for b in others)
        )
    if c.metric == "peak_tflops":
        for when, on in (("claim date", c.date), ("today", None)):
            sp = claims.peak_per_instance(c.subject.instance, c.dtype, on)
            bp = claims.peak_per_instance(c.baseline.instance, c.dtype, on)
            if sp and bp:
                out.append(
                    f"catalog {c.dtype} peaks ({when}): {sp:.0f} vs {bp:.0f} TFLOP/s per instance = {sp / bp:.2f}x"
                )
    equal = {b.when: b.equal_mfu for b in res.break_even if f"{b.basis} {b.region}" == res.basis and b.equal_mfu}
    if equal:
        needed = {when: c.threshold / v for when, v in equal.items()}
        out.append(
            f"at equal MFU the subject gives {when_pair(equal)} the tokens per dollar, "
            f"so the claim needs {when_pair(needed)} the baseline's MFU"
        )
    if res.required_mfu:
        out.append(f"subject needs MFU {when_pair(res.required_mfu, '{:.2f}')}{_flag(max(res.required_mfu.values()))}")
    if res.baseline_mfu_limit:
        out.append(f"claim fails if the baseline reaches MFU {when_pair(res.baseline_mfu_limit, '{:.2f}')}")
    return out


def terminal_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """Strings safe for a terminal: control characters (escape sequences) replaced. Rich markup is
    neutralised where the strings are printed (bench.cli.print_frame renders cells as Text)."""
    return frame.map(textsafe.plain)


# ------------------------------------------------------------------ the page


def _html_table(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "<p><em>none</em></p>"
    head = "".join(f"<th>{textsafe.html_text(c)}</th>" for c in frame.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{textsafe.html_text(v)}</td>" for v in row) + "</tr>"
        for row in frame.itertuples(index=False)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _md_cell(value: object) -> str:
    """Inert markdown: no link (`[c](javascript:...)`), image, emphasis, HTML or table break."""
    return textsafe.markdown(value)


def _md_table(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "_none_\n"
    lines = ["| " + " | ".join(_md_cell(c) for c in frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines) + "\n"


_CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:90em}
table{border-collapse:collapse;margin:1em 0;font-size:0.85em}
th,td{border:1px solid #bbb;padding:0.25em 0.5em;text-align:left;vertical-align:top}
th{background:#eee} img{max-width:100%} figure{margin:1em 0} .muted{color:#666}"""
_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def sections(comparison: Comparison, claim_results: list[ClaimResult], sources: list[str]) -> list[tuple[str, object]]:
    """The report's content as (heading, body) pairs; body is a frame, a list of lines, or text."""
    with_ratios = comparison.baseline is not None
    base = f"Baseline: {comparison.baseline}." if with_ratios else "No baseline chosen (--baseline): no ratios."
    why = [f"{r.claim.id} (our measurements): " + "; ".join(reasons(r)) for r in claim_results]
    why += [
        f"{r.claim.id} (published evidence): " + "; ".join(r.published.reasons) for r in claim_results if r.published
    ]
    pooling = (
        "Rows: each system's newest run of a workload only (--latest)."
        if comparison.latest
        else "Rows: every run of a system and workload pooled (runs); step time = median of the runs' medians."
    )
    return [
        (
            "Inputs",
            [
                f"results: {', '.join(sources) or '(none)'}",
                f"systems: {', '.join(comparison.systems) or '(none)'}",
                base,
            ],
        ),
        ("Claims", claims_frame(claim_results)),
        ("Why each verdict", why),
        ("Comparison, matched by preset, scenario, dtype and batch", compare_frame(comparison.table, with_ratios)),
        ("Each system's best batch by tokens per dollar", compare_frame(comparison.best, with_ratios)),
        *(
            [
                (
                    "Timed kernels: achieved and fraction of the measured ceiling",
                    kernels_frame(comparison.kernels, with_ratios),
                )
            ]
            if not comparison.kernels.empty
            else []
        ),
        ("Excluded records", excluded_frame(comparison.excluded)),
        (
            "Method",
            [
                "$/1M tokens = usd_per_hour x share / (tokens_per_s x 3600) x 1e6; tokens/$ is its inverse x 1e6.",
                pooling,
                "Ratios: subject / baseline, 95% two-level percentile bootstrap CI: each side's runs resampled,"
                " then the step times within each run; with one run a side it covers within-run noise only.",
                "Break-even speed ratio = claimed tokens-per-dollar ratio x price_subject / price_baseline.",
                "Our verdict (the result): supported if the CI's lower end reaches the break-even, not supported if its upper end"
                " is below it (not reproduced for an 'up to' claim), else inconclusive.",
                "Published verdict: the same test on published pairs (seeds/evidence.yaml), tokens/$ ratio = speed ratio x"
                " price_baseline / price_subject; reproduced, not reproduced, inconclusive or no evidence. Evidence, not our measurement.",
            ],
        ),
    ]


def render_html(comparison: Comparison, claim_results: list[ClaimResult], sources: list[str]) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><meta http-equiv="Content-Security-Policy" content="{_CSP}">',
        f"<title>ppbench report</title><style>{_CSS}</style></head><body>",
        f'<h1>ppbench report</h1><p class="muted">generated {stamp}</p>',
    ]
    for heading, body in sections(comparison, claim_results, sources):
        parts.append(f"<h2>{textsafe.html_text(heading)}</h2>")
        if isinstance(body, pd.DataFrame):
            parts.append(_html_table(body))
            if body.attrs.get("note"):
                parts.append(f'<p class="muted">{textsafe.html_text(body.attrs["note"])}</p>')
        else:
            parts.append("<ul>" + "".join(f"<li>{textsafe.html_text(x)}</li>" for x in body) + "</ul>")
    parts.append("<h2>Figures</h2>")
    figs = figures(comparison)
    if not figs:
        parts.append("<p><em>none: no usable workload rows</em></p>")
    for caption, png in figs:
        alt = textsafe.html_text(caption)
        parts.append(
            f'<figure><img alt="{alt}" src="data:image/png;base64,{png}"><figcaption>{alt}</figcaption></figure>'
        )
    parts.append("</body></html>\n")
    return "\n".join(parts)


def render_md(comparison: Comparison, claim_results: list[ClaimResult], sources: list[str]) -> str:
    parts = [f"# ppbench report\n\n_generated {date.today().isoformat()}_\n"]
    for heading, body in sections(comparison, claim_results, sources):
        parts.append(f"## {heading}\n")
        parts.append(_md_table(body) if isinstance(body, pd.DataFrame) else "".join(f"- {_md_cell(x)}\n" for x in body))
        if isinstance(body, pd.DataFrame) and body.attrs.get("note"):
            parts.append(f"{_md_cell(body.attrs['note'])}\n")
    parts.append("## Figures\n")
    for caption, png in figures(comparison):
        parts.append(f"![{_md_cell(caption)}](data:image/png;base64,{png})\n")
    return "\n".join(parts)


def check_output(output: Path) -> None:
    """Raise BenchError unless `output` can be written: its folder exists and is writable, and it
    is not itself a folder. `ppbench report` checks this before loading or rendering anything."""
    from bench.results import check_destination

    output = Path(output)
    if output.is_dir():
        raise BenchError(f"cannot write report {output}: it is a folder; name a file (-o {output / 'report.html'})")
    if output.exists() and not output.is_file():
        raise BenchError(f"cannot write report {output}: it exists and is not a regular file")
    if not output.parent.is_dir():
        raise BenchError(f"cannot write report {output}: folder {output.parent} does not exist")
    check_destination(output.parent, f"cannot write report {output}:")


def write_report(text: str, output: Path) -> Path:
    """Write atomically (temp file + rename), so a failure never leaves half a report; a failure
    (no space left, the folder became read-only) is WriteError, one line."""
    output = Path(output)
    check_output(output)
    try:
        fd, tmp = tempfile.mkstemp(dir=output.parent, prefix=f".{output.name}.", suffix=".tmp")
    except OSError as exc:
        raise WriteError(f"cannot write report {output}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())  # a full disk can surface only here
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a report is an ordinary file
        os.replace(tmp, output)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise WriteError(f"cannot write report {output}: {exc.strerror or exc}; nothing was written") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return output
