"""What a load found: the reasons an image is left out, the report, and the dataset itself."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

REASON_MISSING = "missing"
REASON_NOT_IMAGE = "not an image"
REASON_EMPTY = "empty"
REASON_TOO_LARGE = "too large"
REASON_OUTSIDE = "outside the allowed folder"
REASONS = (REASON_MISSING, REASON_NOT_IMAGE, REASON_EMPTY, REASON_TOO_LARGE, REASON_OUTSIDE)

# The encodings a CSV may be read with; the two UTF-8 forms need no mention in a report.
UTF8_ENCODINGS = ("utf-8", "utf-8-sig")


class ImageError(ValueError):
    """A problem with one image; the message starts with its reason."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


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
        source: The source as given (path as a string, or an upload's name).
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
        encoding: The text encoding the CSV was read with (``"utf-8"``,
            ``"utf-8-sig"``, ``"cp1252"`` or ``"latin-1"``); None without a CSV.
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
    encoding: str | None = None

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

    def encoding_note(self) -> str | None:
        """``"the CSV was read as cp1252, not UTF-8"``, or None for UTF-8 or no CSV."""
        if self.encoding is None or self.encoding in UTF8_ENCODINGS:
            return None
        return f"the CSV was read as {self.encoding}, not UTF-8"

    def summary(self) -> str:
        """One line, e.g. ``"1,998 of 2,000 images readable (2 missing)"``."""
        line = f"{self.readable:,} of {self.rows:,} images readable"
        reasons = self.reasons()
        if reasons:
            line += " (" + ", ".join(f"{count:,} {reason}" for reason, count in reasons.items())
            line += ")"
        note = self.encoding_note()
        if note:
            line += f"; {note}"
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
