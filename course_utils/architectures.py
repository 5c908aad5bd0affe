"""Architecture tables both frameworks build from, so the twins are the same network.

EfficientNet-Lite0 is built by :mod:`course_utils.models.efficientnet_lite` (PyTorch, the
lukemelas module names the embedded weights use) and :mod:`course_utils.keras.efficientnet_lite`
(Keras, ``keras.applications`` layer names), and :mod:`course_utils.keras.convert` pairs
their layers. All three read the stage table and the Keras block names from here, so none of
them imports another to learn the architecture. Imports neither framework.
"""
from __future__ import annotations

__all__ = ["LITE0_STAGES", "LITE0_STEM_CHANNELS", "LITE0_HEAD_CHANNELS", "lite0_block_name"]

#: (repeats, kernel, stride, expand ratio, input channels, output channels) per stage:
#: EfficientNet-B0's stages at width and depth 1.0 (the ``r1_k3_s11_e1_i32_o16`` strings of
#: the paper's code); Lite variants drop squeeze-and-excitation and use ReLU6.
LITE0_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
#: Lite variants keep the stem and head widths unscaled
LITE0_STEM_CHANNELS = 32
LITE0_HEAD_CHANNELS = 1280


def lite0_block_name(stage: int, repeat: int) -> str:
    """The Keras name of a block: ``lite0_block_name(6, 3) == "block6d"`` (stage 1-based,
    repeat 0-based, as ``keras.applications.EfficientNetB0``)."""
    return f"block{stage}{chr(ord('a') + repeat)}"
