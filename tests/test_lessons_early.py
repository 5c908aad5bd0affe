"""What notebooks 00-03 teach, pinned on the installed frameworks (issue 13, items 2, 6, 7, 8).

Each notebook writes an idiom out in plain PyTorch and then names a ``course_utils`` helper as
doing the same; these tests check that the idiom behaves as the prose says and that the helper
really does the same, so the lesson fails loudly the day PyTorch or the library changes.
They run in seconds on a CPU (tiny inputs, no dataset).
"""
from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from course_utils import data, features, models, train

ROOT = Path(__file__).resolve().parents[1]


def _images(n=24, size=28, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, size, size), dtype=np.uint8), np.arange(n) % 3


def _prepared(seed=0):
    torch.manual_seed(seed)
    return models.create_model("small_cnn", num_classes=3)


def _bn_buffers(model):
    return {k: v.clone() for k, v in model.state_dict().items()
            if k.endswith(("running_mean", "running_var")) and not k.startswith("classifier")}


def _head_loop(model, batches, epochs, *, keep_bn_eval):
    """03 section 4's plain-PyTorch head training loop, verbatim in substance."""
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    for _ in range(epochs):
        model.train()
        if keep_bn_eval:
            for m in model.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.eval()
        for xb, yb in batches:
            loss = nn.functional.cross_entropy(model(xb), yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()


def _freeze_below_head(model):
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith("classifier."))


def _loader(x, y, seed=0):
    return data.FastLoader(x, y, 8, shuffle=True, seed=seed, mean=(0.5,), std=(0.5,))


def test_requires_grad_alone_lets_batchnorm_statistics_drift():
    x, y = _images()
    model = _prepared()
    _freeze_below_head(model)
    before = _bn_buffers(model)
    weights = {k: v.clone() for k, v in model.state_dict().items() if "running" not in k
               and not k.startswith("classifier") and not k.endswith("num_batches_tracked")}
    torch.manual_seed(0)
    _head_loop(model, _loader(x, y), 2, keep_bn_eval=False)
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in weights.items()), "a frozen weight moved"
    assert all(not torch.equal(after[k], v) for k, v in before.items()), \
        "requires_grad_(False) alone no longer lets BatchNorm statistics drift: 03 section 4 is wrong"


def test_eval_loop_and_models_freeze_keep_statistics_and_agree_bit_for_bit():
    x, y = _images()
    plain = _prepared()
    _freeze_below_head(plain)
    helper = _prepared()
    models.freeze(helper)
    before = _bn_buffers(plain)
    torch.manual_seed(0)
    _head_loop(plain, _loader(x, y), 2, keep_bn_eval=True)
    train.fit(helper, _loader(x, y), epochs=2, lr=1e-3, seed=0, device="cpu", progress=False)
    for model in (plain, helper):
        after = model.state_dict()
        assert all(torch.equal(after[k], v) for k, v in before.items())
    assert torch.equal(plain.classifier.weight, helper.classifier.weight), \
        "models.freeze + train.fit no longer does what 03's plain loop does"


def test_two_dict_optimizer_gives_each_parameter_the_rate_param_groups_gives():
    model = _prepared()
    head = list(model.classifier.parameters())
    body = [p for n, p in model.named_parameters() if not n.startswith("classifier.")]
    two = torch.optim.Adam([{"params": body, "lr": 1e-4}, {"params": head, "lr": 1e-3}])
    helper = torch.optim.Adam(models.param_groups(model, lr=1e-4, head_lr_mult=10))

    def lr_of(opt):
        return {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}

    a, b = lr_of(two), lr_of(helper)
    assert a.keys() == b.keys()
    assert all(np.isclose(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def lite0():
    return models.create_model("efficientnet_lite0", weights="imagenet").eval()


@pytest.mark.parametrize("side", [224, 96])
def test_lite0_with_its_imagenet_top_runs_at_more_than_one_input_size(lite0, side):
    with torch.no_grad():
        assert lite0(torch.zeros(1, 3, side, side)).shape == (1, 1000)


def test_identity_head_eval_no_grad_is_what_extract_features_computes(lite0):
    x, _ = _images(n=4, size=28)
    body = copy.deepcopy(lite0)
    setattr(body, models.get_spec(lite0).head, nn.Identity())
    body.eval()
    with torch.no_grad():
        codes = body(features.default_transform(lite0, 32)(x)).numpy()
    extracted = features.extract_features(lite0, x, size=32, cache=False, progress=False)
    assert codes.shape == extracted.shape == (4, 1280)
    np.testing.assert_allclose(codes, extracted, atol=1e-5)


EARLY = ["00_setup", "01_bias_variance", "02_feature_extraction", "03_finetuning_pytorch"]


def _markdown(name):
    nb = json.loads((ROOT / "notebooks" / f"{name}.ipynb").read_text())
    return [c["source"] for c in nb["cells"] if c["cell_type"] == "markdown"]


@pytest.mark.parametrize("name", EARLY)
def test_every_check_yourself_question_has_a_collapsed_answer(name):
    cells = _markdown(name)
    check = [c for c in cells if c.startswith("## Check yourself")]
    assert len(check) == 1, f"{name}: one 'Check yourself' cell expected"
    questions = re.findall(r"^(\d+)\. ", check[0].split("## Summary")[0], flags=re.M)
    answers = re.findall(r"<details><summary>Answer (\d+)</summary>", "\n".join(cells))
    assert questions and answers == questions, (name, questions, answers)


def test_setup_no_longer_says_lite0_expects_224():
    text = "\n".join(_markdown("00_setup"))
    assert "expects 3-channel 224" not in text
    assert "global average pooling" in text
