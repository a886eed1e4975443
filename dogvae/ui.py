"""Streamlit glue shared by the pages: the only dogvae module that imports streamlit.

Folders come from the environment: DOGVAE_DATA_DIR (default ./data) holds the
datasets users may pick and that uploaded CSVs may point into; DOGVAE_RUNS_DIR
(default ./runs) holds the run folders, DOGVAE_TENSORBOARD_DIR (default ./tensorboard)
the TensorBoard logs the Train page writes. DOGVAE_MAX_TRAININGS caps concurrent
trainings on the server (default 2); DOGVAE_ABANDON_SECONDS is how long a training
goes on after its browser tab closed (default 30). DOGVAE_DEFAULT_RUN is the run a new
session starts with (default: the pretrained model shipped in models/default;
"none" for no default). DOGVAE_WARM_UP=0 stops the background import of TensorFlow
at start-up. DOGVAE_STREAMLIT_CLEANUP=1 keeps Streamlit's Keras reset after every
script run (see keep_keras_between_runs; for bench/train_in_app.py's comparison).

Nothing here imports TensorFlow at module level: the Data page must work before
TensorFlow has loaded.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import importlib
import math
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import streamlit as st

from dogvae import canvas_ui, images, latent
from dogvae.runs import LATENT_STATS

if TYPE_CHECKING:
    from dogvae.config import ModelConfig
    from dogvae.data import Dataset
    from dogvae.latent_stats import LatentStats
    from dogvae.loaded_run import LoadedRun
    from dogvae.runs import RunInfo
    from dogvae.training import TrainingJob, TrainingSlots

BUNDLED_RUN = Path(__file__).resolve().parents[1] / "models" / "default"
ACTIVE_RUN = "active_run"  # session key: path (str) of the run the pages use
DATASET = "dataset"  # session key: the loaded Dataset
JOB = "training_job"  # session key: this session's TrainingJob
VANISHED_RUN = "vanished_run"  # session key: name of an active run that has gone, to say so
DATASET_UPLOAD_MB = 200  # per-widget upload limits, below server.maxUploadSize
PHOTO_UPLOAD_MB = 20
PHOTO_TYPES = ["jpg", "jpeg", "png", "webp", "bmp"]  # what the photo uploaders accept


def keep_keras_between_runs() -> bool:
    """Stop Streamlit from resetting Keras after every script run; True when it is stopped.

    After each run, fragment reruns included, Streamlit calls
    ``keras.backend.clear_session()``, which a training watched on the Train page
    (whose chart reruns every second) then spends its time rebuilding (README,
    Performance). dogvae keeps no per-run Keras state to clear; the other half of
    Streamlit's clean-up, closing matplotlib's figures, is kept.
    """
    from streamlit.runtime.scriptrunner import script_runner

    current = getattr(script_runner, "_clean_problem_modules", None)
    if current is None or os.environ.get("DOGVAE_STREAMLIT_CLEANUP") == "1":
        return False
    if getattr(current, "keeps_keras", False):
        return True

    def close_figures() -> None:
        # No ``close`` yet: another thread (the warm-up) is still importing pyplot.
        close = getattr(sys.modules.get("matplotlib.pyplot"), "close", None)
        if close is not None:
            close("all")

    close_figures.keeps_keras = True  # type: ignore[attr-defined]
    close_figures.replaces = current  # type: ignore[attr-defined]
    script_runner._clean_problem_modules = close_figures
    return True


keep_keras_between_runs()


def data_dir() -> Path:
    return Path(os.environ.get("DOGVAE_DATA_DIR", "data")).expanduser().resolve()


def runs_dir() -> Path:
    return Path(os.environ.get("DOGVAE_RUNS_DIR", "runs")).expanduser().resolve()


def tensorboard_dir() -> Path:
    """Where the Train page writes TensorBoard logs, a folder a run (see the module's doc)."""
    return Path(os.environ.get("DOGVAE_TENSORBOARD_DIR", "tensorboard")).expanduser().resolve()


def max_trainings() -> int:
    try:
        return max(1, int(os.environ.get("DOGVAE_MAX_TRAININGS", "2")))
    except ValueError:
        return 2


def abandon_seconds() -> float:
    """How long a training outlives its closed browser tab: DOGVAE_ABANDON_SECONDS, else 30."""
    try:
        seconds = float(os.environ.get("DOGVAE_ABANDON_SECONDS", "30"))
    except ValueError:
        return 30.0
    return seconds if seconds > 0 and math.isfinite(seconds) else 30.0


@st.cache_resource
def warm_up() -> threading.Thread:
    """Import TensorFlow and the model code, then load the default model, in the
    background, once per server.

    The Data page never needs them; by the time a user opens Generate or Train,
    the few seconds of importing TensorFlow and loading the model a new session
    starts with have passed in this thread. A page that asks for the model while
    it loads waits for this load (one lock per cache key) instead of starting another.
    """
    if os.environ.get("DOGVAE_WARM_UP", "1") == "0":
        return threading.Thread()  # never started: for tests and small servers
    thread = threading.Thread(target=warm_up_work, name="dogvae-warm-up", daemon=True)
    thread.start()
    return thread


def warm_up_work() -> None:
    """What the warm-up thread does: import the model code, then load the default run."""
    for module in ("dogvae.model", "dogvae.training"):
        importlib.import_module(module)
    path = default_run_path()
    if path is not None:
        # A broken default is the page's to report, with the reason, when a user opens it.
        with contextlib.suppress(Exception):
            load_run(path)


@st.cache_resource
def training_slots(capacity: int) -> TrainingSlots:
    """One TrainingSlots per server process, shared by every session."""
    from dogvae.training import TrainingSlots

    return TrainingSlots(capacity)


@st.cache_resource(max_entries=4, show_spinner="Loading the model…")
def _load_run(path: str, modified: float) -> LoadedRun:
    from dogvae.loaded_run import load_run

    run = load_run(path)
    # Compile the one-image encoder and decoder (XLA) now, not at the user's first
    # slider move.
    config = run.info.model_config
    run.encode(np.zeros((1, config.image_size, config.image_size, config.channels)))
    run.decode(np.zeros((1, config.latent_dim)))
    # Streamlit collects garbage after every rerun: freezing keeps everything alive
    # now (TensorFlow, the model) out of the collector's walk.
    gc.freeze()
    return run


def session_is_open() -> Callable[[], bool]:
    """A thread-safe check that this browser session is still connected.

    Given to a TrainingJob so that closing the tab stops its training. Outside a
    running server (AppTest, bare scripts) the session always counts as open.
    """
    from streamlit.runtime import Runtime, exists
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    context = get_script_run_ctx()
    if context is None or not exists():
        return lambda: True
    runtime, session_id = Runtime.instance(), context.session_id
    return lambda: runtime.is_active_session(session_id)


def load_run(path: str | Path) -> LoadedRun:
    """A run's models, cached per server by path and modification time."""
    path = Path(path)
    return _load_run(str(path), (path / "config.json").stat().st_mtime)


@st.cache_resource(max_entries=8)
def _slider_basis(path: str, version: int, latent_dim: int) -> latent.SliderBasis:
    try:
        return latent.slider_basis(latent_dim, _latent_stats(path, version, latent_dim))
    except ValueError:  # statistics that do not make directions: plain axes
        return latent.slider_basis(latent_dim)


def slider_basis(run: LoadedRun) -> latent.SliderBasis:
    """The run's slider axes (PCA directions for wide latents), cached per version of its
    latent statistics."""
    return _slider_basis(str(run.info.path), _stats_version(run), run.info.model_config.latent_dim)


def _stats_version(run: LoadedRun) -> int:
    """When the run's latent_stats.npz last changed (0: it has none)."""
    try:
        return (run.info.path / LATENT_STATS).stat().st_mtime_ns
    except OSError:
        return 0


@st.cache_resource(max_entries=8)
def _latent_stats(path: str, version: int, latent_dim: int) -> LatentStats | None:
    from dogvae.runs import read_latent_stats

    stats = read_latent_stats(path)
    if stats is None or stats.latent_dim != latent_dim:
        return None  # none recorded, or another model's copied in by hand
    return stats


def latent_stats(run: LoadedRun) -> LatentStats | None:
    """The run's statistics of its training set's latent codes, or None; cached per file
    version (``python -m dogvae stats`` rewrites the file of a run in place)."""
    return _latent_stats(str(run.info.path), _stats_version(run), run.info.model_config.latent_dim)


def default_run_path() -> Path | None:
    """The run a new session starts with: DOGVAE_DEFAULT_RUN, else the bundled model."""
    value = os.environ.get("DOGVAE_DEFAULT_RUN")
    if value is not None and value.strip().lower() in ("", "none"):
        return None
    path = Path(value).expanduser().resolve() if value else BUNDLED_RUN
    return path if (path / "config.json").is_file() else None


def is_default_run(path: str | Path) -> bool:
    """True for the default (bundled) run, which the app never deletes."""
    default = default_run_path()
    return default is not None and Path(path).resolve() == default


def list_runs() -> tuple[list[RunInfo], list[tuple[Path, str]]]:
    """The runs in the runs folder (newest first), then the default run; and broken folders."""
    from dogvae.runs import list_runs as list_runs_in
    from dogvae.runs import read_run_info

    found, problems = list_runs_in(runs_dir())
    default = default_run_path()
    if default is not None and all(info.path.resolve() != default for info in found):
        try:
            found.append(read_run_info(default))
        except (OSError, ValueError) as error:
            problems.append((default, str(error)))
    return found, problems


def active_run_path() -> Path | None:
    """The session's active run: the one chosen, else the default run, else the newest
    (and when the chosen one has gone, e.g. deleted in another session, ``sidebar`` says so)."""
    chosen = st.session_state.get(ACTIVE_RUN)
    if chosen and (Path(chosen) / "config.json").is_file():
        return Path(chosen)
    if chosen:
        st.session_state[VANISHED_RUN] = Path(chosen).name
    fallback = default_run_path()
    if fallback is None:
        found, _ = list_runs()
        if not found:
            return None
        fallback = found[0].path
    st.session_state[ACTIVE_RUN] = str(fallback)
    return fallback


def set_active_run(path: str | Path) -> None:
    st.session_state[ACTIVE_RUN] = str(path)


def active_run() -> LoadedRun | None:
    """Load the active run, or show why not and return None."""
    path = active_run_path()
    if path is None:
        return None
    try:
        return load_run(path)
    except (OSError, ValueError) as error:
        st.error(f"The active model cannot be loaded: {error} Pick another one on the Models page.")
        return None


def require_model() -> LoadedRun:
    """The active run, or an explanation and the end of the page."""
    run = active_run()
    if run is None:
        if active_run_path() is None:
            st.error(
                "No model yet. Train one on the **Train** page, or put a run folder in "
                f"`{runs_dir()}` and pick it on the **Models** page."
            )
        st.stop()
    return run


def dataset() -> Dataset | None:
    return st.session_state.get(DATASET)


def training_job() -> TrainingJob | None:
    return st.session_state.get(JOB)


def show_images(batch: np.ndarray, *, cols: int | None = None, scale: int = 2, caption=None):
    """A grid of images (N, H, W, C) as one picture, pixels enlarged for the screen."""
    grid = images.image_grid(batch, cols=cols)
    st.image(_display(images.upscale(grid, scale)), caption=caption, output_format="PNG")
    return grid


def show_image(
    image: np.ndarray, *, scale: int = 4, caption=None, width: Any = "content", inline=False
):
    """One image (H, W, C) enlarged for the screen.

    ``inline``: sent in the page's message as a data URL, so the browser shows it
    without a second request (for a small image redrawn often).
    """
    enlarged = images.upscale(images.to_uint8(image), scale)
    if inline:
        picture: Any = images.png_data_url(images.png_bytes(enlarged))
    else:
        picture = _display(enlarged)
    # PNG: the default JPEG blurs the edges of enlarged pixels.
    st.image(picture, caption=caption, width=width, output_format="PNG")


# Streamlit shrinks (bilinearly) any image wider than this, so images are only
# enlarged when they still fit and their pixels stay sharp.
MAX_IMAGE_WIDTH = 1460
GIF_SIDE = 256  # GIF frames are enlarged to about this many pixels a side


def gif_bytes(frames: np.ndarray, image_size: int) -> bytes:
    """Frames (n, H, W, C) enlarged to about GIF_SIDE pixels, forwards then back, as a GIF."""
    scale = max(1, GIF_SIDE // image_size)
    enlarged = [images.upscale(images.to_uint8(frame), scale) for frame in frames]
    return images.gif_bytes(enlarged, bounce=True)


def download_png(
    image: np.ndarray | bytes, file_name: str, *, key: str, label: str = "Download PNG"
) -> None:
    """A button that downloads an image (or ready PNG bytes) as a PNG, without a rerun."""
    data = image if isinstance(image, bytes) else images.png_bytes(image)
    st.download_button(
        label, data, file_name=file_name, mime="image/png", on_click="ignore", key=key
    )


def download_gif(frames: np.ndarray, image_size: int, file_name: str, *, key: str) -> None:
    """A button that downloads frames as an animated GIF (see ``gif_bytes``), without a rerun."""
    st.download_button(
        "Download GIF",
        # Made only when clicked: encoding the enlarged frames is slow.
        functools.partial(gif_bytes, frames, image_size),
        file_name=file_name,
        mime="image/gif",
        on_click="ignore",
        key=key,
    )


def decode_photo(upload: Any, config: ModelConfig) -> np.ndarray | None:
    """An uploaded photo as the model sees it, or None with the reason shown."""
    from dogvae.data import decode_image

    try:
        return decode_image(upload.getvalue(), config.image_size, config.channels)
    except ValueError as error:
        st.error(
            f"That file is not a usable image: {error}. Upload a JPEG, PNG, WebP or BMP photo."
        )
        return None


def _display(image: np.ndarray) -> np.ndarray:
    return image[..., 0] if image.ndim == 3 and image.shape[2] == 1 else image


def sidebar() -> None:
    """The active model, the loaded dataset and a running training, on every page."""
    with st.sidebar:
        path = active_run_path()
        if vanished := st.session_state.pop(VANISHED_RUN, None):
            instead = f"**{path.name}** is active instead" if path else "no model is active now"
            st.warning(
                f"The active model **{vanished}** was deleted (in another session?); {instead}."
            )
        st.caption("Active model")
        st.markdown(f"**{path.name}**" if path else "_none yet_")
        data = dataset()
        st.caption("Dataset")
        st.markdown(data.report.summary() if data is not None else "_none loaded_")
        job = training_job()
        if job is not None and job.running:
            _training_status(job)
    canvas_ui.preload()  # the browser decoder's runtime, ready before a page needs it


@st.fragment(run_every=2.0)
def _training_status(job: TrainingJob) -> None:
    """The sidebar's training bar, redrawn on its own while the page sits still."""
    if not job.running:
        return
    progress = job.progress()
    st.caption("Training")
    st.progress(
        progress["fraction"], text=f"epoch {progress['epoch']} of {job.train_config.epochs}"
    )
