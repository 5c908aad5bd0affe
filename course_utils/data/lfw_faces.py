"""Real photographs offline: scikit-image's 200 face / non-face crops from LFW, 25x25 gray.

scikit-image ships ``skimage/data/lfw_subset.npy`` in its wheel (``skimage.data.lfw_subset``):
200 crops of the Labeled Faces in the Wild photographs resized to 25x25. Its docstring says
"100 first images are faces and subsequent 100 are non-faces" (the non-faces are background
patches of the same photographs), and its gallery example "Face classification using
Haar-like feature descriptor" labels them ``[1] * 100 + [0] * 100``; label 1 is "face" here
too. The docstring calls the array uint8, but the file holds float64 values in [0, 1]
(checked on scikit-image 0.26); they are scaled to 0..255 and rounded to uint8 like every
other dataset of ``course_utils.data``.

The file is checked against :data:`SHA256`, the value scikit-image pins for it in
``skimage/data/_registry.py``; a file that does not match raises :class:`ChecksumError`
naming it, both hashes and what to do. When the installed scikit-image lacks the file, it
is fetched (``download=True``) from the URL scikit-image's registry gives for it, into
``$COURSE_DATA/lfw_faces/``, and verified against the same hash.

There is no official split: a fixed stratified one (seed :data:`SPLIT_SEED`,
:data:`TEST_FRACTION` of each class) gives 60 + 60 training and 40 + 40 test images, the
same for every notebook and both frameworks.
"""
from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import numpy as np

from course_utils.data.core import DatasetStatus, ImageData, register, stratified_split_indices
from course_utils.download import ChecksumError, data_home, file_hash

__all__ = ["load_lfw_faces", "lfw_faces_status", "bundled_path", "CLASSES", "SHA256", "URL", "FILE", "SIZE_BYTES",
           "TEST_FRACTION", "SPLIT_SEED"]

log = logging.getLogger(__name__)

FILE = "lfw_subset.npy"
#: sha256 that scikit-image pins for ``data/lfw_subset.npy`` (``skimage/data/_registry.py``).
SHA256 = "9560ec2f5edfac01973f63a8a99d00053fecd11e21877e18038fbe500f8e872c"
#: Where scikit-image's registry says the file lives (a pinned commit of scikit-image/data).
URL = ("https://gitlab.com/scikit-image/data/-/raw/5c090b56df3988d988ff97928e2ef2d2cbe38e1b/"
       "lfw_subset.npy")
#: Size of the file (a float64 .npy of 200x25x25 plus its header), for ``course data --list``.
SIZE_BYTES = 1_000_080
#: Label order: 0 = non-face (background patch), 1 = face.
CLASSES = ("non-face", "face")
TEST_FRACTION = 0.4
SPLIT_SEED = 0
_SHAPE = (200, 25, 25)


def bundled_path() -> Path | None:
    """Where the installed scikit-image keeps ``lfw_subset.npy`` (found without importing
    scikit-image), or None when scikit-image or the file is missing."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / FILE
    return path if path.is_file() else None


def _source(root, download: bool) -> Path:
    path = bundled_path()
    if path is not None:
        return path
    from course_utils.download import fetch

    cache = Path(root) if root is not None else data_home("lfw_faces")
    return fetch(FILE, URL, cache, sha256=SHA256, dataset="lfw_faces", download=download,
                 alternative="pip install scikit-image (its wheel ships the file)")


def load_lfw_faces(*, root=None, download: bool = True, path=None) -> ImageData:
    """200 real 25x25 grayscale photographs, face (1) or non-face (0): 120 train, 80 test.

    The file is scikit-image's bundled ``lfw_subset.npy``; without it, a verified download
    into ``root`` (default ``$COURSE_DATA/lfw_faces``) when ``download=True``.

    ``path``: read this copy of ``lfw_subset.npy`` instead (e.g. one copied from another
    machine). It is checked against the same pinned :data:`SHA256` as the bundled file; a
    copy that differs raises :class:`~course_utils.download.ChecksumError`. (The tests use
    it to hand in a tampered copy; there is no way to skip the check.)
    """
    src = Path(path) if path is not None else _source(root, download)
    if not src.is_file():
        raise FileNotFoundError(f"path={str(src)!r}: no such file; pass the path of a copy of "
                                f"scikit-image's {FILE}, or leave path=None to use the bundled one")
    digest = file_hash(src)
    if digest != SHA256:
        raise ChecksumError(
            f"{src}: sha256 is {digest} but the pinned value for scikit-image's {FILE} is "
            f"{SHA256}; the file is corrupt or not the one scikit-image ships. Reinstall "
            f"scikit-image (pip install --force-reinstall scikit-image), or download {URL} "
            "and pass its path as path=")
    images = np.load(src, allow_pickle=False)
    if images.shape != _SHAPE:  # the hash matched, so this is a programming error here
        raise ValueError(f"{src}: shape {images.shape}, expected {_SHAPE}")
    x = np.rint(np.clip(images, 0.0, 1.0) * 255.0).astype(np.uint8)
    y = np.repeat(np.array([1, 0], dtype=np.int64), 100)  # faces first, then non-faces
    tr, te = stratified_split_indices(y, TEST_FRACTION, SPLIT_SEED)
    log.info("read %s (sha256 verified)", src)
    return ImageData("lfw_faces", x[tr], y[tr], x[te], y[te], CLASSES,
                     meta={"source": str(src), "sha256": SHA256, "split_seed": SPLIT_SEED,
                           "test_fraction": TEST_FRACTION})


def lfw_faces_status(*, root=None) -> DatasetStatus:
    """The bundled file (else the cached copy), hashed against :data:`SHA256`."""
    path = bundled_path()
    kind, origin = "bundled", "bundled with scikit-image"
    if path is None:
        path = (Path(root) if root is not None else data_home("lfw_faces")) / FILE
        kind, origin = "on disk", "cached copy (the installed scikit-image lacks the file)"
        if not path.is_file():
            return DatasetStatus("lfw_faces", "embedded", SIZE_BYTES, "download", False, None,
                                 str(path), f"not cached: course data lfw_faces downloads {URL}")
    ok = file_hash(path) == SHA256
    note = origin if ok else (f"{origin}, but its sha256 differs from the pinned {SHA256}: "
                              "reinstall scikit-image (pip install --force-reinstall scikit-image)")
    return DatasetStatus("lfw_faces", "embedded", path.stat().st_size, kind, True, ok, str(path), note)


register("lfw_faces", load_lfw_faces, profile="embedded", status=lfw_faces_status,
         description="scikit-image's LFW subset: 200 real photographs, 25x25 grayscale, "
                     "face / non-face (bundled, sha256-checked)")
