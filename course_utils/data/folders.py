"""Image-folder datasets of the ``full`` profile, and ``load_image_folder`` for any
ImageFolder tree (``split/class/image``).

Each dataset downloads from its official URL, verified against the hashes its publisher
pins (where a sha256 exists it is checked too), is extracted safely into
``$COURSE_DATA/<name>/images/`` in the ImageFolder layout (use :func:`dataset_folder` to get
that path for ``torchvision.datasets.ImageFolder`` or ``keras.utils.image_dataset_from_directory``),
and is decoded once into uint8 arrays cached as ``.npy`` per resolution.

Sources and checksums (official values; none is computed here):

* ``hotdog`` — d2l "Fine-Tuning" chapter: ``DATA_HUB['hotdog']`` pins sha1
  ``fba480ff…``; d2l publishes no sha256. 1,000 + 1,000 training, 400 + 400 test images.
* ``hymenoptera`` — PyTorch transfer-learning tutorial: sha256 ``fbc41b31…`` pinned in
  pytorch/tutorials ``.jenkins/download_data.py``. ``val`` is the tutorial's evaluation set.
* ``cats_vs_dogs`` — the fixed subset used by the TensorFlow/Keras transfer-learning tutorial,
  ``cats_and_dogs_filtered.zip`` (1,000 + 1,000 training and 500 + 500 validation images of
  the Kaggle Dogs vs. Cats data). Google publishes **no checksum** for it: the sha256 of the
  first download is recorded and enforced afterwards (trust on first use), and the exact
  per-class image counts above are checked after extraction.
* ``flowers102`` — Oxford VGG: md5s as pinned by torchvision's ``Flowers102`` and sha256s as
  pinned by TensorFlow Datasets (``url_checksums/oxford_flowers102.txt``). The official
  ``train`` (1,020) and ``val`` (1,020) splits form ``x_train`` (``meta["val_indices"]`` marks
  the official val part); ``test`` (6,149) is ``x_test``.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from course_utils.atomic import atomic_dir
from course_utils.data.core import DatasetStatus, ImageData, register
from course_utils.download import ChecksumError, data_home, extract, fetch, verify

__all__ = ["load_image_folder", "dataset_folder", "folder_status", "CorruptImageError", "FolderSpec",
           "RemoteFile", "FOLDER_DATASETS", "IMAGE_EXTENSIONS", "DEFAULT_SIZE", "FIXTURE_ENV"]

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
#: Stored resolution: shorter side resized to 256 and centre-cropped, so the anchors'
#: eval transform (Resize 256 + CenterCrop 224) and RandomResizedCrop(224) have their pixels.
DEFAULT_SIZE = 256

#: Test hook, and the only way to switch off a dataset's exact image counts: with
#: ``COURSE_FIXTURE_DATASETS=1`` in the environment, :func:`dataset_folder`'s trees may hold a
#: few images per class (the tiny fixture trees with which the test suite runs the ``full``
#: profile offline, in each dataset's real extracted layout). A warning says so on every
#: load. Never set it for real data: a truncated copy would then load without complaint.
FIXTURE_ENV = "COURSE_FIXTURE_DATASETS"

_EMBEDDED = "the embedded datasets instead: load('fashion_mnist') or load('digits')"


class CorruptImageError(ValueError):
    """An image file could not be decoded; the message names it."""


@dataclass(frozen=True)
class RemoteFile:
    fname: str
    urls: tuple[str, ...]
    sha256: str | None = None
    sha1: str | None = None
    md5: str | None = None
    trust_on_first_use: bool = False
    #: Size in bytes as published or recorded by others (shown by ``course data --list``;
    #: never checked, the hashes are); None where nobody gives one.
    size: int | None = None


@dataclass(frozen=True)
class FolderSpec:
    """A downloadable ImageFolder dataset. ``splits`` maps ``train``/``test`` to folders
    (relative to the extracted tree) whose images are concatenated; ``classes`` are the
    class folder names in label order; ``expected`` optional exact counts per split and
    class, checked before decoding."""

    name: str
    description: str
    files: tuple[RemoteFile, ...]
    splits: Mapping[str, tuple[str, ...]]
    classes: tuple[str, ...]
    class_names: tuple[str, ...] | None = None
    expected: Mapping[str, Mapping[str, int]] | None = None
    prepare: Callable[[list[Path], Path], None] | None = field(default=None, compare=False)


# --------------------------------------------------------------------------- decoding

def _decode(path: Path, size: int | None) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as img:
        if size is not None and img.format == "JPEG":
            img.draft("RGB", (size, size))  # let libjpeg downscale while decoding
        img = img.convert("RGB")
        if size is not None:
            w, h = img.size
            scale = size / min(w, h)
            nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
            img = img.resize((nw, nh), Image.BILINEAR, reducing_gap=3.0)
            left, top = (nw - size) // 2, (nh - size) // 2
            img = img.crop((left, top, left + size, top + size))
        return np.asarray(img, dtype=np.uint8)


def _try_decode(path: Path, size: int | None):
    try:
        return _decode(path, size), None
    except Exception as exc:  # PIL raises many types for bad files (OSError, SyntaxError ...)
        return None, f"{path} ({type(exc).__name__}: {exc})"


def _list_split(root: Path, folders: Sequence[str], classes: Sequence[str]) -> tuple[list[Path], list[int], dict]:
    files, labels, counts = [], [], {}
    for folder in folders:
        for label, cls in enumerate(classes):
            d = root / folder / cls
            if not d.is_dir():
                raise FileNotFoundError(
                    f"missing class folder {d}: every split needs one folder per class "
                    f"{list(classes)}. If this is a downloaded dataset the extracted copy is "
                    f"incomplete — delete {root} and load again")
            found = sorted(p for p in d.iterdir()
                           if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                raise FileNotFoundError(f"class folder {d} holds no image files "
                                        f"({', '.join(IMAGE_EXTENSIONS)})")
            files += found
            labels += [label] * len(found)
            counts[cls] = counts.get(cls, 0) + len(found)
    return files, labels, counts


def _decode_all(files: list[Path], size: int | None, desc: str, progress: bool = True):
    from course_utils.progress import tqdm

    workers = min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:  # PIL releases the GIL while decoding
        return list(tqdm(pool.map(partial(_try_decode, size=size), files), total=len(files),
                         desc=desc, unit="img", leave=False, disable=not progress))


def load_image_folder(path, *, classes: Sequence[str] | None = None,
                      splits: Mapping[str, str | Sequence[str]] | None = None,
                      size: int | None = DEFAULT_SIZE, skip_corrupt: bool = False,
                      name: str | None = None, class_names: Sequence[str] | None = None,
                      expected: Mapping[str, Mapping[str, int]] | None = None,
                      cache_dir=None, progress: bool = True) -> ImageData:
    """Read an ImageFolder tree ``path/<split>/<class>/<image>`` into an :class:`ImageData`.

    ``splits`` maps ``"train"`` and ``"test"`` to folder names (default ``train``/``test``;
    a list concatenates folders). ``classes`` are the class folder names in label order
    (default: the sorted sub-folders of the train split, like torchvision's ImageFolder);
    a class folder missing from any split is an error. Images become RGB uint8 NHWC, the
    shorter side resized to ``size`` and centre-cropped square (``size=None`` keeps the
    original size, which must then be the same for all images). A file that cannot be
    decoded raises :class:`CorruptImageError` naming it; ``skip_corrupt=True`` skips such
    files, logs how many, and lists them in ``meta["skipped"]``. With ``cache_dir`` the
    arrays are cached there as ``.npy`` (written atomically; only on success).
    """
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist")
    splits = dict(splits or {"train": "train", "test": "test"})
    if set(splits) != {"train", "test"}:
        raise ValueError(f"splits={splits!r}: give folders for exactly 'train' and 'test'")
    splits = {k: (v,) if isinstance(v, str) else tuple(v) for k, v in splits.items()}
    if classes is None:
        first = root / splits["train"][0]
        if not first.is_dir():
            raise FileNotFoundError(f"missing split folder {first}")
        classes = sorted(p.name for p in first.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not classes:
            raise FileNotFoundError(f"{first} has no class sub-folders")
    classes = tuple(classes)
    cache = Path(cache_dir) / f"arrays-{size or 'orig'}" if cache_dir is not None else None
    if cache is not None and (cache / "meta.json").is_file():
        meta = json.loads((cache / "meta.json").read_text())
        if meta.get("classes") == list(classes):
            arrays = {k: np.load(cache / f"{k}.npy") for k in ("x_train", "y_train", "x_test", "y_test")}
            if meta.get("skipped") and not skip_corrupt:
                raise CorruptImageError(
                    f"{len(meta['skipped'])} image file(s) in {root} cannot be decoded, first: "
                    f"{meta['skipped'][0]}. Delete or replace them (and {cache}), or pass "
                    "skip_corrupt=True to skip them")
            if meta.get("skipped"):
                log.warning("%s: %d corrupt image(s) were skipped when this cache was built",
                            name or root, len(meta["skipped"]))
            return ImageData(name or root.name, classes=tuple(class_names or classes),
                             meta={**meta, "cache": str(cache)}, **arrays)

    arrays, skipped, extra = {}, [], {}
    for split, folders in splits.items():
        files, labels, counts = _list_split(root, folders, classes)
        want = (expected or {}).get(split)
        if want is not None and dict(want) != counts:
            raise ValueError(f"{root}: the {split} split ({', '.join(folders)}) has {counts} images "
                             f"per class, expected {dict(want)}; the copy is incomplete or not the "
                             f"official one — delete {root} and load again")
        if split == "train" and len(folders) > 1:
            n_first = sum(1 for f in files if f.is_relative_to(root / folders[0]))
            extra["val_indices"] = list(range(n_first, len(files)))
        results = _decode_all(files, size, f"{name or root.name} {split}", progress)
        bad = [err for _, err in results if err is not None]
        if bad and not skip_corrupt:
            raise CorruptImageError(
                f"{len(bad)} image file(s) in {root} cannot be decoded, first: {bad[0]}. "
                "Delete or replace them, or pass skip_corrupt=True to skip them")
        keep = [i for i, (_, err) in enumerate(results) if err is None]
        skipped += bad
        imgs = [results[i][0] for i in keep]
        shapes = {im.shape for im in imgs}
        if len(shapes) > 1:
            raise ValueError(f"{root}: images of different sizes {sorted(shapes)[:3]}...; pass size=")
        arrays[f"x_{split}"] = np.stack(imgs) if imgs else np.zeros((0, size or 1, size or 1, 3), np.uint8)
        arrays[f"y_{split}"] = np.asarray([labels[i] for i in keep], dtype=np.int64)
        if "val_indices" in extra and split == "train" and bad:
            kept = set(keep)
            remap = {old: new for new, old in enumerate(keep)}
            extra["val_indices"] = [remap[i] for i in extra["val_indices"] if i in kept]
    if skipped:
        log.warning("%s: skipped %d corrupt image file(s) (skip_corrupt=True), e.g. %s",
                    name or root, len(skipped), skipped[0])
    meta = {"source": str(root), "classes": list(classes), "size": size, "skipped": skipped, **extra}
    if cache is not None:
        with atomic_dir(cache) as tmp:
            for k, a in arrays.items():
                np.save(tmp / f"{k}.npy", a, allow_pickle=False)
            (tmp / "meta.json").write_text(json.dumps(meta))
    return ImageData(name or root.name, classes=tuple(class_names or classes), meta=meta, **arrays)


# --------------------------------------------------------------------------- datasets

def _prepare_flowers(downloads: list[Path], tree: Path) -> None:
    """102flowers.tgz + imagelabels.mat + setid.mat -> flowers102/{train,val,test}/NNN/*.jpg"""
    from scipy.io import loadmat

    tgz, labels_mat, setid_mat = downloads
    labels = np.asarray(loadmat(labels_mat, squeeze_me=True)["labels"], dtype=np.int64)
    setid = loadmat(setid_mat, squeeze_me=True)
    work = tree.parent / f".{tree.name}.raw-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    try:
        extract(tgz, work)
        with atomic_dir(tree) as staged:  # the tree appears whole, or not at all
            out = staged / "flowers102"
            for split, key in (("train", "trnid"), ("val", "valid"), ("test", "tstid")):
                for image_id in np.asarray(setid[key]).ravel():
                    cls = f"{int(labels[image_id - 1]):03d}"
                    src = work / "jpg" / f"image_{int(image_id):05d}.jpg"
                    if not src.is_file():
                        raise FileNotFoundError(f"{tgz} lacks {src.name} listed in "
                                                f"{setid_mat.name}; delete the downloads and "
                                                "load again")
                    (out / split / cls).mkdir(parents=True, exist_ok=True)
                    os.replace(src, out / split / cls / src.name)  # a move, not a write
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _flowers_names() -> tuple[str, ...] | None:
    try:
        from torchvision.datasets import Flowers102

        return tuple(Flowers102.classes)
    except (ImportError, AttributeError):
        return None


_FLOWERS = "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/"

FOLDER_DATASETS: dict[str, FolderSpec] = {
    "hotdog": FolderSpec(
        "hotdog", "d2l hot dog vs not hot dog (Fine-Tuning chapter), 2 classes, 2,000 + 800",
        (RemoteFile("hotdog.zip", ("http://d2l-data.s3-accelerate.amazonaws.com/hotdog.zip",),
                    sha1="fba480ffa8aa7e0febbb511d181409f899b9baa5"),),  # d2l gives no size
        {"train": ("hotdog/train",), "test": ("hotdog/test",)}, ("hotdog", "not-hotdog"),
        expected={"train": {"hotdog": 1000, "not-hotdog": 1000},
                  "test": {"hotdog": 400, "not-hotdog": 400}}),
    "hymenoptera": FolderSpec(
        "hymenoptera", "PyTorch transfer-learning tutorial ants vs bees, ~240 + 153 images",
        (RemoteFile("hymenoptera_data.zip",
                    ("https://download.pytorch.org/tutorial/hymenoptera_data.zip",),
                    sha256="fbc41b31d544714d18dd1230b1e2b455e1557766e13e67f9f5a7a23af7c02209",
                    size=47_286_322),),
        {"train": ("hymenoptera_data/train",), "test": ("hymenoptera_data/val",)}, ("ants", "bees")),
    "cats_vs_dogs": FolderSpec(
        "cats_vs_dogs", "TF/Keras transfer-learning tutorial subset cats_and_dogs_filtered, 2,000 + 1,000",
        (RemoteFile("cats_and_dogs_filtered.zip",
                    ("https://storage.googleapis.com/mledu-datasets/cats_and_dogs_filtered.zip",),
                    trust_on_first_use=True,  # no checksum is published anywhere official
                    size=68_606_236),),  # the byte count Keras's get_file reports for it
        {"train": ("cats_and_dogs_filtered/train",), "test": ("cats_and_dogs_filtered/validation",)},
        ("cats", "dogs"),
        expected={"train": {"cats": 1000, "dogs": 1000}, "test": {"cats": 500, "dogs": 500}}),
    "flowers102": FolderSpec(
        "flowers102", "Oxford 102 Flowers, train+val 2,040 / test 6,149",
        (RemoteFile("102flowers.tgz", (_FLOWERS + "102flowers.tgz",), md5="52808999861908f626f3c1f4e79d11fa",
                    sha256="2d01ecc807db462958cfe3d92f57a8c252b4abd240eb955770201e45f783b246",
                    size=344_862_509),
         RemoteFile("imagelabels.mat", (_FLOWERS + "imagelabels.mat",), md5="e0620be6f572b9609742df49c70aed4d",
                    sha256="4903e94206bac23bf772aadf06451916df56b58fc483a62db32a97b82656651d"),
         RemoteFile("setid.mat", (_FLOWERS + "setid.mat",), md5="a5357ecc9cb78c4bef273ce3793fc85c",
                    sha256="46b8678f91fd95d3c8f4feab80d271a6c834a1dd896fe29fd3e6ad9ce5c8dccd")),
        {"train": ("flowers102/train", "flowers102/val"), "test": ("flowers102/test",)},
        tuple(f"{i:03d}" for i in range(1, 103)), prepare=_prepare_flowers),
}


def dataset_folder(name: str, *, root=None, download: bool = True, progress: bool = True) -> Path:
    """The extracted ImageFolder tree of a ``full``-profile dataset (downloading, verifying and
    extracting it first if needed). ``root`` defaults to ``$COURSE_DATA/<name>``."""
    spec = FOLDER_DATASETS.get(name)
    if spec is None:
        raise ValueError(f"name={name!r} is not an image-folder dataset; use one of {sorted(FOLDER_DATASETS)}")
    base = Path(root) if root is not None else data_home(name)
    tree = base / "images"
    if tree.is_dir():
        return tree
    paths = [fetch(f.fname, f.urls, base / "downloads", sha256=f.sha256, sha1=f.sha1, md5=f.md5,
                   dataset=name, download=download, alternative=_EMBEDDED, progress=progress,
                   trust_on_first_use=f.trust_on_first_use) for f in spec.files]
    if spec.prepare is not None:
        spec.prepare(paths, tree)
    else:
        extract(paths[0], tree)
    try:  # check the layout right away, so a wrong archive is not left as a usable tree
        for folders in spec.splits.values():
            _list_split(tree, folders, spec.classes)
    except FileNotFoundError:
        shutil.rmtree(tree, ignore_errors=True)
        raise
    return tree


def _load_spec(spec: FolderSpec, *, root=None, download: bool = True, size: int | None = DEFAULT_SIZE,
               skip_corrupt: bool = False, progress: bool = True) -> ImageData:
    base = Path(root) if root is not None else data_home(spec.name)
    tree = dataset_folder(spec.name, root=base, download=download, progress=progress)
    names = spec.class_names or (_flowers_names() if spec.name == "flowers102" else None)
    expected = spec.expected
    if expected is not None and os.environ.get(FIXTURE_ENV) == "1":
        log.warning("%s: image counts not checked (%s=1, a test hook for fixture trees; unset "
                    "it for real data)", spec.name, FIXTURE_ENV)
        expected = None
    return load_image_folder(tree, classes=spec.classes, splits=spec.splits, size=size,
                             skip_corrupt=skip_corrupt, name=spec.name, class_names=names,
                             expected=expected, cache_dir=base, progress=progress)


def folder_status(name: str, *, root=None) -> DatasetStatus:
    """Downloads of ``name`` present in its cache, hashed now against every pinned value (a
    trust-on-first-use archive against the hash recorded at its first download)."""
    spec = FOLDER_DATASETS[name]
    base = Path(root) if root is not None else data_home(name)
    present, bad, unrecorded = [], [], []
    for f in spec.files:
        path = base / "downloads" / f.fname
        if not path.is_file():
            continue
        present.append(path)
        hashes = {k: v for k, v in (("sha256", f.sha256), ("sha1", f.sha1), ("md5", f.md5)) if v}
        record = path.with_name(path.name + ".sha256")
        if not hashes and record.is_file():
            hashes = {"sha256": record.read_text().split()[0]}
        if not hashes:
            unrecorded.append(path.name)
            continue
        try:
            verify(path, **hashes)
        except ChecksumError:
            bad.append(path.name)
    if present:
        size = sum(p.stat().st_size for p in present)
        missing = [f.fname for f in spec.files if not (base / "downloads" / f.fname).is_file()]
        if bad:
            note = (f"{', '.join(bad)} fail(s) the pinned hash: load() deletes and downloads it "
                    f"again (course data {name})")
        elif missing:
            note = f"{', '.join(missing)} not downloaded yet (course data {name})"
        elif unrecorded:
            note = f"{', '.join(unrecorded)}: no published hash and no recorded first download"
        else:
            note = "downloads verified" + (", extracted" if (base / "images").is_dir() else "")
        verified = False if bad else (None if unrecorded else True)
        return DatasetStatus(name, "full", size, "on disk", not bad and not missing, verified,
                             str(base), note)
    if (base / "images").is_dir():
        return DatasetStatus(name, "full", None, "on disk", True, None, str(base / "images"),
                             "extracted tree only (its downloads were deleted, so it cannot "
                             "be re-verified)")
    known = [f.size for f in spec.files if f.size is not None]
    size = sum(known) if known else None
    kind = "download" if len(known) in (0, len(spec.files)) else "download, at least"
    urls = ", ".join(f.urls[0] for f in spec.files)
    return DatasetStatus(name, "full", size, kind, False, None, str(base / "downloads"),
                         f"not cached: course data {name} downloads {urls}")


def _register(spec: FolderSpec) -> None:
    FOLDER_DATASETS[spec.name] = spec
    register(spec.name, partial(_load_spec, spec), profile="full", description=spec.description,
             status=partial(folder_status, spec.name))


for _spec in list(FOLDER_DATASETS.values()):
    _register(_spec)
