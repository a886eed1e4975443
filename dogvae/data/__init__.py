"""Datasets: a source (CSV, ZIP or folder) -> a DatasetReport -> uint8 image arrays.

One concept per module: ``report`` (what was found and why an image is left
out), ``sources`` (CSV, ZIP, folder and uploads as tables with a fetch), ``paths``
(the path guard), ``decode`` (OpenCV), ``cache`` (the decoded-image cache),
``load`` (``load_dataset``, the decoding pool, the split) and ``limits`` (every
limit, read when used). This package imports OpenCV and Pillow but not
TensorFlow, so the Data page and the CLI's ``report`` start fast.
"""

from __future__ import annotations

from dogvae.data.cache import default_cache_dir
from dogvae.data.decode import decode_image, jpeg_reduction, jpeg_size
from dogvae.data.limits import max_dataset_bytes
from dogvae.data.load import VALIDATION_NAMES, load_dataset
from dogvae.data.report import (
    REASON_EMPTY,
    REASON_MISSING,
    REASON_NOT_IMAGE,
    REASON_OUTSIDE,
    REASON_TOO_LARGE,
    REASONS,
    Dataset,
    DatasetReport,
    Unreadable,
)
from dogvae.data.sources import IMAGE_EXTENSIONS, Upload, list_sources

__all__ = [
    "IMAGE_EXTENSIONS",
    "REASONS",
    "REASON_EMPTY",
    "REASON_MISSING",
    "REASON_NOT_IMAGE",
    "REASON_OUTSIDE",
    "REASON_TOO_LARGE",
    "VALIDATION_NAMES",
    "Dataset",
    "DatasetReport",
    "Unreadable",
    "Upload",
    "decode_image",
    "default_cache_dir",
    "jpeg_reduction",
    "jpeg_size",
    "list_sources",
    "load_dataset",
    "max_dataset_bytes",
]
