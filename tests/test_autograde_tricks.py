"""Differential test: ``course grade`` never scores a trick higher than ``nbgrader autograde``.

A small course whose test cells call ``course_utils.grading`` (as the assignments do) is
graded twice, by plain ``nbgrader autograde`` (in this process, unsandboxed: the tricks
below are harmless to the host) and by :func:`course_utils.autograde.grade_assignment`.
Every trick submission has a *wrong* answer and tries to hide the failing tests: it
silences tracebacks (``set_custom_exc``, a ``_render_traceback_`` that raises,
``bdb.BdbQuit``, a swapped ``builtins.AssertionError``, a replaced ``showtraceback``,
``clear_output`` after each cell, a fake ``course_utils.grading`` in ``sys.modules``)
or ships a ``course_utils/`` folder that shadows the real package.

The grader decides from the kernel's execute reply, so each trick scores zero with
``course grade``, and no cell ever scores more than nbgrader gives it.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from course_utils.autograde import GiB, Limits, grade_assignment
from course_utils.bench.grade import _nbgrader_autograde, add_submission, prepare_course

from _bwrap import BWRAP_REASON, bwrap_usable  # tests/_bwrap.py

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not bwrap_usable(), reason=BWRAP_REASON)]

COURSE_ID = "tricks-fixture"
WRONG = "def answer():\n    return 2.0\n"


def _meta(gid, **kw):
    m = {"grade": False, "grade_id": gid, "locked": False, "schema_version": 3,
         "solution": False, "task": False}
    m.update(kw)
    return {"nbgrader": m}


def _source_course(root: Path) -> Path:
    """``tr1``: a setup cell importing course_utils.grading, one answer, two tests
    (a checker call and a plain assert), one point each."""
    nb = new_notebook(cells=[
        new_markdown_cell("# Tricks", metadata=_meta("intro", locked=True)),
        new_code_cell("import numpy as np\n"
                      "from course_utils.grading import check_close, setup_grading\n"
                      "GRADING = setup_grading()", metadata=_meta("setup", locked=True)),
        new_code_cell("def answer():\n    ### BEGIN SOLUTION\n    return 3.0\n"
                      "    ### END SOLUTION", metadata=_meta("answer", solution=True)),
        new_code_cell("check_close(answer(), 3.0, name='answer()')\n### BEGIN HIDDEN TESTS\n"
                      "check_close(answer() * 2, 6.0)\n### END HIDDEN TESTS",
                      metadata=_meta("test_checker", grade=True, locked=True, points=1)),
        new_code_cell("assert answer() == 3.0, 'answer() should be 3'\n"
                      "### BEGIN HIDDEN TESTS\nassert answer() > 0\n### END HIDDEN TESTS",
                      metadata=_meta("test_assert", grade=True, locked=True, points=1)),
    ])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    (root / "source" / "tr1").mkdir(parents=True)
    nbformat.write(nb, root / "source" / "tr1" / "tr1.ipynb")
    (root / "nbgrader_config.py").write_text(
        f"c = get_config()  # noqa: F821\nc.CourseDirectory.course_id = {COURSE_ID!r}\n")
    return root


# A wrong answer() plus code that tries to make the failing tests look passed.
_RAISING = ("class _Sneaky:\n    def __init__(self, exc):\n        self.exc = exc\n"
            "    def _raise(self, *a, **k):\n        raise self.exc\n"
            "    __eq__ = __float__ = __array__ = __mul__ = __gt__ = _raise\n")
TRICKS = {
    "custom_exc": WRONG + "get_ipython().set_custom_exc((BaseException,), "
                          "lambda shell, etype, value, tb, tb_offset=None: None)\n",
    "custom_exc_stderr": WRONG + "import sys, traceback\n"
                                 "get_ipython().set_custom_exc((BaseException,), lambda shell, etype, "
                                 "value, tb, tb_offset=None: print('quiet', file=sys.stderr))\n",
    "render_traceback": "class _E(BaseException):\n    def _render_traceback_(self):\n"
                        "        raise RuntimeError('no traceback')\n" + _RAISING
                        + "def answer():\n    return _Sneaky(_E())\n",
    "bdbquit": "import bdb\n" + _RAISING + "def answer():\n    return _Sneaky(bdb.BdbQuit())\n",
    "system_exit": _RAISING + "def answer():\n    return _Sneaky(SystemExit(0))\n",
    "keyboard_interrupt": _RAISING + "def answer():\n    return _Sneaky(KeyboardInterrupt())\n",
    "assertion_swap": WRONG + "import bdb, builtins\nclass _Quiet(bdb.BdbQuit):\n    pass\n"
                              "builtins.AssertionError = _Quiet\n",
    "showtraceback": WRONG + "get_ipython().showtraceback = lambda *a, **k: None\n"
                             "get_ipython()._showtraceback = lambda *a, **k: None\n",
    "clear_output": WRONG + "from IPython.display import clear_output\n"
                            "get_ipython().events.register('post_run_cell', "
                            "lambda result: clear_output())\n",
    "sys_modules": WRONG + "import sys, types, bdb\n_fake = types.ModuleType('course_utils.grading')\n"
                           "def _quiet(*a, **k):\n    raise bdb.BdbQuit()\n"
                           "_fake.check_close = _quiet\nsys.modules['course_utils.grading'] = _fake\n"
                           "from course_utils.grading import check_close\n",
}
SHADOW_INIT = "def __getattr__(name):\n    raise AttributeError(name)\n"
SHADOW_GRADING = ("def check_close(*args, **kwargs):\n    return None\n\n"
                  "def setup_grading(**kwargs):\n    return True\n")


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tricks")
    src = _source_course(tmp / "src")
    courses = {}
    for side in ("nbgrader", "course"):
        c = prepare_course(src, tmp / side, "tr1")
        add_submission(c, "tr1", "honest")
        add_submission(c, "tr1", "wrong", answers={"answer": WRONG}, base="release")
        for name, code in TRICKS.items():
            add_submission(c, "tr1", name, answers={"answer": code}, base="release")
        shadow = add_submission(c, "tr1", "shadow", answers={"answer": WRONG}, base="release")
        (shadow / "course_utils" / "grading").mkdir(parents=True)
        (shadow / "course_utils" / "__init__.py").write_text(SHADOW_INIT)
        (shadow / "course_utils" / "grading" / "__init__.py").write_text(SHADOW_GRADING)
        helper = add_submission(c, "tr1", "helper", answers={"answer": "from helper_mod import answer"},
                                base="release")
        (helper / "helper_mod.py").write_text("def answer():\n    return 3.0\n")
        courses[side] = c
    _nbgrader_autograde(courses["nbgrader"], "tr1")
    run = grade_assignment("tr1", courses["course"], workers=2, progress=False, feedback=False,
                           limits=Limits(wall_seconds=60, cell_timeout=20, memory=2 * GiB))
    yield {"nbgrader": _cell_scores(courses["nbgrader"]), "course": _cell_scores(courses["course"]),
           "run": run, "courses": courses}
    for c in courses.values():
        shutil.rmtree(c, ignore_errors=True)


def _cell_scores(course: Path) -> dict[str, dict[str, float]]:
    from nbgrader.api import Gradebook

    out = {}
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}", COURSE_ID) as gb:
        for sub in gb.assignment_submissions("tr1"):
            for nb in sub.notebooks:
                out[sub.student.id] = {g.name: float(g.score) for g in nb.grades}
    return out


def test_honest_and_wrong_agree_with_nbgrader(both):
    # "helper" imports its answer from a module shipped next to the notebook: the
    # submission's folder is still importable, after the installed packages.
    for student, total in (("honest", 2.0), ("wrong", 0.0), ("helper", 2.0)):
        assert both["course"][student] == both["nbgrader"][student], student
        assert sum(both["course"][student].values()) == total, both["course"][student]


@pytest.mark.parametrize("student", sorted(TRICKS) + ["shadow"])
def test_trick_never_scores_more_than_nbgrader(both, student):
    ours, theirs = both["course"][student], both["nbgrader"][student]
    higher = {cell: (ours[cell], theirs[cell]) for cell in ours if ours[cell] > theirs[cell]}
    assert not higher, f"{student}: course grade gave more than nbgrader (ours, nbgrader): {higher}"
    assert sum(ours.values()) == 0, f"{student}: a wrong answer scored {ours}"


def test_hidden_errors_are_shown_in_the_graded_notebook(both):
    """A test that failed without printing anything gets the reply's error as its output."""
    course = both["courses"]["course"]
    nb = nbformat.read(course / "autograded" / "custom_exc" / "tr1" / "tr1.ipynb", as_version=4)
    cell = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "test_assert")
    errors = [o for o in cell.outputs if o.output_type == "error"]
    assert errors and errors[0].ename == "AssertionError", cell.outputs
