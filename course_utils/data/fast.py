"""``FastLoader``: an in-memory batch iterator for datasets that fit in memory.

``torchvision.datasets`` + ``DataLoader`` pays, for every image of every epoch, a PIL
conversion, a per-sample transform chain and a collate. For Fashion-MNIST-sized data that
overhead dwarfs the model. ``FastLoader`` keeps the whole set as one uint8 NCHW tensor
(on the training device if asked), gathers a batch with one indexing op, and augments the
*batch*: RandomResizedCrop + flip as batched products with per-image resampling matrices,
fused with gray -> 3 channels and normalisation into one output tensor (see :mod:`course_utils.data.transforms`).

Randomness: epoch ``e`` uses a CPU ``torch.Generator`` seeded from ``(seed, e)`` for both the
shuffle and the crop boxes, so the same seed gives the same batches on any device, and a
run resumed at epoch ``e`` (``set_epoch``) sees the batches it would have seen.
"""
from __future__ import annotations

from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from course_utils.data.batching import EpochBatches
from course_utils.data.transforms import (DEFAULT_RATIO, DEFAULT_SCALE, crop_flip_matrices,
                                          crop_resize_normalize, normalize_batch, random_flip,
                                          resize_center_crop)

__all__ = ["FastLoader", "as_nchw_uint8"]

_AUGMENTS = (None, "flip", "crop_flip", "crop")


def as_nchw_uint8(x) -> torch.Tensor:
    """uint8 images as NumPy or torch, NHW / NHWC (NumPy) or NCHW (torch) -> uint8 NCHW tensor.

    NumPy arrays follow the ``ImageData`` convention (channels last); a torch tensor with 4
    dims is taken as NCHW already. Shares memory with the input where the layout allows."""
    if isinstance(x, np.ndarray):
        if x.dtype != np.uint8:
            raise TypeError(f"x must hold uint8 images, got dtype {x.dtype}")
        if not x.flags.writeable:  # torch cannot wrap read-only memory (e.g. np.load mmap)
            x = x.copy()
        if x.ndim == 3:
            t = torch.from_numpy(np.ascontiguousarray(x)).unsqueeze(1)
        elif x.ndim == 4:
            t = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
        else:
            raise ValueError(f"x must be NHW or NHWC, got shape {x.shape}")
        return t
    if isinstance(x, torch.Tensor):
        if x.dtype != torch.uint8:
            raise TypeError(f"x must hold uint8 images, got dtype {x.dtype}")
        if x.ndim == 3:
            return x.unsqueeze(1)
        if x.ndim == 4:
            return x
        raise ValueError(f"x must be NHW or NCHW, got shape {tuple(x.shape)}")
    raise TypeError(f"x must be a NumPy array or torch tensor of uint8 images, got {type(x).__name__}")


class FastLoader(EpochBatches):
    """Iterable of ``(xb, yb)``: ``xb`` float32 NCHW (augmented, resized, normalised),
    ``yb`` int64, both on ``device``.

    Parameters
    ----------
    x, y : uint8 images (NHW/NHWC NumPy as in ``ImageData``, or NCHW tensor) and labels.
    batch_size : images per batch (default 32, as ``TFLoader``).
    shuffle, seed : reshuffle every epoch from ``seed`` (an int when shuffling or augmenting);
        defaults ``False`` and ``0``, as ``TFLoader``.
    augment : ``None`` (evaluation), ``"flip"`` (horizontal flip), ``"crop_flip"`` (the
        anchors' RandomResizedCrop + flip; needs ``size``), ``"crop"`` (RandomResizedCrop
        only), or a callable ``f(batch float NCHW in [0, 255], generator) -> batch``.
    size : output side length (the resolution parameter); ``None`` keeps the input size.
    rgb : repeat grayscale to 3 channels (for ImageNet backbones).
    mean, std : per-channel normalisation after scaling to [0, 1]; ``None`` leaves [0, 1].
    device : where the data lives and the batches are built ("cpu", "cuda", ...).
    drop_last : drop the final short batch.
    scale, ratio : RandomResizedCrop ranges (torchvision's defaults).
    crop_pct : evaluation resize (``augment=None``/``"flip"``): resize to ``size / crop_pct``
        then centre-crop ``size``; 1.0 (default) resizes straight to ``size``.

    The Keras twin is ``course_utils.keras.TFLoader`` (same arguments and defaults; it also
    takes ``y=None`` for unlabelled images, and has no ``device``/``scale``/``ratio``/
    ``crop_pct``). Both advance to the next epoch's order each time they are iterated.
    """

    def __init__(self, x, y, batch_size: int = 32, *, shuffle: bool = False, seed: int | None = 0,
                 augment: str | Callable | None = None, size: int | None = None,
                 rgb: bool = False, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, device="cpu", drop_last: bool = False,
                 scale: Sequence[float] = DEFAULT_SCALE, ratio: Sequence[float] = DEFAULT_RATIO,
                 crop_pct: float = 1.0):
        if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r}: use a positive integer")
        if not (callable(augment) or augment in _AUGMENTS):
            raise ValueError(f"augment={augment!r}: use one of {_AUGMENTS} or a callable")
        if augment in ("crop_flip", "crop") and size is None:
            raise ValueError(f"augment={augment!r} needs size= (the output resolution)")
        if (shuffle or augment is not None) and seed is None:
            raise ValueError("seed=None: pass an integer seed when shuffle=True or augment is "
                             "set, so that batches are reproducible")
        if (mean is None) != (std is None):
            raise ValueError("pass both mean and std, or neither")
        self.device = torch.device(device)
        self.x = as_nchw_uint8(x).to(self.device)
        y = torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y)
        if y.ndim != 1 or len(y) != len(self.x):
            raise ValueError(f"y must be 1-D with one label per image: {len(self.x)} images, "
                             f"y shape {tuple(y.shape)}")
        self.y = y.to(torch.int64).to(self.device)
        self.batch_size, self.shuffle, self.seed = int(batch_size), shuffle, seed
        self.augment, self.size, self.rgb, self.drop_last = augment, size, rgb, drop_last
        self.mean, self.std = (tuple(mean), tuple(std)) if mean is not None else (None, None)
        self.scale, self.ratio, self.crop_pct = tuple(scale), tuple(ratio), crop_pct
        self.epoch = 0
        # fail now, not at the first batch, on mismatched mean/std or channels
        normalize_batch(torch.zeros(1, self.x.shape[1], 1, 1), self.mean, self.std, rgb=rgb)

    def __repr__(self) -> str:
        return (f"FastLoader(n={len(self.x)}, batch_size={self.batch_size}, shuffle={self.shuffle}, "
                f"augment={self.augment!r}, size={self.size}, rgb={self.rgb}, device={self.device})")

    def _generator(self, epoch: int) -> torch.Generator:
        g = torch.Generator()
        g.manual_seed((int(self.seed or 0) * 1_000_003 + epoch) % (2 ** 63))
        return g

    def transform_batch(self, xb: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """uint8 NCHW batch -> float32 NCHW, augmented/resized/normalised as configured."""
        x = xb.float()
        aug = self.augment
        if aug in ("crop_flip", "crop"):
            # crop + resize + flip + gray->RGB + normalise fused: one output allocation
            rows, cols_t = crop_flip_matrices(len(x), x.shape[2], x.shape[3], self.size,
                                              scale=self.scale, ratio=self.ratio,
                                              flip=aug == "crop_flip", generator=generator)
            return crop_resize_normalize(x, rows, cols_t, self.mean, self.std, rgb=self.rgb)
        if callable(aug):
            x = aug(x, generator)
        if self.size is not None:
            x = resize_center_crop(x, self.size, crop_pct=self.crop_pct)
        if aug == "flip":
            x = random_flip(x, generator=generator)
        return normalize_batch(x, self.mean, self.std, rgb=self.rgb)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        g = self._generator(self._next_epoch())
        n = len(self.x)
        order = torch.randperm(n, generator=g).to(self.device) if self.shuffle else None
        stop = (n // self.batch_size) * self.batch_size if self.drop_last else n
        for start in range(0, stop, self.batch_size):
            if order is None:
                xb, yb = self.x[start:start + self.batch_size], self.y[start:start + self.batch_size]
            else:
                idx = order[start:start + self.batch_size]
                xb, yb = self.x[idx], self.y[idx]
            yield self.transform_batch(xb, g if self.augment is not None else None), yb
