"""The seed check and the framework-neutral part of seeding, shared by both twins.

``course_utils.device.seed_everything`` (PyTorch) and ``course_utils.keras.seed_everything``
must accept the same seeds and refuse the others with the same error, or a notebook that
moves from one framework to the other meets a ``TypeError`` on one side and a
``ValueError`` on the other; so the rule lives here once. Imports neither framework.
"""
from __future__ import annotations

import random

import numpy as np

__all__ = ["check_seed", "seed_python_numpy"]


def check_seed(seed) -> int:
    """``seed`` as a Python int. ``TypeError`` if it is not an integer (``bool`` included),
    ``ValueError`` if it is outside ``0 <= seed < 2**32`` (what NumPy accepts)."""
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, (bool, np.bool_)):
        raise TypeError(f"seed must be an int, got {seed!r} ({type(seed).__name__}); "
                        "pass e.g. seed=0")
    seed = int(seed)
    if not 0 <= seed < 2**32:
        raise ValueError(f"seed = {seed} is out of range; NumPy needs 0 <= seed < 2**32")
    return seed


def seed_python_numpy(seed) -> int:
    """Check ``seed`` and seed Python's ``random`` and NumPy's global generator with it."""
    seed = check_seed(seed)
    random.seed(seed)
    np.random.seed(seed)
    return seed
