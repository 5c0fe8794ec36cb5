"""The detector that runs a model file locally, shared by the ONNX and TFLite detectors.

:class:`ModelFileDetector` resolves the user's options against what the model says of
its inputs and outputs (name, shape, type), builds the
:class:`~calibrate.detectors.model_files.Preprocessing` and the output decoding, runs the
model once on a blank image so that a wrong option stops the command before any image is
scored, and then scores images. The runtimes (:mod:`calibrate.detectors.onnx_model`,
:mod:`calibrate.detectors.tflite_model`) only load a model file and run it.

Names, versions and runs
------------------------
The model version defaults to the first 12 hex digits of the model file's SHA-256, so a
retrained model is a new version. The name defaults to
``<runtime>/<model file stem>/<digest>``, the 8-hex-digit digest covering the label map,
pre-processing and decoding: the runner continues a run by (name, model version,
dataset), so two configurations of one model file must never share a name. A ``name``
given by the user replaces it (and the user then keeps configurations apart).

Processes
---------
The detector is ``kind = "cpu"``: the runner sends it to one worker process per CPU by
pickling it. A runtime session cannot be pickled, so a worker receives the options and
the model's SHA-256, loads the model itself (with one runtime thread, since the runner
already runs one process per CPU) and stops the run if the file changed meanwhile.
"""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from calibrate.detectors.base import Detection, FatalDetectorError, ImageError
from calibrate.detectors.model_files import (
    DECODERS,
    PLACEHOLDER,
    BoxDecoding,
    Classification,
    ModelRuntime,
    Preprocessing,
    ShapeMismatch,
    TensorInfo,
    file_sha256,
    read_label_map,
)
from calibrate.errors import InputError

__all__ = ["ModelFileDetector"]

_LAYOUTS = ("NHWC", "NCHW")
_CHANNELS = ("RGB", "BGR", "gray")
_DTYPES = ("float32", "float16", "uint8", "int8")
_RESIZE = ("stretch", "letterbox")
_FILTERS = ("bilinear", "nearest", "bicubic", "area")
_ACTIVATIONS = ("none", "softmax", "sigmoid")
_BOX_FORMATS = ("xyxy", "yxyx", "xywh", "cxcywh")
_BOX_UNITS = ("ratio", "pixel")
#: Candidate names of SSD outputs, as TensorFlow's and Viam's conventions spell them.
_SSD_NAMES = {
    "boxes": ("location", "boxes", "detection_boxes", "bboxes"),
    "scores": ("score", "scores", "detection_scores"),
    "classes": ("category", "classes", "detection_classes", "labels"),
    "count": ("n_detections", "num_detections", "count", "detection_count"),
}

#: The value of an option left to the decoder's default (a string, so that it survives
#: pickling to worker processes; ``null`` on the command line means "none").
_DEFAULT = "default"


@dataclass
class _Options:
    """The user's options, as given (plain values: this is what workers receive)."""

    model: str
    labels: Any
    decoder: str = "classifier"
    name: str | None = None
    model_version: str | None = None
    input: str | None = None
    input_size: Any = None
    layout: str | None = None
    channels: str | None = None
    dtype: str | None = None
    scale: float | None = None
    mean: Any = None
    std: Any = None
    resize: str = "stretch"
    resize_filter: str = "bilinear"
    pad_value: int = 114
    output: str | None = None
    activation: str = "none"
    boxes_output: str | None = None
    scores_output: str | None = None
    classes_output: str | None = None
    count_output: str | None = None
    box_format: str | None = None
    box_units: str | None = None
    score_floor: Any = _DEFAULT
    nms_iou: Any = _DEFAULT
    class_agnostic: bool = False
    max_detections: int = 100
    multi_label: bool = False
    class_offset: int = 0
    objectness: bool | None = None
    threads: int | None = None


class ModelFileDetector:
    """A detector that runs a model file locally: the shared part of the ONNX and TFLite
    detectors (subclasses only load the runtime).

    Parameters
    ----------
    model : str or Path
        The model file.
    labels : str, Path or list of str
        The label map (see :func:`read_label_map`), or the labels in class order.
    decoder : {"classifier", "ssd", "yolo"}, default "classifier"
        How outputs are read: one score per label per image (``classifier``), or boxes
        (``ssd``, ``yolo``; see :class:`BoxDecoding`).
    name : str, optional
        The detector's name in the store. Default ``<runtime>/<model file stem>/<digest>``,
        the digest (8 hex digits) covering every setting that changes scores or labels.
    model_version : str, optional
        Default ``sha256:<first 12 hex digits of the model file's SHA-256>``.
    input, input_size, layout, channels, dtype, scale, mean, std, resize, resize_filter, pad_value
        Pre-processing (see :class:`Preprocessing`). Defaults come from the model's
        input: its name, size, layout (``NCHW`` when the channel dimension comes first),
        channels (``gray`` for one channel, else ``RGB``) and type; for float inputs
        ``scale = 1/255``, ``mean = 0``, ``std = 1``. ``input_size`` is ``[width,
        height]`` or one number for a square.
    output, activation
        ``classifier``: the class-score output (default: the only output that has one
        score per label) and its activation.
    boxes_output, scores_output, classes_output, count_output
        ``ssd``: output names (default: by TensorFlow/Viam names, else TensorFlow's
        order boxes, classes, scores, count). For ``yolo`` the candidates are ``output``.
    box_format, box_units, score_floor, nms_iou, class_agnostic, max_detections, multi_label, class_offset, objectness
        Box decoding (see :class:`BoxDecoding`). Defaults: ``ssd``: ``yxyx``, ``ratio``,
        no floor, no suppression; ``yolo``: ``cxcywh``, ``pixel``, floor 0.001,
        ``nms_iou`` 0.5.
    threads : int, optional
        Threads of the runtime. Default: 1 in the runner's worker processes (one per
        CPU already), the runtime's own choice elsewhere.

    Raises
    ------
    InputError
        A missing or unreadable model file, one the runtime cannot load, an option the
        model cannot take, an output shape the decoder cannot read, or a label map whose
        size does not match the outputs. The model is run once on a blank image when
        the detector is built, so these surface before any image is scored.
    """

    kind = "cpu"
    #: ``"onnx"`` or ``"tflite"``: the first part of the default name.
    runtime_name = "model"

    def __init__(self, model=None, labels=None, **options: Any):
        if model is None or labels is None:
            missing = " and ".join(n for n, v in (("model", model), ("labels", labels))
                                   if v is None)
            raise InputError(
                f"the {self.runtime_name} detector needs {missing}: pass --option "
                f"model=PATH --option labels=PATH (see docs/local-models.md).")
        unknown = sorted(set(options) - set(_Options.__dataclass_fields__))
        if unknown:
            raise InputError(
                f"the {self.runtime_name} detector has no option {', '.join(unknown)}; "
                "see docs/local-models.md for its options.")
        self._opts = _Options(model=str(model), labels=labels, **options)
        self._setup(expected_sha=None)

    # -- building -----------------------------------------------------------------

    def _setup(self, expected_sha: str | None) -> None:
        o = self._opts
        self._path = Path(o.model).expanduser()
        self._sha = self._hash_model(expected_sha)
        self.labels_map = self._labels(o.labels)
        # Decoding errors name both files: a size mismatch is either one's fault.
        self._where = str(self._path) if isinstance(o.labels, (list, tuple)) else \
            f"{self._path} (label map {Path(o.labels).expanduser()})"
        self._rt: ModelRuntime | None = None
        rt = self._runtime()
        self.preprocessing = _preprocessing(o, rt.inputs, self._path)
        self.decoding = _decoding(o, rt.outputs, self.labels_map, self._path)
        self.labels = tuple(lab for _, lab in sorted(self.labels_map.items())
                            if lab != PLACEHOLDER)
        if expected_sha is None:
            self._check_by_running()
        self.model_version = _text_option("model_version", o.model_version) or \
            f"sha256:{self._sha[:12]}"
        self.name = _text_option("name", o.name) or (
            f"{self.runtime_name}/{self._path.stem}/{self._digest()}")
        if isinstance(self.decoding, Classification):
            self.score_range = (0.0, 1.0) if self.decoding.activation != "none" else None
            self.detection_floor = None
        else:
            self.score_range = None
            self.detection_floor = self.decoding.score_floor

    def _hash_model(self, expected: str | None) -> str:
        p = self._path
        if not p.exists():
            raise InputError(f"model file {p} does not exist; pass the model's path with "
                             "--option model=PATH.")
        if not p.is_file():
            raise InputError(f"model file {p} is not a file; pass the .{self.runtime_name} "
                             "file itself with --option model=PATH.")
        try:
            sha = file_sha256(p)
        except OSError as exc:
            raise InputError(f"cannot read model file {p}: {exc.strerror or exc}.") from None
        if expected is not None and sha != expected:
            raise FatalDetectorError(
                f"model file {p} changed while the run was going (SHA-256 {sha[:12]}, was "
                f"{expected[:12]}); scores of two models would mix. Run again.")
        return sha

    def _labels(self, labels) -> dict[int, str]:
        if isinstance(labels, (list, tuple)):
            out, seen = {}, set()
            for i, value in enumerate(labels):
                lab = str(value).strip()
                if not lab or (lab in seen and lab != PLACEHOLDER):
                    raise InputError(f"labels item {i}: {'empty' if not lab else 'repeated'} "
                                     f"label {lab!r}; every class needs its own name.")
                seen.add(lab)
                out[i] = lab
            if not seen - {PLACEHOLDER}:
                raise InputError("labels lists no label; name one label per class.")
            return out
        return read_label_map(labels)

    def _runtime(self) -> ModelRuntime:
        if self._rt is None:
            threads = self._opts.threads
            if threads is None and multiprocessing.parent_process() is not None:
                threads = 1  # a runner worker: one process per CPU already
            self._rt = self._load(self._path, threads)
        return self._rt

    def _load(self, path: Path, threads: int | None) -> ModelRuntime:  # pragma: no cover
        raise NotImplementedError

    def runtime_version(self) -> str:  # pragma: no cover - subclasses say
        raise NotImplementedError

    def _check_by_running(self) -> None:
        """Run the model once on a blank image, so that a wrong decoder, label map or
        input option stops the command before any image is scored."""
        w, h = self.preprocessing.size or (64, 64)
        blank = np.full((h, w, 3), 128, dtype=np.uint8)
        try:
            outputs = self._infer(blank)
        except InputError:
            raise
        except Exception as exc:  # noqa: BLE001 - the runtime's own error, reported as is
            raise InputError(
                f"{self._path}: running the model on a blank {w}x{h} image failed "
                f"({type(exc).__name__}: {_first_line(exc)}); check input, input_size, "
                "layout and dtype against the model.") from None
        self._decode(*outputs)

    # -- scoring ------------------------------------------------------------------

    def _infer(self, pixels: np.ndarray):
        tensor, geo = self.preprocessing.apply(pixels)
        return self._runtime().run(self.preprocessing.input, tensor), geo

    def _decode(self, outputs, geo) -> Detection:
        if isinstance(self.decoding, Classification):
            return self.decoding.decode(outputs, self.labels_map, self._where)
        return self.decoding.decode(outputs, self.labels_map, self._where, geo)

    def score_array(self, pixels: np.ndarray) -> Detection:
        """Score decoded pixels: ``uint8`` of shape (h, w, 3) in RGB order."""
        arr = np.asarray(pixels)
        if arr.ndim == 2:
            arr = np.repeat(arr[..., None], 3, axis=2)
        if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] < 3 or arr.size == 0:
            raise ImageError(f"{self.runtime_name} detector needs a uint8 RGB image, got "
                             f"{arr.dtype} of shape {arr.shape}.")
        try:
            outputs, geo = self._infer(arr)
        except (FatalDetectorError, ImageError):
            raise
        except Exception as exc:  # noqa: BLE001 - this image failed in the runtime
            raise ImageError(f"{self._path.name} failed on this image "
                             f"({type(exc).__name__}: {_first_line(exc)}).") from None
        try:
            return self._decode(outputs, geo)
        except ShapeMismatch as exc:
            raise FatalDetectorError(str(exc)) from None

    def detect(self, image) -> Detection:
        """Score one labeled image; an unreadable file raises :class:`ImageError`."""
        try:
            pixels = image.to_array()
        except Exception as exc:  # any decoding failure: this image cannot be scored
            raise ImageError(f"{self.runtime_name} detector cannot read image "
                             f"{image.image_id!r}: {exc}") from None
        return self.score_array(pixels)

    # -- records ------------------------------------------------------------------

    def _score_settings(self) -> dict[str, Any]:
        return {
            "decoder": self._opts.decoder,
            "labels": {str(k): v for k, v in sorted(self.labels_map.items())},
            "preprocessing": _plain(asdict(self.preprocessing)),
            "decoding": _plain(asdict(self.decoding)),
        }

    def _digest(self) -> str:
        text = json.dumps(self._score_settings(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:8]

    def settings(self) -> dict[str, Any]:
        """The model file, runtime, label map, pre-processing and decoding (everything
        that changes scores), as recorded with the run."""
        return {
            "runtime": self.runtime_name,
            "runtime_version": self.runtime_version(),
            "model_file": self._path.name,
            "model_sha256": self._sha,
            **self._score_settings(),
        }

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(model={str(self._path)!r}, name={self.name!r}, "
                f"model_version={self.model_version!r})")

    def __getstate__(self):  # workers get plain options; each loads the model itself
        return {"opts": self._opts, "sha": self._sha}

    def __setstate__(self, state):
        self._opts = state["opts"]
        self._setup(expected_sha=state["sha"])


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else ""


def _plain(obj):
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def _text_option(name: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{name} must be a non-empty string, got {value!r}.")
    return value.strip()


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise InputError(f"{name} must be one of {', '.join(allowed)}; got {value!r}.")
    return value


def _number(name: str, value: Any, *, low: float | None = None, integer: bool = False,
            above: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and integer:
        ok = float(value).is_integer()
    if ok and low is not None:
        ok = value > low if above else value >= low
    if not ok:
        bound = "" if low is None else f" {'above' if above else 'at least'} {low:g}"
        raise InputError(f"{name} must be {'an integer' if integer else 'a number'}{bound}, "
                         f"got {value!r}.")
    return int(value) if integer else float(value)


def _pick(tensors: list[TensorInfo], name: str | None, option: str, what: str,
          path: Path) -> TensorInfo | None:
    listed = ", ".join(t.describe() for t in tensors)
    if name is not None:
        for t in tensors:
            if t.name == name:
                return t
        raise InputError(f"{path} has no {what} {name!r} (option {option}); its {what}s: "
                         f"{listed}.")
    return None


def _preprocessing(o: _Options, inputs: list[TensorInfo], path: Path) -> Preprocessing:
    """Pre-processing from the options, with defaults read off the model's input."""
    tensor = _pick(inputs, o.input, "input", "input", path)
    if tensor is None:
        if len(inputs) != 1:
            raise InputError(f"{path} has {len(inputs)} inputs ("
                             f"{', '.join(t.describe() for t in inputs)}); name the image "
                             "input with --option input=NAME.")
        tensor = inputs[0]
    dtype = tensor.dtype if tensor.dtype in _DTYPES else None
    if dtype is None:
        raise InputError(f"{path}: input {tensor.describe()} is not an image tensor calibrate "
                         f"can feed (types {', '.join(_DTYPES)}).")
    if o.dtype is not None and o.dtype != dtype:
        raise InputError(f"{path}: input {tensor.describe()} takes {dtype}, not dtype="
                         f"{o.dtype!r}; leave dtype out or set it to {dtype}.")
    shape = tensor.shape
    if len(shape) == 2:
        layout, flat, c_dim, hw = _choice("layout", o.layout or "NHWC", _LAYOUTS), True, None, None
    elif len(shape) == 4:
        flat = False
        layout = _layout(o.layout, shape, tensor, path)
        c_dim = shape[3] if layout == "NHWC" else shape[1]
        hw = shape[1:3] if layout == "NHWC" else shape[2:4]
    else:
        raise InputError(f"{path}: input {tensor.describe()} has {len(shape)} dimensions; an "
                         "image input has 4 ([1, h, w, c] or [1, c, h, w]) or 2 ([1, "
                         "features], a flattened image).")
    size = _size(o.input_size, hw, tensor, path)
    if flat and o.channels is None and size is not None and shape[1] == size[0] * size[1]:
        c_dim = 1  # a flattened one-channel image
    channels = _channels(o.channels, c_dim, tensor, path)
    n_ch = 1 if channels == "gray" else 3
    if flat:
        if size is None:
            raise InputError(f"{path}: input {tensor.describe()} is a flat feature vector; "
                             "say the image size it was flattened from with --option "
                             "input_size=[width,height].")
        if shape[1] is not None and shape[1] != size[0] * size[1] * n_ch:
            raise InputError(f"{path}: input {tensor.describe()} takes {shape[1]} features, "
                             f"but {size[0]}x{size[1]} {channels} gives "
                             f"{size[0] * size[1] * n_ch}; fix input_size or channels.")
    scale, mean, std = _normalisation(o, dtype, n_ch, tensor, path)
    return Preprocessing(
        input=tensor.name, size=size, layout=layout, flat=flat, channels=channels,
        dtype=dtype, scale=scale, mean=mean, std=std,
        resize=_choice("resize", o.resize, _RESIZE),
        resize_filter=_choice("resize_filter", o.resize_filter, _FILTERS),
        pad_value=int(_number("pad_value", o.pad_value, low=0, integer=True)),
    )


def _layout(given, shape, tensor: TensorInfo, path: Path) -> str:
    if given is not None:
        layout = _choice("layout", given, _LAYOUTS)
        c = shape[3] if layout == "NHWC" else shape[1]
        if c not in (None, 1, 3):
            raise InputError(f"{path}: input {tensor.describe()} has {c} channels in layout "
                             f"{layout}; check layout (NHWC or NCHW).")
        return layout
    last, second = shape[3] in (1, 3), shape[1] in (1, 3)
    if last and not second:
        return "NHWC"
    if second and not last:
        return "NCHW"
    raise InputError(f"{path}: cannot tell whether input {tensor.describe()} is NHWC or NCHW; "
                     "say it with --option layout=NHWC or layout=NCHW.")


def _channels(given, c_dim, tensor: TensorInfo, path: Path) -> str:
    if given is None:
        return "gray" if c_dim == 1 else "RGB"
    channels = _choice("channels", given, _CHANNELS)
    if c_dim is not None and (c_dim == 1) != (channels == "gray"):
        raise InputError(f"{path}: input {tensor.describe()} has {c_dim} channel(s); "
                         f"channels={channels} does not fit (gray has 1, RGB and BGR 3).")
    return channels


def _size(given, hw, tensor: TensorInfo, path: Path) -> tuple[int, int] | None:
    fixed = None if hw is None or None in hw else (int(hw[1]), int(hw[0]))
    if given is None:
        return fixed
    if isinstance(given, (int, float)) and not isinstance(given, bool):
        given = [given, given]
    if not isinstance(given, (list, tuple)) or len(given) != 2:
        raise InputError(f"input_size must be [width, height] or one number, got {given!r}.")
    size = tuple(int(_number("input_size", v, low=1, integer=True)) for v in given)
    if fixed is not None and size != fixed:
        raise InputError(f"{path}: input {tensor.describe()} is {fixed[0]}x{fixed[1]} "
                         f"(width x height); input_size={list(size)} does not fit. Leave "
                         "input_size out for a model with a fixed size.")
    return size  # type: ignore[return-value]


def _normalisation(o: _Options, dtype: str, n_ch: int, tensor: TensorInfo, path: Path):
    if dtype in ("uint8", "int8"):
        given = [n for n in ("scale", "mean", "std") if getattr(o, n) is not None]
        if given:
            raise InputError(
                f"{path}: input {tensor.describe()} is {dtype}: it takes pixels as they are "
                f"(its quantization does the normalising); {', '.join(given)} apply to "
                "float inputs only. Leave them out.")
        return 1.0, (0.0,), (1.0,)
    scale = 1.0 / 255.0 if o.scale is None else _number("scale", o.scale, low=0, above=True)
    mean = _per_channel("mean", 0.0 if o.mean is None else o.mean, n_ch)
    std = _per_channel("std", 1.0 if o.std is None else o.std, n_ch)
    if any(s <= 0 for s in std):
        raise InputError(f"std must be positive, got {list(std)}.")
    return scale, mean, std


def _per_channel(name: str, value, n_ch: int) -> tuple[float, ...]:
    values = value if isinstance(value, (list, tuple)) else [value]
    out = tuple(_number(name, v) for v in values)
    if len(out) not in (1, n_ch):
        raise InputError(f"{name} needs 1 or {n_ch} values (one per channel), got {list(out)}.")
    return out


def _decoding(o: _Options, outputs: list[TensorInfo], labels: dict[int, str], path: Path):
    decoder = _choice("decoder", o.decoder, DECODERS)
    if decoder == "classifier":
        out = _pick(outputs, o.output, "output", "output", path)
        if out is None:
            out = _classifier_output(outputs, len(labels) and max(labels) + 1, path)
        return Classification(out.name, _choice("activation", o.activation, _ACTIVATIONS))
    yolo = decoder == "yolo"
    if yolo:
        out = _pick(outputs, o.output, "output", "output", path)
        if out is None:
            if len(outputs) != 1:
                raise InputError(f"{path} has {len(outputs)} outputs ("
                                 f"{', '.join(t.describe() for t in outputs)}); name the "
                                 "candidates output with --option output=NAME.")
            out = outputs[0]
        names = {"candidates": out.name}
    else:
        names = _ssd_outputs(o, outputs, path)
    floor = (0.001 if yolo else None) if o.score_floor == _DEFAULT else o.score_floor
    iou = (0.5 if yolo else None) if o.nms_iou == _DEFAULT else o.nms_iou
    if iou is not None:
        iou = _number("nms_iou", iou, low=0)
        if iou > 1:
            raise InputError(f"nms_iou must be between 0 and 1, got {iou!r}.")
    if o.objectness is not None and not isinstance(o.objectness, bool):
        raise InputError(f"objectness must be true or false, got {o.objectness!r}.")
    for flag in ("class_agnostic", "multi_label"):
        if not isinstance(getattr(o, flag), bool):
            raise InputError(f"{flag} must be true or false, got {getattr(o, flag)!r}.")
    return BoxDecoding(
        decoder=decoder, outputs=names,
        box_format=_choice("box_format", o.box_format or ("cxcywh" if yolo else "yxyx"),
                           _BOX_FORMATS),
        box_units=_choice("box_units", o.box_units or ("pixel" if yolo else "ratio"),
                          _BOX_UNITS),
        score_floor=None if floor is None else _number("score_floor", floor),
        nms_iou=iou, class_agnostic=o.class_agnostic,
        max_detections=int(_number("max_detections", o.max_detections, low=1, integer=True)),
        multi_label=o.multi_label,
        class_offset=int(_number("class_offset", o.class_offset, integer=True)),
        objectness=o.objectness,
    )


def _classifier_output(outputs: list[TensorInfo], n_classes: int, path: Path) -> TensorInfo:
    if len(outputs) == 1:
        return outputs[0]
    fits = [t for t in outputs if t.dtype.startswith("float") and len(t.shape) >= 1
            and [d for d in t.shape[1:] if d != 1] == [n_classes]]
    if len(fits) == 1:
        return fits[0]
    raise InputError(f"{path} has {len(outputs)} outputs ("
                     f"{', '.join(t.describe() for t in outputs)}); name the one with the "
                     "class scores with --option output=NAME.")


def _ssd_outputs(o: _Options, outputs: list[TensorInfo], path: Path) -> dict[str, str]:
    given = {"boxes": o.boxes_output, "scores": o.scores_output,
             "classes": o.classes_output, "count": o.count_output}
    names: dict[str, str] = {}
    for role, name in given.items():
        t = _pick(outputs, name, f"{role}_output", "output", path)
        if t is not None:
            names[role] = t.name
    by_lower = {t.name.lower(): t.name for t in outputs}
    for role, candidates in _SSD_NAMES.items():
        if role not in names:
            found = [by_lower[c] for c in candidates if c in by_lower]
            if found:
                names[role] = found[0]
    if "boxes" not in names or "scores" not in names:
        if len(outputs) == 4 and not names:
            # TensorFlow's TFLite_Detection_PostProcess order: boxes, classes, scores, count.
            return dict(zip(("boxes", "classes", "scores", "count"), (t.name for t in outputs)))
        raise InputError(f"{path}: cannot tell which outputs hold boxes and scores ("
                         f"{', '.join(t.describe() for t in outputs)}); name them with "
                         "--option boxes_output=NAME --option scores_output=NAME (and "
                         "classes_output, count_output if the model has them).")
    return names
