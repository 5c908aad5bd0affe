"""ImageNet class names and the evaluation preprocessing that travels with pretrained weights.

The 1000 class names come from torchvision's weight metadata (code, not a download), so
they are available offline.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from course_utils.preprocessing import (IMAGENET_MEAN, IMAGENET_STD, INCEPTION_MEAN,
                                        INCEPTION_STD, image_layout, resize_for_crop)

__all__ = ["imagenet_categories", "IMAGENET_MEAN", "IMAGENET_STD", "INCEPTION_MEAN",
           "INCEPTION_STD", "EvalTransform", "topk_labels"]

# IMAGENET_MEAN/STD (torchvision's) and INCEPTION_MEAN/STD ([-1, 1], the EfficientNet-Lite
# weights') are course_utils.preprocessing's, re-exported here.


@lru_cache(maxsize=1)
def imagenet_categories() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names in index order."""
    from torchvision.models import ResNet18_Weights

    return tuple(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


class EvalTransform:
    """Resize the shorter side to ``size / crop_pct``, centre-crop ``size``, scale to [0, 1]
    and normalise. Takes uint8 images as NumPy (HW, HWC, NHW or NHWC) or a uint8 tensor
    (CHW or NCHW); returns a float32 NCHW tensor. Grayscale is repeated to 3 channels."""

    def __init__(self, size: int = 224, crop_pct: float = 0.875,
                 mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD,
                 interpolation: str = "bicubic"):
        self.size, self.crop_pct, self.mean, self.std = size, crop_pct, mean, std
        self.interpolation = interpolation

    def __repr__(self) -> str:
        return (f"EvalTransform(size={self.size}, crop_pct={self.crop_pct}, mean={self.mean}, "
                f"std={self.std}, interpolation={self.interpolation!r})")

    def __call__(self, images) -> torch.Tensor:
        from torchvision.transforms.v2 import functional as TF
        from torchvision.transforms import InterpolationMode

        x = images
        if isinstance(x, np.ndarray):
            layout = image_layout(x.shape)
            if layout in ("HW", "HWC"):
                x = x[None]  # one image
            if x.ndim == 3:  # NHW grayscale
                x = x[..., None]
            x = torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2)
        elif image_layout(x.shape, channels_first=True) == "CHW":
            x = x[None]
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        mode = InterpolationMode.BICUBIC if self.interpolation == "bicubic" else InterpolationMode.BILINEAR
        resize_to = resize_for_crop(self.size, self.crop_pct)
        x = TF.resize(x, [resize_to], interpolation=mode, antialias=True)
        x = TF.center_crop(x, [self.size, self.size])
        x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
        return TF.normalize(x.clamp_(0, 1), list(self.mean), list(self.std))


def topk_labels(logits: torch.Tensor, k: int = 3,
                categories: tuple[str, ...] | None = None) -> list[list[tuple[str, float]]]:
    """Per image, the ``k`` most probable ``(class name, probability)`` pairs."""
    categories = categories or imagenet_categories()
    probs = torch.softmax(logits.float(), dim=1)
    values, indices = probs.topk(k, dim=1)
    return [[(categories[i], float(v)) for v, i in zip(vs, ids)]
            for vs, ids in zip(values.tolist(), indices.tolist())]
