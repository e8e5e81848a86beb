"""The CUDA backend: everything testable without a GPU, plus the GPU checks (skipped with the
backend's own reason where no GPU is visible).

CPU-side tests drive the backend's logic through stand-ins: a table of real device-name strings
(as nvidia-smi / torch.cuda.get_device_name() print them), a fake `pynvml` module for NVML, and
monkeypatched torch.cuda queries for describe(). The real-GPU checks are in test_cuda_gpu.py;
OOM through the runner, `batch: auto` and the GPU run files are in test_batch_sweep.py.
"""

from __future__ import annotations

import os
import sys
import types
from types import SimpleNamespace

import pytest
import torch
from conftest import SMOKE

from ppharness import backends
from ppharness.backends import cuda as cuda_mod
from ppharness.backends.cpu import CPUBackend
from ppharness.backends.cuda import CUDABackend, CUDAOptions, NvmlEnergySampler, accelerator_for, is_oom_error
from ppharness.core import scenarios
from ppharness.core.scenarios import Case
from ppharness.core.timing import TimingConfig, measure
from ppharness.core.workload import PRESETS
from ppharness.errors import BenchError
from ppharness.facts import catalog
from ppharness.record.load import load
from ppharness.run import config, runner

TINY = PRESETS["tiny"]


@pytest.fixture(autouse=True)
def _shipped_catalog(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PPBENCH_CONFIG_DIR", raising=False)


@pytest.fixture
def fresh_nvml():
    cuda_mod.load_nvml.cache_clear()
    yield
    cuda_mod.load_nvml.cache_clear()


# ---------------------------------------------------------------- device name -> accelerator key

NAMES = {
    # what drivers report -> accelerators.yaml key (None: no sourced peak, so MFU is null)
    "NVIDIA A100-SXM4-40GB": "a100-sxm4-40gb",  # p4d.24xlarge
    "A100-SXM4-40GB": "a100-sxm4-40gb",  # older drivers drop the vendor prefix
    "NVIDIA A100-SXM4-80GB": "a100-sxm4-80gb",  # p4de.24xlarge
    "NVIDIA A100-PCIE-40GB": "a100-pcie-40gb",
    "NVIDIA A100 80GB PCIe": "a100-pcie-80gb",
    "NVIDIA H100 80GB HBM3": "h100-sxm",  # p5.48xlarge
    "NVIDIA H100 PCIe": "h100-pcie",
    "NVIDIA H100 NVL": None,  # 94 GB NVL part: no sourced peaks
    "NVIDIA H200": "h200-sxm",  # p5e / p5en
    "NVIDIA H200 NVL": None,  # contains the H200 pattern, but a different form factor
    "NVIDIA L4": "l4",  # g6
    "NVIDIA L40S": "l40s",  # g6e
    "NVIDIA L40": None,  # not an L40S and not an L4
    "NVIDIA A10G": "a10g",  # g5 (key known; its peaks are not, so MFU is null with a reason)
    "NVIDIA A10": None,
    "NVIDIA GH200 480GB": None,
    "NVIDIA B200": None,
    "Tesla V100-SXM2-16GB": None,
    "Tesla T4": None,
    "AMD Instinct MI300X OAM": None,  # a ROCm build of torch
    "NVIDIA A100-SXM4-40GB MIG 3g.20gb": None,  # a slice of a GPU never gets the whole GPU's peak
}


@pytest.mark.parametrize("name", NAMES)
def test_device_names_map_to_accelerator_keys(name):
    key, reason = accelerator_for(name)
    assert key == NAMES[name]
    assert (key is None) == bool(reason)  # unknown: a reason, never another GPU's peak
    if key is None:
        assert name in reason


def test_every_nvidia_match_pattern_survives_the_form_factor_check():
    for acc in catalog.accelerators().values():
        for pattern in acc.match:
            assert accelerator_for(f"NVIDIA {pattern}") == (acc.key, ""), (acc.key, pattern)


def test_mig_mode_reported_by_nvml_hides_the_peak():
    key, reason = accelerator_for("NVIDIA H100 80GB HBM3", mig=True)
    assert key is None and "MIG" in reason


def test_pcie_entries_have_their_own_lower_peaks():
    sxm, pcie = catalog.accelerator("h100-sxm"), catalog.accelerator("h100-pcie")
    assert pcie.peak_tflops["bfloat16"] < sxm.peak_tflops["bfloat16"] and pcie.mem_bw_gbps < sxm.mem_bw_gbps
    assert catalog.accelerator("a100-pcie-80gb").mem_bw_gbps < catalog.accelerator("a100-sxm4-80gb").mem_bw_gbps


# ---------------------------------------------------------------- availability and identity


def test_registered_and_unavailable_without_a_gpu(monkeypatch):
    assert backends.get("cuda") is CUDABackend
    monkeypatch.setattr(torch.version, "cuda", None)
    monkeypatch.setattr(torch.version, "hip", None)
    assert CUDABackend.available() == (False, f"torch was built without CUDA (torch {torch.__version__})")
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    ok, why = CUDABackend.available()
    assert not ok and why.startswith("no CUDA device visible")
    monkeypatch.setattr(torch.version, "cuda", None)
    monkeypatch.setattr(torch.version, "hip", "6.2")  # ROCm builds go through torch.cuda too
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert CUDABackend.available() == (True, "")


def test_available_never_raises(monkeypatch):
    def boom():
        raise RuntimeError("driver exploded")

    monkeypatch.setattr(torch.version, "cuda", "12.4")
    monkeypatch.setattr(torch.cuda, "is_available", boom)
    ok, why = CUDABackend.available()
    assert not ok and "driver exploded" in why


def _fake_gpu(monkeypatch, name: str, count: int = 8) -> None:
    props = SimpleNamespace(
        name=name, major=9, minor=0, multi_processor_count=132, total_memory=80 * 2**30, uuid="abc", pci_bus_id=0x3B
    )
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index: props)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    monkeypatch.setattr(torch.backends.cudnn, "version", lambda: 90100)


def test_describe_names_the_gpu_its_peak_key_and_versions(monkeypatch):
    _fake_gpu(monkeypatch, "NVIDIA H100 80GB HBM3")
    monkeypatch.setattr(cuda_mod, "load_nvml", lambda: FakeNVML())
    info = CUDABackend(CUDAOptions(device_index=0)).describe()
    assert (info.backend, info.name, info.accelerator) == ("cuda", "NVIDIA H100 80GB HBM3", "h100-sxm")
    assert (info.devices_used, info.devices_on_host) == (1, 8)
    v = info.versions
    assert v["driver"] == "550.54.15" and v["cuda_runtime"] == "12.4" and v["cudnn"] == "90100"
    assert v["compute_capability"] == "9.0" and v["gpu"] == "NVIDIA H100 80GB HBM3"
    assert info.kind.startswith("NVIDIA H100 80GB HBM3, ") and info.kind.endswith(" MiB")  # what --resume matches


def test_describe_says_how_the_allocator_was_set(monkeypatch):
    _fake_gpu(monkeypatch, "NVIDIA H200")
    monkeypatch.setattr(cuda_mod, "load_nvml", lambda: None)
    for name in ("PYTORCH_ALLOC_CONF", "PYTORCH_CUDA_ALLOC_CONF"):
        monkeypatch.delenv(name, raising=False)
    assert CUDABackend(CUDAOptions(device_index=0)).describe().versions["alloc_conf"] == "default"
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    assert CUDABackend(CUDAOptions(device_index=0)).describe().versions["alloc_conf"] == "expandable_segments:True"


def test_describe_unknown_gpu_without_nvml(monkeypatch):
    _fake_gpu(monkeypatch, "NVIDIA RTX PRO 6000 Blackwell Server Edition", count=1)
    monkeypatch.setattr(cuda_mod, "load_nvml", lambda: None)
    info = CUDABackend(CUDAOptions(device_index=0)).describe()
    assert info.accelerator is None and "RTX PRO 6000" in info.accelerator_reason
    assert info.versions["nvml"].startswith("no") and info.versions["driver"]  # from /proc, or "unknown"


def test_describe_under_mig_gives_no_peak(monkeypatch):
    _fake_gpu(monkeypatch, "NVIDIA A100-SXM4-40GB")
    monkeypatch.setattr(cuda_mod, "load_nvml", lambda: FakeNVML(mig=1))
    info = CUDABackend(CUDAOptions(device_index=0)).describe()
    assert info.accelerator is None and "MIG" in info.accelerator_reason


# ---------------------------------------------------------------- precision, optimizer, compile


@pytest.fixture
def restore_matmul_precision():
    before = torch.get_float32_matmul_precision()
    yield
    torch.set_float32_matmul_precision(before)


def test_tf32_only_for_the_tf32_dtype(restore_matmul_precision):
    backend = CUDABackend()
    backend.set_precision("tf32")
    assert torch.get_float32_matmul_precision() == "high"
    for dtype in ("float32", "bfloat16", "float16"):
        backend.set_precision(dtype)
        assert torch.get_float32_matmul_precision() == "highest", dtype


def test_fused_adamw_by_default():
    params = [torch.nn.Parameter(torch.zeros(4))]
    assert CUDABackend().make_optimizer(params).defaults["fused"] is True
    unfused = CUDABackend(backends.parse_options(CUDABackend, {"fused_adamw": False})).make_optimizer(params)
    assert not unfused.defaults["fused"] and unfused.defaults["foreach"]


@pytest.mark.parametrize("graphs", ["reduce-overhead", "max-autotune"])
def test_prepare_compiles_with_static_shapes_and_marks_cuda_graph_steps(monkeypatch, graphs):
    """Both of inductor's CUDA-graph modes are graph modes everywhere: the step is marked, the
    skips are watched (and kernels refuse both, tests/test_kernels.py)."""
    calls = []
    monkeypatch.setattr(cuda_mod, "torch_compile", lambda m, mode, **kw: calls.append((mode, kw)) or m)
    marks = []
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: marks.append(1))
    backend, module = CUDABackend(), torch.nn.Linear(2, 2)
    assert backend.prepare(module, (), "train", "default") is module
    backend.step_end()
    assert not marks and backend._watch is None  # no CUDA graphs: nothing to mark
    backend.prepare(module, (), "decode", graphs)
    backend.step_end()
    assert marks == [1] and backend._watch is not None
    assert calls == [("default", {"dynamic": False}), (graphs, {"dynamic": False})]
    assert set(CUDABackend.graph_modes) == {"reduce-overhead", "max-autotune"}
    backend.execution_notes()


def test_decode_runs_every_call_under_the_decode_sdpa_order(monkeypatch):
    """A compiled graph takes its SDPA kernel when traced (its first calls), an eager call per
    call: the prepared decode callable enters the order around every call, then restores torch's."""
    from torch.nn.attention import SDPBackend

    monkeypatch.setattr(cuda_mod, "torch_compile", lambda m, mode, **kw: m)
    seen = []

    class Spy(torch.nn.Module):
        def forward(self, x):
            seen.append(list(torch._C._get_sdp_priority_order()))
            return x

    before = list(torch._C._get_sdp_priority_order())
    backend = CUDABackend()
    decode = backend.prepare(Spy(), (), "decode", "none")
    decode(torch.zeros(1))
    want = [int(getattr(SDPBackend, n)) for n in cuda_mod.DECODE_SDPA]
    assert seen[0][: len(want)] == want and list(torch._C._get_sdp_priority_order()) == before
    assert all(getattr(torch.backends.cuda, f"{n}_sdp_enabled")() for n in ("flash", "mem_efficient", "math", "cudnn"))
    prefill = backend.prepare(Spy(), (), "prefill", "none")
    prefill(torch.zeros(1))
    assert seen[1] == before  # train and prefill keep torch's own order


def test_options_are_validated():
    with pytest.raises(BenchError, match="unknown key backend_options.cuda.fused; valid: device_index, fused_adamw"):
        backends.parse_options(CUDABackend, {"fused": True})
    with pytest.raises(BenchError, match="backend_options.cuda.device_index must be int"):
        backends.parse_options(CUDABackend, {"device_index": "0"})


class HostedCUDA(CUDABackend):
    """The CUDA backend's step-level choices (fused AdamW, static-shape compile, CUDA-graph step
    marks) hosted on the CPU: only the device, clock and memory queries are the base class's."""

    device = torch.device("cpu")
    synchronize, timer = backends.Backend.synchronize, backends.Backend.timer
    memory, reset_peak_memory, release_memory = (
        backends.Backend.memory,
        backends.Backend.reset_peak_memory,
        backends.Backend.release_memory,
    )


@pytest.mark.parametrize(
    "case",
    [
        Case("train", batch=2, dtype="float32", compile="none", seq_len=16),  # fused AdamW in the step
        Case("decode", batch=2, dtype="float32", compile="default", prompt_len=8, new_tokens=4),
    ],
    ids=lambda c: c.scenario,
)
def test_steps_run_through_the_cuda_choices_and_decode_compiles_once(case):
    backend = HostedCUDA()
    step = scenarios.build_step(case, TINY, backend)
    m = measure(step.run, backend, TimingConfig(warmup=1, min_iters=3, min_seconds=0), step.prepare_s)
    assert m.valid, m.reasons
    assert m.compiles_in_window == 0  # the advancing decode position never triggers a recompile


# ---------------------------------------------------------------- out of memory


def _raised(exc: BaseException, cause: BaseException | None = None) -> BaseException:
    try:
        raise exc from cause
    except BaseException as caught:  # noqa: BLE001
        return caught


def test_out_of_memory_is_recognised_in_every_form():
    assert is_oom_error(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert is_oom_error(RuntimeError("CUDA error: out of memory"))  # a kernel launch, not the allocator
    assert is_oom_error(RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling cublasCreate"))
    assert is_oom_error(RuntimeError("HIP out of memory. Tried to allocate 1 GiB"))  # ROCm
    compiler = type("BackendCompilerFailed", (RuntimeError,), {})
    assert is_oom_error(_raised(compiler("backend='inductor' raised"), torch.OutOfMemoryError("CUDA out of memory")))
    assert not is_oom_error(RuntimeError("CUDA error: an illegal memory access was encountered"))
    assert not is_oom_error(ValueError("batch must be positive"))
    assert CUDABackend().is_oom(torch.OutOfMemoryError("x"))


# ---------------------------------------------------------------- NVML energy (fake pynvml)


class FakeNVML:
    """Stands in for nvidia-ml-py's `pynvml` (only the calls the backend makes)."""

    class NVMLError(Exception):
        pass

    def __init__(self, energy_mj=(1_000, 6_000), supported=True, mig=0, uuids=("GPU-abc",), procs=(), clocks=0):
        self._energy, self.supported, self.mig, self.uuids = iter(energy_mj), supported, mig, uuids
        self.procs, self.clocks = [SimpleNamespace(pid=p, usedGpuMemory=m) for p, m in procs], clocks

    def nvmlDeviceGetComputeRunningProcesses(self, handle):
        return self.procs

    def nvmlSystemGetProcessName(self, pid):
        return b"/usr/bin/python3"

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle):
        return self.clocks

    def nvmlDeviceGetHandleByUUID(self, uuid):
        if uuid not in self.uuids:
            raise self.NVMLError("Not Found")
        return ("handle", uuid)

    def nvmlDeviceGetHandleByPciBusId(self, bus_id):
        raise self.NVMLError("Not Found")

    def nvmlDeviceGetTotalEnergyConsumption(self, handle):
        if not self.supported:
            raise self.NVMLError("Not Supported")
        return next(self._energy)

    def nvmlDeviceGetMigMode(self, handle):
        return [self.mig, self.mig]

    def nvmlSystemGetDriverVersion(self):
        return "550.54.15"


def test_nvml_absent_gives_no_sampler(monkeypatch, fresh_nvml):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # `import pynvml` raises ImportError
    assert cuda_mod.load_nvml() is None
    assert CUDABackend().power_sampler() is None


def test_nvml_library_missing_gives_no_sampler(monkeypatch, fresh_nvml):
    fake = types.ModuleType("pynvml")

    def init():
        raise OSError("libnvidia-ml.so.1: cannot open shared object file")

    fake.nvmlInit = init
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    assert cuda_mod.load_nvml() is None


@pytest.mark.parametrize(
    "nvml, ids, expect",
    [
        (FakeNVML(), ("GPU-abc", None), NvmlEnergySampler),
        (FakeNVML(supported=False), ("GPU-abc", None), None),  # pre-Volta: no energy counter
        (FakeNVML(), ("GPU-other", "00000000:3B:00.0"), None),  # not found: never guess by index
        (FakeNVML(mig=1), ("GPU-abc", None), None),  # a MIG slice would be charged the whole GPU
    ],
)
def test_power_sampler_only_when_nvml_can_measure_this_gpu(monkeypatch, nvml, ids, expect):
    monkeypatch.setattr(cuda_mod, "load_nvml", lambda: nvml)
    backend = CUDABackend()
    monkeypatch.setattr(backend, "_nvml_ids", lambda: ids)
    sampler = backend.power_sampler()
    assert sampler is None if expect is None else isinstance(sampler, expect)


def test_guards_name_other_processes_and_real_slowdowns(monkeypatch):
    me, gib = os.getpid(), 2**30
    nvml = FakeNVML(procs=[(me, 3 * gib), (4242, gib)], clocks=0x4 | 0x1)  # power cap + idle: normal
    monkeypatch.setattr(cuda_mod, "load_nvml", lambda: nvml)
    backend = CUDABackend()
    monkeypatch.setattr(backend, "_nvml_ids", lambda: ("GPU-abc", None))
    assert backend.busy_processes() == ["pid 4242 python3 (1.0 GiB)"]
    assert backend.throttle_reasons() == []
    nvml.clocks = 0x4 | 0x40
    assert backend.throttle_reasons() == ["hardware thermal slowdown"]
    nvml.procs = [SimpleNamespace(pid=me + 100_000, usedGpuMemory=gib)]  # host PIDs seen from a container
    assert backend.busy_processes() is None  # this run is not in the list: PIDs cannot be compared
    monkeypatch.setattr(cuda_mod, "load_nvml", lambda: None)
    assert backend.busy_processes() is None and backend.throttle_reasons() is None


def test_energy_over_the_window():
    times = iter([10.0, 12.5])
    sampler = NvmlEnergySampler(FakeNVML(energy_mj=(1_000, 6_000)), "h", clock=lambda: next(times))
    sampler.start()
    assert sampler.stop() == {"energy_j": 5.0, "mean_w": 2.0}  # 5000 mJ over 2.5 s
    none = {"energy_j": None, "mean_w": None}
    for energy, clock in (((6_000, 1_000), (0.0, 5.0)), ((1_000, 1_000), (0.0, 5.0)), ((1_000, 2_000), (0.0, 0.2))):
        # the driver reloaded (counter went back); the counter never moved; a window under 1 s
        ticks = iter(clock)
        sampler = NvmlEnergySampler(FakeNVML(energy_mj=energy), "h", clock=lambda ticks=ticks: next(ticks))
        sampler.start()
        assert sampler.stop() == none, (energy, clock)


def test_nvml_ids_identify_the_gpu_not_its_index(monkeypatch):
    props = SimpleNamespace(uuid="12ab-34cd", pci_bus_id=0x3B, pci_domain_id=0, pci_device_id=0)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index: props)
    assert CUDABackend(CUDAOptions(device_index=0))._nvml_ids() == ("GPU-12ab-34cd", "00000000:3B:00.0")


# --- CUDA graphs skipped by inductor -----------------------------------------------------------
def test_cudagraph_watch_reads_inductors_own_skip_log():
    """The reason comes through torch's own skip function (the one inductor calls on CUDA)."""
    from torch._inductor.cudagraph_utils import log_cudagraph_skip_and_bump_counter

    quiet = cuda_mod.CudagraphWatch()
    assert quiet.close() == ({"cudagraphs": "requested", "cudagraph_skips": 0, "cudagraph_skip_reasons": []}, [])
    watch = cuda_mod.CudagraphWatch()
    log_cudagraph_skip_and_bump_counter("skipping cudagraphs due to mutated inputs (2 instances)")
    facts, warnings = watch.close()
    assert facts["cudagraph_skips"] == 1
    assert facts["cudagraph_skip_reasons"] == ["skipping cudagraphs due to mutated inputs (2 instances)"]
    assert len(warnings) == 1 and "mutated inputs" in warnings[0] and "separate kernel launches" in warnings[0]
    log_cudagraph_skip_and_bump_counter("skipping cudagraphs due to a later case")
    assert watch.reasons == ["skipping cudagraphs due to mutated inputs (2 instances)"]  # closed: not listening


class GraphWatchingCPU(CPUBackend):
    """The CPU backend with the CUDA backend's own prepare/execution_notes and reduce-overhead.
    Inductor cannot capture CUDA graphs for CPU tensors, so it skips them for real: this drives
    the skip detection through real torch.compile and the real runner, no GPU needed."""

    compile_modes = (*CPUBackend.compile_modes, "reduce-overhead")
    graph_modes = ("reduce-overhead",)
    prepare = CUDABackend.prepare
    execution_notes = CUDABackend.execution_notes
    step_end = CUDABackend.step_end

    def __init__(self, options=None):
        super().__init__(options)
        self._cudagraphs, self._watch = False, None


@pytest.mark.slow
def test_a_reduce_overhead_row_says_when_cuda_graphs_were_skipped(tmp_path, monkeypatch):
    monkeypatch.setitem(backends.REGISTRY, "graphcpu", GraphWatchingCPU)
    monkeypatch.setattr(GraphWatchingCPU, "name", "graphcpu")
    over = ["timing.min_seconds=0", "scenarios={prefill: {batch: 1, prompt_len: 8}}"]
    rows = []
    for mode in ("reduce-overhead", "none"):
        cfg = config.load(SMOKE, [*over, f"compile={mode}"], backend="graphcpu")
        rows.append(load(runner.run(cfg, tmp_path / mode)).iloc[0])
    graphed, eager = rows
    assert graphed["status"] == "ok" and graphed["timing.execution"]["cudagraph_skips"] >= 1
    assert any("skipped CUDA graphs" in w for w in graphed["validity.warnings"])
    assert "cudagraphs" not in eager["timing.execution"] and not any(
        "CUDA graphs" in w for w in eager["validity.warnings"]
    )
    assert graphed["timing.execution"]["sdpa"] == eager["timing.execution"]["sdpa"] == "flash_attention"  # CPU's
