"""The fine-tuning toolkit: replace the head, freeze and unfreeze by layer group, list the
parameters Keras-style, build optimizer parameter groups, and transfer the weights that fit.

Everything works from the layer groups a model declares in the registry (stem, stages or
blocks, head, classifier; see :func:`course_utils.models.layer_groups`), like timm's
``group_matcher``: the same call freezes "up to stage 4" of EfficientNet-Lite0 and "up to
layer3" of ResNet-18.

The PyTorch trap this module exists for: ``requires_grad=False`` stops gradient updates
but *not* BatchNorm's running statistics, which keep moving in ``model.train()`` (and
``fit`` calls ``model.train()`` every epoch). :func:`freeze` therefore keeps the frozen
BatchNorm layers in eval mode for good, in two independent ways:

* their class becomes a ``Frozen*`` subclass whose ``train()`` always sets eval mode, so
  ``model.train()`` (and DistributedDataParallel's ``train()``) leaves them in eval mode and
  ``bn.training`` reads ``False``; the subclass pickles and deep-copies like the original;
* a forward pre-hook sets ``training=False`` before every forward pass, so even a BN layer
  of a custom class, or one whose ``training`` flag was set by hand, never updates its
  statistics while frozen.

:func:`unfreeze` undoes both. Keras behaves this way by design (``trainable=False`` puts
BatchNormalization in inference mode); this brings PyTorch in line.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from course_utils.models.registry import get_spec, layer_groups

__all__ = ["replace_head", "freeze", "unfreeze", "is_frozen_bn", "frozen_groups", "summary",
           "ModelSummary", "param_groups", "load_matching_state_dict", "LoadResult",
           "FrozenBatchNorm1d", "FrozenBatchNorm2d", "FrozenBatchNorm3d", "FrozenSyncBatchNorm",
           "unwrap_model"]

log = logging.getLogger(__name__)


# --- helpers ---------------------------------------------------------------------------

def unwrap_model(model: nn.Module) -> nn.Module:
    """The model inside DistributedDataParallel / DataParallel (``.module``) or
    ``torch.compile`` (``._orig_mod``) wrappers, so the toolkit accepts either."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


def _group_index(names: list[str], group: str, argument: str, model_name: str) -> int:
    if group not in names:
        raise ValueError(f"{argument}={group!r} is not a layer group of {model_name}; "
                         f"its groups, input to output: {', '.join(names)}")
    return names.index(group)


def _get_submodule(model: nn.Module, path: str) -> tuple[nn.Module, str, nn.Module]:
    """(parent, attribute, module) for a dotted path such as ``classifier.6``."""
    parent_path, _, attr = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    return parent, attr, getattr(parent, attr)


# --- replace_head ----------------------------------------------------------------------

def replace_head(model: nn.Module, num_classes: int, *, bias: bool = True) -> nn.Module:
    """Replace the model's classifier (``get_spec(model).head``, e.g. ``fc`` or
    ``classifier.6``) by a freshly initialised ``nn.Linear(in_features, num_classes)`` on the
    same device and dtype. Returns the model (changed in place). The new layer is trainable
    even if the old one was frozen; initialisation draws from torch's global RNG, so seed
    first (``course_utils.device.seed_everything``) for reproducible runs."""
    inner = unwrap_model(model)
    spec = get_spec(inner)
    if int(num_classes) < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes!r}")
    parent, attr, old = _get_submodule(inner, spec.head)
    if not isinstance(old, nn.Linear):
        raise TypeError(f"{spec.name}'s head {spec.head!r} is a {type(old).__name__}, "
                        "not nn.Linear; replace it by hand")
    new = nn.Linear(old.in_features, int(num_classes), bias=bias,
                    device=old.weight.device, dtype=old.weight.dtype)
    setattr(parent, attr, new)
    log.info("replaced %s.%s: %d -> %d classes", spec.name, spec.head, old.out_features,
             num_classes)
    return model


# --- BatchNorm that stays in eval mode ---------------------------------------------------

class _FrozenBNMixin:
    """``train(mode)`` always means eval for a frozen BatchNorm layer."""

    def train(self, mode: bool = True):
        return super().train(False)


class FrozenBatchNorm1d(_FrozenBNMixin, nn.BatchNorm1d):
    """An ``nn.BatchNorm1d`` frozen by :func:`freeze`: stays in eval mode."""


class FrozenBatchNorm2d(_FrozenBNMixin, nn.BatchNorm2d):
    """An ``nn.BatchNorm2d`` frozen by :func:`freeze`: stays in eval mode (running statistics
    fixed, normalises with them). Not torchvision's ``ops.FrozenBatchNorm2d``: this one keeps
    its parameters and buffers, so :func:`unfreeze` can turn it back."""


class FrozenBatchNorm3d(_FrozenBNMixin, nn.BatchNorm3d):
    """An ``nn.BatchNorm3d`` frozen by :func:`freeze`: stays in eval mode."""


class FrozenSyncBatchNorm(_FrozenBNMixin, nn.SyncBatchNorm):
    """An ``nn.SyncBatchNorm`` frozen by :func:`freeze`: stays in eval mode."""


_FROZEN_CLASS = {nn.BatchNorm1d: FrozenBatchNorm1d, nn.BatchNorm2d: FrozenBatchNorm2d,
                 nn.BatchNorm3d: FrozenBatchNorm3d, nn.SyncBatchNorm: FrozenSyncBatchNorm}
_PLAIN_CLASS = {v: k for k, v in _FROZEN_CLASS.items()}


def _keep_bn_eval(module: nn.Module, args) -> None:
    """Forward pre-hook on every BN layer :func:`freeze` touched: while frozen, run in eval."""
    if getattr(module, "_course_frozen_bn", False) and module.training:
        module.training = False


def _freeze_bn(bn: _BatchNorm) -> None:
    bn._course_frozen_bn = True
    if not getattr(bn, "_course_bn_hooked", False):
        bn.register_forward_pre_hook(_keep_bn_eval)
        bn._course_bn_hooked = True
    frozen_cls = _FROZEN_CLASS.get(type(bn))
    if frozen_cls is not None:
        bn.__class__ = frozen_cls
    bn.training = False


def _unfreeze_bn(bn: _BatchNorm, training: bool) -> None:
    bn._course_frozen_bn = False
    plain_cls = _PLAIN_CLASS.get(type(bn))
    if plain_cls is not None:
        bn.__class__ = plain_cls
    bn.training = training


def is_frozen_bn(module: nn.Module) -> bool:
    """True for a BatchNorm layer that :func:`freeze` keeps in eval mode."""
    return isinstance(module, _BatchNorm) and bool(getattr(module, "_course_frozen_bn", False))


# --- freeze / unfreeze -----------------------------------------------------------------

def freeze(model: nn.Module, upto: str | None = None) -> nn.Module:
    """Freeze the layer groups from the input up to and including ``upto``.

    Frozen means: ``requires_grad=False`` for their parameters, and their BatchNorm layers
    kept in eval mode (running statistics fixed) even after ``model.train()``. ``upto=None``
    freezes everything but the classifier (the last group): feature extraction. Groups after
    ``upto`` are left as they are (``freeze`` never unfreezes). Returns the model.

    Example: ``freeze(model, upto="stage5")`` then train; later ``unfreeze(model,
    from_group="stage4")`` to fine-tune deeper (with a smaller learning rate).

    The frameworks differ here, and the Keras twins (``course_utils.keras.freeze_base`` /
    ``unfreeze_top``) follow Keras: there ``layer.trainable = False`` both stops the updates
    and puts BatchNorm in inference mode, and takes effect at the next ``compile()``; in
    PyTorch ``requires_grad=False`` stops only the updates, so this function also pins the
    BatchNorm layers, and the optimizer must be rebuilt over the trainable parameters.
    """
    inner = unwrap_model(model)
    groups = layer_groups(inner)
    names = list(groups)
    upto = names[-2] if upto is None else upto
    stop = _group_index(names, upto, "upto", get_spec(inner).name)
    n_params = 0
    for name in names[:stop + 1]:
        for module in groups[name]:
            for p in module.parameters():
                p.requires_grad_(False)
                n_params += p.numel()
            for sub in module.modules():
                if isinstance(sub, _BatchNorm):
                    _freeze_bn(sub)
    log.info("froze %s up to %r (%s parameters)", get_spec(inner).name, upto, f"{n_params:,}")
    return model


def unfreeze(model: nn.Module, from_group: str | None = None) -> nn.Module:
    """Make the groups from ``from_group`` to the output trainable again (all groups when
    ``from_group`` is None), BatchNorm layers included: they follow ``model.train()`` /
    ``model.eval()`` again and take the model's current mode now. Returns the model."""
    inner = unwrap_model(model)
    groups = layer_groups(inner)
    names = list(groups)
    start = 0 if from_group is None else _group_index(names, from_group, "from_group",
                                                      get_spec(inner).name)
    for name in names[start:]:
        for module in groups[name]:
            for p in module.parameters():
                p.requires_grad_(True)
            for sub in module.modules():
                if is_frozen_bn(sub):
                    _unfreeze_bn(sub, inner.training)
    log.info("unfroze %s from %r", get_spec(inner).name, names[start])
    return model


def frozen_groups(model: nn.Module) -> list[str]:
    """Names of the groups whose parameters are all frozen (groups without parameters are
    left out)."""
    out = []
    for name, modules in layer_groups(unwrap_model(model)).items():
        params = [p for m in modules for p in m.parameters()]
        if params and not any(p.requires_grad for p in params):
            out.append(name)
    return out


# --- summary ---------------------------------------------------------------------------

def _module_groups(model: nn.Module) -> dict[int, str]:
    """id(module) -> group name, for every module inside a declared group."""
    try:
        groups = layer_groups(model)
    except ValueError:  # not made by create_model: no groups, summary still works
        return {}
    owner: dict[int, str] = {}
    for name, modules in groups.items():
        for m in modules:
            for sub in m.modules():
                owner.setdefault(id(sub), name)
    return owner


@dataclass
class ModelSummary:
    """The Keras-style parameter listing: one row per layer that owns parameters.

    ``frame`` is a pandas DataFrame with columns ``group``, ``layer``, ``type``, ``params``,
    ``trainable`` (``"yes"``, ``"no"`` or ``"partly"``) and ``note`` (``"BN kept in eval"``
    for frozen BatchNorm). Printing it (or showing it in Jupyter) adds the totals.
    ``total_params`` is ``sum(p.numel() for p in model.parameters())``; Keras would also
    count BatchNorm's moving mean and variance as non-trainable parameters: they are the
    ``buffers`` figure here."""

    name: str
    frame: object
    total_params: int
    trainable_params: int
    buffers: int

    @property
    def non_trainable_params(self) -> int:
        return self.total_params - self.trainable_params

    def by_group(self):
        """Parameter counts per layer group (input to output)."""
        return self.frame.groupby("group", sort=False)[["params", "trainable_params"]].sum()

    def _totals(self) -> list[str]:
        return [f"Total params: {self.total_params:,}",
                f"Trainable params: {self.trainable_params:,}",
                f"Non-trainable params: {self.non_trainable_params:,}",
                f"Buffers (BatchNorm running statistics): {self.buffers:,}"]

    def __str__(self) -> str:
        cols = ["group", "layer", "type", "params", "trainable", "note"]
        rows = [[str(v) if c != "params" else f"{v:,}" for c, v in zip(cols, r)]
                for r in self.frame[cols].itertuples(index=False)]
        widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(cols)]
        fmt = lambda r: "  ".join(v.rjust(w) if c == "params" else v.ljust(w)  # noqa: E731
                                  for c, v, w in zip(cols, r, widths)).rstrip()
        rule = "=" * len(fmt(["-" * w for w in widths]))
        lines = [f'Model: "{self.name}"', rule, fmt(cols), "-" * len(rule)]
        lines += [fmt(r) for r in rows] + [rule] + self._totals()
        return "\n".join(lines)

    def __repr__(self) -> str:
        return str(self)

    def _repr_html_(self) -> str:
        table = self.frame.drop(columns=["trainable_params"]).to_html(index=False)
        return (f"<b>Model: {self.name}</b>{table}<p>" + "<br>".join(self._totals()) + "</p>")


def summary(model: nn.Module) -> ModelSummary:
    """A table of the layers that own parameters: group, layer name, type, parameter count,
    trainable or not, like Keras's ``model.summary()`` (without output shapes, so no input is
    needed). Works for any ``nn.Module``; the group column is filled for models made by
    ``create_model``."""
    import pandas as pd

    inner = unwrap_model(model)
    owner = _module_groups(inner)
    rows = []
    for name, module in inner.named_modules():
        params = list(module.parameters(recurse=False))
        if not params:
            continue
        n = sum(p.numel() for p in params)
        n_train = sum(p.numel() for p in params if p.requires_grad)
        trainable = "yes" if n_train == n else "no" if n_train == 0 else "partly"
        rows.append({"group": owner.get(id(module), "-"), "layer": name or "(root)",
                     "type": type(module).__name__, "params": n, "trainable": trainable,
                     "trainable_params": n_train,
                     "note": "BN kept in eval" if is_frozen_bn(module) else ""})
    frame = pd.DataFrame(rows, columns=["group", "layer", "type", "params", "trainable",
                                        "trainable_params", "note"])
    spec = getattr(inner, "course_spec", None)
    return ModelSummary(
        name=spec.name if spec is not None else type(inner).__name__, frame=frame,
        total_params=sum(p.numel() for p in inner.parameters()),
        trainable_params=sum(p.numel() for p in inner.parameters() if p.requires_grad),
        buffers=sum(b.numel() for n, b in inner.named_buffers()
                    if not n.endswith("num_batches_tracked")))


# --- optimizer parameter groups ----------------------------------------------------------

def param_groups(model: nn.Module, lr: float, head_lr_mult: float = 10.0,
                 lr_decay: float | None = None, weight_decay: float | None = None) -> list[dict]:
    """Optimizer parameter groups: per layer group with trainable parameters, one for its
    weights and one (named ``"<group>/no_decay"``) for its biases and normalisation
    parameters, which never get weight decay (as timm's ``param_groups_weight_decay``:
    decaying a BatchNorm scale or a bias towards 0 only fights the normalisation).

    The classifier (the last group) gets ``lr * head_lr_mult`` (d2l's fine-tuning recipe:
    a fresh head learns 10x faster than the pretrained body). The other groups get ``lr``,
    or with ``lr_decay`` discriminative rates: the group just below the classifier ``lr``,
    the one below it ``lr * lr_decay``, then ``lr * lr_decay**2`` ... down to the stem
    (``head_lr_mult=1, lr_decay=0.5`` is the usual layer-wise decay). Frozen parameters are
    left out, so freeze before building the optimizer. Each dict has ``params``, ``lr``,
    ``name`` and ``weight_decay`` where it is fixed (``0.0`` for the no-decay groups, the
    given ``weight_decay`` for the others; without it the optimizer's own applies)::

        opt = torch.optim.Adam(param_groups(model, lr=1e-4))
    """
    if lr <= 0:
        raise ValueError(f"lr must be positive, got {lr!r}")
    if lr_decay is not None and not 0 < lr_decay <= 1:
        raise ValueError(f"lr_decay must be in (0, 1], got {lr_decay!r}")
    inner = unwrap_model(model)
    groups = layer_groups(inner)
    names = list(groups)
    seen: set[int] = set()
    out: list[dict] = []
    for i, name in enumerate(names):
        if i == len(names) - 1:
            group_lr = lr * head_lr_mult
        elif lr_decay is None:
            group_lr = lr
        else:
            group_lr = lr * lr_decay ** (len(names) - 2 - i)
        params = []
        for module in groups[name]:
            for p in module.parameters():
                if p.requires_grad and id(p) not in seen:
                    seen.add(id(p))
                    params.append(p)
        out += _decay_split(name, params, group_lr, weight_decay)
    rest = [p for p in inner.parameters() if p.requires_grad and id(p) not in seen]
    if rest:
        log.warning("%d trainable tensors belong to no layer group of %s; they get lr=%g",
                    len(rest), get_spec(inner).name, lr)
        out += _decay_split("other", rest, lr, weight_decay)
    if not out:
        raise ValueError(f"{get_spec(inner).name} has no trainable parameters: everything is "
                         "frozen; call unfreeze(model, from_group=...) first")
    return out


def _decay_split(name: str, params: list, lr: float, weight_decay: float | None) -> list[dict]:
    """The weight-decay group of ``params`` (matrices and kernels) and the no-decay group
    (1-d tensors: biases, BatchNorm/LayerNorm scales and shifts), the empty ones left out."""
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    out = []
    if decay:
        group = {"params": decay, "lr": float(lr), "name": name}
        if weight_decay is not None:
            group["weight_decay"] = float(weight_decay)
        out.append(group)
    if no_decay:
        out.append({"params": no_decay, "lr": float(lr), "name": f"{name}/no_decay",
                    "weight_decay": 0.0})
    return out


# --- partial weight transfer -------------------------------------------------------------

@dataclass
class LoadResult:
    """What :func:`load_matching_state_dict` did. ``loaded``: model keys now holding the
    state dict's tensors; ``skipped``: model keys left as they were (the blocker layer and
    everything above it); ``blocker``: the first model key that did not match (None if all
    did); ``reason``: why; ``unused``: state-dict keys that were not loaded."""

    loaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    blocker: str | None = None
    reason: str = ""
    unused: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.blocker is None and not self.skipped

    def __str__(self) -> str:
        head = f"loaded {len(self.loaded)} tensors, skipped {len(self.skipped)}"
        if self.blocker is None:
            return head + (f"; {len(self.unused)} state-dict tensors unused" if self.unused else "")
        return f"{head}; stopped at {self.blocker!r}: {self.reason}"


def _layer_of(key: str) -> str:
    return key.rpartition(".")[0]


def load_matching_state_dict(model: nn.Module, state_dict: dict) -> LoadResult:
    """Load ``state_dict`` into ``model`` bottom-up, stopping at the first blocker.

    The model's tensors (parameters and buffers, in ``model.state_dict()`` order, input to
    output) are paired in order with the state dict's. Loading stops at the first pair whose
    names or shapes differ: that layer is the blocker, and neither it nor anything above it
    is loaded — no weights above the first blocker layer, because a layer above one that
    changed would receive inputs it was never trained on. Tensors of the blocker's own
    layer that came before the mismatch are not loaded either. ``num_batches_tracked``
    counters are optional on both sides. A ``module.`` prefix (a checkpoint saved from a
    DDP-wrapped model) is stripped. Returns a :class:`LoadResult`.
    """
    inner = unwrap_model(model)
    own = inner.state_dict()
    sd = dict(state_dict)
    if sd and all(k.startswith("module.") for k in sd) and not any(k.startswith("module.") for k in own):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    is_counter = lambda k: k.endswith("num_batches_tracked")  # noqa: E731
    own_keys = [k for k in own if not is_counter(k)]
    sd_keys = [k for k in sd if not is_counter(k)]

    matched: list[str] = []
    blocker, reason = None, ""
    for i, key in enumerate(own_keys):
        if i >= len(sd_keys):
            blocker, reason = key, f"the state dict ends after {len(sd_keys)} tensors"
            break
        other = sd_keys[i]
        if other != key:
            blocker, reason = key, f"the model has {key!r} where the state dict has {other!r}"
            break
        have, want = tuple(sd[key].shape), tuple(own[key].shape)
        if have != want:
            blocker, reason = key, f"shape {have} in the state dict, {want} in the model"
            break
        matched.append(key)
    if blocker is not None:
        layer = _layer_of(blocker)
        matched = [k for k in matched if _layer_of(k) != layer]
    layers = {_layer_of(k) for k in matched}
    counters = [k for k in own if is_counter(k) and _layer_of(k) in layers and k in sd]
    loaded_set = set(matched) | set(counters)
    loaded = [k for k in own if k in loaded_set]
    if loaded:
        inner.load_state_dict({k: sd[k] for k in loaded}, strict=False)  # loaded ⊆ own keys
    res = LoadResult(loaded=loaded, skipped=[k for k in own if k not in loaded_set],
                     blocker=blocker, reason=reason,
                     unused=[k for k in sd if k not in loaded_set])
    if blocker is None:
        log.info("load_matching_state_dict: %s", res)
    else:
        log.warning("load_matching_state_dict: %s", res)
    return res
