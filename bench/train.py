"""Training throughput: ../shared/bench/seed_baseline.py against dogvae, alternating.

    python bench/train.py                        # dogs.csv, 2,000 images, batch 128, 3 rounds
    python bench/train.py --rounds 5 --epochs 4
    python bench/train.py --preset quality-ar --batch 64   # another preset, beside plain Keras

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
takes on its own. FLOPs per image are counted from the Keras layers' shapes
(forward; training = 3x forward) and compared with the CPU's peak.

With ``--preset`` other than seed, dogvae trains that preset and a third contender,
``keras``, trains the same model with a bare ``model.fit`` on the images in memory (no
dogvae callbacks, validation, diagnostics or input pipeline): the gap between the two is
what dogvae adds around the model, the gap to the CPU's peak what TensorFlow leaves.

One JSON object on stdout.
"""

from __future__ import annotations

import argparse
import dataclasses
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
    parser.add_argument(
        "--preset",
        default="seed",
        help="the preset dogvae trains (default seed, the baseline's model); for another, "
        "a bare Keras fit of the same model runs beside it",
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--keras-worker", action="store_true", help=argparse.SUPPRESS)
    common.add_wait_option(parser)
    return parser.parse_args(argv)


def model_flops(models) -> dict:
    """Forward FLOPs per image of Keras models' layers, counted from their shapes.

    A convolution costs k*k*c_in*c_out*H_out*W_out*2, a dense layer in*out*2. A
    stride-2 transposed convolution does k*k*c_in*c_out multiply-adds per *input*
    pixel (it is the gradient of a stride-2 convolution), which is how it is
    counted here; counting per output pixel would give 4x for those layers.
    Biases, batch norm and activations are left out (about 1%). A layer shared by two
    models (the decoder's trunk in a scale head) is counted once.
    """
    import keras

    layers, seen = [], set()
    for model in models:
        if model is None:
            continue
        for layer in model.layers:
            if id(layer) in seen:
                continue
            seen.add(id(layer))
            if isinstance(layer, keras.layers.Conv2DTranspose):
                _, height, width, depth = layer.input.shape
                kernel = layer.kernel_size[0] * layer.kernel_size[1]
                flops = kernel * depth * layer.filters * height * width * 2
            elif isinstance(layer, keras.layers.Conv2D):
                depth = layer.input.shape[-1]
                _, height, width, _ = layer.output.shape
                kernel = layer.kernel_size[0] * layer.kernel_size[1]
                flops = kernel * depth * layer.filters * height * width * 2
            elif isinstance(layer, keras.layers.Dense):
                flops = layer.input.shape[-1] * layer.units * 2
            else:
                continue
            layers.append((f"{model.name} {layer.name}", int(flops)))
    forward = sum(flops for _, flops in layers)
    return {
        "forward_per_image": forward,
        "train_per_image": 3 * forward,
        "layers": dict(layers),
        "note": "training = forward + backward (about 2x forward) = 3x forward; "
        "transposed convolutions counted per input pixel",
    }


def keras_worker(args) -> int:
    """The preset's model trained by a bare ``model.fit`` on the images in memory."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from dogvae.config import PRESETS, DataConfig
    from dogvae.data import load_dataset

    preset = PRESETS[args.preset]
    dataset = load_dataset(args.csv, DataConfig(**_data_settings(preset), limit=args.n))
    import keras
    import numpy as np

    from dogvae.model import build_vae

    keras.utils.set_random_seed(0)
    images = np.asarray(dataset.images, np.float32) / 255.0
    vae = build_vae(preset.model)
    vae.compile(optimizer=keras.optimizers.Adam(learning_rate=preset.train.learning_rate))
    starts = []

    class EpochClock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            starts.append(time.perf_counter())

        def on_train_end(self, logs=None):
            starts.append(time.perf_counter())

    history = vae.fit(
        images, epochs=args.epochs, batch_size=args.batch, callbacks=[EpochClock()], verbose=0
    )
    epoch_s = [later - earlier for earlier, later in itertools.pairwise(starts)]
    common.emit(
        {
            "n": len(images),
            "epoch_s": [round(seconds, 3) for seconds in epoch_s],
            "final_loss": round(float(history.history["loss"][-1]), 2),
            "peak_rss_mb": common.peak_rss_mb(),
        }
    )
    return 0


def _data_settings(preset) -> dict:
    """The image size and channels a preset's model takes."""
    return {"image_size": preset.model.image_size, "channels": preset.model.channels}


def worker(args) -> int:
    """One dogvae training, reported like the baseline's JSON line."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from dogvae.config import PRESETS, DataConfig
    from dogvae.data import load_dataset

    started = time.perf_counter()
    preset = PRESETS[args.preset]
    dataset = load_dataset(args.csv, DataConfig(**_data_settings(preset), limit=args.n))
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

    config = dataclasses.replace(preset.train, epochs=args.epochs, batch_size=args.batch, seed=0)
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
    if args.keras_worker:
        return keras_worker(args)
    from dogvae.config import PRESETS

    if args.preset not in PRESETS:
        raise SystemExit(f"no preset {args.preset!r} (known: {', '.join(PRESETS)})")
    common.require(args.baseline, "the baseline script seed_baseline.py")
    python = sys.executable
    same = ["--n", str(args.n), "--epochs", str(args.epochs), "--batch", str(args.batch)]
    baseline_command = [python, str(args.baseline), str(args.csv), *same]

    def worker_command(flag: str, *extra: str) -> list[str]:
        return [python, str(Path(__file__).resolve()), flag, "--csv", str(args.csv), *same,
                *extra, "--preset", args.preset]  # fmt: skip

    split = ["--split"] if args.split else []
    dogvae_command = worker_command("--worker", *split, "--pipeline", args.pipeline)
    keras_command = worker_command("--keras-worker")
    contenders = ("baseline", "dogvae")
    if args.preset != "seed":
        contenders = ("baseline", "dogvae", "keras")
    # dogvae's workers load through a cache of their own, filled before the rounds.
    from dogvae.config import DataConfig
    from dogvae.data import load_dataset

    cache_dir = Path(tempfile.mkdtemp(prefix="dogvae-bench-train-"))
    env = {**os.environ, "DOGVAE_CACHE_DIR": str(cache_dir)}
    rounds = []
    try:
        settings = _data_settings(PRESETS[args.preset])
        load_dataset(args.csv, DataConfig(**settings, limit=args.n), cache_dir=cache_dir)
        commands = {
            "baseline": (baseline_command, None),
            "dogvae": (dogvae_command, env),
            "keras": (keras_command, env),
        }
        for index in range(args.rounds):
            order = contenders if index % 2 == 0 else tuple(reversed(contenders))
            measured = {"order": list(order)}
            for who in order:
                measured[who] = run(*commands[who])
            measured["ratio"] = round(
                measured["dogvae"]["img_per_s"] / measured["baseline"]["img_per_s"],
                3,
            )
            rounds.append(measured)
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)

    from dogvae.model import build_vae

    built = build_vae(PRESETS[args.preset].model)
    flops = model_flops((built.encoder, built.decoder, built.scale_decoder))
    baseline_flops = model_flops(build_vae(PRESETS["seed"].model).parts)["train_per_image"]
    cpu = common.cpu_peak_gflops()
    rates = {who: common.median([r[who]["img_per_s"] for r in rounds]) for who in contenders}
    baseline_rate, dogvae_rate = rates["baseline"], rates["dogvae"]
    epoch_end = [s for r in rounds for s in r["dogvae"]["epoch_end_s"][1:]]
    epochs = [s for r in rounds for s in r["dogvae"]["epoch_s"][1:]]

    def gflops(rate: float, per_image: int = flops["train_per_image"]) -> float:
        return round(rate * per_image / 1e9, 2)

    achieved = {who: gflops(rate) for who, rate in rates.items()}
    achieved["baseline"] = gflops(baseline_rate, baseline_flops)

    result = {
        "csv": str(args.csv),
        "preset": args.preset,
        "n": args.n,
        "batch": args.batch,
        "epochs": args.epochs,
        "dogvae_data": "training split + validation" if args.split else "all N, no validation",
        "dogvae_pipeline": rounds[0]["dogvae"]["pipeline"],
        "rounds": rounds,
        "baseline_img_per_s": baseline_rate,
        "dogvae_img_per_s": dogvae_rate,
        "keras_img_per_s": rates.get("keras"),
        "dogvae_vs_keras": round(dogvae_rate / rates["keras"], 3) if "keras" in rates else None,
        "ratio": common.median([r["ratio"] for r in rounds]),
        "ratio_per_round": [r["ratio"] for r in rounds],
        "dogvae_epoch_end_share": round(sum(epoch_end) / sum(epochs), 4) if epochs else None,
        "flops": flops,
        "gflops": achieved,
        "cpu": cpu,
        "peak_fraction": {
            who: round(value / cpu["peak_gflops"], 3) if cpu["peak_gflops"] else None
            for who, value in achieved.items()
        },
    }
    common.emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
