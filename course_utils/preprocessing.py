"""Preprocessing facts both frameworks share: normalisation constants, the evaluation
resize rule and how to read an image array's layout.

A PyTorch and a Keras model that are meant to see the same tensors (the Lite0 twins, the
small CNNs) must normalise with the same numbers and resize with the same rounding, so
these live here once, and this module imports neither framework.
"""
from __future__ import annotations

import math

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "INCEPTION_MEAN", "INCEPTION_STD",
           "FASHION_MNIST_MEAN", "FASHION_MNIST_STD", "RESIZE_RULE", "resize_for_crop",
           "image_layout"]

#: torchvision's ImageNet statistics (ResNet, VGG, MobileNetV2), of x / 255
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: the [-1, 1] scaling that TF-trained weights (EfficientNet-Lite, Keras MobileNetV2) expect
INCEPTION_MEAN = (0.5, 0.5, 0.5)
INCEPTION_STD = (0.5, 0.5, 0.5)
#: Fashion-MNIST training-set pixel mean and standard deviation (of x / 255)
FASHION_MNIST_MEAN = (0.2860,)
FASHION_MNIST_STD = (0.3530,)


#: Names the rule :func:`resize_for_crop` applies. It is part of every feature-cache key
#: (:mod:`course_utils.feature_cache`): change it with the rule, so features computed under the
#: old rule are never read back as if they came from the new one.
RESIZE_RULE = "floor(size/crop_pct)"


def resize_for_crop(size: int, crop_pct: float) -> int:
    """The shorter side to resize to before centre-cropping ``size``: ``floor(size /
    crop_pct)``, timm's rule (224 at 0.875 -> 256, torchvision's ``Resize(256)``). One rule
    for every evaluation transform, so two transforms of the same size crop alike."""
    if not 0.0 < crop_pct <= 1.0:
        raise ValueError(f"crop_pct={crop_pct!r}: use a fraction in (0, 1], e.g. 0.875 (=224/256)")
    return int(math.floor(size / crop_pct))


def image_layout(shape, *, channels_first: bool = False) -> str:
    """How to read an image array of ``shape``: ``"HW"``, ``"HWC"``, ``"NHW"``, ``"NHWC"``,
    ``"CHW"`` or ``"NCHW"``.

    The course's arrays (``ImageData``, NumPy, Keras) are channels-last; PyTorch tensors are
    channels-first (``channels_first=True``). A 3-D array is one colour image when its last
    axis (first, for channels-first) has 1 or 3 entries, else a batch of gray images.
    Raises ``ValueError`` naming the shape otherwise."""
    shape = tuple(shape)
    if len(shape) == 2:
        return "HW"
    if len(shape) == 3:
        c = shape[0] if channels_first else shape[-1]
        if c in (1, 3):
            return "CHW" if channels_first else "HWC"
        return "NHW"
    if len(shape) == 4:
        return "NCHW" if channels_first else "NHWC"
    raise ValueError(f"an image array of shape {shape}: expected HW, HWC, NHW or NHWC "
                     "(NumPy) or CHW/NCHW (torch)")
