"""The limits that guard loading: file and image sizes, ZIP bombs, memory, the cache.

Code reads them as ``limits.NAME`` when it runs, never copies them at import, so a
test (or an embedding server) that sets ``dogvae.data.limits.NAME`` changes what
the next load does. The environment overrides the two memory budgets.
"""

from __future__ import annotations

import os

# One encoded image (or a CSV inside a ZIP) beyond this is not read.
MAX_FILE_BYTES = 64 * 1024 * 1024
# Larger images are refused: decoding one would need gigabytes.
MAX_IMAGE_PIXELS = 1 << 26

# Zip-bomb guards: a whole archive beyond these is refused; a single member that
# inflates more than MAX_COMPRESSION_RATIO times (and to more than
# COMPRESSION_CHECK_BYTES, so tiny flat images still pass) is skipped unread.
MAX_ZIP_MEMBERS = 200_000
MAX_ZIP_BYTES = 4 * 1024**3
MAX_COMPRESSION_RATIO = 200
COMPRESSION_CHECK_BYTES = 1024 * 1024

# Decoded images beyond this are refused with a message instead of swapping.
# 4 GiB holds a million 64x64 grayscale images; DOGVAE_MAX_DATASET_MB overrides.
MAX_DATASET_BYTES = 4 * 1024**3

# A file modified this recently could change again within the file system's
# timestamp granularity without its size or time changing, so a dataset with
# such a file is not cached (git's "racily clean" problem).
CACHE_SETTLE_SECONDS = 2.0
# The cache folder's size budget; DOGVAE_CACHE_MAX_MB overrides.
MAX_CACHE_BYTES = 16 * 1024**3


def max_dataset_bytes() -> int:
    """The memory ceiling for decoded images: DOGVAE_MAX_DATASET_MB, else MAX_DATASET_BYTES."""
    return _megabytes_from_env("DOGVAE_MAX_DATASET_MB", MAX_DATASET_BYTES)


def max_cache_bytes() -> int:
    """The cache folder's size budget: DOGVAE_CACHE_MAX_MB, else MAX_CACHE_BYTES."""
    return _megabytes_from_env("DOGVAE_CACHE_MAX_MB", MAX_CACHE_BYTES)


def _megabytes_from_env(name: str, default: int) -> int:
    value = os.environ.get(name)
    try:
        return int(float(value) * 1024 * 1024) if value else default
    except ValueError:
        return default
