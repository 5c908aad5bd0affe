"""Datasets for the course, the same arrays for PyTorch and Keras.

``load(name)`` returns an :class:`ImageData` (uint8 NumPy images, int64 labels, class
names); ``list_datasets()`` names what exists. Subsets (``per_class``, ``select_classes``,
``train_val_split``) draw from the training set only, so the official test set never leaks.
"""
from __future__ import annotations

from course_utils.data.core import (ImageData, UnknownDatasetError, dataset_info, list_datasets,
                                    load, stratified_indices, stratified_split_indices)

__all__ = ["ImageData", "UnknownDatasetError", "load", "list_datasets", "dataset_info",
           "stratified_indices", "stratified_split_indices"]
