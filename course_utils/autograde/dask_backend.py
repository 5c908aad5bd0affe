"""Grading on a Dask cluster: each submission's sandboxed run goes to a Dask worker.

Why the split lies where it does: nbgrader's pipeline needs the gradebook at both
ends -- restoring the locked cells and hidden tests before a notebook runs, saving the
scores after -- and those steps take milliseconds, while executing the notebook takes
seconds to minutes.  So the coordinator (the machine running ``course grade``) keeps
the whole nbgrader pipeline and the only gradebook writer, exactly as on one machine,
and only the execution step moves: :class:`ClusterSandbox` takes the place of the
local :class:`~course_utils.autograde.sandbox.Sandbox` and sends one Dask task per
submitted notebook (the sanitised notebook with its hidden tests, plus the
submission's other files as a tar archive) to the cluster.  A worker runs it in the
same bubblewrap sandbox, with the same limits, on its own machine and returns the
:class:`~course_utils.autograde.sandbox.SandboxRun` (every cell's outputs and the
execute replies); the coordinator merges it, scores it and writes the gradebook.
Workers never see the gradebook, ``source/`` or other submissions.

Faults are Dask's to handle where Dask handles them: a worker that dies mid-task has
its task rerun elsewhere by the scheduler (nothing reached the gradebook from the
lost run, so the submission is still graded exactly once).  A worker with other
versions of the course's packages is refused before any grading
(:func:`check_workers`), and again by each task (a worker that joins later).  A lost
scheduler stops the run with :class:`ClusterLost`; the submissions still to grade
are kept in a list beside the gradebook (:func:`pending_path`) and the next
``course grade`` with a scheduler grades only those.
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
import platform
import tarfile
import tempfile
import threading
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

from .sandbox import GradingCancelled, Limits, Sandbox, SandboxRun

__all__ = ["SCHEDULER_ENV", "ClusterError", "ClusterLost", "ClusterRefused", "WorkerRefused",
           "ClusterSandbox", "Cluster", "open_cluster", "environment_versions",
           "check_workers", "pending_path", "run_task"]

log = logging.getLogger(__name__)

#: ``course grade`` uses this scheduler when ``--scheduler`` is not given.
SCHEDULER_ENV = "COURSE_GRADE_SCHEDULER"

#: seconds to wait for a scheduler's first worker
WAIT_FOR_WORKERS = 60

# (what the message calls it, the distributions that provide it)
_PACKAGES = (("nbgrader", ("nbgrader",)), ("torch", ("torch",)),
             ("tensorflow", ("tensorflow", "tensorflow-cpu", "tensorflow-intel")))


class ClusterError(GradingCancelled):
    """Grading on the cluster stopped for the whole class; the message says what to do.

    A BaseException (through GradingCancelled), so that nbgrader's per-submission error
    handling does not record it as one student's failure."""


class ClusterRefused(ClusterError):
    """A worker cannot grade like the coordinator would (other versions, no sandbox)."""


class ClusterLost(ClusterError):
    """The connection to the Dask scheduler was lost while grading."""


class WorkerRefused(RuntimeError):
    """Raised on a worker that must not grade; travels back to the coordinator."""


def _course_utils_fingerprint() -> str:
    """Version and a hash of the installed ``course_utils`` sources: the checkers the
    tests call and the sandbox itself live there, and an editable install keeps its
    version number across commits."""
    from importlib import metadata

    import course_utils

    root = Path(course_utils.__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    try:
        version = metadata.version("course-utils")
    except metadata.PackageNotFoundError:
        version = "not installed"
    return f"{version} (sources {digest.hexdigest()[:12]})"


def environment_versions() -> dict[str, str]:
    """What must match between the coordinator and every worker: Python, course_utils
    (version and sources), nbgrader, torch and TensorFlow, read from the installed
    packages' metadata (nothing heavy is imported)."""
    from importlib import metadata

    found = {"python": platform.python_version(), "course_utils": _course_utils_fingerprint()}
    for label, dists in _PACKAGES:
        found[label] = "not installed"
        for dist in dists:
            try:
                found[label] = metadata.version(dist)
                break
            except metadata.PackageNotFoundError:
                continue
    return found


def _differences(expected: dict[str, str], got: dict[str, str]) -> list[str]:
    return [f"{name} {got.get(name, 'not installed')} (the coordinator has {want})"
            for name, want in expected.items() if got.get(name) != want]


def _refusal(where: str, diffs: list[str]) -> str:
    return (f"the Dask worker {where} has other versions than this machine: "
            f"{'; '.join(diffs)}. Its grades could differ, so nothing was graded there. "
            "Install the course's environment on every worker (the same image, or "
            "'pip install -e .' at the same commit), or remove that worker from the cluster.")


def check_workers(client, expected: dict[str, str] | None = None) -> int:
    """Refuse the cluster unless every worker has ``expected`` (default: this machine's
    :func:`environment_versions`); returns the number of task slots (worker threads).
    Each worker remembers what it reported, for its tasks' own check."""
    expected = expected or environment_versions()
    try:  # batch-system workers may still be queued: wait a little for the first one
        client.wait_for_workers(1, timeout=WAIT_FOR_WORKERS)
    except TimeoutError:
        raise ClusterRefused(f"the Dask scheduler {client.scheduler.address} has had no "
                             f"workers for {WAIT_FOR_WORKERS} s; start some ('dask worker "
                             "ADDRESS', or scale your cluster) and grade again") from None
    info = client.scheduler_info(n_workers=-1)["workers"]
    for address, got in sorted(client.run(_checked_versions).items()):
        diffs = _differences(expected, got)
        if diffs:
            raise ClusterRefused(_refusal(address, diffs))
    return sum(int(w.get("nthreads", 1)) for w in info.values())


# -- on the worker ------------------------------------------------------------------
_BOXES: dict[str, Sandbox] = {}
_BOXES_LOCK = threading.Lock()
#: what this worker reported to the coordinator's check (empty: it joined later)
_CHECKED: dict[str, str] = {}


def _checked_versions() -> dict[str, str]:
    """:func:`environment_versions`, remembered for :func:`run_task`: the coordinator's
    figures and the worker's are taken at the same moment, so an edit to the sources
    during a run (an editable install) does not refuse a worker that matched."""
    found = environment_versions()
    _CHECKED.clear()
    _CHECKED.update(found)
    return found


def _worker_sandbox(spec: dict) -> Sandbox:
    """One Sandbox per worker process and grading set-up (it self-tests once)."""
    key = repr(sorted((k, v) for k, v in spec.items() if k != "versions"))
    with _BOXES_LOCK:
        box = _BOXES.get(key)
        if box is None:
            limits = spec["limits"]
            if limits.threads is None:
                limits = replace(limits, threads=max(1, (os.cpu_count() or 1) // _nthreads()))
            box = Sandbox(limits, enabled=spec["enabled"], ro_binds=spec["ro_binds"],
                          env=spec["env"])
            box.check_hidden(*spec["hidden"])
            _BOXES[key] = box
        return box


def _nthreads() -> int:
    try:
        from distributed import get_worker

        return max(1, int(get_worker().state.nthreads))
    except (ImportError, ValueError, AttributeError):
        return 1


def run_task(job: dict, files: bytes | None, work_name: str, spec: dict) -> SandboxRun:
    """The Dask task: check this worker, unpack the submission's files and run the
    notebook in this machine's sandbox.  It writes nothing outside its temporary folder
    and the sandbox, so a rerun after a lost worker starts from the same state."""
    from .sandbox import SandboxUnavailable

    # A worker that joined after the coordinator's check is checked at its first task.
    diffs = _differences(spec["versions"], dict(_CHECKED) or _checked_versions())
    where = f"{_worker_address()} ({platform.node()})"
    if diffs:
        raise WorkerRefused(_refusal(where, diffs))
    try:
        box = _worker_sandbox(spec)
    except (SandboxUnavailable, FileNotFoundError) as exc:
        raise WorkerRefused(f"the Dask worker {where} cannot grade: {exc}") from None
    with tempfile.TemporaryDirectory(prefix="course-grade-task-") as tmp:
        input_dir = None
        if files is not None:
            input_dir = Path(tmp) / "in"
            input_dir.mkdir()
            with tarfile.open(fileobj=io.BytesIO(files)) as tar:
                tar.extractall(input_dir, filter="data")
        return box.run(job, input_dir, work_name=work_name)


def _worker_address() -> str:
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return "?"


# -- on the coordinator -------------------------------------------------------------
def _pack(input_dir, exclude=()) -> bytes | None:
    """The submission's files (without the top-level names in ``exclude``) as a tar."""
    if input_dir is None:
        return None
    src = Path(input_dir)
    skip = set(exclude)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for child in sorted(src.iterdir()):
            if child.name not in skip:
                tar.add(child, arcname=child.name, recursive=True)
    return buf.getvalue()


class ClusterSandbox:
    """Stands in for :class:`Sandbox` in the grader: ``run`` sends the job to the
    cluster and waits for its :class:`SandboxRun`; ``cancel`` (Ctrl-C) cancels the
    tasks.  The limits are the coordinator's; each worker sets its own thread count
    (its cores // its threads) unless ``limits.threads`` is given."""

    enabled: bool

    def __init__(self, client, limits: Limits, *, enabled: bool, ro_binds=(), env=None,
                 hidden=(), versions: dict[str, str] | None = None):
        self.client = client
        self.limits = limits
        self.enabled = enabled
        self.spec = {"limits": limits, "enabled": enabled,
                     "ro_binds": [str(p) for p in ro_binds], "env": dict(env or {}),
                     "hidden": [str(p) for p in hidden],
                     "versions": versions or environment_versions()}
        self._cancelled = threading.Event()

    def check_hidden(self, *paths) -> None:
        """Workers check this themselves (their Python may live elsewhere)."""

    def run(self, job: dict, input_dir, *, work_name: str = "work", exclude=()) -> SandboxRun:
        from distributed.client import FutureCancelledError
        from distributed.scheduler import KilledWorker

        from .execute import current_or_none

        if self._cancelled.is_set():
            raise GradingCancelled()
        ctx = current_or_none()
        who = ctx.record.student if ctx is not None else "submission"
        key = f"course-grade-{who}-{uuid.uuid4().hex[:8]}"
        files = _pack(input_dir, exclude)
        future = self.client.submit(run_task, job, files, work_name, self.spec, key=key,
                                    pure=False)
        try:
            while True:
                try:
                    return future.result(timeout=1.0)
                except TimeoutError:
                    if self._cancelled.is_set():
                        raise GradingCancelled() from None
                    if self.client.status not in ("running", "connecting"):
                        raise self._lost() from None
                except WorkerRefused as exc:
                    raise ClusterRefused(str(exc)) from None
                except KilledWorker as exc:
                    raise RuntimeError(
                        f"every Dask worker that ran this submission died ({exc}); it was "
                        "not graded. Check the workers' memory (a worker's own memory limit "
                        "may be below the sandbox's --memory)") from None
                except (FutureCancelledError, OSError) as exc:
                    if self._cancelled.is_set():
                        raise GradingCancelled() from None
                    raise self._lost(exc) from None
        finally:
            future.release()

    def _lost(self, exc=None) -> ClusterLost:
        if exc is not None:
            log.debug("lost the scheduler: %s: %s", type(exc).__name__, exc)
        return ClusterLost(f"lost the Dask scheduler {self.client.scheduler.address} "
                           "while grading")

    def cancel(self) -> None:
        self._cancelled.set()

    def close(self) -> None:
        pass


@dataclass
class Cluster:
    """A connection to a scheduler (and the LocalCluster behind ``local:N``)."""

    client: object
    slots: int
    address: str
    versions: dict
    local: object | None = None

    def close(self) -> None:
        try:
            self.client.close(timeout=10)
        except Exception:  # the scheduler may be gone already
            pass
        if self.local is not None:
            self.local.close(timeout=10)


def open_cluster(scheduler: str) -> Cluster:
    """Connect to ``tcp://HOST:PORT`` (any address Dask takes), or start a LocalCluster
    of N single-threaded worker processes for ``local:N``; every worker's versions are
    checked (:func:`check_workers`).  How long to try to connect is Dask's setting
    ``distributed.comm.timeouts.connect`` (30 s; $DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT)."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise ClusterRefused("grading on a cluster needs Dask: pip install dask "
                             "distributed (both are in the course's pyproject.toml)") from None
    local = None
    if scheduler.startswith("local:"):
        try:
            n = int(scheduler[len("local:"):])
        except ValueError:
            n = 0
        if n < 1:
            raise ValueError(f"--scheduler {scheduler!r}: write local:N with N >= 1 worker "
                             "processes, e.g. local:2")
        local = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                             dashboard_address=":0", host="127.0.0.1")
        address = local.scheduler_address
    else:
        address = scheduler
    try:
        client = Client(address, set_as_default=False)
    except (OSError, TimeoutError) as exc:
        if local is not None:
            local.close()
        raise ClusterRefused(f"cannot reach the Dask scheduler {address} ({exc}); start it "
                             f"('dask scheduler') or fix --scheduler / ${SCHEDULER_ENV}") from None
    versions = environment_versions()
    try:
        slots = check_workers(client, versions)
    except BaseException:
        client.close()
        if local is not None:
            local.close()
        raise
    return Cluster(client=client, slots=slots, address=address, versions=versions,
                   local=local)


def pending_path(course_dir: Path, assignment: str) -> Path:
    """Where a run on a cluster keeps the students it has not graded yet: the next run
    with a scheduler grades only these (removed when a run finishes)."""
    return Path(course_dir) / ".course_grade" / f"{assignment}.pending.json"
