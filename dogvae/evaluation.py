"""How well a model fits images: the per-image losses and the figures every report uses.

The training loss is the same sum (``dogvae.model.loss_terms``); bits per dimension
under the decoder's own pixel distribution are ``dogvae.likelihood``.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from dogvae.model import loss_terms, neighbour_kernel, to_float_images, vae_loss_terms


def evaluate_images(
    encoder: keras.Model,
    decoder: keras.Model,
    images: np.ndarray,
    batch_size: int = 256,
    scale_decoder: keras.Model | None = None,
) -> dict[str, float]:
    """Mean per-image figures of a model on ``images``: the one evaluation used everywhere.

    Returns:
        ``loss``, ``reconstruction`` and ``kl`` (one sampled z per image, as in
        training); ``floor``, the lowest reconstruction the likelihood allows (the
        cross-entropy of the images with themselves for binary cross-entropy, which
        is never 0 for grey levels; 0 for a discrete likelihood); ``excess`` = loss -
        floor; and ``psnr``, the mean per-image PSNR in dB of the reconstruction
        decoded from z_mean.
    """
    losses = per_image_losses(encoder, decoder, images, batch_size, scale_decoder)
    floors, psnrs = [], []
    for start in range(0, len(images), batch_size):
        batch = ops.convert_to_numpy(to_float_images(images[start : start + batch_size]))
        zeros = np.zeros((len(batch), 1), np.float32)
        if scale_decoder is None:
            floors.append(ops.convert_to_numpy(vae_loss_terms(batch, batch, zeros, zeros)[0]))
        else:
            floors.append(np.zeros(len(batch)))
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
    encoder: keras.Model,
    decoder: keras.Model,
    images: np.ndarray,
    batch_size: int = 256,
    scale_decoder: keras.Model | None = None,
) -> dict[str, np.ndarray]:
    """Per-image reconstruction, kl and loss of ``images`` (one sampled z each, as in training)."""
    reconstruction_parts, kl_parts = [], []
    kernel = neighbour_kernel(scale_decoder)
    for start in range(0, len(images), batch_size):
        batch = to_float_images(images[start : start + batch_size])
        z_mean, z_log_var, z = encoder(batch, training=False)
        reconstruction = decoder(z, training=False)
        log_scales = None if scale_decoder is None else scale_decoder(z, training=False)
        reconstruction_loss, kl = loss_terms(
            batch, reconstruction, z_mean, z_log_var, log_scales, kernel
        )
        reconstruction_parts.append(ops.convert_to_numpy(reconstruction_loss))
        kl_parts.append(ops.convert_to_numpy(kl))
    reconstruction_loss = (
        np.concatenate(reconstruction_parts) if reconstruction_parts else np.zeros(0)
    )
    kl = np.concatenate(kl_parts) if kl_parts else np.zeros(0)
    return {"loss": reconstruction_loss + kl, "reconstruction": reconstruction_loss, "kl": kl}
