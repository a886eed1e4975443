"""The VAE: Sampling layer, encoder and decoder builders, the loss, and the VAE model.

Importing this module registers the custom layers, so that saved ``encoder.h5``
and ``decoder.h5`` load with ``keras.models.load_model(path, compile=False)``.
"""

from __future__ import annotations

import os
import threading
import weakref

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ banner is noise on a CLI

import keras
import numpy as np
import tensorflow as tf
from keras import layers, ops

from dogvae.config import ModelConfig


@keras.saving.register_keras_serializable(package="dogvae")
class Sampling(layers.Layer):
    """Draws z = z_mean + exp(z_log_var / 2) * epsilon (the reparameterisation trick).

    The layer owns its SeedGenerator: set_random_seed replaces Keras' global one,
    which a compiled train step of another model on the same server may hold. Its
    state is not a weight, so parameter counts and saved files stay the original's.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.seed_generator = keras.random.SeedGenerator()

    def call(self, inputs):
        z_mean, z_log_var = inputs
        epsilon = keras.random.normal(ops.shape(z_mean), seed=self.seed_generator)
        return z_mean + ops.exp(0.5 * z_log_var) * epsilon


@keras.saving.register_keras_serializable(package="dogvae")
class LogVarClamp(layers.Layer):
    """Clamps z_log_var to [-limit, limit] so exp() can neither overflow nor vanish."""

    def __init__(self, limit: float, **kwargs):
        super().__init__(**kwargs)
        self.limit = float(limit)

    def call(self, inputs):
        return ops.clip(inputs, -self.limit, self.limit)

    def get_config(self):
        return {**super().get_config(), "limit": self.limit}


def build_encoder(config: ModelConfig) -> keras.Model:
    """Image (H, W, C) in [0, 1] -> [z_mean, z_log_var, z]."""
    inputs = keras.Input((config.image_size, config.image_size, config.channels), name="image")
    x = inputs
    for index, filters in enumerate(config.conv_filters, start=1):
        x = _conv_block(layers.Conv2D, filters, config, f"conv_{index}")(x)
    x = layers.Flatten(name="flatten")(x)
    if config.dense_units:
        x = layers.Dense(config.dense_units, activation=config.activation, name="dense")(x)
    z_mean = layers.Dense(config.latent_dim, name="z_mean")(x)
    z_log_var = layers.Dense(config.latent_dim, name="z_log_var")(x)
    if config.logvar_clamp is not None:
        z_log_var = LogVarClamp(config.logvar_clamp, name="z_log_var_clamp")(z_log_var)
    z = Sampling(name="z")([z_mean, z_log_var])
    return keras.Model(inputs, [z_mean, z_log_var, z], name="encoder")


def build_decoder(config: ModelConfig) -> keras.Model:
    """Latent vector (latent_dim,) -> image (H, W, C) in [0, 1]."""
    side = config.image_size // 2 ** len(config.conv_filters)
    widths = config.decoder_widths
    inputs = keras.Input((config.latent_dim,), name="z")
    x = layers.Dense(side * side * widths[0], activation=config.activation, name="dense")(inputs)
    x = layers.Reshape((side, side, widths[0]), name="reshape")(x)
    for index, filters in enumerate(widths, start=1):
        x = _conv_block(layers.Conv2DTranspose, filters, config, f"deconv_{index}")(x)
    outputs = layers.Conv2D(config.channels, 3, padding="same", activation="sigmoid", name="image")(
        x
    )
    return keras.Model(inputs, outputs, name="decoder")


def _conv_block(layer_class, filters: int, config: ModelConfig, name: str):
    """A stride-2 (transposed) convolution and the activation, optionally batch-normalised."""
    activation = config.activation
    if not config.batch_norm:
        return layer_class(filters, 3, strides=2, padding="same", activation=activation, name=name)

    def block(x):
        x = layer_class(filters, 3, strides=2, padding="same", use_bias=False, name=name)(x)
        # Momentum 0.9, not Keras' 0.99: the moving statistics used at inference
        # then settle within tens of steps, so short trainings (a few epochs of a
        # small dataset) are not judged with half-initialised statistics.
        x = layers.BatchNormalization(momentum=0.9, name=f"{name}_bn")(x)
        return layers.Activation(activation, name=f"{name}_{activation}")(x)

    return block


def vae_loss_terms(images, reconstruction, z_mean, z_log_var):
    """Per-image loss terms: the one definition used by training, evaluation and tests.

    Args:
        images: Targets in [0, 1], shape (batch, H, W, C).
        reconstruction: Decoder output in [0, 1], same shape.
        z_mean: Encoder means, shape (batch, latent_dim).
        z_log_var: Encoder log-variances, same shape.

    Returns:
        (reconstruction, kl), each of shape (batch,): binary cross-entropy summed
        over all pixels and channels, and KL(q(z|x) || N(0, I)).
    """
    epsilon = keras.config.epsilon()
    clipped = ops.clip(reconstruction, epsilon, 1.0 - epsilon)
    cross_entropy = -(images * ops.log(clipped) + (1.0 - images) * ops.log(1.0 - clipped))
    reconstruction_loss = ops.sum(cross_entropy, axis=(1, 2, 3))
    kl = -0.5 * ops.sum(1.0 + z_log_var - ops.square(z_mean) - ops.exp(z_log_var), axis=1)
    return reconstruction_loss, kl


def to_float_images(images):
    """uint8 0..255 -> float32 0..1; float input is taken as already scaled.

    Datasets stay uint8 in memory; this runs per batch.
    """
    if images.dtype == "uint8":
        return ops.cast(images, "float32") / 255.0
    return ops.cast(images, "float32")


class VAE(keras.Model):
    """Encoder + decoder trained on the ELBO.

    ``loss`` is always reconstruction + kl (the negative ELBO, comparable across
    runs); what is minimised is reconstruction + kl_weight * kl, so KL warm-up
    changes the optimisation but not the reported figure.
    """

    def __init__(self, encoder: keras.Model, decoder: keras.Model, kl_weight: float = 1.0, **kw):
        super().__init__(**kw)
        self.encoder = encoder
        self.decoder = decoder
        self.kl_weight = keras.Variable(
            float(kl_weight), trainable=False, dtype="float32", name="kl_weight"
        )
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.reconstruction_tracker = keras.metrics.Mean(name="reconstruction")
        self.kl_tracker = keras.metrics.Mean(name="kl")

    @property
    def metrics(self):
        return [self.loss_tracker, self.reconstruction_tracker, self.kl_tracker]

    def call(self, images, training=False):
        _, _, z = self.encoder(to_float_images(images), training=training)
        return self.decoder(z, training=training)

    def _terms(self, images, training: bool):
        images = to_float_images(images)
        z_mean, z_log_var, z = self.encoder(images, training=training)
        reconstruction = self.decoder(z, training=training)
        reconstruction_loss, kl = vae_loss_terms(images, reconstruction, z_mean, z_log_var)
        return ops.mean(reconstruction_loss), ops.mean(kl)

    def _update(self, reconstruction_loss, kl):
        self.loss_tracker.update_state(reconstruction_loss + kl)
        self.reconstruction_tracker.update_state(reconstruction_loss)
        self.kl_tracker.update_state(kl)
        return {metric.name: metric.result() for metric in self.metrics}

    def train_step(self, data):
        # Under tf.distribute each replica sees its share of the batch and the
        # optimizer sums the replicas' gradients: dividing by the replica count
        # makes that sum the gradient of the global batch mean.
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        with tf.GradientTape() as tape:
            reconstruction_loss, kl = self._terms(data, training=True)
            objective = (reconstruction_loss + self.kl_weight * kl) / replicas
        gradients = tape.gradient(objective, self.trainable_weights)
        self.optimizer.apply(gradients, self.trainable_weights)
        return self._update(reconstruction_loss, kl)

    def test_step(self, data):
        reconstruction_loss, kl = self._terms(data, training=False)
        return self._update(reconstruction_loss, kl)


def build_vae(config: ModelConfig, kl_weight: float = 1.0) -> VAE:
    """A fresh, untrained VAE for ``config``."""
    return VAE(build_encoder(config), build_decoder(config), kl_weight=kl_weight)


# decode() draws up to this many images one by one (what the app shows), more in batches.
SINGLE_ROWS = 64
_INFERENCE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_INFERENCE_LOCK = threading.Lock()


def inference_function(model: keras.Model, single: bool = False):
    """``model(x, training=False)`` as a compiled function, traced once per model.

    With ``single``, the function takes exactly one row and is compiled with XLA
    into one fused kernel: what a slider move runs, and it stays fast on a busy
    machine (README, Performance). Otherwise the batch dimension is left open, so
    that any batch size uses the same trace (XLA would compile again for every
    size). Both read the model's variables, so they follow a model still training.
    """
    with _INFERENCE_LOCK:
        functions = _INFERENCE.setdefault(model, {})
        function = functions.get(single)
        if function is None:
            rows = 1 if single else None
            signature = tf.TensorSpec((rows, *model.inputs[0].shape[1:]), tf.float32)

            @tf.function(input_signature=[signature], jit_compile=single)
            def function(x):
                return model(x, training=False)

            functions[single] = function
        return function


def encode(encoder: keras.Model, images: np.ndarray, batch_size: int = 256):
    """z_mean and z_log_var of ``images`` (uint8 or float in [0, 1]) as float32 arrays."""
    call = inference_function(encoder, single=len(images) == 1)
    means, log_vars = [], []
    for start in range(0, len(images), batch_size):
        z_mean, z_log_var, _ = call(to_float_images(images[start : start + batch_size]))
        means.append(ops.convert_to_numpy(z_mean))
        log_vars.append(ops.convert_to_numpy(z_log_var))
    latent_dim = encoder.outputs[0].shape[-1]
    if not means:
        empty = np.zeros((0, latent_dim), np.float32)
        return empty, empty.copy()
    return np.concatenate(means), np.concatenate(log_vars)


def decode(decoder: keras.Model, z: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Images in [0, 1], float32 (n, H, W, C), for latent vectors ``z`` (n, latent_dim).

    Through ``inference_function``, not ``predict``, which is many times slower
    for one image.
    """
    z = np.asarray(z, dtype=np.float32)
    if z.ndim == 1:
        z = z[None, :]
    if len(z) <= SINGLE_ROWS:
        # One row at a time through the one-image XLA function: a point then gives
        # the same pixels alone (a slider) as in a grid (a traversal). XLA's results
        # depend on the batch size in the last bit, which flips uint8 rounding.
        call = inference_function(decoder, single=True)
        parts = [ops.convert_to_numpy(call(z[row : row + 1])) for row in range(len(z))]
    else:
        call = inference_function(decoder)
        parts = [
            ops.convert_to_numpy(call(z[start : start + batch_size]))
            for start in range(0, len(z), batch_size)
        ]
    return np.concatenate(parts) if parts else np.zeros((0, *decoder.output_shape[1:]), np.float32)


def evaluate_images(
    encoder: keras.Model, decoder: keras.Model, images: np.ndarray, batch_size: int = 256
) -> dict[str, float]:
    """Mean per-image figures of a model on ``images``: the one evaluation used everywhere.

    Returns:
        ``loss``, ``reconstruction`` and ``kl`` (one sampled z per image, as in
        training); ``floor``, the cross-entropy of the images with themselves
        (no model can go below it, since BCE against grey levels is never 0);
        ``excess`` = loss - floor; and ``psnr``, the mean per-image PSNR in dB of
        the reconstruction decoded from z_mean.
    """
    losses = per_image_losses(encoder, decoder, images, batch_size)
    floors, psnrs = [], []
    for start in range(0, len(images), batch_size):
        batch = ops.convert_to_numpy(to_float_images(images[start : start + batch_size]))
        zeros = np.zeros((len(batch), 1), np.float32)
        floors.append(ops.convert_to_numpy(vae_loss_terms(batch, batch, zeros, zeros)[0]))
        z_mean, _, _ = encoder(batch, training=False)
        reconstruction = ops.convert_to_numpy(decoder(z_mean, training=False))
        mse = np.mean(np.square(reconstruction - batch), axis=(1, 2, 3))
        psnrs.append(10 * np.log10(1.0 / np.maximum(mse, 1e-10)))
    floor = np.concatenate(floors)
    return {
        "loss": float(losses["loss"].mean()),
        "reconstruction": float(losses["reconstruction"].mean()),
        "kl": float(losses["kl"].mean()),
        "floor": float(floor.mean()),
        "excess": float((losses["loss"] - floor).mean()),
        "psnr": float(np.concatenate(psnrs).mean()),
    }


def per_image_losses(
    encoder: keras.Model, decoder: keras.Model, images: np.ndarray, batch_size: int = 256
) -> dict[str, np.ndarray]:
    """Per-image reconstruction, kl and loss of ``images`` (one sampled z each, as in training)."""
    reconstruction_parts, kl_parts = [], []
    for start in range(0, len(images), batch_size):
        batch = to_float_images(images[start : start + batch_size])
        z_mean, z_log_var, z = encoder(batch, training=False)
        reconstruction = decoder(z, training=False)
        reconstruction_loss, kl = vae_loss_terms(batch, reconstruction, z_mean, z_log_var)
        reconstruction_parts.append(ops.convert_to_numpy(reconstruction_loss))
        kl_parts.append(ops.convert_to_numpy(kl))
    reconstruction_loss = (
        np.concatenate(reconstruction_parts) if reconstruction_parts else np.zeros(0)
    )
    kl = np.concatenate(kl_parts) if kl_parts else np.zeros(0)
    return {"loss": reconstruction_loss + kl, "reconstruction": reconstruction_loss, "kl": kl}
