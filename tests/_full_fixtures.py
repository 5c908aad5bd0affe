"""Offline stand-ins for everything the ``full`` profile downloads, so the test suite can run
every notebook's ``full`` branch end to end with no network (issue 14).

* The four photograph datasets of :mod:`course_utils.data.folders` as tiny ImageFolder trees in
  each one's exact extracted layout (``$COURSE_DATA/<name>/images/...``, where
  ``dataset_folder`` looks before downloading), a few random JPEGs of mixed sizes per class,
  like torchvision's fake-data tests. ``COURSE_FIXTURE_DATASETS=1`` lets them pass the exact
  image counts that real copies must have (the data layer's documented test hook).
* Randomly initialised state dicts where ``torch.hub.load_state_dict_from_url`` keeps the
  torchvision ImageNet files (``$TORCH_HOME/hub/checkpoints``): torch.hub only checks a hash
  when it downloads, so a file already there is loaded as it is (torch's own behaviour).
* Randomly initialised Keras VGG16 weights (no top) in the legacy HDF5 layout at
  ``$KERAS_HOME/models/``, loaded through the ``COURSE_FIXTURE_WEIGHTS=1`` hook of
  :mod:`course_utils.keras.models` (Keras re-checks its pinned hash otherwise).

:func:`full_profile_env` returns the environment a notebook run needs: those caches, both hooks,
and every HTTP(S) proxy pointed at a closed loopback port, so anything that still tries the
network fails at once instead of reaching it.

Run as a script to build a fixture folder by hand and print the variables to export::

    python tests/_full_fixtures.py /tmp/full-fixtures
"""
from __future__ import annotations

import socket
import sys
from pathlib import Path

import numpy as np

__all__ = ["DATASET_TREES", "build_full_fixtures", "full_profile_env", "closed_port",
           "offline_env", "TORCH_MODELS"]

#: dataset -> (split folders below ``images/``, class folder names), the layouts the archives
#: extract to (see ``course_utils.data.folders.FOLDER_DATASETS``)
DATASET_TREES = {
    "hotdog": (("hotdog/train", "hotdog/test"), ("hotdog", "not-hotdog")),
    "hymenoptera": (("hymenoptera_data/train", "hymenoptera_data/val"), ("ants", "bees")),
    "cats_vs_dogs": (("cats_and_dogs_filtered/train", "cats_and_dogs_filtered/validation"),
                     ("cats", "dogs")),
    "flowers102": (("flowers102/train", "flowers102/val", "flowers102/test"),
                   tuple(f"{i:03d}" for i in range(1, 103))),
}

#: torchvision models whose ImageNet checkpoints get a random stand-in (VGG16's 528 MB is left
#: out on purpose: no notebook builds torchvision's VGG16)
TORCH_MODELS = ("resnet18", "mobilenet_v2")

_SIZES = ((320, 240), (240, 300), (256, 256), (500, 375))


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then closed): connecting is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_images(folder: Path, n: int, rng: np.random.Generator, tint: int) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        w, h = _SIZES[(i + tint) % len(_SIZES)]
        base = rng.integers(0, 256, size=(h // 8, w // 8, 3), dtype=np.uint8)
        base[..., tint % 3] = np.clip(base[..., tint % 3].astype(int) + 80, 0, 255)  # a class colour
        img = Image.fromarray(base).resize((w, h), Image.BILINEAR)
        img.save(folder / f"img_{i:04d}.jpg", quality=85)


def _build_datasets(data_root: Path, per_class: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for name, (splits, classes) in DATASET_TREES.items():
        tree = data_root / name / "images"
        if tree.is_dir():
            continue
        # Flowers-102 has 102 classes in three folders: one image each keeps it small
        n = 1 if name == "flowers102" else per_class
        for split in splits:
            for label, cls in enumerate(classes):
                _write_images(tree / split / cls, n, rng, label)


def _build_torch_weights(torch_home: Path, seed: int) -> None:
    import torch
    import torchvision.models as tvm

    from course_utils.models.torchvision_zoo import TORCHVISION_MODELS, torchvision_weights

    folder = torch_home / "hub" / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    for name in TORCH_MODELS:
        url = torchvision_weights(name).meta["url"]
        path = folder / url.rsplit("/", 1)[-1]
        if not path.exists():
            model = getattr(tvm, TORCHVISION_MODELS[name][0])(weights=None, num_classes=1000)
            torch.save(model.state_dict(), path)


def _build_keras_weights(keras_home: Path) -> None:
    import h5py

    from course_utils.keras._backend import keras
    from course_utils.keras.models import keras_weights_url
    # Keras 3 writes only its own .weights.h5 format; keras.applications ships legacy .h5
    from keras.src.legacy.saving import legacy_h5_format

    folder = keras_home / "models"
    folder.mkdir(parents=True, exist_ok=True)
    fname, _ = keras_weights_url("vgg16", include_top=False)
    path = folder / fname
    if not path.exists():
        model = keras.applications.VGG16(include_top=False, weights=None)
        with h5py.File(path, "w") as f:
            legacy_h5_format.save_weights_to_hdf5_group(f, model)


def build_full_fixtures(root, *, per_class: int = 4, seed: int = 0, keras_weights: bool = True) -> Path:
    """Fill ``root`` with ``data/`` (``$COURSE_DATA``), ``torch/`` (``$TORCH_HOME``) and
    ``keras/`` (``$KERAS_HOME``) as described in the module docstring; idempotent."""
    root = Path(root)
    _build_datasets(root / "data", per_class, seed)
    _build_torch_weights(root / "torch", seed)
    if keras_weights:
        _build_keras_weights(root / "keras")
    return root


def offline_env(port: int | None = None) -> dict[str, str]:
    """Every HTTP(S) proxy variable pointed at a closed loopback port: requests, urllib (torch
    hub, Keras) and pip honour them, so a download fails at once with 'connection refused'."""
    proxy = f"http://127.0.0.1:{port or closed_port()}"
    env = {k: proxy for k in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy",
                              "ALL_PROXY", "all_proxy")}
    env.update(NO_PROXY="", no_proxy="")
    return env


def full_profile_env(root) -> dict[str, str]:
    """The environment in which the notebooks' ``full`` branches run on the fixtures in
    ``root`` (built by :func:`build_full_fixtures`), offline."""
    root = Path(root)
    return {"COURSE_DATA": str(root / "data"), "TORCH_HOME": str(root / "torch"),
            "KERAS_HOME": str(root / "keras"), "COURSE_FIXTURE_DATASETS": "1",
            "COURSE_FIXTURE_WEIGHTS": "1", **offline_env()}


if __name__ == "__main__":  # pragma: no cover - a convenience for running notebooks by hand
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/full-fixtures").resolve()
    build_full_fixtures(target)
    for key, value in full_profile_env(target).items():
        print(f"export {key}={value!r}")
