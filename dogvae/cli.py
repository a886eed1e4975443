"""``python -m dogvae``: report, train, generate, interpolate, evaluate, export from the shell.

The same functions as the app underneath. Heavy modules are imported inside
the commands, so ``--help`` answers without loading TensorFlow. User errors end
with one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import json
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


def _train(args) -> int:
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
        initial_weights = (start.encoder.get_weights(), start.decoder.get_weights())
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
        )
    print(f"saved {run_dir} ({result.status}): {result.message}", flush=True)
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


def _generate(args) -> int:
    out = _check_output(args.out, (".png",))
    if args.n > 1024:
        raise ValueError(f"--n must be at most 1024, got {args.n}")
    from dogvae import images, samplers
    from dogvae.runs import read_latent_stats, read_run_info

    samplers.check_temperature(args.temperature)
    stats = read_latent_stats(args.run) if args.sampler != "prior" else None
    info = read_run_info(args.run)
    try:
        z, sampler = samplers.draw_latents(
            args.n, info.model_config.latent_dim, stats, args.sampler, args.seed, args.temperature
        )
    except ValueError as error:
        raise ValueError(f"{args.run}: {error}") from None
    run = _load_run(args.run)
    grid = images.image_grid(run.decode(z))
    images.save_image(out, images.upscale(grid, args.scale))
    print(
        f"wrote {out}: {args.n} samples from {run.info.name}, drawn from "
        f"{samplers.SAMPLERS[sampler].source} at temperature {args.temperature:g}"
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
    figures = _load_run(args.run).evaluate(images)
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
    from dogvae.training.loop import MAX_STATISTICS_IMAGES, training_statistics

    path = write_latent_stats(info.path, training_statistics(run.encoder, dataset))
    encoded = min(dataset.report.train, MAX_STATISTICS_IMAGES)
    print(f"wrote {path}: latent statistics of {encoded} training images of {args.data}")
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
    "export": _export,
}
