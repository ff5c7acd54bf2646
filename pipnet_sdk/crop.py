"""The crop rule: detector box -> square crop -> network input, and back to image coordinates.

One rule, used by the SDK and by training (export/ imports nothing from here but implements
the same formula and is tested against it):

    side = scale * max(w, h);  cx = x1 + w/2;  cy = y1 + h/2 + shift_y * h

Coordinates are pixels with (0, 0) = centre of the top-left pixel. A normalised crop coordinate
n in [0, 1] (0 = left/top edge of the crop) maps to image x = cx + (n - 0.5) * side.

A square may carry a fourth value, its angle a in radians: the crop is then turned with the face,
its x axis along (cos a, sin a) in the image, and n maps to c + R(a) (n - 0.5) side. Three values
mean a = 0.
"""

from __future__ import annotations

import math

import cv2
import numpy as np


def squares_from_boxes(boxes: np.ndarray, scale: float, shift_y: float) -> np.ndarray:
    """(F, 4) boxes x1, y1, x2, y2 -> (F, 3) squares cx, cy, side."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    w = b[:, 2] - b[:, 0]
    h = b[:, 3] - b[:, 1]
    cx = b[:, 0] + w / 2
    cy = b[:, 1] + h / 2 + shift_y * h
    side = scale * np.maximum(w, h)
    return np.stack([cx, cy, side], axis=1)


# Test-time crops: (dx, dy) in units of the side, and a side factor. The first is the plain crop;
# the rest shift diagonally and zoom, so the face lands at another sub-cell position of the
# network's coarse grid. Chosen on the validation split (flat optimum around 3 % and 5 %).
TEST_CROPS = np.array(
    [(0.0, 0.0, 1.0), (0.03, 0.03, 0.95), (-0.03, -0.03, 1.05), (0.03, -0.03, 1.05), (-0.03, 0.03, 0.95)]
)


def _rotation(angle: np.ndarray) -> np.ndarray:
    """(..., 2, 2) rotation matrices taking crop axes to image axes."""
    c, s = np.cos(angle), np.sin(angle)
    return np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2)


def _angles(squares: np.ndarray) -> np.ndarray | None:
    """The squares' angles (F,), or None when every crop is upright."""
    sq = np.asarray(squares)
    if sq.shape[-1] < 4 or not np.any(sq[..., 3]):
        return None
    return np.asarray(sq[..., 3], np.float64)


def jitter_squares(squares: np.ndarray, count: int) -> np.ndarray:
    """(F, 3 or 4) squares -> (F * count, same): each face's first `count` TEST_CROPS, face-major
    (shifts along the crop's own axes)."""
    if not 1 <= count <= len(TEST_CROPS):
        raise ValueError(f"test crops must be 1 to {len(TEST_CROPS)}, got {count}")
    sq = np.asarray(squares, dtype=np.float64)
    width = sq.shape[-1] if sq.ndim == 2 else 3
    sq = sq.reshape(-1, 1, width)
    if count == 1:  # the first test crop is the plain one
        return sq.reshape(-1, width)
    j = np.broadcast_to(TEST_CROPS[:count][None], (len(sq), count, 3))
    shift = j[..., :2]
    angles = _angles(sq[:, 0])
    if angles is not None:
        shift = np.einsum("fij,fkj->fki", _rotation(angles), shift)
    out = np.concatenate(
        [
            sq[..., :2] + shift * sq[..., 2:3],
            sq[..., 2:3] * j[..., 2:],
            np.broadcast_to(sq[..., 3:], (len(sq), count, width - 3)),
        ],
        axis=-1,
    )
    return out.reshape(-1, width)


def crop_matrix(square: np.ndarray, size: int) -> np.ndarray:
    """2x3 affine matrix taking image pixels to crop pixels for one square."""
    cx, cy, side = (float(v) for v in square[:3])
    s = size / side
    a = float(square[3]) if len(square) > 3 else 0.0
    if a == 0.0:
        return np.array([[s, 0, (size - 1) / 2 - s * cx], [0, s, (size - 1) / 2 - s * cy]])
    c, n = math.cos(a) * s, math.sin(a) * s
    lin = np.array([[c, n], [-n, c]])  # image -> crop: s R(-a)
    return np.concatenate([lin, ((size - 1) / 2 - lin @ [cx, cy])[:, None]], axis=1)


def _region(image: np.ndarray, cx: float, cy: float, half: float) -> tuple[int, int, int, int]:
    """Pixel bounds x0, y0, x1, y1 (end-exclusive) of the square of half-side `half` around
    (cx, cy), clipped to the image."""
    h, w = image.shape[:2]
    x0, y0 = max(0, int(np.floor(cx - half))), max(0, int(np.floor(cy - half)))
    return x0, y0, min(w, int(np.ceil(cx + half)) + 1), min(h, int(np.ceil(cy + half)) + 1)


def crop_one(image: np.ndarray, square: np.ndarray, size: int) -> np.ndarray:
    """One (size, size, 3) crop. When shrinking, the covered region is first low-passed (2x
    area-averaging steps, then a light blur) so that big faces are not aliased; outside the
    image is black."""
    cx, cy, side = (float(v) for v in square[:3])
    angle = [float(square[3])] if len(square) > 3 else []
    s = size / side
    if s < 0.8:
        turned = abs(math.cos(angle[0])) + abs(math.sin(angle[0])) if angle else 1.0
        x0, y0, x1, y1 = _region(image, cx, cy, side / 2 * turned + 4)
        if x1 - x0 >= 4 and y1 - y0 >= 4:
            if s < 0.5:
                # halve by area averaging (OpenCV's INTER_AREA has a fast path for exactly 2x)
                # and crop from the half-size image; this repeats while the factor is below 0.5
                h, w = image.shape[:2]
                x1, y1 = min(w, x1 + (x1 - x0) % 2), min(h, y1 + (y1 - y0) % 2)  # even sizes where possible
                roi = image[y0:y1, x0:x1]
                if (x1 - x0) % 2 or (y1 - y0) % 2:  # else repeat the image's last row / column
                    roi = cv2.copyMakeBorder(roi, 0, (y1 - y0) % 2, 0, (x1 - x0) % 2, cv2.BORDER_REPLICATE)
                half = cv2.resize(roi, (roi.shape[1] // 2, roi.shape[0] // 2), interpolation=cv2.INTER_AREA)
                # half-size pixel u averages image pixels x0 + 2u and x0 + 2u + 1
                return crop_one(half, np.array([(cx - x0 - 0.5) / 2, (cy - y0 - 0.5) / 2, side / 2, *angle]), size)
            # the rest of the shrink: a light Gaussian blur against aliasing (sigma as skimage's
            # anti-aliasing, (1/s - 1) / 2), then the bilinear warp (INTER_AREA for a
            # non-integer factor costs several times more)
            roi = cv2.GaussianBlur(image[y0:y1, x0:x1], (0, 0), (1 / s - 1) / 2)
            return cv2.warpAffine(
                roi,
                crop_matrix(np.array([cx - x0, cy - y0, side, *angle]), size),
                (size, size),
                flags=cv2.INTER_LINEAR,
                borderMode=cv2.BORDER_CONSTANT,
                borderValue=(0, 0, 0),
            )
    return cv2.warpAffine(
        image,
        crop_matrix(square, size),
        (size, size),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(0, 0, 0),
    )


def crop_faces(image: np.ndarray, squares: np.ndarray, size: int) -> np.ndarray:
    """Cut (F, size, size, 3) uint8 crops, one per square."""
    out = np.empty((len(squares), size, size, 3), dtype=np.uint8)
    for i, sq in enumerate(squares):
        out[i] = crop_one(image, sq, size)
    return out


def to_image(points: np.ndarray, squares: np.ndarray) -> np.ndarray:
    """Normalised crop points (F, N, 2) -> image pixels (F, N, 2)."""
    sq = np.asarray(squares, dtype=np.float64)
    centre = sq[:, None, :2]
    side = sq[:, None, 2:3]
    rel = (points - 0.5) * side
    angles = _angles(sq)
    if angles is not None:
        rel = np.einsum("fij,fnj->fni", _rotation(angles), rel)
    return (centre + rel).astype(np.float32)


def to_crop(points: np.ndarray, squares: np.ndarray) -> np.ndarray:
    """Image pixels (F, N, 2) -> normalised crop points (F, N, 2)."""
    sq = np.asarray(squares, dtype=np.float64)
    rel = points - sq[:, None, :2]
    angles = _angles(sq)
    if angles is not None:
        rel = np.einsum("fji,fnj->fni", _rotation(angles), rel)  # R(a)^T
    return (rel / sq[:, None, 2:3] + 0.5).astype(np.float32)
