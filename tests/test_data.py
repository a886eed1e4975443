"""Tests for dogvae.data: sources, reasons, decoding details, splits and limits."""

from __future__ import annotations

import io
import json
import os
import struct
import sys
import zipfile
import zlib
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from conftest import SHARED_DOGS_CSV, make_broken, make_jpeg, make_png
from PIL import Image, ImageOps

from dogvae import data
from dogvae.config import DataConfig
from dogvae.data import (
    REASON_EMPTY,
    REASON_MISSING,
    REASON_NOT_IMAGE,
    REASON_OUTSIDE,
    REASON_TOO_LARGE,
    Dataset,
    decode_image,
    list_sources,
    load_dataset,
)


def png_bytes(pixels: np.ndarray) -> bytes:
    """PNG bytes of an array, written by OpenCV (which expects BGR order)."""
    ok, encoded = cv2.imencode(".png", pixels)
    assert ok
    return encoded.tobytes()


def png_header(width: int, height: int) -> bytes:
    """A PNG that announces width x height pixels but holds almost no data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + body))
        return struct.pack(">I", len(body)) + kind + body + crc

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 100))
        + chunk(b"IEND", b"")
    )


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path, monkeypatch):
    """Every load caches into this test's own folder, never into ~/.cache/dogvae."""
    monkeypatch.setenv("DOGVAE_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def cache_now(monkeypatch, tmp_path) -> Path:
    """Cache files written a moment ago (normally left out as too fresh); returns the folder."""
    monkeypatch.setattr(data, "CACHE_SETTLE_SECONDS", 0.0)
    return tmp_path / "cache"


def jpeg_bytes(pixels: np.ndarray, orientation: int | None = None, **options) -> bytes:
    """JPEG bytes of an RGB or grayscale array (Pillow), optionally with an EXIF orientation."""
    buffer = io.BytesIO()
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        options["exif"] = exif.tobytes()
    Image.fromarray(pixels.squeeze()).save(buffer, "JPEG", quality=95, **options)
    return buffer.getvalue()


def assert_same_dataset(first: Dataset, second: Dataset) -> None:
    np.testing.assert_array_equal(first.images, second.images)
    assert first.images.shape == second.images.shape
    assert first.images.dtype == second.images.dtype
    pd.testing.assert_frame_equal(first.table, second.table)
    assert first.report == second.report


def reasons_by_path(dataset: Dataset) -> dict[str, str]:
    return {item.path: item.reason for item in dataset.report.unreadable}


def write_csv(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# decode_image


@pytest.mark.parametrize("channels", [1, 3])
def test_decode_gives_uint8_square_with_channels(tmp_path, channels):
    path = make_png(tmp_path / "dog.png", size=(40, 30))
    image = decode_image(path.read_bytes(), image_size=32, channels=channels)
    assert image.dtype == np.uint8
    assert image.shape == (32, 32, channels)


def test_decode_rgb_order_and_grayscale_luma():
    red = np.zeros((8, 8, 3), np.uint8)
    red[..., 2] = 255  # OpenCV writes BGR: this is pure red
    encoded = png_bytes(red)
    rgb = decode_image(encoded, image_size=4, channels=3)
    assert (rgb[..., 0] == 255).all() and (rgb[..., 1:] == 0).all()
    gray = decode_image(encoded, image_size=4, channels=1)
    assert (gray == 76).all()  # 0.299 * 255


def test_decode_drops_alpha(tmp_path):
    pixels = np.zeros((6, 6, 4), np.uint8)
    pixels[..., :3] = (200, 100, 50)  # fully transparent, colour still there
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGBA").save(buffer, "PNG")
    image = decode_image(buffer.getvalue(), image_size=4, channels=3)
    assert image.shape == (4, 4, 3)
    assert (image == (200, 100, 50)).all()


def test_decode_scales_16_bit_with_rounding():
    # 257 * 100 + 129 is 100.502 in 8 bits: rounding gives 101, the top byte 100.
    pixels = np.zeros((4, 12), np.uint16)
    pixels[:, 0:4], pixels[:, 4:8], pixels[:, 8:12] = 65535, 32896, 257 * 100 + 129
    image = decode_image(png_bytes(pixels), image_size=12, channels=1)[..., 0]
    assert (image[:, 0:4] == 255).all()
    assert (image[:, 4:8] == 128).all()
    assert (image[:, 8:12] == 101).all()

    colour = np.zeros((4, 4, 3), np.uint16)
    colour[..., 2] = 65535  # red in OpenCV's BGR
    rgb = decode_image(png_bytes(colour), image_size=4, channels=3)
    assert rgb.dtype == np.uint8
    assert (rgb[..., 0] == 255).all() and (rgb[..., 1:] == 0).all()


def test_decode_applies_exif_orientation():
    # 20 wide x 10 tall, left half red, right half blue; Orientation 6 means
    # "rotate 90 degrees clockwise to display", giving 10 wide x 20 tall with red on top.
    pixels = np.zeros((10, 20, 3), np.uint8)
    pixels[:, :10] = (255, 0, 0)
    pixels[:, 10:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", exif=exif.tobytes(), quality=95)
    encoded = buffer.getvalue()

    upright = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(encoded))))
    assert upright.shape == (20, 10, 3)
    expected = cv2.resize(upright, (20, 20), interpolation=cv2.INTER_AREA)
    image = decode_image(encoded, image_size=20, channels=3)
    assert np.abs(image.astype(int) - expected).max() <= 2
    assert image[:8, :, 0].mean() > 200 and image[:8, :, 2].mean() < 50  # red on top
    assert image[12:, :, 2].mean() > 200 and image[12:, :, 0].mean() < 50  # blue below


def test_decode_reasons_start_the_message(monkeypatch):
    with pytest.raises(ValueError, match=f"^{REASON_EMPTY}"):
        decode_image(b"")
    with pytest.raises(ValueError, match=f"^{REASON_NOT_IMAGE}"):
        decode_image(b"hello, I am text")
    with pytest.raises(ValueError, match=f"^{REASON_TOO_LARGE}: 9,000x9,000 pixels"):
        decode_image(png_header(9000, 9000))
    monkeypatch.setattr(data, "MAX_FILE_BYTES", 10)
    with pytest.raises(ValueError, match=f"^{REASON_TOO_LARGE}: 11 bytes"):
        decode_image(b"x" * 11)


@pytest.mark.filterwarnings("error")
def test_decode_huge_headers_beyond_pillow_limits_are_too_large():
    # 10,000^2 makes Pillow warn (an error here), 20,000^2 makes it raise.
    for side in (10_000, 20_000):
        with pytest.raises(ValueError, match=f"^{REASON_TOO_LARGE}"):
            decode_image(png_header(side, side))


def test_decode_refuses_more_pixels_than_the_limit(monkeypatch, tmp_path):
    path = make_png(tmp_path / "dog.png", size=(40, 30))
    monkeypatch.setattr(data, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ValueError, match=f"^{REASON_TOO_LARGE}: 40x30 pixels"):
        decode_image(path.read_bytes())


def test_decode_refuses_bad_settings(tmp_path):
    encoded = make_png(tmp_path / "dog.png").read_bytes()
    with pytest.raises(ValueError, match="channels"):
        decode_image(encoded, channels=2)
    with pytest.raises(ValueError, match="image_size"):
        decode_image(encoded, image_size=0)


# folders


def test_folder_report_labels_and_reasons(image_folder):
    dataset = load_dataset(image_folder, DataConfig(image_size=32, channels=3))
    report = dataset.report
    assert (report.kind, report.rows, report.found, report.readable) == ("folder", 14, 14, 12)
    assert reasons_by_path(dataset) == {"broken.jpg": REASON_NOT_IMAGE, "empty.png": REASON_EMPTY}
    assert dataset.images.shape == (12, 32, 32, 3)
    assert dataset.images.dtype == np.uint8
    assert list(dataset.table.columns) == ["filepaths", "labels", "split"]
    assert list(dataset.table["filepaths"]) == sorted(dataset.table["filepaths"])
    assert dataset.table["filepaths"][0] == "beagle/beagle_00.png"
    assert set(dataset.table["labels"]) == {"beagle", "poodle"}
    assert report.summary() == "12 of 14 images readable (1 not an image, 1 empty)"


def test_folder_top_level_images_have_empty_label(tmp_path):
    make_png(tmp_path / "top.png")
    make_png(tmp_path / "a" / "b" / "deep.PNG")
    dataset = load_dataset(tmp_path)
    assert list(dataset.table["filepaths"]) == ["a/b/deep.PNG", "top.png"]
    assert list(dataset.table["labels"]) == ["b", ""]


def test_folder_images_match_a_direct_decode(image_folder):
    dataset = load_dataset(image_folder, DataConfig(image_size=32, channels=1))
    first = (image_folder / dataset.table["filepaths"][0]).read_bytes()
    np.testing.assert_array_equal(dataset.images[0], decode_image(first, 32, 1))


@pytest.mark.skipif(sys.platform == "win32", reason="symlinks")
def test_folder_symlink_escaping_is_outside_and_not_opened(tmp_path):
    folder = tmp_path / "photos"
    make_png(folder / "inside.png")
    secret = make_png(tmp_path / "secret" / "secret.png")
    (folder / "escape.png").symlink_to(secret)
    # The target of this one does not exist: "outside" (not "missing") shows
    # that the check comes before any look at the file.
    (folder / "dangling.png").symlink_to(tmp_path / "secret" / "nothing.png")
    (folder / "inner.png").symlink_to(folder / "inside.png")
    dataset = load_dataset(folder)
    assert reasons_by_path(dataset) == {
        "escape.png": REASON_OUTSIDE,
        "dangling.png": REASON_OUTSIDE,
    }
    details = {item.path: item.detail for item in dataset.report.unreadable}
    assert details["escape.png"] == f"resolves to {os.path.realpath(secret)}"
    assert list(dataset.table["filepaths"]) == ["inner.png", "inside.png"]
    assert (dataset.report.rows, dataset.report.found) == (4, 2)


# CSV files


def test_csv_report_split_and_table(dataset_csv):
    dataset = load_dataset(dataset_csv)
    report = dataset.report
    assert (report.kind, report.rows, report.found, report.readable) == ("csv", 14, 13, 12)
    assert reasons_by_path(dataset) == {
        "images/missing.jpg": REASON_MISSING,
        "images/broken.jpg": REASON_NOT_IMAGE,
    }
    assert (report.train, report.validation) == (10, 2)
    assert report.split == "from the 'data set' column"
    assert list(dataset.table.columns) == ["filepaths", "labels", "data set", "split"]
    assert dataset.table["filepaths"][0] == "images/beagle/beagle_00.png"
    assert list(dataset.table.index) == list(range(12))
    assert dataset.train_images.shape == (10, 64, 64, 1)
    assert dataset.validation_images.shape == (2, 64, 64, 1)
    np.testing.assert_array_equal(dataset.validation_images[0], dataset.images[4])


def test_csv_split_values_are_mapped(tmp_path):
    names = ["train", " Valid ", "VALIDATION", "val", "Test", "holdout", ""]
    lines = ["filepaths,data set"]
    for index, name in enumerate(names):
        make_png(tmp_path / f"{index}.png", size=(8, 8))
        lines.append(f"{index}.png,{name}")
    dataset = load_dataset(write_csv(tmp_path / "dogs.csv", "\n".join(lines) + "\n"))
    assert list(dataset.table["split"]) == [
        "train",
        "validation",
        "validation",
        "validation",
        "validation",
        "train",
        "train",
    ]
    assert list(dataset.table["data set"]) == names  # kept as written


def test_csv_keeps_empty_labels_as_text(tmp_path):
    make_png(tmp_path / "a.png", size=(8, 8))
    dataset = load_dataset(write_csv(tmp_path / "dogs.csv", "filepaths,labels\na.png,\n"))
    assert dataset.table["labels"][0] == ""


def test_csv_parent_escape_and_absolute_paths(tmp_path):
    base = tmp_path / "data"
    inside = make_png(base / "in" / "ok.png", size=(8, 8))
    outside = make_png(tmp_path / "outside.png", size=(8, 8))
    rows = ["in/ok.png", "../outside.png", str(inside), str(outside), "in/../in/ok.png", ""]
    csv_path = write_csv(base / "dogs.csv", "filepaths,n\n" + ",x\n".join(rows) + ",x\n")
    dataset = load_dataset(csv_path)
    assert reasons_by_path(dataset) == {
        "../outside.png": REASON_OUTSIDE,
        str(outside): REASON_OUTSIDE,
        "": REASON_MISSING,
    }
    assert list(dataset.table["filepaths"]) == ["in/ok.png", str(inside), "in/../in/ok.png"]
    assert (dataset.report.rows, dataset.report.found) == (6, 3)


def test_csv_base_dir_and_allowed_root(tmp_path):
    images = tmp_path / "server"
    make_png(images / "dogs" / "a.png", size=(8, 8))
    make_png(tmp_path / "elsewhere.png", size=(8, 8))
    uploaded = write_csv(tmp_path / "upload" / "x.csv", "filepaths\ndogs/a.png\n../elsewhere.png\n")
    dataset = load_dataset(uploaded, base_dir=images)
    assert dataset.report.readable == 1
    assert reasons_by_path(dataset) == {"../elsewhere.png": REASON_OUTSIDE}
    wider = load_dataset(uploaded, base_dir=images, allowed_root=tmp_path)
    assert wider.report.readable == 2


def test_csv_without_filepaths_lists_its_columns(tmp_path):
    csv_path = write_csv(tmp_path / "dogs.csv", "path,label\na.png,x\n")
    with pytest.raises(ValueError, match=r"no 'filepaths' column.*'path', 'label'"):
        load_dataset(csv_path)


def test_csv_not_utf8(tmp_path):
    csv_path = tmp_path / "dogs.csv"
    csv_path.write_bytes("filepaths,labels\nchien.png,caniche\xe9\n".encode("latin-1"))
    with pytest.raises(ValueError, match="not UTF-8"):
        load_dataset(csv_path)


def test_csv_with_byte_order_mark(tmp_path):
    make_png(tmp_path / "a.png", size=(8, 8))
    csv_path = tmp_path / "dogs.csv"
    csv_path.write_bytes("filepaths\na.png\n".encode("utf-8-sig"))
    assert load_dataset(csv_path).report.readable == 1


@pytest.mark.parametrize("text", ["", "\n\n"])
def test_csv_empty(tmp_path, text):
    with pytest.raises(ValueError, match="is empty"):
        load_dataset(write_csv(tmp_path / "dogs.csv", text))


def test_csv_that_does_not_parse(tmp_path):
    csv_path = write_csv(tmp_path / "dogs.csv", 'filepaths,labels\na.png,x\n"b.png,y,z\n')
    with pytest.raises(ValueError, match="could not be read as CSV") as caught:
        load_dataset(csv_path)
    assert "Traceback" not in str(caught.value)


def test_csv_header_only_gives_no_images(tmp_path):
    dataset = load_dataset(write_csv(tmp_path / "dogs.csv", "filepaths,labels\n"))
    assert dataset.images.shape == (0, 64, 64, 1)
    assert dataset.report.rows == 0
    with pytest.raises(ValueError, match=r"no readable image in .*dogs.csv: 0 of 0"):
        dataset.require_images()


def test_limit_takes_the_first_rows(dataset_csv):
    dataset = load_dataset(dataset_csv, DataConfig(limit=5))
    assert (dataset.report.rows, dataset.report.readable) == (5, 5)
    assert dataset.table["filepaths"][4] == "images/beagle/beagle_04.png"
    assert dataset.report.validation == 1


def test_too_large_file_is_not_read(monkeypatch, image_folder):
    monkeypatch.setattr(data, "MAX_FILE_BYTES", 300)
    dataset = load_dataset(image_folder)
    large = [item for item in dataset.report.unreadable if item.reason == REASON_TOO_LARGE]
    assert large and all(item.detail.endswith(" bytes") for item in large)


def test_too_large_image_in_a_dataset(tmp_path):
    (tmp_path / "huge.png").write_bytes(png_header(9000, 9000))
    make_png(tmp_path / "ok.png", size=(8, 8))
    dataset = load_dataset(tmp_path)
    assert dataset.report.unreadable == (
        data.Unreadable("huge.png", REASON_TOO_LARGE, "9,000x9,000 pixels"),
    )


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


# ZIP files


def test_zip_of_images(dataset_zip):
    dataset = load_dataset(dataset_zip, DataConfig(channels=3))
    report = dataset.report
    assert (report.kind, report.rows, report.found, report.readable) == ("zip", 12, 12, 12)
    assert dataset.table["filepaths"][0] == "dogs/beagle/beagle_00.png"
    assert set(dataset.table["labels"]) == {"beagle", "poodle"}
    assert dataset.images.shape == (12, 64, 64, 3)


def test_zip_with_csv_inside(tmp_path):
    good = make_png(tmp_path / "a.png", size=(8, 8)).read_bytes()
    table = (
        "filepaths,labels,data set\n"
        "images/a.png,x,train\n"
        "../dataset/images/a.png,x,valid\n"
        "images/gone.png,x,train\n"
        "../../escape.png,x,train\n"
        "/abs.png,x,train\n"
    )
    zip_path = tmp_path / "with_csv.zip"
    with zipfile.ZipFile(zip_path, "w") as archive:
        archive.writestr("dataset/dogs.csv", table)
        archive.writestr("dataset/images/a.png", good)
        archive.writestr("__MACOSX/dataset/._dogs.csv", b"apple metadata")
        archive.writestr("escape.png", good)
    dataset = load_dataset(zip_path)
    assert reasons_by_path(dataset) == {
        "images/gone.png": REASON_MISSING,
        "../../escape.png": REASON_OUTSIDE,
        "/abs.png": REASON_OUTSIDE,
    }
    assert (dataset.report.rows, dataset.report.found, dataset.report.readable) == (5, 2, 2)
    assert list(dataset.table["split"]) == ["train", "validation"]


def test_zip_member_names_escaping_are_never_read(tmp_path, monkeypatch):
    good = make_png(tmp_path / "a.png", size=(8, 8)).read_bytes()
    zip_path = tmp_path / "evil.zip"
    with zipfile.ZipFile(zip_path, "w") as archive:
        archive.writestr("ok.png", good)
        archive.writestr("../evil.png", good)
        archive.writestr("a/../../evil2.png", good)
        archive.writestr(zipfile.ZipInfo("/abs.png"), good)
        archive.writestr("__MACOSX/._ok.png", b"apple metadata")
    read = []
    original = zipfile.ZipFile.read
    monkeypatch.setattr(
        zipfile.ZipFile,
        "read",
        lambda self, name, *a: read.append(name) or original(self, name, *a),
    )
    dataset = load_dataset(zip_path)
    assert reasons_by_path(dataset) == {
        "../evil.png": REASON_OUTSIDE,
        "a/../../evil2.png": REASON_OUTSIDE,
        "/abs.png": REASON_OUTSIDE,
    }
    assert [getattr(item, "filename", item) for item in read] == ["ok.png"]
    assert dataset.report.readable == 1


def test_zip_with_too_many_members_is_refused(dataset_zip, monkeypatch):
    monkeypatch.setattr(data, "MAX_ZIP_MEMBERS", 5)
    with pytest.raises(ValueError, match="12 entries; at most 5"):
        load_dataset(dataset_zip)


def test_zip_too_large_in_total_is_refused(dataset_zip, monkeypatch):
    monkeypatch.setattr(data, "MAX_ZIP_BYTES", 1000)
    with pytest.raises(ValueError, match="would unpack to"):
        load_dataset(dataset_zip)


def test_zip_member_too_large_or_too_compressed(tmp_path, monkeypatch):
    good = make_png(tmp_path / "a.png", size=(8, 8)).read_bytes()
    zip_path = tmp_path / "bombs.zip"
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("good.png", good)
        archive.writestr("bomb.png", b"\0" * (2 * 1024 * 1024))
        archive.writestr("big.png", os.urandom(5000))
    monkeypatch.setattr(data, "MAX_FILE_BYTES", 4096)
    monkeypatch.setattr(data, "COMPRESSION_CHECK_BYTES", 1024)
    dataset = load_dataset(zip_path)
    unreadable = {item.path: item for item in dataset.report.unreadable}
    assert unreadable["big.png"].reason == REASON_TOO_LARGE
    assert unreadable["big.png"].detail == "5,000 bytes"
    assert unreadable["bomb.png"].reason == REASON_TOO_LARGE
    assert unreadable["bomb.png"].detail == f"{2 * 1024 * 1024:,} bytes"
    monkeypatch.setattr(data, "MAX_FILE_BYTES", 64 * 1024 * 1024)
    dataset = load_dataset(zip_path)
    bomb = next(item for item in dataset.report.unreadable if item.path == "bomb.png")
    assert bomb.reason == REASON_TOO_LARGE
    assert bomb.detail.startswith("compression ratio ")
    assert dataset.report.readable == 1


def test_not_a_zip(tmp_path):
    path = tmp_path / "fake.zip"
    path.write_text("not a zip")
    with pytest.raises(ValueError, match="not a valid ZIP"):
        load_dataset(path)


# the source itself, reports, progress


def test_missing_source_and_wrong_kind(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        load_dataset(tmp_path / "nothing.csv")
    other = make_broken(tmp_path / "notes.txt")
    with pytest.raises(ValueError, match=r"expected a \.csv file, a \.zip file or a folder"):
        load_dataset(other)


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


def test_list_sources(tmp_path, image_folder, dataset_csv, dataset_zip):
    (tmp_path / "empty_folder").mkdir()
    make_broken(tmp_path / "notes.txt")
    make_png(tmp_path / ".hidden" / "a.png")
    names = [path.name for path in list_sources(tmp_path)]
    assert names == ["csv_data", "dogs.zip", "photos", "zip_source"]
    assert list_sources(dataset_csv.parent)[0] == dataset_csv
    assert list_sources(tmp_path / "nowhere") == []


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
    def no_decoding(*args, **kwargs):
        raise AssertionError("an image was decoded before the memory check refused the set")

    with monkeypatch.context() as patch:
        # Every image goes through cv2.imdecode; reaching it fails the test.
        patch.setattr(cv2, "imdecode", no_decoding)
        with pytest.raises(ValueError, match=r"need .* MB of memory, more than this server allows"):
            load_dataset(image_folder, DataConfig(), max_bytes=64 * 64 * 5, cache=False)
        patch.setenv("DOGVAE_MAX_DATASET_MB", "0.01")
        with pytest.raises(ValueError, match="use at most 2 images"):
            load_dataset(image_folder, DataConfig(), cache=False)
    monkeypatch.setenv("DOGVAE_MAX_DATASET_MB", "0.01")
    assert load_dataset(image_folder, DataConfig(limit=2), cache=False).report.readable == 2


# reduced JPEG decoding


def dog_photo(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A large smooth RGB photo, drawn small and scaled up: drawing it at full size
    would take hundreds of MB, which subprocess tests would inherit as peak RSS."""
    from conftest import dog_like

    small = dog_like((max(8, width // 8), max(8, height // 8)), seed=seed)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)


def test_jpeg_size_reads_the_frame_header():
    pixels = dog_photo(300, 200)
    assert data.jpeg_size(jpeg_bytes(pixels)) == (300, 200)
    assert data.jpeg_size(jpeg_bytes(pixels, progressive=True)) == (300, 200)
    assert data.jpeg_size(jpeg_bytes(pixels, orientation=6)) == (300, 200)  # as stored
    assert data.jpeg_size(png_bytes(pixels)) is None
    assert data.jpeg_size(b"\xff\xd8\xff") is None
    assert data.jpeg_size(jpeg_bytes(pixels)[:20]) is None


def decoded_sizes(monkeypatch) -> list[tuple[int, int]]:
    """Records the (width, height) that cv2.imdecode returns, before the final resize."""
    sizes = []
    real = cv2.imdecode

    def spy(buffer, flags):
        image = real(buffer, flags)
        if image is not None:
            sizes.append((image.shape[1], image.shape[0]))
        return image

    monkeypatch.setattr(cv2, "imdecode", spy)
    return sizes


@pytest.mark.parametrize(
    ("width", "height", "image_size", "decoded"),
    [
        (200, 200, 64, (200, 200)),  # halving would leave 100 < 2 x 64: full decode
        (256, 300, 64, (128, 150)),  # 1/2 keeps exactly 2 x 64
        (640, 480, 64, (320, 240)),  # 1/2; 1/4 would leave 120 rows
        (800, 600, 64, (200, 150)),  # 1/4
        (1600, 1200, 64, (200, 150)),  # 1/8
        (1600, 1200, 128, (400, 300)),  # a larger output needs more pixels: 1/4
    ],
)
def test_reduced_decoding_keeps_at_least_twice_the_output_size(
    monkeypatch, width, height, image_size, decoded
):
    encoded = jpeg_bytes(dog_photo(width, height))
    sizes = decoded_sizes(monkeypatch)
    image = decode_image(encoded, image_size=image_size, channels=1)
    assert image.shape == (image_size, image_size, 1)
    assert sizes == [decoded]


def test_png_is_never_decoded_reduced(monkeypatch):
    sizes = decoded_sizes(monkeypatch)
    decode_image(png_bytes(dog_photo(1024, 768)), image_size=64)
    assert sizes == [(1024, 768)]


@pytest.mark.parametrize("channels", [1, 3])
def test_reduced_decoding_stays_close_to_a_full_decode(channels):
    encoded = jpeg_bytes(dog_photo(1200, 900, seed=3))
    reduced = decode_image(encoded, 64, channels).astype(int)
    full = decode_image(encoded, 64, channels, reduced=False).astype(int)
    difference = np.abs(reduced - full)
    assert difference.mean() < 1.5
    assert difference.max() <= 64  # only along sharp edges


@pytest.mark.parametrize("channels", [1, 3])
def test_reduced_decoding_applies_exif_orientation(monkeypatch, channels):
    # 1600 wide x 800 tall, left half red, right half blue; orientation 6 turns it
    # into 800 x 1600 with red on top. 800 / 4 = 200 >= 2 x 64: decoded at 1/4.
    pixels = np.zeros((800, 1600, 3), np.uint8)
    pixels[:, :800] = (255, 0, 0)
    pixels[:, 800:] = (0, 0, 255)
    encoded = jpeg_bytes(pixels, orientation=6)
    sizes = decoded_sizes(monkeypatch)
    image = decode_image(encoded, image_size=64, channels=channels).astype(int)
    assert sizes == [(200, 400)]  # reduced, and already upright
    full = decode_image(encoded, image_size=64, channels=channels, reduced=False)
    assert np.abs(image - full).max() <= 4
    if channels == 3:
        assert image[:28, :, 0].mean() > 200 and image[:28, :, 2].mean() < 50  # red on top
        assert image[36:, :, 2].mean() > 200 and image[36:, :, 0].mean() < 50  # blue below
    else:
        assert abs(image[:28].mean() - 76) < 4 and abs(image[36:].mean() - 29) < 4


def test_a_jpeg_announcing_too_many_pixels_is_refused_before_decoding(monkeypatch):
    encoded = bytearray(jpeg_bytes(dog_photo(40, 30)))
    frame = encoded.index(b"\xff\xc0")
    encoded[frame + 5 : frame + 9] = struct.pack(">HH", 9000, 9000)
    monkeypatch.setattr(cv2, "imdecode", lambda *args: pytest.fail("decoded"))
    with pytest.raises(ValueError, match=f"^{REASON_TOO_LARGE}: 9,000x9,000 pixels"):
        decode_image(bytes(encoded))


# the decoded-image cache


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
    monkeypatch.setattr(data, "_decode", lambda *args: pytest.fail("decoded again"))
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
