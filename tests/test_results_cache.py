"""Reading history at scale (ppharness/record/load.py, ppharness/record/cache.py): orjson with the
standard library's semantics, raw samples only where asked for, and the derived cache, which gives
back exactly what reading the JSONL gives and is never trusted over it."""

from __future__ import annotations

import json
import os
import shutil
import warnings

import numpy as np
import pandas as pd
import pytest
from conftest import REPO
from results_fixtures import record, write

from ppharness.record import cache
from ppharness.record import load as load_mod
from ppharness.record.load import load

SAMPLES = ["timing.samples_s", "timing.host_samples_s"]


def _lists(df: pd.DataFrame) -> pd.DataFrame:
    """`df` with every array cell as the list it was read from (to compare with samples="lists")."""
    return df.map(lambda v: v.tolist() if isinstance(v, np.ndarray) else v)


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    """A cache folder of this test's own (the session's is shared with every other test)."""
    monkeypatch.setenv("PPBENCH_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def results(tmp_path):
    """A copy of the committed records (read only there) in a folder of our own."""
    folder = tmp_path / "results"
    shutil.copytree(REPO / "results", folder, ignore=shutil.ignore_patterns("*.md"))
    return folder


def _entries() -> list:
    return sorted(cache.folder().glob(f"*{cache.SUFFIX}")) if cache.folder().exists() else []


def test_arrays_none_and_the_cache_give_what_the_jsonl_gives(results):
    want = load([results])  # samples="lists": the file as written, never cached
    assert not _entries()
    for _ in range(2):  # the first builds the entries, the second reads them
        arrays = load([results], samples="arrays")
        pd.testing.assert_frame_equal(_lists(arrays), want)
        got = [v for v in arrays["timing.samples_s"] if isinstance(v, (list, np.ndarray))]
        assert all(isinstance(v, np.ndarray) and v.flags.writeable for v in got)
        summaries = load([results], samples=None)
        pd.testing.assert_frame_equal(summaries, want.drop(columns=[c for c in SAMPLES if c in want]))
    files = sorted(results.glob("*.jsonl"))
    assert len(_entries()) == len(files)
    for f in files:  # a hit: the entry was built from exactly these bytes
        data, stat = load_mod._read(f)
        assert cache.lookup(f, data, stat) is not None
    assert sorted(p.name for p in results.iterdir()) == [f.name for f in files]  # nothing written beside them


def test_the_cache_is_never_trusted_over_the_jsonl(tmp_path):
    """Appended to: read again. Edited in place with the same size and mtime: the SHA-256 differs,
    so read again."""
    path = write(tmp_path / "r.jsonl", [record(step_s=0.010, seed=1)])
    assert load([path], samples=None)["timing.median_s"].iloc[0] == pytest.approx(0.010, rel=0.05)
    with path.open("a") as f:
        f.write(json.dumps(record(step_s=0.020, seed=2)) + "\n")
    assert len(load([path], samples="arrays")) == 2
    before = path.stat()
    text = path.read_text()
    edited = text.replace('"scenario": "train"', '"scenario": "trainX"', 1)
    edited = edited.replace('"dtype": "float32"', '"dtype": "float3"', 1)  # same size
    assert len(edited) == len(text)
    path.write_text(edited)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_size == before.st_size and path.stat().st_mtime_ns == before.st_mtime_ns
    df = load([path], samples=None)
    assert list(df["workload.scenario"]) == ["trainX", "train"] and df["workload.dtype"].iloc[0] == "float3"


def test_a_torn_or_nan_file_is_read_each_time_and_warns_each_time(tmp_path):
    torn = tmp_path / "torn.jsonl"
    torn.write_text(json.dumps(record(seed=1)) + "\n" + json.dumps(record(seed=2))[:50])
    nan = tmp_path / "nan.jsonl"
    nan.write_text(json.dumps({**record(seed=3), "metrics": {**record()["metrics"], "mfu": float("nan")}}) + "\n")
    for _ in range(2):
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            df = load([torn], samples="arrays")
        assert len(df) == 1 and any("torn last line" in str(w.message) for w in seen)
        assert np.isnan(load([nan], samples="arrays")["metrics.mfu"].iloc[0])  # the standard library read it
    assert not _entries()


def test_a_damaged_foreign_or_unwritable_cache_costs_nothing_but_speed(tmp_path, monkeypatch):
    path = write(tmp_path / "r.jsonl", [record(seed=s) for s in range(3)])
    want = load([path])
    load([path], samples="arrays")
    (entry,) = _entries()
    entry.write_bytes(entry.read_bytes()[:100])  # cut short
    pd.testing.assert_frame_equal(_lists(load([path], samples="arrays")), want)  # a miss, rebuilt
    assert cache.lookup(path, *load_mod._read(path)) is not None
    entry.chmod(0o666)  # writable by others: not trusted
    assert cache.lookup(path, *load_mod._read(path)) is None
    pd.testing.assert_frame_equal(_lists(load([path], samples="arrays")), want)
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")
    monkeypatch.setenv("PPBENCH_CACHE_DIR", str(blocked))
    with pytest.warns(UserWarning, match="results cache .* cannot be written"):
        pd.testing.assert_frame_equal(load([path], samples=None), want.drop(columns=["timing.samples_s"]))


def test_old_entries_are_pruned_past_the_limit(tmp_path):
    paths = [write(tmp_path / f"r{i}.jsonl", [record(seed=i)]) for i in range(4)]
    for i, p in enumerate(paths):
        load([p], samples=None)
        os.utime(cache._entry_path(p), ns=(i * 10**9, i * 10**9))  # r0 the least recently used
    newest = sum(cache._entry_path(p).stat().st_size for p in paths[2:])
    cache._prune(cache.folder(), limit=newest)  # room for the two most recently used
    assert {e.name for e in _entries()} == {cache._entry_path(p).name for p in paths[2:]}


@pytest.mark.parametrize(
    "line",
    [
        '{"a": NaN, "b": Infinity}',  # Python's json writes these by default; orjson refuses them
        '{"s": "\\ud800"}',  # a lone surrogate
        '{"a": 1, "a": 2}',
        '{"x": 1e-400, "y": [1, 2.5, true, null]}',
        "[" * 2000 + "]" * 2000,  # deeper than orjson's limit
    ],
)
def test_orjson_first_then_the_standard_library_as_it_always_read(line):
    try:
        want = json.loads(line)
    except RecursionError:
        with pytest.raises(RecursionError):
            load_mod._decode(line)
        return
    got, _ = load_mod._decode(line)
    assert repr(got) == repr(want)


def test_without_orjson_every_record_reads_alike(results, monkeypatch):
    want = load([results], samples="arrays")
    monkeypatch.setattr(load_mod, "orjson", None)  # a platform with no orjson wheel
    monkeypatch.setattr(cache, "orjson", None)
    pd.testing.assert_frame_equal(_lists(load([results], samples="arrays")), _lists(want))
