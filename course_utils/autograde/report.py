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

__all__ = ["generate_feedback", "write_csv", "format_table"]

log = logging.getLogger(__name__)

CSV_FIELDS = ("student", "score", "max_score", "late_penalty", "status", "seconds", "notes")


def generate_feedback(course_dir, assignment: str, students, *, workers: int = 1,
                      progress: bool = True) -> dict[str, str]:
    """Feedback HTML for each student, as ``nbgrader generate_feedback`` writes it
    (``feedback/<student>/<assignment>/<notebook>.html``); returns student -> "ok" or
    the reason it failed.

    Rendering is CPU-bound Python, so it runs in ``workers`` child processes, each
    ``python -m course_utils.autograde._feedback`` over a share of the students (a
    subprocess, not multiprocessing: nothing depends on how the caller's main
    module can be re-imported).  The gradebook is only read here.
    """
    students = list(students)
    out: dict[str, str] = {}
    nproc = max(1, min(workers, len(students)))
    chunks = [students[i::nproc] for i in range(nproc)]
    procs = [subprocess.Popen([sys.executable, "-m", "course_utils.autograde._feedback",
                               str(course_dir), assignment,
                               *chunk], stdout=subprocess.PIPE, text=True)
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
    """One row per student: score, max_score, late_penalty, status, seconds, notes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for r in run.results:
            writer.writerow({"student": r.student, "score": f"{r.score:g}",
                             "max_score": f"{r.max_score:g}",
                             "late_penalty": f"{r.late_penalty:g}", "status": r.status,
                             "seconds": f"{r.seconds:.1f}", "notes": " | ".join(r.notes)})
    os.replace(tmp, path)
    return path


def format_table(run) -> str:
    """The summary printed by ``course grade``: one line per student, then totals."""
    rows = [("student", "score", "max", "status")]
    for r in run.results:
        score = f"{r.score:g}" + (f" (-{r.late_penalty:g} late)" if r.late_penalty else "")
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
                 f"{run.workers} worker(s), {'sandboxed' if run.sandboxed else 'NOT sandboxed'}; "
                 f"mean score {mean:.2f}; {flagged} flagged (see status).")
    return "\n".join(lines)

