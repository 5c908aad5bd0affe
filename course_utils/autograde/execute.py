"""nbgrader preprocessors for sandboxed grading, and the merge of a sandbox run.

``SandboxExecute`` takes the place of nbgrader's ``Execute`` in the autograde
pipeline: it sends the sanitised notebook (locked cells and hidden tests already
restored from the gradebook) into a :class:`~course_utils.autograde.sandbox.Sandbox`
and merges back what came out.  It subclasses ``Execute`` so that the course's
``c.Execute.timeout`` (and the other ``Execute`` options) keep their meaning.

Whatever happened inside, the notebook that comes back is complete and gradable:

* cells that ran keep their outputs;
* the cell that was running when the kernel died, stopped answering or the
  wall-clock limit struck gets an error output that says so;
* every code cell after it gets a ``NotExecuted`` error output, so a test that never
  ran scores zero -- nbgrader would otherwise give full marks to a test cell without
  output (nbgrader issue #427);
* a markdown cell "Notes from the autograder" at the top explains it in the feedback.

``TrackingOverwriteCells`` is nbgrader's ``OverwriteCells`` that also records which
locked cells a student edited or deleted, for the summary and the feedback.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

from nbformat import NotebookNode
from nbformat.v4 import new_code_cell, new_markdown_cell, new_output
from nbgrader.api import Gradebook
from nbgrader.preprocessors import ClearHiddenTests, Execute, NbGraderPreprocessor, OverwriteCells

__all__ = ["SandboxExecute", "TrackingOverwriteCells", "CheckGradeIds", "SubmissionLog", "merge_run",
           "current", "NOTE_CELL_ID", "NOTE_TITLE", "add_note_cell", "strip_forged_notes"]

log = logging.getLogger(__name__)

NOTE_CELL_ID = "course-grade-notes"
_local = threading.local()


@dataclass
class SubmissionLog:
    """What happened to one student's submission (filled in while it is graded).

    Notes are filed under the notebook being graded (``notebook``), so that each
    notebook's feedback explains only its own problems.
    """

    student: str
    statuses: set[str] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)
    sandbox_seconds: float = 0.0
    sandbox_cpu_seconds: float = 0.0  # runner + kernel, as the runner reports them
    seconds: float = 0.0
    notebook: str = ""
    by_notebook: dict[str, list[str]] = field(default_factory=dict)
    #: grading did not complete, so the gradebook holds no score from this run
    failed: bool = False
    #: notebooks left out as too large (they score zero; see :mod:`.intake`)
    refused_notebooks: list[str] = field(default_factory=list)

    def add(self, status: str, note: str) -> None:
        self.statuses.add(status)
        per = self.by_notebook.setdefault(self.notebook, [])
        if note not in per:
            per.append(note)

    def notes_for(self, notebook: str) -> list[str]:
        return list(self.by_notebook.get(notebook, []))

    @property
    def notes(self) -> list[str]:
        several = len([k for k, v in self.by_notebook.items() if v and k]) > 1
        return [f"{nb}: {n}" if several and nb else n
                for nb, notes in self.by_notebook.items() for n in notes]

    @property
    def status(self) -> str:
        return ",".join(sorted(self.statuses)) or "ok"


@dataclass
class GradingContext:
    """Per-thread state: the sandbox, the gradebook lock and the student's log."""

    sandbox: object
    lock: threading.Lock
    record: SubmissionLog


def current() -> GradingContext:
    ctx = getattr(_local, "ctx", None)
    if ctx is None:
        raise RuntimeError("SandboxExecute runs only inside course_utils.autograde's "
                           "grader (no grading context on this thread)")
    return ctx


def current_or_none() -> GradingContext | None:
    """The grading context of this thread, if it has one."""
    return getattr(_local, "ctx", None)


def set_context(ctx: GradingContext | None) -> None:
    _local.ctx = ctx


def _error(ename: str, evalue: str) -> NotebookNode:
    return new_output("error", ename=ename, evalue=evalue, traceback=[f"{ename}: {evalue}"])


def _cell_label(nb: NotebookNode, index: int) -> str:
    cell = nb.cells[index]
    grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
    number = sum(1 for c in nb.cells[: index + 1] if c.cell_type == "code")
    return f"code cell {number}" + (f" ('{grade_id}')" if grade_id else "")


def merge_run(nb: NotebookNode, run, limits, record: SubmissionLog) -> NotebookNode:
    """Copy the outputs of ``run`` (a SandboxRun) into ``nb`` and make it gradable.

    Cells that did not run get error outputs and ``record`` gets a status and a
    sentence for each thing that went wrong.
    """
    executed: set[int] = set()
    started: int | None = None
    fatal_index: int | None = None
    fatal_reason = None
    ready = False
    max_procs = 0
    replies: dict[int, dict | None] = {}
    for event in run.events:
        kind = event.get("event")
        index = event.get("index")
        if kind == "ready":
            ready = True
            if event.get("language_info"):
                nb.metadata["language_info"] = event["language_info"]
        elif kind == "start":
            started = index
        elif kind == "cell" and isinstance(index, int) and 0 <= index < len(nb.cells):
            cell = nb.cells[index]
            cell.outputs = [NotebookNode(o) for o in event.get("outputs", [])]
            cell.execution_count = event.get("execution_count")
            if event.get("execution"):
                cell.metadata["execution"] = event["execution"]
            replies[index] = event.get("reply")
            if event.get("dropped_output_bytes"):
                whole = bool(event.get("notebook_output_full"))
                limit = limits.max_notebook_output_bytes if whole else limits.max_output_bytes
                where = "for the whole notebook" if whole else "per cell"
                cell.outputs.append(new_output(
                    "stream", name="stdout",
                    text=f"\n[autograder: {event['dropped_output_bytes']} bytes of output "
                         f"beyond the {limit} byte limit {where} were dropped]\n"))
                record.add("output-limit", f"Output limit: {_cell_label(nb, index)} printed "
                           f"more than the {_mib(limit)} allowed {where}; the rest of its "
                           "output was dropped (the cell was still graded).")
            if event.get("output_lost"):
                replies[index] = {"status": "error", "ename": "OutputLimitError",
                                  "evalue": "a single output over the size limit was dropped "
                                            "and the cell's output was lost"}
                record.add("output-limit", f"Output limit: {_cell_label(nb, index)} sent one "
                           f"output larger than {_mib(limits.max_output_bytes)}; it was dropped "
                           "and the cell scores zero.")
            max_procs = max(max_procs, int(event.get("processes") or 0))
            executed.add(index)
        elif kind == "kernel_died":
            fatal_index = index
            rc = event.get("returncode")
            how = _describe_exit(rc)
            fatal_reason = ("KernelDied", f"the kernel stopped ({how}) while running this cell")
            record.add("kernel-died",
                       f"The Python kernel stopped ({how}) while running "
                       f"{_cell_label(nb, index)}. Cells after it were not run and score zero.")
        elif kind == "unresponsive":
            fatal_index = index
            fatal_reason = ("CellTimeoutError", "the cell did not stop when interrupted after "
                            "the time limit, so the kernel could not run anything else")
            record.add("cell-timeout",
                       f"{_cell_label(nb, index).capitalize()} ran past the per-cell time "
                       "limit and did not respond to an interrupt. Cells after it were not "
                       "run and score zero.")
        elif kind == "error":
            record.errors.append(event.get("message", ""))
        elif kind == "done":
            max_procs = max(max_procs, int(event.get("max_processes") or 0))

    done = run.last("done") is not None
    if fatal_index is None and not done:
        # Killed from outside (wall clock) or the runner itself failed.
        if started is not None and started not in executed:
            fatal_index = started
        if run.timed_out:
            reason = (f"the notebook was stopped after {limits.wall_seconds:g} s, the time "
                      "limit for a whole submission")
            fatal_reason = ("TimeoutError", reason + ", while this cell was running")
            where = f" while running {_cell_label(nb, fatal_index)}" if fatal_index is not None else ""
            record.add("timeout", f"The notebook was stopped after {limits.wall_seconds:g} s, "
                       f"the time limit for a whole submission{where}. Cells that had not "
                       "finished score zero.")
        else:
            detail = "; ".join(m for m in record.errors if m) or \
                f"exit status {run.returncode}"
            workdir = [e for e in run.events if e.get("kind") == "workdir"]
            if workdir:
                reason = (f"{workdir[0].get('message')}: they need more than the "
                          f"{_mib(limits.tmpfs_size)} the sandbox has")
            elif not ready:
                reason = f"the kernel could not be started ({detail})"
            else:
                reason = f"the grader inside the sandbox stopped unexpectedly ({detail})"
            fatal_reason = ("SandboxError", reason)
            record.add("error", f"The notebook could not be run to the end: {reason}. Cells "
                       "that had not finished score zero.")
            log.warning("%s: %s\n%s", record.student, reason, run.log_tail[-2000:])

    for index, reply in replies.items():
        if reply is None and index == fatal_index:
            continue  # the fatal error below says why no reply came
        _apply_reply(nb.cells[index], reply)
    if fatal_index is not None and fatal_reason is not None:
        cell = nb.cells[fatal_index]
        if not any(o.get("output_type") == "error" for o in cell.get("outputs", [])):
            cell.setdefault("outputs", []).append(_error(*fatal_reason))
    if fatal_reason is not None:
        first_unrun = fatal_index + 1 if fatal_index is not None else 0
        why = fatal_reason[1]
        for i in range(first_unrun, len(nb.cells)):
            cell = nb.cells[i]
            if cell.cell_type == "code" and i not in executed:
                cell.outputs = [_error("NotExecuted", f"this cell was not run: {why}")]
                cell.execution_count = None

    _scan_outputs(nb, limits, record, max_procs)
    return nb


def _mib(n: int) -> str:
    return f"{n / 2**20:g} MiB"


def _apply_reply(cell: NotebookNode, reply: dict | None) -> None:
    """Make the cell's outputs say what the kernel's execute reply says.

    nbgrader scores a test cell from its outputs (an error output: zero), but student
    code decides what a cell displays: a custom exception handler, a traceback renderer
    that fails, ``bdb.BdbQuit``, a replaced ``showtraceback`` or a ``clear_output`` hook
    all leave a failed test without an error output.  The reply's ``status`` is what
    counts: unless it is ``ok``, the cell gets an error output (the reply's exception,
    or ``NoReply`` when none came), as nbgrader's ``Execute.on_cell_executed`` does;
    an error output already there with the same name is kept instead of a copy.
    """
    status = reply.get("status") if isinstance(reply, dict) else None
    if status == "ok":
        return
    reply = reply if isinstance(reply, dict) else {}
    ename = reply.get("ename") or ("NoReply" if status is None else "Error")
    if any(o.get("output_type") == "error" and o.get("ename") == ename
           for o in cell.get("outputs", [])):
        return
    evalue = reply.get("evalue") or ("the kernel sent no reply for this cell"
                                     if status is None else f"the cell ended with status "
                                     f"'{status}'")
    out = _error(ename, evalue)
    tb = [line for line in reply.get("traceback") or [] if isinstance(line, str)]
    out["traceback"] = tb or [f"{ename}: {evalue} (the traceback was not shown)"]
    cell.setdefault("outputs", []).append(out)


def _describe_exit(rc) -> str:
    if rc is None:
        return "exit status unknown"
    if rc < 0:
        import signal

        try:
            name = signal.Signals(-rc).name
        except ValueError:
            name = f"signal {-rc}"
        hint = {"SIGKILL": ", often a memory limit", "SIGXCPU": ": CPU time limit",
                "SIGXFSZ": ": file size limit", "SIGSEGV": ", a crash"}.get(name, "")
        return f"killed by {name}{hint}"
    return f"exit status {rc}"


def _scan_outputs(nb: NotebookNode, limits, record: SubmissionLog, max_procs: int) -> None:
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []) if cell.cell_type == "code" else []:
            if out.get("output_type") != "error":
                continue
            if out.get("ename") == "MemoryError":
                record.add("memory", f"{_cell_label(nb, i).capitalize()} ran out of memory "
                           f"(limit {limits.memory / 2**30:.3g} GiB) and raised MemoryError.")
            elif out.get("ename") == "CellTimeoutError":
                record.add("cell-timeout", f"{_cell_label(nb, i).capitalize()} ran past the "
                           "per-cell time limit and was interrupted; it scores zero.")
    # Same margin as _runner.py uses to decide that a fork bomb went off.
    if max_procs >= limits.processes - 8:
        record.add("processes", f"The notebook started too many processes (limit "
                   f"{limits.processes}); starting more failed and the extra ones were "
                   "stopped.")


NOTE_TITLE = "Notes from the autograder"


def strip_forged_notes(nb: NotebookNode) -> int:
    """Remove cells of the submission that pose as the autograder's notes; returns how many.

    A student can copy the note cell's id, metadata and text into their notebook, so
    any cell that claims to be it (the id, ``course_grade`` metadata, or a markdown cell
    with the title) is removed before the real one is added; a graded or answer cell
    that claims it only loses the claim (its id and metadata), not the student's work.
    The notebook-level ``course_grade`` metadata, where the real notes are kept for the
    feedback page, is cleared the same way.
    """
    nb.metadata.pop("course_grade", None)
    kept, removed = [], 0
    for cell in nb.cells:
        claims = cell.get("id") == NOTE_CELL_ID or "course_grade" in cell.get("metadata", {})
        looks = cell.cell_type == "markdown" and NOTE_TITLE.lower() in cell.source.lower()
        if not (claims or looks):
            kept.append(cell)
            continue
        removed += 1
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if meta.get("grade") or meta.get("solution") or meta.get("task"):
            cell.metadata.pop("course_grade", None)
            if cell.get("id") == NOTE_CELL_ID:
                cell["id"] = f"student-{NOTE_CELL_ID}"
            kept.append(cell)
    nb.cells = kept
    return removed


def add_note_cell(nb: NotebookNode, notes: list[str]) -> None:
    """Put "Notes from the autograder" first in the notebook (for the formgrader) and
    the notes in the notebook's ``course_grade`` metadata, from which the feedback page
    shows them outside the notebook's cells (where no student output can appear)."""
    nb.metadata["course_grade"] = {"notes": list(notes)}
    if not notes:
        return
    text = f"**{NOTE_TITLE}**\n\n" + "\n".join(f"- {n}" for n in notes)
    cell = new_markdown_cell(text)
    if (nb.get("nbformat", 4), nb.get("nbformat_minor", 0)) >= (4, 5):
        cell["id"] = NOTE_CELL_ID
    else:
        cell.pop("id", None)
    cell.metadata["course_grade"] = {"note": True}
    nb.cells.insert(0, cell)


class SandboxExecute(Execute):
    """Runs the notebook in the sandbox of the current grading context.

    The gradebook lock of the context is released while the sandbox runs (the only
    slow part), so that other graders can use the gradebook meanwhile.
    """

    def preprocess(self, nb: NotebookNode, resources):
        ctx = current()
        record = ctx.record
        limits = ctx.sandbox.limits
        record.notebook = resources["nbgrader"]["notebook"]
        if strip_forged_notes(nb):
            record.add("tampered", "The submission contained a cell posing as the "
                       f"\"{NOTE_TITLE}\"; it was removed before grading.")
        timeout = self.timeout
        if limits.cell_timeout is not None:
            timeout = limits.cell_timeout
        if timeout is None or timeout <= 0 or timeout > limits.wall_seconds:
            timeout = max(1, int(limits.wall_seconds))
        job = {
            "notebook": nb,
            "execute": {
                "timeout": int(timeout),
                "startup_timeout": int(self.startup_timeout),
                "iopub_timeout": int(self.iopub_timeout),
                "interrupt_on_timeout": bool(self.interrupt_on_timeout),
                "raise_on_iopub_timeout": bool(self.raise_on_iopub_timeout),
                "error_on_timeout": self.error_on_timeout,
                # nbgrader's documented default for Python kernels: no history file.
                "extra_arguments": list(self.extra_arguments)
                or ["--HistoryManager.hist_file=:memory:"],
            },
        }
        path = resources.get("metadata", {}).get("path")
        # The graded notebooks in the autograded folder are the sanitised copies, with
        # the hidden tests: they stay out of the sandbox (the notebook itself goes in
        # through the runner's stdin).
        exclude = [p.name for p in Path(path).glob("*.ipynb")] if path else []
        ctx.lock.release()
        try:
            run = ctx.sandbox.run(job, path, work_name=resources["nbgrader"]["assignment"],
                                  exclude=exclude)
        finally:
            ctx.lock.acquire()
        record.sandbox_seconds += run.seconds
        done = run.last("done")
        if done and isinstance(done.get("cpu_seconds"), dict):
            record.sandbox_cpu_seconds += sum(float(v) for v in done["cpu_seconds"].values())
        record.notebook = resources["nbgrader"]["notebook"]
        nb = merge_run(nb, run, limits, record)
        add_note_cell(nb, record.notes_for(record.notebook))
        return nb, resources


def _first_line(cell) -> str:
    line = next((ln.strip() for ln in cell.get("source", "").splitlines() if ln.strip()), "")
    return (line[:40] + "...") if len(line) > 40 else line


class CheckGradeIds(NbGraderPreprocessor):
    """Runs first when a submission is sanitised: a cell whose nbgrader metadata was
    edited so that nbgrader cannot match it (a graded, answer or read-only cell without
    its ``grade_id``, a graded cell without a number of points) stops grading with a
    sentence that names the cell and what was changed, instead of nbgrader's
    ``KeyError: 'grade_id'`` deep in ``DeduplicateIds``."""

    def preprocess(self, nb, resources):
        number = 0
        for cell in nb.cells:
            number += cell.cell_type == "code"
            meta = cell.get("metadata", {}).get("nbgrader")
            if not isinstance(meta, dict):
                continue
            where = (f"code cell {number}" if cell.cell_type == "code" else "a markdown cell") \
                + (f" ('{_first_line(cell)}')" if _first_line(cell) else "")
            kinds = [k for k in ("grade", "solution", "locked") if meta.get(k)]
            problem = None
            if kinds and not meta.get("grade_id"):
                problem = (f"{where} is marked {'/'.join(kinds)} in its nbgrader metadata but "
                           "its 'grade_id' was removed")
            elif meta.get("grade"):
                try:
                    float(meta.get("points"))
                except (TypeError, ValueError):
                    problem = (f"the graded cell '{meta.get('grade_id')}' has its 'points' "
                               f"changed to {meta.get('points')!r}")
            if problem:
                sentence = (f"The submission's notebook metadata was edited: {problem}, so nbgrader "
                            "cannot match the cell to the assignment and this notebook was not "
                            "graded. Submit again from the released notebook (or copy the answers "
                            "into a fresh copy of it).")
                _note_tamper(sentence)
                raise RuntimeError(sentence)
        return nb, resources


class TrackingOverwriteCells(OverwriteCells):
    """nbgrader's ``OverwriteCells`` that records tampering in the grading context.

    A locked cell counts as edited only when it matches neither the instructor's
    version nor the released one (the instructor's with the hidden tests removed):
    every honest submission differs from the gradebook's copy by its hidden tests.
    """

    _sources: dict = {}  # grade_id -> the gradebook's SourceCell, per notebook
    _max_scores: dict = {}  # grade_id -> points of the graded cell
    _solutions: set = set()  # grade_ids of the answer cells

    def preprocess_cell(self, cell, resources, cell_index):
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        source_cell = self._sources.get(grade_id) if grade_id is not None else None
        if source_cell is not None:
            self._check(cell, source_cell, grade_id)
        try:
            return super().preprocess_cell(cell, resources, cell_index)
        except RuntimeError as exc:
            if "Inconsistent checksums" not in str(exc):
                raise
            sentence = (f"The submission changed the nbgrader metadata of the read-only cell "
                        f"'{grade_id}': {self._flags_changed(cell, grade_id)}. nbgrader cannot "
                        "restore such a cell, so this notebook was not graded. Submit again from "
                        "the released notebook.")
            _note_tamper(sentence)
            raise RuntimeError(sentence) from exc

    def _flags_changed(self, cell, grade_id) -> str:
        meta = cell.metadata.get("nbgrader", {})
        changed = []
        for flag, expected in (("grade", grade_id in self._max_scores),
                               ("solution", grade_id in self._solutions)):
            if bool(meta.get(flag)) != expected:
                changed.append(f"'{flag}' set to {bool(meta.get(flag))} (the assignment has "
                               f"{expected})")
        return "; ".join(changed) or "its grading flags no longer match the assignment's"

    def _check(self, cell, source_cell, grade_id) -> None:
        if cell.cell_type != source_cell.cell_type:
            _note_tamper(f"The submission changed the type of the cell '{grade_id}'; it was "
                         "restored from the instructor's version before grading.")
        is_locked = bool(cell.metadata.get("nbgrader", {}).get("locked", False))
        if source_cell.locked and not is_locked:
            _note_tamper(f"The submission unlocked the read-only cell '{grade_id}'; it was "
                         "restored before grading.")
        if source_cell.locked and not _same_text(cell.source, source_cell.source) and \
                not _same_text(cell.source, _released(source_cell.source, self.parent)):
            _note_tamper(f"The submission edited the read-only cell '{grade_id}'; it was "
                         "restored from the instructor's version before grading.")
        points = cell.metadata.get("nbgrader", {}).get("points")
        max_score = self._max_scores.get(grade_id)
        if cell.metadata.get("nbgrader", {}).get("grade") and points is not None \
                and max_score is not None:
            try:
                changed = float(points) != float(max_score)
            except (TypeError, ValueError):
                changed = True
            if changed:
                _note_tamper(f"The submission changed the points of '{grade_id}' from "
                             f"{max_score:g} to {points}; the original points were used.")

    def preprocess(self, nb, resources):
        """OverwriteCells.preprocess (restore cells, add back missing ones), plus a
        note for each graded cell the submission no longer had; one gradebook
        connection for all of it."""
        ctx = getattr(_local, "ctx", None)
        if ctx is not None:
            ctx.record.notebook = resources["nbgrader"]["notebook"]
        self.notebook_id = resources["nbgrader"]["notebook"]
        self.assignment_id = resources["nbgrader"]["assignment"]
        self.db_url = resources["nbgrader"]["db_url"]
        present = {c.metadata.get("nbgrader", {}).get("grade_id") for c in nb.cells}
        self.gradebook = Gradebook(self.db_url)
        with self.gradebook:
            # The instructor's cells, fetched once for the checks in preprocess_cell.
            expected = self.gradebook.find_notebook(self.notebook_id, self.assignment_id)
            self._sources = {c.name: c for c in expected.source_cells}
            self._max_scores = {c.name: c.max_score for c in expected.grade_cells}
            self._solutions = {c.name for c in expected.solution_cells}
            names = [c.name for c in expected.grade_cells]
            nb, resources = NbGraderPreprocessor.preprocess(self, nb, resources)
            if self.add_missing_cells:
                nb, resources = self.add_missing_grade_cells(nb, resources)
                nb, resources = self.add_missing_task_cells(nb, resources)
        for name in names:
            if name not in present:
                action = ("it was added back and graded" if self.add_missing_cells
                          else "it scores zero")
                _note_tamper(f"The submission deleted the graded cell '{name}'; {action}.")
        return nb, resources


def _same_text(a: str, b: str) -> bool:
    norm = lambda s: "\n".join(line.rstrip() for line in s.strip().splitlines())  # noqa: E731
    return norm(a) == norm(b)


def _released(source: str, parent) -> str:
    """The instructor's cell source as released: hidden test regions removed."""
    cell = new_code_cell(source)
    try:
        ClearHiddenTests(parent=parent)._remove_hidden_test_region(cell)
    except RuntimeError:  # unbalanced delimiters: nothing was released differently
        return source
    return cell.source


def _note_tamper(sentence: str) -> None:
    ctx = getattr(_local, "ctx", None)
    if ctx is not None:
        ctx.record.add("tampered", sentence)
