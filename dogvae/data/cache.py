"""The decoded-image cache: a ``.npy`` of the readable images beside a ``.json`` of its key.

``<name>.npy`` holds the readable images (uint8, the array as loaded);
``<name>.json`` the key they were decoded under, the ``.npy``'s identity and the
unreadable rows. ``<name>`` comes from the source (its resolved path, or the hash
of an upload's content) and the image settings, so a changed dataset on disk
overwrites its own entry and the same upload finds its entry again. The key
covers every listed file's resolved path and stat (for a ZIP file, the
archive's), the limits and the decoder. An entry that does not match, or is
damaged, is ignored and rewritten; a cache that cannot be written never fails a load.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dogvae.atomic import TEMP_MARK, write_atomically
from dogvae.config import DataConfig
from dogvae.data import decode, limits
from dogvae.data.paths import PathResolver
from dogvae.data.report import REASONS, Unreadable
from dogvae.data.sources import Source

CACHE_FORMAT = 1
# A temporary file left this long by a writer that died is deleted when the folder is pruned.
STALE_TEMP_SECONDS = 3600


class CacheWriteError(Exception):
    """The cache file could not be written; the load goes on without it."""


def default_cache_dir() -> Path:
    """Where decoded datasets are cached: DOGVAE_CACHE_DIR, else ~/.cache/dogvae."""
    value = os.environ.get("DOGVAE_CACHE_DIR")
    return Path(value).expanduser() if value else Path.home() / ".cache" / "dogvae"


def cache_entry(folder: Path, source: Source, config: DataConfig) -> CacheEntry:
    """The cache entry for a source: its file names and the key its contents must match."""
    identity = {
        "kind": source.kind,
        "source": source.identity,
        "folders": list(source.folders),
        "image_size": config.image_size,
        "channels": config.channels,
        "limit": config.limit,
    }
    name = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:32]
    settings = {
        **identity,
        "format": CACHE_FORMAT,
        "decoder": decode.DECODER_VERSION,
        "opencv": decode.OPENCV_VERSION,
        "limits": [
            limits.MAX_FILE_BYTES,
            limits.MAX_IMAGE_PIXELS,
            limits.MAX_COMPRESSION_RATIO,
            limits.COMPRESSION_CHECK_BYTES,
        ],
        "rows": len(source.table),
    }
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    newest = fingerprint(source.files, digest)
    settled = newest < time.time_ns() - limits.CACHE_SETTLE_SECONDS * 1e9
    shape = (config.image_size, config.image_size, config.channels)
    return CacheEntry(folder, name, digest.hexdigest(), shape, settled)


def fingerprint(files: Sequence[str], digest: Any) -> int:
    """Feed each file's resolved path and stat into ``digest``; returns the newest time seen.

    The resolved path is part of the key because the allowed-folder check
    depends on it. ctime is included because it changes with the content even
    when a copy restores the old mtime.
    """
    resolver = PathResolver()
    parts = []
    newest = 0
    for name in files:
        if not name:
            parts.append("")
            continue
        try:
            real, info = resolver.resolve(name)
            if info is None:
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
class CacheEntry:
    """One entry of the cache folder.

    Attributes:
        folder: The cache folder.
        name: The entry's file name without suffix.
        key: What the sidecar must say for the images to be used.
        shape: The shape of one image.
        settled: Whether every file is old enough to be cached (see CACHE_SETTLE_SECONDS).
    """

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

    def writer(self, total: int) -> CacheRows:
        """Rows appended to a new version of this entry; CacheWriteError when it cannot be."""
        if not self.settled:
            raise CacheWriteError("files modified within the last seconds")
        return CacheRows(self, total)


class CacheRows:
    """Decoded rows appended to a temporary .npy that replaces the cache entry when complete.

    Written row by row, so memory stays flat whatever the dataset's size; the
    temporary name is the one ``dogvae.atomic`` uses, so pruning finds leftovers.
    """

    def __init__(self, entry: CacheEntry, total: int) -> None:
        self.entry = entry
        self.count = 0
        self.path = entry.folder / f".{entry.npy.name}{TEMP_MARK}{secrets.token_hex(4)}"
        try:
            entry.folder.mkdir(parents=True, exist_ok=True)
            descriptor = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except OSError as error:
            raise CacheWriteError(str(error)) from None
        self.handle = os.fdopen(descriptor, "wb")
        header = _npy_header((total, *entry.shape))
        self.header_length = len(header)
        self._write(header)

    def _write(self, data) -> None:
        try:
            self.handle.write(data)
        except OSError as error:
            self.abandon()
            raise CacheWriteError(str(error)) from None

    def append(self, images: np.ndarray) -> None:
        self._write(np.ascontiguousarray(images).data)
        self.count += len(images)

    def abandon(self) -> None:
        with contextlib.suppress(OSError):
            self.handle.close()
        with contextlib.suppress(OSError):
            self.path.unlink()

    def finish(self, problems: dict[int, Unreadable]) -> np.ndarray:
        """Put the complete file in place with its sidecar; returns the images, memory-mapped."""
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
            raise CacheWriteError(str(error)) from None
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
            write_atomically(entry.meta, json.dumps(meta).encode())
        except OSError:
            # The images are complete; without a sidecar the entry is just not used.
            with contextlib.suppress(OSError):
                entry.npy.unlink()
        else:
            with contextlib.suppress(OSError):
                prune_cache(entry.folder, keep=entry.name)
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


def _is_temporary(name: str) -> bool:
    # dogvae.atomic's ".NAME.tmp-XXXXXXXX", and the ".NAME.XXXX.tmp" of earlier versions.
    return name.startswith(".") and (TEMP_MARK in name or name.endswith(".tmp"))


def prune_cache(folder: Path, keep: str) -> None:
    """Delete the least recently used entries beyond the size budget, and stale temporary files."""
    entries: dict[str, list[os.DirEntry]] = {}
    now = time.time()
    for item in os.scandir(folder):
        if _is_temporary(item.name):
            # Left by a writer that died; a live one touches its file continuously.
            if now - item.stat().st_mtime > STALE_TEMP_SECONDS:
                with contextlib.suppress(OSError):
                    os.unlink(item.path)
        elif item.name.endswith((".npy", ".json")):
            entries.setdefault(item.name.rsplit(".", 1)[0], []).append(item)

    def last_used(name: str) -> float:
        return max(item.stat().st_mtime for item in entries[name])

    total = sum(item.stat().st_size for items in entries.values() for item in items)
    budget = limits.max_cache_bytes()
    for name in sorted(entries, key=last_used):
        if total <= budget:
            break
        if name == keep:
            continue
        for item in entries[name]:
            with contextlib.suppress(OSError):
                total -= item.stat().st_size
                os.unlink(item.path)
