"""Cached feature extraction and linear heads on the features."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from course_utils import features as F
from course_utils import models as M


@pytest.fixture
def images():
    return np.random.default_rng(0).integers(0, 256, size=(10, 28, 28), dtype=np.uint8)


@pytest.fixture
def cnn():
    torch.manual_seed(0)
    return M.create_model("small_cnn").eval()


def count_forwards(model):
    calls = []
    model.register_forward_pre_hook(lambda m, a: calls.append(a[0].shape[0]))
    return calls


def test_cache_key_is_stable_and_changes_with_every_field(images):
    fp = F.data_fingerprint(images)
    base = dict(model="efficientnet_lite0", weights="imagenet", layer=None, data=fp,
                transform="EvalTransform(size=96)")
    key = F.feature_cache_key(**base)
    assert len(key) == 32 and key == F.feature_cache_key(**base)
    assert key == F.feature_cache_key(**{**base, "data": images})  # array -> fingerprint
    changed = [dict(base, model="resnet18"), dict(base, weights=None), dict(base, layer="stage4"),
               dict(base, transform="EvalTransform(size=64)"), dict(base, data=F.data_fingerprint(images[:-1]))]
    keys = {F.feature_cache_key(**c) for c in changed} | {F.feature_cache_key(**base, framework="keras")}
    assert len(keys) == 6 and key not in keys
    # the fingerprint sees shape and dtype, not only the bytes
    assert F.data_fingerprint(images.reshape(10, 784)) != fp
    assert F.data_fingerprint(images.astype(np.int8)) != fp
    flipped = images.copy()
    flipped[3, 5, 5] ^= 1
    assert F.data_fingerprint(flipped) != fp


def test_cache_key_changes_with_the_resize_rule(images, monkeypatch):
    """A transform's repr names its size and crop fraction, not the rule that turns them into
    pixels: entries written under another rule must not be read back (seen: round -> floor)."""
    from course_utils import feature_cache

    base = dict(model="efficientnet_lite0", weights="imagenet", layer=None,
                data=F.data_fingerprint(images), transform="EvalTransform(size=32)")
    key = F.feature_cache_key(**base)
    monkeypatch.setattr(feature_cache, "RESIZE_RULE", "round(size/crop_pct)")
    assert F.feature_cache_key(**base) != key


def test_cache_hit_skips_the_network_and_a_changed_key_misses(cnn, images, tmp_path):
    calls = count_forwards(cnn)
    first = F.extract_features(cnn, images, batch_size=4, cache_dir=tmp_path, progress=False)
    assert first.shape == (10, 256) and first.dtype == np.float32
    assert calls == [4, 4, 2]
    again = F.extract_features(cnn, images, batch_size=4, cache_dir=tmp_path, progress=False)
    assert calls == [4, 4, 2]  # served from disk
    np.testing.assert_array_equal(again, first)
    assert len(list(tmp_path.glob("*.npy"))) == 1 and len(list(tmp_path.glob("*.json"))) == 1
    assert not list(tmp_path.glob("*.part"))

    F.extract_features(cnn, images[:9], batch_size=10, cache_dir=tmp_path, progress=False)
    F.extract_features(cnn, images, layer="block2", batch_size=10, cache_dir=tmp_path, progress=False)
    F.extract_features(cnn, images, size=32, batch_size=10, cache_dir=tmp_path, progress=False)
    assert calls[3:] == [9, 10, 10]
    with torch.no_grad():
        cnn.classifier.weight.add_(1.0)  # not above the features, but the weights changed
        cnn.stem.conv.weight.mul_(2.0)
    changed = F.extract_features(cnn, images, batch_size=10, cache_dir=tmp_path, progress=False)
    assert calls[6:] == [10] and not np.array_equal(changed, first)
    assert len(list(tmp_path.glob("*.npy"))) == 5


def test_return_labels_gives_a_pair_on_a_cold_and_a_warm_cache(cnn, images, tmp_path):
    """Regression (issue 15): the cache-hit path returned the bare array."""
    cold = F.extract_features(cnn, images, cache_dir=tmp_path, progress=False, return_labels=True)
    warm = F.extract_features(cnn, images, cache_dir=tmp_path, progress=False, return_labels=True)
    for got in (cold, warm):
        assert isinstance(got, tuple) and len(got) == 2
        assert got[0].shape == (10, 256) and got[1] is None
    np.testing.assert_array_equal(cold[0], warm[0])


def test_features_are_the_layer_outputs_globally_pooled(cnn, images):
    x = F.default_transform(cnn)(images)
    assert isinstance(F.default_transform(cnn), F.ArrayTransform)
    with torch.no_grad():
        penultimate = cnn.forward_features(x).numpy()
        block2 = cnn.block2(cnn.block1(cnn.stem(x))).mean(dim=(2, 3)).numpy()
    got = F.extract_features(cnn, images, cache=False, progress=False)
    np.testing.assert_allclose(got, penultimate, rtol=1e-5, atol=1e-6)
    got2 = F.extract_features(cnn, images, layer="block2", cache=False, progress=False)
    np.testing.assert_allclose(got2, block2, rtol=1e-5, atol=1e-6)
    got3 = F.extract_features(cnn, images, layer="block2.1.bn", cache=False, progress=False)
    assert got3.shape == (10, 64)
    with pytest.raises(ValueError, match="layer='stage9'.*stem, block1, block2, head"):
        F.extract_features(cnn, images, layer="stage9", cache=False)


def test_extraction_leaves_the_model_in_its_mode_and_stats_untouched(cnn, images):
    cnn.train()
    stats = cnn.stem.bn.running_mean.clone()
    F.extract_features(cnn, images, cache=False, progress=False)
    assert cnn.training and torch.equal(cnn.stem.bn.running_mean, stats)


def test_iterable_of_batches_with_labels(cnn, images, tmp_path):
    tf = F.default_transform(cnn)
    batches = [(tf(images[i:i + 4]), torch.arange(i, min(i + 4, 10))) for i in range(0, 10, 4)]
    feats, labels = F.extract_features(cnn, batches, return_labels=True, progress=False,
                                       cache_dir=tmp_path)
    np.testing.assert_array_equal(labels, np.arange(10))
    np.testing.assert_allclose(feats, F.extract_features(cnn, images, cache=False, progress=False),
                               rtol=1e-5, atol=1e-6)
    calls = count_forwards(cnn)
    F.extract_features(cnn, batches, cache_dir=tmp_path, progress=False)
    F.extract_features(cnn, batches, cache_dir=tmp_path, progress=False)
    assert len(calls) == 3  # cached on the second call (fingerprinted from the batches)


def test_unstable_transforms_and_one_shot_iterators_are_not_cached(cnn, images, tmp_path, caplog):
    tf = F.default_transform(cnn)
    with caplog.at_level(logging.WARNING, logger="course_utils.features"):
        F.extract_features(cnn, images, transform=lambda b: tf(b), cache_dir=tmp_path, progress=False)
        F.extract_features(cnn, (tf(images[i:i + 5]) for i in (0, 5)), cache_dir=tmp_path,
                           progress=False)
    assert "no stable repr" in caplog.text and "one-shot iterator" in caplog.text
    assert not list(tmp_path.iterdir())


def test_default_cache_dir_is_under_course_data(cnn, images, tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_DATA", str(tmp_path))
    assert F.feature_cache_dir() == tmp_path / "features"
    F.extract_features(cnn, images, progress=False)
    assert len(list((tmp_path / "features").glob("*.npy"))) == 1


def test_an_interrupted_write_leaves_no_cache_entry(tmp_path, monkeypatch):
    def interrupted(f, arr, allow_pickle=False):
        f.write(b"\x93NUMPY partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        F.save_cached_features("k" * 32, np.ones((3, 2)), tmp_path)
    assert not list(tmp_path.glob("*.npy")) and not list(tmp_path.glob("*.part"))
    assert F.load_cached_features("k" * 32, tmp_path) is None
    monkeypatch.undo()
    (tmp_path / ("b" * 32 + ".npy")).write_bytes(b"garbage")
    assert F.load_cached_features("b" * 32, tmp_path) is None  # unreadable: a miss


def test_lite0_features_from_the_head_and_an_intermediate_stage(tmp_path):
    model = M.create_model("efficientnet_lite0", weights="imagenet")
    imgs = np.random.default_rng(1).integers(0, 256, size=(3, 70, 90, 3), dtype=np.uint8)
    head = F.extract_features(model, imgs, size=64, cache_dir=tmp_path, progress=False)
    stage4 = F.extract_features(model, imgs, size=64, layer="stage4", cache_dir=tmp_path,
                                progress=False)
    assert head.shape == (3, 1280) and stage4.shape == (3, 80)
    tf = F.default_transform(model, 64)
    assert tf.size == 64 and tf.mean == (0.5, 0.5, 0.5)
    with torch.no_grad():
        ref = model.eval().forward_features(tf(imgs)).mean(dim=(2, 3)).numpy()
    np.testing.assert_allclose(head, ref, rtol=1e-4, atol=1e-5)


def blobs(n, seed, classes=(3, 7, 9), d=20):
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).normal(0, 3, size=(len(classes), d))
    y = rng.integers(0, len(classes), size=n)
    return centres[y] + rng.normal(size=(n, d)), np.asarray(classes)[y]


@pytest.mark.parametrize("method,kw", [("logreg", {}), ("torch", {}),
                                       ("torch", {"batch_size": 32, "epochs": 20})])
def test_linear_heads_learn_a_separable_problem(method, kw):
    x, y = blobs(200, seed=0)
    xt, yt = blobs(200, seed=1)
    head = F.fit_linear_head(x, y, method=method, **kw)
    assert head.score(xt, yt) >= 0.97
    assert set(np.unique(head.predict(xt))) <= {3, 7, 9}
    assert head.predict_proba(xt).sum(axis=1) == pytest.approx(np.ones(200))
    layer = head.to_linear()
    logits = layer(torch.as_tensor(xt, dtype=torch.float32)).detach().numpy()
    np.testing.assert_allclose(logits, head.decision_function(xt), rtol=1e-4, atol=1e-4)
    if method == "torch":
        assert head.losses[-1] < head.losses[0]


def test_torch_head_is_seeded_and_binary_logreg_has_two_logits():
    x, y = blobs(100, seed=2)
    a = F.fit_linear_head(x, y, method="torch", epochs=5, seed=3)
    torch.manual_seed(123)  # the global RNG plays no part
    b = F.fit_linear_head(x, y, method="torch", epochs=5, seed=3)
    c = F.fit_linear_head(x, y, method="torch", epochs=5, seed=4)
    np.testing.assert_array_equal(a.weight_, b.weight_)
    assert not np.array_equal(a.weight_, c.weight_)
    xb, yb = blobs(100, seed=2, classes=(0, 1))
    binary = F.fit_linear_head(xb, yb, method="logreg")
    assert binary.weight_.shape == (2, 20)
    np.testing.assert_array_equal(binary.predict(xb), binary.estimator.predict(
        (xb - binary.mean_) / binary.scale_))
    with pytest.raises(ValueError, match="method must be 'logreg' or 'torch'"):
        F.fit_linear_head(x, y, method="svm")
    with pytest.raises(ValueError, match=r"labels must have shape \(100,\)"):
        F.fit_linear_head(x, y[:-1])
