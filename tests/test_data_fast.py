"""FastLoader, batched transforms (checked against torchvision), torch and tf adapters."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from course_utils.data import (IMAGENET_MEAN, IMAGENET_STD, FastLoader, eval_transform,
                               to_torch_dataset, to_torch_loader, train_transform)
from course_utils.data.transforms import (normalize_batch, random_resized_crop_flip,
                                          resample_matrices, resize_center_crop, sample_crop_boxes)


@pytest.fixture(scope="module")
def gray():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(50, 12, 12), dtype=np.uint8), np.arange(50) % 5


@pytest.mark.parametrize("box,out", [((3, 5, 9, 7), 40), ((0, 0, 12, 12), 12), ((1, 2, 10, 9), 5)])
def test_resampling_matches_torchvision_resized_crop(box, out):
    x = torch.rand(1, 1, 12, 12) * 255
    t, l, h, w = box
    r = resample_matrices(torch.tensor([t]), torch.tensor([h]), 12, out)
    c = resample_matrices(torch.tensor([l]), torch.tensor([w]), 12, out)
    mine = r[:, None] @ x @ c.transpose(1, 2)[:, None]
    ref = TF.resized_crop(x, t, l, h, w, [out, out], antialias=True)
    torch.testing.assert_close(mine, ref, atol=1e-3, rtol=1e-4)


def test_crop_boxes_fit_and_follow_seed():
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    a, b = sample_crop_boxes(500, 28, 20, generator=g1), sample_crop_boxes(500, 28, 20, generator=g2)
    torch.testing.assert_close(a, b)
    top, left, h, w = a.unbind(1)
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 28).all() and (left + w <= 20).all()
    frac = h * w / (28 * 20)
    assert frac.min() >= 0.06 and frac.max() <= 1.0 and frac.std() > 0.1  # boxes actually vary


def test_crop_flip_on_whole_image_is_resize_and_mirror():
    x = torch.arange(16, dtype=torch.float32).view(1, 1, 4, 4).repeat(64, 1, 1, 1)
    g = torch.Generator().manual_seed(0)
    y = random_resized_crop_flip(x, 4, scale=(1.0, 1.0), ratio=(1.0, 1.0), generator=g)
    flipped = (y == x.flip(-1)).flatten(1).all(1)
    same = (y == x).flatten(1).all(1)
    assert (flipped | same).all() and 10 < int(flipped.sum()) < 54


def test_normalize_batch_gray_to_rgb():
    x = torch.full((2, 1, 3, 3), 255.0)
    out = normalize_batch(x, IMAGENET_MEAN, IMAGENET_STD, rgb=True)
    assert out.shape == (2, 3, 3, 3)
    expect = [(1 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)]
    torch.testing.assert_close(out[0, :, 0, 0], torch.tensor(expect))
    with pytest.raises(ValueError, match="rgb=True"):
        normalize_batch(x, IMAGENET_MEAN, IMAGENET_STD)


def test_resize_center_crop_shape_and_crop():
    x = torch.rand(2, 3, 10, 20)
    assert resize_center_crop(x, 8).shape == (2, 3, 8, 8)
    y = resize_center_crop(x, 7, crop_pct=0.875)  # shorter side 8, then centre 7x7
    assert y.shape == (2, 3, 7, 7)


def test_fastloader_batches_and_reproducibility(gray):
    x, y = gray
    kw = dict(shuffle=True, seed=7, augment="crop_flip", size=16, rgb=True,
              mean=IMAGENET_MEAN, std=IMAGENET_STD)
    a, b = FastLoader(x, y, 16, **kw), FastLoader(x, y, 16, **kw)
    batches = list(a)
    assert len(batches) == len(a) == 4 and [len(yb) for _, yb in batches] == [16, 16, 16, 2]
    xb, yb = batches[0]
    assert xb.shape == (16, 3, 16, 16) and xb.dtype == torch.float32 and yb.dtype == torch.int64
    for (x1, y1), (x2, y2) in zip(batches, b):
        torch.testing.assert_close(x1, x2)
        assert torch.equal(y1, y2)
    # every label is seen once per epoch
    assert sorted(torch.cat([yb for _, yb in batches]).tolist()) == sorted(y.tolist())
    # the next epoch differs; set_epoch replays an epoch
    second = next(iter(a))[0]
    assert not torch.equal(second, xb)
    a.set_epoch(0)
    torch.testing.assert_close(next(iter(a))[0], xb)
    other = FastLoader(x, y, 16, **{**kw, "seed": 8})
    assert not torch.equal(next(iter(other))[0], xb)


def test_fastloader_eval_path_is_exact(gray):
    x, y = gray
    fl = FastLoader(x, y, 50, shuffle=False, seed=None, drop_last=True)
    xb, yb = next(iter(fl))
    torch.testing.assert_close(xb[:, 0], torch.from_numpy(x).float() / 255)
    assert torch.equal(yb, torch.as_tensor(y))
    assert len(FastLoader(x, y, 16, shuffle=False, seed=None, drop_last=True)) == 3


def test_fastloader_argument_errors(gray):
    x, y = gray
    with pytest.raises(ValueError, match="needs size"):
        FastLoader(x, y, 8, shuffle=False, seed=0, augment="crop_flip")
    with pytest.raises(ValueError, match="seed=None"):
        FastLoader(x, y, 8, shuffle=True, seed=None)
    with pytest.raises(ValueError, match="augment='blur'"):
        FastLoader(x, y, 8, shuffle=False, seed=0, augment="blur")
    with pytest.raises(ValueError, match="rgb=True"):
        FastLoader(x, y, 8, shuffle=False, seed=0, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    with pytest.raises(TypeError, match="uint8"):
        FastLoader(x.astype(np.float32), y, 8, shuffle=False, seed=0)


def test_per_sample_transforms_match_anchor_pipelines(gray):
    x, _ = gray
    img = torch.from_numpy(x[0])[None]
    ev = eval_transform(8, crop_pct=0.8)(img)  # Resize(10) + CenterCrop(8), gray -> RGB
    assert ev.shape == (3, 8, 8)
    ref = TF.center_crop(TF.resize(img.float() / 255, [10], antialias=True), [8])
    torch.testing.assert_close(ev[1] * IMAGENET_STD[1] + IMAGENET_MEAN[1], ref[0], atol=1e-2, rtol=0)
    torch.manual_seed(0)
    tr = train_transform(16)(img)
    assert tr.shape == (3, 16, 16) and tr.dtype == torch.float32


def test_torch_adapters(gray):
    x, y = gray
    ds = to_torch_dataset(x, y)
    img, label = ds[3]
    assert img.shape == (1, 12, 12) and label == y[3]
    torch.testing.assert_close(img[0], torch.from_numpy(x[3]).float() / 255)
    rgb = to_torch_dataset(np.repeat(x[..., None], 3, -1), y)[0][0]
    assert rgb.shape == (3, 12, 12)
    order1 = torch.cat([b for _, b in to_torch_loader(x, y, 10, shuffle=True, seed=1)])
    order2 = torch.cat([b for _, b in to_torch_loader(x, y, 10, shuffle=True, seed=1)])
    assert torch.equal(order1, order2) and sorted(order1.tolist()) == sorted(y.tolist())


@pytest.mark.parametrize("chunk", [1, 5, 64])
def test_fused_crop_normalize_matches_unfused(chunk):
    from course_utils.data.transforms import crop_flip_matrices, crop_resize_normalize

    x = torch.rand(12, 1, 10, 10) * 255
    ref = normalize_batch(random_resized_crop_flip(x, 9, generator=torch.Generator().manual_seed(4)),
                          IMAGENET_MEAN, IMAGENET_STD, rgb=True)
    rows, cols_t = crop_flip_matrices(12, 10, 10, 9, generator=torch.Generator().manual_seed(4))
    out = crop_resize_normalize(x, rows, cols_t, IMAGENET_MEAN, IMAGENET_STD, rgb=True, chunk=chunk)
    torch.testing.assert_close(out, ref)
    big = normalize_batch(torch.rand(8, 1, 256, 256), None, None, rgb=True)  # NumPy-backed path
    assert big.shape == (8, 3, 256, 256) and torch.equal(big[:, 0], big[:, 2])
