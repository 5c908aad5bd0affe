"""Unit tests of course_utils.autograde: merging sandbox runs, tamper checks, limits,
reports, and one direct sandbox run (isolation facts) with and without bubblewrap."""
from __future__ import annotations

import csv
import os
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook
from nbgrader.utils import determine_grade

from course_utils.autograde import GiB, Limits, Sandbox, SandboxUnavailable, find_bwrap
from course_utils.autograde.execute import (NOTE_CELL_ID, SubmissionLog, _released,
                                            _same_text, add_note_cell, merge_run)
from course_utils.autograde.grader import GradeRun, SubmissionResult, find_submissions
from course_utils.autograde.report import format_table, write_csv
from course_utils.autograde.sandbox import SandboxRun

from _bwrap import BWRAP_REASON, bwrap_usable  # tests/_bwrap.py



LIMITS = Limits(wall_seconds=30, memory=1 * GiB, processes=64)


def _nb():
    """setup, answer, test (2 points), answer, test (3 points)."""
    def meta(gid, grade=False, points=None, locked=False, solution=False):
        m = {"grade": grade, "grade_id": gid, "locked": locked, "schema_version": 3,
             "solution": solution, "task": False}
        if points is not None:
            m["points"] = points
        return {"nbgrader": m}
    return new_notebook(cells=[
        new_markdown_cell("intro"),
        new_code_cell("import math", metadata=meta("setup", locked=True)),
        new_code_cell("x = 1", metadata=meta("a1", solution=True)),
        new_code_cell("assert x == 1", metadata=meta("t1", grade=True, points=2, locked=True)),
        new_code_cell("y = 2", metadata=meta("a2", solution=True)),
        new_code_cell("assert y == 2", metadata=meta("t2", grade=True, points=3, locked=True)),
    ])


def _cell_event(i, outputs=(), reply=None):
    if reply is None:  # what the kernel replies: an error output means status "error"
        errors = [o for o in outputs if o.get("output_type") == "error"]
        reply = ({"status": "error", "ename": errors[0]["ename"], "evalue": "", "traceback": []}
                 if errors else {"status": "ok"})
    return {"event": "cell", "index": i, "outputs": list(outputs), "execution_count": i,
            "execution": {}, "dropped_output_bytes": 0, "processes": 3, "reply": reply}


def _score(nb):
    return sum(determine_grade(c)[0] or 0 for c in nb.cells
               if c.get("metadata", {}).get("nbgrader", {}).get("grade"))


def test_merge_complete_run_gives_full_marks():
    nb, rec = _nb(), SubmissionLog("s")
    events = [{"event": "ready", "language_info": {"name": "python"}}]
    for i in range(1, 6):
        events += [{"event": "start", "index": i}, _cell_event(i)]
    events.append({"event": "done", "max_processes": 3})
    merge_run(nb, SandboxRun(events=events, returncode=0), LIMITS, rec)
    assert _score(nb) == 5 and rec.status == "ok" and rec.notes == []
    assert nb.metadata["language_info"] == {"name": "python"}


def test_merge_decides_from_the_execute_reply_not_the_outputs():
    """A test cell whose reply says error scores zero even when it displayed nothing
    (student code silenced the traceback); one without a reply scores zero too."""
    nb, rec = _nb(), SubmissionLog("s")
    hidden = {"status": "error", "ename": "AssertionError", "evalue": "x != 1",
              "traceback": ["AssertionError: x != 1"]}
    events = [{"event": "ready"}, _cell_event(1), _cell_event(2),
              _cell_event(3, [{"output_type": "stream", "name": "stdout", "text": "ok\n"}],
                          reply=hidden),
              _cell_event(4), dict(_cell_event(5), reply=None), {"event": "done"}]
    merge_run(nb, SandboxRun(events=events, returncode=0), LIMITS, rec)
    assert [o["output_type"] for o in nb.cells[3].outputs] == ["stream", "error"]
    assert nb.cells[3].outputs[1]["ename"] == "AssertionError"
    assert nb.cells[5].outputs[-1]["ename"] == "NoReply"
    assert _score(nb) == 0
    nbformat.validate(nb)


def test_merge_dead_kernel_zeroes_tests_that_never_ran():
    # Without the merge, test cell 't2' would have no output and get full marks.
    nb, rec = _nb(), SubmissionLog("s")
    events = [{"event": "ready"}]
    for i in (1, 2, 3):
        events += [{"event": "start", "index": i}, _cell_event(i)]
    events += [{"event": "start", "index": 4}, _cell_event(4),
               {"event": "kernel_died", "index": 4, "returncode": -9}, {"event": "done"}]
    merge_run(nb, SandboxRun(events=events, returncode=0), LIMITS, rec)
    assert nb.cells[4].outputs[-1]["ename"] == "KernelDied"
    assert nb.cells[5].outputs[0]["ename"] == "NotExecuted"
    assert _score(nb) == 2
    assert rec.status == "kernel-died"
    assert "SIGKILL" in rec.notes[0] and "code cell 4 ('a2')" in rec.notes[0]


def test_merge_wall_clock_kill_marks_running_and_later_cells():
    nb, rec = _nb(), SubmissionLog("s")
    events = [{"event": "ready"}, {"event": "start", "index": 1}, _cell_event(1),
              {"event": "start", "index": 2}]
    merge_run(nb, SandboxRun(events=events, timed_out=True, returncode=-9), LIMITS, rec)
    assert nb.cells[2].outputs[0]["ename"] == "TimeoutError"
    assert [c.outputs[0]["ename"] for c in nb.cells[3:]] == ["NotExecuted"] * 3
    assert _score(nb) == 0 and rec.status == "timeout"
    assert "30 s" in rec.notes[0]


def test_merge_runner_failure_before_kernel_start():
    nb, rec = _nb(), SubmissionLog("s")
    run = SandboxRun(events=[{"event": "error", "index": None,
                              "message": "RuntimeError: Kernel died before replying"}],
                     returncode=1)
    merge_run(nb, run, LIMITS, rec)
    assert all(c.outputs[0]["ename"] == "NotExecuted" for c in nb.cells if c.cell_type == "code")
    assert rec.status == "error" and "could not be started" in rec.notes[0]


def test_merge_notes_memory_timeout_and_dropped_output():
    nb, rec = _nb(), SubmissionLog("s")
    mem = {"output_type": "error", "ename": "MemoryError", "evalue": "", "traceback": []}
    tmo = {"output_type": "error", "ename": "CellTimeoutError", "evalue": "", "traceback": []}
    events = [{"event": "ready"}, _cell_event(1), _cell_event(2, [mem]), _cell_event(3),
              dict(_cell_event(4, [tmo]), dropped_output_bytes=1234, processes=60),
              _cell_event(5), {"event": "done"}]
    merge_run(nb, SandboxRun(events=events, returncode=0), LIMITS, rec)
    assert rec.statuses == {"memory", "cell-timeout", "processes", "output-limit"}
    assert any("Output limit" in n and "code cell 4" in n for n in rec.notes)
    assert "1234 bytes" in nb.cells[4].outputs[-1]["text"]
    assert nb.cells[4].outputs[-1]["name"] == "stdout"  # stderr would zero a test cell
    assert _score(nb) == 5  # the answer cells failed, not the tests


def test_note_cell_first_with_id():
    nb = _nb()
    add_note_cell(nb, ["The kernel died."])
    assert nb.cells[0].id == NOTE_CELL_ID and "The kernel died." in nb.cells[0].source
    nbformat.validate(nb)
    plain = _nb()
    add_note_cell(plain, [])
    assert plain.cells[0].source == "intro"


def test_tamper_comparison_ignores_hidden_tests_only():
    source = "assert f(1) == 2\n### BEGIN HIDDEN TESTS\nassert f(2) == 3\n### END HIDDEN TESTS"
    released = _released(source, None)
    assert released.strip() == "assert f(1) == 2"
    assert _same_text("assert f(1) == 2  \n\n", released)
    assert not _same_text("pass", released) and not _same_text("pass", source)


def test_submission_log_files_notes_per_notebook():
    rec = SubmissionLog("s")
    rec.notebook = "nb1"
    rec.add("timeout", "stopped")
    rec.notebook = "nb2"
    rec.add("tampered", "edited")
    assert rec.notes_for("nb1") == ["stopped"] and rec.notes_for("nb2") == ["edited"]
    assert rec.notes == ["nb1: stopped", "nb2: edited"]
    assert rec.status == "tampered,timeout"


def test_limits_validation_and_defaults():
    with pytest.raises(ValueError, match="Limits.memory"):
        Limits(memory=0)
    rl = Limits(wall_seconds=12, memory=2 * GiB).kernel_rlimits()
    assert rl["cpu"] == 12 and rl["data"] == 2 * GiB and rl["as"] == 10 * GiB
    assert rl["core"] == 0 and rl["nproc"] == 256


def test_missing_bwrap_says_how_to_install(monkeypatch):
    monkeypatch.setenv("COURSE_BWRAP", "/nonexistent/bwrap")
    assert find_bwrap() is None
    with pytest.raises(SandboxUnavailable) as err:
        Sandbox(LIMITS)
    assert "apt-get install bubblewrap" in str(err.value)
    assert "--no-sandbox" in str(err.value)


def test_ro_binds_must_exist(tmp_path):
    with pytest.raises(FileNotFoundError, match="ro_binds"):
        Sandbox(LIMITS, enabled=False, ro_binds=[tmp_path / "nope"])


def test_find_submissions_and_exclusions(tmp_path):
    from nbgrader.coursedir import CourseDirectory

    for student in ("ann", "bob", "cy"):
        (tmp_path / "submitted" / student / "hw1").mkdir(parents=True)
    (tmp_path / "submitted" / "dan" / "hw2").mkdir(parents=True)
    cd = CourseDirectory(root=str(tmp_path))
    assert find_submissions(cd, "hw1") == ["ann", "bob", "cy"]
    cd.student_id_exclude = "bob"
    assert find_submissions(cd, "hw1") == ["ann", "cy"]
    assert find_submissions(cd, "hw3") == []


def test_table_and_csv(tmp_path):
    run = GradeRun(assignment="hw1", course_dir=tmp_path, seconds=3.0, sandboxed=True,
                   workers=2, results=[
                       SubmissionResult("ann", 3, 3, 0, "ok", [], 1.0),
                       SubmissionResult("bob", 1, 3, 0.5, "kernel-died",
                                        ["The kernel died, badly."], 2.0)])
    table = format_table(run)
    lines = table.splitlines()
    assert lines[0].split() == ["student", "score", "max", "status"]
    assert lines[2].split() == ["ann", "3", "3", "ok"]
    assert "(-0.5 late)" in lines[3] and lines[3].endswith("kernel-died")
    assert "2 submission(s) of 'hw1'" in table and "1 flagged" in table
    path = write_csv(run, tmp_path / "out" / "grades.csv")
    rows = list(csv.DictReader(open(path, newline="")))
    assert rows[1]["notes"] == "The kernel died, badly." and rows[1]["late_penalty"] == "0.5"


def _probe_notebook():
    return new_notebook(cells=[new_code_cell(
        "import os, socket\n"
        "status = open('/proc/self/status').read()\n"
        "caps = [l.split()[1] for l in status.splitlines() if l.startswith('CapEff')]\n"
        "nnp = [l.split()[1] for l in status.splitlines() if l.startswith('NoNewPrivs')]\n"
        "print(os.getuid(), caps[0], nnp[0], [n for _, n in socket.if_nameindex()])\n"
        "print(sorted(os.listdir('.')), open('data.txt').read())\n"
        "print(os.environ.get('OMP_NUM_THREADS'), os.environ.get('NBGRADER_EXECUTION'),\n"
        "      os.environ.get('GOMP_SPINCOUNT'), os.environ.get('KMP_BLOCKTIME'))\n"
        "import ctypes\n"
        "print(ctypes.CDLL(None, use_errno=True).unshare(0x10000000))  # a nested user ns")])


@pytest.mark.slow
@pytest.mark.skipif(not bwrap_usable(), reason=BWRAP_REASON)
def test_sandbox_run_isolation(tmp_path):
    (tmp_path / "data.txt").write_text("payload")
    (tmp_path / "nb.ipynb").write_text("{}")
    job = {"notebook": _probe_notebook(), "execute": {
        "timeout": 30, "startup_timeout": 60, "iopub_timeout": 4,
        "interrupt_on_timeout": True, "raise_on_iopub_timeout": True,
        "error_on_timeout": None, "extra_arguments": []}}
    with Sandbox(LIMITS) as box:
        run = box.run(job, tmp_path, exclude=["nb.ipynb"])
    assert run.last("done") is not None and not run.timed_out, run.log_tail
    text = run.last("cell")["outputs"][0]["text"].splitlines()
    assert text[0] == "65534 0000000000000000 1 ['lo']"
    assert text[1] == "['data.txt'] payload"
    # two sandboxes on two cores is exactly the shared-CPU case: idle OpenMP threads sleep
    # after a short spin
    assert text[2] == "1 autograde 1000 0"
    if os.geteuid() == 0 or box._supports("--disable-userns"):
        assert text[3] == "-1"
    assert run.last("done") is not None


@pytest.mark.slow
def test_no_sandbox_mode_runs_the_same_protocol(tmp_path):
    (tmp_path / "data.txt").write_text("payload")
    nb = new_notebook(cells=[new_code_cell("print(open('data.txt').read())"),
                             new_code_cell("import os; os._exit(3)"),
                             new_code_cell("print('never')")])
    job = {"notebook": nb, "execute": {
        "timeout": 30, "startup_timeout": 60, "iopub_timeout": 4,
        "interrupt_on_timeout": True, "raise_on_iopub_timeout": True,
        "error_on_timeout": None, "extra_arguments": []}}
    with Sandbox(LIMITS, enabled=False) as box:
        run = box.run(job, tmp_path)
    assert [e["event"] for e in run.events] == [
        "ready", "start", "cell", "start", "cell", "kernel_died", "done"]
    assert run.events[2]["outputs"][0]["text"] == "payload\n"
    assert run.last("kernel_died")["returncode"] == 3
    assert not Path(tmp_path / "never").exists()


@pytest.mark.slow
def test_cancel_stops_running_sandbox_at_once(tmp_path):
    import threading
    import time

    from course_utils.autograde.sandbox import GradingCancelled

    nb = new_notebook(cells=[new_code_cell("import time\ntime.sleep(120)")])
    job = {"notebook": nb, "execute": {
        "timeout": 200, "startup_timeout": 60, "iopub_timeout": 4,
        "interrupt_on_timeout": True, "raise_on_iopub_timeout": True,
        "error_on_timeout": None, "extra_arguments": []}}
    outcome = {}
    with Sandbox(Limits(wall_seconds=200), enabled=bwrap_usable()) as box:
        def target():
            try:
                box.run(job, tmp_path)
                outcome["result"] = "finished"
            except GradingCancelled:
                outcome["result"] = "cancelled"
        thread = threading.Thread(target=target)
        thread.start()
        time.sleep(3)
        t0 = time.monotonic()
        box.cancel()
        thread.join(timeout=30)
        assert outcome == {"result": "cancelled"}
        assert time.monotonic() - t0 < 15
        with pytest.raises(GradingCancelled):  # and nothing new starts
            box.run(job, tmp_path)


def test_work_that_grows_with_the_submission_runs_without_the_gradebook_lock(monkeypatch, tmp_path):
    """Inspecting and staging a submission, and copying its files into autograded/, run
    with the lock released (a huge submission held it for 80 s and stalled the class)."""
    import threading
    from types import SimpleNamespace

    from nbgrader.converters.base import BaseConverter
    from traitlets.config import Config

    from course_utils.autograde import execute, grader

    lock, seen = threading.Lock(), {}
    monkeypatch.setattr(grader, "_stage_submission",
                        lambda *a, **k: seen.setdefault("stage", lock.locked()) and False)
    grader._grade_one("ann", "hw1", tmp_path, Config(), SimpleNamespace(limits=LIMITS), lock,
                      ["hw1"], tmp_path / "staging")
    monkeypatch.setattr(BaseConverter, "init_assignment",
                        lambda self, a, s: seen.setdefault("copy", lock.locked()))
    lock.acquire()
    execute.set_context(execute.GradingContext(sandbox=None, lock=lock, record=SubmissionLog("s")))
    try:
        grader._CopyWithoutLock.init_assignment(object(), "hw1", "ann")
    finally:
        execute.set_context(None)
    assert seen == {"stage": False, "copy": False} and lock.locked()
