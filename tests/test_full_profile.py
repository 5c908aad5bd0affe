"""Every notebook's ``full`` branch runs end to end, offline, on fixture photographs and random
stand-in weights (``tests/_full_fixtures.py``), and records what it ran; with nothing cached
and the network cut, the ``full`` profile fails at its first download, in the set-up cell,
naming what it needs (issue 14).

``FIXTURE=True`` is each notebook's documented test hook: the ``full`` code on a few images
and one short epoch per run, the lesson sections at their ``smoke`` sizes."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from _full_fixtures import build_full_fixtures, full_profile_env, offline_env
from course_utils.runner import NotebookFailure, discover_notebooks, run_notebook

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = discover_notebooks(ROOT / "notebooks")

#: what each notebook records under ``photos`` in build/<notebook>.json on ``full``, besides
#: the keys every photograph branch records (COMMON)
COMMON = {"datasets", "weights", "device", "seconds"}
PHOTO_KEYS = {
    "02_feature_extraction": {"accuracy_vs_per_class", "layers"},
    "03_finetuning_pytorch": {"finetune_acc", "scratch_acc", "hotdog_row_head_acc"},
    "04_finetuning_keras": {"feature_extraction_acc", "finetune_acc"},
    "05_scratch_vs_pretrained": {"gain"},
    "06_when_to_finetune": {"scenarios"},
}


@pytest.fixture(scope="module")
def full_fixtures(tmp_path_factory) -> Path:
    return build_full_fixtures(tmp_path_factory.mktemp("full_fixtures"))


@pytest.fixture(scope="module")
def full_build(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("full_build")


def _errors(executed: Path) -> list[dict]:
    cells = json.loads(executed.read_text())["cells"]
    return [o for c in cells if c["cell_type"] == "code" for o in c.get("outputs", [])
            if o.get("output_type") == "error"]


@pytest.mark.notebook
@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_full_branch_runs_offline_on_fixtures(nb, full_fixtures, full_build, monkeypatch):
    for key, value in full_profile_env(full_fixtures).items():
        monkeypatch.setenv(key, value)
    result = run_notebook(nb, full_build / nb.name, profile="full",
                          parameters={"FIXTURE": True}, cell_timeout=300, progress_bar=False)
    assert result.ok and not _errors(result.output)
    recorded = json.loads((full_build / f"{nb.stem}.json").read_text())
    assert recorded["profile"] == "full"
    if nb.stem in PHOTO_KEYS:
        photos = recorded["photos"]
        missing = (COMMON | PHOTO_KEYS[nb.stem]) - set(photos)
        assert not missing, f"{nb.stem} recorded no {sorted(missing)} under 'photos'"
        assert photos["seconds"] > 0 and photos["datasets"]


@pytest.mark.notebook
@pytest.mark.parametrize("nb", [n for n in NOTEBOOKS if n.stem in PHOTO_KEYS], ids=lambda p: p.stem)
def test_full_profile_offline_fails_fast_in_the_setup_cell(nb, tmp_path, monkeypatch):
    for key, value in {"COURSE_DATA": str(tmp_path / "data"), "TORCH_HOME": str(tmp_path / "torch"),
                       "KERAS_HOME": str(tmp_path / "keras"), **offline_env()}.items():
        monkeypatch.setenv(key, value)
    t0 = time.perf_counter()
    with pytest.raises(NotebookFailure) as failure:
        run_notebook(nb, tmp_path / nb.name, profile="full", cell_timeout=120, progress_bar=False)
    seconds = time.perf_counter() - t0
    msg = failure.value.evalue
    # the set-up cell (the first after the title and the parameters), before any training
    assert failure.value.cell is not None and failure.value.cell <= 4, str(failure.value)
    assert "http" in msg and str(tmp_path) in msg, msg  # the URL, and where to put a copy
    assert seconds < 120
