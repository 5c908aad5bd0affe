"""Learning curves, capacity curves, the Display and the bias/variance diagnosis."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402

from course_utils.curves import (REGIMES, CapacityCurveResult, LearningCurveDisplay,  # noqa: E402
                                 LearningCurveResult, capacity_curve, diagnose, learning_curve,
                                 nested_stratified_order)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _ids(n=200, k=4):
    """x = example ids (so a trainer can see exactly which rows it got), y = k balanced classes."""
    x = np.arange(n).reshape(-1, 1)
    y = np.arange(n) % k
    return x, y


class Recorder:
    """A train_and_score that records what it was given and returns deterministic errors."""

    def __init__(self):
        self.calls = []

    def __call__(self, x_train, y_train, x_val, y_val, seed):
        self.calls.append((x_train.ravel().copy(), y_train.copy(), x_val.ravel().copy(), seed))
        n = len(x_train)
        return 1.0 / n, 0.1 + 1.0 / n + 0.001 * seed


def test_shapes_sizes_and_frame():
    x, y = _ids()
    rec = Recorder()
    res = learning_curve(rec, x, y, [0.5, 20, 0.25], seeds=(0, 1, 2), progress=False)
    assert isinstance(res, LearningCurveResult)
    assert res.sizes.tolist() == [20, 40, 80]  # pool = 160 after a 20% val split; sorted
    assert res.train_errors.shape == res.val_errors.shape == (3, 3)
    assert len(rec.calls) == 9
    np.testing.assert_allclose(res.train_mean, [1 / 20, 1 / 40, 1 / 80])
    np.testing.assert_allclose(res.val_std, np.full(3, np.std([0, 0.001, 0.002])), atol=1e-12)
    df = res.to_frame()
    assert list(df.columns) == ["size", "seed", "train_error", "val_error"] and len(df) == 9
    s = res.to_frame(summary=True)
    assert s["size"].tolist() == [20, 40, 80] and (s["n_seeds"] == 3).all()


def test_no_leakage_nested_and_stratified():
    x, y = _ids(200, 4)
    rec = Recorder()
    learning_curve(rec, x, y, [8, 40, 160], seeds=(0, 1), progress=False)
    val_ids = set(rec.calls[0][2].tolist())
    assert len(val_ids) == 40
    for tr, ytr, va, seed in rec.calls:
        assert set(va.tolist()) == val_ids, "the validation set must be the same for every run"
        assert not set(tr.tolist()) & val_ids, "a validation example leaked into training"
        assert len(set(tr.tolist())) == len(tr), "duplicate training examples"
        counts = np.bincount(ytr, minlength=4)
        assert counts.max() - counts.min() <= 1, f"subset not stratified: {counts}"
        np.testing.assert_array_equal(ytr, y[tr])  # labels travel with their images
    # nested: for one seed, the size-8 subset is inside the size-40 subset
    by_seed = [c for c in rec.calls if c[3] == 0]
    assert set(by_seed[0][0]) <= set(by_seed[1][0]) <= set(by_seed[2][0])
    # different seeds draw different subsets of the same size
    assert set(rec.calls[0][0]) != set(rec.calls[3][0])


def test_explicit_validation_set_is_passed_through():
    x, y = _ids(100, 2)
    xv, yv = np.arange(1000, 1010).reshape(-1, 1), np.arange(10) % 2
    rec = Recorder()
    res = learning_curve(rec, x, y, [1.0], seeds=(0,), x_val=xv, y_val=yv, progress=False)
    assert res.sizes.tolist() == [100]
    np.testing.assert_array_equal(rec.calls[0][2], xv.ravel())
    with pytest.raises(ValueError, match="x_val and y_val"):
        learning_curve(rec, x, y, [10], x_val=xv, progress=False)


def test_seeds_reproducible_with_a_real_model():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 30))
    y = (x @ rng.normal(size=30) + 2 * rng.normal(size=400) > 0).astype(int)

    def logreg(xt, yt, xv, yv, seed):
        m = LogisticRegression(C=1.0, random_state=seed).fit(xt, yt)
        return 1 - m.score(xt, yt), 1 - m.score(xv, yv)

    a = learning_curve(logreg, x, y, [12, 40, 300], seeds=(0, 1), progress=False)
    b = learning_curve(logreg, x, y, [12, 40, 300], seeds=(0, 1), progress=False)
    np.testing.assert_array_equal(a.val_errors, b.val_errors)
    np.testing.assert_array_equal(a.train_errors, b.train_errors)
    c = learning_curve(logreg, x, y, [12, 40, 300], seeds=(5, 6), progress=False)
    assert not np.array_equal(a.val_errors, c.val_errors)
    # the classic shape: validation error falls with data and ends near training error
    assert a.val_mean[-1] < a.val_mean[0]
    assert a.val_mean[-1] - a.train_mean[-1] < a.val_mean[0] - a.train_mean[0]


def test_nested_order_prefixes_are_stratified():
    y = np.array([0] * 60 + [1] * 30 + [2] * 10)
    order = nested_stratified_order(y, seed=3)
    assert sorted(order.tolist()) == list(range(100))
    for n in (10, 20, 50):
        counts = np.bincount(y[order[:n]], minlength=3)
        np.testing.assert_allclose(counts, np.array([0.6, 0.3, 0.1]) * n, atol=1)


@pytest.mark.parametrize("sizes, err, match", [
    ([0], ValueError, "outside"),
    ([500], ValueError, "outside"),
    ([1.5], ValueError, "fractions"),
    ([10, 10], ValueError, "duplicate"),
    (10, TypeError, "sequence"),
    ([True], TypeError, "ints"),
])
def test_bad_sizes_name_the_value(sizes, err, match):
    x, y = _ids()
    with pytest.raises(err, match=match):
        learning_curve(Recorder(), x, y, sizes, progress=False)


def test_bad_return_value_is_explained():
    x, y = _ids()
    with pytest.raises(TypeError, match=r"\(train_error, val_error\)"):
        learning_curve(lambda *a: 0.3, x, y, [10], progress=False)
    with pytest.raises(ValueError, match="repeats"):
        learning_curve(Recorder(), x, y, [10], seeds=(1, 1), progress=False)


def test_capacity_curve_fixed_subset():
    x, y = _ids(200, 4)
    seen = []

    def score(cap, xt, yt, xv, yv, seed):
        seen.append((cap, frozenset(xt.ravel().tolist())))
        return 0.5 / cap, 0.5 / cap + 0.05 * cap

    res = capacity_curve(score, x, y, [1, 2, 4], seeds=(0, 1), train_size=40, progress=False)
    assert isinstance(res, CapacityCurveResult)
    assert res.capacities.tolist() == [1, 2, 4] and res.val_errors.shape == (3, 2)
    assert len({s for _, s in seen}) == 1 and len(seen[0][1]) == 40
    assert list(res.to_frame().columns[:2]) == ["capacity", "seed"]
    ax = LearningCurveDisplay(res).plot().ax_
    assert ax.get_xlabel() == "model capacity"


def test_display_returns_self_and_overlays():
    x, y = _ids()
    a = learning_curve(Recorder(), x, y, [20, 40, 80], seeds=(0, 1), progress=False, label="PyTorch")
    b = learning_curve(Recorder(), x, y, [20, 40, 80], seeds=(0, 1), progress=False, label="Keras")
    d1 = LearningCurveDisplay(a)
    assert d1.plot(desired=0.05) is d1
    ax = d1.ax_
    assert len(ax.lines) == 3  # train, val, desired
    assert d1.desired_line_.get_ydata()[0] == pytest.approx(0.05)
    d2 = LearningCurveDisplay.from_result(b, ax=ax)
    assert d2.ax_ is ax and len(ax.lines) == 5
    assert len(ax.collections) == 4  # one std band per line
    # one colour per result; training dashed, validation solid
    assert d1.lines_["train"].get_color() == d1.lines_["val"].get_color()
    assert d1.lines_["val"].get_color() != d2.lines_["val"].get_color()
    assert d1.lines_["train"].get_linestyle() == "--" and d1.lines_["val"].get_linestyle() == "-"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "Keras: validation error" in labels and "PyTorch: training error" in labels
    np.testing.assert_allclose(d1.lines_["val"].get_ydata(), a.val_mean)
    with pytest.raises(TypeError, match="LearningCurveResult"):
        LearningCurveDisplay({"sizes": [1]})


# --------------------------------------------------------------------------- diagnose

@pytest.mark.parametrize("train, dev, kw, regime", [
    (0.01, 0.11, {}, "high variance"),                               # Ng: 1% / 11%
    (0.15, 0.16, {}, "high avoidable bias"),                         # 15% / 16%
    (0.15, 0.30, {}, "both"),                                        # 15% / 30%
    (0.005, 0.01, {}, "good fit"),                                   # 0.5% / 1%
    (0.08, 0.10, {"human_error": 0.01}, "high avoidable bias"),      # bias 7 > variance 2
    (0.08, 0.10, {"human_error": 0.075}, "high variance"),           # bias 0.5 < variance 2
    (0.01, 0.10, {"train_dev_error": 0.015}, "data mismatch"),       # mismatch 8.5
    (0.01, 0.10, {"train_dev_error": 0.09}, "high variance"),        # variance 8
    (0.10, 0.25, {"train_dev_error": 0.11}, "data mismatch"),       # bias 10 < mismatch 14
    (0.20, 0.25, {"train_dev_error": 0.21}, "high avoidable bias"),  # bias 20 > mismatch 4
])
def test_diagnose_regimes(train, dev, kw, regime):
    d = diagnose(train, dev, **kw)
    assert d.regime == regime
    assert d.regime in REGIMES


def test_diagnose_numbers_remedies_and_text():
    d = diagnose(0.01, 0.10, human_error=0.005, train_dev_error=0.015)
    assert d.avoidable_bias == pytest.approx(0.005)
    assert d.variance == pytest.approx(0.005)
    assert d.data_mismatch == pytest.approx(0.085)
    assert d.problems == ("data mismatch",)
    assert any("synthesis" in r for r in d.remedies)
    text = str(d)
    assert "data mismatch" in text and "train-dev error" in text and "10.00%" in text

    b = diagnose(0.15, 0.30)
    assert b.problems == ("avoidable bias", "variance") or b.problems == ("variance", "avoidable bias")
    assert any("bigger model" in r for r in b.remedies)
    assert any("more training data" in r for r in b.remedies)
    assert any("early stopping" in r for r in b.remedies)
    assert diagnose(0.005, 0.01).remedies == ()
    # without train-dev, variance is dev - train and there is no mismatch
    v = diagnose(0.02, 0.07, human_error=0.01)
    assert v.variance == pytest.approx(0.05) and v.data_mismatch is None
    assert "train-dev" not in str(v)


def test_diagnose_units_and_errors():
    # percentages work with a tolerance in points
    assert diagnose(1.0, 11.0, tolerance=1.0).regime == "high variance"
    with pytest.raises(ValueError, match="percentages"):
        diagnose(1.0, 11.0)
    with pytest.raises(ValueError, match="dev_error"):
        diagnose(0.1, float("nan"))
    with pytest.raises(ValueError, match="negative"):
        diagnose(-0.1, 0.2)
    # training error below human level is flagged, not silently accepted
    assert any("Bayes" in n for n in diagnose(0.01, 0.015, human_error=0.05).notes)


def test_diagnose_accepts_a_learning_curve_result():
    res = LearningCurveResult(sizes=[10, 100], train_errors=[[0.0, 0.0], [0.02, 0.04]],
                              val_errors=[[0.5, 0.5], [0.20, 0.22]], seeds=(0, 1))
    d = diagnose(res, human_error=0.0)
    assert d.train_error == pytest.approx(0.03) and d.dev_error == pytest.approx(0.21)
    assert d.regime == "high variance"
    with pytest.raises(TypeError, match="leave dev_error out"):
        diagnose(res, 0.2)
