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

from course_utils.factory import check_builder_options, check_num_classes
from course_utils.weights import WeightsEnum, resolve_weights_name, weights_enum

__all__ = ["ModelSpec", "Weights", "register", "create_model", "list_models", "get_spec",
           "get_model_weights", "layer_groups", "REGISTRY"]


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
    """Add ``spec`` to the registry. A name is registered once: a second spec under the
    same name would silently replace the first one for every later ``create_model``."""
    if spec.name in REGISTRY:
        raise ValueError(f"register: a model named {spec.name!r} is already registered "
                         f"({REGISTRY[spec.name].description or 'no description'}); pick "
                         "another name")
    REGISTRY[spec.name] = spec
    return spec


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`."""
    return sorted(REGISTRY)


def get_spec(name_or_model: str | nn.Module) -> ModelSpec:
    """The :class:`ModelSpec` for a name, or for a model made by :func:`create_model`."""
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


def get_model_weights(name: str) -> type[WeightsEnum]:
    """The weights enum of a registered model, as torchvision's ``get_model_weights``:
    ``get_model_weights("efficientnet_lite0").DEFAULT.transforms()``."""
    return weights_enum(name, get_spec(name).weights)


def _resolve_weights(spec: ModelSpec, weights) -> Weights | None:
    if isinstance(weights, Weights):
        return weights
    key = resolve_weights_name(spec.name, spec.weights, weights)
    return None if key is None else spec.weights[key]


def create_model(name: str, weights=None, num_classes: int | None = None, **options) -> nn.Module:
    """Build a registered model.

    ``weights``: ``None`` for random initialisation; ``"DEFAULT"`` (or ``True``) for the
    model's best weights; a weights name (``"IMAGENET1K_V1"``: the embedded
    EfficientNet-Lite0 ones, or torchvision's, which need the network once) or a member of
    :func:`get_model_weights`; ``"imagenet"`` is accepted for ``"IMAGENET1K_V1"``, as in
    Keras (see :mod:`course_utils.weights`). ``num_classes`` replaces the classifier with a
    freshly initialised one of that size. ``options`` go to the model's builder
    (``small_cnn``: ``in_channels``, ``dropout``); others are an error. The model carries
    ``course_spec`` and ``course_weights`` attributes for the fine-tuning toolkit.
    """
    spec = get_spec(name)
    w = _resolve_weights(spec, weights)
    n = check_num_classes(name, num_classes, spec.default_num_classes)
    check_builder_options(name, spec.builder, options)
    model = spec.builder(w, n, **options)
    model.course_spec = spec
    model.course_weights = w
    return model


def layer_groups(model: nn.Module) -> "OrderedDict[str, list[nn.Module]]":
    """The model's layer groups, input to output (e.g. stem, stage1..stage7, head,
    classifier), each a list of its modules. (The Keras twin returns the same group names
    with lists of Keras layers.)"""
    return get_spec(model).groups(model)
