"""Run files: loading, --set overrides, sweeps, and one clear error for each kind of bad input."""

import pytest
from conftest import REPO, SMOKE

from bench import config, serve
from bench.errors import BenchError


def test_every_shipped_run_file_validates():
    for path in sorted((REPO / "configs" / "runs").glob("*.yaml")):
        cfg = config.load(path)
        if isinstance(cfg, serve.ServeRunConfig):  # a serve run file: levels, not cases (bench/serve.py)
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
}


@pytest.mark.parametrize("name", BAD)
def test_bad_input_gives_one_clear_line(name):
    overrides, message = BAD[name]
    with pytest.raises(BenchError) as exc:
        config.load(SMOKE, overrides)
    assert message in str(exc.value) and "\n" not in str(exc.value)


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
