"""Shared plumbing for the checkers: one exception contract and message helpers.

Every checker is wrapped by :func:`checker`, so that a wrong answer, however strange (a
``None`` where a model was expected, a list instead of an array, a model whose forward pass
fails), surfaces as an ``AssertionError`` with a message that names the checker and what
went wrong. nbgrader scores a test cell zero on any exception, but students read the
message: an ``AttributeError`` from deep inside a checker tells them nothing, an
``AssertionError`` that says "model: expected a torch.nn.Module, got NoneType; did your
function return the model?" does.

Mistakes of the *instructor* (a checker called with impossible expectations) raise
:class:`GradingSetupError` instead, so they are not mistaken for the student's fault when
the source notebook is validated.
"""
from __future__ import annotations

import functools
import logging
from typing import Callable, Iterable, TypeVar

__all__ = ["GradingSetupError", "checker", "fail", "plural", "listing", "unit_of"]

log = logging.getLogger("course_utils.grading")

F = TypeVar("F", bound=Callable)


class GradingSetupError(ValueError):
    """A checker was called with arguments that no answer could satisfy (an instructor
    mistake in a test cell), as opposed to a wrong answer (``AssertionError``)."""


def checker(func: F) -> F:
    """Turn any unexpected exception raised while inspecting an answer into an
    ``AssertionError`` that names the checker, keeping the original as ``__cause__``."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except (AssertionError, GradingSetupError):
            raise
        except Exception as exc:  # a wrong answer broke the inspection itself
            log.debug("%s failed with %r", func.__name__, exc)
            raise AssertionError(
                f"{func.__name__}: your answer could not be checked, because inspecting it "
                f"raised {type(exc).__name__}: {exc}") from exc

    return wrapper  # type: ignore[return-value]


def fail(header: str, problems: list[str], limit: int = 8) -> None:
    """Raise one ``AssertionError`` listing ``problems`` (at most ``limit`` of them) under
    ``header`` (which names the checked object, so it is never empty); do nothing when
    there are none."""
    if not problems:
        return
    shown = problems[:limit]
    more = len(problems) - len(shown)
    lines = [header] + [f"  - {p}" for p in shown]
    if more:
        lines.append(f"  ... and {more} more")
    raise AssertionError("\n".join(lines))


def plural(n: int, word: str, suffix: str = "s") -> str:
    """``plural(1, "tensor") == "1 tensor"``, ``plural(8, "tensor") == "8 tensors"``."""
    return f"{n} {word}{'' if n == 1 else suffix}"


def listing(names: Iterable[str], limit: int = 3) -> str:
    """``a, b, c and 4 more``: a short list of names for a message."""
    names = list(names)
    head = ", ".join(names[:limit])
    return head + (f" and {len(names) - limit} more" if len(names) > limit else "")


def unit_of(name: str, depth: int = 2) -> str:
    """The module a parameter belongs to, cut to ``depth`` components, used to group
    messages: ``layer4.1.conv2.weight`` -> ``layer4.1``, ``fc.weight`` -> ``fc``."""
    parts = name.split(".")[:-1] or name.split(".")
    return ".".join(parts[:depth])
