"""``python -m dogvae``: report, train, generate, interpolate and evaluate from the shell.

The same functions as the app underneath. Heavy modules are imported inside
the commands, so ``--help`` answers without loading TensorFlow. User errors end
with one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
from dataclasses import replace
from pathlib import Path

EXIT_USER_ERROR = 2
EXIT_DIVERGED = 3


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line instead of usage + error."""

    def error(self, message: str):
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message} (see --help)\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m dogvae",
        description="A convolutional VAE for dog photos: check data, train, generate, interpolate.",
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    report = commands.add_parser("report", help="check a dataset and print its report as JSON")
    report.add_argument(
        "data", help="a CSV with a 'filepaths' column, a ZIP of images, or a folder"
    )
    _data_options(report)
    report.set_defaults(handler=_report)

    train = commands.add_parser("train", help="train a VAE and save a run folder")
    train.add_argument("data", help="a CSV with a 'filepaths' column, a ZIP of images, or a folder")
    train.add_argument("--out", required=True, help="run folder to write (e.g. runs/demo)")
    train.add_argument("--preset", default="seed", help="architecture and defaults (default: seed)")
    train.add_argument("--epochs", type=_positive_int, help="passes over the data")
    train.add_argument("--batch-size", type=_positive_int, help="images per step")
    train.add_argument("--latent-dim", type=_positive_int, help="size of the latent space")
    train.add_argument("--learning-rate", type=_number, help="Adam's learning rate")
    train.add_argument("--kl-warmup", type=_non_negative_int, help="epochs of KL warm-up")
    train.add_argument(
        "--lr-schedule",
        choices=("constant", "cosine"),
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
        "--strategy",
        choices=("default", "mirrored", "multiworker"),
        default="default",
        help="one device; all local GPUs; or several machines via TF_CONFIG (see README)",
    )
    train.set_defaults(handler=_train)

    generate = commands.add_parser("generate", help="write a grid of sampled dogs")
    generate.add_argument("run", help="a run folder written by train")
    generate.add_argument("--out", required=True, help="output .png")
    generate.add_argument("--n", type=_positive_int, default=16, help="images (default 16)")
    generate.add_argument("--seed", type=_non_negative_int, default=0, help="random seed")
    generate.add_argument("--scale", type=_positive_int, default=1, help="enlarge pixels N times")
    generate.add_argument(
        "--sampler",
        choices=("auto", "near", "data", "prior"),
        default="auto",
        help="near: variations of training dogs, each drawn from one training photo's "
        "posterior; data: a Gaussian fitted to the training dogs' latent means; prior: N(0, I); "
        "auto (default): near, else data, else prior, as far as the run recorded its training "
        "codes",
    )
    generate.add_argument(
        "--temperature", type=_number, default=1.0, help="spread of the samples (default 1)"
    )
    generate.set_defaults(handler=_generate)

    interpolate = commands.add_parser(
        "interpolate", help="write a strip (.png) or animation (.gif) between two points"
    )
    interpolate.add_argument("run", help="a run folder written by train")
    interpolate.add_argument("--out", required=True, help="output .png (strip) or .gif")
    interpolate.add_argument("--from", dest="source", help="image to start from (encoded)")
    interpolate.add_argument("--to", dest="target", help="image to end at (encoded)")
    interpolate.add_argument("--steps", type=_positive_int, default=8, help="frames (default 8)")
    interpolate.add_argument("--method", choices=("slerp", "linear"), default="slerp")
    interpolate.add_argument("--seed", type=_non_negative_int, default=0, help="for random ends")
    interpolate.add_argument("--scale", type=_positive_int, default=1, help="enlarge pixels")
    interpolate.set_defaults(handler=_interpolate)

    evaluate = commands.add_parser("evaluate", help="mean per-image loss of a run on a dataset")
    evaluate.add_argument("run", help="a run folder written by train")
    evaluate.add_argument("data", help="a CSV, ZIP or folder of images")
    evaluate.add_argument("--limit", type=_positive_int, help="use only the first N images")
    evaluate.add_argument(
        "--split", choices=("all", "train", "validation"), default="all", help="(default all)"
    )
    evaluate.add_argument("--seed", type=_non_negative_int, default=0, help="sampling seed")
    evaluate.add_argument("--data-root", help="folder that image paths must stay inside")
    evaluate.set_defaults(handler=_evaluate)

    stats = commands.add_parser(
        "stats",
        help="record a run's latent statistics (sliders, sampling) from its training data",
    )
    stats.add_argument("run", help="a run folder written by train")
    stats.add_argument("data", help="the CSV, ZIP or folder it was trained on")
    stats.add_argument("--limit", type=_positive_int, help="use only the first N images")
    stats.add_argument("--data-root", help="folder that image paths must stay inside")
    stats.set_defaults(handler=_stats)
    return parser


def _data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--limit", type=_positive_int, help="use only the first N images")
    parser.add_argument("--image-size", type=_positive_int, default=64, help="(default 64)")
    parser.add_argument("--channels", type=int, choices=(1, 3), default=1, help="1 gray, 3 RGB")
    parser.add_argument("--seed", type=_non_negative_int, default=0, help="split seed")
    parser.add_argument("--data-root", help="folder that image paths must stay inside")


# Signals that stop a training after its current batch and save it: Ctrl-C; kill,
# systemd, docker stop or a batch scheduler; and a closed terminal or ssh session.
STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)


def _away_from_the_terminal() -> None:
    """Point stdout and stderr at /dev/null: the terminal has hung up, and a write to it
    would fail and end the training before it could save."""
    with open(os.devnull, "wb") as nowhere:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
            with contextlib.suppress(OSError, ValueError):
                os.dup2(nowhere.fileno(), stream.fileno())


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (ValueError, FileNotFoundError, RuntimeError, OSError) as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        print(f"dogvae {args.command}: error: {message}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"dogvae {args.command}: interrupted", file=sys.stderr)
        return 130


def _load(args, data_config):
    from dogvae.data import load_dataset

    return load_dataset(args.data, data_config, allowed_root=args.data_root)


def _report(args) -> int:
    from dogvae.config import DataConfig

    config = DataConfig(
        image_size=args.image_size, channels=args.channels, limit=args.limit, seed=args.seed
    ).validate()
    dataset = _load(args, config)
    print(json.dumps(dataset.report.to_dict(), indent=2))
    dataset.require_images()
    return 0


def _train(args) -> int:
    from dogvae.config import DataConfig, get_preset
    from dogvae.runs import check_run_target

    preset = get_preset(args.preset)
    model_config = preset.model
    if args.init_from:
        from dogvae.runs import read_run_info

        model_config = read_run_info(args.init_from).model_config
        if args.latent_dim not in (None, model_config.latent_dim):
            raise ValueError(
                f"--latent-dim {args.latent_dim} differs from the run in --init-from "
                f"(latent {model_config.latent_dim}); weights only carry over unchanged"
            )
    if args.latent_dim is not None:
        model_config = replace(model_config, latent_dim=args.latent_dim)
    overrides = {
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "kl_warmup_epochs": args.kl_warmup,
        "lr_schedule": args.lr_schedule,
        "flip": args.flip,
        "shift": args.shift,
        "budget_minutes": args.budget_minutes,
        "seed": args.seed,
    }
    train_config = replace(
        preset.train, **{key: value for key, value in overrides.items() if value is not None}
    )
    model_config.validate()
    train_config.validate()
    data_config = DataConfig(
        image_size=model_config.image_size,
        channels=model_config.channels,
        limit=args.limit,
        seed=args.seed,
    ).validate()
    check_run_target(args.out)

    from dogvae.training import make_strategy

    # Before loading data: MultiWorkerMirroredStrategy must come before other TF work.
    strategy = make_strategy(args.strategy) if args.strategy != "default" else None
    dataset = _load(args, data_config).require_images()
    report = dataset.report
    print(
        f"data: {report.summary()}; {report.train} train, {report.validation} validation",
        flush=True,
    )

    from dogvae.training import train_and_save

    initial_weights = init_from = None
    if args.init_from:
        from dogvae.runs import lineage

        start = _load_run(args.init_from)
        initial_weights = (start.encoder.get_weights(), start.decoder.get_weights())
        init_from = lineage(start.info)

    stop = threading.Event()

    def stop_on_signal(signum, frame):
        if signum == getattr(signal, "SIGHUP", None):
            _away_from_the_terminal()
        if stop.is_set():
            raise KeyboardInterrupt
        # Set before the message: a second signal handled while it prints is a second one.
        stop.set()
        again = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        print(f"stopping after this batch ({again} again to abort without saving)", flush=True)

    # SIGTERM and SIGHUP too: a training ended that way saves what it has, like
    # Ctrl-C, instead of losing every epoch.
    previous = {number: signal.signal(number, stop_on_signal) for number in STOP_SIGNALS}

    def on_event(event):
        if event["type"] != "epoch":
            return
        line = (
            f"epoch {event['epoch']}/{event['epochs']}  loss {event['loss']:.1f}  "
            f"reconstruction {event['reconstruction']:.1f}  kl {event['kl']:.2f}"
        )
        if event.get("val_loss") is not None and event["val_loss"] == event["val_loss"]:
            line += f"  val_loss {event['val_loss']:.1f}"
        line += f"  active units {event['active_units']}  {event['seconds']:.1f} s"
        print(line, flush=True)

    try:
        run_dir, result = train_and_save(
            dataset,
            model_config,
            train_config,
            data_config,
            args.out,
            preset=args.preset,
            on_event=on_event,
            stop_event=stop,
            strategy=strategy,
            initial_weights=initial_weights,
            init_from=init_from,
        )
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    print(f"saved {run_dir} ({result.status}): {result.message}", flush=True)
    if result.status == "diverged":
        print(f"dogvae train: warning: {result.message}", file=sys.stderr)
        return EXIT_DIVERGED
    return 0


def _load_run(path: str):
    from dogvae.runs import read_run_info

    read_run_info(path)  # a clear error before TensorFlow loads
    from dogvae.runs import load_run

    return load_run(path)


def _check_output(path: str, suffixes: tuple[str, ...]) -> Path:
    out = Path(path)
    if out.suffix.lower() not in suffixes:
        raise ValueError(f"--out must end in {' or '.join(suffixes)}, got {path!r}")
    if not out.resolve().parent.is_dir():
        raise FileNotFoundError(f"the folder for --out does not exist: {out.parent}")
    return out


def _generate(args) -> int:
    out = _check_output(args.out, (".png",))
    if args.n > 1024:
        raise ValueError(f"--n must be at most 1024, got {args.n}")
    from dogvae import latent
    from dogvae.runs import read_latent_stats, read_run_info

    latent.check_temperature(args.temperature)
    stats = read_latent_stats(args.run) if args.sampler != "prior" else None
    info = read_run_info(args.run)
    try:
        z, sampler = latent.draw_latents(
            args.n, info.model_config.latent_dim, stats, args.sampler, args.seed, args.temperature
        )
    except ValueError as error:
        raise ValueError(f"{args.run}: {error}") from None
    what = {
        "near": "the posteriors of training dogs",
        "data": "the training dogs' latent distribution",
        "prior": "the prior N(0, I)",
    }[sampler]
    run = _load_run(args.run)
    from dogvae.model import decode

    grid = latent.image_grid(decode(run.decoder, z))
    latent.save_image(out, latent.upscale(grid, args.scale))
    print(
        f"wrote {out}: {args.n} samples from {run.info.name}, drawn from {what} "
        f"at temperature {args.temperature:g}"
    )
    return 0


def _interpolate(args) -> int:
    out = _check_output(args.out, (".png", ".gif"))
    if (args.source is None) != (args.target is None):
        raise ValueError("give both --from and --to, or neither for two random points")
    if not 2 <= args.steps <= 1000:
        raise ValueError(f"--steps must be from 2 to 1000, got {args.steps}")
    endpoint_images = [_read_image(path) for path in (args.source, args.target) if path]
    run = _load_run(args.run)
    import numpy as np

    from dogvae import latent
    from dogvae.data import decode_image
    from dogvae.model import decode, encode

    config = run.info.model_config
    if endpoint_images:
        images = [
            decode_image(data, config.image_size, config.channels) for data in endpoint_images
        ]
        start, end = encode(run.encoder, np.stack(images))[0]
        what = f"{args.source} -> {args.target}"
    else:
        from dogvae.runs import read_latent_stats

        ends, sampler = latent.draw_latents(
            2, config.latent_dim, read_latent_stats(args.run), "auto", args.seed
        )
        start, end = ends
        what = f"two random points (seed {args.seed}, sampler {sampler})"
    frames = latent.to_uint8(
        decode(run.decoder, latent.interpolate(start, end, args.steps, args.method))
    )
    frames = [latent.upscale(frame, args.scale) for frame in frames]
    if out.suffix.lower() == ".gif":
        latent.save_image(out, frames)
    else:
        latent.save_image(out, latent.image_strip(np.stack(frames)))
    print(f"wrote {out}: {args.steps} steps ({args.method}) between {what}")
    return 0


def _read_image(path: str) -> bytes:
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"no such image: {path}")
    return file.read_bytes()


def _evaluate(args) -> int:
    from dogvae.runs import read_run_info

    info = read_run_info(args.run)
    data_config = replace(info.data_config, limit=args.limit)
    images = _load(args, data_config).require_images().split_images(args.split)
    import keras

    keras.utils.set_random_seed(args.seed)  # before loading: it seeds the Sampling layer
    run = _load_run(args.run)
    from dogvae.model import evaluate_images

    figures = evaluate_images(run.encoder, run.decoder, images)
    result = {
        "run": str(info.path),
        "data": str(args.data),
        "split": args.split,
        "images": len(images),
        **{key: round(value, 3) for key, value in figures.items()},
        "parameters": info.config.get("parameters"),
        "train_seconds": info.config.get("seconds"),
    }
    print(json.dumps(result, indent=2))
    return 0


def _stats(args) -> int:
    from dogvae.runs import read_run_info, write_latent_stats

    info = read_run_info(args.run)
    data_config = replace(info.data_config, limit=args.limit)
    dataset = _load(args, data_config).require_images()
    if dataset.report.train < 2:
        raise ValueError(f"{args.data} has {dataset.report.train} training images; need 2")
    run = _load_run(args.run)
    from dogvae.training import MAX_STATISTICS_IMAGES, training_statistics

    path = write_latent_stats(info.path, training_statistics(run.encoder, dataset))
    encoded = min(dataset.report.train, MAX_STATISTICS_IMAGES)
    print(f"wrote {path}: latent statistics of {encoded} training images of {args.data}")
    return 0


def mute_native_stderr() -> None:
    """Send fd 2 to /dev/null for the rest of the process; Python's stderr keeps the terminal.

    TensorFlow's C++ runtime writes banners (oneDNN, CUDA probing) straight to
    fd 2, before and regardless of any log level. dogvae's own messages and
    Python tracebacks go through ``sys.stderr``, which is re-pointed at a copy of
    the original descriptor first, so they still show. DOGVAE_VERBOSE=1 keeps
    everything.
    """
    if os.environ.get("DOGVAE_VERBOSE"):
        return
    sys.stderr.flush()
    try:
        terminal = os.dup(2)
        sys.stderr = open(terminal, "w", buffering=1, encoding="utf-8", errors="replace")  # noqa: SIM115
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
    except OSError:
        pass  # no usable fd 2 (e.g. closed): nothing to mute
