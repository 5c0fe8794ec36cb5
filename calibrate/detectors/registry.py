"""Detectors by name, as the CLI and study files refer to them.

Built-in names map to detector classes whose heavy imports happen only when chosen.
Anything containing a colon is a plugin: ``package.module:callable``, called with the
user's options (and ``model_version`` when given), which must return an object that
satisfies :class:`~calibrate.detectors.base.Detector`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from calibrate.detectors.base import Detector
from calibrate.secrets import register_options
from calibrate.errors import InputError

__all__ = ["BUILTIN", "make_detector"]


def _surface(model_version: str | None, **options: Any) -> Detector:
    from calibrate.detectors.surface import SurfaceDefectDetector

    return SurfaceDefectDetector(version=model_version or "v1", **options)


def _opencv_faces(model_version: str | None, **options: Any) -> Detector:
    from calibrate.detectors.opencv_faces import OpenCVFaceDetector

    return OpenCVFaceDetector(model_version=model_version, **options)


def _rekognition(cls_name: str) -> Callable[..., Detector]:
    def factory(model_version: str | None, **options: Any) -> Detector:
        from calibrate.detectors import rekognition

        return getattr(rekognition, cls_name)(model_version=model_version, **options)

    return factory


def _alibaba_imm(model_version: str | None, **options: Any) -> Detector:
    from calibrate.detectors.alibaba_imm import AlibabaImmFaces

    return AlibabaImmFaces(model_version=model_version, **options)


def _viam(model_version: str | None, **options: Any) -> Detector:
    from calibrate.detectors.viam import ViamDetector

    return ViamDetector(model_version=model_version, **options)


def _onnx(model_version: str | None, **options: Any) -> Detector:
    from calibrate.detectors.onnx_model import OnnxDetector

    return OnnxDetector(model_version=model_version, **options)


def _tflite(model_version: str | None, **options: Any) -> Detector:
    from calibrate.detectors.tflite_model import TFLiteDetector

    return TFLiteDetector(model_version=model_version, **options)


#: Built-in detector names and what they are.
BUILTIN: dict[str, tuple[Callable[..., Detector], str]] = {
    "surface-defect": (_surface, "classical surface-defect detector for the bundled parts set (v1, v2)"),
    "opencv-haar-faces": (
        _opencv_faces,
        "OpenCV Haar-cascade frontal face detector, local (needs calibrate[faces])",
    ),
    "rekognition-faces": (
        _rekognition("RekognitionFaces"),
        "Amazon Rekognition DetectFaces, every face attribute a label (calibrate[aws])",
    ),
    "rekognition-labels": (
        _rekognition("RekognitionLabels"),
        "Amazon Rekognition DetectLabels, MinConfidence=0 (calibrate[aws])",
    ),
    "rekognition-custom-labels": (
        _rekognition("RekognitionCustomLabels"),
        "Amazon Rekognition Custom Labels; --option project_version_arn=ARN (calibrate[aws])",
    ),
    "alibaba-imm-faces": (
        _alibaba_imm,
        "Alibaba Cloud IMM DetectImageFaces on oss:// images; --option project=... "
        "--option region=... (calibrate[alibaba])",
    ),
    "viam": (
        _viam,
        "a vision service on a Viam machine (get_detections / get_classifications); needs "
        "calibrate[viam] and VIAM_API_KEY, VIAM_API_KEY_ID, VIAM_MACHINE_ADDRESS",
    ),
    "onnx": (
        _onnx,
        "an ONNX model file run locally with ONNX Runtime; --option model=PATH --option "
        "labels=PATH (calibrate[onnx]; docs/local-models.md)",
    ),
    "tflite": (
        _tflite,
        "a TFLite model file run locally with LiteRT; --option model=PATH --option "
        "labels=PATH (calibrate[tflite]; docs/local-models.md)",
    ),
}


def _check(obj: Any, spec: str) -> Detector:
    missing = [a for a in ("name", "model_version", "detect", "settings") if not hasattr(obj, a)]
    if missing:
        raise InputError(
            f"detector {spec!r} returned {type(obj).__name__}, which lacks "
            f"{', '.join(missing)}; a detector needs name, model_version, labels, kind, "
            "detection_floor, detect(image) and settings() (see calibrate.detectors.base)."
        )
    for attr, default in (("labels", None), ("kind", "io"), ("detection_floor", None)):
        if not hasattr(obj, attr):
            try:
                setattr(obj, attr, default)
            except AttributeError:
                raise InputError(f"detector {spec!r} has no attribute {attr!r}.") from None
    if obj.kind not in ("io", "cpu"):
        raise InputError(f"detector {spec!r}: kind must be 'io' or 'cpu', got {obj.kind!r}.")
    return obj


def make_detector(spec: str, *, model_version: str | None = None, **options: Any) -> Detector:
    """Build a detector from its name or a ``module:callable`` plugin spec.

    Parameters
    ----------
    spec : str
        A built-in name (see :data:`BUILTIN`) or ``package.module:callable``.
    model_version : str, optional
        The model version to use or record.
    **options
        Passed to the detector's constructor.

    Returns
    -------
    Detector

    Raises
    ------
    InputError
        Unknown name, a plugin that cannot be imported, or an object that is not a
        detector.
    """
    # Secret options (and URL user-info) are scrubbed by value from everything stored
    # or printed from here on, whatever the detector or an SDK does with them.
    register_options(options)
    if ":" in spec:
        module_name, _, attr = spec.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise InputError(
                f"plugin detector {spec!r}: cannot import {module_name!r} ({exc}). Is it "
                "installed, or on PYTHONPATH?"
            ) from None
        factory = getattr(module, attr, None)
        if not callable(factory):
            raise InputError(f"plugin detector {spec!r}: {module_name} has no callable {attr!r}.")
        if model_version is not None:
            options["model_version"] = model_version
        try:
            return _check(factory(**options), spec)
        except TypeError as exc:
            raise InputError(f"plugin detector {spec!r}: {exc}") from None
    if spec not in BUILTIN:
        names = ", ".join(sorted(BUILTIN))
        raise InputError(
            f"unknown detector {spec!r}. Built-in detectors: {names}; or name a plugin as "
            "package.module:callable."
        )
    factory, _ = BUILTIN[spec]
    try:
        return _check(factory(model_version, **options), spec)
    except TypeError as exc:
        raise InputError(f"detector {spec!r}: {exc}") from None
