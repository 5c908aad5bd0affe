"""Fashion-MNIST: from the Debian package, else the cache, else a verified download.

Order of sources (the first that works wins):

1. ``$COURSE_DATA/fashion_mnist/*.npy`` built by an earlier call (a warm load: ``np.load`` of
   55 MB, well under a second);
2. the Debian package ``dataset-fashion-mnist`` in ``/usr/share/datasets/fashion-mnist/``;
3. ``.gz`` files already in ``$COURSE_DATA/fashion_mnist/raw/`` (put there by hand or by an
   earlier download);
4. a download from the official URLs (``download=True``), verified against pinned hashes.

Integrity is checked on the *decompressed* idx bytes (``IDX_SHA256`` below), because the
``.gz`` wrappers differ between sources: Debian re-compressed the official files (no
file name in the gzip header), so the Debian ``.gz`` files have other md5/sha256 values than
the ones Zalando publishes, while the images and labels inside are the same. Downloaded
``.gz`` files are checked against the md5 Zalando publishes in its README *and* the sha256
TensorFlow Datasets pins for the same URLs (Zalando publishes no sha256), then their content
against ``IDX_SHA256``.
"""
from __future__ import annotations

import gzip
import hashlib
import logging
from pathlib import Path

import numpy as np

from course_utils.atomic import atomic_write
from course_utils.data.core import DatasetStatus, ImageData, register
from course_utils.download import data_home, file_hash

__all__ = ["load_fashion_mnist", "fashion_mnist_status", "parse_idx", "GZ_SIZES", "CLASSES", "SYSTEM_DIR", "URLS", "FILES",
           "IDX_SHA256", "GZ_MD5", "GZ_SHA256", "DEBIAN_GZ_SHA256"]

log = logging.getLogger(__name__)

#: Label names, in label order (Zalando's README).
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")

#: Where the Debian package ``dataset-fashion-mnist`` installs the files.
SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")

#: key -> file name (same names in every source).
FILES = {
    "x_train": "train-images-idx3-ubyte.gz",
    "y_train": "train-labels-idx1-ubyte.gz",
    "x_test": "t10k-images-idx3-ubyte.gz",
    "y_test": "t10k-labels-idx1-ubyte.gz",
}

#: Official download locations: Zalando's README, then the copy Keras downloads from.
URLS = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://storage.googleapis.com/tensorflow/tf-keras-datasets/",
)

#: sha256 of the decompressed idx files: the identity of the data whatever the gzip wrapper.
#: Computed from the Debian package's files (``zcat FILE | sha256sum``).
IDX_SHA256 = {
    "x_train": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "y_train": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "x_test": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "y_test": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}

#: md5 of the official ``.gz`` files as published in Zalando's fashion-mnist README
#: (the same values torchvision's ``FashionMNIST.resources`` pins).
GZ_MD5 = {
    "x_train": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "y_train": "25c81989df183df01b3e8a0aad5dffbe",
    "x_test": "bef4ecab320f06d8554ea6380940ec79",
    "y_test": "bb300cfdad3c16e7a12a480ee83cd310",
}

#: sha256 of the official ``.gz`` files as pinned by TensorFlow Datasets
#: (``tensorflow_datasets/url_checksums/fashion_mnist.txt``; Zalando itself publishes md5 only).
GZ_SHA256 = {
    "x_train": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
    "y_train": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
    "x_test": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
    "y_test": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
}

#: sha256 of the Debian package's ``.gz`` files (``sha256sum /usr/share/datasets/fashion-mnist/*``);
#: they differ from the official ``.gz`` because Debian re-compressed them (see module doc).
DEBIAN_GZ_SHA256 = {
    "x_train": "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
    "y_train": "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
    "x_test": "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
    "y_test": "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
}

#: Sizes in bytes of the official ``.gz`` files (Zalando's download; each Debian file is the
#: same minus the file name Debian dropped from its gzip header).
GZ_SIZES = {"x_train": 26_421_880, "y_train": 29_515, "x_test": 4_422_102, "y_test": 5_148}

_SHAPES = {"x_train": (60000, 28, 28), "y_train": (60000,), "x_test": (10000, 28, 28),
           "y_test": (10000,)}


def parse_idx(raw: bytes, source: str = "<bytes>") -> np.ndarray:
    """Decode one idx file (the MNIST format: magic, big-endian dims, uint8 payload)."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{source}: not an idx file (bad magic number)")
    if raw[2] != 0x08:
        raise ValueError(f"{source}: idx element type 0x{raw[2]:02x} is not uint8 (0x08)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{source}: idx header truncated ({len(raw)} bytes)")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = header + int(np.prod(dims))
    if len(raw) != expected:
        raise ValueError(f"{source}: idx file is {len(raw)} bytes but its header announces "
                         f"{expected} (dims {dims}); the file is truncated or corrupt — delete "
                         "it and load again")
    # a writable copy, like the arrays np.load returns on a warm load
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims).copy()


def _read_gz(path: Path, key: str) -> np.ndarray:
    try:
        raw = gzip.decompress(path.read_bytes())
    except (OSError, EOFError) as exc:  # BadGzipFile is an OSError
        raise ValueError(f"{path}: cannot decompress ({exc}); the file is truncated or corrupt "
                         "— delete it and load again") from exc
    digest = hashlib.sha256(raw).hexdigest()
    if digest != IDX_SHA256[key]:
        raise ValueError(f"{path}: decompressed sha256 {digest} does not match the pinned "
                         f"Fashion-MNIST value {IDX_SHA256[key]}; the file is not the official "
                         "data — delete it and load again")
    return parse_idx(raw, str(path))


def _cache_valid(cache: Path) -> bool:
    return all((cache / f"{k}.npy").is_file() for k in FILES)


def _load_npy(cache: Path) -> dict[str, np.ndarray] | None:
    arrays = {}
    for key, shape in _SHAPES.items():
        try:
            a = np.load(cache / f"{key}.npy", allow_pickle=False)
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable cache file %s (%s); rebuilding it", cache / f"{key}.npy", exc)
            return None
        want = np.uint8 if key.startswith("x") else np.int64
        if a.shape != shape or a.dtype != want:
            log.warning("ignoring cache file %s with shape %s dtype %s; rebuilding it",
                        cache / f"{key}.npy", a.shape, a.dtype)
            return None
        arrays[key] = a
    return arrays


def _save_npy(cache: Path, arrays: dict[str, np.ndarray]) -> None:
    for key, a in arrays.items():  # a handle: np.save(path) would append ".npy"
        atomic_write(cache / f"{key}.npy", lambda fh, a=a: np.save(fh, a, allow_pickle=False))


def _fetch_gz(key: str, raw_dir: Path, download: bool) -> Path:
    """Path to a verified official ``.gz`` for ``key`` in ``raw_dir``, downloading if allowed."""
    from course_utils.download import fetch

    return fetch(FILES[key], [u + FILES[key] for u in URLS], raw_dir, sha256=GZ_SHA256[key],
                 md5=GZ_MD5[key],
                 dataset="fashion_mnist", download=download,
                 alternative="the Debian package dataset-fashion-mnist (apt install "
                             "dataset-fashion-mnist), or load('digits') which is bundled "
                             "with scikit-learn")


def load_fashion_mnist(*, root=None, download: bool = True, system_dir=SYSTEM_DIR) -> ImageData:
    """Fashion-MNIST as uint8 NHW (28x28) images and int64 labels, 60,000 + 10,000.

    ``root``: cache folder (default ``$COURSE_DATA/fashion_mnist``). ``system_dir``: where to
    look for the Debian package's files (``None`` to skip it).
    """
    cache = Path(root) if root is not None else data_home("fashion_mnist")
    arrays = _load_npy(cache) if _cache_valid(cache) else None
    if arrays is None:
        arrays = {}
        for key in FILES:
            a = None
            candidates = [Path(system_dir) / FILES[key]] if system_dir is not None else []
            candidates.append(cache / "raw" / FILES[key])  # any gzip wrapper of the right content
            for src in candidates:
                if src.is_file():
                    try:
                        a = _read_gz(src, key)
                        log.info("read %s", src)
                        break
                    except ValueError as exc:
                        log.warning("%s", exc)
                        if src.parent == cache / "raw":
                            src.unlink()  # never leave a bad file in the cache
            if a is None:
                src = _fetch_gz(key, cache / "raw", download)
                a = _read_gz(src, key)
            if a.shape != _SHAPES[key]:
                raise ValueError(f"{src}: shape {a.shape}, expected {_SHAPES[key]}")
            arrays[key] = a.astype(np.int64) if key.startswith("y") else np.ascontiguousarray(a)
        _save_npy(cache, arrays)
        log.info("cached Fashion-MNIST as .npy in %s", cache)
    return ImageData("fashion_mnist", arrays["x_train"], arrays["y_train"], arrays["x_test"],
                     arrays["y_test"], CLASSES, meta={"cache": str(cache)})


def _gz_status(folder: Path, pinned: dict[str, str], kind: str, origin: str) -> DatasetStatus:
    paths = {k: folder / f for k, f in FILES.items()}
    bad = [p.name for k, p in paths.items() if file_hash(p) != pinned[k]]
    note = origin if not bad else (f"{origin}, but {', '.join(bad)} differ(s) from the pinned "
                                   "sha256: it is ignored by load(); delete or reinstall it")
    return DatasetStatus("fashion_mnist", "embedded", sum(p.stat().st_size for p in paths.values()),
                         kind, True, not bad, str(folder), note)


def fashion_mnist_status(*, root=None, system_dir=SYSTEM_DIR) -> DatasetStatus:
    """The source :func:`load_fashion_mnist` would read first, hashed where a hash is pinned."""
    cache = Path(root) if root is not None else data_home("fashion_mnist")
    if _cache_valid(cache):
        size = sum((cache / f"{k}.npy").stat().st_size for k in FILES)
        return DatasetStatus("fashion_mnist", "embedded", size, "on disk", True, None, str(cache),
                             ".npy arrays built from verified files (not hashed again)")
    if system_dir is not None and all((Path(system_dir) / f).is_file() for f in FILES.values()):
        return _gz_status(Path(system_dir), DEBIAN_GZ_SHA256, "Debian package",
                          "Debian package dataset-fashion-mnist")
    raw = cache / "raw"
    if all((raw / f).is_file() for f in FILES.values()):
        return _gz_status(raw, GZ_SHA256, "on disk", "downloaded official .gz files")
    return DatasetStatus("fashion_mnist", "embedded", sum(GZ_SIZES.values()), "download", False,
                         None, str(raw), "not cached: apt install dataset-fashion-mnist, or "
                         "course data fashion_mnist downloads it")


register("fashion_mnist", load_fashion_mnist, profile="embedded", status=fashion_mnist_status,
         description="Zalando Fashion-MNIST, 28x28 grayscale, 10 classes, 60k train + 10k test")
