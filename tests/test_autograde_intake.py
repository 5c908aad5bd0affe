"""Unit tests of what of a submission gets graded (course_utils.autograde.intake) and of
the CSV escaping: no sandbox, no nbgrader run, milliseconds each."""
from __future__ import annotations

import json
import os

from course_utils.autograde import Limits, MiB
from course_utils.autograde.intake import inspect_submission, protected_inodes, stage
from course_utils.autograde.report import csv_text

LIMITS = Limits(max_submission_bytes=1 * MiB, max_notebook_bytes=64 * 1024, max_cells=5)


def _notebook(path, cells=2):
    path.write_text(json.dumps({"cells": [{"cell_type": "code", "source": "pass"}] * cells,
                                "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))


def test_clean_submission_is_graded_in_place(tmp_path):
    _notebook(tmp_path / "hw.ipynb")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "x.csv").write_text("1,2\n")
    (tmp_path / "timestamp.txt").write_text("2026-01-15 12:00:00.000000 UTC")
    intake = inspect_submission(tmp_path, ["hw"], LIMITS)
    assert intake.skip == {} and intake.notes == []


def test_links_sizes_cells_and_timestamp(tmp_path):
    sub, outside = tmp_path / "sub", tmp_path / "course"
    sub.mkdir()
    outside.mkdir()
    (outside / "gradebook.db").write_text("secret")
    _notebook(sub / "hw.ipynb", cells=6)
    os.link(outside / "gradebook.db", sub / "g.db")
    os.symlink(outside / "gradebook.db", sub / "s.db")
    with open(sub / "big.bin", "wb") as fh:
        fh.truncate(2 * MiB)  # sparse: counts at its full length
    (sub / "small.txt").write_text("ok")
    (sub / "timestamp.txt").write_text("yesterday-ish")
    protected = protected_inodes(outside, str(outside / "gradebook.db"))
    intake = inspect_submission(sub, ["hw"], LIMITS, protected)
    assert intake.skip == {"g.db": "hard link", "s.db": "special", "big.bin": "size",
                           "hw.ipynb": "notebook too large", "timestamp.txt": "timestamp"}
    assert intake.refused_notebooks == ["hw"]
    statuses = {status for status, _, _ in intake.notes}
    assert statuses == {"tampered", "files", "too-large", "bad-timestamp"}
    stage(sub, tmp_path / "staged", intake.skip)
    assert sorted(os.listdir(tmp_path / "staged")) == ["small.txt"]


def test_notebook_over_the_byte_limit_is_not_parsed(tmp_path):
    (tmp_path / "hw.ipynb").write_text("x" * (LIMITS.max_notebook_bytes + 1))  # not even JSON
    intake = inspect_submission(tmp_path, ["hw"], LIMITS)
    assert intake.refused_notebooks == ["hw"]
    assert "over the 64 KiB limit" in intake.notes[0][2]


def test_hard_linked_notebook_is_accepted(tmp_path):
    """An instructor's cp -al shares the notebook's inode with the exchange: fine."""
    (tmp_path / "exchange").mkdir()
    (tmp_path / "sub").mkdir()
    _notebook(tmp_path / "exchange" / "hw.ipynb")
    os.link(tmp_path / "exchange" / "hw.ipynb", tmp_path / "sub" / "hw.ipynb")
    assert inspect_submission(tmp_path / "sub", ["hw"], LIMITS).skip == {}


def test_csv_text_defuses_formulas_only():
    assert [csv_text(v) for v in ("=1+2", "+x", "-y", "@SUM(A1)", "\tz", "ann", "1.5")] == [
        "'=1+2", "'+x", "'-y", "'@SUM(A1)", "'\tz", "ann", "1.5"]
