"""Datasets: a source (CSV, ZIP or folder) -> a DatasetReport -> uint8 image arrays.

A source lists images; every image is either decoded into one preallocated
``(N, H, W, C)`` uint8 array or recorded as ``Unreadable`` with a reason, so a
user sees what was found, what could not be used and why. Loading never raises
for one bad image, only for a source that cannot be used at all.

Paths are never trusted: each one is resolved (symlinks followed) and must stay
inside an allowed folder before it is opened; ZIP members are read from the
archive without extracting anything to disk.

This module imports OpenCV and Pillow but not TensorFlow, so the data page and
the CLI's ``report`` start fast.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import hashlib
import io
import json
import os
import posixpath
import re
import stat
import struct
import tempfile
import threading
import time
import warnings
import zipfile
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from dogvae.config import DataConfig

REASON_MISSING = "missing"
REASON_NOT_IMAGE = "not an image"
REASON_EMPTY = "empty"
REASON_TOO_LARGE = "too large"
REASON_OUTSIDE = "outside the allowed folder"
REASONS = (REASON_MISSING, REASON_NOT_IMAGE, REASON_EMPTY, REASON_TOO_LARGE, REASON_OUTSIDE)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
MAX_FILE_BYTES = 64 * 1024 * 1024
MAX_IMAGE_PIXELS = 1 << 26

# Zip-bomb guards: a whole archive beyond these is refused; a single member that
# inflates more than MAX_COMPRESSION_RATIO times (and to more than
# COMPRESSION_CHECK_BYTES, so tiny flat images still pass) is skipped unread.
MAX_ZIP_MEMBERS = 200_000
MAX_ZIP_BYTES = 4 * 1024**3
MAX_COMPRESSION_RATIO = 200
COMPRESSION_CHECK_BYTES = 1024 * 1024

VALIDATION_NAMES = ("valid", "validation", "val", "test")

# Decoded images beyond this are refused with a message instead of swapping.
# 4 GiB holds a million 64x64 grayscale images; DOGVAE_MAX_DATASET_MB overrides.
MAX_DATASET_BYTES = 4 * 1024**3

# OpenCV refuses to allocate images above this many pixels, but it reads the
# limit from the environment (default 2**30, a 3 GB grayscale buffer), so it has
# to be set before cv2 is first imported. If cv2 was imported earlier with
# another limit, decode_image still refuses larger images after decoding.
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(MAX_IMAGE_PIXELS))
import cv2  # noqa: E402

# Pillow is only asked for an image's header after OpenCV failed; the lock
# keeps the temporary warnings filter (process-wide in Python 3.11) to one
# thread at a time.
_PIL_HEADER_LOCK = threading.Lock()


@dataclass(frozen=True)
class Unreadable:
    """An image that was listed but could not be used.

    Attributes:
        path: The path as written in the CSV, the ZIP member name, or the path
            relative to the folder.
        reason: One of the ``REASON_*`` constants.
        detail: Short extra information, e.g. ``"9,000x9,000 pixels"``.
    """

    path: str
    reason: str
    detail: str = ""


@dataclass(frozen=True)
class DatasetReport:
    """What a source held and what became of each image.

    Attributes:
        source: The source as given (path as a string).
        kind: ``"csv"``, ``"zip"`` or ``"folder"``.
        rows: Rows considered, after ``limit``: CSV rows or image entries.
        found: Files that exist and lie inside the allowed folder.
        readable: Images decoded fine.
        unreadable: One entry per image that could not be used, in source order.
        train: Readable images in the training split.
        validation: Readable images in the validation split.
        split: How the split was made, in words.
        image_size: Side of the square images.
        channels: 1 for grayscale, 3 for RGB.
    """

    source: str
    kind: str
    rows: int
    found: int
    readable: int
    unreadable: tuple[Unreadable, ...]
    train: int
    validation: int
    split: str
    image_size: int
    channels: int

    def to_dict(self) -> dict[str, Any]:
        """The report as a JSON-ready dict; ``unreadable`` is a list of dicts."""
        values = dataclasses.asdict(self)
        values["unreadable"] = [dataclasses.asdict(item) for item in self.unreadable]
        return values

    def reasons(self) -> dict[str, int]:
        """How many images were unreadable for each reason (only reasons that occurred)."""
        counts = {reason: 0 for reason in REASONS}
        for item in self.unreadable:
            counts[item.reason] = counts.get(item.reason, 0) + 1
        return {reason: count for reason, count in counts.items() if count}

    def summary(self) -> str:
        """One line, e.g. ``"1,998 of 2,000 images readable (2 missing)"``."""
        line = f"{self.readable:,} of {self.rows:,} images readable"
        reasons = self.reasons()
        if reasons:
            line += " (" + ", ".join(f"{count:,} {reason}" for reason, count in reasons.items())
            line += ")"
        return line


@dataclass
class Dataset:
    """Readable images, their table rows and the report.

    Attributes:
        images: ``(N, H, W, C)`` uint8, the readable images in source order
            (read-only and memory-mapped when they came through the cache).
        table: N rows, one per readable image: the original CSV columns (or
            ``filepaths`` and ``labels`` for a folder or ZIP) and ``split``
            (``"train"`` or ``"validation"``).
        report: What was found and why some images were not used.
    """

    images: np.ndarray
    table: pd.DataFrame
    report: DatasetReport

    @property
    def train_indices(self) -> np.ndarray:
        """Rows of ``images`` in the training split, in order (int64).

        Selecting by index lets a large, memory-mapped dataset be trained on
        batch by batch instead of copying a whole split.
        """
        return np.flatnonzero((self.table["split"] == "train").to_numpy())

    @property
    def validation_indices(self) -> np.ndarray:
        """Rows of ``images`` in the validation split, in order (int64)."""
        return np.flatnonzero((self.table["split"] == "validation").to_numpy())

    @property
    def train_images(self) -> np.ndarray:
        """The images of the training split (a copy; see ``train_indices``)."""
        return self.images[self.train_indices]

    @property
    def validation_images(self) -> np.ndarray:
        """The images of the validation split (a copy; see ``validation_indices``)."""
        return self.images[self.validation_indices]

    def split_images(self, split: str) -> np.ndarray:
        """The images of ``split``: "all", "train" or "validation"; ValueError when it is empty."""
        if split not in ("all", "train", "validation"):
            raise ValueError(f"split must be all, train or validation, got {split!r}")
        images = {
            "all": lambda: self.images,
            "train": lambda: self.train_images,
            "validation": lambda: self.validation_images,
        }[split]()
        if len(images) == 0:
            raise ValueError(f"the {split} split of {self.report.source} has no readable image")
        return images

    def require_images(self) -> Dataset:
        """Return self, or raise ValueError when not a single image was readable."""
        if self.report.readable == 0:
            raise ValueError(f"no readable image in {self.report.source}: {self.report.summary()}")
        return self


class _ImageError(ValueError):
    """A per-image problem; the message starts with its reason."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def decode_image(
    data: bytes, image_size: int = 64, channels: int = 1, *, reduced: bool = True
) -> np.ndarray:
    """Decode an encoded image into a square uint8 array.

    EXIF orientation is applied, alpha dropped, 16-bit samples scaled to 8 bits
    (rounded), and the image squashed (not cropped) to ``image_size`` squared
    with area interpolation.

    A JPEG at least four times the output size is decoded at 1/2, 1/4 or 1/8
    scale (libjpeg's DCT scaling, several times faster), but never below twice
    the output size, so the final area interpolation still averages at least
    2x2 pixels into one.

    Args:
        data: The encoded file (JPEG, PNG, BMP, WebP or TIFF).
        image_size: Side of the output square.
        channels: 1 for grayscale (OpenCV's luma), 3 for RGB (in that order).
        reduced: Allow reduced-scale JPEG decoding (False: always decode in full).

    Returns:
        An ``(image_size, image_size, channels)`` uint8 array.

    Raises:
        ValueError: If the image cannot be used; the message starts with one of
            the ``REASON_*`` strings (``"too large: 9,000x9,000 pixels"``).
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels!r}")
    if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size < 1:
        raise ValueError(f"image_size must be a positive integer, got {image_size!r}")
    return _decode(data, image_size, channels, reduced)


# cv2.IMREAD_REDUCED_GRAYSCALE_n carries no colour bit, so it combines with
# IMREAD_COLOR_RGB (IMREAD_REDUCED_COLOR_n includes IMREAD_COLOR, which is BGR).
_REDUCED_FLAGS = {
    2: cv2.IMREAD_REDUCED_GRAYSCALE_2,
    4: cv2.IMREAD_REDUCED_GRAYSCALE_4,
    8: cv2.IMREAD_REDUCED_GRAYSCALE_8,
}
_JPEG_FRAME_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG's frame header, or None when ``data`` is no JPEG.

    Reads only the marker segments before the first frame header, without
    decoding; the size is as stored, before any EXIF rotation.
    """
    if not data.startswith(b"\xff\xd8"):
        return None
    position, end = 2, len(data)
    while position + 4 <= end:
        if data[position] != 0xFF:
            return None
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
        elif marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            position += 2
        elif marker in (0xD9, 0xDA):  # end of image or scan data before any frame header
            return None
        elif marker in _JPEG_FRAME_MARKERS:
            if position + 9 > end:
                return None
            height = int.from_bytes(data[position + 5 : position + 7], "big")
            width = int.from_bytes(data[position + 7 : position + 9], "big")
            return width, height
        else:
            position += 2 + int.from_bytes(data[position + 2 : position + 4], "big")
    return None


def jpeg_reduction(size: tuple[int, int], image_size: int) -> int:
    """The JPEG scale-down (1, 2, 4 or 8) that keeps both sides at least twice ``image_size``."""
    shorter = min(size)
    for factor in (8, 4, 2):
        if -(-shorter // factor) >= 2 * image_size:  # libjpeg rounds scaled sizes up
            return factor
    return 1


def _decode(data: bytes, image_size: int, channels: int, reduced: bool = True) -> np.ndarray:
    if len(data) == 0:
        raise _ImageError(REASON_EMPTY)
    if len(data) > MAX_FILE_BYTES:
        raise _ImageError(REASON_TOO_LARGE, f"{len(data):,} bytes")

    colour = cv2.IMREAD_GRAYSCALE if channels == 1 else cv2.IMREAD_COLOR_RGB
    # ANYDEPTH keeps 16-bit samples so that they are rounded below instead of
    # truncated by OpenCV; any flag but IMREAD_UNCHANGED applies EXIF orientation.
    flags = cv2.IMREAD_ANYDEPTH | colour
    size = jpeg_size(data)
    if size is not None:
        width, height = size
        # Checked here because a reduced decode would hide the full size below.
        if width * height > MAX_IMAGE_PIXELS:
            raise _ImageError(REASON_TOO_LARGE, f"{width:,}x{height:,} pixels")
        factor = jpeg_reduction(size, image_size) if reduced else 1
        if factor > 1:
            flags = _REDUCED_FLAGS[factor] | (0 if channels == 1 else cv2.IMREAD_COLOR_RGB)
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    except cv2.error:
        # OpenCV raises (instead of returning None) when the header announces
        # more than OPENCV_IO_MAX_IMAGE_PIXELS.
        image = None
    if image is None:
        raise _diagnose(data)
    height, width = image.shape[:2]
    if height * width > MAX_IMAGE_PIXELS:
        raise _ImageError(REASON_TOO_LARGE, f"{width:,}x{height:,} pixels")

    image = cv2.resize(image, (image_size, image_size), interpolation=cv2.INTER_AREA)
    if image.dtype == np.uint16:
        image = ((image.astype(np.uint32) + 128) // 257).astype(np.uint8)
    elif image.dtype in (np.float32, np.float64):
        # OpenCV's convention for floating-point images is 0..1.
        image = np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise _ImageError(REASON_NOT_IMAGE, f"unsupported pixel type {image.dtype}")
    return image.reshape(image_size, image_size, channels)


def load_dataset(
    source: str | os.PathLike,
    config: DataConfig | None = None,
    *,
    base_dir: str | os.PathLike | None = None,
    allowed_root: str | os.PathLike | None = None,
    progress: Callable[[int, int], None] | None = None,
    workers: int | None = None,
    max_bytes: int | None = None,
    cache: bool = True,
    cache_dir: str | os.PathLike | None = None,
) -> Dataset:
    """Load every readable image of a CSV, ZIP or folder.

    With ``cache`` (the default) the decoded images are kept in a ``.npy`` file
    under ``cache_dir`` and the next load of the same files with the same
    settings maps that file instead of decoding again. The cache is keyed by
    every listed file's resolved path, size and modification time (for a ZIP,
    the archive's), the image settings and the decoder version; an entry that
    does not match, or is damaged, is ignored and rewritten. A cache that
    cannot be written never fails the load.

    Args:
        source: A ``.csv`` with a ``filepaths`` column, a ``.zip`` of images
            (optionally with one CSV inside), or a folder searched recursively.
        config: Image size, channels, ``limit`` and the random split settings.
        base_dir: Folder that relative CSV paths start from (default: the CSV's
            folder). Ignored for folders and ZIPs.
        allowed_root: No image outside this folder is opened (default: base_dir
            for a CSV, the folder itself for a folder). Symlinks and ``..`` are
            resolved before the check.
        progress: Called as ``progress(done, total)`` from the calling thread,
            at most about 100 times.
        workers: Decoding threads (default: the number of CPUs).
        max_bytes: Refuse a dataset whose decoded images would need more memory
            than this (default: ``max_dataset_bytes()``).
        cache: Read and write the decoded-image cache.
        cache_dir: Where the cache lives (default: ``default_cache_dir()``).

    Returns:
        The readable images, their table rows and the report. Images that came
        through the cache are a read-only memory-mapped array.

    Raises:
        FileNotFoundError: If ``source`` does not exist.
        ValueError: If the source cannot be used as a whole (wrong type, CSV
            without ``filepaths``, not UTF-8, not a valid ZIP, zip bomb) or a
            setting is invalid. Unreadable images never raise.
    """
    config = (config or DataConfig()).validate()
    if workers is None:
        workers = os.cpu_count() or 1
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"no such file or folder: {source}")

    with contextlib.ExitStack() as stack:
        if path.is_dir():
            kind = "folder"
            table = _folder_table(path)[: config.limit]
            root = os.path.realpath(allowed_root if allowed_root is not None else path)
            folder = os.fspath(path)
            files = [os.path.join(folder, name) for name in table["filepaths"].tolist()]
            fetch, fetch_in_worker = _file_fetcher(files, root), True
            where = (root,)
        elif path.suffix.lower() == ".csv":
            kind = "csv"
            table = _read_csv(path.read_bytes(), os.fspath(source))[: config.limit]
            base = base_dir if base_dir is not None else path.parent
            root = os.path.realpath(allowed_root if allowed_root is not None else base)
            base = os.fspath(base)
            files = [
                os.path.join(base, name) if name else "" for name in table["filepaths"].tolist()
            ]
            fetch, fetch_in_worker = _file_fetcher(files, root), True
            where = (root, os.path.realpath(base))
        elif path.suffix.lower() == ".zip":
            kind = "zip"
            archive = stack.enter_context(_open_zip(path))
            table, members = _zip_rows(archive, os.fspath(source))
            table = table[: config.limit]
            # ZipFile reads through one shared file handle, so members are read
            # in this thread and only decoded in the pool.
            fetch, fetch_in_worker = _zip_fetcher(archive, members[: len(table)]), False
            files, where = None, ()
        else:
            raise ValueError(
                f"cannot load {source}: expected a .csv file, a .zip file or a folder of images"
            )
        _check_memory(len(table), config, max_bytes)
        paths = table["filepaths"].tolist()
        entry = None
        if cache:
            folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
            entry = _cache_entry(folder, kind, path, where, files, paths, config)
        found = entry.read(paths) if entry is not None else None
        if found is not None:
            images, problems = found
            if progress is not None and paths:
                progress(len(paths), len(paths))
        else:
            images, problems = _decode_rows(
                paths, fetch, fetch_in_worker, config, workers, progress, entry
            )

    readable = np.array([index not in problems for index in range(len(table))], dtype=bool)
    table = table[readable].reset_index(drop=True)
    split, split_text = _split(table, config)
    table["split"] = split
    unreadable = tuple(problems[index] for index in sorted(problems))
    not_found = sum(item.reason in (REASON_MISSING, REASON_OUTSIDE) for item in unreadable)
    train = int(np.count_nonzero(split == "train"))
    report = DatasetReport(
        source=os.fspath(source),
        kind=kind,
        rows=len(readable),
        found=len(readable) - not_found,
        readable=len(table),
        unreadable=unreadable,
        train=train,
        validation=len(table) - train,
        split=split_text,
        image_size=config.image_size,
        channels=config.channels,
    )
    return Dataset(images=images, table=table, report=report)


def max_dataset_bytes() -> int:
    """The memory ceiling for decoded images: DOGVAE_MAX_DATASET_MB, else MAX_DATASET_BYTES."""
    value = os.environ.get("DOGVAE_MAX_DATASET_MB")
    try:
        return int(float(value) * 1024 * 1024) if value else MAX_DATASET_BYTES
    except ValueError:
        return MAX_DATASET_BYTES


def _check_memory(rows: int, config: DataConfig, max_bytes: int | None) -> None:
    """Refuse before allocating: a dataset beyond the ceiling would make the machine swap."""
    limit = max_dataset_bytes() if max_bytes is None else max_bytes
    needed = rows * config.image_size * config.image_size * config.channels
    if needed > limit:
        per_image = config.image_size * config.image_size * config.channels
        raise ValueError(
            f"{rows:,} images at {config.image_size}x{config.image_size}x{config.channels} "
            f"need {needed / 2**20:,.0f} MB of memory, more than this server allows "
            f"({limit / 2**20:,.0f} MB); use at most {limit // per_image:,} images "
            "(--limit) or a smaller image size"
        )


def list_sources(folder: str | os.PathLike) -> list[Path]:
    """Datasets directly inside ``folder``: CSV files, ZIP files and image folders.

    A subfolder counts if it holds at least one image file at any depth. Hidden
    entries and ``__MACOSX`` are skipped; a folder that does not exist has none.

    Args:
        folder: Where to look, e.g. the server's data folder.

    Returns:
        The sources, sorted by name.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    sources = []
    for entry in sorted(folder.iterdir(), key=lambda entry: entry.name):
        if entry.name.startswith(".") or entry.name == "__MACOSX":
            continue
        is_table_or_zip = entry.is_file() and entry.suffix.lower() in (".csv", ".zip")
        if is_table_or_zip or (entry.is_dir() and _holds_image(entry)):
            sources.append(entry)
    return sources


def _is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _holds_image(folder: Path) -> bool:
    for _, dirs, files in os.walk(folder):
        dirs[:] = [name for name in dirs if name != "__MACOSX"]
        if any(_is_image_name(name) for name in files):
            return True
    return False


def _labels(paths: Sequence[str]) -> list[str]:
    """The immediate parent folder of each relative POSIX path ("" at the top)."""
    return [posixpath.basename(posixpath.dirname(path)) for path in paths]


def _folder_table(folder: Path) -> pd.DataFrame:
    # Symlinked subfolders are not descended into (os.walk's default), which
    # also avoids loops; symlinked files are listed and checked like any path.
    paths = []
    for current, dirs, files in os.walk(folder):
        dirs[:] = [name for name in dirs if name != "__MACOSX"]
        relative = Path(current).relative_to(folder).as_posix()
        for name in files:
            if _is_image_name(name):
                paths.append(name if relative == "." else f"{relative}/{name}")
    paths.sort()
    return pd.DataFrame({"filepaths": paths, "labels": _labels(paths)}, dtype=str)


def _read_csv(data: bytes, name: str) -> pd.DataFrame:
    try:
        text = data.decode("utf-8-sig")  # -sig: a BOM would otherwise stick to the first column
    except UnicodeDecodeError as error:
        raise ValueError(
            f"{name} is not UTF-8 text (byte {error.start}); save it as a UTF-8 CSV"
        ) from None
    try:
        table = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise ValueError(
            f"{name} is empty; expected a header line with a 'filepaths' column"
        ) from None
    except (pd.errors.ParserError, ValueError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"{name} could not be read as CSV: {reason}") from None
    if "filepaths" not in table.columns:
        columns = ", ".join(repr(column) for column in table.columns)
        raise ValueError(
            f"{name} has no 'filepaths' column (one image path per row); its columns are: {columns}"
        )
    return table


def _is_inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _file_fetcher(files: Sequence[str], root: str) -> Callable[[int], bytes]:
    """Read the bytes of ``files[index]`` once it is known to lie inside ``root``."""
    # Each folder is resolved once per load; a file's own name only needs an
    # lstat to tell whether it is a symlink (then the whole path is resolved).
    # The result is exactly os.path.realpath(path), at a fraction of the cost.
    real_folders: dict[str, str] = {}

    def resolve(candidate: str) -> tuple[str, os.stat_result | None]:
        head, tail = os.path.split(candidate)
        if tail in ("", ".", ".."):
            return os.path.realpath(candidate), None
        folder = real_folders.get(head)
        if folder is None:
            folder = real_folders.setdefault(head, os.path.realpath(head))
        real = os.path.join(folder, tail)
        try:
            info = os.lstat(real)
        except OSError:
            return real, None  # reported as missing after the folder check
        if stat.S_ISLNK(info.st_mode):
            return os.path.realpath(candidate), None
        return real, info

    def fetch(index: int) -> bytes:
        candidate = files[index]
        if not candidate:
            raise _ImageError(REASON_MISSING, "no path given")
        try:
            real, info = resolve(candidate)
        except (OSError, ValueError):  # e.g. a NUL byte in the path
            raise _ImageError(REASON_MISSING, "not a valid path") from None
        if not _is_inside(real, root):
            raise _ImageError(REASON_OUTSIDE, f"resolves to {real}")
        # Opening the resolved path (not the one given) means the file checked
        # above is the file read, even if a symlink on the way changes.
        try:
            if info is None:
                info = os.stat(real)
            if stat.S_ISDIR(info.st_mode):
                raise _ImageError(REASON_NOT_IMAGE, "is a folder")
            # A FIFO or device would block or never end.
            if not stat.S_ISREG(info.st_mode):
                raise _ImageError(REASON_NOT_IMAGE, "not a regular file")
            if info.st_size > MAX_FILE_BYTES:
                raise _ImageError(REASON_TOO_LARGE, f"{info.st_size:,} bytes")
            # Unbuffered, and sized by the stat: a read of MAX_FILE_BYTES + 1 would
            # allocate (and free) 64 MB per image. After a short read, or when the
            # file grew since the stat, it is read on in small pieces, to the limit.
            with open(real, "rb", buffering=0) as handle:
                data = handle.read(info.st_size + 1)
                while len(data) != info.st_size and len(data) <= MAX_FILE_BYTES:
                    more = handle.read(1 << 16)
                    if not more:
                        break
                    data += more
                return data
        except FileNotFoundError:
            raise _ImageError(REASON_MISSING) from None
        except OSError as error:
            raise _ImageError(REASON_MISSING, f"cannot be read: {error.strerror}") from None

    return fetch


def _open_zip(path: Path) -> zipfile.ZipFile:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as error:
        raise ValueError(f"{path} is not a valid ZIP file ({error})") from None
    infos = archive.infolist()
    if len(infos) > MAX_ZIP_MEMBERS:
        archive.close()
        raise ValueError(
            f"{path} has {len(infos):,} entries; at most {MAX_ZIP_MEMBERS:,} are accepted"
        )
    total = sum(info.file_size for info in infos)
    if total > MAX_ZIP_BYTES:
        archive.close()
        raise ValueError(
            f"{path} would unpack to {total:,} bytes; at most {MAX_ZIP_BYTES:,} are accepted"
        )
    return archive


def _zip_inner_path(name: str) -> str | None:
    """The normalised path of a member name, or None if it points outside the archive."""
    normalised = posixpath.normpath(name.replace("\\", "/"))
    if normalised.startswith("/") or re.match(r"[A-Za-z]:", normalised):
        return None
    if normalised == ".." or normalised.startswith("../"):
        return None
    return normalised


def _zip_rows(
    archive: zipfile.ZipFile, name: str
) -> tuple[pd.DataFrame, list[zipfile.ZipInfo | _ImageError]]:
    """The table of a ZIP and, per row, the member to read or why it cannot be read."""
    files = [
        info
        for info in archive.infolist()
        if not info.is_dir() and not info.filename.startswith("__MACOSX/")
    ]
    inside = {}
    for info in files:
        inner = _zip_inner_path(info.filename)
        if inner is not None:
            inside[inner] = info
    csvs = [inner for inner in inside if inner.lower().endswith(".csv")]

    if len(csvs) == 1:
        csv_info = inside[csvs[0]]
        if csv_info.file_size > MAX_FILE_BYTES:
            raise ValueError(
                f"{csvs[0]} in {name} is {csv_info.file_size:,} bytes; "
                f"at most {MAX_FILE_BYTES:,} are accepted"
            )
        table = _read_csv(_read_member(archive, csv_info), f"{csvs[0]} in {name}")
        csv_folder = posixpath.dirname(csvs[0])
        members: list[zipfile.ZipInfo | _ImageError] = []
        for written in table["filepaths"]:
            inner = None
            if not written.startswith(("/", "\\")):
                inner = _zip_inner_path(posixpath.join(csv_folder, written))
            if not written:
                members.append(_ImageError(REASON_MISSING, "no path given"))
            elif inner is None:
                members.append(_ImageError(REASON_OUTSIDE, "points outside the ZIP"))
            elif inner not in inside:
                members.append(_ImageError(REASON_MISSING, "not in the ZIP"))
            else:
                members.append(inside[inner])
        return table, members

    images = sorted(
        (info for info in files if _is_image_name(info.filename)), key=lambda info: info.filename
    )
    paths = [info.filename for info in images]
    members = [
        info
        if _zip_inner_path(info.filename) is not None
        else _ImageError(REASON_OUTSIDE, "points outside the ZIP")
        for info in images
    ]
    return pd.DataFrame({"filepaths": paths, "labels": _labels(paths)}, dtype=str), members


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    try:
        return archive.read(info)
    except (zipfile.BadZipFile, RuntimeError, NotImplementedError, OSError, EOFError) as error:
        # CRC errors, encrypted members, unknown compression methods.
        raise _ImageError(REASON_NOT_IMAGE, f"cannot be read from the ZIP: {error}") from None


def _zip_fetcher(
    archive: zipfile.ZipFile, members: Sequence[zipfile.ZipInfo | _ImageError]
) -> Callable[[int], bytes]:
    def fetch(index: int) -> bytes:
        member = members[index]
        if isinstance(member, _ImageError):
            raise member
        if member.file_size > MAX_FILE_BYTES:
            raise _ImageError(REASON_TOO_LARGE, f"{member.file_size:,} bytes")
        ratio = member.file_size / max(member.compress_size, 1)
        if ratio > MAX_COMPRESSION_RATIO and member.file_size > COMPRESSION_CHECK_BYTES:
            raise _ImageError(REASON_TOO_LARGE, f"compression ratio {ratio:,.0f}")
        return _read_member(archive, member)

    return fetch


# Rows per task of the decoding pool: fewer, larger tasks cost less in hand-overs
# (64 decoded dogs_large.csv 5% faster than 16); never more than a progress step.
DECODE_CHUNK = 64


def _decode_rows(
    paths: Sequence[str],
    fetch: Callable[[int], bytes],
    fetch_in_worker: bool,
    config: DataConfig,
    workers: int,
    progress: Callable[[int, int], None] | None,
    entry: _CacheEntry | None = None,
) -> tuple[np.ndarray, dict[int, Unreadable]]:
    """Decode every row; returns the readable images and the problems.

    Rows are decoded in small chunks by a thread pool and collected in order,
    so readable images are appended one after another: into a cache file when
    ``entry`` is given (memory stays flat whatever the dataset's size), else
    into one preallocated array. A cache file that cannot be written is
    dropped and the rows are decoded again into memory.
    """
    if entry is not None:
        try:
            rows = entry.writer(len(paths))
            return _decode_rows_into(paths, fetch, fetch_in_worker, config, workers, progress, rows)
        except _CacheWriteError:
            pass
    rows = _MemoryRows(len(paths), config)
    return _decode_rows_into(paths, fetch, fetch_in_worker, config, workers, progress, rows)


def _decode_rows_into(paths, fetch, fetch_in_worker, config, workers, progress, rows):
    total = len(paths)
    size, channels = config.image_size, config.channels
    problems: dict[int, Unreadable] = {}
    step = max(1, -(-total // 100))
    done = 0
    # Chunks amortise the pool's per-task cost over several images, but stay
    # below a progress step. ZIP members are read in this thread, so there the
    # chunks stay small to bound the bytes in flight.
    chunk = min(DECODE_CHUNK if fetch_in_worker else 2, step)

    def work(start: int, end: int, encoded: list | None):
        # cv2 releases the GIL while decoding and resizing, so threads scale.
        out = np.empty((end - start, size, size, channels), np.uint8)
        kept, errors = 0, []
        for index in range(start, end):
            try:
                data = fetch(index) if encoded is None else encoded[index - start]
                if isinstance(data, _ImageError):
                    raise data
                out[kept] = _decode(data, size, channels)
                kept += 1
            except _ImageError as error:
                errors.append((index, error))
        return out[:kept], errors

    def collect(future: Future) -> None:
        nonlocal done
        images, errors = future.result()
        for index, error in errors:
            problems[index] = Unreadable(paths[index], error.reason, error.detail)
        rows.append(images)
        before, done = done, done + len(images) + len(errors)
        if progress is not None and (done // step > before // step or done == total):
            progress(done, total)

    # A bounded number of chunks in flight keeps memory flat when the main
    # thread reads ZIP members faster than the pool decodes them; collecting
    # them in submission order keeps the rows in source order.
    pending: collections.deque[Future] = collections.deque()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        try:
            for start in range(0, total, chunk):
                end = min(start + chunk, total)
                encoded = None
                if not fetch_in_worker:
                    encoded = []
                    for index in range(start, end):
                        try:
                            encoded.append(fetch(index))
                        except _ImageError as error:
                            encoded.append(error)
                pending.append(pool.submit(work, start, end, encoded))
                if len(pending) >= 4 * workers:
                    collect(pending.popleft())
            while pending:
                collect(pending.popleft())
        except BaseException:
            for future in pending:
                future.cancel()
            rows.abandon()
            raise
    return rows.finish(problems), problems


# The decoded-image cache: <name>.npy holds the readable images (uint8, the
# array as loaded), <name>.json the key they were decoded under, the .npy's
# identity and the unreadable rows. <name> comes from the source and the image
# settings, so a changed dataset overwrites its own entry.

CACHE_FORMAT = 1
# Part of every cache key: bump it whenever decoding changes the pixels it produces.
# 4: plain INTER_AREA again (the matrix-product resize was slower after reduced JPEG decoding).
DECODER_VERSION = 4
# A file modified this recently could change again within the file system's
# timestamp granularity without its size or time changing, so a dataset with
# such a file is not cached (git's "racily clean" problem).
CACHE_SETTLE_SECONDS = 2.0
MAX_CACHE_BYTES = 16 * 1024**3


def default_cache_dir() -> Path:
    """Where decoded datasets are cached: DOGVAE_CACHE_DIR, else ~/.cache/dogvae."""
    value = os.environ.get("DOGVAE_CACHE_DIR")
    return Path(value).expanduser() if value else Path.home() / ".cache" / "dogvae"


def max_cache_bytes() -> int:
    """The cache folder's size budget: DOGVAE_CACHE_MAX_MB, else MAX_CACHE_BYTES."""
    value = os.environ.get("DOGVAE_CACHE_MAX_MB")
    try:
        return int(float(value) * 1024 * 1024) if value else MAX_CACHE_BYTES
    except ValueError:
        return MAX_CACHE_BYTES


class _CacheWriteError(Exception):
    """The cache file could not be written; the load goes on without it."""


def _cache_entry(
    folder: Path,
    kind: str,
    source: Path,
    where: tuple[str, ...],
    files: Sequence[str] | None,
    paths: Sequence[str],
    config: DataConfig,
) -> _CacheEntry:
    """The cache entry for a source: its file names and the key its contents must match."""
    identity = {
        "kind": kind,
        "source": os.path.realpath(source),
        "folders": list(where),
        "image_size": config.image_size,
        "channels": config.channels,
        "limit": config.limit,
    }
    name = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:32]
    settings = {
        **identity,
        "format": CACHE_FORMAT,
        "decoder": DECODER_VERSION,
        "opencv": cv2.__version__,
        "limits": [
            MAX_FILE_BYTES,
            MAX_IMAGE_PIXELS,
            MAX_COMPRESSION_RATIO,
            COMPRESSION_CHECK_BYTES,
        ],
        "rows": len(paths),
    }
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    # A ZIP is one file: its identity covers every member and the CSV inside.
    newest = _fingerprint(files if files is not None else [os.fspath(source)], digest)
    settled = newest < time.time_ns() - CACHE_SETTLE_SECONDS * 1e9
    shape = (config.image_size, config.image_size, config.channels)
    return _CacheEntry(folder, name, digest.hexdigest(), shape, settled)


def _fingerprint(files: Sequence[str], digest: Any) -> int:
    """Feed each file's resolved path and stat into ``digest``; returns the newest time seen.

    The resolved path is part of the key because the allowed-folder check
    depends on it; resolving each folder once (and only symlinked files one by
    one) keeps this to one lstat per file. ctime is included because it changes
    with the content even when a copy restores the old mtime.
    """
    parts = []
    real_folders: dict[str, str] = {}
    newest = 0
    for name in files:
        if not name:
            parts.append("")
            continue
        try:
            head, tail = os.path.split(name)
            if tail in ("", ".", ".."):
                real = os.path.realpath(name)
                info = os.stat(real)
            else:
                real_folder = real_folders.get(head)
                if real_folder is None:
                    real_folder = real_folders[head] = os.path.realpath(head)
                real = os.path.join(real_folder, tail)
                info = os.lstat(real)
                if stat.S_ISLNK(info.st_mode):
                    real = os.path.realpath(name)
                    info = os.stat(real)
        except (OSError, ValueError) as error:
            parts.append(f"{name}\0!{getattr(error, 'errno', '')}")
            continue
        newest = max(newest, info.st_mtime_ns, info.st_ctime_ns)
        parts.append(
            f"{name}\0{real}\0{info.st_dev}:{info.st_ino}\0{info.st_mode}\0{info.st_size}"
            f"\0{info.st_mtime_ns}\0{info.st_ctime_ns}"
        )
    digest.update("\n".join(parts).encode("utf-8", "surrogatepass"))
    return newest


@dataclass(frozen=True)
class _CacheEntry:
    folder: Path
    name: str
    key: str
    shape: tuple[int, int, int]
    settled: bool

    @property
    def npy(self) -> Path:
        return self.folder / f"{self.name}.npy"

    @property
    def meta(self) -> Path:
        return self.folder / f"{self.name}.json"

    def read(self, paths: Sequence[str]) -> tuple[np.ndarray, dict[int, Unreadable]] | None:
        """The cached images (memory-mapped) and problems, or None unless everything matches."""
        try:
            meta = json.loads(self.meta.read_bytes())
            if (
                meta.get("format") != CACHE_FORMAT
                or meta.get("key") != self.key
                or meta.get("rows") != len(paths)
            ):
                return None
            info = os.stat(self.npy)
            if [info.st_ino, info.st_size, info.st_mtime_ns] != meta.get("npy"):
                return None  # replaced since the sidecar was written
            problems = {}
            previous = -1
            for row, reason, detail in meta["unreadable"]:
                if not (
                    type(row) is int
                    and previous < row < len(paths)
                    and reason in REASONS
                    and isinstance(detail, str)
                ):
                    return None
                problems[row] = Unreadable(paths[row], reason, detail)
                previous = row
            images = np.load(self.npy, mmap_mode="r", allow_pickle=False)
            expected = (len(paths) - len(problems), *self.shape)
            if images.dtype != np.uint8 or images.shape != expected:
                return None
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            return None
        with contextlib.suppress(OSError):
            os.utime(self.meta)  # recently used: kept longest when the folder is pruned
        return np.asarray(images), problems

    def writer(self, total: int) -> _CacheRows:
        if not self.settled:
            raise _CacheWriteError("files modified within the last seconds")
        return _CacheRows(self, total)


class _MemoryRows:
    """Decoded rows appended into one preallocated array."""

    def __init__(self, total: int, config: DataConfig) -> None:
        size, channels = config.image_size, config.channels
        self.images = np.empty((total, size, size, channels), np.uint8)
        self.count = 0

    def append(self, images: np.ndarray) -> None:
        self.images[self.count : self.count + len(images)] = images
        self.count += len(images)

    def abandon(self) -> None:
        pass

    def finish(self, problems: dict[int, Unreadable]) -> np.ndarray:
        return self.images[: self.count]


class _CacheRows:
    """Decoded rows appended to a temporary .npy that replaces the cache entry when complete."""

    def __init__(self, entry: _CacheEntry, total: int) -> None:
        self.entry = entry
        self.count = 0
        try:
            entry.folder.mkdir(parents=True, exist_ok=True)
            handle, name = tempfile.mkstemp(
                dir=entry.folder, prefix=f".{entry.name}.", suffix=".tmp"
            )
        except OSError as error:
            raise _CacheWriteError(str(error)) from None
        self.path = Path(name)
        self.handle = os.fdopen(handle, "wb")
        header = _npy_header((total, *entry.shape))
        self.header_length = len(header)
        self._write(header)

    def _write(self, data) -> None:
        try:
            self.handle.write(data)
        except OSError as error:
            self.abandon()
            raise _CacheWriteError(str(error)) from None

    def append(self, images: np.ndarray) -> None:
        self._write(np.ascontiguousarray(images).data)
        self.count += len(images)

    def abandon(self) -> None:
        with contextlib.suppress(OSError):
            self.handle.close()
        with contextlib.suppress(OSError):
            self.path.unlink()

    def finish(self, problems: dict[int, Unreadable]) -> np.ndarray:
        entry = self.entry
        if self.count == 0:
            self.abandon()
            return np.empty((0, *entry.shape), np.uint8)
        try:
            self.handle.seek(0)
            self.handle.write(_npy_header((self.count, *entry.shape), self.header_length))
            self.handle.flush()
            os.fsync(self.handle.fileno())
            info = os.fstat(self.handle.fileno())
            self.handle.close()
            # Mapped before the rename: the mapping stays valid whatever replaces the file.
            images = np.load(self.path, mmap_mode="r", allow_pickle=False)
            os.replace(self.path, entry.npy)
        except (OSError, ValueError) as error:
            self.abandon()
            raise _CacheWriteError(str(error)) from None
        meta = {
            "format": CACHE_FORMAT,
            "key": entry.key,
            "rows": self.count + len(problems),
            "readable": self.count,
            "npy": [info.st_ino, info.st_size, info.st_mtime_ns],
            "unreadable": [
                [row, problems[row].reason, problems[row].detail] for row in sorted(problems)
            ],
        }
        try:
            _write_atomically(entry.meta, json.dumps(meta).encode())
        except OSError:
            # The images are complete; without a sidecar the entry is just not used.
            with contextlib.suppress(OSError):
                entry.npy.unlink()
        else:
            with contextlib.suppress(OSError):
                _prune_cache(entry.folder, keep=entry.name)
        return np.asarray(images)


def _npy_header(shape: tuple[int, ...], length: int | None = None) -> bytes:
    """A .npy (version 1.0) header for uint8 C-order data, padded to ``length`` bytes.

    Written first with the number of rows listed and rewritten in place with
    the number decoded, so both must have the same length.
    """
    dimensions = tuple(int(n) for n in shape)
    text = f"{{'descr': '|u1', 'fortran_order': False, 'shape': {dimensions!r}, }}"
    used = 10 + len(text) + 1
    if length is None:
        length = -(-used // 64) * 64  # numpy aligns the data to 64 bytes
    text += " " * (length - used) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text.encode("latin1")


def _write_atomically(path: Path, data: bytes) -> None:
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(name)
        raise


def _prune_cache(folder: Path, keep: str) -> None:
    """Delete the least recently used entries beyond the size budget, and stale temporary files."""
    entries: dict[str, list[os.DirEntry]] = {}
    now = time.time()
    for item in os.scandir(folder):
        if item.name.startswith(".") and item.name.endswith(".tmp"):
            # Left by a writer that died; a live one touches its file continuously.
            if now - item.stat().st_mtime > 3600:
                with contextlib.suppress(OSError):
                    os.unlink(item.path)
        elif item.name.endswith((".npy", ".json")):
            entries.setdefault(item.name.rsplit(".", 1)[0], []).append(item)

    def last_used(name: str) -> float:
        return max(item.stat().st_mtime for item in entries[name])

    total = sum(item.stat().st_size for items in entries.values() for item in items)
    budget = max_cache_bytes()
    for name in sorted(entries, key=last_used):
        if total <= budget:
            break
        if name == keep:
            continue
        for item in entries[name]:
            with contextlib.suppress(OSError):
                total -= item.stat().st_size
                os.unlink(item.path)


def _split(table: pd.DataFrame, config: DataConfig) -> tuple[np.ndarray, str]:
    """``"train"``/``"validation"`` per row and how that was decided."""
    count = len(table)
    if "data set" in table.columns:
        names = table["data set"].str.strip().str.lower()
        split = np.where(names.isin(VALIDATION_NAMES).to_numpy(), "validation", "train")
        return split.astype(object), "from the 'data set' column"
    fraction = config.validation_fraction
    held_out = 0
    if fraction > 0 and count >= 2:
        # At least one image to validate on, at least one to train on.
        held_out = min(max(1, round(fraction * count)), count - 1)
    split = np.full(count, "train", dtype=object)
    split[np.random.default_rng(config.seed).permutation(count)[:held_out]] = "validation"
    return split, f"random {fraction * 100:g}% held out (seed {config.seed})"


def _diagnose(data: bytes) -> _ImageError:
    """Tell an image too large to decode from a file that is not an image.

    Only called after OpenCV failed; Pillow reads just the header.
    """
    try:
        with _PIL_HEADER_LOCK, warnings.catch_warnings():
            # Pillow warns (an error under -W error) from about 89 M pixels;
            # the size is all that is wanted here.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                image_format = image.format
    except Image.DecompressionBombError as error:
        # Raised from twice Pillow's limit, before the size can be read.
        match = re.search(r"\((\d+) pixels\)", str(error))
        detail = f"{int(match.group(1)):,} pixels" if match else "over 178 million pixels"
        return _ImageError(REASON_TOO_LARGE, detail)
    except Exception:  # Pillow raises many types for arbitrary bytes
        return _ImageError(REASON_NOT_IMAGE)
    if width * height > MAX_IMAGE_PIXELS:
        return _ImageError(REASON_TOO_LARGE, f"{width:,}x{height:,} pixels")
    return _ImageError(REASON_NOT_IMAGE, f"{image_format} data that could not be decoded")
