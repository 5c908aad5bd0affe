"""A real classroom, end to end: JupyterHub, the nbgrader exchange, Unix accounts.

One term, run once per session (the ``term`` fixture), exactly as the README's instructor
section tells it: an instructor and three students as Unix accounts; the course's JupyterHub
(``deploy/jupyterhub/jupyterhub_config.py``, PAM logins, LocalProcessSpawner, the
configurable-http-proxy from npm) on a loopback port; A1 generated and released into a
temporary exchange; each student logs in over HTTP, gets their own server and, through the
REST handlers the Assignments panel calls, lists, fetches, edits (contents API) and submits;
the instructor collects, runs ``course grade`` (sandboxed), releases feedback; each student
fetches it. The tests below then check the scores, owners and modes, isolation, lateness,
resubmission and the instructor's private files.

Needs root (accounts, PAM, servers as other users), bubblewrap, jupyterhub and
configurable-http-proxy (``make classroom-deps``); skips saying which is missing.
"""
from __future__ import annotations

import csv
import glob
import json
import os
import pwd
import secrets
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pytest

from course_utils import classroom as cl
from course_utils.cli import main

from _bwrap import BWRAP_REASON, bwrap_usable  # tests/_bwrap.py

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "submissions"))
from make_fixtures import A1_CORRECT, FIXTURES  # noqa: E402  (the answers the fixtures use)

pytestmark = pytest.mark.slow

A1 = "a1_learning_curves"
NB = "learning_curves"
PARTLY = FIXTURES[("partly_correct", A1)]
MAX_AUTO, MAX_TOTAL = 10.0, 13.0  # A1: four autograded parts, one written answer (3 points)
# the partly-correct answers score what tests/fixtures/submissions/expected_scores.json pins
_PINNED = json.loads((Path(__file__).parent / "fixtures" / "submissions" /
                      "expected_scores.json").read_text())[A1]["partly_correct"][NB]
EXPECTED = {"correct": MAX_AUTO, "partly": float(sum(_PINNED.values())), "blank": 0.0}
assert 0 < EXPECTED["partly"] < MAX_AUTO, EXPECTED


def _skip_reason() -> str | None:
    missing = cl.missing_components()
    if missing:
        return "classroom test needs " + "; ".join(missing)
    if not bwrap_usable():
        return BWRAP_REASON
    if shutil.which("setfacl") is None and cl.private_folders():
        return (f"the course's Python lies in {cl.private_folders()}, which students cannot "
                "enter, and setfacl (Debian package acl) is missing to let them")
    return None


@dataclass
class Term:
    hub: cl.Hub
    root: Path
    exchange: Path
    instructor: cl.Account
    students: dict[str, cl.Account]  # "correct" | "partly" | "blank" -> account
    sessions: dict[str, cl.HubSession] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    facts: dict = field(default_factory=dict)

    @property
    def course(self) -> Path:
        return self.instructor.course_dir

    def instructor_run(self, *cmd, check=True, timeout=900):
        return cl.as_user(self.instructor.name, cmd, cwd=self.course, check=check,
                          env={"NBGRADER_EXCHANGE": str(self.exchange)}, timeout=timeout)


def _edit(session: cl.HubSession, answers: dict[str, str]) -> None:
    path = f"{A1}/{NB}.ipynb"
    nb = session.read_notebook(path)
    cells = {c["metadata"].get("nbgrader", {}).get("grade_id"): c for c in nb["cells"]}
    for grade_id, source in answers.items():
        cells[grade_id]["source"] = source
    session.write_notebook(path, nb)


class _Clock:
    def __init__(self, timings):
        self.timings = timings

    def __call__(self, name):
        clock = self

        class _Step:
            def __enter__(self):
                self.t0 = time.monotonic()

            def __exit__(self, *exc):
                clock.timings[name] = round(time.monotonic() - self.t0, 2)
        return _Step()


@pytest.fixture(scope="module")
def term():
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    sfx = f"{os.getpid() % 100000}"
    sgroup, igroup = f"ctstu{sfx}", f"ctins{sfx}"
    root = Path(tempfile.mkdtemp(prefix="course-classroom-"))
    os.chmod(root, 0o755)  # students reach the exchange below it
    names = [f"ctin{sfx}", f"ctst{sfx}a", f"ctst{sfx}b", f"ctst{sfx}c", f"ctst{sfx}w"]
    hub, granted = None, []
    try:
        exchange = cl.prepare_exchange(root / "exchange")
        # the README's commands: course classroom add-instructor / add-student
        passwords = {n: secrets.token_urlsafe(12) for n in names}
        for action, group, who in (("add-instructor", igroup, names[:1]),
                                   ("add-student", sgroup, names[1:])):
            for n in who:
                assert main(["classroom", action, n, "--group", group,
                             "--password", passwords[n]]) == 0
        instructor = cl.Account(names[0], passwords[names[0]], Path(pwd.getpwnam(names[0]).pw_dir),
                                "instructor")
        instructor.course_dir = instructor.home / cl.COURSE_DIRNAME
        students = {kind: cl.Account(n, passwords[n], Path(pwd.getpwnam(n).pw_dir), "student")
                    for kind, n in zip(("correct", "partly", "blank"), names[1:4])}
        browser_student = cl.Account(names[4], passwords[names[4]],
                                     Path(pwd.getpwnam(names[4]).pw_dir), "student")
        granted = cl.grant_python_access([sgroup, igroup]) if cl.private_folders() else []
        hub = cl.Hub(state=root / "hub", exchange=exchange, port=cl.free_port(),
                     student_group=sgroup, instructor_group=igroup)
        t = Term(hub=hub, root=root, exchange=exchange, instructor=instructor,
                 students=students)
        t.facts["browser_student"] = browser_student
        step = _Clock(t.timings)
        with step("hub start"):
            hub.start()
        _run_term(t, step)
        yield t
    finally:
        if hub is not None:
            hub.stop()
        for name in names:
            cl.remove_user(name)
        cl.revoke_python_access([sgroup, igroup], granted)
        for g in (sgroup, igroup):
            subprocess.run(["groupdel", g], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def _run_term(t: Term, step) -> None:
    """The README's sequence; every step is what a person does on the hub."""
    # 1. the instructor makes the student version and releases it through the exchange
    with step("instructor: generate_assignment"):
        t.instructor_run("nbgrader", "generate_assignment", A1)
    t0 = time.monotonic()
    with step("instructor: release_assignment"):
        t.instructor_run("nbgrader", "release_assignment", A1)

    # 2. students log in (the hub's form, PAM), get their server, fetch, work, submit
    for kind, acct in t.students.items():
        s = cl.HubSession(t.hub.url, acct.name, acct.password)
        with step(f"{kind}: login + server start"):
            s.login()
            s.start_server()
        t.sessions[kind] = s
        with step(f"{kind}: list + fetch"):
            listed = s.assignments()
            t.facts.setdefault("listed", {})[kind] = listed
            s.assignment_action("fetch", A1)
    s = t.sessions["correct"]
    with step("correct: submit (first, blank)"):
        s.assignment_action("submit", A1)
    t.facts["first_submit_listing"] = s.assignments()
    time.sleep(1.1)  # a later timestamp for the resubmission
    with step("correct: edit + resubmit"):
        _edit(s, A1_CORRECT)
        s.assignment_action("submit", A1)
    with step("partly: edit + submit"):
        _edit(t.sessions["partly"], PARTLY)
        t.sessions["partly"].assignment_action("submit", A1)

    # the deadline passes; the third student submits after it
    time.sleep(0.5)
    due = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f UTC")
    with step("instructor: db assignment add --duedate"):
        t.instructor_run("nbgrader", "db", "assignment", "add", A1, f"--duedate={due}")
    time.sleep(1.1)
    with step("blank: submit (late)"):
        t.sessions["blank"].assignment_action("submit", A1)
    t.facts["listing_after_submit"] = {k: s.assignments() for k, s in t.sessions.items()}
    t.facts["inbound"] = sorted(os.listdir(t.exchange / cl.COURSE_ID / "inbound"))

    # 3. collect, grade in the sandbox, release the feedback
    with step("instructor: collect"):
        t.instructor_run("nbgrader", "collect", A1)
    with step("instructor: course grade"):
        res = t.instructor_run("course", "grade", A1, "--course-dir", str(t.course),
                               "--workers", "2", "--csv", str(t.course / "grades_a1.csv"))
    t.facts["grade_output"] = res.stdout
    t.facts["grade_err"] = res.stderr[-4000:]
    # course grade wrote the feedback pages (notes banner outside the cells, sanitised
    # HTML) with the timestamp and secret release_feedback needs beside them
    with step("instructor: release_feedback"):
        t.instructor_run("nbgrader", "release_feedback", A1)

    # 4. every student fetches their feedback from the Assignments panel
    for kind, s in t.sessions.items():
        with step(f"{kind}: fetch_feedback"):
            s.assignment_action("fetch_feedback", A1)
    t.timings["release -> feedback fetched by all (total)"] = round(time.monotonic() - t0, 2)


# --------------------------------------------------------------------------------------------
def _owner(path: Path) -> str:
    return pwd.getpwuid(os.stat(path).st_uid).pw_name


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_students_see_and_fetch_the_release(term):
    for kind, listed in term.facts["listed"].items():
        released = [a for a in listed if a["assignment_id"] == A1]
        assert released and released[0]["status"] == "released", (kind, listed)
        assert released[0]["course_id"] == cl.COURSE_ID
    for kind, acct in term.students.items():
        fetched = acct.home / A1 / f"{NB}.ipynb"
        assert fetched.is_file() and _owner(fetched) == acct.name, kind
        nb = json.loads(fetched.read_text())
        text = "".join("".join(c["source"]) for c in nb["cells"])
        assert "BEGIN SOLUTION" not in text and "BEGIN HIDDEN TESTS" not in text


def test_scores_are_exactly_right(term):
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{term.course / 'gradebook.db'}", cl.COURSE_ID) as gb:
        for kind, acct in term.students.items():
            sub = gb.find_submission(A1, acct.name)
            assert sub.code_score == EXPECTED[kind], (kind, sub.code_score)
            assert sub.max_code_score == MAX_AUTO and sub.max_score == MAX_TOTAL
    rows = {r["student"]: r for r in csv.DictReader(open(term.course / "grades_a1.csv"))}
    for kind, acct in term.students.items():
        assert float(rows[acct.name]["score"]) == EXPECTED[kind]
        assert rows[acct.name]["status"] == "ok"
    out = term.facts["grade_output"]
    assert "sandboxed" in out and all(a.name in out for a in term.students.values())


def test_resubmission_replaces_the_first(term):
    acct = term.students["correct"]
    first = [a for a in term.facts["first_submit_listing"] if a["status"] == "submitted"]
    assert len(first) == 1 and len(first[0]["submissions"]) == 1
    after = [a for a in term.facts["listing_after_submit"]["correct"]
             if a["status"] == "submitted"][0]
    assert len(after["submissions"]) == 2  # the panel lists both attempts
    mine = [n for n in term.facts["inbound"] if n.startswith(acct.name + "+")]
    assert len(mine) == 2  # both are in the exchange ...
    collected = term.course / "submitted" / acct.name / A1
    stamp = (collected / "timestamp.txt").read_text().strip()
    assert stamp == max(s["timestamp"] for s in after["submissions"])  # ... the later one counts
    nb = json.loads((collected / f"{NB}.ipynb").read_text())
    assert "my_learning_curve" in "".join("".join(c["source"]) for c in nb["cells"]
                                          if c["metadata"].get("nbgrader", {}).get("grade_id")
                                          == "part2_answer")


def test_late_submission_is_marked_late(term):
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{term.course / 'gradebook.db'}", cl.COURSE_ID) as gb:
        assert gb.find_assignment(A1).duedate is not None
        late = {kind: gb.find_submission(A1, a.name).total_seconds_late
                for kind, a in term.students.items()}
    assert late["blank"] > 0, late
    assert late["correct"] == 0 and late["partly"] == 0, late


def test_feedback_reaches_each_student(term):
    for kind, acct in term.students.items():
        html = glob.glob(str(acct.home / A1 / "feedback" / "*" / f"{NB}.html"))
        assert len(html) == 1, (kind, html, term.facts["grade_output"], term.facts["grade_err"])
        assert _owner(Path(html[0])) == acct.name
        text = Path(html[0]).read_text()
        assert f"{EXPECTED[kind]:g}" in text and NB in text
    # the panel now shows the feedback as fetched
    for kind, s in term.sessions.items():
        sub = [a for a in s.assignments() if a["status"] == "submitted"][0]
        assert any(x["feedback_updated"] is False and x["has_local_feedback"]
                   for x in sub["submissions"]), (kind, sub["submissions"])


def test_owners_and_modes(term):
    inst = term.instructor.name
    course_x = term.exchange / cl.COURSE_ID
    assert _owner(term.exchange) == "root" and _mode(term.exchange) == 0o1777
    assert _owner(course_x) == inst and _mode(course_x) == 0o755
    assert _owner(course_x / "outbound") == inst and _mode(course_x / "outbound") == 0o755
    assert _owner(course_x / "inbound") == inst and _mode(course_x / "inbound") == 0o2733
    assert _owner(course_x / "feedback") == inst and _mode(course_x / "feedback") == 0o711
    released = course_x / "outbound" / A1 / f"{NB}.ipynb"
    assert _owner(released) == inst and _mode(released) == 0o644
    for name in term.facts["inbound"]:
        student = name.split("+")[0]
        sub = course_x / "inbound" / name
        assert _owner(sub) == student and _owner(sub / f"{NB}.ipynb") == student
        assert _mode(sub / f"{NB}.ipynb") == 0o644
    for path in (term.course, term.course / "gradebook.db", term.course / "source",
                 term.course / "submitted", term.course / "autograded", term.course / "feedback"):
        assert _owner(path) == inst, path
    assert _mode(term.course) == 0o700
    for acct in [term.instructor, *term.students.values()]:
        assert _owner(acct.home) == acct.name and _mode(acct.home) == 0o700
    for kind, acct in term.students.items():
        for p in (acct.home / A1).rglob("*"):
            assert _owner(p) == acct.name, p


def _as_student(term, kind, code):
    return cl.as_user(term.students[kind].name, [sys.executable, "-c", code], check=False)


def test_a_student_cannot_read_another_students_work(term):
    other = term.students["correct"]
    inbound = term.exchange / cl.COURSE_ID / "inbound"
    for target, how in ((inbound, "os.listdir"), (other.home, "os.listdir"),
                        (other.home / A1 / f"{NB}.ipynb", "open")):
        res = _as_student(term, "partly", f"import os; {how}({str(target)!r})")
        assert res.returncode != 0 and "PermissionError" in res.stderr, (target, res.stderr)
    # over the hub: a student's session cannot use another student's server
    r = term.sessions["partly"].http.get(f"{term.hub.url}/user/{other.name}/api/contents/{A1}",
                                         allow_redirects=False, timeout=30)
    assert r.status_code in (302, 403, 404) and "content" not in r.text[:200]


def test_instructor_files_are_private(term):
    """Item 4: the gradebook, source/ and the exchange's inbound folder are not readable by
    a student, tried as the student account."""
    for target, how in ((term.course / "gradebook.db", "open"), (term.course / "source", "os.listdir"),
                        (term.course / "source" / A1 / f"{NB}.ipynb", "open"),
                        (term.exchange / cl.COURSE_ID / "inbound", "os.listdir"),
                        (term.hub.state / "jupyterhub_cookie_secret", "open")):
        res = _as_student(term, "blank", f"import os; {how}({str(target)!r})")
        assert res.returncode != 0 and "PermissionError" in res.stderr, (target, res.stderr)
    # nor can a student take the course's place in the exchange (sticky bit)
    res = _as_student(term, "blank", "import os; os.rename({!r}, {!r})".format(
        str(term.exchange / cl.COURSE_ID), str(term.exchange / "stolen")))
    assert res.returncode != 0 and "PermissionError" in res.stderr
    # and a student's server has no formgrader; the instructor's has
    assert term.sessions["blank"].get("formgrader").status_code == 404


def test_instructor_has_the_formgrader(term):
    """The instructor logs in like anyone else; their server has the formgrader on the
    course directory (with A1 and its three submissions), the students' do not."""
    s = cl.HubSession(term.hub.url, term.instructor.name, term.instructor.password)
    s.login()
    s.start_server()
    assert s.get("formgrader").status_code == 200
    r = s.get("formgrader/api/assignments")
    r.raise_for_status()
    a1 = next(a for a in r.json() if a["name"] == A1)
    assert a1["num_submissions"] == 3, a1
    assert term.sessions["correct"].get("formgrader/api/assignments").status_code == 404


def test_timings_of_one_term(term, capsys):
    assert term.timings["release -> feedback fetched by all (total)"] > 0
    with capsys.disabled():
        print("\nclassroom term, seconds per step:")
        for name, secs in term.timings.items():
            print(f"  {name:<45} {secs:7.2f}")
    report = os.environ.get("COURSE_CLASSROOM_REPORT")  # a JSON file for the figures
    if report:
        Path(report).write_text(json.dumps(term.timings, indent=1))


def test_course_grade_on_the_hub_keeps_its_sandbox(term):
    """Item 4: a submission that tries to read the gradebook, the instructor's solutions,
    another student's work and the hub's secret, to write into the course directory and to
    reach the hub, graded by the instructor on the hub: it sees none of it. (Runs last: the
    'blank' student resubmits, which changes their grade.)"""
    acct, other = term.students["blank"], term.students["correct"]
    targets = [term.course / "gradebook.db", term.course / "source" / A1 / f"{NB}.ipynb",
               other.home / A1 / f"{NB}.ipynb", term.hub.state / "jupyterhub_cookie_secret"]
    probe = (
        "import os, pathlib, socket\n"
        "LEAKS = []\n"
        f"for p in {[str(p) for p in targets]!r}:\n"
        "    try:\n"
        "        open(p, 'rb').read(16); LEAKS.append(p)\n"
        "    except OSError:\n"
        "        pass\n"
        "try:\n"
        f"    pathlib.Path({str(term.course / 'pwned.txt')!r}).write_text('x'); LEAKS.append('write')\n"
        "except OSError:\n"
        "    pass\n"
        "try:\n"
        f"    socket.create_connection(('127.0.0.1', {term.hub.port}), timeout=3); LEAKS.append('hub')\n"
        "except OSError:\n"
        "    pass\n"
        "print('probe done, leaks:', LEAKS)\n\n")
    s = term.sessions["blank"]
    _edit(s, {**A1_CORRECT, "part1_answer": probe + A1_CORRECT["part1_answer"]})
    s.assignment_action("submit", A1)
    term.instructor_run("nbgrader", "collect", "--update", A1)
    res = term.instructor_run("course", "grade", A1, "--course-dir", str(term.course),
                              "--student", acct.name, "--no-feedback", "--csv",
                              str(term.course / "regrade.csv"), check=False)
    assert res.returncode == 0, res.stderr[-3000:]
    graded = json.loads((term.course / "autograded" / acct.name / A1 / f"{NB}.ipynb").read_text())
    cell = next(c for c in graded["cells"]
                if c["metadata"].get("nbgrader", {}).get("grade_id") == "part1_answer")
    printed = "".join("".join(o.get("text", "")) for o in cell.get("outputs", []))
    assert "probe done, leaks: []" in printed, printed
    assert not (term.course / "pwned.txt").exists()
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{term.course / 'gradebook.db'}", cl.COURSE_ID) as gb:
        assert gb.find_submission(A1, acct.name).code_score == EXPECTED["correct"]


# --- item 3: the student's screen, in a real browser ---------------------------------------
CHROMIUM = os.environ.get("COURSE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-dev-shm-usage"]


def _browser_reason() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the Python package playwright is missing ('make classroom-deps')"
    if not os.access(CHROMIUM, os.X_OK):
        return f"{CHROMIUM} is missing: 'apt-get install chromium' (make system-deps)"
    return None


def browser_student_flow(hub_url: str, user: str, password: str, shots: Path) -> dict:
    """Log in through the hub's form, open Nbgrader > Assignments, Fetch A1, open the
    notebook, run its first cell, Submit; screenshots into ``shots``. Returns what it saw."""
    from playwright.sync_api import sync_playwright

    shots.mkdir(parents=True, exist_ok=True)
    seen = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.set_default_timeout(120_000)
        step = "login"
        try:
            page.goto(f"{hub_url}/hub/login")
            page.fill("#username_input", user)
            page.fill("#password_input", password)
            page.click("#login_submit")
            page.wait_for_url(f"**/user/{user}/lab**", timeout=180_000)
            page.wait_for_selector("#jp-main-dock-panel")
            step = "assignments panel"
            page.get_by_role("menuitem", name="Nbgrader").click()
            page.get_by_role("menuitem", name="Assignment List").click()
            page.get_by_text(A1).first.wait_for()
            page.screenshot(path=str(shots / "01_assignments_released.png"))
            step = "fetch"
            page.get_by_role("button", name="Fetch", exact=True).click()
            page.get_by_role("button", name="Submit", exact=True).wait_for()
            page.screenshot(path=str(shots / "02_assignments_fetched.png"))
            step = "open notebook"  # from the panel: the assignment's notebook list
            page.get_by_text(A1, exact=True).first.click()
            page.get_by_text(NB, exact=True).first.click()
            page.wait_for_selector(".jp-Notebook .jp-CodeCell")
            kernel = page.locator(".jp-Toolbar-kernelName", has_text="Transfer course (.venv)")
            kernel.first.wait_for()
            seen["kernel"] = kernel.first.inner_text()
            # a cell run before the kernel is connected is not executed: wait for Idle
            page.locator("#jp-main-statusbar", has_text="Transfer course (.venv) | Idle"
                         ).wait_for()
            step = "run first cell"
            page.locator(".jp-Notebook .jp-CodeCell").first.click()
            page.keyboard.press("Shift+Enter")
            out = page.locator(".jp-OutputArea-output", has_text="pool:").first
            out.wait_for(timeout=180_000)
            seen["output"] = out.inner_text()
            page.locator(".jp-Notebook .jp-CodeCell").first.scroll_into_view_if_needed()
            page.screenshot(path=str(shots / "03_executed_cell.png"))
            step = "submit"
            page.keyboard.press("Control+s")
            page.get_by_role("menuitem", name="Nbgrader").click()
            page.get_by_role("menuitem", name="Assignment List").click()
            page.get_by_role("button", name="Submit", exact=True).first.click()
            page.get_by_text("Submitted assignments").first.wait_for()
            page.get_by_role("button", name="Fetch Feedback").first.wait_for()
            page.screenshot(path=str(shots / "04_submitted.png"))
            seen["done"] = True
        except Exception:
            page.screenshot(path=str(shots / f"failed_at_{step.replace(' ', '_')}.png"))
            seen["failed_at"] = step
            raise
        finally:
            browser.close()
    return seen


@pytest.mark.browser
def test_a_student_in_a_real_browser(term, tmp_path_factory):
    """Item 3: headless Chromium (Debian's) driven by Playwright: the hub's login form,
    Nbgrader > Assignment List, Fetch, the notebook opened from the panel with the course
    kernel, its first cell run (output appears), Submit. Screenshots go to
    $COURSE_CLASSROOM_SHOTS (default: this test's temporary folder), always, and one named
    after the step that failed."""
    reason = _browser_reason()
    if reason:
        pytest.skip(reason)
    acct = term.facts["browser_student"]
    shots = Path(os.environ.get("COURSE_CLASSROOM_SHOTS") or tmp_path_factory.mktemp("shots"))
    t0 = time.monotonic()
    try:
        seen = browser_student_flow(term.hub.url, acct.name, acct.password, shots)
    finally:
        print(f"screenshots in {shots}")
    term.timings["browser student: login to submitted"] = round(time.monotonic() - t0, 2)
    assert seen["kernel"] == "Transfer course (.venv)"
    assert seen["output"].startswith("pool: (1047, 64), validation: (300, 64)")
    mine = [n for n in os.listdir(term.exchange / cl.COURSE_ID / "inbound")
            if n.startswith(acct.name + "+")]
    assert len(mine) == 1
    assert (acct.home / A1 / f"{NB}.ipynb").exists()
    for png in ("01_assignments_released", "02_assignments_fetched", "03_executed_cell",
                "04_submitted"):
        assert (shots / f"{png}.png").stat().st_size > 10_000
