"""Sandboxed, parallel autograding of untrusted submissions (``course grade``).

``nbgrader autograde`` runs every student's code as the instructor, with the
gradebook and the solutions readable, one student at a time.  This package keeps
nbgrader's grading pipeline and changes where and how the notebooks execute.

Design
------
*Who sees what.*  nbgrader's gradebook holds the locked and hidden test cells, so the
grader process stays **outside** the sandbox.  For each submission it runs nbgrader's
own ``Autograde`` converter: copy the files, record the timestamp, restore locked
cells and hidden tests from the gradebook (``ClearOutput``, ``DeduplicateIds``,
``OverwriteKernelspec``, ``OverwriteCells``, ``CheckCellMetadata``), then execute,
then ``SaveAutoGrades``, ``AssignLatePenalties`` and the rest.  Only the execution
step is replaced (:class:`~.execute.SandboxExecute`): the sanitised notebook goes
into a bubblewrap sandbox (:mod:`.sandbox`), where ``_runner.py`` starts the kernel
and drives it with nbclient -- kernel and client both inside, talking over the
sandbox's private loopback.  Each finished cell comes back at once over a pipe, so a
crash or a kill loses nothing that had already run.

*The sandbox* (:class:`~.sandbox.Sandbox`): new user, PID, network, IPC and UTS
namespaces, and no user namespaces below them; uid 65534 with no capabilities and
no_new_privs (when the grader runs as root, 65534 is also the host uid, so nothing in
the sandbox is root anywhere, and ``RLIMIT_NPROC`` applies); read-only binds of
``/usr``, the Python installation, the virtual environment and ``course_utils``;
nothing of the course directory, the gradebook, other submissions or any home
directory; the submission's files copied into a size-limited private tmpfs that is
its only writable place (with ``/tmp`` and ``/dev/shm``); rlimits on the kernel
(CPU seconds, data segment and address space, processes and threads, file size,
open files, no core dumps); a per-cell timeout (nbgrader's ``Execute.timeout``) and
a wall-clock deadline per submission enforced from outside by killing the sandbox's
PID namespace.

*A test passes only when the kernel says so.*  Each cell's execute reply comes back
with its outputs; a cell whose reply is not ``ok`` gets an error output even when the
student's code hid the traceback (a custom exception handler, ``bdb.BdbQuit``, a
replaced ``showtraceback``, ``clear_output``), as nbgrader's ``Execute`` does.  The
kernel imports ``course_utils`` from the installed package before any student code and
keeps the submission's folder at the end of ``sys.path`` (``python -P``), so a
``course_utils/`` folder shipped with the notebook cannot replace the checkers.
``tests/test_autograde_tricks.py`` grades a corpus of such tricks with both graders:
``course grade`` never gives more than ``nbgrader autograde``.

*A hostile or broken submission is still graded.*  Cells that ran keep their
outputs; the cell that was running when the kernel died, hung or the deadline struck
gets an error, and every later code cell gets a ``NotExecuted`` error, so tests that
never ran score zero (nbgrader would otherwise give full marks to a test cell without
output).  Edited or deleted locked cells are restored (``OverwriteCells``, with
``add_missing_cells`` on by default).  The submission's ``status`` (``ok``,
``timeout``, ``cell-timeout``, ``memory``, ``kernel-died``, ``processes``,
``output-limit``, ``too-large``, ``files``, ``bad-timestamp``, ``tampered``,
``missing``, ``error``) and sentences saying what happened go to the summary table,
the CSV, the graded notebook (a "Notes from the autograder" cell for the formgrader,
and its ``course_grade`` metadata) and the feedback page, which shows them in a
banner outside the notebook's cells; a submitted cell posing as the notes is removed.
A submission that could not be graded at all makes ``course grade`` exit 1, and a
score an earlier run left in the gradebook is marked STALE.

*Before and after the sandbox.*  nbgrader copies a submission's files on the host,
following symbolic links (a link to the gradebook would bring it in), blocking on a
FIFO and making sparse files dense, and parses any notebook however large: each
submission is first inspected (:mod:`.intake`, outside the gradebook lock) and graded
from a copy without its links, special files, hard links to files outside it, files
beyond the size limit and notebooks over the size or cell limits.  Outputs are capped
per cell and per notebook (:class:`Limits`).  The graded notebooks themselves never
enter the sandbox's working directory (the sanitised copies hold the hidden tests;
the notebook reaches the runner on stdin).  Feedback pages are rendered with
``HTMLExporter.sanitize_html`` on, since their outputs come from the student's
kernel, under a memory and a time limit, and without copying the submission's files.

*Parallel and consistent.*  ``workers`` threads (default: the number of cores) each
supervise one sandbox.  All gradebook and course-directory work happens under one
lock, released only while a notebook executes, so SQLite sees a single writer and
nothing is lost or corrupted; the sandboxes themselves run in parallel.  Feedback
HTML is rendered afterwards in ``workers`` processes (read-only gradebook access).
Ctrl-C kills the running sandboxes at once and removes half-graded folders.  Student
ids are taken literally (nbgrader globs them).

*Many machines.*  ``scheduler="tcp://HOST:PORT"`` (``course grade --scheduler``, or
``$COURSE_GRADE_SCHEDULER``) sends each notebook's sandboxed run to a Dask worker as one
task; this process keeps nbgrader's pipeline and the single gradebook writer
(:mod:`.dask_backend` says why the split lies there, and how worker loss, a lost
scheduler and a worker with other versions are handled).  ``local:N`` starts N worker
processes here.

Limits of the model: a kernel can still cheat *its own* grade (the tests run in the
student's kernel, as with nbgrader, and the hidden tests are visible to code running
beside them); the sandbox protects the instructor's files, the gradebook, other
students and the machine.  There is no seccomp filter; the kernel's memory limit is
an rlimit (virtual memory), not a cgroup.  Every submission is graded again on each
run (nbgrader's ``--force``); kernels are always Python (the course's).  The client
inside each sandbox costs CPU that nbgrader's in-process client does not (it buys a
grader process that never reads a message from a student's kernel); the kernel
makes up for it by starting in one interpreter without the debugger's imports, and
the client skips jsonschema's optional format checkers.

Public API
----------
:func:`grade_assignment`, :class:`GradeRun`, :class:`SubmissionResult`,
:class:`Limits`, :class:`Sandbox`, :class:`SandboxUnavailable`, :class:`GradingError`,
:func:`cli_grade` (the ``course grade`` command), :func:`format_table`;
:class:`ClusterLost`, :class:`ClusterRefused` and :data:`SCHEDULER_ENV` for grading on
a Dask cluster.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

from course_utils._lazy import lazy_getattr

# Imported on first use, so that ``python -m course_utils.autograde._feedback`` (and
# ``course --help``) do not pay for nbgrader before they need it.
_LAZY = {
    "grade_assignment": "grader", "GradeRun": "grader", "SubmissionResult": "grader",
    "GradingError": "grader", "format_table": "report", "Limits": "sandbox",
    "Sandbox": "sandbox", "SandboxUnavailable": "sandbox", "find_bwrap": "sandbox",
    "GiB": "sandbox", "MiB": "sandbox", "ClusterLost": "dask_backend",
    "ClusterRefused": "dask_backend", "SCHEDULER_ENV": "dask_backend",
}


__getattr__ = lazy_getattr(__name__, _LAZY, globals())


__all__ = ["grade_assignment", "GradeRun", "SubmissionResult", "Limits", "Sandbox",
           "SandboxUnavailable", "GradingError", "find_bwrap", "format_table", "cli_grade",
           "GiB", "MiB", "parse_size", "ClusterLost", "ClusterRefused", "SCHEDULER_ENV"]

#: Extra host paths made readable in the sandbox by ``course grade`` (os.pathsep-separated),
#: e.g. a dataset cache the assignment loads.
RO_BINDS_ENV = "COURSE_GRADE_RO_BINDS"


_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str, what: str = "size") -> int:
    """``"4G"``, ``"512M"``, ``"1.5G"`` or a number of bytes -> bytes (powers of 1024)."""
    t = str(text).strip().upper().removesuffix("IB").removesuffix("B")
    unit = t[-1:] if t[-1:] in _UNITS and t[-1:] else ""
    try:
        value = float(t[:-1] if unit else t)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise ValueError(f"{what} = {text!r}: give a size such as 4G, 512M or a number of bytes")
    return int(value * _UNITS[unit])


def _left(args) -> str:
    """How many students an interrupted run on a cluster left (from its list)."""
    import json

    from .dask_backend import pending_path

    try:
        n = len(json.loads(pending_path(args.course_dir, args.assignment)
                           .read_text())["pending"])
    except (OSError, ValueError, KeyError, TypeError):
        return "submissions"
    return f"{n} submission{'s' if n != 1 else ''}"


def _quiet_dask() -> None:
    """Dask's own loggers print tracebacks while its client tries to reconnect to a lost
    scheduler; ``course grade`` says what happened and what to do instead (``-v`` keeps
    them)."""
    import distributed  # noqa: F401  (configures its loggers on import)

    for name in list(logging.root.manager.loggerDict):
        if name == "distributed" or name.startswith("distributed."):
            logging.getLogger(name).setLevel(logging.CRITICAL)


def cli_grade(args: argparse.Namespace) -> int:
    """``course grade ASSIGNMENT``: grade, print the summary table, write CSV and feedback.

    Exit status 0 when every submission was graded (whatever the submissions did), 1
    when some could not be (their gradebook scores, if any, are an earlier run's and
    marked STALE), 2 when the class could not be graded at all (no bubblewrap, unknown
    assignment, no submissions, a Dask worker with other versions ...), 3 when the
    Dask scheduler was lost during the run (the same command resumes it).
    """
    from tqdm.contrib.logging import logging_redirect_tqdm

    from .grader import GradingError, grade_assignment
    from .report import format_table
    from .sandbox import Limits, SandboxUnavailable

    import warnings

    from sqlalchemy.exc import SAWarning

    # nbgrader's gradebook triggers these SQLAlchemy warnings on every new submission.
    warnings.filterwarnings("ignore", category=SAWarning, module="nbgrader")
    if not getattr(args, "verbose", False):
        logging.getLogger("course_utils.autograde.nbgrader").setLevel(logging.ERROR)
    from .dask_backend import SCHEDULER_ENV, ClusterLost, ClusterRefused, pending_path

    scheduler = getattr(args, "scheduler", None) or os.environ.get(SCHEDULER_ENV) or None
    if scheduler and not getattr(args, "verbose", False):
        _quiet_dask()
    binds = [p for p in os.environ.get(RO_BINDS_ENV, "").split(os.pathsep) if p]
    binds += list(getattr(args, "ro_bind", None) or [])
    try:
        limits = Limits(wall_seconds=float(args.timeout),
                        cell_timeout=getattr(args, "cell_timeout", None),
                        memory=parse_size(getattr(args, "memory", None) or "4G", "--memory"))
        with logging_redirect_tqdm():
            run = grade_assignment(args.assignment, args.course_dir, workers=args.workers,
                                   sandbox=not args.no_sandbox, limits=limits,
                                   students=getattr(args, "student", None),
                                   feedback=not getattr(args, "no_feedback", False),
                                   csv_path=args.csv, ro_binds=binds, scheduler=scheduler)
    except ClusterLost as exc:
        print(f"error: {exc}. Submissions graded so far keep their scores in the gradebook; "
              f"the submissions not graded yet ({_left(args)}) are listed in "
              f"{pending_path(args.course_dir, args.assignment)}: start the scheduler and "
              "its workers again and run the same command to grade only those.",
              file=sys.stderr)
        return 3
    except ClusterRefused as exc:
        left = pending_path(args.course_dir, args.assignment)
        print(f"error: {exc}" + (f" (the submissions not graded yet ({_left(args)}) are listed "
                                 f"in {left}; the same command grades only those)"
                                 if left.exists() else ""), file=sys.stderr)
        return 2
    except SandboxUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (GradingError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ncancelled: running sandboxes were stopped; submissions graded so far "
              "keep their scores in the gradebook", file=sys.stderr)
        return 130
    print(format_table(run))
    if run.resumed is not None:
        print(f"resumed an interrupted run on the cluster: graded the {len(run.results)} of "
              f"{run.resumed} submissions it had left")
    if run.csv_path:
        print(f"grades written to {run.csv_path}")
    failed = [s for s, status in run.feedback.items() if status != "ok"]
    if run.feedback:
        print(f"feedback HTML in {run.course_dir / 'feedback'}"
              + (f" (none for: {', '.join(sorted(failed))})" if failed else ""))
    ungraded = [r for r in run.results if r.failed]
    if ungraded:
        print(f"error: {len(ungraded)} submission(s) could not be graded: "
              + ", ".join(r.student + (" (score STALE)" if r.stale else "") for r in ungraded)
              + "; see the notes in the CSV, fix and grade them again with --student",
              file=sys.stderr)
        return 1
    return 0
