"""The course's scratch-versus-pretrained experiment, in Keras.

:func:`course_utils.experiments.scratch_vs_pretrained` is framework-agnostic: it takes a
model factory, a function that loads pretrained weights, and a trainer. This module gives
the Keras versions of the three, so the Fashion-MNIST transfer experiment (pretrain
``small_cnn`` on classes 0-4, then fine-tune vs train from scratch on a few images per class
of classes 5-9) runs with the same protocol and returns the same table in both frameworks,
ready for ``paired_gain`` and ``plot_scratch_vs_pretrained``:

* :func:`keras_model_factory` — ``make(seed)``: seed, then ``create_model``;
* :func:`pretrain_source` — train on the source classes, cached on disk like the PyTorch
  pretraining (``$COURSE_DATA/pretrained/keras-<model>-<hash>.weights.h5``);
* :func:`load_pretrained_keras` — copy the pretrained layers, keep the fresh head;
* :func:`keras_trainer` — train with :func:`course_utils.keras.fit` and score on the test split;
* :func:`finetune_vs_scratch` — all of it in one call.
"""
from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict
from typing import Any, Mapping, Sequence

import numpy as np

from course_utils.atomic import atomic_path, atomic_write_json, build_lock
# framework-neutral at import time (it imports torch only inside its PyTorch functions)
from course_utils.experiments import (SOURCE_CLASSES, TARGET_CLASSES, _validation_arrays,
                                      pretrain_cache_path,
                                      pretrain_key, source_task, subset_test_split,
                                      transfer_experiment)
from course_utils.keras._backend import keras, save_weights
from course_utils.keras.models import create_model, get_spec, layer_groups
from course_utils.keras.pipeline import TFLoader
from course_utils.keras.training import evaluate, fit, seed_everything

__all__ = ["SOURCE_CLASSES", "TARGET_CLASSES", "keras_model_factory", "load_pretrained_keras",
           "keras_trainer", "pretrain_source", "finetune_vs_scratch"]

log = logging.getLogger(__name__)


def keras_model_factory(name: str = "small_cnn", num_classes: int = 5, *, reuse: bool = False,
                        **create_kwargs):
    """``make(seed)``: seed Python/NumPy/TensorFlow, then ``create_model(name, ...)``.

    ``reuse=True`` returns one model object for every call, re-initialised each time with
    the weights a fresh ``create_model`` would have for that seed and every layer trainable
    again. Its compiled training step then survives from run to run (see
    :func:`course_utils.keras.compile_model`), which saves TensorFlow a trace per run; use it
    when each run is finished with the model before the next one starts, as in
    ``scratch_vs_pretrained``."""
    worker = []

    def make(seed: int):
        seed_everything(seed)
        fresh = create_model(name, num_classes=num_classes, **create_kwargs)
        if not reuse:
            return fresh
        if not worker:
            worker.append(fresh)
            return fresh
        model = worker[0]
        for layer in model.layers:
            layer.trainable = True
        model.set_weights(fresh.get_weights())
        return model
    make.__name__ = f"create_keras_{name}"
    # what the experiment-run cache keys a run's model by (reuse changes no weights)
    make.cache_key = {"framework": "keras", "model": name, "num_classes": num_classes,
                      "create_kwargs": dict(sorted(create_kwargs.items()))}
    return make


def _state_of(model) -> "OrderedDict[str, list[np.ndarray]]":
    return OrderedDict((layer.name, [np.array(w) for w in layer.get_weights()])
                       for layer in model.layers if layer.weights)


def load_pretrained_keras(model, state, *, head: str | None = None):
    """Initialise ``model`` from a pretrained ``state`` (``{layer name: arrays}``, as
    :func:`pretrain_source` returns, or a Keras model): every layer of the same name and
    shapes, except the classifier (``head``, default the spec's), which keeps its fresh
    initialisation — the source task's classes mean nothing for the target. Returns the model."""
    if isinstance(state, keras.Model):
        state = _state_of(state)
    head = head or getattr(getattr(model, "course_spec", None), "head", "classifier")
    loaded = []
    for layer in model.layers:
        if not layer.weights or layer.name == head or layer.name not in state:
            continue
        arrays = state[layer.name]
        if [a.shape for a in arrays] != [tuple(w.shape) for w in layer.weights]:
            raise ValueError(f"load_pretrained_keras: layer {layer.name!r} has shapes "
                             f"{[tuple(w.shape) for w in layer.weights]}, the pretrained state "
                             f"{[a.shape for a in arrays]}; was it saved from the same architecture?")
        layer.set_weights(arrays)
        loaded.append(layer.name)
    if not loaded:
        raise ValueError("load_pretrained_keras: the pretrained state matched none of the model's "
                         "layers; was it saved from the same architecture?")
    return model


def _common(model, data, size):
    spec = get_spec(model)
    rgb = data.x_train.ndim == 3 and spec.input_shape[-1] == 3
    return dict(size=size, rgb=rgb, mean=spec.mean, std=spec.std)


def keras_trainer(model, data, seed: int, *, epochs: int = 30, lr: float = 1e-3,
                  batch_size: int = 16, optimizer: str = "adam", weight_decay: float = 0.0,
                  scheduler: str | None = None, freeze_upto: str | None = None, augment=None,
                  size: int | None = None, eval_batch_size: int = 500,
                  test_indices: np.ndarray | None = None, validation=None, curve: bool = False,
                  progress: bool = False) -> dict:
    """The Keras twin of ``course_utils.experiments.torch_trainer``: train ``model`` on
    ``data.x_train`` with :func:`course_utils.keras.fit` for a fixed number of epochs and
    score it on ``data.x_test`` (or its ``test_indices``). ``freeze_upto`` freezes the layer
    groups up to and including that one (``"head"``: only the classifier trains);
    ``scheduler="cosine"`` anneals the rate epoch by epoch as the PyTorch trainer does;
    ``augment`` goes to the training :class:`TFLoader` (``None`` or ``"flip"``). No
    ``device`` (TensorFlow places the model itself). Returns
    ``test_acc``, ``test_loss``, ``train_acc``, ``train_loss`` (last epoch); with
    ``validation`` (an ``(x, y)`` pair or an ``ImageData`` holding it in its training split)
    also ``val_acc`` and ``val_loss``; with ``curve=True`` also ``test_acc_curve`` (epoch 0,
    before training, then every epoch), as the PyTorch trainer does."""
    if freeze_upto is not None:
        groups = layer_groups(model)
        if freeze_upto not in groups:
            raise ValueError(f"freeze_upto={freeze_upto!r}: groups of {model.name} are {list(groups)}")
        for group, layers in groups.items():
            for layer in layers:
                layer.trainable = False
            if group == freeze_upto:
                break
    common = _common(model, data, size)
    train = TFLoader(data.x_train, data.y_train, batch_size, shuffle=True, seed=seed,
                     augment=augment, **common)
    x_test, y_test = data.x_test, data.y_test
    if test_indices is not None:
        x_test, y_test = x_test[test_indices], y_test[test_indices]
    test = TFLoader(x_test, y_test, eval_batch_size, **common)
    start = evaluate(model, test)["acc"] if curve else None
    hist = fit(model, train, test if curve else None, epochs=epochs, lr=lr, optimizer=optimizer,
               scheduler=scheduler, weight_decay=weight_decay, seed=seed, progress=progress,
               restore_best=False)
    scores = evaluate(model, test)
    out = {"test_acc": scores["acc"], "test_loss": scores["loss"],
           "train_acc": float(hist.last["train_acc"]), "train_loss": float(hist.last["train_loss"])}
    if validation is not None:
        x_val, y_val = _validation_arrays(validation)
        val = evaluate(model, TFLoader(x_val, y_val, eval_batch_size, **common))
        out.update(val_acc=val["acc"], val_loss=val["loss"])
    if curve:
        out["test_acc_curve"] = [float(start)] + [float(a) for a in hist["val_acc"]]
    return out


def pretrain_source(model_name: str = "small_cnn", data=None, *, epochs: int = 2, seed: int = 0,
                    per_class: int | None = None, batch_size: int = 128, lr: float = 1e-3,
                    source_classes: Sequence[int] = SOURCE_CLASSES,
                    model_kwargs: Mapping[str, Any] | None = None, scheduler: str | None = None,
                    n_test: int | None = None, cache_dir=None, return_meta: bool = False,
                    progress: bool = True):
    """Pretrain ``model_name`` in Keras on the source classes and return its weights as
    ``{layer name: arrays}``, cached on disk: the Keras twin of
    ``course_utils.experiments.pretrain_source`` (same arguments, less the PyTorch
    ``device``; ``model_kwargs`` go to ``create_model``). ``return_meta=True``
    also returns the source test accuracy (on ``n_test`` images drawn with seed 0, default
    all of the source test split) and timing."""
    source = source_task(data, source_classes, per_class, seed)
    key = pretrain_key(model_name, source, epochs=epochs, seed=seed, per_class=per_class,
                       batch_size=batch_size, lr=lr, model_kwargs=model_kwargs,
                       scheduler=scheduler, framework="keras")
    path = pretrain_cache_path(key, cache_dir, suffix=".weights.h5")
    make = keras_model_factory(model_name, source.num_classes, **dict(model_kwargs or {}))
    model = make(seed)
    meta_path = path.with_suffix("").with_suffix(".json")
    with build_lock(path):  # a second process asking for it waits, then loads it
        if path.exists() and meta_path.exists():
            try:
                model.load_weights(path)
                meta = json.loads(meta_path.read_text())
                log.info("pretrained Keras %s loaded from cache %s", model_name, path)
                return (_state_of(model), meta) if return_meta else _state_of(model)
            except Exception as exc:  # a damaged cache is rebuilt, not fatal
                log.warning("cached weights %s unreadable (%s); pretraining again", path, exc)
                model = make(seed)

        t0 = time.perf_counter()
        common = _common(model, source, None)
        hist = fit(model, TFLoader(source.x_train, source.y_train, batch_size, shuffle=True,
                                   seed=seed, **common),
                   epochs=epochs, lr=lr, scheduler=scheduler, seed=seed, progress=progress)
        x_test, y_test = subset_test_split(source, n_test)
        scores = evaluate(model, TFLoader(x_test, y_test, 500, **common))
        meta = dict(key, source_test_acc=scores["acc"], source_test_loss=scores["loss"],
                    train_acc=float(hist.last["train_acc"]), seconds=time.perf_counter() - t0,
                    n_train=len(source.y_train))
        log.info("pretrained Keras %s on %d source images in %.1fs: source test accuracy %.3f",
                 model_name, len(source.y_train), meta["seconds"], meta["source_test_acc"])
        # weights first, then the meta file that marks the entry complete (both atomic)
        with atomic_path(path, suffix=".weights.h5") as tmp:
            save_weights(model, tmp)
        atomic_write_json(meta_path, meta, indent=1, default=str)
        return (_state_of(model), meta) if return_meta else _state_of(model)


def finetune_vs_scratch(model_name: str = "small_cnn", data=None, sizes: Sequence[int] = (10,),
                        seeds: Sequence[int] = (0, 1, 2), *, pretrain_epochs: int = 2,
                        pretrain_per_class: int | None = None, pretrain_seed: int = 0,
                        pretrain_batch_size: int = 128, pretrain_lr: float = 1e-3,
                        pretrain_n_test: int | None = None, pretrain_scheduler: str | None = None,
                        source_classes: Sequence[int] = SOURCE_CLASSES,
                        target_classes: Sequence[int] = TARGET_CLASSES, cache_dir=None,
                        trainer=None, finetune_kwargs: Mapping[str, Any] | None = None,
                        progress: bool = True, **train_kwargs):
    """The course's standard transfer experiment in Keras, one call: pretrain on the source
    classes (cached), then fine-tune vs scratch on ``sizes`` images per class of the target
    classes. Returns the table of ``course_utils.experiments.scratch_vs_pretrained``
    (columns ``init, size, seed, n_train, test_acc, ...``); ``train_kwargs`` go to
    ``trainer`` (default :func:`keras_trainer`; e.g. ``epochs``, ``lr``, ``batch_size``,
    ``test_indices``). Same arguments as the PyTorch twin."""
    pretrain = dict(epochs=pretrain_epochs, seed=pretrain_seed, per_class=pretrain_per_class,
                    batch_size=pretrain_batch_size, lr=pretrain_lr, scheduler=pretrain_scheduler,
                    n_test=pretrain_n_test)
    return transfer_experiment(
        pretrain_source, lambda name, n: keras_model_factory(name, n, reuse=True), model_name,
        data, sizes, seeds, pretrain_kwargs=pretrain, source_classes=source_classes,
        target_classes=target_classes, cache_dir=cache_dir, trainer=trainer or keras_trainer,
        load_state=load_pretrained_keras, finetune_kwargs=finetune_kwargs, progress=progress,
        **train_kwargs)
