"""A run's decoder as files: ``decoder.onnx`` and ``export.json``, for the browser or elsewhere.

The graph itself is ``dogvae.onnx_graph``'s; here it is written into a folder with a
small description (sizes, opset, sha256), read back and checked, and kept in a cache
folder named after its sha256 for the app. Importing this module is cheap: Keras,
``onnx`` and ``onnxruntime`` load inside the functions that need them.
"""

from __future__ import annotations

import hashlib
import io
import json
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from dogvae import __version__
from dogvae.atomic import write_atomically
from dogvae.config import ModelConfig
from dogvae.onnx_graph import (
    INPUT_NAME,
    IR_VERSION,
    OPSET,
    OUTPUT_NAME,
    decoder_onnx_bytes,
    run_onnx,
)

__all__ = [
    "EXPORT_FILE",
    "INPUT_NAME",
    "IR_VERSION",
    "ONNX_FILE",
    "OPSET",
    "OUTPUT_NAME",
    "cached_export",
    "decoder_onnx_bytes",
    "export_decoder",
    "export_run",
    "export_zip",
    "read_export",
    "run_onnx",
]

ONNX_FILE = "decoder.onnx"
EXPORT_FILE = "export.json"
EXPORT_FORMAT = "dogvae-decoder-onnx"
EXPORT_FORMAT_VERSION = 1


def export_decoder(decoder: Any, model_config: ModelConfig, out_dir: str | Path) -> Path:
    """Write ``decoder`` as ``decoder.onnx`` plus ``export.json`` into ``out_dir``.

    Args:
        decoder: A dogvae decoder (``dogvae.model.build_decoder`` or a loaded run's):
            latent vector (latent_dim,) -> image (H, W, C) in [0, 1].
        model_config: The run's model settings; the decoder must match them.
        out_dir: Folder to write into (created if missing; other files in it are left).

    Returns:
        The path of ``decoder.onnx``. ``export.json`` next to it records the latent
        size, image size, channels, opset, IR version, tensor names and the sha256
        of the ONNX file.

    Raises:
        ValueError: When the decoder does not match ``model_config`` or has a layer
            that cannot be exported.
    """
    model_config = model_config.validate()
    _check_shapes(decoder, model_config)
    return _write_export(decoder_onnx_bytes(decoder), model_config, Path(out_dir))


def cached_export(decoder: Any, model_config: ModelConfig, cache_dir: str | Path) -> Path:
    """The folder under ``cache_dir`` holding this decoder's export, written when missing.

    The folder is named after the ONNX file's sha256, so one decoder always has the
    same folder (and URL, once served) and a changed decoder never gets a stale one.
    """
    model_config = model_config.validate()
    _check_shapes(decoder, model_config)
    data = decoder_onnx_bytes(decoder)
    folder = Path(cache_dir) / hashlib.sha256(data).hexdigest()[:16]
    try:
        read_export(folder)
    except (FileNotFoundError, ValueError):
        _write_export(data, model_config, folder)
    return folder


def _write_export(data: bytes, model_config: ModelConfig, out_dir: Path) -> Path:
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"{out_dir} exists and is not a folder; choose another output folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = write_atomically(out_dir / ONNX_FILE, data)
    info = {
        "format": EXPORT_FORMAT,
        "format_version": EXPORT_FORMAT_VERSION,
        "dogvae_version": __version__,
        "onnx_file": ONNX_FILE,
        "sha256": hashlib.sha256(data).hexdigest(),
        "bytes": len(data),
        "latent_dim": model_config.latent_dim,
        "image_size": model_config.image_size,
        "channels": model_config.channels,
        "opset": OPSET,
        "ir_version": IR_VERSION,
        "input": INPUT_NAME,
        "output": OUTPUT_NAME,
        "output_layout": "NHWC",
        "output_range": [0.0, 1.0],
    }
    # export.json last: a folder with it holds a complete export.
    write_atomically(out_dir / EXPORT_FILE, (json.dumps(info, indent=2) + "\n").encode())
    return onnx_path


def export_run(run_dir: str | Path, out_dir: str | Path) -> Path:
    """Load the run at ``run_dir`` (safe mode) and export its decoder into ``out_dir``."""
    from dogvae.loaded_run import load_run

    run = load_run(run_dir)
    return export_decoder(run.decoder, run.info.model_config, out_dir)


def export_zip(run_dir: str | Path) -> bytes:
    """The run's decoder export (``decoder.onnx``, ``export.json``) as ZIP bytes, for a download.

    The files sit in a folder named ``<run>-decoder`` inside the archive.
    """
    from dogvae.runs import read_run_info

    info = read_run_info(run_dir)  # a clear error before TensorFlow loads
    with tempfile.TemporaryDirectory(prefix="dogvae-export-") as folder:
        export_run(info.path, folder)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for name in (ONNX_FILE, EXPORT_FILE):
                archive.write(Path(folder) / name, f"{info.name}-decoder/{name}")
    return buffer.getvalue()


def read_export(out_dir: str | Path) -> dict[str, Any]:
    """``export.json`` of an export folder, checked against its ``decoder.onnx``.

    Raises:
        FileNotFoundError: When the folder holds no complete export.
        ValueError: When export.json is damaged or the ONNX file is not the one it names.
    """
    out_dir = Path(out_dir)
    info_path, onnx_path = out_dir / EXPORT_FILE, out_dir / ONNX_FILE
    if not info_path.is_file() or not onnx_path.is_file():
        raise FileNotFoundError(f"{out_dir} holds no decoder export ({EXPORT_FILE}, {ONNX_FILE})")
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
        complete = isinstance(info, dict) and info.get("format") == EXPORT_FORMAT
    except (UnicodeDecodeError, json.JSONDecodeError):
        complete = False
    if not complete:
        raise ValueError(f"{info_path} is damaged or not a dogvae decoder export; export again")
    if hashlib.sha256(onnx_path.read_bytes()).hexdigest() != info.get("sha256"):
        raise ValueError(f"{onnx_path} does not match the sha256 in {info_path}; export again")
    return info


def _check_shapes(decoder: Any, config: ModelConfig) -> None:
    image_shape = (config.image_size, config.image_size, config.channels)
    if (
        tuple(decoder.input_shape[1:]) != (config.latent_dim,)
        or tuple(decoder.output_shape[1:]) != image_shape
    ):
        raise ValueError(
            f"the decoder maps {tuple(decoder.input_shape[1:])} -> "
            f"{tuple(decoder.output_shape[1:])}, but its settings say ({config.latent_dim},) -> "
            f"{image_shape}; export the decoder with its own run's settings"
        )
