"""Lazy re-exports for package ``__init__`` modules.

``course_utils.data``, ``.grading`` and ``.autograde`` re-export names whose modules pull in
heavy dependencies (torch, TensorFlow, nbgrader). A notebook graded by nbgrader, or
``course --help``, should not pay for those imports, so each package lists where its names
live and imports a module only when one of its names is first used (PEP 562).
"""
from __future__ import annotations

import importlib
from typing import Callable, Mapping

__all__ = ["lazy_getattr"]


def lazy_getattr(package: str, homes: Mapping[str, str], namespace: dict) -> Callable[[str], object]:
    """A module ``__getattr__`` for ``package`` that resolves ``name`` from the submodule
    ``homes[name]`` on first use and stores it in ``namespace`` (the package's ``globals()``),
    so later lookups are ordinary attribute reads."""
    def __getattr__(name: str):
        if name in homes:
            value = getattr(importlib.import_module(f"{package}.{homes[name]}"), name)
            namespace[name] = value
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
