"""Image output, with NumPy and Pillow only: uint8 conversion, grids and strips, PNG and
animated GIF bytes, files written atomically, and the nearest images by pixel distance.

Images are ``(H, W, C)`` (or ``(H, W)``) arrays, either float in [0, 1] as the decoder
produces them or uint8; batches add a leading axis.
"""

from __future__ import annotations

import base64
import io
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from dogvae.atomic import write_atomically
from dogvae.checks import check_int

# The enlargement is for display; the output grows with factor**2.
MAX_UPSCALE = 16


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Converts float images in [0, 1] to uint8, rounding to the nearest level.

    Values outside [0, 1] are clipped. uint8 input is returned unchanged (the
    same object).

    Args:
        images: Float array of any shape, or uint8.

    Returns:
        uint8 array of the same shape.

    Raises:
        ValueError: If the array is neither floating point nor uint8 (an integer
            array could mean 0..1 or 0..255), or contains NaN.
    """
    array = np.asarray(images)
    if array.dtype == np.uint8:
        return array
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(
            f"images must be float in [0, 1] or uint8, got dtype {array.dtype}; "
            "convert with .astype(np.float32) / 255 or .astype(np.uint8) first"
        )
    if np.isnan(array).any():
        raise ValueError("images contain NaN; the model that produced them has probably diverged")
    return np.clip(np.rint(array * 255.0), 0, 255).astype(np.uint8)


def image_grid(
    images: np.ndarray, cols: int | None = None, pad: int = 2, pad_value: int = 255
) -> np.ndarray:
    """Tiles a batch of images into one image, row by row.

    Args:
        images: ``(N, H, W, C)`` with C 1 or 3, or ``(N, H, W)`` (treated as
            C = 1); float in [0, 1] or uint8. N at least 1.
        cols: Images per row, at least 1. None: ``ceil(sqrt(N))``.
        pad: Pixels of border around and between the images, 0 or more.
        pad_value: Gray level (0-255) of the border and of empty cells in the
            last row.

    Returns:
        uint8 image of shape ``(rows * H + pad * (rows + 1),
        cols * W + pad * (cols + 1), C)`` with ``rows = ceil(N / cols)``.

    Raises:
        ValueError: For a wrong shape or out-of-range ``cols``, ``pad`` or
            ``pad_value``.
    """
    batch = to_uint8(_as_batch(images))
    count, height, width, channels = batch.shape
    if cols is None:
        cols = math.ceil(math.sqrt(count))
    cols = check_int("cols", cols, minimum=1)
    pad = check_int("pad", pad, minimum=0)
    pad_value = check_int("pad_value", pad_value, minimum=0, maximum=255)
    rows = math.ceil(count / cols)
    grid = np.full(
        (rows * height + pad * (rows + 1), cols * width + pad * (cols + 1), channels),
        pad_value,
        dtype=np.uint8,
    )
    for i, image in enumerate(batch):
        row, col = divmod(i, cols)
        top = pad + row * (height + pad)
        left = pad + col * (width + pad)
        grid[top : top + height, left : left + width] = image
    return grid


def image_strip(images: np.ndarray, pad: int = 2, pad_value: int = 255) -> np.ndarray:
    """All images side by side in one row: :func:`image_grid` with ``cols = N``.

    Args:
        images: ``(N, H, W[, C])`` batch, as for :func:`image_grid`.
        pad: Border in pixels around and between the images.
        pad_value: Gray level (0-255) of the border.

    Returns:
        uint8 image of shape ``(H + 2 * pad, N * W + pad * (N + 1), C)``.
    """
    batch = _as_batch(images)
    return image_grid(batch, cols=batch.shape[0], pad=pad, pad_value=pad_value)


def upscale(image: np.ndarray, factor: int) -> np.ndarray:
    """Enlarges an image by repeating each pixel ``factor`` times in each direction.

    Nearest-neighbour keeps the pixels sharp, so a 64x64 sample shows what the
    model made instead of a blur of it.

    Args:
        image: ``(H, W)`` or ``(H, W, C)`` array, any dtype.
        factor: Enlargement, 1 to 16.

    Returns:
        ``(H * factor, W * factor[, C])`` array of the same dtype.

    Raises:
        ValueError: If the image is not 2-D or 3-D, or ``factor`` is out of range.
    """
    array = np.asarray(image)
    if array.ndim not in (2, 3):
        raise ValueError(f"image must be (H, W) or (H, W, C), got shape {array.shape}")
    factor = check_int("factor", factor, minimum=1, maximum=MAX_UPSCALE)
    return np.repeat(np.repeat(array, factor, axis=0), factor, axis=1)


def png_data_url(png: bytes) -> str:
    """PNG bytes as a ``data:`` URL, for a page to show without a request of its own."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def png_bytes(image: np.ndarray) -> bytes:
    """Encodes one image as PNG.

    Args:
        image: ``(H, W)``, ``(H, W, 1)`` (grayscale) or ``(H, W, 3)`` (RGB order)
            array, uint8 or float in [0, 1].

    Returns:
        The PNG file's bytes.

    Raises:
        ValueError: If the array is not a single grayscale or RGB image.
    """
    frame = _as_frame(image, "image")
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="PNG")
    return buffer.getvalue()


def gif_bytes(
    frames: Sequence[np.ndarray] | np.ndarray,
    duration_ms: int = 120,
    loop: int = 0,
    bounce: bool = False,
) -> bytes:
    """Encodes frames as an animated GIF.

    Grayscale frames are stored exactly (mode ``"L"``). RGB frames are reduced
    to a palette of at most 255 colours per frame (exact when a frame has no
    more colours than that; median cut otherwise).

    Every frame is kept, so a viewer shows as many frames as were given.
    Pillow would merge a frame identical to the one before it into a single
    longer frame; to prevent that, such a frame gets the lowest bit of one
    value of its top-left pixel flipped (a change of 1/255 in one channel,
    invisible). Frames may therefore differ from the input by that one level.

    Args:
        frames: Sequence of ``(H, W)``, ``(H, W, 1)`` or ``(H, W, 3)`` arrays of
            the same shape, or one ``(N, H, W[, C])`` array; float in [0, 1] or
            uint8. At least one frame.
        duration_ms: Display time of each frame, 10 to 655350 ms (GIFs store
            hundredths of a second, so it is rounded down to a multiple of 10).
        loop: Number of times to repeat; 0 (default) loops forever.
        bounce: Play forwards then backwards: the frames are followed by the
            same frames reversed, without repeating the last and first, so
            ``N`` frames become ``2N - 2`` (a single frame stays one).

    Returns:
        The GIF file's bytes.

    Raises:
        ValueError: If there are no frames, their shapes differ or are not
            images, or ``duration_ms`` or ``loop`` is out of range.
    """
    stack = _as_frames(frames)
    duration_ms = check_int("duration_ms", duration_ms, minimum=10, maximum=655_350)
    loop = check_int("loop", loop, minimum=0, maximum=65_535)
    if bounce:
        stack = stack + stack[-2:0:-1]
    pictures = _gif_pictures(stack)
    buffer = io.BytesIO()
    pictures[0].save(
        buffer,
        format="GIF",
        save_all=True,
        append_images=pictures[1:],
        duration=duration_ms,
        loop=loop,
        optimize=False,
        disposal=2,
    )
    return buffer.getvalue()


def save_image(path: str | os.PathLike, image_or_frames: np.ndarray | Sequence[np.ndarray]) -> Path:
    """Writes an image (``.png``) or an animation (``.gif``), chosen by suffix.

    For ``.png`` give one image; for ``.gif`` give frames as accepted by
    :func:`gif_bytes`, or a single image (written as a one-frame GIF). A 3-D
    array whose last axis is 1 or 3 is one image; any other 3-D array is a
    stack of grayscale frames.

    The file is written to a temporary name in the same folder and then
    renamed, so a reader never sees half a file and an old file is only
    replaced by a complete new one.

    Args:
        path: Output file, ending in ``.png`` or ``.gif`` (any case).
        image_or_frames: The image or frames, float in [0, 1] or uint8.

    Returns:
        The path written, as a ``Path``.

    Raises:
        ValueError: If the suffix is not ``.png`` or ``.gif``, or the data does
            not fit it.
        FileNotFoundError: If the folder to write into does not exist.
        NotADirectoryError: If the parent path is a file.
    """
    target = Path(path)
    suffix = target.suffix.lower()
    if suffix not in (".png", ".gif"):
        raise ValueError(f"output must end in .png or .gif, got {str(target)!r}")
    parent = target.parent
    if not parent.exists():
        raise FileNotFoundError(
            f"folder {str(parent)!r} does not exist; create it first or choose another path"
        )
    if not parent.is_dir():
        raise NotADirectoryError(f"{str(parent)!r} is a file, not a folder")
    if suffix == ".png":
        if not isinstance(image_or_frames, np.ndarray) or image_or_frames.ndim == 4:
            raise ValueError(
                "a .png holds one image (H, W) or (H, W, C); for several images "
                "combine them with image_grid() or save a .gif"
            )
        data = png_bytes(image_or_frames)
    else:
        data = gif_bytes(image_or_frames)
    write_atomically(target, data)
    return target


def nearest_images(
    queries: np.ndarray, pool: np.ndarray, chunk: int = 2_048
) -> tuple[np.ndarray, np.ndarray]:
    """For each query image, the index of the closest pool image by pixel distance.

    The memorisation check: a generated dog that is nearly a training photo
    means the model copies instead of generalising.

    Args:
        queries: (n, H, W, C) images, uint8 or float in [0, 1].
        pool: (N, H, W, C) images of the same shape, e.g. the training set (uint8).
        chunk: Pool images compared at a time, so memory stays bounded for large pools.

    Returns:
        (indices (n,), RMS distances (n,) on a 0..1 pixel scale).
    """
    queries = to_uint8(np.asarray(queries)).reshape(len(queries), -1).astype(np.float32)
    if len(pool) == 0:
        raise ValueError("the pool of images to search is empty")
    flat_pool = np.asarray(pool).reshape(len(pool), -1)
    if flat_pool.shape[1] != queries.shape[1]:
        raise ValueError(
            f"query images have {queries.shape[1]} values each, pool images {flat_pool.shape[1]}"
        )
    best = np.full(len(queries), np.inf)
    index = np.zeros(len(queries), dtype=np.int64)
    query_norms = np.einsum("ij,ij->i", queries, queries)
    for start in range(0, len(flat_pool), chunk):
        block = flat_pool[start : start + chunk].astype(np.float32)
        # |q - p|^2 = |q|^2 - 2 q.p + |p|^2, one matrix product per chunk.
        distances = (
            query_norms[:, None] - 2 * queries @ block.T + np.einsum("ij,ij->i", block, block)
        )
        column = np.argmin(distances, axis=1)
        value = distances[np.arange(len(queries)), column]
        better = value < best
        best[better] = value[better]
        index[better] = start + column[better]
    rms = np.sqrt(np.maximum(best, 0) / queries.shape[1]) / 255.0
    return index, rms


def _as_frame(image: np.ndarray, name: str) -> np.ndarray:
    """One image as uint8 ``(H, W)`` (grayscale) or ``(H, W, 3)`` (RGB)."""
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 3)) or array.size == 0:
        raise ValueError(
            f"{name} must be (H, W), (H, W, 1) or (H, W, 3), got shape {np.shape(image)}"
        )
    return np.ascontiguousarray(to_uint8(array))


def _as_batch(images: np.ndarray) -> np.ndarray:
    """A batch as ``(N, H, W, C)`` with C 1 or 3, dtype untouched."""
    batch = np.asarray(images)
    if batch.ndim == 3:
        batch = batch[..., None]
    if batch.ndim != 4 or batch.shape[3] not in (1, 3) or 0 in batch.shape:
        raise ValueError(
            "images must be a non-empty batch (N, H, W) or (N, H, W, C) with C 1 or 3, "
            f"got shape {batch.shape}"
        )
    return batch


def _as_frames(frames: Sequence[np.ndarray] | np.ndarray) -> list[np.ndarray]:
    """Frames as a list of uint8 ``(H, W)`` or ``(H, W, 3)`` arrays of one shape."""
    if isinstance(frames, np.ndarray):
        is_single_image = frames.ndim == 2 or (frames.ndim == 3 and frames.shape[2] in (1, 3))
        items = [frames] if is_single_image else list(frames)
    else:
        items = list(frames)
    if not items:
        raise ValueError("frames must contain at least one image, got none")
    stack = [_as_frame(item, f"frame {i}") for i, item in enumerate(items)]
    shapes = {frame.shape for frame in stack}
    if len(shapes) > 1:
        raise ValueError(f"all frames must have the same shape, got {sorted(shapes)}")
    return stack


def _gif_pictures(stack: list[np.ndarray]) -> list[Image.Image]:
    """Pillow images for the GIF writer, each different from the one before."""
    pictures: list[Image.Image] = []
    previous: np.ndarray | None = None
    for frame in stack:
        if frame.ndim == 2:
            shown = frame
            if previous is not None and np.array_equal(shown, previous):
                shown = shown.copy()
                shown[0, 0] ^= 1
            picture = Image.fromarray(shown)
        else:
            # Quantizing here rather than leaving it to Pillow frees palette
            # index 255 for the nudge, and lets us compare frames as they will
            # be shown (two different inputs can quantize to the same frame).
            picture = Image.fromarray(frame).quantize(colors=255, method=Image.Quantize.MEDIANCUT)
            shown = np.asarray(picture.convert("RGB"))
            if previous is not None and np.array_equal(shown, previous):
                picture, shown = _nudge_top_left(picture, shown)
        pictures.append(picture)
        previous = shown
    return pictures


def _nudge_top_left(picture: Image.Image, shown: np.ndarray) -> tuple[Image.Image, np.ndarray]:
    """Gives the top-left pixel its own palette entry, one level off in red."""
    palette = list(picture.getpalette() or [])[: 255 * 3]
    palette += [0] * (255 * 3 - len(palette))
    red, green, blue = (int(value) for value in shown[0, 0])
    palette += [red ^ 1, green, blue]
    nudged = picture.copy()
    nudged.putpalette(palette)
    nudged.putpixel((0, 0), 255)
    shown = shown.copy()
    shown[0, 0, 0] = red ^ 1
    return nudged, shown
