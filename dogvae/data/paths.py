"""The path guard: resolve a path once, open it only inside the allowed folder.

A path from a CSV or a folder listing is resolved (symlinks followed) before
anything is opened, and a file outside the allowed folder is reported, never
read. The cache key records the same resolved paths, through the same resolver.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Sequence

from dogvae.data import limits
from dogvae.data.report import (
    REASON_MISSING,
    REASON_NOT_IMAGE,
    REASON_OUTSIDE,
    REASON_TOO_LARGE,
    ImageError,
)


class PathResolver:
    """Resolves paths exactly as ``os.path.realpath`` does, at a fraction of the cost.

    Each folder is resolved once; a file's own name then needs only an lstat to
    tell whether it is a symlink (only then is the whole path resolved). The one
    place paths are resolved: the file reader checks the result against the
    allowed folder, and the cache key records it.
    """

    def __init__(self) -> None:
        self._folders: dict[str, str] = {}

    def resolve(self, path: str) -> tuple[str, os.stat_result | None]:
        """The resolved path, and its lstat when that came for free (None: stat it yourself).

        Raises:
            OSError, ValueError: If the path cannot be resolved (e.g. a NUL byte in it).
        """
        head, tail = os.path.split(path)
        if tail in ("", ".", ".."):
            return os.path.realpath(path), None
        folder = self._folders.get(head)
        if folder is None:
            folder = self._folders.setdefault(head, os.path.realpath(head))
        real = os.path.join(folder, tail)
        try:
            info = os.lstat(real)
        except OSError:
            return real, None  # reported as missing after the folder check
        if stat.S_ISLNK(info.st_mode):
            return os.path.realpath(path), None
        return real, info


def is_inside(path: str, root: str) -> bool:
    """Whether the resolved ``path`` is ``root`` or lies under it."""
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def file_fetcher(files: Sequence[str], root: str) -> Callable[[int], bytes]:
    """Read the bytes of ``files[index]`` once it is known to lie inside ``root``."""
    resolver = PathResolver()

    def fetch(index: int) -> bytes:
        candidate = files[index]
        if not candidate:
            raise ImageError(REASON_MISSING, "no path given")
        try:
            real, info = resolver.resolve(candidate)
        except (OSError, ValueError):  # e.g. a NUL byte in the path
            raise ImageError(REASON_MISSING, "not a valid path") from None
        if not is_inside(real, root):
            raise ImageError(REASON_OUTSIDE, f"resolves to {real}")
        # Opening the resolved path (not the one given) means the file checked
        # above is the file read, even if a symlink on the way changes.
        try:
            return _read_file(real, info if info is not None else os.stat(real))
        except FileNotFoundError:
            raise ImageError(REASON_MISSING) from None
        except OSError as error:
            raise ImageError(REASON_MISSING, f"cannot be read: {error.strerror}") from None

    return fetch


def _read_file(path: str, info: os.stat_result) -> bytes:
    if stat.S_ISDIR(info.st_mode):
        raise ImageError(REASON_NOT_IMAGE, "is a folder")
    if not stat.S_ISREG(info.st_mode):  # a FIFO or device would block or never end
        raise ImageError(REASON_NOT_IMAGE, "not a regular file")
    if info.st_size > limits.MAX_FILE_BYTES:
        raise ImageError(REASON_TOO_LARGE, f"{info.st_size:,} bytes")
    # Unbuffered, and sized by the stat: a read of MAX_FILE_BYTES + 1 would
    # allocate (and free) 64 MB per image. After a short read, or when the
    # file grew since the stat, it is read on in small pieces, to the limit.
    with open(path, "rb", buffering=0) as handle:
        data = handle.read(info.st_size + 1)
        while len(data) != info.st_size and len(data) <= limits.MAX_FILE_BYTES:
            more = handle.read(1 << 16)
            if not more:
                break
            data += more
        return data
