"""The memory plan: bytes per device of every case, before any model is built.

`ppbench run FILE --dry-run` prints, for every case and per device, the estimated weights,
gradients, optimizer state and activations of the step the harness runs (ppharness/core/scenarios.py
`_train_step`: float32 master weights, AdamW, autocast in the run's dtype, one micro-batch's
activations alive at a time; `_prefill_step` and `_decode_step`: weights cast to the dtype, the
static KV cache, one block's activations at a time), against the device's memory: one device's
from configs/accelerators.yaml (`memory_gib` per chip / `cores_per_chip`: one NeuronCore, one
GPU) for an accelerator, the host's available memory (MemAvailable) for the CPU. A real run is
refused before any model is built when a case cannot fit (`check_run`), naming the strategy or
micro-batch that would, and the host must hold the model's build as well (`host_build`).

What each line counts, per device, with P the parameters (a tied head counted once), W the
ranks, n = micro-batch x seq_len tokens, e the bytes of the run's dtype:
- weights:    4P float32 master weights. fsdp: 4P/W of shards, plus the unsharded root (embedding,
              head, final norm: FSDP2 keeps the root gathered through the step) and two blocks
              (the one running and the one prefetched).
- gradients:  4P (ddp and zero1 all-reduce whole gradients; DDP's buckets are the gradients,
              `gradient_as_bucket_view`). fsdp: 4P/W, plus the root's and one block's unsharded.
- optimizer:  AdamW's two float32 moments, 8 bytes per parameter the rank updates: all of them
              (ddp); torch ZeroRedundancyOptimizer's share, whole parameters assigned largest
              first to the least-loaded rank as torch does, so a rank holding the embedding
              holds far more than 1/W (zero1 on cpu/cuda); an even 1/W of every parameter plus
              its float32 copy and gradient shard (torch-xla's ZeroRedundancyOptimizer, zero1 on
              neuron-xla); 8P/W (fsdp). AdamW's step temporaries (foreach: about 4 bytes per
              updated parameter) live after backward, when activations are freed: the total
              counts the larger of the two.
- activations: the tensors autograd saves per decoder block for this workload (listed in
              `block_activation_bytes`), times the blocks, plus the head's logits in backward;
              with activation checkpointing, each block's input only, plus one block recomputed.
- weight casts: under bf16/fp16 autocast every Linear saves the low-precision copy of its weight
              for backward (2 bytes per matmul weight); with checkpointing only the head's and the
              recomputed block's are alive at once.
Gradients and saved activations are counted together: with accumulation, and with DDP's
buckets, the gradients are resident while the next micro-batch's activations are saved.

Prefill and decode (`inference`): the weights in the run's dtype (e x P), the KV cache
(2 x layers x batch x KV heads x cache length x head dim x e), and the largest forward's
transient activations (one block at a time, no autograd; decode also fills its cache with a
prompt forward first), listed in `inference_activation_bytes`.

The CPU backend's device is the host: its plan also holds the seeded weight draw the workload
keeps for the next build (4P), and the host's usable memory is shared by the ranks on it.
The estimates are checked against measured peaks on CPU runs in tests/test_parallel.py (train)
and tests/test_memplan.py (prefill, decode, the refusals).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from ppharness import backends
from ppharness.core import parallel, workload
from ppharness.core.parallel import STRATEGIES
from ppharness.core.workload import ModelConfig, Transformer
from ppharness.errors import BenchError
from ppharness.facts import catalog, sysinfo
from ppharness.run import config

GIB = 2**30
_BYTES = {"float32": 4, "tf32": 4, "bfloat16": 2, "float16": 2}


@dataclass(frozen=True)
class Plan:
    strategy: str
    world: int
    micro_batch: int
    accum: int
    seq_len: int
    dtype: str
    checkpointing: bool
    weights: int
    gradients: int
    optimizer: int
    activations: int
    capacity: int | None  # bytes of one device; None when unknown (no instance, no MemAvailable)
    step_temporaries: int = 0  # AdamW's, alive in the optimizer step, after the activations are freed
    weight_casts: int = 0  # autocast's low-precision weight copies, saved for backward (train)
    kv_cache: int = 0  # prefill and decode: the static KV cache
    draw: int = 0  # the CPU: the seeded weights the workload keeps on the host for the next build
    scenario: str = "train"

    @property
    def total(self) -> int:
        resident = self.weights + self.gradients + self.optimizer + self.kv_cache + self.draw
        return resident + max(self.activations + self.weight_casts, self.step_temporaries)

    @property
    def fits(self) -> bool | None:
        return None if self.capacity is None else self.total <= self.capacity

    def row(self, unit: int = GIB) -> dict:
        """Display cells, in `unit` bytes (GiB, MiB); blank where the scenario has no such part."""
        gib = lambda b: f"{b / unit:,.2f}" if b else ""  # noqa: E731
        train = self.scenario == "train"
        return {
            "strategy": self.strategy if train else "", "world": str(self.world) if train else "",
            "micro-batch": str(self.micro_batch), "accum": str(self.accum) if train else "",
            "ckpt": str(self.checkpointing) if train else "", "weights": gib(self.weights),
            "grads": gib(self.gradients), "optimizer": gib(self.optimizer),
            "activations": gib(max(self.activations + self.weight_casts, self.step_temporaries)),
            "KV cache": gib(self.kv_cache), "seeded draw": gib(self.draw), "total": gib(self.total),
            "usable": "" if self.capacity is None else gib(self.capacity),
            "fits": {None: "unknown", True: "yes", False: "NO"}[self.fits],
        }  # fmt: skip


# What a narrow terminal leaves out of the plan's table first (ppharness/present/terminal.py).
ROW_OPTIONAL = ("world", "accum", "ckpt", "seeded draw", "strategy", "micro-batch", "grads", "optimizer")


def parameter_sizes(cfg: ModelConfig) -> dict[str, list[int]]:
    """numel of every parameter (tied ones once), grouped: 'root' (embedding, head, final norm)
    and 'block' (one decoder block's). Built on the meta device: no memory, any model size."""
    with torch.device("meta"):
        model = Transformer(cfg)
    block = [p.numel() for p in model.layers[0].parameters()]
    seen, root = {id(p) for layer in model.layers for p in layer.parameters()}, []
    for p in model.parameters():  # parameters() yields a tied weight once
        if id(p) not in seen:
            root.append(p.numel())
    return {"root": root, "block": block, "all": root + block * cfg.n_layers}


def block_activation_bytes(cfg: ModelConfig, tokens: int, dtype: str) -> int:
    """What autograd keeps for one decoder block's backward (Block.forward under autocast):
    - two RMSNorms: each its float32 input and normalised product (8 bytes x D per token);
    - matmul inputs: under bf16/fp16 autocast each Linear saves its own cast of its input (q, k,
      v: 3 x D; w1, w3: 2 x D; e bytes each); in float32 the shared norm output once per sublayer;
    - RoPE: the float32 copies of q and k (4 x (D + KV dim));
    - attention (SDPA, causal, no T x T matrix): q, k, v, output (e x (2D + 2 KV dim)), plus the
      copy `reshape` makes of the transposed output for wo (e x D);
    - SwiGLU: w1's and w3's outputs, silu's output and the product for w2 (4 x e x ffn_dim)."""
    e = _BYTES[dtype]
    d, kv, f = cfg.dim, cfg.n_kv_heads * cfg.head_dim, cfg.ffn_dim
    norms = 2 * 8 * d
    matmul_inputs = (3 + 2) * e * d if e < 4 else 2 * 4 * d
    rope = 4 * (d + kv)
    attention = e * (2 * d + 2 * kv) + e * d
    swiglu = 4 * e * f
    return tokens * (norms + matmul_inputs + rope + attention + swiglu)


def activation_bytes(cfg: ModelConfig, tokens: int, dtype: str, checkpointing: bool) -> int:
    """Peak saved activations of one micro-batch: every block's (or, checkpointed, every block's
    input plus one recomputed block), the final norm, and the head's logits at the start of
    backward: log_softmax's float32 output, its incoming gradient and the gradient it makes
    (3 x 4 bytes x vocab per token)."""
    layer = block_activation_bytes(cfg, tokens, dtype)
    head = tokens * (8 * cfg.dim + 12 * cfg.vocab_size)
    if not checkpointing:
        return cfg.n_layers * layer + head
    inputs = cfg.n_layers * tokens * 4 * cfg.dim  # the float32 residual stream into each block
    return inputs + max(head, layer)


def plan(
    cfg: ModelConfig,
    strategy: str,
    world: int,
    micro_batch: int,
    seq_len: int,
    dtype: str,
    checkpointing: bool,
    accum: int = 1,
    capacity: int | None = None,
    xla: bool = False,
) -> Plan:
    """The per-device estimate (module docstring). `xla`: torch-xla's ZeRO-1 (neuron-xla)."""
    if strategy not in STRATEGIES:
        raise BenchError(f"unknown strategy {strategy!r}; valid: {', '.join(STRATEGIES)}")
    sizes = parameter_sizes(cfg)
    p, root, block = sum(sizes["all"]), sum(sizes["root"]), sum(sizes["block"])
    if strategy == "fsdp" and world > 1:
        weights = 4 * -(-p // world) + 4 * root + 2 * 4 * block
        grads = 4 * -(-p // world) + 4 * root + 4 * block
        updated = -(-p // world)
        opt = 8 * updated
    else:
        weights, grads = 4 * p, 4 * p
        if strategy == "zero1" and world > 1 and xla:
            updated = sum(-(-n // world) for n in sizes["all"])
            opt = (8 + 4 + 4) * updated  # moments, the float32 shard, its gradient shard
        elif strategy == "zero1" and world > 1:
            updated = greedy_share(sizes["all"], world)
            opt = 8 * updated
        else:
            updated = p
            opt = 8 * p
    acts = activation_bytes(cfg, micro_batch * seq_len, dtype, checkpointing)
    temps = 4 * updated  # AdamW step temporaries (foreach)
    return Plan(strategy, world, micro_batch, accum, seq_len, dtype, checkpointing, weights, grads, opt, acts,
                capacity, temps, weight_cast_bytes(cfg, dtype, checkpointing))  # fmt: skip


def weight_cast_bytes(cfg: ModelConfig, dtype: str, checkpointing: bool) -> int:
    """What autocast's weight casts hold at the step's peak (module docstring): the low-precision
    copy of every matmul weight, saved by its Linear for backward; checkpointed, the head's and
    one recomputed block's. Nothing in float32 (no cast)."""
    e = _BYTES[dtype]
    if e == 4:
        return 0
    head = cfg.dim * cfg.vocab_size
    block = workload.matmul_params(cfg) - head
    return e * (head + block // cfg.n_layers if checkpointing else head + block)


def inference_activation_bytes(cfg: ModelConfig, batch: int, tokens: int, cache_len: int, dtype: str) -> int:
    """The largest transient of one forward over `tokens` tokens (batch x new positions) under
    no_grad, one block alive at a time (Block.forward): the residual stream and its sum (2 x e x D),
    RMSNorm's float32 copy and product (8 x D), then the larger of attention (q, k, v, SDPA's output
    and wo's reshaped input: e x (3D + 2 KV dim); RoPE's float32 copy and product of q, then of k:
    8 x D at most at once) and SwiGLU (w1's, silu's and w3's outputs, the product: 3 x e x ffn_dim),
    per token; decode
    (`cache_len` > 0) also counts SDPA's math path copying the cache's K and V for every query head
    (2 x B x H x S x head dim x e), and the vocabulary logits of the last position (B x V x e)."""
    e = _BYTES[dtype]
    d, kv, f = cfg.dim, cfg.n_kv_heads * cfg.head_dim, cfg.ffn_dim
    attention = e * (3 * d + 2 * kv) + 8 * d
    per_token = 2 * e * d + 8 * d + max(attention, 3 * e * f)
    expanded = 2 * batch * cfg.n_heads * cache_len * cfg.head_dim * e
    return tokens * per_token + expanded + batch * cfg.vocab_size * e


def inference(cfg: ModelConfig, case: object, capacity: int | None = None) -> Plan:
    """The per-device estimate of a prefill or decode case (module docstring). Decode fills its
    cache with a forward over the prompt before its steps: the larger transient counts."""
    e = _BYTES[case.dtype]
    p = sum(parameter_sizes(cfg)["all"])
    decode = case.scenario == "decode"
    cache_len = case.prompt_len + (case.new_tokens if decode else 0)
    kv = 2 * cfg.n_layers * case.batch * cfg.n_kv_heads * cache_len * cfg.head_dim * e
    acts = inference_activation_bytes(cfg, case.batch, case.batch * case.prompt_len, 0, case.dtype)
    if decode:
        acts = max(acts, inference_activation_bytes(cfg, case.batch, case.batch, cache_len, case.dtype))
    return Plan("-", 1, case.batch, 1, cache_len, case.dtype, False, e * p, 0, 0, acts, capacity, kv_cache=kv,
                scenario=case.scenario)  # fmt: skip


def greedy_share(sizes: list[int], world: int) -> int:
    """The largest rank's parameter count under torch ZeroRedundancyOptimizer's partition
    (torch/distributed/optim/zero_redundancy_optimizer.py `_partition_parameters`: sorted by
    numel, largest first, each to the rank with the least so far)."""
    load = [0] * world
    for n in sorted(sizes, reverse=True):
        load[load.index(min(load))] += n
    return max(load)


def device_capacity(instance: str | None) -> tuple[int | None, str]:
    """(bytes of one device of `instance`, its name): memory_gib per chip over cores_per_chip."""
    if not instance or instance in ("none", "auto"):
        return None, "unknown device (no instance in the run file)"
    inst = catalog.instance(instance)
    if inst.accelerator is None:
        return None, f"{instance} (CPU only)"
    acc = catalog.accelerator(inst.accelerator)
    if acc.memory_gib is None:
        return None, f"{acc.name} (no memory_gib in configs/accelerators.yaml)"
    unit = "NeuronCore" if acc.vendor == "aws" or acc.cores_per_chip > 1 else "GPU"
    return int(acc.memory_gib * GIB / acc.cores_per_chip), f"one {unit} of {acc.name}"


def alternatives(cfg: ModelConfig, base: Plan, strategies: tuple[str, ...], xla: bool) -> list[Plan]:
    """Plans that fit where `base` does not, in the order a user would try them: another
    strategy at the same micro-batch, then activation checkpointing, then smaller micro-batches
    (the accumulation grows so the global batch stays)."""
    out = []
    # One rank shards nothing: only checkpointing and the micro-batch can help there.
    order = [s for s in ("zero1", "fsdp", "ddp") if s in strategies] if base.world > 1 else [base.strategy]
    micro = [m for m in (base.micro_batch, *(base.micro_batch // 2**k for k in range(1, 8))) if m >= 1]
    for mb in dict.fromkeys(micro):
        if base.micro_batch % mb:
            continue
        for ckpt in dict.fromkeys((base.checkpointing, True)):
            for s in order:
                p = plan(cfg, s, base.world, mb, base.seq_len, base.dtype, ckpt,
                         base.accum * base.micro_batch // mb, base.capacity, xla)  # fmt: skip
                if p.fits:
                    out.append(p)
    return out


def describe_fix(p: Plan, base: Plan) -> str:
    parts = []
    if p.strategy != base.strategy:
        parts.append(f"parallel.strategy: {p.strategy}")
    if p.checkpointing != base.checkpointing:
        parts.append("parallel.activation_checkpointing: true")
    if p.micro_batch != base.micro_batch:
        parts.append(f"scenarios.train.batch: {p.micro_batch} (micro-batch)")
    return ", ".join(parts) + f" ({p.total / GIB:.1f} GiB)"


HEADROOM = 0.9  # of a device's memory a plan may fill: the allocator, CUDA context or Neuron runtime take the rest


def host_build(cfg: ModelConfig, check: bool) -> int:
    """Host bytes of building the model, on every backend (ppharness/core/workload.py build_model:
    float32 on the CPU from the seeded draw, which is kept for the next build): the draw (4P) and
    the model (4P), and with `check` the float32 reference the check builds beside its own copy
    (4P more), before either moves to a device or is cast."""
    p = sum(parameter_sizes(cfg)["all"])
    return 4 * p * (3 if check else 2)


def _capacity(cfg: object, name: str, host: int | None, ranks_per_host: int) -> tuple[int | None, str, str]:
    """(usable bytes per rank, the device, how usable was reached) for backend `name`."""
    if backends.get(name).memory_is_host:
        if host is None:
            return None, "this host (MemAvailable unknown)", ""
        share = f" / {ranks_per_host} ranks" if ranks_per_host > 1 else ""
        usable = int(host * HEADROOM) // ranks_per_host
        return usable, "this host", f"{HEADROOM:.0%} of MemAvailable {host / GIB:.1f} GiB{share}"
    capacity, device = device_capacity(cfg.instance)
    lnc = (cfg.backend_options.get(name) or {}).get("lnc")
    if capacity and isinstance(lnc, int) and lnc > 1:  # Trn2 logical NeuronCores: lnc physical ones each
        capacity, device = capacity * lnc, f"{device} x lnc {lnc}"
    if not capacity:
        return None, device, ""
    return int(capacity * HEADROOM), device, f"{HEADROOM:.0%} of {capacity / GIB:.0f} GiB"


@dataclass(frozen=True)
class Planned:
    backend: str
    case: object  # ppharness.core.scenarios.Case
    label: str  # the backend and the case
    plan: Plan
    refusal: str | None  # why it cannot fit, naming what would; None when it fits or capacity is unknown


def plan_cases(cfg: object, world: int, host: int | None = None, ranks_per_host: int = 1) -> tuple[list[Planned], str]:
    """Every case of a validated RunConfig on `world` ranks, planned, and the device planned
    against. An accelerator is the run file's instance's (any host plans any instance); the CPU's
    is this host's `host` bytes available (MemAvailable), shared by `ranks_per_host` ranks."""
    out, device = [], ""
    for name in cfg.backends:
        for case in config.expand(cfg):
            planned, device = plan_case(cfg, name, case, world, host, ranks_per_host)
            out.append(planned)
    return out, device


def plan_case(
    cfg: object, name: str, case: object, world: int, host: int | None, ranks_per_host: int = 1
) -> tuple[Planned, str]:
    """One case of `cfg` on backend `name`, planned (plan_cases), and the device planned against."""
    usable, device, how = _capacity(cfg, name, host, ranks_per_host)
    cls, model = backends.get(name), cfg.model_config
    xla = name == "neuron-xla"
    draw = 4 * sum(parameter_sizes(model)["all"]) if cls.memory_is_host else 0
    label = f"{name} {case.label()}"
    if case.scenario != "train":
        p = dataclasses.replace(inference(model, case, usable), draw=draw)
        why = None
        if p.fits is False:
            why = (f"{label}: needs {_parts(p)}, {device} has {usable / GIB:,.1f} GiB usable ({how}); "
                   "use a smaller batch, prompt or model")  # fmt: skip
        return Planned(name, case, label, p, why), device
    lay = parallel.layout(cfg.parallel, case.batch, world)
    p = plan(model, cfg.parallel.strategy, world, lay.micro_batch, case.seq_len, case.dtype,
             cfg.parallel.activation_checkpointing, lay.accum, usable, xla)  # fmt: skip
    p = dataclasses.replace(p, draw=draw)
    why = None
    if p.fits is False:
        fixes = alternatives(model, p, cls.strategies, xla) if not draw else []
        fix = f"use {describe_fix(fixes[0], p)}" if fixes else (
            f"no strategy this backend runs ({', '.join(cls.strategies)}) fits at any micro-batch on {world} "
            "device(s): use more devices or a smaller model")  # fmt: skip
        if draw:  # the host: nothing to shard onto
            fix = "use a smaller batch (scenarios.train.batch) or model"
        why = (f"{label}: {cfg.parallel.strategy} needs {_parts(p)} per device, {device} has "
               f"{usable / GIB:,.1f} GiB usable ({how}); {fix}")  # fmt: skip
    return Planned(name, case, label, p, why), device


def host_refusal(cfg: object, name: str, case: object, world: int = 1) -> str | None:
    """Why `case` cannot fit this host's memory now (MemAvailable), on a backend whose memory is
    the host's (the CPU); None when it fits, or the backend's memory is a device's. A `batch: auto`
    sweep stops here (ppharness/run/sweep.py) instead of doubling until the host swaps."""
    if not backends.get(name).memory_is_host:
        return None
    return plan_case(cfg, name, case, world, sysinfo.memory_available())[0].refusal


def plan_run(
    cfg: object, world: int, host: int | None = None, ranks_per_host: int = 1
) -> tuple[list[tuple[str, Plan]], str, list[str]]:
    """plan_cases as ([(case label, plan)], the device, [one refusal line per case that cannot fit])."""
    planned, device = plan_cases(cfg, world, host, ranks_per_host)
    return [(x.label, x.plan) for x in planned], device, [x.refusal for x in planned if x.refusal]


def case_cells(case: object) -> dict[str, str]:
    """A case's display cells for the plan's table: scenario, sizes, dtype, compile mode."""
    sizes = [f"{k}={getattr(case, k)}" for k in ("batch", "seq_len", "prompt_len", "new_tokens") if getattr(case, k)]
    return {"scenario": case.scenario, "sizes": " ".join(sizes), "dtype": case.dtype, "compile": case.compile}


def _parts(p: Plan) -> str:
    """`1,234.5 GiB (weights 29.9, gradients 29.9, ...)`: the total and its parts, in GiB."""
    parts = [("weights", p.weights), ("gradients", p.gradients), ("optimizer", p.optimizer),
             ("activations", max(p.activations + p.weight_casts, p.step_temporaries)), ("KV cache", p.kv_cache),
             ("seeded draw", p.draw)]  # fmt: skip
    shown = ", ".join(f"{what} {b / GIB:,.1f}" for what, b in parts if b)
    return f"{p.total / GIB:,.1f} GiB ({shown})"


def check_run(cfg: object, world: int, ranks_per_host: int = 1, host: int | None = None) -> tuple[list[str], list[str]]:
    """(errors, warnings) of a real run before any model is built. Refused: a case the CPU's host
    memory cannot hold (it would swap or be killed, not fail with an out-of-memory error); the
    model's build the host cannot hold (any backend); on an accelerator, a case that cannot fit
    in a run with a `parallel:` section, or a run no case of which fits. Otherwise an accelerator's
    case planned not to fit is a warning: its out-of-memory row is a result worth recording (the
    frontier of a batch sweep). `host` defaults to this host's MemAvailable."""
    host = sysinfo.memory_available() if host is None else host
    planned, _ = plan_cases(cfg, world, host, ranks_per_host)
    build = host_build(cfg.model_config, cfg.check) * ranks_per_host
    if host is not None and build > host * HEADROOM:
        ranks = f" for {ranks_per_host} ranks" if ranks_per_host > 1 else ""
        parts = "float32 weights, their seeded draw" + (", the check's reference" if cfg.check else "")
        building = [
            f"building the model needs {build / GIB:,.1f} GiB of host memory{ranks} ({parts}), this host has "
            f"{host * HEADROOM / GIB:,.1f} GiB usable ({HEADROOM:.0%} of MemAvailable {host / GIB:.1f} GiB); "
            "use a smaller model or a host with more memory"
        ]
    else:
        building = []
    on_host = [x.refusal for x in planned if x.refusal and backends.get(x.backend).memory_is_host]
    others = [x.refusal for x in planned if x.refusal and not backends.get(x.backend).memory_is_host]
    accel = [x.plan for x in planned if not backends.get(x.backend).memory_is_host]
    nothing_fits = bool(accel) and all(p.fits is False for p in accel)
    if cfg.parallel != parallel.ParallelConfig() or nothing_fits:
        return on_host + others + building, []
    return on_host + building, others


def world_for(cfg: object, nproc_per_node: int | None, nnodes: int | None) -> int:
    """The ranks a plan is for: the launch options', else every device of the run file's
    instance (a dry run plans the whole instance), else one."""
    if nproc_per_node:
        return nproc_per_node * (nnodes or 1)
    if cfg.instance not in ("none", "auto"):
        lnc = max([(cfg.backend_options.get(b) or {}).get("lnc") or 1 for b in cfg.backends])
        return catalog.instance(cfg.instance).devices // lnc  # Trn2 lnc 2: one rank per logical core
    return 1
