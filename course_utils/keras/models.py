"""The Keras model zoo: ``create_model(name, weights=..., num_classes=...)`` with the PyTorch names.

=====================  =====================================  ==================================
name                   weights                                 notes
=====================  =====================================  ==================================
``small_cnn``          None                                    the course's CNN (28x28x1)
``efficientnet_lite0`` None, ``"IMAGENET1K_V1"`` (embedded)     converted from the PyTorch weights
``vgg16``              None, ``"IMAGENET1K_V1"`` (download)    ``keras.applications.VGG16``
``mobilenet_v2``       None, ``"IMAGENET1K_V1"`` (download)    ``keras.applications.MobileNetV2``
``resnet50_v2``        None, ``"IMAGENET1K_V1"`` (download)    ``keras.applications.ResNet50V2``
=====================  =====================================  ==================================

Weights are named as on the PyTorch side (torchvision's idiom, :mod:`course_utils.weights`):
``"IMAGENET1K_V1"``, ``"DEFAULT"`` or a member of :func:`get_model_weights`; Keras's own
``"imagenet"`` is accepted as an alias.

Every model returns logits (no softmax), like its PyTorch counterpart, so the same loss
(``from_logits=True``) and the same accuracy apply. The ``keras.applications`` weights are
fetched by Keras from Google's storage: that is the ``full`` profile (internet). Offline,
``weights="imagenet"`` raises :class:`PretrainedWeightsUnavailable` naming the file, its
URL and the Keras cache path where it can be put by hand, and the embedded alternative.

Test hook: with ``COURSE_FIXTURE_WEIGHTS=1`` in the environment (:data:`FIXTURE_WEIGHTS_ENV`), a
``keras.applications`` model loads its weight file from the Keras cache without Keras's own
hash check, so the test suite can put randomly initialised weights there and run the ``full``
profile offline. A warning says so on every build. Never set it for real weights.

Each model carries its :class:`KerasModelSpec` (``get_spec(model)``): input shape,
normalisation, preprocessing and layer groups from input to output, which the
fine-tuning helpers in :mod:`course_utils.keras.transfer` use.
"""
from __future__ import annotations

import logging
import os
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from course_utils.keras._backend import keras
from course_utils.keras.efficientnet_lite import EfficientNetLite0
from course_utils.factory import check_builder_options, check_num_classes
from course_utils.keras.small_cnn import SmallCNN
from course_utils.preprocessing import (FASHION_MNIST_MEAN, FASHION_MNIST_STD, INCEPTION_MEAN,
                                        INCEPTION_STD)
from course_utils.weights import IMAGENET, WeightsEnum, resolve_weights_name, weights_enum

__all__ = ["KerasModelSpec", "KerasWeights", "PretrainedWeightsUnavailable", "FIXTURE_WEIGHTS_ENV", "create_model",
           "list_models", "get_spec", "get_model_weights", "layer_groups", "preprocess_input", "keras_weights_url", "keras_cache_path"]

log = logging.getLogger(__name__)


_APP_URL = "https://storage.googleapis.com/tensorflow/keras-applications/"


@dataclass(frozen=True)
class KerasWeights:
    """A Keras model's pretrained weights, the twin of ``course_utils.models.Weights``:
    ``name`` (``"IMAGENET1K_V1"``), ``meta`` and ``transforms()`` (the preprocessing the
    weights expect: uint8 NHWC images -> the model's float input)."""

    name: str
    model: str
    meta: dict = field(default_factory=dict, compare=False)
    online: bool = False

    def transforms(self) -> Callable:
        spec = REGISTRY[self.model]
        return lambda images: preprocess_input(spec.name, images)


class PretrainedWeightsUnavailable(RuntimeError):
    """``weights="imagenet"`` for a ``keras.applications`` model could not be downloaded."""


@dataclass(frozen=True)
class KerasModelSpec:
    """What the course knows about a Keras model: how to build it, what input it wants,
    and how its layers group from input to output (``groups``: (group, regex on the layer
    name) pairs, first match wins)."""

    name: str
    builder: Callable[..., "keras.Model"]
    input_shape: tuple[int, int, int]
    default_num_classes: int
    groups: tuple[tuple[str, str], ...]
    head: str  # name of the classifier layer
    mean: tuple[float, ...] | None  # normalisation of x / 255 (None: the model's own scheme)
    std: tuple[float, ...] | None
    weights: tuple[str, ...] = ()
    online: bool = False  # True if its pretrained weights need the internet (``full`` profile)
    description: str = ""
    preprocess: Callable | None = field(default=None, compare=False)

    def group_of(self, layer_name: str) -> str | None:
        for group, pattern in self.groups:
            if re.match(pattern, layer_name):
                return group
        return None


# --- builders ----------------------------------------------------------------------------

def _build_small_cnn(weights, num_classes, include_top, input_shape, pooling, *,
                     init: str = "keras", dropout: float = 0.3):
    if weights is not None:
        raise ValueError("create_model('small_cnn'): weights must be None; the course pretrains "
                         "this model itself (e.g. on Fashion-MNIST classes 0-4)")
    return SmallCNN(input_shape or (28, 28, 1), num_classes, dropout=dropout,
                    include_top=include_top, init=init)


def _build_lite0(weights, num_classes, include_top, input_shape, pooling):
    return EfficientNetLite0(include_top=include_top, weights=weights, input_shape=input_shape,
                             classes=num_classes, pooling=pooling)


def keras_cache_path(filename: str) -> Path:
    """Where ``keras.utils.get_file`` keeps a model file: ``$KERAS_HOME/models`` (default
    ``~/.keras/models``)."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home) / "models" / filename


def keras_weights_url(name: str, include_top: bool, input_shape=None) -> tuple[str, str]:
    """(file name, URL) of the ImageNet weights ``keras.applications`` downloads for a model."""
    if name == "vgg16":
        fname = "vgg16_weights_tf_dim_ordering_tf_kernels" + ("" if include_top else "_notop") + ".h5"
        return fname, f"{_APP_URL}vgg16/{fname}"
    if name == "resnet50_v2":
        fname = "resnet50v2_weights_tf_dim_ordering_tf_kernels" + ("" if include_top else "_notop") + ".h5"
        return fname, f"{_APP_URL}resnet/{fname}"
    if name == "mobilenet_v2":
        rows = input_shape[0] if input_shape and input_shape[0] in (96, 128, 160, 192, 224) else 224
        fname = (f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_{rows}"
                 + ("" if include_top else "_no_top") + ".h5")
        return fname, f"{_APP_URL}mobilenet_v2/{fname}"
    raise ValueError(f"{name!r} is not a keras.applications model of the course")


def _fetch_application_weights(name: str, include_top: bool, input_shape) -> None:
    """Download (or find in the Keras cache) the weights before Keras builds the model, so a
    network failure is reported as what it is rather than from deep inside the builder."""
    fname, url = keras_weights_url(name, include_top, input_shape)
    try:
        keras.utils.get_file(fname, url, cache_subdir="models")
    except Exception as exc:
        raise PretrainedWeightsUnavailable(
            f"create_model({name!r}, weights='imagenet'): could not download the Keras ImageNet "
            f"weights {fname} from {url} ({type(exc).__name__}: {exc}). These weights are for "
            f"the 'full' profile (a machine with internet). Offline, copy the file to "
            f"{keras_cache_path(fname)} (Keras looks there first), or use the embedded "
            "weights: create_model('efficientnet_lite0', weights='imagenet').") from exc


#: Environment variable of the test hook described in the module docstring.
FIXTURE_WEIGHTS_ENV = "COURSE_FIXTURE_WEIGHTS"


def _imagenet_source(name: str, include_top: bool, input_shape) -> str:
    """What to pass as ``weights=`` to a ``keras.applications`` builder: ``"imagenet"`` (Keras
    finds the file in its cache, checking its pinned hash, or downloads it), or under the
    fixture hook the cached file's path (loaded as it is)."""
    if os.environ.get(FIXTURE_WEIGHTS_ENV) != "1":
        return "imagenet"
    path = keras_cache_path(keras_weights_url(name, include_top, input_shape)[0])
    log.warning("%s: loading %s without checking its hash (%s=1, a test hook for fixture "
                "weights; unset it for real weights)", name, path, FIXTURE_WEIGHTS_ENV)
    return str(path)


def _app_builder(name: str, fn_name: str):
    def build(weights, num_classes, include_top, input_shape, pooling):
        fn = getattr(keras.applications, fn_name)
        if weights == "imagenet":
            top = include_top and num_classes == 1000
            _fetch_application_weights(name, top, input_shape)
            weights = _imagenet_source(name, top, input_shape)
            if include_top and num_classes != 1000:
                # pretrained body, new head for the task (as PyTorch's replace_head)
                base = fn(include_top=False, weights=weights, input_shape=input_shape,
                          pooling="avg")
                out = keras.layers.Dense(num_classes, name="predictions")(base.output)
                return keras.Model(base.input, out, name=name)
            return fn(include_top=include_top, weights=weights, input_shape=input_shape,
                      pooling=pooling, classifier_activation=None)
        return fn(include_top=include_top, weights=None, input_shape=input_shape, pooling=pooling,
                  classes=num_classes, classifier_activation=None)
    build.__name__ = f"build_{name}"
    return build


def _scale_0_1_normalise(mean, std):
    def preprocess(x):
        x = np.asarray(x, dtype=np.float32) / 255.0
        return (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return preprocess


def _keras_app_preprocess(module: str):
    def preprocess(x):
        fn = getattr(getattr(keras.applications, module), "preprocess_input")
        return np.asarray(fn(np.array(x, dtype=np.float32)))
    return preprocess


# group names as on the PyTorch side (stage1..stage7); the layer names inside are Keras's
_LITE_GROUPS = (("stem", r"stem_"),) + tuple((f"stage{s}", rf"block{s}[a-z]_") for s in range(1, 8)) + (
    ("head", r"top_(conv|bn|activation)"), ("classifier", r"(avg_pool|max_pool|top_dropout|predictions)$"))

REGISTRY: dict[str, KerasModelSpec] = {s.name: s for s in (
    KerasModelSpec(
        "small_cnn", _build_small_cnn, (28, 28, 1), 10,
        (("stem", r"stem_"), ("block1", r"block1_"), ("block2", r"block2_"),
         ("head", r"head_"), ("classifier", r"(dropout|classifier)")),
        head="classifier", mean=FASHION_MNIST_MEAN, std=FASHION_MNIST_STD,
        description="the course's small CNN for 28x28 images (94 k parameters, BatchNorm)",
        preprocess=_scale_0_1_normalise(FASHION_MNIST_MEAN, FASHION_MNIST_STD)),
    KerasModelSpec(
        "efficientnet_lite0", _build_lite0, (224, 224, 3), 1000, _LITE_GROUPS,
        head="predictions", mean=INCEPTION_MEAN, std=INCEPTION_STD, weights=(IMAGENET,),
        description="EfficientNet-Lite0 (4.7 M parameters); ImageNet weights converted from "
                    "the embedded PyTorch weights",
        preprocess=_scale_0_1_normalise(INCEPTION_MEAN, INCEPTION_STD)),
    KerasModelSpec(
        "vgg16", _app_builder("vgg16", "VGG16"), (224, 224, 3), 1000,
        tuple((f"block{i}", rf"block{i}_") for i in range(1, 6)) + (
            ("classifier", r"(flatten|fc1|fc2|predictions)$|global_"),),
        head="predictions", mean=None, std=None, weights=(IMAGENET,), online=True,
        description="keras.applications.VGG16 (138 M parameters); 'caffe' preprocessing",
        preprocess=_keras_app_preprocess("vgg16")),
    KerasModelSpec(
        "mobilenet_v2", _app_builder("mobilenet_v2", "MobileNetV2"), (224, 224, 3), 1000,
        # torchvision's stages: features[1] is Keras's expanded_conv, then blocks 1-2, 3-5 ...
        (("stem", r"(Conv1|bn_Conv1)"), ("stage1", r"expanded_conv_")) + tuple(
            (f"stage{i}", rf"block_({'|'.join(str(b) for b in blocks)})_")
            for i, blocks in enumerate(((1, 2), (3, 4, 5), (6, 7, 8, 9), (10, 11, 12),
                                        (13, 14, 15), (16,)), start=2)) + (
            ("head", r"(Conv_1|out_relu)"), ("classifier", r"(global_|predictions)")),
        head="predictions", mean=INCEPTION_MEAN, std=INCEPTION_STD, weights=(IMAGENET,),
        online=True, description="keras.applications.MobileNetV2 (3.5 M parameters)",
        preprocess=_keras_app_preprocess("mobilenet_v2")),
    KerasModelSpec(
        "resnet50_v2", _app_builder("resnet50_v2", "ResNet50V2"), (224, 224, 3), 1000,
        (("stem", r"(conv1_|pool1_)"), ("conv2", r"conv2_"), ("conv3", r"conv3_"),
         ("conv4", r"conv4_"), ("conv5", r"conv5_"), ("head", r"post_"),
         ("classifier", r"(avg_pool|max_pool|predictions)$")),
        head="predictions", mean=INCEPTION_MEAN, std=INCEPTION_STD, weights=(IMAGENET,),
        online=True, description="keras.applications.ResNet50V2 (25.6 M parameters)",
        preprocess=_keras_app_preprocess("resnet_v2")),
)}


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`."""
    return sorted(REGISTRY)


def get_spec(name_or_model) -> KerasModelSpec:
    """The spec of a registry name, or of a model made by :func:`create_model`."""
    if isinstance(name_or_model, str):
        if name_or_model not in REGISTRY:
            raise ValueError(f"unknown Keras model {name_or_model!r}; choose one of: "
                             f"{', '.join(list_models())}")
        return REGISTRY[name_or_model]
    spec = getattr(name_or_model, "course_spec", None)
    if spec is None:
        raise ValueError(f"Keras model {getattr(name_or_model, 'name', name_or_model)!r} was not "
                         "made by course_utils.keras.create_model, so its layer groups are "
                         "unknown; build it with create_model(name, ...)")
    return spec


def get_model_weights(name: str) -> "type[WeightsEnum]":
    """The weights enum of a registered model (``.DEFAULT``, ``.IMAGENET1K_V1``), the twin
    of ``course_utils.models.get_model_weights``."""
    spec = get_spec(name)
    return weights_enum(name, {w: KerasWeights(w, name, {"input_size": spec.input_shape[0]},
                                               online=spec.online) for w in spec.weights})


def create_model(name: str, weights=None, num_classes: int | None = None, *,
                 include_top: bool = True, input_shape: tuple | None = None,
                 pooling: str | None = None, **options) -> "keras.Model":
    """Build a registered Keras model (functional API, channels_last, logits out).

    ``weights``: as ``course_utils.models.create_model``: ``None`` (random
    initialisation), ``"DEFAULT"``, ``"IMAGENET1K_V1"`` or a :func:`get_model_weights`
    member, or Keras's ``"imagenet"``. ``num_classes``: size of a new classifier (default:
    the model's own, 10 for ``small_cnn`` and 1000 otherwise). Keras-only, as
    ``keras.applications``: ``include_top=False`` drops the classifier for transfer learning
    (``pooling=None|"avg"|"max"``); ``input_shape`` defaults to the spec's; without the top,
    convolutional bases accept other sizes (``keras.applications`` need at least 32x32).
    ``options`` go to the model's builder: ``small_cnn`` takes ``init="keras"|"torch"``
    (whose default initialisers to use) and ``dropout``. The model carries ``course_spec``
    and ``course_weights`` (a :class:`KerasWeights`, or None).
    """
    spec = get_spec(name)
    key = resolve_weights_name(name, spec.weights, weights)
    n = check_num_classes(name, num_classes, spec.default_num_classes)
    if pooling not in (None, "avg", "max"):
        raise ValueError(f"create_model({name!r}): pooling must be None, 'avg' or 'max', got {pooling!r}")
    if input_shape is None and include_top:
        input_shape = spec.input_shape
    check_builder_options(name, spec.builder, options)
    # the builders speak keras.applications' language: "imagenet" or None
    model = spec.builder("imagenet" if key is not None else None, n, include_top,
                         tuple(input_shape) if input_shape else None, pooling, **options)
    model.course_spec = spec
    model.course_weights = None if key is None else getattr(get_model_weights(name), key).value
    return model


def layer_groups(model) -> "OrderedDict[str, list[keras.layers.Layer]]":
    """The layers of a :func:`create_model` model by group, input to output (e.g. for
    ``efficientnet_lite0``: stem, stage1 ... stage7, head, classifier, the group names of
    the PyTorch twin), each a list of Keras layers (the PyTorch twin lists modules). The
    input layer and layers no group claims are left out."""
    spec = get_spec(model)
    groups: OrderedDict[str, list] = OrderedDict()
    for layer in model.layers:
        g = spec.group_of(layer.name)
        if g is not None:
            groups.setdefault(g, []).append(layer)
    return groups


def preprocess_input(name_or_model, images) -> np.ndarray:
    """uint8 images (NHWC, or NHW for gray) -> the float32 input the model expects."""
    spec = get_spec(name_or_model)
    x = np.asarray(images)
    if x.ndim == 3 and spec.input_shape[-1] == 1:
        x = x[..., None]
    return spec.preprocess(x)
