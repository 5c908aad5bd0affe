"""Feedback worker: ``python -m course_utils.autograde._feedback COURSE ASSIGNMENT STUDENT...``.

Started by :func:`course_utils.autograde.report.generate_feedback`, one process per
share of the class; prints ``student<TAB>status`` for each student when done, where
status is ``ok`` or why nbgrader could not render the feedback.
"""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

# jsonschema (via nbformat) builds an IRI grammar at import, about 1.5 s per process,
# when rfc3987_syntax is installed; feedback never validates IRIs, so skip it.
sys.modules.setdefault("rfc3987_syntax", None)

__all__ = ["feedback_one", "main"]


def feedback_one(course_dir: str, assignment: str, student: str) -> tuple[str, str]:
    """``nbgrader generate_feedback --assignment A --student S --force``, in-process."""
    from nbgrader.converters import GenerateFeedback
    from traitlets.config import Config

    from course_utils.autograde.grader import _coursedir, load_course_config

    try:
        cfg = load_course_config(Path(course_dir))
        cd = _coursedir(cfg, Path(course_dir), assignment_id=assignment, student_id=student)
        autograded = cd.format_path(cd.autograded_directory, student, assignment)
        if not os.path.isdir(autograded):
            return student, f"no autograded notebooks in {autograded}"
        extra = Config()
        extra.HTMLExporter.template_name = "feedback"
        if "sanitize_html" not in cfg.HTMLExporter:
            # Outputs come from the student's kernel: no <script> in pages the
            # instructor opens (nbgrader leaves this off).
            extra.HTMLExporter.sanitize_html = True
        conv = GenerateFeedback(coursedir=cd, config=cfg)
        conv.update_config(extra)
        conv.force = True
        conv.start()
        return student, "ok"
    except Exception as exc:  # reported per student; the others still get feedback
        return student, f"{type(exc).__name__}: {exc}"


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.ERROR)
    course_dir, assignment, *students = argv
    for student in students:
        student, status = feedback_one(course_dir, assignment, student)
        print(f"{student}\t{status}".replace("\n", " "), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
