"""What of a submission folder gets graded: the checks before nbgrader touches it.

nbgrader copies a submission's files on the host, as the instructor, with
``shutil.copy``: it follows symbolic links (a link to the gradebook brings it in),
blocks for ever on a FIFO, turns a sparse file into a dense one (a 3 GiB "file" became
9 GB of copies in ``autograded/`` and ``feedback/``), and parses any notebook, however
large (200,000 cells held the gradebook lock for 80 s).  So before grading, each
submission folder is inspected here, without following anything and without holding
the gradebook lock, and anything that must not be graded is left out of a staged copy:

* symbolic links and special files (FIFOs, sockets, devices);
* hard links to files outside the submission -- to the instructor's files (gradebook,
  ``source/``, ``release/``) always, and any other multiply-linked file except the
  assignment's notebooks and ``timestamp.txt`` (an instructor who assembles
  ``submitted/`` with ``cp -al`` or ``rsync --link-dest`` shares their inodes with the
  exchange; a student's data file has no reason to be linked elsewhere);
* other files beyond :attr:`Limits.max_submission_bytes` in all, by apparent size (a
  sparse file counts at its full length, since copies are dense), largest first;
* a notebook larger than :attr:`Limits.max_notebook_bytes` or with more than
  :attr:`Limits.max_cells` cells ("notebook too large": it scores zero);
* a ``timestamp.txt`` that is not a date nbgrader can read (nbgrader would stop with
  an ``AttributeError``): graded without it, so without a late penalty, and said so.

Each omission is a note for the student and the instructor.  When nothing is left out
the submission is graded in place, as nbgrader would.
"""
from __future__ import annotations

import json
import os
import shutil
import stat
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Intake", "inspect_submission", "protected_inodes", "stage"]

TIMESTAMP = "timestamp.txt"
_MAX_TIMESTAMP_BYTES = 1024


@dataclass
class Intake:
    """The verdict on one submission folder: what is left out, and why."""

    skip: dict[str, str] = field(default_factory=dict)       # relative path -> reason
    notes: list[tuple[str, str, str]] = field(default_factory=list)  # (status, notebook, note)
    refused_notebooks: list[str] = field(default_factory=list)

    def add(self, status: str, note: str, notebook: str = "") -> None:
        self.notes.append((status, notebook, note))


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n} bytes"


def _shown(names: list[str], limit: int = 5) -> str:
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit
                                       else "")


def protected_inodes(course_dir: Path, db_path: str | None) -> set[tuple[int, int]]:
    """(device, inode) of the instructor's files a submission must never bring in:
    the gradebook (and its journal), ``nbgrader_config.py``, ``source/`` and ``release/``."""
    found: set[tuple[int, int]] = set()
    paths = [course_dir / "nbgrader_config.py"]
    if db_path:
        paths += [Path(db_path), Path(db_path + "-journal"), Path(db_path + "-wal")]
    for tree in ("source", "release"):
        for dirpath, _, filenames in os.walk(course_dir / tree):
            paths += [Path(dirpath) / f for f in filenames]
    for p in paths:
        try:
            st = os.lstat(p)
        except OSError:
            continue
        found.add((st.st_dev, st.st_ino))
    return found


def _timestamp_problem(path: Path) -> str | None:
    """Why nbgrader could not read ``timestamp.txt`` (None when it can or it is absent)."""
    from nbgrader.utils import parse_utc

    try:
        size = path.stat().st_size
        if size > _MAX_TIMESTAMP_BYTES:
            return f"it is {_size(size)} long, not a date"
        text = path.read_text(errors="replace").strip()
    except OSError as exc:
        return f"it cannot be read ({exc.strerror})"
    if not text:
        return None  # nbgrader treats an empty file as no timestamp
    try:
        parse_utc(text)
    except Exception:  # dateutil raises ValueError, OverflowError, ParserError ...
        return f"it holds {text[:60]!r}, which is not a date such as '2026-01-15 12:00:00 UTC'"
    return None


def inspect_submission(src: str | os.PathLike, notebooks: list[str], limits,
                       protected: set[tuple[int, int]] = frozenset()) -> Intake:
    """Inspect ``src`` (never following links) and decide what to leave out."""
    src = Path(src)
    intake = Intake()
    specials, links_out, links_protected = [], [], []
    others: list[tuple[int, str]] = []
    wanted = {f"{n}.ipynb" for n in notebooks}
    for dirpath, dirnames, filenames in os.walk(src):
        for name in sorted(dirnames + filenames):
            full = Path(dirpath) / name
            rel = str(full.relative_to(src))
            st = os.lstat(full)
            if stat.S_ISDIR(st.st_mode):
                continue
            if not stat.S_ISREG(st.st_mode):
                specials.append(rel)
                continue
            if (st.st_dev, st.st_ino) in protected:
                links_protected.append(rel)
            elif st.st_nlink > 1 and rel not in wanted and rel != TIMESTAMP:
                links_out.append(rel)
            elif rel in wanted:
                _check_notebook(full, rel, st.st_size, limits, intake)
            elif rel != TIMESTAMP:
                others.append((st.st_size, rel))
        dirnames[:] = [d for d in dirnames if not os.path.islink(Path(dirpath) / d)]
    if specials:
        intake.skip.update(dict.fromkeys(specials, "special"))
        intake.add("tampered", f"The submission contained symbolic links or special files "
                   f"({_shown(specials)}); they were left out before grading.")
    if links_protected or links_out:
        intake.skip.update(dict.fromkeys(links_protected + links_out, "hard link"))
        intake.add("tampered", "The submission contained hard links to files outside it "
                   f"({_shown(links_protected + links_out)}); they were left out before "
                   "grading, like symbolic links. Instructors: assemble submitted/ with "
                   "copies (cp -a), not hard links (cp -al, rsync --link-dest).")
    total, over = 0, []
    for size, rel in sorted(others):
        if total + size > limits.max_submission_bytes:
            over.append((size, rel))
        else:
            total += size
    if over:
        intake.skip.update({rel: "size" for _, rel in over})
        listed = [f"{rel} ({_size(size)})" for size, rel in sorted(over, reverse=True)]
        intake.add("files", f"The submission's files besides the notebooks exceed "
                   f"{_size(limits.max_submission_bytes)}, the limit per submission; left out "
                   f"before grading: {_shown(listed)}. Code that reads them fails.")
    ts = src / TIMESTAMP
    if ts.is_file() and not ts.is_symlink() and TIMESTAMP not in intake.skip:
        problem = _timestamp_problem(ts)
        if problem:
            intake.skip[TIMESTAMP] = "timestamp"
            intake.add("bad-timestamp", f"The submission's timestamp.txt is unreadable: "
                       f"{problem}. It was graded as if submitted on time (no late "
                       "penalty); check the submission time by hand.")
    return intake


def _check_notebook(path: Path, rel: str, size: int, limits, intake: Intake) -> None:
    """Refuse a notebook too large to grade: by bytes first (without reading it), then
    by cells (parsing at most ``max_notebook_bytes``)."""
    name = rel[: -len(".ipynb")]
    why = None
    if size > limits.max_notebook_bytes:
        why = f"it is {_size(size)}, over the {_size(limits.max_notebook_bytes)} limit"
    else:
        try:
            with open(path, "rb") as fh:
                cells = json.load(fh).get("cells")
        except (OSError, ValueError, AttributeError):
            return  # not a notebook: nbgrader reports it as such
        if isinstance(cells, list) and len(cells) > limits.max_cells:
            why = f"it has {len(cells)} cells, over the {limits.max_cells} cell limit"
    if why:
        intake.skip[rel] = "notebook too large"
        intake.refused_notebooks.append(name)
        intake.add("too-large", f"Notebook too large: {rel} was not graded because {why}; "
                   "it scores zero. Remove the extra cells or outputs and submit again.",
                   notebook=name)


def stage(src: str | os.PathLike, dst: str | os.PathLike, skip) -> None:
    """Copy ``src`` to ``dst`` without the relative paths in ``skip`` (links kept as
    links, never followed; the caller has put every link in ``skip``)."""
    src = Path(src)
    skip = set(skip)
    shutil.copytree(src, dst, symlinks=True, ignore=lambda d, names: [
        n for n in names if str((Path(d) / n).relative_to(src)) in skip])
