"""The model zoo: registry, EfficientNet-Lite0's embedded ImageNet weights, the small CNN,
torchvision models (offline error and loading from the hub cache, no download), groups."""
from __future__ import annotations

import io
import pickle
import urllib.error

import numpy as np
import pytest
import torch
from torch import nn

from course_utils import models as M
from course_utils.models.efficientnet_lite import lite0_weights_path
from course_utils.models.small_cnn import SMALL_CNN_LAYOUT

CAT_CLASSES = {"tabby", "tiger cat", "Egyptian cat", "Persian cat", "Siamese cat", "lynx"}
TORCHVISION = ["resnet18", "vgg16", "mobilenet_v2"]


@pytest.fixture(scope="module")
def lite0():
    return M.create_model("efficientnet_lite0", weights="imagenet").eval()


def test_registry_lists_the_course_models():
    assert M.list_models() == ["efficientnet_lite0", "mobilenet_v2", "resnet18", "small_cnn",
                               "vgg16"]
    with pytest.raises(ValueError, match="unknown model 'resnet50'.*small_cnn"):
        M.create_model("resnet50")
    with pytest.raises(ValueError, match="no weights 'IMAGENET1K_V2'.*'IMAGENET1K_V1'.*'DEFAULT'"):
        M.create_model("efficientnet_lite0", weights="IMAGENET1K_V2")


def test_register_refuses_a_duplicate_name():
    from course_utils.models import registry

    spec = M.get_spec("small_cnn")
    with pytest.raises(ValueError, match="'small_cnn' is already registered"):
        registry.register(spec)
    assert registry.REGISTRY["small_cnn"] is spec


def test_lite0_classifies_chelsea_as_a_cat_and_coffee_as_espresso(lite0):
    skdata = pytest.importorskip("skimage.data")
    weights = lite0.course_weights
    tf = weights.transforms()
    x = torch.cat([tf(skdata.chelsea()), tf(skdata.coffee())])
    assert x.shape == (2, 3, 224, 224)
    with torch.inference_mode():
        top = M.topk_labels(lite0(x), k=3, categories=weights.meta["categories"])
    assert top[0][0][0] in CAT_CLASSES, top[0]
    assert top[1][0][0] == "espresso", top[1]
    assert top[1][0][1] > 0.3  # confidently, not by a hair


def test_lite0_loads_all_247_tensors_of_the_embedded_file(lite0):
    state = torch.load(lite0_weights_path(), map_location="cpu", weights_only=True)
    tensors = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    assert len(tensors) == 247
    own = lite0.state_dict()
    assert set(own) == set(state)  # strict: nothing missing, nothing extra
    for k, v in tensors.items():
        assert torch.equal(own[k], v), k
    assert sum(p.numel() for p in lite0.parameters()) == lite0.course_weights.meta["num_params"]


def test_lite0_new_head_keeps_the_backbone():
    model = M.create_model("efficientnet_lite0", weights="imagenet", num_classes=5)
    state = torch.load(lite0_weights_path(), map_location="cpu", weights_only=True)
    assert model._fc.out_features == 5
    assert torch.equal(model._blocks[15]._project_conv.weight, state["_blocks.15._project_conv.weight"])


@pytest.mark.parametrize("name", ["efficientnet_lite0", "small_cnn", *TORCHVISION])
def test_layer_groups_cover_every_parameter_exactly_once(name):
    with torch.device("meta"):  # VGG16's 138 M parameters cost nothing here
        model = M.create_model(name)
    groups = M.layer_groups(model)
    assert list(groups)[-1] == "classifier" and "head" in groups
    owner: dict[int, str] = {}
    for group, modules in groups.items():
        ids = {id(p) for m in modules for p in m.parameters()}
        for i in ids:
            assert i not in owner, f"a parameter is in both {owner[i]!r} and {group!r}"
            owner[i] = group
    named = dict(model.named_parameters())
    missing = [n for n, p in named.items() if id(p) not in owner]
    assert not missing
    # the classifier group holds the head that replace_head swaps
    head = model.get_submodule(M.get_spec(model).head)
    assert any(head is m or any(head is s for s in m.modules()) for m in groups["classifier"])


@pytest.mark.parametrize("name", ["efficientnet_lite0", "small_cnn", *TORCHVISION])
def test_layer_groups_run_from_input_to_output(name):
    with torch.device("meta"):
        model = M.create_model(name).eval()
        order: list[str] = []
        for group, modules in M.layer_groups(model).items():
            modules[0].register_forward_pre_hook(lambda m, a, g=group: order.append(g))
        out = model(torch.zeros(1, M.get_spec(name).input_size[0], 64, 64))
    assert order == list(M.layer_groups(model))
    assert out.shape == (1, M.get_spec(name).default_num_classes)


def test_small_cnn_is_the_documented_architecture():
    torch.manual_seed(0)
    model = M.create_model("small_cnn")
    assert sum(p.numel() for p in model.parameters()) == 93_930
    assert list(M.layer_groups(model)) == list(SMALL_CNN_LAYOUT)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size[0]) for c in convs] == [
        (1, 32, 3), (32, 32, 3), (32, 32, 3), (32, 64, 3), (64, 64, 3), (64, 256, 1)]
    assert all(c.bias is None and c.stride == (1, 1) and c.padding == (c.kernel_size[0] // 2,) * 2
               for c in convs)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == 6 and all(b.eps == 1e-5 and b.momentum == 0.1 for b in bns)
    x = torch.randn(4, 1, 28, 28)
    assert model(x).shape == (4, 10)
    assert model.forward_features(x).shape == (4, 256)
    rgb = M.create_model("small_cnn", in_channels=3, num_classes=5)
    assert rgb(torch.randn(2, 3, 28, 28)).shape == (2, 5)
    assert rgb(torch.randn(2, 3, 40, 40)).shape == (2, 5)  # global pooling: any size


@pytest.mark.parametrize("name", TORCHVISION)
def test_torchvision_weights_offline_error_names_url_cache_and_alternative(
        name, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def no_network(url, dst, *args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    weights = M.get_spec(name).weights["IMAGENET1K_V1"]
    with pytest.raises(M.WeightsUnavailableError) as err:
        M.create_model(name, weights="IMAGENET1K_V1")
    msg = str(err.value)
    url = weights.meta["url"]
    assert repr(name) in msg and url in msg
    assert str(tmp_path / "hub" / "checkpoints" / url.rsplit("/", 1)[1]) in msg
    assert 'create_model("efficientnet_lite0", weights="imagenet")' in msg
    assert isinstance(err.value.__cause__, urllib.error.URLError)


def test_torchvision_weights_load_from_the_hub_cache_without_network(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file",
                        lambda *a, **k: pytest.fail("must not download: the file is cached"))
    torch.manual_seed(1)
    source = M.create_model("mobilenet_v2")  # stands in for the real ImageNet file
    weights = M.get_spec("mobilenet_v2").weights["IMAGENET1K_V1"]
    path = M.hub_checkpoint_path(weights.meta["url"])
    assert path == tmp_path / "hub" / "checkpoints" / "mobilenet_v2-b0353104.pth"
    path.parent.mkdir(parents=True)
    torch.save(source.state_dict(), path)

    torch.manual_seed(2)
    model = M.create_model("mobilenet_v2", weights="IMAGENET1K_V1", num_classes=7)
    assert model.course_weights is weights
    assert model.classifier[1].out_features == 7
    for k, v in source.state_dict().items():
        if not k.startswith("classifier"):
            assert torch.equal(model.state_dict()[k], v), k

    full = M.create_model("mobilenet_v2", weights="IMAGENET1K_V1")
    assert torch.equal(full.classifier[1].weight, source.classifier[1].weight)
    assert len(weights.meta["categories"]) == 1000
    tf = weights.transforms()
    assert isinstance(tf, M.EvalTransform) and tf.size == 224 and tf.interpolation == "bilinear"
    assert tf(np.zeros((300, 400, 3), np.uint8)).shape == (1, 3, 224, 224)


def test_corrupt_cached_weights_say_delete_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    path = M.hub_checkpoint_path(M.get_spec("resnet18").weights["IMAGENET1K_V1"].meta["url"])
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(M.WeightsUnavailableError, match="delete it"):
        M.create_model("resnet18", weights="IMAGENET1K_V1")


def test_models_pickle_with_their_spec_and_weights(lite0):
    buf = io.BytesIO()
    torch.save(M.create_model("small_cnn"), buf)
    buf.seek(0)
    copy = torch.load(buf, weights_only=False)
    assert copy.course_spec is M.get_spec("small_cnn")
    w = lite0.course_weights
    assert pickle.loads(pickle.dumps(w)) is w
    assert pickle.loads(pickle.dumps(M.get_spec("resnet18"))) is M.get_spec("resnet18")
