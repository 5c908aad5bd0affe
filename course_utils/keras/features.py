"""Feature extraction from Keras models, cached in the format the PyTorch side uses.

The cache is :mod:`course_utils.feature_cache` (framework-neutral: importing it does not
import PyTorch): the key comes from its ``feature_cache_key`` (model name, weights, layer,
data fingerprint, preprocessing, plus ``framework="keras"`` and a fingerprint of the
current weights), and the files are written and read by its ``save_cached_features``/
``load_cached_features`` (``<key>.npy``, float32, one row per image, and ``<key>.json``). So ``fit_linear_head`` and the plots take Keras
features exactly as they take PyTorch ones, and a notebook can compare both.
"""
from __future__ import annotations

import logging

import numpy as np
from course_utils.progress import tqdm

from course_utils.feature_cache import (data_fingerprint, feature_cache_key,
                                        load_cached_features, save_cached_features)
from course_utils.fingerprint import weights_fingerprint
from course_utils.keras._backend import keras, tf
from course_utils.keras.models import layer_groups
from course_utils.keras.pipeline import TFLoader

__all__ = ["feature_model", "keras_state_fingerprint", "extract_features"]

log = logging.getLogger(__name__)


def keras_state_fingerprint(model) -> str:
    """sha256 over every variable's path, shape and values: changes when training changes
    any weight, so fine-tuned features never pass for pretrained ones."""
    def records():
        for v in model.weights:
            a = np.ascontiguousarray(v.numpy())
            yield v.path, a.dtype.str, a.shape, a

    return weights_fingerprint(records())


def _head_layer(model):
    spec = getattr(model, "course_spec", None)
    if spec is not None:
        try:
            return model.get_layer(spec.head)
        except ValueError:
            pass
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    if not dense:
        return None
    return dense[-1]


def feature_model(model, layer: str | None = None) -> "keras.Model":
    """A model from ``model``'s input to the features of ``layer``:

    * ``None``: the classifier's input (the pooled penultimate features); a model without a
      classifier (``include_top=False``) gives its output, pooled if it is a feature map;
    * a group name of a registry model (``"stage5"``, see ``layer_groups``): that group's
      output, global-average pooled;
    * any layer name: its output, pooled if it is a feature map.
    """
    if layer is None:
        head = _head_layer(model)
        out = head.input if head is not None and head is not model.layers[0] else model.output
    else:
        spec = getattr(model, "course_spec", None)
        groups = layer_groups(model) if spec is not None else {}
        name = groups[layer][-1].name if layer in groups else layer
        try:
            out = model.get_layer(name).output
        except ValueError:
            names = [lyr.name for lyr in model.layers]
            raise ValueError(f"feature_model: {model.name!r} has no layer or group {layer!r}; "
                             f"groups: {list(groups) or 'none'}; layers: {names[:8]} ... "
                             "(see layer_table(model))") from None
    if len(out.shape) == 4:
        out = keras.layers.GlobalAveragePooling2D(name="feature_pool")(out)
    return keras.Model(model.inputs, out, name=f"{model.name}_features")


def _default_loader(model, x: np.ndarray, batch_size: int, size, rgb, mean, std):
    spec = getattr(model, "course_spec", None)
    in_ch = model.input_shape[-1]
    if rgb is None:
        rgb = in_ch == 3 and (x.ndim == 3 or x.shape[-1] == 1)
    if spec is not None and spec.mean is None and mean is None:
        # e.g. VGG16's 'caffe' preprocessing: not a mean/std, so do it on the array
        if x.ndim == 3 or x.shape[-1] == 1:
            x = np.repeat(x.reshape(*x.shape[:3], 1), 3, axis=-1)
        if size is not None:
            x = tf.image.resize(x, (size, size), antialias=True).numpy()
        x = spec.preprocess(x)
        return TFLoader(x, None, batch_size)
    if mean is None and spec is not None:
        mean, std = spec.mean, spec.std
    return TFLoader(x, None, batch_size, size=size, rgb=rgb, mean=mean, std=std)


def extract_features(model, data, *, layer: str | None = None, size: int | None = None,
                     rgb: bool | None = None, mean=None, std=None, batch_size: int = 64,
                     cache_dir=None, key: str | None = None, cache: bool = True,
                     progress: bool = True, return_labels: bool = False):
    """Features of ``data`` from a (frozen) Keras model, cached on disk as ``.npy``.

    ``data``: uint8 images (NHW or NHWC), preprocessed with the model's normalisation (its
    spec's mean/std, or Keras's ``preprocess_input`` for VGG16), resized to ``size`` and
    repeated to 3 channels when the model wants them (``rgb``; default: automatic); or an
    unshuffled :class:`TFLoader` (its settings are the preprocessing; labels are ignored);
    or a ``tf.data.Dataset`` of batches (cached only with an explicit ``key``). ``layer``: see
    :func:`feature_model`. Returns float32 features, one row per image, in data order, and
    with ``return_labels`` also the labels (a ``TFLoader``'s ``y``, a dataset's second
    element; ``None`` for bare images), cold or warm cache alike, as the PyTorch twin.
    Keras only: ``rgb``/``mean``/``std`` describe the preprocessing (the PyTorch twin takes a
    ``transform`` object); there is no ``device`` (TensorFlow places the model itself).
    """
    if isinstance(data, np.ndarray):
        if data.dtype != np.uint8:
            raise TypeError(f"extract_features takes uint8 images as arrays (got {data.dtype}); "
                            "wrap preprocessed float images in a TFLoader instead")
        loader = _default_loader(model, data, batch_size, size, rgb, mean, std)
        fingerprint = data_fingerprint(data)
    elif isinstance(data, TFLoader):
        if data.shuffle:
            raise ValueError("extract_features: the TFLoader shuffles; pass shuffle=False so the "
                             "rows follow the data order")
        loader, fingerprint = data, data_fingerprint(data.x)
    elif isinstance(data, tf.data.Dataset):
        loader, fingerprint = data, None
    else:
        raise TypeError(f"extract_features: data of type {type(data).__name__}; pass uint8 "
                        "images, a TFLoader or a tf.data.Dataset")

    spec = getattr(model, "course_spec", None)
    model_name = spec.name if spec is not None else model.name
    weights = getattr(model, "course_weights", None)
    transform = (f"keras:{loader!r}".replace(f"n={len(loader.x)}, ", "")
                 if isinstance(loader, TFLoader) else None)
    if cache and key is None:
        if fingerprint is None:
            log.warning("not caching features: a tf.data.Dataset cannot be fingerprinted; pass "
                        "key=... or uint8 images")
            cache = False
        else:
            key = feature_cache_key(model_name, weights, layer, fingerprint, transform,
                                    framework="keras",
                                    state=keras_state_fingerprint(model)[:32])
    if isinstance(data, tf.data.Dataset) and return_labels and cache:
        cache = False  # labels come from the batches, which a cache hit would not read
        log.info("return_labels=True with a tf.data.Dataset: not using the feature cache")
    labels = loader.y if isinstance(loader, TFLoader) and loader is data else None
    if cache:
        hit = load_cached_features(key, cache_dir)
        if hit is not None:
            log.info("feature cache hit %s (%s)", key, model_name)
            return (hit, labels) if return_labels else hit

    fm = feature_model(model, layer)
    ds = loader.dataset() if isinstance(loader, TFLoader) else loader
    total = len(loader) if isinstance(loader, TFLoader) else None
    out, batch_labels = [], []
    for batch in tqdm(ds, total=total, desc=f"features {model_name}" + (f"/{layer}" if layer else ""),
                      unit="batch", disable=not progress, leave=False):
        xb = batch[0] if isinstance(batch, (tuple, list)) else batch
        if isinstance(batch, (tuple, list)) and len(batch) > 1:
            batch_labels.append(np.asarray(batch[1]))
        out.append(np.asarray(fm.predict_on_batch(xb), dtype=np.float32))
    feats = np.concatenate(out) if out else np.zeros((0,) + tuple(fm.output_shape[1:]), np.float32)
    if cache:
        save_cached_features(key, feats, cache_dir,
                             meta={"model": model_name, "weights": getattr(weights, "name", weights),
                                   "layer": layer, "transform": transform, "framework": "keras"})
    if return_labels:
        if labels is None and batch_labels:
            labels = np.concatenate(batch_labels)
        return feats, labels
    return feats
