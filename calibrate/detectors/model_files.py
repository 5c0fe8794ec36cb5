"""What the ONNX and TFLite detectors share: label maps, pre-processing, output decoding.

A model file alone does not say how to feed it or how to read it: the same network
exported twice can want RGB or BGR, 0-1 or ImageNet-normalised pixels, NCHW or NHWC,
and can answer with class probabilities or with boxes. This module holds that
knowledge once, for both runtimes (:mod:`calibrate.detectors.onnx_model`,
:mod:`calibrate.detectors.tflite_model`), as three plain, picklable pieces:

* :func:`read_label_map`: class index -> label name, from a text file (one label per
  line, line ``i`` is class ``i``) or JSON (a list, ``{"0": "scratch"}`` or
  ``{"scratch": 0}``);
* :class:`Preprocessing`: decoded image (uint8 RGB, EXIF-oriented, as
  :meth:`calibrate.manifest.LabeledImage.to_array` gives it) -> the input tensor, and
  the geometry to map model coordinates back to the image's pixels;
* :class:`Classification` and :class:`BoxDecoding`: output tensors -> results.
  Classification gives one image-level score per label (no box); box decoding reads
  SSD-style (boxes, scores, classes, count) or YOLO-style (one ``4 + classes`` or
  ``5 + classes`` candidate tensor) outputs, drops candidates below the score floor,
  applies non-maximum suppression and reports boxes in pixels of the original image,
  ``x_min, y_min, x_max, y_max``.

:class:`~calibrate.detectors.model_detector.ModelFileDetector` combines them with a
runtime (a :class:`ModelRuntime`) into a detector. The option reference is
``docs/local-models.md``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from calibrate.detectors.base import Box, Detection, Result
from calibrate.errors import InputError

__all__ = [
    "BoxDecoding",
    "Classification",
    "DECODERS",
    "Geometry",
    "ModelRuntime",
    "PLACEHOLDER",
    "Preprocessing",
    "ShapeMismatch",
    "TensorInfo",
    "file_sha256",
    "nms",
    "read_label_map",
]

#: The output decoders a model file detector can use.
DECODERS = ("classifier", "ssd", "yolo")
#: A label-map line that names no class (TensorFlow's COCO label maps use it for ids the
#: model never emits); results of such a class are dropped.
PLACEHOLDER = "???"
#: Class scores kept in ``Detection.raw`` in full up to this many classes (else the top 5).
_RAW_CLASSES = 64


# ---------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_label_map(path) -> dict[int, str]:
    """Class index -> label name, from a label-map file.

    Parameters
    ----------
    path : str or Path
        A text file with one label per line (line 1 is class 0; a line ``???`` names no
        class, as in TensorFlow's COCO label maps; trailing empty lines are ignored), or
        a ``.json`` file holding a list of labels, an object ``{"0": "scratch", ...}``
        (index -> label; gaps allowed) or ``{"scratch": 0, ...}`` (label -> index).

    Returns
    -------
    dict of int to str
        Placeholder classes keep their ``???`` (they count as classes of the model);
        detectors never report them.

    Raises
    ------
    InputError
        A missing or unreadable file, an empty label, an index that is not a
        non-negative integer, or one label named for two classes (their scores would
        merge into one label in every curve); the message names the file and line or key.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"label map {p} does not exist; pass the file listing the "
                         "model's labels with --option labels=PATH.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read label map {p}: {getattr(exc, 'strerror', None) or exc}; "
                         "it must be UTF-8 text (one label per line) or JSON.") from None
    if p.suffix.lower() == ".json":
        pairs = _json_label_pairs(p, text)
    else:
        lines = text.splitlines()
        while lines and not lines[-1].strip():
            lines.pop()
        pairs = [(i, line.strip(), f"{p}:{i + 1}") for i, line in enumerate(lines)]
    if not pairs:
        raise InputError(f"label map {p} lists no labels; write one label per line.")
    out: dict[int, str] = {}
    seen: dict[str, str] = {}
    for index, label, where in pairs:
        if not label:
            raise InputError(f"{where}: empty label; every class needs a name (write "
                             f"{PLACEHOLDER} for a class the model never reports).")
        if label == PLACEHOLDER:
            out[index] = label  # counts as a class; its results are never reported
            continue
        if label in seen:
            raise InputError(f"{where}: label {label!r} again (first at {seen[label]}); two "
                             "classes with one name would merge in every curve. Rename one.")
        seen[label] = where
        out[index] = label
    if not seen:
        raise InputError(f"label map {p} names no class (only {PLACEHOLDER} lines); write "
                         "one label per line.")
    return out


def _json_label_pairs(p: Path, text: str) -> list[tuple[int, str, str]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{p}:{exc.lineno}: not valid JSON ({exc.msg}); a JSON label map "
                         'is a list of labels or an object like {"0": "scratch"}.') from None
    if isinstance(data, list):
        return [(i, _json_label(p, v, f"item {i}"), f"{p} item {i}") for i, v in enumerate(data)]
    if not isinstance(data, dict):
        raise InputError(f"{p}: a JSON label map must be a list or an object, got "
                         f"{type(data).__name__}.")
    pairs = []
    for key, value in data.items():
        if isinstance(value, int) and not isinstance(value, bool):  # {"scratch": 0}
            key, value = value, key
        index = _json_index(p, key)
        pairs.append((index, _json_label(p, value, f"key {key!r}"), f"{p} key {key!r}"))
    indices = [i for i, _, _ in pairs]
    if len(set(indices)) != len(indices):
        raise InputError(f"{p}: one class index is given two labels; each index once.")
    return sorted(pairs)


def _json_index(p: Path, key: Any) -> int:
    try:
        index = int(key)
    except (TypeError, ValueError):
        index = -1
    if index < 0 or str(index) != str(key).strip():
        raise InputError(f"{p} key {key!r}: class indices must be non-negative integers "
                         '(write {"0": "scratch"} or {"scratch": 0}).')
    return index


def _json_label(p: Path, value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise InputError(f"{p} {where}: a label must be a string, got {value!r}.")
    return value.strip()


# ---------------------------------------------------------------------------------------
# Tensors and runtimes
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TensorInfo:
    """A model input or output as the runtime describes it.

    Attributes
    ----------
    name : str
    shape : tuple of int or None
        None for a dimension the model leaves open (batch, or a dynamic image size).
    dtype : str
        numpy name: ``"float32"``, ``"uint8"``, ...
    quantization : tuple of (float, int) or None
        TFLite's ``(scale, zero_point)`` of an integer tensor: real = scale * (q - zero).
    """

    name: str
    shape: tuple[int | None, ...]
    dtype: str
    quantization: tuple[float, int] | None = None

    def describe(self) -> str:
        dims = ", ".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.name!r} ({self.dtype}[{dims}])"


class ModelRuntime:
    """One loaded model in one process: what a runtime module implements.

    Attributes
    ----------
    inputs, outputs : list of TensorInfo
    """

    inputs: list[TensorInfo]
    outputs: list[TensorInfo]

    def run(self, name: str, tensor: np.ndarray) -> dict[str, np.ndarray]:
        """Outputs by name (dequantized to float where the model says how)."""
        raise NotImplementedError


# ---------------------------------------------------------------------------------------
# Pre-processing
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Geometry:
    """How model-input pixel coordinates map back to the original image's pixels."""

    image_w: int
    image_h: int
    input_w: int
    input_h: int
    scale_x: float  # input pixels per image pixel
    scale_y: float
    pad_x: float  # letterbox padding, input pixels
    pad_y: float

    def to_image(self, xyxy: np.ndarray) -> np.ndarray:
        """Boxes ``(n, 4)`` in input pixels -> image pixels, clipped to the image."""
        out = np.empty_like(xyxy, dtype=np.float64)
        out[:, [0, 2]] = (xyxy[:, [0, 2]] - self.pad_x) / self.scale_x
        out[:, [1, 3]] = (xyxy[:, [1, 3]] - self.pad_y) / self.scale_y
        out[:, [0, 2]] = out[:, [0, 2]].clip(0.0, self.image_w)
        out[:, [1, 3]] = out[:, [1, 3]].clip(0.0, self.image_h)
        return out


@dataclass(frozen=True)
class Preprocessing:
    """Decoded image -> the model's input tensor.

    The steps, in order: resize to ``size`` (``stretch``: to exactly that size;
    ``letterbox``: keep the aspect ratio and pad with ``pad_value``, as YOLO does);
    channel order (``RGB``, ``BGR`` or ``gray``: ITU-R 601 luma, one channel); for
    float inputs ``x = (pixel * scale - mean) / std`` per channel; for ``uint8`` inputs
    the raw pixels; for ``int8`` inputs ``pixel - 128``; then the layout (``NHWC`` or
    ``NCHW``, or flat for a model whose input is ``[batch, features]``) and a batch
    dimension of 1.

    Attributes
    ----------
    input : str
        The input tensor's name.
    size : tuple of (int, int) or None
        ``(width, height)`` the image is resized to; None feeds each image at its own
        size (a model with open spatial dimensions).
    layout : {"NHWC", "NCHW"}
    flat : bool
        The input is ``[batch, features]``: the tensor in ``layout`` order, flattened.
    channels : {"RGB", "BGR", "gray"}
    dtype : {"float32", "float16", "uint8", "int8"}
    scale : float
    mean, std : tuple of float
        One value per channel (or one for all).
    resize : {"stretch", "letterbox"}
    resize_filter : {"bilinear", "nearest", "bicubic", "area"}
    pad_value : int
    """

    input: str
    size: tuple[int, int] | None
    layout: str = "NHWC"
    flat: bool = False
    channels: str = "RGB"
    dtype: str = "float32"
    scale: float = 1.0 / 255.0
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    resize: str = "stretch"
    resize_filter: str = "bilinear"
    pad_value: int = 114

    def apply(self, rgb: np.ndarray) -> tuple[np.ndarray, Geometry]:
        """The input tensor (batch of one) for a ``uint8`` RGB image ``(h, w, 3)``."""
        from PIL import Image

        h, w = rgb.shape[:2]
        img = Image.fromarray(np.ascontiguousarray(rgb[..., :3]), "RGB")
        if self.channels == "gray":
            img = img.convert("L")
        iw, ih = self.size or (w, h)
        resample = {"bilinear": Image.Resampling.BILINEAR, "nearest": Image.Resampling.NEAREST,
                    "bicubic": Image.Resampling.BICUBIC, "area": Image.Resampling.BOX}[
            self.resize_filter]
        if self.resize == "letterbox":
            r = min(iw / w, ih / h)
            nw, nh = max(1, round(w * r)), max(1, round(h * r))
            px, py = (iw - nw) // 2, (ih - nh) // 2
            canvas = Image.new(img.mode, (iw, ih), (self.pad_value,) * len(img.getbands()))
            canvas.paste(img.resize((nw, nh), resample) if (nw, nh) != (w, h) else img, (px, py))
            img, geo = canvas, Geometry(w, h, iw, ih, nw / w, nh / h, px, py)
        else:
            img = img.resize((iw, ih), resample) if (iw, ih) != (w, h) else img
            geo = Geometry(w, h, iw, ih, iw / w, ih / h, 0.0, 0.0)
        arr = np.asarray(img)
        arr = arr[..., None] if arr.ndim == 2 else arr
        if self.channels == "BGR":
            arr = arr[..., ::-1]
        if self.dtype == "uint8":
            x = arr.astype(np.uint8)
        elif self.dtype == "int8":
            x = (arr.astype(np.int16) - 128).astype(np.int8)
        else:
            x = arr.astype(np.float32) * np.float32(self.scale)
            x = (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
            x = x.astype(self.dtype)
        if self.layout == "NCHW":
            x = x.transpose(2, 0, 1)
        x = np.ascontiguousarray(x[None])
        return (x.reshape(1, -1) if self.flat else x), geo


# ---------------------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------------------


class ShapeMismatch(InputError):
    """An output does not have the shape the chosen decoder reads (raised at load time
    as an :class:`InputError`, during a run as a :class:`FatalDetectorError`)."""


@dataclass(frozen=True)
class Classification:
    """Class-score output -> one image-level score per label (no box).

    Attributes
    ----------
    output : str
        The output holding one score per class, ``[1, classes]`` (or with trailing
        dimensions of 1).
    activation : {"none", "softmax", "sigmoid"}
        Applied to the output: ``softmax`` for logits of exclusive classes, ``sigmoid``
        for independent (multi-label) logits, ``none`` for outputs that are scores
        already (a model ending in its own softmax).
    """

    output: str
    activation: str = "none"

    def decode(self, outputs: dict[str, np.ndarray], labels: dict[int, str], model: str
               ) -> Detection:
        arr = np.asarray(outputs[self.output], dtype=np.float64)
        n_classes = max(labels) + 1
        dims = arr.shape[1:] if arr.ndim >= 2 else arr.shape
        if arr.ndim == 0 or (arr.ndim >= 2 and arr.shape[0] != 1) or \
                sum(d != 1 for d in dims) > 1:
            raise ShapeMismatch(_shape_message(model, self.output, arr.shape, "classifier",
                                               f"[1, {n_classes}]"))
        values = arr.reshape(-1)
        if values.size != n_classes:
            raise ShapeMismatch(
                f"{model}: output {self.output!r} has {values.size} class scores (shape "
                f"{list(arr.shape)}) but the label map names classes 0 to {n_classes - 1} "
                f"({len(labels)} labels); use the label map that came with this model, "
                "one label per class in output order.")
        if self.activation == "softmax":
            e = np.exp(values - values.max())
            values = e / e.sum()
        elif self.activation == "sigmoid":
            values = _sigmoid(values)
        results = [Result(lab, float(values[i])) for i, lab in sorted(labels.items())
                   if lab != PLACEHOLDER]
        if len(values) <= _RAW_CLASSES:
            raw = {"output": self.output, "scores": [round(float(v), 7) for v in values]}
        else:
            top = np.argsort(-values, kind="stable")[:5]
            raw = {"output": self.output, "top5": [[int(i), round(float(values[i]), 7)]
                                                   for i in top]}
        return Detection(results=results, raw=raw)


@dataclass(frozen=True)
class BoxDecoding:
    """Detector outputs -> boxed results in the original image's pixels.

    Attributes
    ----------
    decoder : {"ssd", "yolo"}
        ``ssd``: separate outputs of boxes ``[1, N, 4]``, scores ``[1, N]`` (or
        ``[1, N, classes]``), optional classes ``[1, N]`` and count ``[1]``, as
        TensorFlow's detection post-processing and Viam's ``location`` / ``score`` /
        ``category`` tensors give them. ``yolo``: one output of ``N`` candidates, each
        ``4 + classes`` values (YOLOv8 and later) or ``5 + classes`` (YOLOv5: an
        objectness that multiplies the class scores), as ``[1, N, K]`` or ``[1, K, N]``.
    outputs : dict
        Role (``boxes``, ``scores``, ``classes``, ``count``, or ``candidates`` for
        YOLO) -> output name.
    box_format : {"xyxy", "yxyx", "xywh", "cxcywh"}
        Order of a box's four numbers (``xywh``: top-left corner, width, height).
    box_units : {"ratio", "pixel"}
        Ratios of the model input's width and height, or its pixels.
    score_floor : float or None
        Candidates scoring below it are dropped (the run's detection floor); None keeps
        every candidate.
    nms_iou : float or None
        Greedy non-maximum suppression at this intersection-over-union, per class
        (or across classes with ``class_agnostic``); None for none (an SSD model that
        suppressed inside its graph).
    class_agnostic : bool
    max_detections : int
        Highest-scoring results kept per image, after suppression.
    multi_label : bool
        With per-class scores, a candidate yields a result for every class above the
        floor instead of only its best class.
    class_offset : int
        Added to a reported class id before looking it up in the label map (1 for a
        model whose ids start at 0 with a label map that starts with a background).
    objectness : bool or None
        YOLO only: whether candidates carry an objectness (None: ``5 + classes``
        values means yes, ``4 + classes`` no).
    """

    decoder: str
    outputs: dict[str, str]
    box_format: str
    box_units: str
    score_floor: float | None = None
    nms_iou: float | None = None
    class_agnostic: bool = False
    max_detections: int = 100
    multi_label: bool = False
    class_offset: int = 0
    objectness: bool | None = None

    def decode(self, outputs: dict[str, np.ndarray], labels: dict[int, str], model: str,
               geo: Geometry) -> Detection:
        if self.decoder == "ssd":
            boxes, scores, classes = self._ssd(outputs, labels, model)
        else:
            boxes, scores, classes = self._yolo(outputs, labels, model)
        if self.score_floor is not None:
            keep = scores >= self.score_floor
            boxes, scores, classes = boxes[keep], scores[keep], classes[keep]
        xyxy = self._to_input_pixels(boxes, geo)
        if self.nms_iou is not None and len(scores):
            groups = np.zeros_like(classes) if self.class_agnostic else classes
            keep = nms(xyxy, scores, self.nms_iou, groups)
            xyxy, scores, classes = xyxy[keep], scores[keep], classes[keep]
        order = np.argsort(-scores, kind="stable")[: self.max_detections]
        xyxy, scores, classes = xyxy[order], scores[order], classes[order]
        pix = geo.to_image(xyxy)
        results, raw = [], []
        for (x0, y0, x1, y1), s, c in zip(pix.tolist(), scores.tolist(), classes.tolist()):
            label = self._label(int(c), labels, model)
            if label is None:
                continue
            results.append(Result(label, float(s), Box(x0, y0, x1, y1, unit="pixel")))
            raw.append([int(c), round(float(s), 7), *(round(v, 2) for v in (x0, y0, x1, y1))])
        return Detection(results=results, raw={"image_size": [geo.image_w, geo.image_h],
                                               "detections": raw})

    def _label(self, c: int, labels: dict[int, str], model: str) -> str | None:
        index = c + self.class_offset
        if index in labels:
            return None if labels[index] == PLACEHOLDER else labels[index]
        if 0 <= index <= max(labels):  # a gap in a JSON map: a class with no name
            return None
        raise ShapeMismatch(
            f"{model}: the model reported class {c}{f' (+{self.class_offset} offset)' if self.class_offset else ''}"
            f" but the label map's classes are 0 to {max(labels)}; use the label map that "
            "came with this model (or set class_offset).")

    def _ssd(self, outputs, labels, model):
        names = self.outputs
        boxes = _batch_of_one(outputs[names["boxes"]], model, names["boxes"], 2, "[1, N, 4]")
        if boxes.shape[-1] != 4:
            raise ShapeMismatch(_shape_message(model, names["boxes"], boxes.shape, "ssd",
                                               "[1, N, 4]"))
        scores = _batch_of_one(outputs[names["scores"]], model, names["scores"], None,
                               "[1, N] or [1, N, classes]")
        n = boxes.shape[0]
        if scores.shape[0] != n or scores.ndim > 2:
            raise ShapeMismatch(
                f"{model}: output {names['scores']!r} has shape {list(scores.shape)} for "
                f"{n} boxes; the ssd decoder reads [1, {n}] or [1, {n}, classes] scores.")
        if "classes" in names:
            classes = _batch_of_one(outputs[names["classes"]], model, names["classes"], 1,
                                    f"[1, {n}]")
            if classes.shape != (n,) or scores.ndim != 1:
                raise ShapeMismatch(
                    f"{model}: outputs {names['classes']!r} {list(classes.shape)} and "
                    f"{names['scores']!r} {list(scores.shape)} should both be [1, {n}]: one "
                    "class and one score per box.")
            classes = np.rint(classes).astype(np.int64)
        elif scores.ndim == 2:
            boxes, scores, classes = self._per_class(boxes, scores, labels, model,
                                                     names["scores"])
        else:
            raise ShapeMismatch(
                f"{model}: output {names['scores']!r} has one score per box but no classes "
                "output was found; name it with --option classes_output=NAME.")
        if "count" in names:
            count = int(round(float(np.asarray(outputs[names["count"]]).reshape(-1)[0])))
            count = max(0, min(count, len(scores)))
            boxes, scores, classes = boxes[:count], scores[:count], classes[:count]
        return boxes.astype(np.float64), scores.astype(np.float64), classes

    def _yolo(self, outputs, labels, model):
        name = self.outputs["candidates"]
        arr = _batch_of_one(outputs[name], model, name, 2, "[1, N, 4 + classes]")
        n_classes = max(labels) + 1 - self.class_offset
        sizes = (4 + n_classes, 5 + n_classes) if self.objectness is None else (
            (5 + n_classes,) if self.objectness else (4 + n_classes,))
        if arr.shape[1] in sizes and not (arr.shape[0] in sizes and arr.shape[0] > arr.shape[1]):
            cand = arr
        elif arr.shape[0] in sizes:
            cand = arr.T  # YOLOv8 exports [1, 4 + classes, N]
        else:
            raise ShapeMismatch(
                f"{model}: output {name!r} has shape [1, {arr.shape[0]}, {arr.shape[1]}]; "
                f"with {n_classes} classes in the label map the yolo decoder reads "
                f"{' or '.join(str(s) for s in sizes)} values per candidate ([1, N, K] or "
                "[1, K, N]). Check the label map (one label per class) and objectness.")
        boxes = cand[:, :4].astype(np.float64)
        if cand.shape[1] == 5 + n_classes:
            per_class = cand[:, 5:] * cand[:, 4:5]
        else:
            per_class = cand[:, 4:]
        return self._per_class(boxes, per_class.astype(np.float64), labels, model, name)

    def _per_class(self, boxes, scores, labels, model, name):
        n_classes = max(labels) + 1 - self.class_offset
        if scores.shape[1] != n_classes:
            raise ShapeMismatch(
                f"{model}: output {name!r} has {scores.shape[1]} class scores per box but the "
                f"label map names {n_classes} classes; use the label map that came with "
                "this model.")
        if self.multi_label:
            floor = -np.inf if self.score_floor is None else self.score_floor
            rows, cols = np.nonzero(scores >= floor)
            return boxes[rows], scores[rows, cols], cols.astype(np.int64)
        best = scores.argmax(axis=1)
        return boxes, scores[np.arange(len(best)), best], best.astype(np.int64)

    def _to_input_pixels(self, boxes: np.ndarray, geo: Geometry) -> np.ndarray:
        a, b, c, d = (boxes[:, i] for i in range(4))
        if self.box_format == "xyxy":
            x0, y0, x1, y1 = a, b, c, d
        elif self.box_format == "yxyx":
            x0, y0, x1, y1 = b, a, d, c
        elif self.box_format == "xywh":
            x0, y0, x1, y1 = a, b, a + c, b + d
        else:  # cxcywh
            x0, y0, x1, y1 = a - c / 2, b - d / 2, a + c / 2, b + d / 2
        out = np.stack([x0, y0, x1, y1], axis=1)
        if self.box_units == "ratio":
            out = out * np.array([geo.input_w, geo.input_h, geo.input_w, geo.input_h])
        return out


def nms(xyxy: np.ndarray, scores: np.ndarray, iou: float, groups: np.ndarray | None = None
        ) -> np.ndarray:
    """Greedy non-maximum suppression: indices of the boxes kept, best score first.

    A box is dropped when it overlaps a higher-scoring kept box of the same group with an
    intersection over union above ``iou``. Ties in score keep the earlier box.

    Parameters
    ----------
    xyxy : numpy.ndarray, shape (n, 4)
    scores : numpy.ndarray, shape (n,)
    iou : float
    groups : numpy.ndarray of int, shape (n,), optional
        Boxes of different groups (classes) never suppress each other.

    Returns
    -------
    numpy.ndarray of int
    """
    order = np.argsort(-scores, kind="stable")
    if groups is not None and len(order):
        # Offsetting each group far apart makes boxes of different groups disjoint.
        span = float(np.abs(xyxy).max()) + 1.0
        xyxy = xyxy + (groups.astype(np.float64) * 2 * span)[:, None]
    x0, y0, x1, y1 = (xyxy[:, i] for i in range(4))
    area = np.maximum(x1 - x0, 0) * np.maximum(y1 - y0, 0)
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        iw = np.maximum(np.minimum(x1[i], x1[rest]) - np.maximum(x0[i], x0[rest]), 0)
        ih = np.maximum(np.minimum(y1[i], y1[rest]) - np.maximum(y0[i], y0[rest]), 0)
        inter = iw * ih
        union = area[i] + area[rest] - inter
        overlap = np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)
        order = rest[overlap <= iou]
    return np.asarray(keep, dtype=np.int64)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    from scipy.special import expit

    return expit(x)


def _batch_of_one(arr, model: str, name: str, ndim: int | None, wanted: str) -> np.ndarray:
    a = np.asarray(arr)
    if a.ndim < 1 or a.shape[0] != 1 or (ndim is not None and a.ndim != ndim + 1):
        raise ShapeMismatch(_shape_message(model, name, a.shape, "box", wanted))
    return a[0]


def _shape_message(model: str, name: str, shape, decoder: str, wanted: str) -> str:
    return (f"{model}: output {name!r} has shape {list(shape)}, which the {decoder} decoder "
            f"cannot read (it reads {wanted}). Choose the decoder that matches the model "
            "(--option decoder=classifier, ssd or yolo) or name the right output.")
