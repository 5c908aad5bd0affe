"""Verified, cached, atomic downloads and safe extraction.

(Step 1 stub: cache root only; the downloader follows.)
"""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["data_home"]


def data_home(sub: str | None = None) -> Path:
    """Cache root: ``$COURSE_DATA`` if set, else ``~/.cache/course_utils`` (optionally ``/sub``)."""
    root = Path(os.environ.get("COURSE_DATA") or Path.home() / ".cache" / "course_utils").expanduser()
    return root / sub if sub else root
