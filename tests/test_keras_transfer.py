"""Transfer-learning helpers in Keras: the guide's functional layout, the layer table,
unfreezing with recompilation (and a loud failure without it), and the BatchNorm rule."""
from __future__ import annotations

import numpy as np
import pytest

ck = pytest.importorskip("course_utils.keras")
keras = ck.keras


@pytest.fixture()
def transfer_model():
    ck.seed_everything(0)
    base = ck.create_model("small_cnn", include_top=False)
    model = ck.build_transfer_model(base, 3, dropout=0.2)
    ck.compile_model(model, lr=1e-3)
    return model


@pytest.fixture(scope="module")
def tiny_data():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(16, 28, 28), dtype=np.uint8), rng.integers(0, 3, size=16)


def test_transfer_model_layout_and_layer_table(transfer_model):
    base = ck.get_base(transfer_model)
    assert base.name == "small_cnn" and not base.trainable
    table = ck.layer_table(transfer_model)
    assert list(table.columns) == ["index", "name", "type", "trainable", "parameters",
                                   "trainable_parameters"]
    assert table["name"].tolist() == ["image", "small_cnn", "dropout", "classifier"]
    assert table["trainable"].tolist() == [True, False, True, True]
    assert table.set_index("name").loc["small_cnn", "parameters"] == base.count_params()
    assert table.set_index("name").loc["classifier", "trainable_parameters"] == 256 * 3 + 3
    assert table["trainable_parameters"].sum() == sum(
        int(np.prod(w.shape)) for w in transfer_model.trainable_weights)

    nested = ck.layer_table(transfer_model, nested=True).set_index("name")
    assert nested.loc["small_cnn/stem_conv", "index"] == 1
    assert nested.loc["small_cnn/stem_conv", "parameters"] == 3 * 3 * 1 * 32
    assert not nested.loc["small_cnn/block2_conv1", "trainable"]


def test_unfreeze_top_selects_layers_and_recompiles(transfer_model, tiny_data, capsys):
    base = ck.get_base(transfer_model)
    optimizer_before = transfer_model.optimizer
    ck.unfreeze_top(transfer_model, from_layer="block2", lr=1e-4)  # a group name
    names = [layer.name for layer in base.layers]
    cut = names.index("block2_conv1")
    assert [layer.trainable for layer in base.layers] == [i >= cut for i in range(len(names))]
    assert transfer_model.compiled and transfer_model.optimizer is not optimizer_before
    assert float(transfer_model.optimizer.learning_rate.numpy()) == pytest.approx(1e-4)
    table = ck.layer_table(transfer_model, nested=True).set_index("name")
    assert table.loc["small_cnn/block2_conv1", "trainable"]
    assert not table.loc["small_cnn/block1_conv2", "trainable"]

    frozen = base.get_layer("block1_conv2").kernel.numpy().copy()
    tuned = base.get_layer("block2_conv2").kernel.numpy().copy()
    stats = base.get_layer("block2_bn2").moving_variance.numpy().copy()
    x, y = tiny_data
    ck.fit(transfer_model, ck.TFLoader(x, y, 8, shuffle=True, seed=0), epochs=1, progress=True)
    assert "fit (keras)" in capsys.readouterr().err  # the tqdm bar
    np.testing.assert_array_equal(base.get_layer("block1_conv2").kernel.numpy(), frozen)
    assert not np.array_equal(base.get_layer("block2_conv2").kernel.numpy(), tuned)
    np.testing.assert_array_equal(base.get_layer("block2_bn2").moving_variance.numpy(), stats)

    ck.unfreeze_top(transfer_model, n_layers=3)
    assert [layer.trainable for layer in base.layers][-4:] == [False, True, True, True]
    ck.freeze_base(transfer_model)
    assert not any(layer.trainable for layer in base.layers)
    assert len(transfer_model.trainable_weights) == 2  # the classifier's kernel and bias


def test_unfreeze_top_names_what_is_wrong(transfer_model):
    with pytest.raises(ValueError, match="no layer 'block2_conv'; did you mean .*'block2_conv1'"):
        ck.unfreeze_top(transfer_model, from_layer="block2_conv")
    with pytest.raises(ValueError, match="exactly one of n_layers"):
        ck.unfreeze_top(transfer_model, n_layers=2, from_layer="block2")
    with pytest.raises(ValueError, match="n_layers=99.*has 22 layers, pass 1..22"):
        ck.unfreeze_top(transfer_model, n_layers=99)


def test_training_without_recompiling_fails_loudly(transfer_model, tiny_data):
    x, y = tiny_data
    loader = ck.TFLoader(x, y, 8)
    ck.unfreeze_top(transfer_model, from_layer="block2_conv1", recompile=False)
    with pytest.raises(ck.RecompileNeeded, match=r"unfreeze_top\(from_layer='block2_conv1'\).*compile"):
        ck.fit(transfer_model, loader, epochs=1, progress=False)
    with pytest.raises(ValueError, match="compile"):
        transfer_model.fit(loader.dataset(), epochs=1, verbose=0)
    ck.compile_model(transfer_model, lr=1e-5)
    ck.fit(transfer_model, loader, epochs=1, progress=False)

    # a trainable flag flipped by hand after compile() is caught as well
    ck.get_base(transfer_model).get_layer("stem_conv").trainable = True
    with pytest.raises(ck.RecompileNeeded, match="stem_conv"):
        ck.fit(transfer_model, loader, epochs=1, progress=False)


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # inside Keras
def test_transfer_model_round_trips_through_keras_save(transfer_model, tmp_path, tiny_data):
    x = tiny_data[0][:4, ..., None].astype(np.float32) / 255
    path = tmp_path / "model.keras"
    transfer_model.save(path)
    loaded = keras.models.load_model(path, compile=False)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), transfer_model.predict(x, verbose=0),
                               atol=1e-6)
    assert isinstance(loaded.get_layer("small_cnn"), ck.CallWithTraining)
    assert loaded.get_layer("small_cnn").fixed_training is False


def test_copy_weights_keeps_the_new_head():
    ck.seed_everything(0)
    source = ck.create_model("small_cnn", num_classes=5)
    target = ck.create_model("small_cnn", num_classes=5)
    head = target.get_layer("classifier").kernel.numpy().copy()
    copied = ck.copy_weights(source, target)
    assert "stem_conv" in copied and "classifier" not in copied
    np.testing.assert_array_equal(target.get_layer("block2_conv2").kernel.numpy(),
                                  source.get_layer("block2_conv2").kernel.numpy())
    np.testing.assert_array_equal(target.get_layer("classifier").kernel.numpy(), head)
    with pytest.raises(ValueError, match="classifier.*exclude"):
        ck.copy_weights(source, ck.create_model("small_cnn", num_classes=3), exclude=())


def _tiny_vgg(size):
    """A VGG-style network in miniature: convolutions, then Flatten + Dense (VGG16's top)."""
    return keras.Sequential([keras.Input((size, size, 3)),
                             keras.layers.Conv2D(8, 3, padding="same", activation="relu"),
                             keras.layers.MaxPooling2D(), keras.layers.Flatten(),
                             keras.layers.Dense(10)], name="tiny_vgg")


def test_a_global_pooling_top_takes_other_sizes_a_flatten_top_does_not():
    """Notebook 04 section 1: Lite0 *with* its ImageNet top runs at 224 and at 128 pixels
    (global average pooling gives the Dense layer 1280 numbers at any size); a Flatten-headed
    network built for 32 pixels refuses 64."""
    lite = ck.create_model("efficientnet_lite0", weights="imagenet")
    assert lite.input_shape == (None, 224, 224, 3) and lite.layers[-1].name == "predictions"
    for size in (224, 128):
        x = np.full((1, size, size, 3), 0.5, np.float32)
        assert lite.predict(x, verbose=0).shape == (1, 1000)
    vgg = _tiny_vgg(32)
    assert tuple(vgg(np.zeros((1, 32, 32, 3), np.float32)).shape) == (1, 10)
    with pytest.raises(ValueError, match="expected axis -1 of input shape to have value 2048"):
        vgg(np.zeros((1, 64, 64, 3), np.float32))
