"""Closing the tab during a training, in a real browser: the run is saved as stopped, with why.

The server gets a grace period of 2 s instead of 30 (DOGVAE_ABANDON_SECONDS), so
that the test sees the whole promise: the job outlives the tab briefly, then stops
by itself and saves. Run with ``pytest -m browser``; it needs /usr/bin/chromium.
"""

from __future__ import annotations

import contextlib
import csv
import json
import re
import time

import pytest

from tests.browser_helpers import (
    MAIN_PROGRESS,
    chromium,
    go_to,
    log_tail,
    open_app,
    running_app,
    settle,
    start_training,
    upload,
    wait_until,
)
from tests.conftest import write_dogs

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.usefixtures("needs_browser")]

GRACE_SECONDS = 2.0
RUN = "browser-tab-closed"


def test_closing_the_tab_stops_the_training_after_the_grace_period_and_saves_it(tmp_path):
    data_dir, runs_dir, log = tmp_path / "data", tmp_path / "runs", tmp_path / "server.log"
    runs_dir.mkdir()
    dogs = write_dogs(data_dir / "images", 40)
    with (data_dir / "dogs.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["filepaths"])
        writer.writerows([path.relative_to(data_dir).as_posix()] for path in dogs)
    env = {"DOGVAE_DEFAULT_RUN": "none", "DOGVAE_ABANDON_SECONDS": str(GRACE_SECONDS)}
    saved = runs_dir / RUN / "config.json"

    with running_app(data_dir, runs_dir, log, env) as url, chromium() as context:
        page, _ = open_app(context, url)
        upload(page, data_dir / "dogs.csv")
        settle(page, lambda: page.get_by_role("heading", name="Report: dogs.csv").count())
        go_to(page, "Train")
        start_training(page, epochs=500, batch_size=2, name=RUN)
        batches = re.compile(r"Epoch \d+/500 · batch [1-9]")
        page.locator(MAIN_PROGRESS, has_text=batches).wait_for(timeout=120_000)
        assert not saved.exists()
        page.close()  # the user closes the tab; nobody stops the training
        closed = time.monotonic()
        try:
            wait_until(saved.is_file, 120, "the run to be saved")
        except TimeoutError as error:
            raise AssertionError(f"the training outlived its tab: {error}{log_tail(log)}") from None
        waited = time.monotonic() - closed
        # The session is checked every 0.5 s, so the stop comes at least 1.5 s after.
        assert waited >= GRACE_SECONDS - 0.5, f"saved {waited:.1f} s after the tab closed"

        config = json.loads(saved.read_text())
        assert config["status"] == "stopped"
        assert 1 <= config["epochs_completed"] < 500
        assert config["message"].startswith("the browser session closed, so training stopped; ")

        # Another visitor sees the run, and why it ended, on the Models page.
        other, _ = open_app(context, url)
        with contextlib.closing(other):
            go_to(other, "Models")
            why = "Stopped before the last epoch: the browser session closed"
            other.get_by_text(why).wait_for()
