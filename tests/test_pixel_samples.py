"""Images drawn from a run's pixel likelihood: the right distribution, the neighbours'
pull, the temperature, and the CLI that writes them."""

from __future__ import annotations

import numpy as np
import pytest

from dogvae.cli import main
from dogvae.likelihood import NEIGHBOURS, discretized_logistic_log_prob
from dogvae.pixel_samples import sample_pixels
from tests.canvas_helpers import seed_run  # noqa: F401 - a fixture
from tests.test_autoregressive import ar_run  # noqa: F401 - a fixture


def test_one_pixel_follows_the_discretised_logistic():
    """200,000 draws of one pixel: the frequencies of its 256 levels are the masses."""
    means = np.full((200_000, 1, 1, 1), 0.3)
    log_scales = np.log(0.04)
    drawn = sample_pixels(means, log_scales, temperature=1.0, seed=0)
    frequencies = np.bincount(drawn.ravel(), minlength=256) / len(drawn)
    levels = np.arange(256, dtype=np.uint8).reshape(256, 1, 1, 1)
    masses = np.exp(discretized_logistic_log_prob((np.full(levels.shape, 0.3), log_scales), levels))
    assert np.abs(frequencies - masses).sum() / 2 < 0.01  # total variation
    # At temperature 0.5 the spread halves.
    half = sample_pixels(means, log_scales, temperature=0.5, seed=0).astype(float)
    assert half.std() == pytest.approx(drawn.astype(float).std() / 2, rel=0.03)


def test_a_pixel_follows_the_error_of_its_left_neighbour():
    """x2's location is mean2 + w * (x1/255 - mean1): the slope of x2 on x1 is w."""
    means = np.full((50_000, 1, 2, 1), 0.5)
    for weight in (0.0, 0.8):
        drawn = sample_pixels(means, np.log(0.05), [(0, -1)], [[weight]], temperature=1.0, seed=1)
        first, second = drawn[:, 0, 0, 0].astype(float), drawn[:, 0, 1, 0].astype(float)
        slope = np.polyfit(first, second, 1)[0]
        assert slope == pytest.approx(weight, abs=0.03)


def test_the_rows_above_pull_too_and_temperature_zero_follows_the_means():
    rng = np.random.default_rng(2)
    means = rng.uniform(0.2, 0.8, (3, 5, 6, 1))
    # At temperature 0 every error is a rounding error: the pixels are the means rounded.
    still = sample_pixels(means, np.log(0.05), NEIGHBOURS, np.zeros((12, 1)), temperature=0)
    assert np.array_equal(still, np.rint(means * 255).astype(np.uint8))
    # One weight on the pixel above: a bright pixel drawn above brightens the one below.
    drawn = sample_pixels(np.full((20_000, 2, 1, 1), 0.5), np.log(0.05), [(-1, 0)], [[0.9]], seed=3)
    slope = np.polyfit(drawn[:, 0, 0, 0].astype(float), drawn[:, 1, 0, 0].astype(float), 1)[0]
    assert slope == pytest.approx(0.9, abs=0.03)
    assert np.array_equal(
        sample_pixels(means, np.log(0.05), seed=7), sample_pixels(means, np.log(0.05), seed=7)
    )


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"neighbours": [(0, 1)], "weights": [[0.5]]}, "not all before the pixel"),
        ({"temperature": 2.0}, "pixel temperature must be from 0 to 1.5"),
    ],
)
def test_bad_arguments_are_refused(arguments, message):
    with pytest.raises(ValueError, match=message):
        sample_pixels(np.full((1, 2, 2, 1), 0.5), 0.0, **arguments)


def test_generate_draws_the_pixels_of_a_logistic_run_and_says_so(ar_run, tmp_path, capsys):  # noqa: F811
    run_dir, _ = ar_run
    common = [
        "generate", str(run_dir), "--n", "6", "--sampler", "prior", "--seed", "4", "--out",
    ]  # fmt: skip
    assert main([*common, str(tmp_path / "drawn.npy")]) == 0
    assert "pixels drawn at temperature 0.6" in capsys.readouterr().out
    assert main([*common, str(tmp_path / "mean.npy"), "--pixels", "mean"]) == 0
    assert "mean images" in capsys.readouterr().out
    drawn, mean = np.load(tmp_path / "drawn.npy"), np.load(tmp_path / "mean.npy")
    assert drawn.shape == mean.shape == (6, 32, 32, 1) and drawn.dtype == np.uint8
    assert not np.array_equal(drawn, mean)
    # At pixel temperature 0 the draw is the means, moved only by rounding errors.
    assert main([*common, str(tmp_path / "still.npy"), "--pixel-temperature", "0"]) == 0
    still = np.load(tmp_path / "still.npy").astype(int)
    assert np.abs(still - mean).mean() < np.abs(drawn.astype(int) - mean).mean()
    assert main([*common, str(tmp_path / "x.npy"), "--pixel-temperature", "3"]) == 2
    assert "--pixel-temperature must be from 0 to 1.5" in capsys.readouterr().err


def test_a_cross_entropy_run_draws_no_pixels(seed_run, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "grid.png"
    command = ["generate", str(seed_run), "--n", "2", "--sampler", "prior", "--out", str(out)]
    assert main(command) == 0  # auto: its mean images
    assert "mean images" in capsys.readouterr().out
    assert main([*command, "--pixels", "draw"]) == 2
    assert "binary cross-entropy" in capsys.readouterr().err


def test_the_generate_page_draws_the_pixels_of_the_default_model_and_can_show_means():
    from streamlit.testing.v1 import AppTest

    from tests.conftest import REPO

    def grid_url(at) -> str:  # equal URLs are equal images
        assert not at.exception, at.exception
        return at.image[0].value[0]

    at = AppTest.from_file(str(REPO / "streamlit_app.py"), default_timeout=120)
    at.session_state["active_run"] = str(REPO / "models" / "default")
    at = at.switch_page("pages/generate.py").run()
    toggle = at.toggle(key="generate-draw-pixels")
    assert toggle.value is True
    drawn = grid_url(at)
    grain = at.slider(key="generate-pixel-temperature")
    assert grain.value == 0.6
    smoother = grid_url(grain.set_value(0.2).run())
    assert smoother != drawn
    means = grid_url(at.toggle(key="generate-draw-pixels").set_value(False).run())
    assert means not in (drawn, smoother)
    assert not [slider for slider in at.slider if slider.key == "generate-pixel-temperature"]
