"""Whether the sandboxed-grading tests can run here (shared by the three autograde test files)."""
from __future__ import annotations

import functools
import subprocess

from course_utils.autograde import find_bwrap

__all__ = ["BWRAP_REASON", "bwrap_usable"]

BWRAP_REASON = ("bubblewrap is not installed or cannot create namespaces here; "
                "'make system-deps' or 'apt-get install bubblewrap'")


@functools.lru_cache(maxsize=1)
def bwrap_usable() -> bool:
    """bubblewrap is installed and this machine lets it create namespaces (some CI
    images forbid unprivileged user namespaces): an environment check, independent
    of course_utils' own sandbox code, which the tests must exercise."""
    bwrap = find_bwrap()
    if bwrap is None:
        return False
    res = subprocess.run([bwrap, "--unshare-all", "--ro-bind", "/", "/", "true"],
                         capture_output=True)
    return res.returncode == 0
