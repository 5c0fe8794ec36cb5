"""Tiny ONNX and TFLite models built in the tests (no downloads, no TensorFlow).

ONNX graphs are written with ``onnx.helper``; TFLite flatbuffers with the schema's object
API and ``flatbuffer_utils.write_model``, both shipped in the ``ai-edge-litert`` wheel.
Each builder also returns what an independent numpy computation of the same graph needs,
so tests can check the detectors against the math as well as against the runtimes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


# -- ONNX ---------------------------------------------------------------------------------


def _save_onnx(nodes, inputs, outputs, inits, path: Path) -> Path:
    import onnx
    from onnx import helper

    graph = helper.make_graph(nodes, path.stem, inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def onnx_pooled_classifier(path: Path, weights: np.ndarray, bias: np.ndarray, *,
                           size=(8, 8), layout="NCHW", channels=3, activation=None,
                           dynamic=False) -> Path:
    """image -> per-channel mean -> Gemm(weights [channels, classes]) [-> activation]."""
    from onnx import TensorProto, helper, numpy_helper

    h, w = (None, None) if dynamic else (size[1], size[0])
    shape = [1, channels, h, w] if layout == "NCHW" else [1, h, w, channels]
    axes = [2, 3] if layout == "NCHW" else [1, 2]
    nodes = [
        helper.make_node("ReduceMean", ["x"], ["p"], axes=axes, keepdims=0),
        helper.make_node("Gemm", ["p", "W", "b"], ["logits" if activation else "scores"]),
    ]
    if activation:
        nodes.append(helper.make_node(activation, ["logits"], ["scores"]))
    inits = [numpy_helper.from_array(weights.astype(np.float32), "W"),
             numpy_helper.from_array(bias.astype(np.float32), "b")]
    return _save_onnx(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                      [helper.make_tensor_value_info("scores", TensorProto.FLOAT,
                                                     [1, weights.shape[1]])], inits, path)


def onnx_constant_outputs(path: Path, outputs: dict[str, np.ndarray], *, size=(16, 16),
                          gain: float = 0.0) -> Path:
    """An image input [1, 3, h, w] and float outputs ``value + gain * mean(image)``:
    decoders are tested on exactly the tensors a test chooses, while the outputs still
    depend on the image (so a broken feed would show)."""
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("ReduceMean", ["x"], ["m"], keepdims=0),
             helper.make_node("Mul", ["m", "gain"], ["g"])]
    inits = [numpy_helper.from_array(np.array(gain, np.float32), "gain")]
    outs = []
    for name, value in outputs.items():
        value = np.asarray(value, np.float32)
        inits.append(numpy_helper.from_array(value, f"{name}_c"))
        nodes.append(helper.make_node("Add", [f"{name}_c", "g"], [name]))
        outs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(value.shape)))
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, size[1], size[0]])
    return _save_onnx(nodes, [x], outs, inits, path)


# -- TFLite -------------------------------------------------------------------------------


class _TFLite:
    """A small TFLite graph under construction."""

    def __init__(self):
        from ai_edge_litert import schema_py_generated as s

        self.s = s
        self.tensors, self.buffers, self.ops, self.codes = [], [s.BufferT()], [], []

    def tensor(self, name, shape, dtype=0, data: np.ndarray | None = None, quant=None) -> int:
        s = self.s
        buf = 0
        if data is not None:
            b = s.BufferT()
            b.data = list(np.ascontiguousarray(data).tobytes())
            self.buffers.append(b)
            buf = len(self.buffers) - 1
        t = s.TensorT()
        t.shape, t.type, t.buffer, t.name = list(shape), dtype, buf, name
        if quant is not None:
            q = s.QuantizationParametersT()
            q.scale, q.zeroPoint = [float(quant[0])], [int(quant[1])]
            t.quantization = q
        self.tensors.append(t)
        return len(self.tensors) - 1

    def op(self, code: int, inputs, outputs, options_type=0, options=None) -> None:
        s = self.s
        if code not in self.codes:
            self.codes.append(code)
        o = s.OperatorT()
        o.opcodeIndex = self.codes.index(code)
        o.inputs, o.outputs = list(inputs), list(outputs)
        o.builtinOptionsType, o.builtinOptions = options_type, options
        self.ops.append(o)

    def write(self, inputs, outputs, path: Path) -> Path:
        from ai_edge_litert.tools import flatbuffer_utils

        s = self.s
        sg = s.SubGraphT()
        sg.tensors, sg.inputs, sg.outputs, sg.operators = self.tensors, inputs, outputs, self.ops
        m = s.ModelT()
        m.version, m.subgraphs, m.buffers, m.description = 3, [sg], self.buffers, "test"
        codes = []
        for c in self.codes:
            oc = s.OperatorCodeT()
            oc.builtinCode, oc.deprecatedBuiltinCode, oc.version = c, min(c, 127), 1
            codes.append(oc)
        m.operatorCodes = codes
        flatbuffer_utils.write_model(m, str(path))
        return path

    def mean_fc(self, x: int, weights: np.ndarray, bias: np.ndarray, name: str) -> int:
        """mean over height and width, then fully connected: [1, weights.shape[0]]."""
        s = self.s
        op = s.BuiltinOperator
        axes = self.tensor(f"{name}_axes", [2], 2, np.array([1, 2], np.int32))
        m = self.tensor(f"{name}_mean", [1, 3])
        red = s.ReducerOptionsT()
        red.keepDims = False
        self.op(op.MEAN, [x, axes], [m], s.BuiltinOptions.ReducerOptions, red)
        w = self.tensor(f"{name}_w", list(weights.shape), 0, weights.astype(np.float32))
        b = self.tensor(f"{name}_b", [weights.shape[0]], 0, bias.astype(np.float32))
        out = self.tensor(name, [1, weights.shape[0]])
        self.op(op.FULLY_CONNECTED, [m, w, b], [out], s.BuiltinOptions.FullyConnectedOptions,
                s.FullyConnectedOptionsT())
        return out


def tflite_classifier(path: Path, weights: np.ndarray, bias: np.ndarray, *, size=(8, 8),
                      quantized: bool = False) -> Path:
    """image [1, h, w, 3] -> mean -> fully connected (weights [classes, 3]) -> softmax.

    ``quantized``: a uint8 image input (DEQUANTIZE with scale 1/255) and a uint8
    output (QUANTIZE with scale 1/256, zero point 0), as integer models are deployed."""
    g = _TFLite()
    s, op = g.s, g.s.BuiltinOperator
    shape = [1, size[1], size[0], 3]
    if quantized:
        x = g.tensor("image", shape, 3, quant=(1 / 255, 0))
        xf = g.tensor("image_f", shape)
        g.op(op.DEQUANTIZE, [x], [xf])
    else:
        x = xf = g.tensor("image", shape)
    logits = g.mean_fc(xf, weights, bias, "logits")
    probs = g.tensor("probs_f" if quantized else "probs", [1, weights.shape[0]])
    sm = s.SoftmaxOptionsT()
    sm.beta = 1.0
    g.op(op.SOFTMAX, [logits], [probs], s.BuiltinOptions.SoftmaxOptions, sm)
    out = probs
    if quantized:
        out = g.tensor("probs", [1, weights.shape[0]], 3, quant=(1 / 256, 0))
        g.op(op.QUANTIZE, [probs], [out])
    return g.write([x], [out], path)


def tflite_ssd(path: Path, box_w: np.ndarray, box_b: np.ndarray, score_w: np.ndarray,
               score_b: np.ndarray, classes: np.ndarray, *, size=(16, 16)) -> Path:
    """SSD-style outputs named as Viam's mlmodel service names them: ``location``
    [1, N, 4] (mean -> fully connected -> reshape), ``score`` [1, N] (-> logistic) and
    ``category`` [1, N] (constant class ids, through a zero-weight fully connected)."""
    g = _TFLite()
    s, op = g.s, g.s.BuiltinOperator
    n = len(classes)
    x = g.tensor("image", [1, size[1], size[0], 3])
    flat = g.mean_fc(x, box_w, box_b, "location_flat")
    shape = g.tensor("location_shape", [3], 2, np.array([1, n, 4], np.int32))
    loc = g.tensor("location", [1, n, 4])
    ro = s.ReshapeOptionsT()
    ro.newShape = [1, n, 4]
    g.op(op.RESHAPE, [flat, shape], [loc], s.BuiltinOptions.ReshapeOptions, ro)
    logits = g.mean_fc(x, score_w, score_b, "score_logits")
    score = g.tensor("score", [1, n])
    g.op(op.LOGISTIC, [logits], [score])
    cat = g.mean_fc(x, np.zeros((n, 3)), classes.astype(np.float64), "category")
    return g.write([x], [loc, cat, score], path)


def filter_bank(size: int = 15) -> np.ndarray:
    """Zero-mean, unit-L1 filters [k, 1, size, size] for the parts defects: a Laplacian
    of Gaussian (spots), a difference of Gaussians (dents) and ridge filters (second
    derivative of a Gaussian across a line, long along it) at eight orientations, thin
    (scratches) and thinner (cracks)."""
    half = size // 2
    y, x = np.mgrid[-half:half + 1, -half:half + 1].astype(np.float64)
    r2 = x * x + y * y
    bank = [(r2 / 2.25 - 2) * np.exp(-r2 / 4.5),
            np.exp(-r2 / 8) / 8 - np.exp(-r2 / 32) / 32]
    for width, length in ((0.8, 4.0), (0.6, 2.5)):
        for theta in np.arange(8) * np.pi / 8:
            across = -x * np.sin(theta) + y * np.cos(theta)
            along = x * np.cos(theta) + y * np.sin(theta)
            q = (across / width) ** 2
            bank.append((1 - q) * np.exp(-q / 2) * np.exp(-0.5 * (along / length) ** 2))
    bank = [k - k.mean() for k in bank]
    return np.stack([k / np.abs(k).sum() for k in bank])[:, None].astype(np.float32)


def onnx_filter_model(path: Path, kernels: np.ndarray, weights: np.ndarray | None = None,
                      bias: np.ndarray | None = None, size=(64, 64)) -> Path:
    """gray image [1, 1, h, w] -> Conv(kernels) -> the strongest positive and negative
    response of each filter (GlobalMaxPool) -> [1, 2k] features; with ``weights``
    [2k, classes] and ``bias``, -> Gemm -> Sigmoid: one score per label."""
    from onnx import TensorProto, helper, numpy_helper

    k = kernels.shape[0]
    nodes = [helper.make_node("Conv", ["x", "K"], ["r"], pads=[kernels.shape[2] // 2] * 4),
             helper.make_node("Neg", ["r"], ["nr"]),
             helper.make_node("Concat", ["r", "nr"], ["rr"], axis=1),
             helper.make_node("GlobalMaxPool", ["rr"], ["p"]),
             helper.make_node("Flatten", ["p"], ["features" if weights is None else "f"])]
    inits = [numpy_helper.from_array(kernels, "K")]
    out = ("features", 2 * k)
    if weights is not None:
        nodes += [helper.make_node("Gemm", ["f", "W", "b"], ["z"]),
                  helper.make_node("Sigmoid", ["z"], ["scores"])]
        inits += [numpy_helper.from_array(weights.astype(np.float32), "W"),
                  numpy_helper.from_array(bias.astype(np.float32), "b")]
        out = ("scores", weights.shape[1])
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, size[1], size[0]])
    return _save_onnx(nodes, [x], [helper.make_tensor_value_info(out[0], TensorProto.FLOAT,
                                                                 [1, out[1]])], inits, path)
