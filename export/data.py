"""Datasets: readers for 300W-style folders and list files, detector-style boxes, mean face,
the 'base crop' cache that training augments from, and where data and caches live."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from pipnet_sdk.boxes import iou
from pipnet_sdk.crop import crop_matrix, crop_one, squares_from_boxes
from pipnet_sdk.images import IMAGE_EXTENSIONS


def shared_dir() -> Path:
    """../shared beside the repository, or $PIPNET_SHARED."""
    env = os.environ.get("PIPNET_SHARED")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared"


def shared_path(p: str | os.PathLike) -> Path:
    """A config's data path: absolute as given, else inside the shared data folder."""
    return Path(p) if os.path.isabs(p) else shared_dir() / p


def cache_dir() -> Path:
    """Where crops, boxes and pseudo-labels are cached: $PIPNET_CACHE, or .cache/ in the repository."""
    d = Path(os.environ.get("PIPNET_CACHE", Path(__file__).resolve().parents[1] / ".cache"))
    d.mkdir(parents=True, exist_ok=True)
    return d


@dataclass
class Sample:
    image: str
    points: np.ndarray | None  # (N, 2) pixels, (0, 0) = centre of the top-left pixel; None = unlabeled


def read_pts(path: str | Path, dtype: Any = np.float32) -> np.ndarray:
    """A 300W .pts file -> (N, 2) in 0-based pixel coordinates (0 = the first pixel's centre), as
    ``dtype``. The repository's one .pts reader (training, evaluation, benchmarks, tests); this
    module needs no torch."""
    lines = Path(path).read_text().split("\n")
    start = next(i for i, line in enumerate(lines) if line.strip() == "{") + 1
    end = next(i for i, line in enumerate(lines) if line.strip() == "}")
    pts = np.array([[float(v) for v in line.split()] for line in lines[start:end]], dtype=dtype)
    return pts - 1.0  # iBUG coordinates are 1-based


def read_pts_folder(root: str | Path) -> list[Sample]:
    """Every image under root with a .pts beside it (300W, ytf68 layouts)."""
    out = []
    for p in sorted(Path(root).rglob("*")):
        if p.suffix.lower() in IMAGE_EXTENSIONS and p.with_suffix(".pts").exists():
            out.append(Sample(str(p), read_pts(p.with_suffix(".pts"))))
    if not out:
        raise FileNotFoundError(f"no image + .pts pairs under {root}")
    return out


def read_image_folder(root: str | Path) -> list[Sample]:
    """Unlabeled images (for self-training)."""
    out = [Sample(str(p), None) for p in sorted(Path(root).rglob("*")) if p.suffix.lower() in IMAGE_EXTENSIONS]
    if not out:
        raise FileNotFoundError(f"no images under {root}")
    return out


def read_list_file(path: str | Path, image_root: str | Path, num_points: int, layout: str = "wflw") -> list[Sample]:
    """Landmark list files as published: layout 'wflw' = 2N coords, 4 box, 6 attributes, image
    path (WFLW's list_98pt_rect_attr_*.txt); layout 'name_first' = image path then 2N coords (the
    text form COFW-29 and AFLW-19 are usually converted to). Coordinates are 0-based pixels."""
    out = []
    for line in Path(path).read_text().splitlines():
        f = line.split()
        if not f:
            continue
        if layout == "wflw":
            coords, name = f[: 2 * num_points], f[-1]
        elif layout == "name_first":
            name, coords = f[0], f[1 : 1 + 2 * num_points]
        else:
            raise ValueError(f"unknown list layout {layout!r}")
        if len(coords) != 2 * num_points:
            raise ValueError(f"{path}: a line has {len(coords)} coordinates, expected {2 * num_points}")
        out.append(Sample(str(Path(image_root) / name), np.array(coords, np.float32).reshape(-1, 2)))
    return out


def read_labeled(entry: str | dict[str, Any], num_points: int) -> list[Sample]:
    """One entry of a config's "labeled" list: a folder of images with .pts files beside them
    (300W, ytf68), or a list file {"list": FILE, "images": ROOT, "layout": "wflw" | "name_first"}
    (read_list_file); paths as shared_path reads them."""
    if isinstance(entry, str):
        return read_pts_folder(shared_path(entry))
    return read_list_file(
        shared_path(entry["list"]), shared_path(entry["images"]), num_points, entry.get("layout", "wflw")
    )


def split_validation(samples: Sequence[Sample], fraction: float, seed: int = 0) -> tuple[list[Sample], list[Sample]]:
    """Deterministic split by a hash of the file name (stable when data is added)."""
    train, val = [], []
    for s in samples:
        h = int(hashlib.sha1(f"{seed}:{Path(s.image).name}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
        (val if h < fraction else train).append(s)
    return train, val


def landmark_box(points: np.ndarray) -> np.ndarray:
    return np.array([*points.min(0), *points.max(0)], np.float32)


class BoxStyle:
    """Maps a ground-truth landmark box to the detector's box style (a linear fit of detector box
    centre/size to landmark box centre/size, learned on faces the detector found)."""

    def __init__(self, coef: Sequence[float] = (0.0, 0.0, 1.0, 1.0)) -> None:
        self.coef = np.asarray(coef, np.float64)  # dx, dy (in units of landmark-box size), sw, sh

    @classmethod
    def fit(cls, lm_boxes: np.ndarray, det_boxes: np.ndarray) -> BoxStyle:
        lw, lh = lm_boxes[:, 2] - lm_boxes[:, 0], lm_boxes[:, 3] - lm_boxes[:, 1]
        lc = (lm_boxes[:, :2] + lm_boxes[:, 2:]) / 2
        dc = (det_boxes[:, :2] + det_boxes[:, 2:]) / 2
        dw, dh = det_boxes[:, 2] - det_boxes[:, 0], det_boxes[:, 3] - det_boxes[:, 1]
        return cls(
            [
                np.median((dc[:, 0] - lc[:, 0]) / lw),
                np.median((dc[:, 1] - lc[:, 1]) / lh),
                np.median(dw / lw),
                np.median(dh / lh),
            ]
        )

    def __call__(self, lm_box: np.ndarray) -> np.ndarray:
        dx, dy, sw, sh = self.coef
        w, h = lm_box[2] - lm_box[0], lm_box[3] - lm_box[1]
        cx, cy = (lm_box[0] + lm_box[2]) / 2 + dx * w, (lm_box[1] + lm_box[3]) / 2 + dy * h
        return np.array([cx - sw * w / 2, cy - sh * h / 2, cx + sw * w / 2, cy + sh * h / 2], np.float32)


def detector_boxes(
    samples: Sequence[Sample], detector_path: str | Path, min_iou: float = 0.3, progress: bool = True
) -> tuple[np.ndarray, np.ndarray, BoxStyle]:
    """For each labeled sample, the SDK detector's box best matching its landmarks. Faces the
    detector misses get a box from the fitted BoxStyle. Returns boxes (M, 4), found (M,) bool, style."""
    from pipnet_sdk.detect import YuNet

    det = YuNet(detector_path, score_threshold=0.3, upscale=True)
    boxes = np.zeros((len(samples), 4), np.float32)
    found = np.zeros(len(samples), bool)
    for i, s in enumerate(tqdm(samples, desc="detector boxes", disable=not progress)):
        img = cv2.imread(s.image)
        if img is None:
            raise ValueError(f"cannot read {s.image}")
        b, _ = det.detect(img)
        if len(b):
            ov = iou(b, landmark_box(s.points))
            if ov.max() >= min_iou:
                boxes[i], found[i] = b[ov.argmax()], True
    lm = np.array([landmark_box(s.points) for s in samples], np.float32).reshape(-1, 4)
    style = BoxStyle.fit(lm[found], boxes[found]) if found.sum() >= 10 else BoxStyle()
    for i in np.flatnonzero(~found):
        boxes[i] = style(lm[i])
    return boxes, found, style


def mean_face(points_norm: np.ndarray) -> np.ndarray:
    """Average normalised shape (M, N, 2) -> (N, 2)."""
    return points_norm.mean(axis=0).astype(np.float32)


def neighbor_indices(mean: np.ndarray, num_neighbors: int) -> np.ndarray:
    """For each mean-face point, its num_neighbors nearest other points (N, C)."""
    d = ((mean[:, None, :] - mean[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    return np.argsort(d, axis=1, kind="stable")[:, :num_neighbors].astype(np.int64)


def base_crops(
    samples: Sequence[Sample],
    boxes: np.ndarray,
    cfg: dict[str, Any],
    progress: bool = True,
    desc: str = "base crops",
) -> tuple[np.ndarray, np.ndarray]:
    """Cut each face's crop square (the config's crop rule on its box), widened by its
    "margin", at its "base_size" px. The crop square itself is the centred base_size/margin
    region. Returns images (M, base_size, base_size, 3) uint8 BGR and points (M, N, 2) in base
    pixels (NaN if unlabeled)."""
    base_size, margin = cfg["base_size"], cfg["margin"]
    squares = squares_from_boxes(boxes, cfg["crop"]["scale"], cfg["crop"]["shift_y"])
    n = next((len(s.points) for s in samples if s.points is not None), 0)
    images = np.zeros((len(samples), base_size, base_size, 3), np.uint8)
    points = np.full((len(samples), n, 2), np.nan, np.float32)
    for i, s in enumerate(tqdm(samples, desc=desc, disable=not progress)):
        img = cv2.imread(s.image)
        if img is None:
            raise ValueError(f"cannot read {s.image}")
        sq = squares[i].copy()
        sq[2] *= margin
        m = crop_matrix(sq, base_size)
        images[i] = crop_one(img, sq, base_size)
        if s.points is not None:
            points[i] = s.points @ m[:, :2].T + m[:, 2]
    return images, points


def cache_key(*parts: object) -> str:
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]
