"""Argument checks shared by the latent maths, the samplers and the image output (NumPy only).

They raise ValueError rather than TypeError, since the UI and the CLI turn a ValueError
into a message for the user.
"""

from __future__ import annotations

import numbers

import numpy as np


def check_int(name: str, value: object, minimum: int, maximum: int | None = None) -> int:
    """``value`` as an int, or ValueError unless it is an integer in [minimum, maximum]."""
    # bool is an int subclass, but steps=True is a mistake, not 1.
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if value < minimum or (maximum is not None and value > maximum):
        expected = f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}"
        raise ValueError(f"{name} must be {expected}, got {value}")
    return value


def finite_float64(name: str, array: np.ndarray) -> np.ndarray:
    """``array`` as float64, or ValueError unless it holds real, finite numbers."""
    if not (np.issubdtype(array.dtype, np.number) and not np.iscomplexobj(array)):
        raise ValueError(f"{name} must be real numbers, got dtype {array.dtype}")
    array = array.astype(np.float64)
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or infinity")
    return array
