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

import contextlib
import dataclasses
import io
import os
import posixpath
import re
import stat
import threading
import warnings
import zipfile
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
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
        images: ``(N, H, W, C)`` uint8, the readable images in source order.
        table: N rows, one per readable image: the original CSV columns (or
            ``filepaths`` and ``labels`` for a folder or ZIP) and ``split``
            (``"train"`` or ``"validation"``).
        report: What was found and why some images were not used.
    """

    images: np.ndarray
    table: pd.DataFrame
    report: DatasetReport

    @property
    def train_images(self) -> np.ndarray:
        """The images of the training split (a copy)."""
        return self.images[(self.table["split"] == "train").to_numpy()]

    @property
    def validation_images(self) -> np.ndarray:
        """The images of the validation split (a copy)."""
        return self.images[(self.table["split"] == "validation").to_numpy()]

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


def decode_image(data: bytes, image_size: int = 64, channels: int = 1) -> np.ndarray:
    """Decode an encoded image into a square uint8 array.

    EXIF orientation is applied, alpha dropped, 16-bit samples scaled to 8 bits
    (rounded), and the image squashed (not cropped) to ``image_size`` squared
    with area interpolation.

    Args:
        data: The encoded file (JPEG, PNG, BMP, WebP or TIFF).
        image_size: Side of the output square.
        channels: 1 for grayscale (OpenCV's luma), 3 for RGB (in that order).

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
    if len(data) == 0:
        raise _ImageError(REASON_EMPTY)
    if len(data) > MAX_FILE_BYTES:
        raise _ImageError(REASON_TOO_LARGE, f"{len(data):,} bytes")

    # ANYDEPTH keeps 16-bit samples so that they are rounded below instead of
    # truncated by OpenCV; any flag but IMREAD_UNCHANGED applies EXIF orientation.
    flags = cv2.IMREAD_ANYDEPTH | (cv2.IMREAD_GRAYSCALE if channels == 1 else cv2.IMREAD_COLOR_RGB)
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
) -> Dataset:
    """Load every readable image of a CSV, ZIP or folder.

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

    Returns:
        The readable images, their table rows and the report.

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
            files = [os.path.join(path, name) for name in table["filepaths"]]
            fetch, fetch_in_worker = _file_fetcher(files, root), True
        elif path.suffix.lower() == ".csv":
            kind = "csv"
            table = _read_csv(path.read_bytes(), os.fspath(source))[: config.limit]
            base = base_dir if base_dir is not None else path.parent
            root = os.path.realpath(allowed_root if allowed_root is not None else base)
            files = [os.path.join(base, name) if name else "" for name in table["filepaths"]]
            fetch, fetch_in_worker = _file_fetcher(files, root), True
        elif path.suffix.lower() == ".zip":
            kind = "zip"
            archive = stack.enter_context(_open_zip(path))
            table, members = _zip_rows(archive, os.fspath(source))
            table = table[: config.limit]
            # ZipFile reads through one shared file handle, so members are read
            # in this thread and only decoded in the pool.
            fetch, fetch_in_worker = _zip_fetcher(archive, members[: len(table)]), False
        else:
            raise ValueError(
                f"cannot load {source}: expected a .csv file, a .zip file or a folder of images"
            )
        _check_memory(len(table), config, max_bytes)
        images, problems = _decode_rows(
            list(table["filepaths"]), fetch, fetch_in_worker, config, workers, progress
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

    def fetch(index: int) -> bytes:
        candidate = files[index]
        if not candidate:
            raise _ImageError(REASON_MISSING, "no path given")
        try:
            real = os.path.realpath(candidate)
        except (OSError, ValueError):  # e.g. a NUL byte in the path
            raise _ImageError(REASON_MISSING, "not a valid path") from None
        if not _is_inside(real, root):
            raise _ImageError(REASON_OUTSIDE, f"resolves to {real}")
        # Opening the resolved path (not the one given) means the file checked
        # above is the file read, even if a symlink on the way changes.
        try:
            info = os.stat(real)
            if stat.S_ISDIR(info.st_mode):
                raise _ImageError(REASON_NOT_IMAGE, "is a folder")
            # A FIFO or device would block or never end.
            if not stat.S_ISREG(info.st_mode):
                raise _ImageError(REASON_NOT_IMAGE, "not a regular file")
            if info.st_size > MAX_FILE_BYTES:
                raise _ImageError(REASON_TOO_LARGE, f"{info.st_size:,} bytes")
            with open(real, "rb") as handle:
                return handle.read(MAX_FILE_BYTES + 1)
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


def _decode_rows(
    paths: Sequence[str],
    fetch: Callable[[int], bytes],
    fetch_in_worker: bool,
    config: DataConfig,
    workers: int,
    progress: Callable[[int, int], None] | None,
) -> tuple[np.ndarray, dict[int, Unreadable]]:
    """Decode every row into one array; returns the readable images and the problems."""
    total = len(paths)
    size, channels = config.image_size, config.channels
    images = np.empty((total, size, size, channels), np.uint8)
    problems: dict[int, Unreadable] = {}
    step = max(1, -(-total // 100))
    done = 0

    def work(index: int, data: bytes | None) -> None:
        # cv2 releases the GIL while decoding and resizing, so threads scale.
        if data is None:
            data = fetch(index)
        images[index] = decode_image(data, size, channels)

    def record(index: int, error: _ImageError) -> None:
        problems[index] = Unreadable(paths[index], error.reason, error.detail)

    def finished(count: int) -> None:
        nonlocal done
        before, done = done, done + count
        if progress is not None and (done // step > before // step or done == total):
            progress(done, total)

    # A bounded number of rows in flight keeps memory flat when the main thread
    # reads ZIP members faster than the pool decodes them.
    pending: dict[Future, int] = {}

    def collect(futures: set[Future]) -> None:
        for future in futures:
            index = pending.pop(future)
            try:
                future.result()
            except _ImageError as error:
                record(index, error)
        finished(len(futures))

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for index in range(total):
            data = None
            if not fetch_in_worker:
                try:
                    data = fetch(index)
                except _ImageError as error:
                    record(index, error)
                    finished(1)
                    continue
            pending[pool.submit(work, index, data)] = index
            if len(pending) >= 4 * workers:
                collect(wait(pending, return_when=FIRST_COMPLETED).done)
        while pending:
            collect(wait(pending, return_when=FIRST_COMPLETED).done)

    if problems:
        # Compact in place instead of copying the readable rows to a new array.
        kept = 0
        for index in range(total):
            if index not in problems:
                if kept != index:
                    images[kept] = images[index]
                kept += 1
        images = images[:kept]
    return images, problems


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
