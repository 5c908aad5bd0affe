"""The argument checks both ``create_model`` twins make, so they fail alike.

``course_utils.models.create_model`` and ``course_utils.keras.create_model`` pass
model-specific keyword options on to a registry entry's builder. An option the builder does
not take must be an error that names it and lists what the model accepts (a silently ignored
``dropout=0.5`` is a bug that hides), and the class count must be a positive number. Imports
neither framework.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping

__all__ = ["check_num_classes", "check_builder_options"]


def check_num_classes(name: str, num_classes, default: int) -> int:
    """``num_classes`` as an int (``default`` for None); ``ValueError`` unless it is >= 1."""
    n = default if num_classes is None else int(num_classes)
    if n < 1:
        raise ValueError(f"create_model({name!r}): num_classes must be >= 1, got {num_classes!r}")
    return n


def check_builder_options(name: str, builder: Callable, options: Mapping) -> None:
    """``TypeError`` naming the unknown keys of ``options`` (and the accepted ones) unless
    every key is a keyword-only parameter of ``builder``."""
    accepted = [p.name for p in inspect.signature(builder).parameters.values()
                if p.kind == p.KEYWORD_ONLY]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise TypeError(f"create_model({name!r}) got unknown option(s) {unknown}; it accepts "
                        f"{accepted or 'none'}")
