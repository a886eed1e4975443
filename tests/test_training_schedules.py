"""The schedules: the KL warm-up and the cosine learning rate."""

import itertools

import numpy as np
import pytest

from dogvae.config import TrainConfig
from dogvae.training.schedules import kl_weight_for_epoch, learning_rate_at


def test_kl_warmup_schedule():
    config = TrainConfig(kl_weight=1.0, kl_warmup_epochs=4)
    assert [kl_weight_for_epoch(config, e) for e in range(6)] == [0, 0.25, 0.5, 0.75, 1, 1]
    assert kl_weight_for_epoch(TrainConfig(), 0) == 1.0


def test_cosine_schedule_falls_from_the_rate_to_one_percent():
    config = TrainConfig(learning_rate=1e-3, lr_schedule="cosine")
    rates = [learning_rate_at(config, p) for p in np.linspace(0, 1, 11)]
    assert rates[0] == pytest.approx(1e-3) and rates[-1] == pytest.approx(1e-5)
    assert rates[5] == pytest.approx((1e-3 + 1e-5) / 2)
    assert all(a > b for a, b in itertools.pairwise(rates))
    assert learning_rate_at(config, 3.0) == pytest.approx(1e-5)  # past the end: stays at the floor
    assert learning_rate_at(TrainConfig(learning_rate=2e-3), 0.9) == 2e-3  # constant
    with pytest.raises(ValueError, match="lr_schedule"):
        TrainConfig(lr_schedule="step")
