"""The "logistic-ar" likelihood: each pixel's logistic mean follows the errors of the
pixels before it. It is still a proper distribution of 8-bit images, Keras and NumPy
agree on it, and a run folder says enough for a script to compute it from the files."""

from __future__ import annotations

import dataclasses
import itertools
import json

import numpy as np
import pytest

from dogvae.config import PRESETS, DataConfig, ModelConfig, TrainConfig
from dogvae.likelihood import (
    NEIGHBOURS,
    autoregressive_logistic_log_prob,
    discretized_logistic_log_prob,
    pixel_log_prob_for,
)
from tests.conftest import write_dogs
from tests.test_logistic import numpy_nll

TINY_AR = ModelConfig(
    image_size=32, conv_filters=(8, 16), dense_units=16, latent_dim=2, likelihood="logistic-ar"
)


def random_case(seed: int, shape=(3, 5, 6, 1)):
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, shape).astype(np.uint8)
    means = rng.uniform(0.05, 0.95, shape)
    log_scales = rng.uniform(-4.0, -1.0, shape)
    kernel = rng.normal(0.0, 0.4, (len(NEIGHBOURS), shape[-1]))
    return pixels, means, log_scales, kernel


def keras_nll(pixels, means, log_scales, kernel):
    from dogvae.model import loss_terms

    z = np.zeros((len(pixels), 2), np.float32)
    nll, _ = loss_terms(
        pixels.astype(np.float32) / 255.0,
        means.astype(np.float32),
        z,
        z,
        log_scales.astype(np.float32),
        None if kernel is None else kernel.astype(np.float32),
    )
    return np.asarray(nll, np.float64)


def test_a_zero_kernel_is_the_plain_logistic():
    pixels, means, log_scales, kernel = random_case(0)
    zero = np.zeros_like(kernel)
    plain = numpy_nll(pixels, means, log_scales)
    np.testing.assert_allclose(keras_nll(pixels, means, log_scales, zero), plain, rtol=1e-5)
    np.testing.assert_allclose(keras_nll(pixels, means, log_scales, None), plain, rtol=1e-5)
    ours = -autoregressive_logistic_log_prob(NEIGHBOURS, zero)((means, log_scales), pixels)
    np.testing.assert_allclose(ours, plain, rtol=1e-9)


def test_keras_and_numpy_agree_for_a_random_kernel_and_it_matters():
    pixels, means, log_scales, kernel = random_case(1)
    numpy_side = -autoregressive_logistic_log_prob(NEIGHBOURS, kernel)((means, log_scales), pixels)
    np.testing.assert_allclose(keras_nll(pixels, means, log_scales, kernel), numpy_side, rtol=1e-4)
    assert np.abs(numpy_side - numpy_nll(pixels, means, log_scales)).min() > 1.0


def test_a_two_pixel_image_by_hand():
    """Pixel 2's mean moves by w times pixel 1's error; pixel 1 has nothing before it."""
    w = 0.7
    neighbours, weights = [(0, -1)], [[w]]
    pixels = np.array([[[[200], [90]]]], np.uint8)  # 1 x 2 x 1
    means = np.array([[[[0.5], [0.3]]]])
    log_scales = np.full((1, 1, 2, 1), -2.0)
    moved = means.copy()
    moved[0, 0, 1, 0] = 0.3 + w * (200 / 255 - 0.5)
    expected = -numpy_nll(pixels, moved, log_scales)
    got = autoregressive_logistic_log_prob(neighbours, weights)((means, log_scales), pixels)
    np.testing.assert_allclose(got, expected, rtol=1e-12)


@pytest.mark.parametrize("shape", [(1, 2, 1), (2, 1, 1)])
def test_the_masses_of_every_tiny_image_sum_to_one(shape):
    """All 256^2 images of two pixels, in a row and in a column, with the full kernel."""
    values = np.array(list(itertools.product(range(256), repeat=2)), np.uint8)
    pixels = values.reshape(-1, *shape)
    rng = np.random.default_rng(2)
    kernel = rng.normal(0.0, 0.8, (len(NEIGHBOURS), 1))
    means = np.broadcast_to(rng.uniform(0.1, 0.9, shape), pixels.shape)
    log_scales = np.broadcast_to(rng.uniform(-4.0, -2.0, shape), pixels.shape)
    log_prob = autoregressive_logistic_log_prob(NEIGHBOURS, kernel)((means, log_scales), pixels)
    assert np.exp(log_prob).sum() == pytest.approx(1.0, abs=1e-6)


def test_a_neighbour_that_is_not_before_the_pixel_is_refused():
    for offset in ((0, 0), (0, 1), (1, -2)):
        with pytest.raises(ValueError, match="not all before the pixel"):
            autoregressive_logistic_log_prob([offset], [[0.5]])
    for broken in ({}, {"neighbours": [[0, -1]]}, {"neighbours": [[0, 1]], "weights": [[1.0]]}):
        with pytest.raises(ValueError, match="autoregressive likelihood is not readable"):
            pixel_log_prob_for(
                {"likelihood": {"distribution": "discretized_logistic_ar", **broken}}
            )


def test_the_preset_and_its_scale_head():
    from dogvae.model import build_vae, neighbour_kernel

    assert PRESETS["quality-ar"].model == dataclasses.replace(
        PRESETS["quality-logistic"].model, likelihood="logistic-ar"
    )
    vae = build_vae(TINY_AR)
    kernel = neighbour_kernel(vae.scale_decoder)
    assert tuple(kernel.shape) == (len(NEIGHBOURS), 1) and not np.asarray(kernel).any()
    assert neighbour_kernel(build_vae(dataclasses.replace(TINY_AR, likelihood="logistic"))
                            .scale_decoder) is None  # fmt: skip


def test_a_logistic_start_gives_its_scale_head_and_keeps_the_new_kernel_at_zero():
    from dogvae.model import build_vae, neighbour_kernel, scale_head_weights, set_scale_head_weights

    logistic = build_vae(dataclasses.replace(TINY_AR, likelihood="logistic"))
    raw = logistic.scale_decoder.get_layer("log_scale_raw")
    raw.set_weights([w + 0.25 for w in raw.get_weights()])
    target = build_vae(TINY_AR)
    done = set_scale_head_weights(target.scale_decoder, scale_head_weights(logistic.scale_decoder))
    assert done == ["log_scale_raw"]
    for mine, theirs in zip(
        target.scale_decoder.get_layer("log_scale_raw").get_weights(),
        raw.get_weights(),
        strict=True,
    ):
        np.testing.assert_array_equal(mine, theirs)
    assert not np.asarray(neighbour_kernel(target.scale_decoder)).any()
    # An autoregressive start passes its kernel on too.
    neighbour_kernel(target.scale_decoder).assign(np.full((len(NEIGHBOURS), 1), 0.5, np.float32))
    other = build_vae(TINY_AR)
    assert "neighbour_weights" in set_scale_head_weights(
        other.scale_decoder, scale_head_weights(target.scale_decoder)
    )
    assert np.asarray(neighbour_kernel(other.scale_decoder)).min() == 0.5


@pytest.fixture(scope="module")
def ar_run(tmp_path_factory):
    from dogvae.data import load_dataset
    from dogvae.training import train_and_save

    folder = tmp_path_factory.mktemp("ar")
    write_dogs(folder / "images", 16)
    data_config = DataConfig(image_size=32)
    dataset = load_dataset(folder / "images", data_config, cache=False)
    run_dir, result = train_and_save(
        dataset, TINY_AR, TrainConfig(epochs=3, batch_size=8), data_config, folder / "run"
    )
    assert result.status == "finished", result.message
    return run_dir, dataset


def test_a_run_describes_its_kernel_so_a_script_can_compute_the_likelihood(ar_run):
    """From decoder.keras, decoder_scale.keras and config.json alone, written out again
    here, the reconstruction term equals the one dogvae trains and evaluates with."""
    import keras

    import dogvae.model  # noqa: F401 - the custom layers
    from dogvae.loaded_run import load_run
    from dogvae.model import neighbour_kernel

    run_dir, dataset = ar_run
    described = json.loads((run_dir / "config.json").read_text())["likelihood"]
    assert described["distribution"] == "discretized_logistic_ar"
    assert [tuple(n) for n in described["neighbours"]] == list(NEIGHBOURS)
    weights = np.asarray(described["weights"])
    assert weights.shape == (len(NEIGHBOURS), 1) and np.abs(weights).max() > 0  # it learned
    run = load_run(run_dir)
    np.testing.assert_allclose(np.asarray(neighbour_kernel(run.scale_decoder)), weights, atol=1e-7)

    decoder = keras.models.load_model(run_dir / "decoder.keras", compile=False)
    scale = keras.models.load_model(run_dir / "decoder_scale.keras", compile=False)
    pixels = dataset.images[:4]
    z = np.asarray(run.encode(pixels)[0])
    means, log_scales = np.asarray(decoder(z), np.float64), np.asarray(scale(z), np.float64)
    errors = pixels / 255.0 - means
    moved = means.copy()
    height, width = means.shape[1:3]
    for (dy, dx), (w,) in zip(described["neighbours"], described["weights"], strict=True):
        for i, j in itertools.product(range(height), range(width)):
            if 0 <= i + dy < height and 0 <= j + dx < width:
                moved[:, i, j] += w * errors[:, i + dy, j + dx]
    by_hand = -discretized_logistic_log_prob((moved, log_scales), pixels)
    ours = keras_nll(pixels, means, log_scales, weights)
    np.testing.assert_allclose(ours, by_hand, rtol=1e-4)
    from_config = -pixel_log_prob_for({"likelihood": described})((means, log_scales), pixels)
    np.testing.assert_allclose(from_config, by_hand, rtol=1e-9)

    figures = run.likelihood(pixels, samples=4)
    assert 0.0 < figures["iwae_bpd"] <= figures["elbo_bpd"] < 16.0


def test_a_resumed_training_gets_its_kernel_back(tmp_path):
    from dogvae.model import neighbour_kernel
    from dogvae.training import checkpoint as ckpt
    from dogvae.training import train_vae
    from tests.test_training_checkpoint import Kill
    from tests.training_helpers import blobs

    config = TrainConfig(epochs=2, batch_size=8, seed=3)
    whole = train_vae(
        blobs(24), None, TINY_AR, config,
        checkpoints=ckpt.CheckpointPlan(tmp_path / "whole", {}, 1e9),
    )  # fmt: skip
    plan = ckpt.CheckpointPlan(tmp_path / "run", {}, 0.0)
    with pytest.raises(KeyboardInterrupt):
        train_vae(
            blobs(24), None, TINY_AR, config,
            checkpoints=plan, extra_callbacks=(Kill(1, 0),),
        )  # fmt: skip
    resumed = train_vae(
        blobs(24),
        None,
        TINY_AR,
        config,
        checkpoints=plan,
        resume=ckpt.read_checkpoint(tmp_path / "run"),
    )
    kernel = np.asarray(neighbour_kernel(resumed.scale_decoder))
    assert np.abs(kernel).max() > 0
    np.testing.assert_array_equal(kernel, np.asarray(neighbour_kernel(whole.scale_decoder)))


def test_the_mean_weight_adds_the_means_own_term_and_leaves_the_reported_loss():
    """TrainConfig.mean_weight: the objective gains weight * the plain logistic of the mean
    (the scales held fixed for it); the reported loss is the -ELBO either way."""
    import tensorflow as tf

    from dogvae.model import build_vae, logistic_nll, neighbour_kernel

    images = np.random.default_rng(3).integers(0, 256, (4, 32, 32, 1)).astype(np.float32) / 255
    plain, weighted = build_vae(TINY_AR), build_vae(TINY_AR, mean_weight=2.0)
    weighted.set_weights(plain.get_weights())
    for vae in (plain, weighted):
        neighbour_kernel(vae.scale_decoder).assign(np.full((len(NEIGHBOURS), 1), 0.1, np.float32))
    for vae in (plain, weighted):  # z = z_mean: a posterior of variance e^-40
        layer = vae.encoder.get_layer("z_log_var")
        layer.set_weights(
            [np.zeros_like(w) - 40.0 * (i == 1) for i, w in enumerate(layer.get_weights())]
        )
    rec, _, penalty = weighted._terms(images, training=False)
    rec0, _, penalty0 = plain._terms(images, training=False)
    assert penalty0 == 0.0
    np.testing.assert_allclose(float(rec), float(rec0), rtol=1e-6)
    z_mean, _, _ = weighted.encoder(images)
    means, log_scales = weighted._outputs(z_mean)
    expected = 2.0 * float(np.mean(logistic_nll(images, means, log_scales)))
    assert float(penalty) == pytest.approx(expected, rel=1e-5)
    assert float(penalty) > float(rec)  # without the neighbours the mean's errors cost more
    with tf.GradientTape() as tape:
        _, _, penalty = weighted._terms(images, training=False)
    scale_layer = weighted.scale_decoder.get_layer("log_scale_raw").trainable_weights
    image_layer = weighted.decoder.layers[-1].trainable_weights
    gradients = tape.gradient(penalty, scale_layer + image_layer)
    assert all(g is None or not np.asarray(g).any() for g in gradients[: len(scale_layer)])
    assert np.abs(np.asarray(gradients[-1])).max() > 0  # it moves the mean
    with pytest.raises(ValueError, match="mean_weight"):
        TrainConfig(mean_weight=-1)


def test_the_gaussian_mean_term_is_the_squared_error_over_the_batchs_mean_squared_error():
    """TrainConfig.mean_term "gaussian": weight * the mean over images of
    sum (x - mean)^2 / (2 * v), v the batch's mean squared error held fixed (so its
    gradient is that of a Gaussian with v as its variance); the -ELBO is unchanged."""
    import tensorflow as tf

    from dogvae.model import build_vae

    images = np.random.default_rng(4).integers(0, 256, (4, 32, 32, 1)).astype(np.float32) / 255
    logistic = build_vae(TINY_AR, mean_weight=3.0)
    gaussian = build_vae(TINY_AR, mean_weight=3.0, mean_term="gaussian")
    gaussian.set_weights(logistic.get_weights())
    for vae in (logistic, gaussian):
        layer = vae.encoder.get_layer("z_log_var")  # z = z_mean
        layer.set_weights(
            [np.zeros_like(w) - 40.0 * (i == 1) for i, w in enumerate(layer.get_weights())]
        )
    rec_l, _, penalty_l = logistic._terms(images, training=False)
    rec_g, _, penalty_g = gaussian._terms(images, training=False)
    np.testing.assert_allclose(float(rec_g), float(rec_l), rtol=1e-6)
    z_mean, _, _ = gaussian.encoder(images)
    errors = np.square(images - np.asarray(gaussian.decoder(z_mean)))
    expected = 3.0 * np.mean(errors.sum(axis=(1, 2, 3)) / (2 * errors.mean()))
    assert float(penalty_g) == pytest.approx(expected, rel=1e-5)
    assert float(penalty_g) != pytest.approx(float(penalty_l), rel=0.01)
    # Its gradient on the mean image: 3 * (mean - x) / (v * images), v held fixed.
    means = tf.Variable(gaussian.decoder(z_mean))
    from dogvae.model import mean_term_loss

    with tf.GradientTape() as tape:
        loss = 3.0 * tf.reduce_mean(mean_term_loss(images, means, None, "gaussian"))
    gradient = np.asarray(tape.gradient(loss, means))
    np.testing.assert_allclose(
        gradient, 3.0 * (np.asarray(means) - images) / (errors.mean() * 4), rtol=1e-4, atol=1e-7
    )
    with pytest.raises(ValueError, match="mean_term must be one of logistic, gaussian"):
        TrainConfig(mean_term="l2")


@pytest.mark.parametrize("likelihood", ["logistic", "logistic-ar"])
def test_the_joint_heads_give_the_decoders_own_mean_scale_and_gradients(likelihood):
    """VAE.mean_and_scale runs the mean's and the log-scale's last convolutions as one
    (a training speed-up): its outputs and gradients must be those of the decoder and
    the scale head called as they are saved."""
    import tensorflow as tf

    from dogvae.model import build_vae

    config = dataclasses.replace(TINY_AR, likelihood=likelihood, batch_norm=True)
    vae = build_vae(config)
    assert vae._trunk is not None  # the joint path is the one training takes
    z = tf.constant(np.random.default_rng(0).normal(size=(4, 2)).astype(np.float32))
    raw = vae.scale_decoder.get_layer("log_scale_raw")
    raw.set_weights([w + 0.05 * np.ones_like(w) for w in raw.get_weights()])  # not the mean's
    results = []
    for call in (
        lambda: vae.mean_and_scale(z, training=True),
        lambda: vae._outputs(z, training=True),
    ):
        with tf.GradientTape() as tape:
            means, log_scales = call()
            loss = tf.reduce_sum(means * 3.0) + tf.reduce_sum(tf.sin(log_scales))
        weights = [*vae.decoder.trainable_weights, raw.kernel, raw.bias]
        results.append([means, log_scales, *tape.gradient(loss, weights)])
    for ours, theirs in zip(*results, strict=True):  # float32 sums in another order
        theirs = np.asarray(theirs)
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5 * np.abs(theirs).max())
    assert float(tf.reduce_max(tf.abs(results[0][1] - results[0][0]))) > 0.01  # two heads
