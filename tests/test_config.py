"""Run files: loading, --set overrides, sweeps, and one clear error for each kind of bad input."""

import pytest
import yaml
from conftest import REPO, SMOKE

from ppharness.errors import BenchError
from ppharness.run import config
from ppharness.serve import runner as serve


def test_every_shipped_run_file_validates():
    for path in sorted((REPO / "configs" / "runs").glob("*.yaml")):
        cfg = config.load(path)
        if isinstance(cfg, serve.ServeRunConfig):  # a serve run file: levels, not cases (ppharness/serve/runner.py)
            assert serve.levels(cfg.serve), path
            continue
        assert config.expand(cfg), path


def test_smoke_and_overrides():
    cfg = config.load(SMOKE, ["scenarios.train.batch=[1, 2]", "timing.min_iters=4", "model.n_layers=1"])
    assert cfg.timing.min_iters == 4
    assert cfg.model_config.n_layers == 1 and cfg.model_config.dim == 64  # preset kept as the base
    trains = [c for c in config.expand(cfg) if c.scenario == "train"]
    assert [c.batch for c in trains] == [1, 2]
    assert config.load(SMOKE, [], backend="cpu").backends == ["cpu"]


def test_sweeps_multiply_out():
    cfg = config.load(SMOKE, ["dtype=[float32, bfloat16]", "compile=[none, default]"])
    assert len(config.expand(cfg)) == 3 * 2 * 2


BAD = {
    "unknown preset": (["model=gpt5"], "unknown model preset 'gpt5'; valid: tiny"),
    "unknown backend": (["backends=[tpu]"], "unknown backend 'tpu'; valid:"),
    "unknown scenario": (
        ["scenarios.finetune={batch: 1}"],
        "unknown scenario 'finetune'; valid: train, prefill, decode",
    ),
    "unknown instance": (["instance=p9.huge"], "p9.huge"),
    "unknown basis": (["price_basis=free"], "unknown price_basis 'free'; valid: on_demand"),
    "unknown top key": (["colour=red"], "unknown key 'colour'"),
    "unknown nested key": (["timing.warmpu=3"], "unknown key timing.warmpu; valid: warmup"),
    "unknown scenario key": (["scenarios.train.seqlen=4"], "unknown key scenarios.train.seqlen; valid: batch, seq_len"),
    "wrong type": (["timing.min_seconds=fast"], "timing.min_seconds must be float"),
    "wrong bool": (["check=1"], "check must be bool"),
    "zero batch": (["scenarios.train.batch=0"], "scenarios.train.batch must be a positive integer"),
    "negative length": (["scenarios.prefill.prompt_len=-4"], "must be a positive integer"),
    "too long": (
        ["scenarios.decode.new_tokens=500"],
        "prompt_len + new_tokens 516 exceeds the model's max_seq_len 128",
    ),
    "bad dtype": (["dtype=int4"], "unknown dtype 'int4' for backend cpu; valid: float32"),
    "bad compile": (["compile=turbo"], "unknown compile 'turbo' for backend cpu"),
    "bad option": (["backend_options.cpu.threds=2"], "unknown key backend_options.cpu.threds; valid: threads"),
    "bad set": (["novalue"], "--set expects key=value"),
    "bad model field": (["model.layers=3"], "unknown key model.layers"),
    # Options of a backend this run does not use are validated too (the smoke run uses cpu).
    "unused backend, bad type": (
        ["backend_options.cuda.device_index=x"],
        "backend_options.cuda.device_index must be int",
    ),
    "unused backend, bad key": (["backend_options.cuda.lol=1"], "unknown key backend_options.cuda.lol"),
    "unused backend, bad value": (["backend_options.neuron-xla.optlevel=7"], "optlevel"),
    "unused backend, NaN": (["backend_options.neuron.tdp_watts=.nan"], "tdp_watts must be a finite number >= 0"),
    # Floats: finite and not negative.
    "NaN min_seconds": (["timing.min_seconds=.nan"], "timing.min_seconds must be a finite number >= 0, got nan"),
    "negative min_seconds": (["timing.min_seconds=-1"], "timing.min_seconds must be a finite number >= 0"),
    "infinite max_seconds": (["timing.max_seconds=.inf"], "timing.max_seconds must be a finite number > 0"),
    "NaN threshold": (["timing.cov_warn=.nan"], "timing.cov_warn must be a finite number"),
    "negative threshold": (["timing.max_other_cpu=-0.5"], "timing.max_other_cpu must be"),
    "NaN norm_eps": (["model.norm_eps=.nan"], "model.norm_eps must be a finite number > 0, got nan"),
    "negative rope_theta": (["model.rope_theta=-10000"], "model.rope_theta must be a finite number > 0"),
    # Relations between values.
    "min_seconds > max_seconds": (
        ["timing.min_seconds=20", "timing.max_seconds=10"],
        "timing.min_seconds 20 exceeds timing.max_seconds 10",
    ),
    "min_iters > max_iters": (["timing.max_iters=2"], "timing.min_iters 3 exceeds timing.max_iters 2 (default)"[:44]),
    # A swept key's list is never empty (it would run nothing and exit 0).
    "empty dtype list": (["dtype=[]"], "dtype must be a name or a non-empty list of names, got []"),
    "empty compile list": (["compile=[]"], "compile must be a name or a non-empty list"),
    "empty size list": (["scenarios.train.batch=[]"], "scenarios.train.batch is an empty list"),
    # threads: a sane cap for any file, then this host's CPU count for the backend the run uses.
    "negative threads": (["backend_options.cpu.threads=-1"], "backend_options.cpu.threads must be 0"),
    "threads beyond the cap": (["backend_options.cpu.threads=100000"], "to 4096, got 100000"),
    "threads beyond this host": (["backend_options.cpu.threads=4000"], "exceeds this host's"),
    # A type error names the key, never Python's "'<=' not supported between 'str' and 'int'".
    "model size as a string": (["model.dim='64'"], "model.dim must be a positive integer, got '64'"),
    "model eps as a string": (["model.norm_eps=small"], "model.norm_eps must be float, got 'small'"),
    "model bool as a string": (["model.tie_embeddings=yes please"], "model.tie_embeddings must be bool"),
    "size beyond int32": (["scenarios.train.batch=4294967296"], "must be at most 2,147,483,647"),
    "seed out of range": (["seed=-1"], "seed must be an integer from 0"),
    "empty name": (["name=''"], "name must be a non-empty string"),
    "huge sweep": (
        [
            "scenarios.train.batch=[" + ", ".join(map(str, range(1, 201))) + "]",
            "scenarios.train.seq_len=[" + ", ".join(map(str, range(1, 101))) + "]",
        ],
        "the sweep has 20,002 cases (at most 10,000)",
    ),
}


@pytest.mark.parametrize("name", BAD)
def test_bad_input_gives_one_clear_line(name):
    overrides, message = BAD[name]
    with pytest.raises(BenchError) as exc:
        config.load(SMOKE, overrides)
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_yaml_12_floats_are_numbers(tmp_path):
    """`1e-3` is a float (YAML 1.2), in --set and in a file; PyYAML alone reads it as a string."""
    assert config.load(SMOKE, ["timing.min_seconds=1e-3"]).timing.min_seconds == 1e-3
    path = tmp_path / "run.yaml"
    path.write_text(SMOKE.read_text().replace("min_seconds: 0.05", "min_seconds: 5e-2"))
    assert config.load(path).timing.min_seconds == 0.05


def test_huge_values_are_refused_with_one_short_line():
    raw = {**yaml.safe_load(SMOKE.read_text()), "name": "x" * 50 * 2**20}  # a 50 MB name
    with pytest.raises(BenchError, match="name: a string of 52,428,800 characters") as exc:
        config.validate(raw)
    assert len(str(exc.value)) < 200
    with pytest.raises(BenchError, match="--set name: value of") as exc:
        config.load(SMOKE, ["name=" + "x" * 2**20])
    assert len(str(exc.value)) < 200


BILLION_LAUGHS = """
a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]
""" + "".join(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]\n" for i in range(1, 10))


def test_billion_laughs_is_refused_before_it_expands(tmp_path):
    """Aliases under an unused backend's options were never validated, and expanded into every
    record (DESIGN.md: config is the resolved run file): 10**10 values from a 657-byte file."""
    laughs = "\n".join(line.replace("a", "    a", 1) for line in BILLION_LAUGHS.strip().splitlines())
    path = tmp_path / "lol.yaml"
    path.write_text(SMOKE.read_text() + "backend_options:\n  cuda:\n" + laughs + "\n")
    assert len(laughs) < 700
    with pytest.raises(BenchError, match="too large, more than 10,000 values once YAML aliases are expanded"):
        config.load(path)
    with pytest.raises(BenchError, match="--set backend_options.cuda: cannot parse value"):
        config.load(SMOKE, ["backend_options.cuda=" + "{" + BILLION_LAUGHS.strip().replace("\n", ", ") + "}"])
    with pytest.raises(BenchError, match="once YAML aliases are expanded"):  # a cycle, built in Python
        cyc: list = []
        cyc.append(cyc)
        config.validate({**yaml.safe_load(SMOKE.read_text()), "backend_options": {"cuda": {"x": cyc}}})


def test_bad_files(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nscenarios: [unclosed\n")
    with pytest.raises(BenchError, match="malformed YAML"):
        config.load(bad)
    bad.write_text("- a list\n")
    with pytest.raises(BenchError, match="mapping"):
        config.load(bad)
    with pytest.raises(BenchError, match="cannot read run file"):
        config.load(tmp_path / "missing.yaml")
    bad.write_text("name: x\nbackends: [cpu]\nmodel: tiny\n")
    with pytest.raises(BenchError, match="missing required key 'scenarios'"):
        config.load(bad)
