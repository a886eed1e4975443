"""Where a training step's time goes: a preset's layers timed one by one, with GFLOP/s.

    python bench/step_profile.py                       # quality-ar, batch 64
    python bench/step_profile.py --preset quality --batch 128 --repeats 30

Each layer of the preset's VAE is timed alone, forward and backward (the gradients of
its input and its weights), on a random input of its real shape at the training batch
size; then the likelihood's loss with its gradients, Adam's update of every weight, and
the whole training step (``VAE.train_step``, compiled as ``fit`` compiles it). Layers
the decoder and its scale head share are timed once; the two heads' last convolutions,
which a training step runs as one (``VAE.mean_and_scale``), are also timed that way.
Convolutions and dense layers report GFLOP/s (forward x 3, counted as bench/train.py
counts them). The share of each part is of the sum of the parts; the step is usually a
little less than that sum (TensorFlow overlaps some of the work).

The CPU's peak is given two ways: cores x clock x FLOP per cycle (64 with AVX-512, 32
with AVX2), and a large float32 matrix product measured here, what this CPU does at
best in practice. One JSON object on stdout; timings are medians of ``--repeats``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

JOINT = "decoder + decoder_scale: the heads' convolutions joined (as trained)"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time a preset's training step layer by layer and print JSON.",
    )
    parser.add_argument("--preset", default="quality-ar", help="a dogvae preset (quality-ar)")
    parser.add_argument("--batch", type=int, default=64, help="batch size (default 64)")
    parser.add_argument("--repeats", type=int, default=20, help="timings per part (default 20)")
    common.add_wait_option(parser)
    return parser.parse_args(argv)


def timed(function, repeats: int) -> float:
    """Median milliseconds of ``function()`` after two warm-up calls (tracing)."""
    function(), function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def layer_timer(layer, input_shape, output_shape, batch: int):
    """A compiled forward-and-backward pass of ``layer`` alone on a random batch."""
    import tensorflow as tf

    inputs = tf.random.uniform((batch, *input_shape[1:]))
    weigh = tf.random.normal((batch, *output_shape[1:]))

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            loss = tf.reduce_sum(layer(inputs, training=True) * weigh)
        return tape.gradient(loss, [inputs, *layer.trainable_weights])

    return step


def gemm_gflops(size: int = 2048, repeats: int = 10) -> float:
    """GFLOP/s of a float32 matrix product of two size x size matrices (TensorFlow)."""
    import tensorflow as tf

    first = tf.random.normal((size, size))
    second = tf.random.normal((size, size))

    @tf.function
    def product():
        return tf.reduce_sum(tf.matmul(first, second))

    return 2 * size**3 / timed(product, repeats) / 1e6


def main(argv=None) -> int:
    args = parse_args(argv)
    common.apply_wait_option(args)
    quiet = common.wait_for_quiet() if common.WAIT else None
    import keras
    import numpy as np
    import tensorflow as tf
    from train import model_flops

    from dogvae.config import PRESETS
    from dogvae.model import build_vae, loss_terms, mean_term_loss, neighbour_kernel

    preset = PRESETS[args.preset]
    keras.utils.set_random_seed(0)
    vae = build_vae(
        preset.model, mean_weight=preset.train.mean_weight, mean_term=preset.train.mean_term
    )
    vae.compile(optimizer=keras.optimizers.Adam(1e-4))
    flops = model_flops(vae.parts)["layers"]
    batch = args.batch
    parts, seen = [], set()
    for model in vae.parts:
        for layer in model.layers:
            if id(layer) in seen or isinstance(layer, keras.layers.InputLayer):
                continue
            seen.add(id(layer))
            if not isinstance(layer.input, keras.KerasTensor):  # several inputs: Sampling
                continue
            timer = layer_timer(layer, layer.input.shape, layer.output.shape, batch)
            milliseconds = timed(timer, args.repeats)
            count = flops.get(f"{model.name} {layer.name}")
            part = {"part": f"{model.name} {layer.name}", "ms": round(milliseconds, 2)}
            if count:
                part["gflops"] = round(3 * count * batch / milliseconds / 1e6, 1)
            parts.append(part)

    # The two heads' last convolutions as the training step runs them: one of two channels.
    if vae.scale_decoder is not None and vae._trunk is not None:
        image = vae.decoder.get_layer("image")
        joint = keras.layers.Conv2D(2 * image.filters, image.kernel_size, padding="same")
        joint.build(image.input.shape)
        shape = (*image.output.shape[:-1], 2 * image.filters)
        milliseconds = timed(layer_timer(joint, image.input.shape, shape, batch), args.repeats)
        parts.append({"part": JOINT, "ms": round(milliseconds, 2)})
        for part in parts:
            if part["part"] in ("decoder image", "decoder_scale log_scale_raw"):
                part["alone"] = True  # as saved; the step runs them joined

    # The likelihood's loss and the mean's term, with their gradients.
    side, channels = preset.model.image_size, preset.model.channels
    images = tf.random.uniform((batch, side, side, channels))
    means = tf.Variable(tf.random.uniform((batch, side, side, channels), 0.1, 0.9))
    scales = tf.Variable(tf.fill((batch, side, side, channels), -3.0))
    codes = tf.random.normal((batch, preset.model.latent_dim))
    kernel = neighbour_kernel(vae.scale_decoder)
    log_scales = scales if vae.scale_decoder is not None else None

    @tf.function
    def loss_step():
        with tf.GradientTape() as tape:
            reconstruction, kl = loss_terms(images, means, codes, codes, log_scales, kernel)
            loss = tf.reduce_mean(reconstruction) + tf.reduce_mean(kl)
            if kernel is not None and vae.mean_weight:
                loss += tf.reduce_mean(mean_term_loss(images, means, scales, vae.mean_term))
        return tape.gradient(loss, [means, scales])

    parts.append({"part": "loss and its gradients", "ms": round(timed(loss_step, args.repeats), 2)})

    # Adam's update of every weight.
    weights = vae.trainable_weights
    gradients = [tf.random.normal(weight.shape) * 1e-6 for weight in weights]

    @tf.function
    def update():
        vae.optimizer.apply(gradients, weights)

    parts.append({"part": "Adam's update", "ms": round(timed(update, args.repeats), 2)})

    # The whole training step, as fit runs it.
    data = tf.constant(np.random.default_rng(0).integers(0, 256, (batch, side, side, channels)))
    data = tf.cast(data, tf.uint8)
    step = tf.function(vae.train_step)
    step_ms = timed(lambda: step(data), args.repeats)
    total = sum(part["ms"] for part in parts if not part.get("alone"))
    for part in parts:
        part["share"] = round(part["ms"] / total, 3)
    parts.sort(key=lambda part: -part["ms"])
    train_flops = 3 * sum(flops.values())
    step_gflops = train_flops * batch / step_ms / 1e6
    cpu = {**common.cpu_peak_gflops(), "gemm_gflops": round(gemm_gflops(), 1)}
    common.emit(
        {
            "preset": args.preset,
            "batch": batch,
            "step_ms": round(step_ms, 1),
            "images_per_s": round(batch / step_ms * 1000, 1),
            "train_mflop_per_image": round(train_flops / 1e6, 1),
            "step_gflops": round(step_gflops, 1),
            "share_of_peak": round(step_gflops / cpu["peak_gflops"], 3)
            if cpu["peak_gflops"]
            else None,
            "share_of_gemm": round(step_gflops / cpu["gemm_gflops"], 3),
            "sum_of_parts_ms": round(total, 1),
            "cpu": cpu,
            "waited_for_quiet": quiet,
            "parts": parts,
            "note": "each part alone, forward and backward, median ms; the two heads' "
            "last convolutions are listed alone (as saved, marked 'alone') and joined (as "
            "a training step runs them): the sum and the shares count them joined",
        }
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
