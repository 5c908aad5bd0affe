"""Learning curves, capacity curves and the bias/variance diagnosis from the lecture.

The course's first question about any model is "would more data help, or a bigger model?".
:func:`learning_curve` answers it empirically: train on nested, stratified subsets of
growing size, several seeds each, and record training and validation error. It knows
nothing about frameworks: you hand it a ``train_and_score`` callable, which can wrap a
PyTorch ``fit``, a Keras ``model.fit`` or a scikit-learn estimator. :func:`capacity_curve`
does the same over model sizes. :class:`LearningCurveDisplay` draws the results (several on
one axis, e.g. PyTorch next to Keras) with a desired-performance line, in the style of
scikit-learn's displays, and :func:`diagnose` names the regime with Andrew Ng's rules:

* avoidable bias = training error - human (Bayes-proxy) error,
* variance = dev error - training error, or train-dev error - training error when a
  train-dev set (training distribution, held out) is available,
* data mismatch = dev error - train-dev error.
"""
from __future__ import annotations

import logging
import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

__all__ = ["LearningCurveResult", "CapacityCurveResult", "learning_curve", "capacity_curve",
           "nested_stratified_order", "LearningCurveDisplay", "Diagnosis", "diagnose",
           "REGIMES", "REMEDIES"]

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- results

@dataclass
class LearningCurveResult:
    """Errors per training-set size and seed.

    ``train_errors`` and ``val_errors`` are shaped ``[len(sizes), len(seeds)]``; ``sizes``
    are absolute numbers of training examples, ascending. ``label`` names the curve in a
    legend (e.g. ``"PyTorch"``).
    """

    sizes: np.ndarray
    train_errors: np.ndarray
    val_errors: np.ndarray
    seeds: tuple[int, ...]
    label: str | None = None
    xlabel: str = "training examples"
    meta: dict = field(default_factory=dict)

    #: name of the x column in :meth:`to_frame`
    _x_name = "size"

    def __post_init__(self) -> None:
        self.sizes = np.asarray(self.sizes)
        self.train_errors = np.asarray(self.train_errors, dtype=float)
        self.val_errors = np.asarray(self.val_errors, dtype=float)
        self.seeds = tuple(int(s) for s in self.seeds)
        want = (len(self.sizes), len(self.seeds))
        for name in ("train_errors", "val_errors"):
            got = getattr(self, name).shape
            if got != want:
                raise ValueError(f"{name} has shape {got}, expected [len(sizes), len(seeds)] = {want}")

    # means and spreads over seeds (ddof=0 so a single seed gives 0, not NaN)
    @property
    def train_mean(self) -> np.ndarray:
        return self.train_errors.mean(axis=1)

    @property
    def train_std(self) -> np.ndarray:
        return self.train_errors.std(axis=1)

    @property
    def val_mean(self) -> np.ndarray:
        return self.val_errors.mean(axis=1)

    @property
    def val_std(self) -> np.ndarray:
        return self.val_errors.std(axis=1)

    def to_frame(self, summary: bool = False):
        """A tidy pandas table: one row per (size, seed) with ``train_error`` and
        ``val_error``; with ``summary=True`` one row per size with means and stds."""
        import pandas as pd

        x = self._x_name
        if summary:
            return pd.DataFrame({x: self.sizes, "train_error_mean": self.train_mean,
                                 "train_error_std": self.train_std, "val_error_mean": self.val_mean,
                                 "val_error_std": self.val_std, "n_seeds": len(self.seeds)})
        rows = [{x: s, "seed": seed, "train_error": self.train_errors[i, j],
                 "val_error": self.val_errors[i, j]}
                for i, s in enumerate(self.sizes.tolist()) for j, seed in enumerate(self.seeds)]
        return pd.DataFrame(rows, columns=[x, "seed", "train_error", "val_error"])


@dataclass
class CapacityCurveResult(LearningCurveResult):
    """Errors per model capacity and seed; ``sizes`` holds the capacities (numbers, or
    names such as ``"tiny"``, ``"small"``), also available as ``capacities``."""

    xlabel: str = "model capacity"
    _x_name = "capacity"

    @property
    def capacities(self) -> np.ndarray:
        return self.sizes


# --------------------------------------------------------------------------- subsets

def nested_stratified_order(y: np.ndarray, seed: int, stratify: bool = True) -> np.ndarray:
    """A permutation of ``range(len(y))`` whose every prefix is (close to) stratified.

    Learning curves use prefixes of this order as training subsets, so the subsets are
    nested (the 100-example set contains the 50-example set) and each keeps the class
    proportions of ``y`` to within one example per class. Nesting removes most of the
    subset-to-subset noise that would otherwise make the curve zig-zag.
    """
    y = np.asarray(y)
    rng = np.random.default_rng(seed)
    if not stratify:
        return rng.permutation(len(y))
    keys = np.empty(len(y), dtype=float)
    for label in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == label))
        # k-th example of a class with n examples sits at (k + u) / n in [0, 1): sorting by this
        # interleaves the classes in proportion; u in (0, 1) breaks ties at random.
        keys[idx] = (np.arange(len(idx)) + rng.uniform(0.01, 0.99, len(idx))) / len(idx)
    return np.argsort(keys, kind="stable")


def _split_val(y, val_fraction, seed, stratify) -> tuple[np.ndarray, np.ndarray]:
    if not (isinstance(val_fraction, numbers.Real) and 0.0 < float(val_fraction) < 1.0):
        raise ValueError(f"val_fraction={val_fraction!r}: use a fraction strictly between 0 and 1, "
                         "or pass x_val and y_val")
    n = len(y)
    n_val = int(round(val_fraction * n))
    if not 1 <= n_val < n:
        raise ValueError(f"val_fraction={val_fraction} of {n} examples leaves an empty side; "
                         "use more data or another val_fraction")
    order = nested_stratified_order(y, seed, stratify)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def _resolve_sizes(sizes, n_pool: int) -> np.ndarray:
    if isinstance(sizes, (numbers.Number, str)) or sizes is None:
        raise TypeError(f"sizes={sizes!r}: pass a sequence of training-set sizes, e.g. [50, 200, 1000] "
                        "or fractions [0.1, 0.5, 1.0]")
    out = []
    for s in sizes:
        if isinstance(s, bool) or not isinstance(s, numbers.Real):
            raise TypeError(f"sizes contains {s!r}: use ints (examples) or floats in (0, 1] (fractions)")
        if isinstance(s, numbers.Integral):
            n = int(s)
            if not 1 <= n <= n_pool:
                raise ValueError(f"size {n} is outside 1..{n_pool}, the number of training examples "
                                 "available after holding out validation data")
        else:
            if not 0.0 < float(s) <= 1.0:
                raise ValueError(f"size {s!r} is a float: fractions must lie in (0, 1]; "
                                 "pass an int for an absolute number of examples")
            n = max(1, int(round(float(s) * n_pool)))
        out.append(n)
    if not out:
        raise ValueError("sizes is empty: give at least one training-set size")
    arr = np.array(sorted(out), dtype=np.int64)
    if len(np.unique(arr)) != len(arr):
        raise ValueError(f"sizes {list(sizes)!r} resolve to duplicate sizes {arr.tolist()} "
                         f"(out of {n_pool} examples); drop the duplicates")
    return arr


def _check_seeds(seeds) -> tuple[int, ...]:
    if isinstance(seeds, numbers.Integral):
        seeds = (int(seeds),)
    seeds = tuple(seeds)
    if not seeds or not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) for s in seeds):
        raise ValueError(f"seeds={seeds!r}: pass one or more integer seeds, e.g. (0, 1, 2)")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds={seeds!r} repeats a seed; repeated runs add no information")
    return tuple(int(s) for s in seeds)


def _as_errors(out, fn) -> tuple[float, float]:
    name = getattr(fn, "__name__", repr(fn))
    try:
        tr, va = out
        return float(tr), float(va)
    except (TypeError, ValueError):
        raise TypeError(f"{name} returned {out!r}; it must return (train_error, val_error), "
                        "two numbers such as 1 - accuracy") from None


def _take(a, idx):
    """Rows ``idx`` of an array-like (NumPy, torch, pandas, list)."""
    if hasattr(a, "iloc"):
        return a.iloc[idx]
    if isinstance(a, (list, tuple)):
        return [a[i] for i in idx]
    return a[idx]


def _prepare(x, y, x_val, y_val, val_fraction, stratify, split_seed):
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} examples but y has {len(y)} labels")
    y_np = np.asarray(y)
    if (x_val is None) != (y_val is None):
        raise ValueError("pass both x_val and y_val, or neither (then val_fraction of x is held out)")
    if x_val is None:
        pool, val = _split_val(y_np, val_fraction, split_seed, stratify)
        return _take(x, pool), _take(y, pool), _take(x, val), _take(y, val), pool
    if len(x_val) != len(y_val):
        raise ValueError(f"x_val has {len(x_val)} examples but y_val has {len(y_val)} labels")
    return x, y, x_val, y_val, np.arange(len(y_np))


def _progress(total, desc, enabled):
    from course_utils.progress import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, leave=False)


# --------------------------------------------------------------------------- curves

def learning_curve(train_and_score: Callable[..., tuple[float, float]], x, y, sizes,
                   seeds: Sequence[int] = (0, 1, 2), *, x_val=None, y_val=None,
                   val_fraction: float = 0.2, stratify: bool = True, split_seed: int = 0,
                   progress: bool = True, label: str | None = None) -> LearningCurveResult:
    """Train on growing subsets of ``(x, y)`` and record training and validation error.

    ``train_and_score(x_train, y_train, x_val, y_val, seed) -> (train_error, val_error)``
    trains a fresh model (initialised from ``seed``) on the subset and returns both errors
    (e.g. ``1 - accuracy``). It may wrap any framework.

    Validation data is ``(x_val, y_val)`` if given; otherwise a stratified ``val_fraction``
    of ``(x, y)`` is held out once (with ``split_seed``) and never enters a training subset.
    ``sizes`` are ints (examples) or floats in (0, 1] (fractions of the remaining training
    pool). For every seed the training subsets are nested prefixes of one stratified random
    order, so size 200 contains size 100 and both keep the class proportions.
    """
    seeds = _check_seeds(seeds)
    x_pool, y_pool, xv, yv, pool_idx = _prepare(x, y, x_val, y_val, val_fraction, stratify, split_seed)
    sizes_arr = _resolve_sizes(sizes, len(y_pool))
    y_pool_np = np.asarray(y_pool)
    train_err = np.full((len(sizes_arr), len(seeds)), np.nan)
    val_err = np.full_like(train_err, np.nan)
    with _progress(len(sizes_arr) * len(seeds), "learning curve", progress) as bar:
        for j, seed in enumerate(seeds):
            order = nested_stratified_order(y_pool_np, seed, stratify)
            for i, n in enumerate(sizes_arr):
                idx = np.sort(order[:n])
                out = train_and_score(_take(x_pool, idx), _take(y_pool, idx), xv, yv, seed)
                train_err[i, j], val_err[i, j] = _as_errors(out, train_and_score)
                log.debug("size=%d seed=%d train_error=%.4f val_error=%.4f", n, seed,
                          train_err[i, j], val_err[i, j])
                bar.update(1)
    return LearningCurveResult(sizes_arr, train_err, val_err, seeds, label=label,
                               meta={"n_val": len(yv), "n_pool": len(y_pool),
                                     "val_fraction": None if x_val is not None else val_fraction,
                                     "stratify": stratify, "split_seed": split_seed})


def capacity_curve(train_and_score: Callable[..., tuple[float, float]], x, y, capacities,
                   seeds: Sequence[int] = (0, 1, 2), *, x_val=None, y_val=None,
                   val_fraction: float = 0.2, stratify: bool = True, split_seed: int = 0,
                   train_size: int | float | None = None, progress: bool = True,
                   label: str | None = None) -> CapacityCurveResult:
    """Error against model capacity, at a fixed training set.

    ``train_and_score(capacity, x_train, y_train, x_val, y_val, seed) -> (train_error,
    val_error)`` builds a model of the given capacity (a width, a depth, a number of
    unfrozen blocks, or a name), trains it and scores it. The training set is the pool left
    after holding out validation data, or its stratified first ``train_size`` examples
    (int, or fraction in (0, 1]) drawn with ``split_seed``. The same subset is used for all
    capacities and seeds, so only the model changes along the curve.
    """
    seeds = _check_seeds(seeds)
    capacities = list(capacities)
    if not capacities:
        raise ValueError("capacities is empty: give at least one model capacity")
    x_pool, y_pool, xv, yv, _ = _prepare(x, y, x_val, y_val, val_fraction, stratify, split_seed)
    if train_size is not None:
        n = int(_resolve_sizes([train_size], len(y_pool))[0])
        idx = np.sort(nested_stratified_order(np.asarray(y_pool), split_seed, stratify)[:n])
        x_pool, y_pool = _take(x_pool, idx), _take(y_pool, idx)
    train_err = np.full((len(capacities), len(seeds)), np.nan)
    val_err = np.full_like(train_err, np.nan)
    with _progress(len(capacities) * len(seeds), "capacity curve", progress) as bar:
        for i, cap in enumerate(capacities):
            for j, seed in enumerate(seeds):
                out = train_and_score(cap, x_pool, y_pool, xv, yv, seed)
                train_err[i, j], val_err[i, j] = _as_errors(out, train_and_score)
                bar.update(1)
    return CapacityCurveResult(np.asarray(capacities), train_err, val_err, seeds, label=label,
                               meta={"n_train": len(y_pool), "n_val": len(yv)})


# --------------------------------------------------------------------------- display

class LearningCurveDisplay:
    """Plot a :class:`LearningCurveResult` (or a capacity curve): mean training and
    validation error with a band of one standard deviation over seeds.

    Like scikit-learn's displays, :meth:`plot` draws and returns ``self``; the artists are
    kept as ``ax_``, ``figure_``, ``lines_`` (``{"train": Line2D, "val": Line2D}``),
    ``bands_`` and ``desired_line_``. Call ``plot(ax=ax)`` for several results to overlay
    them: each result gets its own colour, training error dashed, validation error solid.
    """

    def __init__(self, result: LearningCurveResult, *, label: str | None = None):
        if not isinstance(result, LearningCurveResult):
            raise TypeError(f"LearningCurveDisplay needs a LearningCurveResult, got {type(result).__name__}; "
                            "make one with learning_curve(...) or capacity_curve(...)")
        self.result = result
        self.label = label if label is not None else result.label
        self.ax_ = self.figure_ = self.desired_line_ = None
        self.lines_: dict[str, Any] = {}
        self.bands_: dict[str, Any] = {}

    @classmethod
    def from_result(cls, result: LearningCurveResult, *, ax=None, label: str | None = None,
                    **plot_kwargs) -> "LearningCurveDisplay":
        """``LearningCurveDisplay(result, label=label).plot(ax=ax, **plot_kwargs)``."""
        return cls(result, label=label).plot(ax=ax, **plot_kwargs)

    def plot(self, ax=None, *, desired: float | None = None, label: str | None = None,
             show_train: bool = True, show_val: bool = True, std: bool = True,
             color=None, desired_label: str = "desired performance", xscale: str | None = None,
             legend: bool = True) -> "LearningCurveDisplay":
        """Draw on ``ax`` (a new figure if None) and return ``self``.

        ``desired`` draws a horizontal line at the error you would be happy with (the
        human-level or Bayes-proxy error of the diagnosis). ``xscale="log"`` suits sizes
        spanning decades.
        """
        import matplotlib.pyplot as plt

        if not (show_train or show_val):
            raise ValueError("show_train=False and show_val=False leaves nothing to draw")
        if ax is None:
            _, ax = plt.subplots(figsize=(6, 4))
        r = self.result
        label = label if label is not None else self.label
        prefix = f"{label}: " if label else ""
        x, ticklabels = _x_positions(r.sizes)
        if show_val:
            kw = {} if color is None else {"color": color}
            (line,) = ax.plot(x, r.val_mean, "-o", label=f"{prefix}validation error", **kw)
            self.lines_["val"] = line
            color = line.get_color()
            if std and len(r.seeds) > 1:
                self.bands_["val"] = ax.fill_between(x, r.val_mean - r.val_std, r.val_mean + r.val_std,
                                                     color=color, alpha=0.15, linewidth=0)
        if show_train:
            kw = {} if color is None else {"color": color}
            (line,) = ax.plot(x, r.train_mean, "--s", label=f"{prefix}training error", **kw)
            self.lines_["train"] = line
            color = line.get_color()
            if std and len(r.seeds) > 1:
                self.bands_["train"] = ax.fill_between(x, r.train_mean - r.train_std,
                                                       r.train_mean + r.train_std,
                                                       color=color, alpha=0.10, linewidth=0)
        if desired is not None:
            self.desired_line_ = ax.axhline(float(desired), color="k", linestyle=":", linewidth=1.5,
                                            label=f"{desired_label} ({desired:.3g})")
        if ticklabels is not None:
            ax.set_xticks(x)
            ax.set_xticklabels(ticklabels)
        if xscale:
            ax.set_xscale(xscale)
        ax.set_xlabel(r.xlabel)
        ax.set_ylabel("error")
        if not ax.get_title():
            ax.set_title("Learning curve" if type(r) is LearningCurveResult else "Error vs model capacity")
        ax.grid(True, alpha=0.3)
        if legend:
            ax.legend(fontsize="small")
        self.ax_, self.figure_ = ax, ax.figure
        return self


def _x_positions(values: np.ndarray):
    """Numeric x positions, plus tick labels when the values are names."""
    if values.dtype.kind in "iuf":
        return values.astype(float), None
    return np.arange(len(values), dtype=float), [str(v) for v in values]


# --------------------------------------------------------------------------- diagnosis

#: The regimes :func:`diagnose` can name.
REGIMES = ("good fit", "high avoidable bias", "high variance", "both", "data mismatch")

#: What to try for each problem (the lecture's "basic recipe").
REMEDIES = {
    "avoidable bias": [
        "train a bigger model (more layers or units; unfreeze more of the pretrained network)",
        "train longer or with a better optimiser (Adam, a tuned learning rate)",
        "try a better architecture or better pretrained features",
        "reduce regularisation (weight decay, dropout) if you added any",
    ],
    "variance": [
        "get more training data (or augment the data you have)",
        "add regularisation (weight decay, dropout, data augmentation)",
        "use early stopping on the dev set",
        "train fewer parameters (freeze more layers, a smaller head)",
    ],
    "data mismatch": [
        "look at dev errors by hand to see how training and dev data differ",
        "make the training data more like the target data (data synthesis, augmentation)",
        "collect more target-like data and put part of it in the training set",
    ],
}

_REGIME_OF = {"avoidable bias": "high avoidable bias", "variance": "high variance",
              "data mismatch": "data mismatch"}


@dataclass(frozen=True)
class Diagnosis:
    """The outcome of :func:`diagnose`: the ``regime``, the gaps it is based on, the
    ``problems`` found (largest gap first) and the ``remedies`` to try, in that order."""

    regime: str
    train_error: float
    dev_error: float
    human_error: float
    train_dev_error: float | None
    avoidable_bias: float
    variance: float
    data_mismatch: float | None
    tolerance: float
    problems: tuple[str, ...]
    remedies: tuple[str, ...]
    notes: tuple[str, ...] = ()

    @property
    def gaps(self) -> dict[str, float]:
        g = {"avoidable bias": self.avoidable_bias, "variance": self.variance}
        if self.data_mismatch is not None:
            g["data mismatch"] = self.data_mismatch
        return g

    def __str__(self) -> str:
        pct = max(self.train_error, self.dev_error, self.human_error) <= 1.0

        def e(v):
            return f"{100 * v:6.2f}%" if pct else f"{v:8.4g}"

        def g(name, v):
            mark = "  <- high" if name in self.problems else ""
            return f"{name} {100 * v:+.2f} points{mark}" if pct else f"{name} {v:+.4g}{mark}"

        lines = [f"Diagnosis: {self.regime}",
                 f"  human-level (Bayes proxy) error {e(self.human_error)}",
                 f"  training error                  {e(self.train_error)}   "
                 f"{g('avoidable bias', self.avoidable_bias)}"]
        if self.train_dev_error is not None:
            lines.append(f"  train-dev error                 {e(self.train_dev_error)}   "
                         f"{g('variance', self.variance)}")
            lines.append(f"  dev error                       {e(self.dev_error)}   "
                         f"{g('data mismatch', self.data_mismatch)}")
        else:
            lines.append(f"  dev error                       {e(self.dev_error)}   "
                         f"{g('variance', self.variance)}")
        if pct:
            t = 100 * self.tolerance
            tol = f"{t:.2g} percentage point{'' if t == 1 else 's'}"
        else:
            tol = f"{self.tolerance:.3g}"
        lines.append(f"  (a gap above {tol} counts as high)")
        if self.remedies:
            lines.append("Try:")
            lines += [f"  - {r}" for r in self.remedies]
        lines += [f"Note: {n}" for n in self.notes]
        return "\n".join(lines)


def _num(name, v) -> float:
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(float(v)):
        raise ValueError(f"{name}={v!r}: expected a finite error rate such as 0.08 (8%)")
    if float(v) < 0:
        raise ValueError(f"{name}={v!r}: an error rate cannot be negative")
    return float(v)


def diagnose(train_error, dev_error: float | None = None, *, human_error: float = 0.0,
             train_dev_error: float | None = None, tolerance: float | None = None,
             both_ratio: float = 0.5) -> Diagnosis:
    """Name the regime of a model from its errors, by the rules of the lecture.

    Errors are rates (``0.08`` for 8 %); percentages work too if you also give
    ``tolerance`` in percentage points. ``human_error`` is the proxy for the Bayes
    (desired) error. ``train_error`` may instead be a :class:`LearningCurveResult`: its
    mean errors at the largest training size are used (then leave ``dev_error`` out).

    A gap is *high* when it exceeds ``tolerance`` (default one percentage point). The regime
    is named after the largest high gap, as in the lecture ("work on the bigger gap first");
    it is ``"both"`` when avoidable bias and variance are both high and the smaller is at
    least ``both_ratio`` of the larger. Every high gap appears in ``problems`` and
    contributes its ``remedies``.
    """
    if isinstance(train_error, LearningCurveResult):
        if dev_error is not None:
            raise TypeError("diagnose(result, dev_error=...): a LearningCurveResult already holds the "
                            "dev (validation) error; leave dev_error out")
        res = train_error
        i = int(np.argmax(res.sizes)) if res.sizes.dtype.kind in "iuf" else len(res.sizes) - 1
        train_error, dev_error = float(res.train_mean[i]), float(res.val_mean[i])
    if dev_error is None:
        raise TypeError("diagnose() needs dev_error (the validation/dev-set error)")
    train, dev, human = _num("train_error", train_error), _num("dev_error", dev_error), \
        _num("human_error", human_error)
    train_dev = None if train_dev_error is None else _num("train_dev_error", train_dev_error)
    values = [train, dev, human] + ([train_dev] if train_dev is not None else [])
    if tolerance is None:
        if max(values) > 1.0:
            raise ValueError(f"errors {values} look like percentages: pass rates (8% -> 0.08), "
                             "or give tolerance in percentage points (e.g. tolerance=1)")
        tolerance = 0.01
    tolerance = _num("tolerance", tolerance)
    if not 0.0 < both_ratio <= 1.0:
        raise ValueError(f"both_ratio={both_ratio!r}: use a number in (0, 1]")

    bias = train - human
    if train_dev is None:
        variance, mismatch = dev - train, None
    else:
        variance, mismatch = train_dev - train, dev - train_dev
    gaps = {"avoidable bias": bias, "variance": variance}
    if mismatch is not None:
        gaps["data mismatch"] = mismatch
    # round so that 0.10 - 0.08 (= 0.020000000000000004) is not "above" a tolerance of 0.02
    high = {k: v for k, v in gaps.items() if round(v, 9) > tolerance}
    problems = tuple(sorted(high, key=lambda k: -high[k]))
    if not problems:
        regime = "good fit"
    else:
        regime = _REGIME_OF[problems[0]]
        if problems[0] != "data mismatch" and "avoidable bias" in high and "variance" in high:
            small, large = sorted((high["avoidable bias"], high["variance"]))
            if small >= both_ratio * large:
                regime = "both"
    remedies = tuple(r for p in problems for r in REMEDIES[p])
    notes = []
    if bias < -tolerance:
        notes.append("training error is below human_error: human-level error is not a good proxy "
                     "for the Bayes error here (or the model overfits the training set)")
    if variance < -tolerance:
        notes.append("held-out error is below training error: check that the errors are not "
                     "swapped, and that regularisation (dropout, augmentation) is off when "
                     "measuring training error")
    if mismatch is not None and mismatch < -tolerance:
        notes.append("dev error is below train-dev error: the dev data is easier than the "
                     "training distribution")
    return Diagnosis(regime=regime, train_error=train, dev_error=dev, human_error=human,
                     train_dev_error=train_dev, avoidable_bias=bias, variance=variance,
                     data_mismatch=mismatch, tolerance=tolerance, problems=problems,
                     remedies=remedies, notes=tuple(notes))

