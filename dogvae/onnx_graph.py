"""A dogvae decoder (Keras) as an ONNX graph, written with the ``onnx`` package directly.

- Dense -> Gemm; a Dense that feeds a Reshape to (H, W, C) has its output units put in
  (C, H, W) order, so the reshape needs no transpose;
- Conv2D / Conv2DTranspose -> Conv / ConvTranspose (NCHW), Keras' padding made explicit;
- BatchNormalization is folded into the Dense or convolution before it;
- relu, silu (x * sigmoid(x)), sigmoid, tanh and linear activations;
- a final transpose, so the output is (batch, H, W, C) as Keras' is.

A layer outside that list, or layers that do not form one chain, raise ValueError.
Importing this module is cheap: Keras and ``onnx`` load inside the functions, and
``onnxruntime`` only in ``run_onnx`` (for checks).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dogvae import __version__

# onnxruntime-web 1.30 reads IR versions up to 13 while the onnx package writes 14 by
# default; IR 8 with opset 17 is read by every onnxruntime of the last three years.
OPSET = 17
IR_VERSION = 8
INPUT_NAME = "z"
OUTPUT_NAME = "image"
_ACTIVATIONS = ("linear", "relu", "silu", "swish", "sigmoid", "tanh")


@dataclass
class _Op:
    """One ONNX operation with its weights, before it is written as nodes."""

    kind: str  # "gemm", "conv", "conv_transpose", "reshape", "activation"
    weight: np.ndarray | None = None  # in ONNX's layout
    bias: np.ndarray | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    activation: str = "linear"
    shape: tuple[int, ...] = ()  # reshape: Keras' target (H, W, C)
    layer: str = ""
    folded: list[str] = field(default_factory=list)  # batch norms folded into this op


def decoder_onnx_bytes(decoder: Any) -> bytes:
    """The decoder as a serialised ONNX model (see the module docstring for the mapping)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    ops, latent_dim, output_shape = _decoder_ops(decoder)
    nodes, initializers = [], []
    current = INPUT_NAME

    def constant(name: str, array: np.ndarray) -> str:
        initializers.append(numpy_helper.from_array(array, name))
        return name

    def node(op_type: str, inputs: list[str], output: str, **attributes: Any) -> str:
        nodes.append(helper.make_node(op_type, inputs, [output], name=output, **attributes))
        return output

    for index, op in enumerate(ops):
        name = f"{index:02d}_{op.layer}"
        if op.kind == "reshape":
            height, width, channels = op.shape
            target = np.array([-1, channels, height, width], np.int64)
            if op.attributes.get("nchw_ready"):
                current = node("Reshape", [current, constant(f"{name}_shape", target)], name)
            else:  # a reshape not fed by a Dense: reshape as Keras does, then to NCHW
                nhwc = np.array([-1, height, width, channels], np.int64)
                current = node(
                    "Reshape", [current, constant(f"{name}_shape", nhwc)], name + "_nhwc"
                )
                current = node("Transpose", [current], name, perm=[0, 3, 1, 2])
            continue
        if op.kind != "activation":
            inputs = [current, constant(f"{name}_weight", op.weight)]
            if op.bias is not None:
                inputs.append(constant(f"{name}_bias", op.bias))
            op_type = {"gemm": "Gemm", "conv": "Conv", "conv_transpose": "ConvTranspose"}[op.kind]
            current = node(
                op_type,
                inputs,
                name if op.activation == "linear" else name + "_linear",
                **op.attributes,
            )
        current = _activation_nodes(node, current, op.activation, name)

    height, width, channels = output_shape
    nodes.append(
        helper.make_node("Transpose", [current], [OUTPUT_NAME], name=OUTPUT_NAME, perm=[0, 2, 3, 1])
    )
    graph = helper.make_graph(
        nodes,
        "dogvae_decoder",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", latent_dim])],
        [
            helper.make_tensor_value_info(
                OUTPUT_NAME, TensorProto.FLOAT, ["batch", height, width, channels]
            )
        ],
        initializer=initializers,
    )
    model = helper.make_model(
        graph,
        producer_name="dogvae",
        producer_version=__version__,
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
    )
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


def run_onnx(onnx_file: str | Path | bytes, z: np.ndarray) -> np.ndarray:
    """Decode ``z`` (n, latent_dim) with onnxruntime (CPU): images (n, H, W, C) float32."""
    import onnxruntime

    source = onnx_file if isinstance(onnx_file, bytes) else str(onnx_file)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1  # as in the browser; and the box has two cores
    session = onnxruntime.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    z = np.asarray(z, dtype=np.float32)
    if z.ndim == 1:
        z = z[None, :]
    return session.run([OUTPUT_NAME], {INPUT_NAME: z})[0]


def _decoder_ops(decoder: Any) -> tuple[list[_Op], int, tuple[int, int, int]]:
    """The decoder's layers as ONNX operations, batch norms folded; latent size, output shape."""
    import keras

    layers = list(decoder.layers)
    if not layers or not isinstance(layers[0], keras.layers.InputLayer) or len(decoder.inputs) != 1:
        raise ValueError("only a decoder with one input layer can be exported")
    if len(decoder.outputs) != 1 or decoder.outputs[0] is not layers[-1].output:
        raise ValueError("only a decoder whose layers form one chain can be exported")
    ops: list[_Op] = []
    for previous, layer in itertools.pairwise(layers):
        if layer.input is not previous.output:
            raise ValueError(
                f"layer {layer.name!r} does not read the layer before it ({previous.name!r}); "
                "only a decoder whose layers form one chain can be exported"
            )
        ops.extend(_layer_ops(layer, ops))
    _reshape_without_transpose(ops)
    latent_dim = int(decoder.input_shape[-1])
    height, width, channels = (int(size) for size in decoder.output_shape[1:])
    return ops, latent_dim, (height, width, channels)


def _layer_ops(layer: Any, ops: list[_Op]) -> list[_Op]:
    """The new operations for ``layer`` (none for a batch norm folded into ``ops[-1]``)."""
    import keras

    kind = type(layer).__name__
    config = layer.get_config()
    if isinstance(layer, keras.layers.Dense):
        kernel, bias = _kernel_and_bias(layer)
        if len(layer.input.shape) != 2:
            raise ValueError(f"Dense layer {layer.name!r} must read a flat vector to be exported")
        return [_Op("gemm", kernel, bias, {}, _activation_name(layer), layer=layer.name)]
    if isinstance(layer, (keras.layers.Conv2D, keras.layers.Conv2DTranspose)):
        return [_conv_op(layer, config)]
    if isinstance(layer, keras.layers.BatchNormalization):
        _fold_batch_norm(layer, ops)
        return []
    if isinstance(layer, keras.layers.Activation):
        return [_Op("activation", activation=_activation_name(layer), layer=layer.name)]
    if isinstance(layer, keras.layers.ReLU):
        if any(config.get(key) for key in ("max_value", "negative_slope", "threshold")):
            raise ValueError(f"ReLU layer {layer.name!r} with limits cannot be exported")
        return [_Op("activation", activation="relu", layer=layer.name)]
    if isinstance(layer, keras.layers.Reshape):
        target = tuple(int(size) for size in config["target_shape"])
        if len(target) != 3 or len(layer.input.shape) != 2:
            raise ValueError(
                f"Reshape layer {layer.name!r} must turn a flat vector into (H, W, C) "
                f"to be exported, got {target}"
            )
        return [_Op("reshape", shape=target, layer=layer.name)]
    raise ValueError(
        f"cannot export layer {layer.name!r} ({kind}) to ONNX; the exporter knows Dense, "
        "Reshape, Conv2D, Conv2DTranspose, BatchNormalization, Activation and ReLU"
    )


def _activation_name(layer: Any) -> str:
    activation = layer.get_config().get("activation", "linear")
    if not isinstance(activation, str) or activation not in _ACTIVATIONS:
        raise ValueError(
            f"cannot export activation {activation!r} of layer {layer.name!r}; "
            f"the exporter knows {', '.join(_ACTIVATIONS)}"
        )
    return "silu" if activation == "swish" else activation


def _kernel_and_bias(layer: Any) -> tuple[np.ndarray, np.ndarray | None]:
    from keras import ops

    kernel = np.asarray(ops.convert_to_numpy(layer.kernel), np.float32)
    bias = getattr(layer, "bias", None)
    return kernel, None if bias is None else np.asarray(ops.convert_to_numpy(bias), np.float32)


def _conv_op(layer: Any, config: dict[str, Any]) -> _Op:
    """A Conv2D / Conv2DTranspose as Conv / ConvTranspose, Keras' padding made explicit."""
    import keras

    transposed = isinstance(layer, keras.layers.Conv2DTranspose)
    if config.get("data_format", "channels_last") != "channels_last":
        raise ValueError(f"layer {layer.name!r}: only channels_last convolutions can be exported")
    if tuple(config.get("dilation_rate", (1, 1))) != (1, 1) or config.get("groups", 1) != 1:
        raise ValueError(
            f"layer {layer.name!r}: dilated or grouped convolutions cannot be exported"
        )
    if transposed and config.get("output_padding") is not None:
        raise ValueError(f"layer {layer.name!r}: an explicit output_padding cannot be exported")
    padding = config["padding"]
    if padding not in ("same", "valid"):
        raise ValueError(f"layer {layer.name!r}: padding {padding!r} cannot be exported")
    kernel_size = tuple(int(size) for size in config["kernel_size"])
    strides = tuple(int(size) for size in config["strides"])
    in_size = tuple(int(size) for size in layer.input.shape[1:3])
    out_size = tuple(int(size) for size in layer.output.shape[1:3])
    kernel, bias = _kernel_and_bias(layer)
    begins, ends, output_padding = [], [], []
    for axis in range(2):
        k, s, n, out = kernel_size[axis], strides[axis], in_size[axis], out_size[axis]
        if transposed:
            # ONNX: out = s * (n - 1) + output_padding + k - begin - end. Keras' 'same'
            # crops the full result as its forward convolution pads: the smaller half first.
            crop = s * (n - 1) + k - out
            extra = max(-crop, 0)
            crop = max(crop, 0)
            begin = crop // 2 if padding == "same" else 0
            begins.append(begin)
            ends.append(crop - begin)
            output_padding.append(extra)
        else:
            total = max((out - 1) * s + k - n, 0) if padding == "same" else 0
            begins.append(total // 2)
            ends.append(total - total // 2)
    attributes: dict[str, Any] = {
        "kernel_shape": list(kernel_size),
        "strides": list(strides),
        "pads": begins + ends,
    }
    if transposed:
        # Keras (kh, kw, out, in) -> ONNX ConvTranspose (in, out, kh, kw)
        weight = kernel.transpose(3, 2, 0, 1)
        if any(output_padding):
            attributes["output_padding"] = output_padding
        kind = "conv_transpose"
    else:
        # Keras (kh, kw, in, out) -> ONNX Conv (out, in, kh, kw)
        weight = kernel.transpose(3, 2, 0, 1)
        kind = "conv"
    return _Op(
        kind,
        np.ascontiguousarray(weight),
        bias,
        attributes,
        _activation_name(layer),
        layer=layer.name,
    )


def _fold_batch_norm(layer: Any, ops: list[_Op]) -> None:
    """Fold an inference-mode batch norm into the linear operation just before it.

    y = gamma * (x W + b - mean) / sqrt(var + eps) + beta is x (W * s) + (b - mean) * s
    + beta with s = gamma / sqrt(var + eps), per output channel; computed in float64.
    """
    from keras import ops as keras_ops

    target = ops[-1] if ops else None
    if (
        target is None
        or target.kind not in ("gemm", "conv", "conv_transpose")
        or (target.activation != "linear")
    ):
        raise ValueError(
            f"cannot export BatchNormalization {layer.name!r}: it can only be folded into "
            "a Dense or convolution without activation right before it"
        )
    if layer.axis not in (-1, len(layer.input.shape) - 1):
        raise ValueError(f"cannot export BatchNormalization {layer.name!r} over axis {layer.axis}")

    def weight(variable: Any, default: float) -> np.ndarray:
        if variable is None:
            return np.full(layer.input.shape[-1], default, np.float64)
        return np.asarray(keras_ops.convert_to_numpy(variable), np.float64)

    gamma, beta = weight(layer.gamma, 1.0), weight(layer.beta, 0.0)
    mean, variance = weight(layer.moving_mean, 0.0), weight(layer.moving_variance, 1.0)
    scale = gamma / np.sqrt(variance + float(layer.epsilon))
    bias = target.bias.astype(np.float64) if target.bias is not None else np.zeros_like(mean)
    # The output channel is the last axis of a Gemm weight (in, out), the first of a
    # Conv weight (out, in, kh, kw) and the second of a ConvTranspose one (in, out, kh, kw).
    axis = {"gemm": 1, "conv": 0, "conv_transpose": 1}[target.kind]
    shape = [1] * target.weight.ndim
    shape[axis] = -1
    target.weight = (target.weight.astype(np.float64) * scale.reshape(shape)).astype(np.float32)
    target.bias = ((bias - mean) * scale + beta).astype(np.float32)
    target.folded.append(layer.name)


def _reshape_without_transpose(ops: list[_Op]) -> None:
    """Put the units of a Dense that feeds a Reshape in (C, H, W) order.

    Keras reshapes the flat vector to (H, W, C); ONNX convolutions read (C, H, W). With
    the Dense's columns permuted, a plain Reshape gives NCHW and no Transpose is needed.
    Activations in between are elementwise, so the permutation passes through them.
    """
    for index, op in enumerate(ops):
        if op.kind != "reshape":
            continue
        before = index - 1
        while before >= 0 and ops[before].kind == "activation":
            before -= 1
        if before < 0 or ops[before].kind != "gemm":
            continue
        height, width, channels = op.shape
        order = np.arange(height * width * channels).reshape(height, width, channels)
        order = order.transpose(2, 0, 1).ravel()
        dense = ops[before]
        dense.weight = np.ascontiguousarray(dense.weight[:, order])
        if dense.bias is not None:
            dense.bias = np.ascontiguousarray(dense.bias[order])
        op.attributes["nchw_ready"] = True


def _activation_nodes(node: Any, current: str, activation: str, name: str) -> str:
    """Nodes for an activation after ``current``; returns the name of its output."""
    if activation == "linear":
        return current
    if activation == "relu":
        return node("Relu", [current], name)
    if activation == "sigmoid":
        return node("Sigmoid", [current], name)
    if activation == "tanh":
        return node("Tanh", [current], name)
    # silu: opset 17 has no Silu operator (HardSwish is another function)
    gate = node("Sigmoid", [current], name + "_sigmoid")
    return node("Mul", [current, gate], name)
