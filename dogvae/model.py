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
from dogvae.neighbours import NeighbourWeights, autoregressive_means, neighbour_kernel


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


@keras.saving.register_keras_serializable(package="dogvae")
class Clip(layers.Layer):
    """Clips its input to [low, high]: the logistic's log-scale stays where it is finite."""

    def __init__(self, low: float, high: float, **kwargs):
        super().__init__(**kwargs)
        self.low, self.high = float(low), float(high)

    def call(self, inputs):
        return ops.clip(inputs, self.low, self.high)

    def get_config(self):
        return {**super().get_config(), "low": self.low, "high": self.high}


@keras.saving.register_keras_serializable(package="dogvae")
class FusedBatchNormalization(layers.BatchNormalization):
    """Keras' BatchNormalization, its training step run by TensorFlow's fused kernel.

    Keras 3 normalises a training batch with separate ops for the moments and the
    normalisation; TensorFlow's FusedBatchNormV3 does both in one pass over the
    activations, which made the quality presets' whole training step about 1.25x
    faster on this CPU (README, Performance). The arithmetic is the same: the moving
    variance is kept as Keras keeps it (the batch's biased variance; the fused kernel
    returns it with Bessel's correction, which is undone), and inference, export and
    saved weights are Keras' own. Anything the fused kernel does not cover (another
    axis, masks, renormalisation, no scale or offset) takes Keras' path.
    """

    def call(self, inputs, training=None, mask=None):
        if not (training and self.trainable and self._fusable(inputs, mask)):
            return super().call(inputs, training=training, mask=mask)
        x = tf.cast(inputs, "float32")
        y, mean, variance, *_ = tf.raw_ops.FusedBatchNormV3(
            x=x,
            scale=tf.cast(self.gamma, "float32"),
            offset=tf.cast(self.beta, "float32"),
            mean=tf.zeros((0,), "float32"),
            variance=tf.zeros((0,), "float32"),
            epsilon=self.epsilon,
            data_format="NHWC",
            is_training=True,
        )
        count = tf.cast(tf.size(x) // tf.shape(x)[-1], "float32")
        variance = variance * (count - 1.0) / tf.maximum(count, 1.0)
        momentum = self.momentum
        self.moving_mean.assign(self.moving_mean * momentum + mean * (1.0 - momentum))
        self.moving_variance.assign(self.moving_variance * momentum + variance * (1.0 - momentum))
        return tf.cast(y, self.compute_dtype)

    def _fusable(self, inputs, mask) -> bool:
        return (
            mask is None
            and not self.renorm
            and not getattr(self, "synchronized", False)
            and self.center
            and self.scale
            and len(inputs.shape) == 4
            and self.axis in (-1, 3)
        )


def with_keras_batch_norm(model: keras.Model) -> keras.Model:
    """``model`` with Keras' own BatchNormalization wherever it has a
    ``FusedBatchNormalization``: the same weights and the same inference, for the files
    a run saves, so that they hold only the layers they held before (``decoder.h5``
    loads with plain Keras, as scripts written for the seed load it). ``model`` itself
    when it has none."""
    if not any(isinstance(layer, FusedBatchNormalization) for layer in model.layers):
        return model

    def clone(layer):
        kind = (
            layers.BatchNormalization if isinstance(layer, FusedBatchNormalization) else type(layer)
        )
        return kind.from_config(layer.get_config())

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy


# The logistic's log-scale, in units of the [0, 1] pixel range: from a 1/1097 scale
# (sharper than one 8-bit step) to the whole range.
LOG_SCALE_LIMITS = (-7.0, 0.0)
# A new head starts at a scale of about 0.05, near what the default's errors need.
LOG_SCALE_START = -3.0
# Half of one 8-bit step, in [0, 1] units: pixel k covers k/255 -/+ this.
HALF_STEP = 0.5 / 255.0


def scale_head_weights(scale_decoder) -> dict[str, list[np.ndarray]]:
    """The weights of a scale head's own layers (the head after the trunk it shares with
    the decoder), by layer name, for a training that starts from it."""
    return {
        layer.name: layer.get_weights()
        for layer in _own_layers(scale_decoder)
        if layer.get_weights()
    }


def set_scale_head_weights(scale_decoder, weights: dict[str, list[np.ndarray]]) -> list[str]:
    """Put ``scale_head_weights`` of another run into ``scale_decoder``'s own layers where
    one of the same name and shapes exists (a new layer, such as a fresh
    ``NeighbourWeights``, keeps its initial weights); returns the names set."""
    done = []
    for layer in _own_layers(scale_decoder):
        saved = weights.get(layer.name)
        if saved is not None and [w.shape for w in layer.get_weights()] == [
            np.shape(w) for w in saved
        ]:
            layer.set_weights(saved)
            done.append(layer.name)
    return done


def _own_layers(scale_decoder) -> list:
    """The layers of a scale head after the decoder's last feature map: the trunk's
    layers come first, up to the decoder's image layer, which the head lacks."""
    if scale_decoder is None:
        return []
    names = [layer.name for layer in scale_decoder.layers]
    first = names.index("log_scale_raw") if "log_scale_raw" in names else len(names)
    return scale_decoder.layers[first:]


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
    """Latent vector (latent_dim,) -> image (H, W, C) in [0, 1]: the mean of the pixels."""
    return build_decoders(config)[0]


def build_decoders(config: ModelConfig) -> tuple[keras.Model, keras.Model | None]:
    """The decoder and, for a logistic likelihood, its scale head (else None).

    Both read the same layers up to the last feature map: the decoder maps z to the
    mean image in [0, 1] (what decoder.keras has always held), the scale head maps z
    to the per-pixel log-scale of a discretised logistic around that mean.
    """
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
    decoder = keras.Model(inputs, outputs, name="decoder")
    if config.likelihood == "bernoulli":
        return decoder, None
    raw = layers.Conv2D(
        config.channels,
        3,
        padding="same",
        bias_initializer=keras.initializers.Constant(LOG_SCALE_START),
        name="log_scale_raw",
    )(x)
    log_scale = Clip(*LOG_SCALE_LIMITS, name="log_scale")(raw)
    if config.likelihood == "logistic-ar":
        log_scale = NeighbourWeights(config.channels, name="neighbour_weights")(log_scale)
    return decoder, keras.Model(inputs, log_scale, name="decoder_scale")


def _joinable_heads(decoder, scale_decoder) -> bool:
    """Whether the mean's and the log-scale's last convolutions can run as one: both
    plain 3x3 convolutions of the same feature map, the mean's through a sigmoid."""
    names = {layer.name for layer in scale_decoder.layers}
    if "log_scale_raw" not in names or "image" not in {layer.name for layer in decoder.layers}:
        return False
    image, raw = decoder.get_layer("image"), scale_decoder.get_layer("log_scale_raw")
    same = all(
        getattr(image, key) == getattr(raw, key)
        for key in ("kernel_size", "strides", "padding", "dilation_rate", "groups", "use_bias")
    )
    return (
        type(image) is type(raw) is layers.Conv2D
        and same
        and image.strides == (1, 1)
        and image.dilation_rate == (1, 1)
        and image.groups == 1
        and image.use_bias
        and image.activation is keras.activations.sigmoid
        and raw.activation is keras.activations.linear
        and image.input is raw.input
    )


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
        x = FusedBatchNormalization(momentum=0.9, name=f"{name}_bn")(x)
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
    return reconstruction_loss, kl_to_prior(z_mean, z_log_var)


def logistic_nll(images, means, log_scales):
    """Per-image -log p(x | z), in nats, of 8-bit images under discretised logistics.

    Pixel ``k`` (``images`` holds k / 255) is the logistic's mass on
    ``k / 255 -/+ HALF_STEP``, the end bins reaching to -inf and +inf, as in
    PixelCNN++ (Salimans et al. 2017), so the 256 probabilities sum to 1. The mass
    of an inner bin is written as log sigmoid(u) + log sigmoid(-l) + log(1 - e^(l - u)),
    finite and stable for every scale LOG_SCALE_LIMITS allows.
    """
    inverse = ops.exp(-log_scales)
    centred = images - means
    upper = inverse * (centred + HALF_STEP)
    lower = inverse * (centred - HALF_STEP)
    log_cdf_upper = -ops.softplus(-upper)
    log_survival_lower = -ops.softplus(lower)
    log_width = ops.log(-ops.expm1(-inverse * (2.0 * HALF_STEP)))
    inner = log_cdf_upper + log_survival_lower + log_width
    log_prob = ops.where(
        images < HALF_STEP,
        log_cdf_upper,
        ops.where(images > 1.0 - HALF_STEP, log_survival_lower, inner),
    )
    return -ops.sum(log_prob, axis=(1, 2, 3))


def mean_term_loss(images, means, log_scales, term: str = "logistic"):
    """Per-image loss of the mean image alone (``TrainConfig.mean_term``), beside an
    autoregressive likelihood; only the mean learns from it.

    "logistic": the plain discretised logistic of ``means`` at ``log_scales`` (held
    fixed). "gaussian": the squared errors over twice their mean over the batch (held
    fixed): the Gaussian -log p(x|z) up to a constant with the one variance that fits
    the batch best (the sigma-VAE's optimal sigma, Rybkin et al. 2021).
    """
    if term == "gaussian":
        squared = ops.square(images - means)
        variance = ops.stop_gradient(ops.mean(squared))
        return ops.sum(squared, axis=(1, 2, 3)) / (2.0 * variance)
    return logistic_nll(images, means, ops.stop_gradient(log_scales))


def kl_to_prior(z_mean, z_log_var):
    """Per-image KL(q(z|x) || N(0, I)), in nats."""
    return -0.5 * ops.sum(1.0 + z_log_var - ops.square(z_mean) - ops.exp(z_log_var), axis=1)


def loss_terms(images, means, z_mean, z_log_var, log_scales=None, kernel=None):
    """Per-image (reconstruction, kl) under the decoder's likelihood: binary cross-entropy
    around ``means``, or, given ``log_scales``, the discretised logistic's -log p(x|z),
    its means moved by the neighbours' errors when a ``NeighbourWeights`` kernel is given."""
    if log_scales is None:
        return vae_loss_terms(images, means, z_mean, z_log_var)
    means = autoregressive_means(images, means, kernel)
    return logistic_nll(images, means, log_scales), kl_to_prior(z_mean, z_log_var)


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

    def __init__(
        self,
        encoder: keras.Model,
        decoder: keras.Model,
        kl_weight: float = 1.0,
        scale_decoder: keras.Model | None = None,
        mean_weight: float = 0.0,
        mean_term: str = "logistic",
        **kw,
    ):
        super().__init__(**kw)
        self.encoder = encoder
        self.decoder = decoder
        self.scale_decoder = scale_decoder
        # The mean and the scale from one pass through their shared layers.
        self._outputs = self._trunk = None
        if scale_decoder is not None:
            self._outputs = keras.Model(
                decoder.inputs, [decoder.outputs[0], scale_decoder.outputs[0]], name="outputs"
            )
            if _joinable_heads(decoder, scale_decoder):
                self._trunk = keras.Model(
                    decoder.inputs, decoder.get_layer("image").input, name="trunk"
                )
        self.kl_weight = keras.Variable(
            float(kl_weight), trainable=False, dtype="float32", name="kl_weight"
        )
        # TrainConfig.mean_weight and mean_term: the mean image's own term, beside an AR likelihood.
        self.mean_weight = float(mean_weight)
        self.mean_term = mean_term
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.reconstruction_tracker = keras.metrics.Mean(name="reconstruction")
        self.kl_tracker = keras.metrics.Mean(name="kl")

    @property
    def metrics(self):
        return [self.loss_tracker, self.reconstruction_tracker, self.kl_tracker]

    def call(self, images, training=False):
        _, _, z = self.encoder(to_float_images(images), training=training)
        return self.decoder(z, training=training)

    @property
    def parts(self) -> tuple[keras.Model, ...]:
        """The models a run saves: encoder, decoder and, for a logistic, the scale head."""
        models = (self.encoder, self.decoder, self.scale_decoder)
        return tuple(model for model in models if model is not None)

    def mean_and_scale(self, z, training: bool = False):
        """The decoder's mean image and the scale head's log-scales for ``z``.

        One pass through the layers the two share; their last 3x3 convolutions (the
        mean's and the log-scale's, one channel each) run as one two-channel
        convolution: TensorFlow takes as long on this CPU for a one-channel convolution
        at 64x64 as for a two-channel one (README, Performance). Same weights, same
        arithmetic as calling the decoder and the scale head.
        """
        if self._trunk is None:
            return self._outputs(z, training=training)
        image = self.decoder.get_layer("image")
        raw = self.scale_decoder.get_layer("log_scale_raw")
        features = self._trunk(z, training=training)
        kernel = ops.concatenate([image.kernel, raw.kernel], axis=-1)
        both = ops.conv(features, kernel, padding="same") + ops.concatenate([image.bias, raw.bias])
        channels = image.filters
        means = ops.sigmoid(both[..., :channels])
        log_scales = both[..., channels:]
        for layer in _own_layers(self.scale_decoder)[1:]:  # the clip, the neighbours' weights
            log_scales = layer(log_scales, training=training)
        return means, log_scales

    def _terms(self, images, training: bool):
        images = to_float_images(images)
        z_mean, z_log_var, z = self.encoder(images, training=training)
        if self.scale_decoder is None:
            means, log_scales = self.decoder(z, training=training), None
        else:
            means, log_scales = self.mean_and_scale(z, training=training)
        kernel = neighbour_kernel(self.scale_decoder)
        reconstruction_loss, kl = loss_terms(images, means, z_mean, z_log_var, log_scales, kernel)
        penalty = 0.0
        if kernel is not None and self.mean_weight:
            penalty = self.mean_weight * ops.mean(
                mean_term_loss(images, means, log_scales, self.mean_term)
            )
        return ops.mean(reconstruction_loss), ops.mean(kl), penalty

    def _update(self, reconstruction_loss, kl):
        self.loss_tracker.update_state(reconstruction_loss + kl)
        self.reconstruction_tracker.update_state(reconstruction_loss)
        self.kl_tracker.update_state(kl)
        return {metric.name: step_log(metric.result()) for metric in self.metrics}

    def train_step(self, data):
        # Under tf.distribute each replica sees its share of the batch and the
        # optimizer sums the replicas' gradients: dividing by the replica count
        # makes that sum the gradient of the global batch mean.
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        with tf.GradientTape() as tape:
            reconstruction_loss, kl, penalty = self._terms(data, training=True)
            objective = (reconstruction_loss + self.kl_weight * kl + penalty) / replicas
        gradients = tape.gradient(objective, self.trainable_weights)
        self.optimizer.apply(gradients, self.trainable_weights)
        return self._update(reconstruction_loss, kl)

    def test_step(self, data):
        reconstruction_loss, kl, _ = self._terms(data, training=False)
        return self._update(reconstruction_loss, kl)


def step_log(value):
    """A metric's value as a train or test step returns it to Keras.

    Under a multi-worker strategy Keras (3.15) averages each step's logs over the
    workers with ``reduce("MEAN", value, axis=0)``, which fails on a scalar
    (tensorflow/tensorflow#72388): there the value gets an axis of one, which that
    reduction takes away again. Elsewhere it stays a scalar.
    """
    if is_multi_worker(tf.distribute.get_strategy()):
        return ops.reshape(value, (1,))
    return value


def is_multi_worker(strategy) -> bool:
    """Whether ``strategy`` spans more than one worker (Keras' own test for the reduction)."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return False
    cluster = strategy.cluster_resolver.cluster_spec().as_dict()
    return sum(len(cluster.get(job, ())) for job in ("chief", "worker")) > 1


def build_vae(
    config: ModelConfig,
    kl_weight: float = 1.0,
    mean_weight: float = 0.0,
    mean_term: str = "logistic",
) -> VAE:
    """A fresh, untrained VAE for ``config`` (``mean_weight``, ``mean_term``: ``TrainConfig``'s)."""
    decoder, scale_decoder = build_decoders(config)
    return VAE(
        build_encoder(config),
        decoder,
        kl_weight=kl_weight,
        scale_decoder=scale_decoder,
        mean_weight=mean_weight,
        mean_term=mean_term,
    )


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
