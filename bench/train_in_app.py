"""Training from the app while a browser watches it, against the same training without the app.

    python bench/train_in_app.py                  # 1,000 generated images, 3 epochs, 2 rounds
    python bench/train_in_app.py --images 2000 --epochs 2 --rounds 3

The same small training (the seed preset, batch 32) runs three ways:

* ``in_process``: a TrainingJob in this process with nobody watching, as the
  CLI trains;
* ``app``: ``streamlit run serve.py`` as configured in
  .streamlit/config.toml, with a chromium tab on the Train page, whose live
  chart reruns every second while the training runs;
* ``app_streamlit_cleanup``: the same with Streamlit's own clean-up after
  every script run, which the app turns off: ``keras.backend.clear_session()``
  (``DOGVAE_STREAMLIT_CLEANUP=1``, see dogvae.ui.keep_keras_between_runs) and a
  full garbage collection (``STREAMLIT_RUNNER_POST_SCRIPT_GC=true``).

For each: the training's own seconds (from its config.json), and for a long
training started next, the seconds from the Stop click (from ``stop()`` in
process) to the page saying it ended early and saved (to the job's end).
The order of the three alternates from round to round.

One JSON object on stdout (seconds).
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

sys.path.insert(0, str(common.REPO / "tests"))
import browser_helpers as bh
from conftest import write_dogs

BATCH_SIZE = 32
STOP_EPOCHS = 500  # the long training that the Stop button ends
WAYS = ("in_process", "app", "app_streamlit_cleanup")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Seconds to train and to stop, in the app and out of it; print JSON.",
    )
    parser.add_argument("--images", type=int, default=1000, help="generated images (default 1000)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per training (default 3)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of the three (default 2)")
    common.add_wait_option(parser)
    return parser.parse_args(argv)


def write_data(folder: Path, images: int) -> Path:
    """A CSV over ``images`` generated dogs, in the app's data folder."""
    paths = write_dogs(folder / "images", images)
    csv_path = folder / "dogs.csv"
    with csv_path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["filepaths", "labels"])
        for path in paths:
            writer.writerow([path.relative_to(folder).as_posix(), path.parent.name])
    return csv_path


def in_process(csv_path: Path, runs: Path, epochs: int, tag: str) -> dict[str, float]:
    from dogvae.config import PRESETS, DataConfig
    from dogvae.data import load_dataset
    from dogvae.training import TrainingJob

    dataset = load_dataset(csv_path, DataConfig())
    preset = PRESETS["seed"]

    def job(name: str, epochs: int) -> TrainingJob:
        train = replace(preset.train, epochs=epochs, batch_size=BATCH_SIZE)
        return TrainingJob(
            dataset=dataset,
            model_config=preset.model,
            train_config=train,
            data_config=DataConfig(),
            out_dir=runs / name,
            preset="seed",
        ).start()

    first = job(f"{tag}-train", epochs)
    first.wait()
    seconds = json.loads((runs / f"{tag}-train" / "config.json").read_text())["seconds"]
    second = job(f"{tag}-stop", STOP_EPOCHS)
    while not second.batches():
        time.sleep(0.05)
    stopped = time.perf_counter()
    second.stop()
    second.wait()
    return {"train_seconds": seconds, "stop_seconds": time.perf_counter() - stopped}


def in_app(
    context, csv_path: Path, runs: Path, epochs: int, tag: str, cleanup: bool
) -> dict[str, float]:
    env = {
        "DOGVAE_DEFAULT_RUN": "none",
        "DOGVAE_STREAMLIT_CLEANUP": "1" if cleanup else "0",
        "STREAMLIT_RUNNER_POST_SCRIPT_GC": "true" if cleanup else "false",
    }
    with bh.running_app(csv_path.parent, runs, env=env) as url:
        page, _ = bh.open_app(context, url)
        bh.upload(page, csv_path)
        page.get_by_role("heading", name="Report: dogs.csv").wait_for(timeout=300_000)
        bh.wait_idle(page)
        bh.go_to(page, "Train")

        bh.start_training(page, epochs, BATCH_SIZE, f"{tag}-train", timeout_s=120)
        page.get_by_text("Training finished").wait_for(timeout=3_600_000)
        config = json.loads((runs / f"{tag}-train" / "config.json").read_text())
        bh.wait_idle(page)

        bh.start_training(page, STOP_EPOCHS, BATCH_SIZE, f"{tag}-stop", timeout_s=120)
        progress = re.compile(rf"Epoch \d+/{STOP_EPOCHS} · batch [1-9]")
        page.locator(bh.MAIN_PROGRESS, has_text=progress).wait_for(timeout=600_000)
        stopped = time.perf_counter()
        page.locator(bh.MAIN).get_by_role("button", name="Stop", exact=True).click()
        page.get_by_text("Training ended early").wait_for(timeout=600_000)
        stop_seconds = time.perf_counter() - stopped
        page.close()
    return {"train_seconds": config["seconds"], "stop_seconds": stop_seconds}


def main(argv=None) -> int:
    args = parse_args(argv)
    common.apply_wait_option(args)
    reason = bh.browser_unavailable()
    if reason:
        print(f"train_in_app.py: {reason}", file=sys.stderr)
        return common.EXIT_MISSING

    results: dict[str, list[dict[str, float]]] = {way: [] for way in WAYS}
    quiet = {}
    with tempfile.TemporaryDirectory(prefix="dogvae-bench-train-in-app-") as tmp:
        folder = Path(tmp)
        csv_path = write_data(folder / "data", args.images)
        runs = folder / "runs"
        runs.mkdir()
        with bh.chromium() as context:
            for round_number in range(args.rounds):
                order = WAYS if round_number % 2 == 0 else tuple(reversed(WAYS))
                for way in order:
                    tag = f"{way.replace('_', '-')}-{round_number}"
                    quiet = common.wait_for_quiet()
                    if way == "in_process":
                        result = in_process(csv_path, runs, args.epochs, tag)
                    else:
                        cleanup = way == "app_streamlit_cleanup"
                        result = in_app(context, csv_path, runs, args.epochs, tag, cleanup)
                    results[way].append({key: round(value, 2) for key, value in result.items()})

    medians = {
        way: {
            key: round(statistics.median(row[key] for row in rows), 2)
            for key in ("train_seconds", "stop_seconds")
        }
        for way, rows in results.items()
    }
    base = medians["in_process"]["train_seconds"]
    common.emit(
        {
            "images": args.images,
            "epochs": args.epochs,
            "batch_size": BATCH_SIZE,
            "rounds": results,
            "median": medians,
            "train_seconds_vs_in_process": {
                way: round(median["train_seconds"] / base, 2) for way, median in medians.items()
            },
            **quiet,
        }
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
