"""Unit tests of the framework-free and learning-curve checkers."""
from __future__ import annotations

import numpy as np
import pytest

from course_utils.curves import LearningCurveResult, diagnose
from course_utils.grading import (GradingSetupError, check_choice, check_close, check_in_range,
                                  check_learning_curve, check_regime)


def test_check_close_numbers_arrays_and_messages():
    check_close(0.1 + 0.2, 0.3)
    check_close([1.0, 2.0], np.array([1.0, 2.0 + 1e-9]))
    with pytest.raises(AssertionError, match=r"count is 12,800, expected 12,810 \(difference -10\)"):
        check_close(12800, 12810, name="count")
    with pytest.raises(AssertionError, match=r"acc: 1 of 3 entries differ from the expected values; the first "
                                             r"is at index \(2,\): got 0.5, expected 0.25"):
        check_close([1, 2, 0.5], [1, 2, 0.25], name="acc")
    with pytest.raises(AssertionError, match=r"x has shape \(2,\), expected shape \(3,\)"):
        check_close([1, 2], [1, 2, 3], name="x")
    with pytest.raises(AssertionError, match="x is None: did your function forget to return a value"):
        check_close(None, 1.0, name="x")
    with pytest.raises(AssertionError, match="x should be a number or an array of numbers, got str"):
        check_close("abc", 1.0, name="x")
    with pytest.raises(AssertionError, match="x is not finite"):
        check_close(float("nan"), 1.0, name="x")
    with pytest.raises(AssertionError) as info:
        check_close(3, 4, name="secret", show_expected=False)
    assert "4" not in str(info.value)
    with pytest.raises(GradingSetupError):
        check_close(1, float("nan"))


def test_check_close_accepts_tensors():
    torch = pytest.importorskip("torch")
    check_close(torch.tensor([1.0, 2.0], requires_grad=True) * 1, [1, 2])


def test_check_in_range():
    check_in_range(0.5, 0, 1)
    with pytest.raises(AssertionError, match=r"err\[1\] is 1.5, expected every entry between 0 and 1"):
        check_in_range([0.2, 1.5], 0, 1, name="err")


def test_check_choice_and_regime_synonyms():
    check_choice("B", "b", choices=("a", "b"))
    with pytest.raises(AssertionError, match=r"answer = 'c' is not one of the choices \['a', 'b'\]"):
        check_choice("c", "a", choices=("a", "b"))
    with pytest.raises(AssertionError, match="answer = 'b' is not the right choice$"):
        check_choice("b", "a", choices=("a", "b"))
    with pytest.raises(AssertionError, match="should be one of the strings"):
        check_choice(3, "a", choices=("a", "b"))
    check_regime("High-Bias", "high avoidable bias")
    check_regime("overfitting", "high variance")
    check_regime(diagnose(0.02, 0.15), "high variance")
    with pytest.raises(AssertionError, match="curve_a = 'variance' is not the right choice"):
        check_regime("variance", "high avoidable bias", name="curve_a")


def result(train, val, sizes=(10, 100, 1000)):
    t = np.asarray(train, float)[:, None].repeat(2, axis=1)
    v = np.asarray(val, float)[:, None].repeat(2, axis=1)
    return LearningCurveResult(np.asarray(sizes), t, v, (0, 1))


def test_check_learning_curve_accepts_result_objects_and_dicts():
    check_learning_curve(result([0.0, 0.02, 0.04], [0.4, 0.2, 0.1]), sizes=[10, 100, 1000])
    check_learning_curve({"sizes": [10, 100], "train_error": [0.0, 0.01], "val_error": [0.3, 0.1]})


def test_check_learning_curve_messages():
    with pytest.raises(AssertionError, match=r"sizes are \[10, 100, 1000\], expected \[10, 50\]"):
        check_learning_curve(result([0, 0, 0], [0.3, 0.2, 0.1]), sizes=[10, 50])
    with pytest.raises(AssertionError, match="train_error and val_error swapped"):
        check_learning_curve(result([0.4, 0.2, 0.1], [0.0, 0.0, 0.0]), expect_val_drop=None)
    with pytest.raises(AssertionError, match=r"does not fall with more data \(0.200 at 10 examples, 0.200 at 1000\)"):
        check_learning_curve(result([0, 0, 0], [0.2, 0.2, 0.2]))
    with pytest.raises(AssertionError, match=r"val_error at size 10 is 30: errors are rates"):
        check_learning_curve(result([0, 0, 0], [30, 0.2, 0.1]))
    with pytest.raises(AssertionError, match=r"is missing the key\(s\) \['val_error'\]"):
        check_learning_curve({"sizes": [1, 2], "train_error": [0, 0]})
    with pytest.raises(AssertionError, match=r"train_error has shape \(3,\): expected one value per"):
        check_learning_curve({"sizes": [1, 2], "train_error": [0, 0, 0], "val_error": [0, 0]})
    with pytest.raises(AssertionError, match="result is None"):
        check_learning_curve(None)


def test_check_tuple_and_validity_only_choices():
    from course_utils.grading import check_tuple

    assert check_tuple([1, 2], 2) == (1, 2)
    with pytest.raises(AssertionError, match=r"out should be a tuple \(a, b\), got NoneType: None; did your"):
        check_tuple(None, 2, name="out", names=("a", "b"))
    with pytest.raises(AssertionError, match="out should hold 2 values"):
        check_tuple((1, 2, 3), 2, name="out")
    check_regime("overfitting", None)
    with pytest.raises(AssertionError, match="is not one of the choices"):
        check_regime("too little data", None)


def test_setup_grading_sends_all_stderr_to_stdout_only_while_grading():
    """nbgrader zeroes a test cell that writes to stderr; while grading, warnings, logging
    and C-level writes on fd 2 must land on stdout instead."""
    import os
    import subprocess
    import sys

    code = ("import logging, os, sys, warnings\n"
            "from course_utils.grading import setup_grading\n"
            "print('grading' if setup_grading() else 'not grading', flush=True)\n"
            "warnings.warn('a warning')\n"
            "logging.getLogger('x').warning('a log record')\n"
            "print('python stderr', file=sys.stderr, flush=True)\n"
            "os.write(2, b'fd two\\n')\n")
    env = {k: v for k, v in os.environ.items() if k != "NBGRADER_EXECUTION"}
    quiet = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env={**env, "NBGRADER_EXECUTION": "autograde"}, timeout=120)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == ""
    for text in ("grading", "a warning", "a log record", "python stderr", "fd two"):
        assert text in quiet.stdout
    normal = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                            timeout=120)
    assert normal.stdout.strip() == "not grading"
    assert "a warning" in normal.stderr and "fd two" in normal.stderr


def test_fail_lists_problems_under_the_header():
    from course_utils.grading._common import fail

    fail("model:", [])  # nothing wrong: no exception
    with pytest.raises(AssertionError) as one:
        fail("model: not as expected:", ["layer4 is frozen"])
    assert str(one.value) == "model: not as expected:\n  - layer4 is frozen"
    with pytest.raises(AssertionError) as many:
        fail("model:", [f"p{i}" for i in range(10)], limit=8)
    assert str(many.value).splitlines()[-1] == "  ... and 2 more"
