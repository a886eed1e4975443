"""Run folders: atomic save, listing, safe loading, history, deletion and ZIP export.

A run folder holds::

    encoder.h5  decoder.h5        as the original project saved them
    encoder.keras  decoder.keras  Keras' native format; what dogvae loads (safe mode)
    config.json                   model, training and data settings, outcome, final losses
    history.csv                   one row per epoch
    latent_stats.npz              the training set's latent statistics (``LatentStats``)

Listing and reading a run's settings never import TensorFlow; only ``save_run``
does. Loading a run's models is ``dogvae.loaded_run``.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import os
import shutil
import time
import uuid
import zipfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dogvae import __version__
from dogvae.atomic import (
    OLD_MARK,
    TEMP_MARK,
    folder_lock,
    place_under_free_name,
    swap_into_place,
    temporary_folder,
)
from dogvae.config import DataConfig, ModelConfig, TrainConfig, from_dict, to_dict
from dogvae.latent_stats import LatentStats
from dogvae.likelihood import NEIGHBOURS
from dogvae.training.checkpoint import checkpoint_path, has_checkpoint, pause_for_tests

RUN_FORMAT = "dogvae-run"
RUN_FORMAT_VERSION = 1
# A logistic likelihood's scale head, beside decoder.keras (which stays the mean).
SCALE_DECODER = "decoder_scale.keras"
# What config.json says of it, so that a script can compute the likelihood from the files.
LOGISTIC_LIKELIHOOD = {
    "distribution": "discretized_logistic",
    "loc": "decoder.keras (and decoder.h5): z -> the mean of each pixel, in [0, 1]",
    "log_scale": (
        f"{SCALE_DECODER}: z -> the natural log of each pixel's logistic scale, in units "
        "of the [0, 1] range (clipped to [-7, 0])"
    ),
    "bins": (
        "pixel value k (0..255) has the logistic's mass on [(k - 0.5) / 255, (k + 0.5) / 255]; "
        "k = 0 reaches to -inf and k = 255 to +inf, so the 256 masses sum to 1"
    ),
    "units": "log p(x|z) in nats summed over pixels; bits per dimension = nats / (H*W*C * ln 2)",
}
# A "logistic-ar" run: the same logistic, its loc moved by the errors of earlier pixels.
AUTOREGRESSIVE_FORMULA = (
    "loc[i, j, c] = mean[i, j, c] + sum_k weights[k][c] * (x[i + dy_k, j + dx_k, c] / 255 "
    "- mean[i + dy_k, j + dx_k, c]) over neighbours[k] = (dy_k, dx_k), all before (i, j) in "
    "raster order; a neighbour outside the image adds 0. Given z, p(x|z) is the product in "
    "raster order of these discretised logistics, each a proper distribution of its pixel"
)


def likelihood_description(scale_decoder: Any) -> dict[str, Any]:
    """What config.json says of a scale head's likelihood, weights included."""
    kernels = [
        layer.get_weights()[0]
        for layer in scale_decoder.layers
        if type(layer).__name__ == "NeighbourWeights"
    ]
    if not kernels:
        return dict(LOGISTIC_LIKELIHOOD)
    return {
        **LOGISTIC_LIKELIHOOD,
        "distribution": "discretized_logistic_ar",
        "loc": AUTOREGRESSIVE_FORMULA + "; mean is decoder.keras's output",
        "neighbours": [list(offset) for offset in NEIGHBOURS],
        "weights": [[float(w) for w in row] for row in kernels[0]],
    }


MODEL_FILES = ("encoder.h5", "decoder.h5", "encoder.keras", "decoder.keras")
LATENT_STATS = "latent_stats.npz"  # PCA of the training set's latent means, scatter points
RUN_FILES = (*MODEL_FILES, "config.json", "history.csv", LATENT_STATS)
# Files only some runs have (a logistic likelihood's scale head).
OPTIONAL_RUN_FILES = (SCALE_DECODER,)
HISTORY_COLUMNS = (
    "epoch",
    "batches",
    "loss",
    "reconstruction",
    "kl",
    "val_loss",
    "val_reconstruction",
    "val_kl",
    "seconds",
    "kl_weight",
    "learning_rate",
    "active_units",
    "kl_per_dim",
)
_STALE_TEMP_SECONDS = 3600  # a temp folder this old belongs to a save that died


@dataclass(frozen=True)
class RunInfo:
    """A run's settings and outcome, read from its config.json (no TensorFlow)."""

    path: Path
    config: dict[str, Any]

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def model_config(self) -> ModelConfig:
        return from_dict(ModelConfig, self.config["model"])

    @property
    def train_config(self) -> TrainConfig:
        return from_dict(TrainConfig, self.config["train"])

    @property
    def data_config(self) -> DataConfig:
        return from_dict(DataConfig, self.config["data_config"])

    @property
    def final(self) -> dict[str, Any]:
        return self.config.get("final") or {}

    @property
    def created(self) -> str:
        return self.config.get("created", "")


def check_run_target(run_dir: str | Path, *, resuming: bool = False) -> Path:
    """Refuse, before any training, an output path that cannot become a run folder.

    An existing dogvae run may be replaced (atomically, after training); any
    other existing file or non-empty folder is refused so that nothing the user
    had is lost, and so is an interrupted training unless ``resuming`` it.
    """
    run_dir = Path(run_dir)
    interrupted = has_checkpoint(run_dir)
    if interrupted and not resuming:
        raise ValueError(
            f"{run_dir} holds an interrupted training; continue it with "
            f"`python -m dogvae train --resume {run_dir}`, or choose another --out"
        )
    if run_dir.exists():
        if not run_dir.is_dir():
            raise ValueError(f"{run_dir} exists and is not a folder; choose another --out")
        if any(run_dir.iterdir()) and not (run_dir / "config.json").is_file() and not interrupted:
            raise ValueError(
                f"{run_dir} is a folder that is not a dogvae run; choose another --out "
                "(dogvae only replaces its own run folders)"
            )
    parent = run_dir.resolve().parent
    if parent.exists() and not os.access(parent, os.W_OK):
        raise ValueError(f"cannot write into {parent}: permission denied")
    return run_dir


def save_run(
    run_dir: str | Path,
    encoder: Any,
    decoder: Any,
    *,
    model_config: ModelConfig,
    train_config: TrainConfig,
    data_config: DataConfig,
    data: dict[str, Any],
    history: list[dict[str, Any]],
    status: str = "finished",
    message: str = "",
    seconds: float = 0.0,
    preset: str = "custom",
    latent_stats: LatentStats | None = None,
    init_from: dict[str, Any] | None = None,
    replace: bool = True,
    scale_decoder: Any = None,
) -> Path:
    """Write a complete run folder atomically and return its path.

    Everything is written into a hidden temporary folder next to ``run_dir`` and
    moved into place only when complete. An existing run at ``run_dir`` is
    swapped out and deleted only after the new one is in place; if the process
    dies between the two renames, ``recover_runs`` puts the old one back.
    A failed write (disk full, permission) raises OSError and leaves any
    existing run untouched. ``scale_decoder``, the scale head of a logistic
    likelihood, is saved as ``decoder_scale.keras`` and described in config.json.

    With ``replace=False`` nothing that exists is replaced: when ``run_dir`` is
    taken by then (another session saved under the same name while this run
    trained), the run is saved as ``run_dir-2``, ``-3``..., and that path returned.
    """
    run_dir = Path(run_dir)
    if replace:
        check_run_target(run_dir, resuming=True)  # the training's own checkpoint goes with it
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    final = {key: value for key, value in (history[-1] if history else {}).items()}
    config = {
        "format": RUN_FORMAT,
        "format_version": RUN_FORMAT_VERSION,
        "dogvae_version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "preset": preset,
        "model": to_dict(model_config),
        "train": to_dict(train_config),
        "data_config": to_dict(data_config),
        "data": {key: value for key, value in data.items() if key != "unreadable"}
        | {"unreadable_count": len(data.get("unreadable", ()))},
        "status": status,
        "message": message,
        "epochs_completed": len(history),
        "seconds": round(float(seconds), 3),
        "parameters": {
            "encoder": int(encoder.count_params()),
            "decoder": int(decoder.count_params()),
        },
        "final": final,
        "init_from": init_from,
    }
    if scale_decoder is not None:
        config["parameters"]["decoder_scale"] = int(scale_decoder.count_params())
        config["likelihood"] = likelihood_description(scale_decoder)
    from dogvae.model import with_keras_batch_norm

    encoder, decoder = with_keras_batch_norm(encoder), with_keras_batch_norm(decoder)
    if scale_decoder is not None:
        scale_decoder = with_keras_batch_norm(scale_decoder)
    try:
        with temporary_folder(run_dir) as temp:
            with _h5_warning_muted():
                encoder.save(temp / "encoder.h5")
                decoder.save(temp / "decoder.h5")
            encoder.save(temp / "encoder.keras")
            decoder.save(temp / "decoder.keras")
            if scale_decoder is not None:
                scale_decoder.save(temp / SCALE_DECODER)
            _write_text(temp / "history.csv", _history_csv(history))
            if latent_stats is not None:
                latent_stats.save(temp / LATENT_STATS)
            # config.json last: a folder with it is complete.
            _write_text(temp / "config.json", json.dumps(config, indent=2, default=_json_default))
            pause_for_tests("save")
        # Under the runs folder's lock: no other training writes its checkpoint or swaps
        # its run in between the look at the folder and the renames.
        with folder_lock(run_dir.parent):
            if replace or _only_a_checkpoint(run_dir):
                # This training's own folder (its checkpoint, no run) is replaced as a whole.
                return swap_into_place(temp, run_dir)
            placed = place_under_free_name(temp, run_dir)
            # Saved beside a run that took the name meanwhile: this training's checkpoint,
            # left in that folder, would list it as interrupted.
            checkpoint_path(run_dir).unlink(missing_ok=True)
            return placed
    except OSError as error:
        raise OSError(
            error.errno, f"could not save the run to {run_dir}: {error.strerror or error}"
        ) from error


def _only_a_checkpoint(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds an unfinished training's checkpoint and no saved run."""
    return has_checkpoint(run_dir) and not (run_dir / "config.json").is_file()


def recover_runs(runs_dir: str | Path) -> list[str]:
    """Finish or undo saves that were interrupted; returns what was done, for a log.

    An ``.NAME.old-*`` folder without ``NAME`` means a save died between its two
    renames: the old run is put back. Temporary folders of dead saves are removed.
    """
    runs_dir = Path(runs_dir)
    actions: list[str] = []
    if not runs_dir.is_dir():
        return actions
    for entry in sorted(runs_dir.iterdir()):
        name = entry.name
        if not (name.startswith(".") and entry.is_dir()):
            continue
        if OLD_MARK in name:
            original = runs_dir / name[1:].rsplit(OLD_MARK, 1)[0]
            if original.exists():
                shutil.rmtree(entry, ignore_errors=True)
                actions.append(f"removed leftover {name}")
            else:
                os.rename(entry, original)
                actions.append(f"restored {original.name} after an interrupted save")
        elif TEMP_MARK in name and time.time() - entry.stat().st_mtime > _STALE_TEMP_SECONDS:
            shutil.rmtree(entry, ignore_errors=True)
            actions.append(f"removed unfinished save {name}")
    return actions


def read_run_info(run_dir: str | Path) -> RunInfo:
    """Read and check a run's config.json; ValueError when the folder is not a dogvae run."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise FileNotFoundError(f"no such run folder: {run_dir}")
    if not run_dir.is_dir():
        raise ValueError(f"{run_dir} is a file, not a run folder")
    config_path = run_dir / "config.json"
    if not config_path.is_file():
        raise ValueError(f"{run_dir} is not a dogvae run: it has no config.json")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{config_path} is not valid JSON ({error}); the run is damaged") from None
    if not isinstance(config, dict) or config.get("format") != RUN_FORMAT:
        raise ValueError(f"{run_dir} is not a dogvae run: config.json lacks format {RUN_FORMAT!r}")
    if config.get("format_version", 0) > RUN_FORMAT_VERSION:
        raise ValueError(
            f"{run_dir} was written by a newer dogvae (format {config.get('format_version')}); "
            "update dogvae to load it"
        )
    info = RunInfo(run_dir, config)
    try:
        info.model_config, info.train_config, info.data_config  # noqa: B018 - validates
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{run_dir} has invalid settings in config.json: {error}") from None
    missing = [
        name for name in ("encoder.keras", "decoder.keras") if not (run_dir / name).is_file()
    ]
    if missing:
        raise ValueError(f"{run_dir} is incomplete: {', '.join(missing)} missing")
    damaged = [
        name
        for name in ("encoder.keras", "decoder.keras")
        if not zipfile.is_zipfile(run_dir / name)
    ]
    if damaged:
        raise ValueError(
            f"{run_dir} is damaged: {', '.join(damaged)} cannot load (not a .keras file)"
        )
    return info


def list_runs(runs_dir: str | Path) -> tuple[list[RunInfo], list[tuple[Path, str]]]:
    """Runs in ``runs_dir``, newest first, and the folders that are not valid runs (with why)."""
    runs_dir = Path(runs_dir)
    recover_runs(runs_dir)
    runs: list[RunInfo] = []
    problems: list[tuple[Path, str]] = []
    if not runs_dir.is_dir():
        return runs, problems
    for entry in sorted(runs_dir.iterdir()):
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        try:
            runs.append(read_run_info(entry))
        except (OSError, ValueError) as error:
            problems.append((entry, str(error)))
    runs.sort(key=lambda info: (info.created, info.name), reverse=True)
    return runs, problems


def read_history(run_dir: str | Path) -> list[dict[str, Any]]:
    """The run's history.csv as a list of dicts (numbers as floats), [] when absent."""
    path = Path(run_dir) / "history.csv"
    if not path.is_file():
        return []
    rows = []
    with path.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            rows.append({key: _parse_cell(key, value) for key, value in row.items()})
    return rows


def lineage(info: RunInfo) -> dict[str, Any]:
    """What a run continued from another records about it (see ``train --init-from``)."""
    return {
        "run": str(info.path),
        "preset": info.config.get("preset"),
        "train": info.config.get("train"),
        "data": (info.config.get("data") or {}).get("source"),
        "epochs_completed": info.config.get("epochs_completed"),
        "seconds": info.config.get("seconds"),
        "init_from": info.config.get("init_from"),
    }


def read_latent_stats(run_dir: str | Path) -> LatentStats | None:
    """The run's latent statistics, or None.

    None when the run has none (older or foreign runs) or the file is damaged:
    the app then falls back to plain latent axes and the prior. Never unpickles.
    """
    try:
        return LatentStats.load(Path(run_dir) / LATENT_STATS)
    except (OSError, ValueError):
        return None


def write_latent_stats(run_dir: str | Path, latent_stats: LatentStats) -> Path:
    """Replace a run's latent_stats.npz atomically (the rest of the run is untouched)."""
    run_dir = Path(run_dir)
    read_run_info(run_dir)  # a dogvae run, or a clear error
    path = run_dir / LATENT_STATS
    try:
        return latent_stats.save(path)
    except OSError as error:
        raise OSError(error.errno, f"could not write {path}: {error.strerror or error}") from error


def delete_run(run_dir: str | Path) -> None:
    """Delete a run folder (only a dogvae run: anything else is refused)."""
    info = read_run_info(run_dir)
    trash = info.path.parent / f".{info.name}.deleted-{uuid.uuid4().hex[:8]}"
    os.rename(info.path, trash)  # one atomic step; the rest can fail harmlessly
    shutil.rmtree(trash, ignore_errors=True)


def zip_run(run_dir: str | Path) -> bytes:
    """The run's files as ZIP bytes, for a download."""
    info = read_run_info(run_dir)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in (*RUN_FILES, *OPTIONAL_RUN_FILES):
            path = info.path / name
            if path.is_file():
                archive.write(path, f"{info.name}/{name}")
    return buffer.getvalue()


@contextlib.contextmanager
def _h5_warning_muted():
    """Keras warns that .h5 is legacy on every save; dogvae writes it on purpose."""
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _history_csv(history: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=HISTORY_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in history:
        writer.writerow(
            {
                key: json.dumps(value) if isinstance(value, list) else value
                for key, value in row.items()
            }
        )
    return buffer.getvalue()


def _parse_cell(key: str, value: str) -> Any:
    if value in ("", None):
        return None
    if key == "kl_per_dim":
        return json.loads(value)
    try:
        return float(value)
    except ValueError:
        return value


def _write_text(path: Path, text: str) -> None:
    with path.open("w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # NumPy scalars
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to config.json")
