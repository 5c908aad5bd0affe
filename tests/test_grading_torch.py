"""Unit tests of the PyTorch checkers in course_utils.grading: right answers pass, wrong ones
raise AssertionError whose message names the layer or group at fault."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from course_utils.grading import (GradingSetupError, check_bn_in_inference, check_frozen,
                                  check_param_groups, check_state_dict_loaded,
                                  check_trainable_count)


class Tiny(nn.Module):
    """ResNet-like names: conv1, bn1, layer4 (8 parameter tensors), fc."""

    def __init__(self, num_classes: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.layer4 = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4),
                                    nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4))
        self.fc = nn.Linear(4, num_classes)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.layer4(x))
        return self.fc(x.mean(dim=(2, 3)))


def make(trainable=("layer4", "fc")):
    torch.manual_seed(0)
    m = Tiny()
    for n, p in m.named_parameters():
        p.requires_grad = any(n.startswith(t + ".") for t in trainable)
    return m


def test_check_frozen_passes_for_exact_answer_and_module_objects():
    m = make()
    check_frozen(m, ["layer4", "fc"])
    check_frozen(m, [m.layer4, m.fc])


def test_check_frozen_names_a_still_frozen_block_with_its_tensor_count():
    m = make(trainable=("fc",))
    with pytest.raises(AssertionError, match=r"layer4 is still frozen: expected requires_grad=True on its 8 "
                                             r"parameter tensors"):
        check_frozen(m, ["layer4", "fc"])


def test_check_frozen_names_partly_frozen_and_wrongly_trainable_modules():
    m = make()
    m.layer4[1].weight.requires_grad = False
    m.conv1.weight.requires_grad = True
    with pytest.raises(AssertionError) as info:
        check_frozen(m, ["layer4", "fc"])
    msg = str(info.value)
    assert "layer4 is partly frozen: 1 of its 8" in msg and "layer4.1.weight" in msg
    assert "conv1 should be frozen, but 1 of its 2 parameter tensors has requires_grad=True" in msg


def test_check_frozen_prefix_matches_whole_names_only():
    m = make(trainable=("fc",))
    with pytest.raises(AssertionError, match="has no parameters under 'f'"):
        check_frozen(m, ["f"])


def test_check_frozen_rejects_non_module_with_assertion():
    with pytest.raises(AssertionError, match="expected a torch.nn.Module, got NoneType; did your function"):
        check_frozen(None, ["fc"])


def test_check_trainable_count_reports_where_the_trainable_parameters_are():
    m = make(trainable=("fc",))
    check_trainable_count(m, 4 * 3 + 3)
    m.bn1.weight.requires_grad = True
    with pytest.raises(AssertionError, match=r"has 19 trainable parameters, expected 15\. Trainable now: "
                                             r"bn1 \(4\), fc \(15\)"):
        check_trainable_count(m, 15)


def good_groups(m, base=1e-3, mult=10):
    head = [p for n, p in m.named_parameters() if n.startswith("fc.") and p.requires_grad]
    body = [p for n, p in m.named_parameters() if not n.startswith("fc.") and p.requires_grad]
    return [{"params": body, "lr": base}, {"params": head, "lr": base * mult}]


def test_check_param_groups_accepts_alternative_groupings():
    m = make()
    check_param_groups(torch.optim.SGD(good_groups(m), lr=0.5), m, 1e-3, 10, head="fc")
    check_param_groups(good_groups(m), m, 1e-3, 10, head=m.fc)
    # one group per parameter, body lr taken from the optimizer default
    per_param = [{"params": [p]} if not n.startswith("fc.") else {"params": [p], "lr": 1e-2}
                 for n, p in m.named_parameters() if p.requires_grad]
    opt = torch.optim.Adam(per_param, lr=1e-3)
    sched = torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.1)
    opt.step()
    sched.step()  # lr changes, initial_lr stays
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-4)
    check_param_groups(opt, m, 1e-3, 10, head="fc")


def test_check_param_groups_names_the_wrong_learning_rate_and_group():
    m = make()
    groups = good_groups(m)
    groups[1]["lr"] = 1e-3
    with pytest.raises(AssertionError, match=r"head parameters \(fc.weight, fc.bias\) are in param group 1 "
                                             r"with lr=0.001; expected base_lr x head_lr_mult = 0.001 x 10 = 0.01"):
        check_param_groups(groups, m, 1e-3, 10, head="fc")
    groups = good_groups(m)
    groups[0]["lr"] = 1e-2
    with pytest.raises(AssertionError, match=r"8 backbone parameter tensors of layer4.0, layer4.1, layer4.2 "
                                             r"and 1 more are in param group 0 with lr=0.01; expected base_lr = 0.001"):
        check_param_groups(groups, m, 1e-3, 10, head="fc")


def test_check_param_groups_missing_duplicate_frozen_and_foreign_tensors():
    m = make()
    groups = good_groups(m)
    groups[0]["params"] = groups[0]["params"][:4]
    with pytest.raises(AssertionError, match=r"4 trainable parameter tensors are in no param group, so they "
                                             r"would never be updated: layer4.2 \(2\), layer4.3 \(2\)"):
        check_param_groups(groups, m, 1e-3, 10, head="fc")
    groups = good_groups(m)
    groups[0]["params"] = groups[0]["params"] + [m.fc.weight]
    with pytest.raises(AssertionError, match="'fc.weight' appears in param groups 0 and 1"):
        check_param_groups(groups, m, 1e-3, 10, head="fc")
    groups = good_groups(m)
    groups[0]["params"] = groups[0]["params"] + [m.conv1.weight]
    with pytest.raises(AssertionError, match=r"param group 0 holds 1 frozen parameter tensor \(requires_grad="
                                             r"False: conv1.weight\)"):
        check_param_groups(groups, m, 1e-3, 10, head="fc")
    check_param_groups(groups, m, 1e-3, 10, head="fc", allow_frozen=True)
    groups = good_groups(m)
    old_fc = m.fc
    m.fc = nn.Linear(4, 3)
    with pytest.raises(AssertionError, match=r"not a parameter of the model \(was the optimizer built before "
                                             r"the head was replaced\?\)"):
        check_param_groups(groups, m, 1e-3, 10, head="fc")
    assert old_fc is not m.fc


def test_check_param_groups_wrong_types_raise_assertion_only():
    m = make()
    with pytest.raises(AssertionError, match="flat list of tensors"):
        check_param_groups(list(m.parameters()), m, 1e-3, 10, head="fc")
    with pytest.raises(AssertionError, match="expected a torch.optim.Optimizer"):
        check_param_groups(None, m, 1e-3, 10, head="fc")
    with pytest.raises(AssertionError, match="no parameters under the head 'classifier'"):
        check_param_groups(good_groups(m), m, 1e-3, 10, head="classifier")
    with pytest.raises(GradingSetupError):
        check_param_groups(good_groups(m), m, -1, 10, head="fc")


def test_check_bn_in_inference_flags_frozen_bn_in_training_mode():
    m = make()
    m.train()
    with pytest.raises(AssertionError, match=r"1 frozen BatchNorm layer is in training mode \(bn1\)"):
        check_bn_in_inference(m)
    m.bn1.eval()
    x = torch.randn(2, 1, 6, 6)
    check_bn_in_inference(m, x=x)  # layer4's BN layers are trainable: they may train
    before = m.layer4[1].running_mean.clone()
    with pytest.raises(AssertionError, match=r"2 BatchNorm layers are in training mode \(layer4.1, layer4.3\)"):
        check_bn_in_inference(m, frozen_only=False)
    assert torch.equal(before, m.layer4[1].running_mean)


def test_check_bn_in_inference_without_frozen_bn_is_a_wrong_answer():
    with pytest.raises(AssertionError, match="no BatchNorm layer whose parameters are all frozen"):
        check_bn_in_inference(make(trainable=("conv1", "bn1", "layer4", "fc")))


def test_check_bn_in_inference_detects_drift_from_a_forward_pass_and_restores_stats():
    m = make(trainable=("fc",)).eval()

    class Sneaky(nn.Module):  # reports eval but runs BN in training mode
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return nn.functional.batch_norm(x, self.inner.bn1.running_mean, self.inner.bn1.running_var,
                                            training=True)

    s = Sneaky(m)
    before = m.bn1.running_mean.clone()
    with pytest.raises(AssertionError, match=r"a forward pass changed the running statistics of 1 frozen "
                                             r"BatchNorm layer \(inner.bn1\)"):
        check_bn_in_inference(s, x=torch.randn(3, 4, 5, 5))
    assert torch.equal(before, m.bn1.running_mean)


def test_check_state_dict_loaded_names_tensors():
    src = make().state_dict()
    m = make()
    check_state_dict_loaded(m, {"conv1.weight": src["conv1.weight"]}, unchanged={"fc.bias": m.fc.bias.detach().clone()})
    with torch.no_grad():
        m.conv1.weight.add_(1.0)
    with pytest.raises(AssertionError, match=r"'conv1.weight' should have been loaded from the source, but it "
                                             r"differs from the source tensor \(max abs difference 1\)"):
        check_state_dict_loaded(m, {"conv1.weight": src["conv1.weight"]})
    with pytest.raises(AssertionError, match=r"'fc.weight' should have kept its value, but it was overwritten"):
        check_state_dict_loaded(m, {}, unchanged={"fc.weight": torch.zeros(3, 4)})
    with pytest.raises(AssertionError, match=r"'fc.weight' has shape \(3, 4\), expected \(5, 4\)"):
        check_state_dict_loaded(m, {"fc.weight": torch.zeros(5, 4)})
