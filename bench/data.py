"""Decoding benchmark: the seed baseline's cv2 loop against dogvae, cold and cached.

    python bench/data.py                      # dogs_large.csv, 64x64 grayscale, 3 rounds
    python bench/data.py --csv ../shared/data/dogs.csv --rounds 5

Each measurement waits for the CPUs to be quiet and is repeated when other
processes used more than 10% of them meanwhile (see bench/common.py). Each
round times, in alternating order, (a) the loop of
../shared/bench/seed_baseline.py (pandas reads the CSV, cv2.imread GRAYSCALE
and cv2.resize INTER_LINEAR one image after another, one float32 array: its
``load_s``) and (b) dogvae: ``load_dataset`` without the cache (decoding
only: parallel, reduced JPEG decoding), then with an empty cache folder (the
first load: decoding and writing the cache) and again (the second load: the
cache, memory-mapped). The
files are read once before the rounds, so every contender finds them in the
OS page cache.

It also prints where the baseline's time goes per image (read, decode,
resize) on a sample, the same for dogvae's decoder, and how far reduced JPEG
decoding moves pixels: every image as dogvae decodes it is compared with a
full decode followed by cv2.resize(INTER_AREA).

One JSON object on stdout; times in seconds, ratios as baseline / dogvae.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time the seed baseline's cv2 decoding loop against dogvae (cold and "
        "cached), alternating; print JSON.",
    )
    parser.add_argument(
        "--csv",
        type=Path,
        default=common.SHARED_DATA / "dogs_large.csv",
        help="CSV with a 'filepaths' column (default ../shared/data/dogs_large.csv)",
    )
    parser.add_argument("--n", type=int, default=None, help="first N rows (default all)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each (default 3)")
    parser.add_argument("--cached-repeats", type=int, default=5, help="cached loads per round")
    parser.add_argument("--image-size", type=int, default=64, help="(default 64)")
    parser.add_argument("--channels", type=int, choices=(1, 3), default=1, help="1 gray, 3 RGB")
    parser.add_argument("--workers", type=int, default=None, help="decoding threads (all CPUs)")
    parser.add_argument(
        "--sample", type=int, default=1000, help="images timed one by one for the breakdown"
    )
    common.add_wait_option(parser)
    return parser.parse_args(argv)


def baseline_load(csv: Path, n: int | None, image_size: int, channels: int) -> tuple[float, int]:
    """seed_baseline.py's loading code, as written there (its ``load_s``)."""
    import cv2
    import numpy as np
    import pandas as pd

    flag = cv2.IMREAD_GRAYSCALE if channels == 1 else cv2.IMREAD_COLOR
    t0 = time.perf_counter()
    df = pd.read_csv(csv)[:n]
    base = os.path.dirname(os.path.abspath(csv))
    imgs = []
    for f in df["filepaths"]:
        im = cv2.imread(os.path.join(base, f), flag)
        imgs.append(cv2.resize(im, (image_size, image_size)))
    x = np.array(imgs, dtype="float32") / 255.0
    if channels == 1:
        x = x[..., None]
    return time.perf_counter() - t0, len(x)


def dogvae_load(args, cache_dir: Path | None) -> tuple[float, object]:
    """One load_dataset call; ``cache_dir`` None means without the cache."""
    from dogvae.config import DataConfig
    from dogvae.data import load_dataset

    config = DataConfig(image_size=args.image_size, channels=args.channels, limit=args.n)
    started = time.perf_counter()
    dataset = load_dataset(
        args.csv, config, workers=args.workers, cache=cache_dir is not None, cache_dir=cache_dir
    )
    return time.perf_counter() - started, dataset


def breakdown(files: list[str], image_size: int, channels: int) -> dict:
    """Per-image milliseconds: read the file, decode, resize; baseline's way and dogvae's."""
    import cv2
    import numpy as np

    from dogvae.data import jpeg_reduction, jpeg_size
    from dogvae.data.decode import REDUCED_FLAGS

    gray = channels == 1
    base_flag = cv2.IMREAD_GRAYSCALE if gray else cv2.IMREAD_COLOR
    totals = {
        "baseline": {"read": 0.0, "decode": 0.0, "resize": 0.0},
        "dogvae": {"header": 0.0, "decode": 0.0, "resize": 0.0},
    }
    for name in files:
        t0 = time.perf_counter()
        with open(name, "rb") as handle:
            data = handle.read()
        buffer = np.frombuffer(data, np.uint8)
        t1 = time.perf_counter()
        image = cv2.imdecode(buffer, base_flag)
        t2 = time.perf_counter()
        cv2.resize(image, (image_size, image_size))
        t3 = time.perf_counter()
        totals["baseline"]["read"] += t1 - t0
        totals["baseline"]["decode"] += t2 - t1
        totals["baseline"]["resize"] += t3 - t2

        t0 = time.perf_counter()
        size = jpeg_size(data)
        factor = jpeg_reduction(size, image_size) if size else 1
        flag = cv2.IMREAD_GRAYSCALE if gray else cv2.IMREAD_COLOR_RGB
        if factor > 1:
            flag = REDUCED_FLAGS[factor] | (0 if gray else cv2.IMREAD_COLOR_RGB)
        t1 = time.perf_counter()
        image = cv2.imdecode(buffer, flag | cv2.IMREAD_ANYDEPTH)
        t2 = time.perf_counter()
        cv2.resize(image, (image_size, image_size), interpolation=cv2.INTER_AREA)
        t3 = time.perf_counter()
        totals["dogvae"]["header"] += t1 - t0
        totals["dogvae"]["decode"] += t2 - t1
        totals["dogvae"]["resize"] += t3 - t2
    count = max(len(files), 1)
    result = {"sample": len(files)}
    for who, parts in totals.items():
        total = sum(parts.values())
        result[f"{who}_ms_per_image"] = {
            **{part: round(seconds * 1000 / count, 4) for part, seconds in parts.items()},
            "total": round(total * 1000 / count, 4),
        }
        result[f"{who}_share"] = {
            part: round(seconds / total, 3) if total else 0.0 for part, seconds in parts.items()
        }
    result["note"] = "one thread; the baseline's read includes the open(), as cv2.imread does"
    return result


def pixel_difference(files: list[str], image_size: int, channels: int) -> dict:
    """dogvae's decoder against a full decode + cv2 INTER_AREA, for every image.

    Reported for the images decoded reduced (the JPEG scaling), the others (which
    should not differ at all) and all together.
    """
    import cv2
    import numpy as np

    from dogvae.data import decode_image, jpeg_reduction, jpeg_size

    flag = cv2.IMREAD_GRAYSCALE if channels == 1 else cv2.IMREAD_COLOR_RGB
    reduced, others, factors = [], [], {}
    for name in files:
        with open(name, "rb") as handle:
            data = handle.read()
        size = jpeg_size(data)
        factor = jpeg_reduction(size, image_size) if size else 1
        try:
            ours = decode_image(data, image_size, channels)
        except ValueError:
            continue
        full = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
        reference = cv2.resize(full, (image_size, image_size), interpolation=cv2.INTER_AREA)
        difference = np.abs(ours.astype(np.int16) - reference.reshape(ours.shape))
        (reduced if factor > 1 else others).append(difference)
        if factor > 1:
            factors[factor] = factors.get(factor, 0) + 1

    def stats(differences: list) -> dict:
        if not differences:
            return {"images": 0}
        stacked = np.stack(differences)
        return {
            "images": len(differences),
            "mean_abs_diff": round(float(stacked.mean()), 4),
            "max_abs_diff": int(stacked.max()),
            "p99_abs_diff": float(np.percentile(stacked, 99)),
            "pixels_differing": round(float(np.count_nonzero(stacked) / stacked.size), 5),
            "worst_image_mean_abs_diff": round(
                float(stacked.reshape(len(stacked), -1).mean(axis=1).max()), 3
            ),
        }

    return {
        "compared_with": "full decode + cv2.resize INTER_AREA",
        "reduced_jpeg": {
            **stats(reduced),
            "factors": {str(key): value for key, value in sorted(factors.items())},
        },
        "not_reduced": stats(others),
        "all": stats(reduced + others),
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    common.apply_wait_option(args)
    common.require(args.csv, "the dataset CSV")
    import numpy as np
    import pandas as pd

    table = pd.read_csv(args.csv)[: args.n]
    base = args.csv.resolve().parent
    files = [str(base / name) for name in table["filepaths"]]
    for name in files:  # every contender finds the files in the page cache
        with open(name, "rb") as handle:
            handle.read()
    n = len(files)

    rounds = []
    work = Path(tempfile.mkdtemp(prefix="dogvae-bench-data-"))
    try:
        for round_index in range(args.rounds):
            cache_dir = work / f"cache{round_index}"
            measured = {}

            def run_baseline(measured=measured):
                seconds, record = common.measure(
                    lambda: baseline_load(args.csv, args.n, args.image_size, args.channels)[0]
                )
                measured["baseline_s"] = round(seconds, 4)
                measured["baseline_foreign_cpu"] = record["foreign_cpu_share"]

            def run_dogvae(measured=measured, cache_dir=cache_dir):
                def first_load():
                    shutil.rmtree(cache_dir, ignore_errors=True)  # a repeat starts empty too
                    return dogvae_load(args, cache_dir)

                (seconds, _), record = common.measure(lambda: dogvae_load(args, None))
                measured["decode_s"] = round(seconds, 4)
                measured["decode_foreign_cpu"] = record["foreign_cpu_share"]
                (seconds, cold), record = common.measure(first_load)
                measured["cold_s"] = round(seconds, 4)
                measured["cold_foreign_cpu"] = record["foreign_cpu_share"]
                cached_times = []
                for _ in range(args.cached_repeats):
                    seconds, cached = dogvae_load(args, cache_dir)
                    cached_times.append(seconds)
                    if not np.array_equal(cached.images, cold.images):
                        raise SystemExit("the cached images differ from the decoded ones")
                measured["cached_s"] = common.median(cached_times)
                measured["cache_hit"] = not cached.images.flags.writeable
                measured["readable"] = cold.report.readable

            order = (
                (run_baseline, run_dogvae) if round_index % 2 == 0 else (run_dogvae, run_baseline)
            )
            for run in order:
                run()
            measured["order"] = [run.__name__.removeprefix("run_") for run in order]
            rounds.append(measured)
            shutil.rmtree(cache_dir, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def ratios(top: str, bottom: str) -> list[float]:
        return [round(r[top] / r[bottom], 3) for r in rounds]

    baseline_s = common.median([r["baseline_s"] for r in rounds])
    decode_s = common.median([r["decode_s"] for r in rounds])
    cold_s = common.median([r["cold_s"] for r in rounds])
    cached_s = common.median([r["cached_s"] for r in rounds])
    rng = np.random.default_rng(0)
    sample = [files[i] for i in sorted(rng.permutation(n)[: min(args.sample, n)])]
    result = {
        "csv": str(args.csv),
        "n": n,
        "readable": rounds[0]["readable"],
        "image_size": args.image_size,
        "channels": args.channels,
        "workers": args.workers or os.cpu_count(),
        "rounds": rounds,
        "baseline_img_per_s": round(n / baseline_s, 1),
        "dogvae_decode_img_per_s": round(n / decode_s, 1),
        "dogvae_cold_img_per_s": round(n / cold_s, 1),
        "dogvae_cached_img_per_s": round(n / cached_s, 1),
        "decode_speedup": common.median(ratios("baseline_s", "decode_s")),
        "decode_speedup_per_round": ratios("baseline_s", "decode_s"),
        "first_load_speedup": common.median(ratios("baseline_s", "cold_s")),
        "cached_speedup_vs_cold": common.median(ratios("cold_s", "cached_s")),
        "cached_speedup_vs_baseline": common.median(ratios("baseline_s", "cached_s")),
        "breakdown": breakdown(sample, args.image_size, args.channels),
        "pixel_difference": pixel_difference(files, args.image_size, args.channels),
        "cpu": common.cpu_peak_gflops(),
    }
    common.emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
