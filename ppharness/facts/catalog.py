"""The price/spec catalog: accelerator peaks and EC2 instance prices, read from YAML.

Owns `configs/accelerators.yaml` (dense peak TFLOP/s per chip and dtype, memory bandwidth) and
`configs/instances.yaml` (accelerator and chip count per instance, prices by basis, region and
date, each with its source). Also owns the cost formula of DESIGN.md "Cost":

    usd_per_million_tokens = usd_per_hour * share / (tokens_per_s * 3600) * 1e6

The config directory is `<repo>/configs`, or `$PPBENCH_CONFIG_DIR` (tests point it at a temp
dir). Loading validates every entry and raises `CatalogError` with one line naming the bad value;
nothing here touches the network.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from ppharness import paths
from ppharness.errors import BenchError, read_yaml

BASES = ("on_demand", "ri_effective", "capacity_block", "spot")
DTYPES = ("float32", "tf32", "bfloat16", "float16", "float8")
_SCHEMA = 1


class CatalogError(BenchError):
    """Bad catalog file or lookup: one line naming the bad value and the valid choices."""


@dataclass(frozen=True)
class Accelerator:
    key: str
    vendor: str
    name: str
    cores_per_chip: int
    peak_tflops: dict[str, float]  # per chip, dense; only sourced dtypes are present
    mem_bw_gbps: float | None
    memory_gib: float | None
    source: str
    date: str
    notes: str = ""
    match: tuple[str, ...] = ()  # NVIDIA only: substrings of the CUDA device name
    peak_history: tuple[Peaks, ...] = ()  # older published peaks, oldest first; the last is today's

    def peak_tflops_for(self, dtype: str, on: date | None = None) -> float | None:
        """Dense peak TFLOP/s per chip for `dtype` as published on `on` (today if None), or None
        when no figure is sourced. A claim is held against the peak its vendor published then."""
        if on is not None:
            for peaks in reversed(self.peak_history):
                if (peaks.since or date.min) <= on:
                    return peaks.peak_tflops.get(dtype)
        return self.peak_tflops.get(dtype)


@dataclass(frozen=True)
class Peaks:
    """The peaks an accelerator's vendor published from `since` (None: from the first record)."""

    since: date | None
    peak_tflops: dict[str, float]
    source: str
    date: str
    note: str = ""


@dataclass(frozen=True)
class Price:
    instance: str
    basis: str
    region: str
    usd_per_hour: float
    since: date | None  # first day known in effect; None = from the earliest known date
    source: str
    date: str  # date of the source (snapshot, commit, page), not of the price change
    note: str = ""


@dataclass(frozen=True)
class Instance:
    name: str
    accelerator: str | None  # key into accelerators(); None for CPU-only instances
    chips: int
    vcpus: int
    memory_gib: float | None
    source: str
    date: str
    prices: tuple[Price, ...]
    notes: str = ""

    @property
    def devices(self) -> int:
        """Devices a run can use: NeuronCores on Neuron, GPUs on GPU hosts, 1 for CPU-only."""
        if self.accelerator is None or self.chips == 0:
            return 1
        return self.chips * accelerator(self.accelerator).cores_per_chip


def config_dir() -> Path:
    """`$PPBENCH_CONFIG_DIR` if set, else the repository's `configs/`."""
    env = os.environ.get("PPBENCH_CONFIG_DIR")
    return Path(env) if env else paths.configs()


def _choices(names: Any) -> str:
    return ", ".join(sorted(names)) or "(none)"


def _read_yaml(path: Path, top_key: str) -> dict[str, Any]:
    doc = read_yaml(path, "catalog file", CatalogError)
    if not isinstance(doc, dict) or doc.get("schema") != _SCHEMA:
        raise CatalogError(f"{path}: expected a mapping with 'schema: {_SCHEMA}' at the top")
    allowed = {"schema", top_key, "sources"}  # `sources`: YAML anchors for repeated strings
    unknown = sorted(str(k) for k in set(doc) - allowed)
    if unknown:
        raise CatalogError(f"{path}: unknown top-level key {unknown[0]!r}; valid: {_choices(allowed)}")
    entries = doc.get(top_key)
    if not isinstance(entries, dict) or not entries:
        raise CatalogError(f"{path}: expected a non-empty '{top_key}:' mapping")
    return entries


class _Fields:
    """Typed access to one YAML mapping, with errors that name the file and entry."""

    def __init__(self, raw: Any, where: str, allowed: set[str]) -> None:
        if not isinstance(raw, dict):
            raise CatalogError(f"{where}: expected a mapping, got {type(raw).__name__}")
        unknown = set(raw) - allowed
        if unknown:
            raise CatalogError(f"{where}: unknown key {sorted(unknown)[0]!r}; valid keys: {_choices(allowed)}")
        self.raw, self.where = raw, where

    def text(self, key: str, required: bool = True) -> str:
        value = self.raw.get(key)
        if value is None and not required:
            return ""
        if isinstance(value, date):  # an unquoted YAML date such as 2025-06-23
            return value.isoformat()
        if not isinstance(value, str) or not value.strip():
            raise CatalogError(f"{self.where}: '{key}' must be a non-empty string, got {value!r}")
        return value

    def number(self, key: str, *, optional: bool = False, positive: bool = False) -> float | None:
        value = self.raw.get(key)
        if value is None and optional:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise CatalogError(f"{self.where}: '{key}' must be a number >= 0, got {value!r}")
        if positive and value == 0:
            raise CatalogError(f"{self.where}: '{key}' must be > 0, got {value!r}")
        return float(value)

    def integer(self, key: str, minimum: int) -> int:
        value = self.raw.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise CatalogError(f"{self.where}: '{key}' must be an integer >= {minimum}, got {value!r}")
        return value


_ACC_KEYS = {"vendor", "name", "cores_per_chip", "peak_tflops", "mem_bw_gbps", "memory_gib"}
_ACC_KEYS |= {"source", "date", "notes", "match", "peak_history"}
_PEAK_KEYS = {"since", "peak_tflops", "source", "date", "note"}


def _peak_map(raw: Any, where: str) -> dict[str, float]:
    if not isinstance(raw, dict):
        raise CatalogError(f"{where}: 'peak_tflops' must be a mapping of dtype to TFLOP/s")
    pf = _Fields(raw, f"{where} peak_tflops", set(DTYPES))
    return {d: pf.number(d, positive=True) for d in raw}  # type: ignore[misc]


def _parse_peak_history(raw: Any, where: str, today: dict[str, float]) -> tuple[Peaks, ...]:
    """Published peaks by date, oldest first; the newest must be the accelerator's `peak_tflops`,
    so MFU (today's peak) and claims (the peak of their day) never disagree about the present."""
    if raw is None:
        return ()
    if not isinstance(raw, list) or not raw:
        raise CatalogError(f"{where}: 'peak_history' must be a non-empty list")
    out: list[Peaks] = []
    for i, item in enumerate(raw):
        f = _Fields(item, f"{where} peak_history[{i}]", _PEAK_KEYS)
        since = _parse_since(item.get("since"), f.where)
        if out and (since is None or since <= (out[-1].since or date.min)):
            raise CatalogError(f"{f.where}: 'since' must be later than the entry before it")
        out.append(
            Peaks(
                since,
                _peak_map(item.get("peak_tflops"), f.where),
                f.text("source"),
                f.text("date"),
                f.text("note", required=False),
            )
        )
    if out[-1].peak_tflops != today:
        raise CatalogError(f"{where}: the last peak_history entry must equal 'peak_tflops' (today's peaks)")
    return tuple(out)


def _parse_accelerator(key: str, raw: Any, path: Path) -> Accelerator:
    f = _Fields(raw, f"{path.name}: accelerator {key!r}", _ACC_KEYS)
    peaks = _peak_map(raw.get("peak_tflops") or {}, f.where)
    match = raw.get("match") or []
    if not isinstance(match, list) or not all(isinstance(m, str) and m for m in match):
        raise CatalogError(f"{f.where}: 'match' must be a list of non-empty strings")
    return Accelerator(
        key=key,
        vendor=f.text("vendor"),
        name=f.text("name"),
        cores_per_chip=f.integer("cores_per_chip", 1),
        peak_tflops=peaks,
        mem_bw_gbps=f.number("mem_bw_gbps", optional=True, positive=True),
        memory_gib=f.number("memory_gib", optional=True, positive=True),
        source=f.text("source"),
        date=f.text("date"),
        notes=f.text("notes", required=False),
        match=tuple(match),
        peak_history=_parse_peak_history(raw.get("peak_history"), f.where, peaks),
    )


def _parse_since(value: Any, where: str) -> date | None:
    if value is None or isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise CatalogError(f"{where}: 'since' must be null or YYYY-MM-DD, got {value!r}") from None


_PRICE_KEYS = {"basis", "region", "usd_per_hour", "since", "source", "date", "note"}
_INST_KEYS = {"accelerator", "chips", "vcpus", "memory_gib", "source", "date", "prices", "notes"}


def _parse_price(name: str, i: int, raw: Any, path: Path) -> Price:
    f = _Fields(raw, f"{path.name}: {name} prices[{i}]", _PRICE_KEYS)
    basis = f.text("basis")
    if basis not in BASES:
        raise CatalogError(f"{f.where}: unknown basis {basis!r}; valid bases: {_choices(BASES)}")
    return Price(
        instance=name,
        basis=basis,
        region=f.text("region"),
        usd_per_hour=f.number("usd_per_hour", positive=True),  # type: ignore[arg-type]
        since=_parse_since(raw.get("since"), f.where),
        source=f.text("source"),
        date=f.text("date"),
        note=f.text("note", required=False),
    )


def _parse_instance(name: str, raw: Any, path: Path, accs: dict[str, Accelerator]) -> Instance:
    f = _Fields(raw, f"{path.name}: instance {name!r}", _INST_KEYS)
    acc = raw.get("accelerator")
    if acc is not None and acc not in accs:
        raise CatalogError(f"{f.where}: unknown accelerator {acc!r}; valid accelerators: {_choices(accs)}")
    chips = f.integer("chips", 0)
    if (acc is None) != (chips == 0):
        raise CatalogError(f"{f.where}: 'chips' must be 0 exactly when 'accelerator' is null")
    prices = raw.get("prices") or []
    if not isinstance(prices, list):
        raise CatalogError(f"{f.where}: 'prices' must be a list")
    return Instance(
        name=name,
        accelerator=acc,
        chips=chips,
        vcpus=f.integer("vcpus", 1),
        memory_gib=f.number("memory_gib", optional=True, positive=True),
        source=f.text("source"),
        date=f.text("date"),
        prices=tuple(_parse_price(name, i, p, path) for i, p in enumerate(prices)),
        notes=f.text("notes", required=False),
    )


@functools.cache
def _load_accelerators(directory: Path) -> dict[str, Accelerator]:
    path = directory / "accelerators.yaml"
    raw = _read_yaml(path, "accelerators")
    return {str(k): _parse_accelerator(str(k), v, path) for k, v in raw.items()}


@functools.cache
def _load_instances(directory: Path) -> dict[str, Instance]:
    path = directory / "instances.yaml"
    accs = _load_accelerators(directory)
    raw = _read_yaml(path, "instances")
    return {str(k): _parse_instance(str(k), v, path, accs) for k, v in raw.items()}


def accelerators() -> dict[str, Accelerator]:
    """All accelerators by key (loaded once per config directory; the dict is a copy)."""
    return dict(_load_accelerators(config_dir()))


def instances() -> dict[str, Instance]:
    """All instances by name (loaded once per config directory; the dict is a copy)."""
    return dict(_load_instances(config_dir()))


def accelerator(key: str) -> Accelerator:
    accs = accelerators()
    if key not in accs:
        raise CatalogError(f"unknown accelerator {key!r}; valid accelerators: {_choices(accs)}")
    return accs[key]


def instance(name: str) -> Instance:
    return _lookup_instance(name)


def _lookup_instance(name: str) -> Instance:
    # Separate from `instance()` because price() and price_history() take a parameter of that name.
    insts = instances()
    if name not in insts:
        raise CatalogError(f"unknown instance {name!r}; valid instances: {_choices(insts)}")
    return insts[name]


def clear_cache() -> None:
    """Forget loaded catalogs (tests that edit files in place; normal runs never need it)."""
    _load_accelerators.cache_clear()
    _load_instances.cache_clear()


def match_device_name(device_name: str) -> str | None:
    """Accelerator key whose `match` pattern occurs in `device_name` as whole tokens, or None.

    A pattern must not be glued to letters or digits on either side, so "NVIDIA L4" does not
    match "NVIDIA L40S" and "A10G" does not match an A100; if several match, the longest wins.
    A best effort for NVIDIA names from the CUDA device name; the CUDA backend may refine
    it.
    """
    best: tuple[int, str] | None = None
    for acc in accelerators().values():
        for pattern in acc.match:
            token = rf"(?<![0-9A-Za-z]){re.escape(pattern)}(?![0-9A-Za-z])"
            if re.search(token, device_name) and (best is None or len(pattern) > best[0]):
                best = (len(pattern), acc.key)
    return best[1] if best else None


def price_history(instance: str, basis: str, region: str) -> list[Price]:
    """Prices for one instance, basis and region, oldest first (a null `since` sorts first)."""
    rows = [p for p in _lookup_instance(instance).prices if p.basis == basis and p.region == region]
    return sorted(rows, key=lambda p: p.since or date.min)


def price(instance: str, basis: str = "on_demand", region: str = "us-east-1", on: date | None = None) -> Price:
    """The price in effect on `on` (today if None): the latest entry with since <= on."""
    inst = _lookup_instance(instance)
    if basis not in BASES:
        raise CatalogError(f"unknown price basis {basis!r}; valid bases: {_choices(BASES)}")
    on = on or date.today()
    candidates = [p for p in price_history(instance, basis, region) if (p.since or date.min) <= on]
    if candidates:
        return candidates[-1]
    have = sorted({f"{p.basis}/{p.region}" for p in inst.prices})
    why = "before its earliest entry" if price_history(instance, basis, region) else "none listed"
    raise CatalogError(
        f"no {basis} price for {instance} in {region} on {on.isoformat()} ({why}); {instance} has: {_choices(have)}"
    )


@dataclass(frozen=True)
class Basis:
    """A price basis two instances are compared on, with each one's region: the same region where
    both are sold there, else each one's own (Capacity Blocks are sold per region: trn1.32xlarge in
    Melbourne, p4d.24xlarge in Ohio and Oregon)."""

    basis: str
    region: str  # the first instance's
    other_region: str  # the second instance's

    @property
    def label(self) -> str:
        """`on_demand us-east-1`, or `capacity_block ap-southeast-4 vs us-east-2` across regions."""
        where = self.region if self.region == self.other_region else f"{self.region} vs {self.other_region}"
        return f"{self.basis} {where}"


def comparable_bases(a: str, b: str) -> list[Basis]:
    """Every basis and region both instances are priced in; for a basis they share no region in,
    one pair across regions (each one's first region). On-demand first, then BASES order."""
    have = [{(p.basis, p.region) for p in _lookup_instance(name).prices} for name in (a, b)]
    out = [Basis(basis, region, region) for basis, region in sorted(have[0] & have[1])]
    for basis in BASES:
        regions = [sorted(r for bb, r in h if bb == basis) for h in have]
        if regions[0] and regions[1] and not any(x.basis == basis for x in out):
            out.append(Basis(basis, regions[0][0], regions[1][0]))
    return sorted(out, key=lambda x: (x.basis != "on_demand", BASES.index(x.basis), x.region, x.other_region))


def usd_per_million_tokens(usd_per_hour: float, tokens_per_s: float, share: float = 1.0) -> float:
    """Dollars per million tokens (DESIGN.md "Cost"; reference section 7).

    usd_per_hour * share / (tokens_per_s * 3600) * 1e6, where `share` in (0, 1] is the part of
    the instance the run used (see `share()`).
    """
    if usd_per_hour < 0:
        raise CatalogError(f"usd_per_hour must be >= 0, got {usd_per_hour!r}")
    if not tokens_per_s > 0:
        raise CatalogError(f"tokens_per_s must be > 0, got {tokens_per_s!r}")
    if not 0 < share <= 1:
        raise CatalogError(f"share must be in (0, 1], got {share!r}")
    return usd_per_hour * share / (tokens_per_s * 3600.0) * 1e6


def share(devices_used: int, inst: Instance) -> float:
    """Fraction of `inst` a run used: devices_used / inst.devices (e.g. 2 of 32 NeuronCores)."""
    if not 1 <= devices_used <= inst.devices:
        raise CatalogError(f"devices_used must be between 1 and {inst.devices} for {inst.name}, got {devices_used}")
    return devices_used / inst.devices


def peak_per_instance(name: str, dtype: str, on: date | None = None) -> float | None:
    """Dense peak TFLOP/s of a whole instance in `dtype` (chips x per-chip peak) as published on
    `on` (today if None), if known."""
    inst = instances().get(name)
    if inst is None or inst.accelerator is None:
        return None
    per_chip = accelerator(inst.accelerator).peak_tflops_for(dtype, on)
    return None if per_chip is None else per_chip * inst.chips
