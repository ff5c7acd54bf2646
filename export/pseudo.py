"""Unlabeled faces and their pseudo-labels: the detector's box and base crop of each unlabeled
image (the shared LFW faces, cleaned of their drawn marks first: export/marks.py), labels from a
trained checkpoint (STC, export/stc.py) or from an exported model through the SDK (a config's
"pseudo_labels", used by export/train.py), or from dlib's 68-point predictor ("teacher": "dlib").
Everything is cached under cache_dir()."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from .augment import AugmentConfig, augment
from .data import Sample, base_crops, cache_dir, cache_key, read_image_folder, shared_path
from .decode import decode
from .marks import cleaned_copy
from .model import autocast, normalize
from .pack import load_cache
from .schemes import get_scheme

DEFAULT_UNLABELED = "data/unlabeled/lfw"
REPO = Path(__file__).resolve().parents[1]


def unlabeled_boxes(cfg: dict[str, Any], folder: str, progress: bool = True) -> tuple[list[Sample], np.ndarray]:
    """The SDK detector's most central confident face in each unlabeled image (cached, so that
    crops of any size cut the same faces): the images with a face and those boxes (M, 4)."""
    import cv2

    from pipnet_sdk.detect import YuNet

    samples = read_image_folder(shared_path(folder))
    if cfg["limit"]:
        samples = samples[: cfg["limit"]]
    if cfg["clean_unlabeled"]:
        out = cache_dir() / f"clean-{cache_key(folder, len(samples), 1)}"
        samples = [Sample(p, None) for p in cleaned_copy([s.image for s in samples], out, progress)]
    key = cache_key(folder, cfg["detector"], cfg["limit"], cfg["clean_unlabeled"], 1)
    path = cache_dir() / f"boxes-unlabeled-{key}.npz"
    if path.exists():
        d = np.load(path)
        return [samples[i] for i in d["keep"]], d["boxes"]
    det = YuNet(shared_path(cfg["detector"]), score_threshold=0.5, upscale=True)
    keep, boxes = [], []
    for i, s in enumerate(tqdm(samples, desc="detector boxes (unlabeled)", disable=not progress)):
        img = cv2.imread(s.image)
        b, _ = det.detect(img) if img is not None else (np.zeros((0, 4)), np.zeros(0))
        if len(b):  # the most central confident face (LFW images are centred on one person)
            c = (b[:, :2] + b[:, 2:]) / 2 - np.array(img.shape[1::-1]) / 2
            keep.append(i)
            boxes.append(b[np.argmin((c**2).sum(1))])
    box_array = np.array(boxes, np.float32).reshape(-1, 4)
    np.savez(path, keep=np.array(keep, np.int64), boxes=box_array)
    return [samples[i] for i in keep], box_array


def unlabeled_crops(cfg: dict[str, Any], folder: str, progress: bool = True) -> np.ndarray:
    """Base crops of the unlabeled faces (cached), around unlabeled_boxes()."""
    key = cache_key(
        folder, cfg["detector"], cfg["crop"], cfg["base_size"], cfg["margin"], cfg["limit"], cfg["clean_unlabeled"], 1
    )
    path = cache_dir() / f"unlabeled-{key}.npz"
    cached = load_cache(path)
    if cached is not None:
        return cached["images"]
    samples, boxes = unlabeled_boxes(cfg, folder, progress)
    images, _ = base_crops(samples, boxes, cfg, progress, "base crops (unlabeled)")
    np.savez(path, images=images)
    return images


@torch.no_grad()
def pseudo_label(
    model: torch.nn.Module,
    cfg: dict[str, Any],
    images: np.ndarray,
    neighbors: np.ndarray,
    device: torch.device,
    batch: int = 128,
) -> np.ndarray:
    """Teacher predictions on un-jittered crops (cfg: the teacher's), normalised to the crop
    square (M, N, 2)."""
    model.eval().to(device)
    n = get_scheme(cfg["scheme"]).num_points
    flip = torch.tensor(get_scheme(cfg["scheme"]).flip, device=device)
    nb = torch.from_numpy(np.asarray(neighbors)).to(device)
    out = []
    for i in range(0, len(images), batch):
        im = torch.from_numpy(images[i : i + batch]).permute(0, 3, 1, 2).to(device)
        dummy = torch.zeros(len(im), n, 2, device=device)
        x, _ = augment(im, dummy, cfg["input_size"], cfg["margin"], flip, AugmentConfig(), train=False)
        with autocast(device, cfg["bf16"]):
            heads = model(normalize(x).contiguous(memory_format=torch.channels_last))
        out.append(decode(heads, nb).float().cpu().numpy())
    return np.concatenate(out).astype(np.float32)


def to_base_pixels(points_norm: np.ndarray, cfg: dict[str, Any]) -> np.ndarray:
    """Points normalised to the crop square -> pixels of cfg's base crops."""
    r, m = cfg["base_size"], cfg["margin"]
    return ((points_norm - 0.5) * (r / m) + (r - 1) / 2).astype(np.float32)


def pseudo_label_settings(cfg: dict[str, Any]) -> dict[str, Any] | None:
    """cfg["pseudo_labels"] with its defaults filled in; None when the config has none."""
    if not cfg["pseudo_labels"]:
        return None
    return {"flip_test": False, "test_crops": 1, "unlabeled": DEFAULT_UNLABELED, **cfg["pseudo_labels"]}


def onnx_teacher_path(cfg: dict[str, Any]) -> Path:
    """The exported model of cfg["pseudo_labels"] (a relative path is the repository's), or
    dlib's predictor file when the teacher is "dlib"."""
    if pseudo_label_settings(cfg)["teacher"] == DLIB_TEACHER:
        return dlib_predictor_file()
    teacher = REPO / pseudo_label_settings(cfg)["teacher"]  # an absolute path stays as it is
    if not teacher.is_file():
        raise FileNotFoundError(
            f"pseudo_labels teacher {teacher} not found: export it first, e.g. "
            f"python -m export.to_onnx runs/r18/restart2/best.pt --out {teacher} --int8-only"
        )
    return teacher


def onnx_pseudo_labels_path(cfg: dict[str, Any]) -> Path:
    """Where onnx_pseudo_labels() keeps its crops and labels (the key holds the teacher's sha256)."""
    from pipnet_sdk.hub import sha256_file

    key = cache_key(
        pseudo_label_settings(cfg),
        sha256_file(onnx_teacher_path(cfg)),
        cfg["detector"],
        cfg["crop"],
        cfg["base_size"],
        cfg["margin"],
        cfg["limit"],
        cfg["clean_unlabeled"],
        1,
    )
    return cache_dir() / f"pseudo-{key}.npz"


DLIB_TEACHER = "dlib"  # cfg["pseudo_labels"]["teacher"]: dlib's 68-point shape predictor


def dlib_predictor_file() -> Path:
    """dlib's 68-point predictor as the face_recognition_models package installs it."""
    import importlib.util

    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the dlib teacher needs dlib and its 68-point predictor: pip install dlib-bin face_recognition_models"
        )
    # importing face_recognition_models needs pkg_resources: find the file without importing it
    return Path(spec.submodule_search_locations[0]) / "models" / "shape_predictor_68_face_landmarks.dat"


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of one box a (4,) with each of boxes b (K, 4), all x1, y1, x2, y2."""
    lo, hi = np.maximum(a[:2], b[:, :2]), np.minimum(a[2:], b[:, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=1)
    area = lambda x: np.prod(x[..., 2:] - x[..., :2], axis=-1)  # noqa: E731
    return inter / (area(a) + area(b) - inter + 1e-9)


def dlib_labels(samples: list[Sample], boxes: np.ndarray, progress: bool = True) -> tuple[list[Sample], np.ndarray]:
    """dlib's landmarks for each face whose detector box dlib's HOG detector also finds (IoU
    at least 0.3; dlib's predictor is fitted to its own detector's boxes): those samples with
    their points (pixels, 0-based) and the kept indices."""
    import cv2
    import dlib

    hog, predictor = dlib.get_frontal_face_detector(), dlib.shape_predictor(str(dlib_predictor_file()))
    labeled, keep = [], []
    for i, (s, box) in enumerate(zip(tqdm(samples, desc="dlib labels", disable=not progress), boxes)):
        bgr = cv2.imread(s.image)
        if bgr is None:
            continue
        rgb = np.ascontiguousarray(bgr[:, :, ::-1])
        rects = list(hog(rgb, 1))
        if not rects:
            continue
        found = np.array([[r.left(), r.top(), r.right(), r.bottom()] for r in rects], np.float32)
        iou = box_iou(np.asarray(box, np.float32), found)
        if iou.max() < 0.3:
            continue
        shape = predictor(rgb, rects[int(iou.argmax())])
        points = np.array([[p.x, p.y] for p in shape.parts()], np.float32)
        labeled.append(Sample(s.image, points))
        keep.append(i)
    return labeled, np.array(keep, np.int64)


def onnx_pseudo_labels(cfg: dict[str, Any], progress: bool = True) -> dict[str, np.ndarray]:
    """cfg["pseudo_labels"] = {"teacher": an exported model (.onnx), "flip_test", "test_crops",
    "unlabeled"}: the teacher labels the unlabeled faces through the SDK, with its test-time
    averaging, on its own crops of the detector's boxes; returns the student's base crops of those
    faces and the labels in their pixels (cached), for train(pseudo=...)."""
    from pipnet_sdk import Landmarker

    path = onnx_pseudo_labels_path(cfg)
    cached = load_cache(path)
    if cached is not None:
        return {"images": cached["images"], "points": cached["points"]}
    pl = pseudo_label_settings(cfg)
    samples, boxes = unlabeled_boxes(cfg, pl["unlabeled"], progress)
    if pl["teacher"] == DLIB_TEACHER:
        labeled, keep = dlib_labels(samples, boxes, progress)
        images, points = base_crops(labeled, boxes[keep], cfg, progress, "base crops (dlib-labeled)")
        np.savez(path, images=images, points=points)
        return {"images": images, "points": points}
    teacher = Landmarker(onnx_teacher_path(cfg), flip_test=pl["flip_test"], test_crops=pl["test_crops"])
    squares = teacher.squares(boxes)
    labeled = []
    for s, sq in zip(tqdm(samples, desc="pseudo-labels", disable=not progress), squares):
        points = teacher.landmarks_in_squares(s.image, sq[None]).points
        labeled.append(Sample(s.image, points[0]))
    images, points = base_crops(labeled, boxes, cfg, progress, "base crops (pseudo-labeled)")
    np.savez(path, images=images, points=points)
    return {"images": images, "points": points}
