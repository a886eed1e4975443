"""Run the app in a real browser: start the server, launch chromium, act like a user.

Shared by tests/test_browser.py and scripts/screenshots.py. Playwright is
imported lazily, so importing this module never fails where it is missing.
"""

from __future__ import annotations

import contextlib
import os
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
NAV_LINK = '[data-testid="stSidebarNav"] a[data-testid="stSidebarNavLink"]'


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
def running_app(data_dir: Path, runs_dir: Path, log_path: Path | None = None) -> Iterator[str]:
    """Start ``streamlit run streamlit_app.py`` on a free port; yield its URL; stop it.

    The server runs in its own process group, so stopping it also ends anything
    it started. Its output goes to ``log_path`` (default: discarded) and is
    quoted in the error when it does not come up.
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "DOGVAE_DATA_DIR": str(data_dir),
        "DOGVAE_RUNS_DIR": str(runs_dir),
        "PYTHONUNBUFFERED": "1",
    }
    command = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        "streamlit_app.py",
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
            command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        stack.callback(_stop, server)
        deadline = time.monotonic() + SERVER_START_SECONDS
        while not _healthy(url):
            if server.poll() is not None:
                raise RuntimeError(f"the app exited with code {server.returncode}{_tail(log_path)}")
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the app did not answer {url}/_stcore/health within "
                    f"{SERVER_START_SECONDS} s{_tail(log_path)}"
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


def _tail(log_path: Path | None, lines: int = 30) -> str:
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


def wait_idle(page: Any, timeout_s: float = RERUN_SECONDS) -> None:
    """Wait until the script is not running (after a rerun has had time to start)."""
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


def settle(page: Any, check: Callable[[], Any], timeout_s: float = RERUN_SECONDS) -> Any:
    """Wait until ``check`` holds and the script is idle, then fail on an error box.

    ``check`` says what the action should have led to (an element, a text);
    waiting for it first avoids mistaking the idle state *before* a rerun for
    the one after it.
    """
    value = wait_until(check, timeout_s, getattr(check, "__doc__", None) or "the page")
    wait_idle(page, timeout_s)
    assert_no_exception(page)
    return value


def assert_no_exception(page: Any) -> None:
    boxes = page.locator(EXCEPTION)
    if boxes.count():
        raise AssertionError(f"the app shows an exception: {boxes.first.inner_text()}")


def open_app(context: Any, url: str) -> Any:
    """A new page on the app's first page (Data), loaded and idle."""
    page = context.new_page()
    page.goto(url)
    page.get_by_role("heading", name="Data", level=1).wait_for()
    wait_idle(page)
    return page


def go_to(page: Any, title: str) -> None:
    """Click the sidebar link to a page, as a user would, and wait for it to load."""
    page.locator(NAV_LINK).filter(has_text=title).click()
    page.get_by_role("heading", name=title, level=1).wait_for()
    wait_idle(page)
    assert_no_exception(page)


def upload(page: Any, path: Path) -> None:
    """Choose a file in the page's (first) file uploader."""
    page.locator(UPLOAD_INPUT).first.set_input_files(str(path))


def metric(page: Any, label: str) -> str:
    """The value shown by the ``st.metric`` with this label."""
    box = page.locator('[data-testid="stMetric"]').filter(
        has=page.locator('[data-testid="stMetricLabel"]', has_text=label)
    )
    return box.locator('[data-testid="stMetricValue"]').inner_text().strip()
