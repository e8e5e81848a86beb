"""The memory plan: bytes per device of a train case, before anything is measured.

`ppbench run FILE --dry-run` prints, for every case and per device, the estimated weights,
gradients, optimizer state and activations of the step the harness runs (ppharness/core/scenarios.py
`_train_step`: float32 master weights, AdamW, autocast in the run's dtype, one micro-batch's
activations alive at a time), against the device's memory from configs/accelerators.yaml
(`memory_gib` per chip / `cores_per_chip`: one NeuronCore, one GPU). A real run refuses a case
that cannot fit before it starts, naming the strategy or micro-batch that would.

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
Gradients and saved activations are counted together: with accumulation, and with DDP's
buckets, the gradients are resident while the next micro-batch's activations are saved.
The estimate is checked against measured peaks on CPU runs in tests/test_memplan.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ppharness import backends
from ppharness.core import parallel
from ppharness.core.parallel import STRATEGIES
from ppharness.core.workload import ModelConfig, Transformer
from ppharness.errors import BenchError
from ppharness.facts import catalog
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
    capacity: int | None  # bytes of one device; None when unknown (CPU, no accelerator)
    step_temporaries: int = 0  # AdamW's, alive in the optimizer step, after the activations are freed

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + max(self.activations, self.step_temporaries)

    @property
    def fits(self) -> bool | None:
        return None if self.capacity is None else self.total <= self.capacity

    def row(self) -> dict:
        gib = lambda b: round(b / GIB, 2)  # noqa: E731
        return {
            "strategy": self.strategy, "world": self.world, "micro_batch": self.micro_batch, "accum": self.accum,
            "ckpt": self.checkpointing, "weights_gib": gib(self.weights), "grads_gib": gib(self.gradients),
            "optimizer_gib": gib(self.optimizer), "activations_gib": gib(self.activations),
            "total_gib": gib(self.total), "device_gib": None if self.capacity is None else gib(self.capacity),
            "fits": {None: "unknown", True: "yes", False: "NO"}[self.fits],
        }  # fmt: skip


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
                capacity, temps)  # fmt: skip


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


def plan_run(cfg: object, world: int) -> tuple[list[tuple[str, Plan]], str, list[str]]:
    """Every train case of a validated RunConfig on `world` ranks of the run file's instance:
    ([(case label, plan)], the device it is planned against, [one refusal line per case that
    cannot fit, naming what would]). Needs no device: any host plans any instance."""
    rows, refusals = [], []
    for name in cfg.backends:
        capacity, device = device_capacity(cfg.instance)
        lnc = (cfg.backend_options.get(name) or {}).get("lnc")
        if capacity and isinstance(lnc, int) and lnc > 1:  # Trn2 logical NeuronCores: lnc physical ones each
            capacity, device = capacity * lnc, f"{device} x lnc {lnc}"
        usable = int(capacity * HEADROOM) if capacity else None
        cls = backends.get(name)
        xla = name == "neuron-xla"
        for case in config.expand(cfg):
            if case.scenario != "train":
                continue
            lay = parallel.layout(cfg.parallel, case.batch, world)
            p = plan(cfg.model_config, cfg.parallel.strategy, world, lay.micro_batch, case.seq_len, case.dtype,
                     cfg.parallel.activation_checkpointing, lay.accum, usable, xla)  # fmt: skip
            label = f"{name} {case.label()}"
            rows.append((label, p))
            if p.fits is False:
                fixes = alternatives(cfg.model_config, p, cls.strategies, xla)
                fix = f"use {describe_fix(fixes[0], p)}" if fixes else (
                    f"no strategy this backend runs ({', '.join(cls.strategies)}) fits at any micro-batch on {world} "
                    "device(s): use more devices or a smaller model")  # fmt: skip
                refusals.append(
                    f"{label}: {cfg.parallel.strategy} needs {p.total / GIB:.1f} GiB per device, {device} has "
                    f"{usable / GIB:.1f} GiB usable ({HEADROOM:.0%} of {capacity / GIB:.0f} GiB); {fix}"
                )
    return rows, device, refusals


def world_for(cfg: object, nproc_per_node: int | None, nnodes: int | None) -> int:
    """The ranks a plan is for: the launch options', else every device of the run file's
    instance (a dry run plans the whole instance), else one."""
    if nproc_per_node:
        return nproc_per_node * (nnodes or 1)
    if cfg.instance not in ("none", "auto"):
        lnc = max([(cfg.backend_options.get(b) or {}).get("lnc") or 1 for b in cfg.backends])
        return catalog.instance(cfg.instance).devices // lnc  # Trn2 lnc 2: one rank per logical core
    return 1
