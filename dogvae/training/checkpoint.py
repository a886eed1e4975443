"""Checkpoints of a training in progress: ``RUN/checkpoint.npz``, written atomically.

A checkpoint holds what a training needs to go on where it was: the encoder's and
decoder's weights, the optimizer's variables, the sampling layer's random state
and the epoch's running losses (arrays), and, as JSON, the epoch and batch
reached, the time used, the history so far and the run's own settings.

It lives inside the run folder it will become, as one file: a killed training
then leaves the folder the user asked for (``--resume RUN`` names it), and the
final save, which swaps a complete new folder in with one rename, removes the
checkpoint in the same step that makes the run complete; there is no moment
with both or neither. The file itself is written to a temporary name, synced
and renamed (``dogvae.atomic``), so a kill during a write leaves the previous
checkpoint intact.

Reading one (``read_checkpoint``, ``list_interrupted``) needs NumPy only.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import zipfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from dogvae.atomic import OLD_MARK, TEMP_MARK, folder_lock, fsync_dir, write_atomically
from dogvae.config import DataConfig, ModelConfig, TrainConfig, from_dict

CHECKPOINT_FILE = "checkpoint.npz"
CHECKPOINT_FORMAT = "dogvae-checkpoint"
CHECKPOINT_VERSION = 1
ARRAY_GROUPS = ("encoder", "decoder", "decoder_scale", "optimizer", "seeds", "metrics")
DEFAULT_INTERVAL_SECONDS = 60.0  # at most this much work is lost to a kill mid-epoch
INTERVAL_ENV = "DOGVAE_CHECKPOINT_SECONDS"
# Tests only: seconds to sleep inside a write ("checkpoint") or the final save ("save"),
# so that a kill -9 can be aimed at that moment, e.g. DOGVAE_TEST_PAUSE=checkpoint:0.5.
PAUSE_ENV = "DOGVAE_TEST_PAUSE"


def checkpoint_interval() -> float:
    """Seconds between two checkpoints within an epoch: DOGVAE_CHECKPOINT_SECONDS, else 60."""
    text = os.environ.get(INTERVAL_ENV, "").strip()
    if not text:
        return DEFAULT_INTERVAL_SECONDS
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{INTERVAL_ENV} must be a number of seconds, got {text!r}") from None
    if not value > 0:
        raise ValueError(f"{INTERVAL_ENV} must be more than 0 seconds, got {text!r}")
    return value


def pause_for_tests(where: str) -> None:
    """Sleep when DOGVAE_TEST_PAUSE names ``where`` (``"checkpoint:0.5"``); else nothing."""
    name, _, seconds = os.environ.get(PAUSE_ENV, "").partition(":")
    if name == where:
        time.sleep(float(seconds or 1))


def checkpoint_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / CHECKPOINT_FILE


def has_checkpoint(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` holds an interrupted training."""
    return checkpoint_path(run_dir).is_file()


@dataclass(frozen=True)
class CheckpointPlan:
    """Where a training writes its checkpoints, what they record and how often.

    Attributes:
        run_dir: The run folder (the checkpoint is ``run_dir/checkpoint.npz``).
        settings: The run's settings: ``preset``, ``model``, ``train``, ``data_config``,
            ``data`` (the report), ``fingerprint``, ``source`` and ``init_from``.
        interval: Seconds between two checkpoints within an epoch.
    """

    run_dir: Path
    settings: dict[str, Any]
    interval: float = DEFAULT_INTERVAL_SECONDS


@dataclass
class Checkpoint:
    """A training's state at the end of a batch.

    Attributes:
        state: JSON-ready: ``epoch`` (0-based epoch under way, or the number done
            when ``batch`` is 0), ``batch`` (batches done in it), ``seconds`` (training
            time used), ``history``, ``settings`` (preset, configs, data source and
            fingerprint, lineage) and more (see ``Checkpointer``).
        arrays: Per group in ARRAY_GROUPS, a list of arrays (empty when only the
            state was read).
        samples: The last epoch's sample grid, uint8 (16, H, W, C), or None.
    """

    state: dict[str, Any]
    arrays: dict[str, list[np.ndarray]] = field(default_factory=dict)
    samples: np.ndarray | None = None
    path: Path | None = None

    @property
    def epoch(self) -> int:
        return int(self.state["epoch"])

    @property
    def batch(self) -> int:
        return int(self.state["batch"])

    @property
    def history(self) -> list[dict[str, Any]]:
        return list(self.state.get("history") or [])

    @property
    def settings(self) -> dict[str, Any]:
        return self.state["settings"]

    def configs(self) -> tuple[ModelConfig, TrainConfig, DataConfig]:
        """The run's model, training and data settings."""
        settings = self.settings
        return (
            from_dict(ModelConfig, settings["model"]),
            from_dict(TrainConfig, settings["train"]),
            from_dict(DataConfig, settings["data_config"]),
        )

    def describe(self) -> str:
        """``"interrupted at epoch 32 of 50"`` (plus the batch when mid-epoch)."""
        epochs = self.settings["train"]["epochs"]
        if self.batch:
            return f"interrupted at epoch {self.epoch + 1} of {epochs}, batch {self.batch}"
        return f"interrupted at epoch {self.epoch} of {epochs}"


def write_checkpoint(run_dir: str | Path, checkpoint: Checkpoint) -> Path:
    """Write ``checkpoint`` to ``run_dir/checkpoint.npz`` atomically (created if need be)."""
    run_dir = Path(run_dir)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    state = {
        **checkpoint.state,
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "written": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    contents: dict[str, np.ndarray] = {
        # Plain JSON values only: history rows hold Python floats, settings plain dicts.
        "state": np.frombuffer(json.dumps(state).encode(), np.uint8)
    }
    for group in ARRAY_GROUPS:
        for number, array in enumerate(checkpoint.arrays.get(group, ())):
            contents[f"{group}_{number:04d}"] = np.asarray(array)
    if checkpoint.samples is not None:
        contents["samples"] = np.asarray(checkpoint.samples)

    def write(handle) -> None:
        np.savez(handle, **contents)
        pause_for_tests("checkpoint")

    # Under the runs folder's lock: a run saved under the same name meanwhile is swapped
    # in with renames that must not run while this file is half written in the folder.
    with folder_lock(run_dir.parent):
        run_dir.mkdir(parents=True, exist_ok=True)
        return write_atomically(checkpoint_path(run_dir), write)


def read_checkpoint(run_dir: str | Path, *, arrays: bool = True) -> Checkpoint:
    """The checkpoint in ``run_dir``; only its state (no weights) unless ``arrays``.

    Raises:
        FileNotFoundError: There is none (the run finished, or never started).
        ValueError: The file is not a dogvae checkpoint or is damaged.
    """
    path = checkpoint_path(run_dir)
    if not path.is_file():
        raise FileNotFoundError(
            f"{run_dir} holds no interrupted training (no {CHECKPOINT_FILE}); it finished, "
            "or never trained"
        )
    try:
        with np.load(path, allow_pickle=False) as archive:
            state = json.loads(bytes(archive["state"]).decode())
            if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
                raise ValueError("not a dogvae checkpoint")
            if state.get("format_version", 0) > CHECKPOINT_VERSION:
                raise ValueError("written by a newer dogvae; update dogvae to resume it")
            groups: dict[str, list[np.ndarray]] = {}
            samples = None
            if arrays:
                names = sorted(archive.files)
                for group in ARRAY_GROUPS:
                    groups[group] = [archive[name] for name in names if name[:-5] == group]
                samples = archive["samples"] if "samples" in archive.files else None
    except (OSError, KeyError, ValueError, zipfile.BadZipFile, UnicodeDecodeError) as error:
        raise ValueError(f"{path} cannot be read ({error}); the checkpoint is damaged") from None
    return Checkpoint(state, groups, samples, path)


def clear_leftovers(run_dir: str | Path) -> None:
    """Remove temporary files of checkpoint writes that a kill cut short."""
    for leftover in Path(run_dir).glob(f".{CHECKPOINT_FILE}{TEMP_MARK}*"):
        leftover.unlink(missing_ok=True)


def recover_run(run_dir: str | Path) -> None:
    """Put ``run_dir`` back when a kill during its final save left it set aside.

    The save swaps the finished run in with two renames; between them the
    folder (and its checkpoint) is ``.NAME.old-*``. Only that name is looked at.
    """
    run_dir = Path(run_dir)
    if run_dir.exists() or not run_dir.parent.is_dir():
        return
    for aside in sorted(run_dir.parent.glob(f".{run_dir.name}{OLD_MARK}*")):
        if aside.is_dir() and has_checkpoint(aside):
            os.rename(aside, run_dir)
            fsync_dir(run_dir.parent)
            return


def list_interrupted(runs_dir: str | Path) -> list[Checkpoint]:
    """The interrupted trainings in ``runs_dir`` (states only), most recently written first."""
    found = []
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return found
    for entry in sorted(runs_dir.iterdir()):
        if entry.name.startswith(".") or not has_checkpoint(entry):
            continue
        try:
            found.append(read_checkpoint(entry, arrays=False))
        except (OSError, ValueError):
            continue  # a damaged checkpoint: list_runs reports the folder
    found.sort(key=lambda checkpoint: checkpoint.state.get("written", ""), reverse=True)
    return found


def data_fingerprint(dataset: Any) -> str:
    """A digest of a Dataset's images and split: what a resume must find unchanged."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(repr(dataset.images.shape).encode())
    for start in range(0, len(dataset.images), 4096):  # slices: a memory map is not copied whole
        digest.update(np.ascontiguousarray(dataset.images[start : start + 4096]).tobytes())
    digest.update(np.asarray(dataset.train_indices, np.int64).tobytes())
    digest.update(np.asarray(dataset.validation_indices, np.int64).tobytes())
    return digest.hexdigest()


def check_same_data(checkpoint: Checkpoint, dataset: Any) -> None:
    """Refuse to resume on data other than the data the training started on."""
    settings = checkpoint.settings
    if data_fingerprint(dataset) != settings.get("fingerprint"):
        was = settings.get("data") or {}
        run = checkpoint.path.parent if checkpoint.path else "the run"
        raise ValueError(
            f"the data has changed since {run} was interrupted (then {was.get('train')} "
            f"training and {was.get('validation')} validation images from "
            f"{was.get('source')!r}, now {dataset.report.train} and "
            f"{dataset.report.validation}, or different pixels); resume with the same files, "
            "or train afresh into another folder"
        )
