"""The framework-neutral plumbing both halves share (issue 15): atomic writes, fingerprints,
preprocessing facts, weights names and the seed check each live in one module that imports
neither PyTorch nor TensorFlow."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from course_utils import atomic, fingerprint, preprocessing, weights
from course_utils.seeding import check_seed

NEUTRAL = ("course_utils.atomic", "course_utils.fingerprint", "course_utils.feature_cache",
           "course_utils.preprocessing", "course_utils.weights", "course_utils.seeding")


def test_neutral_modules_and_the_keras_half_never_import_torch(repo_root):
    code = textwrap.dedent(f"""
        import sys
        for name in {NEUTRAL!r}:
            __import__(name)
        print(sorted(m for m in ("torch", "tensorflow", "keras") if m in sys.modules))
        import course_utils.keras, course_utils.keras.features, course_utils.keras.experiments
        print("torch" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=repo_root, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["[]", "False"], out.stdout


def test_atomic_write_replaces_whole_files_and_cleans_up_on_error(tmp_path, monkeypatch):
    path = tmp_path / "sub" / "f.bin"
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    atomic.atomic_write_bytes(path, b"old")
    assert path.read_bytes() == b"old" and synced  # the data reached the disk before the rename

    def half(f):
        f.write(b"half of the new")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic.atomic_write(path, half)
    assert path.read_bytes() == b"old"
    assert [p.name for p in path.parent.iterdir()] == ["f.bin"]  # no temporary left behind
    atomic.atomic_write_json(path, {"a": 1})
    assert path.read_text() == '{"a": 1}'


def test_atomic_path_gives_a_same_directory_name_with_the_suffix(tmp_path):
    target = tmp_path / "w.weights.h5"
    with atomic.atomic_path(target, suffix=".weights.h5") as tmp:
        assert tmp.parent == tmp_path and tmp.name.endswith(".weights.h5") and tmp != target
        tmp.write_bytes(b"h5")
        assert not target.exists()
    assert target.read_bytes() == b"h5" and not tmp.exists()


def test_atomic_dir_replaces_a_tree_or_leaves_it(tmp_path):
    target = tmp_path / "cache"
    with atomic.atomic_dir(target) as tmp:
        (tmp / "x.npy").write_bytes(b"1")
    assert [p.name for p in target.iterdir()] == ["x.npy"]
    with pytest.raises(RuntimeError):
        with atomic.atomic_dir(target) as tmp:
            (tmp / "y.npy").write_bytes(b"2")
            raise RuntimeError("interrupted")
    assert [p.name for p in target.iterdir()] == ["x.npy"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]


def test_fingerprints_see_values_dtype_and_shape():
    a = np.arange(12, dtype=np.uint8).reshape(3, 4)
    fp = fingerprint.array_fingerprint(a)
    assert fp == fingerprint.array_fingerprint(a.copy()) and len(fp) == 64
    assert fp != fingerprint.array_fingerprint(a.reshape(4, 3))
    assert fp != fingerprint.array_fingerprint(a.astype(np.int8))
    w = [("w", "float32", (2,), np.zeros(2, np.float32))]
    assert fingerprint.weights_fingerprint(w) != fingerprint.weights_fingerprint(
        [("w", "float32", (2,), np.array([0, 1e-7], np.float32))])
    assert fingerprint.record_digest({"b": 1, "a": 2}, 16) == fingerprint.record_digest({"a": 2, "b": 1}, 16)
    assert len(fingerprint.record_digest({"a": 1})) == 32


def test_one_resize_rule_and_one_layout_rule():
    assert preprocessing.resize_for_crop(224, 0.875) == 256
    assert preprocessing.resize_for_crop(96, 0.875) == 109  # floor, as timm
    with pytest.raises(ValueError, match="crop_pct=1.5"):
        preprocessing.resize_for_crop(224, 1.5)
    assert [preprocessing.image_layout(s) for s in ((28, 28), (28, 28, 3), (5, 28, 28), (5, 28, 28, 1))] \
        == ["HW", "HWC", "NHW", "NHWC"]
    assert preprocessing.image_layout((3, 8, 8), channels_first=True) == "CHW"
    with pytest.raises(ValueError, match=r"shape \(1, 2, 3, 4, 5\)"):
        preprocessing.image_layout((1, 2, 3, 4, 5))


def test_both_halves_use_the_same_constants_and_resize_rule():
    pytest.importorskip("torch")
    from course_utils.data import transforms
    from course_utils.models import EvalTransform, get_spec, imagenet

    assert imagenet.IMAGENET_MEAN is transforms.IMAGENET_MEAN is preprocessing.IMAGENET_MEAN
    assert get_spec("small_cnn").mean is preprocessing.FASHION_MNIST_MEAN
    x = np.zeros((1, 100, 120, 3), np.uint8)
    # EvalTransform (per image, torchvision) and the batched resize agree on the rounding
    assert tuple(EvalTransform(96, 0.875)(x).shape) == (1, 3, 96, 96)
    import torch

    batch = transforms.resize_center_crop(torch.zeros(1, 3, 100, 120), 96, crop_pct=0.875)
    assert tuple(batch.shape) == (1, 3, 96, 96)


def test_weights_names_resolve_one_way():
    avail = ["IMAGENET1K_V1"]
    for w in ("IMAGENET1K_V1", "imagenet", "DEFAULT", True):
        assert weights.resolve_weights_name("m", avail, w) == "IMAGENET1K_V1"
    assert weights.resolve_weights_name("m", avail, None) is None
    enum = weights.weights_enum("efficientnet_lite0", {"IMAGENET1K_V1": "value"})
    assert enum.__name__ == "EfficientnetLite0_Weights" and enum.DEFAULT is enum.IMAGENET1K_V1
    assert weights.resolve_weights_name("m", avail, enum.DEFAULT) == "IMAGENET1K_V1"
    with pytest.raises(ValueError, match=r"create_model\('m'\): no weights 'V2'.*'IMAGENET1K_V1'"):
        weights.resolve_weights_name("m", avail, "V2")


def test_seed_check():
    assert check_seed(np.uint32(7)) == 7 and type(check_seed(np.uint32(7))) is int
    with pytest.raises(TypeError, match="seed must be an int, got '3'"):
        check_seed("3")
    with pytest.raises(ValueError, match="out of range"):
        check_seed(-1)


def test_build_lock_makes_a_second_builder_wait_and_find_the_finished_file(tmp_path):
    """Two processes asking for one slow cache entry: the second waits for the first's
    lock and then sees the file, so it loads instead of building it again."""
    import time

    from course_utils.atomic import build_lock

    target, held = tmp_path / "weights.pt", tmp_path / "held"
    child = subprocess.Popen([sys.executable, "-c", (
        "import sys, time, pathlib\n"
        "from course_utils.atomic import build_lock, atomic_write_text\n"
        "target, held = map(pathlib.Path, sys.argv[1:3])\n"
        "with build_lock(target):\n"
        "    held.write_text('yes')\n"
        "    time.sleep(1.5)\n"
        "    atomic_write_text(target, 'built')\n"), str(target), str(held)])
    try:
        deadline = time.monotonic() + 60
        while not held.exists():
            assert time.monotonic() < deadline and child.poll() is None, "child never took the lock"
            time.sleep(0.05)
        with build_lock(target):
            assert target.read_text() == "built"
    finally:
        child.wait(timeout=60)
    assert child.returncode == 0
