"""The course's small CNN in Keras, layer for layer the PyTorch ``SmallCNN``.

The architecture is fixed in :mod:`course_utils.models.small_cnn` (see its
``SMALL_CNN_LAYOUT``): stem conv3x3(32); block1 2 x conv3x3(32) + max-pool; block2
2 x conv3x3(64) + max-pool; head conv1x1(256) + global average pool; dropout 0.3 and a
linear classifier producing logits. Every convolution has stride 1, ``padding="same"`` (for
odd kernels at stride 1 the same as PyTorch's ``padding=k // 2``) and no bias, and is
followed by BatchNorm (epsilon 1e-5, Keras momentum 0.9 = PyTorch momentum 0.1) and ReLU.

Layer names carry the PyTorch group as a prefix (``stem_conv``, ``block1_conv2``,
``block2_bn1``, ``head_conv``, ``classifier``), so ``unfreeze_top(model, from_layer="block2_conv1")``
and a PyTorch ``unfreeze(model, from_group="block2")`` mean the same thing, and
:func:`torch_state_dict_to_keras` can move trained weights across.
"""
from __future__ import annotations

from collections import OrderedDict

import numpy as np

from course_utils.keras._backend import keras

__all__ = ["SmallCNN", "SMALL_CNN_GROUPS", "torch_state_dict_to_keras"]

BN_EPS = 1e-5
BN_MOMENTUM = 0.9  # Keras: weight of the running value (PyTorch momentum 0.1)

#: group -> ((Keras layer prefix, PyTorch module path, out channels, kernel), ...); input to output
SMALL_CNN_GROUPS = OrderedDict([
    ("stem", (("stem", "stem", 32, 3),)),
    ("block1", (("block1_1", "block1.0", 32, 3), ("block1_2", "block1.1", 32, 3))),
    ("block2", (("block2_1", "block2.0", 64, 3), ("block2_2", "block2.1", 64, 3))),
    ("head", (("head", "head.0", 256, 1),)),
])


def _names(prefix: str) -> tuple[str, str, str]:
    """("block1_1") -> ("block1_conv1", "block1_bn1", "block1_relu1"); ("stem") -> stem_conv..."""
    if "_" in prefix:
        group, i = prefix.split("_")
        return f"{group}_conv{i}", f"{group}_bn{i}", f"{group}_relu{i}"
    return f"{prefix}_conv", f"{prefix}_bn", f"{prefix}_relu"


def _initializers(init: str, bias_fan_in: int):
    """(kernel, bias) initialisers. ``"keras"``: Keras's defaults (Glorot-uniform kernels,
    zero biases). ``"torch"``: PyTorch's defaults for ``Conv2d``/``Linear``, uniform in
    +-1/sqrt(fan_in) for kernels (``kaiming_uniform_(a=sqrt(5))``) and biases (of a layer
    with ``bias_fan_in`` inputs), so both frameworks also start from the same distribution,
    not only the same architecture."""
    if init == "keras":
        return "glorot_uniform", "zeros"
    if init == "torch":
        bound = 1.0 / bias_fan_in ** 0.5
        return (keras.initializers.VarianceScaling(1.0 / 3.0, mode="fan_in", distribution="uniform"),
                keras.initializers.RandomUniform(-bound, bound))
    raise ValueError(f"init must be 'keras' or 'torch', got {init!r}")


def SmallCNN(input_shape: tuple = (28, 28, 1), num_classes: int = 10, dropout: float = 0.3,
             include_top: bool = True, init: str = "keras", name: str = "small_cnn") -> keras.Model:
    """Build the small CNN (93,930 trainable parameters for 28x28x1 and 10 classes, as in
    PyTorch; ``count_params`` also counts the 960 BatchNorm moving statistics).

    ``include_top=False`` stops after the global average pool (the 256-d features).
    ``init``: ``"keras"`` (Keras's default initialisers) or ``"torch"`` (PyTorch's)."""
    if num_classes < 1:
        raise ValueError(f"SmallCNN: num_classes must be >= 1, got {num_classes}")
    # the classifier's fan-in is the last convolution's width (256)
    kernel_init, bias_init = _initializers(init, list(SMALL_CNN_GROUPS.values())[-1][-1][2])
    inputs = keras.Input(shape=tuple(input_shape), name="input_layer")
    x = inputs
    for group, convs in SMALL_CNN_GROUPS.items():
        for prefix, _torch, out_ch, kernel in convs:
            conv, bn, act = _names(prefix)
            x = keras.layers.Conv2D(out_ch, kernel, padding="same", use_bias=False, name=conv,
                                    kernel_initializer=kernel_init)(x)
            x = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPS, name=bn)(x)
            x = keras.layers.ReLU(name=act)(x)
        if group in ("block1", "block2"):
            x = keras.layers.MaxPooling2D(2, name=f"{group}_pool")(x)
    x = keras.layers.GlobalAveragePooling2D(name="head_pool")(x)
    if include_top:
        x = keras.layers.Dropout(dropout, name="dropout")(x)
        x = keras.layers.Dense(num_classes, name="classifier", kernel_initializer=kernel_init,
                               bias_initializer=bias_init)(x)
    return keras.Model(inputs, x, name=name)


def torch_state_dict_to_keras(state_dict) -> "OrderedDict[str, list[np.ndarray]]":
    """A PyTorch ``SmallCNN`` state dict -> ``{keras layer name: arrays for set_weights}``
    (conv (out, in, kh, kw) -> (kh, kw, in, out); BN weight, bias, running mean, running
    var -> gamma, beta, moving mean, moving variance; linear transposed)."""
    sd = {k: (v.detach().cpu().numpy() if hasattr(v, "detach") else np.asarray(v))
          for k, v in state_dict.items()}
    out: OrderedDict[str, list[np.ndarray]] = OrderedDict()
    try:
        for convs in SMALL_CNN_GROUPS.values():
            for prefix, path, _c, _k in convs:
                conv, bn, _act = _names(prefix)
                out[conv] = [sd[f"{path}.conv.weight"].transpose(2, 3, 1, 0)]
                out[bn] = [sd[f"{path}.bn.{n}"] for n in ("weight", "bias", "running_mean", "running_var")]
        if "classifier.weight" in sd:
            out["classifier"] = [sd["classifier.weight"].T, sd["classifier.bias"]]
    except KeyError as exc:
        raise KeyError(f"the state dict has no tensor {exc.args[0]!r}: is it a "
                       "course_utils.models SmallCNN state dict?") from None
    return OrderedDict((k, [np.ascontiguousarray(a, dtype=np.float32) for a in v]) for k, v in out.items())
