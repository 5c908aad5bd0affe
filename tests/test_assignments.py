"""The nbgrader round trip of every assignment, as CI proof that the course can be graded.

For each assignment under ``assignments/source/`` (in a temporary copy of the course
directory, so the repository's gradebook is never touched) this runs the real nbgrader
command line once:

* ``nbgrader generate_assignment`` -> the released copies hold no solution code and no
  hidden tests (scanned line by line against the source);
* ``nbgrader autograde`` of three kinds of submission, all in one call:
  the instructor's source notebooks (full marks on every autograded cell), the released
  blank notebooks (zero on every autograded cell, and the grader survives them), and the
  fixture submissions in ``tests/fixtures/submissions/<student>/<assignment>/`` whose scores
  are pinned in ``expected_scores.json`` (partly correct, alternative correct, a typo);
* ``nbgrader validate`` of the source notebooks.

Assignments are processed two at a time (the machine has two cores); each notebook takes
seconds because the exercises shrink their training when ``NBGRADER_EXECUTION`` is set.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COURSE = ROOT / "assignments"
FIXTURES = ROOT / "tests" / "fixtures" / "submissions"
VENV_BIN = Path(sys.executable).parent
ASSIGNMENTS = sorted(p.name for p in (COURSE / "source").iterdir() if p.is_dir())
GENERATED = ("gradebook.db", "release", "submitted", "autograded", "feedback", "exports",
             ".ipynb_checkpoints", "__pycache__")
STEP_TIMEOUT = 600

pytestmark = pytest.mark.slow


@dataclass
class RoundTrip:
    """What nbgrader did with one assignment in its own temporary course directory."""

    assignment: str
    course: Path
    log: list[str] = field(default_factory=list)
    error: str | None = None
    scores: dict = field(default_factory=dict)  # student -> notebook -> grade_id -> (auto, max, type)
    validate_output: str = ""

    def fail_if_broken(self) -> None:
        if self.error:
            pytest.fail(f"nbgrader round trip of {self.assignment} failed: {self.error}\n"
                        + "\n".join(self.log)[-6000:])


def _nbgrader(args: list[str], cwd: Path, rt: RoundTrip) -> str:
    env = dict(os.environ)
    # nbgrader runs `alembic` to create the gradebook: the venv's bin must be on PATH.
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("MPLBACKEND", "Agg")
    # two assignments grade side by side on two cores: one compute thread per kernel
    for var in ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
        env.setdefault(var, "1")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    proc = subprocess.run([str(VENV_BIN / "nbgrader"), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=STEP_TIMEOUT)
    out = proc.stdout + proc.stderr
    rt.log.append(f"$ nbgrader {' '.join(args)}  (exit {proc.returncode})\n{out[-3000:]}")
    if proc.returncode != 0:
        raise RuntimeError(f"'nbgrader {' '.join(args)}' exited with {proc.returncode}")
    return out


def fixture_students(assignment: str) -> list[str]:
    return sorted(p.parent.name for p in FIXTURES.glob(f"*/{assignment}") if p.is_dir())


def _round_trip(assignment: str, base: Path) -> RoundTrip:
    course = base / assignment
    rt = RoundTrip(assignment, course)
    try:
        shutil.copytree(COURSE, course, ignore=shutil.ignore_patterns(*GENERATED))
        _nbgrader(["generate_assignment", assignment, "--force"], course, rt)
        submitted = course / "submitted"
        shutil.copytree(course / "source" / assignment, submitted / "instructor" / assignment)
        shutil.copytree(course / "release" / assignment, submitted / "blank" / assignment)
        for student in fixture_students(assignment):
            shutil.copytree(FIXTURES / student / assignment, submitted / student / assignment)
        _nbgrader(["autograde", assignment, "--force"], course, rt)
        sources = sorted(str(p.relative_to(course)) for p in (course / "source" / assignment).glob("*.ipynb"))
        rt.validate_output = _nbgrader(["validate", *sources], course, rt)
        rt.scores = _read_scores(course, assignment)
    except Exception as exc:  # reported by every test of this assignment
        rt.error = f"{type(exc).__name__}: {exc}"
    return rt


def _read_scores(course: Path, assignment: str) -> dict:
    from nbgrader.api import Gradebook

    out: dict = {}
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}", "transfer-learning") as gb:
        for sub in gb.find_assignment(assignment).submissions:
            for nb in sub.notebooks:
                out.setdefault(sub.student.id, {})[nb.name] = {
                    g.name: (g.auto_score, g.max_score, g.cell_type) for g in nb.grades}
    return out


@pytest.fixture(scope="module")
def round_trips(request, tmp_path_factory) -> dict[str, RoundTrip]:
    """The round trips of the assignments the selected tests ask about (all of them unless
    ``-k`` narrows the selection, e.g. ``-k a5``)."""
    wanted = sorted({item.callspec.params["assignment"] for item in request.session.items
                     if "assignment" in getattr(getattr(item, "callspec", None), "params", {})})
    base = tmp_path_factory.mktemp("nbgrader")
    with ThreadPoolExecutor(max_workers=2) as pool:
        done = list(pool.map(lambda a: _round_trip(a, base), wanted or ASSIGNMENTS))
    return {rt.assignment: rt for rt in done}


def _cells(path: Path) -> list[dict]:
    return json.loads(path.read_text())["cells"]


def _src(cell: dict) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def _regions(text: str, begin: str, end: str) -> list[str]:
    return re.findall(rf"{re.escape(begin)}\n(.*?){re.escape(end)}", text, flags=re.S)


def test_five_assignments_exist():
    assert ASSIGNMENTS == ["a1_learning_curves", "a2_feature_extraction", "a3_finetune_pytorch",
                           "a4_finetune_keras", "a5_scratch_vs_pretrained"], ASSIGNMENTS


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_source_notebooks_are_well_formed(assignment):
    """kernelspec python3, 3 to 6 graded parts, at least one hand-graded written answer,
    hidden tests in every autograded test cell."""
    for path in sorted((COURSE / "source" / assignment).glob("*.ipynb")):
        nb = json.loads(path.read_text())
        assert nb["metadata"]["kernelspec"]["name"] == "python3", path
        graded = [c for c in nb["cells"] if c["metadata"].get("nbgrader", {}).get("grade")]
        assert 3 <= len(graded) <= 6, f"{path.name}: {len(graded)} graded parts"
        manual = [c for c in graded if c["cell_type"] == "markdown"]
        assert manual, f"{path.name} has no manually graded written answer"
        for c in graded:
            if c["cell_type"] == "code":
                assert "### BEGIN HIDDEN TESTS" in _src(c), f"{path.name}:{c['id']} has no hidden tests"
        solutions = [c for c in nb["cells"] if c["metadata"].get("nbgrader", {}).get("solution")
                     and c["cell_type"] == "code"]
        for c in solutions:
            assert "### BEGIN SOLUTION" in _src(c), f"{path.name}:{c['id']} has no solution region"
        assert all(not c.get("outputs") for c in nb["cells"]), f"{path.name} is committed with outputs"


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_release_has_no_solutions_or_hidden_tests(round_trips, assignment):
    rt = round_trips[assignment]
    rt.fail_if_broken()
    for src_path in sorted((rt.course / "source" / assignment).glob("*.ipynb")):
        rel_path = rt.course / "release" / assignment / src_path.name
        assert rel_path.exists(), f"generate_assignment did not release {src_path.name}"
        released_text = "\n".join(_src(c) for c in _cells(rel_path))
        for marker in ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS"):
            assert marker not in released_text, f"{rel_path.name} still contains '{marker}'"
        src_cells = _cells(src_path)
        public = "\n".join(re.sub(r"### BEGIN (SOLUTION|HIDDEN TESTS)\n.*?### END \1", "", _src(c), flags=re.S)
                           for c in src_cells if c["cell_type"] == "code")
        public_lines = {ln.strip() for ln in public.splitlines()}
        secret_lines = set()
        for c in src_cells:
            s = _src(c)
            for region in _regions(s, "### BEGIN SOLUTION", "### END SOLUTION") + \
                    _regions(s, "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"):
                secret_lines |= {ln.strip() for ln in region.splitlines()}
        secret_lines = {ln for ln in secret_lines
                        if len(ln) > 12 and not ln.startswith("#") and ln not in public_lines}
        assert secret_lines, f"{src_path.name}: no solution or hidden-test lines found to scan for"
        released_lines = {ln.strip() for ln in released_text.splitlines()}
        leaked = sorted(secret_lines & released_lines)
        assert not leaked, f"{rel_path.name} leaks solution/hidden-test lines: {leaked[:5]}"
        for c_src, c_rel in zip(src_cells, _cells(rel_path)):
            meta = c_src["metadata"].get("nbgrader", {})
            if c_src["cell_type"] == "markdown" and meta.get("solution"):
                assert _src(c_rel).strip() == "YOUR ANSWER HERE", f"{c_src['id']}: model answer released"


def _autograded(scores: dict) -> dict:
    return {(nb, gid): (auto, mx) for nb, grades in scores.items()
            for gid, (auto, mx, kind) in grades.items() if kind == "code"}


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_instructor_solution_scores_full_marks(round_trips, assignment):
    rt = round_trips[assignment]
    rt.fail_if_broken()
    graded = _autograded(rt.scores["instructor"])
    assert graded, "no autograded cells"
    short = {k: v for k, v in graded.items() if v[0] != v[1]}
    assert not short, f"the instructor's solution lost points (cell: (score, max)): {short}"


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_blank_release_scores_zero_without_crashing_the_grader(round_trips, assignment):
    rt = round_trips[assignment]
    rt.fail_if_broken()
    graded = _autograded(rt.scores["blank"])
    assert graded and all(mx > 0 for _, mx in graded.values())
    nonzero = {k: v for k, v in graded.items() if v[0] != 0}
    assert not nonzero, f"the blank notebook earned points (cell: (score, max)): {nonzero}"


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_nbgrader_validate_passes_on_the_solutions(round_trips, assignment):
    rt = round_trips[assignment]
    rt.fail_if_broken()
    out = rt.validate_output
    n = len(list((COURSE / "source" / assignment).glob("*.ipynb")))
    assert out.count("Success! Your notebook passes all the tests.") == n, out[-3000:]
    assert "VALIDATION FAILED" not in out, out[-3000:]
    # Any error nbgrader logs fails the test; tornado's "Socket operation on non-socket" line,
    # which jupyter_client may log while a kernel shuts down on a loaded machine after
    # "Success!" was printed, is not nbgrader's and is left out.
    errors = [line for line in out.splitlines()
              if "ERROR" in line and not line.startswith("ERROR:tornado.general")]
    assert not errors, out[-3000:]


EXPECTED = json.loads((FIXTURES / "expected_scores.json").read_text()) if (FIXTURES / "expected_scores.json").exists() else {}


def test_fixtures_cover_two_assignments_and_three_kinds():
    kinds = {student for by_student in EXPECTED.values() for student in by_student}
    assert len(EXPECTED) >= 2, EXPECTED.keys()
    assert {"partly_correct", "alternative", "typo"} <= kinds, kinds
    for assignment, by_student in EXPECTED.items():
        for student in by_student:
            assert (FIXTURES / student / assignment).is_dir(), f"missing fixture {student}/{assignment}"


@pytest.mark.parametrize("assignment,student", [(a, s) for a in sorted(EXPECTED) for s in sorted(EXPECTED[a])])
def test_fixture_submissions_score_exactly_as_expected(round_trips, assignment, student):
    rt = round_trips[assignment]
    rt.fail_if_broken()
    want = EXPECTED[assignment][student]
    got = {nb: {gid: auto for gid, (auto, mx, kind) in grades.items() if kind == "code"}
           for nb, grades in rt.scores[student].items()}
    assert got == want, f"{student}/{assignment}: autograded scores {got}, expected {want}"
