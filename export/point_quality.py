"""Calibrate each point's quality on a model file that has a visibility output, without changing
its graph:

    python -m export.point_quality pipnet_sdk/models/pipnet-fast.onnx --config export/configs/pipnet-fast.json \
        --version 0.6.2 --out runs/pq/pipnet-fast.onnx

``Face.point_quality`` is the probability that a point lies within ``BAD_ERROR`` of the
inter-ocular distance from the truth. The SDK computes it from what every file already gives
(pipnet_sdk.landmark_model.point_features): how far the candidates cast for the point (its own
prediction and its neighbours' votes) lie from it, its visibility and score, and its face's means
of the three. This command fits that logistic model, one intercept per landmark and one weight per
feature, on the file's own predictions (int8 as shipped) for training crops under the occluders
the visibility was fitted under and under the harder corruptions the face quality is calibrated
on, and writes it to the file's metadata as ``point_quality``. It reports the AUROC for points off
by more than ``BAD_ERROR`` on the validation faces, beside that of the visibility alone. Run it
again after ``export.visibility`` (which drops the calibration, since the visibility it reads
changes).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from .evaluate import auroc
from .onnx_meta import file_metadata, save_with_metadata
from .schemes import get_scheme
from .visibility import HARD, framing_config, occluded_crops

#: a point is bad when it is further than this (a fraction of the inter-ocular distance) from the truth
BAD_ERROR = 0.10
#: the features fitted, in this order (pipnet_sdk.landmark_model.POINT_FEATURES)
FEATURES = ("log_spread", "visibility", "score", "face_log_spread", "face_visibility", "face_score")


def point_errors(points: np.ndarray, truth: np.ndarray, norm: tuple[int, int]) -> np.ndarray:
    """(F, N) each point's distance from the truth over the true distance between points
    ``norm`` (the scheme's inter-ocular pair)."""
    iod = np.linalg.norm(truth[:, norm[0]] - truth[:, norm[1]], axis=-1)
    return np.linalg.norm(points - truth, axis=-1) / iod[:, None]


def feature_array(features: dict[str, np.ndarray]) -> np.ndarray:
    """The FEATURES of point_features, stacked (F, N, len(FEATURES))."""
    shape = features["score"].shape
    return np.stack([np.broadcast_to(features[k], shape).astype(np.float64) for k in FEATURES], -1)


def fit(x: np.ndarray, good: np.ndarray, l2: float = 1e-4) -> tuple[np.ndarray, np.ndarray]:
    """Logistic regression of good (F, N) on x (F, N, D): one weight per feature (D,) shared by
    all points and one intercept per landmark (N,)."""
    xt = torch.from_numpy(x.astype(np.float32))
    y = torch.from_numpy(good.astype(np.float32))
    w = torch.zeros(x.shape[-1], requires_grad=True)
    b = torch.zeros(x.shape[1], requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=0.5, max_iter=500, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(xt @ w + b, y) + l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach().numpy().astype(np.float64), b.detach().numpy().astype(np.float64)


def predictions(path: str | Path, crops: np.ndarray, threads: int | None = None) -> Any:
    """The file's Marks for crops (M, S, S, 3) uint8 BGR, through the SDK (pipnet_sdk.LandmarkModel)."""
    from pipnet_sdk.landmark_model import LandmarkModel

    return LandmarkModel(path, threads=threads).run_crops(crops, batch_size=64)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m export.point_quality", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("model", help="a model file with a visibility output (export.visibility)")
    ap.add_argument("--config", required=True, help="the model's training config (data, split, augmentation)")
    ap.add_argument("--out", required=True, help="the new model file")
    ap.add_argument("--version", required=True, help="the new file's version")
    ap.add_argument("--rounds", type=int, default=2, help="copies of each training face per kind of corruption")
    ap.add_argument("--limit", type=int, help="at most this many faces per folder (smoke runs)")
    ap.add_argument("--threads", type=int, help="onnxruntime threads")
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args(argv)
    from pipnet_sdk.landmark_model import point_features

    from .train import prepare

    model = onnx.load(str(a.model))
    if not any(o.name == "visibility" for o in model.graph.output):
        raise SystemExit(f"{a.model} has no visibility output: fit one first (python -m export.visibility)")
    cfg = framing_config(a.model, a.config)
    if a.limit:
        cfg["limit"] = a.limit
    d = prepare(cfg, progress=not a.quiet)
    norm = get_scheme(cfg["scheme"]).norm
    if norm is None:
        raise SystemExit(f"{cfg['scheme']} has no inter-ocular pair: point quality needs one")
    sets: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for part, origin, seed in (("train", "train", 10), ("val", "val", 11)):
        xs, goods = [], []
        for k, more in enumerate((None, HARD)):  # under the occluders, then the harder corruptions
            images, points = d[f"{origin}_images"], d[f"{origin}_points"]
            crops, truth, _ = occluded_crops(images, points, cfg, a.rounds, seed + 2 * k, more)
            marks = predictions(a.model, crops, a.threads)
            xs.append(feature_array(point_features(marks.scores, marks.visibility, marks.spread)))
            goods.append(point_errors(marks.points, truth, norm) <= BAD_ERROR)
        sets[part] = (np.concatenate(xs), np.concatenate(goods))
    w, b = fit(*sets["train"])
    x, good = sets["val"]
    p = 1 / (1 + np.exp(-(x @ w + b)))
    vis = x[..., FEATURES.index("visibility")]
    report = {
        "validation_auroc": round(auroc(p[good], p[~good]), 4),
        "validation_auroc_visibility": round(auroc(vis[good], vis[~good]), 4),
        "validation_bad_share": round(float((~good).mean()), 4),
    }
    meta = {
        **file_metadata(model),
        "version": a.version,
        "point_quality": {
            "bad_error": BAD_ERROR,
            "features": list(FEATURES),
            "coef": [round(float(v), 5) for v in w],
            "intercepts": [round(float(v), 5) for v in b],
            "fitted_on": f"{len(sets['train'][0])} training crops",
            **report,
        },
    }
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_with_metadata(model, out, meta)
    print(json.dumps({"out": str(out), **report}))


if __name__ == "__main__":
    main()
