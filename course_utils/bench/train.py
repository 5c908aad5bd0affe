"""``course bench train``: the training library's costs, measured side by side.

Three comparisons, each timed in this process, one side right after the other (the
machines are shared, so only ratios taken together mean anything):

a. ``fit`` throughput (images/s) versus a plain PyTorch loop (zero_grad, forward, mean
   cross-entropy, backward, step) on the same model, loader and optimizer. ``fit`` adds a
   NaN check, metrics, a history and the epoch machinery; the goal is >= 0.95 of the
   plain loop. Median over alternating one-epoch rounds, after a warm-up round.
b. One epoch of training a linear head on cached EfficientNet-Lite0 features versus one
   epoch on images through the frozen backbone, recomputed every epoch (96 px). Both sides
   go through ``fit`` with the same head; the goal is >= 20x per epoch. The one-off
   extraction (``course_utils.features.extract_features``) is reported too, with the
   number of epochs after which caching has paid for itself.
c. EfficientNet-Lite0 inference FLOP/s (FLOPs counted by ``torch.utils.flop_counter``:
   convolutions and matmuls) as a fraction of a large float32 matmul's FLOP/s on the same
   device: how far a mobile network's depthwise convolutions are from peak.

``--quick`` shrinks every size (a smoke run of the code paths); ``--strict`` makes the exit
status 1 when a goal is missed.
"""
from __future__ import annotations

import argparse
import copy
import logging
import math
import statistics
import tempfile
import time

import numpy as np
import torch
from torch import nn

from course_utils.preprocessing import (FASHION_MNIST_MEAN, FASHION_MNIST_STD, INCEPTION_MEAN,
                                        INCEPTION_STD)

__all__ = ["main", "GOALS"]

log = logging.getLogger(__name__)

#: comparison -> minimum ratio (None: reported, no target yet)
GOALS = {"fit / plain loop": 0.95, "cached / frozen backbone": 20.0, "Lite0 / matmul FLOP/s": None}
_LITE_MEAN, _LITE_STD = INCEPTION_MEAN, INCEPTION_STD  # what the Lite0 weights expect


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _fashion(n: int, seed: int):
    """``n`` Fashion-MNIST training images (uint8 NHW) and labels; random images with the
    same shape if the dataset is not available offline (throughput does not depend on it)."""
    from course_utils import data

    try:
        ds = data.load("fashion_mnist", download=False)
        rng = np.random.default_rng(seed)
        idx = rng.choice(len(ds.x_train), size=n, replace=False)
        return ds.x_train[idx], ds.y_train[idx], "Fashion-MNIST"
    except Exception as exc:  # noqa: BLE001 - any failure to load: fall back, and say so
        log.warning("Fashion-MNIST not available offline (%s); using random images", exc)
        rng = np.random.default_rng(seed)
        return (rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8),
                rng.integers(0, 10, size=n).astype(np.int64), "random images")


def _plain_loop(model, loader, opt, epochs: int, dev) -> None:
    """The 10-line loop every tutorial writes (loss summed on the device, read once)."""
    total = torch.zeros((), device=dev)
    for _ in range(epochs):
        model.train()
        for xb, yb in loader:
            xb, yb = xb.to(dev), yb.to(dev)
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(xb), yb)
            loss.backward()
            opt.step()
            total += loss.detach()
    float(total)  # one sync at the end, as a loop that prints its loss would do


def bench_fit_vs_plain(dev, *, n: int, batch: int, rounds: int, seed: int) -> dict:
    """One epoch of each side per round, alternating, after a warm-up round; the ratio is
    the median of the per-round ratios (robust to load that drifts during the run)."""
    from course_utils.data import FastLoader
    from course_utils.models import create_model
    from course_utils.train import fit

    x, y, source = _fashion(n, seed)
    loader = FastLoader(x, y, batch, shuffle=True, seed=seed, mean=FASHION_MNIST_MEAN, std=FASHION_MNIST_STD,
                        device=dev)
    torch.manual_seed(seed)
    base = create_model("small_cnn", num_classes=10).to(dev)
    t_plain, t_fit, c_plain, c_fit = [], [], [], []
    for r in range(rounds + 1):  # round 0 warms up both paths and is not counted
        m = copy.deepcopy(base)
        opt = torch.optim.Adam(m.parameters(), lr=1e-3)
        _sync(dev)
        t0, c0 = time.perf_counter(), time.process_time()
        _plain_loop(m, loader, opt, 1, dev)
        _sync(dev)
        t1, c1 = time.perf_counter(), time.process_time()
        m = copy.deepcopy(base)
        fit(m, loader, epochs=1, lr=1e-3, optimizer="adam", device=dev, seed=seed,
            progress=False, restore_best=False)
        _sync(dev)
        t2, c2 = time.perf_counter(), time.process_time()
        if r:
            t_plain.append(t1 - t0)
            t_fit.append(t2 - t1)
            c_plain.append(c1 - c0)
            c_fit.append(c2 - c1)
    ratio = statistics.median(p / f for p, f in zip(t_plain, t_fit))
    cpu_ratio = statistics.median(p / f for p, f in zip(c_plain, c_fit))
    fitted, plain = n / statistics.median(t_fit), n / statistics.median(t_plain)
    return {"a": fitted, "b": plain, "ratio": ratio, "unit": "img/s",
            "what": f"small_cnn + Adam, {n} {source} images, batch {batch}, {rounds} alternating "
                    f"rounds of one epoch each; img/s per round: fit "
                    + ", ".join(f"{n / t:.0f}" for t in t_fit) + "; plain "
                    + ", ".join(f"{n / t:.0f}" for t in t_plain)
                    + f"; ratio of process CPU time (less sensitive to other processes): "
                    f"{cpu_ratio:.3f}"}


class _FrozenBackbone(nn.Module):
    """A linear head on a frozen backbone's pooled features, recomputed on every batch.
    ``train()`` keeps the backbone in eval mode, so its BatchNorm statistics stay put."""

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone, self.head = backbone, head
        for p in self.backbone.parameters():
            p.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        self.backbone.eval()
        return self

    def forward(self, x):
        with torch.no_grad():
            f = self.backbone.forward_features(x).mean(dim=(2, 3))
        return self.head(f)


class _TensorBatches:
    """Shuffled mini-batches of in-memory feature rows; ``set_epoch`` reseeds the shuffle."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch: int, seed: int):
        self.x, self.y, self.batch, self.seed, self.epoch = x, y, batch, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(len(self.x) / self.batch)

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 1000 + self.epoch)
        order = torch.randperm(len(self.x), generator=g).to(self.x.device)
        for i in range(0, len(order), self.batch):
            j = order[i:i + self.batch]
            yield self.x[j], self.y[j]


def bench_cached_vs_frozen(dev, *, n: int, size: int, batch: int, frozen_epochs: int,
                           head_epochs: int, seed: int) -> dict:
    from course_utils.data import FastLoader
    from course_utils.device import to_channels_last
    from course_utils.features import extract_features
    from course_utils.models import create_model
    from course_utils.train import fit

    x, y, source = _fashion(n, seed)
    backbone = to_channels_last(create_model("efficientnet_lite0", weights="imagenet").to(dev)).eval()
    kw = dict(size=size, rgb=True, mean=_LITE_MEAN, std=_LITE_STD, device=dev)
    images = FastLoader(x, y, batch, shuffle=True, seed=seed, **kw)
    ordered = FastLoader(x, y, batch, shuffle=False, seed=None, **kw)

    torch.manual_seed(seed)
    head = nn.Linear(backbone.num_features, 10)
    frozen = _FrozenBackbone(backbone, copy.deepcopy(head)).to(dev)
    h_frozen = fit(frozen, images, epochs=frozen_epochs, device=dev, seed=seed, progress=False,
                   channels_last=True, restore_best=False)

    with tempfile.TemporaryDirectory() as cache:
        _sync(dev)
        t0 = time.perf_counter()
        feats = extract_features(backbone, ordered, cache_dir=cache, batch_size=batch,
                                 device=dev, progress=False)
        t_extract = time.perf_counter() - t0
        t0 = time.perf_counter()
        again = extract_features(backbone, ordered, cache_dir=cache, batch_size=batch,
                                 device=dev, progress=False)
        t_hit = time.perf_counter() - t0
    if not np.array_equal(feats, again):
        raise RuntimeError("feature cache returned different features on the second call")
    fx = torch.as_tensor(feats, device=dev)
    fy = torch.as_tensor(y, dtype=torch.int64, device=dev)
    cached_head = copy.deepcopy(head).to(dev)
    h_cached = fit(cached_head, _TensorBatches(fx, fy, batch, seed), epochs=head_epochs,
                   device=dev, seed=seed, progress=False, restore_best=False)
    # the first epoch of each run pays one-off costs (allocations, caches): skip it if we can
    # (medians: on a loaded machine a millisecond-long epoch can be stalled by the scheduler)
    per_frozen = statistics.median(h_frozen["seconds"][1:] or h_frozen["seconds"])
    per_cached = statistics.median(h_cached["seconds"][1:] or h_cached["seconds"])
    breakeven = t_extract / max(per_frozen - per_cached, 1e-12)
    return {"a": 1 / per_cached, "b": 1 / per_frozen, "ratio": per_frozen / per_cached,
            "unit": "epochs/s",
            "what": f"{n} {source} images at {size} px, batch {batch}: frozen backbone "
                    f"{per_frozen:.2f} s/epoch, cached {per_cached * 1e3:.2f} ms/epoch; one-off "
                    f"extraction {t_extract:.2f} s (cache hit {t_hit * 1e3:.0f} ms), repaid after "
                    f"{breakeven:.1f} epoch(s)"}


def _time(fn, dev, reps: int) -> float:
    fn()
    _sync(dev)
    best = math.inf
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        _sync(dev)
        best = min(best, time.perf_counter() - t0)
    return best


def bench_flops(dev, *, batch: int, size: int, matmul_n: int, reps: int) -> dict:
    from torch.utils.flop_counter import FlopCounterMode

    from course_utils.device import to_channels_last
    from course_utils.models import create_model

    model = to_channels_last(create_model("efficientnet_lite0", weights="imagenet").to(dev)).eval()
    x = to_channels_last(torch.randn(batch, 3, size, size, device=dev))
    with torch.no_grad():
        with FlopCounterMode(display=False) as counter:
            model(x)
        flops = counter.get_total_flops()

        def forward():
            model(x)

        t_model = _time(forward, dev, reps)
    a = torch.randn(matmul_n, matmul_n, device=dev)
    b = torch.randn(matmul_n, matmul_n, device=dev)
    t_mm = _time(lambda: a @ b, dev, reps)
    model_fs, mm_fs = flops / t_model, 2 * matmul_n**3 / t_mm
    return {"a": model_fs / 1e9, "b": mm_fs / 1e9, "ratio": model_fs / mm_fs, "unit": "GFLOP/s",
            "what": f"float32, batch {batch} at {size} px ({flops / batch / 1e9:.2f} GFLOP/image, "
                    f"conv+matmul only); matmul {matmul_n}x{matmul_n}; best of {reps}"}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="course bench train", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes: a smoke run (~1/4 time)")
    p.add_argument("--device", default=None, help="cpu, cuda, mps (default: COURSE_DEVICE or auto)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's choice)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", choices=("a", "b", "c"), action="append",
                   help="run only these comparisons (repeatable)")
    p.add_argument("--strict", action="store_true", help="exit 1 when a goal is missed")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from course_utils.device import describe_device, get_device

    if args.threads:
        torch.set_num_threads(args.threads)
    dev = get_device(args.device)
    gpu = dev.type == "cuda"
    q = args.quick
    print(f"device: {describe_device(args.device)}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} CPU threads{' (quick)' if q else ''}", flush=True)
    only = set(args.only or "abc")
    rows = []
    t_start = time.perf_counter()
    if "a" in only:
        r = bench_fit_vs_plain(dev, n=(192 if q else 384) * (16 if gpu else 1), batch=64,
                               rounds=3 if q else 5, seed=args.seed)
        rows.append(("fit / plain loop", r))
        print(f"a. {r['what']}", flush=True)
    if "b" in only:
        r = bench_cached_vs_frozen(dev, n=(64 if q else 128) * (16 if gpu else 1), size=96,
                                   batch=32, frozen_epochs=1 if q else 2,
                                   head_epochs=10 if q else 20, seed=args.seed)
        rows.append(("cached / frozen backbone", r))
        print(f"b. {r['what']}", flush=True)
    if "c" in only:
        r = bench_flops(dev, batch=(64 if gpu else 4 if q else 8), size=224,
                        matmul_n=(8192 if gpu else 1024), reps=2 if q else 3)
        rows.append(("Lite0 / matmul FLOP/s", r))
        print(f"c. {r['what']}", flush=True)

    missed = []
    print()
    print(f"{'comparison':<26} {'library':>12} {'baseline':>12} {'unit':>9} {'ratio':>9} "
          f"{'goal':>7}  status")
    for name, r in rows:
        goal = GOALS[name]
        ok = goal is None or r["ratio"] >= goal
        if not ok:
            missed.append(name)
        status = "report" if goal is None else ("ok" if ok else "MISSED")
        goal_s = "-" if goal is None else f">={goal:g}"
        print(f"{name:<26} {r['a']:>12.4g} {r['b']:>12.4g} {r['unit']:>9} {r['ratio']:>9.3g} "
              f"{goal_s:>7}  {status}")
    print(f"\n{time.perf_counter() - t_start:.0f} s in all. 'library' is fit / cached features / "
          "Lite0; 'baseline' is the plain loop / frozen backbone / matmul.")
    if missed:
        print(f"goal missed: {', '.join(missed)} (shared machines are noisy: rerun before "
              "concluding)")
    return 1 if (missed and args.strict) else 0
