"""Unit tests of the Keras checkers on a tiny model: a base (conv, BN, conv, BN) inside a
functional model with a Dense head, the layout of the course's Keras fine-tuning."""
from __future__ import annotations

import numpy as np
import pytest

# via course_utils.keras: it loads Triton before TensorFlow (the other order segfaults once
# PyTorch creates an optimizer in the same process)
keras = pytest.importorskip("course_utils.keras").keras

from course_utils.grading import (check_keras_bn_inference, check_keras_compiled,  # noqa: E402
                                  check_keras_train_step, check_keras_trainable)

L = keras.layers


def build():
    keras.utils.set_random_seed(0)
    base = keras.Sequential([L.Input((8, 8, 1)), L.Conv2D(4, 3, name="c1"), L.BatchNormalization(name="bn1"),
                             L.ReLU(name="r1"), L.Conv2D(4, 3, name="c2"), L.BatchNormalization(name="bn2"),
                             L.GlobalAveragePooling2D(name="gap")], name="base")
    base.trainable = False
    inp = keras.Input((8, 8, 1))
    out = L.Dense(3, name="head")(base(inp, training=False))
    model = keras.Model(inp, out)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    return base, model


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    return rng.random((8, 8, 8, 1), dtype=np.float32), rng.integers(0, 3, 8)


def unfreeze_top_conv(base, model, lr=1e-5):
    base.trainable = True
    for layer in base.layers:
        layer.trainable = layer.name == "c2"
    model.compile(optimizer=keras.optimizers.Adam(lr), loss="sparse_categorical_crossentropy")


def test_trainable_layers_pass_and_fail_with_layer_names(batch):
    base, model = build()
    check_keras_trainable(model, ["head"])
    with pytest.raises(AssertionError, match=r"1 layer should be trainable but is frozen: c2"):
        check_keras_trainable(model, ["head", "c2"])
    unfreeze_top_conv(base, model)
    check_keras_trainable(model, ["head", "c2"])
    with pytest.raises(AssertionError, match=r"1 layer should be frozen but is trainable: c2"):
        check_keras_trainable(model, ["head"])
    base.get_layer("bn2").trainable = True
    with pytest.raises(AssertionError, match=r"1 BatchNormalization layer is trainable: bn2; keep Batch"):
        check_keras_trainable(model, ["head", "c2"])
    check_keras_trainable(model, ["head", "c2"], bn="any")
    base.trainable = False
    base.get_layer("bn1").trainable = True  # own flag on inside a frozen base: still trains its stats
    with pytest.raises(AssertionError, match=r"1 BatchNormalization layer is trainable: bn1"):
        check_keras_trainable(model, ["head"])
    with pytest.raises(AssertionError, match="has no layer with weights named r1"):
        check_keras_trainable(model, ["r1"])
    with pytest.raises(AssertionError, match="expected a Keras model or layer, got NoneType"):
        check_keras_trainable(None, ["head"])


def test_bn_inference_detects_training_false_being_overridden(batch):
    x, _ = batch
    base, model = build()
    check_keras_bn_inference(model, x)
    base.trainable = True  # BN trainable again: Keras 3 fit() overrides base(x, training=False)
    before = base.get_layer("bn1").moving_mean.numpy()
    with pytest.raises(AssertionError, match=r"2 BatchNormalization layers updated their moving statistics "
                                             r"\(bn1, bn2\)"):
        check_keras_bn_inference(model, x)
    np.testing.assert_array_equal(before, base.get_layer("bn1").moving_mean.numpy())
    for name in ("bn1", "bn2"):
        base.get_layer(name).trainable = False
    check_keras_bn_inference(model, x)


def test_compiled_checks_learning_rate_and_stale_optimizer(batch):
    x, y = batch
    base, model = build()
    check_keras_compiled(model, learning_rate=1e-3)
    with pytest.raises(AssertionError, match=r"learning rate 0.001, expected 1e-05 \(fine-tuning needs"):
        check_keras_compiled(model, learning_rate=1e-5)
    model.train_on_batch(x, y)  # builds the optimizer for the head only
    base.trainable = True
    for name in ("bn1", "bn2"):
        base.get_layer(name).trainable = False
    with pytest.raises(AssertionError, match=r"optimizer was built for an older set of trainable weights and "
                                             r"does not know 4 newly trainable variables"):
        check_keras_compiled(model)
    with pytest.raises(AssertionError, match="call model.compile\\(...\\) again after changing trainable"):
        check_keras_train_step(model, x, y)
    fresh = keras.Model(model.inputs, model.outputs)
    with pytest.raises(AssertionError, match="is not compiled"):
        check_keras_compiled(fresh)


def test_train_step_updates_only_trainable_weights_and_restores_them(batch):
    x, y = batch
    base, model = build()
    unfreeze_top_conv(base, model)
    before = [w.numpy() for w in model.weights]
    check_keras_train_step(model, x, y)
    for w, b in zip(model.weights, before):
        np.testing.assert_array_equal(w.numpy(), b)
    base.get_layer("bn2").trainable = True
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    with pytest.raises(AssertionError, match=r"changed 2 non-trainable weights \(base/bn2/moving_mean, "
                                             r"base/bn2/moving_variance\)"):
        check_keras_train_step(model, x, y)
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="sparse_categorical_crossentropy")
    base.get_layer("bn2").trainable = False
    with pytest.raises(AssertionError, match="changed no trainable weight"):
        check_keras_train_step(model, x, y)
