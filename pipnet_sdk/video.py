"""Video: face tracking with steady landmarks.

:class:`VideoLandmarker` runs the face detector only now and then (first frame, every
``detect_every`` frames, and right after a face is lost); on the frames in between each face's
crop square is predicted from its own landmarks of the previous frame, which is cheaper and
steadier than a fresh detector box. Landmarks are then smoothed with a One-Euro filter.

The tracking crop rule
----------------------
On a detect frame, a face's crop is the usual one (detector box + the model's crop rule). Its
landmarks then give a *reference*: their centroid ``c`` and RMS radius ``r`` (root mean square
distance of the points from ``c``). The track stores the crop square in those units,
``rel = ((cx - c) / r, side / r)``. On later frames the square is ``rel`` applied to the
previous frame's landmarks, i.e. the square the detector would have given, moved and rescaled
with the face (and, with ``predict``, shifted by the face's last motion, so a moving face
stays centred). ``rel`` is refreshed on every detect frame that the track is matched on
(averaged, so detector box noise is damped). To keep crops identical while a face is still,
the square is only moved when it would change by more than ``hold`` x side (default 1 %).
On a matched detect frame the face is cut from the detector's square, as per-frame detection
would cut it (``resync_iou=1``, the default: landmark-based squares drift from the detector's
framing between detections, and the landmarks are then a little less accurate); a lower
``resync_iou`` keeps the track's own square unless the two disagree (IoU below it), steadier on a
still face.
A face the crop saw turned gets the Landmarker's upright search (``Landmarker.upright``), and its
next crop is then the mean-face fit of its landmarks, turned with the face.

With a model that has a visibility output, hidden points are smoothed harder (their cutoff is
``HIDDEN_CUTOFF`` times the others'), and a face whose quality falls below ``min_quality`` makes
the next frame a detect frame (once per fall: a face that stays below it does not make every frame
one).

A track is lost when the mean landmark score falls below ``min_score``, when its box is mostly
outside the image, when it goes unmatched on more than ``max_lost`` detect frames in a row, or
when it lands on the same face as an older track.
Losing a track makes the next frame a detect frame.

The defaults (``min_cutoff=0.5``, ``beta=10``, ``hold=0.01``, ``predict=True``, ``max_lead=0.5``)
were chosen with ``benchmarks/video_stability.py`` on sequences made from 300W training images
(results in ``benchmarks/results/video_stability.txt``, the choice in ``docs/experiments.md``);
``min_score=0.3`` suits pipnet-fast (faces score about 0.8 in the median, empty or black crops
under 0.25) and may need changing for other models.

One ``VideoLandmarker`` per stream; it keeps state between calls, which a lock guards: calls
from several threads are taken one at a time, but frames must still come in stream order (the
``Landmarker`` it uses may be shared).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .boxes import boxes_from_squares, iou
from .landmarker import fit_mean_face
from .types import Face


# ---------------------------------------------------------------------------------- filter
class OneEuroFilter:
    """One-Euro filter (Casiez, Roussel, Vogel, CHI 2012), vectorised over an array.

    ``x_hat = a x + (1 - a) x_hat_prev`` with ``a = 1 / (1 + tau / dt)``,
    ``tau = 1 / (2 pi cutoff)`` and ``cutoff = min_cutoff + beta * speed``, where speed is the
    low-passed (``d_cutoff``) derivative. Cutoffs are in Hz, time in seconds: pass timestamps
    to ``__call__`` or let it count frames at ``rate`` frames per second.

    speed: "element" (standard: each scalar has its own cutoff), "point" (the last axis is a
    coordinate vector: one cutoff per point from its speed's norm), or "mean" (one cutoff for
    the whole array from the mean point speed: rigid motion is followed without distorting the
    shape, and the speed estimate averages out per-point noise).
    ``scale`` (per call) divides the speed, so ``beta`` can be given in sizes per second.
    max_lead: a low-pass filter trails a steady motion by ``(1 - a) / a`` frames; the output is
    moved ahead along the motion by that lag, at most ``max_lead`` frames (0, the default: the
    standard filter). The state it filters from is not moved.
    """

    def __init__(
        self,
        min_cutoff: float = 1.0,
        beta: float = 0.0,
        d_cutoff: float = 1.0,
        rate: float = 30.0,
        speed: str = "element",
        max_lead: float = 0.0,
    ) -> None:
        if not (math.isfinite(max_lead) and max_lead >= 0):
            raise ValueError(f"max_lead must be a number of frames >= 0, got {max_lead}")
        if (
            not all(math.isfinite(v) for v in (min_cutoff, beta, d_cutoff, rate))
            or min_cutoff <= 0
            or d_cutoff <= 0
            or rate <= 0
            or beta < 0
        ):
            raise ValueError(
                f"min_cutoff, d_cutoff and rate (fps) must be > 0 and beta >= 0, got "
                f"{min_cutoff}, {d_cutoff}, {rate} and {beta}"
            )
        if speed not in ("element", "point", "mean"):
            raise ValueError(f"speed must be 'element', 'point' or 'mean', got {speed!r}")
        self.min_cutoff, self.beta, self.d_cutoff = float(min_cutoff), float(beta), float(d_cutoff)
        self.rate, self.speed, self.max_lead = float(rate), speed, float(max_lead)
        self.reset()

    def reset(self) -> None:
        self._x: np.ndarray | None = None
        self._dx: np.ndarray | None = None
        self._t: float | None = None
        self._n = 0

    @staticmethod
    def _alpha(dt: float, cutoff: Any) -> Any:
        tau = 1.0 / (2 * math.pi * cutoff)
        return 1.0 / (1.0 + tau / dt)

    def __call__(
        self,
        x: Any,
        t: float | None = None,
        scale: float = 1.0,
        steady: np.ndarray | None = None,
        steady_cutoff: float | None = None,
    ) -> np.ndarray:
        """The filtered x. ``steady`` (N,) bool marks rows of x (points) to hold steadier: their
        cutoff is ``steady_cutoff`` (default HIDDEN_CUTOFF) times the others' (hidden points,
        whose estimates wander)."""
        x = np.asarray(x, dtype=np.float64)
        t = self._n / self.rate if t is None else float(t)
        if not math.isfinite(t):
            raise ValueError(f"timestamps must be finite numbers of seconds, got {t}")
        self._n += 1
        if self._x is None or self._t is None or self._x.shape != x.shape:
            self._x, self._dx, self._t = x.copy(), np.zeros_like(x), t
            return x.copy()
        dt = t - self._t
        if dt <= 0:  # repeated / out-of-order timestamp: assume one frame
            dt = 1.0 / self.rate
        dx = (x - self._x) / dt
        dx_hat = self._dx + self._alpha(dt, self.d_cutoff) * (dx - self._dx)
        if self.speed == "element":
            speed = np.abs(dx_hat)
        else:
            speed = np.linalg.norm(dx_hat, axis=-1, keepdims=True)
            if self.speed == "mean":
                speed = speed.mean()
        cutoff = self.min_cutoff + self.beta * speed / max(float(scale), 1e-12)
        if steady is not None and x.ndim == 2:
            factor = HIDDEN_CUTOFF if steady_cutoff is None else steady_cutoff
            cutoff = cutoff * np.where(np.asarray(steady, bool)[:, None], factor, 1.0)
        a = self._alpha(dt, cutoff)
        x_hat = self._x + a * (x - self._x)
        self._x, self._dx, self._t = x_hat, dx_hat, t
        if self.max_lead > 0:  # ahead by the filter's own lag along the input's velocity, which is
            # a * dx_hat in a steady motion (dx_hat is measured against the trailing output)
            return x_hat + np.minimum((1 - a) / a, self.max_lead) * a * dx_hat * dt
        return x_hat.copy()


#: a hidden point's smoothing cutoff relative to a seen one's (lower: steadier, slower)
HIDDEN_CUTOFF = 0.25


# ---------------------------------------------------------------------------------- helpers
def _reference(points: np.ndarray) -> tuple[np.ndarray, float]:
    """Centroid and RMS radius of (N, 2) landmarks."""
    c = points.mean(axis=0)
    r = float(np.sqrt(((points - c) ** 2).sum(axis=1).mean()))
    return c, max(r, 1e-3)


def _square_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix (len(a), len(b)) of squares cx, cy, side."""
    a, b = (boxes_from_squares(np.reshape(s, (-1, np.shape(s)[-1]))[:, :3]) for s in (a, b))
    return iou(a[:, None], b[None])


def _greedy_match(iou: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """Pairs (row, col), best IoU first, each row and column used once, IoU >= threshold."""
    pairs: list[tuple[int, int]] = []
    used_r: set[int] = set()
    used_c: set[int] = set()
    if iou.size == 0:
        return pairs
    for k in np.argsort(-iou, axis=None, kind="stable"):
        r, c = divmod(int(k), iou.shape[1])
        if iou[r, c] < threshold:
            break
        if r not in used_r and c not in used_c:
            pairs.append((r, c))
            used_r.add(r)
            used_c.add(c)
    return pairs


@dataclass
class _Track:
    id: int
    square: np.ndarray  # crop square (cx, cy, side[, angle]) for the next frame
    box_rel: np.ndarray  # detector box relative to its square: (x1 - cx) / side, ...
    score: float  # last detector score
    rel: np.ndarray | None = None  # (dx, dy, side) of the square in landmark reference units
    missed: int = 0
    centre: np.ndarray | None = None  # landmark centroid of the last frame (for motion prediction)
    det_square: np.ndarray | None = None  # this frame's matched detector square
    filter: OneEuroFilter | None = None
    face: Face | None = field(default=None, repr=False)
    low_quality: bool = False  # the last frame's quality was below min_quality


# ---------------------------------------------------------------------------------- tracker
class VideoLandmarker:
    """Faces with stable ids and steady landmarks, frame after frame of one stream.

    landmarker: a :class:`~pipnet_sdk.Landmarker` (default: a new one with the default models).
    detect_every: run the detector at least every K frames (1 = every frame).
    smoothing / min_cutoff / beta / d_cutoff: the One-Euro filter on the landmarks (cutoffs in
        Hz; ``beta`` in face sizes per second, the face size being the landmarks' RMS radius).
    fps: frame rate assumed when ``track`` gets no timestamps.
    iou_threshold: least IoU between a track's crop square and a detection's to be the same face.
    max_lost: detect frames in a row a track may go unmatched before it is dropped.
    min_score: a track whose mean landmark score falls below this is lost.
    min_quality: with a calibrated model, a face whose quality falls below this is kept but the
        detector runs on the next frame (once: a face that stays below it, say half outside the
        image, waits for the next scheduled detection).
    hidden_cutoff: with a visibility output, a hidden point's smoothing cutoff as a fraction of a
        seen one's (1 = no difference).
    max_lead: the smoothed points are moved ahead along their motion by the filter's own lag, at
        most this many frames (0: plain One-Euro; ``OneEuroFilter``).
    hold: the crop square only moves when it would change by more than this fraction of its side.
    resync_iou: on a matched detect frame, the detector's square replaces the track's when their
        IoU is below this (1: always).
    predict: move the next frame's crop square by the face's last frame-to-frame motion.

    One per stream: calls are taken one at a time (a lock), and timestamps must not go back.
    """

    def __init__(
        self,
        landmarker: Any = None,
        detect_every: int = 10,
        smoothing: bool = True,
        min_cutoff: float = 0.5,
        beta: float = 10.0,
        d_cutoff: float = 1.0,
        fps: float = 30.0,
        iou_threshold: float = 0.3,
        max_lost: int = 1,
        min_score: float = 0.3,
        hold: float = 0.01,
        resync_iou: float = 1.0,
        predict: bool = True,
        min_quality: float = 0.3,
        hidden_cutoff: float = HIDDEN_CUTOFF,
        max_lead: float = 0.5,
    ) -> None:
        if detect_every < 1:
            raise ValueError(f"detect_every must be >= 1, got {detect_every}")
        if not (isinstance(hidden_cutoff, (int, float)) and 0 < hidden_cutoff <= 1):
            raise ValueError(f"hidden_cutoff must be in (0, 1], got {hidden_cutoff!r}")
        OneEuroFilter(min_cutoff, beta, d_cutoff, fps, max_lead=max_lead)  # checks the options now
        from .landmarker import Landmarker

        if landmarker is None:
            landmarker = Landmarker()
        elif not isinstance(landmarker, Landmarker):
            raise TypeError(
                f"landmarker must be a pipnet_sdk.Landmarker, got {type(landmarker).__name__} "
                "(for another model: VideoLandmarker(Landmarker(model=...)))"
            )
        self.landmarker = landmarker
        self.detect_every = int(detect_every)
        self.smoothing = bool(smoothing)
        self.filter_options = dict(min_cutoff=min_cutoff, beta=beta, d_cutoff=d_cutoff, rate=fps, max_lead=max_lead)
        self.fps = float(fps)
        self.iou_threshold = float(iou_threshold)
        self.max_lost = int(max_lost)
        self.min_score = float(min_score)
        self.min_quality = float(min_quality)
        self.hidden_cutoff = float(hidden_cutoff)
        self.hold = float(hold)
        self.resync_iou = float(resync_iou)
        self.predict = bool(predict)
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Forget all tracks; the next frame is a detect frame and ids start again at 0 (and
        timestamps may start again)."""
        with self._lock:
            self._reset()

    def _reset(self) -> None:
        self._last_t: float | None = None
        self._tracks: list[_Track] = []
        self._next_id = 0
        self._frame = 0
        self._since_detect = 0
        self._force_detect = True
        self._size: tuple[int, int] | None = None  # (height, width) of the last frame
        self.detected = False  # whether the last track() call ran the detector

    def _rescale(self, old: tuple[int, int], size: tuple[int, int]) -> None:
        """The stream changed size (same scene, resized): move the tracks' squares with it, restart
        their filters, and detect on this frame so the tracks are matched again, ids kept."""
        sy, sx = size[0] / old[0], size[1] / old[1]
        for tr in self._tracks:
            tr.square = tr.square * np.array([sx, sy, np.sqrt(sx * sy)])
            tr.centre = None if tr.centre is None else tr.centre * np.array([sx, sy])
            if tr.filter is not None:
                tr.filter.reset()
        self._force_detect = True

    # ------------------------------------------------------------------ internals
    def _new_track(self, square: np.ndarray, box: np.ndarray, score: float) -> _Track:
        tr = _Track(
            id=self._next_id,
            square=square.copy(),
            box_rel=(box - np.r_[square[:2], square[:2]]) / square[2],
            score=float(score),
        )
        self._next_id += 1
        if self.smoothing:
            tr.filter = OneEuroFilter(speed="mean", **self.filter_options)
        return tr

    def _associate(self, image: np.ndarray) -> None:
        boxes, scores = self.landmarker.detect_boxes(image, "bgr")
        squares = self.landmarker.squares(boxes) if len(boxes) else np.zeros((0, 3))
        iou = _square_iou(np.array([t.square[:3] for t in self._tracks]).reshape(-1, 3), squares)
        pairs = _greedy_match(iou, self.iou_threshold)
        matched_t = {r for r, _ in pairs}
        matched_d = {c for _, c in pairs}
        for r, c in pairs:
            tr = self._tracks[r]
            tr.missed, tr.score = 0, float(scores[c])
            tr.box_rel = (boxes[c] - np.r_[squares[c][:2], squares[c][:2]]) / squares[c][2]
            tr.det_square = squares[c]
            if iou[r, c] < self.resync_iou:
                tr.square = squares[c].copy()
        kept = []
        for i, tr in enumerate(self._tracks):
            if i not in matched_t:
                tr.missed += 1
                tr.det_square = None
                if tr.missed > self.max_lost:
                    continue
            kept.append(tr)
        for c in range(len(boxes)):
            if c not in matched_d:
                tr = self._new_track(squares[c], boxes[c], scores[c])
                tr.det_square = squares[c]
                kept.append(tr)
        self._tracks = kept

    def _inside(self, box: np.ndarray, shape: tuple) -> bool:
        h, w = shape[:2]
        bw, bh = box[2] - box[0], box[3] - box[1]
        iw = max(0.0, min(box[2], w) - max(box[0], 0))
        ih = max(0.0, min(box[3], h) - max(box[1], 0))
        return iw * ih >= 0.5 * bw * bh

    # ------------------------------------------------------------------ API
    def track(self, frame: Any, timestamp: float | None = None, color: str | None = None) -> list[Face]:
        """Faces of this frame (with ``track_id``), sorted by id. ``timestamp`` in seconds
        (default: frame count / fps; a finite number, never less than the previous frame's);
        ``color`` as for ``Landmarker.detect``. When every face tracked from the previous frame
        is lost on this one (a scene cut, another stream), the detector runs on this frame."""
        with self._lock:
            img = self.landmarker.image(frame, color)
            t = self._frame / self.fps if timestamp is None else self._check_time(timestamp)
            self._frame += 1
            self._last_t = t
            if self._size is not None and img.shape[:2] != self._size:
                self._rescale(self._size, img.shape[:2])
            self._size = img.shape[:2]
            detect = self._force_detect or not self._tracks or self._since_detect >= self.detect_every
            faces = self._step(img, t, detect)
            if not detect and not self._tracks:  # all lost: whatever is there now is found now
                faces = self._step(img, t, True)
            return faces

    def _check_time(self, timestamp: Any) -> float:
        try:
            t = float(timestamp)
        except (TypeError, ValueError):
            raise TypeError(f"timestamp must be a number of seconds, got {timestamp!r}") from None
        if not math.isfinite(t):
            raise ValueError(f"timestamp must be a finite number of seconds, got {timestamp!r}")
        if self._last_t is not None and t < self._last_t:
            raise ValueError(
                f"timestamps must not decrease: got {t} after {self._last_t} (one "
                "VideoLandmarker per stream; reset() to start another)"
            )
        return t

    def _step(self, img: np.ndarray, t: float, detect: bool) -> list[Face]:
        lm = self.landmarker
        self.detected = detect
        for tr in self._tracks:
            tr.det_square = None
        if detect:
            self._associate(img)
            self._since_detect = 0
        self._since_detect += 1
        self._force_detect = False
        if not self._tracks:
            return []

        squares = np.array([np.r_[tr.square[:3], tr.square[3:4] if len(tr.square) > 3 else 0.0] for tr in self._tracks])
        marks = lm.landmarks_in_squares(img, squares, "bgr")
        if lm.upright_search:  # a face turned since the last frame, or on its side
            (squares,), (marks,) = lm.upright([img], [squares], [marks])
        pts, ls, vis = marks.points, marks.scores, marks.visibility
        quality, point_quality = lm.model.qualities(marks)
        kept: list[_Track] = []
        faces: list[Face] = []
        for i, tr in enumerate(self._tracks):
            p = pts[i].astype(np.float64)
            s = ls[i]
            c, r = _reference(p)
            if tr.det_square is not None:  # refresh the landmarks -> square relation
                sq = tr.det_square
                rel = np.array([(sq[0] - c[0]) / r, (sq[1] - c[1]) / r, sq[2] / r])
                tr.rel = rel if tr.rel is None else 0.5 * (tr.rel + rel)
            to_square = tr.rel
            assert to_square is not None  # set on the track's first detect frame
            new_sq = np.array([c[0] + to_square[0] * r, c[1] + to_square[1] * r, to_square[2] * r])
            if squares[i][3]:  # turned: the next crop from the mean-face fit, turned with the face
                fit = fit_mean_face(p[None], lm.model.spec.mean_face)[0]
                if 0.5 * squares[i][2] < fit[2] < 2 * squares[i][2]:
                    new_sq = fit
            box = (np.r_[new_sq[:2], new_sq[:2]] + tr.box_rel * new_sq[2]).astype(np.float32)
            if self.predict and tr.centre is not None:  # constant velocity: where it will be next
                new_sq[:2] += c - tr.centre
            tr.centre = c
            if float(s.mean()) < self.min_score or not self._inside(box, img.shape):
                self._force_detect = True
                continue
            if kept and _square_iou(new_sq[:3], np.array([k.square[:3] for k in kept])).max() > 0.7:
                continue  # two tracks on one face: keep the older (tracks are in id order)
            low = quality is not None and bool(quality[i] < self.min_quality)
            if low and not tr.low_quality:
                self._force_detect = True  # keep the face, but let the detector look again
            tr.low_quality = low
            move = max(np.abs(new_sq[:2] - tr.square[:2]).max(), abs(new_sq[2] - tr.square[2]))
            if (
                move > self.hold * tr.square[2]
                or len(new_sq) != len(tr.square)
                or (len(new_sq) > 3 and abs(new_sq[3] - tr.square[3]) > math.radians(2))
            ):
                tr.square = new_sq
            v = None if vis is None else vis[i].astype(np.float32)
            if tr.filter is not None:
                p = tr.filter(p, t, scale=r, steady=None if v is None else v < 0.5, steady_cutoff=self.hidden_cutoff)
            tr.face = Face(
                box=box,
                score=tr.score,
                landmarks=p.astype(np.float32),
                landmark_scores=s,
                track_id=tr.id,
                image_size=(img.shape[1], img.shape[0]),
                visibility=v,
                quality=None if quality is None else float(quality[i]),
                point_quality=None if point_quality is None else point_quality[i],
            )
            kept.append(tr)
            faces.append(tr.face)
        self._tracks = kept
        return faces

    @property
    def num_tracks(self) -> int:
        return len(self._tracks)
