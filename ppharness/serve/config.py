"""A serve run file: the `serve:` block and its validation, and the sweep of levels it expands to.

Kept apart from ppharness/serve/runner.py (which measures) so the run-file loader
(ppharness/run/config.py) and the load generator's argv (ppharness/serve/loadgen.py) read the
same definitions without importing the runner.
"""

from __future__ import annotations

import dataclasses
import itertools
import shlex
from dataclasses import dataclass
from typing import Any

from ppharness.errors import BenchError
from ppharness.facts import catalog
from ppharness.serve import endpoint

PRICE_BASES = ("on_demand", "ri_effective", "capacity_block", "spot")
GENERATORS = ("vllm",)  # `vllm bench serve`; guidellm would be a second entry with its own parser


@dataclass
class ServeConfig:
    """The `serve:` block of a run file."""

    endpoint: str  # base URL the server answers on (the launched one listens there)
    model: str  # the name the server serves the model under (`--served-model-name`)
    input_len: int | list[int]
    output_len: int | list[int]
    concurrency: int | list[int]
    launch: str | list[str] | None = None  # command that starts the server on this host
    tokenizer: str | None = None  # path or id the load generator tokenizes prompts with (default: model)
    engine: str = "vllm"  # the engine's name; its version is read from the server (/version)
    generator: str = "vllm"
    requests: int | None = None  # per level; default max(min_requests, 4 x concurrency)
    warmup_requests: int = 2
    min_requests: int = 16
    max_error_fraction: float = 0.0
    ready_timeout_s: float = 600.0
    level_timeout_s: float = 1800.0
    devices_used: int | None = None  # accelerators the server uses; None: the whole instance
    accelerator: str | None = None  # key into accelerators.yaml when no instance says it
    dtype: str = "-"  # as the server was told (a label: the server owns the weights' type)
    seed: int = 0


@dataclass
class ServeRunConfig:
    name: str
    serve: ServeConfig
    instance: str = "none"
    price_basis: str = "on_demand"
    region: str = "us-east-1"
    notes: str = ""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


TOP_KEYS = {f.name for f in dataclasses.fields(ServeRunConfig)}
SERVE_FIELDS = {f.name: f for f in dataclasses.fields(ServeConfig)}


def validate(raw: dict) -> ServeRunConfig:
    """A serve run file as a ServeRunConfig; anything wrong is one BenchError line."""
    unknown = set(raw) - TOP_KEYS
    if unknown:
        raise BenchError(
            f"unknown key {sorted(unknown, key=repr)[0]!r} in a serve run file; valid: {', '.join(sorted(TOP_KEYS))}"
        )
    if "name" not in raw:
        raise BenchError("run file is missing required key 'name'")
    s = raw["serve"]
    if not isinstance(s, dict):
        raise BenchError("serve must be a mapping")
    for key in set(s) - set(SERVE_FIELDS):
        raise BenchError(f"unknown key serve.{key}; valid: {', '.join(SERVE_FIELDS)}")
    for key in ("endpoint", "model", "input_len", "output_len", "concurrency"):
        if key not in s:
            raise BenchError(f"serve.{key} is required")
    try:
        url = endpoint.check_url(_text("serve.endpoint", s["endpoint"]))
    except ValueError as exc:
        raise BenchError(f"serve.{exc}") from None
    cfg = ServeConfig(endpoint=url, model=_text("serve.model", s["model"]),
                      input_len=_sizes("serve.input_len", s["input_len"]),
                      output_len=_sizes("serve.output_len", s["output_len"]),
                      concurrency=_sizes("serve.concurrency", s["concurrency"]))  # fmt: skip
    for key in ("tokenizer", "engine", "dtype", "accelerator"):
        if s.get(key) is not None:
            setattr(cfg, key, _text(f"serve.{key}", s[key]))
    if s.get("generator") is not None:
        cfg.generator = _choice("serve.generator", s["generator"], GENERATORS)
    if s.get("launch") is not None:
        cfg.launch = _launch(s["launch"])
    for key in ("requests", "min_requests", "devices_used"):
        if s.get(key) is not None:
            setattr(cfg, key, _positive(f"serve.{key}", s[key]))
    for key in ("warmup_requests", "seed"):
        if key in s:
            setattr(cfg, key, _count(f"serve.{key}", s[key]))
    for key in ("ready_timeout_s", "level_timeout_s"):
        if key in s:
            setattr(cfg, key, _seconds(f"serve.{key}", s[key]))
    if "max_error_fraction" in s:
        v = _number("serve.max_error_fraction", s["max_error_fraction"])
        if not 0 <= v < 1:
            raise BenchError(f"serve.max_error_fraction must be in [0, 1), got {v!r}")
        cfg.max_error_fraction = v
    if cfg.accelerator is not None:
        _choice("serve.accelerator", cfg.accelerator, tuple(catalog.accelerators()))
    out = ServeRunConfig(name=_text("name", raw["name"]), serve=cfg)
    out.instance = _text("instance", raw.get("instance", "none"))
    out.price_basis = _choice("price_basis", raw.get("price_basis", "on_demand"), PRICE_BASES)
    out.region = _text("region", raw.get("region", "us-east-1"))
    out.notes = _text("notes", raw.get("notes", "")) if raw.get("notes") else ""
    _check_pricing(out)
    return out


def _text(key: str, v: Any) -> str:
    if not isinstance(v, str) or not v.strip():
        raise BenchError(f"{key} must be a non-empty string, got {v!r}")
    return v


def _choice(key: str, v: Any, valid: tuple[str, ...]) -> str:
    if v not in valid:
        raise BenchError(f"unknown {key} {v!r}; valid: {', '.join(valid)}")
    return v


def _positive(key: str, v: Any) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
        raise BenchError(f"{key} must be a positive integer, got {v!r}")
    return v


def _count(key: str, v: Any) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise BenchError(f"{key} must be a non-negative integer, got {v!r}")
    return v


def _number(key: str, v: Any) -> float:
    if not isinstance(v, (int, float)) or isinstance(v, bool) or v != v:
        raise BenchError(f"{key} must be a number, got {v!r}")
    return float(v)


def _seconds(key: str, v: Any) -> float:
    v = _number(key, v)
    if not 0 < v < float("inf"):
        raise BenchError(f"{key} must be a positive number of seconds, got {v!r}")
    return v


def _sizes(key: str, v: Any) -> int | list[int]:
    items = v if isinstance(v, list) else [v]
    if not items:
        raise BenchError(f"{key} must be a positive integer or a non-empty list of them, got {v!r}")
    for item in items:
        _positive(key, item)
    return v


def _launch(v: Any) -> list[str]:
    argv = shlex.split(v) if isinstance(v, str) else v
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) and a for a in argv):
        raise BenchError(f"serve.launch must be a command line or a non-empty list of strings, got {v!r}")
    return argv


def _check_pricing(cfg: ServeRunConfig) -> None:
    if cfg.instance in ("none", "auto"):
        return
    try:
        inst = catalog.instance(cfg.instance)
        catalog.price(cfg.instance, cfg.price_basis, cfg.region)
        if cfg.serve.devices_used is not None:
            catalog.share(cfg.serve.devices_used, inst)
    except catalog.CatalogError as exc:
        raise BenchError(str(exc)) from None


@dataclass(frozen=True)
class Level:
    input_len: int
    output_len: int
    concurrency: int

    def label(self) -> str:
        return f"serve {self.input_len}/{self.output_len} c={self.concurrency}"


def levels(cfg: ServeConfig) -> list[Level]:
    """The sweep: every input length x output length x concurrency, lowest concurrency first."""
    as_list = lambda v: v if isinstance(v, list) else [v]  # noqa: E731
    return [
        Level(i, o, c)
        for i, o, c in itertools.product(as_list(cfg.input_len), as_list(cfg.output_len), as_list(cfg.concurrency))
    ]


def requests_for(cfg: ServeConfig, level: Level) -> int:
    return cfg.requests or max(cfg.min_requests, 4 * level.concurrency)
