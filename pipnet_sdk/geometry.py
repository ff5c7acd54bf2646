"""Face geometry from 68 iBUG landmarks: five points, head pose, eye and mouth openness, and
ArcFace-style aligned crops. NumPy + OpenCV only; every function takes pixel coordinates of the
image ((0, 0) = centre of the top-left pixel, as everywhere in this SDK).

Head pose
---------
:func:`head_pose` fits a 3-D 68-point mean face to the landmarks with ``cv2.solvePnP`` (pinhole
camera, focal length ``max(width, height)`` pixels, principal point at the image centre, no
distortion) and returns ``HeadPose(yaw, pitch, roll)`` in degrees, for the rotation
``R = Rz(roll) @ Ry(-yaw) @ Rx(-pitch)`` from the face to the camera (x right, y down, z away
from the camera). (0, 0, 0) is an upright face looking straight into the camera; signs:

- yaw > 0: the face turns towards the image's right (its nose points right: the subject turns
  to their own left, in an unmirrored photo);
- pitch > 0: the face looks up;
- roll > 0: the face is rotated clockwise in the image (the eye on the image's right is lower).

Mirroring the image negates yaw and roll and keeps pitch; rotating the image about its centre by
``a`` degrees clockwise adds about ``a`` to roll. Without the image size the camera is put on
the face's axis with a focal length of :data:`FOCAL_PER_RADIUS` x the landmarks' RMS radius.

3-D mean face
-------------
``MEAN_FACE_3D`` is the mean shape of OpenFace's 68-point point distribution model
(``In-the-wild_aligned_PDM_68.txt``; T. Baltrušaitis et al., "OpenFace 2.0: Facial Behavior
Analysis Toolkit", FG 2018, https://github.com/TadasBaltrusaitis/OpenFace), units about a
millimetre, x right, y down, z away from the viewer. These figures are the ones used by many
head-pose tutorials. Here they are made exactly left-right symmetric (averaged with their
mirror image), so that mirrored faces get exactly mirrored poses.

Openness
--------
:func:`eye_openness` is the eye aspect ratio (Soukupová & Čech, "Real-Time Eye Blink Detection
using Facial Landmarks", CVWW 2016): ``(|p2 - p6| + |p3 - p5|) / (2 |p1 - p4|)`` over each
6-point eye contour. Start with "closed below 0.2": with pipnet-fast on the 300W test faces,
open eyes give 0.33 in the median (under 0.2 for 0.8 % of them) and closed eyes 0.01-0.23
(8 of 14 under 0.2); the model rarely closes an eye completely, so for blinks compare with the
person's own open level (``examples/blink.py``). :func:`mouth_openness` is the mean gap
between the inner lips (61-67, 62-66, 63-65) over the mouth width (48-54): closed mouths give
under 0.06 (95 %), open ones (ground truth over 0.25) over 0.18; start with "open above 0.15".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import cv2
import numpy as np

__all__ = [
    "ARCFACE_112",
    "FOCAL_PER_RADIUS",
    "HeadPose",
    "MEAN_FACE_3D",
    "align",
    "align_many",
    "eye_openness",
    "five_points",
    "head_pose",
    "mouth_openness",
    "pose_axes",
]

#: ArcFace / InsightFace 112 x 112 template: eye, eye, nose tip, mouth corner, mouth corner
#: (the image's left one first).
ARCFACE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float32,
)

#: Focal length in units of the landmarks' RMS radius when the image size is unknown (the
#: mean face's RMS radius is about 59 mm, so this puts the camera about 0.7 m away).
FOCAL_PER_RADIUS = 12.0

# Mean shape of OpenFace's In-the-wild_aligned_PDM_68 (see the module doc), x, y, z per point.
_OPENFACE_MEAN = np.array(
    [
        [-73.393523, -29.801432, 47.667532],
        [-72.775014, -10.949766, 45.909403],
        [-70.533638, 7.929818, 44.842580],
        [-66.850058, 26.074280, 43.141114],
        [-59.790187, 42.564390, 38.635298],
        [-48.368973, 56.481080, 30.750622],
        [-34.121101, 67.246992, 18.456453],
        [-17.875411, 75.056892, 3.609035],
        [0.098749, 77.061286, -0.881698],
        [17.477031, 74.758448, 5.181201],
        [32.648966, 66.929021, 19.176563],
        [46.372358, 56.311389, 30.770570],
        [57.343480, 42.419126, 37.628629],
        [64.388482, 25.455880, 40.886309],
        [68.212038, 6.990805, 42.281449],
        [70.486405, -11.666193, 44.142567],
        [71.375822, -30.365191, 47.140426],
        [-61.119406, -49.361602, 14.254422],
        [-51.287588, -58.769795, 7.268147],
        [-37.804800, -61.996155, 0.442051],
        [-24.022754, -61.033399, -6.606501],
        [-11.635713, -56.686759, -11.967398],
        [12.056636, -57.391033, -12.051204],
        [25.106256, -61.902186, -7.315098],
        [38.338588, -62.777713, -1.022953],
        [51.191007, -59.302347, 5.349435],
        [60.053851, -50.190255, 11.615746],
        [0.653940, -42.193790, -13.380835],
        [0.804809, -30.993721, -21.150853],
        [0.992204, -19.944596, -29.284036],
        [1.226783, -8.414541, -36.948060],
        [-14.772472, 2.598255, -20.132003],
        [-7.180239, 4.751589, -23.536684],
        [0.555920, 6.562900, -25.944448],
        [8.272499, 4.661005, -23.695741],
        [15.214351, 2.643046, -20.858157],
        [-46.047290, -37.471411, 7.037989],
        [-37.674688, -42.730510, 3.021217],
        [-27.883856, -42.711517, 1.353629],
        [-19.648268, -36.754742, -0.111088],
        [-28.272965, -35.134493, -0.147273],
        [-38.082418, -34.919043, 1.476612],
        [19.265868, -37.032306, -0.665746],
        [27.894191, -43.342445, 0.247660],
        [37.437529, -43.110822, 1.696435],
        [45.170805, -38.086515, 4.894163],
        [38.196454, -35.532024, 0.282961],
        [28.764989, -35.484289, -1.172675],
        [-28.916267, 28.612716, -2.240310],
        [-17.533194, 22.172187, -15.934335],
        [-6.684590, 19.029051, -22.611355],
        [0.381001, 20.721118, -23.748437],
        [8.375443, 19.035460, -22.721995],
        [18.876618, 22.394109, -15.610679],
        [28.794412, 28.079924, -3.217393],
        [19.057574, 36.298248, -14.987997],
        [8.956375, 39.634575, -22.554245],
        [0.381549, 40.395647, -23.591626],
        [-7.428895, 39.836405, -22.406106],
        [-18.160634, 36.677899, -15.121907],
        [-24.377490, 28.677771, -4.785684],
        [-6.897633, 25.475976, -20.893742],
        [0.340663, 26.014269, -22.220479],
        [8.444722, 25.326198, -21.025520],
        [24.474473, 28.323008, -5.712776],
        [8.449166, 30.596216, -20.671489],
        [0.205322, 31.408738, -21.903670],
        [-7.198266, 30.844876, -20.328022],
    ]
)


def _mirror_index_68() -> np.ndarray:
    """iBUG 68 point i <-> its left-right mirror point."""
    pairs = [(i, 16 - i) for i in range(17)] + [(17 + i, 26 - i) for i in range(10)]
    pairs += [(27, 27), (28, 28), (29, 29), (30, 30), (31, 35), (32, 34), (33, 33), (34, 32), (35, 31)]
    pairs += [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]
    pairs += [(b, a) for a, b in pairs[-6:]]
    pairs += [(48 + i, 54 - i) for i in range(7)] + [(55 + i, 59 - i) for i in range(5)]
    pairs += [(60 + i, 64 - i) for i in range(5)] + [(65, 67), (66, 66), (67, 65)]
    idx = np.empty(68, np.int64)
    for a, b in pairs:
        idx[a] = b
    return idx


MIRROR_68 = _mirror_index_68()


def _symmetric(shape: np.ndarray) -> np.ndarray:
    mirrored = shape[MIRROR_68] * np.array([-1.0, 1.0, 1.0])
    s = (shape + mirrored) / 2
    return s - s.mean(axis=0)


#: The 3-D mean face (68, 3) used by :func:`head_pose` (OpenFace's, made symmetric, centred).
MEAN_FACE_3D = _symmetric(_OPENFACE_MEAN).astype(np.float64)
_MODEL_RADIUS = float(np.sqrt((MEAN_FACE_3D**2).sum(axis=1).mean()))


class HeadPose(NamedTuple):
    """Head rotation in degrees (signs in the module doc of :mod:`pipnet_sdk.geometry`)."""

    yaw: float
    pitch: float
    roll: float


# ------------------------------------------------------------------------------ helpers
def _points68(points: Any) -> np.ndarray | None:
    """(68, 2) float64 finite landmarks, or None."""
    p = np.asarray(points, dtype=np.float64)
    if p.shape != (68, 2) or not np.isfinite(p).all():
        return None
    return p


def _dist(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.hypot(*(a - b)))


# ------------------------------------------------------------------------------ five points
def five_points(points: Any) -> np.ndarray | None:
    """InsightFace's five points (5, 2) float32 from 68 landmarks: eye centre (mean of 36-41),
    eye centre (42-47), nose tip (30), mouth corners (48, 54); None unless 68 finite points.

    The order is the iBUG one: the subject's right eye and mouth corner first, which are the
    image's left ones in an upright, unmirrored face (InsightFace's order). It is not re-sorted
    by x, so a face rolled past 90 degrees still aligns upright."""
    p = _points68(points)
    if p is None:
        return None
    return np.stack([p[36:42].mean(0), p[42:48].mean(0), p[30], p[48], p[54]]).astype(np.float32)


# ------------------------------------------------------------------------------ openness
def _ear(eye: np.ndarray) -> float:
    width = _dist(eye[0], eye[3])
    if width <= 1e-6:
        return float("nan")
    return (_dist(eye[1], eye[5]) + _dist(eye[2], eye[4])) / (2.0 * width)


def eye_openness(points: Any) -> tuple[float, float] | None:
    """Eye aspect ratios (eye of points 36-41, eye of points 42-47), i.e. (the image's left
    eye, the image's right eye) of an upright face; None unless 68 finite points. Open eyes
    give about 0.25-0.35, closed ones under about 0.15."""
    p = _points68(points)
    if p is None:
        return None
    left, right = _ear(p[36:42]), _ear(p[42:48])
    return None if not (math.isfinite(left) and math.isfinite(right)) else (left, right)


def mouth_openness(points: Any) -> float | None:
    """Mean inner-lip gap (61-67, 62-66, 63-65) over the mouth width (48-54): about 0 when the
    mouth is closed; None unless 68 finite points."""
    p = _points68(points)
    if p is None:
        return None
    width = _dist(p[48], p[54])
    if width <= 1e-6:
        return None
    return (_dist(p[61], p[67]) + _dist(p[62], p[66]) + _dist(p[63], p[65])) / (3.0 * width)


# ------------------------------------------------------------------------------ head pose
def _camera(p: np.ndarray, image_size: Sequence[int] | None) -> np.ndarray:
    if image_size is not None:
        w, h = (float(v) for v in image_size)
        if not (w > 0 and h > 0):
            raise ValueError(f"image_size must be (width, height) > 0, got {image_size!r}")
        f, cx, cy = max(w, h), (w - 1) / 2, (h - 1) / 2
    else:  # camera on the face's axis, distance from the face's size
        c = p.mean(axis=0)
        f = FOCAL_PER_RADIUS * float(np.sqrt(((p - c) ** 2).sum(axis=1).mean()))
        cx, cy = c
    return np.array([[f, 0, cx], [0, f, cy], [0, 0, 1]], dtype=np.float64)


def _solve(points: Any, image_size: Sequence[int] | None):
    """(rvec, tvec, K) of the mean face fitted to the landmarks, or None."""
    p = _points68(points)
    if p is None:
        return None
    K = _camera(p, image_size)
    if not np.isfinite(K).all() or K[0, 0] <= 1e-6:
        return None
    try:  # SQPnP: a global solution in front of the camera (the default DLT start is not);
        # then Levenberg-Marquardt on the reprojection error
        ok, rvec, tvec = cv2.solvePnP(MEAN_FACE_3D, p, K, None, flags=cv2.SOLVEPNP_SQPNP)
        if ok:
            rvec, tvec = cv2.solvePnPRefineLM(MEAN_FACE_3D, p, K, None, rvec, tvec)
    except cv2.error:
        return None
    if not ok or not (np.isfinite(rvec).all() and np.isfinite(tvec).all()) or tvec[2, 0] <= 0:
        return None
    return rvec, tvec, K


def _angles(rvec: np.ndarray) -> HeadPose:
    R, _ = cv2.Rodrigues(rvec)
    # R = Rz(g) Ry(b) Rx(a); yaw = -b, pitch = -a, roll = g (signs in the module doc)
    b = math.asin(max(-1.0, min(1.0, -R[2, 0])))
    a = math.atan2(R[2, 1], R[2, 2])
    g = math.atan2(R[1, 0], R[0, 0])
    return HeadPose(-math.degrees(b), -math.degrees(a), math.degrees(g))


def head_pose(points: Any, image_size: Sequence[int] | None = None) -> HeadPose | None:
    """``HeadPose(yaw, pitch, roll)`` in degrees from 68 landmarks (signs in the module doc).

    image_size: (width, height) of the image the landmarks are in; None puts the camera on the
    face's axis. None comes back unless there are 68 finite points and solvePnP succeeds."""
    sol = _solve(points, image_size)
    if sol is None:
        return None
    pose = _angles(sol[0])
    return pose if all(math.isfinite(v) for v in pose) else None


def pose_axes(points: Any, image_size: Sequence[int] | None = None, length: float = 50.0) -> np.ndarray | None:
    """The head's axes projected into the image: (4, 2) float32 = origin (the nose tip), then
    the ends of the axes towards the face's left-to-right (x, the image's right in a frontal
    face), up and forward (out of the face), ``length`` mean-face units (about mm) long."""
    sol = _solve(points, image_size)
    if sol is None:
        return None
    rvec, tvec, K = sol
    o = MEAN_FACE_3D[30]
    ends = np.array([o, o + [length, 0, 0], o + [0, -length, 0], o + [0, 0, -length]])
    img, _ = cv2.projectPoints(ends, rvec, tvec, K, None)
    img = img.reshape(4, 2)
    return img.astype(np.float32) if np.isfinite(img).all() else None


# ------------------------------------------------------------------------------ alignment
def _template(template: Any, size: int) -> np.ndarray:
    if isinstance(template, str):
        if template.lower() != "arcface":
            raise ValueError(f"unknown template {template!r}: use 'arcface' or a (5, 2) array")
        return ARCFACE_112 * (size / 112.0)
    t = np.asarray(template, dtype=np.float32)
    if t.shape != (5, 2) or not np.isfinite(t).all():
        raise ValueError(f"template must be 'arcface' or (5, 2) finite points in the output crop, got shape {t.shape}")
    return t


def _five(face: Any) -> np.ndarray:
    """Five points (5, 2) from a Face, five points or 68 landmarks; ValueError otherwise."""
    pts = getattr(face, "landmarks", face)
    p = np.asarray(pts, dtype=np.float64)
    if p.shape == (68, 2):
        five = five_points(p)
        if five is None:
            raise ValueError("the 68 landmarks contain NaN or inf")
        p = five
    elif p.shape != (5, 2):
        raise ValueError(f"need a Face, five points (5, 2) or 68 landmarks (68, 2); got shape {p.shape}")
    if not np.isfinite(p).all():
        raise ValueError("the five points contain NaN or inf")
    return np.asarray(p, dtype=np.float64)


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, shift; no reflection) mapping ``src``
    (N, 2) onto ``dst`` (N, 2) as a 2 x 3 matrix (Umeyama 1991)."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    ms, md = src.mean(0), dst.mean(0)
    s, d = src - ms, dst - md
    var = (s**2).sum() / len(src)
    if var <= 1e-12:
        raise ValueError("the points all coincide: no alignment")
    U, S, Vt = np.linalg.svd(d.T @ s / len(src))
    D = np.diag([1.0, 1.0 if np.linalg.det(U) * np.linalg.det(Vt) > 0 else -1.0])
    R = U @ D @ Vt
    scale = float((S * np.diag(D)).sum() / var)
    M = np.empty((2, 3))
    M[:, :2] = scale * R
    M[:, 2] = md - scale * R @ ms
    return M


def _crop_image(image: Any) -> np.ndarray:
    from .images import is_pil_image, load_image

    img = load_image(image)
    return np.ascontiguousarray(img[..., ::-1]) if is_pil_image(image) else img


def _warp(img: np.ndarray, face: Any, size: int, template: Any) -> np.ndarray:
    M = similarity(_five(face), _template(template, size))
    return cv2.warpAffine(
        img, M, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0)
    )


def _check_size(size: Any) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 8:
        raise ValueError(f"size must be an int >= 8, got {size!r}")
    return int(size)


def align(image: Any, face: Any, size: int = 112, template: Any = "arcface") -> np.ndarray:
    """The face as a (size, size, 3) uint8 crop, its five points moved onto ``template`` by a
    similarity transform (ArcFace's 112 x 112 template, scaled to ``size``; or your own (5, 2)
    points in crop pixels). Outside the image is black.

    image: an array (3-channel arrays keep their channel order), a path (BGR out) or a PIL image
    (RGB out). face: a :class:`~pipnet_sdk.Face`, 68 landmarks or five points (InsightFace order).
    """
    return _warp(_crop_image(image), face, _check_size(size), template)


def align_many(image: Any, faces: Sequence[Any], size: int = 112, template: Any = "arcface") -> np.ndarray:
    """:func:`align` for each face of one image: (F, size, size, 3) uint8 (F may be 0)."""
    size = _check_size(size)
    img = _crop_image(image)
    crops = [_warp(img, f, size, template) for f in faces]
    return np.stack(crops) if crops else np.zeros((0, size, size, 3), np.uint8)
