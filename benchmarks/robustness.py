"""Robustness benchmark (the target "Models 0.6 ... steady under blur"): ours vs dlib on corrupted
300W common-test images.

    python benchmarks/robustness.py [--models pipnet-fast pipnet-r18] [--conditions clean gaussian_blur ...]
                                    [--limit N] [--seed 0] [--threads 1] [--no-cache] [--quiet]

Each of the 554 test images (one labeled face each) is run clean and under each corruption below,
through every system: our models via ``pipnet_sdk.Landmarker(model=...)`` (YuNet-n + PIPNet) and
dlib's 68-point shape predictor on its own HOG detector (upsample 1, as benchmarks/landmarks.py).
Each corrupted image is made once and shared by all systems; the corruption of an image is seeded
from (--seed, condition, image path), so a --limit run sees the same images as a full one.

Conditions (s = face size, sqrt of the ground-truth landmark box area; ground truth moved with
the image where the geometry changes):
  clean            the image as it is
  rotation         in-plane rotation about the image centre by +-30..45 deg (sign and angle
                   random), on a canvas grown to hold the whole image (black corners)
  gaussian_blur    Gaussian blur, sigma = 0.03 s (heavy: 6 px on a 200 px face; at 0.04 s a quarter
                   of the faces are lost to the detectors, leaving few to compare landmarks on)
  motion_blur      linear motion blur, length 0.1 s, random direction
  jpeg             JPEG quality 10
  low_light        255 * 0.3 * (x / 255) ** 2 + Gaussian noise (sigma 4 grey levels per channel)
  occlusion_lower  a random solid colour rectangle from the nose tip (point 33) down past the
                   chin, across the face (a mask / a hand)
  occlusion_eye    a random solid colour rectangle over one eye and brow (side random)
  downscale        face's landmark box long side down to 40..50 px (INTER_AREA), upscaled back to
                   the original size (bilinear): low resolution, same geometry

Metrics per condition and system: faces found (a detection overlapping the ground-truth landmark
box with IoU > 0.5, as benchmarks/landmarks.py), and on the faces that every system finds (ours
and dlib): inter-ocular NME % (outer eye corners, points 36/45) and failure rate (NME > 10 %).
Targets (PASS/FAIL, per model): clean: pipnet-fast NME <= 3.0 % and pipnet-r18 <= 2.85 % on the
faces every system finds (as benchmarks/landmarks.py); blur (gaussian_blur, motion_blur): our NME
<= dlib's and our failure rate <= 2x dlib's on the faces both find; rotation and occlusion: we keep
our lead: faces found >= dlib's, and NME <= dlib's on the faces both find.
dlib's results are cached under .cache/ (keyed by condition, its code and parameters, the seed,
and the predictor file), so a rerun for new models costs only our models' time.
Writes benchmarks/results/robustness.md and robustness.json (--out-dir).
"""

from __future__ import annotations

import argparse
import datetime
import inspect
import json
import os
import platform
import sys
import time
import zlib
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.cpu import cpu_line  # noqa: E402
from benchmarks.landmarks import (  # noqa: E402
    MIN_IOU,
    TARGET_FAST_NME,
    TARGET_R18_NME,
    dlib_hog,
    dlib_models,
    md_table,
    opencv_threads,
    pct,
    rect_to_box,
    shape_to_np,
)
from export.data import Sample, cache_key, landmark_box, read_pts_folder  # noqa: E402
from export.evaluate import cache_dir, data_path, failure_rate, match, nme_per_face, read_image  # noqa: E402

FAIL_NME = 0.10
BLUR_FR_RATIO = 2.0
BLUR = ("gaussian_blur", "motion_blur")
LEAD = ("rotation", "occlusion_lower", "occlusion_eye")
DLIB = "dlib"
CLEAN_NME_TARGETS = {"pipnet-fast": TARGET_FAST_NME, "pipnet-r18": TARGET_R18_NME}  # as benchmarks/landmarks.py

Image = np.ndarray
Points = np.ndarray
Corruption = Callable[[Image, Points, np.random.Generator], tuple[Image, Points]]

PARAMS: dict[str, dict[str, float]] = {
    "clean": {},
    "rotation": {"min_deg": 30.0, "max_deg": 45.0},
    "gaussian_blur": {"sigma_per_face": 0.03},
    "motion_blur": {"length_per_face": 0.10},
    "jpeg": {"quality": 10},
    "low_light": {"scale": 0.3, "gamma": 2.0, "noise": 4.0},
    "occlusion_lower": {"pad": 0.08},
    "occlusion_eye": {"pad": 0.07},
    "downscale": {"min_px": 40.0, "max_px": 50.0},
}


# --------------------------------------------------------------------------- corruptions


def face_size(pts: Points) -> float:
    """sqrt of the landmark box area: the scale blur and occluders are relative to."""
    w, h = pts.max(0) - pts.min(0)
    return float(np.sqrt(max(w * h, 1.0)))


def clean(img: Image, pts: Points, rng: np.random.Generator) -> tuple[Image, Points]:
    return img, pts


def turn(img: Image, pts: Points, degrees: float) -> tuple[Image, Points]:
    """Turn counter-clockwise about the image centre onto a canvas holding all of it."""
    h, w = img.shape[:2]
    c = ((w - 1) / 2, (h - 1) / 2)
    m = cv2.getRotationMatrix2D(c, degrees, 1.0)
    cos, sin = abs(m[0, 0]), abs(m[0, 1])
    nw, nh = int(np.ceil(w * cos + h * sin)), int(np.ceil(w * sin + h * cos))
    m[:, 2] += ((nw - 1) / 2 - c[0], (nh - 1) / 2 - c[1])
    out = cv2.warpAffine(img, m, (nw, nh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    return out, (pts @ m[:, :2].T + m[:, 2]).astype(np.float32)


def rotation(img: Image, pts: Points, rng: np.random.Generator) -> tuple[Image, Points]:
    """Rotate about the image centre by +-[min_deg, max_deg] onto a canvas holding all of it."""
    p = PARAMS["rotation"]
    return turn(img, pts, rng.uniform(p["min_deg"], p["max_deg"]) * rng.choice([-1.0, 1.0]))


def gaussian_blur(img: Image, pts: Points, rng: np.random.Generator) -> tuple[Image, Points]:
    sigma = PARAMS["gaussian_blur"]["sigma_per_face"] * face_size(pts)
    return cv2.GaussianBlur(img, (0, 0), sigma), pts


def motion_kernel(length: float, angle_deg: float) -> np.ndarray:
    """A normalised linear motion-blur kernel: an anti-aliased line through the centre."""
    k = int(np.ceil(length)) | 1
    ker = np.zeros((k, k), np.float32)
    c = (k - 1) / 2
    dx, dy = (length - 1) / 2 * np.cos(np.radians(angle_deg)), (length - 1) / 2 * np.sin(np.radians(angle_deg))
    shift = 4  # sub-pixel end points
    p0 = (int(round((c - dx) * 2**shift)), int(round((c - dy) * 2**shift)))
    p1 = (int(round((c + dx) * 2**shift)), int(round((c + dy) * 2**shift)))
    cv2.line(ker, p0, p1, 1.0, 1, cv2.LINE_AA, shift)
    return ker / ker.sum()


def motion_blur(img: Image, pts: Points, rng: np.random.Generator) -> tuple[Image, Points]:
    length = max(3.0, PARAMS["motion_blur"]["length_per_face"] * face_size(pts))
    ker = motion_kernel(length, rng.uniform(0.0, 180.0))
    return cv2.filter2D(img, -1, ker, borderType=cv2.BORDER_REFLECT_101), pts


def jpeg(img: Image, pts: Points, rng: np.random.Generator) -> tuple[Image, Points]:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(PARAMS["jpeg"]["quality"])])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return cv2.imdecode(buf, cv2.IMREAD_COLOR), pts


def low_light(img: Image, pts: Points, rng: np.random.Generator) -> tuple[Image, Points]:
    """Darker (gamma, then scale) with sensor noise."""
    p = PARAMS["low_light"]
    x = 255.0 * p["scale"] * (img.astype(np.float32) / 255.0) ** p["gamma"]
    x += rng.normal(0.0, p["noise"], x.shape).astype(np.float32)
    return np.clip(np.rint(x), 0, 255).astype(np.uint8), pts


def fill_rect(img: Image, x0: float, y0: float, x1: float, y1: float, rng: np.random.Generator) -> Image:
    """A copy of img with [x0, x1] x [y0, y1] (clipped to the image) in one random colour."""
    out = img.copy()
    h, w = img.shape[:2]
    xa, ya = max(0, int(np.floor(x0))), max(0, int(np.floor(y0)))
    xb, yb = min(w, int(np.ceil(x1)) + 1), min(h, int(np.ceil(y1)) + 1)
    out[ya:yb, xa:xb] = rng.integers(0, 256, 3)
    return out


def occlusion_lower(img: Image, pts: Points, rng: np.random.Generator) -> tuple[Image, Points]:
    """Nose tip (33) down past the chin, across the face: mouth and lower jaw hidden."""
    pad = PARAMS["occlusion_lower"]["pad"] * face_size(pts)
    x0, _, x1, y1 = landmark_box(pts)
    return fill_rect(img, x0 - pad, pts[33, 1], x1 + pad, y1 + pad, rng), pts


LEFT_EYE = list(range(17, 22)) + list(range(36, 42))  # brow + eye, image left
RIGHT_EYE = list(range(22, 27)) + list(range(42, 48))


def occlusion_eye(img: Image, pts: Points, rng: np.random.Generator) -> tuple[Image, Points]:
    """One eye and its brow (side random) under a rectangle."""
    pad = PARAMS["occlusion_eye"]["pad"] * face_size(pts)
    x0, y0, x1, y1 = landmark_box(pts[LEFT_EYE if rng.random() < 0.5 else RIGHT_EYE])
    return fill_rect(img, x0 - pad, y0 - pad, x1 + pad, y1 + pad, rng), pts


def downscale(img: Image, pts: Points, rng: np.random.Generator) -> tuple[Image, Points]:
    """Face long side to min_px..max_px, then back to the original size (never enlarges first)."""
    p = PARAMS["downscale"]
    lo, hi = pts.min(0), pts.max(0)
    f = min(1.0, rng.uniform(p["min_px"], p["max_px"]) / float(max(hi - lo)))
    h, w = img.shape[:2]
    small = cv2.resize(img, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR), pts


CONDITIONS: dict[str, Corruption] = {
    f.__name__: f
    for f in (clean, rotation, gaussian_blur, motion_blur, jpeg, low_light, occlusion_lower, occlusion_eye, downscale)
}


def condition_rng(seed: int, condition: str, image_id: str) -> np.random.Generator:
    """The generator for one (condition, image): independent of which other images run."""
    return np.random.default_rng([seed, zlib.crc32(condition.encode()), zlib.crc32(image_id.encode())])


def condition_key(condition: str, seed: int) -> str:
    """Changes whenever the corruption's code or parameters or the seed change (cache key)."""
    helpers = (face_size, motion_kernel, fill_rect, condition_rng)
    return cache_key(
        condition,
        PARAMS[condition],
        seed,
        inspect.getsource(CONDITIONS[condition]),
        *[inspect.getsource(f) for f in helpers],
        LEFT_EYE,
        RIGHT_EYE,
    )


# ------------------------------------------------------------------------------ systems

System = Callable[[Image], tuple[np.ndarray, np.ndarray]]  # BGR image -> boxes (F, 4), landmarks (F, 68, 2)


def ours_system(model: str, threads: int | None) -> tuple[System, str]:
    """Landmarker.detect: YuNet-n + the PIPNet model, boxes and landmarks of every face; and a
    description of the model file (name, version, input size)."""
    from pipnet_sdk import Landmarker

    lm = Landmarker(model=model, threads=threads)
    spec = lm.model.spec
    path = Path(lm.model.path).resolve()
    shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    about = f"{spec.name} {spec.version}, {spec.input_size} px, `{shown}`"

    def run(img: Image) -> tuple[np.ndarray, np.ndarray]:
        faces = lm.detect(img)
        return (
            np.array([f.box for f in faces], np.float32).reshape(-1, 4),
            np.array([f.landmarks for f in faces], np.float32).reshape(-1, lm.num_landmarks, 2),
        )

    return run, about


def dlib_system() -> tuple[System, str]:
    """dlib HOG (upsample 1) + 68-point shape predictor on the RGB image; and the predictor's path."""
    hog, sp, path = dlib_models()

    def run(img: Image) -> tuple[np.ndarray, np.ndarray]:
        rgb = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        dets = dlib_hog(hog, rgb)
        return (
            np.array([rect_to_box(r) for r in dets], np.float32).reshape(-1, 4),
            np.array([shape_to_np(sp(rgb, r)) for r in dets], np.float32).reshape(-1, 68, 2),
        )

    return run, path


class DlibCache:
    """dlib's matched prediction per (condition, image) in .cache/robustness-dlib-*.npz."""

    def __init__(self, predictor: str, seed: int, enabled: bool = True) -> None:
        self.predictor, self.seed, self.enabled = predictor, seed, enabled
        self.data: dict[str, dict[str, np.ndarray]] = {}  # condition -> image id -> (68, 2), NaN = missed
        self.dirty: set[str] = set()

    def path(self, condition: str) -> Path:
        key = cache_key(condition_key(condition, self.seed), os.path.getsize(self.predictor), MIN_IOU)
        return cache_dir() / f"robustness-dlib-{condition}-{key}.npz"

    def get(self, condition: str, image_id: str) -> np.ndarray | None:
        if not self.enabled:
            return None
        if condition not in self.data:
            p = self.path(condition)
            self.data[condition] = {}
            if p.exists():
                with np.load(p) as z:
                    self.data[condition] = dict(zip(z["images"].tolist(), z["pred"]))
        return self.data[condition].get(image_id)

    def put(self, condition: str, image_id: str, pred: np.ndarray) -> None:
        if self.enabled:
            self.data.setdefault(condition, {})[image_id] = pred
            self.dirty.add(condition)

    def save(self) -> None:
        for c in sorted(self.dirty):
            ids = sorted(self.data[c])
            np.savez_compressed(self.path(c), images=np.array(ids), pred=np.stack([self.data[c][i] for i in ids]))
        self.dirty.clear()


def matched(system: System, img: Image, gt: Points) -> np.ndarray:
    """The system's landmarks (68, 2) for the ground-truth face, NaN when no detection matches."""
    boxes, marks = system(img)
    k = match(boxes, landmark_box(gt), MIN_IOU)
    return marks[k] if k >= 0 else np.full((len(gt), 2), np.nan, np.float32)


# ------------------------------------------------------------------------------ running


def run_all(
    samples: list[Sample],
    root: Path,
    conditions: list[str],
    systems: dict[str, System],
    cache: DlibCache,
    seed: int,
    progress: bool,
) -> dict[str, Any]:
    """Every image under every condition through every system (each corrupted image made once).
    Returns pred[condition][system] (M, 68, 2) NaN where missed, gt[condition] (M, 68, 2), and
    ms[condition][system]: mean time per image inside the system (NaN when all came from the cache)."""
    n, c = len(samples), len(samples[0].points)
    pred = {k: {s: np.full((n, c, 2), np.nan, np.float32) for s in systems} for k in conditions}
    gt = {k: np.zeros((n, c, 2), np.float32) for k in conditions}
    seconds = {k: dict.fromkeys(systems, 0.0) for k in conditions}
    calls = {k: dict.fromkeys(systems, 0) for k in conditions}
    cached = 0
    bar = tqdm(samples, desc="images x conditions", disable=not progress, smoothing=0.05)
    for i, s in enumerate(bar):
        img0, image_id = read_image(s.image), Path(s.image).relative_to(root).as_posix()
        for k in conditions:
            img, gt[k][i] = CONDITIONS[k](img0, s.points, condition_rng(seed, k, image_id))
            for name, system in systems.items():
                if name == DLIB and (hit := cache.get(k, image_id)) is not None:
                    pred[k][name][i] = hit
                    cached += 1
                    continue
                t0 = time.perf_counter()
                pred[k][name][i] = matched(system, img, gt[k][i])
                seconds[k][name] += time.perf_counter() - t0
                calls[k][name] += 1
                if name == DLIB:
                    cache.put(k, image_id, pred[k][name][i])
        if i % 50 == 49:
            cache.save()  # an interrupted run keeps what dlib did
    cache.save()
    ms = {
        k: {s: 1000 * seconds[k][s] / calls[k][s] if calls[k][s] else float("nan") for s in systems} for k in conditions
    }
    return {"pred": pred, "gt": gt, "ms": ms, "dlib_cached": cached}


def metrics(pred: dict[str, np.ndarray], gt: np.ndarray) -> dict[str, dict[str, Any]]:
    """Per system: faces found, NME and failure rate on its own faces and on the faces every
    system finds ("shared"), and the per-face NME (NaN where missed)."""
    found = {s: np.isfinite(p).all(axis=(1, 2)) for s, p in pred.items()}
    shared = np.logical_and.reduce(list(found.values()))
    out = {}
    for s, p in pred.items():
        nme = np.full(len(gt), np.nan)
        nme[found[s]] = nme_per_face(p[found[s]], gt[found[s]])
        out[s] = {
            "found": int(found[s].sum()),
            "shared": int(shared.sum()),
            "nme_shared": float(np.mean(nme[shared])) if shared.any() else float("nan"),
            "fr_shared": failure_rate(nme[shared], FAIL_NME),
            "nme_own": float(np.nanmean(nme)) if found[s].any() else float("nan"),
            "fr_own": failure_rate(nme[found[s]], FAIL_NME),
            "nme": nme,
        }
    return out


# -------------------------------------------------------------------------------- targets


def finite(v: Any, digits: int = 6) -> Any:
    """A float rounded for JSON (None for NaN / inf); anything else as it is."""
    if isinstance(v, (float, np.floating)):
        return round(float(v), digits) if np.isfinite(v) else None
    return v


def check(label: str, measured: str, ok: bool | None) -> dict[str, Any]:
    return {"target": label, "measured": measured, "result": "SKIP" if ok is None else ("PASS" if ok else "FAIL")}


def targets(res: dict[str, dict[str, dict[str, Any]]], models: list[str]) -> list[dict[str, Any]]:
    """The models 0.6 targets on the conditions that ran: clean accuracy (the shipped model names),
    blur and keep-the-lead, per model."""
    rows = []
    for m in [m for m in models if "clean" in res and m in CLEAN_NME_TARGETS]:
        o, limit = res["clean"][m], CLEAN_NME_TARGETS[m]
        label = f"clean: {m} NME <= {pct(limit)} %"
        if not o["shared"]:
            rows.append(check(label, "no face found by all systems", None))
            continue
        rows.append(
            check(label, f"{pct(o['nme_shared'])} % on {o['shared']} faces all systems find", o["nme_shared"] <= limit)
        )
    for k in [k for k in BLUR + LEAD if k in res]:
        d = res[k][DLIB]
        for m in models:
            o = res[k][m]
            on_shared = f"on {o['shared']} faces both find"
            if not o["shared"]:
                rows.append(check(f"{k}: {m} NME vs dlib", "no face found by both", None))
                continue
            nme = f"{pct(o['nme_shared'])} vs {pct(d['nme_shared'])} % {on_shared}"
            rows.append(check(f"{k}: {m} NME <= dlib's", nme, o["nme_shared"] <= d["nme_shared"]))
            if k in BLUR:
                fr = f"{pct(o['fr_shared'])} vs {pct(d['fr_shared'])} % {on_shared}"
                rows.append(
                    check(
                        f"{k}: {m} failure rate <= {BLUR_FR_RATIO:g}x dlib's",
                        fr,
                        o["fr_shared"] <= BLUR_FR_RATIO * d["fr_shared"],
                    )
                )
            else:
                rows.append(
                    check(
                        f"{k}: {m} finds >= as many faces as dlib",
                        f"{o['found']} vs {d['found']}",
                        o["found"] >= d["found"],
                    )
                )
    return rows


# --------------------------------------------------------------------------------- report


def summary_table(res: dict[str, dict[str, dict[str, Any]]], systems: list[str], n: int) -> str:
    """One row per condition: faces found, and NME / failure rate on the faces all find."""
    header = [
        "condition",
        *[f"found {s}" for s in systems],
        "both find",
        *[f"NME % {s}" for s in systems],
        *[f"FR % {s}" for s in systems],
    ]
    rows = []
    for k, r in res.items():
        rows.append(
            [
                k,
                *[f"{r[s]['found']}/{n}" for s in systems],
                str(r[systems[0]]["shared"]),
                *[pct(r[s]["nme_shared"]) for s in systems],
                *[pct(r[s]["fr_shared"]) for s in systems],
            ]
        )
    return md_table(header, rows)


def detail_table(res: dict[str, dict[str, dict[str, Any]]], ms: dict[str, dict[str, float]], n: int) -> str:
    """One row per condition and system, with the metrics on each system's own faces and its time."""
    header = [
        "condition",
        "system",
        "faces found",
        "NME % (both find)",
        "FR % (both find)",
        "NME % (own faces)",
        "FR % (own faces)",
        "ms / image",
    ]
    rows = []
    for k, r in res.items():
        for s, m in r.items():
            rows.append(
                [
                    k,
                    s,
                    f"{m['found']}/{n}",
                    pct(m["nme_shared"]),
                    pct(m["fr_shared"]),
                    pct(m["nme_own"]),
                    pct(m["fr_own"]),
                    "cached" if np.isnan(ms[k][s]) else f"{ms[k][s]:.1f}",
                ]
            )
    return md_table(header, rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--models",
        nargs="+",
        default=["pipnet-fast", "pipnet-r18"],
        help="registry names or ONNX paths, through Landmarker(model=...)",
    )
    ap.add_argument(
        "--conditions",
        nargs="+",
        default=list(CONDITIONS),
        choices=list(CONDITIONS),
        metavar="C",
        help=f"any of {', '.join(CONDITIONS)} (default all)",
    )
    ap.add_argument("--data", default="data/300w/test")
    ap.add_argument("--limit", type=int, help="N images spread evenly over the test set (quick run)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="onnxruntime and OpenCV threads for our models")
    ap.add_argument("--cache", action=argparse.BooleanOptionalAction, default=True, help="dlib results under .cache/")
    ap.add_argument("--out-dir", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args(argv)
    t_start = time.perf_counter()
    progress = not a.quiet
    out_dir = Path(a.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    root = data_path(a.data)
    samples = read_pts_folder(root)
    total = len(samples)
    if a.limit and a.limit < total:
        keep = np.unique(np.linspace(0, total - 1, a.limit).round().astype(int))
        samples = [samples[i] for i in keep]
    n = len(samples)
    conditions = list(dict.fromkeys(a.conditions))
    names = [Path(m).stem if m.endswith(".onnx") else m for m in a.models]
    if DLIB in names or len(set(names)) < len(names):
        raise SystemExit(f"model names must be distinct and not {DLIB!r}: {names}")
    cpu = cpu_line()
    print(f"{cpu}; {n} images x {len(conditions)} conditions x {len(names) + 1} systems", file=sys.stderr)

    systems: dict[str, System] = {}
    about: dict[str, str] = {}
    for name, m in zip(names, a.models):
        systems[name], about[name] = ours_system(m, a.threads)
    systems[DLIB], predictor = dlib_system()
    cache = DlibCache(predictor, a.seed, a.cache)
    with opencv_threads(a.threads):
        run = run_all(samples, root, conditions, systems, cache, a.seed, progress)

    res: dict[str, dict[str, dict[str, Any]]] = {}
    for k in conditions:
        res[k] = metrics(run["pred"][k], run["gt"][k])
    checks = targets(res, names)
    order = [*names, DLIB]
    runtime = time.perf_counter() - t_start

    sel = f"{n} of {total} images" + (
        f" (--limit {a.limit}, spread evenly: targets are indicative only)" if n < total else ""
    )
    text = "\n".join(
        [
            "# Robustness benchmark: 300W common test, clean and corrupted",
            "",
            f"Run {datetime.datetime.now().isoformat(timespec='seconds')} on {platform.node()} ({cpu}), "
            f"{sel}; seed {a.seed}; runtime {runtime / 60:.1f} min "
            f"({run['dlib_cached']} dlib results from the cache).",
            "",
            "Systems: "
            + ", ".join(
                f"{nm} = `Landmarker(model={m!r})` ({about[nm]}; YuNet-n; {a.threads} thread"
                f"{'s' if a.threads > 1 else ''})"
                for nm, m in zip(names, a.models)
            )
            + f"; {DLIB} = HOG detector (upsample 1) + `{Path(predictor).name}`.",
            f"A face is found when a detection overlaps its ground-truth landmark box with IoU > {MIN_IOU}. "
            f"NME: inter-ocular (points 36/45), mean over faces, in %; FR: share of faces with NME > "
            f'{FAIL_NME * 100:g} %. Both on the faces every system finds ("both find"), unless said otherwise.',
            "Conditions (s = sqrt of the landmark box area): "
            + "; ".join(f"{k} {json.dumps(PARAMS[k])}" for k in conditions)
            + ". See the docstring of "
            "`benchmarks/robustness.py` for what each does.",
            "",
            "## Summary",
            "",
            summary_table(res, order, n),
            "",
            "## Targets",
            "",
            md_table(["target", "measured", "result"], [[c["target"], c["measured"], c["result"]] for c in checks]),
            "",
            "## Per system",
            "",
            detail_table(res, run["ms"], n),
            "",
        ]
    )
    print(text)
    (out_dir / "robustness.md").write_text(text)
    image_ids = [Path(s.image).relative_to(root).as_posix() for s in samples]
    (out_dir / "robustness.json").write_text(
        json.dumps(
            {
                "images": n,
                "total_images": total,
                "seed": a.seed,
                "cpu": cpu,
                "runtime_s": round(runtime, 1),
                "models": about,
                "params": {k: PARAMS[k] for k in conditions},
                "results": {
                    k: {s: {m: finite(v) for m, v in r[s].items() if m != "nme"} for s in order} for k, r in res.items()
                },
                "ms_per_image": {k: {s: finite(v, 2) for s, v in t.items()} for k, t in run["ms"].items()},
                "targets": checks,
                "image_ids": image_ids,
                "nme_per_face": {k: {s: [finite(v, 5) for v in r[s]["nme"]] for s in order} for k, r in res.items()},
            },
            indent=1,
        )
    )
    for c in checks:
        print(f"{c['result']}: {c['target']} ({c['measured']})", file=sys.stderr)
    print(
        f"runtime {runtime / 60:.1f} min; wrote {out_dir / 'robustness.md'}, {out_dir / 'robustness.json'}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
