"""A vendor claim as seeds/claims.yaml states it: the file's format, strict loading, and the
scenario and metric words it may use. Judging a claim is ppharness/judge/claims.py's."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path

from ppharness import paths
from ppharness.errors import BenchError, read_yaml
from ppharness.facts import catalog

CLAIMS_PATH = paths.seeds() / "claims.yaml"
# Rows that count for a claim's scenario. A serving claim is about generating tokens: prefill alone
# cannot satisfy it, so "inference" counts decode (and serving) rows, each within a TPOT bound.
SCENARIOS = {"train": ("train",), "inference": ("decode", "serve"), "prefill": ("prefill",), "decode": ("decode",)}
LATENCY_SCENARIOS = ("inference", "decode")  # claims whose rows must meet the TPOT bound
PRICE_METRICS = ("tokens_per_dollar", "cost_per_token")
METRICS = (*PRICE_METRICS, "throughput", "peak_tflops")
QUALIFIERS = ("up to", "")
DEFAULT_TPOT_MS = 100.0  # MLPerf Inference's server-scenario TPOT bound for Llama-3.1-8B (README)
_KEYS = set("id sources date paraphrase subject baseline scenario metric claimed notes dtype tpot_ms".split())


@dataclass(frozen=True)
class Side:
    family: str
    instance: str


@dataclass(frozen=True)
class Claim:
    id: str
    sources: tuple[str, ...]
    date: date
    paraphrase: str
    subject: Side
    baseline: Side
    scenario: str
    metric: str
    value: object  # as stated: a number, a [lo, hi] range, or None (qualitative)
    unit: str
    qualifier: str
    ratio: tuple[float, float]  # implied subject/baseline ratio (lo, hi); lo == hi for a number
    notes: str = ""
    dtype: str = "bfloat16"  # the dtype for peak-based figures (equal-MFU ratio, spec ratio)
    tpot_ms: float = DEFAULT_TPOT_MS  # inference claims: rows slower per output token do not count

    @property
    def threshold(self) -> float:
        """A range holds at its lower end ("30-40% better" is true at 30%)."""
        return self.ratio[0]


def _fail(where: str, msg: str) -> BenchError:
    return BenchError(f"{where}: {msg}")


def _side(raw: object, where: str) -> Side:
    if not isinstance(raw, dict) or not all(isinstance(raw.get(k), str) and raw.get(k) for k in ("family", "instance")):
        raise _fail(where, "must be a mapping with string 'family' and 'instance'")
    return Side(raw["family"], raw["instance"])


def _ratio(raw: object, where: str) -> tuple[float, float]:
    values = raw if isinstance(raw, list) else [raw]
    if len(values) not in (1, 2) or not all(type(v) in (int, float) and v > 0 for v in values):
        raise _fail(where, f"claimed.as_ratio must be a positive number or [lo, hi], got {raw!r}")
    lo, hi = float(values[0]), float(values[-1])
    if lo > hi:
        raise _fail(where, f"claimed.as_ratio range must be [lo, hi] with lo <= hi, got {raw!r}")
    return lo, hi


def _choice(value: object, choices: tuple[str, ...] | dict, what: str, where: str) -> str:
    if value not in choices:
        raise _fail(where, f"unknown {what} {value!r}; valid: {', '.join(repr(c) for c in choices)}")
    return str(value)


def _claim(raw: object, i: int, path: Path) -> Claim:
    where = f"{path.name} claims[{i}]"
    if not isinstance(raw, dict):
        raise _fail(where, "must be a mapping")
    where = f"{path.name} claim {raw.get('id', i)!r}"
    unknown = sorted(set(raw) - _KEYS)
    if unknown:
        raise _fail(where, f"unknown key {unknown[0]!r}; valid keys: {', '.join(sorted(_KEYS))}")
    for key in ("id", "paraphrase", "scenario", "metric"):
        if not isinstance(raw.get(key), str) or not raw[key]:
            raise _fail(where, f"'{key}' must be a non-empty string")
    if not isinstance(raw.get("date"), date):
        raise _fail(where, f"'date' must be a YYYY-MM-DD date, got {raw.get('date')!r}")
    sources = raw.get("sources")
    if not isinstance(sources, list) or not sources or not all(isinstance(s, str) and s for s in sources):
        raise _fail(where, "'sources' must be a non-empty list of strings")
    claimed = raw.get("claimed")
    if not isinstance(claimed, dict) or "as_ratio" not in claimed:
        raise _fail(where, "'claimed' must be a mapping with value, unit, qualifier and as_ratio")
    return Claim(
        id=raw["id"],
        sources=tuple(sources),
        date=raw["date"],
        paraphrase=raw["paraphrase"],
        subject=_side(raw.get("subject"), f"{where} subject"),
        baseline=_side(raw.get("baseline"), f"{where} baseline"),
        scenario=_choice(raw["scenario"], SCENARIOS, "scenario", where),
        metric=_choice(raw["metric"], METRICS, "metric", where),
        value=claimed.get("value"),
        unit=str(claimed.get("unit", "")),
        qualifier=_choice(claimed.get("qualifier", ""), QUALIFIERS, "qualifier", where),
        ratio=_ratio(claimed["as_ratio"], where),
        notes=str(raw.get("notes", "")),
        dtype=_choice(raw.get("dtype", "bfloat16"), catalog.DTYPES, "dtype", where),
        tpot_ms=_tpot(raw.get("tpot_ms", DEFAULT_TPOT_MS), where),
    )


def _tpot(value: object, where: str) -> float:
    if type(value) not in (int, float) or not 0 < value < 1e6:
        raise _fail(where, f"'tpot_ms' must be a positive number of milliseconds, got {value!r}")
    return float(value)


def load_claims(path: Path | None = None) -> list[Claim]:
    """Read and validate a claims file (schema 1); any problem is one BenchError line."""
    path = Path(path or CLAIMS_PATH)
    doc = read_yaml(path, "claims file")  # bounded: size and values (ppharness/errors.py)
    if not isinstance(doc, dict) or doc.get("schema") != 1 or not isinstance(doc.get("claims"), list):
        raise BenchError(f"claims file {path}: expected 'schema: 1' and a 'claims:' list")
    claims = [_claim(raw, i, path) for i, raw in enumerate(doc["claims"])]
    seen: set[str] = set()
    for c in claims:
        if c.id in seen:
            raise BenchError(f"claims file {path}: duplicate claim id {c.id!r}")
        seen.add(c.id)
    return claims
