"""The model zoo: one ``create_model(name, weights=..., num_classes=...)`` over a registry.

Modelled on timm's factory and torchvision's weights API. Each entry declares what a
fine-tuning recipe needs to know about the architecture: its layer groups from input to
output (stem, blocks..., head), the input size, the normalisation and, for pretrained
weights, the class names. The fine-tuning toolkit (``freeze``, ``param_groups`` ...) works
from those groups, so it never needs to know which architecture it is looking at.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable

from torch import nn

__all__ = ["ModelSpec", "Weights", "register", "create_model", "list_models", "get_spec",
           "layer_groups", "REGISTRY"]


@dataclass(frozen=True)
class Weights:
    """A set of pretrained weights: like a torchvision ``WeightsEnum`` member, it carries its
    preprocessing (``transforms()``) and metadata (``meta["categories"]``)."""

    name: str
    meta: dict
    transforms: Callable[[], Callable]
    online: bool = False  # True if loading them needs the network (the ``full`` profile)
    model: str = ""  # the registry name of the model they belong to

    def __reduce__(self):
        # pickle by reference (registry lookup): ``transforms`` may be a lambda, and a model
        # sent to another process (torch.save(model), multiprocessing spawn) carries these
        if self.model:
            return (_lookup_weights, (self.model, self.name))
        return super().__reduce__()


@dataclass(frozen=True)
class ModelSpec:
    name: str
    builder: Callable[[Weights | None, int], nn.Module]
    #: model -> OrderedDict(group name -> list of modules), ordered from input to output
    groups: Callable[[nn.Module], "OrderedDict[str, list[nn.Module]]"]
    #: attribute path of the classifier that ``replace_head`` swaps, e.g. "_fc" or "fc"
    head: str
    input_size: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    weights: dict[str, Weights] = field(default_factory=dict)
    default_num_classes: int = 1000
    description: str = ""

    def __reduce__(self):
        # pickle by name: models made by create_model carry their spec, whose builders may
        # be closures; the receiving process finds the same spec in its registry
        return (get_spec, (self.name,))


REGISTRY: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    REGISTRY[spec.name] = spec
    return spec


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`."""
    _ensure_loaded()
    return sorted(REGISTRY)


def get_spec(name_or_model: str | nn.Module) -> ModelSpec:
    """The :class:`ModelSpec` for a name, or for a model made by :func:`create_model`."""
    _ensure_loaded()
    if isinstance(name_or_model, nn.Module):
        spec = getattr(name_or_model, "course_spec", None)
        if spec is None:
            raise ValueError(
                f"{type(name_or_model).__name__} was not made by course_utils.models.create_model, "
                "so its layer groups are unknown; create it with create_model(name, ...)")
        return spec
    if name_or_model not in REGISTRY:
        raise ValueError(f"unknown model {name_or_model!r}; choose one of: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name_or_model]


def _lookup_weights(model: str, name: str) -> Weights:
    return get_spec(model).weights[name]


def _resolve_weights(spec: ModelSpec, weights) -> Weights | None:
    if weights is None or weights is False:
        return None
    if isinstance(weights, Weights):
        return weights
    key = getattr(weights, "name", weights)  # accept a torchvision enum member too
    if weights is True:
        key = next(iter(spec.weights), None)
    if key not in spec.weights:
        choices = ", ".join(repr(k) for k in spec.weights) or "none (only weights=None)"
        raise ValueError(f"model {spec.name!r} has no weights {weights!r}; available: {choices}")
    return spec.weights[key]


def create_model(name: str, weights=None, num_classes: int | None = None, **kwargs) -> nn.Module:
    """Build a registered model.

    ``weights=None`` gives random initialisation; otherwise the name of one of the model's
    weight sets (``"imagenet"`` for the embedded EfficientNet-Lite0, ``"IMAGENET1K_V1"`` for
    torchvision's, which need the network). ``num_classes`` replaces the classifier with a
    freshly initialised one of that size. The model carries ``course_spec`` and
    ``course_weights`` attributes for the fine-tuning toolkit.
    """
    spec = get_spec(name)
    w = _resolve_weights(spec, weights)
    n = spec.default_num_classes if num_classes is None else int(num_classes)
    model = spec.builder(w, n, **kwargs)
    model.course_spec = spec
    model.course_weights = w
    return model


def layer_groups(model: nn.Module) -> "OrderedDict[str, list[nn.Module]]":
    """The model's layer groups, input to output (e.g. stem, stage1..stage7, head, classifier)."""
    return get_spec(model).groups(model)


_LOADED = False


def _ensure_loaded() -> None:
    """Import the modules that register models (they call :func:`register` on import)."""
    global _LOADED
    if not _LOADED:
        _LOADED = True
        from course_utils.models import zoo  # noqa: F401
