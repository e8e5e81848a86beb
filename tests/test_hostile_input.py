"""Hostile input, property-based (hypothesis): the run-file loader, `--set` parsing and the results
loader turn any input into either a valid object or one BenchError line, never another exception.
"""

from __future__ import annotations

import json
import os
import string

import pytest
import yaml
from conftest import SMOKE
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ppharness.errors import BenchError
from ppharness.record.load import load
from ppharness.run import config
from ppharness.run.config import RunConfig

# PPBENCH_HYPOTHESIS_EXAMPLES=5000 for a longer hunt; the default keeps the suite to seconds.
EXAMPLES = int(os.environ.get("PPBENCH_HYPOTHESIS_EXAMPLES", "150"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# Values a YAML or JSON document can hold, with the run file's own words mixed in so that
# generated documents get past the first checks and reach the deeper ones.
WORDS = ["name", "backends", "model", "scenarios", "dtype", "compile", "timing", "instance", "price_basis",
         "region", "seed", "check", "backend_options", "cpu", "tiny", "train", "prefill", "decode", "batch",
         "seq_len", "prompt_len", "new_tokens", "auto", "float32", "bfloat16", "none", "default", "warmup",
         "min_iters", "min_seconds", "preset", "n_layers", "dim", "threads", "c7a.large", "on_demand"]  # fmt: skip
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from(WORDS)
    | st.text(max_size=12)
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(WORDS) | st.text(max_size=6), inner, max_size=5)
    ),
    max_leaves=20,
)
keys = st.sampled_from(WORDS) | st.text(max_size=8) | st.integers() | st.none() | st.booleans()
documents = st.dictionaries(keys, values, max_size=8)
VALID = yaml.safe_load(SMOKE.read_text())


def one_line_error(fn, *args):
    """Run fn: it returns (True, result), or raises BenchError with one line -> (False, None).
    Any other exception fails the test (hypothesis then shrinks the input that caused it)."""
    try:
        return True, fn(*args)
    except BenchError as exc:
        msg = str(exc)
        assert msg and "\n" not in msg and "\r" not in msg, repr(msg)
        return False, None


@SETTINGS
@given(documents)
@example({1: 2, "a": 3})  # keys of mixed types cannot be sorted
@example(
    {"name": "x", "backends": ["cpu"], "model": {"dim": 10**30}, "scenarios": {"train": {"batch": 1, "seq_len": 1}}}
)
def test_validate_any_mapping(raw):
    ok, cfg = one_line_error(config.validate, raw)
    assert not ok or isinstance(cfg, RunConfig)


@SETTINGS
@given(st.sampled_from(sorted(VALID)), values)
def test_validate_a_valid_file_with_one_key_replaced(key, value):
    ok, cfg = one_line_error(config.validate, {**VALID, key: value})
    assert not ok or isinstance(cfg, RunConfig)


@SETTINGS
@given(st.text(alphabet=string.printable + "\x00\u00e9\u2028\ufeff", max_size=200))
@example("seed: 2001-13-45")  # a YAML timestamp that is not a date
@example("name: [" * 40)
@example("a: &x [*x]")  # a recursive alias
def test_run_file_any_text(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("yaml") / "run.yaml"
    path.write_text(text)
    ok, cfg = one_line_error(config.load, path)
    assert not ok or isinstance(cfg, RunConfig)


@SETTINGS
@given(st.text(max_size=60))
@example("seed=2001-13-45")
@example("a\nb=1")
@example("timing\n.warmup=[")
@example("model.preset.x=1")
@example("scenarios.train=!!python/object:os.system")
def test_set_any_string(item):
    raw = json.loads(json.dumps(VALID))
    one_line_error(config.apply_override, raw, item)


@SETTINGS
@given(st.lists(st.sampled_from(sorted(config.TOP_KEYS)) | st.text(max_size=10), min_size=1, max_size=4), values)
def test_set_then_validate(path, value):
    """A dotted key built from real key names and any YAML value: loading ends cleanly."""
    raw = json.loads(json.dumps(VALID))
    item = ".".join(path) + "=" + json.dumps(value, default=str)
    if one_line_error(config.apply_override, raw, item)[0]:
        ok, cfg = one_line_error(config.validate, raw)
        assert not ok or isinstance(cfg, RunConfig)


RECORD = {"schema_version": 1, "run_id": "r", "created_at": "2026-01-01T00:00:00+00:00", "status": "ok", "reason": "",
          "device": {}, "workload": {}, "timing": {}, "metrics": {}, "cost": {}}  # fmt: skip


@SETTINGS
@given(st.binary(max_size=300))
@example(b"[" * 5000 + b"\n")  # nesting deeper than the JSON parser's recursion limit
@example(b"NaN\n")
@example(b'{"schema_version": 1e999}\n')
def test_results_any_bytes(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("res") / "r.jsonl"
    path.write_bytes(data)
    with _no_fail():
        one_line_error(load, [path])


@SETTINGS
@given(
    st.lists(st.dictionaries(st.sampled_from(sorted(RECORD)) | st.text(max_size=5), values, max_size=12), max_size=4)
)
def test_results_any_json_lines(tmp_path_factory, recs):
    """JSON objects shaped like records (real keys, any values), alone or over a valid record."""
    path = tmp_path_factory.mktemp("res") / "r.jsonl"
    lines = [json.dumps({**RECORD, **r}) for r in recs] + [json.dumps(r) for r in recs]
    path.write_text("".join(line + "\n" for line in lines))
    with _no_fail():
        ok, df = one_line_error(load, [path])
    assert not ok or len(df) == len(lines)


class _no_fail:
    """Warnings (a torn last line) are allowed; they are not errors."""

    def __enter__(self):
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("ignore")

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)


# ------------------------------------------------------- issue 17: the whole run-file value space
# Every key a run file can hold (dotted), every backend's options included, and values chosen to
# break validation: NaN, infinities, negatives, zero, out-of-range integers, empty lists and
# mappings, huge strings, YAML 1.2 floats, markup and escape sequences. Any input must validate to
# a sane RunConfig or give one BenchError line; never a traceback.
def _dotted_keys() -> list[str]:
    import dataclasses

    from ppharness import backends
    from ppharness.core.scenarios import FIELDS
    from ppharness.core.timing import TimingConfig
    from ppharness.core.workload import ModelConfig

    keys = sorted(config.TOP_KEYS)
    keys += [f"timing.{f.name}" for f in dataclasses.fields(TimingConfig)]
    keys += [f"model.{f.name}" for f in dataclasses.fields(ModelConfig)] + ["model.preset"]
    keys += [f"scenarios.{s}.{k}" for s, fields in FIELDS.items() for k in fields]
    for name, cls in sorted(backends.discover().items()):  # used by the run or not
        keys += [f"backend_options.{name}.{f.name}" for f in dataclasses.fields(cls.Options)]
    return keys


KEYS = _dotted_keys()
HUGE = "x" * 20_000  # far beyond config.MAX_STRING; a 50 MB name is tests/test_config.py's (PyYAML reads ~0.4 MB/s)
HOSTILE = [float("nan"), float("inf"), float("-inf"), -1, -0.5, 0, 0.0, 1e-3, 2**31, 2**63, -(2**70), [], {}, "",
           [[]], HUGE, "x" * 1025, None, True, "1e-3", "[/x]", "\x1b]8;;javascript:x\x07", [float("nan")], [-1, 2],
           ["float32", "float32"], "auto", 4000, 100_000]  # fmt: skip
hostile = st.sampled_from(HOSTILE) | values


def _laughs(depth: int, width: int) -> list:
    """A shared-reference tree: safe_dump writes it with anchors and aliases, width**depth leaves."""
    node: list = ["lol"] * width
    for _ in range(depth):
        node = [node] * width
    return node


class Laughs(tuple):
    """(depth, width) of a _laughs tree, built inside the test: hypothesis prints every argument,
    and the printout of an expanded billion laughs never ends."""


aliased = st.builds(lambda d, w: Laughs((d, w)), st.integers(1, 9), st.integers(2, 10))


def _put(doc: dict, key: str, value) -> None:
    *parents, leaf = key.split(".")
    for part in parents:
        if not isinstance(doc.get(part), dict):
            doc[part] = {}
        doc = doc[part]
    doc[leaf] = _laughs(*value) if isinstance(value, Laughs) else value


def _sane(cfg: RunConfig) -> None:
    """What a validated config guarantees before anything runs."""
    import math

    t = cfg.timing
    for v in (t.min_seconds, t.max_seconds, t.cov_warn):
        assert math.isfinite(v) and v >= 0
    assert t.warmup <= t.max_warmup and t.min_iters <= t.max_iters and t.min_seconds <= t.max_seconds
    m = cfg.model_config
    assert math.isfinite(m.norm_eps) and m.norm_eps > 0 and math.isfinite(m.rope_theta) and m.rope_theta > 0
    assert cfg.name.strip() and len(cfg.name) <= 1024  # config.MAX_STRING
    assert 1 <= len(config.expand(cfg)) <= 10_000  # config.MAX_CASES
    # The resolved config goes into every record: of a bounded size once aliases are expanded (walked
    # with a bound first: copying a billion laughs, as to_dict would, never ends), and finite JSON.
    count, stack = 0, [vars(cfg)]
    while stack:
        item = stack.pop()
        count += 1
        assert count <= 100_000, "the config expands beyond 100,000 values"
        if isinstance(item, dict):
            stack += [*item.keys(), *item.values()]
        elif isinstance(item, (list, tuple)):
            stack += list(item)
    assert len(json.dumps(cfg.to_dict(), allow_nan=False)) < 10 * 2**20


@SETTINGS
@given(st.lists(st.tuples(st.sampled_from(KEYS), hostile | aliased), max_size=4))
@example([("backend_options.cuda.device_index", Laughs((9, 10)))])  # a billion laughs, unused backend
@example([("timing.min_seconds", float("nan"))])
@example([("dtype", [])])
@example([("name", HUGE)])
@example([("backend_options.cpu.threads", -1)])
def test_any_run_file_validates_sanely_or_gives_one_line(tmp_path_factory, edits):
    doc = json.loads(json.dumps(VALID))
    for key, value in edits:
        _put(doc, key, value)
    path = tmp_path_factory.mktemp("run") / "run.yaml"
    path.write_text(yaml.safe_dump(doc))  # shared values become YAML anchors and aliases
    ok, cfg = one_line_error(config.load, path)
    if ok:
        _sane(cfg)


SET_TEXTS = [".nan", ".inf", "-.inf", "-1", "0", "1e-3", "1E+2", "-1e-3", "1e999", "[]", "{}", "''", "null",
             "&a [*a]", "[&a [1, 2], *a, *a]", "{a: &x [1, 2], b: *x}", "x" * 2000, "[" * 30, "!!float nan",
             "2001-13-45", "4294967296", "[/x]", "'\x1b[31mred'"]  # fmt: skip
set_texts = st.sampled_from(SET_TEXTS) | st.text(max_size=20) | values.map(lambda v: json.dumps(v, default=str))


@SETTINGS
@given(st.lists(st.tuples(st.sampled_from(KEYS), set_texts), min_size=1, max_size=3))
@example([("dtype", "[]")])
@example([("backend_options.cpu.threads", "1000")])
@example([("backend_options.neuron-xla.cc_flags", ".nan")])  # a list option (default_factory) given a float
@example([("backend_options.cuda", "{" + ", ".join(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" if i else "a0: &a0 [lol]" for i in range(9)) + "}")])  # fmt: skip
def test_any_set_validates_sanely_or_gives_one_line(edits):
    ok, cfg = one_line_error(config.load, SMOKE, [f"{k}={v}" for k, v in edits])
    if ok:
        _sane(cfg)


@settings(max_examples=max(10, EXAMPLES // 5), deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.tuples(st.sampled_from(KEYS), set_texts), min_size=1, max_size=2))
def test_the_cli_gives_exit_2_and_one_line_for_any_set(monkeypatch, tmp_path_factory, edits):
    """End to end through `ppbench run` (measuring replaced by a no-op): exit 0 or exit 2 with one
    `error:` line, never a traceback or another exit code."""
    from typer.testing import CliRunner

    from ppharness.cli import app
    from ppharness.run import runner as runner_mod

    monkeypatch.setattr(runner_mod, "run", lambda *a, **k: [])
    out = tmp_path_factory.mktemp("out")
    args = ["run", str(SMOKE), "--out", str(out)] + [a for k, v in edits for a in ("--set", f"{k}={v}")]
    res = CliRunner().invoke(app, args)
    assert res.exit_code in (0, 2), (res.exit_code, res.output, res.exception)
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    if res.exit_code == 2:
        assert res.stderr.startswith("error: ") and res.stderr.count("\n") == 1, res.stderr


# ------------------------------------------------------- issue 17: a hostile ceilings cache
@pytest.mark.parametrize("entry", [0, "fast", None, [], {"gemm_tflops": 0, "mem_gbps": 0}, {"gemm_tflops": "1", "mem_gbps": 2},
                                   {"gemm_tflops": float("nan"), "mem_gbps": 1.0}, {"gemm_tflops": 1e999, "mem_gbps": 1.0}])  # fmt: skip
def test_a_damaged_ceilings_cache_entry_is_re_measured(tmp_path, monkeypatch, entry):
    """Zeros, strings, NaN in the cache: re-measured (one warning), never an error row or a
    division by zero in every case."""
    import warnings

    from ppharness.backends.cpu import CPUBackend
    from ppharness.core import ceilings

    monkeypatch.setenv("PPBENCH_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(ceilings, "_SAID", set(), raising=False)
    fake = {"gemm_tflops": 1.0, "copy_gbps": 8.0, "read_gbps": 10.0, "mem_gbps": 10.0}
    calls = []
    monkeypatch.setattr(ceilings, "measure_ceilings", lambda b, d: calls.append(d) or dict(fake))
    ceilings.get_ceilings(CPUBackend(), "float32", "cpu")
    path = tmp_path / "ceilings.json"
    cache = json.loads(path.read_text())
    path.write_text(json.dumps(dict.fromkeys(cache, entry)).replace("Infinity", "1e999"))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        got = ceilings.get_ceilings(CPUBackend(), "float32", "cpu")
        again = ceilings.get_ceilings(CPUBackend(), "float32", "cpu")
    assert got["gemm_tflops"] == 1.0 and not got["cached"] and again["cached"] and len(calls) == 2
    assert len([w for w in seen if "damaged entry" in str(w.message)]) == 1
