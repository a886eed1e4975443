"""What ``python -m dogvae`` accepts: its commands, their options, types and choices.

Only light modules here (the choices come from dogvae.config), so that ``--help``
answers without loading TensorFlow.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from dogvae.config import CHANNELS, LR_SCHEDULES, MEAN_TERMS, PRESETS, SPLITS, STRATEGIES

EXIT_USER_ERROR = 2


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line instead of usage + error."""

    def error(self, message: str):
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message} (see --help)\n")


def _whole_number(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number, ``minimum`` or more."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            at_least = f"at least {minimum}" if minimum else "0 or more"
            raise argparse.ArgumentTypeError(f"must be {at_least}, got {value}")
        return value

    return parse


_positive_int = _whole_number(1)
_non_negative_int = _whole_number(0)


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m dogvae",
        description=(
            "A convolutional VAE for dog photos: check data, train, generate, interpolate, export."
        ),
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    report = commands.add_parser("report", help="check a dataset and print its report as JSON")
    report.add_argument(
        "data", help="a CSV with a 'filepaths' column, a ZIP of images, or a folder"
    )
    _data_options(report)

    train = commands.add_parser("train", help="train a VAE and save a run folder")
    train.add_argument(
        "data",
        nargs="?",
        help="a CSV with a 'filepaths' column, a ZIP of images, or a folder "
        "(with --resume: default, where the run's data came from)",
    )
    train.add_argument("--out", help="run folder to write (e.g. runs/demo)")
    train.add_argument(
        "--resume",
        metavar="RUN",
        help="go on with the interrupted training in RUN to its planned end, with its settings",
    )
    train.add_argument(
        "--preset",
        default="seed",
        help=f"architecture and defaults: {', '.join(PRESETS)} (default: seed)",
    )
    train.add_argument("--epochs", type=_positive_int, help="passes over the data")
    train.add_argument("--batch-size", type=_positive_int, help="images per step")
    train.add_argument("--latent-dim", type=_positive_int, help="size of the latent space")
    train.add_argument("--learning-rate", type=_number, help="Adam's learning rate")
    train.add_argument("--kl-warmup", type=_non_negative_int, help="epochs of KL warm-up")
    train.add_argument(
        "--mean-weight",
        type=_number,
        help="quality-ar: weight of the mean image's own logistic term in the objective "
        "(keeps decoder.keras's mean sharp; the reported loss is the -ELBO without it)",
    )
    train.add_argument(
        "--mean-term",
        choices=MEAN_TERMS,
        help="quality-ar: that term is the mean's discretised logistic at the head's scales "
        "or a Gaussian of the batch's mean squared error, which aims at PSNR "
        "(default: the preset's)",
    )
    train.add_argument(
        "--lr-schedule",
        choices=LR_SCHEDULES,
        help="constant, or cosine down to 1%% of the rate by the last epoch or the budget",
    )
    train.add_argument(
        "--budget-minutes", type=_number, help="stop and save after this much training time"
    )
    train.add_argument(
        "--flip",
        action=argparse.BooleanOptionalAction,
        help="mirror training images left to right at random (default: the preset's)",
    )
    train.add_argument(
        "--shift",
        type=_non_negative_int,
        help="move training images by up to this many pixels at random (default: the preset's)",
    )
    train.add_argument("--seed", type=_non_negative_int, default=0, help="random seed (default 0)")
    train.add_argument("--limit", type=_positive_int, help="use only the first N images")
    train.add_argument("--data-root", help="folder that image paths must stay inside")
    train.add_argument(
        "--init-from",
        metavar="RUN",
        help="start from this run's weights (same architecture) instead of from scratch",
    )
    train.add_argument(
        "--tensorboard",
        metavar="DIR",
        help="also write TensorBoard logs (losses, learning rate, KL per latent dimension, "
        "sample grids) into DIR; watch with: tensorboard --logdir DIR",
    )
    train.add_argument(
        "--strategy",
        choices=STRATEGIES,
        default="default",
        help="one device; all local GPUs; or several machines via TF_CONFIG (see README)",
    )

    from dogvae.latent import METHODS
    from dogvae.pixel_samples import DEFAULT_PIXEL_TEMPERATURE, MAX_PIXEL_TEMPERATURE
    from dogvae.samplers import AUTO, SAMPLER_CHOICES, SAMPLERS

    generate = commands.add_parser("generate", help="write sampled dogs: a grid, an array or PNGs")
    generate.add_argument("run", help="a run folder written by train")
    generate.add_argument(
        "--out",
        required=True,
        help="a .png (a grid), a .npy (the raw samples, an (N, H, W, C) uint8 array) or a "
        "folder, ending in / or existing (one PNG per sample)",
    )
    generate.add_argument("--n", type=_positive_int, default=16, help="images (default 16)")
    generate.add_argument("--seed", type=_non_negative_int, default=0, help="random seed")
    generate.add_argument("--scale", type=_positive_int, default=1, help="enlarge pixels N times")
    generate.add_argument(
        "--sampler",
        choices=SAMPLER_CHOICES,
        default=AUTO,
        help="; ".join(f"{sampler.name}: {sampler.source}" for sampler in SAMPLERS.values())
        + f"; {AUTO} (default): {', else '.join(SAMPLERS)}, as far as the run recorded its "
        "training codes",
    )
    generate.add_argument(
        "--temperature", type=_number, default=1.0, help="spread of the samples (default 1)"
    )
    generate.add_argument(
        "--pixels",
        choices=("auto", "draw", "mean"),
        default="auto",
        help="draw: each image drawn from the model's pixel likelihood (a discretised "
        "logistic's runs; sharper, with grain); mean: the decoder's mean image (smooth); "
        "auto (default): draw where the run can, else mean",
    )
    generate.add_argument(
        "--pixel-temperature",
        type=_number,
        default=DEFAULT_PIXEL_TEMPERATURE,
        help=f"scales the pixels' spread when drawn, 0 to {MAX_PIXEL_TEMPERATURE:g} "
        f"(default {DEFAULT_PIXEL_TEMPERATURE:g})",
    )

    interpolate = commands.add_parser(
        "interpolate", help="write a strip (.png) or animation (.gif) between two points"
    )
    interpolate.add_argument("run", help="a run folder written by train")
    interpolate.add_argument("--out", required=True, help="output .png (strip) or .gif")
    interpolate.add_argument("--from", dest="source", help="image to start from (encoded)")
    interpolate.add_argument("--to", dest="target", help="image to end at (encoded)")
    interpolate.add_argument("--steps", type=_positive_int, default=8, help="frames (default 8)")
    interpolate.add_argument("--method", choices=METHODS, default=METHODS[0])
    interpolate.add_argument("--seed", type=_non_negative_int, default=0, help="for random ends")
    interpolate.add_argument("--scale", type=_positive_int, default=1, help="enlarge pixels")

    from dogvae.likelihood import DEFAULT_SAMPLES

    evaluate = commands.add_parser(
        "evaluate",
        help="mean per-image loss, PSNR and bits per dimension (-ELBO, IWAE) of a run on a dataset",
    )
    evaluate.add_argument("run", help="a run folder written by train")
    evaluate.add_argument("data", help="a CSV, ZIP or folder of images")
    evaluate.add_argument("--limit", type=_positive_int, help="use only the first N images")
    evaluate.add_argument("--split", choices=("all", *SPLITS), default="all", help="(default all)")
    evaluate.add_argument("--seed", type=_non_negative_int, default=0, help="sampling seed")
    evaluate.add_argument(
        "--samples",
        type=_positive_int,
        default=DEFAULT_SAMPLES,
        help="importance samples per image for the IWAE bound in bits per dimension "
        f"(default {DEFAULT_SAMPLES})",
    )
    evaluate.add_argument("--data-root", help="folder that image paths must stay inside")

    _run_and_its_data(
        commands.add_parser(
            "stats",
            help="record a run's latent statistics (sliders, sampling) from its training data",
        )
    )
    _run_and_its_data(
        commands.add_parser(
            "fit-sampler",
            help="fit the mixture sampler to a run's training codes (for runs saved without one)",
        )
    )

    export = commands.add_parser(
        "export",
        help="write a run's decoder as ONNX (decoder.onnx + export.json), as the app's "
        "browser decoder loads it",
    )
    export.add_argument("run", help="a run folder written by train")
    export.add_argument("--out", required=True, help="folder to write into (created if missing)")
    return parser


def _run_and_its_data(parser: argparse.ArgumentParser) -> None:
    """A run folder and the data it was trained on, for commands that encode that data."""
    parser.add_argument("run", help="a run folder written by train")
    parser.add_argument("data", help="the CSV, ZIP or folder it was trained on")
    parser.add_argument("--limit", type=_positive_int, help="use only the first N images")
    parser.add_argument("--data-root", help="folder that image paths must stay inside")


def _data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--limit", type=_positive_int, help="use only the first N images")
    parser.add_argument("--image-size", type=_positive_int, default=64, help="(default 64)")
    parser.add_argument("--channels", type=int, choices=CHANNELS, default=1, help="1 gray, 3 RGB")
    parser.add_argument("--seed", type=_non_negative_int, default=0, help="split seed")
    parser.add_argument("--data-root", help="folder that image paths must stay inside")
