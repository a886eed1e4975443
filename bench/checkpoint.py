"""What checkpoints cost: seconds per checkpoint of the default model, and their share of training.

    python bench/checkpoint.py                  # models/default's settings on dogs.csv
    python bench/checkpoint.py --epochs 4 --csv ../shared/data/dogs.csv

Trains the default model's architecture and settings (models/default/config.json) for
a few epochs on the CSV's images, with checkpoints as every training writes them (at
each epoch's end, and every 60 s within an epoch), and times each write: copying the
weights, optimizer and random state out of the model, writing the file, fsync and
rename. The share is the writes an epoch needs (1 + one per full minute) times the
median write, over the median epoch (the first, which traces, left out).

One JSON object on stdout; ``{"skipped": ...}`` when the CSV is absent.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time dogvae's training checkpoints for the default model and print "
        "seconds per checkpoint and their share of an epoch as JSON.",
    )
    parser.add_argument("--csv", type=Path, default=common.SHARED_DATA / "dogs.csv")
    parser.add_argument("--run", type=Path, default=common.REPO / "models" / "default")
    parser.add_argument("--epochs", type=int, default=3, help="epochs to train (default 3)")
    parser.add_argument("--limit", type=int, help="use only the first N images")
    common.add_wait_option(parser)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if not args.csv.is_file():
        common.emit({"skipped": f"no dataset at {args.csv}"})
        return 0
    common.apply_wait_option(args)
    common.wait_for_quiet()

    from dogvae.data import load_dataset
    from dogvae.runs import read_run_info
    from dogvae.training import checkpoint, checkpointer
    from dogvae.training.loop import train_vae

    info = read_run_info(args.run)
    data_config = replace(info.data_config, limit=args.limit)
    dataset = load_dataset(args.csv, data_config).require_images()
    train_config = replace(info.train_config, epochs=args.epochs, budget_minutes=None)

    writes: list[float] = []
    write = checkpointer.Checkpointer.write

    def timed(self, epoch, batch):
        started = time.perf_counter()
        write(self, epoch, batch)
        writes.append(time.perf_counter() - started)

    checkpointer.Checkpointer.write = timed
    with tempfile.TemporaryDirectory(prefix="dogvae-bench-checkpoint-") as folder:
        plan = checkpoint.CheckpointPlan(Path(folder) / "run", {}, checkpoint.checkpoint_interval())
        result = train_vae(
            dataset.images,
            dataset.images,
            info.model_config,
            train_config,
            train_indices=dataset.train_indices,
            validation_indices=dataset.validation_indices,
            checkpoints=plan,
        )
        size = checkpoint.checkpoint_path(plan.run_dir).stat().st_size
    epochs = [row["seconds"] for row in result.history[1:]] or [result.history[0]["seconds"]]
    epoch_seconds = common.median(epochs)
    per_write = common.median(writes)
    per_epoch = 1 + int(epoch_seconds // plan.interval)
    common.emit(
        {
            "run": str(args.run),
            "csv": str(args.csv),
            "train_images": len(dataset.train_indices),
            "parameters": int(result.encoder.count_params() + result.decoder.count_params()),
            "checkpoint_mb": round(size / 1e6, 2),
            "checkpoints": len(writes),
            "seconds_per_checkpoint": per_write,
            "seconds_per_checkpoint_max": round(max(writes), 4),
            "epoch_seconds": epoch_seconds,
            "checkpoints_per_epoch": per_epoch,
            "share_of_epoch": round(per_epoch * per_write / epoch_seconds, 5),
            "interval_seconds": plan.interval,
        }
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
