"""configs/fleet.yaml: the fleet's budgets, the environment each backend runs in, the sides of each recipe.

Loading validates every key and raises BenchError with one line naming the bad value; the file is
data (docs/fleet.md explains each key), the scripts that use it are rendered in plan.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ppharness import paths
from ppharness.errors import BenchError, read_yaml

SIDE_NAME = re.compile(r"^[a-z][a-z0-9]{0,11}$")  # part of a cluster name: short, lowercase, no dash
SSM_NAME = re.compile(r"^/aws/service/[A-Za-z0-9._/-]+$")  # the public parameters AWS and vendors publish
PIN = re.compile(r"^[A-Za-z0-9._-]+(\[[a-z0-9,-]+\])?==[A-Za-z0-9.+!-]+$")  # name==version, nothing else


@dataclass(frozen=True)
class Limits:
    provision_minutes: int
    idle_minutes: int
    disk_gb: int


@dataclass(frozen=True)
class Environment:
    backend: str
    image_ssm: str
    venv: str
    create_venv: bool
    packages: tuple[str, ...]
    setup_minutes: int
    compile_minutes: int
    index_url: str | None = None
    extras: str | None = None
    apt: tuple[str, ...] = ()

    @property
    def venv_shell(self) -> str:
        """The venv path as a shell word that expands inside double quotes too (`~/x` -> `$HOME/x`)."""
        return "$HOME/" + self.venv[2:] if self.venv.startswith("~/") else self.venv


@dataclass(frozen=True)
class SideSpec:
    name: str
    backend: str | None = None  # None: the run file's own backend
    sets: tuple[str, ...] = ()


@dataclass(frozen=True)
class FleetSpec:
    path: Path
    limits: Limits
    environments: dict[str, Environment]
    recipes: dict[str, tuple[SideSpec, ...]] = field(default_factory=dict)

    def environment(self, backend: str) -> Environment:
        if backend not in self.environments:
            valid = ", ".join(sorted(self.environments))
            raise BenchError(f"{self.path.name}: no environment for backend {backend!r}; valid: {valid}")
        return self.environments[backend]


def default_path() -> Path:
    return paths.configs() / "fleet.yaml"


def _mapping(raw: Any, where: str, allowed: set[str], required: set[str] = frozenset()) -> dict:
    if not isinstance(raw, dict):
        raise BenchError(f"{where}: expected a mapping, got {type(raw).__name__}")
    unknown = sorted(str(k) for k in set(raw) - allowed)
    if unknown:
        raise BenchError(f"{where}: unknown key {unknown[0]!r}; valid: {', '.join(sorted(allowed))}")
    missing = sorted(required - set(raw))
    if missing:
        raise BenchError(f"{where}: missing key {missing[0]!r}")
    return raw


def _int(raw: dict, key: str, where: str, minimum: int = 1) -> int:
    value = raw.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= 100_000:
        raise BenchError(f"{where}.{key} must be an integer from {minimum} to 100000, got {value!r}")
    return value


def _text(raw: dict, key: str, where: str, pattern: re.Pattern | None = None, required: bool = True) -> str | None:
    value = raw.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip() or (pattern is not None and not pattern.match(value)):
        raise BenchError(f"{where}.{key}: bad value {value!r}")
    return value


def _strings(raw: dict, key: str, where: str, pattern: re.Pattern) -> tuple[str, ...]:
    value = raw.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and pattern.match(v) for v in value):
        raise BenchError(f"{where}.{key} must be a list of strings matching {pattern.pattern}, got {value!r}")
    return tuple(value)


_ENV_KEYS = {"image_ssm", "venv", "create_venv", "index_url", "packages", "extras", "apt"}
_ENV_KEYS |= {"setup_minutes", "compile_minutes"}


def _environment(backend: str, raw: Any, where: str) -> Environment:
    raw = _mapping(raw, where, _ENV_KEYS, {"image_ssm", "venv", "create_venv", "setup_minutes", "compile_minutes"})
    if not isinstance(raw["create_venv"], bool):
        raise BenchError(f"{where}.create_venv must be true or false")
    return Environment(
        backend=backend,
        image_ssm=_text(raw, "image_ssm", where, SSM_NAME),
        venv=_text(raw, "venv", where, re.compile(r"^[~/][A-Za-z0-9._/-]*$")),
        create_venv=raw["create_venv"],
        packages=_strings(raw, "packages", where, PIN),
        setup_minutes=_int(raw, "setup_minutes", where),
        compile_minutes=_int(raw, "compile_minutes", where, minimum=0),
        index_url=_text(raw, "index_url", where, re.compile(r"^https://[A-Za-z0-9./_-]+$"), required=False),
        extras=_text(raw, "extras", where, re.compile(r"^[a-z0-9,-]+$"), required=False),
        apt=_strings(raw, "apt", where, re.compile(r"^[a-z0-9][a-z0-9.+-]*$")),
    )


def _sides(name: str, raw: Any, where: str) -> tuple[SideSpec, ...]:
    if not isinstance(raw, dict) or not raw:
        raise BenchError(f"{where}: expected a mapping of side names to their options")
    sides = []
    for side, opts in raw.items():
        if not isinstance(side, str) or not SIDE_NAME.match(side):
            raise BenchError(f"{where}: side name {side!r} must match {SIDE_NAME.pattern}")
        opts = _mapping(opts or {}, f"{where}.{side}", {"backend", "set"})
        backend = _text(opts, "backend", f"{where}.{side}", re.compile(r"^[a-z][a-z0-9-]*$"), required=False)
        sets = opts.get("set", [])
        if not isinstance(sets, list) or not all(isinstance(s, str) and "=" in s for s in sets):
            raise BenchError(f"{where}.{side}.set must be a list of key=value strings, got {sets!r}")
        sides.append(SideSpec(side, backend, tuple(sets)))
    return tuple(sides)


def load(path: Path | None = None) -> FleetSpec:
    path = path or default_path()
    doc = read_yaml(path, "fleet file", BenchError)
    where = path.name
    doc = _mapping(doc, where, {"schema", "limits", "environments", "recipes"}, {"schema", "limits", "environments"})
    if doc["schema"] != 1:
        raise BenchError(f"{where}: expected 'schema: 1', got {doc['schema']!r}")
    limits = _mapping(doc["limits"], f"{where} limits", {"provision_minutes", "idle_minutes", "disk_gb"},
                      {"provision_minutes", "idle_minutes", "disk_gb"})  # fmt: skip
    lim = Limits(*(_int(limits, k, "limits") for k in ("provision_minutes", "idle_minutes", "disk_gb")))
    envs_raw = doc["environments"]
    if not isinstance(envs_raw, dict) or not envs_raw:
        raise BenchError(f"{where}: 'environments' must be a non-empty mapping of backend names")
    envs = {str(b): _environment(str(b), e, f"environments.{b}") for b, e in envs_raw.items()}
    recipes_raw = doc.get("recipes") or {}
    if not isinstance(recipes_raw, dict):
        raise BenchError(f"{where}: 'recipes' must be a mapping of recipe names to their sides")
    recipes = {str(r): _sides(str(r), s, f"recipes.{r}") for r, s in recipes_raw.items()}
    return FleetSpec(path, lim, envs, recipes)
