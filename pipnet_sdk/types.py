"""Result types."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .geometry import HeadPose


def _same(a: Any, b: Any) -> bool:
    """Equal shape and values, NaN equal to NaN."""
    a, b = np.asarray(a), np.asarray(b)
    numeric = np.issubdtype(a.dtype, np.number) and np.issubdtype(b.dtype, np.number)
    return bool(np.array_equal(a, b, equal_nan=numeric))


@dataclass
class Face:
    """One face: box x1, y1, x2, y2 and landmarks in pixels of the input image,
    (0, 0) = centre of the top-left pixel; ``image_size`` = (width, height) of that image.

    ``five_points``, ``pose``, ``eye_openness`` and ``mouth_openness`` (see
    :mod:`pipnet_sdk.geometry`) are computed on first read and cached: they cost nothing unless
    read, and do not follow later changes to ``landmarks``. None unless there are 68 points.

    Two faces are equal when all their fields are (arrays compared by value, NaN equal to NaN),
    so ``face in faces`` and ``faces.remove(face)`` work; like other mutable values, a Face is not
    hashable (key a dict by position or by ``id(face)``). ``repr`` is one line: box, score, number
    of points, track id if any, and the pose once it has been read."""

    box: np.ndarray  # (4,) float32
    score: float
    landmarks: np.ndarray  # (N, 2) float32
    landmark_scores: np.ndarray  # (N,) float32
    track_id: int | None = field(default=None)
    image_size: tuple[int, int] | None = field(default=None)
    visibility: np.ndarray | None = field(default=None)  # (N,) float32 in [0, 1]; None: the model has none
    quality: float | None = field(default=None)  # P(the face's landmarks are good), when the model is calibrated
    point_quality: np.ndarray | None = field(default=None)  # (N,) float32: P(each point is good), likewise

    @property
    def occluded(self) -> np.ndarray | None:
        """(N,) bool: the points the model sees as hidden (visibility below 0.5), or None."""
        return None if self.visibility is None else np.asarray(self.visibility) < 0.5

    @cached_property
    def five_points(self) -> np.ndarray | None:
        """InsightFace's five points (5, 2) float32: eyes, nose tip, mouth corners."""
        from .geometry import five_points

        return five_points(self.landmarks)

    @cached_property
    def pose(self) -> HeadPose | None:
        """``HeadPose(yaw, pitch, roll)`` in degrees, or None."""
        from .geometry import head_pose

        return head_pose(self.landmarks, self.image_size)

    @cached_property
    def eye_openness(self) -> tuple[float, float] | None:
        """Eye aspect ratios (eye of points 36-41, eye of points 42-47); closed below ~0.2."""
        from .geometry import eye_openness

        return eye_openness(self.landmarks)

    @cached_property
    def mouth_openness(self) -> float | None:
        """Inner-lip gap over mouth width; open above ~0.15."""
        from .geometry import mouth_openness

        return mouth_openness(self.landmarks)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Face):
            return NotImplemented
        return self is other or (
            self.track_id == other.track_id
            and self.image_size == other.image_size
            and all(
                _same(getattr(self, k), getattr(other, k))
                for k in ("box", "score", "landmarks", "landmark_scores", "visibility", "quality", "point_quality")
            )
        )

    __hash__ = None  # type: ignore[assignment]  # mutable and compared by value

    def __repr__(self) -> str:
        box = ", ".join(f"{float(v):.1f}" for v in np.asarray(self.box).ravel())
        parts = [f"box=[{box}]", f"score={float(self.score):.3f}", f"{len(self.landmarks)} points"]
        if self.quality is not None:
            parts.append(f"quality={float(self.quality):.2f}")
        hidden = self.occluded
        if hidden is not None:
            parts.append(f"{int(hidden.sum())} hidden")
        if self.track_id is not None:
            parts.append(f"track_id={self.track_id}")
        pose = self.__dict__.get("pose")  # only if already computed: repr must not cost a solve
        if pose is not None:
            parts.append("pose=(yaw={:.1f}, pitch={:.1f}, roll={:.1f})".format(*pose))
        return f"Face({', '.join(parts)})"

    def to_dict(self) -> dict:
        """The face as plain JSON types; a NaN or infinite value (hand-made faces only) is None."""

        def num(v: Any, digits: int) -> float | None:
            v = float(v)
            return round(v, digits) if math.isfinite(v) else None

        def pairs(points: Any) -> list:
            return [[num(x, 2), num(y, 2)] for x, y in points]

        hidden = self.occluded
        d: dict[str, Any] = {
            "box": [num(v, 2) for v in self.box],
            "score": num(self.score, 4),
            "landmarks": pairs(self.landmarks),
            "landmark_scores": [num(v, 4) for v in self.landmark_scores],
            "quality": None if self.quality is None else num(self.quality, 4),
            "visibility": None if self.visibility is None else [num(v, 4) for v in self.visibility],
            "occluded": None if hidden is None else [bool(v) for v in hidden],
            "point_quality": None if self.point_quality is None else [num(v, 4) for v in self.point_quality],
        }
        if self.track_id is not None:
            d["track_id"] = int(self.track_id)
        fp, pose, eyes, mouth = self.five_points, self.pose, self.eye_openness, self.mouth_openness
        d["five_points"] = None if fp is None else pairs(fp)
        d["pose"] = None if pose is None else {k: num(v, 2) for k, v in pose._asdict().items()}
        d["eye_openness"] = None if eyes is None else [num(v, 4) for v in eyes]
        d["mouth_openness"] = None if mouth is None else num(mouth, 4)
        return d
