import json
from dataclasses import replace

import pytest

from dogvae.config import (
    PRESETS,
    DataConfig,
    ModelConfig,
    TrainConfig,
    from_dict,
    from_preset,
    get_preset,
    to_dict,
)


def test_seed_preset_is_the_original_design():
    seed = get_preset("seed")
    assert seed.model == ModelConfig(
        image_size=64,
        channels=1,
        latent_dim=2,
        conv_filters=(32, 64),
        dense_units=16,
        batch_norm=False,
        logvar_clamp=None,
    )


@pytest.mark.parametrize("cls", [DataConfig, ModelConfig, TrainConfig])
def test_json_round_trip(cls):
    config = cls()
    assert from_dict(cls, json.loads(json.dumps(to_dict(config)))) == config


def test_every_preset_validates_and_round_trips():
    for preset in PRESETS.values():
        assert from_dict(ModelConfig, to_dict(preset.model)) == preset.model
        assert from_dict(TrainConfig, to_dict(preset.train)) == preset.train


@pytest.mark.parametrize(
    "cls, settings, words",
    [
        (TrainConfig, {"epochs": 0}, "epochs"),
        (TrainConfig, {"epochs": 1_000_000}, "epochs"),
        (TrainConfig, {"batch_size": -1}, "batch size"),
        (TrainConfig, {"batch_size": 0}, "batch size"),
        (TrainConfig, {"learning_rate": float("nan")}, "learning rate"),
        (TrainConfig, {"learning_rate": 0}, "learning rate"),
        (ModelConfig, {"latent_dim": 0}, "latent_dim"),
        (ModelConfig, {"latent_dim": 10_000}, "latent_dim"),
        (ModelConfig, {"image_size": 65}, "image_size"),
        (ModelConfig, {"channels": 2}, "channels"),
        (ModelConfig, {"image_size": 32, "conv_filters": (8, 8, 8, 8, 8, 8)}, "divisible"),
        (ModelConfig, {"conv_filters": (8, 8), "decoder_filters": (8,)}, "decoder_filters"),
        (ModelConfig, {"decoder_filters": (8, 0)}, "decoder_filters"),
        (ModelConfig, {"activation": "tanh"}, "activation"),
        (TrainConfig, {"lr_schedule": "linear"}, "lr_schedule"),
        (DataConfig, {"limit": 0}, "limit"),
        (DataConfig, {"validation_fraction": 1.5}, "validation_fraction"),
    ],
)
def test_absurd_settings_are_refused_when_the_config_is_made(cls, settings, words):
    with pytest.raises(ValueError, match=words):
        cls(**settings)
    with pytest.raises(ValueError, match=words):  # a changed copy is checked too
        replace(cls(), **settings)
    with pytest.raises(ValueError, match=words):  # and one read back from a run's JSON
        from_dict(cls, {**to_dict(cls()), **settings})


def test_from_preset_applies_overrides_to_the_config_that_has_them():
    model, train = from_preset("quality", latent_dim=8, epochs=3, flip=False)
    quality = get_preset("quality")
    assert model == replace(quality.model, latent_dim=8)
    assert train == replace(quality.train, epochs=3, flip=False)
    assert from_preset("seed") == (get_preset("seed").model, get_preset("seed").train)
    start = replace(get_preset("seed").model, latent_dim=5)
    model, train = from_preset("quality", model=start, epochs=2)
    assert model == start and train == replace(quality.train, epochs=2)


@pytest.mark.parametrize(
    "name, settings, words",
    [
        ("huge", {}, "unknown preset 'huge'; choose one of: seed"),
        ("seed", {"epoch": 3}, "unknown settings: epoch"),
        ("seed", {"latent_dim": 10_000}, "latent_dim"),
        ("seed", {"learning_rate": 5.0}, "learning rate"),
    ],
)
def test_from_preset_refuses_what_it_cannot_build(name, settings, words):
    with pytest.raises(ValueError, match=words):
        from_preset(name, **settings)


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ValueError, match="seed"):
        get_preset("nope")


def test_from_dict_refuses_unknown_keys():
    with pytest.raises(ValueError, match="unknown ModelConfig settings: bogus"):
        from_dict(ModelConfig, {**to_dict(ModelConfig()), "bogus": 1})


def test_configs_are_frozen():
    with pytest.raises(AttributeError):
        ModelConfig().latent_dim = 3  # type: ignore[misc]
    assert replace(ModelConfig(), latent_dim=8).latent_dim == 8
