"""Result types."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Face:
    """One face: box x1, y1, x2, y2 and landmarks in pixels of the input image,
    (0, 0) = centre of the top-left pixel."""

    box: np.ndarray  # (4,) float32
    score: float
    landmarks: np.ndarray  # (N, 2) float32
    landmark_scores: np.ndarray  # (N,) float32
    track_id: int | None = field(default=None)

    def to_dict(self) -> dict:
        d = {
            "box": [round(float(v), 2) for v in self.box],
            "score": round(float(self.score), 4),
            "landmarks": [[round(float(x), 2), round(float(y), 2)] for x, y in self.landmarks],
            "landmark_scores": [round(float(v), 4) for v in self.landmark_scores],
        }
        if self.track_id is not None:
            d["track_id"] = int(self.track_id)
        return d
