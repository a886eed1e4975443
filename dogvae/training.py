"""Training: the LiveHistory callback, guards, train_and_save, and the background TrainingJob.

The CLI and the app train through the same ``train_and_save``: the CLI prints
the events it gets, the app's ``TrainingJob`` runs it in a thread and keeps the
events for the page to draw. The worker never touches Streamlit.
"""

from __future__ import annotations

import atexit
import math
import sys
import threading
import time
import traceback
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dogvae import latent
from dogvae.config import DataConfig, ModelConfig, TrainConfig
from dogvae.data import Dataset

Event = dict[str, Any]
OnEvent = Callable[[Event], None]

SAMPLE_COUNT = 16  # images in the per-epoch sample grid
ACTIVE_UNIT_THRESHOLD = 0.01  # Burda et al.: a unit is active when Var_x(E[z|x]) > 0.01
MAX_DIAGNOSTIC_IMAGES = 1_000  # images encoded per epoch for the collapse signal
MAX_STATISTICS_IMAGES = 20_000  # training images encoded for the run's latent statistics
FINAL_LR_FRACTION = 0.01  # a cosine schedule ends at this share of the learning rate


@dataclass
class TrainResult:
    """What a training produced.

    Attributes:
        encoder: The trained encoder (last good weights).
        decoder: The trained decoder (last good weights).
        history: One dict per epoch (see ``LiveHistory``).
        status: "finished", "stopped" (by the user), "budget" (time budget reached)
            or "diverged" (NaN/Inf loss).
        message: One sentence for the user.
        seconds: Wall-clock training time.
    """

    encoder: Any
    decoder: Any
    history: list[Event]
    status: str
    message: str
    seconds: float


def kl_weight_for_epoch(config: TrainConfig, epoch: int) -> float:
    """KL weight at 0-based ``epoch``: linear warm-up from 0 to ``kl_weight``, then constant."""
    if config.kl_warmup_epochs <= 0:
        return float(config.kl_weight)
    return float(config.kl_weight) * min(1.0, epoch / config.kl_warmup_epochs)


def learning_rate_at(config: TrainConfig, progress: float) -> float:
    """Adam's learning rate ``progress`` (0 to 1) of the way through the run.

    Constant, or a half cosine from ``learning_rate`` down to FINAL_LR_FRACTION
    of it: large steps while the loss falls fast, small ones to settle at the end.
    """
    if config.lr_schedule == "constant":
        return float(config.learning_rate)
    progress = min(max(float(progress), 0.0), 1.0)
    share = FINAL_LR_FRACTION + (1 - FINAL_LR_FRACTION) * 0.5 * (1 + math.cos(math.pi * progress))
    return float(config.learning_rate) * share


def latent_diagnostics(z_mean: np.ndarray, z_log_var: np.ndarray) -> dict[str, Any]:
    """Posterior-collapse signal: mean KL per latent dimension and the number of active units."""
    kl_per_dim = np.mean(-0.5 * (1 + z_log_var - np.square(z_mean) - np.exp(z_log_var)), axis=0)
    variance = np.var(z_mean, axis=0) if len(z_mean) > 1 else np.zeros(z_mean.shape[1])
    return {
        "kl_per_dim": [round(float(value), 4) for value in kl_per_dim],
        "active_units": int(np.sum(variance > ACTIVE_UNIT_THRESHOLD)),
    }


def _make_live_history(keras):
    """The callback class, built on first use so this module imports without TensorFlow."""

    class LiveHistory(keras.callbacks.Callback):
        """Reports progress to a plain function, honours a stop flag, guards against NaN.

        Events sent to ``on_event``:
          {"type": "batch", "epoch", "batch", "steps", "loss", "reconstruction", "kl", "elapsed"}
            every ``report_every`` batches;
          {"type": "epoch", ...history row..., "samples": uint8 (16, H, W, C)} after each epoch.
        """

        def __init__(self, *, on_event, stop_event, config, steps, sample_z, diagnostic_images):
            super().__init__()
            self.on_event = on_event
            self.stop_event = stop_event
            self.config = config
            self.steps = steps
            self.sample_z = sample_z
            self.diagnostic_images = diagnostic_images
            self.history: list[Event] = []
            self.status = "finished"
            self.message = ""
            self.good_weights = None
            self.started = time.perf_counter()
            self.learning_rate = float(config.learning_rate)

        def _snapshot(self):
            self.good_weights = (
                self.model.encoder.get_weights(),
                self.model.decoder.get_weights(),
            )

        def on_train_begin(self, logs=None):
            self.started = time.perf_counter()
            self._snapshot()

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch
            self.epoch_started = time.perf_counter()
            self.batches = 0
            self.model.kl_weight.assign(kl_weight_for_epoch(self.config, epoch))

        def progress(self) -> float:
            """How far through the run: by batches, or by the time budget when that ends first."""
            done = (self.epoch * self.steps + self.batches) / (self.config.epochs * self.steps)
            budget = self.config.budget_minutes
            if budget is not None:
                done = max(done, (time.perf_counter() - self.started) / (budget * 60))
            return done

        def on_train_batch_begin(self, batch, logs=None):
            if self.config.lr_schedule != "constant":
                self.learning_rate = learning_rate_at(self.config, self.progress())
                self.model.optimizer.learning_rate.assign(self.learning_rate)

        def on_train_batch_end(self, batch, logs=None):
            self.batches = batch + 1
            # The loss is looked at when reported (and on an epoch's last batch, and at
            # the epoch's end): a NaN found a few batches late still rolls back to the
            # last good epoch, and the other batches cost two comparisons.
            report = self.batches % self.config.report_every == 0 or self.batches == self.steps
            if report:
                values = {key: float(logs[key]) for key in ("loss", "reconstruction", "kl")}
                if not all(math.isfinite(value) for value in values.values()):
                    self.status = "diverged"
                    self.message = (
                        f"the loss became {values['loss']} at epoch {self.epoch + 1}, batch "
                        f"{batch + 1}; kept the weights of the last good epoch "
                        f"({len(self.history)}). Try a lower learning rate or a KL warm-up."
                    )
                    self.model.stop_training = True
                    return
            budget = self.config.budget_minutes
            if budget is not None and time.perf_counter() - self.started > budget * 60:
                self.status = "budget"
                self.message = (
                    f"reached the time budget of {budget:g} minutes at epoch {self.epoch + 1}, "
                    f"batch {batch + 1}; saved what was learned."
                )
                self.model.stop_training = True
            elif self.stop_event is not None and self.stop_event.is_set():
                self.status = "stopped"
                self.message = (
                    f"stopped by the user at epoch {self.epoch + 1}, batch {batch + 1}; "
                    "saved what was learned so far."
                )
                self.model.stop_training = True
            if report:
                self.on_event(
                    {
                        "type": "batch",
                        "epoch": self.epoch + 1,
                        "batch": self.batches,
                        "steps": self.steps,
                        "elapsed": time.perf_counter() - self.started,
                        **values,
                    }
                )

        def on_epoch_end(self, epoch, logs=None):
            if self.status == "diverged":
                return
            logs = logs or {}
            row = {
                "epoch": epoch + 1,
                "batches": self.batches,
                **{key: float(logs.get(key, math.nan)) for key in _METRICS},
                "seconds": round(time.perf_counter() - self.epoch_started, 3),
                "kl_weight": float(kl_weight_for_epoch(self.config, epoch)),
                "learning_rate": self.learning_rate,  # at the epoch's last batch
            }
            broken = [key for key in _METRICS if key in logs and not math.isfinite(row[key])]
            if broken:
                self.status = "diverged"
                if all(key.startswith("val_") for key in broken):
                    where = f"the validation loss became {row.get('val_loss')} at epoch {epoch + 1}"
                else:  # between two reported batches
                    where = (
                        f"the loss became {row['loss']} at epoch {epoch + 1}, "
                        f"batch {self.batches} or before"
                    )
                self.message = (
                    f"{where}; kept the weights of the last good epoch. Try a lower learning rate."
                )
                self.model.stop_training = True
                return
            from dogvae.model import decode, encode

            z_mean, z_log_var = encode(self.model.encoder, self.diagnostic_images)
            row.update(latent_diagnostics(z_mean, z_log_var))
            self._snapshot()
            self.history.append(row)
            samples = latent.to_uint8(decode(self.model.decoder, self.sample_z))
            self.on_event(
                {"type": "epoch", "epochs": self.config.epochs, **row, "samples": samples}
            )

        def on_train_end(self, logs=None):
            if self.status == "diverged" and self.good_weights is not None:
                self.model.encoder.set_weights(self.good_weights[0])
                self.model.decoder.set_weights(self.good_weights[1])

    return LiveHistory


_METRICS = ("loss", "reconstruction", "kl", "val_loss", "val_reconstruction", "val_kl")


# Up to this many bytes of in-memory images go into tf.data as one tensor; beyond
# it, or for a memory-mapped array, batches are gathered from the array itself.
MAX_TENSOR_BYTES = 256 * 1024**2


def _batches(
    tf,
    images: np.ndarray,
    batch_size: int,
    shuffle: bool,
    seed: int,
    indices: np.ndarray | None = None,
    flip: bool = False,
    shift: int = 0,
):
    """A tf.data pipeline of shuffled uint8 batches, cast to float inside the model.

    The batches hold the rows ``indices`` of ``images`` (default: all). Small
    in-memory sets become one tensor. Larger or memory-mapped sets stream:
    only the row numbers go through tf.data (shuffled per epoch with ``seed``)
    and each batch is gathered from ``images``, so the set is never copied whole,
    into a TensorFlow constant or into float32. Both give the same batches. With
    ``flip``, each image is mirrored left to right with probability 1/2, afresh
    every epoch; with ``shift``, each image moves by up to that many pixels.
    """
    rows = np.arange(len(images)) if indices is None else np.asarray(indices, np.int64)
    mapping = _mapping_of(images)
    load = None
    if mapping is None and len(rows) * images[0].nbytes <= MAX_TENSOR_BYTES:
        dataset = tf.data.Dataset.from_tensor_slices(images if indices is None else images[rows])
    else:
        gather = _Gather(images, mapping)
        shape = (None, *images.shape[1:])

        def load(batch_rows):
            batch = tf.numpy_function(gather, [batch_rows], tf.uint8, stateful=False)
            return tf.ensure_shape(batch, shape)

        dataset = tf.data.Dataset.from_tensor_slices(rows)
    if shuffle:
        dataset = dataset.shuffle(len(rows), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size)
    if load is not None:
        dataset = dataset.map(load)
    if flip:
        dataset = dataset.map(_flipper(tf, seed))
    if shift:
        dataset = dataset.map(_shifter(tf, seed, shift))
    return dataset.prefetch(tf.data.AUTOTUNE)


def _flipper(tf, seed: int):
    """A tf.data map that mirrors each image of a batch (N, H, W, C) with probability 1/2."""
    generator = tf.random.Generator.from_seed(seed)

    def flip(batch):
        heads = generator.uniform((tf.shape(batch)[0], 1, 1, 1)) < 0.5
        return tf.where(heads, tf.reverse(batch, axis=[2]), batch)

    return flip


def _shifter(tf, seed: int, shift: int):
    """A tf.data map that moves each image of a batch (N, H, W, C) by its own random
    offset of -shift to +shift pixels along each axis, mirroring the edge into the gap."""
    generator = tf.random.Generator.from_seed(seed + 1)  # not the flips' draws

    def move(batch):
        count, height, width = tf.shape(batch)[0], tf.shape(batch)[1], tf.shape(batch)[2]
        padding = [[0, 0], [shift, shift], [shift, shift], [0, 0]]
        padded = tf.pad(batch, padding, mode="SYMMETRIC")
        offsets = generator.uniform((count, 2), 0, 2 * shift + 1, dtype=tf.int32)
        rows = offsets[:, :1] + tf.range(height)[tf.newaxis, :]
        columns = offsets[:, 1:] + tf.range(width)[tf.newaxis, :]
        moved = tf.gather(padded, rows, axis=1, batch_dims=1)
        return tf.gather(moved, columns, axis=2, batch_dims=1)

    return move


def _mapping_of(images: np.ndarray):
    """The mmap under a memory-mapped array (or a view of one), else None."""
    import mmap

    base = images
    while base is not None:
        if isinstance(base, mmap.mmap):
            return base
        base = getattr(base, "base", None)
    return None


class _Gather:
    """Copies the rows of one batch out of an array, then hands mapped pages back.

    A memory-mapped set's pages count towards the process's resident memory once
    read, and reading one maps its neighbours too (Linux's fault-around, 64 KB or
    a whole large folio): 4 KB images read in shuffled order had mapped all
    390 MB of 100,000 of them after a sixteenth of an epoch. So the mapping is
    dropped after every batch. The pages stay in the page cache, so the next
    read of them is a minor fault; dropping costs well under a millisecond, and
    a training step takes tens.
    """

    def __init__(self, images: np.ndarray, mapping) -> None:
        self.images = images
        self.release = getattr(mapping, "madvise", None)

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        batch = self.images[rows]
        if self.release is not None:
            import mmap

            self.release(mmap.MADV_DONTNEED)
        return batch


def _first_rows(images: np.ndarray, indices: np.ndarray | None) -> np.ndarray:
    """The first MAX_DIAGNOSTIC_IMAGES images (of ``indices``), copied out of the array."""
    if indices is None:
        return np.array(images[:MAX_DIAGNOSTIC_IMAGES])
    return images[np.asarray(indices[:MAX_DIAGNOSTIC_IMAGES], np.int64)]


STRATEGIES = ("default", "mirrored", "multiworker")


def make_strategy(name: str = "default"):
    """A tf.distribute strategy by name.

    "default" trains on one device (the CPU, or the first GPU); "mirrored"
    replicates over every local GPU (the CPU when there is none); "multiworker"
    spans machines as described by the TF_CONFIG environment variable (create it
    before any other TensorFlow work, as TensorFlow requires).
    """
    import tensorflow as tf

    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"unknown strategy {name!r}; choose one of: {', '.join(STRATEGIES)}")


def is_chief() -> bool:
    """Whether this process saves the run: always, except on a multi-worker's other workers.

    TF_CONFIG names the chief either as task type "chief" or, in a cluster
    without one, as worker 0.
    """
    import json
    import os

    config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    task = config.get("task") or {}
    if not task:
        return True
    if "chief" in (config.get("cluster") or {}):
        return task.get("type") == "chief"
    return task.get("type") == "worker" and task.get("index", 0) == 0


def train_vae(
    train_images: np.ndarray,
    validation_images: np.ndarray | None,
    model_config: ModelConfig,
    train_config: TrainConfig,
    *,
    on_event: OnEvent | None = None,
    stop_event: threading.Event | None = None,
    extra_callbacks: tuple = (),
    strategy=None,
    initial_weights: tuple[list, list] | None = None,
    train_indices: np.ndarray | None = None,
    validation_indices: np.ndarray | None = None,
) -> TrainResult:
    """Train a fresh VAE on uint8 images (N, H, W, C).

    Args:
        train_images: Training images, uint8 (a memory-mapped array streams from disk).
        validation_images: Held-out images, uint8, or None/empty for none.
        model_config: The architecture.
        train_config: Epochs, batch size, learning rate, seed, KL schedule.
        on_event: Called with progress events (see ``LiveHistory``) from the training thread.
        stop_event: When set, training ends after the current batch.
        extra_callbacks: More Keras callbacks, run before the built-in one.
        strategy: A tf.distribute strategy (see ``make_strategy``); None for one device.
            ``batch_size`` is the global batch, split over the replicas.
        initial_weights: (encoder weights, decoder weights) to continue from, e.g. a
            saved run's, instead of a fresh initialisation.
        train_indices: Train on these rows of ``train_images`` only (default: all), so
            that one split of a large array needs no copy.
        validation_indices: Likewise for ``validation_images``.

    Returns:
        The models with their last good weights, the per-epoch history and how it ended.
    """
    model_config.validate()
    train_config.validate()
    expected = (model_config.image_size, model_config.image_size, model_config.channels)
    if train_images.ndim != 4 or train_images.shape[1:] != expected:
        raise ValueError(
            f"training images have shape {train_images.shape[1:]}, expected {expected}"
        )
    train_count = len(train_images) if train_indices is None else len(train_indices)
    if train_count == 0:
        raise ValueError("no training images: the training split is empty")
    if train_images.dtype != np.uint8:
        raise ValueError(f"images must be uint8, got {train_images.dtype}")

    import keras
    import tensorflow as tf

    from dogvae.model import build_vae

    keras.utils.set_random_seed(train_config.seed)
    with (strategy or tf.distribute.get_strategy()).scope():
        vae = build_vae(model_config, kl_weight=kl_weight_for_epoch(train_config, 0))
        if initial_weights is not None:
            vae.encoder.set_weights(initial_weights[0])
            vae.decoder.set_weights(initial_weights[1])
        vae.compile(optimizer=keras.optimizers.Adam(learning_rate=train_config.learning_rate))

    validation_count = 0
    if validation_images is not None:
        validation_count = (
            len(validation_images) if validation_indices is None else len(validation_indices)
        )
    has_validation = validation_count > 0
    batch_size = min(train_config.batch_size, train_count)
    steps = math.ceil(train_count / batch_size)
    if has_validation:
        diagnostic_images = _first_rows(validation_images, validation_indices)
    else:
        diagnostic_images = _first_rows(train_images, train_indices)
    callback = _make_live_history(keras)(
        on_event=on_event or (lambda event: None),
        stop_event=stop_event,
        config=train_config,
        steps=steps,
        sample_z=latent.sample_latents(SAMPLE_COUNT, model_config.latent_dim, train_config.seed),
        diagnostic_images=diagnostic_images,
    )
    started = time.perf_counter()
    vae.fit(
        _batches(
            tf,
            train_images,
            batch_size,
            True,
            train_config.seed,
            train_indices,
            flip=train_config.flip,
            shift=train_config.shift,
        ),
        validation_data=(
            _batches(tf, validation_images, batch_size, False, 0, validation_indices)
            if has_validation
            else None
        ),
        epochs=train_config.epochs,
        shuffle=False,  # the pipeline shuffles
        verbose=0,
        callbacks=[*extra_callbacks, callback],
    )
    seconds = time.perf_counter() - started
    message = callback.message or f"trained {len(callback.history)} epochs in {seconds:.0f} s."
    return TrainResult(
        vae.encoder, vae.decoder, callback.history, callback.status, message, seconds
    )


def train_and_save(
    dataset: Dataset,
    model_config: ModelConfig,
    train_config: TrainConfig,
    data_config: DataConfig,
    out_dir: str | Path,
    *,
    preset: str = "custom",
    on_event: OnEvent | None = None,
    stop_event: threading.Event | None = None,
    strategy=None,
    initial_weights: tuple[list, list] | None = None,
    init_from: dict[str, Any] | None = None,
    stop_reason: Callable[[], str] | None = None,
) -> tuple[Path, TrainResult]:
    """Train on ``dataset`` and save the run folder ``out_dir`` (atomically).

    A stopped or diverged training is still saved, with its last good weights,
    as long as at least one epoch or batch ran; the run's config says how it ended.
    ``stop_reason``, asked once training has ended, gives why it was stopped when
    that was not the user ("" for no reason); it starts the saved message.
    """
    from dogvae import runs

    dataset.require_images()
    if (data_config.image_size, data_config.channels) != (
        model_config.image_size,
        model_config.channels,
    ):
        raise ValueError(
            f"the data is {data_config.image_size}x{data_config.image_size}x"
            f"{data_config.channels} but the model expects {model_config.image_size}x"
            f"{model_config.image_size}x{model_config.channels}"
        )
    runs.check_run_target(out_dir)
    # Indices into the one array: a split of a large (memory-mapped) set is never copied.
    train_indices = dataset.train_indices
    result = train_vae(
        dataset.images,
        dataset.images,
        model_config,
        train_config,
        on_event=on_event,
        stop_event=stop_event,
        strategy=strategy,
        initial_weights=initial_weights,
        train_indices=train_indices,
        validation_indices=dataset.validation_indices,
    )
    reason = stop_reason() if stop_reason is not None else ""
    if reason:
        result.message = f"{reason}; {result.message}"
    if not is_chief():
        return Path(out_dir), result  # the chief saves; every worker trained the same weights
    run_dir = runs.save_run(
        out_dir,
        result.encoder,
        result.decoder,
        preset=preset,
        model_config=model_config,
        train_config=train_config,
        data_config=data_config,
        data=dataset.report.to_dict(),
        history=result.history,
        status=result.status,
        message=result.message,
        seconds=result.seconds,
        latent_stats=training_statistics(result.encoder, dataset),
        init_from=init_from,
    )
    return run_dir, result


def training_statistics(encoder: Any, dataset: Dataset) -> dict[str, np.ndarray] | None:
    """The latent statistics of a dataset's training split under ``encoder``.

    Encodes up to MAX_STATISTICS_IMAGES training images and returns
    ``latent.latent_statistics`` of their means and log-variances (what
    sliders, sampling and the 2-D scatter use), or None for fewer than 2 images.
    """
    from dogvae.model import encode

    rows = dataset.train_indices[:MAX_STATISTICS_IMAGES]
    if len(rows) < 2:
        return None
    # In slices, so that a large RGB set is not copied 20,000 images at once, and
    # through _Gather, so that a memory-mapped set's pages are handed back.
    gather = _Gather(dataset.images, _mapping_of(dataset.images))
    codes = [
        encode(encoder, gather(rows[start : start + 2048])) for start in range(0, len(rows), 2048)
    ]
    z_means = np.concatenate([means for means, _ in codes])
    z_log_vars = np.concatenate([log_vars for _, log_vars in codes])
    return latent.latent_statistics(z_means, z_log_vars)


class TrainingSlots:
    """A server-wide cap on concurrent trainings (one instance per server process)."""

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self._semaphore = threading.BoundedSemaphore(capacity)
        self._lock = threading.Lock()
        self._running = 0

    @property
    def running(self) -> int:
        with self._lock:
            return self._running

    def acquire(self) -> None:
        """Take a slot or raise RuntimeError saying the server is busy."""
        if not self._semaphore.acquire(blocking=False):
            raise RuntimeError(
                f"{self.capacity} training(s) already running on this server, the most it "
                "allows; wait for one to finish and start again."
            )
        with self._lock:
            self._running += 1

    def release(self) -> None:
        with self._lock:
            self._running -= 1
        self._semaphore.release()


# Seconds a server that is shutting down waits for its running trainings to save.
SHUTDOWN_SAVE_SECONDS = 120.0
_running_jobs: weakref.WeakValueDictionary[int, TrainingJob] = weakref.WeakValueDictionary()
_exit_hook = threading.Lock()
_exit_hook_registered = False


def _register_exit_hook() -> None:
    global _exit_hook_registered
    with _exit_hook:
        if not _exit_hook_registered:
            # TensorFlow registers exit hooks of its own when imported; importing it first
            # means (last in, first out) the save runs while TensorFlow still works.
            import tensorflow  # noqa: F401

            atexit.register(save_running_jobs)
            _exit_hook_registered = True


def stop_running_jobs() -> list[TrainingJob]:
    """Tell every running training that the server is shutting down; do not wait.

    Each ends after its current batch and saves from its own thread. Safe to call
    from a signal handler, and more than once. Returns the jobs it told.
    """
    jobs = [job for job in list(_running_jobs.values()) if job.running]
    for job in jobs:
        job.shut_down = True
        job.stop()
    return jobs


def save_running_jobs(timeout: float = SHUTDOWN_SAVE_SECONDS) -> list[TrainingJob]:
    """Stop every running training and wait up to ``timeout`` s for each to save.

    Runs at interpreter exit: the training threads are daemons, so without this a
    server stopped by Ctrl-C, SIGTERM or ``docker stop`` would kill them mid-epoch and
    lose the training. Returns the jobs it stopped.
    """
    jobs = stop_running_jobs()
    deadline = time.monotonic() + timeout
    for job in jobs:
        saved = job.wait(max(0.0, deadline - time.monotonic())) and job.run_dir is not None
        outcome = f"saved {job.run_dir.name} ({job.status})" if saved else "could not save"
        print(f"dogvae: the server is shutting down; {outcome}", file=sys.stderr, flush=True)
    return jobs


@dataclass
class TrainingJob:
    """One training in a background thread, observable from the page that started it.

    The worker thread appends events under a lock; the page reads copies. The
    job keeps every epoch row and every epoch's sample grid, so a page that is
    left and revisited redraws everything.
    """

    dataset: Dataset
    model_config: ModelConfig
    train_config: TrainConfig
    data_config: DataConfig
    out_dir: Path
    preset: str = "custom"
    slots: TrainingSlots | None = None
    is_wanted: Callable[[], bool] | None = None  # False once nobody watches (tab closed)
    initial_weights: tuple[list, list] | None = field(default=None, repr=False)  # fine-tune
    init_from: dict[str, Any] | None = None  # what the initial weights came from (lineage)
    abandon_after: float = 30.0  # seconds unwanted before the job stops itself
    status: str = field(default="pending", init=False)  # then running, finished, stopped,
    message: str = field(default="", init=False)  # diverged or failed
    run_dir: Path | None = field(default=None, init=False)
    abandoned: bool = field(default=False, init=False)
    shut_down: bool = field(default=False, init=False)  # stopped because the server exits
    started: float = field(default=0.0, init=False)
    _epochs: list[Event] = field(default_factory=list, init=False, repr=False)
    _batches: list[Event] = field(default_factory=list, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _stop: threading.Event = field(default_factory=threading.Event, init=False, repr=False)
    _thread: threading.Thread | None = field(default=None, init=False, repr=False)

    def start(self) -> TrainingJob:
        """Start the worker thread; raises RuntimeError when the server is at its limit."""
        if self._thread is not None:
            raise RuntimeError("this training job was already started")
        if self.slots is not None:
            self.slots.acquire()
        self.status = "running"
        self.started = time.time()
        self._thread = threading.Thread(target=self._work, name="dogvae-training", daemon=True)
        _register_exit_hook()
        _running_jobs[id(self)] = self
        self._thread.start()
        if self.is_wanted is not None:
            threading.Thread(target=self._watch, name="dogvae-training-watch", daemon=True).start()
        return self

    def _watch(self) -> None:
        """Stop the training when its session has been gone for ``abandon_after`` seconds.

        A closed browser tab must not leave a thread training (and holding a
        server slot) for hours; a brief reconnect must not kill the training.
        """
        last_wanted = time.monotonic()
        while self.running:
            if self.is_wanted():
                last_wanted = time.monotonic()
            elif time.monotonic() - last_wanted > self.abandon_after:
                self.abandoned = True
                self.stop()
                return
            time.sleep(min(1.0, self.abandon_after / 4))

    def stop(self) -> None:
        """Ask the worker to end after its current batch (it still saves the run)."""
        self._stop.set()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the worker ends; True when it has."""
        if self._thread is not None:
            self._thread.join(timeout)
        return not self.running

    def epochs(self) -> list[Event]:
        """Copies of the epoch events so far (history rows plus their sample grids)."""
        with self._lock:
            return list(self._epochs)

    def batches(self) -> list[Event]:
        """Copies of the batch events so far (for a live chart)."""
        with self._lock:
            return list(self._batches)

    def last_batch(self) -> Event | None:
        with self._lock:
            return self._batches[-1] if self._batches else None

    def progress(self) -> dict[str, Any]:
        """Epoch, batch, fraction done and estimated seconds left, for a progress bar."""
        total_epochs = self.train_config.epochs
        with self._lock:
            batch = self._batches[-1] if self._batches else None
            done_epochs = len(self._epochs)
        if batch is None:
            return {"epoch": 0, "batch": 0, "steps": 0, "fraction": 0.0, "seconds_left": None}
        steps = batch["steps"]
        within = batch["batch"] / steps if batch["epoch"] > done_epochs else 0.0
        fraction = min(1.0, (done_epochs + within) / total_epochs)
        seconds_left = batch["elapsed"] * (1 - fraction) / fraction if fraction > 0 else None
        return {
            "epoch": batch["epoch"],
            "batch": batch["batch"],
            "steps": steps,
            "fraction": fraction,
            "seconds_left": seconds_left,
        }

    def _stop_reason(self) -> str:
        if self.abandoned:
            return "the browser session closed, so training stopped"
        if self.shut_down:
            return "the server shut down, so training stopped"
        return ""

    def _record(self, event: Event) -> None:
        with self._lock:
            if event["type"] == "batch":
                self._batches.append(event)
            else:
                self._epochs.append(event)

    def _work(self) -> None:
        try:
            self.run_dir, result = train_and_save(
                self.dataset,
                self.model_config,
                self.train_config,
                self.data_config,
                self.out_dir,
                preset=self.preset,
                on_event=self._record,
                stop_event=self._stop,
                initial_weights=self.initial_weights,
                init_from=self.init_from,
                stop_reason=self._stop_reason,
            )
            self.status, self.message = result.status, result.message
        except Exception as error:
            self.status = "failed"
            self.message = str(error) or type(error).__name__
            traceback.print_exc()
        finally:
            if self.slots is not None:
                self.slots.release()
