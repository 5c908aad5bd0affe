"""The on-disk feature cache both frameworks share: keys, paths, reading and writing.

Features of a frozen network are computed once per (model, weights, layer, data,
preprocessing) and kept as ``<cache_dir>/<key>.npy`` (float32, one row per image) with a
``<key>.json`` beside it saying what the key was made of, for people. The PyTorch
extractor (:mod:`course_utils.features`) and the Keras one (:mod:`course_utils.keras.features`)
both go through this module, so a notebook can mix their features; it imports neither
framework, so the Keras side never imports PyTorch to compute a hash.

Both files are written atomically (:mod:`course_utils.atomic`), so an interrupted run never
leaves a half-written cache entry.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from course_utils.atomic import atomic_write, atomic_write_json
from course_utils.fingerprint import array_fingerprint, record_digest
from course_utils.preprocessing import RESIZE_RULE

__all__ = ["CACHE_FORMAT", "data_fingerprint", "feature_cache_key", "feature_cache_dir",
           "feature_cache_path", "save_cached_features", "load_cached_features"]

log = logging.getLogger(__name__)

#: bumped when the meaning of a cache entry changes; part of every key. 2: the resize rule
#: (``preprocessing.RESIZE_RULE``) joined the key, after entries written under the old
#: ``round(size/crop_pct)`` rule were read back under the new floor rule with the same key.
CACHE_FORMAT = 2

#: the fingerprint of an image array (see :func:`course_utils.fingerprint.array_fingerprint`)
data_fingerprint = array_fingerprint


def feature_cache_key(model: str, weights, layer, data, transform, **extra) -> str:
    """The cache key: 32 hex digits of sha256 over a canonical JSON record of
    ``model`` (registry name), ``weights`` (weights name, ``None`` for random init),
    ``layer`` (``None`` = the classifier's input), ``data`` (a :func:`data_fingerprint`, or
    the array itself), ``transform`` (its ``repr``, or the object), the preprocessing
    library's resize rule (a transform's ``repr`` names its size and crop fraction, not the
    rule that turns them into pixels) and any ``extra`` fields
    (e.g. ``framework="keras"``, ``state=...``). Same inputs, same key, in any process and
    in both frameworks."""
    if not isinstance(data, str):
        data = data_fingerprint(data)
    if not isinstance(transform, str):
        transform = repr(transform)
    record = {"format": CACHE_FORMAT, "resize_rule": RESIZE_RULE, "model": str(model),
              "weights": None if weights is None else str(getattr(weights, "name", weights)),
              "layer": None if layer is None else str(layer), "data": data,
              "transform": transform}
    for k, v in extra.items():
        if k in record:
            raise ValueError(f"feature_cache_key: extra field {k!r} would overwrite a main "
                             "field; give it another name")
        record[k] = v
    return record_digest(record, 32)


def feature_cache_dir(cache_dir=None) -> Path:
    """``cache_dir`` if given, else ``$COURSE_DATA/features`` (``~/.cache/course_utils/
    features`` when ``COURSE_DATA`` is unset)."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    from course_utils.download import data_home

    return data_home("features")


def feature_cache_path(key: str, cache_dir=None) -> Path:
    """The ``.npy`` file of a cache key."""
    return feature_cache_dir(cache_dir) / f"{key}.npy"


def save_cached_features(key: str, features: np.ndarray, cache_dir=None,
                         meta: dict | None = None) -> Path:
    """Write ``features`` (as float32) under ``key``, atomically; ``meta`` (what the key was
    made of) goes to the ``.json`` beside it. Returns the ``.npy`` path."""
    path = feature_cache_path(key, cache_dir)
    arr = np.ascontiguousarray(features, dtype=np.float32)
    info = {"key": key, "shape": list(arr.shape), "dtype": "float32", **(meta or {})}
    atomic_write_json(path.with_suffix(".json"), info, indent=1, sort_keys=True, default=str)
    atomic_write(path, lambda f: np.save(f, arr, allow_pickle=False))
    log.info("cached features %s -> %s", arr.shape, path)
    return path


def load_cached_features(key: str, cache_dir=None) -> np.ndarray | None:
    """The cached features of ``key``, or None if there are none (or the file is unreadable,
    which is logged and treated as a miss)."""
    path = feature_cache_path(key, cache_dir)
    if not path.exists():
        return None
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        log.warning("ignoring unreadable feature cache %s (%s); recomputing", path, exc)
        return None
