"""The Keras model zoo: same names as PyTorch, the small CNN is the PyTorch network layer
for layer, keras.applications build without downloading, and a failed download says what
to do. No test here touches the network."""
from __future__ import annotations

import numpy as np
import pytest

ck = pytest.importorskip("course_utils.keras")
torch = pytest.importorskip("torch")

from course_utils.keras import models as kmodels  # noqa: E402
from course_utils.keras.small_cnn import torch_state_dict_to_keras  # noqa: E402


def test_names_are_the_pytorch_registry_names():
    from course_utils.models import list_models as torch_models

    shared = {"small_cnn", "efficientnet_lite0", "vgg16", "mobilenet_v2"}
    assert shared <= set(ck.list_models())
    assert shared <= set(torch_models())
    assert "resnet50_v2" in ck.list_models()


def test_small_cnn_computes_the_pytorch_function():
    from course_utils.models import create_model as torch_create_model

    torch.manual_seed(0)
    tmodel = torch_create_model("small_cnn", num_classes=10).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics, so eval mode is really tested
        for m in tmodel.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    kmodel = ck.create_model("small_cnn", num_classes=10)
    for name, arrays in torch_state_dict_to_keras(tmodel.state_dict()).items():
        kmodel.get_layer(name).set_weights(arrays)

    x = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = tmodel(x).numpy()
    got = np.asarray(kmodel(x.permute(0, 2, 3, 1).numpy(), training=False))
    assert np.abs(got - expected).max() < 1e-4

    n_torch = sum(p.numel() for p in tmodel.parameters())
    n_keras = sum(int(np.prod(w.shape)) for w in kmodel.trainable_weights)
    assert n_torch == n_keras == 93_930
    assert list(ck.layer_groups(kmodel)) == ["stem", "block1", "block2", "head", "classifier"]

    # init="torch": PyTorch's default initialisation, uniform in +-1/sqrt(fan_in)
    ck.seed_everything(0)
    like_torch = ck.create_model("small_cnn", init="torch")
    bound = 1 / np.sqrt(3 * 3 * 32)
    kernel = like_torch.get_layer("block1_conv2").kernel.numpy()
    assert np.abs(kernel).max() <= bound and np.abs(kernel).max() > 0.9 * bound
    assert np.abs(like_torch.get_layer("classifier").bias.numpy()).max() > 0  # not zeros
    glorot = ck.create_model("small_cnn").get_layer("block1_conv2").kernel.numpy()
    assert np.abs(glorot).max() > bound  # Keras's default (Glorot) is wider


def test_keras_applications_build_without_weights_at_small_sizes():
    expected = {
        "vgg16": (512, [f"block{i}" for i in range(1, 6)]),
        "mobilenet_v2": (1280, ["stem"] + [f"stage{i}" for i in range(1, 8)] + ["head"]),
        "resnet50_v2": (2048, ["stem", "conv2", "conv3", "conv4", "conv5", "head"]),
    }
    for name, (channels, groups) in expected.items():
        base = ck.create_model(name, weights=None, include_top=False, input_shape=(32, 32, 3))
        assert base.output_shape[-1] == channels, name
        assert base.course_spec.name == name and base.course_weights is None
        assert list(ck.layer_groups(base)) == groups, name
    model = ck.create_model("mobilenet_v2", weights=None, num_classes=7, input_shape=(32, 32, 3))
    logits = np.asarray(model(np.zeros((2, 32, 32, 3), np.float32), training=False))
    assert logits.shape == (2, 7)
    assert not np.allclose(logits.sum(axis=1), 1.0)  # logits, not softmax probabilities


@pytest.mark.parametrize("name,keras_fn,shape", [
    ("vgg16", "VGG16", (32, 32, 3)),
    ("mobilenet_v2", "MobileNetV2", (96, 96, 3)),
    ("resnet50_v2", "ResNet50V2", (32, 32, 3)),
])
def test_offline_imagenet_weights_raise_an_actionable_error(monkeypatch, tmp_path, name, keras_fn, shape):
    from keras.src.utils import file_utils

    requested = []

    def offline(fname, origin=None, **kwargs):
        requested.append((fname, origin))
        raise Exception(f"URL fetch failure on {origin}: [Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(file_utils, "get_file", offline)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))
    with pytest.raises(ck.PretrainedWeightsUnavailable) as info:
        ck.create_model(name, weights="imagenet", include_top=False, input_shape=shape)
    fname, url = kmodels.keras_weights_url(name, include_top=False, input_shape=shape)
    msg = str(info.value)
    assert name in msg and url in msg and "efficientnet_lite0" in msg and "full" in msg
    assert str(tmp_path / "kh" / "models" / fname) in msg

    # the URL we name is the one Keras itself asks for
    requested.clear()
    with pytest.raises(Exception, match="URL fetch failure"):
        getattr(ck.keras.applications, keras_fn)(include_top=False, weights="imagenet",
                                                 input_shape=shape)
    assert requested[-1] == (fname, url)


def test_create_model_rejects_bad_arguments_by_name():
    with pytest.raises(ValueError, match="unknown Keras model 'resnet18'.*small_cnn"):
        ck.create_model("resnet18")
    with pytest.raises(ValueError, match="small_cnn.*no weights 'imagenet'"):
        ck.create_model("small_cnn", weights="imagenet")
    with pytest.raises(ValueError, match="num_classes must be >= 1"):
        ck.create_model("small_cnn", num_classes=0)
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['init'\]"):
        ck.create_model("vgg16", include_top=False, input_shape=(32, 32, 3), init="torch")
    with pytest.raises(ValueError, match="init must be 'keras' or 'torch'"):
        ck.create_model("small_cnn", init="jax")
    with pytest.raises(ValueError, match="not made by course_utils.keras.create_model"):
        ck.get_spec(ck.keras.Sequential([ck.keras.Input((2,)), ck.keras.layers.Dense(1)]))
