"""The tiny nbgrader course that ``course bench grade`` and the autograde tests grade.

Built in code rather than read from the repository's ``tests/`` folder, so that the
benchmark works from an installed package (a wheel has no ``tests/``) and the course
cannot drift from what the bench describes.  One assignment, ``ag1``: ``add(a, b)``
(a visible and a hidden test, 1 point) and ``mean_of_squares(xs)`` reading
``values.txt`` (2 points); the hidden tests carry :data:`HIDDEN_MARKER`, which the
sandbox tests look for in places a submission must not see.
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["write_fixture_course", "COURSE_ID", "ASSIGNMENT", "HIDDEN_MARKER"]

COURSE_ID = "autograde-fixture"
ASSIGNMENT = "ag1"
HIDDEN_MARKER = "hidden-test-marker-7f3a"

_CELLS = [  # (id, type, grade_id, points or None, solution, locked, source)
    ("intro", "markdown", "intro", None, False, True,
     "# Autograde fixture\n\nTwo small functions, each checked by a visible and a hidden test."),
    ("setup", "code", "setup", None, False, True, "import numpy as np"),
    ("add-text", "markdown", "add_text", None, False, True,
     "Write `add(a, b)` that returns the sum of its two arguments."),
    ("add-answer", "code", "add_answer", None, True, False,
     "def add(a, b):\n    ### BEGIN SOLUTION\n    return a + b\n    ### END SOLUTION"),
    ("test-add", "code", "test_add", 1, False, True,
     "assert add(1, 2) == 3\n### BEGIN HIDDEN TESTS\n"
     f"assert add(-4, 4) == 0  # {HIDDEN_MARKER}\n### END HIDDEN TESTS"),
    ("mos-text", "markdown", "mos_text", None, False, True,
     "Write `mean_of_squares(xs)`: the mean of the squares of the numbers in `xs`, as a float."),
    ("mos-answer", "code", "mos_answer", None, True, False,
     "def mean_of_squares(xs):\n    ### BEGIN SOLUTION\n    xs = np.asarray(xs, dtype=float)\n"
     "    return float(np.mean(xs ** 2))\n    ### END SOLUTION"),
    ("test-mos", "code", "test_mos", 2, False, True,
     'values = np.loadtxt("values.txt")\n'
     "assert np.isclose(mean_of_squares(values), np.mean(values ** 2))\n"
     "### BEGIN HIDDEN TESTS\n"
     f"assert np.isclose(mean_of_squares([3.0]), 9.0)  # {HIDDEN_MARKER}\n### END HIDDEN TESTS"),
]


def write_fixture_course(dest: str | Path) -> Path:
    """Write ``nbgrader_config.py`` and ``source/ag1/`` (notebook and ``values.txt``)
    under ``dest``; returns ``dest``."""
    import nbformat
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

    dest = Path(dest)
    src = dest / "source" / ASSIGNMENT
    src.mkdir(parents=True, exist_ok=True)
    cells = []
    for cell_id, kind, grade_id, points, solution, locked, source in _CELLS:
        meta = {"grade": points is not None, "grade_id": grade_id, "locked": locked,
                "schema_version": 3, "solution": solution, "task": False}
        if points is not None:
            meta["points"] = points
        make = new_code_cell if kind == "code" else new_markdown_cell
        cell = make(source, metadata={"nbgrader": meta})
        cell["id"] = cell_id
        cells.append(cell)
    nb = new_notebook(cells=cells, metadata={
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"}})
    nbformat.write(nb, src / f"{ASSIGNMENT}.ipynb")
    (src / "values.txt").write_text("1.5\n2.0\n-3.0\n4.25\n")
    (dest / "nbgrader_config.py").write_text(
        "# nbgrader configuration of the tiny fixture course (course_utils.bench.fixture_course)\n"
        "c = get_config()  # noqa: F821 (provided by traitlets when the file is loaded)\n"
        f"c.CourseDirectory.course_id = {COURSE_ID!r}\n")
    return dest
