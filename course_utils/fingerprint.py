"""Fingerprints: short, stable hashes that say "the same data" or "the same weights".

Caches are keyed by what went into them (the feature cache, the pretraining caches), so
every cache needs the same few hashes, computed the same way in both frameworks. They live
here once, and this module imports neither framework: callers hand over NumPy arrays, or
``(name, dtype, shape, bytes)`` records for the weights of a model.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping

import numpy as np

__all__ = ["array_fingerprint", "dataset_fingerprint", "weights_fingerprint", "record_digest"]


def array_fingerprint(x) -> str:
    """sha256 (64 hex digits) of an array's dtype, shape and bytes: two arrays share a
    fingerprint only if they hold the same values in the same order and layout."""
    a = np.ascontiguousarray(np.asarray(x))
    h = hashlib.sha256(f"{a.dtype.str}|{a.shape}|".encode())
    h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def dataset_fingerprint(data) -> str:
    """16 hex digits over an ``ImageData``'s training images and labels (dtype, shape and
    bytes of ``x_train`` and ``y_train``): the data part of a pretraining cache key."""
    h = hashlib.sha256()
    for a in (data.x_train, data.y_train):
        h.update(str((a.dtype, a.shape)).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def weights_fingerprint(tensors: Iterable[tuple[str, str, tuple, object]]) -> str:
    """sha256 over a model's weights, given as ``(name, dtype, shape, raw bytes)`` records in
    a fixed order (the PyTorch state dict's, or Keras's ``model.weights``): it changes as
    soon as training changes a single value. ``raw bytes`` is anything ``memoryview`` takes
    (the framework side turns its tensors into bytes; bfloat16 included)."""
    h = hashlib.sha256()
    for name, dtype, shape, raw in tensors:
        h.update(f"{name}|{dtype}|{tuple(shape)}|".encode())
        h.update(memoryview(raw).cast("B"))
    return h.hexdigest()


def record_digest(record: Mapping, length: int = 32) -> str:
    """The first ``length`` hex digits of sha256 over ``record`` as canonical JSON (sorted
    keys, ``str`` for anything JSON lacks): same record, same digest, in any process."""
    blob = json.dumps(record, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]
