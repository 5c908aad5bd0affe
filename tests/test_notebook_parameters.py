"""Every notebook's parameters cell is one papermill can read (issue 15).

papermill inspects the cell tagged ``parameters`` line by line and gives up on (and warns
about, on every run) a line with more than one ``=``, which a comment like ``# epochs =
STEPS * BATCH / n`` makes. The cell must also start with ``PROFILE`` (DESIGN.md) and every
variable in it must be found, so ``papermill -p NAME value`` and ``course run`` can set it.
"""
from __future__ import annotations

import ast
import logging

import nbformat
import pytest

from course_utils.runner import discover_notebooks


def _notebooks(repo_root):
    return discover_notebooks(repo_root / "notebooks")


def test_there_are_notebooks(repo_root):
    assert len(_notebooks(repo_root)) >= 7


@pytest.mark.parametrize("index", range(7))
def test_parameters_cell_parses_without_papermill_warnings(repo_root, index, caplog):
    from papermill.translators import PythonTranslator

    path = _notebooks(repo_root)[index]
    nb = nbformat.read(path, as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, f"{path.name}: {len(cells)} cells tagged 'parameters'"
    with caplog.at_level(logging.WARNING, logger="papermill"):
        params = PythonTranslator.inspect(cells[0])
    assert not [r for r in caplog.records if r.name.startswith("papermill")], (
        f"{path.name}: papermill could not parse {[r.getMessage() for r in caplog.records]}; "
        "keep '=' out of the comments of the parameters cell")
    names = [p.name for p in params]
    assigned = [t.id for node in ast.parse(cells[0].source).body if isinstance(node, ast.Assign)
                for t in node.targets if isinstance(t, ast.Name)]
    assert names == assigned and names[0] == "PROFILE", (path.name, names, assigned)
