"""Every notebook of the series runs end to end on the ``smoke`` profile (what CI can afford),
through the same ``course run`` machinery as ``make course``, and records its figures."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from course_utils.runner import discover_notebooks, render_html, run_notebook

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = discover_notebooks(ROOT / "notebooks")


def _cells(nb_path: Path) -> list[dict]:
    return json.loads(nb_path.read_text())["cells"]


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_clean_and_parameterised(nb):
    cells = _cells(nb)
    code = [c for c in cells if c["cell_type"] == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), \
        f"{nb.name} carries outputs: clear them before committing"
    params = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1, f"{nb.name} needs exactly one cell tagged 'parameters'"
    first = "".join(params[0]["source"]).lstrip().splitlines()[0]
    assert first.startswith("PROFILE ="), f"{nb.name}: the parameters cell must start with PROFILE"
    assert "SEED" in "".join(params[0]["source"])


@pytest.mark.notebook
@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_on_smoke_profile(nb, smoke_build):
    result = run_notebook(nb, smoke_build / nb.name, profile="smoke", cell_timeout=300,
                          progress_bar=False)
    assert result.ok
    executed = json.loads(result.output.read_text())
    errors = [o for c in executed["cells"] if c["cell_type"] == "code"
              for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    recorded = json.loads((smoke_build / f"{nb.stem}.json").read_text())
    assert recorded["profile"] == "smoke"
    html = render_html(result.output)
    assert "<img" in html.read_text(), f"{nb.name} shows no figure"


def test_setup_notebook_classifies_the_photos(smoke_build):
    path = smoke_build / "00_setup.json"
    if not path.exists():  # run on its own: execute it here
        run_notebook(ROOT / "notebooks" / "00_setup.ipynb", smoke_build / "00_setup.ipynb",
                     profile="smoke", progress_bar=False)
    recorded = json.loads(path.read_text())
    assert recorded["top3"]["coffee"][0] == "espresso"
    assert recorded["top3"]["chelsea"][0] in {"tiger cat", "tabby", "Egyptian cat"}
    assert recorded["fashion_mnist"] == {"train": 60000, "test": 10000,
                                         "per_class_train": [6000] * 10}
