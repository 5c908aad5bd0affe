"""Where a notebook records the figures it reports: ``build/<notebook>.json``.

Tests read these files to check the results the course claims (e.g. "pretrained beats
scratch by 15 points at 10 images per class"), so prose never has to state a number.
The runner sets ``COURSE_BUILD_DIR``; run by hand, results go to ``build/`` beside the
``notebooks/`` folder.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from course_utils.atomic import atomic_write_json

__all__ = ["build_dir", "record", "load"]


def build_dir() -> Path:
    env = os.environ.get("COURSE_BUILD_DIR")
    if env:
        return Path(env)
    here = Path.cwd()
    root = here.parent if here.name == "notebooks" else here
    return root / "build"


def _plain(x):
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, np.ndarray):
        return _plain(x.tolist())
    if isinstance(x, (np.floating, float)):
        x = float(x)
        return None if math.isnan(x) or math.isinf(x) else x
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


def record(notebook: str, **results) -> Path:
    """Merge ``results`` into ``<build>/<notebook>.json`` and return the path."""
    out = build_dir()
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{notebook}.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data.update(_plain(results))
    return atomic_write_json(path, data, indent=1, sort_keys=True)


def load(notebook: str, directory: str | Path | None = None) -> dict:
    path = Path(directory or build_dir()) / f"{notebook}.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run the notebook {notebook} first "
                                "(course run notebooks/{notebook}.ipynb)")
    return json.loads(path.read_text())
