"""Run files: YAML loading, `--set dotted.key=value` overrides, strict validation, case expansion.

A run file is the whole run (DESIGN.md, "The run file"). Unknown keys, wrong types, non-positive
sizes, lengths beyond the model's maximum, unknown presets, backends, scenarios, instances or
price bases all raise `BenchError` with one line naming the key and the valid choices, before
anything is measured or written.

Every value is checked for type, range and relation, including the options of backends this run
does not use: floats are finite and not negative, `min_* <= max_*`, a swept list is never empty,
sizes stay below 2**31. Every size is bounded: a string holds at most MAX_STRING characters, the
whole document at most MAX_VALUES values with YAML aliases counted as the copies they expand to
(a "billion laughs" file is refused, not expanded), a run at most MAX_CASES cases. YAML is read
with YAML 1.2 floats (`1e-3` is a number).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ppharness import backends, errors
from ppharness.core import parallel
from ppharness.core.scenarios import FIELDS, SCENARIOS, Case
from ppharness.core.timing import TimingConfig
from ppharness.core.workload import PRESETS, ModelConfig, model_config
from ppharness.errors import BenchError
from ppharness.facts import catalog
from ppharness.run.sweep import AUTO, START_BATCH
from ppharness.serve import config as serve_config

PRICE_BASES = ("on_demand", "ri_effective", "capacity_block", "spot")
MAX_STRING = 1024  # characters in any string of a run file (a name, a region, a compiler flag)
MAX_VALUES = 10_000  # values in a whole run file, every YAML alias counted as its full expansion
MAX_CASES = 10_000  # cases in one run: the sweep's lists multiplied out
MAX_SIZE = 2**31 - 1  # any count or length (model sizes, batch, lengths, iterations)
MAX_THREADS = 4096  # backend_options.cpu.threads, before the host's own CPU count is checked


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
    parallel: parallel.ParallelConfig = field(default_factory=parallel.ParallelConfig)  # ppharness/core/parallel.py

    @property
    def model_config(self) -> ModelConfig:
        return model_config(self.model)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


TOP_KEYS = {f.name: f for f in dataclasses.fields(RunConfig)}
TIMING_KEYS = {f.name: f for f in dataclasses.fields(TimingConfig)}
MODEL_KEYS = {f.name for f in dataclasses.fields(ModelConfig)} | {"preset"}


def load(path: Path | str | None, overrides: list[str] = (), backend: str | None = None):
    """A RunConfig, or for a file with a top-level `serve:` block a ppharness.serve.config.ServeRunConfig."""
    raw = read_yaml(Path(path)) if path else {}
    for item in overrides:
        apply_override(raw, item)
    if "serve" in raw:  # a serving run (ppharness/serve/runner.py): no backends, model presets or scenarios
        if backend is not None:
            raise BenchError("--backend does not apply to a serve run file (the server is the engine)")
        return serve_config.validate(raw)
    if backend is not None:
        raw["backends"] = [backend]
    return validate(raw)


def read_yaml(path: Path) -> dict:
    data = errors.read_yaml(path, "run file", loader=errors.Loader, limit=MAX_VALUES)
    if not isinstance(data, dict):
        raise BenchError(f"run file {path}: expected a mapping of keys at the top level")
    return data


def apply_override(raw: dict, item: str) -> None:
    """`a.b.c=value`: the value is parsed as YAML (numbers, lists, booleans), the key checked."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise BenchError(f"--set expects key=value, got {item!r}")
    if len(item) > MAX_STRING * 16:
        raise BenchError(f"--set {key.strip()[:80]}: value of {len(text):,} characters is too long")
    try:
        value = errors.safe_load(text, errors.Loader, MAX_VALUES) if text.strip() else ""
    except (yaml.YAMLError, ValueError, RecursionError):  # ValueError: PyYAML on dates like 2001-13-45
        raise BenchError(
            f"--set {key.strip()[:80]}: cannot parse value {_show(text)} (or it expands too far)"
        ) from None
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
    return sorted(serve_config.TOP_KEYS)


def validate(raw: dict) -> RunConfig:
    _check_sizes(raw)
    unknown = set(raw) - set(TOP_KEYS)
    if unknown:
        raise BenchError(f"unknown key {sorted(unknown, key=repr)[0]!r}; valid top-level keys: {', '.join(TOP_KEYS)}")
    for key in ("name", "backends", "model", "scenarios"):
        if key not in raw:
            raise BenchError(f"run file is missing required key {key!r}")
    cfg = RunConfig(
        name=_name(raw["name"]),
        backends=_str_list("backends", raw["backends"]),
        model=_model(raw["model"]),
        scenarios=_scenarios(raw["scenarios"]),
        dtype=_sweep_names("dtype", raw.get("dtype", "float32")),
        compile=_sweep_names("compile", raw.get("compile", "none")),
        timing=_timing(raw.get("timing", {})),
        instance=_typed("instance", raw.get("instance", "none"), str),
        price_basis=_choice("price_basis", raw.get("price_basis", "on_demand"), PRICE_BASES),
        region=_typed("region", raw.get("region", "us-east-1"), str),
        seed=_seed(raw.get("seed", 0)),
        check=_typed("check", raw.get("check", True), bool),
        backend_options=_typed("backend_options", raw.get("backend_options") or {}, dict),
        parallel=parallel.parse(
            raw.get("parallel"), {n: backends.get(n).strategies for n in _str_list("backends", raw["backends"])}
        ),
    )
    options = {}
    for name, block in cfg.backend_options.items():  # every block, used by this run or not
        cls = backends.get(name)  # an options block for an unknown backend is a typo
        options[name] = backends.parse_options(cls, _typed(f"backend_options.{name}", block or {}, dict))
    for name in cfg.backends:
        cls = backends.get(name)
        for d in _as_list(cfg.dtype):
            _choice("dtype", d, cls.dtypes, f" for backend {name}")
        for c in _as_list(cfg.compile):
            _choice("compile", c, cls.compile_modes, f" for backend {name}")
        cls.check_host_options(options.get(name) or backends.parse_options(cls, {}))  # e.g. threads <= CPUs here
    _check_case_count(cfg)
    _check_lengths(cfg)
    _check_instance(cfg)
    check_world(cfg, 1)
    return cfg


def _show(value: Any, limit: int = 60) -> str:
    """repr(value) cut to `limit` characters: an error line never carries a huge hostile value."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_sizes(raw: Any) -> None:
    """Bound the document before reading it: at most MAX_VALUES values once aliases are expanded
    (a cycle or a billion laughs stops at the bound), strings of at most MAX_STRING characters,
    integers within 64 bits."""
    count, stack = 0, [("", raw)]
    while stack:
        where, item = stack.pop()
        count += 1
        if count > MAX_VALUES:
            raise BenchError(
                f"run file too large: more than {MAX_VALUES:,} values once YAML aliases are expanded"
                f" (at {_show(where or 'the top', 80)})"
            )
        at = where or "the top level"
        if isinstance(item, str) and len(item) > MAX_STRING:
            raise BenchError(f"{at}: a string of {len(item):,} characters (at most {MAX_STRING:,})")
        if isinstance(item, int) and not isinstance(item, bool) and abs(item) >= 2**63:
            raise BenchError(f"{at}: {_show(item)} is out of range")
        if isinstance(item, dict):
            for k, v in item.items():
                key = f"{where}.{k}" if where else str(k)
                stack += [(key, k), (key, v)]
        elif isinstance(item, (list, tuple)):
            stack += [(f"{where}[{i}]", v) for i, v in enumerate(item)]


def _name(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise BenchError(f"name must be a non-empty string, got {_show(value)}")
    return value


def _seed(value: Any) -> int:
    _typed("seed", value, int)
    if not 0 <= value < 2**63:
        raise BenchError(f"seed must be an integer from 0 to 2**63 - 1, got {_show(value)}")
    return value


def _sweep_names(key: str, value: Any) -> str | list[str]:
    """dtype / compile: one name or a non-empty list of names (a list sweeps)."""
    _str_list(key, value)
    return value


def _check_case_count(cfg: RunConfig) -> None:
    """Count the sweep's cases before expanding it: lists multiply, so a few short lists can ask
    for millions of cases."""
    per_scenario = [
        math.prod(1 if k == "batch" and params[k] == AUTO else len(_as_list(params[k])) for k in FIELDS[name])
        for name, params in cfg.scenarios.items()
    ]
    total = sum(per_scenario) * len(_as_list(cfg.dtype)) * len(_as_list(cfg.compile)) * len(cfg.backends)
    if total > MAX_CASES:
        raise BenchError(f"the sweep has {total:,} cases (at most {MAX_CASES:,}): shorten its lists")


def check_world(cfg: RunConfig, world: int) -> None:
    """Every train case's step layout on `world` ranks (ppharness/core/parallel.py), refused in one line
    when the world or the micro-batch cannot divide the global batch."""
    if cfg.parallel.global_batch is None:
        return
    for case in expand(cfg):
        if case.scenario != "train":
            continue
        if cfg.scenarios["train"]["batch"] == AUTO:
            raise BenchError(
                "scenarios.train.batch: auto cannot be used with parallel.global_batch; give the micro-batch"
            )
        parallel.layout(cfg.parallel, case.batch, world)


def _as_list(value: Any) -> list:
    return value if isinstance(value, list) else [value]


def _typed(key: str, value: Any, kind: type) -> Any:
    bad_bool = kind in (int, float) and isinstance(value, bool)
    if kind is float and isinstance(value, int) and not bad_bool:
        return float(value)
    if not isinstance(value, kind) or bad_bool:
        raise BenchError(f"{key} must be {kind.__name__}, got {_show(value)}")
    return value


def _number(key: str, value: Any, positive: bool = False) -> float:
    """A finite float (an int is accepted), not negative; with `positive`, above zero."""
    v = _typed(key, value, float)
    if not math.isfinite(v) or v < 0 or (positive and v == 0):
        raise BenchError(f"{key} must be a finite number {'> 0' if positive else '>= 0'}, got {_show(value)}")
    return v


def _positive(key: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise BenchError(f"{key} must be a positive integer, got {_show(value)}")
    if value > MAX_SIZE:
        raise BenchError(f"{key} must be at most {MAX_SIZE:,} (2**31 - 1), got {_show(value)}")
    return value


def _choice(key: str, value: Any, valid: tuple[str, ...], context: str = "") -> str:
    if isinstance(value, (list, dict)) or value not in valid:
        raise BenchError(f"unknown {key} {_show(value)}{context}; valid: {', '.join(valid)}")
    return value


def _str_list(key: str, value: Any) -> list[str]:
    items = _as_list(value)
    if not items or not all(isinstance(v, str) for v in items):
        raise BenchError(f"{key} must be a name or a non-empty list of names, got {_show(value)}")
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
        for key, v in value.items():
            if key != "preset":
                _model_field(key, v)
    else:
        raise BenchError(f"model must be a preset name ({', '.join(PRESETS)}) or a mapping, got {_show(value)}")
    try:
        model_config(value)  # the relations: dim divisible by n_heads, n_heads by n_kv_heads, ...
    except (TypeError, ValueError) as exc:
        raise BenchError(f"invalid model: {exc}") from None
    return value


def _model_field(key: str, value: Any) -> None:
    """One ModelConfig field by its declared type: sizes are positive integers (n_kv_heads and
    ffn_dim may be null: derived), rope_theta and norm_eps finite and > 0, tie_embeddings a bool."""
    where = f"model.{key}"
    if key == "tie_embeddings":
        _typed(where, value, bool)
    elif key in ("rope_theta", "norm_eps"):
        _number(where, value, positive=True)
    elif not (value is None and key in ("n_kv_heads", "ffn_dim")):
        _positive(where, value)


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
                continue  # measured: doubled until out of memory or no gain (ppharness/run/sweep.py)
            if params[key] == []:
                raise BenchError(f"scenarios.{name}.{key} is an empty list: give a value or a list of values")
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
        where = f"timing.{key}"
        if key == "remeasure":  # 0 is meaningful: never measure a contaminated window again
            if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= 100:
                raise BenchError(f"timing.remeasure must be a non-negative integer (at most 100), got {_show(v)}")
            out[key] = v
            continue
        if key == "block_under_s" and v is None:  # null: the backend's choice, as when left out
            continue
        out[key] = _positive(where, v) if kind is int else _number(where, v, positive=key == "max_seconds")
    if "max_other_cpu" in out and not 0 < out["max_other_cpu"] <= 1:
        raise BenchError(
            f"timing.max_other_cpu must be a fraction of the host in (0, 1] (1: never INVALID), got {_show(value['max_other_cpu'])}"
        )
    timing = TimingConfig(**out)
    for low, high in (("warmup", "max_warmup"), ("min_iters", "max_iters"), ("min_seconds", "max_seconds")):
        lo, hi = getattr(timing, low), getattr(timing, high)
        if lo > hi:
            given = lambda k: "" if k in out else " (default)"  # noqa: E731
            raise BenchError(f"timing.{low} {lo:g}{given(low)} exceeds timing.{high} {hi:g}{given(high)}")
    return timing


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
