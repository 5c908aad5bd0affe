"""Grade a whole class: nbgrader's autograde pipeline, sandboxed and in parallel.

Each submission is graded by nbgrader's own ``Autograde`` converter (so files,
timestamps, late penalties, missing notebooks, restored cells and saved scores are
exactly what ``nbgrader autograde`` does), with two substitutions: ``Execute``
becomes :class:`~course_utils.autograde.execute.SandboxExecute` and
``OverwriteCells`` becomes ``TrackingOverwriteCells``.

``workers`` threads each grade one submission at a time.  Everything that touches
the gradebook or the course directory runs under one lock, so the SQLite gradebook
only ever sees one writer (and one reader) at a time; the lock is released while a
notebook executes in its sandbox, which is where the time goes, so ``workers``
sandboxes run at once.
"""
from __future__ import annotations

import glob
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from pathlib import Path

from nbconvert.writers import FilesWriter
from nbgrader.api import Gradebook, MissingEntry
from nbgrader.converters import Autograde
from nbgrader.converters.base import BaseConverter
from nbgrader.coursedir import CourseDirectory
from nbgrader.preprocessors import Execute, OverwriteCells
from traitlets.config import Config
from traitlets.config.loader import PyFileConfigLoader
from tqdm.auto import tqdm

from .execute import (CheckGradeIds, GradingContext, SandboxExecute, SubmissionLog,
                      TrackingOverwriteCells, current_or_none, set_context)
from .intake import inspect_submission, protected_inodes, stage
from .sandbox import GradingCancelled, Limits, Sandbox

__all__ = ["SubmissionResult", "GradeRun", "grade_assignment", "load_course_config",
           "find_submissions", "GradingError"]

log = logging.getLogger(__name__)
_nbgrader_log = logging.getLogger("course_utils.autograde.nbgrader")


class GradingError(RuntimeError):
    """The assignment cannot be graded as asked; the message says what to do."""


@dataclass
class SubmissionResult:
    """One student's outcome, as stored in the gradebook after grading."""

    student: str
    score: float
    max_score: float
    late_penalty: float = 0.0
    status: str = "ok"
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    #: grading did not complete this run (the status includes "error")
    failed: bool = False
    #: failed, and ``score`` is what an earlier run left in the gradebook
    stale: bool = False


@dataclass
class GradeRun:
    """The outcome of :func:`grade_assignment`."""

    assignment: str
    course_dir: Path
    results: list[SubmissionResult]
    seconds: float
    sandboxed: bool
    workers: int
    csv_path: Path | None = None
    feedback: dict[str, str] = field(default_factory=dict)  # student -> "ok" or error
    #: CPU seconds the sandboxes reported (runner + kernel), summed over the class;
    #: what the grader process itself used is not included.
    sandbox_cpu_seconds: float = 0.0
    #: on a cluster, when this run graded only what an interrupted run had left:
    #: how many students that run had in all
    resumed: int | None = None
    #: the Dask scheduler the submissions ran on (None: this machine)
    scheduler: str | None = None

    def by_student(self) -> dict[str, SubmissionResult]:
        return {r.student: r for r in self.results}


def load_course_config(course_dir: Path) -> Config:
    """The course's ``nbgrader_config.py`` (if any) plus this grader's defaults.

    ``OverwriteCells.add_missing_cells`` defaults to True here: a test cell the
    student deleted is put back and run, as nbgrader does when so configured.
    """
    cfg = Config()
    path = course_dir / "nbgrader_config.py"
    if path.exists():
        cfg.merge(PyFileConfigLoader(path.name, path=str(course_dir)).load_config())
    if "add_missing_cells" not in cfg.OverwriteCells:
        cfg.OverwriteCells.add_missing_cells = True
    return cfg


def _coursedir(cfg: Config, course_dir: Path, **traits) -> CourseDirectory:
    """nbgrader's CourseDirectory rooted at ``course_dir``; a relative SQLite URL is
    made absolute (nbgrader resolves it from the course directory, after a chdir that
    this grader does not do)."""
    cd = CourseDirectory(config=cfg, root=str(course_dir))
    for k, v in traits.items():
        setattr(cd, k, v)
    db = _sqlite_path(cd.db_url)
    if db is not None and db and not os.path.isabs(db):
        cd.db_url = f"sqlite:///{course_dir / db}"
    return cd


def find_submissions(coursedir: CourseDirectory, assignment: str) -> list[str]:
    """Student ids with a ``submitted/<student>/<assignment>`` directory, sorted,
    without those in ``CourseDirectory.student_id_exclude``."""
    pattern = coursedir.format_path(coursedir.submitted_directory, "*", assignment)
    regexp = coursedir.format_path(coursedir.submitted_directory, "(?P<student_id>[^/]+)",
                                   re.escape(assignment), escape=True)
    excluded = {s for s in coursedir.student_id_exclude.split(",") if s}
    students = []
    for path in sorted(glob.glob(pattern)):
        m = re.fullmatch(regexp, path)
        if m and os.path.isdir(path) and m.group("student_id") not in excluded:
            students.append(m.group("student_id"))
    return students


def _swap(classes, old, new):
    """Replace ``old`` (or a subclass, or its import string) by ``new`` in a list."""
    import importlib

    out = []
    for pp in classes:
        cls = pp
        if isinstance(pp, str):
            module, name = pp.rsplit(".", 1)
            cls = getattr(importlib.import_module(module), name)
        out.append(new if isinstance(cls, type) and issubclass(cls, old) else cls)
    return out


def init_notebooks_literally(converter) -> None:
    """``BaseConverter.init_notebooks`` with the student and assignment ids taken
    literally.  nbgrader globs ``<dir>/<student>/<assignment>`` and then globs the match
    again for the notebooks, so the student ``instructo[r]`` was graded from the folder
    of ``instructor`` (twice).  Only the notebook id (``*`` by default) is a pattern."""
    from nbgrader.converters.base import NbGraderException

    cd = converter.coursedir
    converter.assignments = {}
    converter.notebooks = []
    folder = converter._format_source(cd.assignment_id, cd.student_id)
    found = sorted(glob.glob(os.path.join(glob.escape(folder), cd.notebook_id + ".ipynb")))
    if os.path.isdir(folder) and found:
        converter.assignments[folder] = found
    else:
        msg = f"No notebooks were matched in '{folder}'"
        converter.log.error(msg)
        raise NbGraderException(msg)


class _CopyWithoutLock(BaseConverter):
    """Copies the submission's files into ``autograded/`` with the gradebook lock
    released: the copy grows with the submission (up to ``Limits.max_submission_bytes``)
    and touches only this student's folder, so other graders need not wait for it.
    Sits between ``Autograde`` and ``BaseConverter`` in the method order, so that
    ``Autograde.init_assignment``'s ``super()`` call lands here."""

    def init_assignment(self, assignment_id: str, student_id: str) -> None:
        ctx = current_or_none()
        if ctx is None:
            return BaseConverter.init_assignment(self, assignment_id, student_id)
        ctx.lock.release()
        try:
            BaseConverter.init_assignment(self, assignment_id, student_id)
        finally:
            ctx.lock.acquire()


class _SandboxedAutograde(Autograde, _CopyWithoutLock):
    """nbgrader's Autograde with sandboxed execution and tamper tracking.

    ``start`` is BaseConverter.start without its ``os.chdir``: the working directory
    is process-wide and other grader threads run at the same time (every path here
    is absolute, so nothing depends on it).
    """

    def start(self) -> None:
        self.sanitize_preprocessors = [CheckGradeIds] + _swap(
            self.sanitize_preprocessors, OverwriteCells, TrackingOverwriteCells)
        self.autograde_preprocessors = _swap(self.autograde_preprocessors, Execute,
                                             SandboxExecute)
        init_notebooks_literally(self)
        self.writer = FilesWriter(parent=self, config=self.config)
        self.exporter = self.exporter_class(parent=self, config=self.config)
        for pp in self.preprocessors:
            self.exporter.register_preprocessor(pp)
        self.convert_notebooks()

    def convert_single_notebook(self, notebook_filename: str) -> None:
        """Autograde.convert_single_notebook without ``utils.setenv``: that sets and
        deletes NBGRADER_EXECUTION in the process-wide environment, which races
        between grader threads.  The sandbox gets NBGRADER_EXECUTION=autograde in its
        own environment instead."""
        self.log.info("Sanitizing %s", notebook_filename)
        self._sanitizing = True
        self._init_preprocessors()
        BaseConverter.convert_single_notebook(self, notebook_filename)
        notebook_filename = os.path.join(self.writer.build_directory,
                                         os.path.basename(notebook_filename))
        self.log.info("Autograding %s", notebook_filename)
        self._sanitizing = False
        self._init_preprocessors()
        try:
            BaseConverter.convert_single_notebook(self, notebook_filename)
        finally:
            self._sanitizing = True


class _RecordingHandler(logging.Handler):
    def __init__(self, record: SubmissionLog):
        super().__init__(level=logging.ERROR)
        self.record = record

    #: nbgrader's generic lines around the actual error
    BOILERPLATE = ("There was an error processing", "Please see the", "Did you mean")

    def emit(self, rec: logging.LogRecord) -> None:
        msg = rec.getMessage().strip()
        if msg and not msg.startswith(self.BOILERPLATE):
            self.record.errors.append(msg.splitlines()[-1])


def _student_logger(student: str, record: SubmissionLog) -> logging.Logger:
    """A logger outside the manager (no leak over 300 students) that feeds the
    student's record and propagates to ``course_utils.autograde.nbgrader``."""
    lg = logging.Logger(f"{_nbgrader_log.name}.{student}")
    lg.parent = _nbgrader_log
    lg.addHandler(_RecordingHandler(record))
    return lg


def _stage_submission(coursedir, assignment, student, staging: Path, record, limits,
                      notebooks, protected) -> bool:
    """Decide what of the submission is graded (:mod:`.intake`) and, when something
    is left out, grade a copy without it: ``coursedir.submitted_directory`` then points
    at ``staging``.  False when the submission folder itself is a link (not graded)."""
    src = coursedir.format_path(coursedir.submitted_directory, student, assignment)
    if os.path.islink(src):
        record.add("error", f"The submission folder {src} is a symbolic link; it was not "
                   "graded. Copy the submission there instead.")
        record.failed = True
        return False
    intake = inspect_submission(src, notebooks, limits, protected)
    for status, notebook, note in intake.notes:
        record.notebook = notebook
        record.add(status, note)
    record.notebook = ""
    record.refused_notebooks = list(intake.refused_notebooks)
    if intake.skip:
        coursedir.submitted_directory = str(staging)
        stage(src, coursedir.format_path(coursedir.submitted_directory, student, assignment),
              intake.skip)
    return True


def _grade_one(student: str, assignment: str, course_dir: Path, cfg: Config,
               sandbox: Sandbox, lock: threading.Lock, notebooks: list[str],
               staging: Path, protected=frozenset()) -> SubmissionLog:
    """Grade one student's submission; never raises for a problem with it (that goes
    into the returned record), only GradingCancelled.

    The submission is inspected and staged before the gradebook lock is taken: that
    work grows with the submission, and other graders must not wait for it."""
    record = SubmissionLog(student=student)
    set_context(GradingContext(sandbox=sandbox, lock=lock, record=record))
    start = time.monotonic()
    try:
        coursedir = _coursedir(cfg, course_dir, assignment_id=assignment, student_id=student)
        if _stage_submission(coursedir, assignment, student, staging, record,
                             sandbox.limits, notebooks, protected):
            with lock:
                _grade_locked(student, assignment, coursedir, cfg, notebooks, record)
    except GradingCancelled:
        raise
    except Exception as exc:  # a problem outside nbgrader's own handling
        log.exception("grading %s for %s failed", assignment, student)
        record.failed = True
        record.add("error", f"Grading failed ({type(exc).__name__}: {exc}); the submission "
                   "scores zero where it was not graded.")
    finally:
        set_context(None)
        record.seconds = time.monotonic() - start
    return record


def _grade_locked(student, assignment, coursedir, cfg, notebooks, record) -> None:
    """The part of :func:`_grade_one` that runs under the gradebook lock (which
    SandboxExecute releases while the notebook executes)."""
    submitted = coursedir.format_path(coursedir.submitted_directory, student, assignment)
    if not any(os.path.exists(os.path.join(submitted, f"{n}.ipynb")) for n in notebooks):
        _record_empty_submission(coursedir, assignment, student, record, notebooks,
                                 note=not record.refused_notebooks)
        return
    converter = _SandboxedAutograde(coursedir=coursedir, config=cfg,
                                    log=_student_logger(student, record))
    converter.force = True
    try:
        converter.start()
    except GradingCancelled:
        # Leave nothing half-done: the sanitised copy (with the hidden tests) may
        # already be in autograded/.
        shutil.rmtree(coursedir.format_path(coursedir.autograded_directory, student,
                                            assignment), ignore_errors=True)
        raise
    except Exception as exc:  # nbgrader logged the details for this student
        reason = "; ".join(dict.fromkeys(e for e in record.errors if e)) or str(exc)
        record.failed = True
        record.add("error", f"Grading failed, so this submission scores zero where it was "
                   f"not graded: {reason}")
        log.error("grading %s for %s failed: %s", assignment, student, reason)


def _record_empty_submission(coursedir, assignment, student, record, notebooks,
                             note: bool = True) -> None:
    """A submission folder without any of the assignment's notebooks: nbgrader would
    stop with an error and record nothing.  Record the submission with zero scores
    instead (what nbgrader does for each missing notebook) and say so."""
    submitted = coursedir.format_path(coursedir.submitted_directory, student, assignment)
    with Gradebook(coursedir.db_url, coursedir.course_id) as gb:
        gb.update_or_create_student(student)
        timestamp = coursedir.get_existing_timestamp(submitted)
        if timestamp:
            submission = gb.update_or_create_submission(assignment, student,
                                                        timestamp=timestamp)
        else:
            submission = gb.update_or_create_submission(assignment, student)
        for notebook in submission.notebooks:
            for grade in notebook.grades:
                grade.auto_score = 0
                grade.needs_manual_grade = False
        gb.db.commit()
    if note:
        record.add("missing", "No notebook of the assignment was submitted "
                   f"(expected {', '.join(n + '.ipynb' for n in notebooks)}); it scores zero.")


def _graded_before(coursedir, assignment) -> set[str]:
    """Students with a submission of ``assignment`` in the gradebook already."""
    with Gradebook(coursedir.db_url, coursedir.course_id) as gb:
        return {s.student.id for s in gb.assignment_submissions(assignment)}


def _scores(coursedir, assignment, students, records, before=frozenset()
            ) -> list[SubmissionResult]:
    results = []
    with Gradebook(coursedir.db_url, coursedir.course_id) as gb:
        notebooks = [nb.name for nb in gb.find_assignment(assignment).notebooks]
        for student in students:
            rec = records[student]
            submitted = coursedir.format_path(coursedir.submitted_directory, student, assignment)
            for name in notebooks:  # nbgrader gave these zero
                if "missing" not in rec.statuses and \
                        not os.path.exists(os.path.join(submitted, f"{name}.ipynb")):
                    rec.notebook = name
                    rec.add("missing", f"The notebook {name}.ipynb was not submitted; it "
                            "scores zero.")
            try:
                sub = gb.find_submission(assignment, student)
                score, max_score = float(sub.score), float(sub.max_score)
                penalty = float(sub.late_submission_penalty or 0.0)
            except MissingEntry:
                score, max_score, penalty = 0.0, float(gb.find_assignment(assignment).max_score), 0.0
                rec.add("error", "No submission was recorded in the gradebook.")
            stale = rec.failed and student in before
            if stale:
                rec.add("error", f"The score shown ({score:g}) is STALE: it is what an earlier "
                        "grading run left in the gradebook, not a result of this run. Fix the "
                        f"problem above and grade again (--student {student}).")
            results.append(SubmissionResult(student=student, score=score, max_score=max_score,
                                            late_penalty=penalty, status=rec.status,
                                            notes=rec.notes, seconds=rec.seconds,
                                            failed=rec.failed, stale=stale))
    return results


def grade_assignment(assignment: str, course_dir: str | os.PathLike = "assignments", *,
                     workers: int | None = None, sandbox: bool = True,
                     limits: Limits | None = None, students=None, feedback: bool = True,
                     csv_path: str | os.PathLike | None = None, progress: bool = True,
                     ro_binds=(), env: dict[str, str] | None = None,
                     scheduler: str | None = None) -> GradeRun:
    """Autograde every submission of ``assignment`` in ``course_dir``.

    Parameters
    ----------
    workers : parallel sandboxes (default: ``os.cpu_count()``).
    sandbox : False runs student code without isolation (trusted code only).
    limits : per-submission resource limits (:class:`Limits`).
    students : grade only these student ids (default: every submission).
    feedback : also write ``feedback/<student>/<assignment>/*.html`` as
        ``nbgrader generate_feedback`` does.
    csv_path : where to write the grades (default ``<course_dir>/<assignment>_grades.csv``;
        ``False`` writes none).
    ro_binds, env : extra read-only host paths and environment variables for the
        sandbox (for example a dataset cache the assignment reads).
    scheduler : a Dask scheduler address (``tcp://HOST:PORT``) or ``local:N``: each
        submission's sandboxed run goes to a worker (:mod:`.dask_backend`); this
        process still writes the gradebook.  ``ro_binds`` are then paths on the workers.
        ``workers`` defaults to the cluster's threads.

    Returns a :class:`GradeRun`; a submission that misbehaves is graded (zero where
    a test did not pass) and its ``status``/``notes`` say what happened.
    """
    from .report import generate_feedback, write_csv

    t0 = time.monotonic()
    course_dir = Path(course_dir).resolve()
    if not course_dir.is_dir():
        raise GradingError(f"course_dir {course_dir} is not a directory; pass the nbgrader "
                           "course directory (the one holding source/ and submitted/)")
    cfg = load_course_config(course_dir)
    coursedir = _coursedir(cfg, course_dir, assignment_id=assignment)
    notebooks = _check_gradebook(coursedir, assignment, course_dir)
    found = find_submissions(coursedir, assignment)
    if students is not None:
        wanted = list(dict.fromkeys(students))
        missing = [s for s in wanted if s not in found]
        if missing:
            raise GradingError(f"students {missing} have no submission of '{assignment}' "
                               f"under {coursedir.format_path(coursedir.submitted_directory, '*', assignment)}")
        found = wanted
    if not found:
        raise GradingError(f"no submissions of '{assignment}' found under "
                           f"{coursedir.format_path(coursedir.submitted_directory, '*', assignment)}; "
                           f"run 'nbgrader collect {assignment}' (or copy them there) first")
    if workers is not None and int(workers) < 0:
        raise ValueError(f"workers must be at least 1, got {workers}")
    limits = limits or Limits()
    cluster = pending = None
    if scheduler:
        from .dask_backend import ClusterSandbox, open_cluster

        found, pending = _resume(course_dir, assignment, found, students is None)
        cluster = open_cluster(scheduler)
        workers = int(workers or cluster.slots)
        box = ClusterSandbox(cluster.client, limits, enabled=sandbox, ro_binds=ro_binds,
                             env=env, hidden=[course_dir, _sqlite_path(coursedir.db_url)
                                              or course_dir], versions=cluster.versions)
    else:
        workers = int(workers or os.cpu_count() or 1)
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        if limits.threads is None:
            limits = replace(limits, threads=max(1, (os.cpu_count() or 1) // workers))
        box = Sandbox(limits, enabled=sandbox, ro_binds=ro_binds, env=env)
    lock = threading.Lock()
    records: dict[str, SubmissionLog] = {}
    before = _graded_before(coursedir, assignment)
    protected = protected_inodes(course_dir, _sqlite_path(coursedir.db_url))
    staging = Path(tempfile.mkdtemp(prefix="course-grade-staging-"))
    try:
        box.check_hidden(course_dir, _sqlite_path(coursedir.db_url) or course_dir)
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="grade") as pool, \
                tqdm(total=len(found), desc=f"grading {assignment}", unit="submission",
                     disable=not progress, dynamic_ncols=True) as bar:
            futures = {pool.submit(_grade_one, s, assignment, course_dir, cfg, box, lock,
                                   notebooks, staging, protected): s
                       for s in found}
            try:
                for fut in as_completed(futures):
                    student = futures[fut]
                    records[student] = fut.result()
                    if pending is not None:
                        pending.done(student)
                    bar.set_postfix_str(f"{student}: {records[student].status}",
                                        refresh=False)
                    bar.update(1)
            except BaseException:  # Ctrl-C: stop every sandbox now, start no more
                box.cancel()
                pool.shutdown(wait=True, cancel_futures=True)
                raise
    finally:
        box.close()
        if cluster is not None:
            cluster.close()
        shutil.rmtree(staging, ignore_errors=True)
    results = _scores(coursedir, assignment, found, records, before)
    run = GradeRun(assignment=assignment, course_dir=course_dir, results=results,
                   seconds=0.0, sandboxed=sandbox, workers=workers,
                   sandbox_cpu_seconds=sum(r.sandbox_cpu_seconds for r in records.values()))
    if pending is not None:
        pending.finish()
        run.resumed = pending.resumed
        run.scheduler = scheduler
    if feedback:
        # Feedback pages are rendered here, on the coordinator's cores.
        run.feedback = generate_feedback(course_dir, assignment, found,
                                         workers=min(workers, os.cpu_count() or 1),
                                         progress=progress)
    if csv_path is not False:
        run.csv_path = write_csv(run, Path(csv_path) if csv_path else
                                 course_dir / f"{assignment}_grades.csv")
    run.seconds = time.monotonic() - t0
    return run


class _Pending:
    """The students a run on a cluster has still to grade, kept in a file beside the
    gradebook (:func:`~.dask_backend.pending_path`) so that a run stopped by a lost
    scheduler (or Ctrl-C) can be resumed; written by this process only."""

    def __init__(self, path: Path, students: list[str], resumed: int | None):
        self.path, self.left, self.resumed = path, list(students), resumed
        self._save()

    def _save(self) -> None:
        from course_utils.atomic import atomic_write_json

        self.path.parent.mkdir(exist_ok=True)
        atomic_write_json(self.path, {"pending": self.left})

    def done(self, student: str) -> None:
        if student in self.left:
            self.left.remove(student)
            self._save()

    def finish(self) -> None:
        if self.left:
            self._save()
        else:
            self.path.unlink(missing_ok=True)


def _resume(course_dir: Path, assignment: str, found: list[str], whole_class: bool
            ) -> tuple[list[str], _Pending]:
    """On a cluster: when an earlier run on a cluster was interrupted, grade only the
    students it had not graded (unless students were named)."""
    import json

    from .dask_backend import pending_path

    path = pending_path(course_dir, assignment)
    resumed, left = None, []
    if path.exists():
        try:
            left = [str(s) for s in json.loads(path.read_text())["pending"]]
        except (OSError, ValueError, KeyError, TypeError):
            raise GradingError(f"{path} (the students an interrupted run left ungraded) is "
                               "unreadable; delete it to grade the whole class again") from None
    todo = [s for s in found if s in set(left)]
    if whole_class and todo:
        log.warning("resuming an interrupted run: grading the %d of %d submissions it "
                    "left ungraded (delete %s to grade all again)", len(todo),
                    len(found), path)
        found, resumed = todo, len(found)
    # Named students are added to what an interrupted run left, not put in its place.
    keep = left if not whole_class else []
    return found, _Pending(path, list(dict.fromkeys(keep + found)), resumed)


def _sqlite_path(db_url: str) -> str | None:
    if db_url.startswith("sqlite:///"):
        return db_url[len("sqlite:///"):]
    return None


def _check_gradebook(coursedir: CourseDirectory, assignment: str, course_dir: Path
                     ) -> list[str]:
    """The assignment's notebook names, after checking that the gradebook has it."""
    db = _sqlite_path(coursedir.db_url)
    if db is not None and not os.path.exists(db):
        raise GradingError(f"no gradebook at {db}: run 'nbgrader generate_assignment "
                           f"{assignment}' in {course_dir} first")
    with Gradebook(coursedir.db_url, coursedir.course_id) as gb:
        try:
            return [nb.name for nb in gb.find_assignment(assignment).notebooks]
        except MissingEntry:
            known = sorted(a.name for a in gb.assignments)
            raise GradingError(f"assignment '{assignment}' is not in the gradebook "
                               f"{coursedir.db_url} (it has: {known or 'none'}); run "
                               f"'nbgrader generate_assignment {assignment}' in {course_dir} "
                               "first") from None
