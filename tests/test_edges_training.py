"""A NaN mid-training, end to end: train_and_save and ``dogvae train`` roll back to the
last good epoch, encoder and decoder alike, and still save the run."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import write_dogs

POISONED_EPOCH = 2  # zero-based: the third epoch starts with NaN weights


@pytest.fixture
def poisoned_third_epoch(monkeypatch: pytest.MonkeyPatch) -> dict[int, dict[str, list]]:
    """Every VAE's ``fit`` gets a callback that puts NaN into the first weight of the
    encoder and of the decoder as the third epoch begins; returns the weights both had
    at the end of each epoch (``[1]``: the last good one), filled in during training."""
    from dogvae.model import VAE
    from tests.training_helpers import Poison

    poison = Poison(POISONED_EPOCH, models=("encoder", "decoder"))
    fit = VAE.fit

    def fit_with_poison(self, *args, callbacks=None, **kwargs):
        return fit(self, *args, callbacks=[poison, *(callbacks or [])], **kwargs)

    monkeypatch.setattr(VAE, "fit", fit_with_poison)
    return poison.kept


def assert_rolled_back(run_dir, kept: dict[int, dict[str, list]]) -> dict:
    """The saved run: diverged after two epochs, with exactly the last good weights."""
    from dogvae.loaded_run import load_run

    config = json.loads((run_dir / "config.json").read_text())
    assert config["status"] == "diverged", config["message"]
    assert config["epochs_completed"] == POISONED_EPOCH
    assert "at epoch 3" in config["message"] and "last good epoch" in config["message"]
    run = load_run(run_dir)
    good = kept.get(POISONED_EPOCH - 1, {})
    assert set(good) == {"encoder", "decoder"}, "the poison never ran"
    for part, model in (("encoder", run.encoder), ("decoder", run.decoder)):
        saved = model.get_weights()
        assert all(np.isfinite(weights).all() for weights in saved), f"NaN in the saved {part}"
        for restored, kept in zip(saved, good[part], strict=True):
            np.testing.assert_array_equal(restored, kept, err_msg=f"{part} not rolled back")
    return config


def test_train_and_save_rolls_back_both_models_and_saves_the_run(tmp_path, poisoned_third_epoch):
    from dogvae.config import DataConfig, ModelConfig, TrainConfig
    from dogvae.data import load_dataset
    from dogvae.training import train_and_save

    write_dogs(tmp_path / "images", 16)
    data_config = DataConfig(image_size=32)
    dataset = load_dataset(tmp_path / "images", data_config, cache=False)
    model = ModelConfig(image_size=32, conv_filters=(8, 16), dense_units=16, latent_dim=2)
    train_config = TrainConfig(epochs=5, batch_size=4, report_every=1)
    run_dir, result = train_and_save(dataset, model, train_config, data_config, tmp_path / "run")
    assert result.status == "diverged"
    assert [row["epoch"] for row in result.history] == [1, 2]
    assert_rolled_back(run_dir, poisoned_third_epoch)


def test_the_cli_rolls_back_saves_and_exits_3(tmp_path, poisoned_third_epoch, capsys):
    from dogvae.cli import main

    write_dogs(tmp_path / "images", 16)
    run_dir = tmp_path / "run"
    args = ["train", str(tmp_path / "images"), "--out", str(run_dir), "--epochs", "5"]
    code = main([*args, "--batch-size", "8"])
    out, err = capsys.readouterr()
    assert code == 3, err  # dogvae.cli.EXIT_DIVERGED: saved, but not a finished training
    assert f"saved {run_dir} (diverged)" in out
    assert err.startswith("dogvae train: warning: the loss became nan at epoch 3")
    assert_rolled_back(run_dir, poisoned_third_epoch)
