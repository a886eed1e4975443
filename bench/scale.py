"""Scale: load and train on 100,000 images with flat memory.

    python bench/scale.py                                   # 100,000 images, 64x64 gray, 1 epoch
    python bench/scale.py --size 128 --channels 3 --steps 200
    python bench/scale.py --n 2000 --steps 10               # a quick look

Writes N synthetic photos (small PNG or JPEG files with a smooth background
and a "dog" blob, 1,000 to a folder, listed in a CSV) into a temporary
folder, then measures in a fresh process: the first load (decoding into the
cache file), a second load (the cache, memory-mapped), and a training of the
seed architecture at that size that streams batches from the memory-mapped
cache (one epoch with a 10% validation split, or ``--steps`` batches without
validation). Peak memory is the worker's own (VmHWM), so nothing the parent did
(writing the files) counts.

The server's dataset memory ceiling (DOGVAE_MAX_DATASET_MB, 4 GiB by default)
is lifted for this run, since the images are never held in memory whole; 100,000
RGB images of 128x128 are 4.9 GB.

One JSON object on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

PER_FOLDER = 1000


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Write N synthetic images, then load them (cold and cached) and train on "
        "them streaming from the cache; print load time, images/s and peak RSS as JSON.",
    )
    parser.add_argument("--n", type=int, default=100_000, help="images (default 100,000)")
    parser.add_argument("--size", type=int, default=64, help="image side (default 64)")
    parser.add_argument("--channels", type=int, choices=(1, 3), default=1, help="1 gray, 3 RGB")
    parser.add_argument(
        "--format", choices=("png", "jpg"), default=None, help="file type (png gray, jpg RGB)"
    )
    parser.add_argument("--batch", type=int, default=128, help="batch size (default 128)")
    parser.add_argument(
        "--steps", type=int, default=None, help="train this many batches (default one epoch)"
    )
    parser.add_argument("--dir", type=Path, default=None, help="work folder (default a temp one)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--worker", type=Path, default=None, help=argparse.SUPPRESS)
    common.add_wait_option(parser)
    return parser.parse_args(argv)


def write_images(folder: Path, n: int, size: int, channels: int, extension: str) -> Path:
    """N smooth synthetic photos in folder/images/NNN/, and folder/dogs.csv listing them."""
    import cv2
    import numpy as np

    y = np.linspace(0.0, 1.0, size, dtype=np.float32)[:, None] * np.ones((1, size), np.float32)

    def one(index: int) -> bytes:
        rng = np.random.default_rng(index)
        tint = rng.uniform(0.3, 1.0, 3)
        background = (0.5 + 0.5 * y)[..., None] * tint * 200
        image = background.astype(np.uint8)
        centre = (int(rng.uniform(0.3, 0.7) * size), int(rng.uniform(0.35, 0.7) * size))
        axes = (int(rng.uniform(0.15, 0.3) * size), int(rng.uniform(0.15, 0.3) * size))
        colour = tuple(int(c) for c in rng.integers(20, 235, 3))
        cv2.ellipse(image, centre, axes, 0, 0, 360, colour, -1, cv2.LINE_AA)
        for side in (-1, 1):
            ear = (centre[0] + side * axes[0], centre[1] - axes[1] // 3)
            cv2.ellipse(image, ear, (axes[0] // 3, axes[1] // 2), 0, 0, 360, colour, -1)
        if channels == 1:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        ok, encoded = cv2.imencode(f".{extension}", image)
        assert ok
        return encoded.tobytes()

    names = [f"images/{index // PER_FOLDER:03d}/dog_{index:06d}.{extension}" for index in range(n)]
    for folder_index in range(-(-n // PER_FOLDER)):
        (folder / "images" / f"{folder_index:03d}").mkdir(parents=True, exist_ok=True)

    def write(start: int) -> None:
        for index in range(start, min(start + 500, n)):
            (folder / names[index]).write_bytes(one(index))

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        list(pool.map(write, range(0, n, 500)))
    csv = folder / "dogs.csv"
    csv.write_text("filepaths\n" + "\n".join(names) + "\n")
    return csv


def worker(args) -> int:
    """Measured in its own process: load cold, load cached, train streaming."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from dogvae.config import DataConfig, ModelConfig, TrainConfig
    from dogvae.data import load_dataset

    csv = args.worker
    cache_dir = csv.parent / "cache"
    config = DataConfig(image_size=args.size, channels=args.channels)
    needed = args.n * args.size * args.size * args.channels
    rss = {"start_mb": common.peak_rss_mb()}

    started = time.perf_counter()
    dataset = load_dataset(csv, config, cache_dir=cache_dir, max_bytes=needed)
    cold_s = time.perf_counter() - started
    rss["after_cold_load_mb"] = common.peak_rss_mb()
    started = time.perf_counter()
    dataset = load_dataset(csv, config, cache_dir=cache_dir, max_bytes=needed)
    cached_s = time.perf_counter() - started
    rss["after_cached_load_mb"] = common.peak_rss_mb()

    import keras

    from dogvae import training
    from dogvae.training import pipeline

    stop = None
    batch_ends = []

    class Clock(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            batch_ends.append(time.perf_counter())
            if args.steps is not None and len(batch_ends) >= args.steps:
                stop.set()

    import threading

    stop = threading.Event()
    full_epoch = args.steps is None
    validation_rows = dataset.validation_indices if full_epoch else None
    train_rows = dataset.train_indices if full_epoch else None
    images = dataset.images
    started = time.perf_counter()
    result = training.train_vae(
        images,
        images if full_epoch else None,
        ModelConfig(image_size=args.size, channels=args.channels),
        TrainConfig(epochs=1, batch_size=args.batch, seed=0, report_every=50),
        stop_event=stop,
        extra_callbacks=(Clock(),),
        train_indices=train_rows,
        validation_indices=validation_rows,
    )
    train_s = time.perf_counter() - started
    trained_batches = len(batch_ends)
    warm = 3 if trained_batches > 6 else 1
    steady_s = batch_ends[-1] - batch_ends[warm - 1] if trained_batches > warm else float("nan")
    steady_images = (trained_batches - warm) * args.batch
    common.emit(
        {
            "images_loaded": dataset.report.readable,
            "cold_load_s": round(cold_s, 2),
            "cold_load_img_per_s": round(dataset.report.readable / cold_s, 1),
            "cached_load_s": round(cached_s, 4),
            "memory_mapped": pipeline.mapping_of(images) is not None,
            "train_images": len(train_rows) if train_rows is not None else len(images),
            "validation_images": len(validation_rows) if validation_rows is not None else 0,
            "batches": trained_batches,
            "train_s": round(train_s, 2),
            "train_img_per_s": round(steady_images / steady_s, 1) if steady_images else None,
            "status": result.status,
            "final_loss": round(result.history[-1]["loss"], 2) if result.history else None,
            "rss_mb": {**rss, "peak_mb": common.peak_rss_mb()},
        }
    )
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    common.apply_wait_option(args)
    if args.worker is not None:
        return worker(args)
    extension = args.format or ("png" if args.channels == 1 else "jpg")
    work = args.dir or Path(tempfile.mkdtemp(prefix="dogvae-bench-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        started = time.perf_counter()
        csv = write_images(work, args.n, args.size, args.channels, extension)
        write_s = time.perf_counter() - started
        files_mb = sum(path.stat().st_size for path in (work / "images").rglob("*")) / 2**20
        from dogvae.data import limits

        # Files this fresh are not cached (see CACHE_SETTLE_SECONDS): wait them out.
        time.sleep(limits.CACHE_SETTLE_SECONDS + 0.5)
        command = [sys.executable, str(Path(__file__).resolve()), "--worker", str(csv)]
        command += ["--n", str(args.n), "--size", str(args.size)]
        command += ["--channels", str(args.channels), "--batch", str(args.batch)]
        if args.steps is not None:
            command += ["--steps", str(args.steps)]

        def once():
            shutil.rmtree(work / "cache", ignore_errors=True)  # a repeat starts cold too
            out = subprocess.run(command, capture_output=True, text=True, cwd=common.REPO)
            if out.returncode != 0:
                raise SystemExit(f"the measuring process failed:\n{out.stderr[-3000:]}")
            return common.last_json_line(out.stdout)

        measured, record = common.measure(once, retries=1)
        result = {
            "n": args.n,
            "size": args.size,
            "channels": args.channels,
            "format": extension,
            "batch": args.batch,
            "steps": args.steps,
            "write_s": round(write_s, 1),
            "files_mb": round(files_mb, 1),
            "decoded_mb": round(args.n * args.size * args.size * args.channels / 2**20, 1),
            **measured,
            "foreign_cpu_share": record["foreign_cpu_share"],
            "attempts": record["attempts"],
            "cpu": common.cpu_peak_gflops(),
        }
        print(json.dumps(result))
    finally:
        if not args.keep and args.dir is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
