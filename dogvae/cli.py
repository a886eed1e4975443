"""``python -m dogvae``: report, train, generate, interpolate, evaluate, export from the shell.

The same functions as the app underneath. Heavy modules are imported inside
the commands, so ``--help`` answers without loading TensorFlow. User errors end
with one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import replace
from pathlib import Path

from dogvae.cli_parser import EXIT_USER_ERROR, build_parser
from dogvae.config import DataConfig, from_preset

EXIT_DIVERGED = 3


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
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
    config = DataConfig(
        image_size=args.image_size, channels=args.channels, limit=args.limit, seed=args.seed
    )
    dataset = _load(args, config)
    print(json.dumps(dataset.report.to_dict(), indent=2))
    dataset.require_images()
    return 0


# Options that would change a run's settings: --resume goes on with the run's own.
SETTING_OPTIONS = (
    "epochs",
    "batch_size",
    "latent_dim",
    "learning_rate",
    "kl_warmup",
    "mean_weight",
    "mean_term",
    "lr_schedule",
    "budget_minutes",
    "flip",
    "shift",
    "limit",
    "init_from",
)


def _train(args) -> int:
    if args.resume:
        return _resume(args)
    if not args.data or not args.out:
        raise ValueError("train needs DATA and --out RUN (or --resume RUN to go on with one)")
    from dogvae.runs import check_run_target

    start_model = None
    if args.init_from:
        from dogvae.runs import read_run_info

        start_model = read_run_info(args.init_from).model_config
        if args.latent_dim not in (None, start_model.latent_dim):
            raise ValueError(
                f"--latent-dim {args.latent_dim} differs from the run in --init-from "
                f"(latent {start_model.latent_dim}); weights only carry over unchanged"
            )
    options = {
        "latent_dim": args.latent_dim,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "kl_warmup_epochs": args.kl_warmup,
        "mean_weight": args.mean_weight,
        "mean_term": args.mean_term,
        "lr_schedule": args.lr_schedule,
        "flip": args.flip,
        "shift": args.shift,
        "budget_minutes": args.budget_minutes,
        "seed": args.seed,
    }
    model_config, train_config = from_preset(
        args.preset,
        model=start_model,
        **{key: value for key, value in options.items() if value is not None},  # given ones
    )
    data_config = DataConfig(
        image_size=model_config.image_size,
        channels=model_config.channels,
        limit=args.limit,
        seed=args.seed,
    )
    check_run_target(args.out)
    if args.strategy == "multiworker" and train_config.budget_minutes is not None:
        raise ValueError(
            "--budget-minutes cannot be used with --strategy multiworker: each worker would "
            "measure it by its own clock and stop at another batch; give --epochs instead"
        )
    if args.tensorboard and Path(args.tensorboard).exists() and not Path(args.tensorboard).is_dir():
        raise ValueError(f"--tensorboard {args.tensorboard} is a file; give a folder for the logs")

    from dogvae.training import make_strategy

    # Before loading data: MultiWorkerMirroredStrategy must come before other TF work.
    strategy = make_strategy(args.strategy) if args.strategy != "default" else None
    dataset = _load(args, data_config).require_images()
    report = dataset.report
    print(
        f"data: {report.summary()}; {report.train} train, {report.validation} validation",
        flush=True,
    )

    from dogvae.terminal import stop_on_signals
    from dogvae.training import train_and_save

    initial_weights = init_from = None
    if args.init_from:
        from dogvae.runs import lineage

        start = _load_run(args.init_from)
        initial_weights = start.start_weights()
        init_from = lineage(start.info)

    with stop_on_signals() as stop:
        run_dir, result = train_and_save(
            dataset,
            model_config,
            train_config,
            data_config,
            args.out,
            preset=args.preset,
            on_event=_print_epoch,
            stop_event=stop,
            strategy=strategy,
            initial_weights=initial_weights,
            init_from=init_from,
            tensorboard_dir=args.tensorboard,
            source=_source(args),
        )
    return _outcome(run_dir, result)


def _source(args) -> dict:
    """Where the data came from, absolute, for a later --resume to load it again."""
    root = str(Path(args.data_root).resolve()) if args.data_root else None
    return {"path": str(Path(args.data).resolve()), "data_root": root}


def _resume(args) -> int:
    given = [name for name in SETTING_OPTIONS if getattr(args, name) is not None]
    if given:
        options = ", ".join("--" + name.replace("_", "-") for name in given)
        raise ValueError(f"--resume goes on with the run's own settings; leave out {options}")
    if args.out and Path(args.out).resolve() != Path(args.resume).resolve():
        raise ValueError("--out must be the run given to --resume, or left out")
    from dogvae.training.checkpoint import read_checkpoint, recover_run

    recover_run(args.resume)
    checkpoint = read_checkpoint(args.resume)
    source = checkpoint.settings.get("source") or {}
    if not (args.data or source.get("path")):
        raise ValueError(
            f"{args.resume} does not record its data; give it: train DATA --resume RUN"
        )
    args.data = args.data or source["path"]
    args.data_root = args.data_root or source.get("data_root")
    from dogvae.training import make_strategy

    strategy = make_strategy(args.strategy) if args.strategy != "default" else None
    dataset = _load(args, checkpoint.configs()[2]).require_images()
    print(f"resuming {args.resume}: {checkpoint.describe()}", flush=True)

    from dogvae.terminal import stop_on_signals
    from dogvae.training.loop import resume_and_save

    with stop_on_signals() as stop:
        run_dir, result = resume_and_save(
            checkpoint, dataset, on_event=_print_epoch, stop_event=stop, strategy=strategy
        )
    return _outcome(run_dir, result)


def _outcome(run_dir: Path, result) -> int:
    from dogvae.training import is_chief

    if is_chief():
        print(f"saved {run_dir} ({result.status}): {result.message}", flush=True)
    else:
        print(f"trained ({result.status}): {result.message} The chief saves the run.", flush=True)
    if result.status == "diverged":
        print(f"dogvae train: warning: {result.message}", file=sys.stderr)
        return EXIT_DIVERGED
    return 0


def _print_epoch(event: dict) -> None:
    """One line per finished epoch of a training."""
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


def _load_run(path: str):
    from dogvae.runs import read_run_info

    read_run_info(path)  # a clear error before TensorFlow loads
    from dogvae.loaded_run import load_run

    return load_run(path)


def _check_output(path: str, suffixes: tuple[str, ...]) -> Path:
    out = Path(path)
    if out.suffix.lower() not in suffixes:
        raise ValueError(f"--out must end in {' or '.join(suffixes)}, got {path!r}")
    if not out.resolve().parent.is_dir():
        raise FileNotFoundError(f"the folder for --out does not exist: {out.parent}")
    return out


def _sample_output(path: str) -> tuple[Path, str]:
    """Where ``generate`` writes and how: "grid" (.png), "array" (.npy) or "folder" (a PNG
    per sample, for a path ending in a slash or an existing folder)."""
    out = Path(path)
    if path.endswith(("/", os.sep)) or out.is_dir():
        if out.exists() and not out.is_dir():
            raise ValueError(f"--out {path!r} is a file, not a folder")
        if not out.resolve().parent.is_dir():
            raise FileNotFoundError(f"the folder for --out does not exist: {out.parent}")
        return out, "folder"
    kind = {".png": "grid", ".npy": "array"}.get(out.suffix.lower())
    if kind is None:
        raise ValueError(
            f"--out must end in .png (a grid) or .npy (the raw uint8 samples), or be a "
            f"folder ending in / (one PNG per sample), got {path!r}"
        )
    return _check_output(path, (out.suffix.lower(),)), kind


def _generate(args) -> int:
    out, kind = _sample_output(args.out)
    if args.n > 1024:
        raise ValueError(f"--n must be at most 1024, got {args.n}")
    from dogvae import images, samplers
    from dogvae.pixel_samples import check_pixel_temperature
    from dogvae.runs import read_latent_stats, read_run_info

    samplers.check_temperature(args.temperature)
    check_pixel_temperature(args.pixel_temperature, "--pixel-temperature")
    stats = read_latent_stats(args.run) if args.sampler != "prior" else None
    info = read_run_info(args.run)
    try:
        z, sampler = samplers.draw_latents(
            args.n, info.model_config.latent_dim, stats, args.sampler, args.seed, args.temperature
        )
    except ValueError as error:
        raise ValueError(f"{args.run}: {error}") from None
    run = _load_run(args.run)
    draw = args.pixels == "draw" or (args.pixels == "auto" and run.draws_pixels)
    if draw:
        decoded = run.sample_images(z, args.pixel_temperature, args.seed)
        pixels_said = f", pixels drawn at temperature {args.pixel_temperature:g}"
    else:
        decoded, pixels_said = run.decode(z), ", mean images"
    if kind == "grid":
        images.save_image(out, images.upscale(images.image_grid(decoded), args.scale))
    elif kind == "array":
        import numpy as np

        from dogvae.atomic import write_atomically

        pixels = images.to_uint8(decoded)  # (n, H, W, C), for tools that judge samples
        write_atomically(out, lambda handle: np.save(handle, pixels, allow_pickle=False))
    else:
        out.mkdir(exist_ok=True)
        for index, sample in enumerate(images.to_uint8(decoded)):
            images.save_image(out / f"sample-{index:04d}.png", images.upscale(sample, args.scale))
    written = f"{out}{os.sep}" if kind == "folder" else str(out)
    print(
        f"wrote {written}: {args.n} samples from {run.info.name}, drawn from "
        f"{samplers.SAMPLERS[sampler].source} at temperature {args.temperature:g}{pixels_said}"
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

    from dogvae import images, latent, samplers
    from dogvae.data import decode_image

    config = run.info.model_config
    if endpoint_images:
        photos = [
            decode_image(data, config.image_size, config.channels) for data in endpoint_images
        ]
        start, end = run.encode(np.stack(photos))[0]
        what = f"{args.source} -> {args.target}"
    else:
        from dogvae.runs import read_latent_stats

        ends, sampler = samplers.draw_latents(
            2, config.latent_dim, read_latent_stats(args.run), samplers.AUTO, args.seed
        )
        start, end = ends
        what = f"two random points (seed {args.seed}, sampler {sampler})"
    frames = images.to_uint8(run.decode(latent.interpolate(start, end, args.steps, args.method)))
    frames = [images.upscale(frame, args.scale) for frame in frames]
    if out.suffix.lower() == ".gif":
        images.save_image(out, frames)
    else:
        images.save_image(out, images.image_strip(np.stack(frames)))
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
    figures = run.evaluate(images)
    bounds = run.likelihood(images, samples=args.samples, seed=args.seed)
    result = {
        "run": str(info.path),
        "data": str(args.data),
        "split": args.split,
        "images": len(images),
        **{key: round(value, 3) for key, value in figures.items()},
        **{key: round(value, 4) for key, value in bounds.items() if key.endswith("_bpd")},
        "iwae_samples": bounds["samples"],
        "parameters": info.config.get("parameters"),
        "train_seconds": info.config.get("seconds"),
    }
    print(json.dumps(result, indent=2))
    return 0


def _training_statistics(args, minimum: int):
    """The run's info, its latent statistics computed afresh on the training split of
    ``args.data`` (with at least ``minimum`` images), and how many images were encoded."""
    from dogvae.runs import read_run_info

    info = read_run_info(args.run)
    data_config = replace(info.data_config, limit=args.limit)
    dataset = _load(args, data_config).require_images()
    if dataset.report.train < minimum:
        raise ValueError(f"{args.data} has {dataset.report.train} training images; need {minimum}")
    run = _load_run(args.run)
    from dogvae.training.loop import MAX_STATISTICS_IMAGES, training_statistics

    encoded = min(dataset.report.train, MAX_STATISTICS_IMAGES)
    return info, training_statistics(run.encoder, dataset), encoded


def _stats(args) -> int:
    from dogvae.runs import write_latent_stats

    info, stats, encoded = _training_statistics(args, minimum=2)
    path = write_latent_stats(info.path, stats)
    print(f"wrote {path}: latent statistics of {encoded} training images of {args.data}")
    return 0


def _fit_sampler(args) -> int:
    from dogvae import mixture
    from dogvae.latent_stats import MIXTURE_FIELDS
    from dogvae.runs import read_latent_stats, write_latent_stats

    info, fresh, encoded = _training_statistics(args, minimum=mixture.MIN_CODES)
    stats = read_latent_stats(info.path)
    if stats is not None:  # keep what the run recorded; only the mixture is new
        fitted = {name: getattr(fresh, name) for name in MIXTURE_FIELDS}
        stats = replace(stats, **fitted)
    path = write_latent_stats(info.path, stats if stats is not None else fresh)
    fitted = mixture.mixture_of(fresh)
    print(
        f"wrote {path}: a Gaussian mixture of {len(fitted.weights)} components "
        f"({fitted.covariance} covariances, chosen on held-out codes) fitted to the codes "
        f"of {encoded} training images of {args.data}"
    )
    return 0


def _export(args) -> int:
    from dogvae.runs import read_run_info

    info = read_run_info(args.run)  # a clear error before TensorFlow loads
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out must be a folder, but {out} is a file")
    from dogvae.export import EXPORT_FILE, export_decoder, read_export

    onnx_path = export_decoder(_load_run(args.run).decoder, info.model_config, out)
    export = read_export(out)
    print(
        f"wrote {onnx_path} ({export['bytes']:,} bytes, opset {export['opset']}) and "
        f"{out / EXPORT_FILE}: the decoder of {info.name}, latent {export['latent_dim']} -> "
        f"{export['image_size']}x{export['image_size']}x{export['channels']}"
    )
    return 0


COMMANDS = {
    "report": _report,
    "train": _train,
    "generate": _generate,
    "interpolate": _interpolate,
    "evaluate": _evaluate,
    "stats": _stats,
    "fit-sampler": _fit_sampler,
    "export": _export,
}
