"""Atomic checkpoints and random-number-generator state, for exact resume.

A training run that is killed after epoch ``k`` and resumed must end with the same weights,
bit for bit, as a run that was never interrupted. That needs more than the model and the
optimizer: the scheduler, the gradient scaler, and the state of every random generator
that the next epochs draw from (Python's ``random``, NumPy's global generator, torch's CPU
and CUDA generators; dropout, augmentation and a ``DataLoader``'s shuffle use them).

Files are written to a temporary name in the same folder and renamed over the target, so
a crash while saving leaves the previous checkpoint intact, never a truncated file.
"""
from __future__ import annotations

import logging
import random
from pathlib import Path

import numpy as np
import torch

from course_utils.atomic import atomic_write

__all__ = ["save_atomic", "load_checkpoint", "rng_state", "set_rng_state"]

log = logging.getLogger(__name__)


def save_atomic(obj, path: str | Path) -> Path:
    """``torch.save(obj, path)`` through :func:`course_utils.atomic.atomic_write`: readers
    see the old file or the new one, never half of one."""
    return atomic_write(path, lambda f: torch.save(obj, f))


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """Load a checkpoint written by :func:`save_atomic` (tensors and plain Python values
    only: ``weights_only=True``, so a checkpoint cannot run code when loaded)."""
    path = Path(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise RuntimeError(f"cannot read checkpoint {path}: {exc}. Delete the file (or the "
                           "checkpoint folder) to start training from scratch") from exc


def rng_state() -> dict:
    """The state of every global random generator, in a form ``weights_only`` loading accepts."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss),
                  float(cached)),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` captured."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available():
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
        else:
            log.warning("checkpoint holds RNG states of %d CUDA devices but %d are visible; "
                        "CUDA random numbers will differ from the original run",
                        len(cuda), torch.cuda.device_count())
