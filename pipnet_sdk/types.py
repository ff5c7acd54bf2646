"""Result types."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .geometry import HeadPose


@dataclass
class Face:
    """One face: box x1, y1, x2, y2 and landmarks in pixels of the input image,
    (0, 0) = centre of the top-left pixel; ``image_size`` = (width, height) of that image.

    ``five_points``, ``pose``, ``eye_openness`` and ``mouth_openness`` (see
    :mod:`pipnet_sdk.geometry`) are computed on first read and cached: they cost nothing unless
    read, and do not follow later changes to ``landmarks``. None unless there are 68 points."""

    box: np.ndarray  # (4,) float32
    score: float
    landmarks: np.ndarray  # (N, 2) float32
    landmark_scores: np.ndarray  # (N,) float32
    track_id: int | None = field(default=None)
    image_size: tuple[int, int] | None = field(default=None)

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

    def to_dict(self) -> dict:
        """The face as plain JSON types; a NaN or infinite value (hand-made faces only) is None."""
        def num(v: Any, digits: int) -> float | None:
            v = float(v)
            return round(v, digits) if math.isfinite(v) else None

        def pairs(points: Any) -> list:
            return [[num(x, 2), num(y, 2)] for x, y in points]

        d = {
            "box": [num(v, 2) for v in self.box],
            "score": num(self.score, 4),
            "landmarks": pairs(self.landmarks),
            "landmark_scores": [num(v, 4) for v in self.landmark_scores],
        }
        if self.track_id is not None:
            d["track_id"] = int(self.track_id)
        fp, pose, eyes, mouth = self.five_points, self.pose, self.eye_openness, self.mouth_openness
        d["five_points"] = None if fp is None else pairs(fp)
        d["pose"] = None if pose is None else {k: num(v, 2) for k, v in pose._asdict().items()}
        d["eye_openness"] = None if eyes is None else [num(v, 4) for v in eyes]
        d["mouth_openness"] = None if mouth is None else num(mouth, 4)
        return d
