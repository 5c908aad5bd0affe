"""ImageData, load/list_datasets, subsets: no network, small arrays except one real load."""
from __future__ import annotations

import numpy as np
import pytest

from course_utils import data
from course_utils.data import fashion_mnist as fm
from course_utils.data.core import ImageData, stratified_indices, stratified_split_indices


def _toy(n_per_class=(6, 6, 6), n_test=2, name="toy"):
    ys = np.concatenate([np.full(n, c) for c, n in enumerate(n_per_class)]).astype(np.int64)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(len(ys), 4, 4), dtype=np.uint8)
    yt = np.repeat(np.arange(len(n_per_class)), n_test).astype(np.int64)
    xt = rng.integers(0, 256, size=(len(yt), 4, 4), dtype=np.uint8)
    return ImageData(name, x, ys, xt, yt, tuple(f"c{i}" for i in range(len(n_per_class))))


def test_list_and_unknown_name_lists_valid_ones():
    names = data.list_datasets()
    assert {"fashion_mnist", "digits"} <= set(names)
    with pytest.raises(data.UnknownDatasetError) as err:
        data.load("fashon_mnist")
    msg = str(err.value)
    assert "fashon_mnist" in msg and "fashion_mnist" in msg and "digits" in msg
    assert isinstance(err.value, ValueError)
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['size'\]"):
        data.load("digits", size=32)


def test_imagedata_validates_types():
    good = _toy()
    with pytest.raises(TypeError, match="x_train must be a uint8"):
        ImageData("bad", good.x_train.astype(np.float32), good.y_train, good.x_test, good.y_test, good.classes)
    with pytest.raises(ValueError, match="labels"):
        ImageData("bad", good.x_train, good.y_train[:-1], good.x_test, good.y_test, good.classes)


def test_select_classes_relabels_and_filters_test():
    d = _toy()
    t = d.select_classes([2, "c1"])
    assert t.classes == ("c2", "c1")
    assert set(t.y_train) == {0, 1} and set(t.y_test) == {0, 1}
    # relabelled 0 corresponds to original class 2
    np.testing.assert_array_equal(t.x_train[t.y_train == 0], d.x_train[d.y_train == 2])
    kept = d.select_classes([2], relabel=False)
    assert kept.classes == d.classes and set(kept.y_train) == {2}
    with pytest.raises(ValueError, match="not in toy"):
        d.select_classes(["nope"])
    with pytest.raises(ValueError, match="out of range"):
        d.select_classes([7])


def test_per_class_same_seed_same_indices_different_seed_differs():
    y = np.repeat(np.arange(10), 50)
    a = stratified_indices(y, 5, seed=1)
    b = stratified_indices(y, 5, seed=1)
    c = stratified_indices(y, 5, seed=2)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert np.bincount(y[a]).tolist() == [5] * 10
    d = _toy().per_class(3, seed=0)
    assert np.bincount(d.y_train).tolist() == [3, 3, 3]
    assert len(d.x_test) == 6  # the test set is untouched


def test_per_class_larger_than_class_is_a_clear_error():
    d = _toy(n_per_class=(6, 2, 6))
    with pytest.raises(ValueError, match=r"class 1 \('c1'\) has only 2"):
        d.per_class(3, seed=0)
    with pytest.raises(ValueError, match="positive integer"):
        d.per_class(0, seed=0)


def test_train_val_split_is_disjoint_stratified_and_keeps_test():
    d = _toy(n_per_class=(10, 10, 10))
    tr, va = d.train_val_split(0.2, seed=0)
    assert np.bincount(va.y_train).tolist() == [2, 2, 2]
    assert np.bincount(tr.y_train).tolist() == [8, 8, 8]
    assert not set(tr.meta["train_indices"]) & set(va.meta["train_indices"])
    assert tr.x_test is d.x_test and va.x_test is d.x_test
    itr, iva = stratified_split_indices(d.y_train, 0.2, seed=0)
    np.testing.assert_array_equal(itr, tr.meta["train_indices"])
    assert not np.array_equal(iva, stratified_split_indices(d.y_train, 0.2, seed=1)[1])
    with pytest.raises(ValueError, match="val_fraction"):
        d.train_val_split(1.5, seed=0)


def test_digits():
    d = data.load("digits")
    assert d.x_train.dtype == np.uint8 and d.x_train.shape[1:] == (8, 8)
    assert d.y_train.dtype == np.int64 and len(d.x_train) + len(d.x_test) == 1797
    assert d.x_train.max() == 255 and d.classes[3] == "3"


def test_parse_idx_rejects_truncated():
    header = bytes([0, 0, 8, 1]) + (5).to_bytes(4, "big")
    np.testing.assert_array_equal(fm.parse_idx(header + bytes(range(5))), np.arange(5))
    with pytest.raises(ValueError, match="truncated"):
        fm.parse_idx(header + bytes(3), "x.idx")
    with pytest.raises(ValueError, match="bad magic"):
        fm.parse_idx(b"\x01\x02\x08\x01", "x.idx")


@pytest.mark.skipif(not fm.SYSTEM_DIR.is_dir(), reason="Debian dataset-fashion-mnist not installed")
def test_fashion_mnist_from_debian_then_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_DATA", str(tmp_path))
    d = data.load("fashion_mnist", download=False)
    assert d.x_train.shape == (60000, 28, 28) and d.x_train.dtype == np.uint8
    assert d.y_test.shape == (10000,) and d.y_test.dtype == np.int64
    assert d.classes[0] == "T-shirt/top" and d.classes[9] == "Ankle boot"
    assert np.bincount(d.y_train).tolist() == [6000] * 10
    cached = sorted(p.name for p in (tmp_path / "fashion_mnist").iterdir())
    assert cached == ["x_test.npy", "x_train.npy", "y_test.npy", "y_train.npy"]
    # warm load from the cache only (system dir disabled), same arrays
    again = fm.load_fashion_mnist(download=False, system_dir=None)
    np.testing.assert_array_equal(again.x_test, d.x_test)


@pytest.mark.skipif(not fm.SYSTEM_DIR.is_dir(), reason="Debian dataset-fashion-mnist not installed")
def test_fashion_mnist_download_path_and_offline_message(tmp_path, monkeypatch):
    """No system copy: the .gz files come from a (loopback) mirror, are verified, cached."""
    import hashlib

    from course_utils.download import DownloadError
    from test_download import LoopbackServer

    with pytest.raises(DownloadError) as err:
        fm.load_fashion_mnist(root=tmp_path / "off", download=False, system_dir=None)
    msg = str(err.value)
    assert "fashion_mnist" in msg and fm.URLS[0] in msg and "digits" in msg
    assert str(tmp_path / "off" / "raw" / fm.FILES["x_train"]) in msg

    server = LoopbackServer()
    try:
        blobs = {k: (fm.SYSTEM_DIR / f).read_bytes() for k, f in fm.FILES.items()}
        for k, b in blobs.items():
            server.add("/mirror/" + fm.FILES[k], b)
        # the loopback mirror serves Debian's re-compressed files: pin their hashes for this test
        monkeypatch.setattr(fm, "URLS", (server.url("/down/"), server.url("/mirror/")))
        monkeypatch.setattr(fm, "GZ_SHA256", {k: hashlib.sha256(b).hexdigest() for k, b in blobs.items()})
        monkeypatch.setattr(fm, "GZ_MD5", {k: hashlib.md5(b).hexdigest() for k, b in blobs.items()})
        d = fm.load_fashion_mnist(root=tmp_path / "dl", download=True, system_dir=None)
    finally:
        server.close()
    assert d.x_train.shape == (60000, 28, 28) and d.x_train.flags.writeable
    assert sorted(p.name for p in (tmp_path / "dl" / "raw").iterdir()) == sorted(fm.FILES.values())
