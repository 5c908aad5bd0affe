"""Atomic files and folders: the one way the course writes anything another run may read.

A reader (another notebook, a resumed run, a second process filling the same cache) must
see the old file or the new one, never half of one, and a crash or Ctrl-C must leave no
partial file that a later run takes for complete. The recipe, done once here and used by
checkpoints, the feature cache, results, dataset caches, the Keras weight conversion and the
pretraining caches:

1. write to a temporary file in the *same directory* (``os.replace`` is atomic only within
   one file system);
2. flush and ``fsync`` it (otherwise a power cut after the rename can leave an empty file
   under the final name);
3. ``os.replace`` it onto the final name, then ``fsync`` the directory so the rename itself
   is durable (where the platform allows it);
4. on any error, KeyboardInterrupt included, remove the temporary file.

Imports neither framework: callers pass a ``write(file)`` callable (``torch.save``,
``np.save`` ...) or, for libraries that insist on a file *name* (Keras ``save_weights``
wants a ``.weights.h5`` suffix), use :func:`atomic_path`.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

__all__ = ["atomic_write", "atomic_path", "atomic_write_bytes", "atomic_write_text",
           "atomic_write_json", "atomic_dir", "build_lock"]


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open a directory; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | Path, *, suffix: str = ".part") -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (ending in ``suffix``) for the caller to write;
    when the block ends without error the file is fsynced and renamed onto ``path``. On an
    error the temporary file is removed and ``path`` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        _fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:  # Ctrl-C included: never leave a partial file behind
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], object], *,
                 suffix: str = ".part") -> Path:
    """Call ``write(f)`` on a binary file object and put the result at ``path`` atomically
    (same-directory temporary file, flush, fsync, rename). Returns ``path``."""
    path = Path(path)
    with atomic_path(path, suffix=suffix) as tmp:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """``path.write_bytes(data)``, atomically."""
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    """``path.write_text(text)``, atomically."""
    return atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path: str | Path, obj, **dumps_kwargs) -> Path:
    """``obj`` as JSON (``json.dumps(obj, **dumps_kwargs)``) at ``path``, atomically."""
    return atomic_write_text(path, json.dumps(obj, **dumps_kwargs))


@contextlib.contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``target``; when the block ends without error
    it replaces ``target`` (a previous ``target`` is removed first, so there is a moment
    with neither, but never a half-written one). On an error the temporary folder is
    removed and ``target`` is untouched."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial"))
    try:
        yield tmp
        for f in tmp.rglob("*"):
            if f.is_file() and not f.is_symlink():
                _fsync_file(f)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def build_lock(path: str | Path) -> Iterator[None]:
    """Hold an exclusive lock for ``path`` while the block builds it.

    For cache entries that take minutes to build (pretrained source weights): a second
    process asking for the same entry (two notebooks at once, ``course run --jobs 2``) waits
    and then reads the finished file instead of training it a second time. Atomic writes
    already keep either process from reading half a file; the lock only saves the duplicate
    work. Advisory (``fcntl.flock``), released when the block ends or the process dies; where
    there is no ``fcntl`` (Windows) the block simply runs unlocked. The lock file lives in a
    per-user folder of the temporary directory, named by a hash of ``path``, so cache folders
    hold only their entries."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    import hashlib

    folder = Path(tempfile.gettempdir()) / f"course-locks-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    digest = hashlib.sha256(str(Path(path).resolve()).encode()).hexdigest()[:32]
    lock = folder / f"{digest}.lock"
    with open(lock, "a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
