"""Teach a trained model file which of its points are hidden, without changing its landmarks.

    python -m export.visibility pipnet_sdk/models/pipnet-fast.onnx --config export/configs/pipnet-fast.json \
        --version 0.6.1 --out runs/vis/pipnet-fast.onnx [--head branch|rows]

The file grows a third output ``visibility`` (B, N); the graph that makes the landmarks is left
exactly as it is, so the file's landmarks and scores do not change by a bit. Two forms:

* ``branch`` (the default): a small network of its own on two of the trunk's maps and the
  landmark cells (export/visibility_branch.py);
* ``rows``: one more row per landmark in the decoding's per-landmark product (export/deploy.py),
  a logistic regression on the feature vector read at its argmax cell and the landmark's score.

Either is fitted on what the file itself computes (int8 as shipped) on training crops under
synthetic occluders: flat (a fifth of them near white, a quarter of the rest near black) and
textured (another face's pixels), rectangles, ellipses and bars at any angle; black cuts from a side of the crop (an
image's edge, padded black by the SDK); and points pushed out of the crop by the geometric jitter.
A point is labeled hidden when it lies under the occluder or outside the crop
(export.augment.visible_points).
The fit is chosen on the validation faces under occluders drawn with another seed, and its bias
shifted so that 0.5 is the threshold that gave the best F1 for hidden points there (so
``Face.occluded``, visibility < 0.5, is that choice). A visibility output fitted here before is replaced.

A file whose network learned visibility itself (a ``"visibility_weight"`` in its training config)
already has the output: then nothing is fitted or grafted; the logit before its sigmoid is shifted
in the same way (0.5 becomes the validation's best-F1 threshold), and the quality calibration
(below) is written. A point-quality calibration the file carried is dropped, since it read the
old visibility: fit it again with ``python -m export.calibrate`` (which also refits the face
quality with one more feature, the vote spread).
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper

from .augment import AugmentConfig, augment_with_visibility
from .config import load_config
from .evaluate import auroc
from .onnx_meta import file_metadata, save_with_metadata
from .schemes import get_scheme
from .visibility_branch import (
    SOURCES,
    branch_probability,
    branch_sources,
    fit_branch,
    graft_branch,
    with_sources,
    without_visibility,
)

#: the occluders the head is fitted under
OCCLUDERS = {
    "p_occlude": 0.7,
    "occlude_max": 0.5,
    "p_occlude_texture": 0.5,
    "p_occlude_ellipse": 0.5,
    "p_occlude_dark": 0.25,
    "p_occlude_light": 0.2,
    "p_occlude_bar": 0.3,
    "p_occlude_edge": 0.15,
}
#: what makes the faces the quality is calibrated on fail now and then: turned beyond training's
#: range, blurred, dark, occluded
HARD = {
    "rotate_deg": 90.0,
    "p_rotate": 0.5,
    "p_blur": 0.4,
    "p_motion_blur": 0.3,
    "motion_max": 0.2,
    "p_low_light": 0.3,
    **OCCLUDERS,
}
#: a face is good when its NME (inter-ocular) is at most this: Face.quality estimates P(good)
GOOD_NME = 0.08


def feature_tensor(model: onnx.ModelProto) -> str:
    """Name of the per-landmark feature tensor (B, N, 1, D) that the decoding MatMul reads."""
    for node in model.graph.node:
        if node.op_type == "MatMul" and node.input[1] == "weight":
            return node.input[0]
    raise ValueError("not a format-3 graph: no MatMul on the per-landmark head rows ('weight')")


def with_score(features: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Features (M, N, D) with each landmark's score as one more value (M, N, D + 1)."""
    return np.concatenate([features, scores[..., None].astype(features.dtype)], -1)


def best_f1_threshold(p: np.ndarray, hidden: np.ndarray) -> tuple[float, float]:
    """The visibility threshold t (hidden when p < t) with the best F1 for hidden points, and that F1."""
    best = (0.5, -1.0)
    for t in np.linspace(0.05, 0.95, 91):
        pred = p < t
        f1 = 2 * float((pred & hidden).sum()) / max(1.0, float(pred.sum() + hidden.sum()))
        if f1 > best[1]:
            best = (float(t), f1)
    return best


def with_features(path: str | Path) -> bytes:
    """The model file's bytes with its per-landmark features as an extra output ``features``."""
    m = onnx.load(str(path))
    name = feature_tensor(m)
    m.graph.node.append(helper.make_node("Identity", [name], ["features"], name="features_out"))
    m.graph.output.append(helper.make_tensor_value_info("features", onnx.TensorProto.FLOAT, None))
    return m.SerializeToString()


def occluded_crops(
    images: np.ndarray,
    points: np.ndarray,
    cfg: dict[str, Any],
    rounds: int,
    seed: int,
    extra: dict[str, Any] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``rounds`` augmented, occluded copies of each base crop (the config's augmentation, the
    OCCLUDERS, then ``extra``): uint8 BGR crops (M, S, S, 3), normalised points (M, N, 2) and
    visibility labels (M, N)."""
    aug = AugmentConfig(**{**cfg["augment"], **OCCLUDERS, **(extra or {})})
    flip = torch.tensor(get_scheme(cfg["scheme"]).flip)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    crops, pts, vis = [], [], []
    im_all, pt_all = torch.from_numpy(images).permute(0, 3, 1, 2), torch.from_numpy(points)
    for _ in range(rounds):
        for i in range(0, len(images), 256):
            x, p, v = augment_with_visibility(
                im_all[i : i + 256], pt_all[i : i + 256], cfg["input_size"], cfg["margin"], flip, aug, gen, train=True
            )
            crops.append((x.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8))
            pts.append(p.numpy())
            vis.append(v.numpy())
    return np.concatenate(crops), np.concatenate(pts), np.concatenate(vis)


def run_with_features(
    path: str | Path,
    crops: np.ndarray,
    threads: int | None = None,
    progress: bool = True,
    graph: bytes | None = None,
    extra: tuple[str, ...] = ("features",),
) -> dict[str, np.ndarray]:
    """The file's points (M, N, 2), scores (M, N) and the extra outputs of ``graph`` (by default
    the file with its per-landmark features (M, N, D) as one, with_features), float ones as
    float16; and its own visibility (M, N) when it has that output. The file's own input
    normalisation and decoding (LandmarkModel)."""
    from tqdm import tqdm

    from pipnet_sdk.landmark_model import LandmarkModel
    from pipnet_sdk.runtime import make_session

    model = LandmarkModel(path, threads=threads)
    session = make_session(path, threads=threads, data=with_features(path) if graph is None else graph)
    names = ["candidates", "scores", *extra] + (["visibility"] if model.has_visibility else [])
    # filled in place, batch by batch: the maps of tens of thousands of crops take gigabytes, and
    # a list of batches joined at the end would need them twice
    out: dict[str, np.ndarray] = {}
    for i in tqdm(range(0, len(crops), 64), desc="features", disable=not progress):
        x = model.preprocess(crops[i : i + 64])
        outputs = dict(zip(names, session.run(names, {model.input_name: x})))
        got = {"points": model.decode([outputs["candidates"], outputs["scores"]])[0]}
        for k in ["scores", *extra, "visibility"]:
            if k in outputs:
                v = outputs[k]
                got[k] = v.astype(np.float16) if k in extra and v.dtype == np.float32 else v
        for k, v in got.items():
            if k not in out:
                out[k] = np.empty((len(crops), *v.shape[1:]), v.dtype)
            out[k][i : i + len(v)] = v
    if graph is None:
        out["features"] = out["features"][:, :, 0]
    return out


def fit_rows(
    features: np.ndarray,
    labels: np.ndarray,
    val_features: np.ndarray,
    val_labels: np.ndarray,
    epochs: int = 40,
    lr: float = 0.01,
    weight_decay: float = 1e-3,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray, list[dict[str, float]]]:
    """Per-landmark logistic regression: weights (N, D) and biases (N,) from features (M, N, D)
    and labels (M, N) (1 = visible), the epoch with the lowest validation loss kept. Returns them
    and the per-epoch log."""
    f = torch.from_numpy(features)
    y = torch.from_numpy(labels.astype(np.float32))
    vf, vy = torch.from_numpy(val_features).float(), torch.from_numpy(val_labels.astype(np.float32))
    mu = f[:4096].float().mean((0,))  # (N, D): centred features train faster
    n, d = f.shape[1:]
    w = torch.zeros(n, d, requires_grad=True)
    b = torch.zeros(n, requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=lr)
    gen = torch.Generator().manual_seed(0)
    best: tuple[float, np.ndarray, np.ndarray] = (math.inf, np.zeros((n, d), np.float32), np.zeros(n, np.float32))
    log = []
    for epoch in range(epochs):
        for idx in torch.randperm(len(f), generator=gen).split(512):
            logits = ((f[idx].float() - mu) * w).sum(-1) + b
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y[idx])
            loss = loss + weight_decay * (w**2).sum() / n
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            v_logits = ((vf - mu) * w).sum(-1) + b
            v_loss = float(torch.nn.functional.binary_cross_entropy_with_logits(v_logits, vy))
            p = torch.sigmoid(v_logits).numpy()
        hidden = val_labels < 0.5
        record = {
            "epoch": epoch + 1,
            "val_bce": round(v_loss, 4),
            "val_auroc_hidden": round(auroc(1 - p[hidden], 1 - p[~hidden]), 4),
        }
        log.append(record)
        if progress:
            print(json.dumps(record), flush=True)
        if v_loss < best[0]:
            # fold the centring into the bias: w . (f - mu) + b = w . f + (b - w . mu)
            best = (v_loss, w.detach().numpy().copy(), (b - (w * mu).sum(-1)).detach().numpy().copy())
    return best[1], best[2], log


def fit_logistic(
    x: np.ndarray, y: np.ndarray, intercepts: tuple[int, ...] = (1,), l2: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Logistic regression of y (bool, shape S) on x (S + (D,)): one weight per feature (D,) and
    intercepts of the given shape, broadcast against S (one per landmark: ``(N,)``)."""
    xt = torch.from_numpy(x.astype(np.float32))
    yt = torch.from_numpy(y.astype(np.float32))
    w = torch.zeros(x.shape[-1], requires_grad=True)
    b = torch.zeros(intercepts, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=0.5, max_iter=500, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(xt @ w + b, yt) + l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach().numpy().astype(np.float64), b.detach().numpy().astype(np.float64)


def fit_quality(features: dict[str, np.ndarray], good: np.ndarray) -> dict[str, Any]:
    """Face quality as a logistic regression of P(good) on per-face features (each (M,), named as
    pipnet_sdk.landmark_model.QUALITY_FEATURES names them; good (M,) bool): the metadata entry
    the SDK reads (LandmarkModel.quality)."""
    w, b = fit_logistic(np.stack(list(features.values()), 1), good)
    return {
        "good_nme": GOOD_NME,
        "features": list(features),
        "coef": [round(float(v), 5) for v in w],
        "intercept": round(float(b[0]), 5),
    }


def graft_rows(model: onnx.ModelProto, weights: np.ndarray, biases: np.ndarray) -> onnx.ModelProto:
    """The model with a ``visibility`` output: sigmoid(features . weights + biases) per landmark,
    computed on the feature vectors its decoding reads; everything else unchanged."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    feat = feature_tensor(m)
    if any(o.name == "visibility" for o in m.graph.output):
        raise ValueError("the model already has a visibility output")
    n, d = weights.shape  # d: the feature vector and the landmark's score
    m.graph.initializer.extend(
        [
            numpy_helper.from_array(weights.astype(np.float32).reshape(n, d, 1), "visibility_weight"),
            numpy_helper.from_array(biases.astype(np.float32).reshape(n, 1, 1), "visibility_bias"),
            numpy_helper.from_array(np.array([2, 3], np.int64), "visibility_axes"),
        ]
    )
    m.graph.node.extend(
        [
            helper.make_node(
                "Unsqueeze", ["scores", "visibility_axes"], ["visibility_scores"], name="/visibility/Unsqueeze"
            ),
            helper.make_node(
                "Concat", [feat, "visibility_scores"], ["visibility_inputs"], axis=-1, name="/visibility/Concat"
            ),
            helper.make_node(
                "MatMul",
                ["visibility_inputs", "visibility_weight"],
                ["visibility_logit_raw"],
                name="/visibility/MatMul",
            ),
            helper.make_node(
                "Add", ["visibility_logit_raw", "visibility_bias"], ["visibility_logit"], name="/visibility/Add"
            ),
            helper.make_node(
                "Squeeze", ["visibility_logit", "visibility_axes"], ["visibility_logit_2d"], name="/visibility/Squeeze"
            ),
            helper.make_node("Sigmoid", ["visibility_logit_2d"], ["visibility"], name="/visibility/Sigmoid"),
        ]
    )
    m.graph.output.append(helper.make_tensor_value_info("visibility", onnx.TensorProto.FLOAT, ["batch", n]))
    onnx.checker.check_model(m)
    return m


def graft(
    path: str | Path, weights: np.ndarray, biases: np.ndarray, out: str | Path, meta_update: dict[str, Any]
) -> Path:
    """Write the model file with graft_rows' ``visibility`` output and ``meta_update`` in its
    metadata. ValueError naming the file if it has that output already."""
    m = onnx.load(str(path))
    if any(o.name == "visibility" for o in m.graph.output):
        raise ValueError(f"{path} already has a visibility output")
    m = graft_rows(m, weights, biases)
    meta = {**file_metadata(m), **meta_update}
    meta["outputs"] = ["candidates", "scores", "visibility"]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_with_metadata(m, out, meta)
    return out


def logit(p: float) -> float:
    return math.log(p / (1 - p))


def shift_learned(model: onnx.ModelProto, threshold: float) -> onnx.ModelProto:
    """The model with its learned ``visibility`` output moved so that 0.5 is where ``threshold``
    was: a constant added to the logit before its sigmoid (an Add node); nothing else changes."""
    sigmoid = next((n for n in model.graph.node if n.op_type == "Sigmoid" and "visibility" in n.output), None)
    if sigmoid is None:
        raise ValueError("the visibility output does not come from a Sigmoid node: cannot shift its threshold")
    if any(i.name == "visibility_threshold_shift" for i in model.graph.initializer):
        raise ValueError("this file's visibility threshold was shifted already")
    shift = np.array(-logit(threshold), np.float32)
    model.graph.initializer.append(numpy_helper.from_array(shift, "visibility_threshold_shift"))
    shifted = "visibility_logit_shifted"
    add = helper.make_node(
        "Add", [sigmoid.input[0], "visibility_threshold_shift"], [shifted], name="/visibility/ThresholdShift"
    )
    nodes = list(model.graph.node)
    nodes.insert(nodes.index(sigmoid), add)
    sigmoid.input[0] = shifted
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    onnx.checker.check_model(model)
    return model


def shifted_probability(p: np.ndarray, threshold: float) -> np.ndarray:
    """What shift_learned's output gives for the output p of the unshifted file."""
    q = np.clip(p.astype(np.float64), 1e-7, 1 - 1e-7)
    return 1 / (1 + np.exp(-(np.log(q / (1 - q)) - logit(threshold))))


def framing_config(path: str | Path, config: str | Path) -> dict[str, Any]:
    """The config's data, split and augmentation, with the model file's input size and crop rule
    (and a base crop scaled with the input)."""
    meta = file_metadata(onnx.load(str(path), load_external_data=False))
    cfg = load_config(config, {})
    base = int(round(meta["input_size"] * cfg["base_size"] / cfg["input_size"]))
    return {**cfg, "input_size": meta["input_size"], "crop": meta["crop"], "base_size": base}


def covered_faces(
    images: np.ndarray, points: np.ndarray, cfg: dict[str, Any], seed: int = 3
) -> tuple[np.ndarray, np.ndarray]:
    """The faces' crops (the config's augmentation, no occluder) with export.compare's flat band
    over the lower face, and which points lie under it or outside the crop (M, N) bool: a check
    on an occluder unlike the fitted ones (a mask, a scarf, a hand across the chin)."""
    from .compare import covered, under_band

    crops, pts, visible = occluded_crops(images, points, cfg, 1, seed, {"p_occlude": 0.0})
    return covered(crops, pts, seed), under_band(pts, crops.shape[1]) | (visible < 0.5)


def hidden_f1(visibility: np.ndarray, hidden: np.ndarray) -> float:
    """F1 of ``occluded`` (visibility < 0.5) for the hidden points."""
    flagged = visibility < 0.5
    return 2 * float((flagged & hidden).sum()) / max(1.0, float(flagged.sum() + hidden.sum()))


def learned_here(model: onnx.ModelProto) -> bool:
    """Whether the file's visibility output is a head its network learned (then only calibrated),
    not one fitted by this module (then fitted anew)."""
    if not any(o.name == "visibility" for o in model.graph.output):
        return False
    return "fitted_on" not in file_metadata(model).get("visibility", {})


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m export.visibility", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("model", help="a format-3 model file (int8 or fp32)")
    ap.add_argument("--config", required=True, help="the model's training config (data, split, augmentation)")
    ap.add_argument("--out", required=True, help="the new model file")
    ap.add_argument("--version", required=True, help="the new file's version")
    ap.add_argument(
        "--head",
        choices=("branch", "rows"),
        default="branch",
        help="what to fit: a branch of its own on the trunk's maps (export.visibility_branch), or "
        "per-landmark logistic rows on the features the decoding reads",
    )
    ap.add_argument("--rounds", type=int, default=6, help="occluded copies of each training face")
    ap.add_argument("--epochs", type=int, help="passes of the fit (default: 12 for the branch, 40 for the rows)")
    ap.add_argument("--width", type=int, default=32, help="the branch's channels")
    ap.add_argument("--depth", type=int, default=1, help="the branch's 3x3 convolutions")
    ap.add_argument("--scale", type=int, default=4, choices=(2, 4), help="the branch's early map: resolution x2 or x4")
    ap.add_argument("--limit", type=int, help="at most this many faces per folder (smoke runs)")
    ap.add_argument("--threads", type=int, help="onnxruntime threads")
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args(argv)
    from .train import prepare

    cfg = framing_config(a.model, a.config)
    if a.limit:
        cfg["limit"] = a.limit
    d = prepare(cfg, progress=not a.quiet)
    model = onnx.load(str(a.model))
    trained = learned_here(model)  # learned: calibrate the quality only
    if not trained and any(o.name == "visibility" for o in model.graph.output):
        model = without_visibility(model)  # fitted before: fitted anew
    scratch = tempfile.TemporaryDirectory()
    source = str(a.model)
    if not trained:  # the file less a fitted output, read while fitting
        source = str(Path(scratch.name) / "plain.onnx")
        save_with_metadata(model, source, file_metadata(model))
    sources = branch_sources(model, a.scale) if a.head == "branch" and not trained else None
    graph = with_sources(model, sources) if sources else None
    extra = SOURCES if sources else ("features",)
    runs = {}
    sets = (("train", "train", a.rounds, 0, None), ("val", "val", 4, 1, None), ("hard", "val", 8, 2, HARD))
    try:
        for part, origin, rounds, seed, more in sets[1:] if trained else sets:
            crops, points, labels = occluded_crops(
                d[f"{origin}_images"], d[f"{origin}_points"], cfg, rounds, seed, more
            )
            runs[part] = {
                **run_with_features(source, crops, a.threads, not a.quiet, graph, extra),
                "labels": labels,
                "truth": points,
            }
        crops, hidden_there = covered_faces(d["val_images"], d["val_points"], cfg)  # a check, not fitted on
        runs["covered"] = {
            **run_with_features(source, crops, a.threads, not a.quiet, graph, extra),
            "labels": (~hidden_there).astype(np.float32),
        }
    finally:
        scratch.cleanup()
    log: list[dict[str, Any]] = []
    about: dict[str, Any] = {"threshold": 0.5, "occluders": OCCLUDERS}
    if trained:
        for r in runs.values():
            r["visibility"] = r["visibility"].astype(np.float64)
        threshold, val_f1 = best_f1_threshold(runs["val"]["visibility"], runs["val"]["labels"] < 0.5)
        model = shift_learned(model, threshold)
        for r in runs.values():
            r["visibility"] = shifted_probability(r["visibility"], threshold)
        about["learned"] = "a head of the network, trained with the landmarks on occluder masks"
        about["shifted_from"] = round(threshold, 4)  # the output's own best-F1 threshold, now 0.5
    elif sources:
        branch, log = fit_branch(runs["train"], runs["val"], a.epochs or 12, a.width, a.depth, progress=not a.quiet)
        threshold, val_f1 = best_f1_threshold(branch_probability(branch, runs["val"]), runs["val"]["labels"] < 0.5)
        for r in runs.values():
            r["visibility"] = shifted_probability(branch_probability(branch, r), threshold)
        model = graft_branch(model, branch, threshold)
        about.update({"head": "branch", **branch.options})
    else:
        for r in runs.values():  # each landmark's score is an input too
            r["features"] = with_score(r["features"], r["scores"])
        w, b, log = fit_rows(
            runs["train"]["features"],
            runs["train"]["labels"],
            runs["val"]["features"],
            runs["val"]["labels"],
            a.epochs or 40,
            progress=not a.quiet,
        )
        val_p = 1 / (1 + np.exp(-((runs["val"]["features"].astype(np.float32) * w).sum(-1) + b)))
        threshold, val_f1 = best_f1_threshold(val_p, runs["val"]["labels"] < 0.5)
        b = b - logit(threshold)  # visibility < 0.5 now means p < threshold
        for r in runs.values():
            r["visibility"] = 1 / (1 + np.exp(-((r["features"].astype(np.float32) * w).sum(-1) + b)))
        model = graft_rows(model, w, b)
        about["head"] = "rows"
    if not trained:
        about["fitted_on"] = f"{len(runs['train']['labels'])} occluded training crops"
    # quality, on the validation faces: plain occluded copies and hard ones (so that some fail)
    from .evaluate import nme_per_face

    norm = tuple(get_scheme(cfg["scheme"]).norm)
    scores, vis, good = [], [], []
    for part in ("val", "hard"):
        r = runs[part]
        vis.append(r["visibility"])
        scores.append(r["scores"])
        good.append(nme_per_face(r["points"], r["truth"], norm) <= GOOD_NME)
    face = {"mean_score": np.concatenate(scores).mean(1), "mean_visibility": np.concatenate(vis).mean(1)}
    quality = fit_quality(face, np.concatenate(good))
    hidden = runs["val"]["labels"] < 0.5
    about["validation_f1"] = round(hidden_f1(runs["val"]["visibility"], hidden), 4)
    about["validation_auroc"] = round(auroc(runs["val"]["visibility"][~hidden], runs["val"]["visibility"][hidden]), 4)
    about["validation_covered_f1"] = round(hidden_f1(runs["covered"]["visibility"], runs["covered"]["labels"] < 0.5), 4)
    meta = {**file_metadata(model), "version": a.version, "visibility": about, "quality": quality}
    meta.pop("point_quality", None)  # it read the old visibility: export.calibrate fits it anew
    meta["outputs"] = ["candidates", "scores", "visibility"]
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_with_metadata(model, out, meta)
    best = min(log, key=lambda r: r["val_bce"]) if log else None
    print(
        json.dumps(
            {
                "out": str(out),
                "best": best,
                "quality": quality,
                "f1_threshold": threshold,
                "val_f1": val_f1,
                "val_covered_f1": about["validation_covered_f1"],
                "good_fraction": float(np.concatenate(good).mean()),
            }
        )
    )


if __name__ == "__main__":
    main()
