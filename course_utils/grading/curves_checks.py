"""Checkers for learning-curve answers (assignment 1)."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from course_utils.grading._common import GradingSetupError, checker, fail
from course_utils.grading.basic import as_numpy, check_choice

__all__ = ["check_learning_curve", "check_regime", "curve_means", "REGIME_SYNONYMS"]

#: Accepted spellings of the regimes of ``course_utils.curves.diagnose`` (canonical names).
REGIME_SYNONYMS = {
    "high avoidable bias": "high avoidable bias", "high bias": "high avoidable bias",
    "bias": "high avoidable bias", "avoidable bias": "high avoidable bias",
    "underfitting": "high avoidable bias", "underfit": "high avoidable bias",
    "high variance": "high variance", "variance": "high variance",
    "overfitting": "high variance", "overfit": "high variance",
    "both": "both", "high bias and high variance": "both", "bias and variance": "both",
    "good fit": "good fit", "good": "good fit", "fine": "good fit", "neither": "good fit",
    "data mismatch": "data mismatch", "mismatch": "data mismatch",
}


def curve_means(result: Any, name: str = "result") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(sizes, mean train error, mean val error)`` from a
    :class:`course_utils.curves.LearningCurveResult` (or anything with ``sizes``,
    ``train_errors``, ``val_errors``) or a mapping with keys ``sizes``, ``train_error``,
    ``val_error``. 2-D error arrays ``[len(sizes), n_seeds]`` are averaged over seeds."""
    if result is None:
        raise AssertionError(f"{name} is None: did your function forget to return the curve?")
    if isinstance(result, Mapping):
        missing = [k for k in ("sizes", "train_error", "val_error") if k not in result]
        if missing:
            raise AssertionError(f"{name} is missing the key(s) {missing}; it has {sorted(result)}")
        sizes, tr, va = result["sizes"], result["train_error"], result["val_error"]
    elif all(hasattr(result, a) for a in ("sizes", "train_errors", "val_errors")):
        sizes, tr, va = result.sizes, result.train_errors, result.val_errors
    else:
        raise AssertionError(f"{name} should be a LearningCurveResult or a dict with keys 'sizes', "
                             f"'train_error', 'val_error'; got {type(result).__name__}")
    sizes = as_numpy(sizes, f"{name} sizes")
    tr = as_numpy(tr, f"{name} train_error")
    va = as_numpy(va, f"{name} val_error")
    out = []
    for label, arr in (("train_error", tr), ("val_error", va)):
        if arr.ndim == 2:
            arr = arr.mean(axis=1)
        if arr.shape != sizes.shape:
            raise AssertionError(f"{name} {label} has shape {arr.shape}: expected one value per "
                                 f"training-set size, i.e. shape {sizes.shape} (or [sizes, seeds])")
        out.append(arr)
    return sizes, out[0], out[1]


@checker
def check_learning_curve(result: Any, *, sizes: Sequence[int] | None = None,
                         expect_val_drop: float | None = 0.0, expect_gap: bool = True,
                         name: str = "result") -> None:
    """Assert that ``result`` is a plausible learning curve.

    * it has one mean training and validation error per size, every one a rate in [0, 1];
    * the sizes are ``sizes`` (if given), ascending;
    * with ``expect_gap``: the training error is not above the validation error on average
      (otherwise they are probably swapped, or both measured on the same data);
    * with ``expect_val_drop`` (a number): the validation error at the largest size is more
      than that much below the one at the smallest size (more data helps a model that is
      retrained on each subset; a flat curve usually means the full set was used every time).
    """
    s, tr, va = curve_means(result, name)
    problems: list[str] = []
    if sizes is not None:
        want = np.asarray(sizes, dtype=float)
        if want.ndim != 1 or len(want) < 2:
            raise GradingSetupError("check_learning_curve(sizes=...) needs at least two sizes")
        if s.shape != want.shape or not np.array_equal(s, want):
            raise AssertionError(f"{name} sizes are {s.astype(int).tolist()}, expected {want.astype(int).tolist()}")
    if len(s) > 1 and np.any(np.diff(s) <= 0):
        problems.append(f"sizes should be ascending, got {s.tolist()}")
    for label, arr in (("train_error", tr), ("val_error", va)):
        bad = ~np.isfinite(arr) | (arr < 0) | (arr > 1)
        if bad.any():
            i = int(np.argmax(bad))
            problems.append(f"{label} at size {int(s[i])} is {float(arr[i]):g}: errors are rates between 0 and 1 "
                            "(1 - accuracy)")
    fail(f"{name} is not a valid learning curve:", problems)
    if expect_gap and tr.mean() > va.mean() + 1e-9:
        raise AssertionError(f"{name}: the training error (mean {tr.mean():.3f}) is above the validation "
                             f"error (mean {va.mean():.3f}); are train_error and val_error swapped?")
    if expect_val_drop is not None and len(s) > 1 and not va[-1] < va[0] - expect_val_drop:
        raise AssertionError(
            f"{name}: the validation error does not fall with more data ({va[0]:.3f} at {int(s[0])} "
            f"examples, {va[-1]:.3f} at {int(s[-1])}); does each point train a fresh model on only the "
            "first n examples of its subset?")


@checker
def check_regime(answer: Any, expected: str | None, *, name: str = "answer", show_expected: bool = False) -> None:
    """Assert that ``answer`` names the regime ``expected`` ("high avoidable bias", "high
    variance", "both", "good fit", "data mismatch"). Common synonyms are accepted ("bias",
    "high bias", "underfitting", "overfitting" ...), and so is a
    :class:`course_utils.curves.Diagnosis` (its ``regime``). ``expected=None`` only checks
    that the answer is one of the regimes (for a visible test that must not give it away)."""
    if hasattr(answer, "regime") and not isinstance(answer, str):
        answer = answer.regime
    check_choice(answer, expected, choices=REGIME_SYNONYMS, name=name, show_expected=show_expected)
