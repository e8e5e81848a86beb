"""Run files: YAML loading, `--set dotted.key=value` overrides, strict validation, case expansion.

A run file is the whole run (DESIGN.md, "The run file"). Unknown keys, wrong types, non-positive
sizes, lengths beyond the model's maximum, unknown presets, backends, scenarios, instances or
price bases all raise `BenchError` with one line naming the key and the valid choices, before
anything is measured or written.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bench import catalog, errors
from bench.backends import base
from bench.errors import BenchError
from bench.scenarios import FIELDS, SCENARIOS, Case
from bench.sweep import AUTO, START_BATCH
from bench.timing import TimingConfig
from bench.workload import PRESETS, ModelConfig, model_config

PRICE_BASES = ("on_demand", "ri_effective", "capacity_block", "spot")


@dataclass
class RunConfig:
    name: str
    backends: list[str]
    model: str | dict
    scenarios: dict[str, dict[str, Any]]
    dtype: str | list[str] = "float32"
    compile: str | list[str] = "none"
    timing: TimingConfig = field(default_factory=TimingConfig)
    instance: str = "none"  # an EC2 type from configs/instances.yaml, "auto" (DMI) or "none"
    price_basis: str = "on_demand"
    region: str = "us-east-1"
    seed: int = 0
    check: bool = True  # compare logits with the CPU float32 reference before measuring
    backend_options: dict[str, dict] = field(default_factory=dict)

    @property
    def model_config(self) -> ModelConfig:
        return model_config(self.model)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


TOP_KEYS = {f.name: f for f in dataclasses.fields(RunConfig)}
TIMING_KEYS = {f.name: f for f in dataclasses.fields(TimingConfig)}
MODEL_KEYS = {f.name for f in dataclasses.fields(ModelConfig)} | {"preset"}


def load(path: Path | str | None, overrides: list[str] = (), backend: str | None = None):
    """A RunConfig, or for a file with a top-level `serve:` block a bench.serve.ServeRunConfig."""
    raw = read_yaml(Path(path)) if path else {}
    for item in overrides:
        apply_override(raw, item)
    if "serve" in raw:  # a serving run (bench/serve.py): no backends, model presets or scenarios
        from bench import serve

        if backend is not None:
            raise BenchError("--backend does not apply to a serve run file (the server is the engine)")
        return serve.validate(raw)
    if backend is not None:
        raw["backends"] = [backend]
    return validate(raw)


def read_yaml(path: Path) -> dict:
    data = errors.read_yaml(path, "run file")
    if not isinstance(data, dict):
        raise BenchError(f"run file {path}: expected a mapping of keys at the top level")
    return data


def apply_override(raw: dict, item: str) -> None:
    """`a.b.c=value`: the value is parsed as YAML (numbers, lists, booleans), the key checked."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise BenchError(f"--set expects key=value, got {item!r}")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except (yaml.YAMLError, ValueError, RecursionError):  # ValueError: PyYAML on dates like 2001-13-45
        raise BenchError(f"--set {key}: cannot parse value {text!r}") from None
    parts = key.strip().split(".")
    valid = _serve_keys() if "serve" in raw else TOP_KEYS  # a serve run file has its own keys
    if parts[0] not in valid:
        raise BenchError(f"unknown key {key!r} in --set; valid top-level keys: {', '.join(valid)}")
    node = raw
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None or (isinstance(child, str) and parts[0] == "model" and i == 0):
            # `--set model.n_layers=2` on top of a preset name keeps that preset as the base
            child = {"preset": child} if isinstance(child, str) else {}
            node[part] = child
        if not isinstance(child, dict):
            raise BenchError(f"--set {key}: {'.'.join(parts[: i + 1])} is not a mapping")
        node = child
    node[parts[-1]] = value


def _serve_keys() -> list[str]:
    from bench import serve

    return sorted(serve.TOP_KEYS)


def validate(raw: dict) -> RunConfig:
    unknown = set(raw) - set(TOP_KEYS)
    if unknown:
        raise BenchError(f"unknown key {sorted(unknown, key=repr)[0]!r}; valid top-level keys: {', '.join(TOP_KEYS)}")
    for key in ("name", "backends", "model", "scenarios"):
        if key not in raw:
            raise BenchError(f"run file is missing required key {key!r}")
    cfg = RunConfig(
        name=_typed("name", raw["name"], str),
        backends=_str_list("backends", raw["backends"]),
        model=_model(raw["model"]),
        scenarios=_scenarios(raw["scenarios"]),
        dtype=raw.get("dtype", "float32"),
        compile=raw.get("compile", "none"),
        timing=_timing(raw.get("timing", {})),
        instance=_typed("instance", raw.get("instance", "none"), str),
        price_basis=_choice("price_basis", raw.get("price_basis", "on_demand"), PRICE_BASES),
        region=_typed("region", raw.get("region", "us-east-1"), str),
        seed=_typed("seed", raw.get("seed", 0), int),
        check=_typed("check", raw.get("check", True), bool),
        backend_options=_typed("backend_options", raw.get("backend_options") or {}, dict),
    )
    for name in cfg.backends:
        cls = base.get(name)
        for d in _as_list(cfg.dtype):
            _choice("dtype", d, cls.dtypes, f" for backend {name}")
        for c in _as_list(cfg.compile):
            _choice("compile", c, cls.compile_modes, f" for backend {name}")
        base.parse_options(cls, _typed(f"backend_options.{name}", cfg.backend_options.get(name, {}), dict))
    for name in cfg.backend_options:
        base.get(name)  # an options block for an unknown backend is a typo
    _check_lengths(cfg)
    _check_instance(cfg)
    return cfg


def _as_list(value: Any) -> list:
    return value if isinstance(value, list) else [value]


def _typed(key: str, value: Any, kind: type) -> Any:
    bad_bool = kind in (int, float) and isinstance(value, bool)
    if kind is float and isinstance(value, int) and not bad_bool:
        return float(value)
    if not isinstance(value, kind) or bad_bool:
        raise BenchError(f"{key} must be {kind.__name__}, got {value!r}")
    return value


def _positive(key: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise BenchError(f"{key} must be a positive integer, got {value!r}")
    return value


def _choice(key: str, value: Any, valid: tuple[str, ...], context: str = "") -> str:
    if value not in valid:
        raise BenchError(f"unknown {key} {value!r}{context}; valid: {', '.join(valid)}")
    return value


def _str_list(key: str, value: Any) -> list[str]:
    items = _as_list(value)
    if not items or not all(isinstance(v, str) for v in items):
        raise BenchError(f"{key} must be a name or a non-empty list of names, got {value!r}")
    return items


def _model(value: Any) -> str | dict:
    if isinstance(value, str):
        _choice("model preset", value, tuple(PRESETS))
    elif isinstance(value, dict):
        unknown = set(value) - MODEL_KEYS
        if unknown:
            first = sorted(unknown, key=repr)[0]  # keys of a YAML mapping may be of mixed types
            raise BenchError(f"unknown key model.{first}; valid: {', '.join(sorted(MODEL_KEYS))}")
        if "preset" in value:
            _choice("model preset", value["preset"], tuple(PRESETS))
    else:
        raise BenchError(f"model must be a preset name ({', '.join(PRESETS)}) or a mapping, got {value!r}")
    try:
        model_config(value)
    except (TypeError, ValueError) as exc:
        raise BenchError(f"invalid model: {exc}") from None
    return value


def _scenarios(value: Any) -> dict:
    if not isinstance(value, dict) or not value:
        raise BenchError(f"scenarios must be a non-empty mapping of {', '.join(SCENARIOS)}")
    for name, params in value.items():
        _choice("scenario", name, SCENARIOS)
        if not isinstance(params, dict):
            raise BenchError(f"scenarios.{name} must be a mapping of {', '.join(FIELDS[name])}")
        for key in set(params) - set(FIELDS[name]):
            raise BenchError(f"unknown key scenarios.{name}.{key}; valid: {', '.join(FIELDS[name])}")
        for key in FIELDS[name]:
            if key not in params:
                raise BenchError(f"scenarios.{name}.{key} is required")
            if key == "batch" and params[key] == AUTO:
                continue  # measured: doubled until out of memory or no gain (bench/sweep.py)
            for v in _as_list(params[key]):
                if key == "batch" and not (isinstance(v, int) and not isinstance(v, bool) and v > 0):
                    raise BenchError(
                        f"scenarios.{name}.batch must be a positive integer, a list of them, or 'auto', got {v!r}"
                    )
                _positive(f"scenarios.{name}.{key}", v)
    return value


def _timing(value: Any) -> TimingConfig:
    _typed("timing", value, dict)
    out = {}
    defaults = TimingConfig()
    for key, v in value.items():
        if key not in TIMING_KEYS:
            raise BenchError(f"unknown key timing.{key}; valid: {', '.join(TIMING_KEYS)}")
        kind = type(getattr(defaults, key))
        if key == "remeasure":  # 0 is meaningful: never measure a contaminated window again
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise BenchError(f"timing.remeasure must be a non-negative integer, got {v!r}")
            out[key] = v
            continue
        out[key] = _positive(f"timing.{key}", v) if kind is int else _typed(f"timing.{key}", v, float)
        if kind is float and out[key] < 0:
            raise BenchError(f"timing.{key} must not be negative, got {v!r}")
    if "max_other_cpu" in out and not 0 < out["max_other_cpu"] <= 1:
        raise BenchError(
            f"timing.max_other_cpu must be a fraction of the host in (0, 1] (1: never INVALID), got {value['max_other_cpu']!r}"
        )
    return TimingConfig(**out)


def _check_lengths(cfg: RunConfig) -> None:
    limit = cfg.model_config.max_seq_len
    for case in expand(cfg):
        if case.length > limit:
            what = "prompt_len + new_tokens" if case.scenario == "decode" else "length"
            raise BenchError(f"scenarios.{case.scenario}: {what} {case.length} exceeds the model's max_seq_len {limit}")


def _check_instance(cfg: RunConfig) -> None:
    if cfg.instance in ("none", "auto"):
        return
    try:
        catalog.price(cfg.instance, cfg.price_basis, cfg.region)
    except catalog.CatalogError as exc:
        raise BenchError(str(exc)) from None


def expand(cfg: RunConfig) -> list[Case]:
    """Every case of the sweep: lists in dtype, compile and scenario sizes multiply out."""
    cases = []
    for dtype, compile_mode in itertools.product(_as_list(cfg.dtype), _as_list(cfg.compile)):
        for name, params in cfg.scenarios.items():
            keys = FIELDS[name]
            sizes = [[START_BATCH] if k == "batch" and params[k] == AUTO else _as_list(params[k]) for k in keys]
            for values in itertools.product(*sizes):  # `batch: auto` starts at 1; the runner doubles it
                cases.append(
                    Case(scenario=name, dtype=dtype, compile=compile_mode, **dict(zip(keys, values, strict=True)))
                )
    return cases
