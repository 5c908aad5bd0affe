"""EfficientNet-Lite0 in Keras: the converted ImageNet weights give the PyTorch logits, the
cache is written once and reused, and fine-tuning the top block with the base called with
``training=False`` leaves every BatchNorm statistic where ImageNet put it."""
from __future__ import annotations

import logging

import numpy as np
import pytest

ck = pytest.importorskip("course_utils.keras")
torch = pytest.importorskip("torch")

from course_utils.keras import efficientnet_lite as klite  # noqa: E402

CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO = 967


@pytest.fixture(scope="module")
def course_data(tmp_path_factory):
    """A private $COURSE_DATA for this module, so the conversion really runs here."""
    d = tmp_path_factory.mktemp("course_data")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("COURSE_DATA", str(d))
        yield d


@pytest.fixture(scope="module")
def keras_lite0(course_data):
    return ck.create_model("efficientnet_lite0", weights="imagenet")


def _bn_stats(model):
    return {f"{layer.name}/{w.name}": np.array(w.numpy())
            for layer in model.layers if isinstance(layer, ck.keras.layers.BatchNormalization)
            for w in (layer.moving_mean, layer.moving_variance)}


def test_logits_match_pytorch_on_photos_and_noise(keras_lite0):
    from skimage import data as skdata

    from course_utils.models import create_model as torch_create_model

    tmodel = torch_create_model("efficientnet_lite0", weights="imagenet").eval()
    transform = tmodel.course_weights.transforms()
    photos = torch.cat([transform(skdata.chelsea()), transform(skdata.coffee())])
    noise = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    x = torch.cat([photos, noise])
    with torch.no_grad():
        t_logits = tmodel(x).numpy()
    k_logits = np.asarray(keras_lite0(x.permute(0, 2, 3, 1).numpy(), training=False))

    assert k_logits.shape == (4, 1000)
    assert np.abs(k_logits - t_logits).max() < 1e-4
    assert int(k_logits[0].argmax()) in CAT_CLASSES
    assert int(k_logits[1].argmax()) == ESPRESSO
    # the keras preprocessing is the PyTorch normalisation, NHWC
    np.testing.assert_allclose(
        ck.preprocess_input("efficientnet_lite0", np.array([[[[0, 255, 127]]]], np.uint8)),
        [[[[-1.0, 1.0, 127 / 127.5 - 1]]]], atol=1e-6)


def test_cache_is_written_atomically_and_reused(keras_lite0, course_data, monkeypatch):
    path = klite.imagenet_weights_path()
    assert path == course_data / "keras" / "efficientnet_lite0_imagenet.weights.h5"
    assert path.exists() and not list(path.parent.glob(".tmp-*"))

    def no_conversion():
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr("course_utils.keras.convert.lite0_keras_weights_from_torch", no_conversion)
    base = ck.create_model("efficientnet_lite0", weights="imagenet", include_top=False,
                           input_shape=(64, 64, 3))
    assert base.output_shape == (None, 2, 2, 1280)
    for name in ("stem_conv", "block6d_project_bn", "top_bn"):
        for a, b in zip(base.get_layer(name).get_weights(), keras_lite0.get_layer(name).get_weights()):
            np.testing.assert_array_equal(a, b)


def test_damaged_cache_is_converted_again(keras_lite0, course_data, caplog):
    path = klite.imagenet_weights_path()
    good = path.read_bytes()
    path.write_bytes(b"not an HDF5 file")
    with caplog.at_level(logging.WARNING, logger="course_utils.keras.efficientnet_lite"):
        model = ck.create_model("efficientnet_lite0", weights="imagenet", num_classes=7)
    assert "converting them again" in caplog.text
    assert path.stat().st_size == len(good)
    # a new 7-class head on the pretrained body
    assert model.get_layer("predictions").kernel.shape == (1280, 7)
    np.testing.assert_array_equal(model.get_layer("top_conv").get_weights()[0],
                                  keras_lite0.get_layer("top_conv").get_weights()[0])


def test_layer_groups_have_the_pytorch_names_over_keras_layers(keras_lite0):
    groups = {g: [layer.name for layer in ls] for g, ls in ck.layer_groups(keras_lite0).items()}
    assert list(groups) == ["stem", "stage1", "stage2", "stage3", "stage4", "stage5", "stage6",
                            "stage7", "head", "classifier"]
    assert groups["stage6"][0] == "block6a_expand_conv"
    assert groups["stage6"][-1] == "block6d_add"
    assert groups["classifier"] == ["avg_pool", "top_dropout", "predictions"]
    n_blocks = len({name[:7] for g in range(1, 8) for name in groups[f"stage{g}"]})
    assert n_blocks == 16
    assert keras_lite0.count_params() - sum(
        int(np.prod(w.shape)) for w in keras_lite0.non_trainable_weights) == 4_652_008


@pytest.mark.parametrize("base_training", [False, True])
def test_unfreezing_the_top_block_keeps_bn_statistics_only_with_training_false(
        course_data, keras_lite0, base_training):
    ck.seed_everything(0)
    base = ck.create_model("efficientnet_lite0", weights="imagenet", include_top=False,
                           input_shape=(32, 32, 3))
    model = ck.build_transfer_model(base, 3, base_training=base_training)
    ck.unfreeze_top(model, from_layer="stage7", lr=1e-3)
    trainable_bn = {layer.name for layer in base.layers
                    if isinstance(layer, ck.keras.layers.BatchNormalization) and layer.trainable}
    assert trainable_bn == {"block7a_expand_bn", "block7a_bn", "block7a_project_bn", "top_bn"}
    before = _bn_stats(base)
    gamma = base.get_layer("top_bn").gamma.numpy().copy()

    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, size=(16, 32, 32, 3)).astype(np.float32)
    y = rng.integers(0, 3, size=16)
    ck.fit(model, ck.TFLoader(x, y, 8, shuffle=True, seed=0), epochs=1, progress=False)

    after = _bn_stats(base)
    changed = {k.split("/")[0] for k in before if not np.array_equal(before[k], after[k])}
    assert not np.array_equal(gamma, base.get_layer("top_bn").gamma.numpy())  # it did train
    if base_training:
        # batch statistics flow into the unfrozen BN layers' moving averages; the frozen
        # ones are in inference mode (trainable=False) whatever the call says
        assert changed == trainable_bn
    else:
        assert changed == set()
