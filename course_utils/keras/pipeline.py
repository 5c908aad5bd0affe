"""``TFLoader``: in-memory images -> ``tf.data`` batches, with a per-epoch order that a resumed
run reproduces.

It is the Keras twin of ``course_utils.data.FastLoader`` (same arguments, same meaning):
uint8 images are scaled to [0, 1], optionally resized, repeated to 3 channels and
normalised with ``mean``/``std``; labels become int64. It is the course's only ``tf.data``
pipeline, because of the randomness: ``tf.data``'s ``shuffle`` draws each epoch's order
from a stateful generator, so a run resumed at epoch 5 in a new process sees epoch 1's
order again. Here epoch ``e`` is shuffled (and flipped) by stateless ops seeded
with ``(seed, e)``, so an interrupted-and-resumed ``fit`` ends with the same weights as an
uninterrupted one, and two runs with the same seed see the same batches.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from course_utils.data.batching import EpochBatches
from course_utils.keras._backend import tf

__all__ = ["TFLoader"]

_AUGMENTS = (None, "flip")


class TFLoader(EpochBatches):
    """Batches of ``(x float32 NHWC, y int64)`` as ``tf.data`` pipelines.

    ``x``: uint8 images NHW or NHWC (scaled to [0, 1]) or float arrays (used as they are,
    after ``size``/``rgb``/``mean``/``std``); a 2-D ``x`` is a batch of feature vectors. ``y``: labels, or None for unlabelled data
    (batches are then ``x`` alone, for ``predict``). ``shuffle`` needs an int ``seed``.
    ``augment="flip"``: random horizontal flips (training only). For heavier augmentation use
    Keras preprocessing layers inside the model, as the Keras guides do.

    ``dataset(epoch)`` is one epoch; ``repeat(start_epoch)`` is epoch after epoch forever
    (what :func:`course_utils.keras.fit` feeds to ``model.fit`` with ``steps_per_epoch=len(loader)``).
    Iterating the loader itself gives the epoch set by ``set_epoch`` (0 by default) and
    advances to the next one, as ``FastLoader`` does.
    """

    def __init__(self, x, y=None, batch_size: int = 32, *, shuffle: bool = False,
                 seed: int | None = 0, size: int | None = None, rgb: bool = False,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 augment: str | None = None, drop_last: bool = False):
        x = np.asarray(x)
        if x.ndim == 3:
            x = x[..., None]
        if x.ndim not in (2, 4):
            raise ValueError(f"TFLoader: x must be images NHW or NHWC (or feature vectors N x D), "
                             f"got shape {x.shape}")
        if x.ndim == 2 and (size or rgb or augment):
            raise ValueError("TFLoader: size, rgb and augment apply to images; x holds vectors "
                             f"(shape {x.shape})")
        if y is not None:
            y = np.asarray(y).astype(np.int64, copy=False)
            if len(y) != len(x):
                raise ValueError(f"TFLoader: {len(x)} images but {len(y)} labels")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"TFLoader: batch_size must be a positive int, got {batch_size!r}")
        if augment not in _AUGMENTS:
            raise ValueError(f"TFLoader: augment must be one of {_AUGMENTS}, got {augment!r}")
        if (shuffle or augment) and seed is None:
            raise ValueError("TFLoader: shuffle/augment need an int seed (got seed=None)")
        if (mean is None) != (std is None):
            raise ValueError("TFLoader: pass both mean and std, or neither")
        channels = 3 if rgb else x.shape[-1]
        if rgb and x.shape[-1] not in (1, 3):
            raise ValueError(f"TFLoader: rgb=True needs 1- or 3-channel images, got {x.shape[-1]}")
        if mean is not None:
            mean, std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
            if len(mean) == 1:
                mean, std = mean * channels, std * channels
            if len(mean) != channels or len(std) != channels:
                raise ValueError(f"TFLoader: mean/std have {len(mean)}/{len(std)} values for "
                                 f"{channels}-channel images")
        self.x, self.y = x, y
        self.batch_size, self.shuffle, self.seed = batch_size, bool(shuffle), seed
        self.size, self.rgb, self.mean, self.std = size, bool(rgb), mean, std
        self.augment, self.drop_last = augment, bool(drop_last)
        self.epoch = 0
        self._x_t = None

    def __repr__(self) -> str:
        return (f"TFLoader(n={len(self.x)}, batch_size={self.batch_size}, shuffle={self.shuffle}, "
                f"seed={self.seed}, size={self.size}, rgb={self.rgb}, mean={self.mean}, "
                f"std={self.std}, augment={self.augment!r})")

    # --- the pipeline ---------------------------------------------------------------------

    def _tensors(self):
        """The images and labels as eager constants, made once.

        Only eager tensors may be cached: a constant created while ``tf.data`` traces a
        function (``flat_map`` in :meth:`repeat`) belongs to that trace's graph, and a second
        pipeline (the next ``fit`` on the same loader) could not use it. So the callers make
        them eagerly before any tracing starts.
        """
        if self._x_t is None:
            if not tf.executing_eagerly():
                raise RuntimeError("TFLoader._tensors must first be called eagerly")
            self._x_t = tf.constant(self.x)
            self._y_t = tf.constant(self.y) if self.y is not None else None
        return self._x_t, self._y_t

    def _prep(self, xb, epoch, step):
        x = tf.cast(xb, tf.float32)
        if self.x.dtype == np.uint8:
            x = x / 255.0
        if self.size is not None:
            x = tf.image.resize(x, (self.size, self.size), method="bilinear", antialias=True)
        if self.rgb and self.x.shape[-1] == 1:
            x = tf.repeat(x, 3, axis=-1)
        if self.augment == "flip":
            seed = tf.stack([tf.cast(self.seed, tf.int64) * 1_000_003 + epoch, step])
            x = tf.image.stateless_random_flip_left_right(x, seed=seed)
        if self.mean is not None:
            x = (x - tf.constant(self.mean, tf.float32)) / tf.constant(self.std, tf.float32)
        return x

    def _epoch_dataset(self, epoch):
        """One epoch as a dataset; ``epoch`` may be a Python int or a scalar int64 tensor."""
        n = len(self.x)
        x_t, y_t = self._tensors()
        epoch = tf.cast(epoch, tf.int64)
        idx = tf.range(n, dtype=tf.int64)
        if self.shuffle:
            idx = tf.random.experimental.stateless_shuffle(
                idx, seed=tf.stack([tf.cast(self.seed, tf.int64), epoch]))
        ds = tf.data.Dataset.from_tensor_slices(idx).batch(self.batch_size,
                                                           drop_remainder=self.drop_last)

        def gather(step, ib):
            xb = self._prep(tf.gather(x_t, ib), epoch, step)
            return xb if y_t is None else (xb, tf.gather(y_t, ib))

        return ds.enumerate().map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    def dataset(self, epoch: int | None = None) -> "tf.data.Dataset":
        """One epoch (default: the one set by ``set_epoch``), batched and prefetched."""
        e = self.epoch if epoch is None else int(epoch)
        return self._epoch_dataset(e).prefetch(tf.data.AUTOTUNE)

    def repeat(self, start_epoch: int = 0) -> "tf.data.Dataset":
        """Epochs ``start_epoch, start_epoch + 1, ...`` back to back, each exactly ``len(self)``
        batches (the last one short unless ``drop_last``), without end."""
        self._tensors()  # eagerly, before flat_map traces _epoch_dataset
        ds = tf.data.Dataset.counter(start=int(start_epoch), dtype=tf.int64)
        return ds.flat_map(self._epoch_dataset).prefetch(tf.data.AUTOTUNE)

    def __iter__(self):
        return iter(self.dataset(self._next_epoch()))
