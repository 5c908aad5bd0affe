"""Unit tests of assignment 5's checkers (``course_utils.grading.comparison_checks``): a
correct answer passes, and each typical unfair or wrong answer fails with a message that
names the mistake."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from course_utils.grading import (GradingSetupError, check_fair_comparison, check_lr_chooser,
                                  check_paired_ci, check_strategy, check_stratified_subset)
from course_utils.grading.comparison_checks import reference_choose_lr, reference_subset

ARMS = ("scratch", "pretrained")


# --------------------------------------------------------------------------- correct answers

def stratified_subset(y, per_class, seed):
    rng = np.random.default_rng(seed)
    y = np.asarray(y)
    picked = [rng.choice(np.flatnonzero(y == c), size=per_class, replace=False) for c in np.unique(y)]
    return np.sort(np.concatenate(picked))


def choose_lr(fit, accuracy, arm, lrs, train, val, seed):
    scored = []
    for lr in lrs:
        model = fit(arm, train[0], train[1], lr, seed)
        scored.append((accuracy(model, val[0], val[1]), -len(scored), lr, model))
    _, _, lr, model = max(scored, key=lambda t: t[:2])
    return lr, model


def compare_arms(fit, accuracy, pool, val, test, per_class, seeds, lrs, subset=stratified_subset,
                 choose=choose_lr):
    out = {arm: {"lr": [], "test_acc": []} for arm in ARMS}
    for seed in seeds:
        idx = subset(pool[1], per_class, seed)
        train = (pool[0][idx], pool[1][idx])
        for arm in ARMS:
            lr, model = choose(fit, accuracy, arm, lrs, train, val, seed)
            out[arm]["lr"].append(lr)
            out[arm]["test_acc"].append(accuracy(model, test[0], test[1]))
    return out


def paired_ci(pretrained, scratch, confidence=0.95):
    d = np.asarray(pretrained, float) - np.asarray(scratch, float)
    half = stats.t.ppf(0.5 + confidence / 2, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
    return d.mean(), d.mean() - half, d.mean() + half


def test_answers_that_call_the_functions_with_keywords_pass():
    def choose_kw(fit, accuracy, arm, lrs, train, val, seed):
        models = {lr: fit(arm=arm, x=train[0], y=train[1], lr=lr, seed=seed) for lr in lrs}
        best = max(lrs, key=lambda lr: accuracy(model=models[lr], x=val[0], y=val[1]))
        return best, models[best]

    def compare_kw(fit, accuracy, pool, val, test, per_class, seeds, lrs, subset=None, choose=None):
        out = {arm: {"lr": [], "test_acc": []} for arm in ARMS}
        for seed in seeds:
            idx = subset(y=pool[1], per_class=per_class, seed=seed)
            for arm in ARMS:
                lr, model = choose(fit=fit, accuracy=accuracy, arm=arm, lrs=lrs,
                                   train=(pool[0][idx], pool[1][idx]), val=val, seed=seed)
                out[arm]["lr"].append(lr)
                out[arm]["test_acc"].append(accuracy(model=model, x=test[0], y=test[1]))
        return out

    check_lr_chooser(choose_kw)
    check_fair_comparison(compare_kw)
    check_paired_ci(lambda pretrained, scratch, confidence=0.95: paired_ci(pretrained=pretrained, scratch=scratch,
                                                                           confidence=confidence))


def test_correct_answers_and_the_references_pass():
    check_stratified_subset(stratified_subset)
    check_stratified_subset(reference_subset)
    check_lr_chooser(choose_lr)
    check_lr_chooser(reference_choose_lr)
    check_fair_comparison(compare_arms)
    check_paired_ci(paired_ci)


# --------------------------------------------------------------------------- Part 1

def test_stratified_subset_mistakes_are_named():
    def first_n(y, per_class, seed):
        return np.concatenate([np.flatnonzero(np.asarray(y) == c)[:per_class] for c in np.unique(y)])

    def unseeded(y, per_class, seed):
        return np.concatenate([np.random.choice(np.flatnonzero(np.asarray(y) == c), per_class, replace=False)
                               for c in np.unique(y)])

    def with_replacement(y, per_class, seed):
        rng = np.random.default_rng(seed)
        return np.concatenate([rng.choice(np.flatnonzero(np.asarray(y) == c), per_class) for c in np.unique(y)])

    def not_stratified(y, per_class, seed):
        return np.random.default_rng(seed).choice(len(y), per_class * len(np.unique(y)), replace=False)

    def mask(y, per_class, seed):
        out = np.zeros(len(y), bool)
        out[stratified_subset(y, per_class, seed)] = True
        return out

    def shuffles_y(y, per_class, seed):
        np.random.default_rng(seed).shuffle(y)
        return stratified_subset(y, per_class, seed)

    with pytest.raises(AssertionError, match="returned the same indices for seeds 0 to 5"):
        check_stratified_subset(first_n)
    with pytest.raises(AssertionError, match="different indices when called twice with the same seed"):
        check_stratified_subset(unseeded)
    with pytest.raises(AssertionError, match="appear twice: draw without replacement"):
        check_stratified_subset(with_replacement)
    with pytest.raises(AssertionError, match=r"class \d: \d+ examples, expected 5"):
        check_stratified_subset(not_stratified)
    with pytest.raises(AssertionError, match="returned a boolean mask"):
        check_stratified_subset(mask)
    with pytest.raises(AssertionError, match="changed y"):
        check_stratified_subset(shuffles_y)
    with pytest.raises(AssertionError, match="forget to return the indices"):
        check_stratified_subset(lambda y, n, s: None)


# --------------------------------------------------------------------------- Part 2

def test_lr_chooser_mistakes_are_named():
    def by_training_accuracy(fit, accuracy, arm, lrs, train, val, seed):
        models = {lr: fit(arm, train[0], train[1], lr, seed) for lr in lrs}
        lr = max(lrs, key=lambda r: accuracy(models[r], train[0], train[1]))
        return lr, models[lr]

    def trains_on_val(fit, accuracy, arm, lrs, train, val, seed):
        return choose_lr(fit, accuracy, arm, lrs, val, val, seed)

    def lowest_score(fit, accuracy, arm, lrs, train, val, seed):
        models = {lr: fit(arm, train[0], train[1], lr, seed) for lr in lrs}
        lr = min(lrs, key=lambda r: accuracy(models[r], val[0], val[1]))
        return lr, models[lr]

    def forgets_arm(fit, accuracy, arm, lrs, train, val, seed):
        return choose_lr(fit, accuracy, "scratch", lrs, train, val, seed)

    def returns_lr_only(fit, accuracy, arm, lrs, train, val, seed):
        return choose_lr(fit, accuracy, arm, lrs, train, val, seed)[0]

    def returns_last_model(fit, accuracy, arm, lrs, train, val, seed):
        lr, _ = choose_lr(fit, accuracy, arm, lrs, train, val, seed)
        return lr, fit(arm, train[0], train[1], lrs[-1], seed)

    x_other = np.random.default_rng(0).normal(size=(5, 2))

    def scores_on_other_data(fit, accuracy, arm, lrs, train, val, seed):
        lr, model = choose_lr(fit, accuracy, arm, lrs, train, val, seed)
        accuracy(model, x_other, np.zeros(5))
        return lr, model

    with pytest.raises(AssertionError, match=r"chose lr=0\.01, the rate with the best \*training\* accuracy"):
        check_lr_chooser(by_training_accuracy)
    with pytest.raises(AssertionError, match="trained a model on the validation set"):
        check_lr_chooser(trains_on_val)
    with pytest.raises(AssertionError, match=r"chose lr=0\.0001; it should return the rate whose model scores best on `val`"):
        check_lr_chooser(lowest_score)
    with pytest.raises(AssertionError, match=r"fit was called with \(arm, seed\) = \('scratch', 3\)"):
        check_lr_chooser(forgets_arm)
    with pytest.raises(AssertionError, match=r"should be a tuple \(best_lr, model\), got float"):
        check_lr_chooser(returns_lr_only)
    with pytest.raises(AssertionError, match="return the model trained with the chosen rate"):
        check_lr_chooser(returns_last_model)
    with pytest.raises(AssertionError, match="not rows of one of the arrays passed in"):
        check_lr_chooser(scores_on_other_data)


# --------------------------------------------------------------------------- Part 3

def test_fair_comparison_mistakes_are_named():
    def chooses_on_test(fit, accuracy, pool, val, test, per_class, seeds, lrs, subset=None, choose=None):
        return compare_arms(fit, accuracy, pool, test, test, per_class, seeds, lrs, subset, choose)

    def one_rate_for_both(fit, accuracy, pool, val, test, per_class, seeds, lrs, subset=None, choose=None):
        out = {arm: {"lr": [], "test_acc": []} for arm in ARMS}
        for seed in seeds:
            idx = subset(pool[1], per_class, seed)
            train = (pool[0][idx], pool[1][idx])
            lr, _ = choose(fit, accuracy, "scratch", lrs, train, val, seed)
            for arm in ARMS:
                model = fit(arm, train[0], train[1], lr, seed)
                out[arm]["lr"].append(lr)
                out[arm]["test_acc"].append(accuracy(model, test[0], test[1]))
        return out

    def unpaired(fit, accuracy, pool, val, test, per_class, seeds, lrs, subset=None, choose=None):
        out = {arm: {"lr": [], "test_acc": []} for arm in ARMS}
        for seed in seeds:
            for k, arm in enumerate(ARMS):
                idx = subset(pool[1], per_class, seed + 100 * k)
                lr, model = choose(fit, accuracy, arm, lrs, (pool[0][idx], pool[1][idx]), val, seed)
                out[arm]["lr"].append(lr)
                out[arm]["test_acc"].append(accuracy(model, test[0], test[1]))
        return out

    def one_subset(fit, accuracy, pool, val, test, per_class, seeds, lrs, subset=None, choose=None):
        return compare_arms(fit, accuracy, pool, val, test, per_class, seeds, lrs,
                            lambda y, n, s: subset(y, n, 0), choose)

    def trains_with_val(fit, accuracy, pool, val, test, per_class, seeds, lrs, subset=None, choose=None):
        def with_val(fit_, acc_, arm, lrs_, train, val_, seed):
            both = (np.concatenate([train[0], val_[0]]), np.concatenate([train[1], val_[1]]))
            return choose(fit_, acc_, arm, lrs_, both, val_, seed)
        return compare_arms(fit, accuracy, pool, val, test, per_class, seeds, lrs, subset, with_val)

    def reports_validation(fit, accuracy, pool, val, test, per_class, seeds, lrs, subset=None, choose=None):
        return compare_arms(fit, accuracy, pool, val, val, per_class, seeds, lrs, subset, choose)

    def swapped_arms(fit, accuracy, pool, val, test, per_class, seeds, lrs, subset=None, choose=None):
        out = compare_arms(fit, accuracy, pool, val, test, per_class, seeds, lrs, subset, choose)
        return {"scratch": out["pretrained"], "pretrained": out["scratch"]}

    with pytest.raises(AssertionError, match="These are the rates that score best on the TEST set"):
        check_fair_comparison(chooses_on_test)
    with pytest.raises(AssertionError, match="Both arms got the same rates"):
        check_fair_comparison(one_rate_for_both)
    with pytest.raises(AssertionError, match="the scratch and pretrained arms trained on different images"):
        check_fair_comparison(unpaired)
    with pytest.raises(AssertionError, match="trained every seed on the same images"):
        check_fair_comparison(one_subset)
    with pytest.raises(AssertionError, match="rows of the training pool and the validation set mixed together"):
        check_fair_comparison(trains_with_val)
    with pytest.raises(AssertionError, match="the scratch arm's test_acc per seed is"):
        check_fair_comparison(reports_validation)
    with pytest.raises(AssertionError, match="the scratch arm's rates per seed are"):
        check_fair_comparison(swapped_arms)
    with pytest.raises(AssertionError, match="forget to return"):
        check_fair_comparison(lambda *a, **k: None)


def test_fair_comparison_passes_the_reference_parts_to_the_answer():
    seen = {}

    def spy(fit, accuracy, pool, val, test, per_class, seeds, lrs, subset=None, choose=None):
        seen.update(subset=subset, choose=choose)
        return compare_arms(fit, accuracy, pool, val, test, per_class, seeds, lrs, subset, choose)

    check_fair_comparison(spy)
    assert seen == {"subset": reference_subset, "choose": reference_choose_lr}


# --------------------------------------------------------------------------- Part 4

def test_paired_ci_equals_the_library_and_names_the_usual_mistakes():
    def z_interval(p, s, confidence=0.95):
        d = np.asarray(p) - np.asarray(s)
        half = stats.norm.ppf(0.5 + confidence / 2) * d.std(ddof=1) / np.sqrt(len(d))
        return d.mean(), d.mean() - half, d.mean() + half

    def ddof0(p, s, confidence=0.95):
        d = np.asarray(p) - np.asarray(s)
        half = stats.t.ppf(0.5 + confidence / 2, len(d) - 1) * d.std() / np.sqrt(len(d))
        return d.mean(), d.mean() - half, d.mean() + half

    def unpaired(p, s, confidence=0.95):
        p, s = np.asarray(p), np.asarray(s)
        se = np.sqrt(p.var(ddof=1) / len(p) + s.var(ddof=1) / len(s))
        half = stats.t.ppf(0.5 + confidence / 2, 2 * len(p) - 2) * se
        m = p.mean() - s.mean()
        return m, m - half, m + half

    def reversed_sign(p, s, confidence=0.95):
        return paired_ci(s, p, confidence)

    def ignores_confidence(p, s, confidence=0.95):
        return paired_ci(p, s)

    with pytest.raises(AssertionError, match=r"normal \(z\) quantile"):
        check_paired_ci(z_interval)
    with pytest.raises(AssertionError, match=r"population standard deviation \(ddof=0\)"):
        check_paired_ci(ddof0)
    with pytest.raises(AssertionError, match="two independent samples"):
        check_paired_ci(unpaired)
    with pytest.raises(AssertionError, match="sign reversed"):
        check_paired_ci(reversed_sign)
    with pytest.raises(AssertionError, match=r"confidence=0\.9\) = .*expected"):
        check_paired_ci(ignores_confidence)
    with pytest.raises(AssertionError, match=r"should be a tuple \(gain, low, high\)"):
        check_paired_ci(lambda p, s, confidence=0.95: None)


def test_paired_ci_reference_numbers():
    # pretrained - scratch = [0.12, 0.09, 0.10, 0.14, 0.05]: mean 0.1, sd 0.0339, t(0.975, 4) = 2.776
    from course_utils.grading.comparison_checks import _reference_ci

    gain, lo, hi = _reference_ci([0.62, 0.58, 0.71, 0.66, 0.60], [0.50, 0.49, 0.61, 0.52, 0.55], 0.95)
    assert gain == pytest.approx(0.1)
    assert (lo, hi) == pytest.approx((0.1 - 2.7764451 * 0.0339116 / np.sqrt(5), 0.1 + 2.7764451 * 0.0339116 / np.sqrt(5)),
                                     abs=1e-6)


# --------------------------------------------------------------------------- Part 5

def test_check_strategy_synonyms_and_several_accepted_answers():
    check_strategy("Fine_tuning", "fine-tuning")
    check_strategy("linear probe", "feature extraction")
    check_strategy("train from scratch", ("fine-tuning", "from scratch"))
    check_strategy("finetune", ("fine-tuning", "from scratch"))
    check_strategy("scratch", None)
    with pytest.raises(AssertionError, match="is not the right choice") as info:
        check_strategy("fine-tuning", "feature extraction")
    assert "feature extraction" not in str(info.value)
    with pytest.raises(AssertionError, match=r"expected one of \['fine-tuning', 'from scratch'\]"):
        check_strategy("features", ("fine-tuning", "from scratch"), show_expected=True)
    with pytest.raises(AssertionError, match="is not one of the choices"):
        check_strategy("transfer", None)
    with pytest.raises(GradingSetupError):
        check_strategy("scratch", "distillation")
    with pytest.raises(GradingSetupError):
        check_strategy("scratch", ())
