"""Framework-free checkers: numbers, arrays and choices."""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from course_utils.grading._common import GradingSetupError, checker

__all__ = ["check_close", "check_in_range", "check_choice", "check_tuple", "as_numpy"]


def as_numpy(value: Any, name: str = "value") -> np.ndarray:
    """``value`` (number, list, NumPy array, torch or TensorFlow tensor) as a float array;
    ``AssertionError`` naming ``name`` if it is not numeric."""
    if value is None:
        raise AssertionError(f"{name} is None: did your function forget to return a value?")
    if hasattr(value, "detach"):  # torch.Tensor
        value = value.detach().cpu().numpy()
    elif hasattr(value, "numpy") and not isinstance(value, np.ndarray):  # tf.Tensor / keras Variable
        value = value.numpy()
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError) as exc:
        raise AssertionError(f"{name} should be a number or an array of numbers, got "
                             f"{type(value).__name__}: {value!r:.80}") from exc
    return arr


@checker
def check_close(actual: Any, expected: Any, *, rtol: float = 1e-5, atol: float = 1e-8,
                name: str = "value", show_expected: bool = True) -> None:
    """Assert that ``actual`` equals ``expected`` within ``rtol``/``atol`` (like
    ``numpy.allclose``), for numbers, arrays and tensors of the same shape.

    The message names ``name``, the first differing index and both values (set
    ``show_expected=False`` in a hidden test that must not reveal the answer).
    """
    exp = as_numpy(expected, "expected")
    if not np.all(np.isfinite(exp)):
        raise GradingSetupError(f"check_close(expected=...) contains NaN or inf: {expected!r:.80}")
    act = as_numpy(actual, name)
    if act.shape != exp.shape:
        if act.size == exp.size == 1:
            act = act.reshape(exp.shape)
        else:
            raise AssertionError(f"{name} has shape {act.shape}, expected shape {exp.shape}")
    bad_nan = ~np.isfinite(act)
    if bad_nan.any():
        idx = tuple(int(i) for i in np.argwhere(bad_nan)[0])
        where = f" at index {idx}" if act.ndim else ""
        raise AssertionError(f"{name} is not finite{where} ({act[idx] if act.ndim else act}): "
                             "check for a division by zero or a diverging computation")
    ok = np.isclose(act, exp, rtol=rtol, atol=atol)
    if ok.all():
        return
    if act.ndim == 0:
        msg = f"{name} is {_fmt(act)}"
        if show_expected:
            msg += f", expected {_fmt(exp)} (difference {_fmt(act - exp)})"
        else:
            msg += ", which is not the expected value"
        raise AssertionError(msg)
    idx = tuple(int(i) for i in np.argwhere(~ok)[0])
    msg = (f"{name}: {int((~ok).sum())} of {ok.size} entries differ from the expected values; "
           f"the first is at index {idx}: got {_fmt(act[idx])}")
    if show_expected:
        msg += f", expected {_fmt(exp[idx])}"
    raise AssertionError(msg)


@checker
def check_in_range(value: Any, low: float, high: float, *, name: str = "value") -> None:
    """Assert ``low <= value <= high`` for a number (or every entry of an array)."""
    if low > high:
        raise GradingSetupError(f"check_in_range(low={low}, high={high}): low must not exceed high")
    arr = as_numpy(value, name)
    if not np.all(np.isfinite(arr)):
        raise AssertionError(f"{name} contains NaN or inf: {value!r:.80}")
    bad = (arr < low) | (arr > high)
    if bad.any():
        if arr.ndim == 0:
            raise AssertionError(f"{name} is {_fmt(arr)}, expected a value between {low} and {high}")
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise AssertionError(f"{name}[{', '.join(map(str, idx))}] is {_fmt(arr[idx])}, expected "
                             f"every entry between {low} and {high}")


@checker
def check_tuple(value: Any, length: int, *, name: str = "result",
                names: tuple[str, ...] | None = None) -> tuple:
    """Assert that ``value`` is a tuple or list of ``length`` items and return it as a tuple
    (so that a test can unpack a function's result safely). ``names`` describes the items
    in the message, e.g. ``("train_error", "val_error")``."""
    what = f"({', '.join(names)})" if names else f"{length} values"
    if not isinstance(value, (tuple, list)):
        raise AssertionError(f"{name} should be a tuple {what}, got {type(value).__name__}: {value!r:.80}"
                             + ("; did your function forget to return?" if value is None else ""))
    if len(value) != length:
        raise AssertionError(f"{name} should hold {length} values {what}, got {len(value)}: {value!r:.80}")
    return tuple(value)


@checker
def check_choice(answer: Any, expected: str | None, *, choices: dict[str, str] | tuple[str, ...],
                 name: str = "answer", show_expected: bool = False) -> None:
    """Assert that a multiple-choice ``answer`` (a string) means ``expected`` (or, with
    ``expected=None``, only that it is one of the valid choices).

    ``choices`` lists the valid answers, or maps accepted spellings (synonyms) to the
    canonical answer. Matching ignores case, repeated spaces and ``-``/``_``. An answer that is not one of the choices gets a message listing them; a
    valid but wrong answer says so without revealing the right one unless
    ``show_expected``.
    """
    canon = _canonical_map(choices)
    if expected is not None and _norm(expected) not in canon:
        raise GradingSetupError(f"check_choice: expected={expected!r} is not among the choices "
                                f"{sorted(set(canon.values()))}")
    valid = sorted(set(canon.values()))
    if not isinstance(answer, str):
        raise AssertionError(f"{name} should be one of the strings {valid}, got "
                             f"{type(answer).__name__}: {answer!r:.60}")
    got = canon.get(_norm(answer))
    if got is None:
        raise AssertionError(f"{name} = {answer!r} is not one of the choices {valid}")
    if expected is None:
        return
    want = canon[_norm(expected)]
    if got != want:
        msg = f"{name} = {answer!r} is not the right choice"
        if show_expected:
            msg += f": expected {want!r}"
        raise AssertionError(msg)


def _norm(s: str) -> str:
    return " ".join(str(s).lower().replace("-", " ").replace("_", " ").split())


def _canonical_map(choices) -> dict[str, str]:
    if isinstance(choices, dict):
        out = {_norm(k): v for k, v in choices.items()}
        out.update({_norm(v): v for v in choices.values()})
        return out
    return {_norm(c): c for c in choices}


def _fmt(x: Any) -> str:
    x = float(np.asarray(x))
    if x == int(x) and abs(x) < 1e15:
        return f"{int(x):,}"
    if abs(x) >= 1e-3 or x == 0 or not math.isfinite(x):
        return f"{x:.6g}"
    return f"{x:.3e}"

