"""The dataset object shared by PyTorch and Keras, the registry behind ``load``, and subsets.

Every dataset comes back as one :class:`ImageData`: uint8 NumPy images (NHW for grayscale,
NHWC for colour) and int64 labels. Both frameworks read the same arrays, so a PyTorch and a
Keras notebook that ask for the same subset with the same seed train on the same images.

Subsets never leak: ``per_class`` and ``train_val_split`` only ever draw from the training
set, and the official test set travels unchanged as ``x_test``/``y_test``.
"""
from __future__ import annotations

import difflib
import inspect
import logging
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np

__all__ = ["ImageData", "load", "list_datasets", "register", "dataset_info", "dataset_status",
           "DatasetStatus", "stratified_indices", "stratified_split_indices",
           "UnknownDatasetError"]

log = logging.getLogger(__name__)


class UnknownDatasetError(KeyError, ValueError):
    """``load`` was given a name that is not registered; the message lists the valid ones."""

    def __str__(self) -> str:  # KeyError would wrap the message in quotes
        return str(self.args[0])


@dataclass(frozen=True)
class DatasetStatus:
    """What is on this machine for one dataset (``course data --list``), found without
    loading it: hashes are checked, images are not decoded."""

    name: str
    profile: str
    #: Bytes: the download when nothing is cached (None: the publisher gives no size), else
    #: what is on disk.
    size_bytes: int | None
    #: What ``size_bytes`` measures: "download", "on disk", "bundled", "Debian package".
    size_kind: str
    #: Loadable without the network (bundled, installed by a system package, or cached).
    cached: bool
    #: True/False: the files were hashed now against the pinned values and matched / did
    #: not; None: nothing to check (not cached, or no hash is pinned for that source).
    verified: bool | None
    #: Where the data is (or where a copy can be put by hand).
    where: str
    #: One line for a person: the source, or what is wrong and what to do.
    note: str = ""


@dataclass(frozen=True)
class DatasetSpec:
    """One registered dataset: how to load it and what a person should know about it."""

    name: str
    loader: Callable[..., "ImageData"]
    profile: str  # "embedded" (no internet needed) or "full" (download)
    description: str
    #: ``status(root) -> DatasetStatus``; ``root`` as for the loader (None: the default).
    status: Callable[..., DatasetStatus] | None = None


_REGISTRY: dict[str, DatasetSpec] = {}


def register(name: str, loader: Callable[..., "ImageData"], *, profile: str,
             description: str, status: Callable[..., DatasetStatus] | None = None) -> None:
    """Add a dataset to ``load``/``list_datasets``. ``loader(root=, download=, **options)``;
    ``status(root)`` reports what is on disk for :func:`dataset_status`.
    A name is registered once (a second loader would silently replace the first)."""
    if profile not in ("embedded", "full"):
        raise ValueError(f"profile={profile!r} for dataset {name!r}: use 'embedded' or 'full'")
    if name in _REGISTRY:
        raise ValueError(f"register: a dataset named {name!r} is already registered; pick "
                         "another name")
    _REGISTRY[name] = DatasetSpec(name, loader, profile, description, status)


def list_datasets(profile: str | None = None) -> list[str]:
    """Names accepted by :func:`load`, optionally only those of one profile
    (``"embedded"``: available offline; ``"full"``: downloaded on first use)."""
    return [n for n, s in _REGISTRY.items() if profile is None or s.profile == profile]


def dataset_info(name: str) -> DatasetSpec:
    """The registry entry (profile, description) of ``name``."""
    return _spec(name)


def dataset_status(name: str, *, root=None) -> DatasetStatus:
    """Whether ``name`` is available offline and passes its hash check, its size and where
    it is (``root`` as for :func:`load`). Reads and hashes files; never downloads."""
    spec = _spec(name)
    if spec.status is None:
        return DatasetStatus(name, spec.profile, None, "unknown", False, None, "?",
                             "this dataset reports no status; load it to find out")
    return spec.status(root=root)


def _spec(name: str) -> DatasetSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        valid = ", ".join(sorted(_REGISTRY))
        close = difflib.get_close_matches(str(name), list(_REGISTRY), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise UnknownDatasetError(
            f"Unknown dataset name={name!r}. Valid names: {valid}.{hint}") from None


def load(name: str, *, root=None, download: bool = True, **options) -> "ImageData":
    """Load dataset ``name`` as an :class:`ImageData`.

    ``root`` is the folder holding this dataset's cache (default ``$COURSE_DATA/<name>``,
    ``$COURSE_DATA`` defaulting to ``~/.cache/course_utils``). ``download=False`` never touches
    the network and raises a clear error naming where a copy could be put. Other ``options``
    go to the dataset's loader (e.g. ``size=`` or ``skip_corrupt=`` for image folders).
    """
    spec = _spec(name)
    accepted = [p for p in inspect.signature(spec.loader).parameters if p not in ("root", "download")]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise TypeError(f"load({name!r}) got unknown option(s) {unknown}; "
                        f"{name!r} accepts {accepted or 'no options'} besides root= and download=")
    log.info("loading dataset %s (%s profile)", name, spec.profile)
    return spec.loader(root=root, download=download, **options)


# --------------------------------------------------------------------------- subsets

def _rng(seed) -> np.random.Generator:
    if seed is None:
        raise ValueError("seed=None: pass an integer seed so that the subset is reproducible")
    return np.random.default_rng(seed)


def stratified_indices(y: np.ndarray, n: int, seed: int,
                       classes: Iterable[str] | None = None) -> np.ndarray:
    """Sorted indices of ``n`` samples of every label in ``y``, drawn without replacement.

    The same ``seed`` gives the same indices; a class with fewer than ``n`` samples raises
    (naming the class and its count) rather than silently returning an unbalanced subset.
    """
    y = np.asarray(y)
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n={n!r}: the number of images per class must be a positive integer")
    names = list(classes) if classes is not None else None
    rng = _rng(seed)
    picked = []
    for label in np.unique(y):
        idx = np.flatnonzero(y == label)
        if len(idx) < n:
            cname = f"{label} ({names[label]!r})" if names and 0 <= label < len(names) else f"{label}"
            raise ValueError(f"n={n} images per class requested but class {cname} has only "
                             f"{len(idx)} training images; use n <= {len(idx)}")
        picked.append(rng.choice(idx, size=n, replace=False))
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, dtype=np.int64)


def stratified_split_indices(y: np.ndarray, val_fraction: float,
                             seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, val indices), sorted, with ``val_fraction`` of every class in val.

    Each class keeps at least one sample on each side, so both parts see every class.
    """
    y = np.asarray(y)
    if not (isinstance(val_fraction, (float, int)) and 0.0 < float(val_fraction) < 1.0):
        raise ValueError(f"val_fraction={val_fraction!r}: use a fraction strictly between 0 and 1")
    rng = _rng(seed)
    train, val = [], []
    for label in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == label))
        if len(idx) < 2:
            raise ValueError(f"class {label} has {len(idx)} training image(s): a train/val split "
                             "needs at least 2 per class")
        k = int(round(val_fraction * len(idx)))
        k = min(max(k, 1), len(idx) - 1)
        val.append(idx[:k])
        train.append(idx[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


@dataclass(frozen=True, repr=False)
class ImageData:
    """Images and labels of one dataset, the same object for PyTorch and Keras.

    ``x_*`` are uint8 arrays, NHW (grayscale) or NHWC (colour); ``y_*`` are int64 labels
    indexing ``classes``. The helpers return new objects; the arrays are never modified.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: tuple[str, ...]
    #: Free-form provenance (source files, subset parameters); not compared.
    meta: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        for split in ("train", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim not in (3, 4):
                raise TypeError(f"{self.name}: x_{split} must be a uint8 NHW or NHWC array, got "
                                f"{getattr(x, 'dtype', type(x))} with shape {getattr(x, 'shape', '?')}")
            if not isinstance(y, np.ndarray) or y.dtype != np.int64 or y.ndim != 1:
                raise TypeError(f"{self.name}: y_{split} must be a 1-D int64 array, got "
                                f"{getattr(y, 'dtype', type(y))} with shape {getattr(y, 'shape', '?')}")
            if len(x) != len(y):
                raise ValueError(f"{self.name}: {len(x)} images but {len(y)} labels in the {split} split")
        object.__setattr__(self, "classes", tuple(str(c) for c in self.classes))

    # ------------------------------------------------------------------ description
    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, ...]:
        """Shape of one image: (H, W) or (H, W, C)."""
        return tuple(self.x_train.shape[1:])

    def __repr__(self) -> str:
        return (f"ImageData(name={self.name!r}, train={len(self.x_train)}, test={len(self.x_test)}, "
                f"image_shape={self.image_shape}, classes={len(self.classes)})")

    def _replace(self, **changes) -> "ImageData":
        fields = dict(name=self.name, x_train=self.x_train, y_train=self.y_train,
                      x_test=self.x_test, y_test=self.y_test, classes=self.classes,
                      meta=dict(self.meta))
        fields.update(changes)
        return ImageData(**fields)

    # ------------------------------------------------------------------ subsets
    def _class_index(self, c) -> int:
        if isinstance(c, (int, np.integer)) and not isinstance(c, bool):
            if not 0 <= c < len(self.classes):
                raise ValueError(f"class index {c} out of range for {self.name} "
                                 f"(0..{len(self.classes) - 1})")
            return int(c)
        if isinstance(c, str) and c in self.classes:
            return self.classes.index(c)
        raise ValueError(f"class {c!r} is not in {self.name}; classes are {list(self.classes)}")

    def select_classes(self, classes: Sequence[int | str], relabel: bool = True) -> "ImageData":
        """Keep only ``classes`` (indices or names) in train and test.

        With ``relabel=True`` (default) labels become 0..k-1 in the order given and
        ``classes`` is narrowed to those names, e.g. the source task ``range(5)`` and the
        target task ``range(5, 10)`` of Fashion-MNIST are both 5-class problems. With
        ``relabel=False`` the original labels and class list are kept.
        """
        if isinstance(classes, (int, str, np.integer)):
            classes = [classes]
        wanted = [self._class_index(c) for c in classes]
        if not wanted:
            raise ValueError("classes=[]: select at least one class")
        if len(set(wanted)) != len(wanted):
            raise ValueError(f"classes={list(classes)!r} lists a class twice")
        lut = np.full(len(self.classes), -1, dtype=np.int64)
        lut[wanted] = np.arange(len(wanted)) if relabel else wanted
        tr, te = np.isin(self.y_train, wanted), np.isin(self.y_test, wanted)
        meta = dict(self.meta, selected_classes=wanted, relabel=relabel)
        return self._replace(
            x_train=self.x_train[tr], y_train=lut[self.y_train[tr]],
            x_test=self.x_test[te], y_test=lut[self.y_test[te]],
            classes=tuple(self.classes[i] for i in wanted) if relabel else self.classes, meta=meta)

    def per_class(self, n: int, seed: int) -> "ImageData":
        """``n`` training images of every class, drawn with ``seed`` (stratified, sorted in
        the original order). The test set is unchanged. Raises if a class has fewer than ``n``."""
        idx = stratified_indices(self.y_train, n, seed, self.classes)
        return self._replace(x_train=self.x_train[idx], y_train=self.y_train[idx],
                             meta=dict(self.meta, per_class=n, seed=seed, train_indices=idx))

    def train_val_split(self, val_fraction: float, seed: int) -> tuple["ImageData", "ImageData"]:
        """Carve a stratified validation set out of the training set.

        Returns ``(train_part, val_part)``: each holds its images in ``x_train``/``y_train``,
        and both keep the official test set as ``x_test``/``y_test`` (never used for picking).
        """
        tr, va = stratified_split_indices(self.y_train, val_fraction, seed)
        meta = dict(self.meta, val_fraction=val_fraction, seed=seed)
        return (self._replace(x_train=self.x_train[tr], y_train=self.y_train[tr],
                              meta=dict(meta, train_indices=tr)),
                self._replace(name=f"{self.name}/val", x_train=self.x_train[va],
                              y_train=self.y_train[va], meta=dict(meta, train_indices=va)))
