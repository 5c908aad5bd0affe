"""Checkers for a fair scratch-versus-pretrained comparison (assignment 5).

A comparison of a pretrained start with training from scratch is only worth its number
when it is fair: both arms train on the same stratified images for a seed, each arm gets
the learning rate that suits it, chosen on validation data (never on the test set that
reports the result), and the gain is read per seed, paired, with a confidence interval.
These checkers test that protocol by calling the student's functions on inputs they build
themselves: fake data whose rows carry their own index and which split they come from, a
fake ``fit`` that records what it was trained on, and a fake ``accuracy`` whose validation
and test scores peak at different learning rates. So a chooser that looks at the test set,
or one rate shared by both arms, is caught by what it returns, whatever the code looks
like.
"""
from __future__ import annotations

import math
from collections import Counter
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from course_utils.grading._common import GradingSetupError, checker, fail
from course_utils.grading.basic import as_numpy, check_choice, check_tuple

__all__ = ["check_stratified_subset", "check_lr_chooser", "check_fair_comparison",
           "check_paired_ci", "check_strategy", "STRATEGY_SYNONYMS", "STRATEGIES",
           "reference_subset", "reference_choose_lr"]

#: the three ways of using a pretrained network that assignment 5 asks about
STRATEGIES = ("feature extraction", "fine-tuning", "from scratch")

#: accepted spellings of :data:`STRATEGIES` (matching ignores case, ``-`` and ``_``)
STRATEGY_SYNONYMS = {
    "feature extraction": "feature extraction", "features": "feature extraction",
    "feature extractor": "feature extraction", "fixed feature extractor": "feature extraction",
    "linear probe": "feature extraction", "linear probing": "feature extraction",
    "linear classifier": "feature extraction", "frozen backbone": "feature extraction",
    "fine-tuning": "fine-tuning", "fine tuning": "fine-tuning", "finetuning": "fine-tuning",
    "fine-tune": "fine-tuning", "finetune": "fine-tuning", "full fine-tuning": "fine-tuning",
    "from scratch": "from scratch", "scratch": "from scratch",
    "train from scratch": "from scratch", "training from scratch": "from scratch",
}

ARMS = ("scratch", "pretrained")

# The split a fake row comes from is stored in its second column.
_POOL, _VAL, _TEST = 1.0, 2.0, 3.0
_SPLIT_NAMES = {_POOL: "training pool", _VAL: "validation set", _TEST: "test set"}


# --------------------------------------------------------------------------- references

def reference_subset(y, per_class: int, seed: int) -> np.ndarray:
    """A correct stratified subset (``course_utils.data.stratified_indices``): the test of
    a later part passes it to the student's function, so that a mistake in Part 1 costs
    Part 1 only."""
    from course_utils.data.core import stratified_indices

    return stratified_indices(np.asarray(y), per_class, seed)


def reference_choose_lr(fit: Callable, accuracy: Callable, arm: str, lrs: Sequence[float],
                        train, val, seed: int):
    """A correct learning-rate chooser: one model per rate, trained on ``train``, the one
    with the best accuracy on ``val`` (the first on a tie). Returns ``(lr, model)``."""
    best = None
    for lr in lrs:
        model = fit(arm, train[0], train[1], lr, seed)
        score = accuracy(model, val[0], val[1])
        if best is None or score > best[0]:
            best = (score, lr, model)
    if best is None:
        raise GradingSetupError("reference_choose_lr needs at least one learning rate")
    return best[1], best[2]


# --------------------------------------------------------------------------- fakes

def _fake_split(tag: float, labels: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``[index, tag]`` with ``labels``: every row says where it came from."""
    y = np.asarray(labels, dtype=np.int64)
    x = np.column_stack([np.arange(len(y), dtype=float), np.full(len(y), tag)])
    return x, y


def _rows_of(x, name: str) -> tuple[float, tuple[int, ...]]:
    """(split tag, row indices) of fake data handed to a fake, or AssertionError."""
    arr = as_numpy(x, name)
    if arr.ndim != 2 or arr.shape[1] != 2 or len(arr) == 0:
        raise AssertionError(f"{name} received data of shape {arr.shape}: pass whole rows of the "
                             "x arrays you were given (x[indices]), not something else")
    tags = set(np.unique(arr[:, 1]).tolist())
    if len(tags) > 1 and tags <= set(_SPLIT_NAMES):
        mixed = " and the ".join(_SPLIT_NAMES[t] for t in sorted(tags))
        raise AssertionError(f"{name} received rows of the {mixed} mixed together: keep the splits "
                             "apart (train on the pool's subset, choose on val, report on test)")
    if len(tags) != 1 or not tags <= set(_SPLIT_NAMES):
        raise AssertionError(f"{name} received data that is not rows of one of the arrays passed in "
                             "(was it built from other data, e.g. the notebook's own variables?)")
    return tags.pop(), tuple(int(i) for i in arr[:, 0])


class _FakeModel:
    """What the fake ``fit`` returns: a record of how it was trained."""

    def __init__(self, arm, lr, seed, split, rows):
        self.arm, self.lr, self.seed, self.split, self.rows = arm, lr, seed, split, rows

    def __repr__(self) -> str:
        return f"<model arm={self.arm!r} lr={self.lr!r} seed={self.seed!r}>"


def _float(value: Any, name: str) -> float:
    arr = as_numpy(value, name)
    if arr.size != 1:
        raise AssertionError(f"{name} should be one number, got {value!r:.80}")
    return float(arr.reshape(()))


# --------------------------------------------------------------------------- Part 1

@checker
def check_stratified_subset(subset_fn: Callable, *, name: str = "stratified_subset") -> None:
    """Assert that ``subset_fn(y, per_class, seed)`` returns indices into ``y`` holding
    exactly ``per_class`` examples of every label present (labels need not be 0..k-1 and
    classes may be unequal in size), without repeats, the same for the same seed, different
    for different seeds, and without changing ``y``."""
    rng = np.random.default_rng(12345)
    y = rng.permutation(np.repeat([0, 1, 2, 3], [10, 25, 7, 40]))
    y_gap = rng.permutation(np.repeat([2, 5, 9], [6, 12, 9]))
    for labels, per_class in ((y, 5), (y, 7), (y_gap, 3), (y_gap, 6)):
        kept = labels.copy()
        first = _subset_indices(subset_fn, labels, per_class, 0, name)
        call = f"{name}(y, per_class={per_class}, seed=0)"
        if not np.array_equal(labels, kept):
            raise AssertionError(f"{call} changed y: leave the labels as they are and return indices")
        _check_counts(first, labels, per_class, call)
        again = _subset_indices(subset_fn, labels, per_class, 0, name)
        if sorted(again.tolist()) != sorted(first.tolist()):
            raise AssertionError(f"{call} gave different indices when called twice with the same seed: "
                                 "draw them from np.random.default_rng(seed)")
        draws = {tuple(sorted(_subset_indices(subset_fn, labels, per_class, s, name).tolist()))
                 for s in range(1, 6)}
        draws.add(tuple(sorted(first.tolist())))
        if len(draws) == 1:
            raise AssertionError(f"{name}(y, per_class={per_class}, seed) returned the same indices for "
                                 "seeds 0 to 5: the seed must decide which examples are drawn")
        for s in (1, 2):
            _check_counts(_subset_indices(subset_fn, labels, per_class, s, name), labels, per_class,
                          f"{name}(y, per_class={per_class}, seed={s})")


def _subset_indices(subset_fn, y, per_class, seed, name) -> np.ndarray:
    out = subset_fn(y, per_class, seed)
    if out is None:
        raise AssertionError(f"{name}(...) returned None: did your function forget to return the indices?")
    arr = np.asarray(out)
    if arr.dtype == bool:
        raise AssertionError(f"{name}(...) returned a boolean mask: return the indices (e.g. np.flatnonzero(mask))")
    if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
        raise AssertionError(f"{name}(...) should return a 1-D array of integer indices into y, got "
                             f"{type(out).__name__} with shape {arr.shape} and dtype {arr.dtype}")
    return arr


def _check_counts(idx: np.ndarray, y: np.ndarray, per_class: int, call: str) -> None:
    problems = []
    if idx.size and (idx.min() < 0 or idx.max() >= len(y)):
        problems.append(f"indices must lie in 0..{len(y) - 1}; got values from {idx.min()} to {idx.max()}")
        fail(f"{call} is not a stratified subset:", problems)
    if len(set(idx.tolist())) != len(idx):
        problems.append("some examples appear twice: draw without replacement")
    counts = Counter(y[idx].tolist())
    for label in np.unique(y).tolist():
        if counts.get(label, 0) != per_class:
            problems.append(f"class {label}: {counts.get(label, 0)} examples, expected {per_class}")
    fail(f"{call} is not a stratified subset (every class exactly per_class times):", problems)


# --------------------------------------------------------------------------- Part 2

@checker
def check_lr_chooser(choose_fn: Callable, *, name: str = "choose_lr") -> None:
    """Assert that ``choose_fn(fit, accuracy, arm, lrs, train, val, seed)`` trains one model
    per rate in ``lrs`` on ``train`` (with ``arm`` and ``seed``), scores each on ``val``
    only, and returns ``(best_lr, model)``: the rate with the highest validation accuracy
    and the model trained with it. The fake training accuracy keeps rising with the rate,
    so choosing on the training data (or on anything but ``val``) gives another rate."""
    train = _fake_split(_POOL, [0, 1, 2] * 4)
    val = _fake_split(_VAL, [0, 1, 2] * 2)
    cases = [
        # arm, seed, lrs (in the order given), validation accuracy per lr
        ("scratch", 0, [1e-4, 1e-3, 1e-2], {1e-4: 0.50, 1e-3: 0.70, 1e-2: 0.55}),
        ("pretrained", 3, [3e-2, 3e-4, 3e-3], {3e-2: 0.30, 3e-4: 0.40, 3e-3: 0.65}),
        ("pretrained", 7, [1e-2, 1e-3, 1e-4, 1e-5], {1e-2: 0.2, 1e-3: 0.4, 1e-4: 0.8, 1e-5: 0.6}),
    ]
    for case_arm, case_seed, lrs, val_acc in cases:
        fits: list[_FakeModel] = []
        train_acc = {lr: 0.5 + 0.1 * r for r, lr in enumerate(sorted(lrs))}  # rises with lr

        def fit(arm, x, y, lr, seed):  # the parameter names of the notebook's fit
            split, rows = _rows_of(x, f"{name}'s call of fit")
            if split != _POOL:
                raise AssertionError(f"{name} trained a model on the {_SPLIT_NAMES[split]}: train on "
                                     "`train` only, and use `val` only to score")
            if not np.array_equal(np.asarray(y), train[1][list(rows)]):
                raise AssertionError(f"{name} passed labels to fit that do not belong to the training "
                                     "images: pass train[0] and train[1] together")
            if lr not in val_acc:
                raise AssertionError(f"{name} trained with lr={lr!r}, which is not in lrs={lrs}")
            model = _FakeModel(arm, lr, seed, split, rows)
            fits.append(model)
            return model

        def accuracy(model, x, y):
            split, _ = _rows_of(x, f"{name}'s call of accuracy")
            if not isinstance(model, _FakeModel):
                raise AssertionError(f"{name} passed {type(model).__name__} to accuracy: pass the model "
                                     "that fit returned")
            if split == _VAL:
                return val_acc[model.lr]
            if split == _POOL:
                return train_acc[model.lr]
            raise AssertionError(f"{name} scored a model on the {_SPLIT_NAMES[split]}")

        arm, seed = case_arm, case_seed
        call = f"{name}(fit, accuracy, {arm!r}, lrs={lrs}, train, val, seed={seed})"
        out = check_tuple(choose_fn(fit, accuracy, arm, list(lrs), train, val, seed), 2, name=call,
                          names=("best_lr", "model"))
        problems = []
        tried = {m.lr for m in fits}
        if tried != set(lrs):
            problems.append(f"it trained with the rates {sorted(tried)}; every rate in lrs must be tried")
        wrong = sorted({(m.arm, m.seed) for m in fits if (m.arm, m.seed) != (arm, seed)}, key=str)
        if wrong:
            problems.append(f"fit was called with (arm, seed) = {wrong[0]!r}, expected ({arm!r}, {seed}): "
                            "pass arm and seed through to fit")
        fail(f"{call}:", problems)
        best_lr, model = out
        want = max(lrs, key=lambda lr: val_acc[lr])
        got = _float(best_lr, f"{call}[0] (best_lr)")
        if not math.isclose(got, want, rel_tol=1e-9):
            by_train = max(lrs, key=lambda lr: train_acc[lr])
            what = (", the rate with the best *training* accuracy"
                    if math.isclose(got, by_train, rel_tol=1e-9) else "")
            raise AssertionError(f"{call} chose lr={got:g}{what}; it should return the rate whose model "
                                 "scores best on `val`")
        if not (isinstance(model, _FakeModel) and math.isclose(model.lr, want, rel_tol=1e-9)
                and (model.arm, model.seed, model.split) == (arm, seed, _POOL)):
            raise AssertionError(f"{call} returned {model!r} as the model: return the model trained with "
                                 "the chosen rate (the one fit returned for it)")


# --------------------------------------------------------------------------- Part 3

# Validation accuracy peaks at one rate, test accuracy at another, differently per arm, and
# for the pretrained arm differently per seed.
_GRID = (1e-4, 1e-3, 1e-2)
_CMP_SEEDS = (3, 7, 11)
_VAL_ACC = {
    "scratch": {s: {1e-4: 0.30, 1e-3: 0.40, 1e-2: 0.60} for s in _CMP_SEEDS},
    "pretrained": {3: {1e-4: 0.50, 1e-3: 0.70, 1e-2: 0.45},
                   7: {1e-4: 0.72, 1e-3: 0.66, 1e-2: 0.40},
                   11: {1e-4: 0.55, 1e-3: 0.75, 1e-2: 0.50}},
}
_TEST_ACC = {
    "scratch": {1e-4: 0.35, 1e-3: 0.62, 1e-2: 0.48},
    "pretrained": {1e-4: 0.80, 1e-3: 0.64, 1e-2: 0.58},
}


def _test_score(arm: str, lr: float, seed: int) -> float:
    return _TEST_ACC[arm][lr] + 0.001 * seed


@checker
def check_fair_comparison(compare_fn: Callable, *, name: str = "compare_arms") -> None:
    """Assert that ``compare_fn(fit, accuracy, pool, val, test, per_class, seeds, lrs,
    subset=..., choose=...)`` runs the fair protocol, on a fake task whose validation and
    test scores disagree.

    It must return ``{arm: {"lr": [...], "test_acc": [...]}}`` for both arms, one entry per
    seed in order, where for every seed both arms train only on the same stratified subset
    of ``pool`` (``per_class`` per class; other seeds, other images), each arm's rate is the
    one its models score best with on ``val`` (so the two arms may differ), and ``test_acc``
    is the test accuracy of the model trained with that rate. The test passes correct
    ``subset`` and ``choose`` functions (:func:`reference_subset`,
    :func:`reference_choose_lr`), so a mistake in an earlier part does not count here.
    """
    rng = np.random.default_rng(7)
    pool = _fake_split(_POOL, rng.permutation(np.repeat([0, 1, 2], [20, 15, 10])))
    val = _fake_split(_VAL, [0, 1, 2] * 3)
    test = _fake_split(_TEST, [0, 1, 2] * 4)
    per_class, seeds, lrs = 2, list(_CMP_SEEDS), list(_GRID)
    fits: list[_FakeModel] = []

    def fit(arm, x, y, lr, seed):
        split, rows = _rows_of(x, f"{name}'s call of fit")
        if split != _POOL:
            raise AssertionError(f"{name} trained a model on the {_SPLIT_NAMES[split]}: train only on "
                                 "subsets of `pool`")
        if arm not in ARMS:
            raise AssertionError(f"{name} called fit with arm={arm!r}; the arms are {ARMS}")
        if seed not in seeds:
            raise AssertionError(f"{name} called fit with seed={seed!r}, which is not one of seeds={seeds}")
        if not np.array_equal(np.asarray(y), pool[1][list(rows)]):
            raise AssertionError(f"{name} passed labels to fit that do not belong to its images: index "
                                 "x and y of the pool with the same indices")
        if lr not in lrs:
            raise AssertionError(f"{name} trained with lr={lr!r}, which is not in lrs={lrs}")
        model = _FakeModel(arm, lr, seed, split, rows)
        fits.append(model)
        return model

    def accuracy(model, x, y):
        split, _ = _rows_of(x, f"{name}'s call of accuracy")
        if not isinstance(model, _FakeModel):
            raise AssertionError(f"{name} passed {type(model).__name__} to accuracy: pass a model that "
                                 "fit returned")
        if split == _VAL:
            return _VAL_ACC[model.arm][model.seed][model.lr]
        if split == _TEST:
            return _test_score(model.arm, model.lr, model.seed)
        return 1.0  # training accuracy: a few images are always fitted

    out = compare_fn(fit, accuracy, pool, val, test, per_class, seeds, lrs,
                     subset=reference_subset, choose=reference_choose_lr)
    call = f"{name}(fit, accuracy, pool, val, test, per_class={per_class}, seeds={seeds}, lrs={lrs})"
    table = _result_table(out, call, len(seeds))

    # the same stratified images for both arms of a seed, other images for other seeds
    problems: list[str] = []
    subsets: dict[int, set] = {}
    for s in seeds:
        for arm in ARMS:
            rows = {m.rows for m in fits if m.seed == s and m.arm == arm}
            if not rows:
                problems.append(f"seed {s}: fit was never called for the {arm} arm")
            elif len(rows) > 1:
                problems.append(f"seed {s}: the {arm} models were trained on different images for "
                                "different rates; draw the subset once per seed")
            else:
                subsets.setdefault(s, set()).add(frozenset(next(iter(rows))))
        if len(subsets.get(s, ())) > 1:
            problems.append(f"seed {s}: the scratch and pretrained arms trained on different images; "
                            "both arms of a seed must see the same subset (a paired comparison)")
    fail(f"{call} does not train both arms on the same images:", problems)
    subset_of = {s: next(iter(rows)) for s, rows in subsets.items()}
    for s, rows in subset_of.items():
        _check_counts(np.array(sorted(rows)), pool[1], per_class, f"{name}'s training subset for seed {s}")
    if len(set(subset_of.values())) == 1 and len(seeds) > 1:
        raise AssertionError(f"{call} trained every seed on the same images: draw the subset with the seed")

    # each arm's own rate, chosen on validation data, and the test score of that model
    for arm in ARMS:
        want = [max(lrs, key=lambda lr: _VAL_ACC[arm][s][lr]) for s in seeds]
        got = table[arm]["lr"]
        if not all(math.isclose(g, w, rel_tol=1e-9) for g, w in zip(got, want)):
            by_test = [max(lrs, key=lambda lr: _test_score(arm, lr, s)) for s in seeds]
            other = ARMS[1 - ARMS.index(arm)]
            if all(math.isclose(g, w, rel_tol=1e-9) for g, w in zip(got, by_test)):
                hint = " These are the rates that score best on the TEST set: choose on `val`."
            elif all(math.isclose(g, o, rel_tol=1e-9) for g, o in zip(got, table[other]["lr"])):
                hint = " Both arms got the same rates: each arm needs its own choice on `val`."
            else:
                hint = ""
            raise AssertionError(f"{call}: the {arm} arm's rates per seed are {got}, which are not the "
                                 f"rates its models score best with on the validation set.{hint}")
        want_acc = [_test_score(arm, lr, s) for lr, s in zip(want, seeds)]
        if not np.allclose(table[arm]["test_acc"], want_acc, rtol=0, atol=1e-9):
            raise AssertionError(f"{call}: the {arm} arm's test_acc per seed is {table[arm]['test_acc']}; "
                                 "it should be the accuracy on `test` of the model trained with the "
                                 "chosen rate, one value per seed in the order of seeds")


def _result_table(out: Any, call: str, n: int) -> dict:
    if not isinstance(out, Mapping):
        raise AssertionError(f"{call} should return a dict {{'scratch': {{'lr': [...], 'test_acc': [...]}}, "
                             f"'pretrained': {{...}}}}, got {type(out).__name__}"
                             + ("; did your function forget to return?" if out is None else ""))
    table = {}
    for arm in ARMS:
        entry = out.get(arm)
        if not isinstance(entry, Mapping) or not {"lr", "test_acc"} <= set(entry):
            raise AssertionError(f"{call}[{arm!r}] should be a dict with the keys 'lr' and 'test_acc', "
                                 f"got {entry!r:.80}")
        table[arm] = {}
        for key in ("lr", "test_acc"):
            arr = as_numpy(entry[key], f"{call}[{arm!r}][{key!r}]").reshape(-1)
            if len(arr) != n:
                raise AssertionError(f"{call}[{arm!r}][{key!r}] has {len(arr)} values, expected one per "
                                     f"seed ({n})")
            table[arm][key] = [float(v) for v in arr]
    return table


# --------------------------------------------------------------------------- Part 4

_CI_CASES = [
    # pretrained, scratch, confidence
    ([0.62, 0.58, 0.71, 0.66, 0.60], [0.50, 0.49, 0.61, 0.52, 0.55], 0.95),
    ([0.40, 0.42, 0.39], [0.45, 0.47, 0.41], 0.95),
    ([0.81, 0.77, 0.79, 0.85, 0.74, 0.80, 0.78, 0.83], [0.70, 0.72, 0.69, 0.75, 0.71, 0.66, 0.74, 0.73], 0.90),
]


def _reference_ci(pretrained, scratch, confidence) -> tuple[float, float, float]:
    """The paired gain and its t interval from ``course_utils.experiments.paired_gain``."""
    import pandas as pd

    from course_utils.experiments import paired_gain

    rows = [{"init": init, "size": 1, "seed": s, "test_acc": float(v)}
            for init, values in (("pretrained", pretrained), ("scratch", scratch))
            for s, v in enumerate(values)]
    g = paired_gain(pd.DataFrame(rows), confidence=confidence).iloc[0]
    return float(g["gain"]), float(g["ci_low"]), float(g["ci_high"])


def _variants(pretrained, scratch, confidence) -> dict[str, tuple[float, float, float]]:
    """Common wrong intervals, to say which mistake an answer made."""
    from scipy import stats

    p, s = np.asarray(pretrained, float), np.asarray(scratch, float)
    d = p - s
    n = len(d)
    q = 0.5 + confidence / 2
    mean = d.mean()
    out = {}
    half = stats.norm.ppf(q) * d.std(ddof=1) / math.sqrt(n)
    out["a normal (z) quantile instead of the t quantile with n - 1 degrees of freedom"] = (mean, mean - half, mean + half)
    half = stats.t.ppf(q, n - 1) * d.std(ddof=0) / math.sqrt(n)
    out["the population standard deviation (ddof=0) instead of the sample one (ddof=1)"] = (mean, mean - half, mean + half)
    se = math.sqrt(p.var(ddof=1) / n + s.var(ddof=1) / n)
    half = stats.t.ppf(q, 2 * n - 2) * se
    out["an interval for two independent samples; the seeds pair the runs, so use the per-seed differences"] = (mean, mean - half, mean + half)
    half = stats.t.ppf(q, n - 1) * d.std(ddof=1) / math.sqrt(n)
    out["the sign reversed: the gain is pretrained minus scratch"] = (-mean, -mean - half, -mean + half)
    return out


@checker
def check_paired_ci(ci_fn: Callable, *, name: str = "paired_ci") -> None:
    """Assert that ``ci_fn(pretrained, scratch, confidence)`` returns ``(gain, low, high)``:
    the mean of the per-seed differences pretrained - scratch and its two-sided t interval
    (n - 1 degrees of freedom, sample standard deviation), equal to what
    ``course_utils.experiments.paired_gain`` computes, on several inputs (lists and arrays,
    a negative gain, another confidence level). Known wrong intervals are named."""
    for k, (pre, scr, conf) in enumerate(_CI_CASES):
        args = (np.array(pre), np.array(scr)) if k % 2 else (list(pre), list(scr))
        call = f"{name}({pre}, {scr}, confidence={conf})"
        out = check_tuple(ci_fn(*args, confidence=conf), 3, name=call, names=("gain", "low", "high"))
        got = tuple(_float(v, f"{call}[{i}]") for i, v in enumerate(out))
        want = _reference_ci(pre, scr, conf)
        if np.allclose(got, want, rtol=0, atol=1e-6):
            continue
        for mistake, values in _variants(pre, scr, conf).items():
            if np.allclose(got, values, rtol=0, atol=1e-6):
                raise AssertionError(f"{call} = {_fmt3(got)}: this looks like {mistake}")
        raise AssertionError(f"{call} = {_fmt3(got)}, expected {_fmt3(want)} (the mean of pretrained - "
                             "scratch per seed, and its t interval)")


def _fmt3(values) -> str:
    return "(" + ", ".join(f"{v:.4f}" for v in values) + ")"


# --------------------------------------------------------------------------- Part 5

@checker
def check_strategy(answer: Any, expected: str | Sequence[str] | None, *, name: str = "answer",
                   show_expected: bool = False) -> None:
    """Assert that ``answer`` names the strategy ``expected`` ("feature extraction",
    "fine-tuning" or "from scratch"; a tuple accepts any of several), accepting the
    spellings in :data:`STRATEGY_SYNONYMS`. ``expected=None`` only checks that the answer is
    one of the strategies."""
    accepted = [expected] if expected is None or isinstance(expected, str) else list(expected)
    if not accepted:
        raise GradingSetupError("check_strategy: expected is an empty sequence")
    errors = []
    for want in accepted:
        try:
            check_choice(answer, want, choices=STRATEGY_SYNONYMS, name=name, show_expected=show_expected)
            return
        except AssertionError as exc:
            errors.append(exc)
    if show_expected and len(accepted) > 1:
        raise AssertionError(f"{name} = {answer!r} is not the right choice: expected one of {accepted}")
    raise errors[0]
