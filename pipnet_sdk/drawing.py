"""Annotated copies of images: boxes, scores, landmarks, track ids. The input is never modified."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import cv2
import numpy as np

from .images import is_pil_image, load_image
from .types import Face

_SHIFT = 4  # sub-pixel drawing: coordinates in 1/16 pixel


def _fixed(x: float, y: float) -> tuple[int, int]:
    return int(round(x * (1 << _SHIFT))), int(round(y * (1 << _SHIFT)))


# head axes (BGR): the face's left-to-right red, up green, forward (out of the face) blue
_AXIS_COLORS = ((0, 0, 255), (0, 200, 0), (255, 80, 0))


def _draw_axes(img: np.ndarray, face: Face, size: float) -> None:
    from .geometry import pose_axes

    image_size = face.image_size or (img.shape[1], img.shape[0])
    ends = pose_axes(face.landmarks, image_size, length=60.0)
    if ends is None:
        return
    thick = max(1, int(round(size / 60)))
    for end, col in zip(ends[1:], _AXIS_COLORS):
        cv2.line(img, _fixed(*ends[0]), _fixed(*end), col, thick, cv2.LINE_AA, _SHIFT)


def _draw_face(
    img: np.ndarray, face: Face, color: tuple, radius: float | None, boxes: bool, ids: bool, pose: bool = False
) -> None:
    box = np.asarray(face.box, dtype=np.float64).reshape(4)
    size = max(box[2] - box[0], box[3] - box[1], 1.0) if np.isfinite(box).all() else 100.0
    thick = max(1, int(round(size / 150)))
    labels = []
    if boxes and np.isfinite(box).all():
        cv2.rectangle(img, _fixed(box[0], box[1]), _fixed(box[2], box[3]), color, thick, cv2.LINE_AA, _SHIFT)
        labels.append(f"{float(face.score):.2f}")
    if ids and face.track_id is not None:
        labels.append(f"id {face.track_id}")
    r = max(1.0, size / 120) if radius is None else float(radius)
    pts = np.asarray(face.landmarks, dtype=np.float64).reshape(-1, 2)
    hidden = face.occluded if face.occluded is not None and len(face.occluded) == len(pts) else np.zeros(len(pts), bool)
    ring = max(1, int(round(r / 2)))
    for (x, y), seen in zip(pts, ~hidden):
        if np.isfinite(x) and np.isfinite(y):  # a hidden point is a ring, a seen one a dot
            cv2.circle(
                img,
                _fixed(x, y),
                int(round((r if seen else 1.6 * r) * (1 << _SHIFT))),
                color,
                -1 if seen else ring,
                cv2.LINE_AA,
                _SHIFT,
            )
    if pose:
        _draw_axes(img, face, size)
    if labels and np.isfinite(box).all():
        scale = max(0.4, size / 300)
        tt = max(1, int(round(scale * 1.5)))
        org = (int(round(box[0])), int(round(box[1])) - 4)
        if org[1] < 12 * scale:  # no room above the box: write inside it
            org = (org[0], int(round(box[1] + 18 * scale)))
        cv2.putText(img, " ".join(labels), org, cv2.FONT_HERSHEY_SIMPLEX, scale, color, tt, cv2.LINE_AA)


def draw(
    image: Any,
    faces: Face | Iterable[Face],
    color: Sequence[int] = (0, 255, 0),
    radius: float | None = None,
    boxes: bool = True,
    ids: bool = True,
    pose: bool = False,
) -> Any:
    """A copy of ``image`` with each face's box and score (``boxes``), landmarks and track id
    (``ids``, when the face has one) drawn on it.

    NumPy in -> a new uint8 (H, W, 3) array; 3-channel arrays keep their channel order and
    ``color`` is in that order (BGR for OpenCV images); gray and 4-channel arrays come back as
    3-channel BGR; a path in -> the file as a BGR array. PIL in -> a new RGB PIL image,
    ``color`` in RGB. ``radius`` is the landmark
    dot radius in pixels (default: scaled to each face's size); points the model sees as hidden
    (``Face.occluded``) are drawn as rings instead of dots. ``pose`` also draws the head's
    axes from its pose (68-point faces; from the nose tip, about 6 cm long): the face's
    left-to-right axis red, up green, forward blue (BGR colours, whatever ``color`` is).
    """
    if isinstance(faces, Face):
        faces = [faces]
    col = tuple(int(c) for c in color)
    if len(col) != 3:
        raise ValueError(f"color must have 3 values, got {color!r}")
    pil = is_pil_image(image)
    if pil:
        img = load_image(image).copy()
        col = col[::-1]  # the caller's RGB colour onto our BGR working copy
    else:  # 3-channel arrays keep their channel order (load_image with the default "bgr")
        img = load_image(image)
        if isinstance(image, np.ndarray) and np.shares_memory(img, image):
            img = img.copy()
    for f in faces:
        _draw_face(img, f, col, radius, boxes, ids, pose)
    if pil:
        from PIL import Image

        return Image.fromarray(np.ascontiguousarray(img[..., ::-1]))
    return img
