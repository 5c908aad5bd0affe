"""``course bench contention``: how much a competing CPU-bound process slows training.

A fixed workload (``course_utils.train.fit`` on the small CNN, Fashion-MNIST images, batch
16) runs in a fresh process twice: alone, then beside ``--competitors`` pure-Python busy
loops. It prints both times and the slowdown ratio; a fair share of the cores would cost
about ``(cpus + competitors) / cpus``. The workload gets the course's thread settings
(:func:`course_utils.threads.thread_env`, what ``course run`` gives its kernels) unless
``--raw`` asks for the runtime's defaults, so ``--raw`` and the default side by side show
what the settings are worth. Only ratios from one run mean anything on a shared machine.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

__all__ = ["main"]

BUSY_LOOP = "while True:\n    pass\n"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="course bench contention",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=3000, help="training images (default 3000)")
    p.add_argument("--epochs", type=int, default=2, help="epochs (default 2)")
    p.add_argument("--batch-size", type=int, default=16, help="batch size (default 16)")
    p.add_argument("--competitors", type=int, default=1, help="busy loops beside it (default 1)")
    p.add_argument("--raw", action="store_true",
                   help="the runtimes' default threading instead of the course's settings")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return p


def _workload(args) -> float:
    """Seconds the fixed training workload takes in this process."""
    from course_utils.data import FastLoader, load
    from course_utils.models import create_model, get_spec
    from course_utils.train import fit

    data = load("fashion_mnist", download=False)
    x, y = data.x_train[: args.images], data.y_train[: args.images]
    spec = get_spec("small_cnn")
    loader = FastLoader(x, y, args.batch_size, shuffle=True, seed=0, mean=spec.mean, std=spec.std)
    model = create_model("small_cnn", num_classes=10)
    t = time.perf_counter()
    fit(model, loader, epochs=args.epochs, lr=1e-3, seed=0, progress=False, device="cpu")
    return time.perf_counter() - t


def _run_worker(args, env) -> float:
    cmd = [sys.executable, "-m", "course_utils.bench.contention", "--worker",
           "--images", str(args.images), "--epochs", str(args.epochs),
           "--batch-size", str(args.batch_size)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"the workload failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
    return float(json.loads(proc.stdout.strip().splitlines()[-1])["seconds"])


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.worker:
        print(json.dumps({"seconds": _workload(args)}), flush=True)
        return 0
    from course_utils.threads import available_cpus, thread_env

    env = dict(os.environ)
    settings = {} if args.raw else thread_env()
    env.update(settings)
    cpus = available_cpus()
    print(f"{args.epochs} epochs of fit on small_cnn, {args.images} images, batch "
          f"{args.batch_size}; {cpus} CPUs; thread settings: "
          f"{'runtime defaults (--raw)' if args.raw else settings}", flush=True)
    alone = _run_worker(args, env)
    print(f"alone:                {alone:7.1f} s", flush=True)
    busy = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(args.competitors)]
    try:
        beside = _run_worker(args, env)
    finally:
        for p in busy:
            p.kill()
            p.wait()
    ratio = beside / alone
    fair = (cpus + args.competitors) / cpus
    print(f"beside {args.competitors} busy loop(s): {beside:7.1f} s", flush=True)
    print(f"slowdown {ratio:.2f}x (a fair share of {cpus} CPUs: {fair:.2f}x; goal <= 2.5x)")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"alone_s": alone, "beside_s": beside, "ratio": ratio, "cpus": cpus,
                       "competitors": args.competitors, "raw": args.raw,
                       "settings": settings}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
