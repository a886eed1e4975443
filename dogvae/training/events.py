"""The progress events a training sends: what the CLI prints and the Train page draws.

Two kinds, plain dicts so that any thread can pass them on:

* ``{"type": "batch", "epoch", "batch", "steps", "loss", "reconstruction", "kl",
  "elapsed"}`` every ``report_every`` batches (and on an epoch's last one);
* ``{"type": "epoch", "epochs", ...the epoch's history row..., "samples"}`` after
  each good epoch, ``samples`` being a uint8 grid of decoded images (16, H, W, C).

A history row holds the epoch's losses (``loss``, ``reconstruction``, ``kl`` and
their ``val_`` twins), ``batches``, ``seconds``, ``kl_weight``, ``learning_rate``,
``kl_per_dim`` and ``active_units``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Event = dict[str, Any]
OnEvent = Callable[[Event], None]
