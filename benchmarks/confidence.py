"""When not to trust a result: Face.quality, Face.visibility and the per-point scores against what
really happened, on the 300-W common test images, clean and corrupted.

    python benchmarks/confidence.py [--models pipnet-fast pipnet-r18] [--step 1] [--out FILE.md]
                                    [--figure docs/images/quality_reliability.png]

Conditions: clean; "occluded", occluders drawn otherwise than the ones the visibility is fitted
under (export/visibility.py: rectangles, ellipses, bars and black cuts from a side of the crop,
flat or filled with another face's pixels, on training crops): a random polygon or a thick bar (a
hand, a microphone) filled with a patch of a photo with no face in it, over 15-45 % of the face,
or the image cut so that a side of the face lies outside it; and from benchmarks/robustness.py heavy
Gaussian blur, rotation by 30-45 degrees, low light and downscaling.

Per face (a detection matched to the ground truth): good when its NME (inter-ocular) is at most
the model's calibration threshold (8 %). Per point: hidden when under the occluder or outside the
image; bad when off by more than 10 % of the inter-ocular distance. Printed per condition and
over all: AUROC of quality for telling failures from good faces, its expected calibration error
(10 bins), AUROC of visibility for hidden points, F1 of ``occluded`` for them, and AUROC of
``point_quality``, of visibility and of the landmark score for bad points, with point_quality's
calibration error. Targets: quality AUROC >= 0.95 and ECE <= 0.05 over all; hidden-point AUROC >=
0.90 and F1 >= 0.75 on the occluded faces; bad-point AUROC of point_quality >= 0.85 over all;
and the visibility output's cost: the landmark stage (crop + forward + decode, one thread, batch
1) at most 5 % slower than with the same file less that output, the two interleaved on the faces
of the first test images.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.cpu import cpu_line  # noqa: E402
from benchmarks.landmarks import MIN_IOU, md_table  # noqa: E402
from benchmarks.robustness import downscale, face_size, gaussian_blur, low_light, rotation  # noqa: E402
from export.data import landmark_box, read_pts_folder  # noqa: E402
from export.evaluate import auroc, data_path, match  # noqa: E402

BAD_POINT = 0.10
TARGETS = {"quality_auroc": 0.95, "ece": 0.05, "hidden_auroc": 0.90, "hidden_f1": 0.75, "bad_auroc": 0.85, "cost": 1.05}


def texture() -> np.ndarray:
    """A photo with no face in it, for the occluders' fill."""
    img = cv2.imread(str(data_path("data/samples/no_face.jpg")))
    if img is None:
        raise FileNotFoundError("data/samples/no_face.jpg of the shared data")
    return img


def occluded(
    img: np.ndarray, pts: np.ndarray, rng: np.random.Generator, fill: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The image with an occluder unlike the training ones, its points, and the hidden mask (N,)."""
    h, w = img.shape[:2]
    size = face_size(pts)
    kind = rng.choice(["polygon", "bar", "border"])
    if kind == "border":  # cut the image through the face
        x0, y0, x1, y1 = landmark_box(pts)
        side = rng.integers(4)
        cut = rng.uniform(0.2, 0.4)
        if side == 0:
            a = int(x0 + cut * (x1 - x0))
            return img[:, a:].copy(), pts - [a, 0], pts[:, 0] < a - 0.5
        if side == 1:
            a = int(x1 - cut * (x1 - x0))
            return img[:, :a].copy(), pts, pts[:, 0] > a - 0.5
        if side == 2:
            a = int(y0 + cut * (y1 - y0))
            return img[a:].copy(), pts - [0, a], pts[:, 1] < a - 0.5
        a = int(y1 - cut * (y1 - y0))
        return img[:a].copy(), pts, pts[:, 1] > a - 0.5
    mask = np.zeros((h, w), np.uint8)
    centre = pts[rng.integers(len(pts))]
    if kind == "polygon":
        k = rng.integers(5, 9)
        angles = np.sort(rng.uniform(0, 2 * np.pi, k))
        radii = size * rng.uniform(0.2, 0.4) * rng.uniform(0.6, 1.0, k)
        poly = centre + np.stack([np.cos(angles), np.sin(angles)], 1) * radii[:, None]
        cv2.fillPoly(mask, [np.round(poly).astype(np.int32)], 1)
    else:
        direction = rng.uniform(0, np.pi)
        half = size * rng.uniform(0.6, 1.0) * np.array([np.cos(direction), np.sin(direction)])
        cv2.line(
            mask,
            tuple(np.round(centre - half).astype(int)),
            tuple(np.round(centre + half).astype(int)),
            1,
            max(2, int(size * rng.uniform(0.12, 0.25))),
        )
    patch = cv2.resize(fill[rng.integers(0, fill.shape[0] // 2) :, rng.integers(0, fill.shape[1] // 2) :], (w, h))
    out = np.where(mask[..., None] > 0, patch, img)
    xi = np.clip(np.round(pts[:, 0]).astype(int), 0, w - 1)
    yi = np.clip(np.round(pts[:, 1]).astype(int), 0, h - 1)
    return out, pts, mask[yi, xi] > 0


def ece(prob: np.ndarray, good: np.ndarray, bins: int = 10) -> tuple[float, list[tuple[float, float, int]]]:
    """Expected calibration error and the diagram's bins (mean prob, fraction good, count)."""
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(prob, edges) - 1, 0, bins - 1)
    total, rows = 0.0, []
    for b in range(bins):
        sel = which == b
        if sel.any():
            total += sel.sum() * abs(prob[sel].mean() - good[sel].mean())
            rows.append((float(prob[sel].mean()), float(good[sel].mean()), int(sel.sum())))
    return total / max(1, len(prob)), rows


def measure(records: list[dict], good_nme: float) -> dict[str, float]:
    """The metrics over a list of per-face records."""
    if not records:
        return {}
    q = np.array([r["quality"] for r in records], np.float64)
    nme = np.array([r["nme"] for r in records])
    good = nme <= good_nme
    vis = np.concatenate([r["visibility"] for r in records])
    score = np.concatenate([r["scores"] for r in records])
    hidden = np.concatenate([r["hidden"] for r in records])
    bad = np.concatenate([r["bad"] for r in records])
    pq = np.concatenate([r["point_quality"] for r in records])
    out = {"faces": len(records), "failures": int((~good).sum()), "hidden_points": int(hidden.sum())}
    if good.any() and (~good).any():
        out["quality_auroc"] = auroc(q[good], q[~good])
    out["ece"] = ece(q, good)[0]
    if hidden.any() and (~hidden).any():
        out["hidden_auroc"] = auroc(vis[~hidden], vis[hidden])
        pred = vis < 0.5
        tp = float((pred & hidden).sum())
        out["hidden_f1"] = 2 * tp / max(1.0, float(pred.sum() + hidden.sum()))
    if bad.any() and (~bad).any():
        out["bad_auroc_visibility"] = auroc(vis[~bad], vis[bad])
        out["bad_auroc_score"] = auroc(score[~bad], score[bad])
        out["bad_auroc_point_quality"] = auroc(pq[~bad], pq[bad])
    out["point_ece"] = ece(pq, ~bad)[0]
    return out


def visibility_cost(lm: Any, samples: list, count: int = 100, repeats: int = 3) -> tuple[float, float]:
    """Median ms per face of the landmark stage (crop + forward + decode, one thread, batch 1)
    without and with the model's visibility output, the two interleaved face by face (which goes
    first alternating), on the faces the detector finds in the first test images. The file less its
    output is export.visibility_branch's without_visibility."""
    import tempfile

    import onnx

    from export.onnx_meta import file_metadata, save_with_metadata
    from export.visibility_branch import without_visibility
    from pipnet_sdk import Landmarker

    faces = []
    for s in samples:
        img = cv2.imread(s.image)
        boxes, _ = lm.detect_boxes(img, "bgr")
        faces += [(img, sq[None]) for sq in lm.squares(boxes)]
        if len(faces) >= count:
            break
    path = str(lm.model.path)
    plain = without_visibility(onnx.load(path))
    with tempfile.TemporaryDirectory() as tmp:
        plain_path = str(Path(tmp) / "plain.onnx")
        save_with_metadata(plain, plain_path, file_metadata(plain))
        stages = [Landmarker(model=m, threads=1) for m in (plain_path, path)]
        times: list[list[float]] = [[], []]
        for st in stages:  # warm up
            st.landmarks_in_squares(*faces[0], "bgr")
        for _ in range(repeats):
            for i, (img, square) in enumerate(faces[:count]):
                for k in (0, 1) if i % 2 == 0 else (1, 0):
                    start = time.perf_counter()
                    stages[k].landmarks_in_squares(img, square, "bgr")
                    times[k].append(time.perf_counter() - start)
    return float(np.median(times[0]) * 1000), float(np.median(times[1]) * 1000)


def fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["pipnet-fast", "pipnet-r18"])
    ap.add_argument("--step", type=int, default=1, help="every k-th test image")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", help="also write the tables (markdown) here")
    ap.add_argument("--figure", help="draw the reliability diagram (PNG) here")
    a = ap.parse_args(argv)
    from pipnet_sdk import Landmarker

    samples = read_pts_folder(data_path("data/300w/test"))[:: a.step]
    fill = texture()
    conditions = {
        "clean": None,
        "occluded": None,
        "gaussian_blur": gaussian_blur,
        "rotation": rotation,
        "low_light": low_light,
        "downscale": downscale,
    }
    parts, all_records = [f"# Confidence ({len(samples)} 300-W test images)", "", cpu_line(), ""], {}
    ok = True
    for model in a.models:
        lm = Landmarker(model=model, threads=a.threads)
        spec = lm.model.spec
        good_nme = float((spec.extra.get("quality") or {}).get("good_nme", 0.08))
        if not lm.model.has_visibility or not spec.extra.get("quality") or not spec.extra.get("point_quality"):
            print(f"{model} {spec.version} lacks a visibility output or a quality calibration", file=sys.stderr)
            return 2
        records: dict[str, list[dict]] = {c: [] for c in conditions}
        t0 = time.time()
        for i, s in enumerate(samples):
            base = cv2.imread(s.image)
            for c, corrupt in conditions.items():
                rng = np.random.default_rng([a.seed, i, list(conditions).index(c)])
                hidden = np.zeros(len(s.points), bool)
                if c == "occluded":
                    img, pts, hidden = occluded(base, s.points, rng, fill)
                elif corrupt is None:
                    img, pts = base, s.points
                else:
                    img, pts = corrupt(base, s.points, rng)
                h, w = img.shape[:2]
                outside = (pts < -0.5).any(1) | (pts[:, 0] > w - 0.5) | (pts[:, 1] > h - 0.5)
                hidden = hidden | outside
                faces = lm.detect(img, "bgr")
                k = match(np.array([f.box for f in faces], np.float32).reshape(-1, 4), landmark_box(pts), MIN_IOU)
                if k < 0:
                    continue
                f = faces[k]
                iod = float(np.linalg.norm(pts[36] - pts[45]))
                err = np.linalg.norm(f.landmarks - pts, axis=1) / iod
                records[c].append(
                    {
                        "quality": f.quality,
                        "nme": float(err.mean()),
                        "visibility": f.visibility,
                        "scores": f.landmark_scores,
                        "point_quality": f.point_quality,
                        "hidden": hidden,
                        "bad": err > BAD_POINT,
                    }
                )
            if i % 100 == 0:
                print(f"{model}: {i + 1}/{len(samples)} images, {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
        pooled = [r for rs in records.values() for r in rs]
        all_records[model] = pooled
        rows = []
        for name, rs in [*records.items(), ("all", pooled)]:
            m = measure(rs, good_nme)
            rows.append(
                [
                    name,
                    str(m.get("faces", 0)),
                    str(m.get("failures", 0)),
                    fmt(m.get("quality_auroc")),
                    fmt(m.get("ece")),
                    fmt(m.get("hidden_auroc")),
                    fmt(m.get("hidden_f1")),
                    fmt(m.get("bad_auroc_point_quality")),
                    fmt(m.get("point_ece")),
                    fmt(m.get("bad_auroc_visibility")),
                    fmt(m.get("bad_auroc_score")),
                ]
            )
        total, occ = measure(pooled, good_nme), measure(records["occluded"], good_nme)
        checks = [
            ("quality AUROC (all) >= 0.95", total.get("quality_auroc"), lambda v: v >= TARGETS["quality_auroc"]),
            ("quality ECE (all) <= 0.05", total.get("ece"), lambda v: v <= TARGETS["ece"]),
            ("hidden-point AUROC (occluded) >= 0.90", occ.get("hidden_auroc"), lambda v: v >= TARGETS["hidden_auroc"]),
            ("occluded F1 (occluded) >= 0.75", occ.get("hidden_f1"), lambda v: v >= TARGETS["hidden_f1"]),
            (
                "bad-point AUROC of point_quality (all) >= 0.85",
                total.get("bad_auroc_point_quality"),
                lambda v: v >= TARGETS["bad_auroc"],
            ),
        ]
        without, with_ = visibility_cost(lm, samples)
        checks.append(
            (
                f"landmark stage with visibility <= 1.05x without ({with_:.3f} vs {without:.3f} ms)",
                with_ / without,
                lambda v: v <= TARGETS["cost"],
            )
        )
        results = [[t, fmt(v), "PASS" if v is not None and test(v) else "FAIL"] for t, v, test in checks]
        ok = ok and all(r[2] == "PASS" for r in results)
        parts += [
            f"## {spec.name} {spec.version} (failure: NME > {100 * good_nme:g} %)",
            "",
            md_table(
                [
                    "condition",
                    "faces",
                    "failures",
                    "quality AUROC",
                    "ECE",
                    "hidden AUROC",
                    "occluded F1",
                    "bad-point AUROC (point_quality)",
                    "point_quality ECE",
                    "bad-point AUROC (visibility)",
                    "bad-point AUROC (score)",
                ],
                rows,
            ),
            "",
            md_table(["target", "measured", "result"], results),
            "",
        ]
    text = "\n".join(parts)
    print(text)
    if a.out:
        Path(a.out).write_text(text)
    if a.figure:
        draw_reliability(all_records, a.figure)
    return 0 if ok else 1


def draw_reliability(records: dict[str, list[dict]], path: str) -> None:
    """Predicted quality against the fraction of good faces, per model (the reliability diagram)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.6, 4.2), dpi=120)
    ax.plot([0, 1], [0, 1], color="0.7", lw=1, label="perfect calibration")
    for model, rs in records.items():
        q = np.array([r["quality"] for r in rs])
        good = np.array([r["nme"] for r in rs]) <= 0.08
        err, bins = ece(q, good)
        (line,) = ax.plot([b[0] for b in bins], [b[1] for b in bins], "-", lw=1, label=f"{model} (ECE {err:.3f})")
        ax.scatter(
            [b[0] for b in bins],
            [b[1] for b in bins],
            s=[8 + 2 * b[2] ** 0.75 for b in bins],
            color=line.get_color(),
            alpha=0.8,
        )  # area grows with the faces in the bin
    ax.set_xlabel("Face.quality (predicted P(NME <= 8 %))")
    ax.set_ylabel("fraction of faces with NME <= 8 %")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title("Quality calibration, 300-W test, clean + corrupted\n(dot area: faces in the bin)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)


if __name__ == "__main__":
    sys.exit(main())
