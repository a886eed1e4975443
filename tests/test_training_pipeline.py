"""The tf.data pipeline: tensor and streamed batches, flips, shifts, the memory-map gather."""

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from dogvae.config import TrainConfig
from dogvae.training import pipeline
from tests.training_helpers import blobs, epoch_batches, memory_mapped


def test_a_memory_mapped_set_streams_the_same_batches_as_a_tensor(tmp_path):
    images = blobs(50)
    mapped = memory_mapped(images, tmp_path)
    rows = np.arange(3, 50, 2)
    tf.random.set_seed(0)
    streamed = epoch_batches(pipeline.batches(mapped, 8, True, 7, rows))
    tf.random.set_seed(0)
    in_memory = epoch_batches(pipeline.batches(images[rows], 8, True, 7))
    assert [len(batch) for batch in streamed] == [8, 8, 8]
    for first, second in zip(streamed, in_memory, strict=True):
        np.testing.assert_array_equal(first, second)
    # Every row once per epoch, in a shuffled order.
    seen = np.concatenate(streamed)
    assert sorted(map(bytes, seen)) == sorted(map(bytes, images[rows]))
    assert not np.array_equal(seen, images[rows])


def test_an_in_memory_set_over_the_tensor_limit_streams_the_same_batches(monkeypatch):
    images, rows = blobs(50), np.arange(3, 50, 2)
    tf.random.set_seed(0)
    as_tensor = epoch_batches(pipeline.batches(images, 8, True, 7, rows))
    gathered = []

    class Counting(pipeline.Gather):
        def __call__(self, batch_rows):
            gathered.append(len(batch_rows))
            return super().__call__(batch_rows)

    # The limit is read from pipeline when a pipeline is made.
    monkeypatch.setattr(pipeline, "MAX_TENSOR_BYTES", 0)
    monkeypatch.setattr(pipeline, "Gather", Counting)
    tf.random.set_seed(0)
    streamed = epoch_batches(pipeline.batches(images, 8, True, 7, rows))
    assert gathered == [8, 8, 8]  # gathered batch by batch, not one tensor
    for first, second in zip(streamed, as_tensor, strict=True):
        np.testing.assert_array_equal(first, second)


@pytest.mark.parametrize("memory", ["tensor", "mapped"])
def test_flips_mirror_about_half_the_images_afresh_every_epoch(tmp_path, memory):
    images = blobs(64)
    images = images[[not np.array_equal(image, image[:, ::-1]) for image in images]][:48]
    source = memory_mapped(images, tmp_path) if memory == "mapped" else images
    assert len(images) == 48  # squares off the centre line: none is its own mirror
    dataset = pipeline.batches(source, 16, False, 3, flip=True)
    flipped_per_epoch = []
    for _ in range(3):
        batch = np.concatenate(epoch_batches(dataset))
        same = [np.array_equal(batch[i], images[i]) for i in range(48)]
        mirrored = [np.array_equal(batch[i], images[i][:, ::-1]) for i in range(48)]
        assert all(a != b for a, b in zip(same, mirrored, strict=True))  # one or the other
        flipped_per_epoch.append(tuple(mirrored))
    assert all(12 <= sum(flips) <= 36 for flips in flipped_per_epoch)
    assert len(set(flipped_per_epoch)) == 3  # a new draw every epoch
    unflipped = np.concatenate(epoch_batches(pipeline.batches(source, 16, False, 3)))
    np.testing.assert_array_equal(unflipped, images)  # and none without flip


@pytest.mark.parametrize("memory", ["tensor", "mapped"])
def test_shifts_move_each_image_by_its_own_offset_afresh_every_epoch(tmp_path, memory):
    # One bright 6x4 block per image, away from the edges so that no offset cuts it.
    images = np.zeros((24, 32, 32, 1), np.uint8)
    for i in range(24):
        images[i, 10:16, 12:16] = 100 + i
    source = memory_mapped(images, tmp_path) if memory == "mapped" else images
    dataset = pipeline.batches(source, 8, False, 5, shift=3)
    offsets_per_epoch = []
    for _ in range(3):
        batch = np.concatenate(epoch_batches(dataset))
        offsets = []
        for i, image in enumerate(batch):
            rows, columns = np.nonzero(image[..., 0])
            assert len(rows) == 24 and set(image[rows, columns, 0]) == {100 + i}  # moved whole
            assert rows.max() - rows.min() == 5 and columns.max() - columns.min() == 3
            offsets.append((int(rows.min()) - 10, int(columns.min()) - 12))
        assert all(-3 <= dy <= 3 and -3 <= dx <= 3 for dy, dx in offsets)
        assert len(set(offsets)) > 8  # each image its own offset
        offsets_per_epoch.append(tuple(offsets))
    assert len(set(offsets_per_epoch)) == 3  # a new draw every epoch
    # The edge is mirrored into the gap: a block at the border stays at the border.
    edge = np.zeros((8, 32, 32, 1), np.uint8)
    edge[:, :, :4] = 255  # a bar 4 wide: however it moves, its mirror fills column 0
    moved = np.concatenate(epoch_batches(pipeline.batches(edge, 8, False, 5, shift=3)))
    assert (moved[:, :, 0] == 255).all() and (moved[:, :, 8:] == 0).all()
    unmoved = np.concatenate(epoch_batches(pipeline.batches(source, 8, False, 5)))
    np.testing.assert_array_equal(unmoved, images)  # and none without shift


def test_shift_is_refused_beyond_its_bounds():
    assert TrainConfig(shift=8).shift == 8
    for wrong in (-1, 9, 2.5, "2", True):
        with pytest.raises(ValueError, match="shift must be from 0 to 8 pixels"):
            TrainConfig(shift=wrong)


def test_streaming_hands_mapped_pages_back_after_every_batch():
    class Mapping:
        released = 0

        def madvise(self, advice):
            Mapping.released += 1

    gather = pipeline.Gather(blobs(10), Mapping())
    for start in range(0, 10, 2):
        np.testing.assert_array_equal(gather(np.arange(start, start + 2)), blobs(10)[start:][:2])
    assert Mapping.released == 5
    # An in-memory array has nothing to hand back.
    np.testing.assert_array_equal(pipeline.Gather(blobs(4), None)(np.arange(2)), blobs(4)[:2])


def resident_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads Linux's VmRSS")
def test_shuffled_reads_of_a_mapped_set_keep_resident_memory_bounded(tmp_path):
    # 64 MB of 4 KB rows, read in shuffled batches: with fault-around, a sixteenth
    # of them maps every page, unless the gatherer hands pages back.
    path = tmp_path / "images.npy"
    rows = 16_384
    array = np.lib.format.open_memmap(path, "w+", np.uint8, (rows, 64, 64, 1))
    array[:] = 7
    array.flush()
    del array
    order = np.random.default_rng(0).permutation(rows)

    def read_all(gather) -> float:
        start, peak = resident_mb(), 0.0
        for first in range(0, rows, 64):
            gather(order[first : first + 64])
            peak = max(peak, resident_mb() - start)
        return peak

    released = np.load(path, mmap_mode="r")
    growth = read_all(pipeline.Gather(released, pipeline.mapping_of(released)))
    kept = np.load(path, mmap_mode="r")
    unreleased = read_all(pipeline.Gather(kept, None))
    assert unreleased > 32  # the test does provoke the growth...
    assert growth < 16  # ...and the gatherer keeps it to about one batch's pages
