"""Checkers for Keras 3 answers: which layers train, BatchNorm in inference mode, and a
recompiled model whose training step updates exactly the trainable weights.

Two Keras facts shape these checks. ``layer.trainable = False`` on a BatchNormalization
layer also puts it in inference mode (it normalises with its moving statistics and stops
updating them). And in Keras 3 the ``training=True`` that ``fit`` passes to a functional
model overrides a ``training=False`` written when the base was called (keras-team/keras
issue 20285), so once BatchNormalization layers are trainable again, ``base(x,
training=False)`` no longer protects their statistics. The behavioural checks below run a
training-mode forward pass or one training step and look at the weights, so they judge
what the model does, whichever way it was achieved; they restore every weight afterwards.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Iterator

import numpy as np

from course_utils.grading._common import GradingSetupError, checker, fail, listing, plural

__all__ = ["check_keras_trainable", "check_keras_bn_inference", "check_keras_compiled",
           "check_keras_train_step", "leaf_layers"]


def _keras():
    # Through the course's backend module: it sets KERAS_BACKEND and loads Triton before
    # TensorFlow (the other order crashes the interpreter when PyTorch is used as well).
    from course_utils.keras._backend import keras

    return keras


def _need_model(model: Any, name: str):
    keras = _keras()
    if not isinstance(model, keras.layers.Layer):
        raise AssertionError(f"{name}: expected a Keras model or layer, got {type(model).__name__}"
                             + ("; did your function forget to return the model?" if model is None else ""))
    return model


def leaf_layers(model, _parent_trainable: bool = True) -> Iterator[tuple[Any, bool]]:
    """``(layer, effectively_trainable)`` for every non-container layer, recursing into
    nested models (e.g. a pretrained base inside a functional model). A layer trains only
    if it and every model containing it have ``trainable=True``."""
    for layer in getattr(model, "layers", []):
        eff = _parent_trainable and bool(layer.trainable)
        if getattr(layer, "layers", None):
            yield from leaf_layers(layer, eff)
        else:
            yield layer, eff


def _np(v) -> np.ndarray:
    """A copy of a Keras variable's value (``.numpy()`` avoids NumPy 2's copy warning)."""
    return np.array(v.numpy() if hasattr(v, "numpy") else _keras().ops.convert_to_numpy(v))


def _is_bn(layer) -> bool:
    return isinstance(layer, _keras().layers.BatchNormalization)


@checker
def check_keras_trainable(model: Any, expected_trainable: Iterable[str], *, bn: str = "frozen",
                          name: str = "model") -> None:
    """Assert that exactly the layers named in ``expected_trainable`` train.

    Only layers that own weights are considered. ``bn`` says what BatchNormalization layers
    must be: ``"frozen"`` (their own ``trainable`` flag False whatever the list says, so they
    stay in inference mode; Keras 3 runs a BatchNormalization layer whose flag is True in
    training mode even when a model containing it is frozen), ``"any"`` (not checked) or ``"listed"`` (like any other layer). The
    message names each wrong layer.
    """
    model = _need_model(model, name)
    if bn not in ("frozen", "any", "listed"):
        raise GradingSetupError(f"check_keras_trainable(bn={bn!r}): use 'frozen', 'any' or 'listed'")
    expected = {getattr(e, "name", e) for e in ([expected_trainable] if isinstance(expected_trainable, str)
                                               else expected_trainable)}
    layers = [(layer, eff) for layer, eff in leaf_layers(model) if layer.weights]
    known = {layer.name for layer, _ in layers}
    unknown = sorted(expected - known)
    if unknown:
        raise AssertionError(f"{name} has no layer with weights named {listing(unknown)}: was it removed "
                             "or rebuilt under another name?")
    should_train, should_freeze, bn_training = [], [], []
    for layer, eff in layers:
        if _is_bn(layer) and bn != "listed":
            # A BatchNormalization layer runs in training mode (updating its moving statistics)
            # whenever its *own* flag is True, even inside a frozen parent: check that flag.
            if bn == "frozen" and layer.trainable:
                bn_training.append(layer.name)
            continue
        want = layer.name in expected
        if want and not eff:
            should_train.append(layer.name)
        elif eff and not want:
            should_freeze.append(layer.name)
    problems = []
    if should_train:
        problems.append(f"{plural(len(should_train), 'layer')} should be trainable but "
                        f"{'is' if len(should_train) == 1 else 'are'} frozen: {listing(should_train, 5)}"
                        " (a layer trains only if it and the model containing it have trainable=True)")
    if should_freeze:
        problems.append(f"{plural(len(should_freeze), 'layer')} should be frozen but "
                        f"{'is' if len(should_freeze) == 1 else 'are'} trainable: {listing(should_freeze, 5)}")
    if bn_training:
        problems.append(f"{plural(len(bn_training), 'BatchNormalization layer')} "
                        f"{'is' if len(bn_training) == 1 else 'are'} trainable: {listing(bn_training, 5)}; "
                        "keep BatchNormalization layers frozen (trainable=False) so they stay in inference mode")
    fail(f"{name}: the trainable layers are not as expected:", problems)


def _bn_stats(model) -> list[tuple[str, Any, Any]]:
    return [(layer.name, layer.moving_mean, layer.moving_variance)
            for layer, _ in leaf_layers(model) if _is_bn(layer)]


@checker
def check_keras_bn_inference(model: Any, x, *, name: str = "model") -> None:
    """Assert that every BatchNormalization layer stays in inference mode during training:
    a forward pass with ``training=True`` (what ``fit`` does) must leave all moving means and
    variances unchanged. The statistics are restored afterwards."""
    model = _need_model(model, name)
    stats = _bn_stats(model)
    if not stats:
        raise AssertionError(f"{name} has no BatchNormalization layers: is the pretrained base part of it?")
    before = [(n, _np(m), _np(v)) for n, m, v in stats]
    try:
        model(x, training=True)
        moved = [n for (n, m, v), (_, m0, v0) in zip(stats, before)
                 if not (np.array_equal(_np(m), m0) and np.array_equal(_np(v), v0))]
    finally:
        for (_, m, v), (_, m0, v0) in zip(stats, before):
            m.assign(m0)
            v.assign(v0)
    if moved:
        raise AssertionError(
            f"{name}: in a training step {plural(len(moved), 'BatchNormalization layer')} updated "
            f"{'its' if len(moved) == 1 else 'their'} moving statistics ({listing(moved, 4)}), so "
            f"{'it runs' if len(moved) == 1 else 'they run'} in training mode. In Keras 3 fit() passes "
            "training=True down to every layer, overriding base(x, training=False); set trainable=False "
            "on the BatchNormalization layers to keep them in inference mode.")


def _lr(optimizer) -> float:
    lr = optimizer.learning_rate
    if callable(lr) and not hasattr(lr, "numpy"):
        lr = lr(0)
    return float(np.asarray(_keras().ops.convert_to_numpy(lr)))


@checker
def check_keras_compiled(model: Any, *, learning_rate: float | None = None, name: str = "model") -> None:
    """Assert that ``model`` is compiled, with ``learning_rate`` if given, and that its
    optimizer is not tied to an older set of trainable weights (which happens when
    ``trainable`` changes after training without a new ``compile()``)."""
    model = _need_model(model, name)
    if not getattr(model, "compiled", False) or getattr(model, "optimizer", None) is None:
        raise AssertionError(f"{name} is not compiled: call {name}.compile(optimizer=..., loss=..., "
                             "metrics=...) after changing which layers are trainable")
    opt = model.optimizer
    if learning_rate is not None:
        got = _lr(opt)
        if not math.isclose(got, learning_rate, rel_tol=1e-4):
            raise AssertionError(f"{name}'s optimizer has learning rate {got:g}, expected {learning_rate:g}"
                                 + (" (fine-tuning needs a much smaller learning rate than training a head)"
                                    if got > learning_rate else ""))
    built_for = getattr(opt, "_trainable_variables", None)
    if getattr(opt, "built", False) and built_for is not None:
        now = {id(v) for v in model.trainable_variables}
        old = {id(v) for v in built_for}
        if not now <= old:
            new = [v.path for v in model.trainable_variables if id(v) not in old]
            raise AssertionError(
                f"{name}'s optimizer was built for an older set of trainable weights and does not know "
                f"{plural(len(new), 'newly trainable variable')} ({listing(new)}): call "
                f"{name}.compile(...) again (with a new optimizer) after changing trainable")


@checker
def check_keras_train_step(model: Any, x, y, *, name: str = "model") -> None:
    """Run one ``train_on_batch(x, y)`` and assert that it updates every trainable variable and
    leaves every non-trainable weight (frozen kernels, BatchNorm moving statistics)
    untouched. All weights and optimizer slots are restored afterwards (slots the step
    created are reset to zero, their initial value for SGD, momentum, Adam and RMSprop)."""
    model = _need_model(model, name)
    if not getattr(model, "compiled", False):
        raise AssertionError(f"{name} is not compiled: call {name}.compile(...) before training")
    weights = list(model.weights)
    before = [_np(w) for w in weights]
    opt = model.optimizer
    opt_before = {id(v): _np(v) for v in opt.variables}
    trainable_ids = {id(v) for v in model.trainable_weights}
    try:
        try:
            model.train_on_batch(x, y)
        except ValueError as exc:
            if "Unknown variable" in str(exc) or "optimizer can only be called" in str(exc):
                raise AssertionError(
                    f"{name}: a training step fails because the optimizer was built for the weights that "
                    f"were trainable before; call {name}.compile(...) again after changing trainable") from exc
            raise
        changed = [not np.array_equal(_np(w), b) for w, b in zip(weights, before)]
    finally:
        for w, b in zip(weights, before):
            w.assign(b)
        for v in opt.variables:
            v.assign(opt_before[id(v)] if id(v) in opt_before else np.zeros(v.shape, dtype=v.dtype))
    frozen_moved = [w.path for w, c in zip(weights, changed) if c and id(w) not in trainable_ids]
    trained = [w.path for w, c in zip(weights, changed) if c and id(w) in trainable_ids]
    stale = [w.path for w, c in zip(weights, changed) if not c and id(w) in trainable_ids]
    if frozen_moved:
        raise AssertionError(
            f"{name}: one training step changed {plural(len(frozen_moved), 'non-trainable weight')} "
            f"({listing(frozen_moved, 4)}); frozen layers and BatchNorm moving statistics must not change")
    if not trained:
        raise AssertionError(f"{name}: one training step changed no trainable weight; is anything trainable, "
                             "and is the learning rate above zero?")
    if stale:
        raise AssertionError(
            f"{name}: one training step left {plural(len(stale), 'trainable variable')} unchanged "
            f"({listing(stale, 4)}): the compiled training function still works on the weights that were "
            f"trainable when it was built; call {name}.compile(...) again after changing trainable")
