"""The latent canvas' Python side: what it serves, what it sends, when it steps aside.

The drawing itself is tested in chromium (tests/test_browser_decoder.py); here AppTest
runs small scripts with the component and checks the served folders, the data handed
to the browser and the fallback to the server's path.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from dogvae import export
from dogvae.components import latent_canvas as canvas
from dogvae.config import PRESETS

SEED = PRESETS["seed"].model


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from dogvae.model import build_decoder

    folder = tmp_path_factory.mktemp("export")
    export.export_decoder(build_decoder(SEED), SEED, folder)
    return folder


def decoder_for(folder: Path) -> canvas.BrowserDecoder:
    info = export.read_export(folder)
    return canvas.BrowserDecoder("/component/x/decoder.onnx.gz", info["sha256"], 2, 64, 1)


def canvas_script(export_dir: str, remembered: str | None, base_url: str) -> None:
    """An AppTest script: the canvas for a seed decoder, its state written out."""
    import streamlit as st

    from dogvae.components import latent_canvas as canvas

    st._config.set_option("server.baseUrlPath", base_url)
    if remembered:
        st.session_state["canvas:unavailable"] = remembered
    decoder = canvas.browser_decoder(export_dir)
    state = canvas.latent_canvas(
        decoder,
        [0.0, 0.0],
        key="canvas",
        directions=[[1.0, 0.0], [0.0, 1.0]],
        values=[0.5, -1.0],
        pad=(0, 1),
        fallback_png=b"\x89PNG",
    )
    st.write(decoder.url)
    st.write(f"unavailable: {state.unavailable}")


def run_canvas(export_dir: Path, remembered: str | None = None, base_url: str = "") -> AppTest:
    from streamlit import config

    app = AppTest.from_function(canvas_script, args=(str(export_dir), remembered, base_url))
    try:
        app.run(timeout=60)
    finally:
        config.set_option("server.baseUrlPath", "")  # the option is process-wide
    assert not app.exception, app.exception
    return app


def texts(app: AppTest) -> list[str]:
    return [element.value for element in app.markdown]


def component_data(app: AppTest) -> dict:
    (element,) = [
        node for node in app._tree.main.children.values() if node.type == "bidi_component"
    ]
    return json.loads(element.proto.json)


def test_the_page_gets_urls_on_its_own_server(export_dir: Path) -> None:
    if canvas.runtime_missing():
        pytest.skip(canvas.runtime_missing())
    app = run_canvas(export_dir)
    url = texts(app)[0]
    sha = export.read_export(export_dir)["sha256"]
    assert url == (
        f"/component/dogvae.components.latent_canvas.decoder-{sha[:16]}/{canvas.SERVED_ONNX}"
    )
    data = component_data(app)
    assert data["decoder"] == {"url": url, "sha256": sha}
    ort_base = "/component/dogvae.components.latent_canvas.onnxruntime-web/"
    assert data["ort_url"] == ort_base + canvas.ORT_MODULE
    assert data["wasm_url"] == ort_base + canvas.ORT_WASM
    assert data["values"] == [0.5, -1.0] and data["pad"] == [0, 1]
    assert data["fallback"].startswith("data:image/png;base64,")
    assert "unavailable: None" in texts(app)
    # What the URL serves: the decoder, gzipped (the server sends .gz files as they are).
    served = gzip.decompress((export_dir / canvas.SERVED_ONNX).read_bytes())
    assert served == (export_dir / export.ONNX_FILE).read_bytes()


def test_urls_follow_the_base_url_path(export_dir: Path) -> None:
    if canvas.runtime_missing():
        pytest.skip(canvas.runtime_missing())
    app = run_canvas(export_dir, base_url="/dogs/")
    assert texts(app)[0].startswith("/dogs/component/dogvae.components.latent_canvas.decoder-")
    assert component_data(app)["ort_url"].startswith("/dogs/component/")


def test_once_the_browser_failed_the_canvas_steps_aside(
    export_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(canvas, "runtime_missing", lambda: None)  # installed or not here
    app = run_canvas(export_dir, remembered="this browser has no WebAssembly")
    assert "unavailable: this browser has no WebAssembly" in texts(app)
    assert not [node for node in app._tree.main.children.values() if node.type == "bidi_component"]


def test_without_the_runtime_files_the_canvas_steps_aside(
    export_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(canvas, "VENDOR_DIR", tmp_path)
    assert "run `make setup` where npm is available" in canvas.runtime_missing()
    state = canvas.latent_canvas(decoder_for(export_dir), [0.0, 0.0], key="k")
    assert state.unavailable == canvas.runtime_missing()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"origin": [0.0]}, "origin must have 2 numbers"),
        ({"directions": [[1.0, 0.0, 0.0]]}, r"directions\[0\] must have 2 numbers"),
        ({"directions": [[1.0, 0.0]], "values": [1.0, 2.0]}, "values must have 1 numbers"),
        ({"directions": [[1.0, 0.0]], "labels": ["a", "b"]}, "expected 1 labels"),
        ({"directions": [[1.0, 0.0]], "pad": (0, 1)}, "pad must name two different"),
        ({"value_range": (3.0, -3.0)}, "value_range must be"),
        ({"origin": [np.nan, 0.0]}, "origin must be finite"),
    ],
)
def test_shapes_that_do_not_fit_are_refused(export_dir: Path, arguments, message) -> None:
    arguments = {"origin": [0.0, 0.0], **arguments}
    with pytest.raises(ValueError, match=message):
        canvas.latent_canvas(decoder_for(export_dir), key="k", **arguments)


def test_a_frame_player_needs_frames_of_the_decoders_size(export_dir: Path) -> None:
    decoder = decoder_for(export_dir)
    with pytest.raises(ValueError, match="at least one frame"):
        canvas.frame_player(decoder, [], key="k")
    with pytest.raises(ValueError, match=r"frames\[1\] must have 2 numbers"):
        canvas.frame_player(decoder, [[0.0, 0.0], [0.0]], key="k")
    with pytest.raises(ValueError, match="fps must be"):
        canvas.frame_player(decoder, [[0.0, 0.0]], key="k", fps=0)
