"""Tests for dogvae.data.load and report: the report, progress, splits, limits and memory."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import SHARED_DOGS_CSV, make_broken, make_jpeg, make_png
from data_helpers import write_csv

from dogvae.config import DataConfig
from dogvae.data import REASON_MISSING, REASON_NOT_IMAGE, load_dataset


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path, monkeypatch):
    """Every load caches into this test's own folder, never into ~/.cache/dogvae."""
    monkeypatch.setenv("DOGVAE_CACHE_DIR", str(tmp_path / "cache"))


def test_limit_takes_the_first_rows(dataset_csv):
    dataset = load_dataset(dataset_csv, DataConfig(limit=5))
    assert (dataset.report.rows, dataset.report.readable) == (5, 5)
    assert dataset.table["filepaths"][4] == "images/beagle/beagle_04.png"
    assert dataset.report.validation == 1


def test_random_split_is_deterministic(image_folder):
    config = DataConfig(validation_fraction=0.25, seed=3)
    first = load_dataset(image_folder, config)
    again = load_dataset(image_folder, config, workers=1)
    assert (first.report.train, first.report.validation) == (9, 3)
    assert first.report.split == "random 25% held out (seed 3)"
    assert list(first.table["split"]) == list(again.table["split"])
    np.testing.assert_array_equal(first.images, again.images)
    other = load_dataset(image_folder, DataConfig(validation_fraction=0.25, seed=4))
    assert list(other.table["split"]) != list(first.table["split"])


def test_random_split_keeps_at_least_one_validation_image(tmp_path):
    make_png(tmp_path / "a.png", size=(8, 8))
    single = load_dataset(tmp_path)
    assert (single.report.train, single.report.validation) == (1, 0)
    make_png(tmp_path / "b.png", size=(8, 8))
    pair = load_dataset(tmp_path)
    assert (pair.report.train, pair.report.validation) == (1, 1)
    none = load_dataset(tmp_path, DataConfig(validation_fraction=0.0))
    assert none.report.validation == 0


def test_bad_workers(image_folder):
    with pytest.raises(ValueError, match="workers"):
        load_dataset(image_folder, workers=0)


def test_progress_is_reported_from_the_calling_thread(tmp_path):
    import threading

    rows = "\n".join(f"missing_{index}.png" for index in range(450))
    csv_path = write_csv(tmp_path / "dogs.csv", "filepaths\n" + rows + "\n")
    calls = []
    caller = threading.get_ident()

    def progress(done, total):
        calls.append((done, total, threading.get_ident()))

    dataset = load_dataset(csv_path, progress=progress)
    assert dataset.report.reasons() == {REASON_MISSING: 450}
    assert 50 <= len(calls) <= 101
    assert calls[-1][:2] == (450, 450)
    assert [done for done, _, _ in calls] == sorted({done for done, _, _ in calls})
    assert {thread for _, _, thread in calls} == {caller}


def test_progress_for_a_zip(dataset_zip):
    calls = []
    load_dataset(dataset_zip, progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (12, 12)


def test_report_to_dict_is_json_and_counts_reasons(dataset_csv):
    report = load_dataset(dataset_csv).report
    values = json.loads(json.dumps(report.to_dict()))
    assert values["rows"] == 14
    assert values["unreadable"][0] == {
        "path": "images/missing.jpg",
        "reason": REASON_MISSING,
        "detail": "",
    }
    assert report.reasons() == {REASON_MISSING: 1, REASON_NOT_IMAGE: 1}
    assert report.summary() == "12 of 14 images readable (1 missing, 1 not an image)"


def test_require_images(tmp_path, image_folder):
    make_broken(tmp_path / "only" / "broken.png")
    with pytest.raises(ValueError, match=r"no readable image in .*only: 0 of 1.*1 not an image"):
        load_dataset(tmp_path / "only").require_images()
    dataset = load_dataset(image_folder)
    assert dataset.require_images() is dataset


def test_jpeg_and_png_load_alike(tmp_path):
    make_png(tmp_path / "a.png", value=(10, 200, 30))
    make_jpeg(tmp_path / "b.jpg", value=(10, 200, 30))
    dataset = load_dataset(tmp_path, DataConfig(channels=3, image_size=32))
    assert np.abs(dataset.images[0].astype(int) - dataset.images[1]).max() <= 3


@pytest.mark.skipif(not SHARED_DOGS_CSV.exists(), reason="needs ../shared/data/dogs.csv")
def test_shared_dogs_csv_first_50():
    dataset = load_dataset(SHARED_DOGS_CSV, DataConfig(limit=50))
    assert dataset.report.readable == 50
    assert dataset.images.shape == (50, 64, 64, 1)


def test_a_dataset_beyond_the_memory_ceiling_is_refused_before_decoding(image_folder, monkeypatch):
    with pytest.raises(ValueError, match=r"need .* MB of memory, more than this server allows"):
        load_dataset(image_folder, DataConfig(), max_bytes=64 * 64 * 5)
    monkeypatch.setenv("DOGVAE_MAX_DATASET_MB", "0.01")
    with pytest.raises(ValueError, match="use at most 2 images"):
        load_dataset(image_folder, DataConfig())
    assert load_dataset(image_folder, DataConfig(limit=2)).report.readable == 2


def test_split_indices_select_the_split_images(dataset_csv):
    dataset = load_dataset(dataset_csv)
    assert list(dataset.validation_indices) == [4, 9]
    assert len(dataset.train_indices) == 10
    np.testing.assert_array_equal(dataset.train_images, dataset.images[dataset.train_indices])
    np.testing.assert_array_equal(
        dataset.validation_images, dataset.images[dataset.validation_indices]
    )


def test_split_images_names_each_split_and_refuses_an_empty_one(image_folder):
    dataset = load_dataset(image_folder, DataConfig(validation_fraction=0.25))
    train, validation = dataset.split_images("train"), dataset.split_images("validation")
    assert (len(train), len(validation), len(dataset.split_images("all"))) == (9, 3, 12)
    np.testing.assert_array_equal(validation, dataset.images[dataset.validation_indices])
    everything = load_dataset(image_folder, DataConfig(validation_fraction=0.0))
    with pytest.raises(ValueError, match=r"the validation split of .* has no readable image"):
        everything.split_images("validation")
    with pytest.raises(ValueError, match="split must be"):
        everything.split_images("test")
