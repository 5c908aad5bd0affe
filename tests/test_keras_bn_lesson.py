"""The BatchNorm lesson of notebook 04 (section 7) and assignment A4 (Part 4), pinned.

In Keras 3, ``fit`` overrides the ``training=False`` that the Keras guide's snippet
``x = base(x, training=False)`` records for a nested base (keras-team/keras#20285), so once
part of the base is unfrozen its BatchNorm moving statistics drift. The course teaches two
fixes: keep the BatchNorm layers ``trainable=False`` (``unfreeze_top(...,
freeze_batchnorm=True)``, A4's rule), or run the base through ``CallWithTraining`` (what
``build_transfer_model`` does). If ``test_the_guides_snippet_lets_fit_move_the_statistics``
starts failing, Keras has changed: rewrite notebook 04 sections 3 and 7, its Summary and
answers, and A4 Part 4 together.
"""
from __future__ import annotations

import numpy as np
import pytest

ck = pytest.importorskip("course_utils.keras")
keras = ck.keras

SHAPE = (8, 8, 1)


def _tiny_base():
    """Conv+BN, Conv+BN, pooling: the smallest base with a frozen and an unfrozen BatchNorm."""
    inputs = keras.Input(SHAPE)
    x = inputs
    for i in (1, 2):
        x = keras.layers.Conv2D(4, 3, padding="same", name=f"conv{i}")(x)
        x = keras.layers.BatchNormalization(name=f"bn{i}")(x)
        x = keras.layers.ReLU(name=f"relu{i}")(x)
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D(name="pool")(x), name="base")


def _fine_tune(how: str):
    """Build the transfer model ``how`` says, unfreeze the base's top block (conv2, bn2, relu2,
    pool), fit one epoch with Keras's own ``model.fit``; return the base's weights before and
    after, by name."""
    keras.utils.set_random_seed(0)
    base = _tiny_base()
    base.trainable = False
    inputs = keras.Input(SHAPE)
    if how == "wrapper":
        h = ck.CallWithTraining(base, training=False)(inputs)
    else:
        h = base(inputs, training=False)            # the Keras guide's snippet, literally
    model = keras.Model(inputs, keras.layers.Dense(2, name="classifier")(h))
    ck.compile_model(model, lr=1e-2)
    ck.unfreeze_top(model, n_layers=4, lr=1e-2, freeze_batchnorm=how == "freeze_batchnorm")
    assert [layer.trainable for layer in base.layers[1:4]] == [False] * 3   # conv1, bn1, relu1
    assert base.get_layer("conv2").trainable
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(16, *SHAPE)) * 3 + 2).astype(np.float32)   # batch statistics far from 0/1
    y = np.arange(16) % 2

    def weights():
        return {w.path: np.array(w.numpy()) for w in base.weights}

    before = weights()
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    return before, weights()


def _changed(before, after, kind):
    return sorted(p for p in before if p.endswith(kind) and not np.array_equal(before[p], after[p]))


def test_the_guides_snippet_lets_fit_move_the_statistics():
    before, after = _fine_tune("plain")
    assert _changed(before, after, "moving_mean") == ["bn2/moving_mean"]
    assert _changed(before, after, "moving_variance") == ["bn2/moving_variance"]


@pytest.mark.parametrize("how", ["freeze_batchnorm", "wrapper"])
def test_each_fix_keeps_the_statistics_bit_identical(how):
    before, after = _fine_tune(how)
    assert _changed(before, after, "moving_mean") == [] == _changed(before, after, "moving_variance")
    assert _changed(before, after, "kernel") == ["conv2/kernel"]   # fine-tuning did happen
    # what differs between the fixes: a frozen BatchNorm keeps gamma/beta too; inside the
    # wrapper an unfrozen BatchNorm trains gamma/beta with its statistics held still
    expected = [] if how == "freeze_batchnorm" else ["bn2/gamma"]
    assert _changed(before, after, "gamma") == expected
