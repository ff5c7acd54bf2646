"""Landmarker: the image side of the pipeline, with public steps.

    image -> detect_boxes -> squares (the model's crop rule) -> landmarks_in_squares
          (crops, test crops, the LandmarkModel network, back to image pixels) -> upright
          (faces the rule saw turned: cropped again turned with the face) -> Face objects

``detect`` runs them all; ``VideoLandmarker`` and the Ray integration call the steps they need.
"""

from __future__ import annotations

import copy
import functools
import math
import os
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from .crop import TEST_CROPS, crop_faces, jitter_squares, squares_from_boxes, to_image
from .detect import Detector, YuNet
from .hub import resolve, sha256_file
from .images import check_color, is_pil_image, load_image
from .landmark_model import LandmarkModel, Marks
from .types import Face

DEFAULT_MODEL = "pipnet-fast"
DEFAULT_DETECTOR = "yunet-n"


class BgrImage(np.ndarray):
    """An array ``Landmarker.image()`` returned: uint8 BGR, taken by the steps as it is."""


def _rows(values: Any, width: int, dtype: type, layout: str) -> np.ndarray:
    """values as an (F, width) finite array: one row may come as a flat (width,) array, no row as
    any empty array. ``layout`` names the columns in the errors."""
    a: np.ndarray = np.asarray(values, dtype=dtype)
    if a.size == 0:
        return a.reshape(0, width)
    if a.ndim == 1 and a.size == width:
        a = a[None]
    if a.ndim != 2 or a.shape[1] != width:
        raise ValueError(f"expected shape (F, {width}) as {layout}; got {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"NaN or inf in the {layout} values")
    return a


def _check_boxes(boxes: Any) -> np.ndarray:
    b = _rows(boxes, 4, np.float32, "boxes x1, y1, x2, y2")
    if len(b) and ((b[:, 2] <= b[:, 0]) | (b[:, 3] <= b[:, 1])).any():
        raise ValueError("every box needs x2 > x1 and y2 > y1")
    return b


def _check_boxes_fit(boxes: np.ndarray, image_shape: tuple[int, ...]) -> None:
    """ValueError for caller boxes that cannot be faces of this image: all of them within 0-1.5
    (normalised units, not pixels) on an image larger than that, or a box entirely outside it."""
    h, w = image_shape[:2]
    if len(boxes) and float(np.abs(boxes).max()) <= 1.5 < max(h, w):
        raise ValueError(
            "the boxes look like fractions of the image (all within 0-1.5): give them in pixels, "
            f"x1, y1, x2, y2 of this {w} x {h} image"
        )
    outside = (boxes[:, 2] <= 0) | (boxes[:, 3] <= 0) | (boxes[:, 0] >= w) | (boxes[:, 1] >= h)
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        raise ValueError(f"box {i} {boxes[i].round(1).tolist()} lies entirely outside the {w} x {h} image")


def _check_squares(squares: Any) -> np.ndarray:
    a = np.asarray(squares)
    turned = a.ndim >= 1 and a.shape[-1] == 4
    q = _rows(
        squares, 4 if turned else 3, np.float64, "squares cx, cy, side, angle" if turned else "squares cx, cy, side"
    )
    if (q[:, 2] <= 0).any():
        raise ValueError("squares need sides > 0")
    return q


def fit_mean_face(points: np.ndarray, mean_face: np.ndarray) -> np.ndarray:
    """For landmarks (F, N, 2) in pixels, the crop square (F, 4) cx, cy, side, angle that puts the
    model's mean face (N, 2, normalised crop units) closest to them: a similarity fit, so the
    angle is the face's roll (radians, 0 = upright)."""
    m = mean_face - mean_face.mean(0)
    c = points.mean(1, keepdims=True)
    p = points - c
    dot = (p * m).sum((1, 2))
    cross = (m[:, 0] * p[..., 1] - m[:, 1] * p[..., 0]).sum(1)
    angle = np.arctan2(cross, dot)
    side = np.hypot(dot, cross) / (m**2).sum()
    cos, sin = np.cos(angle), np.sin(angle)
    off = 0.5 - mean_face.mean(0)  # the crop centre relative to the mean face's centroid
    centre = c[:, 0] + side[:, None] * np.stack([cos * off[0] - sin * off[1], sin * off[0] + cos * off[1]], 1)
    return np.concatenate([centre, side[:, None], angle[:, None]], 1)


class Landmarker:
    """Faces and their landmarks. One instance may be shared between threads.

    model: a registry name ("pipnet-fast", "pipnet-r18") or a path to a PIPNet ONNX file.
    detector: a registry name, a path to a YuNet ONNX, or any object with
        ``detect(image) -> (boxes (F, 4), scores (F,))``.
    flip_test: also run each crop mirrored and average (about 2 % lower NME on the validation
        split, twice the landmark cost).
    test_crops: run each face on 1-5 slightly shifted/zoomed crops and average in image space
        (3 crops: about 2.5-3 % lower NME, three times the landmark cost). Combines with flip_test.
    upright: give faces the crop rule saw turned a second look (``upright``; on by default: upright
        faces cost nothing more, turned ones a few more crops).
    providers / threads: passed to onnxruntime. Extra keyword options go to the YuNet detector
    (``size``, ``fallback_sizes``, ``score_threshold``, ``nms_iou``, ``max_faces``, ``upscale``).
    """

    def __init__(
        self,
        model: str | os.PathLike | None = None,
        detector: str | os.PathLike | Detector | None = None,
        providers: Sequence | None = None,
        threads: int | None = None,
        use_neighbors: bool = True,
        flip_test: bool = False,
        test_crops: int = 1,
        batch_size: int = 32,
        color: str = "bgr",
        upright: bool = True,
        **detector_options: Any,
    ) -> None:
        if (
            isinstance(test_crops, bool)
            or not isinstance(test_crops, (int, np.integer))
            or not 1 <= test_crops <= len(TEST_CROPS)
        ):
            raise ValueError(f"test_crops must be an integer from 1 to {len(TEST_CROPS)}, got {test_crops!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be a whole number >= 1, got {batch_size!r}")
        self.color = check_color(color)
        unknown = sorted(set(detector_options) - set(YuNet.OPTIONS))
        if unknown:
            raise TypeError(
                f"unknown options {unknown}: Landmarker takes model, detector, providers, threads, "
                f"use_neighbors, flip_test, test_crops, batch_size, color, upright and the detector's "
                f"{list(YuNet.OPTIONS)}"
            )
        self.test_crops = int(test_crops)
        if not isinstance(upright, (bool, np.bool_)):
            raise TypeError(f"upright must be True or False, got {upright!r}")
        self.upright_search = bool(upright)
        self.model = LandmarkModel(
            resolve(model or DEFAULT_MODEL, "landmark"), providers, threads, use_neighbors, flip_test
        )
        if detector is None or isinstance(detector, (str, os.PathLike)):
            detector = YuNet(
                resolve(detector or DEFAULT_DETECTOR, "detector"),
                providers=providers,
                threads=threads,
                **detector_options,
            )
        elif detector_options:
            raise TypeError(f"detector options {sorted(detector_options)} need the built-in detector")
        if not callable(getattr(detector, "detect", None)):
            raise TypeError(f"detector must have a detect(image) method, got {type(detector).__name__}")
        self.detector = detector
        self.batch_size = int(batch_size)

    @property
    def num_landmarks(self) -> int:
        return self.model.spec.num_landmarks

    def provenance(self) -> dict[str, Any]:
        """What makes this Landmarker's results, for result files: ``{"pipnet_sdk": version,
        "model": {"name", "version", "sha256"}, "detector": {"name", "sha256"}}`` (a custom
        detector: its class name, sha256 None). Hashes are read once per file."""
        from . import __version__

        spec = self.model.spec
        path = getattr(self.detector, "path", None)
        detector = {
            "name": os.path.basename(path) if path else type(self.detector).__name__,
            "sha256": _file_sha256(path) if path else None,
        }
        return {
            "pipnet_sdk": __version__,
            "model": {"name": spec.name, "version": spec.version, "sha256": _file_sha256(self.model.path)},
            "detector": detector,
        }

    def with_detector_options(self, **options: Any) -> Landmarker:
        """A Landmarker sharing this one's models, with other YuNet options (``YuNet.OPTIONS``:
        ``size``, ``fallback_sizes``, ``score_threshold``, ``nms_iou``, ``max_faces``, ``upscale``):
        nothing is loaded again."""
        if not isinstance(self.detector, YuNet):
            raise TypeError("detector options need the built-in detector")
        other = copy.copy(self)
        other.detector = self.detector.with_options(**options)
        return other

    # ------------------------------------------------------------------ the steps
    def image(self, image: Any, color: str | None = None) -> np.ndarray:
        """Any accepted input as the uint8 BGR array the other steps take (see images.load_image).
        The array is marked as such (a ``BgrImage`` view), so that the steps take it as it is,
        whatever ``color`` this Landmarker or the call gives."""
        if isinstance(image, BgrImage):
            return image
        return load_image(image, color=color or self.color).view(BgrImage)

    def detect_boxes(self, image: Any, color: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The detector's boxes (F, 4) x1, y1, x2, y2 and scores (F,), checked."""
        name = type(self.detector).__name__
        result = self.detector.detect(self.image(image, color))
        try:
            boxes, scores = result
        except (TypeError, ValueError):
            raise ValueError(
                f"detector {name}.detect must return (boxes (F, 4), scores (F,)), got {type(result).__name__}"
            ) from None
        scores = np.asarray(scores, np.float32).reshape(-1)
        try:
            boxes = _check_boxes(boxes)
        except ValueError as e:
            raise ValueError(f"detector {name} returned bad boxes: {e}") from None
        if len(scores) != len(boxes):
            raise ValueError(f"detector {name} returned {len(boxes)} boxes but {len(scores)} scores")
        return boxes, scores

    def squares(self, boxes: Any) -> np.ndarray:
        """Detector-style boxes (F, 4) -> crop squares (F, 3) cx, cy, side by the model's crop rule."""
        return squares_from_boxes(_check_boxes(boxes), self.model.spec.crop_scale, self.model.spec.crop_shift_y)

    def landmarks_in_squares(self, image: Any, squares: np.ndarray, color: str | None = None) -> Marks:
        """Landmarks in image pixels (F, N, 2), their scores (F, N) and visibility (F, N) or None
        for crop squares (F, 3) cx, cy, side, or (F, 4) with each crop's angle (radians)."""
        return self.landmarks_for_images([self.image(image, color)], [np.asarray(squares)])[0]

    def landmarks_for_images(self, images: Sequence[np.ndarray], squares: Sequence[np.ndarray]) -> list[Marks]:
        """For many images at once: per image, the Marks (landmarks in pixels, scores, visibility,
        vote spread) of its squares (F, 3 or 4) (the images as ``image()`` returns them). The crops
        of all images share network batches. With test_crops > 1 each face's jittered crops are
        averaged in image space."""
        if len(images) != len(squares):
            raise ValueError(f"{len(images)} images but {len(squares)} arrays of squares: give one per image")
        k, n, size = self.test_crops, self.num_landmarks, self.model.spec.input_size
        jittered = [jitter_squares(_check_squares(sq), k) for sq in squares]
        crops = [crop_faces(im, sq, size) for im, sq in zip(images, jittered)]
        if len(crops) == 1:  # one image: no copy
            all_crops = crops[0]
        else:
            all_crops = np.concatenate(crops) if crops else np.zeros((0, size, size, 3), np.uint8)
        marks = self.model.run_crops(all_crops, self.batch_size)
        out, i = [], 0
        for sq in jittered:
            m = len(sq)
            p, s = to_image(marks.points[i : i + m], sq), marks.scores[i : i + m]
            v = None if marks.visibility is None else marks.visibility[i : i + m]
            d = marks.spread[i : i + m]
            if k > 1:  # average each face's k crops
                p, s = p.reshape(-1, k, n, 2).mean(axis=1), s.reshape(-1, k, n).mean(axis=1)
                v = None if v is None else v.reshape(-1, k, n).mean(axis=1)
                d = d.reshape(-1, k, n).mean(axis=1)
            out.append(Marks(p, np.clip(s, 0, 1).astype(np.float32), v, d))
            i += m
        return out

    def upright(
        self, images: Sequence[np.ndarray], squares: Sequence[np.ndarray], marks: Sequence[Marks]
    ) -> tuple[list[np.ndarray], list[Marks]]:
        """Second looks at faces the crop rule saw turned (a phone photo on its side, a person lying
        down), by the model file's rule (``spec.upright``, a ``UprightRule``). A face whose mean
        score is below its ``score`` is also cropped a quarter, a half and three quarters round, and
        the best-scoring crop kept; then a face whose landmarks are turned more than ``roll``
        degrees is cropped again from them, turned with the face (the mean-face fit,
        ``fit_mean_face``; ``refits`` times), and each crop kept if it scores at least as well.
        Other faces keep their crops and marks exactly. Returns per image the squares (F, 4) and
        marks."""
        sq4 = [np.c_[q, np.zeros(len(q))] if q.shape[1] == 3 else q.copy() for q in map(_check_squares, squares)]
        marks = list(marks)
        rule = self.model.spec.upright
        turns = (math.pi / 2, math.pi, 3 * math.pi / 2)
        low = [
            np.flatnonzero(mk.scores.mean(1) < rule.score) if len(q) else np.zeros(0, int) for q, mk in zip(sq4, marks)
        ]
        if any(len(i) for i in low):
            tried = self.landmarks_for_images(
                images, [np.concatenate([self._turned(q[i], t) for t in turns]) for q, i in zip(sq4, low)]
            )
            for j, (q, i, got) in enumerate(zip(sq4, low, tried)):
                base = q[i].copy()
                for r in range(len(turns)):
                    part = slice(r * len(i), (r + 1) * len(i))
                    better = got.scores[part].mean(1) > marks[j].scores[i].mean(1)
                    q[i[better]] = self._turned(base[better], turns[r])
                    marks[j] = _replace_rows(marks[j], i[better], got, np.flatnonzero(better) + r * len(i))
        mean_face = self.model.spec.mean_face
        for _ in range(rule.refits):
            fits = [fit_mean_face(mk.points.astype(np.float64), mean_face) for mk in marks]
            # a fit far larger or smaller than the crop it came from is no face (points collapsed)
            turned = [
                np.flatnonzero(
                    (np.abs(f[:, 3]) > math.radians(rule.roll)) & (f[:, 2] > 0.25 * q[:, 2]) & (f[:, 2] < 4 * q[:, 2])
                )
                for f, q in zip(fits, sq4)
            ]
            if not any(len(i) for i in turned):
                break
            again = self.landmarks_for_images(images, [f[i] for f, i in zip(fits, turned)])
            for j, (i, got) in enumerate(zip(turned, again)):
                better = got.scores.mean(1) >= marks[j].scores[i].mean(1)
                sq4[j][i[better]] = fits[j][i[better]]
                marks[j] = _replace_rows(marks[j], i[better], got, np.flatnonzero(better))
        return sq4, marks

    def _turned(self, squares: np.ndarray, angle: float) -> np.ndarray:
        """Squares (F, 4) turned by ``angle``. Those the crop rule made (angle 0) turn about their
        detector box's centre: the rule's downward shift (``crop_shift_y`` of the box height, taken
        as side / ``crop_scale``) turns with the face, so an upside-down face's crop is shifted up."""
        out = squares + [0, 0, 0, angle]
        fresh = squares[:, 3] == 0
        shift = self.model.spec.crop_shift_y * squares[fresh, 2] / self.model.spec.crop_scale
        out[fresh, 0] -= math.sin(angle) * shift
        out[fresh, 1] += (math.cos(angle) - 1) * shift
        return out

    # ------------------------------------------------------------------ whole jobs
    def landmarks(self, image: Any, boxes: Any, color: str | None = None) -> np.ndarray:
        """Landmarks (F, N, 2) for caller-given boxes (F, 4), skipping the detector (turned faces
        get their second look, as in ``detect``)."""
        img = self.image(image, color)
        checked = _check_boxes(boxes)
        _check_boxes_fit(checked, img.shape)
        squares = [self.squares(checked)]
        marks = self.landmarks_for_images([img], squares)
        if self.upright_search:
            _, marks = self.upright([img], squares, marks)
        return marks[0].points

    def detect(self, image: Any, color: str | None = None) -> list[Face]:
        """Every face in the image with box, score and landmarks; [] when there is none."""
        return self.detect_batch([self.image(image, color)], "bgr")[0]

    def detect_batch(self, images: Iterable[Any], color: str | None = None) -> list[list[Face]]:
        """Detect on many images; all crops go through the landmark network in real batches."""
        if isinstance(images, (np.ndarray, str, bytes, os.PathLike)) or is_pil_image(images):
            raise TypeError("detect_batch takes a list of images; for one image use detect(image)")
        imgs = [self.image(im, color) for im in images]
        dets = [self.detect_boxes(im, "bgr") for im in imgs]
        squares = [self.squares(b) for b, _ in dets]
        marks = self.landmarks_for_images(imgs, squares)
        if self.upright_search:
            _, marks = self.upright(imgs, squares, marks)
        return [
            faces_from(boxes, scores, mk, im.shape, *self.model.qualities(mk))
            for im, (boxes, scores), mk in zip(imgs, dets, marks)
        ]


@functools.lru_cache(maxsize=16)
def _file_sha256(path: str) -> str:
    return sha256_file(path)


def _replace_rows(marks: Marks, rows: np.ndarray, other: Marks, other_rows: np.ndarray) -> Marks:
    """marks with its rows replaced by other's other_rows."""
    if not len(rows):
        return marks

    def merged(mine: np.ndarray, theirs: np.ndarray) -> np.ndarray:
        out = mine.copy()
        out[rows] = theirs[other_rows]
        return out

    vis = None if marks.visibility is None or other.visibility is None else merged(marks.visibility, other.visibility)
    return Marks(
        merged(marks.points, other.points), merged(marks.scores, other.scores), vis, merged(marks.spread, other.spread)
    )


def faces_from(
    boxes: np.ndarray,
    scores: np.ndarray,
    marks: Marks,
    image_shape: tuple[int, ...],
    quality: np.ndarray | None = None,
    point_quality: np.ndarray | None = None,
) -> list[Face]:
    """Face objects from the pipeline's arrays (image_shape: the image's H, W, ...; quality (F,)
    and point_quality (F, N) when the model is calibrated)."""
    size = (int(image_shape[1]), int(image_shape[0]))
    vis, pq = marks.visibility, point_quality
    return [
        Face(
            box=boxes[i],
            score=float(scores[i]),
            landmarks=marks.points[i],
            landmark_scores=marks.scores[i],
            visibility=None if vis is None else vis[i].astype(np.float32),
            quality=None if quality is None else float(quality[i]),
            point_quality=None if pq is None else pq[i],
            image_size=size,
        )
        for i in range(len(boxes))
    ]


# ---------------------------------------------------------------------------------- detect_landmarks
_default: Landmarker | None = None
_default_lock = threading.Lock()
#: Landmarkers for other model options, least recently used first; bounded
_custom: OrderedDict[tuple, Landmarker] = OrderedDict()
MAX_CACHED_LANDMARKERS = 4
_loading: dict[tuple, threading.Lock] = {}  # option sets being loaded, each with its lock


def default_landmarker() -> Landmarker:
    """The shared default instance, created once on first use."""
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                _default = Landmarker()
    return _default


def _landmarker_for(options: dict) -> Landmarker:
    """A Landmarker for these (non-detector) options: the default one, or one of at most
    MAX_CACHED_LANDMARKERS kept for other options (the least recently used goes first)."""
    if not options:
        return default_landmarker()
    key = tuple(sorted((k, repr(v)) for k, v in options.items()))

    def cached() -> Landmarker | None:  # call with _default_lock held
        if key in _custom:
            _custom.move_to_end(key)
        return _custom.get(key)

    with _default_lock:
        if (hit := cached()) is not None:
            return hit
        key_lock = _loading.setdefault(key, threading.Lock())
    with key_lock:  # one load per option set, even when many threads ask at once; other sets go on
        with _default_lock:
            if (hit := cached()) is not None:
                return hit
        try:
            made = Landmarker(**options)  # outside the shared lock: loading models takes a while
            with _default_lock:
                _custom[key] = made
                while len(_custom) > MAX_CACHED_LANDMARKERS:
                    _custom.popitem(last=False)
        finally:  # after the insertion: a thread arriving later finds the Landmarker, not a new lock
            with _default_lock:
                _loading.pop(key, None)
    return made


def detect_landmarks(image: Any, **options: Any) -> list[Face]:
    """Faces with landmarks using the default models. ``color="rgb"`` for RGB arrays. Detector
    options (``YuNet.OPTIONS``: ``size``, ``fallback_sizes``, ``score_threshold``...) reuse the
    loaded models; other options (``model``, ``flip_test``...) load their models once and keep
    them among the last few used."""
    color = options.pop("color", None)
    detector_options = {k: options.pop(k) for k in YuNet.OPTIONS if k in options}
    lm = _landmarker_for(options)
    if detector_options:
        lm = lm.with_detector_options(**detector_options)
    return lm.detect(image, color=color)
