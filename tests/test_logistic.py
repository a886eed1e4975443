"""The discretised-logistic decoder: its loss is a likelihood of the 8-bit image, its run
folder keeps decoder.keras as the mean and says how to read the scale beside it."""

from __future__ import annotations

import dataclasses
import io
import json
import zipfile

import numpy as np
import pytest

from dogvae.config import PRESETS, DataConfig, ModelConfig, TrainConfig
from tests.conftest import write_dogs

TINY_LOGISTIC = ModelConfig(
    image_size=32, conv_filters=(8, 16), dense_units=16, latent_dim=2, likelihood="logistic"
)


def numpy_nll(pixels: np.ndarray, means: np.ndarray, log_scales: np.ndarray) -> np.ndarray:
    """-log p(x|z) per image, written from config.json's description alone (float64).

    Each bin's mass is a difference of the CDF below the mean and of the survival
    function above it, so that neither side loses its digits to 1 - 1.
    """
    x = pixels.astype(np.float64)
    scale = np.exp(log_scales.astype(np.float64))
    upper = np.where(x >= 255, np.inf, ((x + 0.5) / 255.0 - means) / scale)
    lower = np.where(x <= 0, -np.inf, ((x - 0.5) / 255.0 - means) / scale)
    with np.errstate(over="ignore"):
        below = 1.0 / (1.0 + np.exp(-upper)) - 1.0 / (1.0 + np.exp(-lower))
        above = 1.0 / (1.0 + np.exp(lower)) - 1.0 / (1.0 + np.exp(upper))
    mass = np.where(lower + upper > 0, above, below)
    return -np.log(mass).reshape(len(x), -1).sum(axis=1)


def test_the_loss_matches_the_formula_and_every_pixel_sums_to_one():
    from dogvae.model import logistic_nll

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (4, 6, 6, 1)).astype(np.uint8)
    pixels[0, 0, 0, 0], pixels[0, 0, 1, 0] = 0, 255  # the open end bins
    means = rng.uniform(0.0, 1.0, pixels.shape).astype(np.float32)
    log_scales = rng.uniform(-5.0, -0.5, pixels.shape).astype(np.float32)
    nll = np.asarray(logistic_nll(pixels.astype(np.float32) / 255.0, means, log_scales))
    np.testing.assert_allclose(nll, numpy_nll(pixels, means, log_scales), rtol=1e-5)

    # One pixel, every value it can take: the 256 probabilities sum to 1.
    values = np.arange(256, dtype=np.float32).reshape(256, 1, 1, 1) / 255.0
    for mean, log_scale in ((0.3, -4.0), (0.0, -7.0), (0.999, 0.0)):
        nll = logistic_nll(values, np.full_like(values, mean), np.full_like(values, log_scale))
        assert np.exp(-np.asarray(nll, np.float64)).sum() == pytest.approx(1.0, abs=1e-5)


def test_the_seed_and_the_default_presets_have_no_scale_head():
    from dogvae.model import build_vae

    for name in ("seed", "quality"):
        vae = build_vae(PRESETS[name].model)
        assert vae.scale_decoder is None and len(vae.parts) == 2
    assert PRESETS["quality-logistic"].model.likelihood == "logistic"
    with pytest.raises(ValueError, match="likelihood must be one of"):
        ModelConfig(likelihood="gaussian")


@pytest.fixture(scope="module")
def logistic_run(tmp_path_factory):
    from dogvae.data import load_dataset
    from dogvae.training import train_and_save

    folder = tmp_path_factory.mktemp("logistic")
    write_dogs(folder / "images", 16)
    data_config = DataConfig(image_size=32)
    dataset = load_dataset(folder / "images", data_config, cache=False)
    run_dir, result = train_and_save(
        dataset,
        TINY_LOGISTIC,
        TrainConfig(epochs=3, batch_size=8),
        data_config,
        folder / "run",
    )
    assert result.status == "finished", result.message
    return run_dir, dataset


def test_a_logistic_run_keeps_the_mean_in_decoder_keras_and_describes_the_scale(logistic_run):
    import keras

    import dogvae.model  # noqa: F401 - the custom layers

    run_dir, dataset = logistic_run
    config = json.loads((run_dir / "config.json").read_text())
    described = config["likelihood"]
    assert described["distribution"] == "discretized_logistic"
    assert "decoder_scale.keras" in described["log_scale"]
    assert config["parameters"]["decoder_scale"] > 0
    from dogvae import runs

    with zipfile.ZipFile(io.BytesIO(runs.zip_run(run_dir))) as archive:
        assert "run/decoder_scale.keras" in archive.namelist()  # the download has it
    decoder = keras.models.load_model(run_dir / "decoder.keras", compile=False)
    scale = keras.models.load_model(run_dir / "decoder_scale.keras", compile=False)
    legacy = keras.models.load_model(run_dir / "decoder.h5", compile=False)
    z = np.random.default_rng(1).standard_normal((5, 2)).astype(np.float32)
    means = np.asarray(decoder(z))
    assert means.shape == (5, 32, 32, 1) and means.min() >= 0.0 and means.max() <= 1.0
    np.testing.assert_allclose(np.asarray(legacy(z)), means, atol=1e-6)  # scripts of the seed
    log_scales = np.asarray(scale(z))
    assert log_scales.shape == means.shape and -7.0 <= log_scales.min() <= log_scales.max() <= 0.0

    # The likelihood from the files alone equals dogvae's own.
    from dogvae.loaded_run import load_run
    from dogvae.model import logistic_nll

    run = load_run(run_dir)
    assert run.scale_decoder is not None
    pixels = dataset.images[:5]
    ours = np.asarray(logistic_nll(pixels.astype(np.float32) / 255.0, means, log_scales))
    np.testing.assert_allclose(numpy_nll(pixels, means, log_scales), ours, rtol=1e-5)


def test_a_logistic_run_is_evaluated_under_its_own_likelihood(logistic_run):
    from dogvae.loaded_run import load_run

    run_dir, dataset = logistic_run
    run = load_run(run_dir)
    figures = run.likelihood(dataset.images[:4], samples=4)
    assert 0.0 < figures["iwae_bpd"] <= figures["elbo_bpd"] < 16.0
    evaluated = run.evaluate(dataset.images[:4])
    assert evaluated["floor"] == 0.0  # a discrete likelihood can reach 0 nats
    # The training loss is the same -ELBO, in nats per image.
    dims = 32 * 32 * 1
    assert evaluated["loss"] / (dims * np.log(2)) == pytest.approx(figures["elbo_bpd"], rel=0.1)
    history = json.loads((run_dir / "config.json").read_text())["final"]
    assert np.isfinite(history["loss"])


def test_a_nan_in_the_scale_head_rolls_it_back_too():
    import keras

    from dogvae.training import train_vae
    from tests.training_helpers import Poison, blobs

    poison = Poison(epoch=1, models=("scale_decoder",))
    before = {}

    class Keep(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            before[epoch] = [w.copy() for w in self.model.scale_decoder.get_weights()]

    result = train_vae(
        blobs(24),
        None,
        TINY_LOGISTIC,
        TrainConfig(epochs=3, batch_size=8),
        extra_callbacks=(Keep(), poison),
    )
    assert result.status == "diverged"
    restored = result.scale_decoder.get_weights()
    assert all(np.isfinite(weights).all() for weights in restored)
    for weights, kept in zip(restored, before[0], strict=True):
        np.testing.assert_array_equal(weights, kept)


def test_a_logistic_model_learns_and_its_scale_depends_on_z():
    from dogvae.model import encode
    from dogvae.training import train_vae
    from tests.training_helpers import blobs

    config = dataclasses.replace(TINY_LOGISTIC, latent_dim=4)
    images = blobs(64)
    result = train_vae(images, None, config, TrainConfig(epochs=6, batch_size=16))
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    z_mean, _ = encode(result.encoder, images[:8])
    log_scales = np.asarray(result.scale_decoder(z_mean))
    # Another square elsewhere: the scale follows the image, not one number per pixel.
    assert np.abs(log_scales[0] - log_scales[1]).max() > 0.01


def test_a_resumed_logistic_training_gets_its_scale_head_back(tmp_path):
    """The checkpoint carries the scale head: a resume ends where an uninterrupted run does."""
    from dogvae.training import checkpoint as ckpt
    from dogvae.training import train_vae
    from tests.test_training_checkpoint import Kill
    from tests.training_helpers import blobs

    config = TrainConfig(epochs=2, batch_size=8, seed=3)
    whole = train_vae(
        blobs(24), None, TINY_LOGISTIC, config,
        checkpoints=ckpt.CheckpointPlan(tmp_path / "whole", {}, 1e9),
    )  # fmt: skip
    plan = ckpt.CheckpointPlan(tmp_path / "run", {}, 0.0)
    with pytest.raises(KeyboardInterrupt):
        train_vae(
            blobs(24), None, TINY_LOGISTIC, config,
            checkpoints=plan, extra_callbacks=(Kill(1, 0),),
        )  # fmt: skip
    saved = ckpt.read_checkpoint(tmp_path / "run")
    assert saved.arrays["decoder_scale"], "the checkpoint has no scale head"
    resumed = train_vae(blobs(24), None, TINY_LOGISTIC, config, checkpoints=plan, resume=saved)
    for mine, theirs in zip(
        resumed.scale_decoder.get_weights(), whole.scale_decoder.get_weights(), strict=True
    ):
        np.testing.assert_array_equal(mine, theirs)
