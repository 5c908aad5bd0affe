"""The course's own small CNN for 28x28 images (Fashion-MNIST, digits).

It is small enough to train from scratch on two CPU cores in seconds, and deep enough to
show everything the course teaches about transfer: BatchNorm layers whose running
statistics must stay put when frozen, several layer groups to freeze "up to", and a
classifier to replace. The Keras helper (``course_utils.keras``) builds the *identical*
network, layer for layer, so the same experiment can be run in both frameworks; the exact
architecture is therefore fixed here and spelled out in :class:`SmallCNN`'s docstring and
in :data:`SMALL_CNN_LAYOUT`.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from course_utils.preprocessing import FASHION_MNIST_MEAN, FASHION_MNIST_STD

__all__ = ["SmallCNN", "ConvBNReLU", "SMALL_CNN_LAYOUT", "BN_EPS", "BN_MOMENTUM",
           "FASHION_MNIST_MEAN", "FASHION_MNIST_STD", "small_cnn_groups"]

#: BatchNorm epsilon, PyTorch's default; Keras: ``BatchNormalization(epsilon=1e-5)``.
BN_EPS = 1e-5
#: PyTorch's BatchNorm momentum (weight of the *new* batch statistic). Keras counts the other
#: way round: ``BatchNormalization(momentum=0.9)`` is the same update.
BN_MOMENTUM = 0.1
# FASHION_MNIST_MEAN/STD (of x / 255) are course_utils.preprocessing's, re-exported here.

#: The architecture as data: group -> layers, input to output. ``conv(k, out)`` is a k x k
#: convolution with 'same' padding, stride 1, no bias, followed by BatchNorm and ReLU.
SMALL_CNN_LAYOUT = OrderedDict([
    ("stem", ["conv(3, 32)"]),
    ("block1", ["conv(3, 32)", "conv(3, 32)", "maxpool(2)"]),
    ("block2", ["conv(3, 64)", "conv(3, 64)", "maxpool(2)"]),
    ("head", ["conv(1, 256)", "global_avg_pool"]),
    ("classifier", ["dropout(0.3)", "linear(num_classes)"]),
])


class ConvBNReLU(nn.Sequential):
    """``conv`` (k x k, stride 1, 'same' padding, no bias) -> ``bn`` -> ``act`` (ReLU).

    For odd ``k`` and stride 1, PyTorch's symmetric ``padding=k // 2`` equals Keras's
    ``padding="same"``, so the two frameworks compute the same function."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int):
        super().__init__(OrderedDict([
            ("conv", nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2, bias=False)),
            ("bn", nn.BatchNorm2d(out_ch, eps=BN_EPS, momentum=BN_MOMENTUM)),
            ("act", nn.ReLU(inplace=True)),
        ]))


class SmallCNN(nn.Module):
    """The course's small CNN: 93,930 parameters for 1 input channel and 10 classes.

    Layer by layer (input ``in_channels`` x 28 x 28; other sizes work too thanks to the
    global pooling)::

        stem        conv 3x3, 32  + BN + ReLU                 -> 32 x 28 x 28
        block1      conv 3x3, 32  + BN + ReLU
                    conv 3x3, 32  + BN + ReLU
                    max-pool 2x2, stride 2                    -> 32 x 14 x 14
        block2      conv 3x3, 64  + BN + ReLU
                    conv 3x3, 64  + BN + ReLU
                    max-pool 2x2, stride 2                    -> 64 x 7 x 7
        head        conv 1x1, 256 + BN + ReLU
                    global average pool                       -> 256
        classifier  dropout p=0.3, linear 256 -> num_classes  (logits; no softmax)

    Every convolution: stride 1, ``'same'`` padding (``padding=k // 2``), no bias (the BN
    shift replaces it). BatchNorm: ``eps=1e-5``, PyTorch ``momentum=0.1`` (= Keras
    ``momentum=0.9``). Initialisation: each framework's default (they differ; the
    architecture does not). Parameter names: ``stem.conv.weight``, ``stem.bn.weight``,
    ``block1.0.conv.weight`` ... ``head.0.conv.weight``, ``classifier.weight``.

    To port weights to Keras: conv kernels (out, in, kh, kw) -> (kh, kw, in, out); BN
    weight/bias/running_mean/running_var -> gamma/beta/moving_mean/moving_variance; linear
    (out, in) -> (in, out).
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, dropout: float = 0.3):
        super().__init__()
        if in_channels < 1 or num_classes < 1:
            raise ValueError(f"SmallCNN needs in_channels >= 1 and num_classes >= 1, got "
                             f"in_channels={in_channels}, num_classes={num_classes}")
        self.stem = ConvBNReLU(in_channels, 32, 3)
        self.block1 = nn.Sequential(ConvBNReLU(32, 32, 3), ConvBNReLU(32, 32, 3), nn.MaxPool2d(2))
        self.block2 = nn.Sequential(ConvBNReLU(32, 64, 3), ConvBNReLU(64, 64, 3), nn.MaxPool2d(2))
        self.head = nn.Sequential(ConvBNReLU(64, 256, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(256, num_classes)
        self.num_features = 256

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled 256-d features the classifier sees."""
        return self.head(self.block2(self.block1(self.stem(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.forward_features(x)))


def small_cnn_groups(model: SmallCNN) -> "OrderedDict[str, list[nn.Module]]":
    """stem, block1, block2, head, classifier (the dropout sits with the classifier)."""
    return OrderedDict([
        ("stem", [model.stem]),
        ("block1", [model.block1]),
        ("block2", [model.block2]),
        ("head", [model.head]),
        ("classifier", [model.dropout, model.classifier]),
    ])
