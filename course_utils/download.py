"""Verified, cached, atomic downloads and safe archive extraction.

What pooch does here (``pooch.retrieve`` + ``pooch.HTTPDownloader``): stream the file into
a temporary file *in the cache folder*, check its hash, and only then move it into place;
delete the temporary file on any error, including ``KeyboardInterrupt``; re-download a
cached file whose hash does not match; progress bar (a ``tqdm.auto`` bar is passed in);
HTTP timeout.

What is written by hand below, because pooch lacks it:

* several hashes per file: pooch checks one; anchors publish md5 or sha1 (torchvision,
  d2l) while sha256 comes from elsewhere, so every hash given is checked;
* mirrors: the URLs are tried in order, after the course's own mirror when ``$COURSE_MIRROR``
  is set (an instructor's copy of a filled cache, for labs without internet; see
  :func:`mirror_source`);
* an offline error that names the dataset, the URLs, the exact cache path where a copy can
  be put by hand, and the embedded alternative (pooch raises a bare ``requests`` error),
  raised within a short connect timeout when there is no network;
* ``download=False``: verify what is in the cache and never touch the network;
* trust on first use, only for an archive whose publisher gives no hash at all: the hash of
  the first download is recorded next to it and enforced afterwards (callers also check
  the extracted content);
* safe, atomic extraction: pooch's ``Unzip``/``Untar`` extract in place (an interrupted
  extraction leaves a half tree that pooch later takes as complete) and, on Python 3.11,
  unpack tar members without a filter. :func:`extract` first checks every member and
  refuses absolute paths, ``..`` components, links that leave the target, devices and
  fifos; then it unpacks into a temporary sibling folder and renames it into place.

The cache root is ``$COURSE_DATA`` (default ``~/.cache/course_utils``), see :func:`data_home`.
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import stat
import tarfile
import zipfile
from pathlib import Path, PurePosixPath
from typing import Sequence

from course_utils.atomic import atomic_dir, atomic_path, atomic_write_text

__all__ = ["data_home", "fetch", "extract", "verify", "file_hash", "check_archive_members",
           "mirror_source", "MIRROR_ENV",
           "DownloadError", "ChecksumError", "UnsafeArchiveError", "ArchiveError"]

log = logging.getLogger(__name__)

#: Seconds :func:`fetch` waits for a connection by default: without a network the first
#: download fails this fast (read at call time).
CONNECT_TIMEOUT = 10.0

#: Strongest first: the first hash given is the one pooch checks while downloading.
HASH_ALGORITHMS = ("sha256", "sha1", "md5")


class DownloadError(OSError):
    """The file is not in the cache and could not be downloaded (offline, server error,
    ``download=False``). The message says where a copy can be put by hand."""


class ChecksumError(ValueError):
    """A file's hash differs from the pinned value; the file was removed."""


class UnsafeArchiveError(ValueError):
    """An archive member would land outside the target folder; nothing was extracted."""


class ArchiveError(ValueError):
    """An archive is truncated or corrupt; nothing was extracted."""


def data_home(sub: str | None = None) -> Path:
    """Cache root: ``$COURSE_DATA`` if set, else ``~/.cache/course_utils`` (optionally ``/sub``)."""
    root = Path(os.environ.get("COURSE_DATA") or Path.home() / ".cache" / "course_utils").expanduser()
    return root / sub if sub else root


#: Environment variable naming the course's mirror: a copy of a filled ``$COURSE_DATA`` tree,
#: served over HTTP (``http://lab-server:8000``) or reachable as a folder (an NFS mount).
MIRROR_ENV = "COURSE_MIRROR"


def mirror_source(dest) -> str | Path | None:
    """Where ``$COURSE_MIRROR`` holds the file that :func:`fetch` would put at ``dest``, or
    None when the variable is unset.

    The mirror has the cache's own layout: ``dest``'s path below :func:`data_home` (for example
    ``hotdog/downloads/hotdog.zip``), so an instructor fills a cache once with ``course data
    NAME`` on a connected machine and serves that folder as it is (``python -m http.server -d
    ~/.cache/course_utils``) or mounts it. Returns a URL string for an ``http(s)://`` mirror, a
    :class:`~pathlib.Path` for a folder. Whatever comes from the mirror is checked against the
    same hashes as a download from the origin.
    """
    base = os.environ.get(MIRROR_ENV, "").strip()
    if not base:
        return None
    dest = Path(dest).resolve()
    try:
        rel = dest.relative_to(data_home().resolve())
    except ValueError:  # a cache outside $COURSE_DATA: the mirror holds the bare file name
        rel = Path(dest.name)
    if "://" in base:
        return base.rstrip("/") + "/" + rel.as_posix()
    return Path(base).expanduser() / rel


def file_hash(path, algorithm: str = "sha256", chunk: int = 1 << 20) -> str:
    """Hex digest of a file, read in chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def _hashes(sha256=None, sha1=None, md5=None) -> dict[str, str]:
    given = {"sha256": sha256, "sha1": sha1, "md5": md5}
    return {alg: v.lower() for alg, v in given.items() if v}


def verify(path, *, sha256: str | None = None, sha1: str | None = None,
           md5: str | None = None) -> None:
    """Raise :class:`ChecksumError` unless ``path`` matches every hash given."""
    for alg, expected in _hashes(sha256, sha1, md5).items():
        got = file_hash(path, alg)
        if got != expected:
            raise ChecksumError(f"{path}: {alg} is {got} but the pinned value is {expected}; "
                                "the file is corrupt, truncated or not the official one")


def _tofu_file(dest: Path) -> Path:
    return dest.with_name(dest.name + ".sha256")


def _offline_message(dataset, fname, urls, dest, hashes, alternative, reason) -> str:
    pins = ", ".join(f"{a} {v}" for a, v in hashes.items()) or "no published hash"
    lines = [f"Cannot get {fname!r} for dataset {dataset or fname!r}: {reason}.",
             "  Download it from: " + " or ".join(urls),
             f"  and put it at:    {dest}",
             f"  (it is checked against {pins})."]
    if alternative:
        lines.append(f"  Without internet, use {alternative}.")
    return "\n".join(lines)


def fetch(fname: str, urls: str | Sequence[str], folder, *, sha256: str | None = None,
          sha1: str | None = None, md5: str | None = None, dataset: str | None = None,
          download: bool = True, alternative: str | None = None, timeout: float = 60.0,
          progress: bool = True, trust_on_first_use: bool = False,
          connect_timeout: float | None = None) -> Path:
    """Path to ``folder/fname``, verified against every hash given, downloading it first
    (from the first of ``urls`` that works) when it is missing or does not verify.

    At least one hash is required unless ``trust_on_first_use=True`` (for publishers that
    give none): then the sha256 of the first download is stored in ``fname.sha256`` and
    enforced from then on. A wrong cached file is deleted and fetched again; a download that
    fails (network, HTTP error, connection cut, hash mismatch, Ctrl-C) leaves no file behind.

    ``timeout``: seconds a connected server may stay silent; ``connect_timeout`` (default
    :data:`CONNECT_TIMEOUT`, at most ``timeout``): seconds to wait for a connection, so that without a network (a refused
    connection, no route, or a firewall that drops packets) the first download fails within
    seconds with the offline message, whatever the read timeout.
    """
    import pooch
    import requests
    from course_utils.progress import tqdm

    urls = [urls] if isinstance(urls, str) else list(urls)
    connect = min(CONNECT_TIMEOUT if connect_timeout is None else connect_timeout, timeout)
    folder = Path(folder)
    dest = folder / fname
    hashes = _hashes(sha256, sha1, md5)
    if not hashes and trust_on_first_use and _tofu_file(dest).is_file():
        hashes = {"sha256": _tofu_file(dest).read_text().split()[0]}
    if not hashes and not trust_on_first_use:
        raise ValueError(f"fetch({fname!r}): pass sha256=, sha1= or md5= — unverified downloads "
                         "are refused")
    if dest.is_file():
        try:
            verify(dest, **hashes)
            log.info("using cached %s", dest)
            return dest
        except ChecksumError as exc:
            log.warning("%s; deleting it%s", exc, " and downloading again" if download else "")
            dest.unlink()
    if not download:
        raise DownloadError(_offline_message(dataset, fname, urls, dest, hashes, alternative,
                                             "it is not in the cache and download=False"))
    folder.mkdir(parents=True, exist_ok=True)
    primary = next(iter(hashes.items()), None)
    known = f"{primary[0]}:{primary[1]}" if primary else None
    failures: list[tuple[type[Exception], str]] = []  # (error class it stands for, what happened)
    mirror = mirror_source(dest)
    if isinstance(mirror, Path):  # a folder: copy, checked like a download
        if _copy_from_folder(mirror, dest, hashes, failures):
            _record_first_use(dest, hashes, fname)
            return dest
    elif mirror is not None:      # an HTTP mirror goes before the origin
        urls = [mirror, *urls]
    for url in urls:
        bar = tqdm(total=1, unit="B", unit_scale=True, desc=fname, leave=False) if progress else False
        downloader = pooch.HTTPDownloader(progressbar=bar,
                                          timeout=(connect, timeout))
        try:
            log.info("downloading %s from %s", fname, url)
            pooch.retrieve(url, known_hash=known, fname=fname, path=folder,
                           downloader=downloader, progressbar=False)
        except ValueError as exc:  # pooch: hash mismatch; its temporary file is already gone
            failures.append((ChecksumError, f"{url}: wrong checksum ({exc})"))
            continue
        except (requests.exceptions.RequestException, OSError) as exc:
            failures.append((DownloadError, f"{url}: {type(exc).__name__}: {exc}"))
            continue
        finally:
            if bar:
                bar.close()
        try:
            verify(dest, **hashes)  # the hashes pooch did not check
        except ChecksumError as exc:
            dest.unlink(missing_ok=True)
            failures.append((ChecksumError, f"{url}: {exc}"))
            continue
        _record_first_use(dest, hashes, fname)
        return dest
    reason = "every download failed:\n    " + "\n    ".join(text for _, text in failures)
    # every mirror served the wrong bytes: a checksum problem, not a network one
    error = ChecksumError if all(kind is ChecksumError for kind, _ in failures) else DownloadError
    raise error(_offline_message(dataset, fname, urls, dest, hashes, alternative, reason))


def _copy_from_folder(source: Path, dest: Path, hashes: dict, failures: list) -> bool:
    """Copy a folder mirror's file to ``dest`` (atomically) if it is there and verifies;
    otherwise note why in ``failures`` and leave ``dest`` absent."""
    if not source.is_file():
        failures.append((DownloadError, f"{source}: not in the mirror (${MIRROR_ENV})"))
        return False
    try:
        verify(source, **hashes)
    except ChecksumError as exc:
        failures.append((ChecksumError, f"{source} (${MIRROR_ENV}): {exc}"))
        return False
    log.info("copying %s from the mirror %s", dest.name, source)
    with atomic_path(dest) as tmp:
        shutil.copyfile(source, tmp)
        verify(tmp, **hashes)  # the copy itself, should the mirror change under us
    return True


def _record_first_use(dest: Path, hashes: dict, fname: str) -> None:
    """Trust on first use: without a published hash, remember the first copy's sha256."""
    if hashes:
        return
    digest = file_hash(dest)
    atomic_write_text(_tofu_file(dest), f"{digest}  {fname}\n")
    log.warning("%s has no published checksum; recorded sha256 %s of this first "
                "download in %s and will enforce it from now on", fname, digest,
                _tofu_file(dest))


# --------------------------------------------------------------------------- extraction

def _unsafe_name(name: str) -> str | None:
    """Why ``name`` may not be extracted, or None when it is a plain relative path."""
    if not name or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return "absolute path"
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if ".." in parts:
        return "'..' component"
    return None


def _link_escapes(member_name: str, link_target: str) -> bool:
    if _unsafe_name(link_target) == "absolute path":
        return True
    base = PurePosixPath(member_name.replace("\\", "/")).parent
    depth = 0
    for part in (base / link_target.replace("\\", "/")).parts:
        if part == "..":
            depth -= 1
            if depth < 0:
                return True
        elif part not in (".", ""):
            depth += 1
    return False


def check_archive_members(archive) -> list[str]:
    """Names of the members of a zip or tar ``archive`` after checking that each one stays
    inside the target: raises :class:`UnsafeArchiveError` naming the first bad member."""
    archive = Path(archive)
    problems = []
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            names = zf.namelist()
            for info in zf.infolist():
                why = _unsafe_name(info.filename)
                mode = info.external_attr >> 16
                if why is None and stat.S_ISLNK(mode):
                    why = "symbolic link"  # zipfile would write it as a file; refuse instead
                if why:
                    problems.append(f"{info.filename!r} ({why})")
    else:
        try:
            with tarfile.open(archive) as tf:
                members = tf.getmembers()
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise ArchiveError(f"{archive}: not a readable zip or tar archive ({exc}); it is "
                               "truncated or corrupt — delete it and download again") from exc
        names = [m.name for m in members]
        for m in members:
            why = _unsafe_name(m.name)
            if why is None and (m.issym() or m.islnk()) and _link_escapes(
                    m.name if m.issym() else "", m.linkname):
                why = f"link to {m.linkname!r} outside the target"
            if why is None and (m.isdev() or m.isfifo()):
                why = "device or fifo"
            if why:
                problems.append(f"{m.name!r} ({why})")
    if problems:
        raise UnsafeArchiveError(f"{archive}: refusing to extract, member(s) would escape the "
                                 f"target folder: {', '.join(problems[:5])}"
                                 + (f" and {len(problems) - 5} more" if len(problems) > 5 else ""))
    return names


def extract(archive, target) -> Path:
    """Extract a zip or tar archive into the folder ``target``, safely and atomically.

    Every member is checked first (:func:`check_archive_members`); the archive is unpacked
    into a temporary sibling folder that replaces ``target`` only when everything was
    written, so an error or Ctrl-C never leaves a partial tree at ``target``.
    """
    archive, target = Path(archive), Path(target)
    check_archive_members(archive)
    try:
        with atomic_dir(target) as tmp:
            if zipfile.is_zipfile(archive):
                with zipfile.ZipFile(archive) as zf:
                    zf.extractall(tmp)
            else:
                with tarfile.open(archive) as tf:
                    tf.extractall(tmp, filter="data")  # belt and braces on top of the checks
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError, ValueError) as exc:
        raise ArchiveError(f"{archive}: extraction failed ({type(exc).__name__}: {exc}); the "
                           "archive is truncated or corrupt — delete it and download again; "
                           f"nothing was written to {target}") from exc
    log.info("extracted %s to %s", archive, target)
    return target
