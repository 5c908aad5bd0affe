"""The same arrays as a PyTorch ``Dataset``/``DataLoader`` or a ``tf.data.Dataset``.

PyTorch gets channels-first tensors, Keras gets channels-last tensors; both come from the
uint8 arrays of an :class:`~course_utils.data.ImageData`, so the two frameworks train on the
same images. TensorFlow is imported only inside ``to_tf_dataset``.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from course_utils.data.fast import as_nchw_uint8

__all__ = ["ArrayDataset", "to_torch_dataset", "to_torch_loader", "to_tf_dataset"]


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


def to_tf_dataset(x, y, batch_size: int, *, shuffle: bool = False, seed: int | None = 0,
                  size: int | None = None, rgb: bool = False,
                  mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                  flip: bool = False, drop_remainder: bool = False, prefetch: bool = True):
    """A batched ``tf.data.Dataset`` of ``(images float32 NHWC, labels int64)``.

    Images are scaled to [0, 1], optionally resized to ``size`` (bilinear, antialiased),
    gray -> 3 channels with ``rgb=True``, normalised with ``mean``/``std``, and randomly
    flipped with ``flip=True`` (seeded). Heavier augmentation belongs in the model as Keras
    preprocessing layers (``RandomFlip``, ``RandomZoom`` ...), as in the Keras guides, so it
    runs in the graph and is switched off at inference automatically.
    """
    from course_utils.keras._backend import tf  # Triton before TensorFlow (see there)

    x = np.asarray(x)
    if x.dtype != np.uint8 or x.ndim not in (3, 4):
        raise TypeError(f"x must be uint8 NHW or NHWC, got {x.dtype} with shape {x.shape}")
    if x.ndim == 3:
        x = x[..., None]
    y = np.asarray(y, dtype=np.int64)
    if len(y) != len(x):
        raise ValueError(f"{len(x)} images but {len(y)} labels")
    if (shuffle or flip) and seed is None:
        raise ValueError("seed=None: pass an integer seed when shuffle or flip is on")
    channels = 3 if (rgb and x.shape[-1] == 1) else x.shape[-1]
    if mean is not None:
        mean, std = tuple(mean), tuple(std)
        if len(mean) == 1:
            mean, std = mean * channels, std * channels
        if len(mean) != channels or len(std) != channels:
            raise ValueError(f"mean/std have {len(mean)}/{len(std)} values for {channels}-channel "
                             "images" + ("; pass rgb=True" if x.shape[-1] == 1 else ""))
        m = tf.constant(mean, tf.float32)
        s = tf.constant(std, tf.float32)

    def prep(img, label):
        img = tf.cast(img, tf.float32) / 255.0
        if size is not None:
            img = tf.image.resize(img, (size, size), method="bilinear", antialias=True)
        if channels == 3 and img.shape[-1] == 1:
            img = tf.repeat(img, 3, axis=-1)
        if mean is not None:
            img = (img - m) / s
        return img, label

    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    ds = ds.map(prep, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if flip:
        ds = ds.map(lambda img, label: (tf.image.random_flip_left_right(img, seed=seed), label),
                    deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE) if prefetch else ds
