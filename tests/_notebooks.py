"""Tiny notebooks for the runner tests: cells written with the course's ``python3`` kernel."""
from __future__ import annotations

from pathlib import Path

import nbformat

KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}


def write_notebook(path: Path, cells: list) -> Path:
    """Write ``cells`` (nbformat cells) as a notebook at ``path`` with the python3 kernel."""
    nb = nbformat.v4.new_notebook()
    nb.cells = list(cells)
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nbformat.write(nb, str(path))
    return path
