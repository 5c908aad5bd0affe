"""Scratch versus pretrained: does transfer pay off, and down to how little data?

The course's central experiment trains one architecture twice on the same small training
sets, once from a random initialisation and once from weights pretrained on a source task,
over several training-set sizes (images per class) and seeds, and compares test accuracy
with confidence bands. This module runs it and returns a tidy table (one row per
``init``, ``size``, ``seed``), so the comparison is plain pandas and one plot.

The experiment itself is framework-agnostic: the model factory, the weight loading and the
training step are callables. The defaults are PyTorch (``course_utils.models``,
``course_utils.train``); the Keras helpers pass Keras versions of the same three.

For the embedded profile the course uses one standard transfer task on Fashion-MNIST:
:func:`source_target_split` (source = classes 0-4, target = classes 5-9 relabelled 0-4),
:func:`pretrain_source` (pretrain on the source task, cached on disk) and
:func:`finetune_vs_scratch`, which wires them together.

A fair comparison gives each arm its own learning rate: :func:`fair_comparison` picks it per
arm and size from a small grid (:data:`LR_GRID`) on a validation split carved out of the
training pool, never on the test split, then runs every seed at the chosen rates. Every run
can be cached on disk by its full configuration (``cache=True``; :func:`run_cache_dir`), so a
notebook run a second time reads its runs back in seconds. With ``curve=True`` the trainers
record test accuracy per epoch (epoch 0 included), from which :func:`epoch_curve_readout`
reads the start, slope and asymptote of the transfer-learning literature.
"""
from __future__ import annotations

import inspect
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from course_utils.atomic import atomic_write, atomic_write_json, build_lock
from course_utils.fingerprint import (array_fingerprint, dataset_fingerprint, record_digest,
                                      weights_fingerprint)

__all__ = ["INITS", "SOURCE_CLASSES", "TARGET_CLASSES", "scratch_vs_pretrained", "summarize",
           "paired_gain", "plot_scratch_vs_pretrained", "source_target_split", "pretrain_source",
           "source_task", "pretrain_key", "pretrain_cache_path", "finetune_vs_scratch", "transfer_experiment", "torch_trainer", "load_pretrained_torch",
           "subset_test_split", "fair_comparison", "FairComparison", "best_learning_rates",
           "LR_GRID", "grid_edge", "epoch_curve_readout", "RUN_CACHE_ENV", "run_cache_dir",
           "linear_probe_trainer"]

log = logging.getLogger(__name__)

#: the two initialisations compared, in table and legend order
INITS = ("scratch", "pretrained")
#: the course's standard Fashion-MNIST transfer task
SOURCE_CLASSES = (0, 1, 2, 3, 4)   # T-shirt/top, Trouser, Pullover, Dress, Coat
TARGET_CLASSES = (5, 6, 7, 8, 9)   # Sandal, Shirt, Sneaker, Bag, Ankle boot

#: bump when the pretraining recipe changes, so old cached weights are not reused
_PRETRAIN_RECIPE = 1

_COLUMNS = ["init", "size", "seed", "n_train", "test_acc", "test_loss", "train_acc",
            "train_loss", "seconds"]

#: bump when what one cached experiment run computes changes, so old runs are not reused
#: (2: torch_trainer scores in batches of 64, not 500, and reads a curve run's final test
#: score from its last epoch)
_RUN_RECIPE = 2
#: environment variable moving the experiment-run cache (default ``$COURSE_DATA/experiments``)
RUN_CACHE_ENV = "COURSE_EXPERIMENT_CACHE"

#: a small learning-rate grid per arm for Adam (d2l's fine-tuning chapter gives the randomly
#: initialised layers a rate 10x the pretrained ones'): each arm picks its own on validation
#: data, so neither is handicapped by a rate tuned for the other
LR_GRID = {"scratch": (1e-3, 3e-3, 1e-2, 3e-2), "pretrained": (1e-4, 3e-4, 1e-3, 3e-3)}

#: how the arms are called in progress descriptions
_ARM_WORDS = {"scratch": "from scratch", "pretrained": "fine-tuning"}


# --------------------------------------------------------------------------- PyTorch defaults

def _torch_model_factory(name: str, num_classes: int, model_kwargs: Mapping | None):
    def make(seed: int):
        from course_utils.device import seed_everything
        from course_utils.models import create_model

        seed_everything(seed, deterministic=None)
        return create_model(name, num_classes=num_classes, **dict(model_kwargs or {}))
    make.__name__ = f"create_{name}"
    return make


def load_pretrained_torch(model, state: Mapping, *, num_classes: int | None = None,
                          reset_head: bool = True):
    """Initialise a PyTorch ``model`` from a pretrained ``state`` dict, bottom-up
    (:func:`course_utils.models.load_matching_state_dict`: every layer up to the first one
    whose name or shape differs), then give it a fresh classifier for ``num_classes``
    (``reset_head=True``): the source task's classifier means nothing for the target
    classes, even when their number happens to be the same. Returns the model."""
    from course_utils.models import load_matching_state_dict, replace_head
    from course_utils.models.registry import get_spec

    res = load_matching_state_dict(model, state)
    if not res.loaded:
        raise ValueError(f"pretrain_state matched none of the model's tensors ({res}); was it "
                         "saved from the same architecture?")
    log.debug("pretrained init: %s", res)
    if reset_head:
        head = getattr(model, get_spec(model).head.split(".")[0])
        n = num_classes if num_classes is not None else getattr(head, "out_features", None)
        if n is None:
            raise ValueError("num_classes is needed to reset the head of this model")
        replace_head(model, int(n))
    return model


def torch_trainer(model, data, seed: int, *, epochs: int = 30, lr: float = 1e-3,
                  batch_size: int = 16, optimizer: str = "adam", weight_decay: float = 0.0,
                  scheduler: str | None = None, freeze_upto: str | None = None, augment=None,
                  size: int | None = None, eval_batch_size: int = 64,
                  test_indices: np.ndarray | None = None, validation=None, curve: bool = False,
                  crop_pct: float = 1.0, device=None, progress: bool = False) -> dict:
    """Train a PyTorch ``model`` on ``data.x_train`` with :func:`course_utils.train.fit` and
    score it on ``data.x_test`` (the held-out test split; the number of ``epochs`` is fixed
    in advance: a few images per class leave nothing to stop early on).

    ``validation`` (an ``(x, y)`` pair, or an ``ImageData`` whose *training* images are the
    validation set, as ``ImageData.train_val_split`` returns) is scored too, as ``val_acc``
    and ``val_loss``: what :func:`fair_comparison` picks learning rates with, so the test
    split never chooses anything. ``curve=True`` also returns ``test_acc_curve``: test
    accuracy before training (epoch 0) and after every epoch, for the start, slope and
    asymptote of :func:`epoch_curve_readout`.

    Inputs are normalised with the model's declared mean and std, repeated to 3 channels if
    the model wants colour and resized to ``size`` if given (test and validation images:
    resized to ``size / crop_pct`` and centre-cropped, as ImageNet evaluation does with
    ``crop_pct=0.875``, 256 then 224). ``freeze_upto`` freezes layer
    groups first (``"head"``: only the classifier trains). ``scheduler="cosine"`` anneals the
    rate over the epochs (see :func:`course_utils.train.fit`): with Adam at a constant rate
    the last epochs still take large steps, and the BatchNorm statistics the test sees lag
    behind the weights. ``test_indices`` scores a fixed
    subset of the test split (for quick checks). Returns ``test_acc``, ``test_loss``,
    ``train_acc``, ``train_loss`` (last epoch).

    Scoring is most of the cost of a small run on a CPU. ``eval_batch_size`` is 64 because
    larger batches are slower there, not faster: a batch of 500 small-CNN activations
    (50 MB) is above glibc's largest mmap threshold, so every batch maps fresh pages and
    page-faults through them (measured: 2.4x the CPU time of batches of 64 for the same
    400 images, identical accuracy). With ``curve=True`` the last epoch's test score is the
    final one (the same weights, the same images): it is not computed twice.
    """
    from course_utils.data.fast import FastLoader
    from course_utils.models import freeze
    from course_utils.models.registry import get_spec
    from course_utils.train import evaluate, fit

    spec = get_spec(model)
    gray = data.x_train.ndim == 3
    rgb = gray and spec.input_size[0] == 3
    common = dict(size=size, rgb=rgb, mean=spec.mean, std=spec.std)
    if freeze_upto is not None:
        freeze(model, upto=freeze_upto)
    train = FastLoader(data.x_train, data.y_train, batch_size, shuffle=True, seed=seed,
                       augment=augment, **common)
    x_test, y_test = data.x_test, data.y_test
    if test_indices is not None:
        x_test, y_test = x_test[test_indices], y_test[test_indices]
    test = FastLoader(x_test, y_test, eval_batch_size, shuffle=False, seed=None, crop_pct=crop_pct,
                      **common)
    start = evaluate(model, test, device=device)["acc"] if curve else None
    hist = fit(model, train, test if curve else None, epochs=epochs, lr=lr, optimizer=optimizer,
               weight_decay=weight_decay, scheduler=scheduler, seed=seed, device=device,
               progress=progress, restore_best=False)
    if curve and len(hist["val_acc"]):   # scored after the last epoch already
        scores = {"acc": hist["val_acc"][-1], "loss": hist["val_loss"][-1]}
    else:
        scores = evaluate(model, test, device=device)
    out = {"test_acc": float(scores["acc"]), "test_loss": float(scores["loss"]),
           "train_acc": float(hist.last["train_acc"]), "train_loss": float(hist.last["train_loss"])}
    if validation is not None:
        x_val, y_val = _validation_arrays(validation)
        val = evaluate(model, FastLoader(x_val, y_val, eval_batch_size, shuffle=False, seed=None,
                                         crop_pct=crop_pct, **common), device=device)
        out.update(val_acc=float(val["acc"]), val_loss=float(val["loss"]))
    if curve:
        out["test_acc_curve"] = [float(start)] + [float(a) for a in hist["val_acc"]]
    return out


def linear_probe_trainer(model, data, seed, *, layer: str | None = None, size: int | None = None,
                         test_indices: np.ndarray | None = None, validation=None,
                         device=None, progress: bool = False, **head_kwargs) -> dict:
    """Feature extraction as a trainer, so it runs, pairs and caches like the other arms of
    :func:`scratch_vs_pretrained` (``inits=("pretrained",)``): the network stays frozen,
    :func:`course_utils.features.extract_features` turns ``data``'s images into the pooled
    features of ``layer`` (None: the ones the classifier sees), and
    :func:`course_utils.features.fit_linear_head` (``head_kwargs``, seeded with ``seed``)
    fits a linear classifier on them. Returns ``test_acc`` (and ``val_acc`` with
    ``validation``)."""
    from course_utils.features import extract_features, fit_linear_head

    def feats(x):
        return extract_features(model, x, layer=layer, size=size, device=device, progress=progress)

    x_test, y_test = data.x_test, data.y_test
    if test_indices is not None:
        x_test, y_test = x_test[test_indices], y_test[test_indices]
    head = fit_linear_head(feats(data.x_train), data.y_train, seed=seed, **head_kwargs)
    out = {"test_acc": float(head.score(feats(x_test), y_test))}
    if validation is not None:
        x_val, y_val = _validation_arrays(validation)
        out["val_acc"] = float(head.score(feats(x_val), y_val))
    return out


#: how progress descriptions name the pretrained arm of this trainer
linear_probe_trainer.arm_words = {"pretrained": "feature extraction"}


def _validation_arrays(validation):
    """``(x, y)`` of a validation set given as a pair or as an ``ImageData`` holding it in
    its training split (``ImageData.train_val_split``'s second half)."""
    if hasattr(validation, "x_train"):
        return validation.x_train, validation.y_train
    x, y = validation
    return x, y


# --------------------------------------------------------------------------- the experiment

def _call_factory(make_model: Callable, seed: int):
    try:
        params = [p for p in inspect.signature(make_model).parameters.values()
                  if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        params = [None]
    if params:
        return make_model(seed)
    from course_utils.device import seed_everything  # a zero-argument PyTorch factory

    seed_everything(seed, deterministic=None)
    return make_model()


def _check_sizes(sizes) -> list[int]:
    if isinstance(sizes, (int, np.integer)):
        sizes = [sizes]
    out = []
    for s in sizes:
        if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1:
            raise ValueError(f"sizes contains {s!r}: give images per class as positive integers, "
                             "e.g. sizes=(5, 10, 50)")
        out.append(int(s))
    if not out:
        raise ValueError("sizes is empty: give at least one number of images per class")
    return sorted(set(out))


def scratch_vs_pretrained(make_model, pretrain_state, data, sizes: Sequence[int] | int,
                          seeds: Sequence[int] = (0, 1, 2), *, trainer: Callable | None = None,
                          load_state: Callable | None = None, inits: Sequence[str] = INITS,
                          finetune_kwargs: Mapping[str, Any] | None = None,
                          model_kwargs: Mapping[str, Any] | None = None, validation=None,
                          cache: bool = False, cache_dir: str | Path | None = None,
                          label: str | None = None, progress: bool = True, **train_kwargs):
    """Train one architecture from scratch and from ``pretrain_state`` on ``sizes`` images
    per class of ``data`` (an :class:`~course_utils.data.ImageData`), for every seed.

    For each (size, seed) both inits train on the *same* images (``data.per_class(size,
    seed)``), so differences are paired. Scores come from ``data``'s test split.

    Parameters
    ----------
    make_model
        A registered model name (``"small_cnn"``; built for ``data.num_classes`` with
        ``model_kwargs``), or a factory ``make_model(seed) -> model`` (a zero-argument
        factory is called after seeding torch with the seed).
    pretrain_state
        What ``load_state(model, pretrain_state)`` turns into a pretrained model; by default
        a PyTorch state dict (see :func:`load_pretrained_torch`: bottom-up load, fresh head).
    trainer
        ``trainer(model, train_data, seed, **kwargs) -> dict`` with at least ``test_acc``
        (default :func:`torch_trainer`). ``train_kwargs`` go to every call and
        ``finetune_kwargs`` are added for the pretrained runs only (e.g. a lower ``lr`` or
        ``freeze_upto="block2"``). ``lr`` may also be a mapping ``{init: rate}`` or
        ``{init: {size: rate}}``: each arm its own rate (see :func:`fair_comparison`, which
        chooses them on validation data).
    validation
        Passed to the trainer, which then also returns ``val_acc`` (see :func:`torch_trainer`).
    cache, cache_dir
        ``cache=True`` stores every run under ``cache_dir`` (default :func:`run_cache_dir`),
        keyed by its full configuration (model, trainer, pretrained weights, training images,
        test and validation images, every setting, seed), so running a notebook again costs
        seconds. A factory is cached only if it carries a ``cache_key`` (a registered name
        always does); otherwise its runs are simply not cached.
    label
        Prefix of the progress description (e.g. ``"small/different"``).

    Returns a pandas DataFrame with columns ``init, size, seed, n_train, test_acc,
    test_loss, train_acc, train_loss, seconds, lr`` (missing metrics are NaN) plus any other
    values the trainer returns (``val_acc``, ``test_acc_curve``, ...). ``seconds`` of a run
    read from the cache is the time it took when it ran.
    """
    sizes = _check_sizes(sizes)
    seeds = _check_seeds(seeds)
    inits = _check_inits(inits, pretrain_state)
    runner = _Runner(make_model, pretrain_state, data, trainer=trainer, load_state=load_state,
                     finetune_kwargs=finetune_kwargs, model_kwargs=model_kwargs,
                     validation=validation, cache=cache, cache_dir=cache_dir,
                     train_kwargs=train_kwargs)
    plan = [(size, seed, init, runner.lr_for(init, size)) for size in sizes for seed in seeds
            for init in inits]
    runner.run(plan, label=label, progress=progress)
    return _table([runner.done[p] for p in plan])


def _check_seeds(seeds) -> list[int]:
    seeds = list(seeds) if not isinstance(seeds, (int, np.integer)) else [int(seeds)]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds={seeds!r}: give one or more distinct integer seeds")
    return seeds


def _check_inits(inits, pretrain_state) -> list[str]:
    inits = list(inits)
    bad = [i for i in inits if i not in INITS]
    if bad or not inits:
        raise ValueError(f"inits={inits!r}: choose from {INITS}")
    if "pretrained" in inits and pretrain_state is None:
        raise ValueError("pretrain_state=None but inits includes 'pretrained': pass the pretrained "
                         "weights (e.g. pretrain_source(...)) or inits=('scratch',)")
    return inits


def _table(rows):
    import pandas as pd

    df = pd.DataFrame(rows)
    for c in _COLUMNS:
        if c not in df:
            df[c] = np.nan
    return df[_COLUMNS + [c for c in df.columns if c not in _COLUMNS]]


def run_cache_dir(cache_dir: str | Path | None = None) -> Path:
    """Where experiment runs are cached: ``cache_dir``, else ``$COURSE_EXPERIMENT_CACHE``,
    else ``$COURSE_DATA/experiments``. (A separate variable, so a cold timing can start
    from an empty run cache without downloading the datasets again.)"""
    if cache_dir is not None:
        return Path(cache_dir)
    if os.environ.get(RUN_CACHE_ENV):
        return Path(os.environ[RUN_CACHE_ENV]).expanduser()
    from course_utils.download import data_home

    return data_home("experiments")


def _state_fingerprint(state) -> str:
    """sha256 over pretrained weights: a PyTorch state dict or ``{layer: [arrays]}`` (Keras)."""
    records = []
    for name, value in state.items():
        for i, a in enumerate(value if isinstance(value, (list, tuple)) else [value]):
            if hasattr(a, "detach"):
                a = a.detach().cpu().numpy()
            a = np.ascontiguousarray(np.asarray(a))
            records.append((f"{name}/{i}", a.dtype.str, a.shape, a))
    return weights_fingerprint(records)


def _jsonable(value):
    """A cache-key form of a training setting: arrays by fingerprint, callables by name."""
    if isinstance(value, np.ndarray):
        return {"array": array_fingerprint(value)}
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if callable(value):
        return f"{getattr(value, '__module__', '?')}.{getattr(value, '__qualname__', repr(value))}"
    return value


def _name_of(fn) -> str | None:
    if fn is None:
        return None
    name = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    return f"{getattr(fn, '__module__', None) or type(fn).__module__}.{name}"


class _Runner:
    """Runs ``(size, seed, init, lr)`` plans for the experiment functions: builds and loads
    the models, calls the trainer, caches each run, keeps one outer progress bar."""

    def __init__(self, make_model, pretrain_state, data, *, trainer, load_state,
                 finetune_kwargs, model_kwargs, validation, cache, cache_dir, train_kwargs):
        self.model_key = None
        if isinstance(make_model, str):
            self.model_key = {"model": make_model, "model_kwargs": dict(model_kwargs or {}),
                              "framework": "torch"}
            make_model = _torch_model_factory(make_model, data.num_classes, model_kwargs)
        elif model_kwargs:
            raise ValueError("model_kwargs only applies when make_model is a model name")
        else:
            self.model_key = getattr(make_model, "cache_key", None)
        self.make_model = make_model
        self.trainer = trainer if trainer is not None else torch_trainer
        self.custom_load = load_state is not None
        if load_state is None:
            def load_state(model, state):
                return load_pretrained_torch(model, state, num_classes=data.num_classes)
        self.load_state = load_state
        self.state = pretrain_state
        self.data = data
        self.validation = validation
        self.finetune_kwargs = dict(finetune_kwargs or {})
        self.train_kwargs = dict(train_kwargs)
        self.lr_spec = self.train_kwargs.pop("lr", None)
        self.cache = bool(cache) and self.model_key is not None
        if cache and self.model_key is None:
            log.info("make_model %r has no cache_key: its runs are not cached", make_model)
        self.cache_dir = run_cache_dir(cache_dir) if self.cache else None
        self._base_key = None
        self._state_key = None
        self.done: dict = {}

    def lr_for(self, init: str, size: int):
        """The rate this run trains with: ``finetune_kwargs['lr']`` for pretrained runs if
        given, else ``lr`` (a number, ``{init: rate}`` or ``{init: {size: rate}}``)."""
        if init == "pretrained" and "lr" in self.finetune_kwargs:
            return self.finetune_kwargs["lr"]
        spec = self.lr_spec
        if isinstance(spec, Mapping):
            if init not in spec:
                raise ValueError(f"lr={spec!r} gives no rate for {init!r}")
            spec = spec[init]
            if isinstance(spec, Mapping):
                if size not in spec:
                    raise ValueError(f"lr gives no rate for {init!r} at {size} per class")
                spec = spec[size]
        return None if spec is None else float(spec)

    def base_key(self) -> dict:
        """What every run of this call shares in its cache key."""
        if self._base_key is None:
            d = self.data
            key = {"recipe": _RUN_RECIPE, "model": self.model_key,
                   "trainer": _name_of(self.trainer),
                   "data": d.name, "classes": list(d.classes), "pool": dataset_fingerprint(d),
                   "test": [array_fingerprint(d.x_test), array_fingerprint(d.y_test)],
                   "train_kwargs": _jsonable(self.train_kwargs)}
            if self.validation is not None:
                key["validation"] = [array_fingerprint(a)
                                     for a in _validation_arrays(self.validation)]
            self._base_key = key
        return self._base_key

    def key(self, size, seed, init, lr) -> dict:
        """One run's cache key: a scratch run does not depend on the pretrained weights."""
        key = dict(self.base_key(), size=size, seed=seed, init=init, lr=lr)
        if init == "pretrained":
            if self._state_key is None:
                self._state_key = _state_fingerprint(self.state)
            key.update(state=self._state_key,
                       load_state=_name_of(self.load_state) if self.custom_load else "torch-default",
                       finetune_kwargs=_jsonable({k: v for k, v in self.finetune_kwargs.items()
                                                  if k != "lr"}))
        return key

    def _path(self, size, seed, init, lr) -> Path:
        return self.cache_dir / f"run-{record_digest(self.key(size, seed, init, lr), 32)}.json"

    def bar(self, total: int, *, label=None, progress=True):
        """The outer progress bar over ``total`` runs (the trainers' bars nest inside it)."""
        from course_utils.progress import tqdm

        return tqdm(total=total, desc=f"runs: {label}" if label else "runs",
                    disable=not progress or total == 0, unit="run")

    def todo(self, plan) -> list:
        return [p for p in dict.fromkeys(plan) if p not in self.done]

    def run(self, plan, *, label=None, progress=True, tuning=frozenset(), bar=None):
        """Run every ``(size, seed, init, lr)`` of ``plan`` not run yet, on ``bar`` (a new
        one if None); ``tuning`` marks the ones shown as learning-rate search."""
        import contextlib
        import json

        todo = self.todo(plan)
        own = bar is None
        with (self.bar(len(todo), label=label, progress=progress) if own
              else contextlib.nullcontext(bar)) as bar:
            prefix = f"{label}, " if label else ""
            for size, seed, init, lr in todo:
                what = [getattr(self.trainer, "arm_words", {}).get(init, _ARM_WORDS[init])]
                if lr is not None:
                    what.append(f"lr {lr:g}")
                if (size, seed, init, lr) in tuning:
                    what.append("lr search")
                bar.set_description(f"run {bar.n + 1}/{bar.total}: {prefix}{size}/class, seed {seed}, "
                                    + ", ".join(what))  # shown as the run starts (runs take seconds)
                path = self._path(size, seed, init, lr) if self.cache else None
                row = None
                if path is not None and path.exists():
                    try:
                        row = json.loads(path.read_text())["row"]
                    except Exception as exc:  # a damaged entry is run again, not fatal
                        log.warning("cached run %s unreadable (%s); running it again", path, exc)
                if row is None:
                    row = self._run_one(size, seed, init, lr, progress)
                    if path is not None:
                        atomic_write_json(path, {"key": self.key(size, seed, init, lr), "row": row},
                                          default=str)
                self.done[(size, seed, init, lr)] = row
                bar.update(1)

    def _run_one(self, size, seed, init, lr, progress) -> dict:
        t0 = time.perf_counter()
        subset = self.data.per_class(size, seed)
        model = _call_factory(self.make_model, seed)
        kwargs = dict(self.train_kwargs)
        if init == "pretrained":
            model = self.load_state(model, self.state)
            kwargs.update(self.finetune_kwargs)
        if lr is not None:
            kwargs["lr"] = lr
        if self.validation is not None:
            kwargs["validation"] = self.validation
        if progress and "progress" in _parameters(self.trainer):
            kwargs.setdefault("progress", True)
        out = self.trainer(model, subset, seed, **kwargs)
        if not isinstance(out, Mapping) or "test_acc" not in out:
            raise TypeError(f"trainer {getattr(self.trainer, '__name__', self.trainer)!r} returned "
                            f"{out!r}; it must return a dict with at least 'test_acc'")
        if self.validation is not None and "val_acc" not in out:
            raise TypeError("validation was given but the trainer returned no 'val_acc'")
        row = {"init": init, "size": size, "seed": int(seed), "n_train": len(subset.y_train)}
        row.update({k: (float(v) if np.isscalar(v) else [float(a) for a in v])
                    for k, v in out.items()})
        row["seconds"] = time.perf_counter() - t0
        row["lr"] = lr if lr is not None else float("nan")
        log.info("%s size=%d seed=%d lr=%s test_acc=%.4f", init, size, seed, lr, row["test_acc"])
        return row


def _parameters(fn) -> set:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return set()
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return set(params) | {"progress"}
    return set(params)


@dataclass
class FairComparison:
    """What :func:`fair_comparison` returns: ``table`` (the runs at each arm's chosen rate,
    scored on the test split; the layout of :func:`scratch_vs_pretrained`), ``search``
    (every learning-rate search run: ``init, size, seed, lr, val_acc, val_loss``, and no
    test score, so nothing in it can choose by the test set) and ``chosen`` (per ``init``
    and ``size``: the rate with the best mean validation accuracy)."""

    table: Any
    search: Any
    chosen: Any

    def rates(self) -> dict:
        """``{init: {size: lr}}``, the chosen rates (what ``lr=`` of
        :func:`scratch_vs_pretrained` takes)."""
        out: dict = {}
        for r in self.chosen.itertuples():
            out.setdefault(r.init, {})[int(r.size)] = float(r.lr)
        return out


def best_learning_rates(search, metric: str = "val_acc"):
    """Per ``init`` and ``size`` of a search table, the ``lr`` with the highest mean
    ``metric`` over seeds (ties: the smaller rate). Returns ``init, size, lr, <metric>``."""
    means = search.groupby(["init", "size", "lr"], sort=True)[metric].mean().reset_index()
    best = means.loc[means.groupby(["init", "size"], sort=False)[metric].idxmax()]
    return best.reset_index(drop=True)


def grid_edge(lr: float, grid: Sequence[float]) -> str:
    """``"highest"`` or ``"lowest"`` when ``lr`` is that end of ``grid`` (of two or more
    rates), else ``""``. A rate chosen at an end of its grid may not be that arm's best: a
    wider grid could do better, so a fair comparison says so instead of hiding it."""
    rates = sorted(float(r) for r in grid)
    if len(rates) < 2:
        return ""
    if math.isclose(float(lr), rates[-1]):
        return "highest"
    if math.isclose(float(lr), rates[0]):
        return "lowest"
    return ""


def fair_comparison(make_model, pretrain_state, data, sizes: Sequence[int] | int,
                    seeds: Sequence[int] = (0, 1, 2), *, validation,
                    lr_grid: Mapping[str, Sequence[float]] | None = None, tune_seeds: int = 1,
                    trainer: Callable | None = None, load_state: Callable | None = None,
                    inits: Sequence[str] = INITS,
                    finetune_kwargs: Mapping[str, Any] | None = None,
                    model_kwargs: Mapping[str, Any] | None = None, cache: bool = False,
                    cache_dir: str | Path | None = None, label: str | None = None,
                    progress: bool = True, search_kwargs: Mapping[str, Any] | None = None,
                    **train_kwargs) -> FairComparison:
    """Scratch versus pretrained with each arm at its own learning rate, chosen on
    ``validation`` data: a comparison in which scratch training is not handicapped by a
    rate tuned for fine-tuning (nor the other way round).

    For every size, each arm trains with every rate of ``lr_grid[init]`` (default
    :data:`LR_GRID`) on the first ``tune_seeds`` seeds' images and is scored on
    ``validation`` (images carved out of the *training* pool, e.g. the second half of
    ``data.train_val_split(...)`` with ``data`` its first half, never the test split). The
    rate with the best mean validation accuracy is then run for every seed (the search runs
    at that rate are reused) and scored on the test split. ``chosen`` has a ``grid_edge``
    column (:func:`grid_edge`) that flags a rate at an end of its grid. Other arguments as
    in :func:`scratch_vs_pretrained`. Returns a :class:`FairComparison`.

    ``search_kwargs`` override ``train_kwargs`` for the search runs only, e.g.
    ``{"curve": False}``: a per-epoch test curve is read from the runs at the chosen rates,
    and a search run never needs one (nor may it look at test scores). The search runs then
    differ from the chosen-rate runs, so every seed runs at its chosen rate (none is reused).
    """
    if validation is None:
        raise ValueError("fair_comparison needs validation data carved from the training pool "
                         "(e.g. data.train_val_split(0.1, seed)): the test split must not pick rates")
    if "lr" in train_kwargs or "lr" in (finetune_kwargs or {}):
        raise ValueError("fair_comparison chooses lr from lr_grid; do not pass lr")
    sizes = _check_sizes(sizes)
    seeds = _check_seeds(seeds)
    inits = _check_inits(inits, pretrain_state)
    grid = dict(LR_GRID if lr_grid is None else lr_grid)
    for init in inits:
        if not grid.get(init):
            raise ValueError(f"lr_grid={grid!r} gives no rates for {init!r}")
    if isinstance(tune_seeds, bool) or not isinstance(tune_seeds, (int, np.integer)) \
            or not 1 <= tune_seeds <= len(seeds):
        raise ValueError(f"tune_seeds={tune_seeds!r}: search on the first 1..{len(seeds)} seeds")
    if "lr" in (search_kwargs or {}):
        raise ValueError("fair_comparison chooses lr from lr_grid; search_kwargs must not set lr")

    def runner_with(kwargs):
        return _Runner(make_model, pretrain_state, data, trainer=trainer, load_state=load_state,
                       finetune_kwargs=finetune_kwargs, model_kwargs=model_kwargs,
                       validation=validation, cache=cache, cache_dir=cache_dir,
                       train_kwargs=kwargs)

    runner = runner_with(train_kwargs)
    search_train = {**train_kwargs, **(search_kwargs or {})}
    searcher = runner if search_train == train_kwargs else runner_with(search_train)
    search_plan = [(size, seed, init, float(lr)) for size in sizes for seed in seeds[:tune_seeds]
                   for init in inits for lr in grid[init]]
    # one bar over the search and the remaining runs: the search runs at each chosen rate are
    # reused (unless search_kwargs makes them different runs), so the total is known before
    # the rates are
    n_main = len(sizes) * len(seeds) * len(inits)
    if searcher is runner:
        n_main -= len(sizes) * tune_seeds * len(inits)
    with runner.bar(len(dict.fromkeys(search_plan)) + n_main, label=label, progress=progress) as bar:
        searcher.run(search_plan, label=label, progress=progress, tuning=frozenset(search_plan),
                     bar=bar)
        search = _table([searcher.done[p] for p in search_plan])
        search = search[[c for c in ("init", "size", "seed", "lr", "val_acc", "val_loss", "seconds")
                         if c in search]]
        chosen = best_learning_rates(search)
        chosen["grid_edge"] = [grid_edge(r.lr, grid[r.init]) for r in chosen.itertuples()]
        rates = FairComparison(None, search, chosen).rates()
        plan = [(size, seed, init, rates[init][size]) for size in sizes for seed in seeds
                for init in inits]
        runner.run(plan, label=label, progress=progress, bar=bar)
    return FairComparison(_table([runner.done[p] for p in plan]), search, chosen)


def epoch_curve_readout(table, curve: str = "test_acc_curve", slope_epochs: int = 3):
    """Start, slope and asymptote of each init, as the transfer-learning literature defines
    them (Torrey & Shavlik 2009), from per-epoch curves (``curve=True`` of the trainers):
    **start** = accuracy on the target before any training on it (epoch 0), **slope** =
    accuracy gained per epoch over the first ``slope_epochs`` epochs, **asymptote** =
    accuracy after the last epoch. Means over the table's runs (one size at a time);
    returns a DataFrame indexed by the three names, one column per init."""
    import pandas as pd

    if curve not in table:
        raise KeyError(f"{curve!r} is not a column: run the trainer with curve=True")
    if table["size"].nunique() != 1:
        raise ValueError("epoch_curve_readout reads one training-set size at a time")
    out = {}
    for init in [i for i in INITS if i in set(table["init"])]:
        curves = np.array([np.asarray(c, dtype=float) for c in table.loc[table["init"] == init, curve]])
        k = min(slope_epochs, curves.shape[1] - 1)
        out[init] = {"start (epoch 0)": curves[:, 0].mean(),
                     f"slope (acc per epoch, epochs 0-{k})": ((curves[:, k] - curves[:, 0]) / k).mean(),
                     f"asymptote (epoch {curves.shape[1] - 1})": curves[:, -1].mean()}
    return pd.DataFrame(out)


def _t_interval(values: np.ndarray, confidence: float) -> tuple[float, float, float, float]:
    """mean, std (ddof=1), lower, upper of a two-sided t confidence interval of the mean."""
    from scipy import stats

    v = np.asarray(values, dtype=float)
    n = len(v)
    mean = float(v.mean()) if n else math.nan
    if n < 2:
        return mean, math.nan, math.nan, math.nan
    sd = float(v.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    return mean, sd, mean - half, mean + half


def summarize(table, metric: str = "test_acc", confidence: float = 0.95):
    """Mean, standard deviation and a t-based ``confidence`` interval of ``metric`` over
    seeds, per (init, size). One seed gives NaN bounds: an interval needs two."""
    import pandas as pd

    if metric not in table:
        raise KeyError(f"metric={metric!r} is not a column; columns: {', '.join(table.columns)}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence={confidence!r}: use a level in (0, 1), e.g. 0.95")
    rows = []
    for (init, size), g in table.groupby(["init", "size"], sort=False):
        mean, sd, lo, hi = _t_interval(g[metric].to_numpy(), confidence)
        rows.append({"init": init, "size": size, "n": len(g), "mean": mean, "std": sd,
                     "ci_low": lo, "ci_high": hi})
    out = pd.DataFrame(rows)
    order = {k: i for i, k in enumerate(INITS)}
    return out.sort_values(["init", "size"], key=lambda s: s.map(order) if s.name == "init" else s,
                           ignore_index=True)


def paired_gain(table, metric: str = "test_acc", confidence: float = 0.95):
    """Pretrained minus scratch ``metric`` per size, paired by seed (the same images), with
    mean, std and t-interval over seeds. A gain whose interval excludes 0 is more than seed
    noise."""
    import pandas as pd

    wide = table.pivot_table(index=["size", "seed"], columns="init", values=metric)
    missing = [i for i in INITS if i not in wide]
    if missing:
        raise ValueError(f"paired_gain needs both inits; the table lacks {missing}")
    diff = (wide["pretrained"] - wide["scratch"]).dropna()
    rows = []
    for size, g in diff.groupby(level="size"):
        mean, sd, lo, hi = _t_interval(g.to_numpy(), confidence)
        rows.append({"size": size, "n": len(g), "gain": mean, "std": sd, "ci_low": lo, "ci_high": hi})
    return pd.DataFrame(rows)


def plot_scratch_vs_pretrained(table, ax=None, *, metric: str = "test_acc",
                               confidence: float = 0.95, logx: bool = True,
                               title: str | None = None):
    """Mean ``metric`` against images per class, one line per init, with a band for the
    t-based ``confidence`` interval over seeds and the individual seeds as dots.
    Returns the Axes (never calls ``plt.show()``)."""
    import matplotlib.pyplot as plt

    summary = summarize(table, metric, confidence)
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    for init in [i for i in INITS if i in set(summary["init"])]:
        s = summary[summary["init"] == init]
        (line,) = ax.plot(s["size"], s["mean"], "-o", label=f"{init} (mean of {int(s['n'].max())} seeds)")
        c = line.get_color()
        if s["n"].min() >= 2:
            ax.fill_between(s["size"], s["ci_low"], s["ci_high"], color=c, alpha=0.2, linewidth=0,
                            label=f"{init} {confidence:.0%} CI")
        pts = table[table["init"] == init]
        ax.plot(pts["size"], pts[metric], ".", color=c, alpha=0.5)
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel("training images per class")
    ax.set_ylabel(metric.replace("_", " "))
    ax.set_title(title if title is not None else "Scratch vs pretrained")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    return ax


# --------------------------------------------------------------------------- standard task

def source_target_split(data, source_classes: Sequence[int] = SOURCE_CLASSES,
                        target_classes: Sequence[int] = TARGET_CLASSES):
    """``(source, target)``: the classes of a pretraining task and of a disjoint target
    task, each relabelled 0..k-1 (Fashion-MNIST: classes 0-4 and 5-9)."""
    overlap = set(source_classes) & set(target_classes)
    if overlap:
        raise ValueError(f"source_classes and target_classes share {sorted(overlap)}: the target "
                         "task must be new to the pretrained network")
    return data.select_classes(list(source_classes)), data.select_classes(list(target_classes))


def source_task(data, source_classes: Sequence[int] = SOURCE_CLASSES,
                per_class: int | None = None, seed: int = 0):
    """The pretraining task of both ``pretrain_source`` twins: ``source_classes`` of ``data``
    (default Fashion-MNIST), relabelled, cut to ``per_class`` training images per class drawn
    with ``seed`` when given."""
    if data is None:
        from course_utils.data import load

        data = load("fashion_mnist")
    source = data.select_classes(list(source_classes))
    return source.per_class(per_class, seed) if per_class is not None else source


def pretrain_key(model_name: str, source, *, epochs: int, seed: int, per_class: int | None,
                 batch_size: int, lr: float, model_kwargs: Mapping[str, Any] | None = None,
                 scheduler: str | None = None, framework: str = "torch") -> dict:
    """What a pretraining cache entry is keyed by, for both frameworks: the recipe version,
    the model, the source data (name, classes, :func:`~course_utils.fingerprint.dataset_fingerprint`)
    and every training setting. Keys that were added later are left out when they have their
    old value (no scheduler; no ``model_kwargs`` in Keras), so existing caches keep their
    names."""
    key = {"recipe": _PRETRAIN_RECIPE, "model": model_name, "data": source.name,
           "classes": list(source.classes), "fingerprint": dataset_fingerprint(source),
           "epochs": epochs, "seed": seed, "per_class": per_class, "batch_size": batch_size,
           "lr": lr}
    if framework != "torch":
        key["framework"] = framework
    if framework == "torch" or model_kwargs:
        key["model_kwargs"] = dict(sorted((model_kwargs or {}).items()))
    if scheduler is not None:
        key["scheduler"] = scheduler
    return key


def pretrain_cache_path(key: Mapping, cache_dir: str | Path | None = None, *,
                        suffix: str = ".pt") -> Path:
    """Where the weights for a pretraining ``key`` live: ``<cache>/<model>-<hash><suffix>``
    (``keras-<model>-...`` for Keras keys), ``<cache>`` defaulting to
    ``$COURSE_DATA/pretrained``."""
    if cache_dir is None:
        from course_utils.download import data_home

        cache_dir = data_home("pretrained")
    prefix = f"{key['framework']}-" if "framework" in key else ""
    return Path(cache_dir) / f"{prefix}{key['model']}-{record_digest(key, 16)}{suffix}"


def pretrain_source(model_name: str = "small_cnn", data=None, *, epochs: int = 2, seed: int = 0,
                    per_class: int | None = None, batch_size: int = 128, lr: float = 1e-3,
                    source_classes: Sequence[int] = SOURCE_CLASSES,
                    model_kwargs: Mapping[str, Any] | None = None, scheduler: str | None = None,
                    n_test: int | None = None, cache_dir: str | Path | None = None,
                    return_meta: bool = False, device=None, progress: bool = True):
    """Pretrain ``model_name`` on the source task and return its state dict, cached on disk.

    ``data`` is the full dataset (default: ``load("fashion_mnist")``); the source task is
    its ``source_classes``, relabelled, optionally cut to ``per_class`` training images per
    class (drawn with ``seed``). The weights are cached under ``cache_dir`` (default
    ``$COURSE_DATA/pretrained``) keyed by every argument that changes them and a hash of the
    training images, and written atomically, so notebooks and tests that ask for the same
    pretraining share one file and an interrupted run leaves no half-written file.
    ``scheduler`` (e.g. ``"cosine"``) goes to :func:`course_utils.train.fit` and is part of
    the cache key. ``return_meta=True`` returns ``(state_dict, meta)`` with the source test
    accuracy, on ``n_test`` images drawn with seed 0 (default: the whole source test split).
    """
    import torch

    from course_utils.data.fast import FastLoader
    from course_utils.device import seed_everything
    from course_utils.models import create_model
    from course_utils.models.registry import get_spec
    from course_utils.train import evaluate, fit

    source = source_task(data, source_classes, per_class, seed)
    if scheduler is not None and scheduler != "cosine":
        raise ValueError(f"scheduler = {scheduler!r}: pretrain_source caches by name; use None or "
                         "'cosine'")
    key = pretrain_key(model_name, source, epochs=epochs, seed=seed, per_class=per_class,
                       batch_size=batch_size, lr=lr, model_kwargs=model_kwargs,
                       scheduler=scheduler)
    path = pretrain_cache_path(key, cache_dir)
    with build_lock(path):  # a second process asking for it waits, then loads it
        if path.exists():
            try:
                blob = torch.load(path, map_location="cpu", weights_only=True)
                log.info("pretrained %s loaded from cache %s", model_name, path)
                return (blob["state_dict"], blob["meta"]) if return_meta else blob["state_dict"]
            except Exception as exc:  # a corrupt cache file is rebuilt, not fatal
                log.warning("cached weights %s unreadable (%s); pretraining again", path, exc)

        t0 = time.perf_counter()
        seed_everything(seed, deterministic=None)
        model = create_model(model_name, num_classes=source.num_classes, **dict(model_kwargs or {}))
        spec = get_spec(model)
        rgb = source.x_train.ndim == 3 and spec.input_size[0] == 3
        common = dict(rgb=rgb, mean=spec.mean, std=spec.std)
        train = FastLoader(source.x_train, source.y_train, batch_size, shuffle=True, seed=seed, **common)
        x_test, y_test = subset_test_split(source, n_test)
        test = FastLoader(x_test, y_test, 500, shuffle=False, seed=None, **common)
        hist = fit(model, train, epochs=epochs, lr=lr, scheduler=scheduler, seed=seed, device=device,
                   progress=progress)
        scores = evaluate(model, test, device=device)
        state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        meta = dict(key, source_test_acc=float(scores["acc"]), source_test_loss=float(scores["loss"]),
                    train_acc=float(hist.last["train_acc"]), seconds=time.perf_counter() - t0,
                    n_train=len(source.y_train))
        log.info("pretrained %s on %d source images in %.1fs: source test accuracy %.3f",
                 model_name, len(source.y_train), meta["seconds"], meta["source_test_acc"])
        _atomic_save({"state_dict": state, "meta": meta}, path)
        return (state, meta) if return_meta else state


def subset_test_split(data, n_test: int | None):
    """``data``'s test split, or ``n_test`` images of it drawn with seed 0 (kept in order):
    the source test images :func:`pretrain_source` scores (both frameworks)."""
    x, y = data.x_test, data.y_test
    if n_test is not None:
        if isinstance(n_test, bool) or not isinstance(n_test, (int, np.integer)) or n_test < 1:
            raise ValueError(f"n_test = {n_test!r}: give a positive number of test images, or None")
        if n_test < len(y):
            idx = np.sort(np.random.default_rng(0).permutation(len(y))[:n_test])
            x, y = x[idx], y[idx]
    return x, y


def _atomic_save(obj, path: Path) -> None:
    import torch

    atomic_write(path, lambda f: torch.save(obj, f))


def finetune_vs_scratch(model_name: str = "small_cnn", data=None, sizes: Sequence[int] = (10,),
                        seeds: Sequence[int] = (0, 1, 2), *, pretrain_epochs: int = 2,
                        pretrain_per_class: int | None = None, pretrain_seed: int = 0,
                        pretrain_batch_size: int = 128, pretrain_lr: float = 1e-3,
                        pretrain_n_test: int | None = None, pretrain_scheduler: str | None = None,
                        source_classes: Sequence[int] = SOURCE_CLASSES,
                        target_classes: Sequence[int] = TARGET_CLASSES,
                        cache_dir: str | Path | None = None, trainer: Callable | None = None,
                        finetune_kwargs: Mapping[str, Any] | None = None, progress: bool = True,
                        **train_kwargs):
    """The course's standard transfer experiment in one call: pretrain ``model_name`` on the
    source classes (cached, see :func:`pretrain_source`; the ``pretrain_*`` arguments are its
    ``epochs``, ``per_class``, ``seed``, ``batch_size``, ``lr``, ``n_test`` and ``scheduler``),
    then compare fine-tuning it with training from scratch on ``sizes`` images per class of
    the target classes, scored on the target test split. ``trainer`` (default
    :func:`torch_trainer`) gets ``train_kwargs``. Returns the table of
    :func:`scratch_vs_pretrained`. The Keras twin takes the same arguments."""
    pretrain = dict(epochs=pretrain_epochs, seed=pretrain_seed, per_class=pretrain_per_class,
                    batch_size=pretrain_batch_size, lr=pretrain_lr, scheduler=pretrain_scheduler,
                    n_test=pretrain_n_test)
    return transfer_experiment(pretrain_source, lambda name, num_classes: name, model_name, data,
                               sizes, seeds, pretrain_kwargs=pretrain,
                               source_classes=source_classes, target_classes=target_classes,
                               cache_dir=cache_dir, trainer=trainer, load_state=None,
                               finetune_kwargs=finetune_kwargs, progress=progress, **train_kwargs)


def transfer_experiment(pretrain: Callable, make_model: Callable, model_name: str, data,
                        sizes: Sequence[int], seeds: Sequence[int], *,
                        pretrain_kwargs: Mapping[str, Any], source_classes: Sequence[int],
                        target_classes: Sequence[int], cache_dir, trainer: Callable | None,
                        load_state: Callable | None, finetune_kwargs, progress: bool,
                        **train_kwargs):
    """What both ``finetune_vs_scratch`` twins do, with the framework's parts passed in:
    ``pretrain`` (a ``pretrain_source``), ``make_model(model_name, num_classes)`` (what
    :func:`scratch_vs_pretrained` takes as ``make_model``), ``trainer`` and ``load_state``.
    Splits ``data`` (default Fashion-MNIST) into source and target classes, pretrains on the
    source (cached) and compares on the target."""
    if data is None:
        from course_utils.data import load

        data = load("fashion_mnist")
    _, target = source_target_split(data, source_classes, target_classes)
    state = pretrain(model_name, data, source_classes=source_classes, cache_dir=cache_dir,
                     progress=progress, **pretrain_kwargs)
    return scratch_vs_pretrained(make_model(model_name, target.num_classes), state, target,
                                 sizes, seeds, trainer=trainer, load_state=load_state,
                                 finetune_kwargs=finetune_kwargs, progress=progress,
                                 **train_kwargs)
