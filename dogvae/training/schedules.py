"""The schedules a training follows: the KL weight per epoch and the learning rate."""

from __future__ import annotations

import math

from dogvae.config import TrainConfig

FINAL_LR_FRACTION = 0.01  # a cosine schedule ends at this share of the learning rate


def kl_weight_for_epoch(config: TrainConfig, epoch: int) -> float:
    """KL weight at 0-based ``epoch``: linear warm-up from 0 to ``kl_weight``, then constant."""
    if config.kl_warmup_epochs <= 0:
        return float(config.kl_weight)
    return float(config.kl_weight) * min(1.0, epoch / config.kl_warmup_epochs)


def learning_rate_at(config: TrainConfig, progress: float) -> float:
    """Adam's learning rate ``progress`` (0 to 1) of the way through the run.

    Constant, or a half cosine from ``learning_rate`` down to FINAL_LR_FRACTION
    of it: large steps while the loss falls fast, small ones to settle at the end.
    """
    if config.lr_schedule == "constant":
        return float(config.learning_rate)
    progress = min(max(float(progress), 0.0), 1.0)
    share = FINAL_LR_FRACTION + (1 - FINAL_LR_FRACTION) * 0.5 * (1 + math.cos(math.pi * progress))
    return float(config.learning_rate) * share
