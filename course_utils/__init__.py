"""course_utils: the companion library of the transfer-learning course.

Sub-modules are imported on demand (``course_utils.data``, ``course_utils.models``,
``course_utils.train``, ``course_utils.keras`` ...) so that importing the package stays
cheap and a PyTorch-only notebook never pays for importing TensorFlow.
"""
from __future__ import annotations

import importlib

__all__ = ["__version__", "PROFILES"]
__version__ = "0.1.0"

#: The three sizes every notebook runs at (see README): CI, default offline, GPU + internet.
PROFILES = ("smoke", "embedded", "full")

_SUBMODULES = {
    "bench", "checkpoint", "cli", "curves", "distributed", "data", "device", "download", "experiments", "features",
    "grading", "history", "keras", "models", "plots", "progress", "results", "runner", "site", "threads",
    "train",
    "autograde",
    # the framework-neutral core both halves share (see docs/architecture.md)
    "architectures", "atomic", "factory", "feature_cache", "fingerprint", "preprocessing", "seeding",
    "weights",
}


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'course_utils' has no attribute {name!r}")
