"""lfw_faces: scikit-image's bundled 200 face / non-face photographs, hash-checked, split."""
from __future__ import annotations

import numpy as np
import pytest

from course_utils import data
from course_utils.data import lfw_faces
from course_utils.download import ChecksumError, DownloadError, file_hash


def test_registered_as_embedded():
    assert "lfw_faces" in data.list_datasets("embedded")
    assert "scikit-image" in data.dataset_info("lfw_faces").description


def test_bundled_file_is_the_pinned_one():
    path = lfw_faces.bundled_path()
    assert path is not None and path.name == "lfw_subset.npy"
    assert file_hash(path) == lfw_faces.SHA256 and path.stat().st_size == lfw_faces.SIZE_BYTES


def test_shapes_labels_and_balanced_split():
    d = data.load("lfw_faces")
    assert d.x_train.shape == (120, 25, 25) and d.x_test.shape == (80, 25, 25)
    assert d.x_train.dtype == np.uint8 and d.y_train.dtype == np.int64
    assert d.classes == ("non-face", "face")
    assert np.bincount(d.y_train).tolist() == [60, 60] and np.bincount(d.y_test).tolist() == [40, 40]
    assert d.x_train.max() == 255 and d.x_train.min() == 0
    # the split partitions the 200 images: the faces are the file's first 100 (skimage's doc)
    raw = np.load(lfw_faces.bundled_path())
    faces = {np.rint(raw[i] * 255).astype(np.uint8).tobytes() for i in range(100)}
    every = np.concatenate([d.x_train, d.x_test])
    labels = np.concatenate([d.y_train, d.y_test])
    assert len({im.tobytes() for im in every}) == 200
    assert all((im.tobytes() in faces) == bool(lab) for im, lab in zip(every, labels))


def test_split_and_per_class_are_deterministic():
    a, b = data.load("lfw_faces"), data.load("lfw_faces")
    np.testing.assert_array_equal(a.x_test, b.x_test)
    np.testing.assert_array_equal(a.y_train, b.y_train)
    s1, s2, s3 = a.per_class(5, seed=3), b.per_class(5, seed=3), a.per_class(5, seed=4)
    assert np.bincount(s1.y_train).tolist() == [5, 5] and len(s1.x_test) == 80
    np.testing.assert_array_equal(s1.x_train, s2.x_train)
    assert not np.array_equal(s1.meta["train_indices"], s3.meta["train_indices"])
    with pytest.raises(ValueError, match=r"class 0 \('non-face'\) has only 60"):
        a.per_class(61, seed=0)


def test_tampered_copy_is_refused_naming_file_and_both_hashes(tmp_path):
    raw = np.load(lfw_faces.bundled_path())
    raw[0, 0, 0] = 1.0 - raw[0, 0, 0]  # one pixel changed
    bad = tmp_path / "lfw_subset.npy"
    np.save(bad, raw)
    with pytest.raises(ChecksumError) as err:
        data.load("lfw_faces", path=bad)
    msg = str(err.value)
    assert str(bad) in msg and lfw_faces.SHA256 in msg and file_hash(bad) in msg
    assert "reinstall" in msg.lower()
    # an untampered copy given the same way is accepted
    good = tmp_path / "good.npy"
    good.write_bytes(lfw_faces.bundled_path().read_bytes())
    assert data.load("lfw_faces", path=good).meta["source"] == str(good)
    with pytest.raises(FileNotFoundError, match="no such file"):
        data.load("lfw_faces", path=tmp_path / "missing.npy")


def test_without_skimage_file_offline_names_url_and_cache(tmp_path, monkeypatch):
    real = lfw_faces.bundled_path()
    monkeypatch.setattr(lfw_faces, "bundled_path", lambda: None)
    monkeypatch.setenv("COURSE_DATA", str(tmp_path))
    with pytest.raises(DownloadError) as err:
        data.load("lfw_faces", download=False)
    msg = str(err.value)
    assert "lfw_faces" in msg and lfw_faces.URL in msg
    assert str(tmp_path / "lfw_faces" / "lfw_subset.npy") in msg and "scikit-image" in msg
    # a copy put in the cache by hand is verified and used
    (tmp_path / "lfw_faces").mkdir()
    (tmp_path / "lfw_faces" / "lfw_subset.npy").write_bytes(real.read_bytes())
    d = data.load("lfw_faces", download=False)
    assert len(d.x_test) == 80 and d.meta["source"] == str(tmp_path / "lfw_faces" / "lfw_subset.npy")
