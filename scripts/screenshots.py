"""Take the README's screenshots: each page of the app as a new user sees it, in chromium.

Starts the app on a free port with the shared dog photos as its data folder and
an empty runs folder, then walks through it as a person would, clicking the
sidebar: Data (upload dogs.csv, first 500 images), Train (2 epochs, shot while
the live chart is drawing), Generate, Interpolate, Models. When a new session
already has a model (the bundled models/default, or --default-run), Generate and
Interpolate are shot with it before training, as a new user would first see
them; otherwise with the 2-epoch model, after training. Each shot is a
full-page PNG at a 1400 px wide window, reduced to a 256-colour palette when it
would be larger than --max-kb.

    .venv/bin/python scripts/screenshots.py            # writes docs/screenshots/*.png
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from PIL import Image  # noqa: E402

from tests.browser_helpers import (  # noqa: E402
    MAIN,
    assert_no_exception,
    browser_unavailable,
    chromium,
    fill_in,
    full_page_screenshot,
    go_to,
    open_app,
    running_app,
    upload,
    wait_idle,
)

RUN_NAME = "first-model"
SIDEBAR = '[data-testid="stSidebar"]'
MAIN_PROGRESS = f'{MAIN} [data-testid="stProgress"]'
CHART_LINES = f'{MAIN} [data-testid="stVegaLiteChart"] .mark-line path'


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=REPO.parent / "shared" / "data",
        help="folder holding dogs.csv and the photos it lists (default: ../shared/data)",
    )
    parser.add_argument(
        "--runs-dir", type=Path, help="where the app saves its runs (default: a temporary folder)"
    )
    parser.add_argument(
        "--out", type=Path, default=REPO / "docs" / "screenshots", help="where the PNGs go"
    )
    parser.add_argument(
        "--default-run",
        help="run folder a new session starts with (DOGVAE_DEFAULT_RUN; default: the app's own)",
    )
    parser.add_argument("--images", type=int, default=500, help="'Use at most' on the Data page")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=8,
        help="small, so that an epoch lasts long enough to shoot",
    )
    parser.add_argument("--max-kb", type=int, default=400, help="palette PNG above this size")
    args = parser.parse_args(argv)

    csv_path = args.data_dir / "dogs.csv"
    if not csv_path.is_file():
        parser.exit(2, f"error: no dataset at {csv_path}; pass --data-dir with a dogs.csv in it\n")
    reason = browser_unavailable()
    if reason:
        parser.exit(2, f"error: cannot take screenshots: {reason}\n")

    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="dogvae-screenshots-") as scratch:
        runs_dir = args.runs_dir or Path(scratch) / "runs"
        runs_dir.mkdir(parents=True, exist_ok=True)
        log = Path(scratch) / "server.log"
        env = (
            {"DOGVAE_DEFAULT_RUN": str(Path(args.default_run).resolve())}
            if args.default_run
            else {}
        )
        try:
            with running_app(args.data_dir.resolve(), runs_dir.resolve(), log, env) as url:
                take_screenshots(url, csv_path, args)
        except Exception:
            if log.is_file():
                print(f"--- server output ---\n{log.read_text(errors='replace')[-4000:]}")
            raise
    return 0


def take_screenshots(url: str, csv_path: Path, args: argparse.Namespace) -> None:
    with chromium(viewport=(1400, 1000)) as context:
        page, errors = open_app(context, url)
        has_model = not page.locator(SIDEBAR).get_by_text("none yet").count()

        # Data: first the image settings (fewer images, so an epoch takes seconds), then the CSV.
        page.get_by_text("Image settings").click()
        fill_in(page, "Use at most (0 = all images)", str(args.images))
        wait_idle(page)
        upload(page, csv_path)
        page.get_by_role("heading", name="Preview").wait_for(timeout=300_000)
        wait_idle(page)
        save(page, args.out / "data.png", args.max_kb)

        if has_model:
            model_pages(page, args)
        train(page, args)
        if not has_model:
            model_pages(page, args)

        go_to(page, "Models")
        page.locator('[data-testid="stHeading"]', has_text=RUN_NAME).first.wait_for()
        save(page, args.out / "models.png", args.max_kb)

        if problems := errors.take_unexpected():
            raise RuntimeError("the browser reported errors:\n" + "\n".join(problems))


def train(page, args: argparse.Namespace) -> None:
    """Train for two epochs; shoot during the second, when the chart and samples are there."""
    go_to(page, "Train")
    fill_in(page, "Epochs", "2")
    fill_in(page, "Batch size", str(args.batch_size))
    fill_in(page, "Run name", RUN_NAME)
    page.get_by_role("button", name="Start training").click()
    second_epoch = page.locator(MAIN_PROGRESS, has_text=re.compile(r"Epoch 2/2 · batch \d+/"))
    second_epoch.wait_for(timeout=600_000)
    page.get_by_text("latent units active").wait_for()
    page.locator(CHART_LINES).first.wait_for()
    # Not waiting for an idle script: the live chart reruns every second.
    save(page, args.out / "train.png", args.max_kb, idle=False)
    if not page.locator(MAIN_PROGRESS).count():
        raise RuntimeError("training ended before the shot; try a smaller --batch-size")
    page.get_by_text("Training finished").wait_for(timeout=600_000)
    wait_idle(page)


def model_pages(page, args: argparse.Namespace) -> None:
    go_to(page, "Generate")
    page.get_by_role("button", name="Random point", exact=True).wait_for()
    save(page, args.out / "generate.png", args.max_kb)

    go_to(page, "Interpolate")
    page.locator('[data-testid="stImage"]', has_text="8 steps, slerp").wait_for()
    save(page, args.out / "interpolate.png", args.max_kb)


def save(page, path: Path, max_kb: int, idle: bool = True) -> None:
    full_page_screenshot(page, path, idle=idle)
    assert_no_exception(page)
    shrink(path, max_kb)


def shrink(path: Path, max_kb: int) -> None:
    """Reduce a PNG to a 256-colour palette when it is larger than max_kb; report its size."""
    before = path.stat().st_size
    if before > max_kb * 1024:
        with Image.open(path) as image:
            palette = image.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT)
        palette.save(path, optimize=True)
    with Image.open(path) as image:
        size = image.size
    print(f"{path}: {size[0]}x{size[1]}, {path.stat().st_size / 1024:,.0f} KB", flush=True)


if __name__ == "__main__":
    started = time.monotonic()
    status = main()
    print(f"done in {time.monotonic() - started:,.0f} s")
    sys.exit(status)
