"""Scratch vs pretrained: the experiment loop, its statistics, plot and pretraining cache.

Fast: a fake trainer exercises the loop; real PyTorch runs use tiny synthetic images.
The real Fashion-MNIST science check lives in test_science.py.
"""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from scipy import stats  # noqa: E402

from course_utils.data import ImageData  # noqa: E402
from course_utils.experiments import (load_pretrained_torch, paired_gain,  # noqa: E402
                                      plot_scratch_vs_pretrained, pretrain_cache_path,
                                      pretrain_source, scratch_vs_pretrained, source_target_split,
                                      summarize)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _fake_data(n_classes=4, per_class=20, test_per_class=5, side=12, seed=0):
    """Class k = a bright square at position k on noise: learnable by a CNN in a few steps."""
    rng = np.random.default_rng(seed)

    def make(n):
        y = np.repeat(np.arange(n_classes), n).astype(np.int64)
        x = rng.integers(0, 60, size=(len(y), side, side)).astype(np.uint8)
        for i, k in enumerate(y):
            r, c = divmod(int(k), 2)
            x[i, 6 * r:6 * r + 5, 6 * c:6 * c + 5] = 250
        return x, y

    xtr, ytr = make(per_class)
    xte, yte = make(test_per_class)
    return ImageData("fake", xtr, ytr, xte, yte, tuple(f"c{k}" for k in range(n_classes)))


class FakeTrainer:
    """Records calls; the 'accuracy' is a known function of init, size and seed."""

    def __init__(self):
        self.calls = []

    def __call__(self, model, data, seed, **kw):
        self.calls.append((model, data, seed, kw))
        n = len(data.y_train)
        bonus = 0.2 if model["init"] == "pretrained" else 0.0
        return {"test_acc": 0.5 + bonus + 0.001 * n + 0.01 * seed, "custom": 1.0}


def _fake_factory(seed):
    return {"init": "scratch", "seed": seed}


def _fake_load(model, state):
    return dict(model, init="pretrained", state=state)


def test_table_is_tidy_and_paired():
    data = _fake_data()
    tr = FakeTrainer()
    df = scratch_vs_pretrained(_fake_factory, "STATE", data, sizes=[5, 2], seeds=(0, 1, 2),
                               trainer=tr, load_state=_fake_load, finetune_kwargs={"lr": 1e-4},
                               progress=False, lr=1e-3)
    assert list(df.columns[:9]) == ["init", "size", "seed", "n_train", "test_acc", "test_loss",
                                    "train_acc", "train_loss", "seconds"]
    assert "custom" in df.columns
    assert len(df) == 2 * 3 * 2
    assert sorted(df["size"].unique()) == [2, 5]
    assert (df["n_train"] == df["size"] * 4).all()
    assert df["test_loss"].isna().all()  # the trainer did not report it
    # both inits of a (size, seed) train on the same images; other seeds draw other images
    by = {(m["init"], len(d.y_train), s): d.x_train for m, d, s, _ in tr.calls}
    np.testing.assert_array_equal(by[("scratch", 8, 1)], by[("pretrained", 8, 1)])
    assert not np.array_equal(by[("scratch", 8, 0)], by[("scratch", 8, 1)])
    # finetune_kwargs reach only the pretrained runs
    for m, _, _, kw in tr.calls:
        assert kw["lr"] == (1e-4 if m["init"] == "pretrained" else 1e-3)
        if m["init"] == "pretrained":
            assert m["state"] == "STATE"
    # the test split is passed untouched
    assert all(len(d.y_test) == 20 for _, d, _, _ in tr.calls)


def test_summary_uses_t_intervals_and_paired_gain():
    rows = [{"init": i, "size": 10, "seed": s, "test_acc": a}
            for i, accs in (("scratch", [0.5, 0.6, 0.7]), ("pretrained", [0.8, 0.8, 0.95]))
            for s, a in enumerate(accs)]
    df = pd.DataFrame(rows)
    s = summarize(df)
    assert s["init"].tolist() == ["scratch", "pretrained"]
    sc = s.iloc[0]
    half = stats.t.ppf(0.975, 2) * 0.1 / np.sqrt(3)  # sd of 0.5, 0.6, 0.7 is 0.1
    assert sc["mean"] == pytest.approx(0.6) and sc["std"] == pytest.approx(0.1)
    assert sc["ci_low"] == pytest.approx(0.6 - half) and sc["ci_high"] == pytest.approx(0.6 + half)
    g = paired_gain(df)
    assert g["gain"].iloc[0] == pytest.approx(np.mean([0.3, 0.2, 0.25]))
    one = summarize(df[df["seed"] == 0])
    assert one["ci_low"].isna().all()  # one seed: no interval, not a zero-width one
    with pytest.raises(KeyError, match="not a column"):
        summarize(df, metric="val_acc")


def test_plot_has_bands_and_lines():
    tr = FakeTrainer()
    df = scratch_vs_pretrained(_fake_factory, "S", _fake_data(), [2, 5], seeds=(0, 1), trainer=tr,
                               load_state=_fake_load, progress=False)
    ax = plot_scratch_vs_pretrained(df)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "scratch (mean of 2 seeds)" in labels and "pretrained 95% CI" in labels
    assert len(ax.collections) == 2  # one band per init
    means = ax.lines[0].get_ydata()
    np.testing.assert_allclose(means, df[df.init == "scratch"].groupby("size").test_acc.mean())
    assert ax.get_xscale() == "log"


@pytest.mark.parametrize("kwargs, match", [
    ({"sizes": [0]}, "images per class"),
    ({"sizes": [3], "seeds": (1, 1)}, "distinct"),
    ({"sizes": [3], "inits": ("imagenet",)}, "choose from"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        scratch_vs_pretrained(_fake_factory, "S", _fake_data(), trainer=FakeTrainer(),
                              load_state=_fake_load, progress=False, **kwargs)


def test_pretrained_needs_state_and_trainer_must_report_accuracy():
    with pytest.raises(ValueError, match="pretrain_state=None"):
        scratch_vs_pretrained(_fake_factory, None, _fake_data(), [2], trainer=FakeTrainer(),
                              progress=False)
    with pytest.raises(TypeError, match="test_acc"):
        scratch_vs_pretrained(_fake_factory, "S", _fake_data(), [2], trainer=lambda *a, **k: 0.5,
                              load_state=_fake_load, progress=False)


def test_source_target_split_relabels():
    data = _fake_data(n_classes=4)
    src, tgt = source_target_split(data, (0, 1), (2, 3))
    assert src.classes == ("c0", "c1") and tgt.classes == ("c2", "c3")
    assert set(np.unique(tgt.y_train)) == {0, 1} and set(np.unique(tgt.y_test)) == {0, 1}
    np.testing.assert_array_equal(tgt.x_train, data.x_train[data.y_train >= 2])
    with pytest.raises(ValueError, match="share"):
        source_target_split(data, (0, 1), (1, 2))


def test_pretrain_source_caches_atomically_and_keys_on_arguments(tmp_path, monkeypatch):
    import torch

    data = _fake_data(n_classes=4, per_class=8)
    kw = dict(data=data, epochs=1, seed=0, batch_size=8, source_classes=(0, 1),
              cache_dir=tmp_path, progress=False)
    state, meta = pretrain_source("small_cnn", return_meta=True, **kw)
    files = list(tmp_path.iterdir())
    assert len(files) == 1 and files[0].suffix == ".pt"  # no temp file left behind
    assert meta["n_train"] == 16 and 0.0 <= meta["source_test_acc"] <= 1.0
    assert state["classifier.weight"].shape == (2, 256)

    # second call: read from disk, training is not run again
    import course_utils.train as train_mod

    monkeypatch.setattr(train_mod, "fit", lambda *a, **k: pytest.fail("retrained despite cache"))
    again = pretrain_source("small_cnn", **kw)
    assert again.keys() == state.keys()
    assert all(torch.equal(again[k], state[k]) for k in state)
    monkeypatch.undo()

    # another seed is another cache entry
    other = pretrain_source("small_cnn", **dict(kw, seed=1))
    assert len(list(tmp_path.iterdir())) == 2
    assert not torch.equal(other["stem.conv.weight"], state["stem.conv.weight"])
    # a corrupt cache file is rebuilt, not fatal
    files[0].write_bytes(b"not a checkpoint")
    rebuilt = pretrain_source("small_cnn", **kw)
    assert all(torch.equal(rebuilt[k], state[k]) for k in state)  # same seed, same weights (CPU)
    key_path = pretrain_cache_path({"model": "small_cnn", "x": 1}, tmp_path)
    assert key_path.parent == tmp_path and key_path.name.startswith("small_cnn-")

    # the schedule changes the weights, so it is part of the key; n_test only the score
    seen = {}
    real_fit = train_mod.fit

    def spy(*a, **k):
        seen["scheduler"] = k.get("scheduler")
        return real_fit(*a, **k)

    monkeypatch.setattr(train_mod, "fit", spy)
    _, cmeta = pretrain_source("small_cnn", return_meta=True, scheduler="cosine", n_test=3,
                                    **kw)
    assert seen["scheduler"] == "cosine" and cmeta["scheduler"] == "cosine"
    assert len(list(tmp_path.glob("*.pt"))) == 3
    with pytest.raises(ValueError, match="scheduler"):
        pretrain_source("small_cnn", scheduler="step", **kw)


def test_torch_trainer_passes_the_schedule_to_fit(monkeypatch):
    import course_utils.train as train_mod
    from course_utils.experiments import torch_trainer

    seen = []
    real_fit = train_mod.fit

    def spy(*a, **k):
        history = real_fit(*a, **k)
        seen.append((k.get("scheduler"), history["lr"]))
        return history

    monkeypatch.setattr(train_mod, "fit", spy)
    data = _fake_data(n_classes=2, per_class=4)
    out = torch_trainer(_model(2), data, 0, epochs=2, lr=1e-3, batch_size=4, scheduler="cosine")
    assert 0 <= out["test_acc"] <= 1
    assert seen[0][0] == "cosine" and seen[0][1] == pytest.approx([1e-3, 5e-4])
    torch_trainer(_model(2), data, 0, epochs=2, lr=1e-3, batch_size=4)
    assert seen[1][0] is None and seen[1][1] == pytest.approx([1e-3, 1e-3])


def test_torch_defaults_end_to_end(tmp_path):
    import torch

    data = _fake_data(n_classes=4, per_class=10)
    src, tgt = source_target_split(data, (0, 1), (2, 3))
    state = pretrain_source("small_cnn", data, epochs=1, batch_size=8, source_classes=(0, 1),
                            cache_dir=tmp_path, progress=False)
    model = load_pretrained_torch(_model(2), state, num_classes=2)
    # the backbone is the pretrained one, the classifier is new
    assert torch.equal(model.stem.conv.weight, state["stem.conv.weight"])
    assert not torch.equal(model.classifier.weight, state["classifier.weight"])
    df = scratch_vs_pretrained("small_cnn", state, tgt, [3], seeds=(0,), epochs=1, batch_size=4,
                               progress=False)
    assert df["init"].tolist() == ["scratch", "pretrained"]
    assert df[["test_acc", "test_loss", "train_acc", "train_loss"]].notna().all().all()
    assert df["test_acc"].between(0, 1).all()
    df2 = scratch_vs_pretrained("small_cnn", state, tgt, [3], seeds=(0,), epochs=1, batch_size=4,
                                progress=False)
    pd.testing.assert_frame_equal(df.drop(columns="seconds"), df2.drop(columns="seconds"))


def test_finetune_vs_scratch_passes_every_pretrain_argument_and_the_trainer(tmp_path):
    from course_utils.experiments import finetune_vs_scratch, pretrain_cache_path, pretrain_key, \
        source_task

    from course_utils.experiments import torch_trainer

    data = _fake_data(n_classes=4, per_class=10)
    calls = []

    def trainer(model, part, seed, **kw):
        calls.append(seed)
        return torch_trainer(model, part, seed, epochs=1, batch_size=4, **kw)

    df = finetune_vs_scratch("small_cnn", data, sizes=(3,), seeds=(0, 1), pretrain_epochs=1,
                             pretrain_per_class=6, pretrain_seed=2, pretrain_batch_size=4,
                             pretrain_lr=3e-3, pretrain_n_test=4, source_classes=(0, 1),
                             target_classes=(2, 3), cache_dir=tmp_path, trainer=trainer,
                             progress=False)
    assert len(df) == 4 and sorted(calls) == [0, 0, 1, 1]
    # the one pretraining it ran is the one these arguments key
    key = pretrain_key("small_cnn", source_task(data, (0, 1), 6, 2), epochs=1, seed=2,
                       per_class=6, batch_size=4, lr=3e-3)
    assert [p.name for p in tmp_path.iterdir()] == [pretrain_cache_path(key, tmp_path).name]


def _model(num_classes):
    from course_utils.models import create_model

    return create_model("small_cnn", num_classes=num_classes)


# ------------------------------------------------------------- fair comparison (issue 13 item 5)

class DisagreeingTrainer:
    """Validation and test disagree on purpose: on validation the best rate is the largest
    of the scratch grid and the smallest of the pretrained grid; on the test images it is
    the other way round. A rate chosen by the test set would show."""

    def __init__(self):
        self.calls = []

    def __call__(self, model, data, seed, *, lr, validation=None, **kw):
        self.calls.append((model["init"], len(data.y_train), seed, lr, validation))
        up = lr if model["init"] == "scratch" else -lr   # what validation rewards
        return {"test_acc": 0.5 - 10 * up, "val_acc": 0.5 + 10 * up, "val_loss": 1.0}


def test_fair_comparison_chooses_each_arms_rate_on_validation_not_on_the_test_set():
    from course_utils.experiments import fair_comparison

    data = _fake_data()
    pool, val = data.train_val_split(0.25, 0)
    tr = DisagreeingTrainer()
    grid = {"scratch": [1e-3, 1e-2], "pretrained": [1e-4, 1e-3]}
    res = fair_comparison(_fake_factory, "STATE", pool, [2, 3], seeds=(0, 1, 2), validation=val,
                          lr_grid=grid, trainer=tr, load_state=_fake_load, progress=False)
    # validation picks: scratch its largest rate, pretrained its smallest (test would pick the others)
    assert res.rates() == {"scratch": {2: 1e-2, 3: 1e-2}, "pretrained": {2: 1e-4, 3: 1e-4}}
    assert set(res.table.loc[res.table.init == "scratch", "lr"]) == {1e-2}
    # both choices sit at an end of their grid, and the result says which
    edges = {r.init: r.grid_edge for r in res.chosen.itertuples()}
    assert edges == {"scratch": "highest", "pretrained": "lowest"}
    assert set(res.table.loc[res.table.init == "pretrained", "lr"]) == {1e-4}
    # the search holds no test score, and every trainer call got the validation split
    assert not [c for c in res.search.columns if c.startswith("test")]
    assert all(v is val for *_, v in tr.calls)
    # the search ran every rate on the first seed only; then each seed once at the chosen rate,
    # reusing the search runs at that rate (no run twice)
    search_calls = [c for c in tr.calls if c[2] == 0]
    assert len(search_calls) == 2 * 2 * 2
    assert len(tr.calls) == len(set(c[:4] for c in tr.calls)) == 8 + 2 * 2 * 2
    assert len(res.table) == 2 * 3 * 2
    # the validation images are not among any training subset
    val_rows = {r.tobytes() for r in val.x_train}
    assert not any(r.tobytes() in val_rows for _, d, *_ in [(0, pool.per_class(3, s)) for s in (0, 1, 2)]
                   for r in d.x_train)


def test_fair_comparison_search_kwargs_apply_to_the_search_runs_only():
    """05 records per-epoch test curves at one size: the rate search must not pay for them
    (nor see test scores), so ``search_kwargs={"curve": False}`` turns them off there, and
    then every seed runs at its chosen rate with the curve (no search run is reused)."""
    from course_utils.experiments import fair_comparison

    class KwargsTrainer(DisagreeingTrainer):
        def __call__(self, model, data, seed, *, lr, validation=None, curve=False, **kw):
            out = super().__call__(model, data, seed, lr=lr, validation=validation)
            self.calls[-1] = self.calls[-1][:4] + (curve,)
            return dict(out, test_acc_curve=[0.2, 0.5]) if curve else out

    pool, val = _fake_data().train_val_split(0.25, 0)
    grid = {"scratch": [1e-3, 1e-2], "pretrained": [1e-4, 1e-3]}
    tr = KwargsTrainer()
    res = fair_comparison(_fake_factory, "STATE", pool, [2], seeds=(0, 1), validation=val,
                          lr_grid=grid, trainer=tr, load_state=_fake_load, progress=False,
                          curve=True, search_kwargs={"curve": False})
    search = [c for c in tr.calls if c[4] is False]
    main = [c for c in tr.calls if c[4] is True]
    assert len(search) == 4 and {c[2] for c in search} == {0}      # every rate, first seed
    assert len(main) == 2 * 2 and {c[3] for c in main} == {1e-2, 1e-4}   # chosen rates, all seeds
    assert res.table.test_acc_curve.map(len).eq(2).all()
    assert res.rates() == {"scratch": {2: 1e-2}, "pretrained": {2: 1e-4}}
    with pytest.raises(ValueError, match="search_kwargs must not set lr"):
        fair_comparison(_fake_factory, "S", pool, [2], validation=val, trainer=tr,
                        load_state=_fake_load, progress=False, search_kwargs={"lr": 1e-3})


def test_fair_comparison_refuses_without_validation_or_with_a_fixed_rate():
    from course_utils.experiments import fair_comparison

    data = _fake_data()
    with pytest.raises(ValueError, match="validation"):
        fair_comparison(_fake_factory, "S", data, [2], validation=None, trainer=DisagreeingTrainer(),
                        load_state=_fake_load, progress=False)
    with pytest.raises(ValueError, match="do not pass lr"):
        fair_comparison(_fake_factory, "S", data, [2], validation=data, lr=1e-3,
                        trainer=DisagreeingTrainer(), load_state=_fake_load, progress=False)


def test_grid_edge_names_the_end_of_the_grid_a_rate_sits_on():
    from course_utils.experiments import grid_edge

    assert grid_edge(3e-3, [1e-3, 3e-3, 1e-2]) == ""
    assert grid_edge(1e-2, [1e-2, 1e-3, 3e-3]) == "highest"   # order of the grid does not matter
    assert grid_edge(1e-3, (1e-3, 1e-2)) == "lowest"
    assert grid_edge(1e-3, [1e-3]) == ""                      # one rate: nothing was chosen


def test_best_learning_rates_averages_seeds_and_breaks_ties_to_the_smaller_rate():
    from course_utils.experiments import best_learning_rates

    search = pd.DataFrame({"init": ["scratch"] * 4, "size": [1] * 4, "seed": [0, 1, 0, 1],
                           "lr": [1e-3, 1e-3, 1e-2, 1e-2], "val_acc": [0.9, 0.1, 0.5, 0.5]})
    assert best_learning_rates(search).lr.tolist() == [1e-3]   # 0.5 vs 0.5: the smaller
    search.loc[3, "val_acc"] = 0.6
    assert best_learning_rates(search).lr.tolist() == [1e-2]


def test_lr_per_arm_and_size_reaches_the_trainer():
    tr = DisagreeingTrainer()
    df = scratch_vs_pretrained(_fake_factory, "S", _fake_data(), [1, 2], seeds=(0,), trainer=tr,
                               load_state=_fake_load, progress=False,
                               lr={"scratch": {1: 0.1, 2: 0.2}, "pretrained": 0.01})
    got = {(i, n // 4, lr) for i, n, _, lr, _ in tr.calls}
    assert got == {("scratch", 1, 0.1), ("scratch", 2, 0.2), ("pretrained", 1, 0.01),
                   ("pretrained", 2, 0.01)}
    assert sorted(df.lr) == [0.01, 0.01, 0.1, 0.2]


class CountingTrainer:
    def __init__(self):
        self.n = 0

    def __call__(self, model, data, seed, *, lr=1e-3, epochs=1, **kw):
        self.n += 1
        return {"test_acc": 0.5 + lr + 0.01 * seed, "test_acc_curve": [0.2, 0.4, 0.5]}


def _keyed_factory(seed):
    return {"init": "scratch", "seed": seed}


_keyed_factory.cache_key = {"model": "fake"}


def test_runs_are_cached_by_their_full_configuration(tmp_path):
    state = {"w": np.arange(4.0)}
    data = _fake_data()
    tr = CountingTrainer()
    kw = dict(trainer=tr, load_state=_fake_load, progress=False, cache=True, cache_dir=tmp_path)
    first = scratch_vs_pretrained(_keyed_factory, state, data, [2], (0, 1), epochs=1, **kw)
    assert tr.n == 4 and len(list(tmp_path.glob("run-*.json"))) == 4
    again = scratch_vs_pretrained(_keyed_factory, state, data, [2], (0, 1), epochs=1, **kw)
    assert tr.n == 4                                  # every run read back
    pd.testing.assert_frame_equal(first, again)
    assert again.test_acc_curve.iloc[0] == [0.2, 0.4, 0.5]   # lists survive the cache
    scratch_vs_pretrained(_keyed_factory, state, data, [2], (0, 1), epochs=2, **kw)
    assert tr.n == 8                                  # another setting: new runs
    scratch_vs_pretrained(_keyed_factory, {"w": np.arange(4.0) + 1}, data, [2], (0, 1), epochs=1, **kw)
    assert tr.n == 10                                 # other weights: the pretrained runs again
    scratch_vs_pretrained(_fake_factory, state, data, [2], (0, 1), epochs=1, **kw)
    assert tr.n == 14                                 # a factory without cache_key: never cached


def test_epoch_curve_readout_reads_start_slope_and_asymptote():
    from course_utils.experiments import epoch_curve_readout

    table = pd.DataFrame({"init": ["scratch", "scratch", "pretrained"], "size": [3, 3, 3],
                          "test_acc_curve": [[0.2, 0.3, 0.4, 0.5, 0.6], [0.2, 0.3, 0.4, 0.5, 0.8],
                                             [0.2, 0.5, 0.8, 0.8, 0.9]]})
    r = epoch_curve_readout(table, slope_epochs=2)
    assert r.loc["start (epoch 0)"].tolist() == pytest.approx([0.2, 0.2])
    assert r.loc["slope (acc per epoch, epochs 0-2)", "scratch"] == pytest.approx(0.1)
    assert r.loc["slope (acc per epoch, epochs 0-2)", "pretrained"] == pytest.approx(0.3)
    assert r.loc["asymptote (epoch 4)", "scratch"] == pytest.approx(0.7)
    with pytest.raises(ValueError, match="one training-set size"):
        epoch_curve_readout(table.assign(size=[1, 2, 3]))


def test_torch_trainer_scores_validation_and_records_an_epoch_curve():
    from course_utils.experiments import torch_trainer

    data = _fake_data()
    pool, val = data.train_val_split(0.25, 0)
    model = _model(4)
    out = torch_trainer(model, pool, 0, epochs=2, lr=1e-2, validation=val, curve=True)
    assert 0 <= out["val_acc"] <= 1 and len(out["test_acc_curve"]) == 3
    assert out["test_acc_curve"][-1] == pytest.approx(out["test_acc"])


def test_linear_probe_trainer_fits_a_head_on_frozen_features(tmp_path, monkeypatch):
    from course_utils.experiments import linear_probe_trainer

    monkeypatch.setenv("COURSE_DATA", str(tmp_path))   # the feature cache goes there
    data = _fake_data()
    pool, val = data.train_val_split(0.25, 0)
    model = _model(4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = linear_probe_trainer(model, pool, 0, layer="block1", size=28, validation=val)
    assert set(out) == {"test_acc", "val_acc"} and 0 <= out["test_acc"] <= 1
    assert all((before[k] == v).all() for k, v in model.state_dict().items())  # nothing trained
