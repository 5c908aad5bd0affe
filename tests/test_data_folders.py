"""Image-folder datasets end to end against a loopback server: download, verify, extract,
decode, cache; and the bad inputs (missing class folder, corrupt image, wrong counts)."""
from __future__ import annotations

import hashlib
import io
import logging
import zipfile

import numpy as np
import pytest
from PIL import Image

from course_utils import data
from course_utils.data import core, folders
from course_utils.data.folders import CorruptImageError, FolderSpec, RemoteFile, load_image_folder
from course_utils.download import DownloadError
from test_download import LoopbackServer  # noqa: E402  (tests/ is on sys.path under pytest)


def png(color, size=(30, 20)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


COLORS = {"ants": (250, 0, 0), "bees": (0, 0, 250)}


def tree_members(n=3, drop=None, corrupt=None) -> dict[str, bytes]:
    members = {}
    for split in ("train", "val"):
        for cls, color in COLORS.items():
            if (split, cls) == drop:
                continue
            for i in range(n):
                members[f"toy/{split}/{cls}/{i}.png"] = png(color)
    if corrupt:
        members[corrupt] = b"\xff\xd8 this is not a jpeg"
    return members


def zipped(members) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for k, v in members.items():
            zf.writestr(k, v)
    return buf.getvalue()


@pytest.fixture()
def server():
    s = LoopbackServer()
    yield s
    s.close()


@pytest.fixture()
def toy(server, tmp_path, monkeypatch):
    """Registers a dataset 'toy_folder' served from the loopback server; returns a setter."""
    monkeypatch.setenv("COURSE_DATA", str(tmp_path / "cache"))

    def make(members, expected=None):
        blob = zipped(members)
        url = server.add("/toy.zip", blob)
        spec = FolderSpec("toy_folder", "test fixture", (RemoteFile(
            "toy.zip", (url,), sha256=hashlib.sha256(blob).hexdigest()),),
            {"train": ("toy/train",), "test": ("toy/val",)}, ("ants", "bees"), expected=expected)
        folders._register(spec)
        return spec

    yield make
    folders.FOLDER_DATASETS.pop("toy_folder", None)
    core._REGISTRY.pop("toy_folder", None)


def test_full_profile_names_are_registered_with_pinned_hashes():
    full = data.list_datasets("full")
    assert set(full) == {"hotdog", "hymenoptera", "cats_vs_dogs", "flowers102"}
    for name in full:
        for f in folders.FOLDER_DATASETS[name].files:
            assert f.sha256 or f.sha1 or f.md5 or f.trust_on_first_use
            assert all(u.startswith(("http://", "https://")) for u in f.urls)


def test_download_extract_decode_and_cache(toy, server, tmp_path):
    toy(tree_members(n=3))
    d = data.load("toy_folder", size=16, progress=False)
    assert d.x_train.shape == (6, 16, 16, 3) and d.x_test.shape == (6, 16, 16, 3)
    assert d.classes == ("ants", "bees") and d.y_train.tolist() == [0, 0, 0, 1, 1, 1]
    assert d.x_train[0, 8, 8].tolist() == [250, 0, 0] and d.x_train[-1, 8, 8].tolist() == [0, 0, 250]
    base = tmp_path / "cache" / "toy_folder"
    assert (base / "images" / "toy" / "train" / "ants").is_dir()
    assert (base / "arrays-16" / "x_train.npy").is_file()
    server.routes.clear()  # warm load: no server, same arrays
    again = data.load("toy_folder", size=16, download=False)
    np.testing.assert_array_equal(again.x_test, d.x_test)
    assert folders.dataset_folder("toy_folder", download=False) == base / "images"


def test_offline_full_dataset_names_embedded_alternative(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_DATA", str(tmp_path))
    with pytest.raises(DownloadError) as err:
        data.load("hymenoptera", download=False)
    msg = str(err.value)
    assert "hymenoptera" in msg and "download.pytorch.org" in msg and "fashion_mnist" in msg
    assert str(tmp_path / "hymenoptera" / "downloads" / "hymenoptera_data.zip") in msg


def test_missing_class_folder_is_named_and_not_left_in_cache(toy, tmp_path):
    toy(tree_members(drop=("val", "bees")))
    with pytest.raises(FileNotFoundError, match=r"missing class folder .*toy/val/bees"):
        data.load("toy_folder", size=8, progress=False)
    base = tmp_path / "cache" / "toy_folder"
    assert not (base / "images").exists()  # the bad tree was removed; the verified zip stays
    assert sorted(p.name for p in base.iterdir()) == ["downloads"]


def test_corrupt_image_named_then_skipped(toy, tmp_path, caplog):
    toy(tree_members(n=2, corrupt="toy/train/bees/broken.jpg"))
    with pytest.raises(CorruptImageError, match=r"broken\.jpg.*skip_corrupt=True"):
        data.load("toy_folder", size=8, progress=False)
    base = tmp_path / "cache" / "toy_folder"
    assert not list(base.glob("arrays-*"))  # no array cache from a failed load
    with caplog.at_level(logging.WARNING):
        d = data.load("toy_folder", size=8, skip_corrupt=True, progress=False)
    assert len(d.x_train) == 4 and len(d.meta["skipped"]) == 1 and "broken.jpg" in d.meta["skipped"][0]
    assert "skipped 1 corrupt" in caplog.text
    # the cache remembers the skip: asking again without skip_corrupt still names the file
    with pytest.raises(CorruptImageError, match="broken.jpg"):
        data.load("toy_folder", size=8)


def test_expected_counts_are_checked(toy):
    toy(tree_members(n=2), expected={"train": {"ants": 2, "bees": 2}, "test": {"ants": 5, "bees": 2}})
    with pytest.raises(ValueError, match=r"expected \{'ants': 5, 'bees': 2\}"):
        data.load("toy_folder", size=8, progress=False)


def test_load_image_folder_directly(tmp_path):
    for split in ("train", "test"):
        for cls, color in [("b", (0, 9, 0)), ("a", (9, 0, 0))]:
            d = tmp_path / split / cls
            d.mkdir(parents=True)
            (d / "x.png").write_bytes(png(color, (12, 12)))
            (d / "notes.txt").write_text("ignored: not an image")
    d = load_image_folder(tmp_path, size=None)
    assert d.classes == ("a", "b") and d.x_train.shape == (2, 12, 12, 3) and d.y_test.tolist() == [0, 1]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_image_folder(tmp_path / "nope")


def test_flowers_style_preparation_builds_imagefolder_tree(server, tmp_path, monkeypatch):
    """102flowers.tgz + imagelabels.mat + setid.mat -> train/val/test class folders."""
    import tarfile

    from scipy.io import savemat

    monkeypatch.setenv("COURSE_DATA", str(tmp_path / "cache"))
    labels = np.array([1, 2, 1, 2, 1, 2, 1, 2])
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for i, lab in enumerate(labels, start=1):
            data_ = png((200, 0, 0) if lab == 1 else (0, 200, 0))
            info = tarfile.TarInfo(f"jpg/image_{i:05d}.jpg")
            info.size = len(data_)
            tf.addfile(info, io.BytesIO(data_))
    mats = {}
    for fname, content in [("imagelabels.mat", {"labels": labels}),
                           ("setid.mat", {"trnid": np.array([1, 2]), "valid": np.array([3, 4]),
                                          "tstid": np.array([5, 6, 7, 8])})]:
        b = io.BytesIO()
        savemat(b, content)
        mats[fname] = b.getvalue()
    blobs = {"102flowers.tgz": buf.getvalue(), **mats}
    files = tuple(RemoteFile(n, (server.add("/" + n, b),), md5=hashlib.md5(b).hexdigest())
                  for n, b in blobs.items())
    spec = FolderSpec("toy_flowers", "fixture", files,
                      {"train": ("flowers102/train", "flowers102/val"), "test": ("flowers102/test",)},
                      ("001", "002"), prepare=folders._prepare_flowers)
    folders._register(spec)
    try:
        d = data.load("toy_flowers", size=8, progress=False)
    finally:
        folders.FOLDER_DATASETS.pop("toy_flowers", None)
        core._REGISTRY.pop("toy_flowers", None)
    tree = tmp_path / "cache" / "toy_flowers" / "images" / "flowers102"
    assert sorted(p.name for p in (tree / "test" / "002").iterdir()) == ["image_00006.jpg", "image_00008.jpg"]
    # train = official train folder then official val folder, each in class order
    assert d.y_train.tolist() == [0, 1, 0, 1] and d.y_test.tolist() == [0, 0, 1, 1]
    assert d.meta["val_indices"] == [2, 3]
    np.testing.assert_array_equal(d.x_train[d.y_train == 0][:, 4, 4], [[200, 0, 0]] * 2)
    assert not list((tmp_path / "cache" / "toy_flowers").glob(".*"))  # no temporary folders left


def _tiny_hotdog_tree(root):
    """hotdog's real extracted layout ($COURSE_DATA/hotdog/images/hotdog/{train,test}/<class>),
    two images per class instead of 1,000 / 400."""
    for split in ("train", "test"):
        for cls, color in (("hotdog", (200, 60, 30)), ("not-hotdog", (30, 200, 60))):
            folder = root / "hotdog" / "images" / "hotdog" / split / cls
            folder.mkdir(parents=True)
            for i in range(2):
                (folder / f"{i}.png").write_bytes(png(color))


def test_fixture_trees_load_only_through_the_explicit_test_hook(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("COURSE_DATA", str(tmp_path))
    monkeypatch.delenv(folders.FIXTURE_ENV, raising=False)
    _tiny_hotdog_tree(tmp_path)
    with pytest.raises(ValueError, match="expected .*'hotdog': 1000"):  # the default: real counts
        data.load("hotdog", download=False, progress=False)
    monkeypatch.setenv(folders.FIXTURE_ENV, "1")
    with caplog.at_level(logging.WARNING, logger="course_utils.data.folders"):
        ds = data.load("hotdog", download=False, size=32, progress=False)
    assert ds.x_train.shape == (4, 32, 32, 3) and ds.classes == ("hotdog", "not-hotdog")
    assert folders.FIXTURE_ENV in caplog.text
