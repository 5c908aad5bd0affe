"""The library's one progress bar: ``tqdm.auto`` live, one tidy line in executed copies.

Every loop of the library that trains, extracts features or runs experiments takes its bar
from :func:`tqdm` here (same arguments as ``tqdm.auto.tqdm``). How bars show depends on
``$COURSE_PROGRESS`` (``course run`` sets it for its kernels):

``live`` (default)
    ``tqdm.auto``: a widget with an ETA in JupyterLab, a terminal bar elsewhere. A bar opened
    while another is running (a ``fit`` inside an experiment's ``run 7/48: ...`` bar) is
    transient unless it asks for ``leave``: it disappears when it closes, the outer one stays.
``final``
    nothing while the loop runs; when a top-level bar that would stay on screen closes, one
    plain line (``fit: 100%|██████████| 5/5 [00:12<00:00, …]``), at most
    :data:`MAX_FINAL_LINES` per notebook cell. Transient (``leave=False``) and nested bars
    print nothing. This is what a notebook executed by papermill keeps: no widgets whose
    state is lost, no hundreds of ``\\r`` updates.
``off``
    no bars at all.
"""
from __future__ import annotations

import logging
import os
import sys

__all__ = ["tqdm", "progress_mode", "ENV", "MODES", "MAX_FINAL_LINES"]

log = logging.getLogger(__name__)

#: environment variable choosing how bars show
ENV = "COURSE_PROGRESS"
MODES = ("live", "final", "off")
#: in ``final`` mode, at most this many bar lines per notebook cell (or per process outside
#: IPython): a cell running 48 trainings shows its first few, not 48 lines
MAX_FINAL_LINES = 3


def progress_mode() -> str:
    """The mode ``$COURSE_PROGRESS`` asks for (``live`` when unset)."""
    mode = os.environ.get(ENV, "live").strip().lower() or "live"
    if mode not in MODES:
        log.warning("%s=%r is not one of %s; showing live bars", ENV, mode, ", ".join(MODES))
        return "live"
    return mode


def _cell_id():
    """What identifies the running notebook cell (the IPython execution count), or None."""
    if "IPython" not in sys.modules:
        return None
    from IPython import get_ipython

    shell = get_ipython()
    return getattr(shell, "execution_count", None) if shell is not None else None


_final_lines: dict = {}  # cell id -> lines printed in it


def _final_class():
    from tqdm.std import tqdm as std_tqdm

    class FinalLineTqdm(std_tqdm):
        """A ``tqdm`` that stays silent while it runs and writes one line when it closes."""

        def __init__(self, *args, **kwargs):
            kwargs.setdefault("file", sys.stderr)
            kwargs.pop("dynamic_ncols", None)  # a saved line has no terminal to fit
            kwargs["ncols"] = kwargs.get("ncols") or 80
            self._course_closing = False
            super().__init__(*args, **kwargs)

        def display(self, msg=None, pos=None):
            if not self._course_closing or msg is not None:
                return False  # nothing while running, nothing to clear at the end
            self.fp.write(self.__str__())
            return True

        def close(self):
            if self.disable:
                return
            pos = abs(getattr(self, "pos", 0) or 0)
            leave = (pos == 0) if self.leave is None else self.leave
            cell = _cell_id()
            if leave and pos == 0 and _final_lines.get(cell, 0) < MAX_FINAL_LINES:
                _final_lines[cell] = _final_lines.get(cell, 0) + 1
                self._course_closing = True
            else:
                self.leave = False
            super().close()
            self.fp.flush()

    return FinalLineTqdm


def tqdm(*args, **kwargs):
    """A progress bar: ``tqdm.auto.tqdm(*args, **kwargs)`` shown as ``$COURSE_PROGRESS`` says
    (see the module's help). ``disable=True`` still turns it off."""
    mode = progress_mode()
    if mode == "off":
        kwargs["disable"] = True
    if mode == "final":
        return _final_class()(*args, **kwargs)
    from tqdm.auto import tqdm as auto_tqdm

    if "leave" not in kwargs and _open_bars(auto_tqdm):
        kwargs["leave"] = False  # nested under a running bar: transient
    return auto_tqdm(*args, **kwargs)


def _open_bars(cls) -> bool:
    """Whether a bar of ``cls`` is running now (then a new one is nested inside it)."""
    try:
        return any(not getattr(b, "disable", True) for b in list(getattr(cls, "_instances", ())))
    except Exception:  # a tqdm without _instances: treat as not nested
        return False
