"""Shared fixtures: tiny dog-like datasets written into ``tmp_path``.

Every image is at most 48 pixels on a side so that loading a whole fixture
dataset takes milliseconds. The helpers are plain functions too, so a test can
``from conftest import make_png`` to build its own files.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

BREEDS = ("beagle", "poodle")
REPO = Path(__file__).resolve().parents[1]


def start_python(*args: str, stderr=subprocess.PIPE) -> subprocess.Popen:
    """``python ARGS`` from the repository in a new process; its stdout a text pipe."""
    return subprocess.Popen(
        [sys.executable, *map(str, args)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def run_python(*args: str, timeout_s: float = 300) -> subprocess.CompletedProcess:
    """``python ARGS`` from the repository, run to its end: exit code, stdout and stderr."""
    child = start_python(*args)
    try:
        out, err = child.communicate(timeout=timeout_s)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    return subprocess.CompletedProcess(child.args, child.returncode, out, err)


def in_ci() -> bool:
    """Whether this is a CI run (CI=true, as CI services and .ci/run set it)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.fixture(scope="module")
def needs_browser() -> None:
    """Skip where the real-browser tests cannot run (no chromium, no Playwright), saying
    so; in CI fail instead, since a CI run must not pass without its browser tests."""
    from tests.browser_helpers import browser_unavailable

    reason = browser_unavailable()
    if reason and in_ci():
        pytest.fail(f"CI=true, but the browser tests cannot run: {reason}", pytrace=False)
    if reason:
        pytest.skip(f"browser tests skipped on this machine: {reason} (with CI=true: a failure)")


def read_until(child: subprocess.Popen, wanted: str, timeout_s: float) -> str:
    """Read the child's output until a line contains ``wanted``; that line, else fail."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = child.stdout.readline()
        if wanted in line:
            return line
        if not line and child.poll() is not None:
            break
    errors = child.stderr.read()[-2000:] if child.stderr else ""
    raise AssertionError(f"the process never printed {wanted!r}: {errors}")


def dog_like(size: tuple[int, int] = (40, 30), seed: int = 0, channels: int = 3) -> np.ndarray:
    """A smooth synthetic "dog": a background gradient, a head, two ears and eyes.

    Smooth shapes rather than noise, so that a model trained on a few of them
    has something to learn.

    Args:
        size: (width, height) in pixels, as in Pillow.
        seed: Varies colours and positions.
        channels: 1 (grayscale), 3 (RGB) or 4 (RGBA, opaque).

    Returns:
        A ``(height, width, channels)`` uint8 array.
    """
    width, height = size
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    u, v = x / max(width - 1, 1), y / max(height - 1, 1)
    background = rng.uniform(0.5, 1.0, 3)[None, None, :] * (0.6 + 0.4 * v)[..., None]
    image = np.broadcast_to(background, (height, width, 3)).copy()
    fur = rng.uniform(0.2, 0.7, 3)
    centre_x, centre_y = rng.uniform(0.4, 0.6), rng.uniform(0.45, 0.65)
    radius_x, radius_y = rng.uniform(0.2, 0.3), rng.uniform(0.2, 0.3)
    head = ((u - centre_x) / radius_x) ** 2 + ((v - centre_y) / radius_y) ** 2 < 1
    image[head] = fur
    for side in (-1, 1):
        ear_x = centre_x + side * radius_x
        ear = ((u - ear_x) / (radius_x * 0.4)) ** 2 + ((v - centre_y) / (radius_y * 0.9)) ** 2 < 1
        image[ear] = fur * 0.6
        eye_x = centre_x + side * radius_x * 0.4
        eye = ((u - eye_x) / 0.05) ** 2 + ((v - centre_y + radius_y * 0.3) / 0.06) ** 2 < 1
        image[eye] = 0.05
    pixels = np.clip(np.rint(image * 255), 0, 255).astype(np.uint8)
    if channels == 1:
        return np.rint(pixels @ np.array([0.299, 0.587, 0.114])).astype(np.uint8)[..., None]
    if channels == 4:
        return np.concatenate([pixels, np.full((height, width, 1), 255, np.uint8)], axis=2)
    return pixels


def _pixels(size: tuple[int, int], value, channels: int, seed: int) -> np.ndarray:
    width, height = size
    if value is None:
        return dog_like(size, seed, channels)
    values = np.broadcast_to(np.asarray(value, np.uint8), (channels,))
    return np.broadcast_to(values, (height, width, channels)).copy()


def _image(pixels: np.ndarray) -> Image.Image:
    mode = {1: "L", 3: "RGB", 4: "RGBA"}[pixels.shape[2]]
    return Image.fromarray(pixels[..., 0] if mode == "L" else pixels, mode)


def make_png(
    path: str | Path,
    size: tuple[int, int] = (40, 30),
    value: int | tuple[int, ...] | None = None,
    channels: int = 3,
) -> Path:
    """Write a PNG (whatever the suffix) and return its path.

    Args:
        path: Where to write; parent folders are created.
        size: (width, height) in pixels.
        value: One value, or one per channel, for a flat image; None draws a
            dog-like picture that varies with the file name.
        channels: 1 (grayscale), 3 (RGB) or 4 (RGBA).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _image(_pixels(size, value, channels, zlib.crc32(path.name.encode()))).save(path, "PNG")
    return path


def make_jpeg(
    path: str | Path,
    size: tuple[int, int] = (40, 30),
    value: int | tuple[int, ...] | None = None,
    channels: int = 3,
) -> Path:
    """Write a JPEG (quality 90, whatever the suffix) and return its path; see ``make_png``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = _pixels(size, value, channels, zlib.crc32(path.name.encode()))
    _image(pixels).save(path, "JPEG", quality=90)
    return path


def make_broken(path: str | Path) -> Path:
    """Write a text file that pretends to be an image and return its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("this is not a picture of a dog\n")
    return path


def write_dogs(folder: Path, count: int) -> list[Path]:
    """``count`` images alternating PNG/JPEG and sizes, as folder/<breed>/<breed>_NN.ext."""
    paths = []
    for index in range(count):
        breed = BREEDS[index % 2]
        size = ((40, 30), (32, 48), (48, 48))[index % 3]
        name = f"{breed}_{index:02d}"
        if index % 4 == 3:
            paths.append(make_jpeg(folder / breed / f"{name}.jpg", size))
        else:
            paths.append(make_png(folder / breed / f"{name}.png", size))
    return paths


def make_dataset(images: np.ndarray, validation: int = 0):
    """``images`` (n, H, W, C) uint8 as a loaded Dataset, its last ``validation`` held out:
    the one in-memory dataset of the tests, for pages and trainings alike."""
    import pandas as pd

    from dogvae.data import Dataset, DatasetReport

    count, side, _, channels = images.shape
    train = count - validation
    table = pd.DataFrame(
        {
            "filepaths": [f"dog{i}.png" for i in range(count)],
            "split": ["train"] * train + ["validation"] * validation,
        }
    )
    report = DatasetReport(
        source="test",
        kind="folder",
        rows=count,
        found=count,
        readable=count,
        unreadable=(),
        train=train,
        validation=validation,
        split=f"last {validation} held out" if validation else "all train",
        image_size=side,
        channels=channels,
    )
    return Dataset(images=images, table=table, report=report)


def vivid_decoder(config):
    """An untrained decoder whose images differ visibly from one latent point to another.

    A freshly initialised decoder draws flat gray: every pixel within 1/255 of
    0.5. Its biases are zero and ReLU is scale-free, so four times every kernel
    multiplies the sigmoid's input by 4**4 and spreads the pixels over 0..255.
    """
    from dogvae.model import build_decoder

    decoder = build_decoder(config)
    decoder.set_weights([4.0 * weights for weights in decoder.get_weights()])
    return decoder


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """A folder of 14 image files: 12 readable, 1 broken, 1 empty.

    Layout (labels come from the subfolder)::

        photos/beagle/beagle_00.png ... (6 images, PNG and JPEG, up to 48x48)
        photos/poodle/poodle_01.png ... (6 images)
        photos/broken.jpg               (text, "not an image")
        photos/empty.png                (0 bytes, "empty")
    """
    folder = tmp_path / "photos"
    write_dogs(folder, 12)
    make_broken(folder / "broken.jpg")
    (folder / "empty.png").write_bytes(b"")
    return folder


@pytest.fixture
def dataset_csv(tmp_path: Path) -> Path:
    """A CSV in the original project's layout; returns the CSV's path.

    ``csv_data/dogs.csv`` has columns ``filepaths,labels,data set`` and 14 rows
    with paths relative to its folder: 12 readable images (10 ``train``, 2
    ``valid``: rows 4 and 9), then ``images/missing.jpg`` (no such file) and
    ``images/broken.jpg`` (text). Loaded, it gives 12 readable of 14 rows.
    """
    folder = tmp_path / "csv_data"
    images = write_dogs(folder / "images", 12)
    make_broken(folder / "images" / "broken.jpg")
    rows = [
        [path.relative_to(folder).as_posix(), path.parent.name, "valid" if i in (4, 9) else "train"]
        for i, path in enumerate(images)
    ]
    rows += [["images/missing.jpg", "beagle", "train"], ["images/broken.jpg", "poodle", "train"]]
    csv_path = folder / "dogs.csv"
    with csv_path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["filepaths", "labels", "data set"])
        writer.writerows(rows)
    return csv_path


@pytest.fixture
def dataset_zip(tmp_path: Path) -> Path:
    """A ZIP of 12 readable images and no CSV; returns the ZIP's path.

    Members are ``dogs/beagle/beagle_00.png`` ... and ``dogs/poodle/...``
    (6 each, PNG and JPEG), so the labels are ``beagle`` and ``poodle``.
    """
    source = tmp_path / "zip_source"
    images = write_dogs(source / "dogs", 12)
    zip_path = tmp_path / "dogs.zip"
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in images:
            archive.write(path, path.relative_to(source).as_posix())
    return zip_path


REPO = Path(__file__).resolve().parents[1]
# The shared real dog photos, absent on a fresh machine: tests that need them skip.
SHARED_DOGS_CSV = REPO.parent / "shared" / "data" / "dogs.csv"


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    """Name the real-photo tests that were skipped, and why, at the end of the run."""
    skipped = []
    for report in terminalreporter.stats.get("skipped", []):
        longrepr = report.longrepr
        reason = str(longrepr[2] if isinstance(longrepr, tuple) else longrepr)
        if "shared/data" in reason:
            skipped.append(f"{report.nodeid}: {reason.removeprefix('Skipped: ')}")
    if skipped:
        terminalreporter.section("real-photo tests skipped")
        terminalreporter.line(
            f"{len(skipped)} test(s) of the real dog photos did not run: ../shared/data absent"
        )
        for line in skipped:
            terminalreporter.line(f"  {line}")


@pytest.fixture
def app_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """Empty data and runs folders, set as DOGVAE_DATA_DIR and DOGVAE_RUNS_DIR for the app."""
    data_dir, runs_dir = tmp_path / "app_data", tmp_path / "app_runs"
    data_dir.mkdir()
    runs_dir.mkdir()
    monkeypatch.setenv("DOGVAE_DATA_DIR", str(data_dir))
    monkeypatch.setenv("DOGVAE_RUNS_DIR", str(runs_dir))
    return data_dir, runs_dir


@pytest.fixture
def runs_folder(app_dirs: tuple[Path, Path]) -> Path:
    """The app's runs folder, empty (its data folder is app_dirs' too)."""
    return app_dirs[1]


@pytest.fixture
def media(monkeypatch: pytest.MonkeyPatch) -> dict:
    """Images and eager downloads as {url: (bytes, name)}; deferred ones as {name: callable}."""
    from streamlit.runtime.media_file_manager import MediaFileManager

    files: dict = {}
    add, add_deferred = MediaFileManager.add, MediaFileManager.add_deferred

    def remember(self, path_or_data, mimetype, coordinates, file_name=None, **kwargs):
        url = add(self, path_or_data, mimetype, coordinates, file_name, **kwargs)
        files[url] = (path_or_data, file_name)
        return url

    def remember_deferred(self, data_callable, mimetype, coordinates, file_name=None, **kwargs):
        files[file_name] = data_callable
        return add_deferred(self, data_callable, mimetype, coordinates, file_name, **kwargs)

    monkeypatch.setattr(MediaFileManager, "add", remember)
    monkeypatch.setattr(MediaFileManager, "add_deferred", remember_deferred)
    return files


@pytest.fixture
def train_app(app_dirs: tuple[Path, Path]):
    """The Train page with a 16-image dataset already loaded in the session; and the runs folder."""
    from dogvae.config import DataConfig
    from dogvae.data import load_dataset

    data_dir, runs_dir = app_dirs
    write_dogs(data_dir / "dogs", 16)
    app = open_app()
    app.session_state["dataset"] = load_dataset(data_dir / "dogs", DataConfig())
    app.switch_page("pages/train.py").run()
    assert not app.exception
    return app, runs_dir


def save_test_run(path: Path, encoder, decoder, model_config=None, **settings) -> Path:
    """Save models as a run folder with small made-up settings; ``settings`` override them."""
    from dogvae import runs
    from dogvae.config import DataConfig, ModelConfig, TrainConfig

    defaults = {
        "model_config": model_config or ModelConfig(),
        "train_config": TrainConfig(epochs=1),
        "data_config": DataConfig(),
        "data": {"source": "test", "readable": 1},
        "history": [],
        "preset": "seed",
    }
    return runs.save_run(path, encoder, decoder, **{**defaults, **settings})


def open_app(page: str | None = None):
    """The app in Streamlit's AppTest, run once, optionally switched to ``pages/<page>.py``."""
    from streamlit.testing.v1 import AppTest

    app = AppTest.from_file(str(REPO / "streamlit_app.py"), default_timeout=60).run()
    if page is not None:
        app.switch_page(f"pages/{page}.py").run()
    assert not app.exception, app.exception
    return app


@pytest.fixture(autouse=True)
def _no_default_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """App tests start without the bundled pretrained model unless they ask for it."""
    monkeypatch.setenv("DOGVAE_DEFAULT_RUN", "none")


@pytest.fixture(scope="session", autouse=True)
def _frozen_gc():
    """AppTest collects garbage after every rerun; with TensorFlow loaded that costs ~0.5 s.

    Freezing what exists at session start (and again in fixtures that load models)
    keeps it out of each collection, as the app itself does after loading a model.
    """
    import gc

    gc.freeze()
    yield
