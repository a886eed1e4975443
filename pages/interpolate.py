"""Interpolate: the way from one dog to another through latent space: an animation played in
the browser, a strip and a GIF."""

from __future__ import annotations

import numpy as np
import streamlit as st

from dogvae import canvas_ui, images, latent, samplers, ui
from dogvae.components.latent_canvas import browser_failed, frame_player

RANDOM = "Random point"
DATASET = "Dataset image"
UPLOAD = "Uploaded photo"
PLAYER_KEY = "interpolate-player"
FPS = 8.0  # the animation's frames per second in the browser

ui.sidebar()
st.title("Interpolate")
run = ui.require_model()
config = run.info.model_config
image_shape = (config.image_size, config.image_size, config.channels)
colour = "grayscale" if config.channels == 1 else "RGB"
canvas_ui.preload_run(run)  # the decoder's session, while the page goes on


def dataset_point(side: str) -> np.ndarray | None:
    """The encoder's mean for an image of the loaded dataset, or None with the reason shown."""
    dataset = ui.dataset()
    if dataset is None or len(dataset.images) == 0:
        st.info("No dataset loaded. Load one on the **Data** page to start from its images.")
        return None
    if dataset.images.shape[1:] != image_shape:
        height, width, channels = dataset.images.shape[1:]
        st.info(
            f"The loaded dataset has {width}x{height} "
            f"{'grayscale' if channels == 1 else 'RGB'} images, but this model takes "
            f"{config.image_size}x{config.image_size} {colour}. Load the dataset with those "
            "image settings on the **Data** page."
        )
        return None
    count = len(dataset.images)
    # The count is in the key: a smaller dataset must not inherit an index beyond its end.
    index = st.number_input(
        f"Image (0 to {count - 1})", 0, count - 1, key=f"interpolate-{side.lower()}-index-{count}"
    )
    image = dataset.images[index]
    ui.show_image(image, scale=2, caption=f"Dataset image {index}")
    return run.encode(image[None])[0][0]


def uploaded_point(side: str) -> np.ndarray | None:
    """The encoder's mean for an uploaded photo, or None with the reason shown."""
    upload = st.file_uploader(
        "Photo",
        type=ui.PHOTO_TYPES,
        key=f"interpolate-{side.lower()}-upload",
        max_upload_size=ui.PHOTO_UPLOAD_MB,
    )
    if upload is None:
        st.info(f"Upload a photo of a dog to use it as the {side.lower()}.")
        return None
    image = ui.decode_photo(upload, config)
    if image is None:
        return None
    ui.show_image(image, scale=2, caption=upload.name)
    return run.encode(image[None])[0][0]


def endpoint(side: str, default_seed: int) -> np.ndarray | None:
    """One end of the path, chosen in the current column; None while it is missing."""
    st.subheader(side)
    source = st.segmented_control(
        "From",
        [RANDOM, DATASET, UPLOAD],
        default=RANDOM,
        required=True,
        key=f"interpolate-{side.lower()}-source",
        persist_state="session",
    )
    if source == DATASET:
        return dataset_point(side)
    if source == UPLOAD:
        return uploaded_point(side)
    stats = ui.latent_stats(run)
    # A random end is drawn with the run's most dog-like sampler, as Generate draws by default.
    sampler = samplers.SAMPLERS[samplers.samplers_for(stats)[0]]
    seed = st.number_input(
        "Seed",
        min_value=0,
        value=default_seed,
        key=f"interpolate-{side.lower()}-seed",
        persist_state="session",
        help=f"A random point drawn from {sampler.source}, as Generate draws {sampler.label}",
    )
    point = samplers.draw_latents(1, config.latent_dim, stats, samplers.AUTO, seed)[0][0]
    ui.show_image(run.decode(point)[0], scale=2, caption=f"Seed {seed}")
    return point


@st.fragment
def frame_viewer(frames: np.ndarray) -> None:
    """One frame, large; a fragment so that moving the slider does not decode again."""
    number = st.slider("Frame", 1, len(frames), 1, key="interpolate-frame")
    ui.show_image(frames[number - 1], scale=4, caption=f"Frame {number} of {len(frames)}")


def animation(points: np.ndarray, frames: np.ndarray) -> None:
    """The frames played in the browser (play, pause, scrub), else the server's frame viewer."""
    decoder, reason = canvas_ui.browser_decoder(run)
    reason = reason or browser_failed(PLAYER_KEY)
    if not reason:
        width = canvas_ui.display_width(config.image_size)
        reason = frame_player(
            decoder,
            points,
            key=PLAYER_KEY,
            fps=FPS,
            fallback_png=canvas_ui.server_png(frames[0], width),
            width=width,
        ).unavailable
    if reason:
        canvas_ui.server_note(reason)
        frame_viewer(frames)


start_column, end_column = st.columns(2)
with start_column:
    start = endpoint("Start", 1)
with end_column:
    end = endpoint("End", 2)

steps_column, method_column = st.columns(2)
steps = steps_column.slider("Steps", 2, 32, 8, key="interpolate-steps", persist_state="session")
method = method_column.radio(
    "Method",
    latent.METHODS,
    horizontal=True,
    key="interpolate-method",
    persist_state="session",
    help="slerp follows an arc, so every point stays about as far from the origin as the ends; "
    "linear takes the straight line, which passes nearer the origin, where the prior has few "
    "samples.",
)

if start is None or end is None:
    st.info("Choose both ends above to see the interpolation.")
else:
    points = latent.interpolate(start, end, steps, method)
    frames = run.decode(points)
    strip = images.image_strip(frames)
    strip_scale = 2 if config.image_size <= 64 and 2 * strip.shape[1] <= ui.MAX_IMAGE_WIDTH else 1
    ui.show_image(strip, scale=strip_scale, caption=f"{steps} steps, {method}")
    animation(points, frames)

    with st.container(horizontal=True):
        name = f"{run.info.name}-interpolation"
        ui.download_png(
            strip, f"{name}.png", key="interpolate-png-download", label="Download PNG strip"
        )
        ui.download_gif(frames, config.image_size, f"{name}.gif", key="interpolate-gif-download")
