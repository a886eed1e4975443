"""Compare presets honestly: same data, same wall-clock budget, held-out evaluation.

For each preset: ``python -m dogvae train DATA --preset P --budget-minutes M`` then
``python -m dogvae evaluate RUN DATA --split validation``, one after the other so no
two share the CPU. Prints one JSON line per preset and, at the end, the README's table.

    python bench/presets.py ../shared/data/dogs.csv --budget-minutes 4
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PRESETS = ("seed", "seed-wide", "quality", "quality-wide", "quality-rgb")


def dogvae(*args: str) -> str:
    """Run the CLI as a user would and return its stdout (raise with its stderr on failure)."""
    process = subprocess.run(
        [sys.executable, "-m", "dogvae", *args], cwd=REPO, capture_output=True, text=True
    )
    if process.returncode != 0:
        raise SystemExit(f"dogvae {' '.join(args)} failed: {process.stderr.strip()}")
    return process.stdout


def measure(data: str, preset: str, minutes: float, out: Path, extra: list[str]) -> dict:
    run = out / preset
    dogvae(
        "train",
        data,
        "--preset",
        preset,
        "--budget-minutes",
        str(minutes),
        "--epochs",
        "10000",
        "--out",
        str(run),
        *extra,
    )
    figures = json.loads(dogvae("evaluate", str(run), data, "--split", "validation"))
    config = json.loads((run / "config.json").read_text())
    return {
        "preset": preset,
        "epochs": config["epochs_completed"],
        **{
            key: figures[key]
            for key in ("images", "loss", "reconstruction", "kl", "floor", "excess", "psnr")
        },
        "seconds": config["seconds"],
        "parameters": sum(config["parameters"].values()),
    }


def table(rows: list[dict]) -> str:
    lines = [
        "| preset | epochs | loss | reconstruction | kl | floor | excess | PSNR (dB) | seconds "
        "| parameters |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['preset']} | {row['epochs']} | {row['loss']:.1f} | "
            f"{row['reconstruction']:.1f} | {row['kl']:.1f} | {row['floor']:.1f} | "
            f"{row['excess']:.1f} | {row['psnr']:.2f} | {row['seconds']:.0f} | "
            f"{row['parameters']:,} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "data", help="dataset with a validation split, e.g. ../shared/data/dogs.csv"
    )
    parser.add_argument("--budget-minutes", type=float, default=4.0)
    parser.add_argument("--presets", nargs="+", default=list(PRESETS))
    parser.add_argument("--out", help="keep the runs here (default: a temporary folder)")
    parser.add_argument("--limit", type=int, help="first N images only (for a quick check)")
    args = parser.parse_args()
    if not Path(args.data).exists():
        raise SystemExit(
            f"no such dataset: {args.data} (the shared dog photos are in ../shared/data)"
        )
    extra = ["--limit", str(args.limit)] if args.limit else []
    with tempfile.TemporaryDirectory() as temp:
        out = Path(args.out) if args.out else Path(temp)
        rows = []
        for preset in args.presets:
            rows.append(measure(args.data, preset, args.budget_minutes, out, extra))
            print(json.dumps(rows[-1]), flush=True)
    print(table(rows))


if __name__ == "__main__":
    main()
