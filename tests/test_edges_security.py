"""SECURITY.md's numbers are the shipped ones: the limits a reader is promised are in force."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

SECURITY = Path(__file__).resolve().parents[1] / "SECURITY.md"


def shipped(name: str):
    """A shipped limit, from the module that holds them all."""
    from dogvae.data import limits

    return getattr(limits, name)


def row(first_cell: str) -> str:
    """The text of SECURITY.md's table row whose first cell starts with ``first_cell``."""
    lines = [line for line in SECURITY.read_text().splitlines() if line.startswith(first_cell)]
    assert len(lines) == 1, f"SECURITY.md has {len(lines)} rows starting {first_cell!r}"
    return lines[0]


def number(text: str) -> int:
    return int(text.replace(",", ""))


def test_the_zip_bomb_limits_are_the_documented_ones():
    text = row("| a ZIP bomb |")
    found = re.search(
        r"more than ([\d,]+) members or (\d+) GiB uncompressed: the whole ZIP is refused; "
        r"a member above (\d+) MiB, or inflating more than (\d+)x to over (\d+) MiB: `too large`",
        text,
    )
    assert found, f"SECURITY.md's ZIP row no longer reads as expected: {text}"
    members, total_gib, member_mib, ratio, checked_mib = map(number, found.groups())
    assert shipped("MAX_ZIP_MEMBERS") == members
    assert shipped("MAX_ZIP_BYTES") == total_gib * 2**30
    assert shipped("MAX_FILE_BYTES") == member_mib * 2**20  # a member is read as one file
    assert shipped("MAX_COMPRESSION_RATIO") == ratio
    assert shipped("COMPRESSION_CHECK_BYTES") == checked_mib * 2**20


def test_the_image_and_dataset_limits_are_the_documented_ones(monkeypatch):
    found = re.search(r"an image above (\d+) MiB or 2\^(\d+) pixels", row("| an image above"))
    assert found, "SECURITY.md's image row no longer reads as expected"
    mib, power = map(number, found.groups())
    assert shipped("MAX_FILE_BYTES") == mib * 2**20
    assert shipped("MAX_IMAGE_PIXELS") == 2**power

    found = re.search(r"\| decoded dataset size \| (\d+) MB \|", row("| decoded dataset size"))
    assert found, "SECURITY.md's dataset-size row no longer reads as expected"
    monkeypatch.delenv("DOGVAE_MAX_DATASET_MB", raising=False)
    assert shipped("max_dataset_bytes")() == number(found.group(1)) * 2**20


@pytest.mark.parametrize("relative", [True, False], ids=["relative", "absolute"])
def test_csv_paths_are_refused_exactly_when_they_resolve_outside_the_folder(tmp_path, relative):
    """SECURITY.md: paths resolving outside are refused; inside ones, absolute too, are read."""
    from dogvae.data import load_dataset
    from tests.conftest import make_png

    assert "absolute paths that stay inside it are read" in row("| a CSV path")
    folder = tmp_path / "data"
    inside, outside = make_png(folder / "in.png"), make_png(tmp_path / "out.png")
    names = ["in.png", "../out.png"] if relative else [str(inside), str(outside)]
    (folder / "dogs.csv").write_text("filepaths\n" + "\n".join(names) + "\n")
    report = load_dataset(folder / "dogs.csv", cache=False).report
    assert report.readable == 1
    assert [(item.path, item.reason) for item in report.unreadable] == [
        (names[1], "outside the allowed folder")
    ]
