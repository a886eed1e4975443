import json
from dataclasses import replace

import pytest

from dogvae.config import (
    PRESETS,
    DataConfig,
    ModelConfig,
    TrainConfig,
    from_dict,
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
        preset.train.validate()


@pytest.mark.parametrize(
    "config, words",
    [
        (TrainConfig(epochs=0), "epochs"),
        (TrainConfig(epochs=1_000_000), "epochs"),
        (TrainConfig(batch_size=-1), "batch size"),
        (TrainConfig(batch_size=0), "batch size"),
        (TrainConfig(learning_rate=float("nan")), "learning rate"),
        (TrainConfig(learning_rate=0), "learning rate"),
        (ModelConfig(latent_dim=0), "latent_dim"),
        (ModelConfig(latent_dim=10_000), "latent_dim"),
        (ModelConfig(image_size=65), "image_size"),
        (ModelConfig(channels=2), "channels"),
        (ModelConfig(image_size=32, conv_filters=(8, 8, 8, 8, 8, 8)), "divisible"),
        (ModelConfig(conv_filters=(8, 8), decoder_filters=(8,)), "decoder_filters"),
        (ModelConfig(decoder_filters=(8, 0)), "decoder_filters"),
        (ModelConfig(activation="tanh"), "activation"),
        (TrainConfig(lr_schedule="linear"), "lr_schedule"),
        (DataConfig(limit=0), "limit"),
        (DataConfig(validation_fraction=1.5), "validation_fraction"),
    ],
)
def test_absurd_settings_are_refused_with_the_setting_named(config, words):
    with pytest.raises(ValueError, match=words):
        config.validate()


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
