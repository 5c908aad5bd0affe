"""Sandboxed parallel grading of hostile submissions (course_utils.autograde).

One module-scoped run grades twelve submissions of the fixture assignment (2
workers, short limits): an honest solution, a blank notebook and ten attacks.  Each
test checks one of them: the attack was contained, the score is right, the status
says what happened -- and the honest submissions in the same run got their scores.

Scores: ``test_add`` is worth 1 point and ``test_mos`` 2 (the fixture course's
``ag1``); the attacks sit in the answer cell for ``mean_of_squares``.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import socket
import sqlite3
import threading
from pathlib import Path

import nbformat
import pytest

from course_utils.autograde import GiB, Limits, grade_assignment
from course_utils.bench.grade import add_submission, fixture_course, prepare_course

from _bwrap import BWRAP_REASON, bwrap_usable  # tests/_bwrap.py



pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not bwrap_usable(), reason=BWRAP_REASON),
]

MARKER = "hidden-test-marker-7f3a"  # appears only in the hidden tests (gradebook, source/)
ADD = "def add(a, b):\n    return a + b\n"
MOS = ("def mean_of_squares(xs):\n    xs = np.asarray(xs, dtype=float)\n"
       "    return float(np.mean(xs ** 2))\n")
LIMITS = Limits(wall_seconds=20, cell_timeout=5, memory=1 * GiB, processes=64)


def _probe_code(probes: dict[str, str]) -> str:
    """Student code that runs each probe and prints one line per probe: what it got."""
    lines = ["import os, socket", "def _probe(name, fn):", "    try:",
             "        got = fn()", "        print(f'PROBE {name}: GOT {got!r:.120}')",
             "    except BaseException as e:",
             "        print(f'PROBE {name}: BLOCKED {type(e).__name__}')"]
    for name, expr in probes.items():
        lines.append(f"_probe({name!r}, lambda: {expr})")
    return "\n".join(lines) + "\n"


class _Listener:
    """A TCP server on the host's loopback that counts connections."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
                self.accepted += 1
                conn.close()
            except OSError:
                pass

    def close(self):
        self._stop.set()
        self._thread.join()
        self.sock.close()


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("autograde")
    course = prepare_course(fixture_course(), tmp / "course", "ag1")
    outside = tmp / "outside"
    outside.mkdir()
    home = Path.home()
    listener = _Listener()
    os.environ["COURSE_TEST_SECRET"] = "instructor-secret-value"
    home_secret = home / f".course-grade-test-secret-{os.getpid()}"  # per run: no race between runs
    home_secret.write_text("instructor-secret-value")

    snoop = _probe_code({
        "relative_source": "open('../../../source/ag1/ag1.ipynb').read()",
        "absolute_source": f"open({str(course / 'source/ag1/ag1.ipynb')!r}).read()",
        "gradebook": f"open({str(course / 'gradebook.db')!r}, 'rb').read(64)",
        "other_students": f"os.listdir({str(course / 'submitted')!r})",
        "instructor_home": f"open({str(home_secret)!r}).read()",
        "sanitised_copy": f"'{MARKER}' in open('ag1.ipynb').read()",
        "secret_env": "os.environ['COURSE_TEST_SECRET']",
    })
    writer = _probe_code({
        "course_dir": f"open({str(course / 'hacked.txt')!r}, 'w').write('x')",
        "source_nb": f"open({str(course / 'source/ag1/ag1.ipynb')!r}, 'a').write('x')",
        "gradebook": f"open({str(course / 'gradebook.db')!r}, 'ab').write(b'x')",
        "outside_dir": f"open({str(outside / 'escaped.txt')!r}, 'w').write('x')",
        "parent_dir": "open('../../escaped.txt', 'w').write('x')",
        "home": f"open({str(home / 'course-grade-escaped.txt')!r}, 'w').write('x')",
        "own_dir": "open('scratch.txt', 'w').write('fine')",
    })
    network = _probe_code({
        "host_loopback": f"socket.create_connection(('127.0.0.1', {listener.port}), timeout=2)",
        "internet": "socket.create_connection(('1.1.1.1', 53), timeout=2)",
        "dns": "socket.getaddrinfo('pypi.org', 443)",
        "interfaces": "[n for _, n in socket.if_nameindex()]",
    })

    linker = _probe_code({
        "gradebook_link": "open('grades.db', 'rb').read(16)",
        "source_link": "open('solution.ipynb').read()",
        "dir_link": "os.listdir('src_dir')",
        "fifo": "open('pipe').read()",
        "marker_in_workdir": f"any('{MARKER}' in open(os.path.join(d, f), errors='ignore')"
                             ".read() for d, _, fs in os.walk('.') for f in fs)",
    })

    def tamper(nb):
        # Replace the visible test of add() by nothing, delete the test of
        # mean_of_squares() and claim 100 points.
        for cell in list(nb.cells):
            meta = cell.metadata.get("nbgrader", {})
            if meta.get("grade_id") == "test_add":
                cell.source = "pass  # no tests here"
                meta["points"] = 100
                meta["locked"] = False
            if meta.get("grade_id") == "test_mos":
                nb.cells.remove(cell)

    def slow(nb):
        # Eight extra cells of 3 s each (under the 5 s cell limit), 24 s in all: the
        # 20 s wall-clock limit stops the notebook before test_mos.
        at = next(i for i, c in enumerate(nb.cells)
                  if c.metadata.get("nbgrader", {}).get("grade_id") == "mos_answer")
        for _ in range(8):
            nb.cells.insert(at, nbformat.v4.new_code_cell("import time\ntime.sleep(3)"))

    release = dict(base="release")
    add_submission(course, "ag1", "good")
    add_submission(course, "ag1", "blank", **release)
    add_submission(course, "ag1", "loop", answers={
        "add_answer": ADD, "mos_answer": "import signal\n"
        "signal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    pass\n"}, **release)
    add_submission(course, "ag1", "slow", answers={"add_answer": ADD, "mos_answer": MOS},
                   edit=slow, **release)
    add_submission(course, "ag1", "membomb", answers={
        "add_answer": ADD, "mos_answer": "blocks = []\nwhile True:\n"
        "    blocks.append(bytearray(64 * 2**20))\n"}, **release)
    add_submission(course, "ag1", "forkbomb", answers={
        "add_answer": ADD, "mos_answer": "import os\nwhile True:\n    os.fork()\n"}, **release)
    add_submission(course, "ag1", "exit", answers={
        "add_answer": ADD, "mos_answer": MOS + "import os\nos._exit(0)\n"}, **release)
    add_submission(course, "ag1", "snoop", answers={"add_answer": ADD, "mos_answer": MOS + snoop},
                   **release)
    add_submission(course, "ag1", "writer", answers={"add_answer": ADD,
                                                     "mos_answer": MOS + writer}, **release)
    # The network prober also shows HTML with a script: the feedback must not run it.
    xss = ("from IPython.display import HTML, display\n"
           "display(HTML('<b>bold</b><script>alert(1234)</script><img src=x onerror=alert(5)>'))\n")
    add_submission(course, "ag1", "network", answers={
        "add_answer": ADD, "mos_answer": MOS + network + xss}, **release)
    add_submission(course, "ag1", "tamper", answers={
        "add_answer": "def add(a, b):\n    return a - b\n", "mos_answer": MOS},
        edit=tamper, **release)

    links = add_submission(course, "ag1", "linker", answers={
        "add_answer": ADD, "mos_answer": MOS + linker}, **release)
    # nbgrader copies submitted files on the host following links (the gradebook and
    # the solutions would come along), and would block for ever reading a FIFO.
    os.symlink(course / "gradebook.db", links / "grades.db")
    os.symlink(course / "source" / "ag1" / "ag1.ipynb", links / "solution.ipynb")
    os.symlink(course / "source", links / "src_dir")
    os.mkfifo(links / "pipe")

    protected = {p: _sha(p) for p in (course / "source/ag1/ag1.ipynb",
                                      course / "submitted/good/ag1/ag1.ipynb")}
    try:
        run = grade_assignment("ag1", course, workers=2, limits=LIMITS, progress=False)
    finally:
        listener.close()
        del os.environ["COURSE_TEST_SECRET"]
        home_secret.unlink(missing_ok=True)
    yield {"run": run, "course": course, "outside": outside, "home": home,
           "listener": listener, "protected": protected,
           "results": run.by_student()}
    (home / "course-grade-escaped.txt").unlink(missing_ok=True)


def _cell(course: Path, student: str, grade_id: str):
    nb = nbformat.read(course / "autograded" / student / "ag1" / "ag1.ipynb", as_version=4)
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") == grade_id:
            return cell
    raise AssertionError(f"no cell {grade_id} in {student}'s graded notebook")


def _probes(course: Path, student: str) -> dict[str, str]:
    cell = _cell(course, student, "mos_answer")
    text = "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")
    found = {}
    for line in text.splitlines():
        if line.startswith("PROBE "):
            name, _, result = line[len("PROBE "):].partition(": ")
            found[name] = result
    return found


def _grade_scores(course: Path, student: str) -> dict[str, float]:
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}", "autograde-fixture") as gb:
        nb = gb.find_submission_notebook("ag1", "ag1", student)
        return {g.name: g.score for g in nb.grades}


def test_honest_submissions_graded_normally(graded):
    res = graded["results"]
    assert (res["good"].score, res["good"].max_score, res["good"].status) == (3, 3, "ok")
    assert (res["blank"].score, res["blank"].status) == (0, "ok")
    assert res["good"].notes == [] and res["blank"].notes == []
    assert len(graded["run"].results) == 12


def test_infinite_loop_ignoring_interrupts(graded):
    r = graded["results"]["loop"]
    assert r.score == 1 and "cell-timeout" in r.status
    assert _grade_scores(graded["course"], "loop") == {"test_add": 1, "test_mos": 0}
    test_mos = _cell(graded["course"], "loop", "test_mos")
    assert test_mos.outputs[0]["ename"] == "NotExecuted"


def test_wall_clock_limit(graded):
    r = graded["results"]["slow"]
    assert r.status == "timeout" and r.score == 1
    assert any("20 s" in n for n in r.notes)
    assert r.seconds < LIMITS.wall_seconds + 20


def test_memory_bomb(graded):
    r = graded["results"]["membomb"]
    assert r.score == 1 and "memory" in r.status
    errors = [o.get("ename") for o in _cell(graded["course"], "membomb", "mos_answer").outputs]
    assert "MemoryError" in errors


def test_fork_bomb(graded):
    r = graded["results"]["forkbomb"]
    assert r.score == 1 and "processes" in r.status
    if os.geteuid() == 0:  # the sandbox's uid is the host's nobody: none may be left
        left = [p for p in Path("/proc").iterdir() if p.name.isdigit()
                and _uid(p) == 65534]
        assert left == []


def _uid(proc: Path) -> int | None:
    try:
        for line in (proc / "status").read_text().splitlines():
            if line.startswith("Uid:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def test_os_exit_kills_kernel(graded):
    r = graded["results"]["exit"]
    assert r.score == 1 and r.status == "kernel-died"
    assert any("exit status 0" in n for n in r.notes)
    assert _cell(graded["course"], "exit", "test_mos").outputs[0]["ename"] == "NotExecuted"


def test_secrets_not_readable(graded):
    probes = _probes(graded["course"], "snoop")
    assert set(probes) == {"relative_source", "absolute_source", "gradebook", "other_students",
                           "instructor_home", "sanitised_copy", "secret_env"}
    leaked = {k: v for k, v in probes.items() if not v.startswith("BLOCKED")}
    assert leaked == {}
    assert graded["results"]["snoop"].score == 3


def test_writes_outside_own_directory_fail(graded):
    probes = _probes(graded["course"], "writer")
    assert probes.pop("own_dir").startswith("GOT")
    # '../../escaped.txt' may land in the sandbox's own throw-away root; the others
    # name host paths, which do not exist or are read-only in there.
    probes.pop("parent_dir")
    assert all(v.startswith("BLOCKED") for v in probes.values()), probes
    course, outside = graded["course"], graded["outside"]
    assert not (course / "hacked.txt").exists()
    assert not (course / "autograded" / "escaped.txt").exists()
    assert not (course / "escaped.txt").exists()
    assert list(outside.iterdir()) == []
    assert not (graded["home"] / "course-grade-escaped.txt").exists()
    assert not (course / "autograded" / "writer" / "ag1" / "scratch.txt").exists()
    for path, digest in graded["protected"].items():
        assert _sha(path) == digest, f"{path} changed"
    assert graded["results"]["writer"].score == 3


def test_no_network(graded):
    probes = _probes(graded["course"], "network")
    assert probes["interfaces"] == "GOT ['lo']"
    for name in ("host_loopback", "internet", "dns"):
        assert probes[name].startswith("BLOCKED"), (name, probes[name])
    assert graded["listener"].accepted == 0
    assert graded["results"]["network"].score == 3


def test_links_and_fifos_in_submission_left_out(graded):
    probes = _probes(graded["course"], "linker")
    assert probes.pop("marker_in_workdir") == "GOT False"
    assert set(probes) == {"gradebook_link", "source_link", "dir_link", "fifo"}
    assert all(v.startswith("BLOCKED") for v in probes.values()), probes
    r = graded["results"]["linker"]
    assert (r.score, r.status) == (3, "tampered")
    assert any("grades.db" in n and "pipe" in n for n in r.notes)
    assert not (graded["course"] / "autograded" / "linker" / "ag1" / "grades.db").exists()


def test_tampered_tests_restored(graded):
    r = graded["results"]["tamper"]
    # add() is wrong and its restored test fails; the deleted test_mos is put back
    # and passes; the 100 points claimed are ignored.
    assert (r.score, r.max_score, r.status) == (2, 3, "tampered")
    assert _grade_scores(graded["course"], "tamper") == {"test_add": 0, "test_mos": 2}
    assert MARKER in _cell(graded["course"], "tamper", "test_add").source
    assert any("deleted the graded cell 'test_mos'" in n for n in r.notes)
    assert any("edited the read-only cell 'test_add'" in n for n in r.notes)


def test_gradebook_intact(graded):
    db = graded["course"] / "gradebook.db"
    con = sqlite3.connect(db)
    try:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        sources = dict(con.execute("SELECT name, source FROM source_cell"))
        n_grades = con.execute("SELECT COUNT(*) FROM grade").fetchone()[0]
        n_subs = con.execute("SELECT COUNT(*) FROM submitted_assignment").fetchone()[0]
    finally:
        con.close()
    assert MARKER in sources["test_add"] and MARKER in sources["test_mos"]
    assert (n_subs, n_grades) == (12, 24)


def test_feedback_and_csv(graded):
    run, course = graded["run"], graded["course"]
    assert set(run.feedback.values()) == {"ok"}
    html = (course / "feedback" / "exit" / "ag1" / "ag1.html").read_text()
    assert "Notes from the autograder" in html and "exit status 0" in html
    good = (course / "feedback" / "good" / "ag1" / "ag1.html").read_text()
    assert "Notes from the autograder" not in good
    page = (course / "feedback" / "network" / "ag1" / "ag1.html").read_text()
    assert "<b>bold</b>" in page
    assert "<script>alert(1234)" not in page and "<img src=x onerror" not in page
    with open(course / "ag1_grades.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 12
    by_student = {r["student"]: r for r in rows}
    assert [by_student["good"][k] for k in ("score", "max_score", "status")] == ["3", "3", "ok"]
    assert by_student["exit"]["status"] == "kernel-died" and "exit status 0" in by_student["exit"]["notes"]


def test_progress_and_results_json_serialisable(graded):
    # The run's results are plain data (what the CSV and the table are made of).
    rows = [vars(r) for r in graded["run"].results]
    json.dumps(rows)
    assert sorted(r["student"] for r in rows) == sorted(graded["results"])
