"""Image transforms: the anchors' per-sample pipelines and their batched counterparts.

Two families, same semantics:

* **Per-sample** (``train_transform``, ``eval_transform``): torchvision ``transforms.v2``
  pipelines for a ``Dataset``/``DataLoader`` — RandomResizedCrop + horizontal flip for
  training and Resize + CenterCrop for evaluation, as in the PyTorch transfer-learning
  tutorial and d2l's hotdog chapter; grayscale repeated to 3 channels for ImageNet
  backbones; ImageNet normalisation.
* **Batched** (``random_resized_crop_flip``, ``resize_center_crop``, ``normalize_batch``):
  the same operations on a whole NCHW batch at once, for :class:`~course_utils.data.FastLoader`.
  Crop boxes are drawn per image (torchvision's sampling rule); crop + resize + flip of the
  whole batch are two batched matrix products with per-image separable resampling matrices
  (bilinear with antialiasing, the weights torchvision uses), so there is no Python loop and
  no PIL call per sample.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

from course_utils.preprocessing import (IMAGENET_MEAN, IMAGENET_STD, INCEPTION_MEAN,
                                        INCEPTION_STD, resize_for_crop)

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "INCEPTION_MEAN", "INCEPTION_STD",
           "train_transform", "eval_transform", "sample_crop_boxes",
           "resample_matrices", "crop_flip_matrices", "apply_separable", "random_resized_crop_flip",
           "crop_resize_normalize", "random_flip", "resize_center_crop", "normalize_batch"]

# IMAGENET_MEAN/STD and INCEPTION_MEAN/STD are course_utils.preprocessing's, re-exported.

DEFAULT_SCALE = (0.08, 1.0)
DEFAULT_RATIO = (3.0 / 4.0, 4.0 / 3.0)


# --------------------------------------------------------------------------- per-sample

def train_transform(size: int = 224, *, scale: Sequence[float] = DEFAULT_SCALE,
                    ratio: Sequence[float] = DEFAULT_RATIO, rgb: bool = True,
                    mean: Sequence[float] | None = IMAGENET_MEAN,
                    std: Sequence[float] | None = IMAGENET_STD, flip: bool = True):
    """The anchors' training pipeline for one image (PIL image or uint8 CHW tensor):
    RandomResizedCrop(size) + RandomHorizontalFlip, gray -> 3 channels, float, normalise."""
    from torchvision.transforms import v2 as T

    steps = [T.ToImage()]
    if rgb:
        steps.append(T.RGB())  # repeats a single channel, leaves RGB alone
    steps.append(T.RandomResizedCrop(size, scale=tuple(scale), ratio=tuple(ratio), antialias=True))
    if flip:
        steps.append(T.RandomHorizontalFlip())
    steps.append(T.ToDtype(torch.float32, scale=True))
    if mean is not None:
        steps.append(T.Normalize(list(mean), list(std)))
    return T.Compose(steps)


def eval_transform(size: int = 224, *, crop_pct: float = 0.875, rgb: bool = True,
                   mean: Sequence[float] | None = IMAGENET_MEAN,
                   std: Sequence[float] | None = IMAGENET_STD):
    """The anchors' evaluation pipeline for one image: Resize(size / crop_pct) (256 for
    224) + CenterCrop(size), gray -> 3 channels, float, normalise. ``crop_pct=1`` resizes
    straight to ``size`` without cropping (better for small, centred images)."""
    from torchvision.transforms import v2 as T

    steps = [T.ToImage()]
    if rgb:
        steps.append(T.RGB())
    steps += [T.Resize(resize_for_crop(size, crop_pct), antialias=True), T.CenterCrop(size),
              T.ToDtype(torch.float32, scale=True)]
    if mean is not None:
        steps.append(T.Normalize(list(mean), list(std)))
    return T.Compose(steps)


# --------------------------------------------------------------------------- batched

def sample_crop_boxes(n: int, height: int, width: int, *, scale=DEFAULT_SCALE,
                      ratio=DEFAULT_RATIO, generator: torch.Generator | None = None,
                      attempts: int = 10) -> torch.Tensor:
    """``n`` crop boxes ``(top, left, h, w)`` (float) by torchvision's RandomResizedCrop rule:
    area fraction ~ U(scale), log aspect ratio ~ U(log ratio); the first of ``attempts``
    draws that fits is used, else a centred crop at the nearest allowed ratio."""
    if not (0 < scale[0] <= scale[1] <= 1):
        raise ValueError(f"scale={tuple(scale)!r}: use 0 < min <= max <= 1")
    if not (0 < ratio[0] <= ratio[1]):
        raise ValueError(f"ratio={tuple(ratio)!r}: use 0 < min <= max")
    area = height * width
    u = torch.rand(n, attempts, 2, generator=generator, dtype=torch.float64)
    target = area * (scale[0] + (scale[1] - scale[0]) * u[..., 0])
    log_r = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * u[..., 1]
    ar = torch.exp(log_r)
    w = torch.sqrt(target * ar).round()
    h = torch.sqrt(target / ar).round()
    ok = (w > 0) & (h > 0) & (w <= width) & (h <= height)
    first = torch.where(ok.any(1), ok.float().argmax(1), torch.full((n,), -1))
    # fallback: whole image cropped to the allowed aspect range, centred
    in_ratio = width / height
    if in_ratio < ratio[0]:
        fw, fh = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        fh, fw = height, round(height * ratio[1])
    else:
        fw, fh = width, height
    rows = torch.arange(n)
    sel = first.clamp(min=0)
    hh = torch.where(first >= 0, h[rows, sel], torch.full((n,), float(fh), dtype=torch.float64))
    ww = torch.where(first >= 0, w[rows, sel], torch.full((n,), float(fw), dtype=torch.float64))
    pos = torch.rand(n, 2, generator=generator, dtype=torch.float64)
    top = torch.where(first >= 0, torch.floor(pos[:, 0] * (height - hh + 1)), torch.floor((height - hh) / 2))
    left = torch.where(first >= 0, torch.floor(pos[:, 1] * (width - ww + 1)), torch.floor((width - ww) / 2))
    return torch.stack([top, left, hh, ww], 1)


def resample_matrices(start: torch.Tensor, length: torch.Tensor, in_size: int, out_size: int,
                      *, antialias: bool = True, dtype=torch.float32) -> torch.Tensor:
    """Per-image 1-D resampling matrices ``(N, out_size, in_size)`` that map the window
    ``[start, start + length)`` of an axis onto ``out_size`` samples.

    Bilinear (triangle) weights at pixel centres, renormalised over the pixels inside the
    window — the rule PIL and torchvision (``antialias=True``) use — with the triangle widened
    by the shrink factor when a window is shrunk, so downscaling is antialiased too. Applying
    a row and a column matrix to an image is a crop followed by a resize."""
    f = torch.float32  # exact for the integer boxes; plenty for interpolation weights
    start = start.to(f).view(-1, 1, 1)
    length = length.to(f).view(-1, 1, 1)
    j = torch.arange(out_size, dtype=f).view(1, -1, 1)
    k = torch.arange(in_size, dtype=f).view(1, 1, -1)
    step = length / out_size
    src = start + (j + 0.5) * step - 0.5
    support = torch.clamp(step, min=1.0) if antialias else torch.ones_like(step)
    w = torch.clamp(1.0 - (src - k).abs() / support, min=0.0)
    w = w * ((k >= start) & (k < start + length))
    w = w / w.sum(-1, keepdim=True).clamp(min=1e-12)
    return w.to(dtype)


def crop_flip_matrices(n: int, height: int, width: int, size: int | tuple[int, int], *,
                       scale=DEFAULT_SCALE, ratio=DEFAULT_RATIO, flip: bool = True,
                       generator: torch.Generator | None = None,
                       dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Row matrices ``(N, oh, H)`` and transposed column matrices ``(N, W, ow)`` that perform
    RandomResizedCrop(size) (+ flip with p=0.5) on ``n`` images: ``rows @ img @ cols_t``.
    Boxes follow torchvision's sampling rule; all random numbers come from ``generator``."""
    oh, ow = (size, size) if isinstance(size, int) else size
    top, left, h, w = sample_crop_boxes(n, height, width, scale=scale, ratio=ratio,
                                        generator=generator).unbind(1)
    rows = resample_matrices(top, h, height, oh, dtype=dtype)
    cols = resample_matrices(left, w, width, ow, dtype=dtype)
    if flip:
        flips = torch.rand(n, generator=generator) < 0.5
        cols = torch.where(flips[:, None, None], cols.flip(1), cols)
    return rows, cols.transpose(1, 2)


def apply_separable(x: torch.Tensor, rows: torch.Tensor, cols_t: torch.Tensor) -> torch.Tensor:
    """``rows @ x @ cols_t`` per image and channel, in the cheaper order. ``x`` is NCHW,
    ``rows`` (N, oh, H), ``cols_t`` (N, W, ow)."""
    _, _, H, W = x.shape
    oh, ow = rows.shape[1], cols_t.shape[2]
    r, ct = rows.to(x.device, x.dtype).unsqueeze(1), cols_t.to(x.device, x.dtype).unsqueeze(1)
    if oh * H * W + oh * W * ow <= H * W * ow + oh * H * ow:
        return torch.matmul(torch.matmul(r, x), ct)
    return torch.matmul(r, torch.matmul(x, ct))


def random_resized_crop_flip(x: torch.Tensor, size: int | tuple[int, int], *,
                             scale=DEFAULT_SCALE, ratio=DEFAULT_RATIO, flip: bool = True,
                             generator: torch.Generator | None = None) -> torch.Tensor:
    """RandomResizedCrop(size) (+ horizontal flip with p=0.5) on a float NCHW batch.

    Each image gets its own crop box (torchvision's sampling rule, integer boxes); the crop,
    resize and flip of the whole batch are two batched matrix products with per-image
    separable resampling matrices (:func:`resample_matrices`; the flip reverses the column
    matrix). Random numbers come from ``generator`` on the CPU, so a seed gives the same
    boxes on every device."""
    if x.ndim != 4 or not x.is_floating_point():
        raise ValueError(f"x must be a float NCHW batch, got {x.dtype} with shape {tuple(x.shape)}")
    n, _, H, W = x.shape
    rows, cols_t = crop_flip_matrices(n, H, W, size, scale=scale, ratio=ratio, flip=flip,
                                      generator=generator, dtype=x.dtype)
    return apply_separable(x, rows, cols_t)


def crop_resize_normalize(x: torch.Tensor, rows: torch.Tensor, cols_t: torch.Tensor,
                          mean: Sequence[float] | None, std: Sequence[float] | None, *,
                          rgb: bool = False, input_scale: float = 1.0 / 255.0,
                          chunk: int = 16) -> torch.Tensor:
    """:func:`apply_separable` then :func:`normalize_batch`, fused: the batch is processed
    ``chunk`` images at a time so the resampled intermediate stays in the CPU cache, and the
    normalised (possibly 3-channel) result is written once into a single output tensor."""
    n, c = x.shape[:2]
    a, b, out_c = _norm_coeffs(c, mean, std, rgb, input_scale)
    out = _empty((n, out_c, rows.shape[1], cols_t.shape[2]), x.dtype, x.device)
    step = n if x.device.type != "cpu" else max(1, chunk)
    for i in range(0, n, step):
        z = apply_separable(x[i:i + step], rows[i:i + step], cols_t[i:i + step])
        _normalize_into(z, a, b, out[i:i + step])
    return out


def random_flip(x: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """Horizontal flip of each image of an NCHW batch with probability 0.5."""
    flips = torch.rand(x.shape[0], generator=generator) < 0.5
    return torch.where(flips.to(x.device)[:, None, None, None], x.flip(-1), x)


def resize_center_crop(x: torch.Tensor, size: int, *, crop_pct: float = 1.0) -> torch.Tensor:
    """Resize a float NCHW batch so its shorter side is ``size / crop_pct`` and centre-crop
    ``size`` x ``size``: the batched eval transform (``crop_pct=1``: a plain resize)."""
    H, W = x.shape[-2:]
    short = resize_for_crop(size, crop_pct)
    nh, nw = (short, max(short, round(W * short / H))) if H <= W else (max(short, round(H * short / W)), short)
    if (nh, nw) != (H, W):
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False,
                          antialias=nh < H or nw < W)
    top, left = (nh - size) // 2, (nw - size) // 2
    return x[..., top:top + size, left:left + size]


def _empty(shape, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """An uninitialised output tensor. Large CPU float32 outputs are allocated by NumPy, which
    asks the kernel for transparent huge pages (``madvise``) where torch's CPU allocator does
    not: a 224x224 RGB batch of 128 is 77 MB, and faulting that in as 4 KB pages on every
    batch costs more than the augmentation itself. The tensor shares the array's memory."""
    if device.type == "cpu" and dtype == torch.float32 and math.prod(shape) * 4 >= (4 << 20):
        import numpy as np

        return torch.from_numpy(np.empty(shape, dtype=np.float32))
    return torch.empty(shape, dtype=dtype, device=device)


def _norm_coeffs(c: int, mean, std, rgb: bool, input_scale: float):
    """Per-output-channel scale and shift for ``(x * input_scale - mean) / std``."""
    if rgb and c not in (1, 3):
        raise ValueError(f"rgb=True needs 1 or 3 input channels, got {c}")
    out_c = 3 if (rgb and c == 1) else c
    if mean is None:
        mean, std = (0.0,) * out_c, (1.0,) * out_c
    mean, std = tuple(mean), tuple(std)
    if len(mean) == 1 and out_c > 1:
        mean, std = mean * out_c, std * out_c
    if len(mean) != out_c or len(std) != out_c:
        raise ValueError(f"mean/std have {len(mean)}/{len(std)} values for {out_c}-channel images"
                         + ("; pass rgb=True to repeat grayscale to 3 channels" if c == 1 else ""))
    a = [input_scale / s for s in std]
    b = [-m / s for m, s in zip(mean, std)]
    return a, b, out_c


def _normalize_into(x: torch.Tensor, a, b, out: torch.Tensor) -> None:
    # one pass per output channel: out_c = b_c + a_c * x_(c or 0); a broadcast addcmul over
    # (N,1,H,W) x (1,3,1,1) is several times slower on CPU
    c = x.shape[1]
    for k in range(out.shape[1]):
        torch.add(torch.tensor(b[k], dtype=x.dtype, device=x.device), x[:, k if c > 1 else 0],
                  alpha=a[k], out=out[:, k])


def normalize_batch(x: torch.Tensor, mean: Sequence[float] | None, std: Sequence[float] | None,
                    *, rgb: bool = False, input_scale: float = 1.0 / 255.0) -> torch.Tensor:
    """``(x * input_scale - mean) / std`` per channel. A 1-channel batch with ``rgb=True``
    comes out with 3 channels (the gray value repeated, then normalised with each channel's
    statistics), which is what an ImageNet backbone expects."""
    a, b, out_c = _norm_coeffs(x.shape[1], mean, std, rgb, input_scale)
    out = _empty((x.shape[0], out_c, *x.shape[2:]), x.dtype, x.device)
    _normalize_into(x, a, b, out)
    return out
