"""The latent canvas: latent points decoded in the browser and drawn as the user moves.

A Streamlit components-v2 element (inline JavaScript, no iframe) that runs a run's
decoder, exported as ONNX (``dogvae.export``), in onnxruntime-web's wasm backend on one
thread. Sliders, a 2-D pad or an animation's frames redraw the canvas on every input
event without a server round trip; slider and pad values are reported on release only.

Files reach the browser through the app's own server, nothing from outside:

- onnxruntime-web (``vendor/``: ``ort.wasm.bundle.min.mjs`` and its ``.wasm``, put there
  by ``make setup`` with npm from ``package-lock.json``) and each exported decoder are
  served by Streamlit's component file route, ``/component/<name>/<file>``, with
  ``streamlit run serve.py`` and ``streamlit run streamlit_app.py`` alike. The server
  gzips every other response anew per request (seconds of its event loop for the 14 MB
  .wasm), so the .wasm and the decoder are served as ``.gz`` files (which it leaves
  alone) and the page unpacks them (``DecompressionStream``);
- a decoder's URL holds its sha256, so the browser fetches it once per run and keeps one
  onnxruntime session per URL across reruns.

Where the browser cannot decode (the vendor files missing, no WebAssembly, a failed
load), the functions here return ``CanvasState.unavailable`` with the reason and the
page draws with the server instead; until then the component shows the server's image
(``fallback_png``), so it is never blank.
"""

from __future__ import annotations

import functools
import gzip
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dogvae.atomic import write_atomically
from dogvae.config import ModelConfig
from dogvae.export import ONNX_FILE, cached_export, read_export
from dogvae.images import png_data_url

COMPONENT_DIR = Path(__file__).resolve().parent
VENDOR_DIR = COMPONENT_DIR / "vendor"
ORT_MODULE = "ort.wasm.bundle.min.mjs"  # onnxruntime-web's wasm backend, its loader inlined
ORT_WASM = "ort-wasm-simd-threaded.wasm.gz"
SERVED_ONNX = ONNX_FILE + ".gz"
VENDOR_FILES = (ORT_MODULE, ORT_WASM)
_COMPONENT_NAME = "dogvae_latent_canvas"
JS_FILES = ("runtime.js", "latent_canvas.js")


@dataclass(frozen=True)
class BrowserDecoder:
    """An exported decoder the app serves to the browser.

    Attributes:
        url: Where the page fetches the gzipped ``decoder.onnx`` (a path on the app's server).
        sha256: Of the ONNX file; part of ``url``.
        latent_dim: Length of a latent point.
        image_size: Side of the decoded image.
        channels: 1 (grayscale) or 3 (RGB).
    """

    url: str
    sha256: str
    latent_dim: int
    image_size: int
    channels: int


@dataclass(frozen=True)
class Report:
    """The slider / pad values at a release.

    Attributes:
        values: The values.
        revision: The ``revision`` of the page's values they were moved from; a report
            of an older revision than the page's current one predates the page's own
            move (a Reset clicked before the report arrived) and should be dropped.
    """

    values: list[float]
    revision: int


@dataclass(frozen=True)
class CanvasState:
    """What the component reported.

    Attributes:
        report: The values at the last release (None before the first).
        unavailable: Why the browser cannot decode, or None; when set, nothing was
            drawn by this call and the page should draw with the server.
    """

    report: Report | None = None
    unavailable: str | None = None


def runtime_missing() -> str | None:
    """Why onnxruntime-web's files are not in ``vendor/``, or None when they are."""
    missing = [name for name in VENDOR_FILES if not (VENDOR_DIR / name).is_file()]
    if missing:
        return (
            f"the browser decoder's files are not installed ({', '.join(missing)}); "
            "run `make setup` where npm is available"
        )
    return None


def browser_decoder(export_dir: str | Path) -> BrowserDecoder:
    """Serve the export in ``export_dir`` (see ``dogvae.export``) to the browser.

    Call it inside a script run (the page's); registering is cheap and idempotent.

    Raises:
        FileNotFoundError, ValueError: When ``export_dir`` holds no complete export.
    """
    export_dir = Path(export_dir).resolve()
    info = read_export(export_dir)
    served = export_dir / SERVED_ONNX
    if not served.is_file():
        data = (export_dir / ONNX_FILE).read_bytes()
        write_atomically(served, gzip.compress(data, compresslevel=6, mtime=0), sync=False)
    url = _serve_folder(f"decoder-{info['sha256'][:16]}", export_dir) + SERVED_ONNX
    return BrowserDecoder(
        url=url,
        sha256=info["sha256"],
        latent_dim=int(info["latent_dim"]),
        image_size=int(info["image_size"]),
        channels=int(info["channels"]),
    )


def cached_browser_decoder(
    decoder: Any, model_config: ModelConfig, cache_dir: str | Path
) -> BrowserDecoder:
    """Export ``decoder`` into ``cache_dir`` (once per decoder) and serve it.

    The export takes a few hundred milliseconds: a page should keep the result per run
    (``st.cache_resource`` keyed by the run's folder and modification time).
    """
    return browser_decoder(cached_export(decoder, model_config, cache_dir))


def latent_canvas(
    decoder: BrowserDecoder,
    origin: Sequence[float] | np.ndarray,
    *,
    key: str,
    directions: Sequence[Sequence[float]] | np.ndarray | None = None,
    scales: Sequence[float] | np.ndarray | None = None,
    values: Sequence[float] | np.ndarray | None = None,
    revision: int = 0,
    labels: Sequence[str] | None = None,
    value_range: tuple[float, float] = (-3.0, 3.0),
    step: float = 0.05,
    sliders: bool = True,
    pad: tuple[int, int] | None = None,
    fallback_png: bytes | None = None,
    width: int = 256,
) -> CanvasState:
    """Draw ``origin + sum(values[i] * scales[i] * directions[i])``, decoded in the browser.

    With ``directions``, the component shows a slider per direction (``sliders``)
    and/or a 2-D pad over two of them (``pad=(i, j)``: i across, j up), and redraws
    on every input event; the values come back in ``CanvasState.report`` on release.
    The point is computed as ``dogvae.latent.SliderBasis.to_point`` computes it: pass
    the basis' origin (plus any residual), directions and scales.

    Args:
        decoder: From ``browser_decoder`` / ``cached_browser_decoder``.
        origin: (latent_dim,) the point at values 0.
        key: The element's key; one per canvas on a page (and per run, so that
            another run's values do not carry over).
        directions: (k, latent_dim) the directions the values move along.
        scales: (k,) per direction (default 1).
        values: (k,) the values to show. The component takes them when it is first
            drawn and whenever ``revision`` changes; in between, the user's moves
            stay, so passing back the reported values does not undo newer ones.
        revision: Change it (add 1) when the page sets new ``values`` itself: Reset,
            Random point, an encoded photo.
        labels: (k,) the sliders' names (default "z1", "z2", ...).
        value_range: The sliders' and the pad's (low, high).
        step: The sliders' step.
        sliders: Show a slider per direction.
        pad: Show a 2-D pad over directions ``pad[0]`` (x) and ``pad[1]`` (y).
        fallback_png: The server's image of the same point, shown until the first
            browser decode (and if it never comes); should be ``width`` pixels wide.
        width: Displayed size of the square image, in CSS pixels.

    Returns:
        The reported values, or the reason the browser cannot decode (then nothing
        was drawn: the page draws with the server).

    Raises:
        ValueError: When the shapes do not fit the decoder or each other.
    """
    origin_list = _vector("origin", origin, decoder.latent_dim)
    count = 0 if directions is None else len(directions)
    direction_lists = [
        _vector(f"directions[{index}]", direction, decoder.latent_dim)
        for index, direction in enumerate(directions if directions is not None else [])
    ]
    scale_list = _vector("scales", scales, count) if scales is not None else [1.0] * count
    value_list = _vector("values", values, count) if values is not None else [0.0] * count
    label_list = [str(label) for label in labels] if labels is not None else None
    if label_list is None:
        label_list = [f"z{index}" for index in range(1, count + 1)]
    if len(label_list) != count:
        raise ValueError(f"expected {count} labels (one per direction), got {len(label_list)}")
    low, high = (float(bound) for bound in value_range)
    if not low < high or not 0 < step <= high - low:
        raise ValueError(
            f"value_range must be (low, high) with low < high and step in (0, high - low], "
            f"got {value_range} and {step}"
        )
    if pad is not None and (
        len(pad) != 2 or len(set(pad)) != 2 or not all(0 <= axis < count for axis in pad)
    ):
        raise ValueError(f"pad must name two different directions of 0..{count - 1}, got {pad}")
    data = {
        "origin": origin_list,
        "directions": direction_lists,
        "scales": scale_list,
        "values": value_list,
        "revision": int(revision),
        "labels": label_list,
        "range": [low, high],
        "step": float(step),
        "sliders": bool(sliders) and count > 0,
        "pad": list(pad) if pad is not None else None,
    }
    return _mount(decoder, data, key, fallback_png, width)


def browser_failed(key: str) -> str | None:
    """Why the browser said it cannot decode for the canvas ``key`` in this session, or None."""
    import streamlit as st

    return st.session_state.get(_failed_key(key))


def _failed_key(key: str) -> str:
    return f"{key}:unavailable"


def last_report(key: str) -> Report | None:
    """What the canvas ``key`` last reported (None before any), readable before it is
    drawn in a run: a page can then decode the user's point once, not the previous one too."""
    import streamlit as st

    state = st.session_state.get(key)
    return _report(state.get("report") if isinstance(state, dict) else None)


def _report(raw: Any) -> Report | None:
    if not isinstance(raw, dict) or not raw.get("values"):
        return None
    return Report([float(value) for value in raw["values"]], int(raw.get("revision", 0)))


def preload(decoder: BrowserDecoder | None = None, *, key: str) -> None:
    """Start loading the runtime in the page now (and ``decoder``'s session), drawing nothing.

    The runtime's WebAssembly takes about a second to compile; a page that will show a
    canvas further down (or a page before it) can start that early. Does nothing when the
    runtime's files are missing.
    """
    import streamlit as st

    if runtime_missing():
        return
    ort_base = _serve_folder("onnxruntime-web", VENDOR_DIR)
    data = {
        "preload": True,
        "ort_url": ort_base + ORT_MODULE,
        "wasm_url": ort_base + ORT_WASM,
        "decoder": {"url": decoder.url, "sha256": decoder.sha256} if decoder else None,
    }
    with st.container(height=1, border=False):  # takes (almost) no room where it is
        _component()(key=key, data=data)


def frame_player(
    decoder: BrowserDecoder,
    frames: Sequence[Sequence[float]] | np.ndarray,
    *,
    key: str,
    fps: float = 8.0,
    autoplay: bool = True,
    fallback_png: bytes | None = None,
    width: int = 256,
) -> CanvasState:
    """Play the latent points ``frames`` (n, latent_dim) as an animation decoded in the browser.

    Play, pause and a scrubber; each frame is decoded when it is shown. ``fallback_png``
    (the server's first frame) shows until the first browser decode. Returns the
    reason when the browser cannot decode (then the page shows its PNG strip / GIF).

    Raises:
        ValueError: When ``frames`` does not fit the decoder or ``fps`` is not positive.
    """
    frame_lists = [
        _vector(f"frames[{index}]", frame, decoder.latent_dim) for index, frame in enumerate(frames)
    ]
    if not frame_lists:
        raise ValueError("frame_player needs at least one frame")
    if not 0 < fps <= 60:
        raise ValueError(f"fps must be in (0, 60], got {fps}")
    data = {"frames": frame_lists, "fps": float(fps), "autoplay": bool(autoplay)}
    return _mount(decoder, data, key, fallback_png, width)


def _mount(
    decoder: BrowserDecoder,
    data: dict[str, Any],
    key: str,
    fallback_png: bytes | None,
    width: int,
) -> CanvasState:
    import streamlit as st

    # Remembered per session: once the browser said it cannot decode, the element is
    # not mounted again (its reported state would go with it and it would try again).
    remembered = _failed_key(key)
    reason = runtime_missing() or st.session_state.get(remembered)
    if reason:
        return CanvasState(unavailable=reason)
    if not 32 <= width <= 1024:
        raise ValueError(f"width must be from 32 to 1024 pixels, got {width}")
    ort_base = _serve_folder("onnxruntime-web", VENDOR_DIR)
    data = {
        **data,
        "decoder": {"url": decoder.url, "sha256": decoder.sha256},
        "image_size": decoder.image_size,
        "channels": decoder.channels,
        "width": int(width),
        "ort_url": ort_base + ORT_MODULE,
        "wasm_url": ort_base + ORT_WASM,
        "fallback": png_data_url(fallback_png) if fallback_png else None,
    }
    holder = st.empty()
    with holder:
        result = _component()(
            key=key,
            data=data,
            on_report_change=lambda: None,
            on_unavailable_change=lambda: None,
        )
    unavailable = result.get("unavailable")
    if unavailable:
        holder.empty()  # the page draws with the server in its place
        st.session_state[remembered] = str(unavailable)
        return CanvasState(unavailable=str(unavailable))
    return CanvasState(report=_report(result.get("report")))


@functools.cache
def _component():
    """The registered v2 component (once per process; Streamlit re-registers per runtime)."""
    import streamlit as st

    return st.components.v2.component(
        _COMPONENT_NAME,
        # One inline module: the runtime's half, then the canvas' (which has the export).
        js="\n".join((COMPONENT_DIR / name).read_text(encoding="utf-8") for name in JS_FILES),
        css=(COMPONENT_DIR / "latent_canvas.css").read_text(encoding="utf-8"),
        isolate_styles=True,
    )


def _serve_folder(name: str, folder: Path) -> str:
    """Serve ``folder`` at ``/component/<module>.<name>/``; returns that URL path.

    Streamlit's (v1) component registry is the one file route every way of running
    the app has; nothing is rendered through it. The registry is per server and a
    name is registered again with the same folder on every call, which is harmless.
    """
    import streamlit as st
    from streamlit.components.v1 import declare_component

    served = declare_component(name, path=str(folder))
    base = "/".join(part for part in (st.get_option("server.baseUrlPath") or "").split("/") if part)
    prefix = f"/{base}" if base else ""
    return f"{prefix}/component/{served.name}/"


def _vector(name: str, values: Any, length: int) -> list[float]:
    array = np.asarray(values, dtype=np.float64)
    if array.shape != (length,):
        raise ValueError(f"{name} must have {length} numbers, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be finite numbers")
    return array.tolist()
