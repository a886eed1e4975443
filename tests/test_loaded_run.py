"""Tests for dogvae.loaded_run: loading only what dogvae wrote, in safe mode, and the loaded
run's encode, decode and evaluate."""

import json

import keras
import numpy as np
import pytest
from conftest import save_test_run

from dogvae.config import ModelConfig
from dogvae.evaluation import evaluate_images
from dogvae.loaded_run import load_run
from dogvae.model import build_decoder, build_encoder, decode, encode


def save(path):
    config = ModelConfig()
    return save_test_run(path, build_encoder(config), build_decoder(config), config)


def test_settings_that_do_not_match_the_models_are_refused(tmp_path):
    run_dir = save(tmp_path / "run")
    config = json.loads((run_dir / "config.json").read_text())
    config["model"]["latent_dim"] = 5
    (run_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="does not match"):
        load_run(run_dir)


def test_lambda_layers_are_refused_in_safe_mode(tmp_path):
    run_dir = save(tmp_path / "run")
    inputs = keras.Input((2,))
    outputs = keras.layers.Lambda(lambda x: x * 2)(inputs)
    keras.Model(inputs, outputs).save(run_dir / "decoder.keras")
    with pytest.raises(ValueError, match="cannot load"):
        load_run(run_dir)


def test_a_loaded_run_encodes_decodes_and_evaluates_with_its_models(tmp_path):
    run = load_run(save(tmp_path / "run"))
    images = np.random.default_rng(0).integers(0, 256, (5, 64, 64, 1), dtype=np.uint8)
    z_mean, z_log_var = run.encode(images)
    expected_mean, expected_log_var = encode(run.encoder, images)
    assert z_mean.shape == z_log_var.shape == (5, 2)
    np.testing.assert_array_equal(z_mean, expected_mean)
    np.testing.assert_array_equal(z_log_var, expected_log_var)
    decoded = run.decode(z_mean)
    assert decoded.shape == (5, 64, 64, 1)
    np.testing.assert_array_equal(decoded, decode(run.decoder, z_mean))
    np.testing.assert_array_equal(run.decode(z_mean[0]), decode(run.decoder, z_mean[:1]))
    figures, expected = run.evaluate(images), evaluate_images(run.encoder, run.decoder, images)
    assert figures.keys() == expected.keys()
    # The loss samples z (a new draw each call); the floor and PSNR do not.
    assert figures["floor"] == expected["floor"] and figures["psnr"] == expected["psnr"]
