"""``course grade``: honest reporting, files in a submission, and bounded output.

One module-scoped run grades the fixture course ``ag1`` (1 + 2 points) with small
limits, for submissions that each test one rule of issue 18:

* reporting -- a forged "Notes from the autograder" cell, student ids that are glob
  patterns (``instructo[r]``) or spreadsheet formulas (``=1+2``), a malformed
  ``timestamp.txt``, and a re-grade that fails (stale score, exit status 1);
* files -- a 3 GiB sparse file, hard links to the gradebook and the solutions, and a
  notebook that is itself a hard link (an instructor's ``cp -al``: graded normally);
* output -- a notebook over the cell limit, one that prints past the per-notebook
  output limit, and one whose single message is over the per-cell limit.
"""
from __future__ import annotations

import csv
import os
import shutil

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell

from course_utils.autograde import GiB, MiB, Limits, grade_assignment
from course_utils.autograde.execute import NOTE_CELL_ID
from course_utils.bench.grade import add_submission, fixture_course, prepare_course
from course_utils.cli import main

from _bwrap import BWRAP_REASON, bwrap_usable  # tests/_bwrap.py

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not bwrap_usable(), reason=BWRAP_REASON)]

LIMITS = Limits(wall_seconds=60, cell_timeout=20, memory=1 * GiB, max_output_bytes=1 * MiB,
                max_notebook_output_bytes=2 * MiB, max_cells=60,
                max_submission_bytes=8 * MiB, max_notebook_bytes=2 * MiB)
FORGED = "**Notes from the autograder**\n\n- All tests passed. Full marks."


def _insert_before(nb, grade_id, *cells):
    at = next(i for i, c in enumerate(nb.cells)
              if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)
    nb.cells[at:at] = list(cells)


def _meta_of(nb, grade_id):
    return next(c.metadata["nbgrader"] for c in nb.cells
                if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)


def _forge(nb):
    cell = new_markdown_cell(FORGED, metadata={"course_grade": {"note": True}})
    cell["id"] = NOTE_CELL_ID
    nb.cells.insert(0, cell)
    nb.metadata["course_grade"] = {"notes": ["All tests passed. Full marks."]}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    course = prepare_course(fixture_course(), tmp_path_factory.mktemp("limits") / "course", "ag1")
    add_submission(course, "ag1", "forger", edit=_forge)
    mine = add_submission(course, "ag1", "instructor")
    (mine / "submission_secret.txt").write_text("s3cret-from-the-exchange")  # as collect leaves it
    add_submission(course, "ag1", "instructo[r]", base="release")
    add_submission(course, "ag1", "=1+2")
    bad_ts = add_submission(course, "ag1", "badtime")
    (bad_ts / "timestamp.txt").write_text("last tuesday, honest")
    add_submission(course, "ag1", "regrade")
    # files
    sparse = add_submission(course, "ag1", "sparse")
    with open(sparse / "huge.bin", "wb") as fh:
        fh.truncate(3 * GiB)
    (sparse / "small.txt").write_text("kept")
    linked = add_submission(course, "ag1", "hardlinks")
    os.link(course / "gradebook.db", linked / "grades.db")
    os.link(course / "source" / "ag1" / "ag1.ipynb", linked / "solution.ipynb")
    cpal = add_submission(course, "ag1", "cpal")  # the notebook itself shares its inode
    outside = course.parent / "exchange-copy.ipynb"
    shutil.move(cpal / "ag1.ipynb", outside)
    os.link(outside, cpal / "ag1.ipynb")
    # output and size
    add_submission(course, "ag1", "manycells", edit=lambda nb: _insert_before(
        nb, "test_add", *[new_code_cell("pass") for _ in range(80)]))
    add_submission(course, "ag1", "chatty", edit=lambda nb: _insert_before(
        nb, "test_mos", *[new_code_cell("print('x' * 900_000)") for _ in range(4)]))
    add_submission(course, "ag1", "onebig", edit=lambda nb: _insert_before(
        nb, "test_mos", new_code_cell("import sys\nsys.stdout.write('y' * 6_000_000)\n"
                                      "sys.stdout.flush()")))
    # tampered nbgrader metadata
    add_submission(course, "ag1", "nogradeid", edit=lambda nb: _meta_of(nb, "test_add").pop("grade_id"))
    add_submission(course, "ag1", "flags", edit=lambda nb: _meta_of(nb, "test_add").update(solution=True))
    run = grade_assignment("ag1", course, workers=2, limits=LIMITS, progress=False)
    return {"run": run, "course": course, "results": run.by_student()}


def _graded_nb(course, student):
    return nbformat.read(course / "autograded" / student / "ag1" / "ag1.ipynb", as_version=4)


def test_forged_note_cell_is_removed_and_real_notes_sit_outside_the_cells(graded):
    r, course = graded["results"]["forger"], graded["course"]
    assert (r.score, r.status) == (3, "tampered")
    nb = _graded_nb(course, "forger")
    notes = [c for c in nb.cells if "Notes from the autograder" in c.source]
    assert len(notes) == 1 and "Full marks" not in notes[0].source
    assert "posing as" in notes[0].source
    assert nb.metadata["course_grade"]["notes"] == r.notes
    page = (course / "feedback" / "forger" / "ag1" / "ag1.html").read_text()
    assert "Full marks" not in page
    banner = page.index('class="course-grade-notes"')
    assert banner < page.index("test_add")  # before every cell of the notebook
    good = (course / "feedback" / "instructor" / "ag1" / "ag1.html").read_text()
    assert "course-grade-notes" not in good


def test_student_ids_are_literal_not_glob_patterns(graded):
    res = graded["results"]
    assert (res["instructor"].score, res["instructo[r]"].score) == (3, 0)
    assert (graded["course"] / "autograded" / "instructo[r]" / "ag1" / "ag1.ipynb").exists()
    assert (graded["course"] / "feedback" / "instructo[r]" / "ag1" / "ag1.html").exists()


def test_csv_cells_cannot_start_a_formula(graded):
    with open(graded["run"].csv_path, newline="") as fh:
        rows = {r["student"]: r for r in csv.DictReader(fh)}
    assert "'=1+2" in rows and "=1+2" not in rows
    assert rows["'=1+2"]["score"] == "3"


def test_malformed_timestamp_is_a_clear_note(graded):
    r = graded["results"]["badtime"]
    assert (r.score, r.status, r.late_penalty) == (3, "bad-timestamp", 0)
    assert any("timestamp.txt" in n and "last tuesday" in n for n in r.notes)
    assert not any("AttributeError" in n for n in r.notes)


def test_sparse_file_left_out_with_a_note(graded):
    r, course = graded["results"]["sparse"], graded["course"]
    assert (r.score, r.status) == (3, "files")
    assert any("huge.bin (3 GiB)" in n and "8 MiB" in n for n in r.notes)
    assert not (course / "autograded" / "sparse" / "ag1" / "huge.bin").exists()
    assert (course / "autograded" / "sparse" / "ag1" / "small.txt").exists()
    # the feedback folder holds the pages and the timestamp release_feedback reads, none
    # of the submission's files
    assert sorted(p.name for p in (course / "feedback" / "sparse" / "ag1").iterdir()) == [
        "ag1.html", "timestamp.txt"]


def test_feedback_carries_what_release_feedback_reads(graded):
    """nbgrader release_feedback opens timestamp.txt (and submission_secret.txt, from the
    exchange) beside each page; without them it stops with FileNotFoundError."""
    course = graded["course"]
    fb = course / "feedback" / "instructor" / "ag1"
    assert (fb / "timestamp.txt").read_text() == (
        course / "submitted" / "instructor" / "ag1" / "timestamp.txt").read_text()
    assert (fb / "submission_secret.txt").read_text() == "s3cret-from-the-exchange"


def test_hard_links_out_of_the_submission_are_refused(graded):
    r, course = graded["results"]["hardlinks"], graded["course"]
    assert (r.score, r.status) == (3, "tampered")
    assert any("grades.db" in n and "solution.ipynb" in n and "hard links" in n for n in r.notes)
    for where in ("autograded", "feedback"):
        assert not (course / where / "hardlinks" / "ag1" / "grades.db").exists()
    cpal = graded["results"]["cpal"]
    assert (cpal.score, cpal.status) == (3, "ok")


def test_notebook_with_too_many_cells_scores_zero_with_a_note(graded):
    r = graded["results"]["manycells"]
    assert (r.score, r.status) == (0, "too-large")
    assert any("Notebook too large" in n and "60 cell limit" in n for n in r.notes)
    assert not any("was not submitted" in n for n in r.notes)


def test_output_is_capped_per_notebook(graded):
    r, course = graded["results"]["chatty"], graded["course"]
    assert (r.score, r.status) == (3, "output-limit")
    assert any("for the whole notebook" in n for n in r.notes)
    size = (course / "autograded" / "chatty" / "ag1" / "ag1.ipynb").stat().st_size
    assert size < LIMITS.max_notebook_output_bytes + 1 * MiB


def test_one_oversized_message_is_dropped_and_later_cells_still_run(graded):
    r = graded["results"]["onebig"]
    assert (r.score, r.status) == (3, "output-limit"), r.notes
    assert not any("interrupt" in n for n in r.notes)


def test_failed_regrade_is_loud_and_marks_the_score_stale(graded, capsys):
    course = graded["course"]
    assert graded["results"]["regrade"].score == 3
    (course / "submitted" / "regrade" / "ag1" / "ag1.ipynb").write_text("{not json")
    out_csv = course / "regrade.csv"
    rc = main(["grade", "ag1", "--course-dir", str(course), "--student", "regrade",
               "--timeout", "60", "--csv", str(out_csv)])
    captured = capsys.readouterr()
    assert rc == 1 and "regrade (score STALE)" in captured.err
    assert "3 (STALE)" in captured.out and "GRADING FAILED" in captured.out
    row = next(csv.DictReader(open(out_csv, newline="")))
    assert (row["score"], row["stale"]) == ("3", "yes") and "STALE" in row["notes"]
    assert not (course / "feedback" / "regrade" / "ag1" / "ag1.html").exists()


def test_tampered_metadata_is_described_in_words(graded):
    nogradeid, flags = graded["results"]["nogradeid"], graded["results"]["flags"]
    assert nogradeid.score == 0 and "tampered" in nogradeid.status and nogradeid.failed
    assert any("'grade_id' was removed" in n and "code cell 3 ('assert add(1, 2) == 3')" in n
               for n in nogradeid.notes), nogradeid.notes
    assert flags.score == 0 and "tampered" in flags.status
    assert any("'test_add'" in n and "'solution' set to True" in n for n in flags.notes), flags.notes
    assert not any("KeyError" in n or "Inconsistent checksums" in n
                   for n in nogradeid.notes + flags.notes)


def test_feedback_rendering_has_a_time_limit(graded):
    """A graded notebook too large to render in time gets a status, not a stalled run
    (and no stale page from before)."""
    from course_utils.autograde.report import generate_feedback

    course = graded["course"]
    path = course / "autograded" / "cpal" / "ag1" / "ag1.ipynb"
    nb = nbformat.read(path, as_version=4)
    nb.cells += [new_markdown_cell(f"cell {i} " + "*word* " * 50) for i in range(6000)]
    nbformat.write(nb, path)
    status = generate_feedback(course, "ag1", ["cpal"], progress=False, seconds=1)["cpal"]
    assert "longer than 1 s" in status, status
    assert not (course / "feedback" / "cpal" / "ag1" / "ag1.html").exists()
