"""After grading: feedback HTML, the grades CSV and the summary table."""
from __future__ import annotations

import csv
import logging
import os
import selectors
import subprocess
import sys
from pathlib import Path

from tqdm.auto import tqdm

__all__ = ["generate_feedback", "write_csv", "format_table", "csv_text"]

log = logging.getLogger(__name__)

CSV_FIELDS = ("student", "score", "max_score", "late_penalty", "status", "stale", "seconds",
              "notes")
#: A spreadsheet treats a cell starting with one of these as a formula (CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_text(value: str) -> str:
    """``value`` safe for a spreadsheet: a leading ``'`` when it would start a formula.

    Student ids and notes come from the submission (a folder named ``=HYPERLINK(...)``,
    an error message); numbers written by the grader are left as they are.
    """
    value = str(value)
    return "'" + value if value.startswith(_FORMULA_START) else value


#: Limits of each feedback process: address space for its data and seconds per student.
FEEDBACK_MEMORY = 3 << 30
FEEDBACK_SECONDS = 120


def _limit_memory(nbytes: int):
    def apply():  # runs in the child before exec
        import resource

        _, hard = resource.getrlimit(resource.RLIMIT_DATA)
        soft = nbytes if hard == resource.RLIM_INFINITY else min(nbytes, hard)
        resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))
    return apply


def generate_feedback(course_dir, assignment: str, students, *, workers: int = 1,
                      progress: bool = True, memory: int = FEEDBACK_MEMORY,
                      seconds: int = FEEDBACK_SECONDS) -> dict[str, str]:
    """Feedback HTML for each student, as ``nbgrader generate_feedback`` writes it
    (``feedback/<student>/<assignment>/<notebook>.html``); returns student -> "ok" or
    the reason it failed.

    Rendering is CPU-bound Python, so it runs in ``workers`` child processes, each
    ``python -m course_utils.autograde._feedback`` over a share of the students (a
    subprocess, not multiprocessing: nothing depends on how the caller's main
    module can be re-imported).  The gradebook is only read here.  Each process may use
    ``memory`` bytes of data (``RLIMIT_DATA``) and ``seconds`` per student; a student
    past either gets a status saying so and no feedback page, the others are unaffected.
    """
    students = list(students)
    out: dict[str, str] = {}
    nproc = max(1, min(workers, len(students)))
    chunks = [students[i::nproc] for i in range(nproc)]
    from ._feedback import FEEDBACK_SECONDS_ENV

    env = dict(os.environ, **{FEEDBACK_SECONDS_ENV: str(int(seconds))})
    procs = [subprocess.Popen([sys.executable, "-m", "course_utils.autograde._feedback",
                               str(course_dir), assignment,
                               *chunk], stdout=subprocess.PIPE, text=True, env=env,
                              preexec_fn=_limit_memory(memory))
             for chunk in chunks if chunk]
    with tqdm(total=len(students), desc=f"feedback {assignment}", unit="student",
              disable=not progress, dynamic_ncols=True) as bar:
        sel = selectors.DefaultSelector()
        for p in procs:
            sel.register(p.stdout, selectors.EVENT_READ, p)
        open_streams = len(procs)
        while open_streams:
            for key, _ in sel.select():
                line = key.fileobj.readline()
                if not line:
                    sel.unregister(key.fileobj)
                    open_streams -= 1
                    continue
                student, _, status = line.rstrip("\n").partition("\t")
                if student in students:
                    out[student] = status
                    bar.update(1)
        sel.close()
    for p in procs:
        p.wait()
    for student in students:
        out.setdefault(student, "the feedback process stopped before this student")
    for student, status in out.items():
        if status != "ok":
            log.warning("no feedback for %s: %s", student, status)
    return out


def write_csv(run, path: Path) -> Path:
    """One row per student: score, max_score, late_penalty, status, stale, seconds, notes.

    ``stale`` is ``yes`` where grading failed and the score is an earlier run's."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for r in run.results:
            writer.writerow({"student": csv_text(r.student), "score": f"{r.score:g}",
                             "max_score": f"{r.max_score:g}",
                             "late_penalty": f"{r.late_penalty:g}",
                             "status": csv_text(r.status),
                             "stale": "yes" if getattr(r, "stale", False) else "",
                             "seconds": f"{r.seconds:.1f}",
                             "notes": csv_text(" | ".join(r.notes))})
    os.replace(tmp, path)
    return path


def format_table(run) -> str:
    """The summary printed by ``course grade``: one line per student, then totals."""
    rows = [("student", "score", "max", "status")]
    for r in run.results:
        score = f"{r.score:g}" + (f" (-{r.late_penalty:g} late)" if r.late_penalty else "")
        if getattr(r, "stale", False):
            score += " (STALE)"
        rows.append((r.student, score, f"{r.max_score:g}", r.status))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(w) if i in (0, 3) else cell.rjust(w)
                       for i, (cell, w) in enumerate(zip(row, widths))).rstrip()
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    n = len(run.results)
    flagged = sum(r.status != "ok" for r in run.results)
    mean = sum(r.score for r in run.results) / n if n else 0.0
    lines.append("")
    lines.append(f"{n} submission(s) of '{run.assignment}' graded in {run.seconds:.1f} s with "
                 f"{run.workers} worker(s)"
                 + (f" on the Dask cluster {run.scheduler}" if getattr(run, "scheduler", None)
                    else "")
                 + f", {'sandboxed' if run.sandboxed else 'NOT sandboxed'}; "
                 f"mean score {mean:.2f}; {flagged} flagged (see status).")
    failed = [r for r in run.results if getattr(r, "failed", False)]
    if failed:
        stale = [r.student for r in failed if r.stale]
        lines.append(f"GRADING FAILED for {len(failed)} submission(s): "
                     f"{', '.join(r.student for r in failed)} (see the notes in the CSV)"
                     + (f"; the scores of {', '.join(stale)} are STALE, left in the gradebook "
                        "by an earlier run" if stale else "") + ".")
    return "\n".join(lines)

