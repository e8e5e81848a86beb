"""What the two Neuron backends share: package detection, chip/core topology, compiler flags and
core ids. Section numbers (§N) refer to the project notes' reference/neuron.md (shared/ beside the
repository); "audit N" to neuron-audit.md, which corrects it where they disagree.

Everything here only reads; the environment a backend plans and sets is _neuron_vars.py's.
Vendor modules are imported inside functions and every import is guarded with `except
ImportError`: PyPI's torch-neuronx and neuronx-cc are placeholders that raise ImportError on
import (§4, "PyPI").
"""

from __future__ import annotations

import glob
import importlib
import importlib.metadata
import importlib.util
import os
import re
import sys
from dataclasses import dataclass

from ppharness.errors import BenchError
from ppharness.facts import catalog, sysinfo

XLA_SERIES = (2, 9)  # torch-neuronx 2.9.x is the XLA path, the last and frozen one (§0, §5)
NATIVE_MIN = (2, 13)  # torch-neuronx >= 2.13 is TorchNeuron, the native `neuron` device (§0, §3)
MODEL_TYPES = ("generic", "transformer", "unet-inference")  # neuronx-cc --model-type (§2)
TARGETS = ("", "inf2", "trn1", "trn1n", "trn2")  # neuronx-cc --target (§2); "" = the host's
# Flags that the run file sets through dedicated options; `cc_flags` must not repeat them, and
# --auto-cast is never accepted: precision comes from the run's dtype, never from the compiler,
# whose auto-cast default flipped from matmult to none in Neuron 2.27 (§0, §2, §9.2).
RESERVED_FLAGS = ("--auto-cast", "--model-type", "--optlevel", "-O", "--target", "-lnc", "--logical-nc-config",
                  "--cache_dir")  # fmt: skip
# Flags of neuron_cc_wrapper, the caching wrapper around the compiler that reads NEURON_CC_FLAGS for
# lazy XLA graphs: "All these flags will not be passed into Neuron Compiler CLI" (SDK
# about-neuron/arch/neuron-features/neuron-caching.rst). torch_neuronx.trace hands compiler_args
# to `neuronx-cc compile` itself (audit 3), so these go to NEURON_CC_FLAGS only, never to trace.
WRAPPER_FLAGS = ("--retry_failed_compilation", "--no_cache", "--cache_dir", "--log_level")
SYSFS = "/sys/devices/virtual/neuron_device"  # one neuron<N> folder per Neuron chip (§6)
# EC2 family -> accelerators.yaml key and the neuronx-cc target of that chip (§2, §7).
# trn1n is a target of its own (neuronx-cc --target {inf2,trn1,trn1n,trn2}: SDK
# compiler/neuronx-cc/api-reference-guide/index.rst, "the instance family on which the compiled
# model will be run"), not trn1 as neuron.md implied (audit 10).
FAMILIES = {"trn1": ("trainium1", "trn1"), "trn1n": ("trainium1", "trn1n"), "inf2": ("inferentia2", "inf2"),
            "trn2": ("trainium2", "trn2"), "trn3": ("trainium3", "")}  # fmt: skip
DEFAULT_LNC = {"trainium2": 2}  # Trn2 runs at LNC=2 by default (§1 core allocation, §7)
# Chips without logical NeuronCores: "On trn1, only lnc=1 is supported" and an lnc flag fails with
# NCC_EARG001 (SDK compiler/error-codes/EARG001.rst); --logical-nc-config is "Only available on trn2".
NO_LNC = ("trainium1", "inferentia2")
NO_LNC_TARGETS = ("trn1", "trn1n", "inf2")


def dist_version(name: str) -> str | None:
    """An installed distribution's version, without importing it."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def series(version: str | None) -> tuple[int, int] | None:
    """(major, minor) of a version string such as 2.9.0.2.15.32035."""
    m = re.match(r"(\d+)\.(\d+)", version or "")
    return (int(m.group(1)), int(m.group(2))) if m else None


def present(module: str) -> bool:
    """Importable without importing it (a module already in sys.modules counts: test stand-ins)."""
    if module in sys.modules:
        return True
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


@dataclass
class Probe:
    ok: bool
    reason: str
    version: str | None = None


def probe_neuronx(want: tuple[int, int] | None = None) -> Probe:
    """Is a real torch-neuronx importable, and which path is it (§9.1)?

    `want` = XLA_SERIES asks for the XLA path, NATIVE_MIN for TorchNeuron. Only a candidate of
    the wanted series is imported (importing the XLA package pulls in torch_xla)."""
    version = dist_version("torch-neuronx")
    if version is None and not present("torch_neuronx"):
        return Probe(False, "torch-neuronx is not installed (it comes from the Neuron pip repository)")
    got = series(version)
    if want == XLA_SERIES and got is not None and got >= NATIVE_MIN:
        return Probe(
            False, f"torch-neuronx {version} is TorchNeuron (native 'neuron' device): use backend neuron", version
        )
    if want == NATIVE_MIN and got is not None and XLA_SERIES <= got < NATIVE_MIN:
        return Probe(False, f"torch-neuronx {version} is the XLA path: use backend neuron-xla", version)
    try:
        module = importlib.import_module("torch_neuronx")
    except ImportError as exc:  # the PyPI placeholder raises ImportError("WRONG PACKAGE ...")
        first = (str(exc).strip().splitlines() or [""])[0][:100]
        return Probe(False, f"import torch_neuronx raised ImportError ({first}): PyPI's torch-neuronx "
                            f"{version or ''} is a placeholder; install it from the Neuron pip repository", version)  # fmt: skip
    except Exception as exc:  # noqa: BLE001 - a broken SDK install must not crash `ppbench backends`
        return Probe(False, f"import torch_neuronx failed: {type(exc).__name__}: {str(exc)[:100]}", version)
    version = str(getattr(module, "__version__", version) or version)
    got = series(version)
    if want == XLA_SERIES and got != XLA_SERIES:
        return Probe(False, f"torch-neuronx {version} is not the 2.9.x XLA path", version)
    if want == NATIVE_MIN and (got is None or got < NATIVE_MIN):
        return Probe(False, f"torch-neuronx {version} is older than 2.13, the first TorchNeuron release", version)
    return Probe(True, "", version)


def neuron_devices() -> list[str]:
    """Neuron chips the driver exposes: /dev/neuron<N> nodes or sysfs neuron<N> folders (§6)."""
    paths = glob.glob("/dev/neuron[0-9]*") + glob.glob(f"{SYSFS}/neuron[0-9]*")
    return sorted({os.path.basename(p) for p in paths})  # neuron0, neuron1, ...: one per chip


def instance_family(instance: str | None) -> str | None:
    return instance.split(".", 1)[0] if instance else None


@dataclass
class Topology:
    """Which chip this is, how many physical NeuronCores the host has, and the LNC setting.

    configs/accelerators.yaml counts physical cores per chip (8 on Trainium2). With LNC=2 one
    logical core, the unit the runtime and torchrun see, is 2 physical cores (§1, §3, §7), so a
    run's devices_used = logical cores used x LNC, which prices and scores it as its share."""

    accelerator: str | None
    reason: str
    lnc: int
    lnc_source: str
    cores_on_host: int  # physical NeuronCores, catalog units
    instance: str | None


def topology(lnc_option: int, inventory: list[dict] | None) -> Topology:
    """Accelerator from the EC2 type (DMI) and the catalog; LNC from the option, the environment,
    `neuron-ls -j` (logical_neuroncore_config, §6) or the chip's default, in that order."""
    instance = sysinfo.ec2_instance_type()
    family = instance_family(instance)
    acc, reason, cores = None, "", 0
    if instance and instance in catalog.instances():
        inst = catalog.instance(instance)
        acc, cores = inst.accelerator, inst.devices
        if acc is None or catalog.accelerator(acc).vendor != "aws":
            acc, cores, reason = None, 0, f"EC2 {instance} has no Neuron accelerator in configs/instances.yaml"
    elif family in FAMILIES:
        acc = FAMILIES[family][0]
    else:
        reason = "cannot tell which Neuron chip this is: no known EC2 instance type from DMI"
    if acc and not cores:
        cores = len(inventory or []) * catalog.accelerator(acc).cores_per_chip
    lnc, source = lnc_option, "backend option lnc"
    if not lnc and os.environ.get("NEURON_LOGICAL_NC_CONFIG", "").isdigit():
        lnc, source = int(os.environ["NEURON_LOGICAL_NC_CONFIG"]), "NEURON_LOGICAL_NC_CONFIG"
    if not lnc and inventory and str(inventory[0].get("logical_neuroncore_config", "")).isdigit():
        lnc, source = int(inventory[0]["logical_neuroncore_config"]), "neuron-ls logical_neuroncore_config"
    if not lnc:
        lnc, source = DEFAULT_LNC.get(acc or "", 1), "default for the chip (LNC=2 on Trn2, else 1)"  # §1
    return Topology(acc, reason, lnc, source, cores, instance)


def parse_cores(spec: str) -> list[int]:
    """NEURON_RT_VISIBLE_CORES syntax: '4', '4-5', '3-5,6'. The runtime requires the result to be
    contiguous and increasing: "this is not valid: NEURON_RT_VISIBLE_CORES=3,5,6 because 4 is
    missing from the list, and indices need to be provided in consecutive increasing order"
    (SDK neuron-runtime/guides/nrt-developer-guide.rst L1054), so '0,2' and '5,4' are refused."""
    cores: list[int] = []
    for part in filter(None, spec.replace(" ", "").split(",")):
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not m or (m.group(2) and int(m.group(2)) < int(m.group(1))):
            raise BenchError(f"visible_cores {spec!r}: expected a core id or a range such as '4' or '0-1'")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        cores.extend(range(lo, hi + 1))
    if cores and cores != list(range(cores[0], cores[0] + len(cores))):
        raise BenchError(
            f"visible_cores {spec!r}: the Neuron runtime needs one contiguous increasing range of cores "
            "(e.g. '4' or '4-5'; NRT developer guide, NEURON_RT_VISIBLE_CORES)"
        )
    return cores


def world_size() -> int:
    """Processes in this torchrun job (one per NeuronCore, §2 Distributed); 1 outside torchrun."""
    value = os.environ.get("WORLD_SIZE", "1")
    return int(value) if value.isdigit() and int(value) > 0 else 1


def check_choice(backend: str, key: str, value: object, valid: tuple) -> None:
    if value not in valid:
        shown = ", ".join(repr(v) if v == "" else str(v) for v in valid)
        raise BenchError(f"backend_options.{backend}.{key}: {value!r} is not valid; valid: {shown}")


def validate_runtime_options(backend: str, lnc: int, num_cores: int, visible_cores: str, tdp_watts: float) -> None:
    check_choice(backend, "lnc", lnc, (0, 1, 2))
    if num_cores < 0:
        raise BenchError(f"backend_options.{backend}.num_cores must be >= 0 (0: the runtime's default, all cores)")
    try:
        parse_cores(visible_cores)
    except BenchError as exc:
        raise BenchError(f"backend_options.{backend}.{exc}") from None
    if tdp_watts < 0:
        raise BenchError(f"backend_options.{backend}.tdp_watts must be >= 0 (0: power in percent only)")


def cc_flags(model_type: str, optlevel: int, target: str, lnc: int, extra: list[str]) -> list[str]:
    """neuronx-cc's own flags (§2), without the wrapper's (`split_flags`): what both destinations
    share. NEURON_CC_FLAGS (lazy XLA graphs) gets these plus the wrapper flags; torch_neuronx.trace's
    compiler_args gets these only (audit 3)."""
    flags = [f"--model-type={model_type}", f"-O{optlevel}", "--auto-cast=none"]
    if target:
        flags.append(f"--target={target}")
    if lnc:
        flags += ["-lnc", str(lnc)]  # must match NEURON_LOGICAL_NC_CONFIG (§1)
    return flags + split_flags(extra)[0]


def is_wrapper_flag(flag: str) -> bool:
    return any(flag == w or flag.startswith(w + "=") for w in WRAPPER_FLAGS)


def split_flags(extra: list[str]) -> tuple[list[str], list[str]]:
    """(the compiler's own flags, neuron_cc_wrapper's flags) of the run file's `cc_flags`."""
    return [f for f in extra if not is_wrapper_flag(f)], [f for f in extra if is_wrapper_flag(f)]


def check_lnc(backend: str, lnc: int, accelerator: str | None, target: str = "") -> None:
    """`lnc` is a Trn2 setting; on Trn1/Inf2 the compiler refuses it (NCC_EARG001)."""
    if lnc and (accelerator in NO_LNC or target in NO_LNC_TARGETS):
        chip = accelerator or f"target {target}"
        raise BenchError(
            f"backend_options.{backend}.lnc={lnc}: logical NeuronCores exist on Trn2 only, not on {chip} "
            "(neuronx-cc fails with NCC_EARG001); leave lnc at 0"
        )


def check_driven(backend: str, visible_cores: str, num_cores: int) -> None:
    """A process drives one NeuronCore (one XLA device, one traced model, one `neuron` device), so
    it must claim one (audit 8): more would be priced and scored as cores it never uses. Several
    cores = several processes: torchrun (training) or one plain process per core (inference)."""
    hint = "use --nproc-per-node N (training) or one process per core with visible_cores=<core> (README)"
    if world_size() > 1:
        if visible_cores:
            who = (
                "TorchNeuron places each rank on core LOCAL_RANK itself (torch_neuronx/distributed/backend.py)"
                if backend == "neuron"
                else "the Neuron PJRT plugin places each rank on core LOCAL_RANK itself (pytorch/xla "
                "torch_xla/_internal/neuron.py)"
            )
            raise BenchError(
                f"backend_options.{backend}.visible_cores={visible_cores!r} under torchrun: {who}; "
                "leave visible_cores empty"
            )
        return
    claimed = len(parse_cores(visible_cores)) if visible_cores else num_cores
    if visible_cores and claimed != 1:
        raise BenchError(
            f"backend_options.{backend}.visible_cores={visible_cores!r} claims {claimed} NeuronCores, but one "
            f"process drives one; {hint}"
        )
    if not visible_cores and num_cores != 1:
        what = "every core (0 = the runtime's default)" if num_cores == 0 else f"{num_cores} NeuronCores"
        raise BenchError(
            f"backend_options.{backend}.num_cores={num_cores} claims {what}, but one process drives one; {hint}"
        )


def check_extra_flags(backend: str, extra: list) -> None:
    """`cc_flags`: non-empty strings, none that a dedicated option sets. The wrapper's own flags
    (WRAPPER_FLAGS) are accepted here and routed by `split_flags`; --cache_dir is the `cache_dir`
    option's (NEURON_COMPILE_CACHE_URL)."""
    for flag in extra:
        if not isinstance(flag, str) or not flag.strip():
            raise BenchError(f"backend_options.{backend}.cc_flags must be a list of non-empty strings, got {flag!r}")
        for reserved in RESERVED_FLAGS:
            if (
                flag == reserved
                or flag.startswith(reserved + "=")
                or (reserved == "-O" and re.fullmatch(r"-O\d", flag))
            ):
                raise BenchError(
                    f"backend_options.{backend}.cc_flags: {flag!r} is set by a dedicated option or by dtype "
                    "(model_type, optlevel, target, lnc, cache_dir; --auto-cast is always none)"
                )


def logical_cores(visible_cores: str, num_cores: int, topo: Topology | None) -> int:
    """Logical NeuronCores this process claims (the runner multiplies by the torchrun world):
    explicit cores, one per rank under torchrun (§2), a count, else all (§1: by default one
    process claims every core, and processes never share one). `check_driven` has already
    refused more than one outside torchrun, so this is 1 for every run the backends accept."""
    if visible_cores:
        return len(parse_cores(visible_cores))
    if world_size() > 1:
        return 1
    if num_cores:
        return num_cores
    return max(1, topo.cores_on_host // topo.lnc) if topo and topo.cores_on_host else 1


def core_ids(visible_cores: str, num_cores: int, topo: Topology | None) -> list[int]:
    """Which logical cores those are, as far as this process can tell (for power readings)."""
    if visible_cores:
        return parse_cores(visible_cores)
    if world_size() > 1:
        local = os.environ.get("LOCAL_RANK", "0")
        return [int(local) if local.isdigit() else 0]
    return list(range(logical_cores("", num_cores, topo)))  # NUM_CORES takes the first free ones


def logical_per_chip(topo: Topology | None) -> int:
    """Logical cores per chip: cores_per_chip / LNC (2 on Trn1/Inf2, 4 on Trn2 at LNC=2)."""
    per_chip = catalog.accelerator(topo.accelerator).cores_per_chip // topo.lnc if topo and topo.accelerator else 1
    return max(1, per_chip)


def chips_of(cores: list[int], topo: Topology | None) -> list[int]:
    """The chips (sysfs neuron<N>) that hold the given logical cores, for power readings (§6)."""
    per_chip = logical_per_chip(topo)
    return sorted({c // per_chip for c in cores})


def exact_cores(visible_cores: str) -> list[int] | None:
    """This process's logical cores when they are known exactly: a torchrun rank's LOCAL_RANK (the
    Neuron PJRT plugin sets NEURON_RT_VISIBLE_CORES to it) or visible_cores; None when the runtime
    picks them (NEURON_RT_NUM_CORES takes the first free ones, which may not be core 0)."""
    if world_size() > 1:
        local = os.environ.get("LOCAL_RANK", "")
        return [int(local)] if local.isdigit() else None
    return parse_cores(visible_cores) if visible_cores else None


def power_chips(cores: list[int], topo: Topology | None) -> list[int]:
    """The chips whose power this process reads: under torchrun only the rank on each chip's first
    core (ranks sit on cores 0..LOCAL_WORLD_SIZE-1), so a chip is read once, not once per rank
    (audit 5); a plain process reads the chips of its own cores."""
    if world_size() > 1:
        return chips_of([c for c in cores if c % logical_per_chip(topo) == 0], topo)
    return chips_of(cores, topo)


def unknown_chip(visible_cores: str, inventory: list[dict] | None) -> str:
    """Why this process cannot tell which chip it runs on ("" when it can): without exact cores
    (visible_cores or a torchrun rank) the runtime picks the first free core, on any chip."""
    if exact_cores(visible_cores) is None and len(inventory or []) > 1:
        return "this process's core is the runtime's pick (num_cores, no visible_cores): its chip is unknown"
    return ""


def power_share(cores: list[int], topo: Topology | None) -> str:
    """What the chips' power reading covers against what this process drives."""
    per_chip, chips = logical_per_chip(topo), chips_of(cores, topo)
    if world_size() > 1:
        return f"whole chip(s), one reading per chip for all ranks ({per_chip} logical core(s) per chip)"
    return (f"whole chip(s) neuron{','.join(map(str, chips))} ({per_chip * len(chips)} logical core(s)); "
            f"this process drives {len(cores)}")  # fmt: skip


def is_local_lead() -> bool:
    """The first process of this job on this host (torchrun local rank 0, or a plain process)."""
    return os.environ.get("LOCAL_RANK", "0") in ("", "0")
