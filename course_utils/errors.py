"""Errors both training twins raise, so a notebook catches the same class in either framework.

Lives in the framework-neutral core: ``course_utils.train`` (PyTorch) and
``course_utils.keras.training`` both raise :class:`NonFiniteLossError`, and
``course_utils.train.NonFiniteLossError`` stays its public name on the PyTorch side.
"""
from __future__ import annotations

__all__ = ["NonFiniteLossError"]


class NonFiniteLossError(FloatingPointError):
    """The training or validation loss became NaN or infinite."""
