"""The tf.data pipeline: shuffled uint8 batches, flipped and shifted, from memory or a memory map.

The images stay uint8 all the way (the model casts them to float), and a set
that is large or memory-mapped is never copied whole: only row numbers go
through tf.data and each batch is gathered from the array itself.
"""

from __future__ import annotations

import mmap
from collections.abc import Callable

import numpy as np
import tensorflow as tf

# Up to this many bytes of in-memory images go into tf.data as one tensor; beyond
# it, or for a memory-mapped array, batches are gathered from the array itself.
MAX_TENSOR_BYTES = 256 * 1024**2


def batches(
    images: np.ndarray,
    batch_size: int,
    shuffle: bool,
    seed: int,
    indices: np.ndarray | None = None,
    flip: bool = False,
    shift: int = 0,
) -> tf.data.Dataset:
    """A tf.data pipeline of (optionally shuffled) uint8 batches of ``images``.

    The batches hold the rows ``indices`` of ``images`` (default: all). Small
    in-memory sets become one tensor; larger or memory-mapped ones stream (see
    ``Gather``). Both give the same batches: the shuffle (per epoch, with
    ``seed``), the flips and the shifts are the same steps after either source.

    Args:
        images: uint8 images (N, H, W, C), in memory or memory-mapped.
        batch_size: Images a batch (the last one may hold fewer).
        shuffle: Shuffle the rows afresh every epoch.
        seed: Seeds the shuffle, the flips and the shifts.
        indices: The rows to use, default all.
        flip: Mirror each image left to right with probability 1/2, afresh every epoch.
        shift: Move each image by up to this many pixels along each axis, afresh every epoch.
    """
    rows = np.arange(len(images)) if indices is None else np.asarray(indices, np.int64)
    dataset, gather = _source(images, rows, whole=indices is None)
    if shuffle:
        dataset = dataset.shuffle(len(rows), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size)
    if gather is not None:
        dataset = dataset.map(gather)
    if flip:
        dataset = dataset.map(_flipper(seed))
    if shift:
        dataset = dataset.map(_shifter(seed, shift))
    return dataset.prefetch(tf.data.AUTOTUNE)


def _source(
    images: np.ndarray, rows: np.ndarray, whole: bool
) -> tuple[tf.data.Dataset, Callable | None]:
    """The images themselves as one tensor, or their row numbers and the map that
    turns a batch of row numbers into a batch of images."""
    mapping = mapping_of(images)
    if mapping is None and len(rows) * images[0].nbytes <= MAX_TENSOR_BYTES:
        return tf.data.Dataset.from_tensor_slices(images if whole else images[rows]), None
    gather = Gather(images, mapping)
    shape = (None, *images.shape[1:])

    def load(batch_rows):
        batch = tf.numpy_function(gather, [batch_rows], tf.uint8, stateful=False)
        return tf.ensure_shape(batch, shape)

    return tf.data.Dataset.from_tensor_slices(rows), load


def _flipper(seed: int) -> Callable:
    """A tf.data map that mirrors each image of a batch (N, H, W, C) with probability 1/2."""
    generator = tf.random.Generator.from_seed(seed)

    def flip(batch):
        heads = generator.uniform((tf.shape(batch)[0], 1, 1, 1)) < 0.5
        return tf.where(heads, tf.reverse(batch, axis=[2]), batch)

    return flip


def _shifter(seed: int, shift: int) -> Callable:
    """A tf.data map that moves each image of a batch (N, H, W, C) by its own random
    offset of -shift to +shift pixels along each axis, mirroring the edge into the gap."""
    generator = tf.random.Generator.from_seed(seed + 1)  # not the flips' draws

    def move(batch):
        count, height, width = tf.shape(batch)[0], tf.shape(batch)[1], tf.shape(batch)[2]
        padding = [[0, 0], [shift, shift], [shift, shift], [0, 0]]
        padded = tf.pad(batch, padding, mode="SYMMETRIC")
        offsets = generator.uniform((count, 2), 0, 2 * shift + 1, dtype=tf.int32)
        rows = offsets[:, :1] + tf.range(height)[tf.newaxis, :]
        columns = offsets[:, 1:] + tf.range(width)[tf.newaxis, :]
        moved = tf.gather(padded, rows, axis=1, batch_dims=1)
        return tf.gather(moved, columns, axis=2, batch_dims=1)

    return move


def mapping_of(images: np.ndarray) -> mmap.mmap | None:
    """The mmap under a memory-mapped array (or a view of one), else None."""
    base = images
    while base is not None:
        if isinstance(base, mmap.mmap):
            return base
        base = getattr(base, "base", None)
    return None


class Gather:
    """Copies the rows of one batch out of an array, then hands mapped pages back.

    A memory-mapped set's pages count towards the process's resident memory once
    read, and Linux maps a read page's neighbours too (fault-around), so shuffled
    reads would soon hold the whole file. Dropping the mapping after every batch
    keeps that to about one batch; the pages stay in the page cache, so reading
    them again is cheap, and dropping costs far less than a training step.
    """

    def __init__(self, images: np.ndarray, mapping) -> None:
        self.images = images
        self.release = getattr(mapping, "madvise", None)

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        batch = self.images[rows]
        if self.release is not None:
            self.release(mmap.MADV_DONTNEED)
        return batch


def first_rows(images: np.ndarray, indices: np.ndarray | None, count: int) -> np.ndarray:
    """The first ``count`` images (of the rows ``indices``), copied out of the array."""
    if indices is None:
        return np.array(images[:count])
    return images[np.asarray(indices[:count], np.int64)]
