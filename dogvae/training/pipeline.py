"""The tf.data pipeline: shuffled uint8 batches, flipped and shifted, from memory or a memory map.

The images stay uint8 all the way (the model casts them to float), and a set
that is large or memory-mapped is never copied whole: only row numbers go
through tf.data and each batch is gathered from the array itself. Under a
tf.distribute strategy the batches leave the pipeline as float32 instead (see
``batches``).

Every random choice (the order of an epoch, each image's flip and shift) is a
function of the seed, the epoch and the batch, not of a generator's hidden
state, so that a training resumed at epoch 12, batch 30 sees exactly the
batches it would have seen without the interruption.
"""

from __future__ import annotations

import math
import mmap
import threading
from collections.abc import Callable

import numpy as np
import tensorflow as tf

# Up to this many bytes of in-memory images go into tf.data as one tensor; beyond
# it, or for a memory-mapped array, batches are gathered from the array itself.
MAX_TENSOR_BYTES = 256 * 1024**2


class Epochs:
    """The epoch a pipeline produces: set by the training as each epoch begins.

    Until ``begin`` is called, every pass over the dataset counts as the next
    epoch, so that iterating a pipeline twice gives two epochs' draws.

    Args:
        first: The epoch of the first pass.
    """

    def __init__(self, first: int = 0) -> None:
        self._lock = threading.Lock()
        self._epoch = first
        self._driven = False

    def begin(self, epoch: int) -> None:
        """Make every pass from now on produce 0-based ``epoch`` (Keras' on_epoch_begin)."""
        with self._lock:
            self._epoch, self._driven = int(epoch), True

    def take(self) -> int:
        """The epoch of a pass that starts now."""
        with self._lock:
            epoch = self._epoch
            if not self._driven:
                self._epoch += 1
            return epoch


def batches(
    images: np.ndarray,
    batch_size: int,
    shuffle: bool,
    seed: int,
    indices: np.ndarray | None = None,
    flip: bool = False,
    shift: int = 0,
    distributed: bool = False,
    *,
    epochs: Epochs | None = None,
    skip: int = 0,
) -> tf.data.Dataset:
    """A tf.data pipeline of (optionally shuffled) uint8 batches of ``images``.

    The batches hold the rows ``indices`` of ``images`` (default: all). Small
    in-memory sets become one tensor; larger or memory-mapped ones stream (see
    ``Gather``). Both give the same batches: the order, the flips and the shifts
    depend only on ``seed``, the epoch and the batch's number.

    Args:
        images: uint8 images (N, H, W, C), in memory or memory-mapped.
        batch_size: Images a batch (the last one may hold fewer).
        shuffle: Shuffle the rows afresh every epoch.
        seed: Seeds the shuffle, the flips and the shifts.
        indices: The rows to use, default all.
        flip: Mirror each image left to right with probability 1/2, afresh every epoch.
        shift: Move each image by up to this many pixels along each axis, afresh every epoch.
        distributed: Batches for a tf.distribute strategy: float32 in [0, 1], the model's
            own scaling, since Keras builds a distributed model by averaging its first batch
            over the replicas and the collective ops between workers take no uint8; and
            sharded by data, so that the workers split every global batch between them
            (the same split as the replicas of one machine).
        epochs: Which epoch each pass produces (default: one pass, one epoch, from 0).
        skip: Leave out the first ``skip`` batches of every pass (a resumed epoch).
    """
    rows = np.arange(len(images)) if indices is None else np.asarray(indices, np.int64)
    epochs = epochs or Epochs()
    count = max(0, math.ceil(len(rows) / batch_size) - skip)
    load, positions = _source(images, rows, whole=indices is None)

    def plan():
        epoch = epochs.take()
        order = positions
        if shuffle:
            order = positions[np.random.default_rng([seed, epoch]).permutation(len(positions))]
        for batch in range(skip, skip + count):
            yield order[batch * batch_size : (batch + 1) * batch_size], _keys(seed, epoch, batch)

    dataset = tf.data.Dataset.from_generator(
        plan,
        output_signature=(
            tf.TensorSpec((None,), tf.int64),
            tf.TensorSpec((2, 2), tf.int64),
        ),
    ).apply(tf.data.experimental.assert_cardinality(count))
    dataset = dataset.map(lambda batch_rows, keys: (load(batch_rows), keys))
    if flip:
        dataset = dataset.map(lambda batch, keys: (_flip(batch, keys[0]), keys))
    if shift:
        dataset = dataset.map(lambda batch, keys: (_shift(batch, keys[1], shift), keys))
    dataset = dataset.map(lambda batch, keys: batch)
    if distributed:
        dataset = dataset.map(_to_float)
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = (
            tf.data.experimental.AutoShardPolicy.DATA
        )
        dataset = dataset.with_options(options)
    return dataset.prefetch(tf.data.AUTOTUNE)


def _to_float(batch):
    """uint8 0..255 -> float32 0..1, the same operations as ``dogvae.model.to_float_images``."""
    return tf.cast(batch, tf.float32) / 255.0


def _keys(seed: int, epoch: int, batch: int) -> np.ndarray:
    """Stateless-random seeds (flip, shift) for one batch of one epoch."""
    state = np.random.SeedSequence([seed, epoch, batch]).generate_state(4, np.uint32)
    return state.astype(np.int64).reshape(2, 2)


def _source(images: np.ndarray, rows: np.ndarray, whole: bool) -> tuple[Callable, np.ndarray]:
    """The map from a batch of positions to a batch of images, and the positions of ``rows``.

    A small in-memory set becomes one tensor, indexed by position; otherwise the
    positions are the rows themselves and each batch is gathered from the array.
    """
    mapping = mapping_of(images)
    if mapping is None and len(rows) * images[0].nbytes <= MAX_TENSOR_BYTES:
        tensor = tf.constant(images if whole else images[rows])
        return (lambda positions: tf.gather(tensor, positions)), np.arange(len(rows))
    gather = Gather(images, mapping)
    shape = (None, *images.shape[1:])

    def load(batch_rows):
        batch = tf.numpy_function(gather, [batch_rows], tf.uint8, stateful=False)
        return tf.ensure_shape(batch, shape)

    return load, rows


def _flip(batch, key):
    """Mirror each image of a batch (N, H, W, C) with probability 1/2."""
    heads = tf.random.stateless_uniform((tf.shape(batch)[0], 1, 1, 1), seed=key) < 0.5
    return tf.where(heads, tf.reverse(batch, axis=[2]), batch)


def _shift(batch, key, shift: int):
    """Move each image of a batch (N, H, W, C) by its own random offset of -shift to
    +shift pixels along each axis, mirroring the edge into the gap."""
    count, height, width = tf.shape(batch)[0], tf.shape(batch)[1], tf.shape(batch)[2]
    padding = [[0, 0], [shift, shift], [shift, shift], [0, 0]]
    padded = tf.pad(batch, padding, mode="SYMMETRIC")
    offsets = tf.random.stateless_uniform(
        (count, 2), seed=key, minval=0, maxval=2 * shift + 1, dtype=tf.int32
    )
    rows = offsets[:, :1] + tf.range(height)[tf.newaxis, :]
    columns = offsets[:, 1:] + tf.range(width)[tf.newaxis, :]
    moved = tf.gather(padded, rows, axis=1, batch_dims=1)
    return tf.gather(moved, columns, axis=2, batch_dims=1)


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
