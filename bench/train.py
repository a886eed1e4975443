"""Training throughput: ../shared/bench/seed_baseline.py against dogvae, alternating.

    python bench/train.py                        # dogs.csv, 2,000 images, batch 128, 3 rounds
    python bench/train.py --rounds 5 --epochs 4

Each round runs the baseline script and a dogvae worker (this script with
``--worker``) as separate processes, in alternating order, each once the CPUs
are quiet and again if other processes used more than 10% of them meanwhile.
Both train the seed model on the same first N images of the CSV, with the
same batch size and epochs, and are reported the same way: N divided by the
median epoch time, the first epoch (tracing) left out (each JSON line also
keeps the script's own figures). dogvae's epoch is measured from one epoch's
start to the next, so it includes everything dogvae does around the model
(input pipeline, progress callback, per-epoch diagnostics and sample grid);
the baseline's from its epoch start to its epoch end.

The worker also reports what the per-batch callbacks cost (Keras' own
conversion of the logs included) and how long one pass of the input pipeline
takes on its own. FLOPs per image are counted by hand from the layer shapes
(forward; training = 3x forward) and compared with the CPU's peak.

One JSON object on stdout.
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Train the seed model with ../shared/bench/seed_baseline.py and with "
        "dogvae, alternating, and print images/s, the ratio and GFLOP/s as JSON.",
    )
    parser.add_argument(
        "--csv",
        type=Path,
        default=common.SHARED_DATA / "dogs.csv",
        help="CSV with a 'filepaths' column (default ../shared/data/dogs.csv)",
    )
    parser.add_argument("--n", type=int, default=2000, help="first N images (default 2000)")
    parser.add_argument("--epochs", type=int, default=5, help="epochs per run (default 5)")
    parser.add_argument("--batch", type=int, default=128, help="batch size (default 128)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each (default 3)")
    parser.add_argument(
        "--baseline",
        type=Path,
        default=common.BASELINE,
        help="the baseline script (default ../shared/bench/seed_baseline.py)",
    )
    parser.add_argument(
        "--split",
        action="store_true",
        help="dogvae trains on the CSV's training split and validates on the rest, as the "
        "app does (default: all N images, no validation, the baseline's work)",
    )
    parser.add_argument(
        "--pipeline",
        choices=("auto", "tensor", "stream"),
        default="auto",
        help="dogvae's input pipeline: auto (what train_vae picks: streaming for the "
        "memory-mapped cache), tensor (the images as one tf.data tensor) or stream",
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    common.add_wait_option(parser)
    return parser.parse_args(argv)


def seed_flops(image_size=64, channels=1, conv_filters=(32, 64), dense_units=16, latent_dim=2):
    """Forward FLOPs per image of the seed architecture, per layer, counted from shapes.

    A convolution costs k*k*c_in*c_out*H_out*W_out*2, a dense layer in*out*2. A
    stride-2 transposed convolution does k*k*c_in*c_out multiply-adds per *input*
    pixel (it is the gradient of a stride-2 convolution), which is how it is
    counted here; counting per output pixel would give 4x for those layers.
    Biases and activations are left out (under 1%).
    """
    layers = []
    side, depth = image_size, channels
    for index, filters in enumerate(conv_filters, start=1):
        side //= 2
        layers.append((f"encoder conv_{index}", 9 * depth * filters * side * side * 2))
        depth = filters
    width = side * side * depth
    if dense_units:
        layers.append(("encoder dense", width * dense_units * 2))
        width = dense_units
    layers.append(("encoder z_mean + z_log_var", 2 * width * latent_dim * 2))
    layers.append(("decoder dense", latent_dim * side * side * depth * 2))
    for index, filters in enumerate(reversed(conv_filters), start=1):
        layers.append((f"decoder deconv_{index}", 9 * depth * filters * side * side * 2))
        side *= 2
        depth = filters
    layers.append(("decoder image conv", 9 * depth * channels * side * side * 2))
    forward = sum(flops for _, flops in layers)
    return {
        "forward_per_image": forward,
        "train_per_image": 3 * forward,
        "layers": dict(layers),
        "note": "training = forward + backward (about 2x forward) = 3x forward; "
        "transposed convolutions counted per input pixel",
    }


def worker(args) -> int:
    """One dogvae training, reported like the baseline's JSON line."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from dogvae.config import PRESETS, DataConfig, TrainConfig
    from dogvae.data import load_dataset

    started = time.perf_counter()
    dataset = load_dataset(args.csv, DataConfig(limit=args.n))
    load_s = time.perf_counter() - started

    import keras
    import numpy as np

    from dogvae import training
    from dogvae.training import pipeline

    # Instrumentation: time spent in the per-batch callback hooks, Keras' own
    # conversion of the logs to floats included.
    callback_seconds = [0.0]
    batches = [0]
    callback_list = keras.callbacks.CallbackList
    for hook in ("on_train_batch_begin", "on_train_batch_end"):
        original = getattr(callback_list, hook)

        def timed(self, *a, _original=original, _hook=hook, **k):
            t0 = time.perf_counter()
            _original(self, *a, **k)
            callback_seconds[0] += time.perf_counter() - t0
            if _hook == "on_train_batch_end":
                batches[0] += 1

        setattr(callback_list, hook, timed)

    starts, ends = [], []

    class EpochClock(keras.callbacks.Callback):
        # Runs before dogvae's own callback: its epoch end marks where dogvae's
        # per-epoch work (diagnostics, sample grid, weight snapshot) begins.
        def on_epoch_begin(self, epoch, logs=None):
            starts.append(time.perf_counter())

        def on_epoch_end(self, epoch, logs=None):
            ends.append(time.perf_counter())

        def on_train_end(self, logs=None):
            starts.append(time.perf_counter())

    preset = PRESETS["seed"]
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch, seed=0)
    images = dataset.images
    if args.pipeline == "tensor":
        images = np.array(images)  # in memory: one tensor
        pipeline.MAX_TENSOR_BYTES = 1 << 40
    elif args.pipeline == "stream":
        pipeline.MAX_TENSOR_BYTES = 0
    if args.split:
        train_rows, validation_rows = dataset.train_indices, dataset.validation_indices
    else:
        train_rows, validation_rows = None, None
    result = training.train_vae(
        images,
        images if args.split else None,
        preset.model,
        config,
        extra_callbacks=(EpochClock(),),
        train_indices=train_rows,
        validation_indices=validation_rows,
    )
    # The last epoch ends after the built-in callback's work, at on_train_end.
    epoch_s = [later - earlier for earlier, later in itertools.pairwise(starts)]
    trained = len(images) if train_rows is None else len(train_rows)
    steady = epoch_s[1:] or epoch_s

    train_data = pipeline.batches(images, args.batch, True, 0, train_rows)
    t0 = time.perf_counter()
    for _ in train_data:
        pass
    pipeline_s = time.perf_counter() - t0

    common.emit(
        {
            "n": trained,
            "validation": 0 if validation_rows is None else len(validation_rows),
            "load_s": round(load_s, 3),
            "epoch_s": [round(seconds, 3) for seconds in epoch_s],
            "train_img_per_s": round(trained / (sum(steady) / len(steady)), 1),
            "final_loss": round(result.history[-1]["loss"], 2),
            "status": result.status,
            "pipeline": "stream"
            if pipeline.mapping_of(images) is not None or pipeline.MAX_TENSOR_BYTES == 0
            else "tensor",
            "epoch_end_s": [round(b - e, 3) for e, b in zip(ends, starts[1:], strict=False)],
            "callback_ms_per_batch": round(callback_seconds[0] * 1000 / max(batches[0], 1), 4),
            "callback_share": round(callback_seconds[0] / sum(epoch_s), 5),
            "pipeline_s_per_epoch": round(pipeline_s, 4),
            "peak_rss_mb": common.peak_rss_mb(),
        }
    )
    return 0


def steady_rate(result: dict) -> float:
    """Images per second from the median epoch after the first (tracing) one.

    The median, not the mean: on these machines single epochs now and then take
    30% longer for either contender, whatever it does.
    """
    epochs = result["epoch_s"][1:] or result["epoch_s"]
    return round(result["n"] / statistics.median(epochs), 1)


def run(command: list[str], env: dict | None = None) -> dict:
    """Run one training process once the CPUs are quiet (again if others disturbed it)."""

    def once():
        out = subprocess.run(command, capture_output=True, text=True, cwd=common.REPO, env=env)
        if out.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed:\n{out.stderr[-3000:]}")
        return common.last_json_line(out.stdout)

    result, record = common.measure(once)
    return {
        **result,
        "img_per_s": steady_rate(result),
        "foreign_cpu_share": record["foreign_cpu_share"],
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    common.apply_wait_option(args)
    common.require(args.csv, "the dataset CSV")
    if args.worker:
        return worker(args)
    common.require(args.baseline, "the baseline script seed_baseline.py")
    python = sys.executable
    same = ["--n", str(args.n), "--epochs", str(args.epochs), "--batch", str(args.batch)]
    baseline_command = [python, str(args.baseline), str(args.csv), *same]
    dogvae_command = [
        python,
        str(Path(__file__).resolve()),
        "--worker",
        "--csv",
        str(args.csv),
        *same,
        *(["--split"] if args.split else []),
        "--pipeline",
        args.pipeline,
    ]
    # dogvae's workers load through a cache of their own, filled before the rounds.
    from dogvae.config import DataConfig
    from dogvae.data import load_dataset

    cache_dir = Path(tempfile.mkdtemp(prefix="dogvae-bench-train-"))
    env = {**os.environ, "DOGVAE_CACHE_DIR": str(cache_dir)}
    rounds = []
    try:
        load_dataset(args.csv, DataConfig(limit=args.n), cache_dir=cache_dir)
        for index in range(args.rounds):
            order = ("baseline", "dogvae") if index % 2 == 0 else ("dogvae", "baseline")
            measured = {"order": list(order)}
            for who in order:
                if who == "baseline":
                    measured[who] = run(baseline_command)
                else:
                    measured[who] = run(dogvae_command, env)
            measured["ratio"] = round(
                measured["dogvae"]["img_per_s"] / measured["baseline"]["img_per_s"],
                3,
            )
            rounds.append(measured)
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)

    from dogvae.config import PRESETS

    model = PRESETS["seed"].model
    flops = seed_flops(
        model.image_size, model.channels, model.conv_filters, model.dense_units, model.latent_dim
    )
    cpu = common.cpu_peak_gflops()
    baseline_rate = common.median([r["baseline"]["img_per_s"] for r in rounds])
    dogvae_rate = common.median([r["dogvae"]["img_per_s"] for r in rounds])
    epoch_end = [s for r in rounds for s in r["dogvae"]["epoch_end_s"][1:]]
    epochs = [s for r in rounds for s in r["dogvae"]["epoch_s"][1:]]

    def gflops(rate: float) -> float:
        return round(rate * flops["train_per_image"] / 1e9, 2)

    result = {
        "csv": str(args.csv),
        "n": args.n,
        "batch": args.batch,
        "epochs": args.epochs,
        "dogvae_data": "training split + validation" if args.split else "all N, no validation",
        "dogvae_pipeline": rounds[0]["dogvae"]["pipeline"],
        "rounds": rounds,
        "baseline_img_per_s": baseline_rate,
        "dogvae_img_per_s": dogvae_rate,
        "ratio": common.median([r["ratio"] for r in rounds]),
        "ratio_per_round": [r["ratio"] for r in rounds],
        "dogvae_epoch_end_share": round(sum(epoch_end) / sum(epochs), 4) if epochs else None,
        "flops": flops,
        "gflops": {"baseline": gflops(baseline_rate), "dogvae": gflops(dogvae_rate)},
        "cpu": cpu,
        "peak_fraction": {
            "baseline": round(gflops(baseline_rate) / cpu["peak_gflops"], 3)
            if cpu["peak_gflops"]
            else None,
            "dogvae": round(gflops(dogvae_rate) / cpu["peak_gflops"], 3)
            if cpu["peak_gflops"]
            else None,
        },
    }
    common.emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
