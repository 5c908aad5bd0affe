"""The arrays of an :class:`~course_utils.data.ImageData` as a PyTorch ``Dataset``/``DataLoader``.

PyTorch gets channels-first tensors from the same uint8 arrays Keras reads, so the two
frameworks train on the same images. The Keras side's input pipeline is
``course_utils.keras.TFLoader`` (stateless per-epoch shuffles, so resumed runs see the
batches an uninterrupted run would); there is no ``tf.data`` adapter here, so this PyTorch
module never imports TensorFlow.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from course_utils.data.fast import as_nchw_uint8

__all__ = ["ArrayDataset", "to_torch_dataset", "to_torch_loader"]


class ArrayDataset(torch.utils.data.Dataset):
    """Images and labels held in memory; item ``i`` is ``(image, label)``.

    Without ``transform`` the image is a float32 CHW tensor in [0, 1]. With ``transform``
    the transform receives the uint8 CHW tensor (what torchvision ``transforms.v2`` take,
    e.g. :func:`~course_utils.data.transforms.train_transform`) and its result is returned.
    """

    def __init__(self, x, y, transform: Callable | None = None):
        self.x = as_nchw_uint8(x)
        self.y = np.asarray(y, dtype=np.int64)
        if self.y.ndim != 1 or len(self.y) != len(self.x):
            raise ValueError(f"y must be 1-D with one label per image: {len(self.x)} images, "
                             f"y shape {self.y.shape}")
        self.transform = transform

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        img = self.x[i]
        img = self.transform(img) if self.transform is not None else img.float().div_(255.0)
        return img, int(self.y[i])


def to_torch_dataset(x, y, transform: Callable | None = None) -> ArrayDataset:
    """A ``torch.utils.data.Dataset`` over uint8 images ``x`` (NHW/NHWC NumPy) and labels ``y``."""
    return ArrayDataset(x, y, transform)


def to_torch_loader(x, y, batch_size: int, *, shuffle: bool, seed: int | None,
                    transform: Callable | None = None, num_workers: int = 0,
                    drop_last: bool = False, **kwargs) -> torch.utils.data.DataLoader:
    """A ``DataLoader`` whose shuffling comes from ``seed`` (same seed, same order).

    Random transforms in worker processes draw from torch's per-worker seeds, which the
    ``DataLoader`` derives from the same generator, so they are reproducible too."""
    if shuffle and seed is None:
        raise ValueError("seed=None: pass an integer seed when shuffle=True")
    g = torch.Generator()
    g.manual_seed(int(seed or 0))
    return torch.utils.data.DataLoader(to_torch_dataset(x, y, transform), batch_size=batch_size,
                                       shuffle=shuffle, generator=g, num_workers=num_workers,
                                       drop_last=drop_last, **kwargs)
