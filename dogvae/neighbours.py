"""The Keras side of the "logistic-ar" likelihood: the layer that holds how each pixel's
mean follows its causal neighbours' errors, and the moved means (``dogvae.likelihood``
has the same in NumPy, from config.json alone)."""

from __future__ import annotations

from typing import Any

import keras
from keras import layers, ops

from dogvae.likelihood import NEIGHBOUR_RADIUS, NEIGHBOURS


@keras.saving.register_keras_serializable(package="dogvae")
class NeighbourWeights(layers.Layer):
    """Holds how each pixel's mean follows its neighbours' errors; passes its input on.

    The "logistic-ar" likelihood moves the mean of pixel (i, j) of channel c by
    ``sum_k kernel[k, c] * (x - mean)[i + dy_k, j + dx_k, c]`` over ``NEIGHBOURS``
    (errors outside the image are 0). The weights do not depend on z: the layer sits
    at the end of the scale head only so that they are saved, checkpointed and
    restored with it. They start at 0, the plain logistic.
    """

    def __init__(self, channels: int, **kwargs):
        super().__init__(**kwargs)
        self.channels = int(channels)

    def build(self, input_shape):
        self.kernel = self.add_weight(
            shape=(len(NEIGHBOURS), self.channels), initializer="zeros", name="kernel"
        )

    def call(self, inputs):
        return inputs

    def get_config(self):
        return {**super().get_config(), "channels": self.channels}


def neighbour_kernel(scale_decoder) -> Any:
    """The ``NeighbourWeights`` kernel of a scale head, or None (no autoregressive term)."""
    if scale_decoder is None:
        return None
    for layer in scale_decoder.layers:
        if isinstance(layer, NeighbourWeights):
            return layer.kernel
    return None


def autoregressive_means(images, means, kernel):
    """The means moved by the weighted errors of each pixel's ``NEIGHBOURS`` (see
    ``NeighbourWeights``); ``means`` itself for ``kernel`` None."""
    if kernel is None:
        return means
    errors = images - means
    radius = NEIGHBOUR_RADIUS
    padded = ops.pad(errors, [[0, 0], [radius, radius], [radius, radius], [0, 0]])
    height, width = ops.shape(errors)[1], ops.shape(errors)[2]
    moved = means
    for index, (row, column) in enumerate(NEIGHBOURS):
        shifted = padded[
            :, radius + row : radius + row + height, radius + column : radius + column + width, :
        ]
        moved = moved + kernel[index] * shifted
    return moved
