"""Data-parallel training helpers used by :func:`course_utils.train.fit`.

``fit`` runs unchanged under ``torchrun --nproc_per_node=N script.py``: when
``torch.distributed`` is initialised, or the ``WORLD_SIZE`` environment variable that
torchrun sets is above 1, it initialises the process group if needed (NCCL for CUDA, gloo
otherwise), wraps the model in ``DistributedDataParallel`` and shards every batch.

How the data is sharded: every rank iterates the *same* loader with the *same* seed, so
all ranks see the same global batches in the same order. From each global batch of ``B``
samples, rank ``r`` keeps samples ``r, r + W, r + 2W, ...`` (``W`` = world size). DDP
averages the gradients of the per-rank mean losses, which equals the gradient of the mean
loss over the global batch when ``B`` is a multiple of ``W`` (otherwise shards differ by one
sample and the average is very slightly re-weighted). A global batch with fewer than ``W``
samples is skipped on every rank, since a rank without data would leave the others waiting
(with ``grad_accum`` the accumulation group it belonged to is then averaged as if it were
there; use ``drop_last`` or a dataset size that avoids such a batch for exact equivalence).
This keeps any loader usable as-is (no ``DistributedSampler`` needed) at the cost of each
rank loading the full batch; for the course's in-memory loaders that cost is negligible.
"""
from __future__ import annotations

import logging
import os

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["is_distributed", "init_distributed", "world_size", "rank", "local_rank",
           "is_main_process", "shard", "all_reduce_sum", "average_gradients", "barrier",
           "wrap_model", "cleanup"]

log = logging.getLogger(__name__)


def _env_world_size() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError as exc:
        raise ValueError(f"environment variable WORLD_SIZE = {os.environ['WORLD_SIZE']!r} is not "
                         "an integer; launch with torchrun or unset it") from exc


def is_distributed() -> bool:
    """True when a process group with more than one process is (or should be) running."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size() > 1
    return _env_world_size() > 1


def init_distributed(backend: str | None = None) -> bool:
    """Initialise the default process group from torchrun's environment variables
    (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``) if that has not been done.
    ``backend`` defaults to NCCL when CUDA is available, gloo otherwise. Returns whether
    training is distributed (world size above 1)."""
    if not dist.is_available():
        if _env_world_size() > 1:
            raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
        return False
    if dist.is_initialized():
        return dist.get_world_size() > 1
    if _env_world_size() <= 1:
        return False
    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise RuntimeError(f"WORLD_SIZE={os.environ['WORLD_SIZE']} but {', '.join(missing)} "
                           "not set; launch with 'torchrun --nproc_per_node=N script.py' or call "
                           "torch.distributed.init_process_group yourself")
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if backend == "nccl":
        torch.cuda.set_device(local_rank())
    dist.init_process_group(backend=backend)
    log.info("initialised process group: backend %s, rank %d of %d", backend, rank(), world_size())
    return dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def local_rank() -> int:
    """This process's index on its machine (torchrun's ``LOCAL_RANK``), which picks its GPU."""
    return int(os.environ.get("LOCAL_RANK", rank() if dist.is_initialized() else 0))


def is_main_process() -> bool:
    """Rank 0, the process that writes checkpoints and shows progress bars."""
    return rank() == 0


def shard(batch_x, batch_y):
    """This rank's share of a global batch: every ``world_size``-th sample from ``rank``.
    Returns ``None`` when the batch is smaller than the world size (skipped on all ranks)."""
    w = world_size()
    if w == 1:
        return batch_x, batch_y
    if len(batch_x) < w:
        return None
    r = rank()
    return batch_x[r::w], batch_y[r::w]


def all_reduce_sum(values: list[float], device) -> list[float]:
    """Sum a few numbers over all ranks (a no-op list copy when not distributed)."""
    if world_size() == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def average_gradients(params) -> None:
    """Average ``.grad`` over ranks, what DDP does in backward; for gradients accumulated
    under ``no_sync`` that must be applied without another synchronised backward."""
    w = world_size()
    if w == 1:
        return
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad.div_(w)


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def wrap_model(model: nn.Module, device: torch.device) -> nn.Module:
    """``DistributedDataParallel(model)`` when distributed, else the model itself. DDP
    broadcasts rank 0's weights at construction, so all ranks start identical."""
    if world_size() == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    if device.type == "cuda":
        return DistributedDataParallel(model, device_ids=[device.index], output_device=device.index)
    return DistributedDataParallel(model)


def cleanup() -> None:
    """Destroy the default process group, if any (call at the end of a torchrun script)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
