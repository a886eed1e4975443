"""Take the README's picture of the 2-D pad: Generate's latent canvas, decoded in chromium.

Starts the app with the bundled default model, opens Generate from the home page as a
user would, drags the pad's point up and to the right, and shoots the latent sliders'
section (the pad's two direction pickers, the canvas, the pad and the sliders).

    .venv/bin/python scripts/pad_screenshot.py          # writes docs/pad.png
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.browser_helpers import (  # noqa: E402
    browser_unavailable,
    chromium,
    go_to,
    open_app,
    running_app,
    wait_idle,
    wait_until,
)

CANVAS = "canvas[data-dogvae-canvas]"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "pad.png")
    args = parser.parse_args(argv)
    reason = browser_unavailable()
    if reason:
        print(f"pad_screenshot.py: {reason}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="dogvae-pad-") as tmp:
        folders = Path(tmp)
        (folders / "data").mkdir()
        (folders / "runs").mkdir()
        with running_app(folders / "data", folders / "runs") as url, chromium() as context:
            page, _ = open_app(context, url)
            go_to(page, "Generate")
            page.locator(f"{CANVAS}[data-status=ready]").wait_for()
            pad = page.locator(".dogvae-latent-canvas .pad")
            pad.scroll_into_view_if_needed()
            box = pad.bounding_box()
            page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.5)
            page.mouse.down()
            for step in range(1, 21):
                x = 0.5 + 0.22 * step / 20
                y = 0.5 - 0.25 * step / 20
                page.mouse.move(box["x"] + box["width"] * x, box["y"] + box["height"] * y)
            page.mouse.up()
            wait_until(lambda: page.locator(CANVAS).get_attribute("data-decodes"), what="a draw")
            page.wait_for_timeout(600)
            wait_idle(page)
            section = (
                page.locator('[data-testid="stVerticalBlock"]')
                .filter(has=page.get_by_text("Pad across"))
                .filter(has=page.locator(CANVAS))
                .last
            )
            args.out.parent.mkdir(parents=True, exist_ok=True)
            section.screenshot(path=str(args.out))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
