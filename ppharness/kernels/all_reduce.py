"""All-reduce of one layer's gradients (torch.distributed), as data-parallel training runs it.

Math: every rank ends with the element-wise mean of all ranks' buffers (SUM, then divide by the
world size n, DDP's gradient averaging). Each rank holds S bytes. Following nccl-tests
(PERFORMANCE.md), achieved GB/s is the algorithm bandwidth S / t and the bus bandwidth is
S / t * 2(n-1)/n, the per-link traffic of a ring all-reduce, comparable across world sizes.
    FLOPs  = 0 counted   (the (n-1)/n additions per element are negligible next to the traffic)
    bytes  = S = elements * element size   (algorithm bytes; `bus_bytes` = S * 2(n-1)/n)
Communication-bound: held against the interconnect, which no ceiling here measures, so rows
carry GB/s without a peak or ceiling fraction.

World size: inside a job started by torchrun (process group already initialised) the job's
group is used. Otherwise a world-size-1 group is made in this process, with a FileStore in a
temporary folder and, for gloo, a loopback device: nothing leaves the host. With one rank the
row measures the collective's fixed overhead, not a network. Every rank feeds identical seeded
buffers, so the reference (the mean) is the input itself.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import Tensor

from ppharness.core.device import Backend
from ppharness.kernels import Cost, Geometry, Kernel, Shape, element_size, kernel, randn
from ppharness.kernels.adamw import block_shapes


def _dist():
    import torch.distributed as dist  # torch.distributed: multi-rank paths only (slow; absent from some builds)

    return dist


def world_size() -> int:
    dist = _dist()
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


@kernel("all_reduce")
class AllReduce(Kernel):
    compile_variant = None  # a collective: nothing for a compiler to fuse

    def available(self, backend: Backend, dtype: str) -> tuple[bool, str]:
        ok, why = super().available(backend, dtype)
        if not ok:
            return ok, why
        dist = _dist()
        if not dist.is_available():
            return False, "torch.distributed is not available in this torch build"
        if dist.is_initialized():
            return True, ""
        try:
            dist.get_default_backend_for_device(backend.device)
        except (RuntimeError, ValueError, AttributeError) as exc:
            return False, f"no torch.distributed backend for device {backend.device}: {exc}"
        return True, ""

    @contextlib.contextmanager
    def session(self, backend: Backend) -> Iterator[None]:
        dist = _dist()
        if dist.is_initialized():  # a torchrun job: use its group, leave it to the job
            yield
            return
        with tempfile.TemporaryDirectory(prefix="ppbench-dist-") as tmp:
            store = dist.FileStore(str(Path(tmp) / "store"), 1)
            name = dist.get_default_backend_for_device(backend.device)
            kwargs = {}
            if name == "gloo":  # bind gloo to loopback: a one-rank group needs no network
                opts = dist.ProcessGroupGloo._Options()
                opts._devices = [dist.ProcessGroupGloo.create_device(hostname="127.0.0.1")]
                kwargs["pg_options"] = opts
            elif backend.device.type != "cpu":
                kwargs["device_id"] = backend.device
            dist.init_process_group(name, store=store, rank=0, world_size=1, **kwargs)
            try:
                yield
            finally:
                dist.destroy_process_group()

    def shapes(self, geo: Geometry) -> list[Shape]:
        n = sum(torch.Size(s).numel() for s in block_shapes(geo))
        return [
            Shape("layer-grads", {"elements": n, "world": world_size()}, "communication", tokens=geo.tokens)
        ]  # once per training step

    def make_inputs(self, shape: Shape, dtype: str, seed: int) -> tuple[Tensor]:
        gen = torch.Generator().manual_seed(seed)
        return (randn((shape.dims["elements"],), gen, dtype, scale=1e-3),)  # (N,) flat gradient bucket

    def cost(self, shape: Shape, dtype: str) -> Cost:
        S = float(shape.dims["elements"] * element_size(dtype))
        n = shape.dims["world"]
        return Cost(flops=0.0, bytes=S, extra={"bus_bytes": S * 2 * (n - 1) / n})

    def reference(self, shape: Shape, x: Tensor) -> Tensor:
        return x.clone()  # the mean of n identical buffers

    def variants(self, shape: Shape) -> dict[str, Callable]:
        def mean(x: Tensor) -> Tensor:
            dist = _dist()
            dist.all_reduce(x)  # in place, SUM
            n = dist.get_world_size()
            if n > 1:  # average, as DDP does; also keeps repeated timed calls from growing x
                x.div_(n)
            return x

        return {"mean": mean}
