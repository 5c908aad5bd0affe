"""``course bench keras``: training throughput of the same small CNN in Keras and in PyTorch.

Both sides train the course's ``small_cnn`` (the same architecture, layer for layer) on the
same Fashion-MNIST images with the same batch size, optimizer (Adam, lr 1e-3) and
normalisation, each through the course library the notebooks use: ``course_utils.train.fit``
with a ``FastLoader`` for PyTorch, ``course_utils.keras.fit`` with a ``TFLoader`` for Keras.
Images per second are taken from each epoch's wall time (the ``seconds`` column of both
``History`` objects) and printed side by side with their ratio. Epoch 1 includes Keras's
graph tracing and both frameworks' warm-up; the summary line uses the median of the later
epochs. Both frameworks get the same number of CPU threads (``--threads``, default 1).

Only the ratio means anything on a shared machine, and only within one run.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="course bench keras", description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=4096, help="training images per epoch (default 4096)")
    p.add_argument("--epochs", type=int, default=3, help="epochs per framework (default 3; >= 2)")
    p.add_argument("--batch-size", type=int, default=128, help="batch size (default 128)")
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads for each framework (default 1: on a shared machine OpenMP "
                        "spin-waiting makes multi-threaded PyTorch collapse; try the core count "
                        "on an idle one)")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.epochs < 2:
        print("error: --epochs must be at least 2 (epoch 1 includes warm-up)", file=sys.stderr)
        return 2
    threads = max(1, args.threads)

    # TensorFlow first (course_utils.keras also orders the Triton import before it), and its
    # thread pools must be sized before it runs anything.
    from course_utils import keras as ck

    try:
        ck.tf.config.threading.set_intra_op_parallelism_threads(threads)
        ck.tf.config.threading.set_inter_op_parallelism_threads(min(2, threads))
    except RuntimeError:  # already initialised (e.g. called from a notebook): keep its pools
        pass
    import torch

    from course_utils.data import FastLoader, load
    from course_utils.models import create_model
    from course_utils.train import fit as torch_fit

    torch.set_num_threads(threads)
    data = load("fashion_mnist")
    n = min(args.images, len(data.y_train))
    x, y = data.x_train[:n], data.y_train[:n]
    spec = ck.get_spec("small_cnn")
    mean, std = spec.mean, spec.std

    print(f"small_cnn on {n} Fashion-MNIST images, batch {args.batch_size}, {args.epochs} epochs, "
          f"{threads} thread(s); torch {torch.__version__}, TensorFlow {ck.tf.__version__}, "
          f"Keras {ck.keras.__version__}", flush=True)

    torch.manual_seed(0)
    tmodel = create_model("small_cnn")
    tloader = FastLoader(x, y, args.batch_size, shuffle=True, seed=0, mean=mean, std=std)
    th = torch_fit(tmodel, tloader, epochs=args.epochs, lr=1e-3, seed=0, progress=False,
                   device="cpu")

    ck.seed_everything(0)
    kmodel = ck.create_model("small_cnn")
    kloader = ck.TFLoader(x, y, args.batch_size, shuffle=True, seed=0, mean=mean, std=std)
    kh = ck.fit(kmodel, kloader, epochs=args.epochs, lr=1e-3, seed=0, progress=False)

    t_rate = [n / s for s in th["seconds"]]
    k_rate = [n / s for s in kh["seconds"]]
    print(f"{'epoch':>5}  {'pytorch img/s':>14}  {'keras img/s':>12}  {'keras/pytorch':>13}")
    for e, (a, b) in enumerate(zip(t_rate, k_rate), start=1):
        note = "  (includes warm-up/tracing)" if e == 1 else ""
        print(f"{e:>5}  {a:>14.0f}  {b:>12.0f}  {b / a:>13.2f}{note}")
    t_med, k_med = statistics.median(t_rate[1:]), statistics.median(k_rate[1:])
    print(f"median of epochs 2-{args.epochs}: pytorch {t_med:.0f} img/s, keras {k_med:.0f} img/s, "
          f"keras/pytorch = {k_med / t_med:.2f}")
    print(f"final training loss: pytorch {th['train_loss'][-1]:.4f}, keras {kh['train_loss'][-1]:.4f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"images": n, "batch_size": args.batch_size, "threads": threads,
                       "pytorch_img_per_s": t_rate, "keras_img_per_s": k_rate,
                       "ratio_keras_over_pytorch": k_med / t_med}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
