"""A run's models, loaded safely: what the pages and the CLI encode, decode and evaluate with.

Loading needs TensorFlow, so it is imported when a run is loaded, not with this module.
Which folders are runs and what they hold is ``dogvae.runs``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dogvae.likelihood import (
    DEFAULT_SAMPLES,
    likelihood_bounds,
    neighbour_terms,
    pixel_log_prob_for,
)
from dogvae.pixel_samples import DEFAULT_PIXEL_TEMPERATURE, sample_pixels
from dogvae.runs import RunInfo, read_run_info


@dataclass
class LoadedRun:
    """A run with its encoder and decoder loaded."""

    info: RunInfo
    encoder: Any
    decoder: Any
    scale_decoder: Any = None  # a logistic likelihood's scale head (decoder_scale.keras)

    def encode(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """z_mean and z_log_var, float32 (n, latent_dim), of images (n, H, W, C) that are
        uint8 or float in [0, 1]."""
        from dogvae.model import encode

        return encode(self.encoder, images)

    def decode(self, z: np.ndarray) -> np.ndarray:
        """Images in [0, 1], float32 (n, H, W, C), for latent points (n, latent_dim) or one (d,)."""
        from dogvae.model import decode

        return decode(self.decoder, z)

    @property
    def draws_pixels(self) -> bool:
        """Whether its likelihood is one images can be drawn from (a discretised logistic)."""
        return self.scale_decoder is not None

    def sample_images(
        self, z: np.ndarray, temperature: float = DEFAULT_PIXEL_TEMPERATURE, seed: int | None = None
    ) -> np.ndarray:
        """uint8 images (n, H, W, C) drawn from p(x|z) at ``temperature`` (see
        ``dogvae.pixel_samples``), for latent points (n, latent_dim) or one (d,).

        Raises:
            ValueError: When the run's likelihood is not one to draw from (``draws_pixels``).
        """
        from dogvae.model import decode

        if not self.draws_pixels:
            raise ValueError(
                f"{self.info.name} models the pixels with binary cross-entropy, which has no "
                "8-bit images to draw; only its mean images can be shown"
            )
        z = np.asarray(z, np.float32).reshape(-1, self.info.model_config.latent_dim)
        neighbours, weights = neighbour_terms(self.info.config) or ((), None)
        return sample_pixels(
            self.decode(z),
            decode(self.scale_decoder, z),
            neighbours,
            weights,
            temperature=temperature,
            seed=seed,
        )

    def start_weights(self) -> tuple:
        """Its weights for a training that starts from it (``train_vae``'s ``initial_weights``):
        encoder, decoder and the scale head's own layers."""
        from dogvae.model import scale_head_weights

        return (
            self.encoder.get_weights(),
            self.decoder.get_weights(),
            scale_head_weights(self.scale_decoder),
        )

    def evaluate(self, images: np.ndarray) -> dict[str, float]:
        """Mean per-image loss, reconstruction, kl, floor, excess and PSNR on ``images``, as
        ``dogvae.evaluation.evaluate_images`` computes them."""
        from dogvae.evaluation import evaluate_images

        return evaluate_images(self.encoder, self.decoder, images, scale_decoder=self.scale_decoder)

    def likelihood(
        self, images: np.ndarray, samples: int = DEFAULT_SAMPLES, seed: int = 0
    ) -> dict[str, float]:
        """Negative ELBO and IWAE bound of uint8 ``images`` in bits per dimension, under the
        decoder's own distribution of the pixels; as ``dogvae.likelihood.likelihood_bounds``."""
        from dogvae.model import decode

        log_prob = pixel_log_prob_for(self.info.config)

        def outputs(z: np.ndarray):
            means = decode(self.decoder, z, batch_size=len(z))
            if self.scale_decoder is None:
                return means
            return means, decode(self.scale_decoder, z, batch_size=len(z))

        return likelihood_bounds(
            self.encode,
            outputs,
            images,
            samples=samples,
            seed=seed,
            log_prob=log_prob,
        )


def load_run(run_dir: str | Path) -> LoadedRun:
    """Load a run's encoder and decoder from its .keras files, in Keras' safe mode.

    Only files that dogvae wrote are accepted: config.json must be a dogvae
    run, safe mode refuses Lambda layers and pickled code, and the models'
    shapes must match the settings.
    """
    info = read_run_info(run_dir)
    import keras

    import dogvae.model  # noqa: F401 - registers the custom layers

    names = ["encoder", "decoder"]
    if info.model_config.likelihood != "bernoulli":
        names.append("decoder_scale")
    models = []
    for name in names:
        path = info.path / f"{name}.keras"
        try:
            models.append(keras.models.load_model(path, compile=False, safe_mode=True))
        except Exception as error:
            raise ValueError(
                f"cannot load {path}: {error}. The run is damaged or not dogvae's."
            ) from None
    encoder, decoder, *scale = models
    config = info.model_config
    image_shape = (config.image_size, config.image_size, config.channels)
    if tuple(encoder.input_shape[1:]) != image_shape or len(encoder.outputs) != 3:
        raise ValueError(f"{info.path}: encoder.keras does not match config.json")
    if (
        tuple(decoder.input_shape[1:]) != (config.latent_dim,)
        or tuple(decoder.output_shape[1:]) != image_shape
    ):
        raise ValueError(f"{info.path}: decoder.keras does not match config.json")
    scale_decoder = scale[0] if scale else None
    if scale_decoder is not None and (
        tuple(scale_decoder.input_shape[1:]) != (config.latent_dim,)
        or tuple(scale_decoder.output_shape[1:]) != image_shape
    ):
        raise ValueError(f"{info.path}: decoder_scale.keras does not match config.json")
    return LoadedRun(info, encoder, decoder, scale_decoder)
