"""Where images come from: a CSV, a ZIP or a folder (or an uploaded CSV or ZIP), as a ``Source``.

A ``Source`` is the table of listed images plus a ``fetch(row)`` that returns
one row's encoded bytes or raises ``ImageError`` with the reason it cannot.
Paths are never trusted: each one is resolved (symlinks followed) by
``PathResolver`` and must stay inside the allowed folder before it is opened;
ZIP members are read from the archive without extracting anything to disk.
"""

from __future__ import annotations

import codecs
import contextlib
import hashlib
import io
import os
import posixpath
import re
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pandas as pd

from dogvae.data import limits
from dogvae.data.paths import file_fetcher
from dogvae.data.report import (
    REASON_MISSING,
    REASON_NOT_IMAGE,
    REASON_OUTSIDE,
    REASON_TOO_LARGE,
    ImageError,
)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


@dataclass(frozen=True)
class Upload:
    """A CSV or ZIP a user uploaded, handed over as it arrived, never written to disk.

    Attributes:
        name: The file's name; its suffix (``.csv`` or ``.zip``) says what it is.
        data: Its bytes, or a binary file object positioned anywhere (Streamlit's
            ``UploadedFile`` is one); a ZIP is then read in place.
    """

    name: str
    data: bytes | BinaryIO

    def open(self) -> BinaryIO:
        """A binary file object over the content, at its start."""
        if isinstance(self.data, bytes | bytearray | memoryview):
            return io.BytesIO(self.data)
        self.data.seek(0)
        return self.data

    def read(self) -> bytes:
        """The whole content."""
        return self.open().read()

    def identity(self) -> str:
        """What the cache knows the upload by: a hash of its content, whatever its name."""
        digest = hashlib.file_digest(self.open(), "sha256").hexdigest()
        return f"upload sha256:{digest}"


@dataclass(frozen=True)
class Source:
    """An opened source: its table and how to read each row's image.

    Attributes:
        kind: ``"csv"``, ``"zip"`` or ``"folder"``.
        name: The source as the report shows it: the path given, or the upload's name.
        table: One row per listed image (after ``limit``), with a ``filepaths`` column.
        fetch: ``fetch(row)`` returns that row's encoded bytes or raises ``ImageError``.
        fetch_in_worker: Whether ``fetch`` may run in the decoding threads (not for a
            ZIP: ZipFile reads every member through one shared file handle).
        identity: What the cache names the source by: its resolved path, or a
            hash of an upload's content.
        folders: The resolved folders that the allowed-folder checks depend on.
        files: The files whose resolved path and stat the cache key covers: every
            listed image, or the ZIP itself ("" for a row without a path).
        encoding: The text encoding of the CSV (see ``read_csv``); None without one.
    """

    kind: str
    name: str
    table: pd.DataFrame
    fetch: Callable[[int], bytes]
    fetch_in_worker: bool
    identity: str
    folders: tuple[str, ...]
    files: Sequence[str]
    encoding: str | None = None


def open_source(
    source: str | os.PathLike | Upload,
    *,
    limit: int | None = None,
    base_dir: str | os.PathLike | None = None,
    allowed_root: str | os.PathLike | None = None,
) -> contextlib.AbstractContextManager[Source]:
    """Open a CSV, ZIP or folder (see ``load_dataset`` for the arguments); use it in ``with``.

    Raises:
        FileNotFoundError: If ``source`` does not exist.
        ValueError: If it is neither a CSV, a ZIP nor a folder, or cannot be used as a whole.
    """
    name = source.name if isinstance(source, Upload) else os.fspath(source)
    if not isinstance(source, Upload):
        path = Path(source)
        if not path.exists():
            raise FileNotFoundError(f"no such file or folder: {name}")
        if path.is_dir():
            return contextlib.nullcontext(_folder_source(path, name, limit, allowed_root))
    suffix = Path(name).suffix.lower()
    if suffix == ".csv":
        return contextlib.nullcontext(_csv_source(source, name, limit, base_dir, allowed_root))
    if suffix == ".zip":
        return _zip_source(source, name, limit)
    raise ValueError(f"cannot load {name}: expected a .csv file, a .zip file or a folder of images")


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


def read_csv(data: bytes, name: str) -> tuple[pd.DataFrame, str]:
    """The table of a CSV (every cell as text) and the encoding it was read with.

    UTF-8 (with or without a byte order mark) is tried first, then cp1252 and
    Latin-1, which spreadsheets on Windows write; Latin-1 accepts any bytes.

    Raises:
        ValueError: If the data is binary, empty, not CSV, or has no ``filepaths`` column.
    """
    if b"\0" in data:  # UTF-16 or not text at all: any 8-bit decoding would be garbage
        raise ValueError(f"{name} is not a text file (it holds NUL bytes); save it as a UTF-8 CSV")
    text, encoding = _decode_text(data)
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
    return table, encoding


def _decode_text(data: bytes) -> tuple[str, str]:
    # "-sig" drops the byte order mark, which would otherwise stick to the first column.
    first = "utf-8-sig" if data.startswith(codecs.BOM_UTF8) else "utf-8"
    for encoding in (first, "cp1252"):
        try:
            return data.decode(encoding), encoding
        except UnicodeDecodeError:
            pass
    return data.decode("latin-1"), "latin-1"


def _folder_source(
    path: Path, name: str, limit: int | None, allowed_root: str | os.PathLike | None
) -> Source:
    table = _folder_table(path)[:limit]
    root = os.path.realpath(allowed_root if allowed_root is not None else path)
    folder = os.fspath(path)
    files = [os.path.join(folder, file) for file in table["filepaths"].tolist()]
    fetch = file_fetcher(files, root)
    return Source("folder", name, table, fetch, True, os.path.realpath(path), (root,), files)


def _csv_source(
    source: str | os.PathLike | Upload,
    name: str,
    limit: int | None,
    base_dir: str | os.PathLike | None,
    allowed_root: str | os.PathLike | None,
) -> Source:
    if isinstance(source, Upload):
        if base_dir is None:
            raise ValueError(f"{name} was uploaded: give base_dir, the folder its paths start from")
        data, identity, base = source.read(), source.identity(), base_dir
    else:
        data, identity = Path(source).read_bytes(), os.path.realpath(source)
        base = base_dir if base_dir is not None else Path(source).parent
    table, encoding = read_csv(data, name)
    table = table[:limit]
    root = os.path.realpath(allowed_root if allowed_root is not None else base)
    base = os.fspath(base)
    files = [os.path.join(base, file) if file else "" for file in table["filepaths"].tolist()]
    fetch = file_fetcher(files, root)
    folders = (root, os.path.realpath(base))
    return Source("csv", name, table, fetch, True, identity, folders, files, encoding)


@contextlib.contextmanager
def _zip_source(
    source: str | os.PathLike | Upload, name: str, limit: int | None
) -> Iterator[Source]:
    if isinstance(source, Upload):
        identity, files = source.identity(), ()
        archive = _open_zip(source.open(), name)
    else:
        # A ZIP is one file: its stat covers every member and the CSV inside.
        identity, files = os.path.realpath(source), (os.fspath(source),)
        archive = _open_zip(source, name)
    with archive:
        table, members, encoding = _zip_rows(archive, name)
        table = table[:limit]
        fetch = _zip_fetcher(archive, members[: len(table)])
        yield Source("zip", name, table, fetch, False, identity, (), files, encoding)


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


def _open_zip(file: str | os.PathLike | BinaryIO, name: str) -> zipfile.ZipFile:
    try:
        archive = zipfile.ZipFile(file)
    except (zipfile.BadZipFile, OSError, ValueError) as error:
        raise ValueError(f"{name} is not a valid ZIP file ({error})") from None
    infos = archive.infolist()
    if len(infos) > limits.MAX_ZIP_MEMBERS:
        archive.close()
        raise ValueError(
            f"{name} has {len(infos):,} entries; at most {limits.MAX_ZIP_MEMBERS:,} are accepted"
        )
    total = sum(info.file_size for info in infos)
    if total > limits.MAX_ZIP_BYTES:
        archive.close()
        raise ValueError(
            f"{name} would unpack to {total:,} bytes; at most {limits.MAX_ZIP_BYTES:,} are accepted"
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
) -> tuple[pd.DataFrame, list[zipfile.ZipInfo | ImageError], str | None]:
    """The table of a ZIP, per row its member or why it cannot be read, and the CSV's encoding."""
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
        if csv_info.file_size > limits.MAX_FILE_BYTES:
            raise ValueError(
                f"{csvs[0]} in {name} is {csv_info.file_size:,} bytes; "
                f"at most {limits.MAX_FILE_BYTES:,} are accepted"
            )
        table, encoding = read_csv(_read_member(archive, csv_info), f"{csvs[0]} in {name}")
        csv_folder = posixpath.dirname(csvs[0])
        members: list[zipfile.ZipInfo | ImageError] = []
        for written in table["filepaths"]:
            inner = None
            if not written.startswith(("/", "\\")):
                inner = _zip_inner_path(posixpath.join(csv_folder, written))
            if not written:
                members.append(ImageError(REASON_MISSING, "no path given"))
            elif inner is None:
                members.append(ImageError(REASON_OUTSIDE, "points outside the ZIP"))
            elif inner not in inside:
                members.append(ImageError(REASON_MISSING, "not in the ZIP"))
            else:
                members.append(inside[inner])
        return table, members, encoding

    images = sorted(
        (info for info in files if _is_image_name(info.filename)), key=lambda info: info.filename
    )
    paths = [info.filename for info in images]
    members = [
        info
        if _zip_inner_path(info.filename) is not None
        else ImageError(REASON_OUTSIDE, "points outside the ZIP")
        for info in images
    ]
    table = pd.DataFrame({"filepaths": paths, "labels": _labels(paths)}, dtype=str)
    return table, members, None


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    try:
        return archive.read(info)
    except (zipfile.BadZipFile, RuntimeError, NotImplementedError, OSError, EOFError) as error:
        # CRC errors, encrypted members, unknown compression methods.
        raise ImageError(REASON_NOT_IMAGE, f"cannot be read from the ZIP: {error}") from None


def _zip_fetcher(
    archive: zipfile.ZipFile, members: Sequence[zipfile.ZipInfo | ImageError]
) -> Callable[[int], bytes]:
    def fetch(index: int) -> bytes:
        member = members[index]
        if isinstance(member, ImageError):
            raise member
        if member.file_size > limits.MAX_FILE_BYTES:
            raise ImageError(REASON_TOO_LARGE, f"{member.file_size:,} bytes")
        ratio = member.file_size / max(member.compress_size, 1)
        if (
            ratio > limits.MAX_COMPRESSION_RATIO
            and member.file_size > limits.COMPRESSION_CHECK_BYTES
        ):
            raise ImageError(REASON_TOO_LARGE, f"compression ratio {ratio:,.0f}")
        return _read_member(archive, member)

    return fetch
