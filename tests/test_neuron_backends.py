"""The Neuron backends without Neuron hardware: detection, options, environment, topology and the
core-share pricing, run files, and telemetry parsing.

No test here has a NeuronCore. Where a vendor package is involved, a stand-in module is put in
sys.modules or on sys.path (each test says which); what is tested is our code's contract with
the documented API, never the vendor's behaviour.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from ppharness import backends, startenv
from ppharness.backends import _neuron_env as env
from ppharness.backends import _neuron_telemetry as tel
from ppharness.backends import _neuron_vars as nvars
from ppharness.backends import neuron, neuron_xla
from ppharness.cli import app
from ppharness.core import metrics
from ppharness.core.scenarios import Case
from ppharness.core.workload import PRESETS
from ppharness.errors import BenchError
from ppharness.facts import catalog
from ppharness.run import config, runner

REPO = Path(__file__).resolve().parents[1]
NEURON_RUN_FILES = sorted(p.name for p in (REPO / "configs" / "runs").glob("*.yaml") if p.name.startswith(("trn1-", "trn2-", "inf2-")))  # fmt: skip
NEURON_VARS = ("NEURON_CC_FLAGS", "NEURON_COMPILE_CACHE_URL", "NEURON_RT_VISIBLE_CORES", "NEURON_RT_NUM_CORES",
               "NEURON_LOGICAL_NC_CONFIG", "PJRT_DEVICE", "XLA_USE_BF16", "XLA_DOWNCAST_BF16", "WORLD_SIZE",
               "LOCAL_RANK", "LOCAL_WORLD_SIZE", "FI_PROVIDER", "FI_EFA_USE_DEVICE_RDMA", "PPBENCH_JOB_ID",
               "TORCH_NEURONX_DISABLE_FALLBACK_EXECUTION", "TORCH_NEURONX_DEBUG_DIR", "NEURON_LAUNCH_BLOCKING",
               "NEURON_RT_ASYNC_EXEC_MAX_INFLIGHT_REQUESTS", "TORCH_NEURONX_FALLBACK_ONLY_FOR_UNIMPLEMENTED_OPS")  # fmt: skip


@pytest.fixture
def clean_env(monkeypatch):
    """No Neuron variables from the caller's shell, and the start-of-process snapshot
    (ppharness/startenv.py) taken again without them; whatever a backend sets is undone afterwards."""
    saved = dict(os.environ)
    for var in NEURON_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(startenv, "SNAPSHOT", dict(os.environ))
    monkeypatch.setattr(nvars, "_APPLIED", {})
    yield
    os.environ.clear()
    os.environ.update(saved)


def user_sets(monkeypatch, key: str, value: str) -> None:
    """A variable the user's shell set before the process started (so it is in the snapshot)."""
    monkeypatch.setenv(key, value)
    monkeypatch.setitem(startenv.SNAPSHOT, key, value)


@pytest.fixture
def on_instance(monkeypatch):
    """Pretend DMI names an EC2 instance type (sysinfo reads DMI; no network either way)."""

    def use(instance: str | None) -> None:
        monkeypatch.setattr("ppharness.facts.sysinfo.ec2_instance_type", lambda *a, **k: instance)

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
        ok, why = backends.get(name).available()
        assert why, f"{name}: availability must come with a reason"
        assert name in result.output
    if not backends.get("neuron-xla").available()[0]:
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
    ok, why = backends.get("neuron-xla").available()
    assert not ok and "placeholder" in why and "WRONG PACKAGE" in why
    if env.series(torch.__version__) >= env.NATIVE_MIN:  # the native backend checks torch first
        ok, why = backends.get("neuron").available()
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
    ok, why = backends.get("neuron-xla").available()
    assert not ok and "no Neuron device" in why


def test_native_series_selects_torchneuron(monkeypatch, clean_env):
    """A stand-in torch_neuronx 2.13: the XLA backend points to `neuron`; the native backend gets
    past the package check and explains that no `neuron` device is registered."""
    stand_in_neuronx(monkeypatch, "2.13.3.0")
    probe = env.probe_neuronx(env.XLA_SERIES)
    assert not probe.ok and "use backend neuron" in probe.reason
    assert env.probe_neuronx(env.NATIVE_MIN).ok
    if env.series(torch.__version__) >= env.NATIVE_MIN:
        ok, why = backends.get("neuron").available()
        assert not ok and "not 'neuron'" in why


def test_cpu_lane_needs_torch_xla(monkeypatch):
    monkeypatch.setenv("PJRT_DEVICE", "CPU")
    ok, why = backends.get("neuron-xla").available()
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
        ({"visible_cores": "0,2"}, "one contiguous increasing range"),  # NRT developer guide L1054
        ({"visible_cores": "3,5,6"}, "one contiguous increasing range"),
        ({"visible_cores": "5,4"}, "one contiguous increasing range"),
        ({"prefill_buckets": [128, 0]}, "prefill_buckets"),
        ({"num_core": 1}, "unknown key backend_options.neuron-xla.num_core"),
        ({"lnc": 2, "target": "trn1"}, "NCC_EARG001"),
        ({"lnc": 1, "target": "inf2"}, "Trn2 only"),
        ({"visible_cores": "0-1"}, "claims 2 NeuronCores, but one process drives one"),
        ({"num_cores": 2}, "claims 2 NeuronCores"),
        ({"num_cores": 0}, "claims every core"),
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
        backends.parse_options(backends.get("neuron"), {"lnc": 3})
    assert backends.parse_options(backends.get("neuron"), {"lnc": 2, "disable_fallback_execution": False}).lnc == 2


def test_flags_and_environment_come_from_the_options(clean_env, on_instance):
    """neuron_cc_wrapper flags (SDK about-neuron/arch/neuron-features/neuron-caching.rst: "will not
    be passed into Neuron Compiler CLI") go to NEURON_CC_FLAGS only, never into the compiler list
    that torch_neuronx.trace receives."""
    on_instance("trn1.32xlarge")
    opts = {"optlevel": 1, "cache_dir": "/tmp/ncc", "visible_cores": "3",
            "cc_flags": ["--verbose=info", "--retry_failed_compilation", "--log_level=INFO"]}  # fmt: skip
    backend = backends.make("neuron-xla", opts)
    flags = backend.flags
    assert flags[:3] == ["--model-type=transformer", "-O1", "--auto-cast=none"]
    assert "--target=trn1" in flags and flags[-1] == "--verbose=info"  # target from the instance type
    assert backend.wrapper_flags == ["--retry_failed_compilation", "--log_level=INFO"]
    assert not any(f.startswith(("--retry_failed", "--log_level")) for f in flags)
    assert "NEURON_CC_FLAGS" not in os.environ  # nothing is set until first use
    backend._start()
    assert os.environ["NEURON_CC_FLAGS"] == " ".join(flags + backend.wrapper_flags)
    assert os.environ["NEURON_COMPILE_CACHE_URL"] == "/tmp/ncc"
    assert os.environ["NEURON_RT_VISIBLE_CORES"] == "3" and "NEURON_RT_NUM_CORES" not in os.environ
    assert os.environ["PJRT_DEVICE"] == "NEURON"
    assert "FI_PROVIDER" not in os.environ  # one node: no EFA variables
    versions = backend.describe().versions
    assert versions["env.NEURON_CC_FLAGS"] == os.environ["NEURON_CC_FLAGS"]
    assert "--auto-cast=none" in versions["neuronx_cc_flags"] and "--retry" not in versions["neuronx_cc_flags"]
    assert "NEURON_CC_FLAGS only" in versions["neuron_cc_wrapper_flags"]
    assert "traced graphs are not kept there" in versions["neuron_compile_cache"]


def test_trn1n_compiles_for_its_own_target(clean_env, on_instance):
    """neuronx-cc --target takes trn1n as a value of its own (SDK
    compiler/neuronx-cc/api-reference-guide/index.rst), the family the NEFF will run on."""
    on_instance("trn1n.32xlarge")
    assert "--target=trn1n" in backends.make("neuron-xla").flags


def test_lnc_is_refused_on_a_trn1_host(clean_env, on_instance):
    """On trn1 "only lnc=1 is supported" and an lnc flag fails with NCC_EARG001 (SDK
    compiler/error-codes/EARG001.rst): refused before anything compiles."""
    on_instance("trn1.2xlarge")
    with pytest.raises(BenchError, match="Trn2 only"):
        backends.make("neuron-xla", {"lnc": 1})
    on_instance("trn2.48xlarge")
    assert backends.make("neuron-xla", {"lnc": 1}).topo.lnc == 1


def test_multi_node_trainium_sets_and_records_efa(clean_env, on_instance, monkeypatch):
    """AWS's multi-node Trn1 recipes export FI_PROVIDER=efa and FI_EFA_USE_DEVICE_RDMA=1 (SDK
    archive/nxd-training/bert.rst); a job with more ranks than this host runs sets them."""
    on_instance("trn1.32xlarge")
    monkeypatch.setenv("WORLD_SIZE", "64")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "32")
    monkeypatch.setenv("LOCAL_RANK", "0")
    backend = backends.make("neuron-xla")
    assert backend.env["FI_PROVIDER"] == "efa" and backend.env["FI_EFA_USE_DEVICE_RDMA"] == "1"
    assert backend.describe().versions["env.FI_PROVIDER"] == "efa"
    user_sets(monkeypatch, "FI_PROVIDER", "tcp")
    with pytest.raises(BenchError, match="FI_PROVIDER"):  # an inherited value that differs is refused
        backends.make("neuron-xla")


def test_an_inherited_flag_that_disagrees_is_refused(clean_env, on_instance, monkeypatch):
    on_instance(None)
    user_sets(monkeypatch, "NEURON_CC_FLAGS", "--auto-cast=matmult")
    with pytest.raises(BenchError, match="NEURON_CC_FLAGS"):
        backends.make("neuron-xla")


def test_deprecated_global_bf16_switches_are_refused(clean_env, on_instance, monkeypatch):
    on_instance(None)
    monkeypatch.setenv("XLA_USE_BF16", "1")
    with pytest.raises(BenchError, match="XLA_USE_BF16"):
        backends.make("neuron-xla")


# --- topology, share and scoring ------------------------------------------------------------
def test_a_run_is_priced_and_scored_for_the_core_it_drives(clean_env, on_instance):
    """One process drives one NeuronCore (one XLA device, one traced model), so it claims one:
    1/32 of a trn1.32xlarge and half of one Trainium chip's peak. Claiming more is refused
    (test_bad_neuron_xla_options_are_one_line_errors); more cores are more processes."""
    on_instance("trn1.32xlarge")
    backend = backends.make("neuron-xla", {"visible_cores": "5"})
    info = backend.describe()
    assert (info.accelerator, info.devices_used, info.devices_on_host) == ("trainium1", 1, 32)
    assert backend.chips() == [2]  # logical core 5 sits on chip 2 (2 cores per Trainium chip)
    cfg = config.validate({"name": "x", "backends": ["neuron-xla"], "model": "gpt2-124m-shape", "instance": "trn1.32xlarge",
                           "scenarios": {"train": {"batch": 8, "seq_len": 1024}}, "dtype": "bfloat16"})  # fmt: skip
    ctx = runner.RunContext(cfg, backend, info, runner.Pricing("trn1.32xlarge", "config"), "run")
    cost = ctx.cost(10_000.0)
    usd = catalog.price("trn1.32xlarge").usd_per_hour
    assert cost["share"] == pytest.approx(1 / 32) and cost["prorated"] is True
    assert cost["usd_per_million_tokens"] == pytest.approx(usd / 32 / (10_000 * 3600) * 1e6)
    case = Case("train", batch=8, dtype="bfloat16", compile="none", seq_len=1024)
    met = metrics.compute_metrics(PRESETS["gpt2-124m-shape"], case, case.tokens_per_step / 10_000.0,
                                  catalog.accelerator("trainium1"), info, None)  # fmt: skip
    assert met["mfu"] == pytest.approx(met["achieved_tflops"] / (190 / 2))  # one core: half a chip's bf16 peak (§7)


def test_claiming_more_cores_than_driven_is_refused_at_the_cli(clean_env):
    result = CliRunner().invoke(app, ["run", str(REPO / "configs/runs/inf2-xlarge.yaml"), "--set",
                                      "backend_options.neuron-xla.visible_cores=0-1"])  # fmt: skip
    assert result.exit_code == 2 and "claims 2 NeuronCores" in result.output and "Traceback" not in result.output


def test_trn2_logical_core_counts_as_two_physical_cores(clean_env, on_instance):
    """LNC=2 (Trn2's default): one logical core = 2 of the chip's 8 physical cores, 2/128 of a
    trn2.48xlarge, and 667/8*2 = 166.75 TFLOP/s of bf16 peak (§1, §3, §7)."""
    on_instance("trn2.48xlarge")
    info = backends.make("neuron-xla").describe()  # num_cores: 1 by default
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
    info = backends.make("neuron-xla").describe()
    assert info.accelerator is None and "instance type" in info.accelerator_reason
    on_instance("c7i.xlarge")
    assert "no Neuron accelerator" in backends.make("neuron-xla").describe().accelerator_reason


def test_torchrun_ranks_claim_one_core_each(clean_env, on_instance, monkeypatch):
    on_instance("trn1.32xlarge")
    monkeypatch.setenv("WORLD_SIZE", "32")
    monkeypatch.setenv("LOCAL_RANK", "5")
    backend = backends.make("neuron-xla", {"num_cores": 4})  # ignored under torchrun: one core per rank
    assert "NEURON_RT_NUM_CORES" not in backend.env  # torchrun places the ranks (§2)
    assert backend.describe().devices_used == 1  # per rank; the runner multiplies by the world
    assert backend.chips() == [2]  # logical core 5 sits on chip 2 (2 cores per Trainium chip)
    assert backend.data_parallel(torch.nn.Linear(2, 2)).__class__ is torch.nn.Linear  # no DDP: xm all-reduces
    with pytest.raises(BenchError, match="LOCAL_RANK itself"):  # pytorch/xla torch_xla/_internal/neuron.py
        backends.make("neuron-xla", {"visible_cores": "5"})


def test_cc_flag_helpers():
    assert env.parse_cores("0-3,4") == [0, 1, 2, 3, 4] and env.parse_cores("3-5,6") == [3, 4, 5, 6]
    assert env.cc_flags("generic", 3, "trn2", 2, []) == ["--model-type=generic", "-O3", "--auto-cast=none", "--target=trn2", "-lnc", "2"]  # fmt: skip
    with pytest.raises(BenchError):
        env.check_extra_flags("neuron-xla", ["--cache_dir=/x"])  # the cache_dir option's
    assert env.split_flags(["--no_cache", "--verbose=info", "--log_level=WARNING"]) == (
        ["--verbose=info"], ["--no_cache", "--log_level=WARNING"])  # fmt: skip
    assert (
        env.cc_flags("generic", 2, "", 0, ["--no_cache", "--enable-saturate-infinity"])[-1]
        == "--enable-saturate-infinity"
    )


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
        backends.parse_options(backends.get(backend), cfg.backend_options.get(backend, {}))


# --- telemetry ------------------------------------------------------------------------------
def test_one_power_reading_per_chip_not_per_rank(clean_env, on_instance, monkeypatch):
    """Each rank's sysfs file is its whole chip's (codecarbon#965: device-level power): under
    torchrun only the rank on a chip's first core reads it, only local rank 0 runs
    neuron-monitor, and combining the ranks adds each chip once (audit 5)."""
    on_instance("trn1.32xlarge")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    samplers = {}
    for rank in range(4):
        monkeypatch.setenv("LOCAL_RANK", str(rank))
        samplers[rank] = backends.make("neuron-xla").power_sampler()
    assert [samplers[r].chips for r in range(4)] == [[0], [], [1], []]  # 2 cores per Trainium chip
    assert [samplers[r].monitor for r in range(4)] == [True, False, False, False]
    from ppharness.core import timing
    from ppharness.run import distributed

    def part(energy: dict) -> timing.Measurement:
        return timing.Measurement(1.0, 1, [0.1, 0.1], [0.1, 0.1], 1.0, 0, energy)

    readers = {"energy_j": 6000.0, "mean_w": 100.0, "power_reason": "", "power_chips": [0]}
    others = {"energy_j": None, "mean_w": None, "power_reason": "read by another process", "power_chips": []}
    combined = distributed.combine([part(readers), part(others), part({**readers, "power_chips": [1]}), part(others)])
    assert combined.energy["mean_w"] == pytest.approx(200.0) and combined.energy["energy_j"] == pytest.approx(12000.0)
    cpu = {"energy_j": 5.0, "mean_w": 1.0}  # samplers without power_chips (other backends): every rank adds
    assert distributed.combine([part(cpu), part(cpu)]).energy["mean_w"] == pytest.approx(2.0)


def test_power_of_a_process_on_an_unknown_chip_is_not_read(clean_env, on_instance, monkeypatch):
    """NEURON_RT_NUM_CORES takes the first free cores (§1), so without visible_cores a process on
    a many-chip host cannot tell whose chip it would read: it reads none, and says why."""
    on_instance("trn1.32xlarge")
    monkeypatch.setattr("ppharness.backends.neuron_xla.neuron_ls", lambda: [{"neuron_device": i} for i in range(16)])
    sampler = backends.make("neuron-xla").power_sampler()
    assert sampler.chips == [] and "runtime's pick" in sampler.unread
    sampler = backends.make("neuron-xla", {"visible_cores": "5"}).power_sampler()
    assert sampler.chips == [2] and "this process drives 1" in sampler.share and sampler.monitor


def test_monitor_utilization():
    report = {"neuron_runtime_data": [{"report": {"neuroncore_counters": {"neuroncores_in_use": {
        "0": {"neuroncore_utilization": 80.0}, "1": {"neuroncore_utilization": 40.0}}}}}]}  # fmt: skip
    assert tel.mean_utilization([json.dumps(report), "not json"]) == pytest.approx(60.0)


def test_neuron_ls_processes_are_attributed_to_cores(monkeypatch):
    """`neuron-ls -j` lists processes per chip with pid, command and runtime version only (SDK
    tools/neuron-sys-tools/neuron-ls.rst), so a process is placed through its
    NEURON_RT_VISIBLE_CORES (a stand-in for /proc/<pid>/environ here). This job's ranks and the
    processes started with the same PPBENCH_JOB_ID are never interference; a process on this
    process's core is; one that cannot be placed is a warning (audit 2)."""
    inventory = [{"neuron_device": 0, "neuron_processes": [{"pid": 1, "command": "python"}, {"pid": 99, "command": "me"},
                                                            {"pid": 2, "command": "sibling"}, {"pid": 3, "command": "x"}]},
                 {"neuron_device": 1, "neuron_processes": [{"pid": 7, "command": "other"}]}]  # fmt: skip
    environs = {1: {"NEURON_RT_VISIBLE_CORES": "1"}, 2: {"PPBENCH_JOB_ID": "job-a", "NEURON_RT_VISIBLE_CORES": "1"},
                3: None, 7: {"NEURON_RT_VISIBLE_CORES": "0"}}  # fmt: skip
    busy, unsure = tel.classify_processes([0], {99}, [0], "job-a", inventory, environs.get)
    assert busy == []  # pid 1 holds core 1, ours is core 0; pid 2 is this job's
    assert unsure == ["pid 1 python on neuron0 on other core(s) 1 of the same chip (shares its power reading)",
                      "pid 3 x on neuron0 (cannot tell which NeuronCores it holds)"]  # fmt: skip
    busy, _ = tel.classify_processes([0], {99}, [1], "", inventory, environs.get)  # now we claim core 1
    assert busy == ["pid 1 python on neuron0 core(s) 1", "pid 2 sibling on neuron0 core(s) 1"]  # no job id: not ours
    _, unsure = tel.classify_processes([0], {99}, None, "job-a", inventory, environs.get)  # our cores unknown
    assert [u.split(" (")[0] for u in unsure] == ["pid 1 python on neuron0", "pid 3 x on neuron0"]
    monkeypatch.setattr(tel, "neuron_ls", lambda: None)  # no neuron-ls on this host: cannot tell
    assert tel.classify_processes([0], {99}, [0], "", None, environs.get) is None
    assert tel.other_processes(None, {99}, inventory) == [
        "pid 1 python on neuron0 (cannot tell which NeuronCores it holds)", "pid 2 sibling on neuron0 (cannot tell which NeuronCores it holds)",
        "pid 3 x on neuron0 (cannot tell which NeuronCores it holds)", "pid 7 other on neuron1 (cannot tell which NeuronCores it holds)"]  # fmt: skip


def test_unattributed_processes_warn_and_attributed_ones_invalidate():
    polls = iter([([], ["pid 3 x on neuron0 (cannot tell which NeuronCores it holds)"]), ([], [])])
    guard = tel.NeuronGuard(lambda: next(polls))
    guard.start()
    seen = guard.stop()
    assert seen.invalid == [] and len(seen.warnings) == 1 and "pid 3" in seen.warnings[0]
    polls = iter([(["pid 1 python on neuron0 core(s) 0"], []), None])
    guard = tel.NeuronGuard(lambda: next(polls))
    guard.start()
    seen = guard.stop()
    assert (
        len(seen.invalid) == 1
        and "device shared" in seen.invalid[0]
        and seen.detail["busy"] == ["pid 1 python on neuron0 core(s) 0"]
    )
    guard = tel.NeuronGuard(lambda: None)  # no neuron-ls on this host
    guard.start()
    seen = guard.stop()
    assert seen.invalid == [] and seen.warnings == [] and seen.detail["busy"] is None


# --- the environment: what the user set against what imports wrote (round 2, item 6) -----------
def test_a_variable_an_import_wrote_is_overridden_and_recorded(clean_env, on_instance, monkeypatch):
    """torch-neuronx 2.x's xla.init() overwrites NEURON_RT_NUM_CORES at `import torch_xla` (round 2,
    item 6, TNX-1.13 xla.py): a value written after the process started is not the user's, so the
    plan overrides it instead of refusing, and the record names it. A user's own value that
    differs is still refused (test_an_inherited_flag_that_disagrees_is_refused)."""
    on_instance("trn1.2xlarge")
    monkeypatch.setenv("NEURON_RT_NUM_CORES", "4")  # after the snapshot: an import's write
    monkeypatch.setenv("NEURON_CC_FLAGS", "--written-by-an-import")
    backend = backends.make("neuron-xla")  # not refused
    versions = backend.describe().versions
    changed = json.loads(versions["env_set_by_import"].split(" (overridden")[0])
    assert changed["NEURON_RT_NUM_CORES"] == [None, "4"] and changed["NEURON_CC_FLAGS"] == [
        None,
        "--written-by-an-import",
    ]
    assert "overridden by the run file: NEURON_CC_FLAGS, NEURON_RT_NUM_CORES" in versions["env_set_by_import"]
    assert versions["env_snapshot"].startswith("taken at ppharness import")
    backend._start()
    assert os.environ["NEURON_RT_NUM_CORES"] == "1" and os.environ["NEURON_CC_FLAGS"] == " ".join(backend.flags)
    assert nvars.import_changes() == {}  # what the backend set itself is not an import's


def test_the_observed_variables_are_recorded(clean_env, on_instance, monkeypatch):
    """NEURON_LAUNCH_BLOCKING (TorchNeuron: "1" forces synchronous execution), the runtime's
    NEURON_RT_ASYNC_EXEC_MAX_INFLIGHT_REQUESTS (AWS's Llama-2-7B recipe sets 3; no effect from
    Neuron 2.31) and TORCH_NEURONX_FALLBACK_ONLY_FOR_UNIMPLEMENTED_OPS, as seen after import."""
    on_instance("trn1.2xlarge")
    monkeypatch.setenv("NEURON_RT_ASYNC_EXEC_MAX_INFLIGHT_REQUESTS", "3")
    versions = backends.make("neuron-xla").describe().versions
    assert versions["seen.NEURON_RT_ASYNC_EXEC_MAX_INFLIGHT_REQUESTS"] == "3"
    assert versions["runtime_async"].startswith("NEURON_RT_ASYNC_EXEC_MAX_INFLIGHT_REQUESTS=3: up to 3")
    assert nvars.runtime_async_note("0").startswith("implicit async execution off")
    assert versions["seen.NEURON_LAUNCH_BLOCKING"] == "unset"
    assert versions["seen.TORCH_NEURONX_FALLBACK_ONLY_FOR_UNIMPLEMENTED_OPS"] == "unset"


def test_the_snapshot_is_taken_before_any_vendor_import():
    """`ppharness/__init__.py` imports startenv first: a fresh interpreter that imports ppharness
    has not imported torch at that point."""
    code = "import sys, ppharness; from ppharness import startenv; print(startenv.TORCH_FIRST, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.stdout.split() == ["False", "False"], out.stderr[-2000:]


# --- TorchNeuron (`neuron`): execution, CPU fallback, peak memory, process group -----------------
def stand_in_torchneuron(monkeypatch, tracked: bool = True) -> types.ModuleType:
    """A stand-in torch_neuronx 2.13 with the op-tracking API of the TorchNeuron source
    (torch_neuronx/__init__.py L251-278 at parmoham-aws/test-repo-parmoham@98154b86): a set of op
    names fed by CPU fallbacks, cleared by clear_op_tracking(). Not the vendor package."""
    module = stand_in_neuronx(monkeypatch, "2.13.3.0")
    if tracked:
        module.fallen = set()
        module.get_fallback_ops = lambda: sorted(module.fallen)
        module.get_executed_ops = lambda: []
        module.clear_op_tracking = module.fallen.clear
    return module


@pytest.mark.parametrize(("value", "says"), [("1", "synchronous eager"), ("0", "asynchronous eager"),
                                              (None, "synchronous or not unknown")])  # fmt: skip
def test_the_execution_note_follows_neuron_launch_blocking(clean_env, on_instance, monkeypatch, value, says):
    """TorchNeuron setdefaults NEURON_LAUNCH_BLOCKING at import from its build ("1" release, "0"
    dev: TN-SRC torch_neuronx/__init__.py L46, _build_config.py); the record says which it saw."""
    on_instance("trn2.48xlarge")
    if value is not None:
        monkeypatch.setenv("NEURON_LAUNCH_BLOCKING", value)
    versions = backends.make("neuron").describe().versions
    assert says in versions["execution"] and versions["seen.NEURON_LAUNCH_BLOCKING"] == (value or "unset")


def test_cpu_fallbacks_in_the_window_are_recorded_and_warned(clean_env, on_instance, monkeypatch):
    """Ops that fell back before the window (warm-up, the logits check) are cleared at its start;
    those during it are recorded, with a warning (round 2, item 8)."""
    on_instance("trn2.48xlarge")
    nx = stand_in_torchneuron(monkeypatch)
    backend = backends.make("neuron")
    monkeypatch.setattr(tel, "neuron_ls", lambda: None)
    assert backend.describe().versions["cpu_fallback"].startswith("ops torch_neuronx.get_fallback_ops()")
    nx.fallen.add("aten::warmup_only")
    watch = backend.monitor()
    watch.start()
    nx.fallen.update({"aten::linalg_qr", "aten::_foreach_add"})
    seen = watch.stop()
    facts, warnings = backend.execution_notes()
    assert facts["cpu_fallback"] == ["aten::_foreach_add", "aten::linalg_qr"]
    assert seen.detail["cpu_fallback_ops"] == facts["cpu_fallback"] and seen.invalid == []
    assert len(warnings) == 1 and "2 op(s) fell back to the CPU" in warnings[0]
    watch.start()  # the next window: cleared again, none fell back
    watch.stop()
    assert backend.execution_notes() == ({"cpu_fallback": [], "cpu_fallback_note": neuron.FALLBACK_SCOPE}, [])


def test_without_the_tracking_api_cpu_fallback_is_unknown(clean_env, on_instance, monkeypatch):
    on_instance("trn2.48xlarge")
    stand_in_torchneuron(monkeypatch, tracked=False)
    backend = backends.make("neuron")
    monkeypatch.setattr(tel, "neuron_ls", lambda: None)
    watch = backend.monitor()
    watch.start()
    watch.stop()
    facts, warnings = backend.execution_notes()
    assert facts["cpu_fallback"] == "unknown" and warnings == []
    assert backend.describe().versions["cpu_fallback"].startswith("unknown")
    assert "raises" in backend.describe().versions["compile_fallback"]  # TORCH_NEURONX_DISABLE_FALLBACK_EXECUTION
    with pytest.raises(BenchError, match="claims 4 NeuronCores"):
        backends.make("neuron", {"num_cores": 4})


def test_peak_memory_comes_from_torch_neuron(clean_env, on_instance, monkeypatch):
    """torch.neuron.max_memory_allocated / reset_peak_memory_stats (TN-SRC torch_neuronx/neuron.py
    L305, L344): used where present; torch.accelerator's only as the fallback, and an error there
    is recorded rather than swallowed (round 2, item 10). The stand-in torch.neuron is not the
    vendor module."""
    on_instance("trn2.48xlarge")
    calls = []
    stand_in = types.SimpleNamespace(
        max_memory_allocated=lambda: 123_456, reset_peak_memory_stats=lambda: calls.append("reset")
    )
    monkeypatch.setattr(torch, "neuron", stand_in, raising=False)
    backend = backends.make("neuron")
    backend.reset_peak_memory()
    assert calls == ["reset"] and backend.memory().peak_allocated_bytes == 123_456
    assert backend.describe().versions["peak_memory"] == "torch.neuron.max_memory_allocated"
    monkeypatch.delattr(torch, "neuron")
    broken = types.SimpleNamespace(max_memory_allocated=lambda: 1 / 0, reset_peak_memory_stats=lambda: None)
    monkeypatch.setattr(torch, "accelerator", broken)
    assert backend.memory() is None
    assert "torch.accelerator.max_memory_allocated" in backend.execution_notes()[0]["peak_memory_error"]


def test_the_neuron_process_group_is_asked_for_by_name(clean_env, on_instance, monkeypatch):
    """TorchNeuron registers "neuron" when imported (TN-SRC torch_neuronx/distributed/backend.py
    L58) and AWS's examples ask for it by name; without it the run stops with the reason instead
    of falling back to gloo through the device map (round 2, item 7)."""
    import torch.distributed as dist

    on_instance("trn2.48xlarge")
    stand_in_torchneuron(monkeypatch)
    backend = backends.make("neuron")
    monkeypatch.setattr(dist.Backend, "backend_list", ["undefined", "gloo", "nccl"])
    with pytest.raises(BenchError, match="registered no 'neuron' process-group backend"):
        backend.distributed_backend()
    monkeypatch.setattr(dist.Backend, "backend_list", ["undefined", "gloo", "nccl", "neuron"])
    assert backend.distributed_backend() == "neuron"


# --- traced state after the move (round 2, item 1) -----------------------------------------------
def test_state_still_on_the_host_after_the_move_is_a_warning(clean_env, on_instance):
    """Where the traced graph exposes its aliased state (`states`, torch-neuronx's NeuronModule),
    the record says where it is after the move, and a move that left it on the CPU is "host"."""
    on_instance(None)
    backend = backends.make("neuron-xla")
    traced = types.SimpleNamespace(states=torch.nn.ParameterList([torch.nn.Parameter(torch.zeros(2))]))
    backend.mover = lambda trace, device_id: None  # returns, moves nothing
    assert backend._move(traced).startswith("host: move_trace_to_device(trace, 0) returned but the state is still")
    assert neuron_xla.state_devices(traced) == ["cpu"] and neuron_xla.state_devices(object()) == []
