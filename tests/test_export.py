"""dogvae.export: every preset's decoder, and the shipped default, as ONNX that onnxruntime
runs to Keras' numbers; batch norm folded exactly; Keras' padding rules; clear refusals."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import keras
import numpy as np
import onnx
import pytest

from dogvae import export, loaded_run, onnx_graph
from dogvae.config import PRESETS, ModelConfig
from dogvae.model import build_decoder, decode

REPO = Path(__file__).resolve().parents[1]
DEFAULT_RUN = REPO / "models" / "default"
# float32 through a few hundred multiply-adds per output: onnxruntime and TensorFlow sum
# in other orders, so the outputs (in [0, 1]) differ in the last bits, never more.
TOLERANCE = 1e-5
# The largest onnxruntime-web 1.30 reads.
MAX_IR_VERSION = 13


def randomise_batch_norms(decoder: keras.Model, seed: int = 0) -> None:
    """Moving statistics, scale and offset away from their initial 0 / 1, as after training."""
    rng = np.random.default_rng(seed)
    for layer in decoder.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            size = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(0, 0.5, size).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.2, 3.0, size).astype("float32"))
            layer.gamma.assign(rng.uniform(0.5, 1.5, size).astype("float32"))
            layer.beta.assign(rng.normal(0, 0.3, size).astype("float32"))


def latents(count: int, latent_dim: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(count, latent_dim)).astype("float32")


def keras_images(decoder: keras.Model, z: np.ndarray) -> np.ndarray:
    return keras.ops.convert_to_numpy(decoder(z, training=False))


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_decodes_as_in_keras(name: str, tmp_path: Path) -> None:
    config = PRESETS[name].model
    keras.utils.set_random_seed(1)
    decoder = build_decoder(config)
    randomise_batch_norms(decoder)
    path = export.export_decoder(decoder, config, tmp_path)
    z = latents(4, config.latent_dim)
    expected = keras_images(decoder, z)
    got = export.run_onnx(path, z)
    assert got.shape == expected.shape == (4, config.image_size, config.image_size, config.channels)
    assert np.abs(got - expected).max() <= TOLERANCE


def test_the_default_model_decodes_as_the_app_does(tmp_path: Path) -> None:
    run = loaded_run.load_run(DEFAULT_RUN)
    path = export.export_decoder(run.decoder, run.info.model_config, tmp_path)
    z = latents(16, run.info.model_config.latent_dim, seed=5)
    got = export.run_onnx(path, z)
    assert np.abs(got - keras_images(run.decoder, z)).max() <= TOLERANCE
    # What the app shows: the compiled one-row decode, rounded to uint8.
    app = np.clip(np.rint(decode(run.decoder, z) * 255.0), 0, 255)
    ours = np.clip(np.rint(got * 255.0), 0, 255)
    assert np.abs(app - ours).max() <= 1


def test_the_export_is_an_onnx_file_onnxruntime_web_reads(tmp_path: Path) -> None:
    config = PRESETS["quality"].model
    path = export.export_decoder(build_decoder(config), config, tmp_path)
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    assert model.ir_version <= MAX_IR_VERSION
    assert [opset.version for opset in model.opset_import if opset.domain == ""] == [export.OPSET]
    assert [value.name for value in model.graph.input] == [export.INPUT_NAME]
    assert [value.name for value in model.graph.output] == [export.OUTPUT_NAME]
    operators = {node.op_type for node in model.graph.node}
    assert "BatchNormalization" not in operators, "batch norm was not folded"
    assert operators <= {"Gemm", "Reshape", "ConvTranspose", "Conv", "Sigmoid", "Mul", "Transpose"}


def test_export_json_describes_the_file(tmp_path: Path) -> None:
    config = PRESETS["quality-rgb"].model
    path = export.export_decoder(build_decoder(config), config, tmp_path / "out")
    info = json.loads((tmp_path / "out" / export.EXPORT_FILE).read_text())
    assert info["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert info["bytes"] == path.stat().st_size
    assert (info["latent_dim"], info["image_size"], info["channels"]) == (64, 64, 3)
    assert (info["opset"], info["ir_version"]) == (export.OPSET, export.IR_VERSION)
    assert export.read_export(tmp_path / "out") == info


def test_read_export_refuses_a_changed_onnx_file(tmp_path: Path) -> None:
    config = PRESETS["seed"].model
    path = export.export_decoder(build_decoder(config), config, tmp_path)
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(ValueError, match="does not match the sha256"):
        export.read_export(tmp_path)
    with pytest.raises(FileNotFoundError, match="no decoder export"):
        export.read_export(tmp_path / "missing")
    (tmp_path / export.EXPORT_FILE).write_text("{")
    with pytest.raises(ValueError, match="damaged or not a dogvae decoder export"):
        export.read_export(tmp_path)


def test_cached_export_is_one_folder_per_decoder(tmp_path: Path) -> None:
    config = PRESETS["seed"].model
    keras.utils.set_random_seed(2)
    decoder = build_decoder(config)
    folder = export.cached_export(decoder, config, tmp_path)
    written = (folder / export.ONNX_FILE).stat().st_mtime_ns
    assert export.cached_export(decoder, config, tmp_path) == folder
    assert (folder / export.ONNX_FILE).stat().st_mtime_ns == written, "exported twice"
    decoder.get_layer("image").bias.assign(np.ones(1, "float32"))
    assert export.cached_export(decoder, config, tmp_path) != folder


def test_batch_norm_folding_is_exact() -> None:
    """A folded convolution computes conv + batch norm to float32 rounding."""
    config = dataclasses.replace(PRESETS["quality"].model, activation="relu")
    keras.utils.set_random_seed(4)
    decoder = build_decoder(config)
    randomise_batch_norms(decoder, seed=9)
    ops, _, _ = onnx_graph._decoder_ops(decoder)
    folded = {name for op in ops for name in op.folded}
    assert folded == {f"deconv_{index}_bn" for index in range(1, 5)}

    # The first transposed convolution and its batch norm, in Keras, on a feature map...
    deconv, norm = decoder.get_layer("deconv_1"), decoder.get_layer("deconv_1_bn")
    features = np.random.default_rng(0).normal(size=(2, 4, 4, 128)).astype("float32")
    expected = keras.ops.convert_to_numpy(norm(deconv(features), training=False))
    # ... and the folded weights (kernel * scale, a bias) as one transposed convolution.
    op = next(op for op in ops if op.layer == "deconv_1")
    session = _single_op_session(op, features.shape)
    got = session.run(None, {"x": features.transpose(0, 3, 1, 2)})[0].transpose(0, 2, 3, 1)
    scale = np.abs(expected).max()
    assert np.abs(got - expected).max() <= 1e-6 * scale


def _single_op_session(op, shape):
    import onnxruntime
    from onnx import TensorProto, helper, numpy_helper

    node = helper.make_node("ConvTranspose", ["x", "w", "b"], ["y"], name="y", **op.attributes)
    graph = helper.make_graph(
        [node],
        "one",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [shape[0], shape[3], *shape[1:3]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[
            numpy_helper.from_array(op.weight, "w"),
            numpy_helper.from_array(op.bias, "b"),
        ],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", export.OPSET)], ir_version=export.IR_VERSION
    )
    return onnxruntime.InferenceSession(
        model.SerializeToString(), providers=["CPUExecutionProvider"]
    )


@pytest.mark.parametrize("padding", ["same", "valid"])
@pytest.mark.parametrize(("kernel", "stride"), [(3, 2), (4, 2), (5, 2), (2, 2), (1, 2), (3, 1)])
def test_convolution_padding_follows_keras(kernel: int, stride: int, padding: str) -> None:
    """Keras' 'same' / 'valid' (transposed) convolutions, for kernels the presets do not use."""
    inputs = keras.Input((latent_dim := 3,), name="z")
    x = keras.layers.Dense(5 * 5 * 4, activation="relu")(inputs)
    x = keras.layers.Reshape((5, 5, 4))(x)
    x = keras.layers.Conv2DTranspose(6, kernel, strides=stride, padding=padding)(x)
    x = keras.layers.Activation("silu")(x)
    x = keras.layers.Conv2D(2, kernel, strides=stride, padding=padding, activation="tanh")(x)
    decoder = keras.Model(inputs, x)
    z = latents(3, latent_dim)
    got = export.run_onnx(export.decoder_onnx_bytes(decoder), z)
    expected = keras_images(decoder, z)
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= TOLERANCE


def test_a_layer_it_cannot_export_is_named() -> None:
    inputs = keras.Input((4,))
    x = keras.layers.Dense(8 * 8 * 2)(inputs)
    x = keras.layers.Reshape((8, 8, 2))(x)
    x = keras.layers.UpSampling2D()(x)
    decoder = keras.Model(inputs, x)
    with pytest.raises(ValueError, match=r"cannot export layer 'up_sampling2d.*' \(UpSampling2D\)"):
        export.decoder_onnx_bytes(decoder)


def test_an_activation_it_cannot_export_is_named() -> None:
    inputs = keras.Input((4,))
    decoder = keras.Model(inputs, keras.layers.Dense(3, activation="gelu", name="wide")(inputs))
    with pytest.raises(ValueError, match="cannot export activation 'gelu' of layer 'wide'"):
        export.decoder_onnx_bytes(decoder)


def test_a_batch_norm_after_an_activation_is_refused() -> None:
    inputs = keras.Input((4,))
    x = keras.layers.Dense(3, activation="relu")(inputs)
    decoder = keras.Model(inputs, keras.layers.BatchNormalization(name="late_bn")(x))
    with pytest.raises(ValueError, match="cannot export BatchNormalization 'late_bn'"):
        export.decoder_onnx_bytes(decoder)


def test_a_decoder_must_match_its_settings(tmp_path: Path) -> None:
    decoder = build_decoder(PRESETS["seed"].model)
    with pytest.raises(ValueError, match="export the decoder with its own run's settings"):
        export.export_decoder(decoder, ModelConfig(latent_dim=3), tmp_path)


def test_export_run_writes_the_runs_decoder(tmp_path: Path) -> None:
    path = export.export_run(DEFAULT_RUN, tmp_path / "export")
    assert path == tmp_path / "export" / export.ONNX_FILE
    assert export.read_export(tmp_path / "export")["latent_dim"] == 64


def test_importing_dogvae_export_loads_neither_onnx_nor_tensorflow() -> None:
    from tests.conftest import run_python

    heavy = ("onnx", "onnxruntime", "tensorflow", "keras")
    code = f"import sys, dogvae.export; print(sorted(set({heavy!r}) & set(sys.modules)))"
    result = run_python("-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
