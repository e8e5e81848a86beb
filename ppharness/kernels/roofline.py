"""Roofline figures for kernel rows and their cost block (the table that shows them: ppharness.present.kernel_table).

A kernel row is held against the ceiling of the resource that bounds it (Williams, Waterman &
Patterson 2009, "Roofline"): compute-bound rows against FLOP/s, memory-bound rows against bytes/s.
    achieved_tflops = flops / median_s / 1e12;   achieved_gbps = bytes / median_s / 1e9
    mfu, mbu        = achieved over the accelerator's dense peak and memory bandwidth
                      (ppharness.core.metrics.mfu/mbu, peaks from configs/accelerators.yaml; null with a
                      reason where no peak is known, e.g. on CPUs)
    peak_fraction   = mfu for compute-bound rows, mbu for memory-bound rows
    ceiling_fraction = achieved over the device's own measured ceiling (ppharness.core.ceilings): GEMM
                      TFLOP/s for compute-bound rows, copy GB/s for memory-bound rows
    roofline_fraction = achieved FLOP/s over the attainable min(gemm ceiling, intensity x copy
                      ceiling) of the measured roofline (null for rows without FLOPs)
    tokens_per_s    = the tokens one call stands for (Shape.tokens) / median_s, so a kernel has a
                      cost per token like the step it is part of: usd_per_million_tokens in `cost`
                      (`priced`) = usd_per_hour x share / (tokens_per_s x 3600) x 1e6
Both front doors (ppbench kernels, the pytest-benchmark JSON reader) call `roofline_metrics`.
"""

from __future__ import annotations

from ppharness.core import metrics
from ppharness.facts import catalog, sysinfo
from ppharness.facts.catalog import Accelerator
from ppharness.kernels import Cost


def roofline_metrics(
    cost: Cost,
    bound: str,
    median_s: float,
    acc: Accelerator | None,
    dtype: str,
    devices_used: int,
    why_no_peak: str,
    ceil: dict | None,
    tokens: int | None = None,
) -> dict:
    """The `metrics` block of a kernel record; `tokens`: what one call stands for (Shape.tokens)."""
    tflops, gbps = cost.flops / median_s / 1e12, cost.bytes / median_s / 1e9
    out: dict = {
        "flops": cost.flops, "bytes": cost.bytes, **cost.extra,
        "arithmetic_intensity": cost.flops / cost.bytes if cost.bytes else None,
        "bound": bound, "achieved_tflops": tflops, "achieved_gbps": gbps,
        "tokens_per_s": tokens / median_s if tokens else None, "tokens_per_step": tokens or None,
    }  # fmt: skip
    if "bus_bytes" in cost.extra:
        out["bus_gbps"] = cost.extra["bus_bytes"] / median_s / 1e9
    if bound == "communication":
        why = "communication-bound: no interconnect peak or ceiling is known"
        return {**out, "mfu": None, "mfu_reason": why, "mbu": None, "mbu_reason": why, "peak_fraction": None,
                "peak_fraction_reason": why, "ceiling_fraction": None, "ceiling_kind": None, "roofline_fraction": None}  # fmt: skip
    m_fu = (
        metrics.mfu(tflops, acc, dtype, devices_used, why_no_peak)
        if cost.flops
        else metrics.Efficiency(None, "no FLOPs counted")
    )
    m_bu = metrics.mbu(gbps, acc, devices_used, why_no_peak)
    peak = m_fu if bound == "compute" else m_bu
    out.update(mfu=m_fu.value, mfu_reason=m_fu.reason, mbu=m_bu.value, mbu_reason=m_bu.reason,
               peak_fraction=peak.value, peak_fraction_reason=peak.reason)  # fmt: skip
    if not ceil:
        return {**out, "ceiling_fraction": None, "ceiling_kind": None, "roofline_fraction": None}
    kind = "gemm_tflops" if bound == "compute" else "mem_gbps"
    out["ceiling_fraction"] = (tflops if bound == "compute" else gbps) / ceil[kind]
    out["ceiling_kind"] = kind
    attainable = min(ceil["gemm_tflops"], out["arithmetic_intensity"] * ceil["mem_gbps"] / 1e3) if cost.flops else None
    out["roofline_fraction"] = tflops / attainable if attainable else None
    return out


def cost_block(instance: str, devices_used: int, basis: str = "on_demand", region: str = "us-east-1") -> dict:
    """The record's `cost`: the instance's hourly price when one is named (usd_per_million_tokens
    follows from the measured tokens/s: `priced`)."""
    detected = sysinfo.ec2_instance_type()
    name = detected if instance == "auto" else None if instance == "none" else instance
    empty = {"instance": None, "basis": basis, "region": region, "usd_per_hour": None, "share": None,
             "prorated": None, "usd_per_million_tokens": None, "price_source": None, "price_date": None}  # fmt: skip
    if name is None or name not in catalog.instances():
        why = (
            "no --instance given"
            if instance == "none"
            else f"--instance auto: detected {detected or 'no EC2 type'}, not in configs/instances.yaml"
        )
        return {**empty, "reason": why}
    inst, price = catalog.instance(name), catalog.price(name, basis, region)
    share = catalog.share(devices_used, inst) if inst.accelerator else 1.0
    return {**empty, "instance": name, "priced_as": name != detected, "usd_per_hour": price.usd_per_hour,
            "share": share, "prorated": share < 1.0, "price_source": price.source, "price_date": price.date,
            "reason": ""}  # fmt: skip


def priced(cost: dict, tokens_per_s: float | None) -> dict:
    """`cost` with usd_per_million_tokens at its price and share, when both a price and a token
    count exist; otherwise the reason why not."""
    if cost.get("usd_per_hour") is None:
        return cost
    if not tokens_per_s:
        return {**cost, "reason": "this kernel case counts no tokens: usd_per_million_tokens is null"}
    usd = catalog.usd_per_million_tokens(cost["usd_per_hour"], tokens_per_s, cost["share"])
    return {**cost, "usd_per_million_tokens": usd}
