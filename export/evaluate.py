"""Evaluate a PIPNet ONNX model through the SDK's runtime (what users get) on a 300W-style
folder (images with .pts beside them).

    python -m export.evaluate MODEL.onnx [--protocol gt|detector|both] [--data data/300w/test]
                              [--ced out.png] [--json out.json] [--limit N] [--threads T]

Protocols
---------
gt        Ground-truth box: each face's landmark box (min/max of its points) is mapped to the
          detector's box style with a :class:`export.data.BoxStyle` fitted on the 300W *training*
          faces' detector boxes (never the test set; cached under .cache/), then
          ``Landmarker.landmarks(img, boxes)``. Every face is evaluated (detection rate 1).
detector  ``Landmarker.detect`` on every image; a ground-truth face is found when a detection
          overlaps its landmark box with IoU > 0.5 (the best-overlapping detection is used).
          Detection rate, NME, FR and AUC are reported on the found faces.

Metrics
-------
NME       mean point-to-point error / distance between two normalising points; 300W's
          inter-ocular NME uses the outer eye corners, 0-based points 36 and 45.
FR@t      fraction of faces with NME > t (t = 0.1).
AUC@t     area under the cumulative error distribution (CED) curve F(x) = fraction of faces with
          NME <= x, for x in [0, t], divided by t (so 1 = every face perfect, 0 = every face
          at or above t). Computed exactly: F is a step function, and the integral of the step
          1[e <= x] over [0, t] is max(0, t - e), so AUC = mean(clip(1 - e / t, 0, 1)). The usual
          trapezoid over a 1e-4 grid agrees to within ~1e-4.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from pipnet_sdk.boxes import iou

from .data import BoxStyle, Sample, cache_dir, cache_key, landmark_box, read_pts_folder, shared_path

INTER_OCULAR = (36, 45)
DEFAULT_DETECTOR = "models/yunet_n_dynamic.onnx"
TRAIN_DIR = "data/300w/train"


# ----------------------------------------------------------------------------------- metrics


def point_errors(pred: np.ndarray, gt: np.ndarray, norm: tuple[int, int] | None = INTER_OCULAR) -> np.ndarray:
    """Per-point errors (F, N) for predictions and ground truth (F, N, 2): each point's distance
    from the truth divided by the distance between points norm[0] and norm[1] of the ground truth
    (or, if norm is None, by sqrt of the ground-truth landmark box area)."""
    pred = np.asarray(pred, np.float64)
    gt = np.asarray(gt, np.float64)
    if pred.ndim == 2:
        pred, gt = pred[None], gt[None]
    if pred.shape != gt.shape:
        raise ValueError(f"pred {pred.shape} and gt {gt.shape} differ")
    if norm is None:
        wh = gt.max(1) - gt.min(1)
        d = np.sqrt(wh[:, 0] * wh[:, 1])
    else:
        d = np.linalg.norm(gt[:, norm[0]] - gt[:, norm[1]], axis=-1)
    return np.linalg.norm(pred - gt, axis=-1) / d[:, None]


def nme_per_face(pred: np.ndarray, gt: np.ndarray, norm: tuple[int, int] | None = INTER_OCULAR) -> np.ndarray:
    """Per-face NME (F,): the mean of point_errors."""
    return point_errors(pred, gt, norm).mean(-1)


def failure_rate(nmes: Sequence[float], threshold: float = 0.1) -> float:
    """Fraction of faces with NME > threshold (NaN for an empty list)."""
    e = np.asarray(nmes, np.float64)
    return float((e > threshold).mean()) if e.size else float("nan")


def auc(nmes: Sequence[float], threshold: float = 0.1) -> float:
    """Area under the CED curve on [0, threshold], normalised to [0, 1]; exact integral of the
    step function: mean over faces of max(0, 1 - nme / threshold)."""
    e = np.asarray(nmes, np.float64)
    if not e.size:
        return float("nan")
    return float(np.clip(1.0 - e / threshold, 0.0, 1.0).mean())


def ced_curve(nmes: Sequence[float], threshold: float = 0.1, steps: int = 1001) -> tuple[np.ndarray, np.ndarray]:
    """x (steps,) from 0 to threshold and y = fraction of faces with NME <= x."""
    e = np.sort(np.asarray(nmes, np.float64))
    x = np.linspace(0.0, threshold, steps)
    y = np.searchsorted(e, x, side="right") / max(len(e), 1)
    return x, y


def summary(nmes: Sequence[float], total: int | None = None, threshold: float = 0.1) -> dict[str, Any]:
    """Faces, detection rate (found / total), mean NME, FR and AUC at threshold."""
    e = np.asarray(nmes, np.float64)
    total = len(e) if total is None else total
    return {
        "faces": int(total),
        "found": int(len(e)),
        "detection_rate": float(len(e) / total) if total else float("nan"),
        "nme": float(e.mean()) if e.size else float("nan"),
        "fr": failure_rate(e, threshold),
        "auc": auc(e, threshold),
    }


def plot_ced(
    curves: Mapping[str, Sequence[float]], path: str | os.PathLike, threshold: float = 0.1, title: str = "CED"
) -> Path:
    """Write a PNG with one CED curve per name (NME in % on x, fraction of faces on y)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=100)
    for name, e in curves.items():
        x, y = ced_curve(e, threshold)
        ax.plot(x * 100, y, label=f"{name}: NME {np.mean(e) * 100:.2f}%, AUC {auc(e, threshold):.3f} (n={len(e)})")
    ax.set_xlim(0, threshold * 100)
    ax.set_ylim(0, 1)
    ax.set_xlabel("NME (%, inter-ocular)")
    ax.set_ylabel("fraction of faces")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------------ data


def data_path(p: str | os.PathLike) -> Path:
    """A path that exists from here as given, else as a config's data path (data.shared_path)."""
    return Path(p) if Path(p).exists() else shared_path(p)


def detector_path(d: str | os.PathLike) -> Path:
    """A detector given by registry name (yunet-n) or by path (as data_path)."""
    from pipnet_sdk.hub import resolve
    from pipnet_sdk.registry import list_models

    return resolve(d, "detector") if str(d) in list_models("detector") else data_path(d)


def _file_id(path: Path) -> list:
    st = Path(path).stat()
    return [str(Path(path).resolve()), st.st_size, int(st.st_mtime)]


def train_box_style(
    detector: str | os.PathLike = DEFAULT_DETECTOR, train_dir: str | os.PathLike = TRAIN_DIR, progress: bool = True
) -> BoxStyle:
    """The landmark-box -> detector-box mapping fitted on the 300W training faces (the same
    fit training uses, export.data.detector_boxes); cached as JSON under .cache/."""
    det, train = detector_path(detector), data_path(train_dir)
    path = cache_dir() / f"boxstyle-{cache_key(_file_id(det), str(train.resolve()), 1)}.json"
    if path.exists():
        return BoxStyle(json.loads(path.read_text())["coef"])
    from .data import detector_boxes

    samples = read_pts_folder(train)
    _, found, style = detector_boxes(samples, det, progress=progress)
    path.write_text(
        json.dumps(
            {
                "coef": style.coef.tolist(),
                "detector": str(det),
                "train": str(train),
                "fitted_on": int(found.sum()),
                "faces": len(samples),
            }
        )
    )
    return style


def read_image(path: str) -> np.ndarray:
    img = cv2.imread(path)
    if img is None:
        raise ValueError(f"cannot read {path}")
    return img


def group_by_image(samples: Sequence[Sample]) -> dict[str, list[int]]:
    """Sample indices per image (a 300W image has one labeled face; other layouts may have more)."""
    groups: dict[str, list[int]] = {}
    for i, s in enumerate(samples):
        groups.setdefault(s.image, []).append(i)
    return groups


def match(det_boxes: np.ndarray, gt_box: np.ndarray, min_iou: float = 0.5) -> int:
    """Index of the detection best overlapping gt_box if its IoU > min_iou, else -1."""
    if not len(det_boxes):
        return -1
    ov = iou(np.asarray(det_boxes, np.float32).reshape(-1, 4), gt_box)
    k = int(ov.argmax())
    return k if ov[k] > min_iou else -1


# ------------------------------------------------------------------------------- protocols


def evaluate_gt(
    landmarker: Any,
    samples: Sequence[Sample],
    style: BoxStyle,
    norm: tuple[int, int] | None = INTER_OCULAR,
    progress: bool = True,
) -> dict[str, np.ndarray]:
    """Ground-truth box protocol. Returns nme (M,), found (M,) all True, pred (M, N, 2), boxes (M, 4)."""
    m, n = len(samples), len(samples[0].points) if samples else 0
    pred = np.zeros((m, n, 2), np.float32)
    boxes = np.stack([style(landmark_box(s.points)) for s in samples]) if m else np.zeros((0, 4), np.float32)
    for image, idx in tqdm(group_by_image(samples).items(), desc="gt boxes", disable=not progress):
        pred[idx] = landmarker.landmarks(read_image(image), boxes[idx])
    gt = np.stack([s.points for s in samples]) if m else np.zeros((0, n, 2), np.float32)
    return {
        "nme": nme_per_face(pred, gt, norm) if m else np.zeros(0),
        "found": np.ones(m, bool),
        "pred": pred,
        "boxes": boxes.astype(np.float32),
    }


def evaluate_detector(
    landmarker: Any,
    samples: Sequence[Sample],
    min_iou: float = 0.5,
    norm: tuple[int, int] | None = INTER_OCULAR,
    progress: bool = True,
) -> dict[str, np.ndarray]:
    """Detector protocol. Returns nme (M,) (NaN where not found), found (M,), pred (M, N, 2)
    (NaN where not found), boxes (M, 4) of the matched detections (NaN where not found)."""
    m, n = len(samples), len(samples[0].points) if samples else 0
    pred = np.full((m, n, 2), np.nan, np.float32)
    boxes = np.full((m, 4), np.nan, np.float32)
    found = np.zeros(m, bool)
    for image, idx in tqdm(group_by_image(samples).items(), desc="detector", disable=not progress):
        faces = landmarker.detect(read_image(image))
        det = np.array([f.box for f in faces], np.float32).reshape(-1, 4)
        for i in idx:
            k = match(det, landmark_box(samples[i].points), min_iou)
            if k >= 0:
                pred[i], boxes[i], found[i] = faces[k].landmarks, det[k], True
    nme = np.full(m, np.nan)
    if found.any():
        gt = np.stack([samples[i].points for i in np.flatnonzero(found)])
        nme[found] = nme_per_face(pred[found], gt, norm)
    return {"nme": nme, "found": found, "pred": pred, "boxes": boxes}


def evaluate(
    model: str | os.PathLike,
    data: str | os.PathLike = "data/300w/test",
    protocol: str = "both",
    detector: str | os.PathLike = DEFAULT_DETECTOR,
    threads: int | None = None,
    limit: int | None = None,
    style: BoxStyle | None = None,
    progress: bool = True,
) -> dict[str, dict[str, Any]]:
    """Run the protocol(s); returns {protocol: {"summary": {...}, "nme": (M,), "found": (M,),
    "pred": (M, N, 2), "boxes": (M, 4)}} plus "images": list of image paths."""
    from pipnet_sdk import Landmarker

    if protocol not in ("gt", "detector", "both"):
        raise ValueError(f"protocol must be gt, detector or both, got {protocol!r}")
    samples = read_pts_folder(data_path(data))
    if limit:
        samples = samples[:limit]
    lm = Landmarker(model=model, detector=detector_path(detector), threads=threads)
    if lm.num_landmarks != len(samples[0].points):
        raise ValueError(f"model has {lm.num_landmarks} landmarks, the data {len(samples[0].points)}")
    out: dict[str, Any] = {"images": [s.image for s in samples]}
    if protocol in ("gt", "both"):
        st = style or train_box_style(detector, progress=progress)
        r = evaluate_gt(lm, samples, st, progress=progress)
        out["gt"] = {"summary": summary(r["nme"]), "box_style": st.coef.tolist(), **r}
    if protocol in ("detector", "both"):
        r = evaluate_detector(lm, samples, progress=progress)
        out["detector"] = {"summary": summary(r["nme"][r["found"]], len(samples)), **r}
    return out


def format_summary(name: str, s: Mapping[str, Any]) -> str:
    return (
        f"{name:10s} faces {s['found']}/{s['faces']} ({s['detection_rate'] * 100:.1f}%)  "
        f"NME {s['nme'] * 100:.2f}%  FR@0.1 {s['fr'] * 100:.2f}%  AUC@0.1 {s['auc']:.4f}"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m export.evaluate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("model", help="PIPNet ONNX file")
    ap.add_argument("--protocol", choices=("gt", "detector", "both"), default="both")
    ap.add_argument(
        "--data", default="data/300w/test", help="folder of images + .pts (relative paths: under the shared folder)"
    )
    ap.add_argument(
        "--detector",
        default=DEFAULT_DETECTOR,
        help=f"YuNet detector: registry name (yunet-n) or .onnx path (default {DEFAULT_DETECTOR} in the shared data)",
    )
    ap.add_argument("--threads", type=int)
    ap.add_argument("--limit", type=int, help="first N faces only")
    ap.add_argument("--ced", help="write a CED plot (PNG) here")
    ap.add_argument("--json", help="write the summaries and per-face NMEs here")
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args(argv)
    r = evaluate(a.model, a.data, a.protocol, a.detector, a.threads, a.limit, progress=not a.quiet)
    protos = [p for p in ("gt", "detector") if p in r]
    for p in protos:
        print(format_summary(p, r[p]["summary"]))
    if a.ced:
        plot_ced({p: r[p]["nme"][r[p]["found"]] for p in protos}, a.ced, title=f"CED: {Path(a.model).name}")
        print(f"CED plot: {a.ced}")
    if a.json:
        doc = {"model": str(a.model), "data": str(data_path(a.data)), "images": r["images"]}
        for p in protos:
            doc[p] = {
                "summary": r[p]["summary"],
                "nme": [None if not np.isfinite(v) else round(float(v), 6) for v in r[p]["nme"]],
            }
            if "box_style" in r[p]:
                doc[p]["box_style"] = r[p]["box_style"]
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(doc, indent=1))
        print(f"JSON: {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())


def auroc(positive: np.ndarray, negative: np.ndarray) -> float:
    """Probability that a random positive ranks above a random negative (ties count half)."""
    values = np.concatenate([positive, negative])
    order = values.argsort(kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(1, len(values) + 1)
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, ranks)  # tied values share their mean rank
    ranks = (sums / counts)[inverse]
    n_pos, n_neg = len(positive), len(negative)
    return float((ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
