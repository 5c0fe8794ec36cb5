"""An ONNX model file as a detector, run with ONNX Runtime on the CPU.

:class:`OnnxDetector` is the ``onnx`` detector: the model file a Viam machine's
``onnx-cpu`` service (or any other deployment) runs, scored offline. Everything but
loading and running the model is shared with the TFLite detector in
:class:`~calibrate.detectors.model_detector.ModelFileDetector` (options, pre-processing,
decoding, name and model version); see ``docs/local-models.md``.

Needs ``pip install 'calibrate[onnx]'`` (``onnxruntime``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from calibrate.detectors.base import FatalDetectorError
from calibrate.detectors.model_detector import ModelFileDetector
from calibrate.detectors.model_files import ModelRuntime, TensorInfo
from calibrate.errors import InputError

__all__ = ["OnnxDetector", "OnnxRuntimeModel"]

# ONNX Runtime's type names -> numpy's.
_TYPES = {
    "tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
    "tensor(uint8)": "uint8", "tensor(int8)": "int8", "tensor(int32)": "int32",
    "tensor(int64)": "int64", "tensor(bool)": "bool",
}


def _ort(error: type[Exception] = InputError):
    try:
        import onnxruntime
    except ImportError:
        raise error("the onnx detector needs ONNX Runtime; install it with "
                    "pip install 'calibrate[onnx]'.") from None
    return onnxruntime


def _info(arg) -> TensorInfo:
    shape = tuple(d if isinstance(d, int) and d >= 0 else None for d in (arg.shape or ()))
    return TensorInfo(arg.name, shape, _TYPES.get(arg.type, arg.type))


class OnnxRuntimeModel(ModelRuntime):
    """An ONNX model loaded into an ONNX Runtime CPU session.

    Parameters
    ----------
    path : Path
    threads : int, optional
        ``intra_op_num_threads``; None leaves ONNX Runtime's default (one per core).

    Raises
    ------
    InputError
        The file is not a model ONNX Runtime can load (corrupt, truncated, another
        format, or operators it does not have).
    """

    def __init__(self, path: Path, threads: int | None = None):
        ort = _ort()
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = int(threads)
            options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only: warnings would interleave with output
        try:
            self.session = ort.InferenceSession(str(path), options,
                                                providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - ONNX Runtime raises its own types
            text = str(exc).strip().splitlines()
            raise InputError(
                f"ONNX Runtime cannot load model file {path} ({type(exc).__name__}: "
                f"{text[0][:300] if text else ''}); is it an ONNX model, complete and "
                "not damaged? Export it again or copy it again.") from None
        self.inputs = [_info(a) for a in self.session.get_inputs()]
        self.outputs = [_info(a) for a in self.session.get_outputs()]
        self._names = [t.name for t in self.outputs]

    def run(self, name: str, tensor: np.ndarray) -> dict[str, np.ndarray]:
        values = self.session.run(self._names, {name: tensor})
        return dict(zip(self._names, values))


class OnnxDetector(ModelFileDetector):
    """An ONNX model file run locally with ONNX Runtime (the ``onnx`` detector).

    Takes the options of :class:`~calibrate.detectors.model_detector.ModelFileDetector`:
    ``model`` and ``labels`` are required, the rest say how to feed and read the model.

    Examples
    --------
    >>> from calibrate.detectors.onnx_model import OnnxDetector
    >>> det = OnnxDetector(model="defects.onnx", labels="labels.txt",
    ...                    decoder="classifier", activation="softmax")  # doctest: +SKIP
    >>> det.name, det.model_version  # doctest: +SKIP
    ('onnx/defects/5c1e0a9b', 'sha256:3f9a6c21d4e7')
    """

    runtime_name = "onnx"

    def _load(self, path: Path, threads: int | None) -> ModelRuntime:
        return OnnxRuntimeModel(path, threads)

    def runtime_version(self) -> str:
        """``onnxruntime <version>``."""
        return f"onnxruntime {_ort(FatalDetectorError).__version__}"
