"""Tests for dogvae.data.cache: hits, keys, damaged entries, budgets and uploads."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import make_png
from data_helpers import assert_same_dataset, png_bytes, reasons_by_path

from dogvae.config import DataConfig
from dogvae.data import REASON_OUTSIDE, Upload, cache, decode, limits, load_dataset


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path, monkeypatch):
    """Every load caches into this test's own folder, never into ~/.cache/dogvae."""
    monkeypatch.setenv("DOGVAE_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def cache_now(monkeypatch, tmp_path) -> Path:
    """Cache files written a moment ago (normally left out as too fresh); returns the folder."""
    monkeypatch.setattr(limits, "CACHE_SETTLE_SECONDS", 0.0)
    return tmp_path / "cache"


def cache_files(folder: Path) -> list[str]:
    return sorted(path.suffix for path in folder.iterdir()) if folder.exists() else []


@pytest.mark.parametrize("kind", ["csv", "folder", "zip"])
def test_a_cache_hit_returns_the_same_dataset_as_a_fresh_load(
    kind, cache_now, dataset_csv, image_folder, dataset_zip, monkeypatch
):
    source = {"csv": dataset_csv, "folder": image_folder, "zip": dataset_zip}[kind]
    config = DataConfig(image_size=32, channels=3)
    fresh = load_dataset(source, config, cache=False)
    assert cache_files(cache_now) == []
    first = load_dataset(source, config)
    assert cache_files(cache_now) == [".json", ".npy"]
    monkeypatch.setattr(decode, "decode_image", lambda *args: pytest.fail("decoded again"))
    calls = []
    second = load_dataset(source, config, progress=lambda *done: calls.append(done))
    assert calls == [(fresh.report.rows, fresh.report.rows)]
    for dataset in (first, second):
        assert_same_dataset(dataset, fresh)
        assert not dataset.images.flags.writeable  # memory-mapped from the cache file
    assert fresh.images.flags.writeable


def test_the_cache_is_keyed_by_the_image_settings_and_the_limit(cache_now, dataset_csv):
    for config in (DataConfig(), DataConfig(image_size=32), DataConfig(channels=3)):
        load_dataset(dataset_csv, config)
    load_dataset(dataset_csv, DataConfig(limit=5))
    assert len(list(cache_now.glob("*.npy"))) == 4
    assert load_dataset(dataset_csv, DataConfig(limit=5)).images.shape == (5, 64, 64, 1)


def test_a_changed_image_is_decoded_again(cache_now, dataset_csv):
    load_dataset(dataset_csv)
    image = dataset_csv.parent / "images" / "beagle" / "beagle_00.png"
    make_png(image, size=(40, 30), value=255)  # same size on disk? the time tells anyway
    os.utime(image, ns=(0, 123_456_789))
    dataset = load_dataset(dataset_csv)
    assert (dataset.images[0] == 255).all()
    assert_same_dataset(dataset, load_dataset(dataset_csv, cache=False))


def test_a_file_that_appears_or_goes_is_noticed(cache_now, dataset_csv):
    assert load_dataset(dataset_csv).report.readable == 12
    make_png(dataset_csv.parent / "images" / "missing.jpg")
    assert load_dataset(dataset_csv).report.readable == 13
    (dataset_csv.parent / "images" / "missing.jpg").unlink()
    assert load_dataset(dataset_csv).report.readable == 12


@pytest.mark.skipif(sys.platform == "win32", reason="symlinks")
def test_a_file_replaced_by_a_symlink_outside_is_not_served_from_the_cache(cache_now, tmp_path):
    folder = tmp_path / "photos"
    image = make_png(folder / "a.png")
    make_png(folder / "b.png")
    assert load_dataset(folder).report.readable == 2
    image.unlink()
    image.symlink_to(make_png(tmp_path / "secret" / "a.png"))
    assert reasons_by_path(load_dataset(folder)) == {"a.png": REASON_OUTSIDE}


def test_a_changed_zip_is_decoded_again(cache_now, dataset_zip):
    before = load_dataset(dataset_zip)
    with zipfile.ZipFile(dataset_zip, "a") as archive:
        archive.writestr("dogs/extra.png", png_bytes(np.zeros((8, 8), np.uint8)))
    after = load_dataset(dataset_zip)
    assert (before.report.readable, after.report.readable) == (12, 13)


@pytest.mark.parametrize(
    "damage",
    ["truncated npy", "garbage npy", "garbage json", "other key", "npy replaced", "bad row"],
)
def test_a_damaged_cache_is_ignored_and_rewritten(cache_now, dataset_csv, damage):
    fresh = load_dataset(dataset_csv, cache=False)
    load_dataset(dataset_csv)
    (npy,) = cache_now.glob("*.npy")
    meta = npy.with_suffix(".json")
    values = json.loads(meta.read_text())
    if damage == "truncated npy":
        npy.write_bytes(npy.read_bytes()[:-100])
        values["npy"][1:] = [npy.stat().st_size, npy.stat().st_mtime_ns]  # even if it matches
        meta.write_text(json.dumps(values))
    elif damage == "garbage npy":
        npy.write_bytes(b"\x93NUMPY garbage")
    elif damage == "garbage json":
        meta.write_text("{not json")
    elif damage == "other key":
        meta.write_text(json.dumps({**values, "key": "0" * 64}))
    elif damage == "npy replaced":
        np.save(npy, np.zeros((12, 64, 64, 1), np.uint8))
    elif damage == "bad row":
        meta.write_text(json.dumps({**values, "unreadable": [[99, "missing", ""]]}))
    assert_same_dataset(load_dataset(dataset_csv), fresh)
    assert json.loads(meta.read_text())["key"] == values["key"]  # rewritten
    assert_same_dataset(load_dataset(dataset_csv), fresh)


def test_an_unwritable_cache_never_fails_the_load(tmp_path, cache_now, dataset_csv):
    fresh = load_dataset(dataset_csv, cache=False)
    not_a_folder = tmp_path / "taken"
    not_a_folder.write_text("a file")
    dataset = load_dataset(dataset_csv, cache_dir=not_a_folder / "cache")
    assert_same_dataset(dataset, fresh)
    assert dataset.images.flags.writeable  # decoded into memory


def test_a_disk_full_while_caching_never_fails_the_load(cache_now, dataset_csv, monkeypatch):
    import errno

    fresh = load_dataset(dataset_csv, cache=False)
    real_fdopen = os.fdopen

    class FullDisk:
        def __init__(self, handle):
            self.handle, self.written = handle, 0

        def write(self, chunk):
            self.written += memoryview(chunk).nbytes
            if self.written > 20_000:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.handle.write(chunk)

        def __getattr__(self, name):
            return getattr(self.handle, name)

    def fdopen(fd, mode="r", *args, **kwargs):
        handle = real_fdopen(fd, mode, *args, **kwargs)
        return FullDisk(handle) if "w" in mode else handle

    monkeypatch.setattr(os, "fdopen", fdopen)
    calls = []
    dataset = load_dataset(dataset_csv, progress=lambda done, total: calls.append(done))
    assert_same_dataset(dataset, fresh)
    assert calls[-1] == 14
    assert cache_files(cache_now) == []  # the partial file was removed


def test_files_modified_just_now_are_not_cached(tmp_path, dataset_csv):
    # Within the file system's timestamp granularity a file can change again
    # without its time changing: such a dataset is decoded every time.
    load_dataset(dataset_csv)
    assert cache_files(tmp_path / "cache") == []


def test_no_cache_when_asked(cache_now, dataset_csv):
    load_dataset(dataset_csv, cache=False)
    assert cache_files(cache_now) == []


def test_the_cache_folder_is_kept_within_its_budget(cache_now, dataset_csv, monkeypatch):
    monkeypatch.setenv("DOGVAE_CACHE_MAX_MB", str(14_000 / 2**20))  # 12 images of 32x32 fit
    load_dataset(dataset_csv, DataConfig(image_size=32))
    load_dataset(dataset_csv, DataConfig(image_size=32, limit=3))
    assert len(list(cache_now.glob("*.npy"))) == 1  # the older entry went


def forbid_decoding(monkeypatch) -> None:
    monkeypatch.setattr(decode, "decode_image", lambda *args: pytest.fail("decoded again"))


def test_the_same_zip_uploaded_again_is_served_from_the_cache(cache_now, dataset_zip, monkeypatch):
    content = dataset_zip.read_bytes()
    fresh = load_dataset(dataset_zip, cache=False)
    first = load_dataset(Upload("dogs.zip", content))
    assert first.report == dataclasses.replace(fresh.report, source="dogs.zip")
    with monkeypatch.context() as patch:
        forbid_decoding(patch)
        again = load_dataset(Upload("renamed.zip", content))  # the content is what counts
        as_file = load_dataset(Upload("dogs.zip", io.BytesIO(content)))
    np.testing.assert_array_equal(again.images, fresh.images)
    np.testing.assert_array_equal(as_file.images, fresh.images)
    assert not again.images.flags.writeable  # mapped from the cache file
    buffer = io.BytesIO(content)
    with zipfile.ZipFile(buffer, "a") as archive:
        archive.writestr("dogs/extra.png", png_bytes(np.zeros((8, 8), np.uint8)))
    assert load_dataset(Upload("dogs.zip", buffer.getvalue())).report.readable == 13


def test_the_same_csv_uploaded_again_is_served_from_the_cache_until_an_image_changes(
    cache_now, dataset_csv, monkeypatch
):
    content, base = dataset_csv.read_bytes(), dataset_csv.parent
    fresh = load_dataset(dataset_csv, cache=False)
    first = load_dataset(Upload("dogs.csv", content), base_dir=base)
    assert_same_dataset(first, dataclasses.replace(fresh, report=first.report))
    assert first.report == dataclasses.replace(fresh.report, source="dogs.csv")
    with monkeypatch.context() as patch:
        forbid_decoding(patch)
        again = load_dataset(Upload("dogs.csv", io.BytesIO(content)), base_dir=base)
    assert_same_dataset(again, first)
    image = base / "images" / "beagle" / "beagle_00.png"
    make_png(image, size=(40, 30), value=255)
    os.utime(image, ns=(0, 123_456_789))
    assert (load_dataset(Upload("dogs.csv", content), base_dir=base).images[0] == 255).all()


def test_an_uploaded_csv_needs_the_folder_its_paths_start_from(dataset_csv):
    with pytest.raises(ValueError, match="was uploaded: give base_dir"):
        load_dataset(Upload("dogs.csv", dataset_csv.read_bytes()))
    with pytest.raises(ValueError, match=r"cannot load notes.txt: expected a \.csv file"):
        load_dataset(Upload("notes.txt", b"hello"))


def test_stale_temporary_files_are_pruned_and_live_ones_kept(cache_now, dataset_csv):
    cache_now.mkdir(parents=True)
    stale = [cache_now / ".a.npy.tmp-0123abcd", cache_now / ".b.json.tmp-4567ef01"]
    stale.append(cache_now / ".c.npy.x1y2.tmp")  # the name of earlier versions
    live = cache_now / ".d.npy.tmp-89abcdef"
    for path in [*stale, live]:
        path.write_bytes(b"partial")
    for path in stale:
        os.utime(path, (time.time(), time.time() - cache.STALE_TEMP_SECONDS - 60))
    load_dataset(dataset_csv)  # a write prunes the folder
    assert [path.exists() for path in [*stale, live]] == [False, False, False, True]
    assert len(list(cache_now.glob("*.npy"))) == len(list(cache_now.glob("*.json"))) == 1
