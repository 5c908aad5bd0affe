"""Keras training the course's way: TFLoader batches, fit with History/checkpoints/resume,
early stopping, evaluate/predict, cached features, learning curves, and the Fashion-MNIST
transfer experiment (fine-tuning beats training from scratch)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

ck = pytest.importorskip("course_utils.keras")
keras, tf = ck.keras, ck.tf

from course_utils.history import EPOCH_KEYS, History  # noqa: E402
from course_utils.keras.training import CourseEarlyStopping  # noqa: E402


@pytest.fixture(scope="module")
def small(fashion):
    """96 training and 64 validation images of all ten classes."""
    return (fashion.x_train[:96], fashion.y_train[:96], fashion.x_test[:64], fashion.y_test[:64])


def _loaders(small, batch_size=32):
    x, y, xv, yv = small
    mean, std = ck.get_spec("small_cnn").mean, ck.get_spec("small_cnn").std
    return (ck.TFLoader(x, y, batch_size, shuffle=True, seed=0, mean=mean, std=std),
            ck.TFLoader(xv, yv, 64, mean=mean, std=std))


# --- TFLoader --------------------------------------------------------------------------------

def test_tfloader_orders_epochs_by_seed_and_preprocesses():
    x = np.arange(10 * 4 * 4, dtype=np.uint8).reshape(10, 4, 4)
    y = np.arange(10)
    loader = ck.TFLoader(x, y, 4, shuffle=True, seed=3, size=8, rgb=True, mean=(0.5,), std=(0.25,))
    assert len(loader) == 3
    order = [np.concatenate([b[1].numpy() for b in loader.dataset(e)]) for e in range(3)]
    assert all(sorted(o) == list(range(10)) for o in order)
    assert not np.array_equal(order[0], order[1])  # reshuffled every epoch
    again = ck.TFLoader(x, y, 4, shuffle=True, seed=3)
    np.testing.assert_array_equal(np.concatenate([b[1].numpy() for b in again.dataset(1)]), order[1])
    # repeat(start) is epoch start, start + 1, ... back to back: what a resumed fit sees
    rep = [b[1].numpy() for b in loader.repeat(1).take(6)]
    np.testing.assert_array_equal(np.concatenate(rep[:3]), order[1])
    np.testing.assert_array_equal(np.concatenate(rep[3:]), order[2])

    xb, _ = next(iter(ck.TFLoader(x, y, 10, size=8, rgb=True, mean=(0.5,), std=(0.25,))))
    assert xb.shape == (10, 8, 8, 3) and xb.dtype == tf.float32
    first = (x[0].astype(np.float32) / 255 - 0.5) / 0.25
    plain, _ = next(iter(ck.TFLoader(x, y, 10, mean=(0.5,), std=(0.25,))))
    np.testing.assert_allclose(plain.numpy()[0, ..., 0], first, atol=1e-6)
    with pytest.raises(ValueError, match="3 images but 2 labels"):
        ck.TFLoader(x[:3], y[:2])
    with pytest.raises(ValueError, match="seed"):
        ck.TFLoader(x, y, shuffle=True, seed=None)


def test_tfloader_and_fastloader_count_and_build_batches_alike(fashion):
    """One EpochBatches behind both: steps per epoch, from_data and set_epoch agree."""
    from course_utils.data import FastLoader

    for bs, drop in ((7, False), (7, True), (64, False)):
        t = ck.TFLoader(fashion.x_test[:100], fashion.y_test[:100], bs, drop_last=drop)
        f = FastLoader(fashion.x_test[:100], fashion.y_test[:100], bs, shuffle=False, seed=None,
                       drop_last=drop)
        assert len(t) == len(f) == (100 // bs if drop else math.ceil(100 / bs))
        assert t.num_samples == f.num_samples == 100
    for cls in (ck.TFLoader, FastLoader):
        loader = cls.from_data(fashion, "test", 500, shuffle=True, seed=0)
        assert len(loader) == 20
        loader.set_epoch(3)
        assert loader.epoch == 3
        with pytest.raises(ValueError, match=rf"{cls.__name__}.from_data: split='val'"):
            cls.from_data(fashion, "val")


# --- fit, history, checkpoints -------------------------------------------------------------

def test_one_loader_feeds_two_fits(small):
    """The second ``fit`` builds a new pipeline over the same loader; its cached tensors must
    not belong to the first pipeline's traced graph."""
    train, val = _loaders(small)
    ck.seed_everything(0)
    model = ck.create_model("small_cnn")
    first = ck.fit(model, train, val, epochs=1, seed=0, progress=False)
    second = ck.fit(model, train, val, epochs=1, seed=0, progress=False)
    assert len(first) == 1 and len(second) == 1
    assert math.isfinite(second.last["train_loss"]) and math.isfinite(second.last["val_acc"])


def test_fit_records_the_pytorch_history_and_resumes_exactly(small, tmp_path):
    def run(epochs, ckpt=None):
        ck.seed_everything(0)
        model = ck.create_model("small_cnn")
        train, val = _loaders(small)
        history = ck.fit(model, train, val, epochs=epochs, seed=0, checkpoint_dir=ckpt,
                         restore_best=False, progress=False)
        return model, history

    straight, h = run(2)
    assert h.framework == "keras" and len(h) == 2
    assert set(EPOCH_KEYS) <= set(h.records[0])
    assert h["epoch"] == [1, 2]
    assert all(math.isfinite(v) for k in ("train_loss", "train_acc", "val_loss", "val_acc", "seconds")
               for v in h[k])
    assert h["lr"] == [pytest.approx(1e-3)] * 2
    train, val = _loaders(small)
    ev = ck.evaluate(straight, val)
    assert ev["loss"] == pytest.approx(h["val_loss"][-1], rel=1e-4)
    assert ev["acc"] == pytest.approx(h["val_acc"][-1])
    assert ck.predict(straight, val).shape == (64, 10)

    ckpt = tmp_path / "ckpt"
    run(1, ckpt)  # "interrupted" after one epoch
    state = json.loads((ckpt / "state.json").read_text())
    assert state["epoch"] == 1 and (ckpt / state["weights"]).exists()
    resumed, h2 = run(2, ckpt)
    for a, b in zip(straight.get_weights(), resumed.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert h2["val_loss"] == h["val_loss"] and h2["train_loss"] == h["train_loss"]
    assert sorted(p.name for p in ckpt.iterdir()) == ["best.npz", "epoch-0002.weights.h5", "state.json"]

    # a finished run has nothing left to do
    again, h3 = run(2, ckpt)
    assert len(h3) == 2
    for a, b in zip(straight.get_weights(), again.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_cosine_schedule_matches_pytorch_and_survives_an_interruption(small, tmp_path):
    import torch

    expected = []  # PyTorch's CosineAnnealingLR(T_max=3), stepped per epoch
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=3)
    for _ in range(3):
        expected.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:
                raise KeyboardInterrupt

    def run(ckpt=None, callbacks=()):
        ck.seed_everything(0)
        model = ck.create_model("small_cnn")
        train, val = _loaders(small)
        h = ck.fit(model, train, val, epochs=3, lr=1e-3, seed=0, scheduler="cosine",
                   checkpoint_dir=ckpt, restore_best=False, progress=False, callbacks=callbacks)
        return model, h

    straight, h = run()
    assert h["lr"] == pytest.approx(expected, rel=1e-6)
    assert float(straight.optimizer.learning_rate.numpy()) == pytest.approx(1e-3)  # put back
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, [Interrupt()])
    resumed, h2 = run(tmp_path)
    assert h2["lr"] == pytest.approx(expected, rel=1e-6)
    for a, b in zip(straight.get_weights(), resumed.get_weights()):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="scheduler"):
        ck.fit(straight, _loaders(small)[0], epochs=1, scheduler="step", progress=False)


def test_early_stopping_and_best_weights_follow_val_loss():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, name="d")])
    history = History(framework="keras")
    cb = CourseEarlyStopping(history, patience=2, restore_best=True, epochs=5)
    assert isinstance(cb, keras.callbacks.EarlyStopping)  # Keras's rule, the course's records
    cb.set_model(model)
    cb.on_train_begin()
    for epoch, (val_loss, w) in enumerate([(1.0, 1.0), (0.5, 2.0), (0.7, 3.0), (0.6, 4.0), (0.4, 5.0)]):
        model.get_layer("d").kernel.assign(np.full((2, 1), w, np.float32))
        model.stop_training = False
        cb.on_epoch_end(epoch, {"val_loss": val_loss})
        if model.stop_training:
            break
    assert epoch == 3 and history.stopped_early  # two epochs without beating 0.5
    cb.on_train_end()
    assert history.best_epoch == 2
    assert cb.state() == {"best_loss": 0.5, "best_epoch": 2, "bad_epochs": 2}
    np.testing.assert_array_equal(model.get_layer("d").kernel.numpy(), np.full((2, 1), 2.0))
    # a resumed run continues from the saved state: one more bad epoch stops it at patience 2
    again = CourseEarlyStopping(History(framework="keras"), patience=3, restore_best=True,
                                epochs=9, state=cb.state(), best_weights=model.get_weights())
    again.set_model(model)
    again.on_train_begin()
    model.stop_training = False
    again.on_epoch_end(4, {"val_loss": 0.9})
    assert model.stop_training and again.history_.stopped_early
    with pytest.raises(ValueError, match="early_stopping needs validation data"):
        ck.fit(model, (np.zeros((4, 2)), np.zeros(4)), epochs=1, early_stopping=2)


def test_compiling_again_with_the_same_settings_keeps_the_traced_step():
    ck.seed_everything(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    x, y = np.ones((8, 3), np.float32), np.zeros(8, np.int64)
    ck.fit(model, (x, y), epochs=1, lr=1e-2, batch_size=4, progress=False)
    step, optimizer = model.train_function, model.optimizer
    assert int(optimizer.iterations.numpy()) == 2
    ck.compile_model(model, lr=1e-2)  # same settings: reset, not recompiled
    assert model.train_function is step and model.optimizer is optimizer
    assert int(optimizer.iterations.numpy()) == 0
    assert all(not np.any(v.numpy()) for v in optimizer.variables if "learning_rate" not in v.path)
    ck.compile_model(model, lr=1e-3)  # another learning rate: a real compile
    assert model.train_function is None and model.optimizer is not optimizer
    model.layers[0].trainable = False
    ck.compile_model(model, lr=1e-3)  # trainable changed: a real compile too
    assert model.trainable_weights == [] and model.train_function is None


def test_evaluate_and_predict_refuse_a_shuffled_loader(small):
    model = ck.create_model("small_cnn")
    shuffled = ck.TFLoader(small[0], small[1], 32, shuffle=True, seed=0)
    with pytest.raises(ValueError, match="shuffle=False"):
        ck.evaluate(model, shuffled)
    with pytest.raises(ValueError, match="shuffle=False"):
        ck.predict(model, shuffled)


# --- features and learning curves ----------------------------------------------------------

def test_features_are_cached_in_the_shared_format(small, tmp_path, monkeypatch):
    from course_utils import features as torch_features
    from course_utils.keras import features as kfeatures

    ck.seed_everything(0)
    model = ck.create_model("small_cnn")
    x = small[0][:40]
    feats = ck.extract_features(model, x, cache_dir=tmp_path, progress=False)
    assert feats.shape == (40, 256) and feats.dtype == np.float32
    npy = list(tmp_path.glob("*.npy"))
    assert len(npy) == 1
    meta = json.loads(npy[0].with_suffix(".json").read_text())
    assert meta["framework"] == "keras" and meta["model"] == "small_cnn"
    key = torch_features.feature_cache_key(
        "small_cnn", None, None, torch_features.data_fingerprint(x), meta["transform"],
        framework="keras", state=kfeatures.keras_state_fingerprint(model)[:32])
    assert npy[0].stem == key
    # the features are what the model's classifier sees
    expected = ck.feature_model(model).predict(
        ck.preprocess_input("small_cnn", x), verbose=0)
    np.testing.assert_allclose(feats, expected, atol=1e-5)

    def no_model(*args, **kwargs):
        raise AssertionError("features should have come from the cache")

    monkeypatch.setattr(kfeatures, "feature_model", no_model)
    np.testing.assert_array_equal(ck.extract_features(model, x, cache_dir=tmp_path, progress=False), feats)
    monkeypatch.undo()

    # other weights, other key: no stale features
    model.get_layer("stem_conv").kernel.assign(model.get_layer("stem_conv").kernel * 2)
    ck.extract_features(model, x, cache_dir=tmp_path, progress=False)
    assert len(list(tmp_path.glob("*.npy"))) == 2
    block1 = ck.extract_features(model, x, layer="block1", cache_dir=tmp_path, progress=False)
    assert block1.shape == (40, 32)


def test_learning_curve_takes_a_keras_train_and_score():
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images * 255 / 16).astype(np.uint8)
    y = digits.target

    def tiny_mlp():
        return keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                                 keras.layers.Dense(32, activation="relu"), keras.layers.Dense(10)])

    result = ck.learning_curve(ck.train_and_score(tiny_mlp, epochs=8, lr=3e-3), x, y,
                               sizes=[20, 600], seeds=(0, 1), progress=False, label="keras")
    assert result.train_errors.shape == result.val_errors.shape == (2, 2)
    assert ((0 <= result.val_errors) & (result.val_errors <= 1)).all()
    assert result.val_mean[1] < result.val_mean[0] - 0.1  # more data, lower validation error
    assert result.label == "keras"


# --- the Fashion-MNIST transfer experiment -------------------------------------------------

def test_finetuning_the_pretrained_small_cnn_beats_scratch(fashion, tmp_path, monkeypatch):
    """Pretrain on classes 0-4 (1500 images, 2 epochs), then 10 images per class of classes
    5-9: fine-tuned vs from scratch, same images, same 15 epochs of Adam at 3e-4, mean of
    three seeds on 500 target test images (100 per class)."""
    from course_utils.experiments import paired_gain, source_target_split
    from course_utils.keras import experiments as kx

    _, tgt = source_target_split(fashion)
    rng = np.random.default_rng(0)
    test_idx = np.sort(np.concatenate([rng.choice(np.flatnonzero(tgt.y_test == k), 100, replace=False)
                                       for k in range(5)]))
    pretrain = dict(pretrain_per_class=300, pretrain_epochs=2, pretrain_batch_size=64,
                    pretrain_n_test=1000)
    table = kx.finetune_vs_scratch("small_cnn", fashion, sizes=(10,), seeds=(0, 1, 2),
                                   cache_dir=tmp_path, progress=False, epochs=15, lr=3e-4,
                                   batch_size=10, test_indices=test_idx, **pretrain)
    means = table.groupby("init")["test_acc"].mean()
    print("keras transfer experiment:", table[["init", "seed", "test_acc"]].to_dict("records"),
          means.to_dict())
    assert (table["n_train"] == 50).all() and len(table) == 6
    assert paired_gain(table)["gain"].iloc[0] == pytest.approx(means["pretrained"] - means["scratch"])
    assert means["pretrained"] > means["scratch"] + 0.03, means.to_dict()

    # the pretraining is cached: asking again trains nothing
    assert len(list(tmp_path.glob("keras-small_cnn-*.weights.h5"))) == 1
    monkeypatch.setattr(kx, "fit", lambda *a, **k: pytest.fail("pretraining ran again"))
    state, meta = kx.pretrain_source("small_cnn", fashion, epochs=2, per_class=300, batch_size=64,
                                     cache_dir=tmp_path, n_test=1000, return_meta=True)
    assert meta["source_test_acc"] > 0.75 and "stem_conv" in state
