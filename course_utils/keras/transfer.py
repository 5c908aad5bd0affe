"""Transfer learning in the Keras guide's style: a frozen base, a new head, then fine-tuning.

The recipe (Keras "Transfer learning & fine-tuning" guide)::

    base = create_model("efficientnet_lite0", weights="imagenet", include_top=False)
    model = build_transfer_model(base, num_classes=5)     # base frozen, called with training=False
    fit(model, train, val, epochs=5, lr=1e-3)              # trains the head only
    unfreeze_top(model, from_layer="block6a_expand_conv", lr=1e-5)   # recompiles
    fit(model, train, val, epochs=5)                       # fine-tunes the top of the base

Two Keras rules this module takes care of:

* BatchNorm moving statistics stay those of the pretraining. The guide writes
  ``base(x, training=False)`` while building the functional model, but in Keras 3 (checked on
  3.15; keras-team/keras#20285) that recorded ``training=False`` is overridden when the outer
  model runs with ``training=True``: ``fit`` updates the statistics of every BatchNorm layer
  that is ``trainable``. Two things do keep them still, and notebook 04 section 7 measures
  both: the BatchNorm layer's own ``trainable=False`` (a non-trainable BatchNorm always runs in
  inference mode; ``unfreeze_top(..., freeze_batchnorm=True)``, the rule of assignment A4), and
  :class:`CallWithTraining`, the wrapper :func:`build_transfer_model` puts around the base,
  which passes ``training=False`` when the model *runs* (then ``gamma``/``beta`` of an unfrozen
  BatchNorm still train, its statistics do not). ``tests/test_keras_bn_lesson.py`` pins all
  three behaviours.
* ``trainable`` changes take effect at ``compile()``: :func:`unfreeze_top` and
  :func:`freeze_base` recompile (keeping the loss and metrics, with the new learning rate);
  with ``recompile=False`` the model is marked uncompiled, so training it before
  ``compile()`` fails loudly instead of silently training the old set of weights.
"""
from __future__ import annotations

import difflib
import logging

import numpy as np

from course_utils.keras._backend import keras
from course_utils.keras.models import create_model, get_spec, layer_groups
from course_utils.keras.training import compile_model

__all__ = ["CallWithTraining", "build_transfer_model", "get_base", "freeze_base", "unfreeze_top", "layer_table",
           "normalization_layer", "copy_weights"]

log = logging.getLogger(__name__)


@keras.saving.register_keras_serializable(package="course_utils")
class CallWithTraining(keras.layers.Layer):
    """Run ``inner`` (a model) with a fixed ``training`` flag, whatever the outer call says.

    ``training=False`` keeps the inner model's BatchNorm (and Dropout) layers in inference
    mode during ``fit`` — what ``base(x, training=False)`` promises in the Keras guide, and
    what Keras 3 does not deliver for a nested functional model (the outer ``training=True``
    wins). ``training=None`` follows the outer call (plain nesting). The inner model's
    weights, and its ``trainable`` flags, are the wrapper's."""

    def __init__(self, inner, training: bool | None = False, **kwargs):
        kwargs.setdefault("name", inner.name)
        super().__init__(**kwargs)
        self.inner = inner
        self.fixed_training = training

    def call(self, inputs, training=None):
        return self.inner(inputs, training=training if self.fixed_training is None
                          else self.fixed_training)

    # The wrapper is frozen exactly when the model inside is (``base.trainable = False`` and
    # ``wrapper.trainable = False`` are the same thing), so tables and checks read one flag.
    @property
    def trainable(self):
        inner = self.__dict__.get("inner")
        return inner.trainable if inner is not None else self._trainable

    @trainable.setter
    def trainable(self, value):
        inner = self.__dict__.get("inner")
        if inner is not None:
            inner.trainable = value
        self._trainable = bool(value)

    def compute_output_shape(self, input_shape):
        return self.inner.compute_output_shape(input_shape)

    def get_config(self):
        return {**super().get_config(), "inner": keras.saving.serialize_keras_object(self.inner),
                "training": self.fixed_training}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        inner = keras.saving.deserialize_keras_object(config.pop("inner"))
        return cls(inner, **config)


def normalization_layer(name_or_model) -> "keras.layers.Layer":
    """A ``Normalization`` layer doing a registry model's ``(x - mean) / std`` on inputs in
    [0, 1] (what ``TFLoader`` produces from uint8 without ``mean``/``std``)."""
    spec = get_spec(name_or_model)
    if spec.mean is None:
        raise ValueError(f"{spec.name} uses Keras's own preprocessing (e.g. 'caffe' for VGG16), "
                         "not a mean/std: apply keras.applications.<module>.preprocess_input to "
                         "the images (0-255) instead, or course_utils.keras.preprocess_input")
    return keras.layers.Normalization(axis=-1, mean=list(spec.mean),
                                      variance=list(np.square(spec.std)), name="normalization")


def build_transfer_model(base, num_classes: int, *, weights="auto", input_shape=None,
                         pooling: str = "avg", dropout: float = 0.2, augmentation=None,
                         normalize: bool = False, base_training: bool = False,
                         freeze: bool = True, name: str | None = None) -> "keras.Model":
    """A new classifier on top of a pretrained base, in the Keras guide's functional style::

        inputs -> [augmentation] -> [normalisation] -> base(training=False) -> pooling
               -> dropout -> Dense(num_classes, name="classifier") (logits)

    ``base``: a Keras model without its top (``include_top=False``) or a registry name, built
    with ``weights`` (``"auto"``: its ``"DEFAULT"`` weights when the model has any) at ``input_shape``.
    ``pooling``: ``"avg"`` or ``"max"`` (skipped if the base already pools). ``augmentation``:
    a layer or ``keras.Sequential`` of preprocessing layers (active in training only).
    ``normalize=True`` inserts the base's mean/std normalisation (``normalization_layer``), so
    the model takes images in [0, 1]. ``base_training=False`` runs the base in inference mode
    (BatchNorm statistics frozen, the guide's advice; through :class:`CallWithTraining`, see
    the module docstring); ``True`` lets ``fit`` run it in training mode, for the experiment
    that shows why not. ``freeze``: start with the base frozen (``base.trainable = False``).
    """
    if isinstance(base, str):
        spec = get_spec(base)
        w = ("DEFAULT" if spec.weights else None) if weights == "auto" else weights
        base = create_model(base, weights=w, include_top=False, input_shape=input_shape)
    if not isinstance(base, keras.Model):
        raise TypeError(f"base must be a keras.Model or a model name, got {type(base).__name__}")
    if not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    if pooling not in ("avg", "max"):
        raise ValueError(f"pooling must be 'avg' or 'max', got {pooling!r}")
    shape = tuple(input_shape) if input_shape is not None else tuple(base.input_shape[1:])
    if freeze:
        base.trainable = False
    inputs = keras.Input(shape=shape, name="image")
    x = inputs
    if augmentation is not None:
        x = augmentation(x)
    if normalize:
        x = normalization_layer(base)(x)
    x = CallWithTraining(base, training=False if not base_training else None)(x)
    if len(x.shape) == 4:
        pool = keras.layers.GlobalAveragePooling2D if pooling == "avg" else keras.layers.GlobalMaxPooling2D
        x = pool(name=f"{pooling}_pool")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name="dropout")(x)
    outputs = keras.layers.Dense(int(num_classes), name="classifier")(x)
    model = keras.Model(inputs, outputs, name=name or f"{base.name}_transfer")
    model.course_base = base.name
    return model


def get_base(model) -> "keras.Model":
    """The pretrained base inside a model from :func:`build_transfer_model` (or the one
    nested ``keras.Model`` of any model built the same way)."""
    name = getattr(model, "course_base", None)
    if name is not None:
        layer = model.get_layer(name)
        return layer.inner if isinstance(layer, CallWithTraining) else layer
    nested = [layer.inner if isinstance(layer, CallWithTraining) else layer for layer in model.layers
              if isinstance(layer, (keras.Model, CallWithTraining))]
    if len(nested) != 1:
        raise ValueError(f"{model.name!r} has {len(nested)} nested models; get_base needs a model "
                         "from build_transfer_model (a base model inside a new head)")
    return nested[0]


def _recompile_or_mark(model, what: str, lr, optimizer, recompile: bool) -> None:
    settings = dict(getattr(model, "course_compile", None) or {})
    if recompile:
        compile_model(model, lr if lr is not None else (settings.get("lr") or 1e-3),
                      optimizer if optimizer is not None else settings.get("optimizer", "adam"),
                      loss=settings.get("loss"), metrics=settings.get("metrics"),
                      weight_decay=settings.get("weight_decay", 0.0),
                      jit_compile=settings.get("jit_compile", False))
    else:
        # Keras would keep training the weights that were trainable at the last compile();
        # marking the model uncompiled makes model.fit/evaluate raise until compile() is called.
        # Keras 3 has no public way to mark a compiled model stale (see keras-team/keras#22413,
        # closed without one), so the flag compile() sets is cleared by hand.
        model.compiled = False
        model.course_pending_recompile = what


def freeze_base(model, *, recompile: bool = True, lr: float | None = None, optimizer=None):
    """Freeze the whole base (``base.trainable = False``: its BatchNorm layers switch to
    inference mode too) and recompile, keeping the loss, metrics and optimizer kind. Returns
    the model.

    The frameworks' own difference: Keras's ``trainable`` is one flag for "no updates" and
    "BatchNorm in inference mode", read at ``compile()``; PyTorch's ``requires_grad`` stops
    only the updates, which is why the PyTorch twin ``course_utils.models.freeze`` also pins
    BatchNorm, and why it works by layer group where this works on the nested base."""
    get_base(model).trainable = False
    if model.compiled or getattr(model, "course_compile", None):
        _recompile_or_mark(model, "freeze_base(model)", lr, optimizer, recompile)
    return model


def _resolve_cut(base, n_layers, from_layer) -> int:
    layers = base.layers
    if (n_layers is None) == (from_layer is None):
        raise ValueError("unfreeze_top: pass exactly one of n_layers=... (the last n layers of "
                         "the base) or from_layer=NAME (that layer and all after it)")
    if n_layers is not None:
        if not isinstance(n_layers, (int, np.integer)) or not 0 < n_layers <= len(layers):
            raise ValueError(f"unfreeze_top: n_layers={n_layers!r}; the base {base.name!r} has "
                             f"{len(layers)} layers, pass 1..{len(layers)}")
        return len(layers) - int(n_layers)
    names = [layer.name for layer in layers]
    if from_layer in names:
        return names.index(from_layer)
    spec = getattr(base, "course_spec", None)
    if spec is not None:
        groups = layer_groups(base)
        if from_layer in groups:
            return names.index(groups[from_layer][0].name)
    close = difflib.get_close_matches(str(from_layer), names, n=3)
    raise ValueError(f"unfreeze_top: the base {base.name!r} has no layer {from_layer!r}"
                     + (f"; did you mean {', '.join(map(repr, close))}?" if close else "")
                     + " (list them with layer_table(base))")


def unfreeze_top(model, n_layers: int | None = None, *, from_layer: str | None = None,
                 lr: float = 1e-5, optimizer=None, recompile: bool = True,
                 freeze_batchnorm: bool = False):
    """Unfreeze the top of the base for fine-tuning, keep the rest frozen, and recompile.

    ``n_layers``: the last n layers of ``base.layers`` (as in the Keras guide's
    ``base.layers[:fine_tune_at]``); or ``from_layer``: a layer name (e.g.
    ``"block6a_expand_conv"``) or, for registry models, a group name (``"stage6"``), from
    which on everything trains. For a model without a nested base (e.g. a pretrained
    ``small_cnn``), the model's own layers are used.

    ``lr`` (default 1e-5, the guide's fine-tuning rate) is the learning rate of the
    recompiled model; the loss, metrics and optimizer kind are kept.

    ``freeze_batchnorm=True`` leaves every BatchNormalization layer of the base
    ``trainable=False``, also those among the unfrozen top (as the Keras EfficientNet
    fine-tuning example and assignment A4 do). A non-trainable BatchNorm runs in inference
    mode whatever ``fit`` passes, so its moving statistics stay bit-identical and its
    ``gamma``/``beta`` stay fixed; this is the fix that works in any Keras model, because
    ``base(x, training=False)`` alone does not hold under ``fit`` in Keras 3 (module
    docstring). With ``False`` (the default) the unfrozen BatchNorm layers train: their
    ``gamma``/``beta`` always, their statistics too unless the base runs inside
    :class:`CallWithTraining` (as in :func:`build_transfer_model`).

    ``recompile=False`` leaves compiling to you: until you do, training raises (see the
    module docstring). Returns the model.
    """
    try:
        base = get_base(model)
    except ValueError:
        base = model
    cut = _resolve_cut(base, n_layers, from_layer)
    base.trainable = True
    for i, layer in enumerate(base.layers):
        layer.trainable = i >= cut
        if freeze_batchnorm and isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
    what = (f"unfreeze_top(n_layers={n_layers})" if n_layers is not None
            else f"unfreeze_top(from_layer={from_layer!r})")
    n_train = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    log.info("%s: %d of %d layers of %s trainable, %d trainable parameters", what,
             len(base.layers) - cut, len(base.layers), base.name, n_train)
    _recompile_or_mark(model, what, lr, optimizer, recompile)
    return model


def _count(weights) -> int:
    return int(sum(int(np.prod(w.shape)) for w in weights))


def layer_table(model, nested: bool = False):
    """The layers as a pandas DataFrame: ``index``, ``name``, ``type``, ``trainable``,
    ``parameters`` (all weights, BatchNorm moving statistics included, as ``count_params``)
    and ``trainable_parameters`` — the ``for i, layer in enumerate(model.layers)`` listing of
    the Keras guides, as a table. ``nested=True`` also lists the layers inside nested models
    (the base of a transfer model), named ``base/layer`` with their index *inside* the base
    (the numbers ``unfreeze_top(n_layers=...)`` counts)."""
    import pandas as pd

    rows = []

    def add(layers, prefix: str, parent_trainable: bool):
        for i, layer in enumerate(layers):
            trainable = bool(layer.trainable and parent_trainable)
            rows.append({"index": i, "name": prefix + layer.name, "type": type(layer).__name__,
                         "trainable": trainable, "parameters": _count(layer.weights),
                         "trainable_parameters": _count(layer.trainable_weights) if trainable else 0})
            inner = layer.inner if isinstance(layer, CallWithTraining) else layer
            if nested and isinstance(inner, keras.Model):
                add(inner.layers, f"{prefix}{layer.name}/", trainable)

    add(model.layers, "", True)
    return pd.DataFrame(rows, columns=["index", "name", "type", "trainable", "parameters",
                                       "trainable_parameters"])


def copy_weights(source, target, *, exclude=("classifier", "predictions")) -> list[str]:
    """Copy weights layer by layer, by name, from ``source`` to ``target`` (e.g. a small CNN
    pretrained on the source task into a fresh one with a new head). Layers named in
    ``exclude`` keep their initialisation; a layer present in both with other shapes raises.
    Returns the names of the layers copied."""
    copied = []
    for layer in target.layers:
        if not layer.weights or layer.name in exclude:
            continue
        try:
            src = source.get_layer(layer.name)
        except ValueError:
            continue
        arrays = src.get_weights()
        shapes = [tuple(w.shape) for w in layer.weights]
        if [a.shape for a in arrays] != shapes:
            raise ValueError(f"copy_weights: layer {layer.name!r} has shapes {shapes} in the "
                             f"target but {[a.shape for a in arrays]} in the source; add it to "
                             "exclude=... if it is meant to start fresh")
        layer.set_weights(arrays)
        copied.append(layer.name)
    if not copied:
        raise ValueError(f"copy_weights: no layer of {target.name!r} matches one of "
                         f"{source.name!r} by name")
    return copied
