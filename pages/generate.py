"""Generate: sampled dogs, latent sliders (also from a photo), traversals and a latent map."""

from __future__ import annotations

import math
import random

import numpy as np
import pandas as pd
import streamlit as st

from dogvae import canvas_ui, images, pixel_samples, samplers, ui
from dogvae.components.latent_canvas import (
    BrowserDecoder,
    browser_failed,
    last_report,
    latent_canvas,
)
from dogvae.slider_state import LIMIT, STEP, SliderState

SEED_KEY = "generate-seed"
RANDOM_ROWS = 3  # random points in the traversal, below the slider point
MAP_SIZE = 12  # the latent map decodes MAP_SIZE x MAP_SIZE points

ui.sidebar()
st.title("Generate")
run = ui.require_model()
config = run.info.model_config
latent_dim = config.latent_dim
image_shape = (config.image_size, config.image_size, config.channels)
colour = "grayscale" if config.channels == 1 else "RGB"
basis = ui.slider_basis(run)
along_directions = basis.labels[0] == "direction 1"
canvas_ui.preload_run(run)  # the decoder's session, while the page goes on
# Per run: another model's slider values (or photo) mean nothing here.
sliders = SliderState(basis, f"generate-{run.info.name}")
photo_key = f"generate-{run.info.name}-photo"
first_dog_key = f"generate-{run.info.name}-first-dog"


def new_seed() -> None:
    st.session_state[SEED_KEY] = random.randrange(1_000_000)


def show_grid(batch: np.ndarray, cols: int, caption: str | None = None) -> np.ndarray:
    """A grid of images, enlarged twice when that still fits the page."""
    grid = images.image_grid(batch, cols=cols)
    scale = 2 if config.image_size <= 64 and 2 * grid.shape[1] <= ui.MAX_IMAGE_WIDTH else 1
    ui.show_image(grid, scale=scale, caption=caption)
    return grid


def nearest_training_images(samples: np.ndarray) -> None:
    """Each sample next to the training image closest to it in pixels: does the model copy?"""
    dataset = ui.dataset()
    if dataset is None or dataset.images.shape[1:] != image_shape:
        st.info(
            "To compare the samples with the training dogs, load the training dataset on the "
            f"**Data** page with this model's image settings ({config.image_size}x"
            f"{config.image_size} {colour})."
        )
        return
    pool = dataset.train_images
    if len(pool) == 0:
        st.info("The loaded dataset has no training images to compare the samples with.")
        return
    indices, distances = images.nearest_images(samples, pool)
    pairs = np.stack([images.to_uint8(samples), pool[indices]], axis=1).reshape(-1, *image_shape)
    show_grid(pairs, cols=2 * math.ceil(math.sqrt(len(samples))))
    st.caption(
        "Each sample (left) next to its nearest training image (right), by pixel distance. "
        f"Median RMS distance: {np.median(distances):.3f} on a 0 to 1 scale; near 0 would "
        "mean the model reproduces its training photos instead of making new dogs."
    )


def encode_photo(file_id: str, image: np.ndarray) -> None:
    """Put the photo's point on the sliders: the image is then its reconstruction."""
    z_mean = run.encode(image[None])[0][0]
    sliders.move_to(z_mean)
    st.session_state[photo_key] = {
        "file_id": file_id,
        "image": image,
        "reconstruction": run.decode(z_mean)[0],
    }


def uploaded_photo() -> dict | None:
    """The photo in the uploader, put on the sliders when it is new; None without a usable one."""
    uploaded = st.file_uploader(
        "Encode your photo",
        type=ui.PHOTO_TYPES,
        key=f"generate-{run.info.name}-upload",
        max_upload_size=ui.PHOTO_UPLOAD_MB,
        help="The sliders jump to the photo's point in latent space; move them to edit it.",
    )
    if uploaded is None:
        return None
    photo = st.session_state.get(photo_key)
    # Once per upload: later reruns must not undo the user's slider moves.
    if photo is not None and photo["file_id"] == uploaded.file_id:
        return photo
    image = ui.decode_photo(uploaded, config)
    if image is None:
        return None
    encode_photo(uploaded.file_id, image)
    return st.session_state[photo_key]


def traversal_points(axis: int, steps: int, limit: float, seed: int) -> np.ndarray:
    """One row per start (the slider point, then random points) moving one slider over ±limit."""
    rows = [(sliders.values, sliders.residual)]
    random_values = np.random.default_rng(seed).standard_normal((RANDOM_ROWS, len(basis.labels)))
    rows += [(values, None) for values in np.clip(random_values, -LIMIT, LIMIT)]
    points = []
    for values, residual in rows:
        for offset in np.linspace(-limit, limit, steps):
            moved = values.copy()
            moved[axis] = offset
            points.append(basis.to_point(moved, residual))
    return np.stack(points)


@st.cache_resource(max_entries=4, show_spinner=False)
def latent_map_png(_run, path: str, modified: float) -> bytes:
    """Decoded images over [-3, 3]^2 as one PNG: z1 along columns, +z2 at the top; per run."""
    values = np.linspace(-LIMIT, LIMIT, MAP_SIZE)
    points = np.array([(z1, z2) for z2 in values[::-1] for z1 in values], np.float32)
    return images.png_bytes(images.image_grid(_run.decode(points), cols=MAP_SIZE))


def sampler_label(name: str) -> str:
    return samplers.SAMPLERS[name].label


SAMPLER_HELP = " ".join(
    f"{sampler.label[0].upper()}{sampler.label[1:]}: {sampler.explanation}"
    for sampler in samplers.SAMPLERS.values()
)


@st.fragment
def sampled_dogs() -> None:
    st.header("Sampled dogs")
    st.session_state.setdefault(SEED_KEY, 0)
    stats = ui.latent_stats(run)
    count_column, seed_column, button_column = st.columns([3, 2, 1], vertical_alignment="bottom")
    count = count_column.slider("Count", 4, 64, 16, key="generate-count", persist_state="session")
    seed = seed_column.number_input("Seed", min_value=0, key=SEED_KEY, persist_state="session")
    button_column.button("Resample", on_click=new_seed, help="Draw with a new random seed")
    sampler_column, temperature_column = st.columns([3, 3], vertical_alignment="bottom")
    sampler = sampler_column.radio(
        "Draw the latent points",
        samplers.samplers_for(stats),
        format_func=sampler_label,
        horizontal=True,
        key=f"generate-{run.info.name}-sampler",
        help=SAMPLER_HELP,
    )
    temperature = temperature_column.slider(
        "Temperature",
        0.0,
        samplers.MAX_TEMPERATURE,
        1.0,
        step=0.05,
        key="generate-temperature",
        persist_state="session",
        help="The spread of the draws: lower gives plainer, more typical dogs.",
    )

    z, _ = samplers.draw_latents(count, latent_dim, stats, sampler, seed, temperature)
    st.session_state.setdefault(first_dog_key, z[0])  # where the sliders start
    pixel_temperature = drawn_pixels_control()
    if pixel_temperature is None:
        decoded = run.decode(z)
    else:
        with st.spinner("Drawing the pixels…"):
            decoded = run.sample_images(z, pixel_temperature, seed)
    grid = ui.show_images(decoded, scale=2)
    ui.download_png(
        grid, f"{run.info.name}-samples-{sampler}-seed{seed}.png", key="generate-grid-download"
    )
    if st.toggle(
        "Show the nearest training image",
        key="generate-nearest",
        persist_state="session",
        help="The memorisation check: a sample that is nearly a training photo was copied.",
    ):
        nearest_training_images(decoded)


def drawn_pixels_control() -> float | None:
    """The pixel temperature to draw the samples' pixels at, or None for the mean images
    (always for a run whose likelihood has no pixels to draw)."""
    if not run.draws_pixels:
        return None
    draw_column, grain_column = st.columns([3, 3], vertical_alignment="bottom")
    if not draw_column.toggle(
        "Draw the pixels",
        value=True,
        key="generate-draw-pixels",
        persist_state="session",
        help="On: each image is drawn from the model's pixel likelihood, as a sample of the "
        "model is (sharper, with grain). Off: the decoder's mean image, the average of "
        "those draws (smooth, blurred), as the sliders below show.",
    ):
        return None
    return grain_column.slider(
        "Grain",
        0.0,
        pixel_samples.MAX_PIXEL_TEMPERATURE,
        pixel_samples.DEFAULT_PIXEL_TEMPERATURE,
        step=0.05,
        key="generate-pixel-temperature",
        persist_state="session",
        help="The pixels' temperature: 1 draws from the model's likelihood as it is, lower "
        "gives less grain, 0 the mean image moved only by rounding.",
    )


@st.fragment
def server_sliders(reason: str | None) -> None:
    """Today's sliders: a rerun and a server decode per release.

    A fragment of its own inside ``latent_sliders``: a release reruns the sliders and
    the image only, not the headers and the photo upload above them.
    """
    if reason:
        canvas_ui.server_note(reason)
    for key, value in zip(sliders.widget_keys, sliders.values, strict=True):
        st.session_state.setdefault(key, float(value))
    # The widgets' new values are in the session before they are drawn: the image goes
    # first (the browser shows it while the sliders are still being sent), inline (no
    # second request for it).
    sliders.take_widgets([st.session_state[key] for key in sliders.widget_keys])
    image = run.decode(sliders.point())[0]
    slider_column, image_column = st.columns(2)
    with image_column:
        ui.show_image(image, scale=4, inline=True)
        point_buttons(image)
    with slider_column:
        for label, key in zip(basis.labels, sliders.widget_keys, strict=True):
            st.slider(label, -LIMIT, LIMIT, step=STEP, key=key, persist_state="session")


def browser_sliders(decoder: BrowserDecoder) -> str | None:
    """The sliders and a 2-D pad, decoded in the browser; the reason if it cannot."""
    pad = pad_axes()
    width = canvas_ui.display_width(config.image_size)
    # The user's last move first, so that the server decodes its point only.
    sliders.take_report(last_report(sliders.canvas_key))
    image = run.decode(sliders.point())[0]
    residual = sliders.residual
    state = latent_canvas(
        decoder,
        basis.origin + (residual if residual is not None else 0.0),
        key=sliders.canvas_key,
        directions=basis.directions,
        scales=basis.scales,
        values=sliders.values,
        revision=sliders.revision,
        labels=basis.labels,
        value_range=(-LIMIT, LIMIT),
        step=STEP,
        pad=pad,
        fallback_png=canvas_ui.server_png(image, width),
        width=width,
    )
    if state.unavailable:
        return state.unavailable
    if sliders.take_report(state.report):
        image = run.decode(sliders.point())[0]
    point_buttons(image)
    return None


def pad_axes() -> tuple[int, int] | None:
    """The two directions the pad moves along, chosen by the user (None: fewer than two)."""
    if len(basis.labels) < 2:
        return None
    across_column, up_column = st.columns(2)
    across = across_column.selectbox(
        "Pad across", basis.labels, index=0, key=f"generate-{run.info.name}-pad-x"
    )
    others = [label for label in basis.labels if label != across]
    up = up_column.selectbox("Pad up", others, index=0, key=f"generate-{run.info.name}-pad-y")
    return basis.labels.index(across), basis.labels.index(up)


def point_buttons(image: np.ndarray) -> None:
    with st.container(horizontal=True):
        st.button(
            "Random point",
            on_click=sliders.random,
            help="Each slider from a standard normal, clipped to ±3",
        )
        st.button("Reset", on_click=sliders.reset)
        ui.download_png(image, f"{run.info.name}-point.png", key="generate-point-download")


@st.fragment
def latent_sliders() -> None:
    st.header("Latent sliders")
    count = len(basis.labels)
    if along_directions:
        st.caption(
            f"Sliders move along the {count} directions in which the training dogs' latent "
            "codes vary most, in standard deviations; they start at the first dog above, and "
            "Reset shows the average dog."
        )
    elif latent_dim > count:
        st.caption(
            f"The model has {latent_dim} latent dimensions; these are the first {count}. The "
            f"other {latent_dim - count} stay at 0 (this run has no statistics of its training "
            "set's latent codes to choose better directions)."
        )
    else:
        st.caption("Each slider sets one latent coordinate; Reset shows the origin.")
    if not sliders.started:
        sliders.move_to(st.session_state[first_dog_key], exact=False)

    upload_column, photo_column = st.columns(2)
    with upload_column:
        photo = uploaded_photo()
    if photo is not None:
        with photo_column, st.container(horizontal=True):
            ui.show_image(photo["image"], scale=2, caption="Your photo, as the model sees it")
            ui.show_image(photo["reconstruction"], scale=2, caption="Its reconstruction")

    decoder, reason = canvas_ui.browser_decoder(run)
    reason = reason or browser_failed(sliders.canvas_key)
    if not reason:
        reason = browser_sliders(decoder)
    if reason:
        server_sliders(reason)


@st.fragment
def traversal() -> None:
    st.header("Traversal")
    axis_column, steps_column, range_column, seed_column = st.columns(
        [2, 2, 2, 1], vertical_alignment="bottom"
    )
    label = axis_column.selectbox(
        "Axis", basis.labels, key=f"generate-{run.info.name}-traversal-axis"
    )
    steps = steps_column.slider(
        "Steps", 5, 15, 9, key="generate-traversal-steps", persist_state="session"
    )
    limit = range_column.slider(
        "Range (±)",
        0.5,
        LIMIT,
        LIMIT,
        step=0.5,
        key="generate-traversal-range",
        persist_state="session",
    )
    seed = seed_column.number_input(
        "Seed", min_value=0, key="generate-traversal-seed", persist_state="session"
    )
    # Redrawing on every slider move would decode a whole grid per move.
    st.button(
        "Update from the sliders",
        key="generate-traversal-update",
        help="The top row is the slider point when this grid was drawn.",
    )

    axis = basis.labels.index(label)
    frames = run.decode(traversal_points(axis, steps, limit, seed))
    grid = show_grid(
        frames,
        cols=steps,
        caption=f"Top row: the slider point; below: {RANDOM_ROWS} random points (seed {seed}). "
        f"{label} from -{limit:g} (left) to +{limit:g} (right).",
    )
    with st.container(horizontal=True):
        name = f"{run.info.name}-traversal-{label.replace(' ', '')}"
        ui.download_png(grid, f"{name}.png", key="generate-traversal-download")
        ui.download_gif(
            frames[:steps], config.image_size, f"{name}.gif", key="generate-traversal-gif-download"
        )


@st.fragment
def latent_map() -> None:
    st.header("Latent map")
    # Cached as PNG: 144 decodes and a large PNG are too slow to redo on every full rerun.
    modified = (run.info.path / "config.json").stat().st_mtime
    png = latent_map_png(run, str(run.info.path), modified)
    st.image(png, caption="z1 from -3 (left) to +3 (right), z2 from +3 (top) to -3 (bottom)")
    ui.download_png(png, f"{run.info.name}-latent-map.png", key="generate-map-download")

    stats = ui.latent_stats(run)
    if stats is None:
        st.caption(
            "This run has no statistics of its training set's latent codes (it was saved "
            "before they were recorded), so there is no scatter of the training dogs."
        )
        return
    training = pd.DataFrame(stats.points, columns=["z1", "z2"])
    point = sliders.point()
    current = pd.DataFrame({"z1": [point[0]], "z2": [point[1]]})
    training = training.assign(series="training dogs", size=20)
    current = current.assign(series="slider point", size=200)
    st.scatter_chart(
        pd.concat([training, current], ignore_index=True),
        x="z1",
        y="z2",
        color="series",
        size="size",
    )
    st.caption(
        "Each small dot is a training dog's latent mean; the large one is the slider point "
        "when this chart was drawn."
    )
    st.button("Update from the sliders", key="generate-map-update")


sampled_dogs()
latent_sliders()
traversal()
if latent_dim == 2:
    latent_map()
