"""``load_dataset``: a source -> its images, decoded in a thread pool or mapped from the cache.

Every listed image is either decoded into one ``(N, H, W, C)`` uint8 array or
recorded as ``Unreadable`` with a reason, so a user sees what was found, what
could not be used and why. Loading never raises for one bad image, only for a
source that cannot be used at all.
"""

from __future__ import annotations

import collections
import os
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from dogvae.config import DataConfig
from dogvae.data import decode, limits
from dogvae.data.cache import CacheEntry, CacheRows, CacheWriteError, cache_entry, default_cache_dir
from dogvae.data.report import (
    REASON_MISSING,
    REASON_OUTSIDE,
    Dataset,
    DatasetReport,
    ImageError,
    Unreadable,
)
from dogvae.data.sources import Source, Upload, open_source

VALIDATION_NAMES = ("valid", "validation", "val", "test")
# Rows per task of the decoding pool: fewer, larger tasks cost less in hand-overs
# (64 decoded dogs_large.csv 5% faster than 16); never more than a progress step.
DECODE_CHUNK = 64


def load_dataset(
    source: str | os.PathLike | Upload,
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
    the archive's; for an upload, also a hash of its content), the image
    settings and the decoder version; an entry that does not match, or is
    damaged, is ignored and rewritten. A cache that cannot be written never
    fails the load.

    Args:
        source: A ``.csv`` with a ``filepaths`` column, a ``.zip`` of images
            (optionally with one CSV inside), a folder searched recursively, or
            an ``Upload`` of a CSV or ZIP (its bytes, never written to disk).
        config: Image size, channels, ``limit`` and the random split settings.
        base_dir: Folder that relative CSV paths start from (default: the CSV's
            folder; required for an uploaded CSV). Ignored for folders and ZIPs.
        allowed_root: No image outside this folder is opened (default: base_dir
            for a CSV, the folder itself for a folder). Symlinks and ``..`` are
            resolved before the check.
        progress: Called as ``progress(done, total)`` from the calling thread,
            at most about 100 times.
        workers: Decoding threads (default: the number of CPUs).
        max_bytes: Refuse a dataset whose decoded images would need more memory
            than this (default: ``limits.max_dataset_bytes()``).
        cache: Read and write the decoded-image cache.
        cache_dir: Where the cache lives (default: ``default_cache_dir()``).

    Returns:
        The readable images, their table rows and the report. Images that came
        through the cache are a read-only memory-mapped array.

    Raises:
        FileNotFoundError: If ``source`` does not exist.
        ValueError: If the source cannot be used as a whole (wrong type, CSV
            without ``filepaths``, binary, not a valid ZIP, zip bomb) or a
            setting is invalid. Unreadable images never raise.
    """
    config = config or DataConfig()
    if workers is None:
        workers = os.cpu_count() or 1
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    opening = open_source(source, limit=config.limit, base_dir=base_dir, allowed_root=allowed_root)
    with opening as opened:
        check_memory(len(opened.table), config, max_bytes)
        entry = None
        if cache:
            folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
            entry = cache_entry(folder, opened, config)
        job = DecodeJob.of(opened, config, workers, progress)
        images, problems = load_images(job, entry)
    return _dataset(opened, config, images, problems)


def check_memory(rows: int, config: DataConfig, max_bytes: int | None) -> None:
    """Refuse before allocating: a dataset beyond the ceiling would make the machine swap."""
    limit = limits.max_dataset_bytes() if max_bytes is None else max_bytes
    per_image = config.image_size * config.image_size * config.channels
    needed = rows * per_image
    if needed > limit:
        raise ValueError(
            f"{rows:,} images at {config.image_size}x{config.image_size}x{config.channels} "
            f"need {needed / 2**20:,.0f} MB of memory, more than this server allows "
            f"({limit / 2**20:,.0f} MB); use at most {limit // per_image:,} images "
            "(--limit) or a smaller image size"
        )


@dataclass(frozen=True)
class DecodeJob:
    """What the decoding pool needs to know about one load.

    Attributes:
        paths: The rows' paths as the report names them.
        fetch: ``fetch(row)`` returns that row's encoded bytes or raises ``ImageError``.
        fetch_in_worker: Whether ``fetch`` may run in the pool's threads.
        shape: The shape of one decoded image, ``(size, size, channels)``.
        workers: Decoding threads.
        progress: Called as ``progress(done, total)`` from the calling thread.
    """

    paths: Sequence[str]
    fetch: Callable[[int], bytes]
    fetch_in_worker: bool
    shape: tuple[int, int, int]
    workers: int
    progress: Callable[[int, int], None] | None = None

    @classmethod
    def of(
        cls,
        source: Source,
        config: DataConfig,
        workers: int,
        progress: Callable[[int, int], None] | None = None,
    ) -> DecodeJob:
        shape = (config.image_size, config.image_size, config.channels)
        paths = source.table["filepaths"].tolist()
        return cls(paths, source.fetch, source.fetch_in_worker, shape, workers, progress)

    def report_progress(self, done: int) -> None:
        if self.progress is not None:
            self.progress(done, len(self.paths))


def load_images(
    job: DecodeJob, entry: CacheEntry | None = None
) -> tuple[np.ndarray, dict[int, Unreadable]]:
    """The readable images and the problems by row: from the cache entry when it matches.

    Otherwise the rows are decoded and appended one after another: into a new
    cache file when ``entry`` is given (memory stays flat whatever the dataset's
    size), else into one preallocated array. A cache file that cannot be
    written is dropped and the rows are decoded again into memory.
    """
    if entry is not None:
        found = entry.read(job.paths)
        if found is not None:
            if job.paths:
                job.report_progress(len(job.paths))
            return found
        try:
            return decode_rows(job, entry.writer(len(job.paths)))
        except CacheWriteError:
            pass
    return decode_rows(job, MemoryRows(len(job.paths), job.shape))


class MemoryRows:
    """Decoded rows appended into one preallocated array."""

    def __init__(self, total: int, shape: tuple[int, int, int]) -> None:
        self.images = np.empty((total, *shape), np.uint8)
        self.count = 0

    def append(self, images: np.ndarray) -> None:
        self.images[self.count : self.count + len(images)] = images
        self.count += len(images)

    def abandon(self) -> None:
        pass

    def finish(self, problems: dict[int, Unreadable]) -> np.ndarray:
        return self.images[: self.count]


def decode_rows(
    job: DecodeJob, rows: MemoryRows | CacheRows
) -> tuple[np.ndarray, dict[int, Unreadable]]:
    """Decode every row in a thread pool, appending the readable ones to ``rows`` in order."""
    total = len(job.paths)
    size, _, channels = job.shape
    problems: dict[int, Unreadable] = {}
    step = max(1, -(-total // 100))
    done = 0
    # Chunks amortise the pool's per-task cost over several images, but stay
    # below a progress step. ZIP members are read in this thread, so there the
    # chunks stay small to bound the bytes in flight.
    chunk = min(DECODE_CHUNK if job.fetch_in_worker else 2, step)

    def work(start: int, end: int, encoded: list | None):
        # cv2 releases the GIL while decoding and resizing, so threads scale.
        out = np.empty((end - start, *job.shape), np.uint8)
        kept, errors = 0, []
        for index in range(start, end):
            try:
                data = job.fetch(index) if encoded is None else encoded[index - start]
                if isinstance(data, ImageError):
                    raise data
                out[kept] = decode.decode_image(data, size, channels)
                kept += 1
            except ImageError as error:
                errors.append((index, error))
        return out[:kept], errors

    def fetch_here(start: int, end: int) -> list[bytes | ImageError]:
        encoded: list[bytes | ImageError] = []
        for index in range(start, end):
            try:
                encoded.append(job.fetch(index))
            except ImageError as error:
                encoded.append(error)
        return encoded

    def collect(future: Future) -> None:
        nonlocal done
        images, errors = future.result()
        for index, error in errors:
            problems[index] = Unreadable(job.paths[index], error.reason, error.detail)
        rows.append(images)
        before, done = done, done + len(images) + len(errors)
        if done // step > before // step or done == total:
            job.report_progress(done)

    # A bounded number of chunks in flight keeps memory flat when the main
    # thread reads ZIP members faster than the pool decodes them; collecting
    # them in submission order keeps the rows in source order.
    pending: collections.deque[Future] = collections.deque()
    with ThreadPoolExecutor(max_workers=job.workers) as pool:
        try:
            for start in range(0, total, chunk):
                end = min(start + chunk, total)
                encoded = None if job.fetch_in_worker else fetch_here(start, end)
                pending.append(pool.submit(work, start, end, encoded))
                if len(pending) >= 4 * job.workers:
                    collect(pending.popleft())
            while pending:
                collect(pending.popleft())
        except BaseException:
            for future in pending:
                future.cancel()
            rows.abandon()
            raise
    return rows.finish(problems), problems


def split_rows(table: pd.DataFrame, config: DataConfig) -> tuple[np.ndarray, str]:
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


def _dataset(
    source: Source, config: DataConfig, images: np.ndarray, problems: dict[int, Unreadable]
) -> Dataset:
    """The readable rows of the source's table with their split, and the report."""
    rows = len(source.table)
    readable = np.array([index not in problems for index in range(rows)], dtype=bool)
    table = source.table[readable].reset_index(drop=True)
    split, split_text = split_rows(table, config)
    table["split"] = split
    unreadable = tuple(problems[index] for index in sorted(problems))
    not_found = sum(item.reason in (REASON_MISSING, REASON_OUTSIDE) for item in unreadable)
    train = int(np.count_nonzero(split == "train"))
    report = DatasetReport(
        source=source.name,
        kind=source.kind,
        rows=rows,
        found=rows - not_found,
        readable=len(table),
        unreadable=unreadable,
        train=train,
        validation=len(table) - train,
        split=split_text,
        image_size=config.image_size,
        channels=config.channels,
        encoding=source.encoding,
    )
    return Dataset(images=images, table=table, report=report)
