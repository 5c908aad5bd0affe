"""scikit-learn's bundled handwritten digits (8x8), as an :class:`ImageData`.

The 1,797 images have no official train/test split; a fixed stratified split (seed 0,
25 % test) stands in for one so that every notebook and both frameworks see the same test
set. Pixel values 0..16 are scaled to 0..255 uint8 like every other dataset here.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from course_utils.data.core import DatasetStatus, ImageData, register, stratified_split_indices

__all__ = ["load_digits", "digits_status", "TEST_FRACTION", "SPLIT_SEED"]

TEST_FRACTION = 0.25
SPLIT_SEED = 0


def load_digits(*, root=None, download: bool = True) -> ImageData:
    """8x8 grayscale digits 0-9: 1,347 train and 450 test images (fixed split).

    ``root`` and ``download`` are accepted for a uniform ``load`` signature; the data ships
    with scikit-learn, so nothing is cached or downloaded.
    """
    from sklearn.datasets import load_digits as sk_load

    bunch = sk_load()
    x = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    y = bunch.target.astype(np.int64)
    tr, te = stratified_split_indices(y, TEST_FRACTION, SPLIT_SEED)
    return ImageData("digits", x[tr], y[tr], x[te], y[te], tuple(str(i) for i in range(10)),
                     meta={"source": "sklearn.datasets.load_digits", "split_seed": SPLIT_SEED})


def digits_status(*, root=None) -> DatasetStatus:
    """The file scikit-learn ships (found without importing scikit-learn); it pins no hash."""
    spec = importlib.util.find_spec("sklearn")
    path = (Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "digits.csv.gz"
            if spec is not None and spec.submodule_search_locations else None)
    if path is None or not path.is_file():
        return DatasetStatus("digits", "embedded", None, "bundled", False, None,
                             "scikit-learn", "scikit-learn or its digits file is missing: "
                             "pip install scikit-learn")
    return DatasetStatus("digits", "embedded", path.stat().st_size, "bundled", True, None,
                         str(path), "bundled with scikit-learn (no pinned hash to check)")


register("digits", load_digits, profile="embedded", status=digits_status,
         description="scikit-learn handwritten digits, 8x8 grayscale, 10 classes (bundled)")
