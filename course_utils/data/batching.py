"""``EpochBatches``: what every in-memory loader of the course shares, whatever the framework.

:class:`~course_utils.data.FastLoader` (PyTorch) and ``course_utils.keras.TFLoader`` hold a
whole split in memory and cut it into batches whose order depends on ``(seed, epoch)``.
Their length, their ``set_epoch`` (how ``fit`` makes a resumed run see the batches it would
have seen) and their ``from_data`` constructor must agree, or the two frameworks would count
steps per epoch differently; so they live here once.
"""
from __future__ import annotations

import math

__all__ = ["EpochBatches"]


class EpochBatches:
    """Mixin for loaders with attributes ``x`` (the images), ``batch_size``, ``drop_last``
    and ``epoch``, and a constructor ``cls(x, y, batch_size, **kwargs)``."""

    @classmethod
    def from_data(cls, data, split: str = "train", batch_size: int = 128, **kwargs):
        """A loader over ``data.x_<split>``, ``data.y_<split>`` of an ``ImageData``."""
        if split not in ("train", "test"):
            raise ValueError(f"{cls.__name__}.from_data: split={split!r}; use 'train' or 'test'")
        return cls(getattr(data, f"x_{split}"), getattr(data, f"y_{split}"), batch_size, **kwargs)

    @property
    def num_samples(self) -> int:
        return len(self.x)

    def __len__(self) -> int:
        n = len(self.x)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration produce epoch ``epoch``'s order (and augmentation)."""
        self.epoch = int(epoch)

    def _next_epoch(self) -> int:
        """The epoch an iteration (``iter(loader)``) produces; the one after comes next.

        Both twins advance on iteration, so a plain ``for epoch in ...: for xb, yb in
        loader`` sees a new shuffle every epoch in either framework, and ``set_epoch``
        (what ``fit`` calls) chooses the epoch explicitly."""
        epoch = self.epoch
        self.epoch = epoch + 1
        return epoch
