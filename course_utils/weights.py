"""Pretrained-weights names, one rule for both frameworks (torchvision's ``Weights`` idiom).

torchvision names weights by what they were trained on and which release they are
(``IMAGENET1K_V1``), gathers a model's weights in an enum with a ``DEFAULT`` alias, and
lets ``weights=`` take the enum member or its name. ``keras.applications`` says
``weights="imagenet"``. The course's two model zoos follow torchvision, accept the Keras
spelling as an alias, and resolve every spelling here, so ``create_model(name,
weights=...)`` means the same thing in ``course_utils.models`` and ``course_utils.keras``:

* ``None`` (or ``False``): random initialisation;
* ``"DEFAULT"`` or ``True`` or ``<Enum>.DEFAULT``: the model's best (first) weights;
* a weights name (``"IMAGENET1K_V1"``), or an enum member;
* ``"imagenet"``: the model's ImageNet-1k weights (what the Keras guides write).

This module imports neither framework: a weights enum's values are whatever the zoo
stores (a torch-side ``Weights`` record, a Keras-side ``KerasWeights``), and the enum
forwards ``meta`` and ``transforms()`` to them, as torchvision's does.
"""
from __future__ import annotations

import enum
from collections.abc import Mapping

__all__ = ["IMAGENET", "DEFAULT", "ALIASES", "WeightsEnum", "resolve_weights_name",
           "weights_enum"]

#: torchvision's name for weights trained on ImageNet-1k, first release
IMAGENET = "IMAGENET1K_V1"
#: the alias for "the model's best weights"
DEFAULT = "DEFAULT"
#: other spellings -> the weights name they stand for
ALIASES = {"imagenet": IMAGENET}


class WeightsEnum(enum.Enum):
    """Base of the per-model weights enums (``weights_enum``): members are the model's
    weights by name, ``DEFAULT`` an alias of the first. ``member.meta`` and
    ``member.transforms()`` come from the stored value, as in torchvision."""

    @property
    def meta(self) -> dict:
        return self.value.meta

    def transforms(self):
        return self.value.transforms()

    def __repr__(self) -> str:
        return f"{type(self).__name__}.{self.name}"


def weights_enum(model: str, weights: Mapping[str, object]) -> type[WeightsEnum]:
    """A :class:`WeightsEnum` subclass named like torchvision's (``efficientnet_lite0`` ->
    ``EfficientnetLite0_Weights``) over ``weights`` (name -> stored value, best first),
    with ``DEFAULT`` as an alias of the first member. A model without pretrained weights
    gets an enum with no members."""
    members = dict(weights)
    if members:
        members[DEFAULT] = next(iter(members.values()))
    cls_name = "".join(part.capitalize() for part in model.split("_")) + "_Weights"
    return WeightsEnum(cls_name, members)


def resolve_weights_name(model: str, available, weights) -> str | None:
    """The weights name that ``weights`` stands for among ``available`` (names, best
    first), or ``None`` for random initialisation. Raises ``ValueError`` naming the model,
    the value and the choices when it stands for none of them."""
    if weights is None or weights is False:
        return None
    names = list(available)
    # an enum member (ours: DEFAULT's name is its target's; torchvision's), or a stored record
    key = getattr(weights, "name", weights)
    if weights is True or key == DEFAULT:
        key = names[0] if names else DEFAULT
    if isinstance(key, str):
        key = ALIASES.get(key, key)
    if key in names:
        return key
    choices = ", ".join(repr(k) for k in names)
    hint = (f"available: {choices}, 'DEFAULT' (= {names[0]!r}) or 'imagenet'" if names
            else "available: none (only weights=None)")
    raise ValueError(f"create_model({model!r}): no weights {weights!r}; {hint}")
