"""``course data --list`` and ``data.dataset_status``: every dataset, its size, whether it is
cached and passes its hash check, and where it is. No network: a loopback server only."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest

from course_utils import cli, data
from course_utils.data import core, fashion_mnist as fm, folders, lfw_faces
from course_utils.data.folders import FolderSpec, RemoteFile
from test_data_folders import tree_members, zipped  # noqa: E402  (tests/ is on sys.path)
from test_download import LoopbackServer  # noqa: E402


@pytest.fixture()
def empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_DATA", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _rows(out: str) -> dict[str, str]:
    """dataset name -> its line (and the note line under it) in the --list output."""
    lines = out.splitlines()
    rows = {}
    for i, line in enumerate(lines):
        name = line.split(" ", 1)[0]
        if name in data.list_datasets():
            rows[name] = line + "\n" + (lines[i + 1] if i + 1 < len(lines) else "")
    return rows


def test_list_shows_every_dataset_with_size_state_and_where(empty_cache, capsys):
    assert cli.main(["data", "--list"]) == 0
    out = capsys.readouterr().out
    rows = _rows(out)
    assert set(rows) == set(data.list_datasets())
    assert {"lfw_faces", "digits", "fashion_mnist", "hotdog", "hymenoptera", "cats_vs_dogs",
            "flowers102"} <= set(rows)
    assert "cached, verified" in rows["lfw_faces"] and "1.0 MB bundled" in rows["lfw_faces"]
    assert str(lfw_faces.bundled_path()) in rows["lfw_faces"]
    assert "bundled with scikit-learn" in rows["digits"] and "digits.csv.gz" in rows["digits"]
    for name in ("hotdog", "hymenoptera", "cats_vs_dogs", "flowers102"):
        assert "not cached" in rows[name] and str(empty_cache / name / "downloads") in rows[name]
        assert folders.FOLDER_DATASETS[name].files[0].urls[0] in rows[name]
    assert "47.3 MB download" in rows["hymenoptera"] and "68.6 MB download" in rows["cats_vs_dogs"]
    assert "344.9 MB download, at least" in rows["flowers102"]
    assert "size unknown download" in rows["hotdog"]  # d2l publishes no size
    assert str(empty_cache) in out and "copy" in out


def test_data_without_names_or_list_is_a_usage_error(capsys):
    assert cli.main(["data"]) == 2
    assert "--list" in capsys.readouterr().err


@pytest.fixture()
def toy_cached(tmp_path, monkeypatch):
    """A registered folder dataset 'toy_list' whose zip was downloaded (from loopback)."""
    monkeypatch.setenv("COURSE_DATA", str(tmp_path / "cache"))
    server = LoopbackServer()
    blob = zipped(tree_members(n=2))
    spec = FolderSpec("toy_list", "fixture", (RemoteFile(
        "toy.zip", (server.add("/toy.zip", blob),), sha256=hashlib.sha256(blob).hexdigest(),
        size=len(blob)),), {"train": ("toy/train",), "test": ("toy/val",)}, ("ants", "bees"))
    folders._register(spec)
    try:
        st = data.dataset_status("toy_list")
        assert not st.cached and st.size_bytes == len(blob) and st.size_kind == "download"
        folders.dataset_folder("toy_list", progress=False)
        yield tmp_path / "cache" / "toy_list"
    finally:
        server.close()
        folders.FOLDER_DATASETS.pop("toy_list", None)
        core._REGISTRY.pop("toy_list", None)


def test_cached_download_is_verified_then_tampering_is_reported(toy_cached, capsys):
    st = data.dataset_status("toy_list")
    assert st.cached and st.verified is True and st.where == str(toy_cached)
    assert st.note == "downloads verified, extracted"
    assert cli.main(["data", "--list"]) == 0
    assert "cached, verified" in _rows(capsys.readouterr().out)["toy_list"]
    zip_path = toy_cached / "downloads" / "toy.zip"
    zip_path.write_bytes(zip_path.read_bytes()[:-10] + b"tampered!!")
    st = data.dataset_status("toy_list")
    assert st.verified is False and "toy.zip" in st.note and "course data toy_list" in st.note
    assert cli.main(["data", "--list"]) == 1
    captured = capsys.readouterr()
    assert "FAILS verification" in _rows(captured.out)["toy_list"]
    assert "toy_list" in captured.err


def test_extracted_tree_without_downloads_is_cached_but_not_verifiable(toy_cached):
    (toy_cached / "downloads" / "toy.zip").unlink()
    st = data.dataset_status("toy_list")
    assert st.cached and st.verified is None and "cannot be re-verified" in st.note


def test_lfw_status_hashes_the_file(tmp_path, monkeypatch):
    raw = np.load(lfw_faces.bundled_path())
    raw[5, 5, 5] = 0.5
    bad = tmp_path / "lfw_subset.npy"
    np.save(bad, raw)
    monkeypatch.setattr(lfw_faces, "bundled_path", lambda: bad)
    st = data.dataset_status("lfw_faces")
    assert st.cached and st.verified is False and "reinstall" in st.note
    monkeypatch.setattr(lfw_faces, "bundled_path", lambda: None)
    st = data.dataset_status("lfw_faces", root=tmp_path / "none")
    assert not st.cached and st.size_kind == "download" and lfw_faces.URL in st.note


def test_fashion_mnist_status_per_source(tmp_path):
    st = fm.fashion_mnist_status(root=tmp_path, system_dir=None)
    assert not st.cached and st.size_bytes == 30_878_645 and st.where == str(tmp_path / "raw")
    if fm.SYSTEM_DIR.is_dir():
        st = fm.fashion_mnist_status(root=tmp_path)
        assert st.cached and st.verified is True and st.size_kind == "Debian package"
        assert st.size_bytes == sum(GZ - len(f.removesuffix(".gz")) - 1
                                    for GZ, f in zip(fm.GZ_SIZES.values(), fm.FILES.values()))
    for key in fm.FILES:
        shape = fm._SHAPES[key]
        np.save(tmp_path / f"{key}.npy", np.zeros(shape, np.uint8 if key[0] == "x" else np.int64))
    st = fm.fashion_mnist_status(root=tmp_path, system_dir=None)
    assert st.cached and st.verified is None and st.size_kind == "on disk"


def test_list_names_the_mirror_variable_and_its_value(empty_cache, capsys, monkeypatch):
    monkeypatch.delenv("COURSE_MIRROR", raising=False)
    assert cli.main(["data", "--list"]) == 0
    assert "$COURSE_MIRROR" in capsys.readouterr().out
    monkeypatch.setenv("COURSE_MIRROR", "http://lab-server:8000")
    assert cli.main(["data", "--list"]) == 0
    assert "(now: http://lab-server:8000)" in capsys.readouterr().out
