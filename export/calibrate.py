"""Calibrate a model file's face quality and each point's quality on its own predictions,
without changing its graph:

    python -m export.calibrate pipnet_sdk/models/pipnet-fast.onnx --config export/configs/pipnet-fast.json \
        --version 0.6.3 --out runs/cal/pipnet-fast.onnx

Both read what every file with a visibility output gives (pipnet_sdk.landmark_model.point_features):
each point's vote spread (how far the candidates cast for it, its own prediction and its
neighbours' votes, lie from it), visibility and score, and its face's means of the three.

* ``Face.point_quality``, the probability that a point lies within ``BAD_ERROR`` of the
  inter-ocular distance from the truth: a logistic model with one intercept per landmark and one
  weight per feature, fitted on the file's predictions (int8 as shipped) for training crops under
  the occluders the visibility was fitted under and under harder corruptions (turns to 90°, blur,
  low light, occluders).
* ``Face.quality``, the probability that the face's NME is at most 8 %: a logistic model of its
  mean score, mean visibility and mean log vote spread, fitted on the validation faces under the
  same two kinds of corruption (the crops export.visibility fits its two-feature form on).

It writes both to the file's metadata (``point_quality``, ``quality``) and reports, on the
validation faces, the bad-point AUROC beside that of the visibility alone, and the quality's AUROC
beside that of the calibration the file carried. Run it after ``export.visibility``, which drops
the point quality and fits the face quality without the spread.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import onnx

from .evaluate import auroc, point_errors
from .onnx_meta import file_metadata, save_with_metadata
from .schemes import get_scheme
from .visibility import GOOD_NME, HARD, fit_logistic, fit_quality, framing_config, occluded_crops

#: a point is bad when it is further than this (a fraction of the inter-ocular distance) from the truth
BAD_ERROR = 0.10
#: the features fitted, in this order (pipnet_sdk.landmark_model.POINT_FEATURES)
FEATURES = ("log_spread", "visibility", "score", "face_log_spread", "face_visibility", "face_score")


def feature_array(features: dict[str, np.ndarray]) -> np.ndarray:
    """The FEATURES of point_features, stacked (F, N, len(FEATURES))."""
    shape = features["score"].shape
    return np.stack([np.broadcast_to(features[k], shape).astype(np.float64) for k in FEATURES], -1)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m export.calibrate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
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
    from pipnet_sdk.landmark_model import QUALITY_FEATURES, LandmarkModel, Marks, point_features

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
    landmarks = LandmarkModel(a.model, threads=a.threads)
    runs = {}  # (part, kind): Marks and true points
    for part, origin, kind, rounds, seed in (
        ("train", "train", None, a.rounds, 10),  # the point quality's fit
        ("train", "train", HARD, a.rounds, 12),
        ("val", "val", None, 4, 1),  # the face quality's fit, and both reports
        ("val", "val", HARD, 8, 2),
    ):
        images, points = d[f"{origin}_images"], d[f"{origin}_points"]
        crops, truth, _ = occluded_crops(images, points, cfg, rounds, seed, kind)
        runs[part, kind is not None] = (landmarks.run_crops(crops, batch_size=64), truth)

    def joined(part: str) -> tuple[Marks, np.ndarray]:
        (m0, t0), (m1, t1) = runs[part, False], runs[part, True]
        both = Marks(*(np.concatenate([x, y]) for x, y in zip(m0, m1)))  # type: ignore[arg-type]
        return both, np.concatenate([t0, t1])

    (train, train_truth), (val, val_truth) = joined("train"), joined("val")
    x = feature_array(point_features(train.scores, train.visibility, train.spread))
    w, b = fit_logistic(x, point_errors(train.points, train_truth, norm) <= BAD_ERROR, (x.shape[1],), 1e-4)
    faces = point_features(val.scores, val.visibility, val.spread)
    errors = point_errors(val.points, val_truth, norm)
    x, good = feature_array(faces), errors <= BAD_ERROR
    p = 1 / (1 + np.exp(-(x @ w + b)))
    face_good = errors.mean(1) <= GOOD_NME
    quality = fit_quality({k: faces[v][:, 0] for k, v in QUALITY_FEATURES.items()}, face_good)
    with_quality = {**file_metadata(model), "quality": quality}
    report = {
        "validation_auroc": round(auroc(p[good], p[~good]), 4),
        "validation_auroc_visibility": round(auroc(val.visibility[good], val.visibility[~good]), 4),
        "validation_bad_share": round(float((~good).mean()), 4),
    }
    quality_auroc = {}
    for name, meta in (("before", file_metadata(model)), ("after", with_quality)):
        if meta.get("quality"):
            q = LandmarkModel.quality_of(meta["quality"], faces)
            quality_auroc[name] = round(auroc(q[face_good], q[~face_good]), 4)
    quality["validation_auroc"] = quality_auroc["after"]
    meta = {
        **with_quality,
        "version": a.version,
        "point_quality": {
            "bad_error": BAD_ERROR,
            "features": list(FEATURES),
            "coef": [round(float(v), 5) for v in w],
            "intercepts": [round(float(v), 5) for v in b],
            "fitted_on": f"{len(train.points)} training crops",
            **report,
        },
    }
    report = {**report, "quality_auroc": quality_auroc, "failures": int((~face_good).sum())}
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_with_metadata(model, out, meta)
    print(json.dumps({"out": str(out), **report}))


if __name__ == "__main__":
    main()
