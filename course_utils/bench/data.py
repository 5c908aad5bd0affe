"""``course bench data``: training batches per second with augmentation, FastLoader vs the
reference ``torchvision.datasets.FashionMNIST`` + ``DataLoader``, side by side in one run.

Both sides produce the same thing: batches of Fashion-MNIST training images with
RandomResizedCrop(size) + horizontal flip, grayscale repeated to 3 channels, ImageNet
normalisation, shuffled, as float32 NCHW tensors with int64 labels. The reference is the
anchors' pipeline (PIL image per sample, ``transforms`` chain per sample, default collate);
its raw folder is built in a temporary directory from the Debian ``.gz`` files (or from the
cached arrays when the package is absent), so nothing is downloaded.

Only the ratio means anything on a shared machine; both sides run with the same number of
torch threads (``--threads``, default 1 so that neither side is slowed by thread contention).
"""
from __future__ import annotations

import argparse
import gzip
import shutil
import tempfile
import time
from pathlib import Path

__all__ = ["main"]


def _write_raw_folder(root: Path, data) -> None:
    """The files torchvision's FashionMNIST expects in ``root/FashionMNIST/raw``."""
    from course_utils.data import fashion_mnist as fm

    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for key, gz_name in fm.FILES.items():
        out = raw / gz_name[:-3]
        src = fm.SYSTEM_DIR / gz_name
        if src.is_file():
            with gzip.open(src) as fin, open(out, "wb") as fout:
                shutil.copyfileobj(fin, fout)
        else:  # rebuild the idx file from the verified arrays
            a = getattr(data, key).astype("uint8")
            header = bytes([0, 0, 8, a.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in a.shape)
            out.write_bytes(header + a.tobytes())


def _rate(batches, seconds: float, warmup: int = 2) -> tuple[float, int, tuple]:
    """Batches per second over about ``seconds`` after ``warmup`` batches."""
    it = iter(batches)
    for _ in range(warmup):
        xb, yb = next(it)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        try:
            xb, yb = next(it)
        except StopIteration:
            it = iter(batches)
            continue
        n += 1
    return n / (time.perf_counter() - t0), n, tuple(xb.shape)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="course bench data", description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 224],
                        help="output resolutions to compare (default: 64 224)")
    parser.add_argument("--seconds", type=float, default=8.0, help="timed seconds per side and size")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader num_workers (reference)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for both sides")
    parser.add_argument("--device", default="cpu", help="FastLoader device (reference stays on CPU)")
    args = parser.parse_args(argv)

    import torch
    from torchvision import datasets, transforms

    from course_utils import data
    from course_utils.data import IMAGENET_MEAN, IMAGENET_STD, FastLoader

    torch.set_num_threads(args.threads)
    fm = data.load("fashion_mnist")
    print(f"Fashion-MNIST train (60,000), batch {args.batch_size}, RandomResizedCrop + flip, "
          f"gray->RGB, ImageNet normalisation; torch threads {args.threads}, DataLoader workers "
          f"{args.workers}, {args.seconds:g} s per measurement", flush=True)
    ratios = []
    with tempfile.TemporaryDirectory(prefix="course-bench-data-") as tmp:
        _write_raw_folder(Path(tmp), fm)
        for size in args.sizes:
            reference_tf = transforms.Compose([
                transforms.RandomResizedCrop(size),
                transforms.RandomHorizontalFlip(),
                transforms.Grayscale(num_output_channels=3),
                transforms.ToTensor(),
                transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
            ])
            ref_ds = datasets.FashionMNIST(tmp, train=True, download=False, transform=reference_tf)
            ref = torch.utils.data.DataLoader(
                ref_ds, batch_size=args.batch_size, shuffle=True, drop_last=True,
                generator=torch.Generator().manual_seed(0), num_workers=args.workers,
                persistent_workers=args.workers > 0)
            fast = FastLoader(fm.x_train, fm.y_train, args.batch_size, shuffle=True, seed=0,
                              augment="crop_flip", size=size, rgb=True, mean=IMAGENET_MEAN,
                              std=IMAGENET_STD, device=args.device, drop_last=True)
            ref_rate, ref_n, shape = _rate(ref, args.seconds)
            fast_rate, fast_n, fast_shape = _rate(fast, args.seconds)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            assert fast_shape == shape, (fast_shape, shape)
            ratios.append(fast_rate / ref_rate)
            print(f"  size {size:>3}, batches of {shape}:", flush=True)
            print(f"    torchvision FashionMNIST + DataLoader: {ref_rate:8.2f} batches/s ({ref_n} batches)")
            print(f"    course_utils FastLoader ({args.device}):     {fast_rate:8.2f} batches/s ({fast_n} batches)")
            print(f"    ratio: {ratios[-1]:.1f}x", flush=True)
    print(f"FastLoader / reference: {', '.join(f'{r:.1f}x' for r in ratios)} "
          f"(sizes {', '.join(map(str, args.sizes))}); goal >= 5x: "
          f"{'met' if min(ratios) >= 5 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
