"""Datasets for the course, the same arrays for PyTorch and Keras.

``load(name)`` returns an :class:`ImageData` (uint8 NumPy images, int64 labels, class
names); ``list_datasets()`` names what exists. Subsets (``per_class``, ``select_classes``,
``train_val_split``) draw from the training set only, so the official test set never leaks.
``FastLoader`` iterates in-memory data with batched augmentation; ``to_torch_dataset``,
``to_torch_loader`` and ``to_tf_dataset`` hand the same arrays to each framework;
``train_transform``/``eval_transform`` are the anchors' per-sample pipelines;
``load_image_folder`` reads any ImageFolder tree and ``dataset_folder`` gives the extracted
tree of a ``full``-profile dataset.
"""
from __future__ import annotations

from course_utils.data.adapters import ArrayDataset, to_tf_dataset, to_torch_dataset, to_torch_loader
from course_utils.data.core import (ImageData, UnknownDatasetError, dataset_info, list_datasets,
                                    load, stratified_indices, stratified_split_indices)
from course_utils.data.fast import FastLoader
from course_utils.data.folders import CorruptImageError, dataset_folder, load_image_folder
from course_utils.data.transforms import (IMAGENET_MEAN, IMAGENET_STD, INCEPTION_MEAN,
                                          INCEPTION_STD, eval_transform, train_transform)

__all__ = ["ImageData", "UnknownDatasetError", "load", "list_datasets", "dataset_info",
           "stratified_indices", "stratified_split_indices", "FastLoader", "ArrayDataset",
           "to_torch_dataset", "to_torch_loader", "to_tf_dataset", "train_transform",
           "eval_transform", "IMAGENET_MEAN", "IMAGENET_STD", "INCEPTION_MEAN", "INCEPTION_STD",
           "load_image_folder", "dataset_folder", "CorruptImageError"]
