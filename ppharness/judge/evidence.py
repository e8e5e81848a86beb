"""Published measurements as cited evidence: seeds/evidence.yaml -> entries, pairs, tokens per dollar.

Owns the evidence file format (strict loading, like ppharness.facts.catalog does the catalog) and the
figures derived from it. An entry is one figure somebody published (the Neuron docs' benchmark
tables, NVIDIA's, an independent report) for a system (an instance of configs/instances.yaml and
how many), converted to tokens/s per instance with its arithmetic written out; a pair holds a
subject and a baseline entry of one workload class with a comparability grade. Published figures
are never records of ours: nothing here reads or writes `results/`, and every table built from this
module says "published". What a pair can decide is ppharness.judge.rules'.

An entry whose source names two instances ("trn1.32xlarge/trn1n.32xlarge") lists the other in
`system.ambiguous_with`; a multi-instance figure may carry the scaling efficiency its source
publishes (`scaling`); a pair of two batch-1 serving or encoder figures must be graded
`batch-1-latency`, and a pair of figures on different instance counts `different-scale`.

    tokens/$ of an entry = tokens_per_s_per_instance * 3600 / usd_per_hour(instance, basis, region, date)
    pair ratio           = subject tokens/$ / baseline tokens/$   (speed ratio x price_base / price_sub)

Bad input is one `EvidenceError` line naming the entry (or pair) and the problem.
"""

from __future__ import annotations

import ast
import math
import operator
import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from ppharness import paths
from ppharness.errors import BenchError, read_yaml
from ppharness.facts import catalog

EVIDENCE_PATH = paths.seeds() / "evidence.yaml"
# train: pretraining; serve: generating tokens (TPOT applies); encode: an encoder's forward pass
# per request (no output tokens, so no TPOT)
SCENARIOS = ("train", "serve", "encode")
LATENCY_GRADE = "batch-1-latency"  # one request at a time on each side: latency, not throughput
SCALE_GRADE = "different-scale"
GRADES = ("same-workload-same-tool", "same-workload-different-stack", SCALE_GRADE, LATENCY_GRADE)
TOLERANCE = 0.005  # a conversion must reproduce its stated tokens/s within 0.5%
_SCHEMA = 1
_ID = re.compile(r"[a-z0-9][a-z0-9.-]*\Z")
_HEX = re.compile(r"[0-9a-f]{8,40}\Z")


class EvidenceError(BenchError):
    """Bad evidence file: one line naming the entry or pair and the problem."""


# ------------------------------------------------------------------ the conversion expression

_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def evaluate_expression(text: str) -> float:
    """Value of an arithmetic expression of numbers, + - * / and parentheses (nothing else).

    A walk over Python's AST that accepts only those nodes, so a data file can never run code.
    Raises ValueError naming what is not allowed."""
    if not isinstance(text, str) or not text.strip() or len(text) > 500:
        raise ValueError("must be a non-empty expression of at most 500 characters")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError:
        raise ValueError(f"{text!r} is not an arithmetic expression") from None

    def walk(node: ast.AST) -> float:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            return float(node.value)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            value = walk(node.operand)
            return -value if isinstance(node.op, ast.USub) else value
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            left, right = walk(node.left), walk(node.right)
            if isinstance(node.op, ast.Div) and right == 0:
                raise ValueError("divides by zero")
            return _OPS[type(node.op)](left, right)
        raise ValueError(f"only numbers, + - * / and parentheses are allowed, not {ast.unparse(node)!r}")

    value = walk(tree)
    if not math.isfinite(value):
        raise ValueError("is not a finite number")
    return value


# ------------------------------------------------------------------ the file


@dataclass(frozen=True)
class Source:
    url: str
    repo: str
    path: str
    commit: str
    title: str

    @property
    def cite(self) -> str:
        """`repo@commit path` when the repository is named, else the URL."""
        if self.repo and self.path and self.commit:
            return f"{self.repo}@{self.commit[:12]} {self.path}"
        return self.url


@dataclass(frozen=True)
class Workload:
    cls: str
    scenario: str
    model: str
    params: float | None
    seq_len: int | None  # the sequence length the source states (serving: prompt + output capacity)
    output_len: int | None
    global_batch: int | None
    precision: str
    parallelism: str
    stack: str
    stack_version: str
    input_len: int | None = None  # serving: prompt tokens per request


@dataclass(frozen=True)
class Entry:
    id: str
    instance: str
    count: int
    hardware: str
    priced_as: bool
    workload: Workload
    value: float  # the figure exactly as published
    unit: str
    scope: str
    tokens_per_s: float  # per instance, converted
    conversion: str
    conversion_note: str
    source: Source
    source_date: date
    measured: str
    note: str = ""
    tpot_ms: float | None = None  # serving: time per output token, published or derived
    ambiguous_with: tuple[str, ...] = ()  # other instances the source's label allows
    scaling_efficiency: float | None = None  # multi-instance figures: as the source publishes it
    scaling_source: str = ""

    @property
    def instances(self) -> tuple[str, ...]:
        """Every instance the figure may have run on: the named one first."""
        return (self.instance, *self.ambiguous_with)

    @property
    def batch_1(self) -> bool:
        """One request at a time: a serving or encoder figure at batch (or concurrency) 1."""
        return self.workload.scenario in ("serve", "encode") and self.workload.global_batch == 1

    @property
    def tpot(self) -> float | None:
        """TPOT in ms: as given, or the published figure itself when it is ms/token."""
        if self.tpot_ms is not None:
            return self.tpot_ms
        return self.value if self.unit.replace(" ", "").lower() == "ms/token" else None


@dataclass(frozen=True)
class Pair:
    id: str
    cls: str
    subject: str
    baseline: str
    grade: str
    reason: str


@dataclass(frozen=True)
class Evidence:
    path: Path
    entries: dict[str, Entry]
    pairs: tuple[Pair, ...]


class _Map:
    """Typed access to one mapping of the file; every error names `where`."""

    def __init__(self, raw: Any, where: str, required: set[str], optional: set[str] = frozenset()) -> None:
        if not isinstance(raw, dict):
            raise EvidenceError(f"{where}: expected a mapping, got {type(raw).__name__}")
        unknown = sorted(str(k) for k in set(raw) - required - optional)
        if unknown:
            raise EvidenceError(
                f"{where}: unknown key {unknown[0]!r}; valid keys: {', '.join(sorted(required | optional))}"
            )
        missing = sorted(k for k in required if raw.get(k) is None or raw.get(k) == "")
        if missing:
            raise EvidenceError(f"{where}: missing '{missing[0]}'")
        self.raw, self.where = raw, where

    def text(self, key: str) -> str:
        value = self.raw.get(key)
        if value is None:
            return ""
        if isinstance(value, date):
            return value.isoformat()
        if not isinstance(value, (str, int, float)) or isinstance(value, bool) or not str(value).strip():
            raise EvidenceError(f"{self.where}: '{key}' must be a non-empty string, got {value!r}")
        return str(value)

    def number(self, key: str, *, integer: bool = False) -> float | None:
        value = self.raw.get(key)
        if value is None:
            return None
        if isinstance(value, str) and not integer:  # PyYAML reads 3.4e8 (no sign in the exponent) as text
            try:
                value = float(value)
            except ValueError:
                pass
        kinds = (int,) if integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, kinds) or not math.isfinite(value) or value <= 0:
            what = "a positive integer" if integer else "a positive number"
            raise EvidenceError(f"{self.where}: '{key}' must be {what}, got {value!r}")
        return value

    def when(self, key: str) -> date:
        value = self.raw.get(key)
        if isinstance(value, date):
            return value
        try:
            return date.fromisoformat(str(value))
        except ValueError:
            raise EvidenceError(f"{self.where}: '{key}' must be a YYYY-MM-DD date, got {value!r}") from None


_WORKLOAD_REQ = {"class", "scenario", "model"}
_WORKLOAD_OPT = {"params", "seq_len", "output_len", "global_batch", "precision", "parallelism", "stack"}
_WORKLOAD_OPT |= {"stack_version", "input_len"}
_ENTRY_REQ = {"id", "system", "workload", "published", "tokens_per_s_per_instance", "conversion", "source"}
_ENTRY_REQ |= {"source_date", "measured"}
_ENTRY_OPT = {"conversion_note", "note", "scaling"}


def _source(raw: Any, where: str) -> Source:
    if raw is None:
        raise EvidenceError(f"{where}: missing source (url, or repo + path + commit)")
    f = _Map(raw, f"{where} source", set(), {"url", "repo", "path", "commit", "title"})
    url, repo, path, commit = (f.text(k) for k in ("url", "repo", "path", "commit"))
    if not url and not (repo and path and commit):
        raise EvidenceError(f"{where}: missing source (url, or repo + path + commit)")
    if url and not url.startswith(("https://", "http://")):
        raise EvidenceError(f"{where}: source url must start with https:// or http://, got {url!r}")
    if commit and not _HEX.match(commit):
        raise EvidenceError(f"{where}: source commit must be 8-40 hex digits, got {commit!r}")
    return Source(url, repo, path, commit, f.text("title"))


def _entry(raw: Any, i: int, name: str, instances: dict[str, catalog.Instance]) -> Entry:
    ident = raw.get("id") if isinstance(raw, dict) else None
    where = f"{name} entry {ident!r}" if isinstance(ident, str) else f"{name} entries[{i}]"
    if isinstance(raw, dict) and raw.get("source") is None:
        raise EvidenceError(f"{where}: missing source (url, or repo + path + commit)")
    if isinstance(raw, dict) and raw.get("source_date") is None:
        raise EvidenceError(f"{where}: missing source_date (when the source published the figure)")
    f = _Map(raw, where, _ENTRY_REQ, _ENTRY_OPT)
    if not isinstance(ident, str) or not _ID.match(ident):
        raise EvidenceError(f"{where}: 'id' must match [a-z0-9][a-z0-9.-]*, got {ident!r}")
    sys_ = _Map(raw["system"], f"{where} system", {"instance", "count"}, {"hardware", "priced_as", "ambiguous_with"})
    inst = sys_.text("instance")
    if inst not in instances:
        raise EvidenceError(f"{where}: unknown instance {inst!r}; valid instances: {', '.join(sorted(instances))}")
    ambiguous = _ambiguous(raw["system"].get("ambiguous_with"), inst, instances, where)
    count = int(sys_.number("count", integer=True))  # type: ignore[arg-type]
    efficiency, scaling_source = _scaling(raw.get("scaling"), count, where)
    priced_as = raw["system"].get("priced_as", False)
    if not isinstance(priced_as, bool):
        raise EvidenceError(f"{where}: system 'priced_as' must be true or false, got {priced_as!r}")
    wl = _Map(raw["workload"], f"{where} workload", _WORKLOAD_REQ, _WORKLOAD_OPT)
    scenario = wl.text("scenario")
    if scenario not in SCENARIOS:
        raise EvidenceError(f"{where}: unknown workload scenario {scenario!r}; valid: {', '.join(SCENARIOS)}")
    pub = _Map(raw["published"], f"{where} published", {"value", "unit", "scope"}, {"tpot_ms"})
    value, tps = pub.number("value"), f.number("tokens_per_s_per_instance")
    try:
        converted = evaluate_expression(raw["conversion"])
    except ValueError as exc:
        raise EvidenceError(f"{where}: conversion {exc}") from None
    if abs(converted - tps) > TOLERANCE * tps:
        raise EvidenceError(
            f"{where}: conversion {raw['conversion']!r} gives {converted:,.6g} tokens/s, "
            f"not the stated tokens_per_s_per_instance {tps:,.6g} (tolerance {TOLERANCE:.1%})"
        )
    return Entry(
        id=ident,
        instance=inst,
        count=count,
        hardware=sys_.text("hardware"),
        priced_as=priced_as,
        workload=Workload(
            cls=wl.text("class"),
            scenario=scenario,
            model=wl.text("model"),
            params=wl.number("params"),
            seq_len=wl.number("seq_len", integer=True),  # type: ignore[arg-type]
            output_len=wl.number("output_len", integer=True),  # type: ignore[arg-type]
            global_batch=wl.number("global_batch", integer=True),  # type: ignore[arg-type]
            **{k: wl.text(k) for k in ("precision", "parallelism", "stack", "stack_version")},
            input_len=wl.number("input_len", integer=True),  # type: ignore[arg-type]
        ),
        value=float(value),  # type: ignore[arg-type]
        unit=pub.text("unit"),
        scope=pub.text("scope"),
        tokens_per_s=float(tps),  # type: ignore[arg-type]
        conversion=f.text("conversion"),
        conversion_note=f.text("conversion_note"),
        source=_source(raw["source"], where),
        source_date=f.when("source_date"),
        measured=f.text("measured"),
        note=f.text("note"),
        tpot_ms=pub.number("tpot_ms"),
        ambiguous_with=ambiguous,
        scaling_efficiency=efficiency,
        scaling_source=scaling_source,
    )


def _ambiguous(raw: Any, inst: str, instances: dict[str, catalog.Instance], where: str) -> tuple[str, ...]:
    """The other instances a source's label allows: catalog instances of the same hardware."""
    if raw is None:
        return ()
    if not isinstance(raw, list) or not raw or not all(isinstance(x, str) for x in raw):
        raise EvidenceError(f"{where}: system 'ambiguous_with' must be a non-empty list of instance names")
    own = instances[inst]
    for name in raw:
        if name not in instances:
            raise EvidenceError(f"{where}: unknown instance {name!r} in ambiguous_with")
        other = instances[name]
        if name == inst or (other.accelerator, other.chips) != (own.accelerator, own.chips):
            raise EvidenceError(
                f"{where}: ambiguous_with {name!r} must be another instance with the same accelerators as {inst!r}"
            )
    return tuple(dict.fromkeys(raw))


def _scaling(raw: Any, count: int, where: str) -> tuple[float | None, str]:
    """A multi-instance figure's scaling efficiency as its source publishes it, and that source."""
    if raw is None:
        return None, ""
    f = _Map(raw, f"{where} scaling", {"efficiency", "source"})
    value = f.number("efficiency")
    if count < 2 or not 0 < value <= 1:  # type: ignore[operator]
        raise EvidenceError(f"{where}: scaling efficiency must be in (0, 1] and only on a figure of 2+ instances")
    return float(value), f.text("source")  # type: ignore[arg-type]


def _pair(raw: Any, i: int, name: str, entries: dict[str, Entry]) -> Pair:
    ident = raw.get("id") if isinstance(raw, dict) else None
    where = f"{name} pair {ident!r}" if isinstance(ident, str) else f"{name} pairs[{i}]"
    f = _Map(raw, where, {"id", "class", "subject", "baseline", "grade", "reason"})
    cls, grade = f.text("class"), f.text("grade")
    sides = {}
    for side in ("subject", "baseline"):
        key = f.text(side)
        if key not in entries:
            raise EvidenceError(f"{where}: unknown {side} entry {key!r}")
        sides[side] = entries[key]
        if entries[key].workload.cls != cls:
            raise EvidenceError(
                f"{where}: {side} {key!r} is workload class {entries[key].workload.cls!r}, not the pair's {cls!r}"
            )
    if sides["subject"].id == sides["baseline"].id:
        raise EvidenceError(f"{where}: subject and baseline are the same entry")
    if grade not in GRADES:
        raise EvidenceError(f"{where}: unknown grade {grade!r}; valid: {', '.join(GRADES)}")
    sub, base = sides["subject"], sides["baseline"]
    if (sub.batch_1 and base.batch_1) != (grade == LATENCY_GRADE):
        raise EvidenceError(
            f"{where}: a pair of two batch-1 serving/encoder figures, and only such a pair, is graded {LATENCY_GRADE}"
        )
    n_sub, n_base = sub.count * _chips(sub), base.count * _chips(base)
    if grade == SCALE_GRADE and n_sub == n_base:
        raise EvidenceError(f"{where}: graded {SCALE_GRADE} but both sides run on {n_sub} accelerators")
    if sub.count != base.count and grade != SCALE_GRADE:
        raise EvidenceError(f"{where}: {sub.count} vs {base.count} instances must be graded {SCALE_GRADE}")
    return Pair(ident, cls, sides["subject"].id, sides["baseline"].id, grade, f.text("reason"))  # type: ignore[arg-type]


def _chips(entry: Entry) -> int:
    return catalog.instance(entry.instance).chips


def load(path: Path | None = None) -> Evidence:
    """Read and validate an evidence file (schema 1); any problem is one EvidenceError line."""
    path = Path(path or EVIDENCE_PATH)
    doc = read_yaml(path, "evidence file", EvidenceError)
    name = path.name
    if not isinstance(doc, dict) or doc.get("schema") != _SCHEMA:
        raise EvidenceError(f"{name}: expected a mapping with 'schema: {_SCHEMA}' at the top")
    unknown = sorted(str(k) for k in set(doc) - {"schema", "entries", "pairs"})
    if unknown:
        raise EvidenceError(f"{name}: unknown top-level key {unknown[0]!r}; valid: entries, pairs, schema")
    raw_entries, raw_pairs = doc.get("entries") or [], doc.get("pairs") or []
    if not isinstance(raw_entries, list) or not isinstance(raw_pairs, list):
        raise EvidenceError(f"{name}: 'entries' and 'pairs' must be lists")
    instances = catalog.instances()
    entries: dict[str, Entry] = {}
    for i, raw in enumerate(raw_entries):
        entry = _entry(raw, i, name, instances)
        if entry.id in entries:
            raise EvidenceError(f"{name} entry {entry.id!r}: duplicate id")
        entries[entry.id] = entry
    pairs: list[Pair] = []
    for i, raw in enumerate(raw_pairs):
        pair = _pair(raw, i, name, entries)
        if pair.id in {p.id for p in pairs}:
            raise EvidenceError(f"{name} pair {pair.id!r}: duplicate id")
        pairs.append(pair)
    return Evidence(path, entries, tuple(pairs))


# ------------------------------------------------------------------ figures


def bases_of(name: str) -> str:
    """`on_demand us-east-1, spot us-east-2`: what an instance is priced in, for a reason line."""
    return ", ".join(sorted({f"{p.basis} {p.region}" for p in catalog.instance(name).prices})) or "no price"


def tokens_per_usd(entry: Entry, basis: str, region: str, on: date) -> float:
    """Tokens per dollar of one instance at its published speed: tokens/s x 3600 / usd_per_hour."""
    return entry.tokens_per_s * 3600.0 / catalog.price(entry.instance, basis, region, on).usd_per_hour


@dataclass(frozen=True)
class PairFigure:
    """A pair at one price basis and date (at the instances the entries name): its speed ratio and
    its tokens-per-dollar ratio."""

    basis: catalog.Basis
    on: date
    usd_subject: float
    usd_baseline: float
    speed: float  # subject / baseline tokens/s per instance
    per_usd: float  # subject / baseline tokens per dollar

    @property
    def at(self) -> str:
        return self.basis.label


def basis_named(sub: str, base: str, name: str | None = None) -> list[catalog.Basis]:
    """The bases two instances are compared on (catalog.comparable_bases), only those of basis
    `name` when given."""
    return [b for b in catalog.comparable_bases(sub, base) if name is None or b.basis == name]


def pair_figure(ev: Evidence, pair: Pair, on: date, basis: str | None = None) -> PairFigure | None:
    """The pair at the first comparable basis (of name `basis` when given) that prices both named
    instances on `on`, or None when none does."""
    sub, base = ev.entries[pair.subject], ev.entries[pair.baseline]
    for b in basis_named(sub.instance, base.instance, basis):
        try:
            ps = catalog.price(sub.instance, b.basis, b.region, on).usd_per_hour
            pb = catalog.price(base.instance, b.basis, b.other_region, on).usd_per_hour
        except catalog.CatalogError:
            continue
        speed = sub.tokens_per_s / base.tokens_per_s
        return PairFigure(b, on, ps, pb, speed, speed * pb / ps)
    return None


def fmt(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def describe(entry: Entry) -> str:
    """`trn1.32xlarge x32: 47.95 seq/s` -- the system and the figure as published; `priced as
    p4d.24xlarge: ...` when the measurement ran elsewhere (a DGX A100) and is only priced as it;
    `trn1.32xlarge or trn1n.32xlarge` when the source does not say which ran."""
    count = f" x{entry.count}" if entry.count > 1 else ""
    name = " or ".join(entry.instances)
    return f"{'priced as ' if entry.priced_as else ''}{name}{count}: {fmt(entry.value)} {entry.unit}"
