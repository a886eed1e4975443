"""The app's pages decode in chromium: Generate's sliders and pad, Interpolate's animation.

Against the app as a user runs it (``streamlit run serve.py``): for the shipped default
model and for a seed-preset model, the canvas' pixels for a point equal the server's
decode of that point (``dogvae.model.decode``, rounded as the app rounds) within 1/255
everywhere: where the sliders start (the first dog of the grid), after a drag across the
pad (which reruns nothing until the release), after slider steps, Reset and Random point,
and for the frames of the animation. Where the browser cannot decode (no WebAssembly,
its runtime's files not served), the page says so in one line and the server draws.
Run with ``pytest -m browser``.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests import canvas_helpers
from tests.browser_helpers import (
    MAIN,
    chromium,
    go_to,
    log_tail,
    open_app,
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
PAD_MOVES = 30
# Counts the script runs the page starts (Streamlit marks one with data-test-script-state).
COUNT_RERUNS = """
() => {
  window.__dogvaeReruns = 0;
  new MutationObserver((changes) => {
    for (const change of changes) {
      if (change.target.getAttribute("data-test-script-state") === "running"
          && change.oldValue !== "running") window.__dogvaeReruns += 1;
    }
  }).observe(document.body, { subtree: true, attributes: true, attributeOldValue: true,
                              attributeFilter: ["data-test-script-state"] });
}
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    """The app with a run active (one server per run); yields run folder -> (URL, log)."""
    root = tmp_path_factory.mktemp("app-decoder")
    servers: dict[Path, tuple[str, Path]] = {}
    with contextlib.ExitStack() as stack:

        def serve(run_dir: Path) -> tuple[str, Path]:
            if run_dir not in servers:
                folder = root / run_dir.name
                (folder / "data").mkdir(parents=True)
                (folder / "runs").mkdir()
                log = folder / "server.log"
                env = {
                    "DOGVAE_DEFAULT_RUN": str(run_dir),
                    "DOGVAE_CACHE_DIR": str(folder / "cache"),
                }
                url = stack.enter_context(running_app(folder / "data", folder / "runs", log, env))
                servers[run_dir] = url, log
            return servers[run_dir]

        yield serve
        shutil.rmtree(root, ignore_errors=True)


class Server:
    """The server's side of the parity: the run's decoder and the page's latent points."""

    def __init__(self, run_dir: Path) -> None:
        from dogvae import latent, loaded_run, runs

        self.run = loaded_run.load_run(run_dir)
        self.config = self.run.info.model_config
        stats = runs.read_latent_stats(run_dir)
        self.stats = (
            stats if stats is not None and stats.latent_dim == self.config.latent_dim else None
        )
        try:
            self.basis = latent.slider_basis(self.config.latent_dim, self.stats)
        except ValueError:
            self.basis = latent.slider_basis(self.config.latent_dim)

    def first_dog(self) -> tuple[list[float], np.ndarray]:
        """Generate's start: the first dog of its default grid (16, seed 0) on the sliders
        (rounded to their 0.05 steps) and the part of it outside their directions."""
        from dogvae import samplers

        sampler = samplers.samplers_for(self.stats)[0]
        z = samplers.draw_latents(16, self.config.latent_dim, self.stats, sampler, 0, 1.0)[0][0]
        values, outside = self.basis.from_point(z)
        rounded = [round(round(value / 0.05) * 0.05, 2) for value in np.clip(values, -3, 3)]
        return rounded, outside.astype(np.float32)

    def interpolation(self, steps: int = 8) -> np.ndarray:
        """Interpolate's default frames: slerp between the random ends of seeds 1 and 2."""
        from dogvae import latent, samplers

        ends = [
            samplers.draw_latents(1, self.config.latent_dim, self.stats, samplers.AUTO, seed)[0][0]
            for seed in (1, 2)
        ]
        return latent.interpolate(ends[0], ends[1], steps, "slerp")


def assert_parity(page, server: Server, point_of) -> list[float] | str:
    """The canvas equals the server's decode of its point (``point_of(shown)``) within 1/255."""
    shown, browser = canvas_pixels(page, server.config.channels)
    assert_close(browser, server_pixels(server.run.decoder, point_of(shown)), shown)
    return shown


def reruns(page) -> int:
    return page.evaluate("() => window.__dogvaeReruns")


def open_page(context, url: str, log: Path, title: str):
    """The app's ``title`` page reached from the home page, its canvas drawn by the browser."""
    page, errors = open_app(context, url)
    go_to(page, title)
    canvas = page.locator(CANVAS)
    wait_until(
        lambda: canvas.count() and canvas.get_attribute("data-status") != "loading",
        what="the first decode in the browser",
    )
    status = canvas.get_attribute("data-status")
    assert status == "ready", f"the canvas is {status}{log_tail(log)}"
    # The canvas draws while the rest of the page may still run (slowly on a loaded
    # machine); a report's rerun would then replace that run unseen by the counter.
    wait_idle(page)
    page.evaluate(COUNT_RERUNS)
    return page, errors


def drag_across_the_pad(page, moves: int = PAD_MOVES) -> None:
    pad = page.locator(".dogvae-latent-canvas .pad")
    pad.scroll_into_view_if_needed()
    box = pad.bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.2, box["y"] + box["height"] * 0.8)
    page.mouse.down()
    for move in range(1, moves + 1):
        fraction = 0.2 + 0.6 * move / moves
        page.mouse.move(box["x"] + box["width"] * fraction, box["y"] + box["height"] * 0.5)
        page.wait_for_timeout(16)


def generate_flow(served, run_dir: Path) -> None:
    url, log = served(run_dir)
    server = Server(run_dir)
    start, outside = server.first_dog()

    def point_of(values, residual=outside):
        return server.basis.to_point(values, residual)

    with chromium() as context:
        context.add_init_script(HOLD_MESSAGES)
        page, errors = open_page(context, url, log, "Generate")
        assert assert_parity(page, server, point_of) == pytest.approx(start)

        # The image follows a drag; the server hears of it once, on the release.
        before = int(page.locator(CANVAS).get_attribute("data-decodes"))
        drag_across_the_pad(page)
        assert reruns(page) == 0, "the drag reran the script"
        assert int(page.locator(CANVAS).get_attribute("data-decodes")) > before + 5
        page.mouse.up()
        wait_until(lambda: reruns(page) >= 1, what="the values reported on release")
        wait_idle(page)
        page.wait_for_timeout(500)
        assert reruns(page) == 1, f"{reruns(page)} reruns for one release"
        dragged = assert_parity(page, server, point_of)
        assert dragged[0] == pytest.approx(1.8, abs=0.1) and dragged[1] == pytest.approx(0, abs=0.1)

        # Keyboard steps on the first slider: a redraw each.
        slider = page.locator(".dogvae-latent-canvas input[type=range]").first
        slider.focus()
        for _ in range(5):
            page.keyboard.press("ArrowLeft")
        wait_until(
            lambda: canvas_pixels(page, 1)[0][0] == pytest.approx(dragged[0] - 0.25, abs=0.06),
            what="the slider steps drawn",
        )
        assert_parity(page, server, point_of)

        # Reset and Random point: the page's values replace the user's, residual gone;
        # Reset wins over a key press reported after it (its report was on its way).
        wait_idle(page)
        reset_before_the_report_is_answered(page, slider)
        zeros = [0.0] * len(server.basis.labels)
        wait_until(lambda: canvas_pixels(page, 1)[0] == zeros, what="the canvas to reset")
        page.wait_for_timeout(800)
        wait_idle(page)
        assert canvas_pixels(page, 1)[0] == zeros, "a late report undid Reset"
        assert_parity(page, server, lambda values: point_of(values, None))
        assert_download_is_the_canvas(page)
        wait_idle(page)
        page.get_by_role("button", name="Random point", exact=True).click()
        wait_until(lambda: canvas_pixels(page, 1)[0] != zeros, what="a random point")
        assert_parity(page, server, lambda values: point_of(values, None))
        wait_idle(page)
        assert not errors.take_unexpected(), "the browser reported errors"
        assert page.get_by_text("Decoding on the server").count() == 0


# Test-only: the page's websocket can hold what the server sends until released, so that
# a test can have the browser act before a rerun's answer arrives.
HOLD_MESSAGES = """(() => {
  const queue = [];
  window.dogvaeHold = false;
  window.dogvaeRelease = () => {
    window.dogvaeHold = false;
    while (queue.length) queue.shift()();
  };
  const gate = (handler) => function (event) {
    if (window.dogvaeHold || queue.length) queue.push(() => handler.call(this, event));
    else handler.call(this, event);
  };
  const add = WebSocket.prototype.addEventListener;
  WebSocket.prototype.addEventListener = function (type, listener, options) {
    const gated = type === "message" && typeof listener === "function";
    return add.call(this, type, gated ? gate(listener) : listener, options);
  };
  const onmessage = Object.getOwnPropertyDescriptor(WebSocket.prototype, "onmessage");
  Object.defineProperty(WebSocket.prototype, "onmessage", {
    configurable: true,
    get() { return onmessage.get.call(this); },
    set(handler) { onmessage.set.call(this, handler ? gate(handler) : handler); },
  });
})()"""


def reset_before_the_report_is_answered(page, slider) -> None:
    """A key press, then Reset at once; the press's report (250 ms later) leaves before
    the browser hears Reset's answer, so the server gets Reset first, then the report."""
    page.evaluate("window.dogvaeHold = true")
    slider.press("ArrowLeft")
    page.get_by_role("button", name="Reset", exact=True).click()
    page.wait_for_timeout(700)
    page.evaluate("window.dogvaeRelease()")


def assert_download_is_the_canvas(page) -> None:
    """The point's Download PNG (the server's idea of the point) is the image shown."""
    with page.expect_download(timeout=60_000) as download_info:
        page.locator(".st-key-generate-point-download button").click()
    with Image.open(download_info.value.path()) as png:
        downloaded = np.asarray(png.convert("L"))[..., None]
    assert_close(canvas_pixels(page, 1)[1], downloaded, "the downloaded point")


def test_generate_parity_for_the_default_model(served) -> None:
    generate_flow(served, REPO / "models" / "default")


def test_generate_parity_for_the_seed_preset(served, seed_run) -> None:
    generate_flow(served, seed_run)


def test_interpolate_plays_the_frames_in_the_browser(served) -> None:
    run_dir = REPO / "models" / "default"
    url, log = served(run_dir)
    server = Server(run_dir)
    frames = server.interpolation()

    def point_of(shown: str) -> np.ndarray:
        return frames[int(shown.removeprefix("frame "))]

    with chromium() as context:
        page, errors = open_page(context, url, log, "Interpolate")
        assert_parity(page, server, point_of)
        # It plays on its own; Pause stops it, the scrubber shows a frame.
        wait_until(
            lambda: int(page.locator(CANVAS).get_attribute("data-decodes")) >= 4,
            30,
            "the animation to play",
        )
        page.get_by_role("button", name="Pause").click()
        page.wait_for_timeout(300)
        paused = page.locator(CANVAS).get_attribute("data-decodes")
        page.wait_for_timeout(500)
        assert page.locator(CANVAS).get_attribute("data-decodes") == paused
        assert_parity(page, server, point_of)
        page.get_by_role("slider", name="Frame").fill("6")
        wait_until(lambda: canvas_pixels(page, 1)[0] == "frame 6", what="frame 6")
        assert_parity(page, server, point_of)
        assert reruns(page) == 0, "playing or scrubbing reran the script"
        assert page.get_by_role("button", name="Download GIF").count() == 1
        assert not errors.take_unexpected(), "the browser reported errors"


def assert_server_draws(page, log: Path, reason: str) -> None:
    """One line says why, the server's sliders and image are there, no canvas."""
    notice = page.get_by_text(f"Decoding on the server: {reason}")
    wait_until(notice.count, what="the fallback notice")
    wait_idle(page)
    assert page.get_by_text("Decoding on the server").count() == 1
    assert page.locator(CANVAS).count() == 0, "a canvas stayed after it failed"
    assert page.get_by_role("slider", name="direction 1").count() == 1
    point = page.locator(f'{MAIN} [data-testid="stImage"] img').nth(1)  # after the grid
    wait_until(
        lambda: point.evaluate("image => image.complete && image.naturalWidth === 256"),
        what=f"the server's image{log_tail(log)}",
    )


def test_without_webassembly_generate_decodes_on_the_server(served) -> None:
    url, log = served(REPO / "models" / "default")
    with chromium() as context:
        context.add_init_script("delete globalThis.WebAssembly")
        page, errors = open_app(context, url)
        go_to(page, "Generate")
        assert_server_draws(page, log, "this browser has no WebAssembly")
        assert not errors.take_unexpected(), "the browser reported errors"


def test_without_the_runtime_files_generate_decodes_on_the_server(served) -> None:
    url, log = served(REPO / "models" / "default")
    with chromium() as context:
        context.route("**/*.onnxruntime-web/**", lambda route: route.fulfill(status=404))
        page, errors = open_app(context, url)
        go_to(page, "Generate")
        assert_server_draws(page, log, "")
        notice = page.get_by_text("Decoding on the server").inner_text()
        assert "HTTP 404" in notice or "import" in notice.lower(), notice
        unexpected = [error for error in errors.take_unexpected() if "404" not in error]
        assert not unexpected, f"the browser reported errors: {json.dumps(unexpected)}"
