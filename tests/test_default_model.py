"""The pretrained model that ships in models/default: present, small, loads, and is active."""

import json
from pathlib import Path

import numpy as np
import pytest

from dogvae import runs
from dogvae.loaded_run import load_run
from tests.conftest import SHARED_DOGS_CSV, open_app

DEFAULT = Path(__file__).resolve().parents[1] / "models" / "default"


def test_the_default_run_ships_complete_and_small():
    info = runs.read_run_info(DEFAULT)
    names = {path.name for path in DEFAULT.iterdir()}
    assert set(runs.RUN_FILES) <= names
    assert sum(path.stat().st_size for path in DEFAULT.iterdir()) <= 16 * 1024 * 1024
    assert not [name for name in names if name.lower().endswith((".jpg", ".jpeg", ".png"))]
    assert info.config["data"]["readable"] >= 12_000  # trained on dogs_large.csv
    assert info.config["preset"] == "quality-ar"


def test_the_default_run_loads_and_draws_dogs():
    from dogvae.model import decode

    run = load_run(DEFAULT)
    images = decode(run.decoder, np.random.default_rng(0).normal(size=(8, 64)))
    assert images.shape == (8, 64, 64, 1)
    assert images.std() > 0.05  # not a flat grey: it draws something
    stats = runs.read_latent_stats(DEFAULT)
    assert stats is not None  # PCA sliders for its 64-dim latent
    assert stats.point_log_vars.shape == stats.points.shape == (2_000, 64)


@pytest.mark.parametrize("page", ["generate", "interpolate"])
def test_a_new_session_generates_with_the_default_model(app_dirs, monkeypatch, page):
    monkeypatch.delenv("DOGVAE_DEFAULT_RUN")  # as on a fresh clone
    app = open_app(page)
    assert not app.error, [error.value for error in app.error]
    assert app.session_state["active_run"] == str(DEFAULT)
    assert len(app.image) >= 2


def test_the_default_model_is_listed_but_cannot_be_deleted(app_dirs, monkeypatch):
    monkeypatch.delenv("DOGVAE_DEFAULT_RUN")
    app = open_app("models")
    delete = next(button for button in app.button if button.key == "delete-default")
    assert delete.disabled
    assert json.loads((DEFAULT / "config.json").read_text())["format"] == "dogvae-run"


# The default's figures on dogs.csv's 200 held-out photos: MODEL_CARD.md quotes the loss
# as -ELBO 5.484 bits/dim (15,568.7 nats / (4,096 ln 2)) and PSNR 20.51 dB.
CARD_EXCESS, CARD_PSNR = 15568.73, 20.51


@pytest.mark.skipif(not SHARED_DOGS_CSV.exists(), reason="needs ../shared/data/dogs.csv")
def test_the_default_model_scores_what_its_card_says_on_held_out_photos(capsys):
    from dogvae.cli import main

    assert main(["evaluate", str(DEFAULT), str(SHARED_DOGS_CSV), "--split", "validation"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["images"] == 200
    assert figures["excess"] == pytest.approx(CARD_EXCESS, abs=0.5)
    assert figures["psnr"] == pytest.approx(CARD_PSNR, abs=0.05)
