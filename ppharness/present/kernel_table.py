"""The roofline table: one display-ready row per kernel record of a results frame.

Pandas only, no torch: `ppbench show` renders kernel rows without importing the kernels floor
(ppharness/kernels/, which imports torch). The figures themselves come from the records
(ppharness.kernels.roofline.roofline_metrics computed them when the kernel ran).
"""

from __future__ import annotations

import pandas as pd


def is_kernel(df: pd.DataFrame) -> pd.Series:
    if "workload.scenario" not in df:
        return pd.Series(False, index=df.index)
    return df["workload.scenario"].astype(str).str.startswith("kernel:")


def _get(row: pd.Series, col: str):
    value = row.get(col)
    return None if value is None or (isinstance(value, float) and value != value) else value


def _seconds(s: float | None) -> str:
    if s is None:
        return ""
    return f"{s * 1e6:.1f} us" if s < 1e-3 else f"{s * 1e3:.2f} ms" if s < 1 else f"{s:.2f} s"


def _pct(value: float | None, suffix: str = "") -> str:
    return "" if value is None else f"{value:.1%}{suffix}"


def _achieved(bound: str, tflops: float | None, gbps: float | None) -> str:
    """The figure on the axis of the kernel's bound: TFLOP/s when compute-bound (or with no bound
    and FLOPs counted), GB/s when memory- or communication-bound."""
    if tflops is not None and (bound == "compute" or (bound not in ("memory", "communication") and gbps is None)):
        return f"{tflops:.3f} TFLOP/s"
    return f"{gbps:.1f} GB/s" if gbps is not None else (f"{tflops:.3f} TFLOP/s" if tflops is not None else "")


def _row(r: pd.Series) -> dict:
    dims = _get(r, "workload.dims")
    compile_mode = _get(r, "workload.compile") or "none"
    variant = str(_get(r, "workload.variant") or "")
    bound = _get(r, "metrics.bound") or _get(r, "workload.bound") or ""
    peak_name = {"compute": "MFU", "memory": "MBU"}.get(bound, "")
    peak = _get(r, "metrics.peak_fraction")
    kind = {"gemm_tflops": " gemm", "mem_gbps": " mem"}.get(_get(r, "metrics.ceiling_kind") or "", "")
    check = _get(r, "validity.check") or {}
    flops = _get(r, "metrics.flops")
    gbps = _get(r, "metrics.achieved_gbps")
    status = _get(r, "status") or ""
    return {
        "backend": _get(r, "device.backend") or "",
        "kernel": _get(r, "workload.kernel") or str(_get(r, "workload.scenario") or ""),
        "shape": _get(r, "workload.shape") or "",
        "dims": " ".join(f"{k}={v}" for k, v in dims.items() if isinstance(v, int)) if isinstance(dims, dict) else "",
        "variant": variant + ("" if compile_mode == "none" else f" +compile({compile_mode})"),
        "dtype": _get(r, "workload.dtype") or "",
        "median": _seconds(_get(r, "timing.median_s")),
        "achieved": _achieved(bound, _get(r, "metrics.achieved_tflops") if flops else None, gbps),
        "FLOP/B": f"{_get(r, 'metrics.arithmetic_intensity'):.1f}" if flops else "",
        "bound": bound,
        "peak": _pct(peak, f" {peak_name}") if peak is not None else "n/a",
        "ceiling": _pct(_get(r, "metrics.ceiling_fraction"), kind),
        "check": f"{check['max_rel_err']:.1e}" if isinstance(check.get("max_rel_err"), (int, float)) else "",
        "status": status if status == "ok" else f"{status}: {_get(r, 'reason') or ''}",
    }


def table(df: pd.DataFrame) -> pd.DataFrame:
    """The roofline table, one display-ready row per kernel record of `df`."""
    rows = [_row(r) for _, r in df[is_kernel(df)].iterrows()]
    frame = pd.DataFrame(rows).astype(str) if rows else pd.DataFrame()
    frame.attrs["optional"] = OPTIONAL
    frame.attrs["wrap"] = ("variant",)  # "eager +compile(default)" may take two lines
    frame.attrs["notes"] = {"status": ": "}  # "error: <reason>": the reason under the table
    return frame


# What a narrow terminal leaves out first (ppharness/present/terminal.py); --wide shows them.
OPTIONAL = ("FLOP/B", "check", "bound", "peak", "dims", "median")
