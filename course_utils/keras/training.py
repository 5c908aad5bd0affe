"""Training Keras models the course's way: ``model.fit`` plus the course's callbacks.

:func:`fit` is a thin wrapper around ``model.fit`` that adds what the PyTorch
``course_utils.train.fit`` has, with the same argument names where they mean the same:

* a tqdm progress bar (:class:`TqdmProgress`) instead of Keras's console printing;
* a :class:`course_utils.history.History` with the PyTorch keys (``train_loss``,
  ``train_acc``, ``val_loss``, ``val_acc``, ``lr``, ``seconds``), ``framework="keras"``, so
  both frameworks plot on one axis (:class:`HistoryRecorder`);
* early stopping on the validation loss and restoring the best epoch's weights;
* a checkpoint after every epoch (weights, optimizer state, dropout generator states,
  history) and ``resume=True``, which continues an interrupted run with ``initial_epoch``
  and ends with the same weights an uninterrupted run would (:class:`EpochCheckpoint`).

Keras-specific rules it enforces, because they fail silently otherwise: changing
``layer.trainable`` after ``compile()`` has no effect on training until the model is
compiled again (Keras 3 keeps training the old set of weights), so :func:`fit` refuses to
train a model whose trainable layers changed since it was compiled.
"""
from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Sequence

import numpy as np
from course_utils.progress import tqdm

from course_utils.atomic import atomic_path, atomic_write, atomic_write_json
from course_utils.errors import NonFiniteLossError
from course_utils.history import History
from course_utils.keras._backend import keras, save_weights, tf
from course_utils.keras.pipeline import TFLoader
from course_utils.seeding import check_seed

__all__ = ["compile_model", "fit", "evaluate", "predict", "seed_everything", "as_loader",
           "TqdmProgress", "HistoryRecorder", "RaiseOnNonFiniteLoss", "CourseEarlyStopping", "EpochCheckpoint",
           "CosineSchedule",
           "RecompileNeeded", "check_compiled", "CHECKPOINT_STATE"]

log = logging.getLogger(__name__)

CHECKPOINT_STATE = "state.json"
BEST_WEIGHTS = "best.npz"
_FORMAT = 1


class RecompileNeeded(RuntimeError):
    """The model's trainable layers changed since it was compiled; training now would update
    the old set of weights."""


# --- seeding and compiling -----------------------------------------------------------------

_OP_DETERMINISM = False  # TensorFlow has no public getter: remember whether we switched it on


def seed_everything(seed: int, deterministic: bool | None = False) -> int:
    """Seed Python, NumPy and TensorFlow (``keras.utils.set_random_seed``). Call it before
    building a model: Keras draws initial weights and dropout seeds when layers are made.

    ``deterministic=True`` also switches TensorFlow's deterministic ops on
    (``tf.config.experimental.enable_op_determinism``), the twin of torch's deterministic
    algorithms. TensorFlow has no public API to switch them off again, so ``False`` after
    ``True`` in the same process only logs a warning (restart the kernel); ``None`` leaves
    them as they are. Errors as on the PyTorch side: ``TypeError`` for a seed that is not an
    int, ``ValueError`` outside ``0 <= seed < 2**32``. Returns the seed."""
    global _OP_DETERMINISM
    seed = check_seed(seed)
    keras.utils.set_random_seed(seed)  # seeds python, numpy and the backend
    if deterministic and not _OP_DETERMINISM:
        tf.config.experimental.enable_op_determinism()
        _OP_DETERMINISM = True
    elif deterministic is False and _OP_DETERMINISM:
        log.warning("seed_everything(deterministic=False): TensorFlow's deterministic ops stay "
                    "on (it has no public switch to turn them off); restart the kernel")
    return seed


def _seed_generator_states(model) -> list:
    """The state variables of the model's random generators (Dropout, RandomFlip ...), in a
    fixed order. Keras keeps them out of ``save_weights``, so checkpoints store them apart."""
    return [v for v in model.variables if "seed_generator_state" in v.path]


def _reseed(model, seed: int) -> None:
    """Make the model's dropout masks a function of ``seed`` (not of how many layers were
    built before it in the process)."""
    for i, v in enumerate(_seed_generator_states(model)):
        state = np.zeros(v.shape, dtype=v.dtype)
        state.flat[0] = (int(seed) * 7919 + i * 104729 + 1) % (2 ** 31)
        v.assign(state)


def _make_optimizer(optimizer, lr: float, weight_decay: float):
    if isinstance(optimizer, keras.optimizers.Optimizer):
        # a fresh instance of the same kind: an optimizer is bound to the variables it built on
        cfg = optimizer.get_config()
        if lr is not None:
            cfg["learning_rate"] = lr
        return type(optimizer).from_config(cfg)
    if callable(optimizer) and not isinstance(optimizer, str):
        return optimizer(lr)
    name = str(optimizer).lower()
    if name == "adam":
        return keras.optimizers.Adam(lr, weight_decay=weight_decay or None)
    if name == "adamw":
        # the given decay, 0 included (Keras's own default is 0.004; torch's AdamW 0.01, but
        # fit(weight_decay=0) means 0 on both sides)
        return keras.optimizers.AdamW(lr, weight_decay=float(weight_decay))
    if name == "sgd":
        return keras.optimizers.SGD(lr, momentum=0.9, weight_decay=weight_decay or None)
    if name == "rmsprop":
        return keras.optimizers.RMSprop(lr, weight_decay=weight_decay or None)
    raise ValueError(f"optimizer={optimizer!r}: use 'adam', 'adamw', 'sgd' or 'rmsprop', a "
                     "keras.optimizers.Optimizer, or a callable lr -> optimizer")


def compile_model(model, lr: float = 1e-3, optimizer="adam", *, loss=None, metrics=None,
                  weight_decay: float = 0.0, jit_compile: bool = False):
    """``model.compile`` with the course's defaults: Adam, sparse categorical cross-entropy
    on logits, accuracy recorded as ``acc``. Remembers the settings (``model.course_compile``)
    so ``freeze_base``/``unfreeze_top`` can recompile with a new learning rate.

    ``optimizer``: ``"adam"``, ``"adamw"``, ``"sgd"`` (momentum 0.9), ``"rmsprop"``, an
    optimizer instance (a fresh copy is made, so recompiling never reuses one bound to other
    variables) or a callable ``lr -> optimizer``. ``jit_compile=False`` by default: XLA's
    compile time outweighs its gain for the course's small CPU runs.

    Compiling again with the same settings and the same trainable layers does not call
    ``model.compile``: the optimizer's state is zeroed instead (what a fresh optimizer
    starts from), which gives the same training without TensorFlow tracing the training
    step again (seconds per call on a CPU)."""
    if lr is not None and (not isinstance(lr, (int, float)) or lr <= 0):
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    settings = {"lr": lr, "optimizer": optimizer, "loss": loss, "metrics": metrics,
                "weight_decay": weight_decay, "jit_compile": jit_compile}
    if (model.compiled and getattr(model, "course_compile", None) == settings
            and isinstance(optimizer, str) and not _trainable_changed(model)):
        _reset_optimizer(model.optimizer)
        if lr is not None:  # a schedule may have left another rate behind
            model.optimizer.learning_rate.assign(lr)
        model.course_pending_recompile = None
        return model
    # under the strategy the model was built with (MirroredStrategy: optimizer slots per replica)
    with model.distribute_strategy.scope():
        model.compile(
            optimizer=_make_optimizer(optimizer, lr, weight_decay),
            loss=loss if loss is not None else keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=(list(metrics) if metrics is not None
                     else [keras.metrics.SparseCategoricalAccuracy(name="acc")]),
            jit_compile=jit_compile)
    model.course_compile = settings
    model.course_pending_recompile = None
    return model


def _reset_optimizer(opt) -> None:
    """Zero an optimizer's step counter and moment estimates, keeping its learning rate."""
    if not getattr(opt, "built", False):
        return
    for v in opt.variables:
        if "learning_rate" not in v.path:
            v.assign(np.zeros(v.shape, dtype=v.dtype))


def _trainable_changed(model) -> list[str]:
    """Names of the layers whose ``trainable`` flag changed since ``compile()``."""
    # Keras 3 records each layer's trainable flag at compile() but has no public API to read
    # it, and declined to warn about the mismatch itself (keras-team/keras#22413, closed;
    # tensorflow/tensorflow#117169): this private attribute is the only way to see it, for
    # models compiled by compile_model and by hand alike.
    compiled_state = getattr(model, "_compiled_trainable_state", None)
    if not model.compiled or not compiled_state:
        return []
    return [layer.name for layer, was in compiled_state.items() if was != layer.trainable]


def check_compiled(model) -> None:
    """Raise :class:`RecompileNeeded` if ``layer.trainable`` changed since ``compile()``."""
    pending = getattr(model, "course_pending_recompile", None)
    if not model.compiled and pending:
        raise RecompileNeeded(
            f"{pending} changed which layers of {model.name!r} train, and the model was not "
            "compiled again. Keras only picks up the new trainable weights at compile(): call "
            "compile_model(model, lr=...) (or model.compile(...)) before training.")
    changed = _trainable_changed(model)
    if changed:
        shown = ", ".join(changed[:6]) + (" ..." if len(changed) > 6 else "")
        raise RecompileNeeded(
            f"the trainable flag of {len(changed)} layer(s) of {model.name!r} changed since "
            f"compile() ({shown}); Keras would keep training the old set of weights. Call "
            "compile_model(model, lr=...) (or model.compile(...)) after changing trainable.")


# --- data ----------------------------------------------------------------------------------

def as_loader(data, batch_size: int = 32, *, shuffle: bool = False, seed: int | None = 0):
    """``TFLoader`` and ``tf.data.Dataset`` pass through; ``(x, y)`` arrays become a
    ``TFLoader`` (uint8 scaled to [0, 1], nothing else: normalisation is the loader's job,
    see ``TFLoader(mean=..., std=...)`` or a model with a normalisation layer); a bare array
    ``x`` becomes an unlabelled loader (for ``predict``)."""
    if isinstance(data, (TFLoader, tf.data.Dataset)):
        return data
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return TFLoader(data[0], data[1], batch_size, shuffle=shuffle, seed=seed)
    if isinstance(data, np.ndarray):
        return TFLoader(data, None, batch_size)
    raise TypeError(f"data of type {type(data).__name__}: pass a TFLoader, a tf.data.Dataset, "
                    "an (x, y) pair of arrays or (for predict) an array x")


# --- callbacks -----------------------------------------------------------------------------

class TqdmProgress(keras.callbacks.Callback):
    """Progress with ``tqdm.auto``: one bar over epochs and one, transient, over batches."""

    def __init__(self, epochs: int, initial_epoch: int = 0, steps: int | None = None):
        super().__init__()
        self.epochs, self.initial_epoch, self.steps = epochs, initial_epoch, steps
        self._epoch_bar = self._batch_bar = None

    def on_train_begin(self, logs=None):
        self._epoch_bar = tqdm(total=self.epochs, initial=self.initial_epoch, desc="fit (keras)",
                               unit="epoch", dynamic_ncols=True)

    def on_epoch_begin(self, epoch, logs=None):
        self._batch_bar = tqdm(total=self.steps, desc=f"epoch {epoch + 1}/{self.epochs}",
                               unit="batch", leave=False, dynamic_ncols=True)

    def on_train_batch_end(self, batch, logs=None):
        if self._batch_bar is not None:
            self._batch_bar.update(1)
            if logs and "loss" in logs:
                self._batch_bar.set_postfix(loss=f"{float(logs['loss']):.4f}", refresh=False)

    def on_epoch_end(self, epoch, logs=None):
        if self._batch_bar is not None:
            self._batch_bar.close()
        logs = logs or {}
        self._epoch_bar.set_postfix({k: f"{float(logs[k]):.4f}" for k in ("loss", "val_loss", "val_acc")
                                     if k in logs}, refresh=False)
        self._epoch_bar.update(1)

    def on_train_end(self, logs=None):
        for bar in (self._batch_bar, self._epoch_bar):
            if bar is not None:
                bar.close()


def _current_lr(model) -> float:
    opt = getattr(model, "optimizer", None)
    if opt is None:
        return float("nan")
    lr = opt.learning_rate
    if callable(lr) and not hasattr(lr, "numpy"):
        lr = lr(opt.iterations)
    return float(lr.numpy() if hasattr(lr, "numpy") else lr)


class HistoryRecorder(keras.callbacks.Callback):
    """Appends one :class:`History` record per epoch, renaming Keras's log keys to the
    course's: ``loss -> train_loss``, ``acc -> train_acc``, ``val_acc`` stays; other metrics
    become ``train_<name>``/``val_<name>``."""

    def __init__(self, history: History):
        super().__init__()
        self.history_ = history
        self._t0 = 0.0
        self._lr = float("nan")

    def on_epoch_begin(self, epoch, logs=None):
        self._t0 = time.perf_counter()
        self._lr = _current_lr(self.model)

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": epoch + 1, "lr": self._lr}
        for k, v in (logs or {}).items():
            val = k.startswith("val_")
            name = k[4:] if val else k
            key = f"{'val' if val else 'train'}_{'acc' if name in ('acc', 'accuracy') else name}"
            row[key] = float(v)
        row["seconds"] = time.perf_counter() - self._t0
        rec = self.history_.append(**row)
        log.info("epoch %d: %s", epoch + 1, ", ".join(
            f"{k}={v:.4g}" for k, v in rec.items() if k != "epoch" and isinstance(v, float)))


class CosineSchedule(keras.callbacks.Callback):
    """Cosine annealing per epoch, the same curve as PyTorch's ``CosineAnnealingLR`` with
    ``T_max=epochs`` and ``eta_min=0`` (what ``course_utils.train.fit(scheduler="cosine")``
    uses): epoch ``e`` (0-based) trains at ``base_lr * (1 + cos(pi * e / epochs)) / 2``.

    The rate is a function of the epoch number alone, so a resumed run (``initial_epoch``)
    picks the curve up where it stopped. The optimizer's rate is put back to ``base_lr`` when
    training ends, so a later ``fit`` does not silently start from the annealed value.
    """

    def __init__(self, base_lr: float, epochs: int):
        super().__init__()
        self.base_lr, self.epochs = float(base_lr), int(epochs)

    def rate(self, epoch: int) -> float:
        return self.base_lr * (1 + math.cos(math.pi * epoch / self.epochs)) / 2

    def on_epoch_begin(self, epoch, logs=None):
        self.model.optimizer.learning_rate.assign(self.rate(epoch))

    def on_train_end(self, logs=None):
        self.model.optimizer.learning_rate.assign(self.base_lr)


class RaiseOnNonFiniteLoss(keras.callbacks.Callback):
    """Raise :class:`~course_utils.errors.NonFiniteLossError` at the end of an epoch whose
    training or validation loss is NaN or infinite, as the PyTorch ``fit`` does, instead of
    training on (``keras.callbacks.TerminateOnNaN`` only stops, and lets a NaN validation
    loss through to early stopping, which would count it as one more bad epoch). It checks
    the epoch means, not every batch: a per-batch check would make Keras copy the logs to
    the host after every step."""

    def __init__(self):
        super().__init__()
        self.last_finite = None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        loss, val = float(logs.get("loss", 0.0)), logs.get("val_loss")
        if not math.isfinite(loss):
            lr = _current_lr(self.model)
            last = f"{self.last_finite:.4g}" if self.last_finite is not None else "none yet"
            raise NonFiniteLossError(
                f"the training loss became {loss} at epoch {epoch + 1} (last finite epoch loss: "
                f"{last}). The learning rate ({lr:g}) is probably too high: try lr={lr / 10:g}; "
                "also check the inputs for NaN")
        self.last_finite = loss
        if val is not None and not math.isfinite(float(val)):
            raise NonFiniteLossError(
                f"the validation loss became {float(val)} at epoch {epoch + 1}. Check the "
                "validation inputs and labels for NaN or out-of-range values, and the model's "
                "outputs (a diverged model gives inf logits)")


class CourseEarlyStopping(keras.callbacks.EarlyStopping):
    """``keras.callbacks.EarlyStopping(monitor="val_loss", restore_best_weights=...)`` that a
    resumed run continues: it starts from a checkpoint's state (best loss, its epoch, epochs
    since, best weights) instead of from scratch, writes the best weights to ``best.npz``
    when it improves (if ``directory`` is set), and reports to the course ``History``
    (``stopped_early``, ``best_epoch``). ``patience=None``: never stops, only keeps the best
    weights. The early-stopping rule itself is Keras's."""

    def __init__(self, history: History, *, patience: int | None, restore_best: bool,
                 epochs: int, directory: Path | None = None, state: dict | None = None,
                 best_weights: list | None = None):
        # patience=None: more epochs than the run has, so only restore_best_weights acts
        super().__init__(monitor="val_loss", patience=patience if patience is not None else epochs + 1,
                         restore_best_weights=restore_best)
        self.history_, self.directory = history, directory
        self._resume_from = (dict(state) if state else None, best_weights)

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)  # resets the counters ...
        state, best_weights = self._resume_from
        if state and state.get("best_epoch") is not None:  # ... which a resumed run restores
            self.best, self.best_epoch = state["best_loss"], state["best_epoch"] - 1
            self.wait, self.best_weights = state["bad_epochs"], best_weights

    def on_epoch_end(self, epoch, logs=None):
        before = self.best
        super().on_epoch_end(epoch, logs)
        if self.best is not before and self.directory is not None:  # a new best epoch
            weights = self.best_weights if self.best_weights is not None else self.model.get_weights()
            atomic_write(self.directory / BEST_WEIGHTS, lambda f: np.savez(f, *weights))
        if self.model.stop_training and self.stopped_epoch:
            self.history_.stopped_early = True
            log.info("early stopping after epoch %d: val_loss has not improved for %d epochs "
                     "(best %.4g at epoch %d)", epoch + 1, self.wait, self.best, self.best_epoch + 1)

    def on_train_end(self, logs=None):
        super().on_train_end(logs)
        if self.restore_best_weights and self.best_weights is not None:
            self.history_.best_epoch = self.best_epoch + 1
            log.info("restored the weights of epoch %d (val_loss %.4g)", self.best_epoch + 1,
                     self.best)

    def state(self) -> dict:
        """The checkpoint's ``early_stopping`` record."""
        seen = self.best is not None
        return {"best_loss": float(self.best) if seen else math.inf,
                "best_epoch": self.best_epoch + 1 if seen else None, "bad_epochs": int(self.wait)}


class EpochCheckpoint(keras.callbacks.Callback):
    """A resumable checkpoint after every epoch: ``epoch-NNNN.weights.h5`` (Keras
    ``save_weights``: layer weights and optimizer state) and then ``state.json`` (the epoch,
    seed, history, the early-stopping state of ``stopper``, dropout generator states), each
    written atomically, so ``state.json`` always points at a complete weights file.

    Why not ``keras.callbacks.BackupAndRestore``/``ModelCheckpoint``: they do not give the
    same guarantee. Neither saves the dropout generators' states (so a resumed run would not
    end with the weights of an uninterrupted one), the course ``History`` or the early-stopping
    counters, and ``ModelCheckpoint`` writes its file in place (a crash leaves half of one).
    """

    def __init__(self, history: History, directory: str | Path | None, *, seed: int | None,
                 stopper: CourseEarlyStopping | None):
        super().__init__()
        self.history_, self.seed, self.stopper = history, seed, stopper
        self.directory = Path(directory) if directory is not None else None

    def on_epoch_end(self, epoch, logs=None):
        if self.directory is not None:
            self._save(epoch + 1)

    def _save(self, epoch: int) -> None:
        d = self.directory
        weights = d / f"epoch-{epoch:04d}.weights.h5"
        with atomic_path(weights, suffix=".weights.h5") as tmp:  # Keras wants the suffix
            save_weights(self.model, tmp)
        es = (self.stopper.state() if self.stopper is not None
              else {"best_loss": math.inf, "best_epoch": None, "bad_epochs": 0})
        state = {"format": _FORMAT, "framework": "keras", "epoch": epoch, "seed": self.seed,
                 "weights": weights.name, "model": self.model.name,
                 "history": self.history_.to_dict(), "early_stopping": es,
                 "seed_generators": [np.asarray(v.numpy()).tolist()
                                     for v in _seed_generator_states(self.model)]}
        atomic_write_json(d / CHECKPOINT_STATE, state, indent=1, default=float)
        for old in d.glob("epoch-*.weights.h5"):
            if old.name != weights.name:
                old.unlink(missing_ok=True)


def _resume(model, directory: Path, seed) -> tuple[int, History, dict, list | None]:
    """Load ``state.json`` and the weights it points to into ``model`` (and its optimizer)."""
    path = directory / CHECKPOINT_STATE
    state = json.loads(path.read_text())
    if state.get("format") != _FORMAT or state.get("framework") != "keras":
        raise RuntimeError(f"{path} is not a course Keras checkpoint (format {state.get('format')!r}, "
                           f"framework {state.get('framework')!r}); use another checkpoint_dir, "
                           "delete it, or pass resume=False")
    weights = directory / state["weights"]
    if not weights.exists():
        raise FileNotFoundError(f"{path} points to {weights}, which is missing; delete {directory} "
                                "or pass resume=False")
    model.optimizer.build(model.trainable_variables)  # so its slots exist to be loaded into
    try:
        model.load_weights(weights)
    except Exception as exc:
        raise RuntimeError(f"{weights} does not fit model {model.name!r} ({exc}); it belongs to "
                           "another run: use another checkpoint_dir, delete it, or pass "
                           "resume=False") from exc
    gens = _seed_generator_states(model)
    for v, s in zip(gens, state.get("seed_generators", [])):
        v.assign(np.asarray(s, dtype=v.dtype))
    if state.get("seed") != seed:
        log.warning("resuming %s saved with seed=%r, but fit was called with seed=%r; the saved "
                    "seed's data order is not reproduced", path, state.get("seed"), seed)
    best = None
    es = dict(state["early_stopping"])
    if es.get("best_epoch") is not None and (directory / BEST_WEIGHTS).exists():
        with np.load(directory / BEST_WEIGHTS) as z:
            best = [z[f"arr_{i}"] for i in range(len(z.files))]
    log.info("resumed %s from %s after epoch %d", model.name, path, state["epoch"])
    return int(state["epoch"]), History.from_dict(state["history"]), es, best


# --- fit / evaluate / predict ---------------------------------------------------------------

def fit(model, train, val=None, *, epochs: int, lr: float | None = None, optimizer=None,
        scheduler: str | None = None, seed: int | None = 0,
        checkpoint_dir: str | Path | None = None, resume: bool = True,
        early_stopping: int | None = None, restore_best: bool = True, progress: bool = True,
        weight_decay: float | None = None, batch_size: int = 32, callbacks: Sequence = (),
        class_weight=None) -> History:
    """Train a Keras model with ``model.fit`` and the course callbacks; return a History.

    Parameters
    ----------
    train, val
        A :class:`TFLoader` (recommended: exact resume, same batches for the same seed), a
        ``tf.data.Dataset`` of batches, or an ``(x, y)`` pair of arrays (a shuffled
        ``TFLoader`` with ``batch_size`` and ``seed`` is made; uint8 is scaled to [0, 1]).
    lr, optimizer, weight_decay
        If any is given the model is (re)compiled with :func:`compile_model` (default
        Adam, lr 1e-3, weight decay 0). If none is, a compiled model keeps its compile settings
        (e.g. the low learning rate ``unfreeze_top`` set) and its optimizer state, and an
        uncompiled one gets the defaults. (This is why their defaults are ``None`` here and
        ``1e-3``/``"adam"``/``0`` in the PyTorch ``fit``: a Keras model carries its optimizer
        from ``compile()``, a PyTorch model does not.)
    seed
        Seeds Python/NumPy/TensorFlow and the model's dropout generators at the start (not
        on resume: the checkpoint's generator states are restored), and a ``TFLoader`` made
        from arrays. ``None``: no seeding.
    checkpoint_dir, resume
        Save a checkpoint after every epoch; with ``resume=True`` an existing one is loaded
        (weights, optimizer state, history) and training continues at ``initial_epoch``.
    early_stopping, restore_best
        Patience in epochs on ``val_loss`` (needs ``val``); load the best epoch's weights at
        the end (with ``val``) and set ``history.best_epoch``.
    batch_size
        Keras only: the batch size of a ``TFLoader`` made from an ``(x, y)`` pair (the
        PyTorch ``fit`` takes batches only).
    callbacks, class_weight
        Keras only: passed on to ``model.fit`` (after the course's callbacks).
    scheduler
        ``None`` (constant rate) or ``"cosine"``: :class:`CosineSchedule` from the compiled
        rate down towards 0 over ``epochs``, epoch by epoch as in the PyTorch ``fit``.
    """
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
        raise ValueError(f"epochs = {epochs!r}; it must be a positive int")
    if early_stopping is not None and (not isinstance(early_stopping, int) or early_stopping < 1):
        raise ValueError(f"early_stopping = {early_stopping!r}; give a patience in epochs (int >= 1)")
    if early_stopping is not None and val is None:
        raise ValueError("early_stopping needs validation data: pass val=... (a held-out split, "
                         "e.g. from ImageData.train_val_split)")
    if scheduler is not None and scheduler != "cosine":
        raise ValueError(f"scheduler = {scheduler!r} is not known; use None or 'cosine' (for "
                         "anything else pass a keras.callbacks.LearningRateScheduler in callbacks)")
    if lr is None and optimizer is None and weight_decay is None:
        check_compiled(model)  # (with lr/optimizer given, the model is compiled afresh below)
    if lr is not None or optimizer is not None or weight_decay is not None or not model.compiled:
        settings = getattr(model, "course_compile", None) or {}
        compile_model(model, lr if lr is not None else (settings.get("lr") or 1e-3),
                      optimizer if optimizer is not None else settings.get("optimizer", "adam"),
                      loss=settings.get("loss"), metrics=settings.get("metrics"),
                      weight_decay=(weight_decay if weight_decay is not None
                                    else settings.get("weight_decay", 0.0)),
                      jit_compile=settings.get("jit_compile", False))

    train_l = as_loader(train, batch_size, shuffle=True, seed=0 if seed is None else seed)
    val_l = as_loader(val, batch_size) if val is not None else None

    # the schedule's base rate: the compiled one (a checkpoint stores the annealed rate, and an
    # interrupted run never put it back)
    base_lr = (getattr(model, "course_compile", None) or {}).get("lr") or _current_lr(model)
    history = History(framework="keras")
    start, es, best = 0, None, None
    ckpt = Path(checkpoint_dir) if checkpoint_dir is not None else None
    if ckpt is not None and resume and (ckpt / CHECKPOINT_STATE).exists():
        start, history, es, best = _resume(model, ckpt, seed)
        history.framework = "keras"
    else:
        if ckpt is not None and (ckpt / CHECKPOINT_STATE).exists():
            log.warning("resume=False: starting over; the checkpoint in %s will be overwritten", ckpt)
        if seed is not None:
            seed_everything(seed)
            _reseed(model, seed)

    recorder = HistoryRecorder(history)
    stopper = None
    if val is not None:  # (tracks the best epoch even when it neither stops nor restores)
        stopper = CourseEarlyStopping(history, patience=early_stopping, restore_best=restore_best,
                                      epochs=epochs, directory=ckpt, state=es, best_weights=best)
    saver = EpochCheckpoint(history, ckpt, seed=seed, stopper=stopper)
    if start >= epochs or history.stopped_early:
        log.info("checkpoint in %s already covers %d epoch(s)%s; nothing to train", ckpt, start,
                 " (stopped early)" if history.stopped_early else "")
        if stopper is not None:  # put the best weights back, as the finished run did
            stopper.set_model(model)
            stopper.on_train_begin()
            stopper.on_train_end()
        return history

    if isinstance(train_l, TFLoader):
        train_ds, steps = train_l.repeat(start), len(train_l)
    else:
        train_ds, steps = train_l, None
    val_ds = val_l.dataset(0) if isinstance(val_l, TFLoader) else val_l
    # order matters: a non-finite loss stops everything; then the record of an epoch, early
    # stopping, and the checkpoint of both
    cbs = ([RaiseOnNonFiniteLoss(), recorder] + ([stopper] if stopper is not None else [])
           + [saver])
    if scheduler == "cosine":  # first, so the recorder logs the epoch's annealed rate
        cbs.insert(0, CosineSchedule(base_lr, epochs))
    if progress:
        cbs.insert(0, TqdmProgress(epochs, start, steps))
    model.fit(train_ds, validation_data=val_ds, epochs=epochs, initial_epoch=start,
              steps_per_epoch=steps, callbacks=cbs + list(callbacks), verbose=0,
              class_weight=class_weight, shuffle=False)
    return history


def predict(model, data, *, batch_size: int = 256) -> np.ndarray:
    """The model's outputs (logits for the course's models) for ``data``: a TFLoader, a
    dataset of batches, an ``(x, y)`` pair or an array ``x``."""
    ds = as_loader(data, batch_size)
    if isinstance(ds, TFLoader):
        if ds.shuffle:
            raise ValueError("predict: the TFLoader shuffles; pass shuffle=False so the rows "
                             "follow the data order")
        ds = ds.dataset()
    return np.asarray(model.predict(ds, verbose=0))


def _labels_of(data, batch_size) -> np.ndarray:
    loader = as_loader(data, batch_size)
    if isinstance(loader, TFLoader):
        if loader.y is None:
            raise ValueError("evaluate needs labels: the TFLoader was made without y")
        if loader.shuffle:
            raise ValueError("evaluate: pass an unshuffled TFLoader (shuffle=False), so "
                             "predictions and labels line up")
        return loader.y
    return np.concatenate([np.asarray(b[1]) for b in loader])


def evaluate(model, data, *, batch_size: int = 256) -> dict:
    """``{"loss": mean cross-entropy, "acc": accuracy}`` of a logits model on ``data``
    (no compile needed; the same numbers as the PyTorch ``evaluate``)."""
    y = _labels_of(data, batch_size)
    logits = predict(model, data, batch_size=batch_size).astype(np.float64)
    if logits.ndim != 2 or len(logits) != len(y):
        raise ValueError(f"evaluate: got outputs of shape {logits.shape} for {len(y)} labels; "
                         "the model must output one row of class logits per image")
    z = logits - logits.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    y = np.asarray(y, dtype=np.int64)
    return {"loss": float(-logp[np.arange(len(y)), y].mean()),
            "acc": float((logits.argmax(axis=1) == y).mean())}
