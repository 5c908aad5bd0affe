"""The fine-tuning toolkit: replace_head, freeze/unfreeze (BatchNorm stays in eval mode),
summary, param_groups, load_matching_state_dict."""
from __future__ import annotations

import copy
import io

import pytest
import torch
import torch.distributed as dist
from torch import nn

from course_utils import models as M


def small(seed=0, **kw):
    torch.manual_seed(seed)
    return M.create_model("small_cnn", **kw)


def bn_state(model):
    return {k: v.clone() for k, v in model.state_dict().items()
            if "running" in k or "num_batches" in k}


def train_step(model, steps=2, lr=0.1, seed=0):
    """A real training step: model.train(), forward, backward, SGD on the trainable params."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(M.param_groups(model, lr=lr, head_lr_mult=1.0), lr=lr)
    for _ in range(steps):
        model.train()
        x = torch.randn(8, 1, 28, 28, generator=g) * 3 + 1  # far from the running stats
        y = torch.randint(0, 10, (8,), generator=g)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()


def assert_frozen_then_trained(model, before_params, before_bn, frozen=("stem", "block1", "block2")):
    after = model.state_dict()
    for k, v in before_params.items():
        group = k.split(".")[0]
        if group in frozen:
            assert torch.equal(after[k], v), f"frozen tensor {k} changed"
    # the trainable part did learn, and its BN statistics did move
    assert not torch.equal(after["classifier.weight"], before_params["classifier.weight"])
    assert not torch.equal(after["head.0.bn.running_mean"], before_bn["head.0.bn.running_mean"])


def test_freeze_default_leaves_only_the_classifier_trainable():
    model = M.freeze(small())
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable == ["classifier.weight", "classifier.bias"]
    assert M.frozen_groups(model) == ["stem", "block1", "block2", "head"]
    assert all(M.is_frozen_bn(m) for m in model.modules() if isinstance(m, nn.BatchNorm2d))


def test_frozen_batchnorm_statistics_and_weights_stay_bit_identical_in_train_mode():
    model = M.freeze(small(), upto="block2")
    params = {k: v.clone() for k, v in model.state_dict().items()}
    stats = bn_state(model)
    model.train()  # the trap: this would put every BN layer back into training mode
    assert not model.stem.bn.training and not model.block2[1].bn.training
    assert model.head[0].bn.training and model.training
    train_step(model)
    assert_frozen_then_trained(model, params, stats)
    assert isinstance(model.stem.bn, nn.BatchNorm2d)  # still a BatchNorm to isinstance


def test_frozen_batchnorm_survives_ddp_train(tmp_path):
    if not dist.is_available():
        pytest.skip("torch.distributed not available")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        model = M.freeze(small(), upto="block2")
        params = {k: v.clone() for k, v in model.state_dict().items()}
        stats = bn_state(model)
        ddp = nn.parallel.DistributedDataParallel(model)
        ddp.train()
        assert not model.block1[0].bn.training
        g = torch.Generator().manual_seed(0)
        opt = torch.optim.SGD(M.param_groups(ddp, lr=0.1, head_lr_mult=1.0), lr=0.1)
        for _ in range(2):
            ddp.train()
            x = torch.randn(8, 1, 28, 28, generator=g) * 3 + 1
            loss = nn.functional.cross_entropy(ddp(x), torch.randint(0, 10, (8,), generator=g))
            opt.zero_grad()
            loss.backward()
            opt.step()
        assert_frozen_then_trained(model, params, stats)
    finally:
        dist.destroy_process_group()


def test_forward_hook_keeps_frozen_bn_in_eval_even_if_its_flag_is_forced():
    model = M.freeze(small(), upto="stem")
    stats = bn_state(model)
    model.train()
    model.stem.bn.training = True  # by hand, bypassing train(): the pre-hook still wins
    model(torch.randn(4, 1, 28, 28) + 2)
    assert torch.equal(model.stem.bn.running_mean, stats["stem.bn.running_mean"])
    assert torch.equal(model.stem.bn.num_batches_tracked, stats["stem.bn.num_batches_tracked"])
    assert not torch.equal(model.block1[0].bn.running_mean, stats["block1.0.bn.running_mean"])


def test_frozen_state_survives_deepcopy_and_pickling():
    model = M.freeze(small(), upto="block1")
    buf = io.BytesIO()
    torch.save(model, buf)
    buf.seek(0)
    for clone in (copy.deepcopy(model), torch.load(buf, weights_only=False)):
        stats = bn_state(clone)
        clone.train()
        clone(torch.randn(4, 1, 28, 28) + 2)
        assert torch.equal(clone.block1[1].bn.running_var, stats["block1.1.bn.running_var"])
        assert not clone.block1[1].bn.weight.requires_grad


def test_unfreeze_restores_training_mode_and_gradients():
    model = M.freeze(small())
    M.unfreeze(model, from_group="block2")
    assert M.frozen_groups(model) == ["stem", "block1"]
    model.train()
    assert model.block2[0].bn.training and type(model.block2[0].bn) is nn.BatchNorm2d
    assert not model.block1[0].bn.training
    M.unfreeze(model)
    assert M.frozen_groups(model) == []
    assert all(m.training for m in model.modules())
    stats = bn_state(model)
    model(torch.randn(4, 1, 28, 28) + 2)
    assert not torch.equal(model.stem.bn.running_mean, stats["stem.bn.running_mean"])


def test_freeze_names_the_groups_when_the_group_is_wrong():
    with pytest.raises(ValueError, match=r"upto='layer3'.*stem, block1, block2, head, classifier"):
        M.freeze(small(), upto="layer3")
    with pytest.raises(ValueError, match="not made by course_utils.models.create_model"):
        M.freeze(nn.Sequential(nn.Linear(2, 2)))


@pytest.mark.parametrize("name,attr", [("small_cnn", "classifier"), ("efficientnet_lite0", "_fc"),
                                       ("resnet18", "fc"), ("vgg16", "classifier.6"),
                                       ("mobilenet_v2", "classifier.1")])
def test_replace_head_swaps_the_declared_classifier(name, attr):
    with torch.device("meta"):
        model = M.freeze(M.create_model(name))
        old = model.get_submodule(attr)
        M.replace_head(model, 3)
    new = model.get_submodule(attr)
    assert new is not old and new.out_features == 3 and new.in_features == old.in_features
    assert new.weight.device.type == "meta"
    assert all(p.requires_grad for p in new.parameters())
    assert any(new is s for m in M.layer_groups(model)["classifier"] for s in m.modules())


def test_summary_counts_match_the_parameters():
    model = M.freeze(small(), upto="block1")
    s = M.summary(model)
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert (s.total_params, s.trainable_params) == (total, trainable)
    assert s.non_trainable_params == total - trainable
    assert s.frame["params"].sum() == total
    assert s.frame["trainable_params"].sum() == trainable
    assert s.buffers == sum(b.numel() for n, b in model.named_buffers() if "running" in n)
    row = s.frame.set_index("layer").loc["stem.bn"]
    assert (row["group"], row["trainable"], row["note"]) == ("stem", "no", "BN kept in eval")
    assert s.frame.set_index("layer").loc["block2.0.conv", "trainable"] == "yes"
    assert s.by_group().loc["block1", "trainable_params"] == 0
    text = str(s)
    assert "Total params: 93,930" in text and f"Trainable params: {trainable:,}" in text
    assert "<table" in s._repr_html_()
    # partly trainable layer, and a model without a spec
    plain = nn.Sequential(nn.Linear(4, 3))
    plain[0].bias.requires_grad_(False)
    ps = M.summary(plain)
    assert ps.frame["trainable"].tolist() == ["partly"] and ps.trainable_params == 12


def test_param_groups_head_multiplier_and_discriminative_rates():
    model = small()
    groups = M.param_groups(model, lr=1e-3)
    names = ["stem", "block1", "block2", "head", "classifier"]
    assert [g["name"] for g in groups] == [n + s for n in names for s in ("", "/no_decay")]
    assert [g["lr"] for g in groups] == pytest.approx([1e-3] * 8 + [1e-2] * 2)
    assert sum(p.numel() for g in groups for p in g["params"]) == 93_930
    decayed = M.param_groups(model, lr=1e-3, head_lr_mult=1, lr_decay=0.5, weight_decay=1e-4)
    assert [g["lr"] for g in decayed][::2] == pytest.approx([1.25e-4, 2.5e-4, 5e-4, 1e-3, 1e-3])
    opt = torch.optim.AdamW(decayed)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([g["lr"] for g in decayed])
    # as timm: kernels and matrices decay, biases and BatchNorm scales/shifts never do
    named = {id(p): n for n, p in model.named_parameters()}
    for g in opt.param_groups:
        kinds = {named[id(p)].rsplit(".", 1)[-1] for p in g["params"]}
        if g["name"].endswith("/no_decay"):
            assert g["weight_decay"] == 0.0 and all(p.ndim == 1 for p in g["params"])
            assert kinds <= {"bias", "weight"}  # BN weight (gamma), biases
        else:
            assert g["weight_decay"] == 1e-4 and all(p.ndim > 1 for p in g["params"])
    bn_gamma = model.stem.bn.weight
    assert any(p is bn_gamma for g in opt.param_groups if g["weight_decay"] == 0 for p in g["params"])
    no_wd = M.param_groups(model, lr=1e-3)
    assert all("weight_decay" not in g for g in no_wd if not g["name"].endswith("/no_decay"))

    M.freeze(model, upto="block2")
    only = M.param_groups(model, lr=1e-3)
    assert [g["name"] for g in only] == ["head", "head/no_decay", "classifier", "classifier/no_decay"]
    assert all(p.requires_grad for g in only for p in g["params"])
    M.freeze(model, upto="head")
    M.freeze(model, upto="classifier")
    with pytest.raises(ValueError, match="no trainable parameters"):
        M.param_groups(model, lr=1e-3)


def test_load_matching_state_dict_loads_all_when_everything_matches():
    source, target = small(1), small(2)
    res = M.load_matching_state_dict(target, source.state_dict())
    assert res.complete and res.blocker is None and not res.unused
    for k, v in source.state_dict().items():
        assert torch.equal(target.state_dict()[k], v)


def test_load_matching_state_dict_stops_at_a_different_classifier():
    source, target = small(1, num_classes=5), small(2)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    res = M.load_matching_state_dict(target, source.state_dict())
    assert res.blocker == "classifier.weight" and "(5, 256)" in res.reason
    assert res.skipped == ["classifier.weight", "classifier.bias"]
    assert torch.equal(target.classifier.weight, before["classifier.weight"])
    assert torch.equal(target.head[0].conv.weight, source.head[0].conv.weight)
    assert "block1.0.bn.num_batches_tracked" in res.loaded


def test_load_matching_state_dict_loads_nothing_above_a_renamed_middle_layer():
    source, target = small(1), small(2)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    renamed = {k.replace("block2.0.", "block2.conv_a."): v for k, v in source.state_dict().items()}
    res = M.load_matching_state_dict(target, renamed)
    assert res.blocker == "block2.0.conv.weight"
    assert "block2.conv_a.conv.weight" in res.reason
    after = target.state_dict()
    for k in after:
        expect = source.state_dict()[k] if k.startswith(("stem.", "block1.")) else before[k]
        assert torch.equal(after[k], expect), k
    # block2.1 and head match by name, but they sit above the blocker: not loaded
    assert not any(k.startswith(("block2.", "head.", "classifier.")) for k in res.loaded)
    assert "head.0.conv.weight" in res.unused


def test_load_matching_state_dict_drops_the_whole_blocker_layer_and_strips_module_prefix():
    source, target = small(1), small(2)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    sd = {"module." + k: v for k, v in source.state_dict().items()}
    sd["module.block1.1.bn.bias"] = torch.zeros(7)  # weight matched, bias does not
    res = M.load_matching_state_dict(target, sd)
    assert res.blocker == "block1.1.bn.bias"
    assert "block1.1.bn.weight" in res.skipped  # same layer as the blocker: not loaded
    assert torch.equal(target.block1[1].bn.weight, before["block1.1.bn.weight"])
    assert torch.equal(target.block1[1].conv.weight, source.block1[1].conv.weight)
    assert "stopped at 'block1.1.bn.bias'" in str(res)


def test_frozen_backbone_is_bit_identical_after_fit():
    train = pytest.importorskip("course_utils.train")
    g = torch.Generator().manual_seed(0)
    data = [(torch.randn(8, 1, 28, 28, generator=g) * 2 + 1, torch.randint(0, 10, (8,), generator=g))
            for _ in range(3)]
    model = M.freeze(small(), upto="head")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.Adam(M.param_groups(model, lr=1e-3))
    hist = train.fit(model, data, data[:1], epochs=2, optimizer=opt, progress=False,
                     restore_best=False)
    assert len(hist.records) == 2
    after = model.state_dict()
    for k, v in before.items():
        if not k.startswith("classifier."):  # every frozen parameter and BN statistic
            assert torch.equal(after[k], v), k
    assert not torch.equal(after["classifier.weight"], before["classifier.weight"])
