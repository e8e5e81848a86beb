"""Hostile input, property-based (hypothesis): the run-file loader, `--set` parsing and the results
loader turn any input into either a valid object or one BenchError line, never another exception.
"""

from __future__ import annotations

import json
import os
import string

import yaml
from conftest import SMOKE
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bench import config
from bench.config import RunConfig
from bench.errors import BenchError
from bench.results import load

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
