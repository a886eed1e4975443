"""Interactive latency in a real browser (Playwright + Debian chromium).

    python bench/latency.py                  # bundled default model, 3 rounds, 3 starts
    python bench/latency.py --rounds 5 --presses 200 --starts 5
    python bench/latency.py --starts 0       # the sliders only, no first-page times

Measurements against the app as a user runs it (``streamlit run serve.py``, the
bundled default model active):

* **Browser decoder** (Generate page, bench/canvas_latency.py): the decoder running in
  the page while a pointer drags across the 2-D pad for ``--drag-seconds``: decode
  p50/p95, input event to pixels p50/p95, frames redrawn per second of dragging, script
  runs during the drag (0 is the goal), websocket bytes for 20 moves and the requests for
  the decoder's file per tab, and the time from Generate's title to the canvas' first
  image. ``--rounds`` rounds, each a fresh tab, alternating with the server path's.
* **Slider latency, the server path** (Generate page with DOGVAE_BROWSER_DECODER=0, as
  where the browser cannot decode): from a key press on the first latent slider to the
  new image on screen. Both ends are taken in the page with its
  own clock: a capturing keydown listener notes the press, and a
  MutationObserver waits for the slider point's <img> to carry a new source
  that has loaded, then for the next animation frame (the frame that paints
  it). Presses go right, then left, so the slider stays within its range;
  each waits for the page to be idle first, as a user's next move would.
* **First page**: from the moment the server answers its health check to the
  first page's text in the browser, for the app's home page (the Data page,
  which must never wait for TensorFlow), the Generate page (which needs the
  model, so it waits for TensorFlow and the default model) and, as the
  yardstick measured in the same run, alternating with them, a one-line
  Streamlit page. The browser is
  already running; each start is a fresh server process.
* **Dogs after the home page**: a new user's usual way in. A fresh server, the
  home page loaded, ``--read-seconds`` spent on it (reading what the app does),
  then a click on Generate in the sidebar: milliseconds from the click to the
  sampled dogs drawn on screen (the page's heading, then every image loaded).

One JSON object on stdout (milliseconds).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

sys.path.insert(0, str(common.REPO / "tests"))
import browser_helpers as bh
import canvas_latency

# Resolves with {keydown, shown} once the slider point's image has a source other
# than the one it had when armed, that source has loaded, and a frame has passed.
ARM = """
() => {
  const column = [...document.querySelectorAll('[data-testid="stColumn"]')].find(
    (c) => [...c.querySelectorAll("button")].some((b) => b.innerText.trim() === "Random point"));
  const current = () => column.querySelector('[data-testid="stImage"] img');
  const before = current() ? current().src : null;
  window.__benchShown = new Promise((resolve) => {
    const check = () => {
      const img = current();
      if (!img || img.src === before || !img.complete || img.naturalWidth === 0) return false;
      observer.disconnect();
      requestAnimationFrame(() =>
        resolve({ keydown: window.__benchKeydown, shown: performance.now() }));
      return true;
    };
    const observer = new MutationObserver(() => {
      const img = current();
      if (img && img.src !== before && !img.complete) {
        img.addEventListener("load", check, { once: true });
      }
      check();
    });
    observer.observe(column, { subtree: true, childList: true, attributes: true });
  });
  return before;
}
"""
WAIT_SHOWN = """
() => Promise.race([
  window.__benchShown,
  new Promise((_, reject) =>
    setTimeout(() => reject(new Error("no new image within 60 s")), 60000)),
])
"""
KEYDOWN = """
() => document.addEventListener("keydown", () => { window.__benchKeydown = performance.now(); },
                                { capture: true })
"""
ONE_LINE_PAGE = 'import streamlit as st\n\nst.write("A one-line page.")\n'


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Slider-to-image latency and first-page time in chromium; print JSON.",
    )
    parser.add_argument(
        "--presses", type=int, default=60, help="server-path slider key presses (default 60)"
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds of browser drag and server presses (3)"
    )
    parser.add_argument(
        "--drag-seconds", type=float, default=2.0, help="one continuous drag's length (2 s)"
    )
    parser.add_argument(
        "--starts",
        type=int,
        default=3,
        help="server starts per page for the first-page time (0: skip them)",
    )
    parser.add_argument("--warmup", type=int, default=5, help="presses not counted (default 5)")
    parser.add_argument(
        "--read-seconds",
        type=float,
        default=5.0,
        help="time on the home page before clicking Generate (default 5)",
    )
    parser.add_argument(
        "--run",
        type=Path,
        default=common.REPO / "models" / "default",
        help="the run the app starts with (default the bundled models/default)",
    )
    common.add_wait_option(parser)
    return parser.parse_args(argv)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return round(ordered[index], 1)


def summary(values: list[float]) -> dict:
    return {
        "n": len(values),
        "p50_ms": percentile(values, 0.5),
        "p95_ms": percentile(values, 0.95),
        "min_ms": round(min(values), 1),
        "max_ms": round(max(values), 1),
        "mean_ms": round(statistics.fmean(values), 1),
    }


def slider_latency(context, url: str, presses: int, warmup: int) -> list[float]:
    page, errors = bh.open_app(context, url)
    bh.go_to(page, "Generate")
    page.get_by_role("button", name="Random point", exact=True).wait_for()
    bh.wait_idle(page)
    page.evaluate(KEYDOWN)
    # The first latent slider ("direction 1", or "z1" without latent statistics), not Count.
    column = page.locator('[data-testid="stColumn"]').filter(
        has=page.get_by_role("slider", name=re.compile(r"^(direction 1|z1)\b"))
    )
    slider = column.get_by_role("slider").first
    slider.focus()
    latencies = []
    steps_each_way = 10
    for index in range(warmup + presses):
        key = "ArrowRight" if (index // steps_each_way) % 2 == 0 else "ArrowLeft"
        bh.wait_idle(page)
        page.evaluate(ARM)
        page.keyboard.press(key)
        shown = page.evaluate(WAIT_SHOWN)
        if index >= warmup:
            latencies.append(shown["shown"] - shown["keydown"])
    unexpected = errors.take_unexpected()
    page.close()
    if unexpected:
        raise SystemExit(f"the page logged errors: {unexpected}")
    return latencies


BROWSER_GOALS = {
    "decode_p95_ms": 8,
    "input_to_pixels_p95_ms": 16,
    "frames_per_second": 50,
    "title_to_first_canvas_ms": 1000,
    "reruns_during_drag": 0,
}


def canvas_and_server_path(context, browser_url: str, server_url: str, args) -> tuple[dict, list]:
    """Rounds that alternate the browser decoder's drag and the server path's key presses
    (which goes first alternates too); the browser's figures and the server's latencies."""
    rounds = max(1, args.rounds)
    presses = [args.presses // rounds + (index < args.presses % rounds) for index in range(rounds)]
    first_visit = canvas_latency.first_visit(context, browser_url)
    latencies: list[float] = []
    canvas_rounds: list[dict] = []
    for index in range(rounds):
        steps = [
            lambda: canvas_rounds.append(
                canvas_latency.measure_round(context, browser_url, args.drag_seconds)
            ),
            lambda index=index: latencies.extend(
                slider_latency(context, server_url, presses[index], args.warmup)
            ),
        ]
        for step in steps if index % 2 == 0 else reversed(steps):
            step()
    return canvas_latency.summarise(canvas_rounds, first_visit), latencies


def app_env(run: Path, browser_decoder: bool = True) -> dict[str, str]:
    """The app as a user starts it: this run active, TensorFlow warming up in the background;
    without ``browser_decoder``, the server path (DOGVAE_BROWSER_DECODER=0)."""
    warm_up = os.environ.get("DOGVAE_WARM_UP", "1")
    return {
        "DOGVAE_DEFAULT_RUN": str(run.resolve()),
        "DOGVAE_WARM_UP": warm_up,
        "DOGVAE_BROWSER_DECODER": "1" if browser_decoder else "0",
    }


def first_page_ms(
    context, script: str | None, path: str, text: str, folders: Path, env: dict[str, str]
) -> float:
    """A fresh server; milliseconds from its first healthy answer to ``text`` in the page."""
    page = context.new_page()
    with bh.running_app(folders / "data", folders / "runs", env=env, script=script) as url:
        up = time.perf_counter()
        page.goto(f"{url}{path}")
        page.get_by_text(text, exact=False).first.wait_for()
        elapsed = (time.perf_counter() - up) * 1000
    page.close()
    return elapsed


def dogs_after_home_ms(context, folders: Path, env: dict[str, str], read_seconds: float) -> float:
    """A fresh server; the home page, a pause, then Generate: ms from the click to its dogs."""
    with bh.running_app(folders / "data", folders / "runs", env=env) as url:
        page, errors = bh.open_app(context, url)
        time.sleep(read_seconds)
        clicked = time.perf_counter()
        page.locator(bh.NAV_LINK).filter(has_text="Generate").click()
        page.get_by_role("heading", name="Sampled dogs").wait_for(timeout=120_000)
        page.locator(f"{bh.MAIN} img").first.wait_for(timeout=120_000)
        bh.wait_for_pictures(page, timeout_s=120)
        elapsed = (time.perf_counter() - clicked) * 1000
        unexpected = errors.take_unexpected()
        page.close()
    if unexpected:
        raise SystemExit(f"the page logged errors: {unexpected}")
    return elapsed


def main(argv=None) -> int:
    args = parse_args(argv)
    common.apply_wait_option(args)
    reason = bh.browser_unavailable()
    if reason:
        print(f"latency.py: {reason}", file=sys.stderr)
        return common.EXIT_MISSING

    if not (args.run / "config.json").is_file():
        print(f"latency.py: no run folder at {args.run}", file=sys.stderr)
        return common.EXIT_MISSING
    env = app_env(args.run)

    with tempfile.TemporaryDirectory(prefix="dogvae-bench-latency-") as tmp:
        folders = Path(tmp)
        (folders / "data").mkdir()
        (folders / "runs").mkdir()
        one_line = folders / "one_line.py"
        one_line.write_text(ONE_LINE_PAGE)

        with bh.chromium() as context:
            quiet = common.wait_for_quiet()
            with contextlib.ExitStack() as servers:
                browser_url = servers.enter_context(
                    bh.running_app(folders / "data", folders / "runs", env=env)
                )
                server_url = servers.enter_context(
                    bh.running_app(folders / "data", folders / "runs", env=app_env(args.run, False))
                )
                canvas, latencies = canvas_and_server_path(context, browser_url, server_url, args)

            pages = {
                "home (Data)": (None, "/", "Give dogvae dog photos"),
                # A direct link to a page (dogvae.web.PinServerRoot spares it Streamlit's probes).
                "generate": (None, "/generate", "Latent sliders"),
                "one_line_streamlit": (str(one_line), "/", "A one-line page."),
            }
            first = {name: [] for name in pages} if args.starts else {}
            for start in range(args.starts):
                order = list(pages) if start % 2 == 0 else list(reversed(pages))
                for name in order:
                    script, path, text = pages[name]
                    first[name].append(first_page_ms(context, script, path, text, folders, env))
            after_home = [
                dogs_after_home_ms(context, folders, env, args.read_seconds)
                for _ in range(args.starts)
            ]

    result = {
        "run": str(args.run),
        "browser_decoder": canvas,
        "browser_decoder_goal": BROWSER_GOALS,
        "slider": summary(latencies),
        "slider_goal": {"p50_ms": 60, "p95_ms": 200},
        "read_seconds": args.read_seconds,
        **quiet,
    }
    if first:
        medians = {name: round(statistics.median(values), 1) for name, values in first.items()}
        yardstick = medians["one_line_streamlit"]
        result |= {
            "first_page_ms": {
                name: [round(value, 1) for value in values] for name, values in first.items()
            },
            "first_page_median_ms": medians,
            "first_page_vs_one_line": {
                name: round(value / yardstick, 2) for name, value in medians.items()
            },
            "first_page_goal": "home within 2000 ms, or 1.25x the one-line page",
            "dogs_after_home_ms": [round(value, 1) for value in after_home],
            "dogs_after_home_median_ms": round(statistics.median(after_home), 1),
        }
    common.emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
