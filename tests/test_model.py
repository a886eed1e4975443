import keras
import numpy as np
import pytest

from dogvae.config import ModelConfig
from dogvae.evaluation import per_image_losses
from dogvae.model import (
    Sampling,
    build_decoder,
    build_encoder,
    build_vae,
    decode,
    encode,
    inference_function,
    vae_loss_terms,
)


def test_seed_parameter_counts_are_exactly_the_originals():
    assert build_encoder(ModelConfig()).count_params() == 281_044
    assert build_decoder(ModelConfig()).count_params() == 104_833


def test_seed_layers_match_the_original_design():
    encoder = build_encoder(ModelConfig())
    kinds = [
        (type(layer).__name__, getattr(layer, "filters", getattr(layer, "units", None)))
        for layer in encoder.layers
    ]
    assert kinds == [
        ("InputLayer", None),
        ("Conv2D", 32),
        ("Conv2D", 64),
        ("Flatten", None),
        ("Dense", 16),
        ("Dense", 2),
        ("Dense", 2),
        ("Sampling", None),
    ]
    decoder = build_decoder(ModelConfig())
    assert decoder.get_layer("reshape").output.shape[1:] == (16, 16, 64)
    assert [layer.filters for layer in decoder.layers if hasattr(layer, "filters")] == [64, 32, 1]
    assert decoder.layers[-1].activation.__name__ == "sigmoid"


def test_decoder_filters_and_activation_shape_the_decoder():
    config = ModelConfig(
        latent_dim=8,
        conv_filters=(16, 8),
        decoder_filters=(24, 12),
        batch_norm=True,
        activation="silu",
    )
    decoder = build_decoder(config)
    assert decoder.get_layer("reshape").output.shape[1:] == (16, 16, 24)
    assert [layer.filters for layer in decoder.layers if hasattr(layer, "filters")] == [24, 12, 1]
    activations = {
        layer.get_config()["activation"]
        for model in (build_encoder(config), decoder)
        for layer in model.layers[:-1]
        if "activation" in layer.get_config() and layer.name != "z_mean"
    }
    assert activations <= {"silu", "linear"} and "silu" in activations
    assert decoder.get_layer("dense").get_config()["activation"] == "silu"
    # The mirror, when decoder_filters is not given: the seed's decoder, unchanged.
    assert ModelConfig().decoder_widths == (64, 32)


@pytest.mark.parametrize(
    "config",
    [
        ModelConfig(latent_dim=8, channels=3),
        ModelConfig(
            image_size=32,
            conv_filters=(16, 32, 64),
            dense_units=64,
            batch_norm=True,
            logvar_clamp=10.0,
        ),
        ModelConfig(conv_filters=(16, 32), decoder_filters=(48, 8), activation="silu"),
    ],
)
def test_shapes_follow_the_config(config):
    encoder, decoder = build_encoder(config), build_decoder(config)
    images = (
        np.random.default_rng(0)
        .random((3, config.image_size, config.image_size, config.channels))
        .astype("float32")
    )
    z_mean, z_log_var, z = encoder(images)
    assert z_mean.shape == z_log_var.shape == z.shape == (3, config.latent_dim)
    out = decoder(z)
    assert out.shape == images.shape
    assert float(keras.ops.min(out)) >= 0.0 and float(keras.ops.max(out)) <= 1.0


def test_loss_terms_match_a_hand_computation():
    rng = np.random.default_rng(1)
    images = rng.random((2, 4, 4, 1)).astype("float32")
    reconstruction = rng.uniform(0.05, 0.95, (2, 4, 4, 1)).astype("float32")
    z_mean = rng.normal(size=(2, 3)).astype("float32")
    z_log_var = rng.normal(size=(2, 3)).astype("float32")
    rec, kl = vae_loss_terms(images, reconstruction, z_mean, z_log_var)
    expected_rec = -(images * np.log(reconstruction) + (1 - images) * np.log(1 - reconstruction))
    expected_kl = -0.5 * (1 + z_log_var - z_mean**2 - np.exp(z_log_var))
    np.testing.assert_allclose(rec, expected_rec.sum(axis=(1, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(kl, expected_kl.sum(axis=1), rtol=1e-5)


def test_loss_matches_keras_binary_crossentropy_for_grayscale():
    rng = np.random.default_rng(2)
    images = rng.random((2, 8, 8, 1)).astype("float32")
    reconstruction = rng.random((2, 8, 8, 1)).astype("float32")
    zeros = np.zeros((2, 2), "float32")
    rec, kl = vae_loss_terms(images, reconstruction, zeros, zeros)
    original = keras.ops.sum(keras.losses.binary_crossentropy(images, reconstruction), axis=(1, 2))
    np.testing.assert_allclose(rec, original, rtol=1e-5)
    np.testing.assert_allclose(kl, 0.0, atol=1e-6)


def test_kl_is_zero_for_the_prior_and_positive_elsewhere():
    images = np.full((1, 2, 2, 1), 0.5, "float32")
    _, kl_prior = vae_loss_terms(
        images, images, np.zeros((1, 4), "float32"), np.zeros((1, 4), "float32")
    )
    _, kl_off = vae_loss_terms(
        images, images, np.ones((1, 4), "float32"), np.zeros((1, 4), "float32")
    )
    assert float(kl_prior[0]) == pytest.approx(0.0, abs=1e-6)
    assert float(kl_off[0]) == pytest.approx(2.0, rel=1e-5)  # 0.5 * sum(mu^2)


def test_train_step_reduces_the_loss_and_reports_named_metrics():
    keras.utils.set_random_seed(0)
    vae = build_vae(ModelConfig(image_size=32, conv_filters=(8, 16), dense_units=16))
    vae.compile(optimizer=keras.optimizers.Adam(1e-2))
    x = np.zeros((32, 32, 32, 1), np.uint8)
    x[:, 8:24, 8:24] = 255
    first = vae.evaluate(x, batch_size=16, verbose=0, return_dict=True)
    history = vae.fit(x, epochs=8, batch_size=16, verbose=0)
    assert set(history.history) == {"loss", "reconstruction", "kl"}
    last = vae.evaluate(x, batch_size=16, verbose=0, return_dict=True)
    assert last["loss"] < first["loss"] * 0.7
    assert last["loss"] == pytest.approx(last["reconstruction"] + last["kl"], rel=1e-4)


def test_uint8_and_float_inputs_give_the_same_loss():
    vae = build_vae(ModelConfig(image_size=32, conv_filters=(8, 16)))
    vae.compile(optimizer="adam")
    x = np.random.default_rng(3).integers(0, 256, (4, 32, 32, 1)).astype(np.uint8)
    generator = vae.encoder.get_layer("z").seed_generator
    start = generator.state.numpy()
    a = per_image_losses(vae.encoder, vae.decoder, x)
    generator.state.assign(start)  # the same noise for the second pass
    b = per_image_losses(vae.encoder, vae.decoder, x.astype("float32") / 255)
    np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-5)


def test_encode_and_decode_helpers():
    config = ModelConfig(image_size=32, conv_filters=(8, 16), latent_dim=3)
    encoder, decoder = build_encoder(config), build_decoder(config)
    x = np.random.default_rng(4).integers(0, 256, (5, 32, 32, 1)).astype(np.uint8)
    z_mean, z_log_var = encode(encoder, x, batch_size=2)
    assert z_mean.shape == z_log_var.shape == (5, 3)
    images = decode(decoder, z_mean, batch_size=2)
    assert images.shape == (5, 32, 32, 1) and images.dtype == np.float32
    assert decode(decoder, z_mean[0]).shape == (1, 32, 32, 1)


def test_compiled_inference_matches_the_model_and_follows_its_weights():
    config = ModelConfig(image_size=32, conv_filters=(8, 16), latent_dim=3, batch_norm=True)
    encoder, decoder = build_encoder(config), build_decoder(config)
    z = np.random.default_rng(5).standard_normal((4, 3)).astype(np.float32)
    eager = keras.ops.convert_to_numpy(decoder(z, training=False))
    np.testing.assert_allclose(decode(decoder, z), eager, atol=1e-5)
    # One row goes through the XLA-compiled function: the same image.
    np.testing.assert_allclose(decode(decoder, z[1]), eager[1:2], atol=1e-5)
    x = np.random.default_rng(6).integers(0, 256, (1, 32, 32, 1)).astype(np.uint8)
    z_mean = keras.ops.convert_to_numpy(encoder(x.astype(np.float32) / 255.0)[0])
    np.testing.assert_allclose(encode(encoder, x)[0], z_mean, atol=1e-5)

    # A point gives the same pixels alone as in a small grid (one XLA function for both)...
    grid = decode(decoder, z)
    for row in range(len(z)):
        assert np.array_equal(decode(decoder, z[row]), grid[row : row + 1])
    # ...and large batches go through the graph function, with the same images.
    many = np.repeat(z, 20, axis=0)
    np.testing.assert_allclose(decode(decoder, many)[::20], eager, atol=1e-5)

    # Traced once per model and kind, whatever the batch size...
    for rows in (1, 2, 5, 65, 1, 70):
        decode(decoder, np.zeros((rows, 3)))
    assert inference_function(decoder).experimental_get_tracing_count() == 1
    assert inference_function(decoder, single=True).experimental_get_tracing_count() == 1
    # ...and reading the live weights: a model that trains on is followed.
    weights = decoder.get_weights()
    weights[-1] = weights[-1] + 2.0  # the output bias: every pixel brighter
    decoder.set_weights(weights)
    assert (decode(decoder, z[1]) > eager[1:2]).all()
    assert (decode(decoder, many)[::20] > eager).all()


def test_sampling_layer_is_registered_for_h5_loading():
    assert keras.saving.get_registered_object("dogvae>Sampling") is Sampling


def test_evaluation_reports_floor_excess_and_psnr():
    from dogvae.evaluation import evaluate_images

    config = ModelConfig(image_size=32, conv_filters=(8, 16))
    encoder, decoder = build_encoder(config), build_decoder(config)
    images = np.random.default_rng(5).integers(0, 256, (6, 32, 32, 1)).astype(np.uint8)
    figures = evaluate_images(encoder, decoder, images, batch_size=4)
    x = images.astype("float64") / 255
    x = np.clip(x, 1e-7, 1 - 1e-7)
    expected_floor = (-(x * np.log(x) + (1 - x) * np.log(1 - x))).sum(axis=(1, 2, 3)).mean()
    assert figures["floor"] == pytest.approx(expected_floor, rel=1e-4)
    assert figures["excess"] == pytest.approx(figures["loss"] - figures["floor"], rel=1e-5)
    assert figures["excess"] > 0  # no model beats the floor
    # An untrained decoder outputs ~0.5 everywhere: PSNR of uniform noise against 0.5 is ~10.8 dB.
    assert 9 < figures["psnr"] < 13


def test_no_hidden_dense_layer_when_dense_units_is_zero():
    encoder = build_encoder(ModelConfig(dense_units=0, latent_dim=4))
    assert "dense" not in [layer.name for layer in encoder.layers]
    assert encoder.get_layer("z_mean").input.shape[-1] == 16 * 16 * 64


def test_batch_norm_statistics_settle_within_a_short_training():
    """Inference uses BatchNorm's moving statistics: after 40 steps they must already
    describe the data, or a short training is judged (and shown) far worse than it is."""
    keras.utils.set_random_seed(0)
    config = ModelConfig(image_size=32, conv_filters=(8, 16), dense_units=0, batch_norm=True)
    vae = build_vae(config)
    vae.compile(optimizer=keras.optimizers.Adam(1e-5))  # weights barely move: stable target
    x = np.random.default_rng(0).integers(100, 200, (64, 32, 32, 1)).astype(np.uint8)
    vae.fit(x, epochs=5, batch_size=8, verbose=0)  # 40 steps
    before_norm = keras.Model(vae.encoder.input, vae.encoder.get_layer("conv_1").output)
    activations = np.asarray(before_norm(x.astype("float32") / 255))
    true_mean = activations.mean(axis=(0, 1, 2))
    moving_mean = np.asarray(vae.encoder.get_layer("conv_1_bn").moving_mean)
    error = np.abs(moving_mean - true_mean).max() / np.abs(true_mean).max()
    assert error < 0.1, f"moving mean still {error:.0%} off the data's mean"


def test_fused_batch_norm_trains_as_keras_batch_norm_does():
    """FusedBatchNormalization (TensorFlow's fused kernel in training) must normalise a
    training batch and move its statistics exactly as Keras' own layer, so that the
    quality presets learn the same thing faster; inference is Keras' path."""
    from dogvae.model import FusedBatchNormalization

    x = np.random.default_rng(0).normal(1.5, 2.0, (16, 8, 8, 5)).astype(np.float32)
    fused = FusedBatchNormalization(momentum=0.9)
    plain = keras.layers.BatchNormalization(momentum=0.9)
    fused.build(x.shape), plain.build(x.shape)
    weights = [np.linspace(0.5, 1.5, 5), np.linspace(-1, 1, 5), np.ones(5), np.full(5, 2.0)]
    fused.set_weights(weights), plain.set_weights(weights)
    for _ in range(3):
        np.testing.assert_allclose(fused(x, training=True), plain(x, training=True), atol=1e-5)
    # The moving statistics after three steps: the biased batch variance, as Keras keeps it.
    for ours, theirs in zip(fused.get_weights(), plain.get_weights(), strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5)
    np.testing.assert_allclose(fused(x, training=False), plain(x, training=False), atol=1e-5)
    # Its gradients are the same too.
    import tensorflow as tf

    grads, weigh = [], np.random.default_rng(2).normal(size=x.shape).astype(np.float32)
    for layer in (fused, plain):
        tensor = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(tensor)
            loss = tf.reduce_sum(layer(tensor, training=True) * weigh)
        gradients = tape.gradient(loss, [tensor, *layer.trainable_weights])
        grads.append([np.asarray(g) for g in gradients])
    for ours, theirs in zip(*grads, strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)


def test_batch_normalised_presets_use_the_fused_layer_and_round_trip(tmp_path):
    from dogvae.model import FusedBatchNormalization

    config = ModelConfig(image_size=32, conv_filters=(8, 16), dense_units=0, batch_norm=True)
    encoder = build_encoder(config)
    norms = [layer for layer in encoder.layers if "_bn" in layer.name]
    assert norms and all(isinstance(layer, FusedBatchNormalization) for layer in norms)
    encoder.save(tmp_path / "encoder.keras")
    loaded = keras.models.load_model(tmp_path / "encoder.keras", compile=False, safe_mode=True)
    assert isinstance(loaded.get_layer("conv_1_bn"), FusedBatchNormalization)
    x = np.random.default_rng(1).random((4, 32, 32, 1)).astype(np.float32)
    np.testing.assert_allclose(loaded(x)[0], encoder(x)[0], atol=1e-6)
