"""Streamlit glue for the browser decoder (``dogvae.components.latent_canvas``) on the pages.

Generate and Interpolate decode in the page when they can. ``browser_decoder`` says
whether they can for a run (and why not); when not, the page notes it in one line
(``server_note``) and draws with the server as before. DOGVAE_BROWSER_DECODER=0 turns
the browser decoder off (the server path only: for comparisons and for tests of it).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import streamlit as st

from dogvae import images

if TYPE_CHECKING:
    from dogvae.components.latent_canvas import BrowserDecoder
    from dogvae.loaded_run import LoadedRun

SWITCH = "DOGVAE_BROWSER_DECODER"


def browser_decoder(run: LoadedRun) -> tuple[BrowserDecoder | None, str | None]:
    """The run's decoder served to the browser, or None and why the page must decode itself."""
    from dogvae.components.latent_canvas import runtime_missing

    if os.environ.get(SWITCH, "1").strip() == "0":
        return None, f"the browser decoder is turned off ({SWITCH}=0)"
    reason = runtime_missing()
    if reason:
        return None, reason
    path = run.info.path
    try:
        return _browser_decoder(str(path), (path / "config.json").stat().st_mtime, run), None
    except (OSError, ValueError) as error:
        return None, f"this model's decoder cannot run in the browser ({error})"


@st.cache_resource(max_entries=4, show_spinner=False)
def _browser_decoder(path: str, modified: float, _run: LoadedRun) -> BrowserDecoder:
    # Exporting takes a few hundred ms: once per run and server, not per rerun.
    from dogvae.components.latent_canvas import cached_browser_decoder
    from dogvae.data import default_cache_dir

    config = _run.info.model_config
    return cached_browser_decoder(_run.decoder, config, Path(default_cache_dir()) / "decoders")


def preload(decoder: BrowserDecoder | None = None) -> None:
    """Have the page load the browser decoder's runtime (and ``decoder``'s session) now, in
    the sidebar, so that a canvas shown later draws at once; nothing where it cannot."""
    from dogvae.components.latent_canvas import preload as preload_in_page

    if os.environ.get(SWITCH, "1").strip() == "0":
        return
    with st.sidebar:
        preload_in_page(decoder, key="dogvae-preload-decoder" if decoder else "dogvae-preload")


def preload_run(run: LoadedRun) -> None:
    """``preload`` with the run's decoder, where the browser can decode it."""
    decoder, _ = browser_decoder(run)
    if decoder is not None:
        preload(decoder)


def display_width(image_size: int, scale: int = 4) -> int:
    """The canvas' width in CSS pixels: the image enlarged ``scale`` times, at most 512."""
    return min(image_size * scale, 512)


def server_png(image: np.ndarray, width: int) -> bytes:
    """The server's image (H, W, C) enlarged (nearest) to about ``width`` pixels, as PNG."""
    scale = max(1, width // image.shape[0])
    return images.png_bytes(images.upscale(images.to_uint8(image), scale))


def server_note(reason: str) -> None:
    """The one line that says the page decodes on the server, and why."""
    st.caption(f"Decoding on the server: {reason}.")
