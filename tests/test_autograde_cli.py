"""``course grade``: the command end to end on the fixture course, and its errors."""
from __future__ import annotations

import csv

import pytest

from course_utils.bench.grade import add_submission, fixture_course, prepare_course
from course_utils.cli import main

from _bwrap import BWRAP_REASON, bwrap_usable  # tests/_bwrap.py



pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    c = prepare_course(fixture_course(), tmp_path_factory.mktemp("cli") / "course", "ag1")
    add_submission(c, "ag1", "good")
    add_submission(c, "ag1", "blank", base="release")
    empty = c / "submitted" / "empty" / "ag1"  # a folder without the notebook
    empty.mkdir(parents=True)
    (empty / "timestamp.txt").write_text("2026-01-15 12:00:00.000000 UTC")
    broken = c / "submitted" / "broken" / "ag1"  # a notebook that is not JSON
    broken.mkdir(parents=True)
    (broken / "ag1.ipynb").write_text("{not json")
    return c


@pytest.mark.skipif(not bwrap_usable(), reason=BWRAP_REASON)
def test_course_grade_command(course, tmp_path, capsys):
    out_csv = tmp_path / "grades.csv"
    rc = main(["grade", "ag1", "--course-dir", str(course), "--workers", "2",
               "--timeout", "120", "--csv", str(out_csv)])
    captured = capsys.readouterr()
    out = captured.out
    # 'broken' could not be graded: loudly, with exit status 1
    assert rc == 1 and "could not be graded: broken" in captured.err
    table = {line.split()[0]: line.split() for line in out.splitlines()
             if line.startswith(("good ", "blank ", "empty ", "broken "))}
    assert table == {"good": ["good", "3", "3", "ok"], "blank": ["blank", "0", "3", "ok"],
                     "empty": ["empty", "0", "3", "missing"],
                     "broken": ["broken", "0", "3", "error"]}
    assert "graded in" in out and "sandboxed" in out and str(out_csv) in out
    rows = {r["student"]: r for r in csv.DictReader(open(out_csv, newline=""))}
    assert rows["good"]["score"] == "3" and rows["blank"]["score"] == "0"
    assert "NotJSONError" in rows["broken"]["notes"]
    assert "ag1.ipynb" in rows["empty"]["notes"]
    assert "feedback HTML in" in out and "(none for: broken, empty)" in out
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}", "autograde-fixture") as gb:
        assert gb.find_submission("ag1", "empty").score == 0  # recorded, unlike nbgrader
    for student in ("good", "blank"):
        html = course / "feedback" / student / "ag1" / "ag1.html"
        assert html.exists() and "test_add" in html.read_text()
        assert (course / "autograded" / student / "ag1" / "ag1.ipynb").exists()


def test_missing_bubblewrap_is_a_clear_error(course, monkeypatch, capsys):
    monkeypatch.setenv("COURSE_BWRAP", "/nonexistent/bwrap")
    rc = main(["grade", "ag1", "--course-dir", str(course)])
    err = capsys.readouterr().err
    assert rc == 2
    assert "apt-get install bubblewrap" in err and "--no-sandbox" in err


def test_unknown_assignment_and_course(course, tmp_path, capsys):
    assert main(["grade", "nope", "--course-dir", str(course)]) == 2
    err = capsys.readouterr().err
    assert "'nope' is not in the gradebook" in err and "ag1" in err
    assert main(["grade", "ag1", "--course-dir", str(tmp_path / "missing")]) == 2
    assert "is not a directory" in capsys.readouterr().err


def test_grade_options_reach_the_grader(monkeypatch, capsys, tmp_path):
    """--memory, --cell-timeout, --student, --no-feedback and --ro-bind (plus the
    environment variable) end up in grade_assignment's arguments and limits."""
    import course_utils.autograde.grader as grader
    from course_utils.autograde import GiB, GradeRun, MiB, parse_size

    seen = {}

    def fake(assignment, course_dir, **kwargs):
        seen.update(kwargs, assignment=assignment)
        return GradeRun(assignment=assignment, course_dir=tmp_path, results=[], seconds=0.0,
                        sandboxed=True, workers=1)

    monkeypatch.setattr(grader, "grade_assignment", fake)
    monkeypatch.setenv("COURSE_GRADE_RO_BINDS", "/data/a")
    rc = main(["grade", "ag1", "--memory", "1.5G", "--cell-timeout", "45", "--student", "ann",
               "--student", "bob", "--no-feedback", "--ro-bind", "/data/b", "--timeout", "60"])
    assert rc == 0, capsys.readouterr()
    limits = seen["limits"]
    assert limits.memory == int(1.5 * GiB) and limits.cell_timeout == 45
    assert limits.wall_seconds == 60
    assert seen["students"] == ["ann", "bob"] and seen["feedback"] is False
    assert seen["ro_binds"] == ["/data/a", "/data/b"]
    # defaults: 4 GiB, nbgrader's cell timeout, everyone, feedback on
    main(["grade", "ag1"])
    assert seen["limits"].memory == 4 * GiB and seen["limits"].cell_timeout is None
    assert seen["students"] is None and seen["feedback"] is True

    assert parse_size("512M") == 512 * MiB and parse_size("2GiB") == 2 * GiB
    assert parse_size("1000") == 1000
    with pytest.raises(ValueError, match="--memory"):
        parse_size("lots", "--memory")
    assert main(["grade", "ag1", "--memory=-1G"]) == 2
    assert "--memory" in capsys.readouterr().err
