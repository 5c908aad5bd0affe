"""Shared pytest set-up: headless plotting, quiet TensorFlow, no accidental network."""
from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

# Experiment runs (course_utils.experiments' run cache) start empty in every test session, so the
# notebooks' smoke runs train as they do on a fresh machine instead of reading runs an earlier
# `make course` or test run left in ~/.cache/course_utils/experiments.
if "COURSE_EXPERIMENT_CACHE" not in os.environ:
    import atexit
    import shutil
    import tempfile

    _runs = tempfile.mkdtemp(prefix="course-test-runs-")
    os.environ["COURSE_EXPERIMENT_CACHE"] = _runs
    atexit.register(shutil.rmtree, _runs, True)

# Importing TensorFlow before torch has loaded Triton makes a later torch optimizer crash the
# whole process (course_utils.keras guards its own import the same way).
try:
    import triton  # noqa: F401
except ImportError:
    pass

import pytest

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The course repository root (where README.md and notebooks/ live)."""
    return ROOT


@pytest.fixture(scope="session")
def course_bin() -> Path:
    """The ``course`` console script of the interpreter running the tests."""
    exe = VENV_BIN / "course"
    if not exe.exists():
        pytest.fail(f"{exe} is missing: install the project with 'pip install -e .' (make test does)")
    return exe


@pytest.fixture(scope="session")
def smoke_build(tmp_path_factory) -> Path:
    """One build folder for the whole session's smoke-profile notebook runs: later notebooks
    may reuse caches the earlier ones filled, and the page tests read the rendered HTML."""
    return tmp_path_factory.mktemp("smoke_build")


@pytest.fixture(scope="session")
def smoke_series(smoke_build) -> Path:
    """The whole series executed on ``smoke`` and rendered, with ``index.html``. Reuses the
    notebooks test_notebooks.py already executed in this session."""
    from course_utils.runner import (NotebookResult, discover_notebooks, render_html,
                                     run_notebook, write_index)

    done = []
    for nb in discover_notebooks(ROOT / "notebooks"):
        out = smoke_build / nb.name
        if out.exists():
            result = NotebookResult(nb, out, 0.0, ok=True)
        else:
            result = run_notebook(nb, out, profile="smoke", cell_timeout=300, progress_bar=False)
        result.html = render_html(out)
        done.append(result)
    write_index(done, smoke_build, "smoke")
    return smoke_build


@pytest.fixture(scope="session")
def fashion():
    """Fashion-MNIST from the local cache (``make data`` / Debian's dataset-fashion-mnist);
    the tests that need it skip, saying how to get it, when it is missing."""
    from course_utils.data import load

    try:
        return load("fashion_mnist", download=False)
    except (FileNotFoundError, OSError) as exc:  # pragma: no cover - depends on the machine
        pytest.skip(f"Fashion-MNIST is not available offline ({exc}); run `make data` first")
