"""Tests for dogvae.data.sources and paths: folders, CSV files, ZIP files and the path guard."""

from __future__ import annotations

import json
import os
import sys
import zipfile

import numpy as np
import pytest
from conftest import make_broken, make_png
from data_helpers import png_header, reasons_by_path, write_csv

from dogvae import data
from dogvae.config import DataConfig
from dogvae.data import (
    REASON_EMPTY,
    REASON_MISSING,
    REASON_NOT_IMAGE,
    REASON_OUTSIDE,
    REASON_TOO_LARGE,
    decode_image,
    limits,
    list_sources,
    load_dataset,
)


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path, monkeypatch):
    """Every load caches into this test's own folder, never into ~/.cache/dogvae."""
    monkeypatch.setenv("DOGVAE_CACHE_DIR", str(tmp_path / "cache"))


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


def test_csv_saved_by_a_windows_spreadsheet_is_read_as_cp1252(tmp_path):
    # Excel's "CSV" on a Western European Windows: cp1252, accented file names.
    make_png(tmp_path / "photos" / "chien_été.png", size=(8, 8))
    make_png(tmp_path / "photos" / "caniche.png", size=(8, 8))
    csv_path = tmp_path / "dogs.csv"
    text = "filepaths,labels\nphotos/chien_été.png,bichon frisé\nphotos/caniche.png,prix 5 €\n"
    csv_path.write_bytes(text.encode("cp1252"))
    dataset = load_dataset(csv_path)
    report = dataset.report
    assert (report.rows, report.readable, report.encoding) == (2, 2, "cp1252")
    assert list(dataset.table["filepaths"]) == ["photos/chien_été.png", "photos/caniche.png"]
    assert list(dataset.table["labels"]) == ["bichon frisé", "prix 5 €"]
    assert json.loads(json.dumps(report.to_dict()))["encoding"] == "cp1252"
    assert report.summary() == "2 of 2 images readable; the CSV was read as cp1252, not UTF-8"


def test_csv_not_utf8_nor_cp1252_is_read_as_latin1(tmp_path):
    # 0x81 is unassigned in cp1252; Latin-1 reads any byte (the former "not UTF-8" case).
    make_png(tmp_path / "caniche\xe9.png", size=(8, 8))
    csv_path = tmp_path / "dogs.csv"
    csv_path.write_bytes("filepaths,labels\ncaniche\xe9.png,x\x81\n".encode("latin-1"))
    dataset = load_dataset(csv_path)
    assert (dataset.report.readable, dataset.report.encoding) == (1, "latin-1")
    assert dataset.table["labels"][0] == "x\x81"
    assert "read as latin-1" in dataset.report.summary()


def test_utf8_csvs_say_so_and_their_summary_is_unchanged(tmp_path, image_folder, dataset_zip):
    make_png(tmp_path / "été.png", size=(8, 8))
    for name, encoding in (("plain.csv", "utf-8"), ("bom.csv", "utf-8-sig")):
        (tmp_path / name).write_bytes("filepaths\nété.png\n".encode(encoding))
        report = load_dataset(tmp_path / name).report
        assert (report.encoding, report.readable) == (encoding, 1)
        assert report.summary() == "1 of 1 images readable"
    assert load_dataset(image_folder).report.encoding is None
    assert load_dataset(dataset_zip).report.encoding is None


def test_a_csv_inside_a_zip_may_be_cp1252_too(tmp_path):
    good = make_png(tmp_path / "a.png", size=(8, 8)).read_bytes()
    zip_path = tmp_path / "windows.zip"
    with zipfile.ZipFile(zip_path, "w") as archive:
        archive.writestr("dogs.csv", "filepaths,labels\na.png,lévrier\n".encode("cp1252"))
        archive.writestr("a.png", good)
    dataset = load_dataset(zip_path)
    assert (dataset.report.readable, dataset.report.encoding) == (1, "cp1252")
    assert dataset.table["labels"][0] == "lévrier"


def test_a_utf16_or_binary_csv_is_refused(tmp_path):
    csv_path = tmp_path / "dogs.csv"
    csv_path.write_bytes("filepaths\na.png\n".encode("utf-16"))
    with pytest.raises(ValueError, match=r"is not a text file.*save it as a UTF-8 CSV"):
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


# file size limits


def test_too_large_file_is_not_read(monkeypatch, image_folder):
    monkeypatch.setattr(limits, "MAX_FILE_BYTES", 300)
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
    monkeypatch.setattr(limits, "MAX_ZIP_MEMBERS", 5)
    with pytest.raises(ValueError, match="12 entries; at most 5"):
        load_dataset(dataset_zip)


def test_zip_too_large_in_total_is_refused(dataset_zip, monkeypatch):
    monkeypatch.setattr(limits, "MAX_ZIP_BYTES", 1000)
    with pytest.raises(ValueError, match="would unpack to"):
        load_dataset(dataset_zip)


def test_zip_member_too_large_or_too_compressed(tmp_path, monkeypatch):
    good = make_png(tmp_path / "a.png", size=(8, 8)).read_bytes()
    zip_path = tmp_path / "bombs.zip"
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("good.png", good)
        archive.writestr("bomb.png", b"\0" * (2 * 1024 * 1024))
        archive.writestr("big.png", os.urandom(5000))
    monkeypatch.setattr(limits, "MAX_FILE_BYTES", 4096)
    monkeypatch.setattr(limits, "COMPRESSION_CHECK_BYTES", 1024)
    dataset = load_dataset(zip_path)
    unreadable = {item.path: item for item in dataset.report.unreadable}
    assert unreadable["big.png"].reason == REASON_TOO_LARGE
    assert unreadable["big.png"].detail == "5,000 bytes"
    assert unreadable["bomb.png"].reason == REASON_TOO_LARGE
    assert unreadable["bomb.png"].detail == f"{2 * 1024 * 1024:,} bytes"
    monkeypatch.setattr(limits, "MAX_FILE_BYTES", 64 * 1024 * 1024)
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


# the source itself


def test_missing_source_and_wrong_kind(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        load_dataset(tmp_path / "nothing.csv")
    other = make_broken(tmp_path / "notes.txt")
    with pytest.raises(ValueError, match=r"expected a \.csv file, a \.zip file or a folder"):
        load_dataset(other)


def test_list_sources(tmp_path, image_folder, dataset_csv, dataset_zip):
    (tmp_path / "empty_folder").mkdir()
    make_broken(tmp_path / "notes.txt")
    make_png(tmp_path / ".hidden" / "a.png")
    names = [path.name for path in list_sources(tmp_path)]
    assert names == ["csv_data", "dogs.zip", "photos", "zip_source"]
    assert list_sources(dataset_csv.parent)[0] == dataset_csv
    assert list_sources(tmp_path / "nowhere") == []
