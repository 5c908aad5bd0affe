"""The course's Fashion-MNIST transfer experiment, in Keras.

Source task: Fashion-MNIST classes 0-4 (T-shirt, trouser, pullover, dress, coat). Target
task: classes 5-9 (sandal, shirt, sneaker, bag, ankle boot) with only a few labelled
images per class. The small CNN is pretrained on the source task once; then, for every
seed, a fine-tuned copy (pretrained body, new 5-class head, all layers trained) and a
scratch copy (random initialisation) are trained on the same few target images for the
same number of epochs with the same optimizer (Adam, lr 3e-4, batch 10), and both are
scored on the target test set. With this small training budget fine-tuning wins clearly
(about 0.82 vs 0.75 mean accuracy over seeds 0-2 with the defaults); given many more
epochs, scratch catches up on this easy target task, which is worth showing students too.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from course_utils.keras.models import FASHION_MNIST_MEAN, FASHION_MNIST_STD, create_model
from course_utils.keras.pipeline import TFLoader
from course_utils.keras.training import compile_model, evaluate, fit, seed_everything
from course_utils.keras.transfer import copy_weights

__all__ = ["TransferResult", "pretrain_source", "fashion_transfer_experiment"]

log = logging.getLogger(__name__)

SOURCE_CLASSES = (0, 1, 2, 3, 4)
TARGET_CLASSES = (5, 6, 7, 8, 9)


@dataclass
class TransferResult:
    """Target-test accuracies per seed, fine-tuned and from scratch."""

    seeds: tuple[int, ...]
    finetuned: list[float] = field(default_factory=list)
    scratch: list[float] = field(default_factory=list)
    source_acc: float = float("nan")
    settings: dict = field(default_factory=dict)

    @property
    def finetuned_mean(self) -> float:
        return float(np.mean(self.finetuned))

    @property
    def scratch_mean(self) -> float:
        return float(np.mean(self.scratch))

    def to_dict(self) -> dict:
        return {"seeds": list(self.seeds), "finetuned": self.finetuned, "scratch": self.scratch,
                "finetuned_mean": self.finetuned_mean, "scratch_mean": self.scratch_mean,
                "source_acc": self.source_acc, "framework": "keras", **self.settings}


def _loader(x, y, batch_size, *, shuffle=False, seed=0):
    return TFLoader(x, y, batch_size, shuffle=shuffle, seed=seed,
                    mean=FASHION_MNIST_MEAN, std=FASHION_MNIST_STD)


def _test_subset(x, y, n):
    """A fixed random subset of ``n`` test images (all of them with ``n=None``)."""
    if n is None or n >= len(y):
        return x, y
    idx = np.sort(np.random.default_rng(0).permutation(len(y))[:n])
    return x[idx], y[idx]


def pretrain_source(data, *, n_train: int = 3000, epochs: int = 2, lr: float = 1e-3,
                    batch_size: int = 64, seed: int = 0, n_test: int | None = 2000,
                    progress: bool = False):
    """Train ``small_cnn`` on the source classes (``n_train`` images, stratified); returns
    (model, accuracy on ``n_test`` images of the source test set)."""
    src = data.select_classes(SOURCE_CLASSES)
    if n_train < len(src.y_train):
        src = src.per_class(n_train // len(SOURCE_CLASSES), seed=seed)
    seed_everything(seed)
    model = create_model("small_cnn", num_classes=len(SOURCE_CLASSES))
    fit(model, _loader(src.x_train, src.y_train, batch_size, shuffle=True, seed=seed),
        epochs=epochs, lr=lr, seed=seed, progress=progress)
    x_test, y_test = _test_subset(src.x_test, src.y_test, n_test)
    acc = evaluate(model, _loader(x_test, y_test, 512))["acc"]
    log.info("source task (classes 0-4, %d images, %d epochs): test accuracy %.3f",
             len(src.y_train), epochs, acc)
    return model, acc


def fashion_transfer_experiment(data=None, *, shots: int = 10, seeds=(0, 1, 2),
                                pretrain_n: int = 3000, pretrain_epochs: int = 2,
                                epochs: int = 15, lr: float = 3e-4, batch_size: int = 10,
                                n_test: int | None = 2000, pretrained=None,
                                progress: bool = False) -> TransferResult:
    """Pretrain on classes 0-4, then fine-tune vs scratch on ``shots`` images per class of
    classes 5-9, for each seed; accuracies on ``n_test`` target test images (None: all).

    ``data``: the Fashion-MNIST ``ImageData`` (default: ``course_utils.data.load``);
    ``pretrained``: a source model to reuse (skips pretraining)."""
    if data is None:
        from course_utils.data import load

        data = load("fashion_mnist")
    source_acc = float("nan")
    if pretrained is None:
        pretrained, source_acc = pretrain_source(data, n_train=pretrain_n, epochs=pretrain_epochs,
                                                 seed=0, n_test=n_test, progress=progress)
    tgt = data.select_classes(TARGET_CLASSES)
    x_test, y_test = _test_subset(tgt.x_test, tgt.y_test, n_test)
    test = _loader(x_test, y_test, 512)
    result = TransferResult(tuple(seeds), source_acc=source_acc, settings={
        "shots": shots, "pretrain_n": pretrain_n, "pretrain_epochs": pretrain_epochs,
        "epochs": epochs, "lr": lr, "batch_size": batch_size, "n_test": len(y_test)})
    # One compiled worker model for all runs: each run loads its starting weights (pretrained
    # body + fresh head, or a fresh random model for that seed) and a zeroed optimizer, so
    # TensorFlow traces the training step once instead of once per run.
    worker = create_model("small_cnn", num_classes=len(TARGET_CLASSES))
    compile_model(worker, lr=lr)
    for seed in seeds:
        few = tgt.per_class(shots, seed=seed)
        for kind in ("finetuned", "scratch"):
            seed_everything(seed)
            start = create_model("small_cnn", num_classes=len(TARGET_CLASSES))
            if kind == "finetuned":
                copy_weights(pretrained, start, exclude=("classifier",))
            worker.set_weights(start.get_weights())
            _reset_optimizer(worker)
            fit(worker, _loader(few.x_train, few.y_train, batch_size, shuffle=True, seed=seed),
                epochs=epochs, seed=seed, progress=progress)
            acc = evaluate(worker, test)["acc"]
            getattr(result, kind).append(acc)
            log.info("seed %d %s: target test accuracy %.3f", seed, kind, acc)
    return result


def _reset_optimizer(model) -> None:
    """Zero the optimizer's step counter and moment estimates (keep its learning rate)."""
    opt = model.optimizer
    if not opt.built:
        return
    for v in opt.variables:
        if "learning_rate" not in v.path:
            v.assign(np.zeros(v.shape, dtype=v.dtype))
