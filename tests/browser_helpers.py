"""Run the app in a real browser: start the server, launch chromium, act like a user.

Shared by tests/test_browser.py and scripts/screenshots.py. Playwright is
imported lazily, so importing this module never fails where it is missing.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
# Playwright's own browser download does not work here; Debian's chromium does.
# No sandbox (containers), no GPU, and none of chromium's own network chatter.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# Generous: the box has two cores and may be training a model at the same time.
SERVER_START_SECONDS = 60
RERUN_SECONDS = 90

IDLE = '[data-test-script-state="notRunning"]'
EXCEPTION = '[data-testid="stException"]'
UPLOAD_INPUT = '[data-testid="stFileUploader"] input[type=file]'
MAIN = '[data-testid="stMain"]'
MAIN_PROGRESS = f'{MAIN} [data-testid="stProgress"]'
NAV_LINK = '[data-testid="stSidebarNav"] a[data-testid="stSidebarNavLink"]'

_servers: dict[str, subprocess.Popen] = {}  # URL -> the running_app serving it


def browser_unavailable() -> str | None:
    """Why a browser test cannot run here, or None when it can."""
    if not Path(CHROMIUM).is_file():
        return f"no chromium at {CHROMIUM} (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as error:
        return f"playwright cannot be imported: {error}"
    return None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
            return response.status == 200 and response.read().strip() == b"ok"
    except OSError:
        return False


@contextlib.contextmanager
def running_app(
    data_dir: Path,
    runs_dir: Path,
    log_path: Path | None = None,
    env: dict[str, str] | None = None,
    script: str | None = None,
) -> Iterator[str]:
    """Start ``streamlit run serve.py`` (as ``make run`` does) on a free port; yield its
    URL; stop it.

    ``script`` runs another Streamlit script instead (a benchmark's yardstick page).

    The server runs in its own process group, so stopping it also ends anything
    it started. Its output goes to ``log_path`` (default: discarded) and is
    quoted in the error when it does not come up. ``env`` adds variables.
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server_env = {
        **os.environ,
        "DOGVAE_DATA_DIR": str(data_dir),
        "DOGVAE_RUNS_DIR": str(runs_dir),
        "PYTHONUNBUFFERED": "1",
        **(env or {}),
    }
    command = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        script or "serve.py",
        "--server.headless=true",
        f"--server.port={port}",
        "--server.address=127.0.0.1",
        "--server.fileWatcherType=none",
        "--browser.gatherUsageStats=false",
    ]
    with contextlib.ExitStack() as stack:
        log = stack.enter_context(
            open(log_path, "wb") if log_path else open(os.devnull, "wb")  # noqa: SIM115
        )
        server = subprocess.Popen(
            command,
            cwd=REPO,
            env=server_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        stack.callback(_stop, server)
        _servers[url] = server
        stack.callback(_servers.pop, url, None)
        deadline = time.monotonic() + SERVER_START_SECONDS
        while not _healthy(url):
            if server.poll() is not None:
                raise RuntimeError(
                    f"the app exited with code {server.returncode}{log_tail(log_path)}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the app did not answer {url}/_stcore/health within "
                    f"{SERVER_START_SECONDS} s{log_tail(log_path)}"
                )
            time.sleep(0.25)
        yield url


def _stop(server: subprocess.Popen) -> None:
    """End the server's process group: politely, then for sure."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, sig)
        try:
            server.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def shut_down(url: str, timeout_s: float = 60) -> int:
    """Send the server at ``url`` a SIGTERM (as ``kill`` or ``docker stop`` would); its exit code.

    Raises TimeoutError if it is still running after ``timeout_s`` seconds.
    """
    server = _servers[url]
    os.killpg(server.pid, signal.SIGTERM)
    try:
        return server.wait(timeout_s)
    except subprocess.TimeoutExpired:
        raise TimeoutError(f"the app was still running {timeout_s} s after a SIGTERM") from None


def log_tail(log_path: Path | None, lines: int = 30) -> str:
    """The end of the server's output, to quote in an error."""
    if log_path is None or not Path(log_path).is_file():
        return ""
    text = Path(log_path).read_text(errors="replace").splitlines()[-lines:]
    return "; server output:\n" + "\n".join(text)


@contextlib.contextmanager
def chromium(viewport: tuple[int, int] = (1400, 1000)) -> Iterator[Any]:
    """A fresh browser context (one user) in Debian's chromium; yields the context."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            width, height = viewport
            context = browser.new_context(
                viewport={"width": width, "height": height}, accept_downloads=True
            )
            context.set_default_timeout(RERUN_SECONDS * 1000)
            yield context
        finally:
            browser.close()


# The one kind of browser error let through (images and download buttons alike).
# Streamlit keeps a session's media files only for its latest run: when a rerun (a
# slider step, the second rerun of an upload) replaces a file before the browser has
# fetched it, that fetch gets a 404 and the browser logs it, then loads the
# replacement. Harmless to the user as long as every image on the page ends up
# loaded: check that too, with broken_images().
SUPERSEDED_IMAGE = re.compile(
    r"status of 404 \(Not Found\) \(\{'url': '[^']*/media/|Image source error - \S*/media/"
    r"|Download Button source error - 404"  # a download button's file, superseded the same way
)


class BrowserErrors:
    """Errors the page logs to the console or throws, collected for a test to check."""

    def __init__(self, page: Any) -> None:
        self.messages: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.messages.append(f"page error: {error}"))

    def _console(self, message: Any) -> None:
        if message.type == "error":
            self.messages.append(f"console error: {message.text} ({message.location})")

    def take(self) -> list[str]:
        """The errors so far; the list starts empty again."""
        messages, self.messages = self.messages, []
        return messages

    def take_unexpected(self) -> list[str]:
        """Like ``take``, less the 404s of superseded images (see SUPERSEDED_IMAGE)."""
        return [message for message in self.take() if not SUPERSEDED_IMAGE.search(message)]


def broken_images(page: Any, timeout_s: float = 30) -> list[str]:
    """The ``src`` of images in the main area still not loaded after ``timeout_s`` seconds."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

    images = page.locator(f"{MAIN} img")
    try:
        page.wait_for_function(
            """main => Array.from(document.querySelectorAll(main + " img"))
                .every(image => image.complete && image.naturalWidth > 0)""",
            arg=MAIN,
            timeout=timeout_s * 1000,
        )
    except PlaywrightTimeoutError:
        return images.evaluate_all(
            "images => images.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)"
        )
    return []


def wait_idle(page: Any, timeout_s: float = RERUN_SECONDS) -> None:
    """Wait until the script is not running.

    Right after a click the rerun may not have started yet, so this alone can
    return too early: wait for the click's visible effect first (``settle``).
    """
    page.wait_for_selector(IDLE, state="attached", timeout=timeout_s * 1000)


def wait_until(
    condition: Callable[[], Any], timeout_s: float = RERUN_SECONDS, what: str = "a condition"
) -> Any:
    """Poll ``condition`` (Python side) until it returns something truthy."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.2)


def settle(
    page: Any, check: Callable[[], Any], what: str = "the page", timeout_s: float = RERUN_SECONDS
) -> Any:
    """Wait until ``check`` holds and the script is idle, then fail on an error box.

    ``check`` says what the action should have led to (an element, a text);
    waiting for it first avoids mistaking the idle state *before* a rerun for
    the one after it.
    """
    value = wait_until(check, timeout_s, what)
    wait_idle(page, timeout_s)
    assert_no_exception(page)
    return value


def assert_no_exception(page: Any) -> None:
    boxes = page.locator(EXCEPTION)
    if boxes.count():
        raise AssertionError(f"the app shows an exception: {boxes.first.inner_text()}")


def open_app(
    context: Any, url: str, path: str = "", title: str = "Data"
) -> tuple[Any, BrowserErrors]:
    """A new tab on the app at ``path`` (default: its first page, Data, titled ``title``),
    loaded and idle, and its errors from the start."""
    page = context.new_page()
    errors = BrowserErrors(page)
    page.goto(f"{url}{path}")
    page.get_by_role("heading", name=title, level=1).wait_for()
    wait_idle(page)
    assert_no_exception(page)
    return page, errors


def go_to(page: Any, title: str) -> None:
    """Click the sidebar link to a page, as a user would, and wait for it to load."""
    page.locator(NAV_LINK).filter(has_text=title).click()
    page.get_by_role("heading", name=title, level=1).wait_for()
    wait_idle(page)
    assert_no_exception(page)


def upload(page: Any, path: Path) -> None:
    """Choose a file in the page's (first) file uploader."""
    page.locator(UPLOAD_INPUT).first.set_input_files(str(path))


def fill_in(page: Any, label: str, value: str) -> None:
    """Type a value into the field with this label and leave the field, which commits it.

    Leaving by blur rather than Tab: Tab would put a focus ring on the next element.
    """
    field = page.get_by_label(label, exact=True)
    field.fill(value)
    field.blur()


def metric(page: Any, label: str) -> str:
    """The value shown by the ``st.metric`` with this label."""
    box = page.locator('[data-testid="stMetric"]').filter(
        has=page.locator('[data-testid="stMetricLabel"]', has_text=label)
    )
    return box.locator('[data-testid="stMetricValue"]').inner_text().strip()


# Every picture in the main area drawn: images decoded, charts rendered, fonts in.
_PICTURES_READY = """() => {
    const main = document.querySelector('[data-testid="stMain"]');
    if (!main || document.fonts.status !== "loaded") return false;
    const images = Array.from(main.querySelectorAll("img"));
    const charts = Array.from(main.querySelectorAll('[data-testid="stVegaLiteChart"]'));
    return images.every(image => image.complete && image.naturalWidth > 0)
        && charts.every(chart => chart.querySelector(".marks"));
}"""


def wait_for_pictures(page: Any, timeout_s: float = RERUN_SECONDS) -> None:
    """Wait until every image and chart in the main area has been drawn."""
    page.wait_for_function(_PICTURES_READY, timeout=timeout_s * 1000)


def full_page_screenshot(page: Any, path: Path, idle: bool = True) -> None:
    """A PNG of the whole page, however long, once the script is idle (unless ``idle=False``).

    Streamlit scrolls inside its main area rather than the document, so
    Playwright's ``full_page`` would stop at the window's edge: the window is
    made as tall as the content for the shot, then restored.
    """
    viewport = page.viewport_size
    page.mouse.move(0, 0)  # no hover toolbar over a chart or an image
    main = page.locator(MAIN)
    if idle:
        wait_idle(page)
    try:
        wait_for_pictures(page)
        height = viewport["height"]
        for _ in range(5):  # until the resize (which can reflow the page) adds no height
            content = main.evaluate("main => main.scrollHeight")
            if content <= height:
                break
            height = content
            page.set_viewport_size({"width": viewport["width"], "height": height})
            wait_for_pictures(page)
        page.screenshot(path=str(path), full_page=True, type="png")
    finally:
        page.set_viewport_size(viewport)


def start_training(
    page: Any,
    epochs: int,
    batch_size: int,
    name: str,
    learning_rate: str = "0.00100",
    timeout_s: float = RERUN_SECONDS,
) -> None:
    """Fill in the Train page's form, start, and wait until the page says it is training."""
    fill_in(page, "Epochs", str(epochs))
    fill_in(page, "Batch size", str(batch_size))
    fill_in(page, "Learning rate", learning_rate)
    fill_in(page, "Run name", name)
    page.get_by_role("button", name="Start training").click()
    started = page.get_by_text(f"Training {name} on")
    refused = page.locator(f'{MAIN} [data-testid="stAlertContentError"]')
    wait_until(lambda: started.count() or refused.count(), timeout_s, f"training {name} to start")
    assert not refused.count(), f"the app refused to train: {refused.first.inner_text()}"
