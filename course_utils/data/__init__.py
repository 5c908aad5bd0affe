"""Datasets for the course, the same arrays for PyTorch and Keras.

``load(name)`` returns an :class:`ImageData` (uint8 NumPy images, int64 labels, class
names); ``list_datasets()`` names what exists (``lfw_faces``: 200 real face / non-face
photographs bundled with scikit-image); ``dataset_status(name)`` says what of it is on this
machine, its size and whether it passes its hash check (``course data --list``). Subsets (``per_class``, ``select_classes``,
``train_val_split``) draw from the training set only, so the official test set never leaks.
``FastLoader`` iterates in-memory data with batched augmentation (its Keras twin is
``course_utils.keras.TFLoader``); ``to_torch_dataset`` and ``to_torch_loader`` hand the arrays
to ``torch.utils.data``;
``train_transform``/``eval_transform`` are the anchors' per-sample pipelines;
``load_image_folder`` reads any ImageFolder tree and ``dataset_folder`` gives the extracted
tree of a ``full``-profile dataset.
"""
from __future__ import annotations

from course_utils._lazy import lazy_getattr
from course_utils.data.core import (DatasetStatus, ImageData, UnknownDatasetError, dataset_info,
                                    dataset_status, list_datasets, load, stratified_indices,
                                    stratified_split_indices)
# The dataset modules register themselves into core's registry when imported, here and only
# here: core never imports them, so the registry and its entries do not import each other.
from course_utils.data import digits, fashion_mnist, folders, lfw_faces  # noqa: F401,E402

# The PyTorch-backed parts load on first use, so that a NumPy/scikit-learn exercise (and each
# notebook graded by nbgrader) does not pay for importing torch just to read the arrays.
_LAZY = {
    "ArrayDataset": "adapters", "to_torch_dataset": "adapters",
    "to_torch_loader": "adapters", "FastLoader": "fast", "CorruptImageError": "folders",
    "dataset_folder": "folders", "load_image_folder": "folders", "IMAGENET_MEAN": "transforms",
    "IMAGENET_STD": "transforms", "INCEPTION_MEAN": "transforms", "INCEPTION_STD": "transforms",
    "eval_transform": "transforms", "train_transform": "transforms",
}


__getattr__ = lazy_getattr(__name__, _LAZY, globals())


__all__ = ["ImageData", "UnknownDatasetError", "load", "list_datasets", "dataset_info",
           "dataset_status", "DatasetStatus",
           "stratified_indices", "stratified_split_indices", "FastLoader", "ArrayDataset",
           "to_torch_dataset", "to_torch_loader", "train_transform",
           "eval_transform", "IMAGENET_MEAN", "IMAGENET_STD", "INCEPTION_MEAN", "INCEPTION_STD",
           "load_image_folder", "dataset_folder", "CorruptImageError"]
