"""Trainings in the background: TrainingJob, the server's cap on them, and its shutdown.

A ``TrainingJob`` runs ``train_and_save`` in a thread of its own and keeps the
events for the Train page to draw; the worker never touches Streamlit. A server
that shuts down (Ctrl-C, SIGTERM, ``docker stop``, or the interpreter exiting)
tells its running jobs to stop and waits for them to save.
"""

from __future__ import annotations

import atexit
import sys
import threading
import time
import traceback
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dogvae.config import DataConfig, ModelConfig, TrainConfig
from dogvae.data import Dataset
from dogvae.training.checkpoint import Checkpoint
from dogvae.training.events import Event
from dogvae.training.loop import resume_and_save, train_and_save


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


def running_run_dirs() -> set[Path]:
    """The run folders this server is training into now (their checkpoints are live)."""
    return {job.out_dir.resolve() for job in list(_running_jobs.values()) if job.running}


def resumed_events(checkpoint: Checkpoint) -> tuple[list[Event], list[Event]]:
    """Epoch and batch events for the epochs a checkpoint has done, so that a resumed
    job's chart starts with them (one point an epoch; the last epoch's samples)."""
    epochs, batches, elapsed = [], [], 0.0
    total = checkpoint.settings["train"]["epochs"]
    for row in checkpoint.history:
        elapsed += float(row.get("seconds") or 0.0)
        epochs.append({"type": "epoch", "epochs": total, **row})
        steps = int(row.get("batches") or 1)
        losses = {key: row.get(key) for key in ("loss", "reconstruction", "kl")}
        batches.append(
            {"type": "batch", "epoch": row["epoch"], "batch": steps, "steps": steps}
            | {"elapsed": elapsed, **losses}
        )
    if epochs and checkpoint.samples is not None:
        epochs[-1]["samples"] = checkpoint.samples
    return epochs, batches


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


def running_job_into(out_dir: str | Path) -> TrainingJob | None:
    """The training running in this process that will save to ``out_dir``, if any."""
    target = Path(out_dir).resolve()
    for job in list(_running_jobs.values()):
        if job.running and Path(job.out_dir).resolve() == target:
            return job
    return None


def save_running_jobs(timeout: float | None = None) -> list[TrainingJob]:
    """Stop every running training and wait up to ``timeout`` s for each to save.

    Runs at interpreter exit: the training threads are daemons, so without this a
    server stopped by Ctrl-C, SIGTERM or ``docker stop`` would kill them mid-epoch and
    lose the training. ``timeout`` defaults to SHUTDOWN_SAVE_SECONDS. Returns the
    jobs it stopped.
    """
    if timeout is None:
        timeout = SHUTDOWN_SAVE_SECONDS
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
    tensorboard_dir: Path | None = None  # also write TensorBoard logs here
    source: dict[str, Any] | None = None  # where the data came from, for a later resume
    resume: Checkpoint | None = field(default=None, repr=False)  # go on from this checkpoint
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
        if self.resume is not None:
            self._epochs, self._batches = resumed_events(self.resume)
        self._thread = threading.Thread(target=self._work, name="dogvae-training", daemon=True)
        _register_exit_hook()
        _running_jobs[id(self)] = self
        self._thread.start()
        if self.is_wanted is not None:
            threading.Thread(target=self._watch, name="dogvae-training-watch", daemon=True).start()
        return self

    @classmethod
    def resuming(cls, checkpoint: Checkpoint, dataset: Dataset, **options: Any) -> TrainingJob:
        """A job that goes on with an interrupted run (``read_checkpoint(RUN)``) on
        ``dataset``, with the run's own settings; ``options`` as for the constructor."""
        settings = checkpoint.settings
        model_config, train_config, data_config = checkpoint.configs()
        if settings.get("tensorboard_dir"):  # it goes on writing its logs where it did
            options.setdefault("tensorboard_dir", Path(settings["tensorboard_dir"]))
        return cls(
            dataset=dataset,
            model_config=model_config,
            train_config=train_config,
            data_config=data_config,
            out_dir=checkpoint.path.parent,
            preset=settings.get("preset", "custom"),
            init_from=settings.get("init_from"),
            source=settings.get("source"),
            resume=checkpoint,
            **options,
        )

    def _watch(self) -> None:
        """Stop the training when its session has been gone for ``abandon_after`` seconds.

        A closed browser tab must not leave a thread training (and holding a
        server slot) for hours; a brief reconnect must not kill the training.
        """
        gone_since = None  # when the session was first seen gone (it left before that)
        while self.running:
            if self.is_wanted():
                gone_since = None
            elif gone_since is None:
                gone_since = time.monotonic()
            elif time.monotonic() - gone_since >= self.abandon_after:
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
            if self.resume is not None:
                self.run_dir, result = resume_and_save(
                    self.resume,
                    self.dataset,
                    on_event=self._record,
                    stop_event=self._stop,
                    stop_reason=self._stop_reason,
                )
            else:
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
                    source=self.source,
                    tensorboard_dir=self.tensorboard_dir,
                    replace=False,  # another session may have saved under this name meanwhile
                )
            self.status, self.message = result.status, result.message
        except Exception as error:
            self.status = "failed"
            self.message = str(error) or type(error).__name__
            traceback.print_exc()
        finally:
            if self.slots is not None:
                self.slots.release()
