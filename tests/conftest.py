"""Shared pytest set-up: headless plotting, quiet TensorFlow, no accidental network."""
from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

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
