"""The app in a real browser (chromium via Playwright), used the way a person would.

One server and one browser tab for the whole module: the tests run in file
order and build on each other (a dataset, then two trainings, then the pages
that use their models), moving between pages only through the sidebar, since
loading a page's URL would start a new session. After an earlier step fails,
the later ones are skipped rather than failing for the same reason.

Every test fails on an error box in the app and on an error in the browser's
console. Run them with ``pytest -m browser``; they need /usr/bin/chromium.
"""

from __future__ import annotations

import contextlib
import csv
import json
import re
import signal
import time
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from tests.browser_helpers import (
    MAIN,
    MAIN_PROGRESS,
    broken_images,
    chromium,
    go_to,
    log_tail,
    metric,
    open_app,
    running_app,
    settle,
    shut_down,
    start_training,
    upload,
    wait_idle,
    wait_until,
)
from tests.conftest import make_broken, make_png, write_dogs

# needs_browser first: without a browser, skip before any server starts.
pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.usefixtures("needs_browser")]

IMAGES = 40  # enough for an epoch to take a few reports at batch size 2, fast to train
FIRST_RUN = "browser-first"
FIRST_EPOCHS = 10
STOPPED_RUN = "browser-stopped"
CHART = f'{MAIN} [data-testid="stVegaLiteChart"]'


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The app's data folder (a CSV over 40 dogs, one broken and one missing), runs, a ZIP."""
    root = tmp_path_factory.mktemp("browser")
    data_dir, runs_dir = root / "data", root / "runs"
    runs_dir.mkdir()
    dogs = write_dogs(data_dir / "images", IMAGES)
    broken = make_broken(data_dir / "images" / "broken.png")
    with (data_dir / "dogs.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["filepaths", "labels"])
        for path in [*dogs, broken]:
            writer.writerow([path.relative_to(data_dir).as_posix(), path.parent.name])
        writer.writerow(["images/missing.png", "beagle"])

    # The upload a user might make by mistake or on purpose: the same dogs plus
    # one member whose name climbs out of the archive.
    evil = make_png(root / "evil.png")
    zip_path = root / "upload" / "dogs.zip"
    zip_path.parent.mkdir()
    with zipfile.ZipFile(zip_path, "w") as archive:
        for path in dogs:
            archive.write(path, path.relative_to(data_dir).as_posix())
        archive.write(evil, "../evil.png")
    return {"root": root, "data": data_dir, "runs": runs_dir, "zip": zip_path}


def server_log(folders) -> Path:
    return folders["root"] / "server.log"


@pytest.fixture(scope="module")
def app_url(folders):
    # No bundled default model: the walk-through sees only the runs it trains.
    no_default = {"DOGVAE_DEFAULT_RUN": "none"}
    with running_app(folders["data"], folders["runs"], server_log(folders), no_default) as url:
        yield url


@pytest.fixture(scope="module")
def user(app_url):
    """One person's browser tab on the app, and the errors its console reports."""
    with chromium() as context:
        yield open_app(context, app_url)


@pytest.fixture(scope="module")
def _failures_before(request) -> int:
    return request.session.testsfailed


@pytest.fixture(autouse=True)
def _in_order_and_clean(request, _failures_before, folders):
    """Skip after an earlier failure; afterwards, fail on an error box or a console error."""
    if request.session.testsfailed > _failures_before:
        pytest.skip("an earlier step of the browser walk-through failed")
    page, errors = request.getfixturevalue("user")
    yield
    if request.session.testsfailed > _failures_before:
        shot = folders["root"] / f"{request.node.name}.png"
        page.screenshot(path=str(shot), full_page=True)
        print(f"screenshot of the failure: {shot}")
        print("browser errors:", *(errors.take() or ["none"]), sep="\n  ")
        print(log_tail(server_log(folders)))
        return
    boxes = page.locator('[data-testid="stException"]')
    # The app hides exception details from users (client.showErrorDetails); the log has them.
    assert boxes.count() == 0, (
        f"the app shows an exception: {boxes.first.inner_text()}{log_tail(server_log(folders))}"
    )
    broken = broken_images(page)
    assert not broken, f"images that did not load: {broken}"
    reported = errors.take_unexpected()
    assert not reported, "the browser reported errors:\n" + "\n".join(reported)


def report(page) -> dict[str, str]:
    return {
        label: metric(page, label)
        for label in ("Rows", "Files found", "Readable images", "Unreadable")
    }


def unreadable_cell(page, text: str):
    """A cell of the report's table; its accessible copy is in the DOM, the grid is a canvas."""
    return page.locator('[data-testid="stDataFrame"] [role="gridcell"]', has_text=text)


def loaded_images(page) -> list[str]:
    """The ``src`` of every image in the main area that the browser has finished decoding."""
    return page.locator(f'{MAIN} [data-testid="stImage"] img').evaluate_all(
        "images => images.filter(i => i.complete && i.naturalWidth > 0).map(i => i.src)"
    )


def is_loaded(image) -> bool:
    """Whether the browser has fetched and decoded this ``img``."""
    return image.evaluate("image => image.complete && image.naturalWidth > 0")


def chart_points(page) -> int:
    """Points on the live loss chart's lines (Vega draws each line as one SVG path)."""
    return page.locator(CHART).first.evaluate(
        """chart => Array.from(chart.querySelectorAll('.mark-line path'))
            .map(path => (path.getAttribute('d') || '').split('L').length)
            .reduce((a, b) => a + b, 0)"""
    )


def test_data_page_reports_an_uploaded_csv_and_a_zip(user, folders):
    page, _ = user
    upload(page, folders["data"] / "dogs.csv")
    settle(page, lambda: page.get_by_role("heading", name="Report: dogs.csv").count(), "report")
    assert report(page) == {
        "Rows": str(IMAGES + 2),
        "Files found": str(IMAGES + 1),
        "Readable images": str(IMAGES),
        "Unreadable": "2",
    }
    unreadable_cell(page, "not an image").first.wait_for(state="attached")
    unreadable_cell(page, "missing").first.wait_for(state="attached")
    preview = wait_until(lambda: loaded_images(page), what="the preview image to load")
    assert len(preview) == 1 and "/media/" in preview[0]
    assert page.get_by_text("The first 16 images exactly as the model sees them").count()

    upload(page, folders["zip"])
    settle(page, lambda: page.get_by_role("heading", name="Report: dogs.zip").count(), "report")
    assert report(page) == {
        "Rows": str(IMAGES + 1),
        "Files found": str(IMAGES),
        "Readable images": str(IMAGES),
        "Unreadable": "1",
    }
    unreadable_cell(page, "../evil.png").first.wait_for(state="attached")
    unreadable_cell(page, "outside the allowed folder").first.wait_for(state="attached")
    wait_until(lambda: loaded_images(page), what="the ZIP's preview image to load")


def test_sidebar_shows_the_dataset_just_loaded(user):
    page, _ = user  # right after the ZIP upload of the previous test, no rerun since
    sidebar = page.locator('[data-testid="stSidebar"]')
    assert sidebar.get_by_text(f"{IMAGES} of {IMAGES + 1} images readable").count()


def test_training_shows_a_live_chart_and_finishes(user, folders):
    from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

    page, _ = user
    go_to(page, "Train")
    summary = f"{IMAGES} of {IMAGES + 1} images readable"
    page.get_by_text(f"Dataset: dogs.zip, {summary}").wait_for()
    assert page.locator('[data-testid="stSidebar"]').get_by_text(summary).count()
    # Enough epochs to see the page move on: an epoch of 18 batches takes about a second.
    start_training(page, epochs=FIRST_EPOCHS, batch_size=2, name=FIRST_RUN)

    # Watch the page as a user would, noting each new progress text and chart size.
    progress_texts: list[str] = []
    point_counts: list[int] = []
    finished = page.get_by_text("Training finished")
    deadline = time.monotonic() + 180
    failed = page.locator(f'{MAIN} [data-testid="stAlertContentError"]')
    while not finished.count():
        assert time.monotonic() < deadline, f"still training after 180 s: {progress_texts}"
        assert not failed.count(), failed.first.inner_text()
        bar = page.locator(MAIN_PROGRESS)
        if bar.count():
            try:
                text = bar.first.inner_text(timeout=1000).strip()
            except PlaywrightTimeoutError:
                text = ""  # the bar went away between count() and reading: training ended
            if text and (not progress_texts or progress_texts[-1] != text):
                progress_texts.append(text)
        if page.locator(f"{CHART} .mark-line path").count():
            points = chart_points(page)
            if not point_counts or point_counts[-1] != points:
                point_counts.append(points)
        time.sleep(0.2)
    settle(page, lambda: page.locator(f"{CHART} .mark-line path").count(), "the final chart")
    final_points = chart_points(page)

    first = f"Epoch 0/{FIRST_EPOCHS}"
    assert progress_texts[0].startswith(first), progress_texts  # before the first batch
    moving = re.compile(rf"Epoch [1-9]\d*/{FIRST_EPOCHS} · batch \d+/")
    batches_seen = [text for text in progress_texts if moving.match(text)]
    assert len(batches_seen) >= 2, f"the progress never moved on: {progress_texts}"
    assert point_counts, "no loss chart while training"
    assert final_points > point_counts[0], (point_counts, final_points)
    assert page.get_by_text(f"run {FIRST_RUN} is saved and now the active model").count()
    assert (folders["runs"] / FIRST_RUN / "config.json").is_file()


def test_stop_ends_a_long_training_early_and_saves_it(user, folders):
    page, _ = user
    # A learning rate so small that the decoder stays as initialised: its image then
    # visibly depends on the latent point (Generate below), whereas a decoder trained
    # for an epoch or two on these tiny dogs may ignore it to within one grey level.
    start_training(page, epochs=500, batch_size=2, name=STOPPED_RUN, learning_rate="0.00001")
    # Stop once batches are being reported, so there is something to save.
    batches = page.locator(MAIN_PROGRESS, has_text=re.compile(r"Epoch \d+/500 · batch [1-9]"))
    batches.wait_for(timeout=120_000)
    # In the page, not the "Stop" of Streamlit's header, which stops the script run.
    page.locator(MAIN).get_by_role("button", name="Stop", exact=True).click()
    # How fast a Stop ends the training is measured by bench/train_in_app.py (about
    # 3 s); this waits long enough for a loaded machine, far less than 500 epochs.
    page.get_by_text("Training ended early").wait_for(timeout=120_000)
    wait_idle(page)
    assert page.get_by_text(f"run {STOPPED_RUN} is saved and now the active model").count()

    config = json.loads((folders["runs"] / STOPPED_RUN / "config.json").read_text())
    assert config["status"] == "stopped"
    assert config["train"]["learning_rate"] == 1e-5  # the form's values reached the run
    assert 1 <= config["epochs_completed"] < 500


def test_generate_redraws_the_dog_when_a_latent_slider_moves(user):
    page, _ = user
    go_to(page, "Generate")
    assert page.locator('[data-testid="stSidebar"]').get_by_text(STOPPED_RUN).count()
    wait_until(lambda: loaded_images(page), what="the sampled dogs")
    # The point is drawn in the page (the browser decoder; its parity with the server's
    # decode is tests/test_browser_app_decoder.py's).
    canvas = page.locator("canvas[data-dogvae-canvas][data-status=ready]")
    canvas.wait_for()
    before = canvas.evaluate("canvas => canvas.toDataURL()")
    start = json.loads(canvas.get_attribute("data-point"))[0]

    slider = page.locator(".dogvae-latent-canvas").get_by_role("slider", name="z1")
    slider.focus()
    # A whole unit (down, then back where it was if the start is near the top): the
    # stopped run trained a few dozen batches, and its decoder may already answer a small
    # step of z1 with the same grey levels.
    key = "ArrowRight" if start <= 2 else "ArrowLeft"
    for _ in range(20):
        page.keyboard.press(key)
    moved = start + (1 if key == "ArrowRight" else -1)
    wait_until(
        lambda: abs(json.loads(canvas.get_attribute("data-point"))[0] - moved) < 0.03,
        what="the canvas at the new point",
    )
    assert canvas.evaluate("canvas => canvas.toDataURL()") != before, "the dog was not redrawn"
    assert not page.get_by_text("Decoding on the server").count()


def test_interpolate_downloads_a_gif_with_every_frame(user, folders):
    page, _ = user
    go_to(page, "Interpolate")
    strip = page.locator('[data-testid="stImage"]').filter(has_text="8 steps, slerp")
    strip.locator("img").wait_for()
    wait_until(lambda: is_loaded(strip.locator("img")), what="the interpolation strip")

    with page.expect_download(timeout=90_000) as download_info:
        page.get_by_role("button", name="Download GIF").click()
    download = download_info.value
    assert download.suggested_filename == f"{STOPPED_RUN}-interpolation.gif"
    saved = folders["root"] / download.suggested_filename
    download.save_as(saved)
    with Image.open(saved) as gif:
        assert gif.format == "GIF"
        assert gif.n_frames == 2 * 8 - 2  # forwards, then back without repeating the ends


def test_models_page_lists_both_runs(user):
    page, _ = user
    go_to(page, "Models")
    for name in (FIRST_RUN, STOPPED_RUN):
        page.locator('[data-testid="stHeading"]', has_text=name).first.wait_for()
    active = page.locator('[data-testid="stHeading"]', has_text=STOPPED_RUN).first
    assert "active" in active.inner_text()
    assert page.get_by_text("Stopped before the last epoch").count() == 1


def test_a_link_straight_to_a_page_opens_it_without_probes_or_errors(user, app_url):
    """A bookmark or shared link to /generate: the client asks the server's root at once.

    Plain ``streamlit run streamlit_app.py`` first probes /generate/_stcore/health and
    /generate/_stcore/host-config, and the console shows their two 404s.
    """
    context = user[0].context
    asked: list[str] = []

    def note(request):
        asked.append(request.url)

    context.on("request", note)  # before the tab opens: its first requests are the probes
    page, errors = open_app(context, app_url, "/generate", "Generate")
    context.remove_listener("request", note)
    try:
        api = [url for url in asked if "_stcore/" in url]
        assert f"{app_url}/_stcore/health" in api and f"{app_url}/_stcore/host-config" in api
        assert not [url for url in api if "/generate/" in url], api
        go_to(page, "Models")  # the sidebar's links still lead where they should
        assert page.url == f"{app_url}/models"
        page.reload()
        page.get_by_role("heading", name="Models", level=1).wait_for()
        wait_idle(page)
        assert errors.take_unexpected() == []
    finally:
        page.close()


@pytest.mark.parametrize("script", ["serve.py", "streamlit_app.py"])
def test_a_server_told_to_stop_saves_the_training_it_was_running(user, folders, script):
    """SIGTERM (kill, docker stop) while a training runs: the server saves it before exiting.

    Served as ``make run`` does (serve.py: its shutdown hook saves) and by plain
    ``streamlit run streamlit_app.py`` (dogvae.training's exit hook saves). A second
    server, and a second user in the same browser, so that the walk-through's tab
    sees no connection error.
    """
    runs = folders["root"] / f"runs-shutdown-{script}"
    runs.mkdir()
    log = folders["root"] / f"server-shutdown-{script}.log"
    no_default = {"DOGVAE_DEFAULT_RUN": "none"}
    context = user[0].context.browser.new_context(viewport=user[0].viewport_size)
    server = running_app(folders["data"], runs, log, no_default, script=script)
    with server as url, contextlib.closing(context):
        page, _ = open_app(context, url)
        upload(page, folders["data"] / "dogs.csv")
        settle(page, lambda: page.get_by_role("heading", name="Report: dogs.csv").count())
        go_to(page, "Train")
        start_training(page, epochs=500, batch_size=2, name="browser-shutdown")
        batches = re.compile(r"Epoch \d+/500 · batch [1-9]")
        page.locator(MAIN_PROGRESS, has_text=batches).wait_for(timeout=120_000)
        code = shut_down(url)
    # After saving, serve.py ends by re-raising the SIGTERM, as uvicorn does, or, when
    # a connection does not close, with the shell's code for it (serve.EXIT_GRACE_SECONDS).
    expected = (-signal.SIGTERM, 128 + signal.SIGTERM) if script == "serve.py" else (0,)
    assert code in expected, log_tail(log)
    config = json.loads((runs / "browser-shutdown" / "config.json").read_text())
    assert config["status"] == "stopped" and config["epochs_completed"] < 500
    assert "dogvae: the server is shutting down; saved browser-shutdown (stopped)" in (
        log.read_text()
    )
