"""YuNet face detector in onnxruntime, decoded in NumPy (the layout OpenCV's FaceDetectorYN reads)."""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable, Sequence
from typing import Any

import cv2
import numpy as np

from ..boxes import iou as box_iou
from ..runtime import ModelFormatError, make_session

STRIDES = (8, 16, 32)
#: the outputs a YuNet file must have, per stride: [B, K, 1], [B, K, 1], [B, K, 4], [B, K, 10]
OUTPUT_WIDTHS = {"cls": 1, "obj": 1, "bbox": 4, "kps": 10}


def check_yunet(session, source: str) -> None:
    """Raise ModelFormatError unless the session has YuNet's input and outputs."""
    inputs = session.get_inputs()
    if len(inputs) != 1 or len(inputs[0].shape) != 4 or inputs[0].shape[1] not in (3, "3"):
        got = [(i.name, i.shape) for i in inputs]
        raise ModelFormatError(
            f"{source} is not a YuNet face detector: it takes {got}, YuNet takes one [B, 3, H, W] image"
        )
    outputs = {o.name: o.shape for o in session.get_outputs()}
    missing = [
        f"{k}_{s}"
        for s in STRIDES
        for k, width in OUTPUT_WIDTHS.items()
        if f"{k}_{s}" not in outputs or outputs[f"{k}_{s}"][-1] not in (width, str(width))
    ]
    if missing:
        raise ModelFormatError(
            f"{source} is not a YuNet face detector: outputs {', '.join(missing)} are missing or "
            f"misshapen (it has {', '.join(outputs) or 'none'}); pass a YuNet ONNX or your own detector object"
        )


def decode_outputs(
    outs: dict[str, np.ndarray], h: int, w: int, min_score: float = 0.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """YuNet's outputs for an (h, w) input -> boxes (K, 4), scores (K,), keypoints (K, 5, 2) of the
    priors whose score sqrt(cls * obj) is at least ``min_score`` (only those are decoded)."""
    boxes, scores, kps = [], [], []
    for s in STRIDES:
        gw = w // s
        score = np.sqrt(np.clip(outs[f"cls_{s}"][0, :, 0], 0, 1) * np.clip(outs[f"obj_{s}"][0, :, 0], 0, 1))
        keep = np.flatnonzero(score >= min_score)
        rows, cols = np.divmod(keep.astype(np.float32), gw)
        bb = outs[f"bbox_{s}"][0][keep]
        kp = outs[f"kps_{s}"][0][keep].reshape(-1, 5, 2)
        cx = (cols + bb[:, 0]) * s
        cy = (rows + bb[:, 1]) * s
        bw = np.exp(bb[:, 2]) * s
        bh = np.exp(bb[:, 3]) * s
        boxes.append(np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1))
        scores.append(score[keep])
        kps.append(np.stack([(cols[:, None] + kp[..., 0]) * s, (rows[:, None] + kp[..., 1]) * s], -1))
    return np.concatenate(boxes), np.concatenate(scores), np.concatenate(kps)


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float, max_out: int | None = None) -> np.ndarray:
    """Greedy non-maximum suppression; returns kept indices, best first."""
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size and (max_out is None or len(keep) < max_out):
        i = order[0]
        keep.append(int(i))
        rest = order[1:]
        order = rest[box_iou(boxes[i], boxes[rest]) <= iou]
    return np.asarray(keep, dtype=np.int64)


def first_faces(
    passes: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray, float]], nms_iou: float, max_faces: int | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Of lazily run passes, each (boxes, scores, keypoints) in input pixels plus the input's scale,
    the first that finds a face (else the last): NMS applied, back in image pixels, float32."""
    for found in passes:
        if len(found[1]):
            break
    boxes, scores, kps, f = found
    keep = nms(boxes, scores, nms_iou, max_faces)
    return ((boxes[keep] / f).astype(np.float32), scores[keep].astype(np.float32), (kps[keep] / f).astype(np.float32))


def _whole(name: str, value: Any, minimum: int) -> int:
    """value as an int >= minimum (a whole float like 640.0 is fine; 2.5, "640" and True are not)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float, np.integer, np.floating))
        or not float(value).is_integer()
        or value < minimum
    ):
        raise ValueError(f"{name} must be a whole number >= {minimum}, got {value!r}")
    return int(value)


def check_options(options: dict[str, Any]) -> dict[str, Any]:
    """YuNet's options checked and converted to the types they are used as (ValueError if bad)."""
    out = dict(options)
    if "size" in out:
        out["size"] = _whole("detector size", out["size"], 32)
    if "fallback_sizes" in out:
        sizes = out["fallback_sizes"]
        if isinstance(sizes, (str, bytes)) or not isinstance(sizes, Iterable):
            raise ValueError(f"fallback_sizes must be a sequence of sizes such as (640,), got {sizes!r}")
        out["fallback_sizes"] = tuple(_whole("detector size", v, 32) for v in sizes)
    for name in ("score_threshold", "nms_iou"):
        if name in out:
            v = out[name]
            if (
                isinstance(v, bool)
                or not isinstance(v, (int, float, np.integer, np.floating))
                or not 0.0 <= float(v) <= 1.0
            ):
                raise ValueError(f"{name} must be a number in [0, 1], got {v!r}")
            out[name] = float(v)
    if "max_faces" in out:
        out["max_faces"] = _whole("max_faces", out["max_faces"], 1)
    if "upscale" in out:
        out["upscale"] = bool(out["upscale"])
    return out


class YuNet:
    """YuNet on a dynamic-size ONNX: the image is resized (aspect kept) so its long side is
    ``size`` (never enlarged unless ``upscale``), padded to a multiple of 32, run, decoded.

    ``fallback_sizes``: long sides tried in turn while a pass finds no face. ``size=320,
    fallback_sizes=(640,)`` is about 2.3x faster end to end than the default 640 on photos of a
    few faces (benchmarks/end_to_end.py), but faces under about 40 px in an image that also holds
    a bigger face are missed: keep 640 for crowds and small faces."""

    def __init__(
        self,
        path: str | os.PathLike,
        size: int = 640,
        score_threshold: float = 0.6,
        nms_iou: float = 0.3,
        max_faces: int = 100,
        providers: Sequence | None = None,
        threads: int | None = None,
        upscale: bool = False,
        fallback_sizes: Sequence[int] = (),
    ) -> None:
        self.path = os.fspath(path)
        self.session = make_session(self.path, providers, threads)
        check_yunet(self.session, self.path)
        shape = self.session.get_inputs()[0].shape
        self.fixed = tuple(shape[2:]) if all(isinstance(s, int) for s in shape[2:]) else None
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        self._set_options(
            size=size,
            score_threshold=score_threshold,
            nms_iou=nms_iou,
            max_faces=max_faces,
            upscale=upscale,
            fallback_sizes=fallback_sizes,
        )

    #: options that change only how the network's input is sized and its output filtered
    OPTIONS = ("size", "score_threshold", "nms_iou", "max_faces", "upscale", "fallback_sizes")
    size: int
    score_threshold: float
    nms_iou: float
    max_faces: int
    upscale: bool
    fallback_sizes: tuple[int, ...]

    def _set_options(self, **options: Any) -> None:
        unknown = sorted(set(options) - set(self.OPTIONS))
        if unknown:
            raise TypeError(f"unknown detector options {unknown}; YuNet takes {list(self.OPTIONS)}")
        for name, value in check_options(options).items():
            setattr(self, name, value)

    def with_options(self, **options: Any) -> YuNet:
        """A copy with other input-size / post-processing options, sharing this one's session
        (no model is loaded again)."""
        other = copy.copy(self)
        other._set_options(**options)
        return other

    def blob(self, image: np.ndarray, size: int) -> tuple[np.ndarray, float]:
        """The network input for an image at long side ``size``: a (1, 3, H, W) float32 blob,
        padded to multiples of 32, and the image-to-input scale."""
        h, w = image.shape[:2]
        if self.fixed:
            th, tw = self.fixed
            f = min(th / h, tw / w)
        else:
            f = size / max(h, w)
            if not self.upscale:
                f = min(f, 1.0)
        nh, nw = max(1, round(h * f)), max(1, round(w * f))
        resized = image if (nh, nw) == (h, w) else cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
        if self.fixed:
            ph, pw = self.fixed
        else:
            ph, pw = -(-nh // 32) * 32, -(-nw // 32) * 32
        padded = cv2.copyMakeBorder(resized, 0, ph - nh, 0, pw - nw, cv2.BORDER_CONSTANT, value=(0, 0, 0))
        return cv2.dnn.blobFromImage(padded), f  # one pass to a contiguous (1, 3, H, W) float32

    def raw(self, blob: np.ndarray, min_score: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Decode the priors of a (1, 3, H, W) blob whose score is at least ``min_score`` (0: all):
        boxes (K, 4), scores (K,), keypoints (K, 5, 2)."""
        outs = dict(zip(self.output_names, self.session.run(self.output_names, {self.input_name: blob})))
        h, w = blob.shape[2:]
        return decode_outputs(outs, h, w, min_score)

    def detect_with_keypoints(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Boxes (F, 4) x1, y1, x2, y2 in image pixels, scores (F,) best first, and the 5
        keypoints (F, 5, 2): eyes, nose tip, mouth corners. Stateless: safe across threads.
        When the pass at ``size`` finds no face, each of ``fallback_sizes`` is tried in turn."""
        sizes = (self.size,) if self.fixed else (self.size, *self.fallback_sizes)  # a fixed input: one pass

        def passes():
            for size in sizes:
                blob, f = self.blob(image, size)
                yield (*self.raw(blob, self.score_threshold), f)

        return first_faces(passes(), self.nms_iou, self.max_faces)

    def detect(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Boxes (F, 4) and scores (F,), best first (the plug-in detector contract)."""
        boxes, scores, _ = self.detect_with_keypoints(image)
        return boxes, scores
