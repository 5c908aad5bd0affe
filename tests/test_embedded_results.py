"""The claims the course makes, checked on the figures an ``embedded`` run recorded.

``make course`` runs the series on the embedded profile and then this file with
``COURSE_RESULTS_DIR=build``; the smoke run of ``make test`` is too small for these effects,
so without that variable the checks are skipped (the helper tests below always run).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

RESULTS_DIR = os.environ.get("COURSE_RESULTS_DIR")
needs_build = pytest.mark.skipif(
    not RESULTS_DIR, reason="set COURSE_RESULTS_DIR to an embedded build (make course does)")


NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def _load(name: str) -> dict:
    if not (NOTEBOOKS / f"{name}.ipynb").exists():
        pytest.skip(f"notebooks/{name}.ipynb is not part of the series yet")
    path = Path(RESULTS_DIR) / f"{name}.json"
    assert path.exists(), f"{path} is missing: did {name}.ipynb run?"
    data = json.loads(path.read_text())
    assert data.get("profile") == "embedded", f"{path} was recorded on profile {data.get('profile')!r}"
    return data


def best_small_gap(sizes, pretrained, scratch, max_size=10) -> float:
    """Largest (pretrained - scratch) accuracy gap among sizes <= ``max_size`` per class."""
    gaps = [p - s for n, p, s in zip(sizes, pretrained, scratch) if n <= max_size]
    if not gaps:
        raise AssertionError(f"no training-set size <= {max_size} per class among {sizes}")
    return max(gaps)


def test_best_small_gap_reads_only_small_sizes():
    assert best_small_gap([5, 10, 100], [0.8, 0.8, 0.9], [0.5, 0.7, 0.95]) == pytest.approx(0.3)
    with pytest.raises(AssertionError, match="no training-set size"):
        best_small_gap([50, 100], [0.9, 0.9], [0.1, 0.1])


def central_gains(run: dict, max_size: int = 3) -> list[tuple[int, float, float, float]]:
    """``(size, gain, ci_low, ci_high)`` of the paired pretrained-minus-scratch gains at sizes
    <= ``max_size`` per class, as 05 records them."""
    rows = [(n, g, lo, hi) for n, g, lo, hi in zip(run["sizes"], run["gain"], run["gain_ci_low"],
                                                    run["gain_ci_high"]) if n <= max_size]
    if not rows:
        raise AssertionError(f"no training-set size <= {max_size} per class among {run['sizes']}")
    return rows


def test_central_gains_reads_only_small_sizes():
    run = {"sizes": [1, 3, 10], "gain": [0.2, 0.1, 0.0], "gain_ci_low": [0.1, -0.1, -0.1],
           "gain_ci_high": [0.3, 0.3, 0.1]}
    assert central_gains(run) == [(1, 0.2, 0.1, 0.3), (3, 0.1, -0.1, 0.3)]
    with pytest.raises(AssertionError, match="no training-set size"):
        central_gains({"sizes": [10], "gain": [0], "gain_ci_low": [0], "gain_ci_high": [0]})


@needs_build
@pytest.mark.parametrize("framework", ["torch", "keras"])
def test_pretrained_beats_scratch_by_15_points_with_few_images(framework):
    run = _load("05_scratch_vs_pretrained")[framework]
    gap = best_small_gap(run["sizes"], run["pretrained_acc"], run["scratch_acc"])
    assert gap >= 0.15, f"{framework}: pretrained beats scratch by only {gap:.3f} at <=10 per class"


@needs_build
def test_scratch_catches_up_by_30_images_per_class():
    """05 section 4 under the fair baseline: scratch at its own rate catches up with the
    (stem + block1 frozen) pretrained network by 30 images per class: there the paired
    gain's 95 % interval no longer lies above 0."""
    nb = _load("05_scratch_vs_pretrained")
    run = nb["torch"]
    assert nb["catch_up_torch"] is not None and nb["catch_up_torch"] <= 30, nb["catch_up_torch"]
    i = run["sizes"].index(30)
    assert run["gain_ci_low"][i] <= 0, (run["gain"][i], run["gain_ci_low"][i], run["gain_ci_high"][i])
    # and the prose: at 100 per class the gain stays within about a point and a half of 0 (its
    # interval lay just above 0 with two threads, [+0.010, +0.017], and across 0 with one)
    j = run["sizes"].index(100)
    assert abs(run["gain"][j]) <= 0.015, run["gain"][j]


@needs_build
@pytest.mark.parametrize("framework", ["torch", "keras"])
def test_pretrained_beats_scratch_with_one_image_per_class_beyond_seed_noise(framework):
    """05's central claim, under the fair baseline (each arm's rate chosen on validation):
    at 1 image per class the paired gain's 95 % interval lies above 0."""
    run = _load("05_scratch_vs_pretrained")[framework]
    (size, gain, lo, hi), *_ = central_gains(run, max_size=1)
    assert size == 1 and run["seeds"][0] >= 5, run
    assert lo > 0, f"{framework}: gain at 1/class {gain:+.3f}, 95% CI [{lo:+.3f}, {hi:+.3f}]"


@needs_build
@pytest.mark.parametrize("framework", ["torch", "keras"])
def test_each_arm_trained_at_its_own_validated_rate(framework):
    run = _load("05_scratch_vs_pretrained")
    grid = run["lr_grid"]
    assert all(lr in grid["scratch"] for lr in run[framework]["lr_scratch"]), run[framework]
    assert all(lr in grid["pretrained"] for lr in run[framework]["lr_pretrained"]), run[framework]


@needs_build
def test_full_finetuning_beats_feature_extraction_with_enough_data():
    run = _load("06_when_to_finetune")["large_target"]
    assert run["per_class"] >= 100
    assert run["full_finetune_acc"] > run["feature_extraction_acc"], run


FE = ("feature extraction (last layer)", "feature extraction (block1)")


@needs_build
@pytest.mark.parametrize("domain", ["similar", "different"])
def test_small_target_full_finetuning_beats_feature_extraction(domain):
    """06's measured departure from the textbook table: with 10 images per class, full
    fine-tuning (at its validated rate) beat a linear classifier on either layer's features."""
    acc = _load("06_when_to_finetune")["accuracy"][f"small/{domain}"]
    assert acc["full fine-tuning"] > max(acc[m] for m in FE), acc


@needs_build
def test_large_different_target_is_won_by_a_fitted_network():
    """06: with the large digits target the best method fits every weight (fine-tuning or
    from scratch), as the textbook table advises."""
    nb = _load("06_when_to_finetune")
    acc = nb["accuracy"]["large/different"]
    assert max(acc["full fine-tuning"], acc["from scratch"]) > max(acc[m] for m in FE), acc
    assert nb["decision"]["large/different"]["follows_advice"], nb["decision"]


@needs_build
@pytest.mark.parametrize("domain", ["similar", "different"])
def test_layer_transfer_last_layer_features_win_with_a_large_target(domain):
    """06's layer-transfer verdict where it is beyond seed noise: with a large target, the
    last layer's features beat block1's in both domains (block1's win on the small distant
    target is within one seed-to-seed std and is not asserted)."""
    lt = _load("06_when_to_finetune")["layer_transfer"]
    assert lt["verdict"][f"large/{domain}"] == "last layer", lt
    assert lt["early_minus_last"][f"large/{domain}"] < 0, lt


@needs_build
def test_diagnose_names_the_right_regimes():
    nb = _load("01_bias_variance")
    assert nb["diagnose_underfit"]["regime"] == "high avoidable bias", nb["diagnose_underfit"]
    assert nb["diagnose_overfit"]["regime"] == "high variance", nb["diagnose_overfit"]


@needs_build
def test_batchnorm_trap_changes_the_frozen_body_and_the_fix_does_not():
    trap = _load("03_finetuning_pytorch")["bn_trap"]
    naive, fixed, helper = trap["requires_grad=False only"], trap["plain PyTorch fix"], trap["models.freeze"]
    untouched = trap["untouched pretrained network"]["source_test_acc"]
    assert naive["weights_changed"] == 0 and naive["bn_buffers_changed"] > 0, trap
    assert fixed["bn_buffers_changed"] == helper["bn_buffers_changed"] == 0, trap
    assert trap["fix_equals_helper"] is True, trap
    assert fixed["source_test_acc"] == helper["source_test_acc"] == untouched, trap
    assert naive["source_test_acc"] < untouched - 0.05, trap


@needs_build
def test_imagenet_codes_beat_pixels_on_faces_and_standardising_costs_them_at_1_and_2_per_class():
    acc = _load("02_feature_extraction")["lfw_faces"]["mean_acc"]
    codes, codes_std = acc["ImageNet codes, as they are"], acc["ImageNet codes, standardised"]
    best_pixels = {n: max(acc["raw pixels, standardised"][n], acc["raw pixels, as they are"][n]) for n in codes}
    assert all(codes[n] > best_pixels[n] for n in codes), acc
    assert all(codes[n] > codes_std[n] + 0.05 for n in ("1", "2")), acc


@needs_build
def test_more_data_is_the_remedy_that_lowers_the_dev_error():
    rem = _load("01_bias_variance")["remedies"]
    assert rem["more data (x8)"]["dev_error"] < rem["overfitting model"]["dev_error"], rem


@needs_build
def test_imagenet_finetuning_beats_scratch_on_the_lfw_photographs():
    """05 section 7: on scikit-image's 200 real photographs (faces vs not), EfficientNet-Lite0
    started from ImageNet beats the same network from random weights at every size, the paired
    95 % interval above 0 (issue 14's offline hotdog)."""
    lfw = _load("05_scratch_vs_pretrained")["lfw"]
    for size, gain, lo in zip(lfw["sizes"], lfw["gain"], lfw["gain_ci_low"]):
        assert lo > 0, f"{size}/class: gain {gain:+.3f}, interval low {lo:+.3f}"
    # 05 section 7's prose says the scratch arm scored 0.500 (chance) at both sizes
    assert lfw["scratch_acc"] == [0.5] * len(lfw["sizes"]), lfw["scratch_acc"]
