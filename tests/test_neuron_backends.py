"""The Neuron backends without Neuron hardware: detection, options, environment, topology and the
core-share pricing, run files, and telemetry parsing.

No test here has a NeuronCore. Where a vendor package is involved, a stand-in module is put in
sys.modules or on sys.path (each test says which); what is tested is our code's contract with
the documented API, never the vendor's behaviour.
"""

from __future__ import annotations

import json
import os
import sys
import types
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from bench import catalog, config, metrics, runner
from bench.backends import _neuron_env as env
from bench.backends import _neuron_telemetry as tel
from bench.backends import base
from bench.cli import app
from bench.errors import BenchError
from bench.scenarios import Case
from bench.workload import PRESETS

REPO = Path(__file__).resolve().parents[1]
NEURON_RUN_FILES = sorted(p.name for p in (REPO / "configs" / "runs").glob("*.yaml") if p.name.startswith(("trn1-", "trn2-", "inf2-")))  # fmt: skip
NEURON_VARS = ("NEURON_CC_FLAGS", "NEURON_COMPILE_CACHE_URL", "NEURON_RT_VISIBLE_CORES", "NEURON_RT_NUM_CORES",
               "NEURON_LOGICAL_NC_CONFIG", "PJRT_DEVICE", "XLA_USE_BF16", "XLA_DOWNCAST_BF16", "WORLD_SIZE",
               "TORCH_NEURONX_DISABLE_FALLBACK_EXECUTION", "TORCH_NEURONX_DEBUG_DIR")  # fmt: skip


@pytest.fixture
def clean_env(monkeypatch):
    """No Neuron variables from the caller's shell; whatever a backend sets is undone afterwards."""
    saved = dict(os.environ)
    for var in NEURON_VARS:
        monkeypatch.delenv(var, raising=False)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture
def on_instance(monkeypatch):
    """Pretend DMI names an EC2 instance type (sysinfo reads DMI; no network either way)."""

    def use(instance: str | None) -> None:
        monkeypatch.setattr("bench.sysinfo.ec2_instance_type", lambda *a, **k: instance)

    return use


def stand_in_neuronx(monkeypatch, version: str) -> types.ModuleType:
    """A stand-in `torch_neuronx` in sys.modules (not the vendor package): only __version__."""
    module = types.ModuleType("torch_neuronx")
    module.__version__ = version
    monkeypatch.setitem(sys.modules, "torch_neuronx", module)
    monkeypatch.setattr(env, "dist_version", lambda name: version if name == "torch-neuronx" else None)
    return module


# --- detection ------------------------------------------------------------------------------
def test_backends_command_explains_each_neuron_backend():
    result = CliRunner().invoke(app, ["backends"])
    assert result.exit_code == 0
    for name in ("neuron", "neuron-xla"):
        ok, why = base.get(name).available()
        assert why, f"{name}: availability must come with a reason"
        assert name in result.output
    if not base.get("neuron-xla").available()[0]:
        assert "torch-neuronx" in result.output or "torch-xla" in result.output


def test_pypi_placeholder_means_unavailable_with_that_reason(tmp_path, monkeypatch, clean_env):
    """A stand-in for PyPI's placeholder package on sys.path: its __init__ raises ImportError,
    as the real placeholder does (reference neuron.md §4)."""
    pkg = tmp_path / "torch_neuronx"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        'raise ImportError("WRONG PACKAGE. Please install the package from Neuron Repository")\n'
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "torch_neuronx", raising=False)
    monkeypatch.setattr(env, "dist_version", lambda name: "1.0" if name == "torch-neuronx" else None)
    ok, why = base.get("neuron-xla").available()
    assert not ok and "placeholder" in why and "WRONG PACKAGE" in why
    if env.series(torch.__version__) >= env.NATIVE_MIN:  # the native backend checks torch first
        ok, why = base.get("neuron").available()
        assert not ok and "placeholder" in why


def test_xla_series_selects_the_xla_path(monkeypatch, clean_env):
    """A stand-in torch_neuronx 2.9.x: neuron-xla's probe accepts it, the native backend sends the
    user to neuron-xla."""
    stand_in_neuronx(monkeypatch, "2.9.0.2.15.32035")
    assert env.probe_neuronx(env.XLA_SERIES).ok
    probe = env.probe_neuronx(env.NATIVE_MIN)
    assert not probe.ok and "use backend neuron-xla" in probe.reason
    monkeypatch.setattr(env, "neuron_devices", lambda: [])
    monkeypatch.setattr(env, "present", lambda module: module == "torch_xla" or module in sys.modules)
    ok, why = base.get("neuron-xla").available()
    assert not ok and "no Neuron device" in why


def test_native_series_selects_torchneuron(monkeypatch, clean_env):
    """A stand-in torch_neuronx 2.13: the XLA backend points to `neuron`; the native backend gets
    past the package check and explains that no `neuron` device is registered."""
    stand_in_neuronx(monkeypatch, "2.13.3.0")
    probe = env.probe_neuronx(env.XLA_SERIES)
    assert not probe.ok and "use backend neuron" in probe.reason
    assert env.probe_neuronx(env.NATIVE_MIN).ok
    if env.series(torch.__version__) >= env.NATIVE_MIN:
        ok, why = base.get("neuron").available()
        assert not ok and "not 'neuron'" in why


def test_cpu_lane_needs_torch_xla(monkeypatch):
    monkeypatch.setenv("PJRT_DEVICE", "CPU")
    ok, why = base.get("neuron-xla").available()
    if env.present("torch_xla"):
        assert ok and "test lane" in why and "not a NeuronCore" in why
    else:
        assert not ok and "torch-xla is not installed" in why


# --- options and environment ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"optlevel": 5}, "valid: 1, 2, 3"),
        ({"model_type": "llm"}, "valid: generic, transformer, unet-inference"),
        ({"target": "trn9"}, "valid: '', inf2, trn1, trn1n, trn2"),
        ({"lnc": 4}, "valid: 0, 1, 2"),
        ({"cc_flags": ["--auto-cast=matmult"]}, "--auto-cast is always none"),
        ({"cc_flags": ["-O3"]}, "dedicated option"),
        ({"visible_cores": "3-1"}, "visible_cores"),
        ({"prefill_buckets": [128, 0]}, "prefill_buckets"),
        ({"num_core": 1}, "unknown key backend_options.neuron-xla.num_core"),
    ],
)
def test_bad_neuron_xla_options_are_one_line_errors(options, message):
    raw = {"name": "x", "backends": ["neuron-xla"], "model": "tiny", "scenarios": {"train": {"batch": 1, "seq_len": 8}},
           "backend_options": {"neuron-xla": options}}  # fmt: skip
    with pytest.raises(BenchError, match=None) as err:
        config.validate(raw)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_cli_rejects_bad_options_with_exit_code_2():
    result = CliRunner().invoke(app, ["run", str(REPO / "configs/runs/trn1-2xlarge.yaml"), "--set",
                                      "backend_options.neuron-xla.optlevel=7"])  # fmt: skip
    assert result.exit_code == 2 and "optlevel" in result.output and "Traceback" not in result.output


def test_native_backend_options_validate():
    with pytest.raises(BenchError, match="lnc"):
        base.parse_options(base.get("neuron"), {"lnc": 3})
    assert base.parse_options(base.get("neuron"), {"lnc": 2, "disable_fallback_execution": False}).lnc == 2


def test_flags_and_environment_come_from_the_options(clean_env, on_instance):
    on_instance("trn1.32xlarge")
    opts = {"optlevel": 1, "cache_dir": "/tmp/ncc", "visible_cores": "0-1", "cc_flags": ["--verbose=info"]}
    backend = base.make("neuron-xla", opts)
    flags = backend.flags
    assert flags[:3] == ["--model-type=transformer", "-O1", "--auto-cast=none"]
    assert "--target=trn1" in flags and flags[-1] == "--verbose=info"  # target from the instance type
    assert "NEURON_CC_FLAGS" not in os.environ  # nothing is set until first use
    backend._start()
    assert os.environ["NEURON_CC_FLAGS"] == " ".join(flags)
    assert os.environ["NEURON_COMPILE_CACHE_URL"] == "/tmp/ncc"
    assert os.environ["NEURON_RT_VISIBLE_CORES"] == "0-1" and "NEURON_RT_NUM_CORES" not in os.environ
    assert os.environ["PJRT_DEVICE"] == "NEURON"
    versions = backend.describe().versions
    assert versions["env.NEURON_CC_FLAGS"] == " ".join(flags) and "--auto-cast=none" in versions["neuronx_cc_flags"]


def test_an_inherited_flag_that_disagrees_is_refused(clean_env, on_instance, monkeypatch):
    on_instance(None)
    monkeypatch.setenv("NEURON_CC_FLAGS", "--auto-cast=matmult")
    with pytest.raises(BenchError, match="NEURON_CC_FLAGS"):
        base.make("neuron-xla")


def test_deprecated_global_bf16_switches_are_refused(clean_env, on_instance, monkeypatch):
    on_instance(None)
    monkeypatch.setenv("XLA_USE_BF16", "1")
    with pytest.raises(BenchError, match="XLA_USE_BF16"):
        base.make("neuron-xla")


# --- topology, share and scoring ------------------------------------------------------------
def test_two_of_trn1_32xlarge_cores_are_priced_and_scored_as_that_share(clean_env, on_instance):
    on_instance("trn1.32xlarge")
    backend = base.make("neuron-xla", {"visible_cores": "0-1"})
    info = backend.describe()
    assert (info.accelerator, info.devices_used, info.devices_on_host) == ("trainium1", 2, 32)
    cfg = config.validate({"name": "x", "backends": ["neuron-xla"], "model": "gpt2-124m-shape", "instance": "trn1.32xlarge",
                           "scenarios": {"train": {"batch": 8, "seq_len": 1024}}, "dtype": "bfloat16"})  # fmt: skip
    ctx = runner.RunContext(cfg, backend, info, runner.Pricing("trn1.32xlarge", "config"), "run")
    cost = ctx.cost(10_000.0)
    usd = catalog.price("trn1.32xlarge").usd_per_hour
    assert cost["share"] == pytest.approx(2 / 32) and cost["prorated"] is True
    assert cost["usd_per_million_tokens"] == pytest.approx(usd * 2 / 32 / (10_000 * 3600) * 1e6)
    case = Case("train", batch=8, dtype="bfloat16", compile="none", seq_len=1024)
    tokens_per_s = 10_000.0
    met = metrics.compute_metrics(PRESETS["gpt2-124m-shape"], case, case.tokens_per_step / tokens_per_s,
                                  catalog.accelerator("trainium1"), info, None)  # fmt: skip
    peak = 190 / 2 * 2  # TFLOP/s: a Trainium chip's bf16 peak over its 2 cores, times 2 cores (§7)
    assert met["mfu"] == pytest.approx(met["achieved_tflops"] / peak)


def test_trn2_logical_core_counts_as_two_physical_cores(clean_env, on_instance):
    """LNC=2 (Trn2's default): one logical core = 2 of the chip's 8 physical cores, 2/128 of a
    trn2.48xlarge, and 667/8*2 = 166.75 TFLOP/s of bf16 peak (§1, §3, §7)."""
    on_instance("trn2.48xlarge")
    info = base.make("neuron-xla").describe()  # num_cores: 1 by default
    assert (info.accelerator, info.devices_used, info.devices_on_host) == ("trainium2", 2, 128)
    assert "LNC=2" in info.name
    acc = catalog.accelerator("trainium2")
    assert acc.peak_tflops_for("bfloat16") / acc.cores_per_chip * info.devices_used == pytest.approx(166.75)
    assert catalog.share(info.devices_used, catalog.instance("trn2.48xlarge")) == pytest.approx(2 / 128)


def test_lnc_from_neuron_ls_inventory(clean_env, on_instance, monkeypatch):
    on_instance("trn2.48xlarge")
    topo = env.topology(0, [{"neuron_device": 0, "nc_count": 8, "logical_neuroncore_config": 1}])
    assert (topo.lnc, topo.lnc_source) == (1, "neuron-ls logical_neuroncore_config")
    monkeypatch.setenv("NEURON_LOGICAL_NC_CONFIG", "2")
    assert env.topology(0, None).lnc_source == "NEURON_LOGICAL_NC_CONFIG"
    assert env.topology(1, None).lnc == 1  # the run file's option wins


def test_unknown_host_has_no_accelerator_and_says_why(clean_env, on_instance):
    on_instance(None)
    info = base.make("neuron-xla").describe()
    assert info.accelerator is None and "instance type" in info.accelerator_reason
    on_instance("c7i.xlarge")
    assert "no Neuron accelerator" in base.make("neuron-xla").describe().accelerator_reason


def test_torchrun_ranks_claim_one_core_each(clean_env, on_instance, monkeypatch):
    on_instance("trn1.32xlarge")
    monkeypatch.setenv("WORLD_SIZE", "32")
    monkeypatch.setenv("LOCAL_RANK", "5")
    backend = base.make("neuron-xla", {"num_cores": 4})
    assert "NEURON_RT_NUM_CORES" not in backend.env  # torchrun places the ranks (§2)
    assert backend.describe().devices_used == 1  # per rank; the runner multiplies by the world
    assert backend.chips() == [2]  # logical core 5 sits on chip 2 (2 cores per Trainium chip)
    assert backend.data_parallel(torch.nn.Linear(2, 2)).__class__ is torch.nn.Linear  # no DDP: xm all-reduces


def test_cc_flag_helpers():
    assert env.parse_cores("0-3,8") == [0, 1, 2, 3, 8]
    assert env.cc_flags("generic", 3, "trn2", 2, []) == ["--model-type=generic", "-O3", "--auto-cast=none", "--target=trn2", "-lnc", "2"]  # fmt: skip
    with pytest.raises(BenchError):
        env.check_extra_flags("neuron-xla", ["--cache_dir=/x"])


# --- run files ------------------------------------------------------------------------------
def test_there_is_a_run_file_for_each_neuron_instance():
    want = {"trn1.2xlarge", "trn1.32xlarge", "inf2.xlarge", "inf2.48xlarge", "trn2.48xlarge"}
    have = {config.load(REPO / "configs/runs" / name).instance for name in NEURON_RUN_FILES}
    assert want <= have


@pytest.mark.parametrize("name", NEURON_RUN_FILES)
def test_neuron_run_files_load_and_validate(name):
    cfg = config.load(REPO / "configs/runs" / name)
    assert set(cfg.backends) <= {"neuron-xla", "neuron"} and cfg.dtype == "bfloat16"
    assert cfg.timing.warmup >= 8  # torch_neuronx's own benchmark warms each model 8 times (§1)
    assert catalog.instance(cfg.instance).accelerator in ("trainium1", "inferentia2", "trainium2")
    for backend in cfg.backends:
        base.parse_options(base.get(backend), cfg.backend_options.get(backend, {}))


# --- telemetry ------------------------------------------------------------------------------
def test_power_percentage_parsing():
    assert tel.parse_power("POWER_STATUS_VALID,1700000000,10.5,40.0,25.25\n") == {
        "status": "POWER_STATUS_VALID", "ts": 1700000000, "min_pct": 10.5, "max_pct": 40.0, "avg_pct": 25.25}  # fmt: skip
    assert tel.parse_power("garbage") is None and tel.parse_power("A,b,1,2,3") is None


def test_sampler_reads_sysfs_power_and_needs_a_tdp_for_watts(tmp_path, monkeypatch):
    """A fixture sysfs tree in tmp_path (§6 layout); no neuron-monitor binary here."""
    for chip, line in ((0, "POWER_STATUS_VALID,1,10,30,20"), (1, "POWER_STATUS_NO_DATA,1,0,0,0")):
        path = tmp_path / f"neuron{chip}" / "stats" / "power"
        path.mkdir(parents=True)
        (path / "utilization").write_text(line)
    monkeypatch.setattr(tel.shutil, "which", lambda name: None)
    sampler = tel.NeuronSampler([0, 1], tdp_watts=0, root=str(tmp_path))
    sampler.start()
    out = sampler.stop()
    assert out["power_pct"] == 20 and out["mean_w"] is None and out["energy_j"] is None
    sampler = tel.NeuronSampler([0], tdp_watts=500, root=str(tmp_path))
    sampler.start()
    out = sampler.stop()
    assert out["mean_w"] == pytest.approx(100.0) and out["energy_j"] is None  # a short window: no energy


def test_monitor_utilization_and_other_processes():
    report = {"neuron_runtime_data": [{"report": {"neuroncore_counters": {"neuroncores_in_use": {
        "0": {"neuroncore_utilization": 80.0}, "1": {"neuroncore_utilization": 40.0}}}}}]}  # fmt: skip
    assert tel.mean_utilization([json.dumps(report), "not json"]) == pytest.approx(60.0)
    inventory = [{"neuron_device": 0, "neuron_processes": [{"pid": 1, "command": "python"}, {"pid": 99, "command": "me"}]},
                 {"neuron_device": 1, "neuron_processes": [{"pid": 7, "command": "other"}]}]  # fmt: skip
    assert tel.other_processes([0], {99}, inventory) == ["pid 1 python on neuron0"]
    assert tel.other_processes(None, {99}, inventory) == ["pid 1 python on neuron0", "pid 7 other on neuron1"]
    assert tel.other_processes([0], {99}, None) is None or isinstance(tel.other_processes([0], {99}, None), list)
