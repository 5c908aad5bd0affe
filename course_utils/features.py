"""Feature extraction with an on-disk cache, and linear heads trained on the features.

Transfer learning by feature extraction runs the frozen backbone over the data *once*:
after that, training a head costs a logistic regression on a small matrix instead of a
forward pass through the network every epoch. :func:`extract_features` does that once
per (model, weights, layer, data, transform) and caches the result as ``.npy`` under
``$COURSE_DATA/features``; the next call, in this notebook or another, loads it.

The cache key (:func:`feature_cache_key`) is a hash of those five things, so changing any
of them (another layer, other images, another input size) computes anew; the PyTorch
path also adds a fingerprint of the model's current weights, so features of a model that
has been fine-tuned since are never mistaken for the pretrained ones. The cache itself
(keys, files, atomic writes) is :mod:`course_utils.feature_cache`, which imports no
framework; its names are re-exported here. The Keras side (``course_utils.keras``) writes
the same format through the same module.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np
import torch
from torch import nn

from course_utils.feature_cache import (CACHE_FORMAT, data_fingerprint, feature_cache_dir,
                                        feature_cache_key, feature_cache_path,
                                        load_cached_features, save_cached_features)
from course_utils.fingerprint import weights_fingerprint
from course_utils.preprocessing import image_layout

__all__ = ["CACHE_FORMAT", "ArrayTransform", "data_fingerprint", "state_fingerprint",
           "feature_cache_key", "feature_cache_dir", "feature_cache_path", "save_cached_features",
           "load_cached_features", "default_transform", "extract_features", "LinearHead",
           "fit_linear_head"]

log = logging.getLogger(__name__)

# --- keys and the cache (framework-neutral, in course_utils.feature_cache) ------------------

def _tensor_records(named_tensors):
    for name, t in named_tensors:
        t = t.detach().to("cpu").contiguous()
        yield name, str(t.dtype), tuple(t.shape), t.view(-1).view(torch.uint8).numpy()


def state_fingerprint(model: nn.Module) -> str:
    """sha256 of a model's state dict (names, shapes and values of parameters and
    buffers): it changes as soon as training changes a single weight."""
    return weights_fingerprint(_tensor_records(model.state_dict().items()))


# --- transforms --------------------------------------------------------------------------

class ArrayTransform:
    """uint8 images (NHW or NHWC NumPy, or a uint8 tensor) -> float32 NCHW tensor: scale to
    [0, 1], optionally resize to ``size`` x ``size`` (bilinear), normalise with ``mean`` and
    ``std``. Keeps the channel count (unlike :class:`~course_utils.models.EvalTransform`,
    which makes RGB), so it suits ``small_cnn`` on grayscale images."""

    def __init__(self, mean=(0.0,), std=(1.0,), size: int | None = None):
        self.mean, self.std, self.size = tuple(mean), tuple(std), size

    def __repr__(self) -> str:
        return f"ArrayTransform(mean={self.mean}, std={self.std}, size={self.size})"

    def __call__(self, images) -> torch.Tensor:
        tensor = isinstance(images, torch.Tensor)
        x = images if tensor else torch.as_tensor(np.asarray(images))
        layout = image_layout(tuple(x.shape), channels_first=tensor)
        if layout == "NHW":
            x = x[:, None]
        elif layout == "NHWC":  # NumPy arrays are channels-last; tensors NCHW already
            x = x.permute(0, 3, 1, 2)
        elif layout != "NCHW":
            raise ValueError(f"ArrayTransform takes a batch of images (NHW or NHWC NumPy, or an "
                             f"NCHW tensor), got shape {tuple(x.shape)} ({layout})")
        x = x.float().div(255.0) if x.dtype == torch.uint8 else x.float()
        if self.size is not None and tuple(x.shape[-2:]) != (self.size, self.size):
            x = nn.functional.interpolate(x, size=(self.size, self.size), mode="bilinear",
                                          align_corners=False, antialias=True)
        mean = torch.tensor(self.mean).view(1, -1, 1, 1)
        std = torch.tensor(self.std).view(1, -1, 1, 1)
        return (x - mean) / std


def _input_channels(model: nn.Module) -> int | None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            return m.in_channels
    return None


def default_transform(model: nn.Module, size: int | None = None):
    """The preprocessing that goes with ``model``: its weights' evaluation transform (at
    ``size`` instead of the weights' own size, if given); for random init an
    :class:`~course_utils.models.EvalTransform` with the model's normalisation, or for
    one-channel models (``small_cnn``) an :class:`ArrayTransform`."""
    from course_utils.models import EvalTransform, get_spec

    weights = getattr(model, "course_weights", None)
    if weights is not None:
        t = weights.transforms()
        if size is not None and isinstance(t, EvalTransform):
            t = EvalTransform(size, t.crop_pct, t.mean, t.std, t.interpolation)
        return t
    spec = get_spec(model)
    if _input_channels(model) == 3:
        return EvalTransform(size or spec.input_size[-1], 1.0, spec.mean, spec.std, "bilinear")
    return ArrayTransform(spec.mean, spec.std, size)


# --- extraction ----------------------------------------------------------------------------

class _Captured(Exception):
    """Raised by the capture hook to skip the layers above the requested one."""


def _capture_target(model: nn.Module, layer: str | None):
    """(module, "input"|"output") whose activation is the feature."""
    spec = getattr(model, "course_spec", None)
    if layer is None:
        if spec is None:
            return None, "output"
        return model.get_submodule(spec.head), "input"
    if spec is not None:
        from course_utils.models import layer_groups

        groups = layer_groups(model)
        if layer in groups:
            return groups[layer][-1], "output"
    modules = dict(model.named_modules())
    if layer in modules:
        return modules[layer], "output"
    choices = (f"a layer group ({', '.join(layer_groups(model))}) or " if spec is not None else "")
    raise ValueError(f"layer={layer!r} is not a layer of {type(model).__name__}; give "
                     f"{choices}a module name from model.named_modules(), or None for the "
                     "classifier's input")


def _pool(t: torch.Tensor) -> torch.Tensor:
    if t.ndim == 4:  # N, C, H, W: global average pool
        return t.mean(dim=(2, 3))
    return t.flatten(1) if t.ndim > 2 else t


def _forward_features(model: nn.Module, x: torch.Tensor, target, where: str) -> torch.Tensor:
    if target is None:
        return _pool(model(x))
    box: list[torch.Tensor] = []

    def pre_hook(module, args):
        box.append(args[0])
        raise _Captured

    def hook(module, args, output):
        box.append(output)
        raise _Captured

    handle = (target.register_forward_pre_hook(pre_hook) if where == "input"
              else target.register_forward_hook(hook))
    try:
        model(x)
    except _Captured:
        pass
    finally:
        handle.remove()
    if not box:
        raise RuntimeError(f"the forward pass of {type(model).__name__} never reached the "
                           f"requested layer ({type(target).__name__})")
    return _pool(box[0])


def _stable_repr(transform) -> str | None:
    r = repr(transform)
    return None if " at 0x" in r else r


def _batches_fingerprint(data) -> str:
    return weights_fingerprint(_tensor_records(
        (str(i), torch.as_tensor(batch[0] if isinstance(batch, (tuple, list)) else batch))
        for i, batch in enumerate(data)))


def extract_features(model: nn.Module, data, *, layer: str | None = None, transform=None,
                     size: int | None = None, batch_size: int = 64, cache_dir=None,
                     key: str | None = None, cache: bool = True, device=None,
                     progress: bool = True, return_labels: bool = False):
    """Features of ``data`` from ``model`` (frozen: eval mode, no gradients), cached on disk.

    ``data``: uint8 images (NumPy NHW or NHWC), preprocessed batch by batch with
    ``transform`` (default: :func:`default_transform` of the model, at ``size`` pixels if
    given); or an iterable of batches (tensors, or ``(x, y)`` pairs whose ``x`` is already a
    float NCHW tensor, e.g. an unshuffled ``FastLoader``) to which ``transform``, if given,
    is applied. ``layer``: None for the input of the classifier (the pooled penultimate
    features); a layer-group name such as ``"stage4"`` for that group's output, globally
    average pooled (for target domains far from ImageNet, where the last layers are too
    specific); or any module name from ``model.named_modules()``.

    The cache key is :func:`feature_cache_key` of the model name, weights name, layer, data
    fingerprint and transform repr, plus a fingerprint of the model's current weights;
    ``key`` overrides it, ``cache=False`` turns the cache off. ``device``: where to run
    (default: where the model is; the model is not moved). Returns float32 features, one
    row per image, and with ``return_labels`` also the labels of ``(x, y)`` batches.
    """
    spec = getattr(model, "course_spec", None)
    model_name = spec.name if spec is not None else type(model).__name__
    weights = getattr(model, "course_weights", None)
    target, where = _capture_target(model, layer)  # validates ``layer`` before any work
    is_array = isinstance(data, np.ndarray)
    if is_array:
        if data.dtype != np.uint8:
            raise TypeError(f"extract_features takes uint8 images as arrays (got {data.dtype}); "
                            "pass float data as an iterable of preprocessed batches instead")
        if transform is None:
            transform = default_transform(model, size)
    elif return_labels and cache:
        cache = False  # labels are not part of the cache; they come from the batches
        log.info("return_labels=True: not using the feature cache")

    if cache and key is None:
        t_repr = _stable_repr(transform) if transform is not None else "None"
        if t_repr is None:
            log.warning("not caching features: transform %r has no stable repr (define "
                        "__repr__ with its settings, or pass key=...)", transform)
            cache = False
        elif not is_array and iter(data) is data:
            log.warning("not caching features: data is a one-shot iterator, which cannot be "
                        "fingerprinted and then read again; pass a list/loader or key=...")
            cache = False
        else:
            fp = data_fingerprint(data) if is_array else _batches_fingerprint(data)
            key = feature_cache_key(model_name, weights, layer, fp, t_repr,
                                    framework="torch", state=state_fingerprint(model)[:32])
    if cache:
        hit = load_cached_features(key, cache_dir)
        if hit is not None:
            log.info("feature cache hit %s (%s)", key, model_name)
            # only arrays (which carry no labels) or an explicit key reach the cache with
            # return_labels: the answer has the same shape as a cold run's
            return (hit, None) if return_labels else hit

    feats, labels = _compute(model, data, transform, target, where, batch_size, device,
                             progress, f"features {model_name}" + (f"/{layer}" if layer else ""))
    if cache:
        save_cached_features(key, feats, cache_dir,
                             meta={"model": model_name, "weights": getattr(weights, "name", None),
                                   "layer": layer, "transform": repr(transform),
                                   "framework": "torch"})
    if return_labels:
        return feats, (np.concatenate(labels) if labels else None)
    return feats


def _compute(model, data, transform, target, where, batch_size, device, progress, desc):
    from course_utils.progress import tqdm

    if device is None:
        p = next(model.parameters(), None)
        device = p.device if p is not None else torch.device("cpu")
    device = torch.device(device)
    if isinstance(data, np.ndarray):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        batches: Iterable = (data[i:i + batch_size] for i in range(0, len(data), batch_size))
        total = -(-len(data) // batch_size)
    else:
        batches, total = data, (len(data) if hasattr(data, "__len__") else None)
    was_training = model.training
    model.eval()
    out, labels = [], []
    try:
        with torch.inference_mode():
            for batch in tqdm(batches, total=total, desc=desc, disable=not progress, leave=False):
                x = batch
                if isinstance(batch, (tuple, list)):
                    x = batch[0]
                    if len(batch) > 1:
                        labels.append(torch.as_tensor(batch[1]).cpu().numpy())
                if transform is not None:
                    x = transform(x)
                x = torch.as_tensor(x).to(device, non_blocking=True)
                out.append(_forward_features(model, x, target, where).float().cpu().numpy())
    finally:
        model.train(was_training)
    if not out:
        raise ValueError("extract_features got no data: the array or iterable is empty")
    return np.concatenate(out).astype(np.float32, copy=False), labels


# --- linear heads --------------------------------------------------------------------------

@dataclass
class LinearHead:
    """A linear classifier on (standardised) features, from :func:`fit_linear_head`.

    ``predict`` returns labels from ``classes_``; ``score`` the accuracy;
    ``decision_function`` the logits; ``to_linear()`` an ``nn.Linear`` on the *raw* features
    (standardisation folded in) that can replace a model's classifier."""

    method: str
    classes_: np.ndarray
    mean_: np.ndarray
    scale_: np.ndarray
    weight_: np.ndarray  # (n_classes, n_features), on standardised features
    bias_: np.ndarray    # (n_classes,)
    estimator: object = None
    losses: list[float] = field(default_factory=list)

    def _check(self, features) -> np.ndarray:
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.mean_.shape[0]:
            raise ValueError(f"features must have shape (n, {self.mean_.shape[0]}), got {x.shape}")
        return x

    def decision_function(self, features) -> np.ndarray:
        z = (self._check(features) - self.mean_) / self.scale_
        return z @ self.weight_.T + self.bias_

    def predict_proba(self, features) -> np.ndarray:
        logits = self.decision_function(features)
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(axis=1, keepdims=True)

    def predict(self, features) -> np.ndarray:
        return self.classes_[self.decision_function(features).argmax(axis=1)]

    def score(self, features, labels) -> float:
        """Accuracy on ``(features, labels)``."""
        return float(np.mean(self.predict(features) == np.asarray(labels)))

    def to_linear(self) -> nn.Linear:
        """``nn.Linear(n_features, n_classes)`` computing the same logits from raw features;
        output ``i`` is class ``classes_[i]``."""
        w = self.weight_ / self.scale_[None, :]
        b = self.bias_ - w @ self.mean_
        layer = nn.Linear(w.shape[1], w.shape[0])
        with torch.no_grad():
            layer.weight.copy_(torch.as_tensor(w, dtype=torch.float32))
            layer.bias.copy_(torch.as_tensor(b, dtype=torch.float32))
        return layer


def fit_linear_head(features, labels, method: str = "logreg", *, C: float = 1.0,
                    max_iter: int = 1000, epochs: int = 100, lr: float = 0.01,
                    batch_size: int | None = None, weight_decay: float = 0.0, seed: int = 0,
                    standardize: bool = True) -> LinearHead:
    """Train a linear classifier on extracted features.

    ``method="logreg"``: scikit-learn's multinomial ``LogisticRegression`` (L-BFGS, inverse
    regularisation ``C``, ``max_iter``). ``method="torch"``: an ``nn.Linear`` trained with
    Adam (``lr``, ``weight_decay``) on the mean cross-entropy for ``epochs`` passes, full
    batch (``batch_size=None``) or shuffled minibatches; initialisation and shuffling come
    from ``seed`` alone (the global RNG is not touched), so the same seed gives the same
    head. Features are standardised with the training mean and standard deviation first
    (``standardize=False`` to skip). Returns a :class:`LinearHead`.
    """
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels)
    if x.ndim != 2:
        raise ValueError(f"features must be 2-D (n_images, n_features), got shape {x.shape}")
    if y.shape != (x.shape[0],):
        raise ValueError(f"labels must have shape ({x.shape[0]},) to match the features, "
                         f"got {y.shape}")
    classes, y_idx = np.unique(y, return_inverse=True)
    if len(classes) < 2:
        raise ValueError(f"need at least 2 classes to train a classifier, got {classes.tolist()}")
    mean = x.mean(axis=0) if standardize else np.zeros(x.shape[1])
    scale = x.std(axis=0) if standardize else np.ones(x.shape[1])
    scale = np.where(scale > 1e-12, scale, 1.0)
    z = (x - mean) / scale

    if method == "logreg":
        from sklearn.linear_model import LogisticRegression

        est = LogisticRegression(C=C, max_iter=max_iter, random_state=seed)
        est.fit(z, y_idx)
        w, b = est.coef_, est.intercept_
        if len(classes) == 2:  # sklearn keeps one row for binary problems: logits (0, w.x+b)
            w = np.vstack([np.zeros_like(w), w])
            b = np.concatenate([[0.0], b])
        return LinearHead("logreg", classes, mean, scale, w, b, estimator=est)
    if method == "torch":
        return _fit_torch(z, y_idx, classes, mean, scale, epochs=epochs, lr=lr,
                          batch_size=batch_size, weight_decay=weight_decay, seed=seed)
    raise ValueError(f"method must be 'logreg' or 'torch', got {method!r}")


def _fit_torch(z, y_idx, classes, mean, scale, *, epochs, lr, batch_size, weight_decay, seed):
    gen = torch.Generator().manual_seed(int(seed))
    n, d = z.shape
    k = len(classes)
    xt = torch.as_tensor(z, dtype=torch.float32)
    yt = torch.as_tensor(y_idx, dtype=torch.int64)
    layer = nn.Linear(d, k)
    with torch.no_grad():  # nn.Linear's own init uses the global RNG: redo it from ``seed``
        bound = 1.0 / np.sqrt(d)
        layer.weight.uniform_(-bound, bound, generator=gen)
        layer.bias.uniform_(-bound, bound, generator=gen)
    opt = torch.optim.Adam(layer.parameters(), lr=lr, weight_decay=weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    bs = n if batch_size is None else int(batch_size)
    losses = []
    for _ in range(int(epochs)):
        order = torch.arange(n) if bs >= n else torch.randperm(n, generator=gen)
        total = 0.0
        for i in range(0, n, bs):
            idx = order[i:i + bs]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(layer(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        losses.append(total / n)
    w = layer.weight.detach().double().numpy()
    b = layer.bias.detach().double().numpy()
    return LinearHead("torch", classes, mean, scale, w, b, estimator=layer, losses=losses)
