"""``course grade --scheduler``: grading on a Dask cluster (course_utils.autograde.dask_backend).

One LocalCluster of two single-threaded worker processes serves the module.  Each test
grades small courses built from the fixture course's ``ag1`` (``test_add`` 1 point,
``test_mos`` 2) and checks the gradebook the coordinator wrote: cluster scores equal
local ones, a worker with other versions is refused before anything is graded, a
worker killed mid-task costs nothing (graded exactly once), a lost scheduler stops the
run and the next run grades only what was left, and a kernel crash leaves the worker up.
"""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from course_utils.autograde import GiB, Limits, grade_assignment
from course_utils.autograde.dask_backend import (ClusterRefused,
                                                 environment_versions, pending_path)
from course_utils.bench.grade import add_submission, fixture_course, prepare_course

from _bwrap import BWRAP_REASON, bwrap_usable  # tests/_bwrap.py

distributed = pytest.importorskip("distributed")

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not bwrap_usable(), reason=BWRAP_REASON)]

LIMITS = Limits(wall_seconds=30, cell_timeout=10, memory=1 * GiB, processes=64)
WRONG = "def mean_of_squares(xs):\n    return 0.0\n"
CRASH = "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n"
EXIT = "raise SystemExit(0)\n"
# Looks for any gradebook or source/ folder it can see, and for the network.
SNOOP = ("import os, socket\nfound = []\nfor root, dirs, files in os.walk('/'):\n"
         "    if root.startswith(('/proc', '/sys', '/usr', '/dev')):\n        dirs[:] = []\n"
         "    dirs[:] = [x for x in dirs if x not in ('.venv', '.pyenv', 'site-packages')]\n"
         "    found += [os.path.join(root, f) for f in files if f == 'gradebook.db']\n"
         "try:\n    socket.create_connection(('10.255.255.1', 80), timeout=1)\n"
         "    net = 'open'\nexcept OSError:\n    net = 'blocked'\n"
         "print('SNOOP', found, net)\n")
SLOW = ("import time\ntime.sleep({s})\nimport numpy as np\ndef mean_of_squares(xs):\n"
        "    xs = np.asarray(xs, dtype=float)\n    return float(np.mean(xs ** 2))\n")


def _drop_test(nb):
    nb.cells = [c for c in nb.cells
                if c.get("metadata", {}).get("nbgrader", {}).get("grade_id") != "test_add"]


@pytest.fixture(scope="module")
def cluster():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=":0") as lc, Client(lc, set_as_default=False) as client:
        yield lc.scheduler_address, client


def _course(tmp: Path, name: str, subs: dict) -> Path:
    d = prepare_course(fixture_course(), tmp / name, "ag1")
    for student, kw in subs.items():
        add_submission(d, "ag1", student, **kw)
    return d


def _grade(d: Path, **kw):
    return grade_assignment("ag1", d, limits=LIMITS, feedback=False, csv_path=False,
                            progress=False, **kw)


def _submissions(d: Path) -> dict[str, int]:
    """Rows per student in the gradebook's submitted assignments."""
    with sqlite3.connect(d / "gradebook.db") as db:
        rows = db.execute("SELECT student_id, COUNT(*) FROM submitted_assignment "
                          "GROUP BY student_id").fetchall()
    return dict(rows)


def _pids(client) -> dict[str, int]:
    return client.run(os.getpid)


def test_cluster_scores_equal_local(tmp_path, cluster):
    """Same submissions, graded by local course grade and on the cluster: same scores,
    statuses and notes; the kernel that kills itself leaves its worker running."""
    address, client = cluster
    subs = {"honest": {}, "blank": {"base": "release"},
            "wrong": {"answers": {"mos_answer": WRONG}}, "crash": {"answers": {"mos_answer": CRASH}},
            "exits": {"answers": {"mos_answer": EXIT}}, "dropped": {"edit": _drop_test},
            "snoop": {"answers": {"mos_answer": SNOOP}}}
    local = _grade(_course(tmp_path, "local", subs), workers=2)
    pids = _pids(client)
    d = _course(tmp_path, "cluster", subs)
    run = _grade(d, scheduler=address)
    got = {r.student: (r.score, r.status, r.notes) for r in run.results}
    want = {r.student: (r.score, r.status, r.notes) for r in local.results}
    assert got == want
    assert got["honest"][0] == 3 and got["blank"][0] == 0 and got["wrong"][0] == 1
    assert "kernel-died" in got["crash"][1] and got["crash"][0] == 1  # test_add ran first
    assert _pids(client) == pids, "a worker restarted while grading"
    graded = (d / "autograded" / "snoop" / "ag1" / "ag1.ipynb").read_text()
    assert "SNOOP [] blocked" in graded  # the worker's sandbox hides and cuts the same
    assert _submissions(d) == dict.fromkeys(subs, 1)
    assert not pending_path(d, "ag1").exists()


def test_worker_with_other_versions_is_refused(tmp_path, cluster):
    """One worker reports nbgrader 0.0.1 (a dist-info first on its sys.path): the run
    is refused before any grading, naming the worker, the package and both versions."""
    address, client = cluster
    fake = tmp_path / "fake-site"
    (fake / "nbgrader-0.0.1.dist-info").mkdir(parents=True)
    (fake / "nbgrader-0.0.1.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: nbgrader\nVersion: 0.0.1\n")
    victim = sorted(_pids(client))[0]
    client.run(lambda p: sys.path.insert(0, p), str(fake), workers=[victim])
    try:
        d = _course(tmp_path, "c", {"honest": {}})
        with pytest.raises(ClusterRefused) as err:
            _grade(d, scheduler=address)
    finally:
        client.run(lambda p: sys.path.remove(p), str(fake), workers=[victim])
    msg = str(err.value)
    assert victim in msg and "nbgrader 0.0.1" in msg
    assert f"coordinator has {environment_versions()['nbgrader']}" in msg
    assert _submissions(d) == {}
    assert not (d / "autograded").exists()


def test_killed_worker_is_retried_and_graded_once(tmp_path, cluster):
    """The worker running the slow submission is killed mid-task: the scheduler reruns
    it elsewhere; every student has one submission and the right score."""
    address, client = cluster
    d = _course(tmp_path, "c", {"a": {}, "slow": {"answers": {"mos_answer": SLOW.format(s=4)}},
                                "z": {"base": "release"}})
    out, killed = {}, []

    def grade():
        try:
            out["run"] = _grade(d, scheduler=address)
        except BaseException as exc:  # reported by the assertion below
            out["error"] = exc

    t = threading.Thread(target=grade)
    t.start()
    deadline = time.monotonic() + 60
    while not killed and time.monotonic() < deadline and t.is_alive():
        for worker, keys in client.processing().items():
            if any("course-grade-slow-" in str(k) for k in keys):
                time.sleep(1.0)  # let the notebook start in its sandbox
                if any("course-grade-slow-" in str(k) for k in client.processing()[worker]):
                    os.kill(client.run(os.getpid, workers=[worker])[worker], signal.SIGKILL)
                    killed.append(worker)
                break
        time.sleep(0.2)
    t.join(120)
    assert killed, "the slow submission was never seen running"
    assert "error" not in out, out.get("error")
    scores = {r.student: (r.score, r.status) for r in out["run"].results}
    assert scores == {"a": (3.0, "ok"), "slow": (3.0, "ok"), "z": (0.0, "ok")}
    assert _submissions(d) == {"a": 1, "slow": 1, "z": 1}
    client.wait_for_workers(2, timeout=60)  # the nanny restarts the killed worker


_SCHEDULER = """
import sys, time
from distributed import LocalCluster
c = LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp://",
                 host="127.0.0.1", dashboard_address=":0")
print(c.scheduler_address, flush=True)
time.sleep(600)
"""


def test_lost_scheduler_then_rerun_grades_only_the_rest(tmp_path, cluster, capsys):
    """A scheduler (with its worker) in another process is killed while the second of
    three submissions runs: course grade exits 3 saying so, the first keeps its score,
    the list of the other two is left; the next run grades just those two and removes
    the list."""
    from course_utils.cli import main

    address, _ = cluster
    d = _course(tmp_path, "c", {"a": {}, "b": {"answers": {"mos_answer": SLOW.format(s=6)}},
                                "c": {"answers": {"mos_answer": WRONG}}})
    proc = subprocess.Popen([sys.executable, "-c", _SCHEDULER], stdout=subprocess.PIPE,
                            text=True)
    try:
        remote = proc.stdout.readline().strip()
        assert remote.startswith("tcp://"), remote
        out = {}
        t = threading.Thread(target=lambda: out.update(rc=main(
            ["grade", "ag1", "--course-dir", str(d), "--scheduler", remote, "--workers", "1",
             "--no-feedback", "--timeout", "30", "--cell-timeout", "10"])))
        t.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (d / "autograded" / "b").exists():
            time.sleep(0.2)
        time.sleep(1.0)
        proc.kill()
        t.join(90)
        assert not t.is_alive()
    finally:
        proc.kill()
        proc.wait()
    err = capsys.readouterr().err
    left = pending_path(d, "ag1")
    assert out["rc"] == 3, err
    assert f"lost the Dask scheduler {remote} while grading" in err
    assert f"(2 submissions) are listed in {left}" in err and "run the same command" in err
    assert _submissions(d).get("a") == 1
    assert left.exists() and "\"b\"" in left.read_text() and "\"a\"" not in left.read_text()
    rerun = _grade(d, scheduler=address)
    assert sorted(r.student for r in rerun.results) == ["b", "c"]
    assert rerun.resumed == 3
    assert not left.exists()
    assert _submissions(d) == {"a": 1, "b": 1, "c": 1}
    with sqlite3.connect(d / "gradebook.db") as db:
        # the first run's score of 'a' is intact
        scores = dict(db.execute(
            "SELECT sa.student_id, SUM(g.auto_score) FROM grade g "
            "JOIN submitted_notebook sn ON g.notebook_id = sn.id "
            "JOIN submitted_assignment sa ON sn.assignment_id = sa.id "
            "GROUP BY sa.student_id").fetchall())
    assert scores == {"a": 3.0, "b": 3.0, "c": 1.0}


def test_course_grade_command_on_local_cluster(tmp_path, capsys, monkeypatch):
    """The command end to end with $COURSE_GRADE_SCHEDULER=local:1 (its own LocalCluster):
    the table names the cluster; the scores are those of the submissions."""
    from course_utils.cli import main

    d = _course(tmp_path, "c", {"good": {}, "blank": {"base": "release"}})
    monkeypatch.setenv("COURSE_GRADE_SCHEDULER", "local:1")
    rc = main(["grade", "ag1", "--course-dir", str(d), "--no-feedback", "--timeout", "60"])
    out = capsys.readouterr().out
    assert rc == 0, out
    table = {line.split()[0]: line.split()[1] for line in out.splitlines()
             if line.startswith(("good ", "blank "))}
    assert table == {"good": "3", "blank": "0"}
    assert "1 worker(s) on the Dask cluster local:1, sandboxed" in out


def test_unreachable_scheduler_and_bad_local_are_clear(tmp_path, capsys):
    """Nothing listens on the port: exit 2 naming the address and what to do; local:0
    is refused with the form to write."""
    import socket

    import dask

    from course_utils.cli import main

    d = _course(tmp_path, "c", {"good": {}})
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: connections are refused
    with dask.config.set({"distributed.comm.timeouts.connect": "2s"}):
        rc = main(["grade", "ag1", "--course-dir", str(d), "--no-feedback",
                   "--scheduler", f"tcp://127.0.0.1:{port}"])
    err = capsys.readouterr().err
    assert rc == 2 and f"cannot reach the Dask scheduler tcp://127.0.0.1:{port}" in err
    assert "dask scheduler" in err
    rc = main(["grade", "ag1", "--course-dir", str(d), "--scheduler", "local:0"])
    assert rc == 2 and "local:N with N >= 1" in capsys.readouterr().err
    assert _submissions(d) == {}


def test_task_refuses_on_a_worker_that_joined_after_the_check(monkeypatch):
    """A worker the coordinator never checked (it joined later) checks its own versions
    before running anything: other torch -> WorkerRefused naming torch, nothing run."""
    from course_utils.autograde import dask_backend

    monkeypatch.setattr(dask_backend, "_CHECKED", {})
    ran = []
    monkeypatch.setattr(dask_backend, "_worker_sandbox", lambda spec: ran.append(spec))
    theirs = dict(environment_versions(), torch="0.0.1")
    with pytest.raises(dask_backend.WorkerRefused, match=r"torch .* \(the coordinator has 0\.0\.1\)"):
        dask_backend.run_task({}, None, "w", {"versions": theirs})
    assert ran == []
    assert dask_backend._CHECKED == environment_versions()  # remembered for later tasks


def test_bench_grade_on_the_cluster(cluster):
    """course bench grade --scheduler: the cluster's ratios against serial nbgrader and
    local course grade, the same scores, and the scaling note's two figures. Run as the
    command, in its own process, as an instructor runs it: the benchmark drives nbgrader's
    AutogradeApp in-process (its logging and fd 2 redirection), which must not share
    pytest's captured streams."""
    import re

    address, _ = cluster
    res = subprocess.run([sys.executable, "-m", "course_utils.cli", "bench", "grade",
                          "--copies", "2", "--scheduler", address],
                         capture_output=True, text=True, timeout=600)
    out = res.stdout
    assert res.returncode == 0, out + res.stderr[-4000:]
    assert re.search(rf"course grade on {re.escape(address)} \(2 worker threads\): +[\d.]+ s "
                     r".*speed-up [\d.]+x vs serial nbgrader, [\d.]+x vs local course grade", out)
    assert "cluster scores identical to nbgrader's for all 2 students: yes" in out
    assert re.search(r"each submission costs [\d.]+ CPU-s in its sandbox \(on a worker\) and "
                     r"[\d.]+ CPU-s on the coordinator", out)


def test_scheduler_without_workers_is_refused(tmp_path, monkeypatch):
    """A scheduler that never gets a worker: refused after the wait, nothing graded."""
    from distributed import LocalCluster

    from course_utils.autograde import dask_backend

    monkeypatch.setattr(dask_backend, "WAIT_FOR_WORKERS", 1)
    d = _course(tmp_path, "c", {"good": {}})
    with LocalCluster(n_workers=0, processes=False, protocol="tcp://", host="127.0.0.1",
                      dashboard_address=":0") as empty:
        with pytest.raises(ClusterRefused, match="has had no workers for 1 s; start some"):
            _grade(d, scheduler=empty.scheduler_address)
    assert _submissions(d) == {}
