"""A one-page prototype of the latent canvas: a run's decoder running in the browser.

    .venv/bin/python -m streamlit run scripts/latent_canvas_demo.py
    DOGVAE_CANVAS_RUN=runs/demo .venv/bin/python -m streamlit run scripts/latent_canvas_demo.py

Sliders along the run's slider directions and a 2-D pad over the first two redraw the
dog on every move, decoded in the page; the server's image of the start point shows
until the browser's first decode. Then an animation along all the directions at once
(play, pause, scrub), each frame decoded when it is shown. Below, the decode and frame
timings the component records with ``performance.measure`` (p50 / p95), read in the page.
tests/test_browser_decoder.py drives this page in chromium (parity, timings, fallback).
"""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # `streamlit run` puts only scripts/ on the path

import numpy as np  # noqa: E402
import streamlit as st  # noqa: E402
from PIL import Image  # noqa: E402

from dogvae.components.latent_canvas import (  # noqa: E402
    cached_browser_decoder,
    frame_player,
    latent_canvas,
)

RUN = Path(os.environ.get("DOGVAE_CANVAS_RUN", REPO / "models" / "default"))
CACHE = Path(os.environ.get("DOGVAE_CACHE_DIR", Path.home() / ".cache" / "dogvae")) / "decoders"
WIDTH = 256
START_SEED = 0  # the sliders start at a dog, not at the mean (a flat grey square)
# The animation: every slider from -2 to 2 together, in 8 frames.
FRAME_VALUES = np.linspace(-2.0, 2.0, 8)

TIMINGS_JS = """
const quantile = (sorted, q) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
export default function ({ parentElement }) {
  const out = parentElement.querySelector("pre")
    ?? parentElement.appendChild(document.createElement("pre"));
  const show = () => {
    out.textContent = ["dogvae:decode", "dogvae:frame"].map((name) => {
      const times = performance.getEntriesByName(name).map((entry) => entry.duration);
      times.sort((a, b) => a - b);
      if (!times.length) return `${name}: none yet`;
      const p50 = quantile(times, 0.5).toFixed(2), p95 = quantile(times, 0.95).toFixed(2);
      return `${name}: ${times.length} measured, p50 ${p50} ms, p95 ${p95} ms`;
    }).join("\\n");
  };
  show();
  const timer = setInterval(show, 500);
  return () => clearInterval(timer);
}
"""


@st.cache_resource
def load(run_dir: str):
    """The run, its slider basis and its decoder served to the browser."""
    from dogvae import latent, loaded_run, runs

    run = loaded_run.load_run(run_dir)
    basis = latent.slider_basis(run.info.model_config.latent_dim, runs.read_latent_stats(run_dir))
    decoder = cached_browser_decoder(run.decoder, run.info.model_config, CACHE)
    return run, basis, decoder


def server_png(run, point: np.ndarray, width: int = WIDTH) -> bytes:
    """The server's image of ``point``, as the app draws it, upscaled to ``width``."""
    from dogvae.model import decode

    image = np.clip(np.rint(decode(run.decoder, point)[0] * 255.0), 0, 255).astype(np.uint8)
    picture = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
    picture = picture.resize((width, width), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


st.set_page_config(page_title="latent canvas", layout="wide")
st.title("Latent canvas")
run, basis, decoder = load(str(RUN))
st.caption(f"{RUN} · decoder {decoder.sha256[:12]} · latent {decoder.latent_dim}")

key = f"canvas-{decoder.sha256[:16]}"
if key not in st.session_state:
    start = np.random.default_rng(START_SEED).standard_normal(len(basis.labels))
    st.session_state[key] = np.round(np.clip(start, -3, 3), 2).tolist()
    st.session_state[key + "-revision"] = 0
if st.button("Reset"):
    st.session_state[key] = [0.0] * len(basis.labels)
    st.session_state[key + "-revision"] += 1
values = st.session_state[key]

state = latent_canvas(
    decoder,
    basis.origin,
    key=key + "-element",
    directions=basis.directions,
    scales=basis.scales,
    values=values,
    revision=st.session_state[key + "-revision"],
    labels=basis.labels,
    pad=(0, 1) if len(basis.labels) >= 2 else None,
    fallback_png=server_png(run, basis.to_point(values)),
    width=WIDTH,
)
if state.unavailable:
    st.warning(f"Decoding on the server: {state.unavailable}")
    st.image(server_png(run, basis.to_point(values)), width=WIDTH)
elif state.report is not None and state.report.revision == st.session_state[key + "-revision"]:
    st.session_state[key] = state.report.values  # a report from before Reset is dropped
st.caption(f"Reported values: {state.report.values if state.report else None}")

st.subheader("Frames")
frames = np.stack([basis.to_point(np.full(len(basis.labels), value)) for value in FRAME_VALUES])
player = frame_player(
    decoder,
    frames,
    key=key + "-frames",
    autoplay=False,
    fallback_png=server_png(run, frames[0], WIDTH // 2),
    width=WIDTH // 2,
)
if player.unavailable:
    st.warning(f"The animation needs the browser decoder: {player.unavailable}")
st.session_state["script-runs"] = st.session_state.get("script-runs", 0) + 1
st.caption(f"Script runs: {st.session_state['script-runs']}")
st.components.v2.component("dogvae_canvas_timings", js=TIMINGS_JS)(key="timings")
