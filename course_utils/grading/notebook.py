"""Set-up for the assignment notebooks themselves (called from their first code cell).

nbgrader gives a test cell zero points when it writes anything to **stderr**, not only when
it raises (``nbgrader.utils.determine_grade``). In Python notebooks that rule punishes
harmless output: a library warning, a progress bar, a ``logging`` message, or TensorFlow's
C++ log lines, which arrive on file descriptor 2 at unpredictable moments. A test cell
should fail when it raises, and only then. :func:`setup_grading` therefore, while nbgrader
executes the notebook (``NBGRADER_EXECUTION`` is set by ``nbgrader autograde`` and
``nbgrader validate``), sends stderr to stdout: the messages still appear in the graded
notebook and the feedback, and exceptions still fail the cell, because the kernel reports
them as error outputs, not on stderr.

The routing cannot hide a failure: whether a test cell passed is decided from the
kernel's execute reply (``status: error`` fails it, whatever was printed or where), by
nbgrader's ``Execute.on_cell_executed`` and by ``course grade`` alike
(``course_utils.autograde.execute._apply_reply``).
"""
from __future__ import annotations

import logging
import os
import sys

__all__ = ["setup_grading", "is_grading"]

log = logging.getLogger(__name__)


def is_grading() -> bool:
    """True while nbgrader autogrades or validates this notebook."""
    return bool(os.environ.get("NBGRADER_EXECUTION"))


def setup_grading(*, force: bool = False) -> bool:
    """Prepare a notebook for grading and return :func:`is_grading` (or ``force``).

    When grading: Python-level stderr (warnings, ``logging``'s fallback handler, tqdm bars
    created afterwards) is redirected to ``sys.stdout``, and file descriptor 2 is pointed at
    file descriptor 1 so that C-level output (TensorFlow, absl) follows. Outside grading it
    changes nothing, so students see warnings as usual.
    """
    grading = force or is_grading()
    if not grading:
        return False
    try:
        sys.stderr.flush()
    except (AttributeError, ValueError):  # a closed or unusual stream: nothing to flush
        pass
    sys.stderr = sys.stdout
    try:
        sys.__stderr__.flush()
        os.dup2(1, 2)
    except (AttributeError, OSError, ValueError) as exc:  # no real file descriptors (rare)
        log.debug("could not point fd 2 at fd 1: %s", exc)
    return True
