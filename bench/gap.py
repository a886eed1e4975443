"""Amortization gap: how much a run's encoder costs against the best posterior per image.

    python bench/gap.py models/default ../shared/data/dogs.csv
    python bench/gap.py RUN DATA --split validation --steps 400

The ELBO of a VAE can fall short for two reasons: the encoder does not find the
best Gaussian posterior for an image (the amortization gap), or the decoder and
latent cannot describe the image better (the generative model). This script
keeps the decoder fixed and, for every image of the split, optimises the
posterior's mean and log-variance directly (Adam, one sampled z per step,
starting from the encoder's output). It reports the excess (loss - floor, as
``python -m dogvae evaluate`` defines it) with the encoder's posteriors and with
the optimised ones, each averaged over ``--samples`` draws of z. A small gap
means a better encoder cannot help: the decoder is the limit.

Nothing here is timed, so there is nothing to wait for. One JSON object on stdout.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Measure a run's amortization gap on a split of a dataset: the excess "
        "with the encoder's posteriors and with posteriors optimised per image; print JSON.",
    )
    parser.add_argument("run", type=Path, help="a dogvae run folder")
    parser.add_argument("data", type=Path, help="a CSV, ZIP or folder of images")
    parser.add_argument(
        "--split", choices=("train", "validation", "all"), default="validation", help="images"
    )
    parser.add_argument("--limit", type=int, default=None, help="first N images of the data")
    parser.add_argument("--steps", type=int, default=400, help="Adam steps per image batch")
    parser.add_argument("--learning-rate", type=float, default=0.01, help="Adam's step size")
    parser.add_argument("--samples", type=int, default=32, help="z draws per excess estimate")
    parser.add_argument("--seed", type=int, default=0, help="seed for the z draws")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    common.require(args.run / "config.json", "the run folder")
    common.require(args.data, "the dataset")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import numpy as np
    import tensorflow as tf

    from dogvae.data import load_dataset
    from dogvae.loaded_run import load_run
    from dogvae.model import to_float_images, vae_loss_terms
    from dogvae.runs import read_run_info

    info = read_run_info(args.run)
    dataset = load_dataset(args.data, replace(info.data_config, limit=args.limit))
    try:
        images = dataset.require_images().split_images(args.split)
    except ValueError as error:
        raise SystemExit(f"gap.py: {error}") from None
    keras.utils.set_random_seed(args.seed)
    run = load_run(args.run)
    x = tf.constant(np.asarray(to_float_images(np.asarray(images))))
    zeros = tf.zeros((len(images), 1))
    floor = float(tf.reduce_mean(vae_loss_terms(x, x, zeros, zeros)[0]))
    z_mean, z_log_var, _ = run.encoder(x, training=False)
    z_mean, z_log_var = tf.Variable(z_mean), tf.Variable(z_log_var)

    def loss(samples: int) -> tf.Tensor:
        total = 0.0
        for _ in range(samples):
            z = z_mean + tf.exp(0.5 * z_log_var) * tf.random.normal(z_mean.shape)
            reconstruction, kl = vae_loss_terms(
                x, run.decoder(z, training=False), z_mean, z_log_var
            )
            total += tf.reduce_mean(reconstruction + kl)
        return total / samples

    amortized = float(loss(args.samples)) - floor
    optimizer = keras.optimizers.Adam(args.learning_rate)
    started = time.perf_counter()
    trace = []
    for step in range(1, args.steps + 1):
        with tf.GradientTape() as tape:
            value = loss(1)
        optimizer.apply(tape.gradient(value, [z_mean, z_log_var]), [z_mean, z_log_var])
        if step % max(args.steps // 4, 1) == 0 or step == args.steps:
            trace.append({"step": step, "excess": round(float(loss(args.samples)) - floor, 2)})
    optimized = trace[-1]["excess"] if trace else amortized
    common.emit(
        {
            "run": str(args.run),
            "data": str(args.data),
            "split": args.split,
            "images": len(images),
            "floor": round(floor, 2),
            "amortized_excess": round(amortized, 2),
            "optimized_excess": round(optimized, 2),
            "gap": round(amortized - optimized, 2),
            "trace": trace,
            "steps": args.steps,
            "seconds": round(time.perf_counter() - started, 1),
        }
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
