"""The training loop: ``train_vae`` fits a VAE, ``train_and_save`` also saves the run folder.

The CLI and the app train through the same ``train_and_save``: the CLI prints
the events it gets, the app's ``TrainingJob`` runs it in a thread and keeps the
events for the page to draw. TensorFlow is imported when a training starts, not
with this module.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dogvae import latent
from dogvae.config import DataConfig, ModelConfig, TrainConfig, to_dict
from dogvae.data import Dataset
from dogvae.latent_stats import LatentStats
from dogvae.mixture import with_mixture
from dogvae.samplers import sample_latents
from dogvae.training.checkpoint import (
    Checkpoint,
    CheckpointPlan,
    check_same_data,
    checkpoint_interval,
    clear_leftovers,
    data_fingerprint,
)
from dogvae.training.distribute import (
    is_chief,
    is_distributed,
    lost_worker_message,
    make_strategy,
)
from dogvae.training.events import Event, OnEvent
from dogvae.training.schedules import kl_weight_for_epoch

SAMPLE_COUNT = 16  # images in the per-epoch sample grid
MAX_STATISTICS_IMAGES = 20_000  # training images encoded for the run's latent statistics
STATISTICS_SLICE = 2048  # images encoded at a time for the statistics


@dataclass
class TrainResult:
    """What a training produced.

    Attributes:
        encoder: The trained encoder (last good weights).
        decoder: The trained decoder (last good weights).
        scale_decoder: For a logistic likelihood, the decoder's scale head; else None.
        history: One row per good epoch (see ``dogvae.training.events``).
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
    scale_decoder: Any = None


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
    tensorboard_dir: str | Path | None = None,
    checkpoints: CheckpointPlan | None = None,
    resume: Checkpoint | None = None,
) -> TrainResult:
    """Train a fresh VAE on uint8 images (N, H, W, C).

    Args:
        train_images: Training images, uint8 (a memory-mapped array streams from disk).
        validation_images: Held-out images, uint8, or None/empty for none.
        model_config: The architecture.
        train_config: Epochs, batch size, learning rate, seed, KL schedule.
        on_event: Called with progress events (see ``dogvae.training.events``) from
            the training thread.
        stop_event: When set, training ends after the current batch.
        extra_callbacks: More Keras callbacks, run before the built-in one.
        strategy: A tf.distribute strategy (see ``make_strategy``); None for one device.
            ``batch_size`` is the global batch, split over the replicas.
        initial_weights: (encoder weights, decoder weights) to continue from, e.g. a
            saved run's, instead of a fresh initialisation; a third item, the start's
            ``scale_head_weights``, goes into the scale head where its layers fit.
        train_indices: Train on these rows of ``train_images`` only (default: all), so
            that one split of a large array needs no copy.
        validation_indices: Likewise for ``validation_images``.
        tensorboard_dir: Also write the events to TensorBoard logs in this folder
            (see ``dogvae.training.tensorboard``); only the chief of a multi-worker
            training writes them.
        checkpoints: Write checkpoints as this plan says (see ``dogvae.training.checkpoint``).
        resume: Go on from this checkpoint (its weights, optimizer, position and
            history) instead of starting afresh; ``initial_weights`` is then ignored.

    Returns:
        The models with their last good weights, the per-epoch history and how it ended.
    """
    train_count = _check_images(train_images, train_indices, model_config)
    validation_count = _count(validation_images, validation_indices)

    import keras
    import tensorflow as tf

    from dogvae.model import build_vae, is_multi_worker, set_scale_head_weights
    from dogvae.training import callback, checkpointer, pipeline

    # The model, under the strategy whose devices it trains on.
    keras.utils.set_random_seed(train_config.seed)
    with (strategy or make_strategy()).scope():
        vae = build_vae(
            model_config,
            kl_weight=kl_weight_for_epoch(train_config, 0),
            mean_weight=train_config.mean_weight,
            mean_term=train_config.mean_term,
        )
        if initial_weights is not None:
            vae.encoder.set_weights(initial_weights[0])
            vae.decoder.set_weights(initial_weights[1])
            if len(initial_weights) > 2:  # the start's own scale head, where it fits
                set_scale_head_weights(vae.scale_decoder, initial_weights[2])
        vae.compile(optimizer=keras.optimizers.Adam(learning_rate=train_config.learning_rate))
        if resume is not None:
            checkpointer.restore(vae, resume)

    # The data: training batches shuffled and augmented, validation batches as they are.
    batch_size = min(train_config.batch_size, train_count)
    distributed = is_distributed(strategy)
    epochs = pipeline.Epochs()

    def train_data(skip: int):
        return pipeline.batches(
            train_images,
            batch_size,
            True,
            train_config.seed,
            train_indices,
            flip=train_config.flip,
            shift=train_config.shift,
            distributed=distributed,
            epochs=epochs,
            skip=skip,
        )

    validation_data = None
    if validation_count > 0:
        validation_data = pipeline.batches(
            validation_images, batch_size, False, 0, validation_indices, distributed=distributed
        )

    # The callbacks: the caller's first, then the one that reports and guards, then
    # the TensorBoard log, which writes that one's events before passing them on.
    on_event = on_event or (lambda event: None)
    log = None
    if tensorboard_dir is not None and is_chief():
        from dogvae.training.tensorboard import TensorBoardLog

        on_event = log = TensorBoardLog(tensorboard_dir, on_event)
    if validation_count > 0:
        diagnostic_rows = (validation_images, validation_indices)
    else:
        diagnostic_rows = (train_images, train_indices)
    live = callback.LiveHistory(
        on_event=on_event,
        stop_event=stop_event,
        config=train_config,
        steps=math.ceil(train_count / batch_size),
        sample_z=sample_latents(SAMPLE_COUNT, model_config.latent_dim, train_config.seed),
        diagnostic_images=pipeline.first_rows(*diagnostic_rows, callback.MAX_DIAGNOSTIC_IMAGES),
        resume=resume,
    )
    # The pipeline learns each epoch's number, which its order and flips depend on.
    order = keras.callbacks.LambdaCallback(on_epoch_begin=lambda epoch, logs: epochs.begin(epoch))
    callbacks = [*extra_callbacks, order, live, *([log] if log is not None else [])]
    if checkpoints is not None:
        callbacks.append(
            checkpointer.Checkpointer(
                run_dir=checkpoints.run_dir,
                settings=checkpoints.settings,
                live=live,
                interval=checkpoints.interval,
                resume=resume,
                mid_epoch=not is_multi_worker(strategy),
            )
        )

    started = time.perf_counter()
    for first_epoch, end_epoch, skip in _segments(resume, train_config.epochs):
        try:
            vae.fit(
                train_data(skip),
                validation_data=validation_data,
                initial_epoch=first_epoch,
                epochs=end_epoch,
                shuffle=False,  # the pipeline shuffles
                verbose=0,
                callbacks=callbacks,
            )
        except tf.errors.OpError as error:
            if not is_multi_worker(strategy):
                raise
            run_dir = checkpoints.run_dir if checkpoints is not None else None
            raise RuntimeError(lost_worker_message(error, run_dir)) from error
        if live.status != "finished":
            break
    seconds = time.perf_counter() - started + live.seconds_before

    if live.status == "diverged":
        live.roll_back()  # a NaN: back to the weights of the last good epoch
    message = live.message or f"trained {len(live.history)} epochs in {seconds:.0f} s."
    return TrainResult(
        vae.encoder, vae.decoder, live.history, live.status, message, seconds, vae.scale_decoder
    )


def _segments(resume: Checkpoint | None, epochs: int) -> list[tuple[int, int, int]]:
    """The fits a training takes: (first epoch, end epoch, batches to skip in each).

    A training resumed within an epoch first finishes that epoch in a fit of its
    own, since Keras gives every epoch of one fit the same number of batches.
    """
    first, batch = (resume.epoch, resume.batch) if resume is not None else (0, 0)
    if first >= epochs:
        return []  # killed while saving the finished run: only the save is left
    if not batch:
        return [(first, epochs, 0)]
    rest = [(first + 1, epochs, 0)] if first + 1 < epochs else []
    return [(first, first + 1, batch), *rest]


def _check_images(images: np.ndarray, indices: np.ndarray | None, model_config: ModelConfig) -> int:
    """How many training images there are, after checking that the model can take them."""
    expected = (model_config.image_size, model_config.image_size, model_config.channels)
    if images.ndim != 4 or images.shape[1:] != expected:
        raise ValueError(f"training images have shape {images.shape[1:]}, expected {expected}")
    count = _count(images, indices)
    if count == 0:
        raise ValueError("no training images: the training split is empty")
    if images.dtype != np.uint8:
        raise ValueError(f"images must be uint8, got {images.dtype}")
    return count


def _count(images: np.ndarray | None, indices: np.ndarray | None) -> int:
    """How many images the rows ``indices`` of ``images`` (default: all) hold; 0 for None."""
    if images is None:
        return 0
    return len(images) if indices is None else len(indices)


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
    tensorboard_dir: str | Path | None = None,
    replace: bool = True,
    source: dict[str, Any] | None = None,
    resume: Checkpoint | None = None,
) -> tuple[Path, TrainResult]:
    """Train on ``dataset`` and save the run folder ``out_dir`` (atomically).

    A stopped or diverged training is still saved, with its last good weights,
    as long as at least one epoch or batch ran; the run's config says how it ended.
    ``stop_reason``, asked once training has ended, gives why it was stopped when
    that was not the user ("" for no reason); it starts the saved message.
    ``tensorboard_dir``: see ``train_vae``. With ``replace=False`` an existing run
    is never replaced: a run saved at ``out_dir`` while this one trained makes this
    one ``out_dir-2`` (see ``runs.save_run``), which the returned path and message say.
    While it trains, ``out_dir/checkpoint.npz`` is kept up to date (see
    ``dogvae.training.checkpoint``); ``source`` (``{"path", "data_root"}``) says
    where the data came from, for ``resume_and_save`` to load it again. ``resume``
    goes on from a checkpoint of this run (use ``resume_and_save``).
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
    runs.check_run_target(out_dir, resuming=resume is not None)
    checkpoints = None
    if is_chief():
        if resume is not None:
            check_same_data(resume, dataset)
            clear_leftovers(out_dir)
        settings = {
            "preset": preset,
            "model": to_dict(model_config),
            "train": to_dict(train_config),
            "data_config": to_dict(data_config),
            "data": {**dataset.report.to_dict(), "unreadable": []},
            "fingerprint": data_fingerprint(dataset),
            "source": source,
            "init_from": init_from,
            # A resumed run goes on writing its TensorBoard logs where it wrote them.
            "tensorboard_dir": str(tensorboard_dir) if tensorboard_dir is not None else None,
        }
        checkpoints = CheckpointPlan(Path(out_dir), settings, checkpoint_interval())
    # Indices into the one array: a split of a large (memory-mapped) set is never copied.
    result = train_vae(
        dataset.images,
        dataset.images,
        model_config,
        train_config,
        on_event=on_event,
        stop_event=stop_event,
        strategy=strategy,
        initial_weights=initial_weights,
        train_indices=dataset.train_indices,
        validation_indices=dataset.validation_indices,
        tensorboard_dir=tensorboard_dir,
        checkpoints=checkpoints,
        resume=resume,
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
        replace=replace,
        scale_decoder=result.scale_decoder,
    )
    if run_dir != Path(out_dir):
        result.message += (
            f" A run named {Path(out_dir).name!r} was saved while this one trained, so this "
            f"one is saved as {run_dir.name!r}."
        )
    return run_dir, result


def resume_and_save(
    checkpoint: Checkpoint,
    dataset: Dataset,
    *,
    on_event: OnEvent | None = None,
    stop_event: threading.Event | None = None,
    strategy=None,
    stop_reason: Callable[[], str] | None = None,
) -> tuple[Path, TrainResult]:
    """Go on with an interrupted training to its planned end, with its own settings.

    ``checkpoint`` is ``read_checkpoint(RUN)``; ``dataset`` must be the data it
    trained on (ValueError otherwise). Saves RUN as ``train_and_save`` does.
    """
    settings = checkpoint.settings
    return train_and_save(
        dataset,
        *checkpoint.configs(),
        checkpoint.path.parent,
        preset=settings.get("preset", "custom"),
        on_event=on_event,
        stop_event=stop_event,
        strategy=strategy,
        init_from=settings.get("init_from"),
        stop_reason=stop_reason,
        tensorboard_dir=settings.get("tensorboard_dir"),
        source=settings.get("source"),
        resume=checkpoint,
    )


def training_statistics(encoder: Any, dataset: Dataset) -> LatentStats | None:
    """The latent statistics of a dataset's training split under ``encoder``.

    Encodes up to MAX_STATISTICS_IMAGES training images and returns
    ``latent.latent_statistics`` of their means and log-variances (what
    sliders, sampling and the 2-D scatter use) with the "mixture" sampler's
    Gaussian mixture fitted to the means (``mixture.with_mixture``), or None for
    fewer than 2 images.
    """
    from dogvae.model import encode
    from dogvae.training.pipeline import Gather, mapping_of

    rows = dataset.train_indices[:MAX_STATISTICS_IMAGES]
    if len(rows) < 2:
        return None
    # In slices, so that a large RGB set is not copied 20,000 images at once, and
    # through Gather, so that a memory-mapped set's pages are handed back.
    gather = Gather(dataset.images, mapping_of(dataset.images))
    codes = [
        encode(encoder, gather(rows[start : start + STATISTICS_SLICE]))
        for start in range(0, len(rows), STATISTICS_SLICE)
    ]
    z_means = np.concatenate([means for means, _ in codes])
    z_log_vars = np.concatenate([log_vars for _, log_vars in codes])
    return with_mixture(latent.latent_statistics(z_means, z_log_vars), z_means)
