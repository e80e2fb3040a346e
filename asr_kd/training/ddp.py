"""Distributed data parallel helpers, compatible with ``torchrun``.

Usage::

    torchrun --nproc_per_node 2 -m asr_kd.bin.train --config ... --exp-dir ...

    from asr_kd.training import ddp
    info = ddp.setup_distributed()           # reads RANK / WORLD_SIZE / LOCAL_RANK / MASTER_* from the env
    model = ddp.wrap_model(model.to(info.device), info)
    if ddp.is_main_process(): ...            # rank-0-only logging and checkpointing
    ddp.barrier(); ddp.cleanup()

Without ``WORLD_SIZE`` (or with ``WORLD_SIZE=1``) nothing is initialised and every helper behaves as
in a single process. The backend is ``nccl`` when CUDA is available, else ``gloo`` (CPU).
"""

from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)

__all__ = [
    "DistInfo",
    "setup_distributed",
    "cleanup",
    "is_distributed",
    "get_rank",
    "get_world_size",
    "get_local_rank",
    "is_main_process",
    "barrier",
    "wrap_model",
    "all_reduce_sum",
    "any_true",
    "max_over_ranks",
    "all_gather_object",
]


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: ``rank`` in ``[0, world_size)``, ``local_rank`` on its node, its device."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    backend: str | None = None

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(backend: str | None = None, device: str | None = None, timeout_s: float = 1800.0) -> DistInfo:
    """Initialise the default process group from torchrun's environment variables.

    ``backend``: ``None`` picks ``nccl`` with CUDA, else ``gloo``. ``device``: ``None`` picks
    ``cuda:<local_rank>`` when CUDA is available, else ``cpu`` (``"cpu"`` forces CPU even with CUDA).
    Safe to call twice (returns the existing setup).
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    use_cuda = torch.cuda.is_available() and device != "cpu"
    if device is not None and device != "cpu":
        dev = torch.device(device)
    elif use_cuda:
        dev = torch.device("cuda", local_rank % max(torch.cuda.device_count(), 1))
    else:
        dev = torch.device("cpu")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world_size <= 1:
        return DistInfo(0, 0, 1, dev, None)
    if backend is None:
        backend = "nccl" if dev.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(
            backend=backend,
            init_method="env://",
            rank=rank,
            world_size=world_size,
            timeout=datetime.timedelta(seconds=timeout_s),
        )
        log.info(
            "initialised %s process group: rank %d / %d (local %d) on %s", backend, rank, world_size, local_rank, dev
        )
    return DistInfo(rank, local_rank, world_size, dev, backend)


def cleanup() -> None:
    """Destroy the process group if one exists."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def get_local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", get_rank()))


def is_main_process() -> bool:
    return get_rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def wrap_model(model: torch.nn.Module, info: DistInfo | None = None, **ddp_kwargs) -> torch.nn.Module:
    """Wrap in ``DistributedDataParallel`` when running distributed; otherwise return ``model`` as is.

    ``find_unused_parameters`` defaults to ``False``; pass ``True`` for models with optional heads that
    are skipped on some batches. ``broadcast_buffers`` defaults to ``False``: with it on, every forward
    is a collective, and a rank that skips a batch (nothing to train on) would hang the others; buffers
    such as normalisation statistics then stay per rank (rank 0's are checkpointed).
    """
    if not is_distributed():
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    info = info or DistInfo(get_rank(), get_local_rank(), get_world_size())
    ddp_kwargs.setdefault("broadcast_buffers", False)
    if info.device.type == "cuda":
        ddp_kwargs.setdefault("device_ids", [info.device.index])
        ddp_kwargs.setdefault("output_device", info.device.index)
    return DDP(model, **ddp_kwargs)


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum ``t`` over ranks in place (no-op in a single process); returns ``t``."""
    if is_distributed():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def any_true(flag: bool, device: torch.device | str = "cpu") -> bool:
    """``True`` if ``flag`` is true on any rank (used so that every rank skips a bad batch together)."""
    if not is_distributed():
        return bool(flag)
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def max_over_ranks(value: int, device: torch.device | str = "cpu") -> int:
    """The largest of the ranks' integer ``value`` s (``value`` itself in a single process)."""
    if not is_distributed():
        return int(value)
    t = torch.tensor([float(value)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


def all_gather_object(obj):
    """List of ``obj`` from every rank (``[obj]`` in a single process)."""
    if not is_distributed():
        return [obj]
    out = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out
