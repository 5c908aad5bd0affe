"""Checkers that the nbgrader tests of the course's assignments call.

Each checker asserts one behaviour of a student's answer and, when it is wrong, raises
``AssertionError`` with a message that says what is wrong and where ("layer4 is still
frozen: expected requires_grad=True on its 8 parameter tensors"). They inspect behaviour
(``requires_grad`` flags, an optimizer's parameter groups as sets of tensors, BatchNorm
modes, values after a forward pass or a training step), never the code, so any correct
solution passes. A wrong answer never makes a checker raise anything but
``AssertionError``; a checker called with impossible expectations (an instructor's mistake)
raises :class:`GradingSetupError`.

The framework modules are imported on first use: a Keras assignment that imports
``check_keras_trainable`` does not pay for importing PyTorch, and vice versa.
"""
from __future__ import annotations

from course_utils._lazy import lazy_getattr

__all__ = [
    "GradingSetupError", "setup_grading", "is_grading",
    # framework-free
    "check_close", "check_in_range", "check_choice", "check_tuple",
    # learning curves
    "check_learning_curve", "check_regime", "curve_means",
    # PyTorch
    "check_frozen", "check_trainable_count", "check_param_groups", "check_bn_in_inference",
    "check_state_dict_loaded",
    # Keras
    "check_keras_trainable", "check_keras_bn_inference", "check_keras_compiled",
    "check_keras_train_step",
    # scratch vs pretrained, fairly (assignment 5)
    "check_stratified_subset", "check_lr_chooser", "check_fair_comparison", "check_paired_ci",
    "check_strategy",
]

_HOME = {
    "GradingSetupError": "_common", "setup_grading": "notebook", "is_grading": "notebook",
    "check_close": "basic", "check_in_range": "basic", "check_choice": "basic", "check_tuple": "basic",
    "check_learning_curve": "curves_checks", "check_regime": "curves_checks",
    "curve_means": "curves_checks",
    "check_frozen": "torch_checks", "check_trainable_count": "torch_checks",
    "check_param_groups": "torch_checks", "check_bn_in_inference": "torch_checks",
    "check_state_dict_loaded": "torch_checks",
    "check_keras_trainable": "keras_checks", "check_keras_bn_inference": "keras_checks",
    "check_keras_compiled": "keras_checks", "check_keras_train_step": "keras_checks",
    "check_stratified_subset": "comparison_checks", "check_lr_chooser": "comparison_checks",
    "check_fair_comparison": "comparison_checks", "check_paired_ci": "comparison_checks",
    "check_strategy": "comparison_checks",
}


__getattr__ = lazy_getattr(__name__, _HOME, globals())


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
