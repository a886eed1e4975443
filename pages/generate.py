"""Generate: a grid of dogs sampled from the prior, and sliders over the latent space."""

from __future__ import annotations

import random

import numpy as np
import streamlit as st

from dogvae import latent, ui

MAX_SLIDERS = 8
SLIDER_LIMIT = 3.0
SLIDER_STEP = 0.05
SEED_KEY = "generate-seed"

ui.sidebar()
st.title("Generate")
run = ui.require_model()

# After require_model, so that without a model the page does not wait for TensorFlow.
from dogvae.model import decode  # noqa: E402

latent_dim = run.info.model_config.latent_dim


def new_seed() -> None:
    st.session_state[SEED_KEY] = random.randrange(1_000_000)


def set_sliders(keys: list[str], values: np.ndarray) -> None:
    for key, value in zip(keys, values, strict=True):
        # On the slider's grid, so the widget shows exactly the value used.
        st.session_state[key] = round(round(float(value) / SLIDER_STEP) * SLIDER_STEP, 2)


def random_point(keys: list[str]) -> None:
    values = np.random.default_rng().standard_normal(len(keys))
    set_sliders(keys, np.clip(values, -SLIDER_LIMIT, SLIDER_LIMIT))


@st.fragment
def sampled_dogs() -> None:
    st.header("Sampled dogs")
    st.session_state.setdefault(SEED_KEY, 0)
    count_column, seed_column, button_column = st.columns([3, 2, 1], vertical_alignment="bottom")
    count = count_column.slider("Count", 4, 64, 16, key="generate-count", persist_state="session")
    seed = seed_column.number_input("Seed", min_value=0, key=SEED_KEY, persist_state="session")
    button_column.button("Resample", on_click=new_seed, help="Draw with a new random seed")

    images = decode(run.decoder, latent.sample_latents(count, latent_dim, seed))
    grid = ui.show_images(images, scale=2)
    st.download_button(
        "Download PNG",
        latent.png_bytes(grid),
        file_name=f"{run.info.name}-samples-seed{seed}.png",
        mime="image/png",
        on_click="ignore",
        key="generate-grid-download",
    )


@st.fragment
def latent_sliders() -> None:
    st.header("Latent sliders")
    shown = min(latent_dim, MAX_SLIDERS)
    keys = [f"generate-{run.info.name}-z{index}" for index in range(1, shown + 1)]
    for key in keys:
        st.session_state.setdefault(key, 0.0)
    if latent_dim > MAX_SLIDERS:
        st.caption(
            f"The model has {latent_dim} latent dimensions; these are the first {MAX_SLIDERS}. "
            f"The other {latent_dim - MAX_SLIDERS} stay at 0."
        )

    slider_column, image_column = st.columns(2)
    with slider_column:
        values = [
            st.slider(
                f"z{index}",
                -SLIDER_LIMIT,
                SLIDER_LIMIT,
                step=SLIDER_STEP,
                key=key,
                persist_state="session",
            )
            for index, key in enumerate(keys, start=1)
        ]

    point = np.zeros(latent_dim, np.float32)
    point[:shown] = values
    image = decode(run.decoder, point)[0]
    with image_column:
        ui.show_image(image, scale=4)
        with st.container(horizontal=True):
            st.button(
                "Random point",
                on_click=random_point,
                args=(keys,),
                help="Each shown dimension from a standard normal, clipped to ±3",
            )
            st.button("Reset", on_click=set_sliders, args=(keys, np.zeros(shown)))
            st.download_button(
                "Download PNG",
                latent.png_bytes(image),
                file_name=f"{run.info.name}-point.png",
                mime="image/png",
                on_click="ignore",
                key="generate-point-download",
            )


sampled_dogs()
latent_sliders()
