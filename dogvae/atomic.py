"""Atomic writes of files and folders: a reader sees the old version or the new, never half.

A file is written to a hidden temporary name in its own folder, synced, and renamed over
the target; a folder is filled under a hidden temporary name and swapped in with two
renames, the old one kept aside until the new one is in place. A process killed at any
moment leaves the previous version intact (plus, at worst, a hidden leftover that
``dogvae.runs.recover_runs`` clears).
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

OLD_MARK = ".old-"  # .NAME.old-XXXX: the previous folder, set aside during a swap
TEMP_MARK = ".tmp-"  # .NAME.tmp-XXXX: a folder or file still being written


def fsync_dir(folder: str | os.PathLike) -> None:
    """Make a rename inside ``folder`` durable (a no-op where directories cannot be opened)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def write_atomically(
    path: str | os.PathLike, data: bytes | Callable[[BinaryIO], object], *, sync: bool = True
) -> Path:
    """Write ``data`` (bytes, or a function that writes to a binary handle) to ``path``.

    The permissions follow the umask, as a plain ``open`` would (``tempfile`` would make
    the file private). ``sync=False`` skips the fsyncs, for files that are only a cache.
    """
    path = Path(path)
    temporary = path.with_name(f".{path.name}{TEMP_MARK}{secrets.token_hex(4)}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            if callable(data):
                data(handle)
            else:
                handle.write(data)
            if sync:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    if sync:
        fsync_dir(path.parent)
    return path


@contextlib.contextmanager
def atomic_folder(target: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty hidden folder beside ``target``; on success it replaces ``target``.

    If the body raises, the temporary folder is removed and ``target`` is untouched. An
    existing ``target`` is renamed aside first and deleted only once the new one is in
    place; a process that dies between the two renames leaves ``.NAME.old-*``, which
    ``dogvae.runs.recover_runs`` puts back.
    """
    target = Path(target)
    with temporary_folder(target) as temp:
        yield temp
    swap_into_place(temp, target)


@contextlib.contextmanager
def temporary_folder(target: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty hidden folder beside ``target``, synced when the body ends, removed
    when it raises; putting it in place is the caller's (``swap_into_place`` or
    ``place_under_free_name``)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(prefix=f".{target.name}{TEMP_MARK}", dir=target.parent))
    try:
        yield temp
        fsync_dir(temp)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise


# Seconds a writer waits for the runs folder's lock before it goes on without it: the
# lock guards a rare race and must never stop a save (the holders keep it for well under
# a second: one checkpoint write, or one run's renames).
LOCK_WAIT_SECONDS = 30.0


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, wait: float = LOCK_WAIT_SECONDS) -> Iterator[bool]:
    """Hold an exclusive lock on ``folder`` (flock on the folder itself) for the body.

    Writers that put things into the folders inside ``folder`` (a training's
    checkpoint, a finished run swapped in) take it, so that one's renames never run
    between another's: two trainings saving under one name, in two threads or two
    servers, would otherwise write a checkpoint into a folder the other is swapping
    out. The lock goes with the open descriptor, so it is released when the body
    ends or the process dies. After ``wait`` seconds without it, or where folders
    cannot be locked, the body runs unlocked (as before there was a lock). Yields
    whether the lock is held.
    """
    try:
        import fcntl

        descriptor = os.open(folder, os.O_RDONLY)
    except (ImportError, OSError):
        yield False
        return
    try:
        deadline = time.monotonic() + wait
        held = False
        while True:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                held = True
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    break
                time.sleep(0.01)
            except OSError:
                break
        yield held
    finally:
        os.close(descriptor)  # releases the lock


def swap_into_place(temp: Path, target: Path) -> Path:
    """Rename the complete folder ``temp`` to ``target``, replacing what was there."""
    if target.exists():
        old = target.parent / f".{target.name}{OLD_MARK}{secrets.token_hex(4)}"
        os.rename(target, old)
        os.rename(temp, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(temp, target)
    fsync_dir(target.parent)
    return target


def place_under_free_name(temp: Path, target: Path) -> Path:
    """Rename the complete folder ``temp`` to ``target``, or, when that name is taken, to
    ``target-2``, ``target-3``...; returns the name it took.

    Never replaces anything: a rename onto a folder that holds files fails (and
    only an empty folder is ever taken over), so of two processes saving under
    one name at the same moment each ends up with a folder of its own.
    """
    for number in itertools.count(1):
        candidate = target if number == 1 else target.with_name(f"{target.name}-{number}")
        try:
            os.rename(temp, candidate)
        except OSError as error:
            if error.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
                continue  # taken, by a folder with files or by a file
            raise
        fsync_dir(target.parent)
        return candidate
    raise AssertionError("unreachable")  # itertools.count never ends
