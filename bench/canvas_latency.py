"""The browser decoder on the app's Generate page, measured in chromium (for bench/latency.py).

All times come from the page's own clock: the component's ``performance.measure``
entries ("dogvae:decode" per decode, "dogvae:frame" from an input event to its pixels)
and its mark "dogvae:first-draw". The rest is counted around them: script runs the
page starts (Streamlit's data-test-script-state), websocket frames (Playwright) and
requests for the decoder's file.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

sys.path.insert(0, str(common.REPO / "tests"))
import browser_helpers as bh

CANVAS = "canvas[data-dogvae-canvas]"
PAD = ".dogvae-latent-canvas .pad"
STEPS = 30  # pointer moves per sweep across the pad
# Counts the script runs the page starts, and notes when Generate's title first shows.
WATCH = """
() => {
  window.__benchReruns = 0;
  window.__benchTitle = null;
  new MutationObserver((changes) => {
    for (const change of changes) {
      if (change.target.getAttribute("data-test-script-state") === "running"
          && change.oldValue !== "running") window.__benchReruns += 1;
    }
  }).observe(document.body, { subtree: true, attributes: true, attributeOldValue: true,
                              attributeFilter: ["data-test-script-state"] });
  const look = () => {
    const title = document.querySelector("h1");
    if (title && title.textContent.trim() === "Generate") {
      window.__benchTitle = performance.now();
    } else {
      requestAnimationFrame(look);
    }
  };
  look();
}
"""
# Resolves with the number of moves after ``duration`` ms of pointermoves, one per frame.
DISPLAY_RATE_DRAG = """
([selector, duration]) => new Promise((resolve) => {
  const pad = [...document.querySelectorAll("*")]
    .map((element) => element.shadowRoot?.querySelector(selector))
    .find(Boolean) || document.querySelector(selector);
  const box = pad.getBoundingClientRect();
  const began = performance.now();
  let moves = 0;
  const move = (now) => {
    if (now - began >= duration) return resolve(moves);
    const phase = ((now - began) % 1000) / 500, sweep = phase <= 1 ? phase : 2 - phase;
    pad.dispatchEvent(new PointerEvent("pointermove", {
      pointerId: 1, pointerType: "mouse", bubbles: true, isPrimary: true, buttons: 1,
      clientX: box.left + box.width * (0.1 + 0.8 * sweep),
      clientY: box.top + box.height * (0.5 - 0.3 * sweep),
    }));
    moves += 1;
    requestAnimationFrame(move);
  };
  requestAnimationFrame(move);
})
"""
FIRST_DRAW_AFTER_TITLE = """
() => {
  const title = window.__benchTitle;
  const draws = performance.getEntriesByName("dogvae:first-draw").filter(
    (mark) => mark.startTime >= title);
  return title === null || !draws.length ? null : draws[0].startTime - title;
}
"""
ENTRIES = """
([name, from, to]) => performance.getEntriesByName(name)
  .filter((entry) => entry.startTime >= from && entry.startTime <= to)
  .map((entry) => entry.duration)
"""


def percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))], 2)


class Wire:
    """Websocket bytes both ways and the requests for a decoder file, counted for a page."""

    def __init__(self, page: Any) -> None:
        self.sent = self.received = 0
        self.decoder_requests = 0
        page.on("websocket", self._socket)
        page.on("request", self._request)

    def _socket(self, socket: Any) -> None:
        socket.on("framesent", lambda payload: self._count("sent", payload))
        socket.on("framereceived", lambda payload: self._count("received", payload))

    def _count(self, way: str, payload: str | bytes) -> None:
        size = len(payload.encode() if isinstance(payload, str) else payload)
        setattr(self, way, getattr(self, way) + size)

    def _request(self, request: Any) -> None:
        if "/component/dogvae.components.latent_canvas.decoder-" in request.url:
            self.decoder_requests += 1

    def total(self) -> int:
        return self.sent + self.received


def open_generate(context: Any, url: str) -> tuple[Any, Any, Wire, float | None]:
    """A new tab: the home page, then Generate; returns the page, its errors, its wire and
    the ms from Generate's title to the canvas' first decoded image."""
    page = context.new_page()
    wire = Wire(page)  # before the page opens its websocket
    errors = bh.BrowserErrors(page)
    page.goto(url)
    page.get_by_role("heading", name="Data", level=1).wait_for()
    bh.wait_idle(page)
    page.evaluate(WATCH)
    bh.go_to(page, "Generate")
    page.locator(f"{CANVAS}[data-status=ready]").wait_for(timeout=120_000)
    bh.wait_idle(page)
    return page, errors, wire, page.evaluate(FIRST_DRAW_AFTER_TITLE)


def _pad_box(page: Any) -> dict:
    pad = page.locator(PAD)
    pad.scroll_into_view_if_needed()
    return pad.bounding_box()


def _at(box: dict, fraction_x: float, fraction_y: float) -> tuple[float, float]:
    return box["x"] + box["width"] * fraction_x, box["y"] + box["height"] * fraction_y


def drag(page: Any, seconds: float, display_rate: bool) -> dict:
    """A continuous drag on the pad for ``seconds``, the point sweeping to and fro; the
    page's figures for that window.

    With ``display_rate``, the page itself sends a pointermove at every animation frame
    (as a mouse does, at the display's rate), to the pointer Playwright pressed down; else
    Playwright's own moves, as fast as it sends them (about 30 a second here: slower than
    a mouse, so they bound the frames a second).
    """
    box = _pad_box(page)
    page.mouse.move(*_at(box, 0.1, 0.5))
    page.mouse.down()
    reruns = page.evaluate("() => window.__benchReruns")
    start = page.evaluate("() => performance.now()")
    if display_rate:
        moves = page.evaluate(DISPLAY_RATE_DRAG, [PAD, seconds * 1000])
    else:
        began, moves = time.perf_counter(), 0
        while time.perf_counter() - began < seconds:
            forth = moves % 2 == 0
            page.mouse.move(*_at(box, 0.9 if forth else 0.1, 0.2 if forth else 0.5), steps=STEPS)
            moves += STEPS
    end = page.evaluate("() => performance.now()")
    reruns_during = page.evaluate("() => window.__benchReruns") - reruns
    page.mouse.up()
    frames = page.evaluate(ENTRIES, ["dogvae:frame", start, end])
    decodes = page.evaluate(ENTRIES, ["dogvae:decode", start, end])
    bh.wait_until(lambda: page.evaluate("() => window.__benchReruns") > reruns, 30, "a report")
    bh.wait_idle(page)
    return {
        "seconds": (end - start) / 1000,
        "moves": moves,
        "frames": frames,
        "decodes": decodes,
        "reruns_during_drag": reruns_during,
    }


def wire_for_moves(page: Any, wire: Wire, moves: int = 20) -> dict:
    """Websocket bytes for ``moves`` pointer moves of a drag, then for its release."""
    box = _pad_box(page)
    page.mouse.move(*_at(box, 0.3, 0.3))
    page.mouse.down()
    page.wait_for_timeout(300)
    before, requests = wire.total(), wire.decoder_requests
    for move in range(moves):
        page.mouse.move(*_at(box, 0.3 + 0.4 * move / moves, 0.3 + 0.2 * move / moves))
        page.wait_for_timeout(16)
    page.wait_for_timeout(300)
    during = wire.total() - before
    reruns = page.evaluate("() => window.__benchReruns")
    page.mouse.up()
    bh.wait_until(lambda: page.evaluate("() => window.__benchReruns") > reruns, 30, "a report")
    bh.wait_idle(page)
    page.wait_for_timeout(300)
    return {
        "moves": moves,
        "websocket_bytes_during_moves": during,
        "websocket_bytes_release_rerun": wire.total() - before - during,
        "decoder_requests_during": wire.decoder_requests - requests,
    }


def first_visit(context: Any, url: str) -> float | None:
    """Title to canvas, ms, in a tab that meets a server which has not loaded the model yet
    (and a browser without the runtime in its cache)."""
    page, _, _, first = open_generate(context, url)
    page.close()
    return first


def measure_round(context: Any, url: str, drag_seconds: float) -> dict:
    """One fresh tab on Generate: its title-to-canvas time, a drag, then 20 counted moves."""
    page, errors, wire, first = open_generate(context, url)
    drags = {
        "playwright_moves": drag(page, drag_seconds, display_rate=False),
        "display_rate": drag(page, drag_seconds, display_rate=True),
    }
    moves = wire_for_moves(page, wire)
    loading = {
        name: page.evaluate(f"() => performance.getEntriesByName('dogvae:{name}')[0]?.duration")
        for name in ("runtime", "session")
    }
    unexpected = errors.take_unexpected()
    page.close()
    if unexpected:
        raise SystemExit(f"the page logged errors: {unexpected}")
    return {
        "drags": drags,
        "loading_ms": loading,
        "title_to_first_canvas_ms": first,
        "twenty_moves": moves,
        "decoder_requests": wire.decoder_requests,
    }


def summarise_drags(drags: list[dict]) -> dict:
    """One kind of drag over the rounds: percentiles over all decodes and frames."""
    decodes = [value for one in drags for value in one["decodes"]]
    frames = [value for one in drags for value in one["frames"]]
    fps = [len(one["frames"]) / one["seconds"] for one in drags]
    return {
        "seconds": [round(one["seconds"], 2) for one in drags],
        "pointer_moves": [one["moves"] for one in drags],
        "decode": {
            "n": len(decodes),
            "p50_ms": percentile(decodes, 0.5),
            "p95_ms": percentile(decodes, 0.95),
            "p95_ms_per_round": [percentile(one["decodes"], 0.95) for one in drags],
        },
        "input_to_pixels": {
            "n": len(frames),
            "p50_ms": percentile(frames, 0.5),
            "p95_ms": percentile(frames, 0.95),
            "p95_ms_per_round": [percentile(one["frames"], 0.95) for one in drags],
        },
        "frames_per_second": [round(value, 1) for value in fps],
        "frames_per_second_median": round(statistics.median(fps), 1),
        "reruns_during_drag": [one["reruns_during_drag"] for one in drags],
    }


def summarise(rounds: list[dict], first_visit_ms: float | None) -> dict:
    """The rounds' figures: each kind of drag, then the page's loading and the wire."""
    title = [one["title_to_first_canvas_ms"] for one in rounds]
    measured = [value for value in title if value is not None]
    return {
        "rounds": len(rounds),
        **{
            f"drag_{kind}": summarise_drags([one["drags"][kind] for one in rounds])
            for kind in ("display_rate", "playwright_moves")
        },
        "title_to_first_canvas_ms": [None if v is None else round(v, 1) for v in title],
        "title_to_first_canvas_median_ms": round(statistics.median(measured), 1)
        if measured
        else None,
        "title_to_first_canvas_first_visit_ms": None
        if first_visit_ms is None
        else round(first_visit_ms, 1),
        "runtime_and_session_ms": [
            {name: None if ms is None else round(ms, 1) for name, ms in one["loading_ms"].items()}
            for one in rounds
        ],
        "twenty_moves": [one["twenty_moves"] for one in rounds],
        "decoder_requests_per_tab": [one["decoder_requests"] for one in rounds],
    }
