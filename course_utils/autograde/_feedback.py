"""Feedback worker: ``python -m course_utils.autograde._feedback COURSE ASSIGNMENT STUDENT...``.

Started by :func:`course_utils.autograde.report.generate_feedback`, one process per
share of the class; prints ``student<TAB>status`` for each student when done, where
status is ``ok`` or why nbgrader could not render the feedback.

It is nbgrader's ``GenerateFeedback`` with three changes, each for a reason:

* the autograder's notes are shown in a banner *outside* the notebook's cells (taken
  from the graded notebook's ``course_grade`` metadata, which the grader writes and a
  submission cannot: see ``execute.strip_forged_notes``), and the note cell is left out,
  so a student cannot forge the notes with a look-alike cell;
* only the HTML pages are written: nbgrader would also copy every other file of the
  graded folder into ``feedback/`` (a submission's data, or a link's target), which
  ``release_feedback`` then hands out;
* each student's rendering runs under a time limit (``SIGALRM``) and the process under
  a memory limit (``RLIMIT_DATA``, set by the parent), so one huge notebook fails alone
  with a clear status instead of stalling or exhausting the machine.
"""
from __future__ import annotations

import html
import logging
import os
import shutil
import signal
import sys
from pathlib import Path

# jsonschema (via nbformat) builds an IRI grammar at import, about 1.5 s per process,
# when rfc3987_syntax is installed; feedback never validates IRIs, so skip it.
sys.modules.setdefault("rfc3987_syntax", None)

__all__ = ["feedback_one", "main", "notes_banner", "FEEDBACK_SECONDS_ENV"]

#: What ``nbgrader release_feedback`` reads beside each page (copied from autograded/).
RELEASE_FILES = ("timestamp.txt", "submission_secret.txt")

#: Seconds allowed to render one student's feedback (set by the parent process).
FEEDBACK_SECONDS_ENV = "COURSE_GRADE_FEEDBACK_SECONDS"
BANNER_CLASS = "course-grade-notes"


class _FeedbackTimeout(BaseException):
    """Past the time limit (a BaseException: nbgrader's per-assignment handler catches
    and rewords every Exception)."""


class _FeedbackOutOfMemory(BaseException):
    """MemoryError while rendering, carried past nbgrader's handler."""


def notes_banner(notes: list[str]) -> str:
    """The HTML block with the autograder's notes, placed before the notebook's cells."""
    items = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
    return (f'<div class="{BANNER_CLASS}" style="border:2px solid #b35900;padding:0.6em 1em;'
            'margin:1em auto;max-width:1100px;background:#fff4e5;font-family:sans-serif">'
            "<strong>Notes from the autograder</strong> (written by <code>course grade</code>, "
            f"outside your notebook)<ul>{items}</ul></div>")


def _converter_class():
    from nbconvert.preprocessors import CSSHTMLHeaderPreprocessor, Preprocessor
    from nbgrader.converters import GenerateFeedback
    from nbgrader.preprocessors import GetGrades
    from traitlets import Bool, List

    class NotesOutsideCells(Preprocessor):
        """Take the notes from the notebook's metadata into ``resources`` and drop the
        note cell (the notes are shown once, in the banner)."""

        enabled = Bool(True)

        def preprocess(self, nb, resources):
            notes = (nb.metadata.get("course_grade") or {}).get("notes") or []
            resources["course_grade_notes"] = [str(n) for n in notes]
            nb.cells = [c for c in nb.cells if "course_grade" not in c.get("metadata", {})]
            return nb, resources

    class Feedback(GenerateFeedback):
        # GenerateFeedback's own list (GetGrades, CSSHTMLHeaderPreprocessor), notes first
        preprocessors = List([NotesOutsideCells, GetGrades, CSSHTMLHeaderPreprocessor])

        def init_notebooks(self):
            """Student ids are literal, not glob patterns (see the grader's)."""
            from course_utils.autograde.grader import init_notebooks_literally

            init_notebooks_literally(self)

        def init_assignment(self, assignment_id, student_id):
            """Copy none of the student's files: the feedback is the HTML pages, plus
            the two small files ``nbgrader release_feedback`` reads to hand the pages
            back through the exchange (``timestamp.txt``, ``submission_secret.txt``;
            without them it stops with FileNotFoundError)."""
            source = Path(self._format_source(assignment_id, student_id))
            dest = Path(self._format_dest(assignment_id, student_id))
            for name in RELEASE_FILES:
                path = source / name
                if path.is_file() and not path.is_symlink() and path.stat().st_size <= 4096:
                    dest.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(path, dest / name)

        def convert_single_notebook(self, notebook_filename):
            try:
                super().convert_single_notebook(notebook_filename)
            except MemoryError:
                raise _FeedbackOutOfMemory() from None

        def write_single_notebook(self, output, resources):
            notes = resources.get("course_grade_notes") or []
            if notes:
                at = output.find("<body")
                at = output.find(">", at) + 1 if at >= 0 else 0
                output = output[:at] + notes_banner(notes) + output[at:]
            super().write_single_notebook(output, resources)

    return Feedback


def feedback_one(course_dir: str, assignment: str, student: str) -> tuple[str, str]:
    """``nbgrader generate_feedback --assignment A --student S --force``, in-process."""
    from traitlets.config import Config

    from course_utils.autograde.grader import _coursedir, load_course_config

    seconds = int(os.environ.get(FEEDBACK_SECONDS_ENV) or 0)
    try:
        cfg = load_course_config(Path(course_dir))
        cd = _coursedir(cfg, Path(course_dir), assignment_id=assignment, student_id=student)
        # Old pages go first: a student whose grading or rendering failed now has none,
        # rather than last run's, which release_feedback would hand out as current.
        shutil.rmtree(cd.format_path(cd.feedback_directory, student, assignment),
                      ignore_errors=True)
        autograded = cd.format_path(cd.autograded_directory, student, assignment)
        if not os.path.isdir(autograded):
            return student, f"no autograded notebooks in {autograded}"
        extra = Config()
        extra.HTMLExporter.template_name = "feedback"
        if "sanitize_html" not in cfg.HTMLExporter:
            # Outputs come from the student's kernel: no <script> in pages the
            # instructor opens (nbgrader leaves this off).
            extra.HTMLExporter.sanitize_html = True
        conv = _converter_class()(coursedir=cd, config=cfg)
        conv.update_config(extra)
        conv.force = True
        if seconds:
            signal.alarm(seconds)
        try:
            conv.start()
        finally:
            signal.alarm(0)
        return student, "ok"
    except _FeedbackTimeout:
        return student, (f"rendering the feedback took longer than {seconds} s (the limit "
                         "per student); the graded notebook is too large to render")
    except (MemoryError, _FeedbackOutOfMemory):
        return student, ("rendering the feedback ran out of memory (the feedback process's "
                         "limit); the graded notebook is too large to render")
    except Exception as exc:  # reported per student; the others still get feedback
        return student, f"{type(exc).__name__}: {exc}"


def _on_alarm(signum, frame):
    raise _FeedbackTimeout()


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.ERROR)
    signal.signal(signal.SIGALRM, _on_alarm)
    course_dir, assignment, *students = argv
    for student in students:
        student, status = feedback_one(course_dir, assignment, student)
        print(f"{student}\t{status}".replace("\n", " "), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
