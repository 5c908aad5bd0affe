"""Science checks: the claims the course makes, verified at smoke scale with fixed seeds.

1. Transfer pays off with little data and a small budget: ``small_cnn`` pretrained on
   Fashion-MNIST classes 0-4 and fine-tuned on classes 5-9 with 10 images per class beats
   the same network trained from scratch on the same images, with the same short budget
   (4 epochs, 28 updates), by at least 15 points of test accuracy (mean of seeds 0, 1, 2),
   on a fixed stratified 1,000-image subset of the target test split.
2. ...and that lead is a head start, not a ceiling: with a long budget (20 epochs) scratch
   catches up to within a few points on this nearby target task (what notebook 05 shows
   over training-set sizes). Both long-budget models are good (>= 0.80).
3. The same experiment in Keras (same recipe, same images, same test subset) beats Keras
   from scratch by 15 points on the short budget, and with the long budget its pretrained
   accuracy is within 5 points of the PyTorch one (mean of the same 3 seeds): the two
   frameworks teach the same result.
4. Freezing means frozen: training with a frozen backbone leaves every frozen parameter and
   every frozen BatchNorm running statistic bit-identical (the PyTorch trap: requires_grad
   alone does not stop BatchNorm statistics from moving in ``model.train()``).

Recipe (both inits get the same optimiser, learning rate, schedule, batch size and epochs;
the pretrained run keeps its lowest layer groups, ``stem`` and ``block1``, frozen): the
course's shared pretraining (notebooks 03-06: 1,000 images per source class, 2 epochs,
batch 64, Adam 1e-3, cosine schedule); fine-tuning with batch 8, Adam 1e-3 annealed to 0
by a cosine schedule, for 4 or 20 epochs.

Why two budgets, and how much margin there is. An earlier version of this check trained
20 epochs at a constant rate and asserted the 15-point gain there. It passed only because
scratch runs at a constant rate end chaotically (per seed 0.53 to 0.85: the last large
steps leave BatchNorm statistics behind the weights), and on a machine with other CPU
kernels seeds 0-2 landed high and the gain fell to 5 points. With the cosine schedule
scratch is steady, and over seeds 0-9 (measured with this file's settings) the picture is:
4 epochs, pretrained 0.744 vs scratch 0.451 (+29 points; every window of 3 seeds +26 or
more); 20 epochs, pretrained 0.867 vs scratch 0.852 (+1.5; every window under +3). Keras,
seeds 0-5: 4 epochs 0.772 vs 0.420; 20 epochs 0.856 vs 0.858.

Everything runs on one CPU thread, so the numbers repeat exactly on one machine; another
CPU (AVX2 vs AVX-512 kernels) changes the floating-point sums and so the numbers, which is
why the margins above are set against the spread over 10 seeds, not the 3 seeds asserted.
The pretrained weights are built once per module in a temporary directory and shared.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from course_utils.data.fast import FastLoader
from course_utils.device import seed_everything
from course_utils.experiments import (paired_gain, pretrain_source, scratch_vs_pretrained,
                                      source_target_split)
from course_utils.models import create_model, freeze, get_spec, load_matching_state_dict, replace_head
from course_utils.train import fit

pytestmark = pytest.mark.slow

PRETRAIN = dict(per_class=1000, epochs=2, batch_size=64, lr=1e-3, scheduler="cosine", seed=0)
FINETUNE = dict(lr=1e-3, batch_size=8, scheduler="cosine")
BUDGETS = {"short": 4, "long": 20}   # fine-tuning epochs (7 updates each on 50 images)
FREEZE_PRETRAINED = "block1"   # stem and block1 stay as pretrained
SHOTS = 10
SEEDS = (0, 1, 2)
TEST_PER_CLASS = 200           # fixed stratified subset of the target test split
MIN_GAIN = 0.15                # the claim, in accuracy (15 points)
CAUGHT_UP = 0.08               # long budget: scratch within this of pretrained
FRAMEWORK_TOLERANCE = 0.05     # Keras vs PyTorch pretrained accuracy


@pytest.fixture(scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def pretrained(one_thread, fashion, tmp_path_factory):
    state, meta = pretrain_source("small_cnn", fashion, cache_dir=tmp_path_factory.mktemp("pretrained"),
                                  return_meta=True, progress=False, **PRETRAIN)
    # a pretraining that learned nothing would make the transfer check meaningless (chance: 0.2)
    assert meta["source_test_acc"] > 0.7, meta
    return state


@pytest.fixture(scope="module")
def target(fashion):
    _, tgt = source_target_split(fashion)
    rng = np.random.default_rng(0)
    idx = np.sort(np.concatenate([rng.choice(np.flatnonzero(tgt.y_test == k), TEST_PER_CLASS,
                                             replace=False) for k in range(tgt.num_classes)]))
    return tgt, idx


@pytest.fixture(scope="module")
def torch_tables(one_thread, pretrained, target):
    tgt, test_idx = target
    return {budget: scratch_vs_pretrained("small_cnn", pretrained, tgt, [SHOTS], SEEDS, epochs=epochs,
                                          finetune_kwargs={"freeze_upto": FREEZE_PRETRAINED},
                                          test_indices=test_idx, progress=False, **FINETUNE)
            for budget, epochs in BUDGETS.items()}


def _accuracies(table):
    acc = table.pivot(index="seed", columns="init", values="test_acc")
    return acc, f"\n{acc}\nmeans: {acc.mean().round(4).to_dict()}"


def test_pretrained_beats_scratch_with_10_images_per_class(torch_tables, target):
    tgt, _ = target
    assert tgt.classes == ("Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
    table = torch_tables["short"]
    assert len(table) == 2 * len(SEEDS) and (table["n_train"] == SHOTS * 5).all()
    acc, msg = _accuracies(table)
    gain = paired_gain(table)["gain"].iloc[0]
    assert gain == pytest.approx(acc["pretrained"].mean() - acc["scratch"].mean())
    assert acc["pretrained"].mean() >= 0.65, f"pretrained accuracy too low{msg}"
    # the claim
    assert gain >= MIN_GAIN, f"pretrained beats scratch by {gain:.3f} < {MIN_GAIN}{msg}"


def test_scratch_catches_up_with_a_long_budget(torch_tables):
    acc, msg = _accuracies(torch_tables["long"])
    short, _ = _accuracies(torch_tables["short"])
    assert (acc.mean() >= 0.80).all(), f"a long-budget model trained poorly{msg}"
    assert (acc.mean() > short.mean()).all(), f"more training did not help{msg}"
    gain = acc["pretrained"].mean() - acc["scratch"].mean()
    assert abs(gain) <= CAUGHT_UP, f"with 20 epochs the gap is {gain:+.3f}, not within {CAUGHT_UP}{msg}"


def test_keras_transfer_beats_scratch_and_matches_pytorch(torch_tables, fashion, target, tmp_path):
    """Issue 5: the Keras experiment, on the PyTorch recipe, within 5 points of PyTorch."""
    kx = pytest.importorskip("course_utils.keras.experiments")
    tgt, test_idx = target
    pretrain = {f"pretrain_{k}": v for k, v in PRETRAIN.items() if k != "seed"}
    means = {}
    for budget, epochs in BUDGETS.items():
        table = kx.finetune_vs_scratch("small_cnn", fashion, sizes=(SHOTS,), seeds=SEEDS,
                                       pretrain_seed=PRETRAIN["seed"], pretrain_n_test=1000,
                                       cache_dir=tmp_path, progress=False, test_indices=test_idx,
                                       finetune_kwargs={"freeze_upto": FREEZE_PRETRAINED}, **pretrain,
                                       epochs=epochs, **FINETUNE)
        assert (table["n_train"] == SHOTS * tgt.num_classes).all() and len(table) == 2 * len(SEEDS)
        means[budget] = table.groupby("init")["test_acc"].mean()
    torch_long = torch_tables["long"].groupby("init")["test_acc"].mean()
    msg = (f"\nKeras {({b: m.round(4).to_dict() for b, m in means.items()})}"
           f"\nPyTorch long budget {torch_long.round(4).to_dict()}")
    print(msg)
    short = means["short"]
    assert short["pretrained"] - short["scratch"] >= MIN_GAIN, f"Keras transfer did not pay{msg}"
    assert abs(means["long"]["pretrained"] - torch_long["pretrained"]) <= FRAMEWORK_TOLERANCE, \
        f"Keras and PyTorch fine-tuning differ by more than {FRAMEWORK_TOLERANCE}{msg}"


def _bn_stats(model):
    return {n: b.detach().clone() for n, b in model.named_buffers()}


def test_frozen_backbone_is_bit_identical_after_training(one_thread, pretrained, target):
    tgt, _ = target
    sub = tgt.per_class(SHOTS, 0)
    spec = get_spec("small_cnn")
    train = FastLoader(sub.x_train, sub.y_train, 16, shuffle=True, seed=0, mean=spec.mean, std=spec.std)

    seed_everything(0, deterministic=None)
    model = create_model("small_cnn", num_classes=5)
    load_matching_state_dict(model, pretrained)
    replace_head(model, 5)
    freeze(model)  # everything but the classifier
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    trainable = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    buffers = _bn_stats(model)
    assert set(trainable) == {"classifier.weight", "classifier.bias"}
    assert any(n.endswith("running_mean") for n in buffers) and len(frozen) > 10

    fit(model, train, epochs=3, lr=1e-2, seed=0, progress=False)
    model.train()  # what fit and notebooks do: must not switch frozen BatchNorm back on
    with torch.no_grad():
        model(next(iter(train))[0])

    for n, before in frozen.items():
        assert torch.equal(dict(model.named_parameters())[n], before), f"frozen parameter {n} changed"
    for n, before in buffers.items():
        assert torch.equal(dict(model.named_buffers())[n], before), f"frozen BatchNorm buffer {n} changed"
    changed = [n for n, p in model.named_parameters() if n in trainable and not torch.equal(p, trainable[n])]
    assert changed == ["classifier.weight", "classifier.bias"], "the head did not train"

    # the trap this guards against: requires_grad=False alone lets BatchNorm statistics move
    naive = create_model("small_cnn", num_classes=5)
    load_matching_state_dict(naive, pretrained)
    for n, p in naive.named_parameters():
        p.requires_grad_(n.startswith("classifier"))
    before = _bn_stats(naive)
    fit(naive, train, epochs=1, lr=1e-2, seed=0, progress=False)
    moved = [n for n, b in naive.named_buffers() if n.endswith("running_mean") and not torch.equal(b, before[n])]
    assert moved, "expected running statistics to move without freeze(); the check above would be vacuous"
