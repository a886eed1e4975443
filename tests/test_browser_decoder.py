"""The latent canvas in chromium: the decoder runs in the page and draws the server's pixels.

Drives scripts/latent_canvas_demo.py (the component alone on a page) for the shipped
default model and for a seed-preset decoder: the canvas' pixels for a point equal the
server's decode of that point (``dogvae.model.decode``, rounded as the app rounds)
within 1/255 everywhere, after the first draw, after slider steps and after a drag
across the pad; slider moves redraw without a rerun and report on release; the decode
and frame timings are there in ``performance``; without WebAssembly the page says so
and draws with the server. Run with ``pytest -m browser``.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np
import pytest

from tests import canvas_helpers
from tests.browser_helpers import (
    BrowserErrors,
    assert_no_exception,
    chromium,
    log_tail,
    running_app,
    wait_idle,
    wait_until,
)
from tests.canvas_helpers import CANVAS, assert_close, canvas_pixels, server_pixels

runtime_installed = canvas_helpers.runtime_installed  # fixtures
seed_run = canvas_helpers.seed_run

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.usefixtures("needs_browser", "runtime_installed"),
]

REPO = Path(__file__).resolve().parents[1]
DEMO = "scripts/latent_canvas_demo.py"
SLIDER_STEPS = 30
PAD_MOVES = 40
FRAME_VALUES = np.linspace(-2.0, 2.0, 8)  # the demo's animation


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    """Start the demo page for a run (once per run); yields a function run folder -> URL, log."""
    root = tmp_path_factory.mktemp("canvas")
    servers: dict[Path, tuple[str, Path]] = {}
    with contextlib.ExitStack() as stack:

        def serve(run_dir: Path) -> tuple[str, Path]:
            if run_dir not in servers:
                log = root / f"{run_dir.name}.log"
                env = {"DOGVAE_CANVAS_RUN": str(run_dir), "DOGVAE_CACHE_DIR": str(root / "cache")}
                url = stack.enter_context(running_app(root, root, log, env, script=DEMO))
                servers[run_dir] = url, log
            return servers[run_dir]

        yield serve


class Server:
    """The server's side of the parity: the run's decoder and slider basis, in this process."""

    def __init__(self, run_dir: Path) -> None:
        from dogvae import latent, loaded_run, runs

        self.run = loaded_run.load_run(run_dir)
        latent_dim = self.run.info.model_config.latent_dim
        self.basis = latent.slider_basis(latent_dim, runs.read_latent_stats(run_dir))

    def pixels(self, shown: list[float] | str) -> np.ndarray:
        """uint8 (H, W, C) of what a canvas shows (slider values, or "frame K" of the
        demo's animation), decoded and rounded as the app does."""
        if isinstance(shown, str):
            value = FRAME_VALUES[int(shown.removeprefix("frame "))]
            point = self.basis.to_point(np.full(len(self.basis.labels), value))
        else:
            point = self.basis.to_point(shown)
        return server_pixels(self.run.decoder, point)


def open_demo(context, url: str, log: Path):
    page = context.new_page()
    errors = BrowserErrors(page)
    page.goto(url)
    page.get_by_role("heading", name="Latent canvas", level=1).wait_for()
    wait_idle(page)
    assert_no_exception(page)
    canvases = page.locator(CANVAS)
    wait_until(
        lambda: (
            canvases.count() == 2
            and "loading" not in canvases.evaluate_all("all => all.map(c => c.dataset.status)")
        ),
        what="the first decodes in the browser",
    )
    statuses = canvases.evaluate_all("all => all.map(c => c.dataset.status)")
    assert statuses == ["ready", "ready"], f"the canvases are {statuses}{log_tail(log)}"
    return page, errors


def decodes(page, index: int = 0) -> int:
    return int(page.locator(CANVAS).nth(index).get_attribute("data-decodes") or 0)


def assert_parity(page, server: Server, index: int = 0) -> np.ndarray:
    values, browser = canvas_pixels(page, server.run.info.model_config.channels, index)
    return assert_close(browser, server.pixels(values), values)


def script_runs(page) -> int:
    return int(page.get_by_text("Script runs:").inner_text().split(":")[1])


def wait_for_report(page, runs: int) -> list[float]:
    """The values the page got from the component, after exactly ``runs`` script runs."""
    wait_until(lambda: script_runs(page) >= runs, what="the values reported")
    wait_idle(page)
    page.wait_for_timeout(500)  # time for another, unwanted, rerun to show
    assert script_runs(page) == runs, f"{script_runs(page) - runs + 1} reruns for one release"
    return json.loads(page.get_by_text("Reported values:").inner_text().split(": ", 1)[1])


def measures(page, name: str) -> list[float]:
    return page.evaluate(
        "name => performance.getEntriesByName(name).map(entry => entry.duration)", name
    )


@contextlib.contextmanager
def demo(served, run_dir: Path):
    """The demo page for ``run_dir`` in a fresh browser: (page, its errors, the server side)."""
    url, log = served(run_dir)
    server = Server(run_dir)
    with chromium() as context:
        page, errors = open_demo(context, url, log)
        yield page, errors, server


def test_default_model_parity_and_timings(served) -> None:
    with demo(served, REPO / "models" / "default") as (page, errors, server):
        first = assert_parity(page, server)

        # Keyboard steps on a slider: an input event each, each redrawn in the page; the
        # values reach the server once, after the last step.
        runs = script_runs(page)
        slider = page.get_by_role("slider", name=server.basis.labels[0])
        slider.focus()
        for step in range(SLIDER_STEPS):
            before = decodes(page)
            page.keyboard.press("ArrowRight" if step % 3 else "ArrowLeft")
            wait_until(lambda before=before: decodes(page) > before, 30, "a redraw")
        values = wait_for_report(page, runs + 1)
        assert values == canvas_pixels(page, 1)[0], "the page got other values than it shows"
        assert_parity(page, server)

        # A drag across the pad: the image follows, the server hears of it on release only.
        runs = script_runs(page)
        box = page.get_by_role("application").bounding_box()
        page.mouse.move(box["x"] + box["width"] * 0.2, box["y"] + box["height"] * 0.8)
        page.mouse.down()
        for move in range(1, PAD_MOVES + 1):
            fraction = 0.2 + 0.6 * move / PAD_MOVES
            page.mouse.move(box["x"] + box["width"] * fraction, box["y"] + box["height"] * 0.5)
            page.wait_for_timeout(16)
        assert script_runs(page) == runs, "the drag reran the script"
        page.mouse.up()
        values = wait_for_report(page, runs + 1)
        assert values == pytest.approx(canvas_pixels(page, 1)[0]), "the page got other values"
        assert values[0] == pytest.approx(1.8, abs=0.1) and values[1] == pytest.approx(0, abs=0.1)
        last = assert_parity(page, server)

        # Reset on the server side moves the canvas back, even though values were reported.
        page.get_by_role("button", name="Reset").click()
        zeros = [0.0] * len(server.basis.labels)
        wait_until(lambda: canvas_pixels(page, 1)[0] == zeros, what="the canvas to reset")
        assert_parity(page, server)

        decode_ms = sorted(measures(page, "dogvae:decode"))
        frame_ms = sorted(measures(page, "dogvae:frame"))
        assert len(frame_ms) >= SLIDER_STEPS, "a redraw for an input event was not measured"
        p50, p95 = np.percentile(decode_ms[1:], [50, 95])  # the first includes warming up
        frame_p50, frame_p95 = np.percentile(frame_ms, [50, 95])
        print(
            f"\ndefault model in chromium: {len(decode_ms)} decodes, p50 {p50:.2f} ms, "
            f"p95 {p95:.2f} ms; {len(frame_ms)} frames, input to pixels p50 {frame_p50:.2f} "
            f"ms, p95 {frame_p95:.2f} ms; pixels off by 1/255: {int((first > 0).sum())} "
            f"at the start, {int((last > 0).sum())} after the drag"
        )
        # Loose: the box is shared; bench/latency.py holds the real goals (8 ms p95).
        assert p95 < 100, f"decoding takes {p95:.0f} ms (p95)"
        assert not errors.take(), "the browser reported errors"


def test_the_animation_plays_pauses_and_scrubs(served) -> None:
    with demo(served, REPO / "models" / "default") as (page, errors, server):
        assert canvas_pixels(page, 1, index=1)[0] == "frame 0"
        assert_parity(page, server, index=1)
        page.get_by_role("button", name="Play").click()
        wait_until(lambda: decodes(page, 1) >= 5, 30, "the animation to play")
        page.get_by_role("button", name="Pause").click()
        page.wait_for_timeout(300)
        paused = decodes(page, 1)
        page.wait_for_timeout(500)
        assert decodes(page, 1) == paused, "the animation went on after Pause"
        assert_parity(page, server, index=1)
        scrub = page.get_by_role("slider", name="Frame")
        scrub.fill("6")
        wait_until(lambda: canvas_pixels(page, 1, index=1)[0] == "frame 6", what="frame 6")
        assert_parity(page, server, index=1)
        assert not errors.take(), "the browser reported errors"


def test_seed_preset_parity(served, seed_run) -> None:
    with demo(served, seed_run) as (page, errors, server):
        assert_parity(page, server)
        slider = page.get_by_role("slider", name=server.basis.labels[1])
        slider.focus()
        runs = script_runs(page)
        for _ in range(10):
            page.keyboard.press("ArrowLeft")
        values = wait_for_report(page, runs + 1)
        assert values == canvas_pixels(page, 1)[0], "the page got other values than it shows"
        assert_parity(page, server)
        assert not errors.take(), "the browser reported errors"


def test_without_webassembly_the_server_draws(served) -> None:
    url, log = served(REPO / "models" / "default")
    with chromium() as context:
        context.add_init_script("delete globalThis.WebAssembly")
        page = context.new_page()
        errors = BrowserErrors(page)
        page.goto(url)
        page.get_by_role("heading", name="Latent canvas", level=1).wait_for()
        notice = page.get_by_text("Decoding on the server: this browser has no WebAssembly")
        wait_until(notice.count, what="the fallback notice")
        wait_idle(page)
        assert_no_exception(page)
        assert page.locator(CANVAS).count() == 0, "a canvas stayed after it failed"
        assert page.get_by_text("The animation needs the browser decoder").count() == 1
        images = page.locator('[data-testid="stMain"] img')
        wait_until(
            lambda: (
                images.count()
                and images.first.evaluate("image => image.complete && image.naturalWidth > 0")
            ),
            what="the server's image",
        )
        assert not errors.take(), f"the browser reported errors{log_tail(log)}"
