"""torchvision's ResNet-18, VGG16 and MobileNetV2, with their ImageNet weights via torch.hub.

These are the networks of the ``full`` profile (a GPU machine with internet): the weights
are downloaded once by :func:`torch.hub.load_state_dict_from_url` into the torch hub cache
(``$TORCH_HOME/hub/checkpoints``, default ``~/.cache/torch/hub/checkpoints``) and loaded
from there afterwards, offline included. On a machine that has never downloaded them and
has no network, :func:`load_torchvision_state_dict` raises :class:`WeightsUnavailableError`
saying which file to fetch, where to put it, and which embedded model works offline.

Layer groups use torchvision's own attribute names where they exist (ResNet's
``layer1``..``layer4``, which are also the state-dict prefixes) and the Keras names for
VGG16's five convolution blocks (``block1``..``block5``), which students meet in the Keras
tutorials.
"""
from __future__ import annotations

import logging
import os
import pickle
from collections import OrderedDict
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from course_utils.models.imagenet import IMAGENET_MEAN, IMAGENET_STD, EvalTransform
from course_utils.models.registry import Weights

__all__ = ["WeightsUnavailableError", "TORCHVISION_MODELS", "torchvision_weights",
           "hub_checkpoint_path", "load_torchvision_state_dict", "build_torchvision",
           "resnet_groups", "vgg_groups", "mobilenet_v2_groups"]

log = logging.getLogger(__name__)

#: course name -> (torchvision builder name, torchvision weights enum name)
TORCHVISION_MODELS = {
    "resnet18": ("resnet18", "ResNet18_Weights"),
    "vgg16": ("vgg16", "VGG16_Weights"),
    "mobilenet_v2": ("mobilenet_v2", "MobileNet_V2_Weights"),
}

#: What works without a network: named in every offline error.
OFFLINE_ALTERNATIVE = 'create_model("efficientnet_lite0", weights="imagenet")'


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights could not be downloaded (offline) or read from the cache."""


def _tv_enum(name: str):
    import torchvision.models as tvm

    return getattr(tvm, TORCHVISION_MODELS[name][1])


def torchvision_weights(name: str, weights_name: str = "IMAGENET1K_V1") -> Weights:
    """A course :class:`Weights` mirroring torchvision's enum member: categories, the
    evaluation transform (resize 256, centre-crop 224, bilinear, ImageNet mean/std) and the
    download URL in ``meta["url"]``. Building it needs no network."""
    tv = getattr(_tv_enum(name), weights_name)
    meta = dict(tv.meta)
    meta.update(url=tv.url, categories=tuple(tv.meta["categories"]), input_size=224)
    return Weights(
        name=weights_name, meta=meta, online=True, model=name,
        transforms=lambda: EvalTransform(224, 224 / 256, IMAGENET_MEAN, IMAGENET_STD, "bilinear"),
    )


def hub_checkpoint_path(url: str) -> Path:
    """Where torch.hub keeps (or would keep) the file of ``url``: the cache that
    ``load_state_dict_from_url`` checks before downloading. Honours ``$TORCH_HOME``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def load_torchvision_state_dict(name: str, weights: Weights, *, progress: bool = True) -> dict:
    """The state dict of ``weights`` for model ``name``: from the torch hub cache if the file
    is there, else downloaded (sha256 prefix checked, as in the file name) into it.

    Raises :class:`WeightsUnavailableError` when the download fails (no network) or the
    cached file cannot be read, naming the model, the URL, the cache path and the embedded
    alternative."""
    url = weights.meta["url"]
    path = hub_checkpoint_path(url)
    try:
        return torch.hub.load_state_dict_from_url(url, map_location="cpu", progress=progress,
                                                  check_hash=True, weights_only=True)
    except OSError as exc:  # URLError, HTTPError, socket errors, disk full ...
        raise WeightsUnavailableError(
            f"cannot get the {weights.name} weights of {name!r}: downloading {url} failed "
            f"({exc}). These weights need the internet once (the 'full' profile). Either "
            f"download the file on a connected machine and copy it to {path} (torch.hub's "
            f"cache; set TORCH_HOME to move it), or use the ImageNet weights that ship with "
            f"the course and work offline: {OFFLINE_ALTERNATIVE}.") from exc
    except (RuntimeError, pickle.UnpicklingError, EOFError, ValueError) as exc:
        raise WeightsUnavailableError(
            f"cannot read the {weights.name} weights of {name!r} from {path} ({exc}); the file "
            f"is probably truncated or corrupt: delete it and run again to re-download it "
            f"from {url}") from exc


def build_torchvision(name: str, weights: Weights | None, num_classes: int) -> nn.Module:
    """Build torchvision's ``name`` with random init, load ``weights`` (strict), then replace
    the classifier by a fresh ``num_classes``-way layer if that is not 1000. The weights are
    fetched before the model is built, so an offline error comes at once (VGG16's random
    init of 138 M parameters takes seconds)."""
    import torchvision.models as tvm

    state = load_torchvision_state_dict(name, weights) if weights is not None else None
    model = getattr(tvm, TORCHVISION_MODELS[name][0])(weights=None, num_classes=1000)
    if state is not None:
        model.load_state_dict(state, strict=True)
        log.info("loaded %s weights into %s", weights.name, name)
    if num_classes != 1000:
        if name == "resnet18":
            model.fc = nn.Linear(model.fc.in_features, num_classes)
        elif name == "vgg16":
            model.classifier[6] = nn.Linear(model.classifier[6].in_features, num_classes)
        else:
            model.classifier[1] = nn.Linear(model.classifier[1].in_features, num_classes)
    return model


def resnet_groups(model) -> "OrderedDict[str, list[nn.Module]]":
    """stem (conv1, bn1, relu, maxpool), layer1..layer4, head (avgpool), classifier (fc)."""
    return OrderedDict([
        ("stem", [model.conv1, model.bn1, model.relu, model.maxpool]),
        ("layer1", [model.layer1]), ("layer2", [model.layer2]),
        ("layer3", [model.layer3]), ("layer4", [model.layer4]),
        ("head", [model.avgpool]),
        ("classifier", [model.fc]),
    ])


#: VGG16 ``features`` index ranges of the five conv blocks (each ends with its max-pool).
_VGG16_BLOCKS = ((0, 5), (5, 10), (10, 17), (17, 24), (24, 31))


def vgg_groups(model) -> "OrderedDict[str, list[nn.Module]]":
    """block1..block5 (the conv blocks, Keras's names), head (avgpool, fc6, fc7 with their
    ReLUs and dropouts), classifier (the last linear layer)."""
    groups: OrderedDict[str, list[nn.Module]] = OrderedDict()
    for i, (a, b) in enumerate(_VGG16_BLOCKS, start=1):
        groups[f"block{i}"] = list(model.features[a:b])
    groups["head"] = [model.avgpool, *model.classifier[:6]]
    groups["classifier"] = [model.classifier[6]]
    return groups


#: MobileNetV2 ``features`` index ranges of the seven inverted-residual stages.
_MOBILENET_V2_STAGES = ((1, 2), (2, 4), (4, 7), (7, 11), (11, 14), (14, 17), (17, 18))


def mobilenet_v2_groups(model) -> "OrderedDict[str, list[nn.Module]]":
    """stem (features[0]), stage1..stage7 (as in EfficientNet-Lite0), head (the 1x1 conv to
    1280 channels, features[18]), classifier (dropout + linear)."""
    groups: OrderedDict[str, list[nn.Module]] = OrderedDict([("stem", [model.features[0]])])
    for i, (a, b) in enumerate(_MOBILENET_V2_STAGES, start=1):
        groups[f"stage{i}"] = list(model.features[a:b])
    groups["head"] = [model.features[18]]
    groups["classifier"] = [model.classifier]
    return groups
