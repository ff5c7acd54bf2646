"""Box geometry shared by the detector, the video tracker and training: boxes are x1, y1, x2, y2."""

from __future__ import annotations

import numpy as np


def area(boxes: np.ndarray) -> np.ndarray:
    """Area of boxes (..., 4); inverted boxes count as empty."""
    return np.clip(boxes[..., 2] - boxes[..., 0], 0, None) * np.clip(boxes[..., 3] - boxes[..., 1], 0, None)


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of boxes a (..., 4) and b (..., 4), broadcast against each other:
    ``iou(boxes, box)`` gives one value per box, ``iou(a[:, None], b[None])`` the (len(a), len(b))
    matrix."""
    a, b = np.asarray(a), np.asarray(b)
    w = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    h = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = w * h
    return inter / np.maximum(area(a) + area(b) - inter, 1e-9)


def boxes_from_squares(squares: np.ndarray) -> np.ndarray:
    """Crop squares cx, cy, side (..., 3) -> boxes x1, y1, x2, y2 (..., 4), float64."""
    s = np.asarray(squares, np.float64)
    half = s[..., 2:3] / 2
    return np.concatenate([s[..., :2] - half, s[..., :2] + half], axis=-1)
