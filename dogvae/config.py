"""Settings as frozen dataclasses, named presets, and their JSON round trip.

A run's ``config.json`` holds ``ModelConfig``, ``TrainConfig`` and ``DataConfig``
as plain dicts; ``ModelConfig`` alone is enough to rebuild the encoder and
decoder. Every config checks itself when it is made (``dataclasses.replace``
included), so an absurd setting is refused with a message before any work starts.
The names a setting can take (``LR_SCHEDULES``, ``STRATEGIES``, ...) live here too,
for the CLI and the pages to offer.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

# Bounds for user-given settings: wide enough for real use, narrow enough that
# a typo (epochs 1,000,000, latent 10,000) is refused instead of hanging a box.
MAX_EPOCHS = 10_000
MAX_BATCH_SIZE = 4_096
MAX_LATENT_DIM = 512
MAX_SHIFT = 8  # pixels; below half the smallest image size, which mirrored padding needs
IMAGE_SIZES = (32, 64, 96, 128, 192, 256)
CHANNELS = (1, 3)  # grayscale, RGB
LR_SCHEDULES = ("constant", "cosine")
ACTIVATIONS = ("relu", "silu")
# How the decoder models a pixel: "bernoulli" (a sigmoid mean trained with binary
# cross-entropy, the original) or "logistic" (a discretised logistic with a per-pixel
# scale that depends on z, as in PixelCNN++: a likelihood of the 8-bit image) or
# "logistic-ar" (that logistic, its mean moved by a learned sum of the errors of the
# pixels above and to the left: an autoregressive decoder, as in PixelVAE).
LIKELIHOODS = ("bernoulli", "logistic", "logistic-ar")
# The mean image's own term beside a "logistic-ar" likelihood (TrainConfig.mean_term):
# the plain discretised logistic at the head's scales, or a Gaussian of one shared
# variance, the batch's mean squared error (the sigma-VAE's optimal sigma, Rybkin et al.
# 2021), which weighs every pixel's squared error alike, as PSNR does.
MEAN_TERMS = ("logistic", "gaussian")
# tf.distribute strategies by name (dogvae.training.make_strategy); here, so that the
# CLI's --help can list them without importing TensorFlow.
STRATEGIES = ("default", "mirrored", "multiworker")
SPLITS = ("train", "validation")  # the two parts a dataset is split into


def _check_image(image_size: int, channels: int) -> None:
    if image_size not in IMAGE_SIZES:
        raise ValueError(
            f"image_size must be one of {', '.join(map(str, IMAGE_SIZES))}, got {image_size!r}"
        )
    if channels not in CHANNELS:
        raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels!r}")


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


@dataclass(frozen=True)
class DataConfig:
    """How images are decoded and split.

    Attributes:
        image_size: Side of the square images the model sees.
        channels: 1 for grayscale, 3 for RGB.
        limit: Use only the first ``limit`` rows of the dataset (None: all).
        validation_fraction: Share held out when the data has no ``data set`` column.
        seed: Seed of that random hold-out.
    """

    image_size: int = 64
    channels: int = 1
    limit: int | None = None
    validation_fraction: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> DataConfig:
        """Raise ValueError naming an absurd setting; return the config."""
        _check_image(self.image_size, self.channels)
        if self.limit is not None and (not _is_int(self.limit) or self.limit < 1):
            raise ValueError(f"limit must be a positive number of images, got {self.limit!r}")
        if not (_is_number(self.validation_fraction) and 0.0 <= self.validation_fraction < 1.0):
            raise ValueError(
                f"validation_fraction must be in [0, 1), got {self.validation_fraction!r}"
            )
        return self


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild the encoder and decoder.

    The encoder is ``len(conv_filters)`` stride-2 convolutions, a dense layer of
    ``dense_units`` and two dense heads (z_mean, z_log_var); the decoder is a
    dense layer, as many stride-2 transposed convolutions (the encoder's
    filters reversed unless ``decoder_filters`` says otherwise) and a sigmoid
    output. The defaults are the original "seed" design.

    Attributes:
        image_size: Side of the square input/output images.
        channels: 1 for grayscale, 3 for RGB.
        latent_dim: Size of the latent space.
        conv_filters: Filters of the encoder's stride-2 convolutions, in order.
        dense_units: Width of the encoder's hidden dense layer (0: none, the heads
            read the flattened convolutions directly).
        batch_norm: Batch normalisation after every convolution.
        logvar_clamp: Clamp z_log_var to [-clamp, clamp] (None: no clamp).
        decoder_filters: Filters of the decoder's transposed convolutions, in order;
            the first feature map (reshaped from the decoder's dense layer) has as
            many channels as the first. None: the encoder's, reversed (a mirror).
        activation: Of every hidden layer: "relu" (the original), or "silu"
            (x * sigmoid(x): smooth, and it lets small negative values through,
            which trained deeper models to a lower loss here).
        likelihood: The decoder's distribution of a pixel (``LIKELIHOODS``):
            "bernoulli" (the original) or "logistic", which adds a second head, the
            log-scale, saved as ``decoder_scale.keras``, or "logistic-ar", which also
            learns how each pixel follows the errors of its causal neighbours (see
            ``dogvae.likelihood.NEIGHBOURS``).
    """

    image_size: int = 64
    channels: int = 1
    latent_dim: int = 2
    conv_filters: tuple[int, ...] = (32, 64)
    dense_units: int = 16
    batch_norm: bool = False
    logvar_clamp: float | None = None
    decoder_filters: tuple[int, ...] | None = None
    activation: str = "relu"
    likelihood: str = "bernoulli"

    @property
    def decoder_widths(self) -> tuple[int, ...]:
        """The decoder's transposed-convolution filters (``decoder_filters`` or the mirror)."""
        if self.decoder_filters is not None:
            return tuple(self.decoder_filters)
        return tuple(reversed(self.conv_filters))

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> ModelConfig:
        """Raise ValueError naming an absurd setting; return the config."""
        _check_image(self.image_size, self.channels)
        if not _is_int(self.latent_dim) or not 1 <= self.latent_dim <= MAX_LATENT_DIM:
            raise ValueError(
                f"latent_dim must be an integer from 1 to {MAX_LATENT_DIM}, got {self.latent_dim!r}"
            )
        if not self.conv_filters or not all(
            _is_int(f) and 1 <= f <= 1024 for f in self.conv_filters
        ):
            raise ValueError(
                f"conv_filters must list 1 to 1024 filters per layer, got {self.conv_filters!r}"
            )
        if self.decoder_filters is not None and (
            len(self.decoder_filters) != len(self.conv_filters)
            or not all(_is_int(f) and 1 <= f <= 1024 for f in self.decoder_filters)
        ):
            raise ValueError(
                f"decoder_filters must list 1 to 1024 filters for each of the "
                f"{len(self.conv_filters)} encoder convolutions (the decoder undoes each "
                f"halving), got {self.decoder_filters!r}"
            )
        if self.image_size % (2 ** len(self.conv_filters)):
            raise ValueError(
                f"image_size {self.image_size} is not divisible by 2**{len(self.conv_filters)} "
                "(one halving per convolution)"
            )
        if not _is_int(self.dense_units) or not 0 <= self.dense_units <= 8192:
            raise ValueError(
                f"dense_units must be from 0 (no hidden layer) to 8192, got {self.dense_units!r}"
            )
        if self.logvar_clamp is not None and not (
            _is_number(self.logvar_clamp) and 0 < self.logvar_clamp <= 100
        ):
            raise ValueError(f"logvar_clamp must be in (0, 100] or None, got {self.logvar_clamp!r}")
        _check_choice("activation", self.activation, ACTIVATIONS)
        _check_choice("likelihood", self.likelihood, LIKELIHOODS)
        return self


@dataclass(frozen=True)
class TrainConfig:
    """How to train.

    Attributes:
        epochs: Passes over the training images.
        batch_size: Images per gradient step.
        learning_rate: Adam's learning rate.
        seed: Seed for weights, shuffling and sampling.
        kl_weight: Final weight of the KL term (1.0 is the plain VAE).
        kl_warmup_epochs: Epochs over which the KL weight rises linearly from 0.
        report_every: Report progress every this many batches.
        budget_minutes: Stop (and save) once training has run this long (None: no limit).
        flip: Mirror each training image left to right with probability 1/2, afresh
            every epoch: twice the variety for a model that would otherwise start to
            learn its training photos by heart (validation images are never flipped).
        shift: Move each training image by up to this many pixels up or down and left
            or right (each image its own random offset, afresh every epoch; the edge
            mirrored into the gap), so a model cannot learn where exactly a photo put
            each dog. 0 (the default) leaves images where they are.
        lr_schedule: "constant", or "cosine": the learning rate falls along a half
            cosine to 1% of ``learning_rate`` by the end of the run, which is the
            last epoch or the time budget, whichever comes first.
        mean_weight: For a "logistic-ar" model, the weight of a second term in the
            objective: the plain discretised logistic of the decoder's mean, at the
            head's scales (held fixed for it). The autoregressive likelihood alone lets
            the mean drift in its smooth part, which the neighbours' errors explain,
            and decoder.keras's mean is the image every page shows. The reported loss
            stays the -ELBO without it. 0 (the default): no such term.
        mean_term: What that second term is (``MEAN_TERMS``): "logistic" (the discretised
            logistic of the mean at the head's scales, which weighs a pixel's error by
            how sure the head is of it) or "gaussian" (the squared errors over twice the
            batch's mean squared error, held fixed: a Gaussian whose one variance fits
            the batch, as in the sigma-VAE), which pulls the mean towards the image of
            least squared error, what PSNR measures.
    """

    epochs: int = 30
    batch_size: int = 32
    learning_rate: float = 1e-3
    seed: int = 0
    kl_weight: float = 1.0
    kl_warmup_epochs: int = 0
    report_every: int = 5
    budget_minutes: float | None = None
    lr_schedule: str = "constant"
    flip: bool = False
    shift: int = 0
    mean_weight: float = 0.0
    mean_term: str = "logistic"

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> TrainConfig:
        """Raise ValueError naming an absurd setting; return the config."""
        if not _is_int(self.epochs) or not 1 <= self.epochs <= MAX_EPOCHS:
            raise ValueError(f"epochs must be from 1 to {MAX_EPOCHS}, got {self.epochs!r}")
        if not _is_int(self.batch_size) or not 1 <= self.batch_size <= MAX_BATCH_SIZE:
            raise ValueError(
                f"batch size must be from 1 to {MAX_BATCH_SIZE}, got {self.batch_size!r}"
            )
        if not (_is_number(self.learning_rate) and 0 < self.learning_rate <= 1):
            raise ValueError(f"learning rate must be in (0, 1], got {self.learning_rate!r}")
        if not _is_int(self.seed) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        if not (_is_number(self.kl_weight) and 0 <= self.kl_weight <= 100):
            raise ValueError(f"kl_weight must be in [0, 100], got {self.kl_weight!r}")
        if not (_is_number(self.mean_weight) and 0 <= self.mean_weight <= 100):
            raise ValueError(f"mean_weight must be in [0, 100], got {self.mean_weight!r}")
        if not _is_int(self.kl_warmup_epochs) or self.kl_warmup_epochs < 0:
            raise ValueError(
                f"kl_warmup_epochs must be a non-negative integer, got {self.kl_warmup_epochs!r}"
            )
        if self.budget_minutes is not None and not (
            _is_number(self.budget_minutes) and 0 < self.budget_minutes <= 7 * 24 * 60
        ):
            raise ValueError(
                f"budget_minutes must be in (0, 10080] or None, got {self.budget_minutes!r}"
            )
        if not _is_int(self.report_every) or self.report_every < 1:
            raise ValueError(f"report_every must be a positive integer, got {self.report_every!r}")
        if not isinstance(self.flip, bool):
            raise ValueError(f"flip must be true or false, got {self.flip!r}")
        if not _is_int(self.shift) or not 0 <= self.shift <= MAX_SHIFT:
            raise ValueError(f"shift must be from 0 to {MAX_SHIFT} pixels, got {self.shift!r}")
        _check_choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        _check_choice("mean_term", self.mean_term, MEAN_TERMS)
        return self


@dataclass(frozen=True)
class Preset:
    """A named starting point: a model and how to train it."""

    name: str
    description: str
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


_QUALITY_MODEL = ModelConfig(
    latent_dim=64,
    conv_filters=(32, 64, 128, 128),
    dense_units=0,
    batch_norm=True,
    logvar_clamp=10.0,
    activation="silu",
)
# Parameters moved from the encoder, already close to the best its decoder allows
# (MODEL_CARD.md), to a wider decoder.
_QUALITY_WIDE_MODEL = dataclasses.replace(
    _QUALITY_MODEL, conv_filters=(32, 64, 128, 64), decoder_filters=(160, 160, 96, 48)
)
# Flips: without them a long training starts to learn its photos by heart (MODEL_CARD.md).
_QUALITY_TRAIN = TrainConfig(
    epochs=40,
    batch_size=64,
    learning_rate=1e-3,
    kl_warmup_epochs=5,
    lr_schedule="cosine",
    flip=True,
)

PRESETS: dict[str, Preset] = {
    "seed": Preset(
        name="seed",
        description=(
            "The original design: Conv2D 32/64, Dense 16, latent 2, 64x64 grayscale. "
            "Encoder 281,044 and decoder 104,833 parameters."
        ),
    ),
    "seed-wide": Preset(
        name="seed-wide",
        description="The seed with its 16-unit dense layer widened to 256 and a latent of 32.",
        model=ModelConfig(latent_dim=32, dense_units=256),
    ),
    "quality": Preset(
        name="quality",
        description=(
            "Four batch-normalised SiLU convolutions (32-64-128-128) straight into a 64-dim "
            "latent, a mirrored decoder, log-variance clamp, 5 epochs of KL warm-up, a cosine "
            "learning rate, mirrored training images; 64x64 grayscale."
        ),
        model=_QUALITY_MODEL,
        train=_QUALITY_TRAIN,
    ),
    "quality-wide": Preset(
        name="quality-wide",
        description=(
            "The quality preset with a lighter encoder (32-64-128-64) and a wider decoder "
            "(160-160-96-48); 1.1M parameters, 64x64 grayscale."
        ),
        model=_QUALITY_WIDE_MODEL,
        train=_QUALITY_TRAIN,
    ),
    "quality-logistic": Preset(
        name="quality-logistic",
        description=(
            "The quality preset with a discretised-logistic decoder: a mean and a per-pixel "
            "scale that depends on z, trained on the likelihood of the 8-bit image."
        ),
        model=dataclasses.replace(_QUALITY_MODEL, likelihood="logistic"),
        train=_QUALITY_TRAIN,
    ),
    "quality-ar": Preset(
        name="quality-ar",
        description=(
            "quality-logistic whose pixels also follow the errors of the 12 pixels above and "
            "to the left (an autoregressive likelihood); the decoder's mean image is kept "
            "sharp by a second term on it: a Gaussian of the batch's mean squared error, "
            "weight 3 (mean_term, mean_weight)."
        ),
        model=dataclasses.replace(_QUALITY_MODEL, likelihood="logistic-ar"),
        # The mean's own term keeps decoder.keras sharp (TrainConfig.mean_weight); the
        # Gaussian one did better than the logistic one on both PSNR and bits/dim
        # (MODEL_CARD.md).
        train=dataclasses.replace(_QUALITY_TRAIN, mean_weight=3.0, mean_term="gaussian"),
    ),
    "quality-rgb": Preset(
        name="quality-rgb",
        description="The quality preset in colour: 64x64 RGB.",
        model=dataclasses.replace(_QUALITY_MODEL, channels=3),
        train=_QUALITY_TRAIN,
    ),
}


def get_preset(name: str) -> Preset:
    """Return the preset called ``name``, or raise ValueError listing the known ones."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}") from None


def from_preset(
    name: str, model: ModelConfig | None = None, **overrides: Any
) -> tuple[ModelConfig, TrainConfig]:
    """The model and training configs of a preset, with some settings changed.

    Args:
        name: A preset's name (a key of ``PRESETS``).
        model: Start from this model instead of the preset's (e.g. a run to
            continue from); the training settings are still the preset's, and so is a
            preset's discretised-logistic likelihood.
        **overrides: ``ModelConfig`` or ``TrainConfig`` fields and their values,
            e.g. ``latent_dim=8, epochs=5``; each goes to the config that has it.

    Returns:
        ``(model_config, train_config)``, both checked.

    Raises:
        ValueError: For an unknown preset or setting, or an absurd value.
    """
    preset = get_preset(name)
    model_fields = {field.name for field in dataclasses.fields(ModelConfig)}
    train_fields = {field.name for field in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(overrides) - model_fields - train_fields)
    if unknown:
        raise ValueError(f"unknown settings: {', '.join(unknown)}")
    if model is not None and preset.model.likelihood != "bernoulli":
        # e.g. quality-logistic from a Bernoulli run: its shape, the preset's likelihood
        # (the scale head starts fresh)
        model = dataclasses.replace(model, likelihood=preset.model.likelihood)
    model_config = dataclasses.replace(
        model or preset.model, **{k: v for k, v in overrides.items() if k in model_fields}
    )
    train_config = dataclasses.replace(
        preset.train, **{k: v for k, v in overrides.items() if k in train_fields}
    )
    return model_config, train_config


def to_dict(config: Any) -> dict[str, Any]:
    """A config dataclass as a JSON-ready dict (tuples become lists)."""
    return {
        key: list(value) if isinstance(value, tuple) else value
        for key, value in dataclasses.asdict(config).items()
    }


def from_dict(cls: type, values: dict[str, Any]):
    """Rebuild a config dataclass from ``to_dict`` output, refusing unknown keys."""
    if not isinstance(values, dict):
        raise ValueError(f"{cls.__name__} must be a JSON object, got {type(values).__name__}")
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(f"unknown {cls.__name__} settings: {', '.join(unknown)}")
    kwargs = {
        key: tuple(value) if isinstance(value, list) else value for key, value in values.items()
    }
    return cls(**kwargs)
