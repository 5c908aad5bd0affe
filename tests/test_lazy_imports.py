"""The packages that students' graded notebooks and ``course --help`` import stay light:
torch, TensorFlow and nbgrader load only when a name that needs them is first used."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from course_utils._lazy import lazy_getattr

HEAVY = ("torch", "tensorflow", "nbgrader")


def test_package_imports_do_not_load_heavy_frameworks(repo_root):
    code = textwrap.dedent(f"""
        import sys
        import course_utils, course_utils.data, course_utils.grading, course_utils.autograde
        print(sorted(m for m in {HEAVY!r} if m in sys.modules))
        loader = course_utils.data.FastLoader          # first use imports torch
        assert vars(course_utils.data)["FastLoader"] is loader   # and is cached
        print("torch" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=repo_root, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["[]", "True"], out.stdout


def test_lazy_getattr_resolves_caches_and_rejects_unknown_names():
    namespace = {}
    getattr_ = lazy_getattr("course_utils", {"Thing": "no_such_module"}, namespace)
    with pytest.raises(ModuleNotFoundError, match="course_utils.no_such_module"):
        getattr_("Thing")   # a wrong table entry fails loudly, naming the module
    getattr_ = lazy_getattr("os", {"join": "path"}, namespace)
    import os.path

    assert getattr_("join") is os.path.join and namespace["join"] is os.path.join
    with pytest.raises(AttributeError, match="module 'os' has no attribute 'nope'"):
        getattr_("nope")
