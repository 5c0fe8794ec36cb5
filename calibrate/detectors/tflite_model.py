"""A TensorFlow Lite model file as a detector, run with LiteRT on the CPU.

:class:`TFLiteDetector` is the ``tflite`` detector: the ``.tflite`` file a Viam
machine's ``tflite_cpu`` service runs, scored offline. Everything but loading and running
the model is shared with the ONNX detector in
:class:`~calibrate.detectors.model_detector.ModelFileDetector`; see
``docs/local-models.md``.

The interpreter comes from ``ai-edge-litert`` (Google's successor to ``tflite-runtime``,
which is built for NumPy 1 and has no release since 2023); ``tflite_runtime`` is used
when it is the one installed. Integer outputs of a quantized model are turned into real
numbers with the output's own quantization (``scale * (q - zero_point)``), so scores are
on the model's real scale, as Viam's service reports them.

Needs ``pip install 'calibrate[tflite]'``.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from calibrate.detectors.base import FatalDetectorError
from calibrate.detectors.model_detector import ModelFileDetector
from calibrate.detectors.model_files import ModelRuntime, TensorInfo
from calibrate.errors import InputError

__all__ = ["TFLiteDetector", "TFLiteModel"]


def _interpreter_class(error: type[Exception] = InputError):
    """LiteRT's Interpreter, or tflite-runtime's, and the package's name and version."""
    try:
        import ai_edge_litert
        from ai_edge_litert.interpreter import Interpreter

        version = getattr(ai_edge_litert, "__version__", None)
        if version is None:
            from importlib.metadata import version as _v

            version = _v("ai-edge-litert")
        return Interpreter, f"ai-edge-litert {version}"
    except ImportError:
        pass
    try:
        import tflite_runtime
        from tflite_runtime.interpreter import Interpreter

        return Interpreter, f"tflite-runtime {tflite_runtime.__version__}"
    except ImportError:
        raise error("the tflite detector needs LiteRT; install it with "
                    "pip install 'calibrate[tflite]'.") from None


def _info(d: dict) -> TensorInfo:
    signature = d.get("shape_signature", d["shape"])
    shape = tuple(int(v) if v >= 0 else None for v in signature)
    scale, zero = d.get("quantization", (0.0, 0))
    quant = (float(scale), int(zero)) if scale else None
    return TensorInfo(d["name"], shape, np.dtype(d["dtype"]).name, quant)


class TFLiteModel(ModelRuntime):
    """A TFLite model loaded into a LiteRT interpreter.

    Parameters
    ----------
    path : Path
    threads : int, optional
        Interpreter threads; None leaves the runtime's default.

    Raises
    ------
    InputError
        The file is not a model the interpreter can load.
    """

    def __init__(self, path: Path, threads: int | None = None):
        interpreter_class, _ = _interpreter_class()
        try:
            self.interpreter = interpreter_class(model_path=str(path), num_threads=threads)
            self.interpreter.allocate_tensors()
        except Exception as exc:  # noqa: BLE001 - the runtime raises ValueError/RuntimeError
            text = str(exc).strip().splitlines()
            raise InputError(
                f"LiteRT cannot load model file {path} ({type(exc).__name__}: "
                f"{text[0][:300] if text else ''}); is it a .tflite model, complete and "
                "not damaged? Convert it again or copy it again.") from None
        self._in = {d["name"]: d for d in self.interpreter.get_input_details()}
        self._out = self.interpreter.get_output_details()
        self.inputs = [_info(d) for d in self._in.values()]
        self.outputs = [_info(d) for d in self._out]
        self._shapes = {name: tuple(d["shape"]) for name, d in self._in.items()}
        # An interpreter holds its tensors itself, so one call at a time (the runner's
        # thread pool may call from two threads; worker processes each have their own).
        self._lock = threading.Lock()

    def run(self, name: str, tensor: np.ndarray) -> dict[str, np.ndarray]:
        with self._lock:
            return self._run(name, tensor)

    def _run(self, name: str, tensor: np.ndarray) -> dict[str, np.ndarray]:
        detail = self._in[name]
        if self._shapes[name] != tensor.shape:  # an open size: the image's own
            self.interpreter.resize_tensor_input(detail["index"], list(tensor.shape))
            self.interpreter.allocate_tensors()
            self._shapes[name] = tensor.shape
            self._out = self.interpreter.get_output_details()
        self.interpreter.set_tensor(detail["index"], tensor)
        self.interpreter.invoke()
        out = {}
        for d in self._out:
            value = self.interpreter.get_tensor(d["index"])
            scale, zero = d.get("quantization", (0.0, 0))
            if scale and np.issubdtype(value.dtype, np.integer):
                value = (value.astype(np.float64) - zero) * scale
            out[d["name"]] = value
        return out


class TFLiteDetector(ModelFileDetector):
    """A TFLite model file run locally with LiteRT (the ``tflite`` detector).

    Takes the options of :class:`~calibrate.detectors.model_detector.ModelFileDetector`:
    ``model`` and ``labels`` are required, the rest say how to feed and read the model.

    Examples
    --------
    >>> from calibrate.detectors.tflite_model import TFLiteDetector
    >>> det = TFLiteDetector(model="effdet0.tflite", labels="labelmap.txt",
    ...                      decoder="ssd")  # doctest: +SKIP
    """

    runtime_name = "tflite"

    def _load(self, path: Path, threads: int | None) -> ModelRuntime:
        return TFLiteModel(path, threads)

    def runtime_version(self) -> str:
        """The interpreter package and its version, e.g. ``ai-edge-litert 2.3.0``."""
        return _interpreter_class(FatalDetectorError)[1]
