"""Benchmark of the goal "Ship trained 68-point models: more accurate than dlib, nearly as fast".

    python benchmarks/landmarks.py [--fast PATH] [--r18 PATH] [--limit N] [--threads 1 2] [--test-crops K]
                                   [--no-flip-test]

On the 300W common test (554 images: $PIPNET_SHARED/data/300w/test/{helen,lfpw}), in one run:

Accuracy (inter-ocular NME, points 36 and 45; FR and AUC at 0.1; see export/evaluate.py)
  * pipnet-fast, pipnet-r18 (skipped with a note when its file is absent) through the SDK
    (Landmarker.detect: YuNet-n + PIPNet in onnxruntime), and dlib's 68-point shape predictor
    with its own HOG detector (upsample 1, RGB). Each of our models also runs with K test
    crops (Landmarker(test_crops=K), rows "+K crops"; --test-crops 1 leaves them out) and with
    those crops mirrored too (Landmarker(flip_test=True, test_crops=K), rows "+flip +K crops";
    --no-flip-test leaves them out). A face
    is found when a detection overlaps the ground-truth landmark box with IoU > 0.5
    (best-overlapping detection). Metrics on the faces
    each system finds, and on the subset that both YuNet and dlib-HOG find (the fair comparison).
  * reference rows from ground-truth boxes: the landmark box mapped to each detector's box style
    (a BoxStyle fit of detector box to landmark box on the 300W *training* faces: YuNet as in
    training, dlib-HOG on every --dlib-fit-every'th training face; both cached under .cache/).
  * CED plot (ours vs dlib on the shared subset): benchmarks/results/ced_300w.png.
Speed (same run, same faces: the first --speed-faces faces of the shared subset, each system
with its own detector's box; each face (or batch of 8) timed --rounds times, interleaved, and its
best time kept, so that background load hurts less)
  * landmark stage in ms per face (crop + forward + decode) at each --threads value (Landmarker(
    threads=T), and OpenCV's own thread count, which the crops use, set to T), batch 1 and
    batch 8 (8 faces through landmarks_for_images at once), beside dlib's shape predictor
    (single-threaded) on the same faces;
  * end to end in ms per image (detector + landmarks on every face it finds): the mean over the
    accuracy pass (ours at the first --threads value), and on the speed images at each --threads.
Targets (PASS/FAIL): pipnet-fast NME on the shared subset <= 3.0 %; pipnet-fast landmark ms/face
<= 2x dlib's (1 thread, batch 1, same run); pipnet-r18 NME on the shared subset <= 2.85 % (checked
for the plain model and, each on its own line, with the test-time averaging rows).
The tables go to stdout and to benchmarks/results/landmarks.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.util
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.cpu import cpu_line  # noqa: E402
from export.data import BoxStyle, Sample, cache_key, iou, landmark_box, read_pts_folder  # noqa: E402
from export.evaluate import (  # noqa: E402
    cache_dir,
    data_path,
    evaluate_gt,
    match,
    nme_per_face,
    plot_ced,
    read_image,
    summary,
    train_box_style,
)
from pipnet_sdk import Landmarker  # noqa: E402

TARGET_FAST_NME = 0.030  # models 0.6: pipnet-fast <= 3.0 %, pipnet-r18 <= 2.85 %
TARGET_R18_NME = 0.0285
TARGET_SPEED_RATIO = 2.0
MIN_IOU = 0.5


# ---------------------------------------------------------------------------------- dlib


def dlib_models() -> tuple[Any, Any, str]:
    import dlib

    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None:
        raise SystemExit("dlib's model is missing: pip install dlib-bin face-recognition-models")
    # importing face_recognition_models needs pkg_resources; find the file without importing it
    path = os.path.join(spec.submodule_search_locations[0], "models", "shape_predictor_68_face_landmarks.dat")
    return dlib.get_frontal_face_detector(), dlib.shape_predictor(path), path


def rect_to_box(r: Any) -> np.ndarray:
    """dlib rectangle (inclusive pixel indices) -> x1, y1, x2, y2 pixel edges, (0, 0) = centre
    of the top-left pixel (the landmark coordinates)."""
    return np.array([r.left() - 0.5, r.top() - 0.5, r.right() + 0.5, r.bottom() + 0.5], np.float32)


def box_to_rect(b: np.ndarray) -> Any:
    import dlib

    return dlib.rectangle(
        int(round(b[0] + 0.5)), int(round(b[1] + 0.5)), int(round(b[2] - 0.5)), int(round(b[3] - 0.5))
    )


def shape_to_np(shape: Any) -> np.ndarray:
    return np.array([(p.x, p.y) for p in shape.parts()], np.float32)


def dlib_hog(hog: Any, rgb: np.ndarray) -> list:
    return list(hog(rgb, 1))


def dlib_train_style(hog: Any, model_path: str, every: int, progress: bool) -> tuple[BoxStyle, int]:
    """Landmark box -> dlib-HOG box mapping fitted on every `every`'th 300W training face (cached)."""
    train = data_path("data/300w/train")
    key = cache_key("dlib-hog-style", str(train.resolve()), os.path.getsize(model_path), every, 1)
    path = cache_dir() / f"dlib-hog-style-{key}.json"
    if path.exists():
        d = json.loads(path.read_text())
        return BoxStyle(d["coef"]), d["fitted_on"]
    samples = read_pts_folder(train)[::every]
    lm, det = [], []
    for s in tqdm(samples, desc="dlib HOG on training faces", disable=not progress):
        rects = dlib_hog(hog, cv2.cvtColor(read_image(s.image), cv2.COLOR_BGR2RGB))
        if rects:
            b = np.stack([rect_to_box(r) for r in rects])
            g = landmark_box(s.points)
            ov = iou(b, g)
            if ov.max() >= 0.3:  # as export.data.detector_boxes
                lm.append(g)
                det.append(b[ov.argmax()])
    style = BoxStyle.fit(np.stack(lm), np.stack(det))
    path.write_text(json.dumps({"coef": style.coef.tolist(), "fitted_on": len(lm), "faces": len(samples)}))
    return style, len(lm)


# ----------------------------------------------------------------------------- accuracy


def run_ours(lm: Landmarker, samples: list[Sample], name: str, progress: bool) -> dict[str, Any]:
    """Detector protocol through Landmarker.detect, timing each image end to end."""
    n = len(samples)
    pred = np.full((n, lm.num_landmarks, 2), np.nan, np.float32)
    boxes = np.full((n, 4), np.nan, np.float32)
    found = np.zeros(n, bool)
    times, faces_total = [], 0
    lm.detect(read_image(samples[0].image))  # warm up
    for i, s in enumerate(tqdm(samples, desc=f"{name}: detect", disable=not progress)):
        img = read_image(s.image)
        t0 = time.perf_counter()
        faces = lm.detect(img)
        times.append(time.perf_counter() - t0)
        faces_total += len(faces)
        det = np.array([f.box for f in faces], np.float32).reshape(-1, 4)
        k = match(det, landmark_box(s.points), MIN_IOU)
        if k >= 0:
            pred[i], boxes[i], found[i] = faces[k].landmarks, det[k], True
    return {
        "pred": pred,
        "boxes": boxes,
        "found": found,
        "ms_per_image": 1000 * float(np.mean(times)),
        "faces_detected": faces_total,
    }


def run_dlib(hog: Any, sp: Any, samples: list[Sample], style: BoxStyle, progress: bool) -> dict[str, Any]:
    """dlib with its own HOG detector (timed end to end per image) and from mapped GT boxes."""
    n = len(samples)
    pred = np.full((n, 68, 2), np.nan, np.float32)
    pred_gt = np.zeros((n, 68, 2), np.float32)
    rects: list[Any] = [None] * n
    found = np.zeros(n, bool)
    times, faces_total = [], 0
    for i, s in enumerate(tqdm(samples, desc="dlib: HOG + predictor", disable=not progress)):
        rgb = cv2.cvtColor(read_image(s.image), cv2.COLOR_BGR2RGB)
        t0 = time.perf_counter()
        dets = dlib_hog(hog, rgb)
        shapes = [sp(rgb, d) for d in dets]
        times.append(time.perf_counter() - t0)
        faces_total += len(dets)
        g = landmark_box(s.points)
        if dets:
            k = match(np.stack([rect_to_box(r) for r in dets]), g, MIN_IOU)
            if k >= 0:
                pred[i], rects[i], found[i] = shape_to_np(shapes[k]), dets[k], True
        pred_gt[i] = shape_to_np(sp(rgb, box_to_rect(style(g))))
    return {
        "pred": pred,
        "pred_gt": pred_gt,
        "rects": rects,
        "found": found,
        "ms_per_image": 1000 * float(np.mean(times)),
        "faces_detected": faces_total,
    }


# -------------------------------------------------------------------------------- speed


@contextlib.contextmanager
def opencv_threads(n: int):
    """OpenCV (the crops, the detector's resize) with n threads inside the block; as before after."""
    before = cv2.getNumThreads()
    cv2.setNumThreads(n)
    try:
        yield
    finally:
        cv2.setNumThreads(before)


def best_of(rounds: int, jobs: dict[str, list[Callable[[], None]]], threads: dict[str, int]) -> dict[str, float]:
    """Total time of each job's steps, taking for every step its best (least disturbed) time
    over `rounds` interleaved rounds: robust to other processes taking the cores now and then.
    OpenCV runs each job with `threads[job]` threads (ONNX Runtime's count is the ORT session's)."""
    best = {k: np.full(len(steps), np.inf) for k, steps in jobs.items()}
    for _ in range(rounds):
        for k, steps in jobs.items():
            cv2.setNumThreads(threads[k])
            for j, step in enumerate(steps):
                t0 = time.perf_counter()
                step()
                best[k][j] = min(best[k][j], time.perf_counter() - t0)
    return {k: float(v.sum()) for k, v in best.items()}


def speed(
    models: dict[str, tuple[str, int, bool]],
    detector: Path,
    threads: list[int],
    samples: list[Sample],
    ours_boxes: np.ndarray,
    dlib_rects: list,
    idx: np.ndarray,
    hog: Any,
    sp: Any,
    rounds: int,
    e2e_images: int,
    progress: bool,
) -> dict[str, Any]:
    """Landmark-stage ms/face and end-to-end ms/image, ours at each thread count and dlib."""
    bgr = {samples[i].image: read_image(samples[i].image) for i in idx}
    rgb = {k: cv2.cvtColor(v, cv2.COLOR_BGR2RGB) for k, v in bgr.items()}
    faces = [(samples[i].image, ours_boxes[i], dlib_rects[i]) for i in idx]
    nf = len(faces)
    jobs: dict[str, list[Callable[[], None]]] = {}
    jobs["dlib"] = [lambda im=im, r=r: sp(rgb[im], r) for im, _, r in faces]
    landmarkers = {}
    for name, (path, k, flip) in models.items():
        for t in threads:
            lm = Landmarker(model=path, detector=detector, threads=t, test_crops=k, flip_test=flip)
            landmarkers[(name, t)] = lm
            squares = [lm.squares(b[None]) for _, b, _ in faces]

            def one(im: str, sq: np.ndarray, lm=lm) -> None:
                lm.landmarks_in_squares(bgr[im], sq)  # crop + forward + decode + to image

            def eight(group: list, lm=lm) -> None:  # 8 faces through the network together
                lm.landmarks_for_images([bgr[im] for im, _ in group], [sq for _, sq in group])

            pairs = [(im, sq) for (im, _, _), sq in zip(faces, squares)]
            jobs[f"{name}|{t}|1"] = [lambda p=p, one=one: one(*p) for p in pairs]
            jobs[f"{name}|{t}|8"] = [lambda g=pairs[j : j + 8], eight=eight: eight(g) for j in range(0, nf, 8)]
            for step in jobs[f"{name}|{t}|1"][:2] + jobs[f"{name}|{t}|8"][:1]:
                step()  # warm up (ORT session arenas, page-in)
    if progress:
        print(f"timing the landmark stage on {nf} faces, best of {rounds} rounds per step ...", file=sys.stderr)
    with opencv_threads(1):  # best_of and the end-to-end loop below set each job's count
        best = best_of(rounds, jobs, {k: 1 if k == "dlib" else int(k.split("|")[1]) for k in jobs})
        per_face = {k: 1000 * v / nf for k, v in best.items()}

        # end to end on the first e2e_images distinct speed images, one pass each (HOG is slow)
        images = list(dict.fromkeys(im for im, _, _ in faces))[:e2e_images]
        e2e: dict[str, float] = {}
        t0 = time.perf_counter()
        for im in tqdm(images, desc="e2e dlib", disable=not progress):
            for r in dlib_hog(hog, rgb[im]):
                sp(rgb[im], r)
        e2e["dlib"] = 1000 * (time.perf_counter() - t0) / len(images)
        for (name, t), lm in landmarkers.items():
            cv2.setNumThreads(t)
            lm.detect(bgr[images[0]])
            t0 = time.perf_counter()
            for im in images:
                lm.detect(bgr[im])
            e2e[f"{name}|{t}"] = 1000 * (time.perf_counter() - t0) / len(images)
    return {"ms_per_face": per_face, "e2e_ms_per_image": e2e, "faces": nf, "e2e_images": len(images)}


# ------------------------------------------------------------------------------ report


def pct(v: float) -> str:
    return "-" if not np.isfinite(v) else f"{v * 100:.2f}"


def acc_row(system: str, how: str, s: dict[str, Any]) -> list[str]:
    det = f"{s['found']}/{s['faces']} ({s['detection_rate'] * 100:.1f}%)"
    return [system, how, det, pct(s["nme"]), pct(s["fr"]), "-" if not np.isfinite(s["auc"]) else f"{s['auc']:.4f}"]


def md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fast", default=str(ROOT / "pipnet_sdk" / "models" / "pipnet-fast.onnx"))
    ap.add_argument(
        "--r18",
        default=str(ROOT / "pipnet_sdk" / "models" / "pipnet-r18.onnx"),
        help="skipped with a note when the file does not exist",
    )
    ap.add_argument("--data", default="data/300w/test")
    ap.add_argument("--detector", default="models/yunet_n_dynamic.onnx")
    ap.add_argument("--limit", type=int, help="N images spread evenly over the test set (quick run)")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--test-crops", type=int, default=3, help="K for the '+K crops' rows (1: no such rows)")
    ap.add_argument(
        "--flip-test",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="rows '+flip +K crops': the K test crops, each also run mirrored",
    )
    ap.add_argument("--speed-faces", type=int, default=64)
    ap.add_argument("--e2e-images", type=int, default=24)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--dlib-fit-every", type=int, default=4, help="fit dlib's box style on every k-th training face")
    ap.add_argument("--out-dir", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args(argv)
    progress = not a.quiet
    out_dir = Path(a.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    if not Path(a.fast).exists():
        raise SystemExit(
            f"pipnet-fast model not found at {a.fast}: pass --fast PATH "
            "(python -m export.to_onnx runs/fast/best.pt --out /tmp/fast.onnx)"
        )
    models = {"pipnet-fast": (a.fast, 1, False)}
    notes = []
    if Path(a.r18).exists():
        models["pipnet-r18"] = (a.r18, 1, False)
    else:
        notes.append(f"pipnet-r18 skipped: no file at {a.r18} (pass --r18 PATH)")
    plain = list(models.items())
    crops = f" +{a.test_crops} crops" if a.test_crops > 1 else ""
    if crops:
        models.update({f"{name}{crops}": (path, a.test_crops, False) for name, (path, _, _) in plain})
    if a.flip_test:
        models.update({f"{name} +flip{crops}": (path, a.test_crops, True) for name, (path, _, _) in plain})
    detector = data_path(a.detector)
    samples = read_pts_folder(data_path(a.data))
    total = len(samples)
    if a.limit and a.limit < total:
        keep = np.unique(np.linspace(0, total - 1, a.limit).round().astype(int))
        samples = [samples[i] for i in keep]
    n = len(samples)
    load0 = os.getloadavg()
    gt = np.stack([s.points for s in samples])

    # box styles fitted on the training set
    yunet_style = train_box_style(detector, progress=progress)
    hog, sp, sp_path = dlib_models()
    dlib_style, dlib_fit_n = dlib_train_style(hog, sp_path, a.dlib_fit_every, progress)

    # accuracy passes (timed per image: OpenCV with as many threads as ONNX Runtime)
    ours: dict[str, dict[str, Any]] = {}
    with opencv_threads(a.threads[0]):
        for name, (path, k, flip) in models.items():
            lm = Landmarker(model=path, detector=detector, threads=a.threads[0], test_crops=k, flip_test=flip)
            r = run_ours(lm, samples, name, progress)
            r["nme"] = np.full(n, np.nan)
            r["nme"][r["found"]] = nme_per_face(r["pred"][r["found"]], gt[r["found"]])
            r["nme_gt"] = evaluate_gt(lm, samples, yunet_style, progress=progress)["nme"]
            ours[name] = r
    d = run_dlib(hog, sp, samples, dlib_style, progress)
    d["nme"] = np.full(n, np.nan)
    d["nme"][d["found"]] = nme_per_face(d["pred"][d["found"]], gt[d["found"]])
    d["nme_gt"] = nme_per_face(d["pred_gt"], gt)

    # every model uses the same detector, so their found sets agree; AND them to be safe
    shared = np.logical_and.reduce([r["found"] for r in ours.values()] + [d["found"]])

    rows, shared_rows = [], []
    for name, r in ours.items():
        rows.append(acc_row(name, "own detector (YuNet-n)", summary(r["nme"][r["found"]], n)))
        rows.append(acc_row(name, "GT box in YuNet style", summary(r["nme_gt"])))
        shared_rows.append(acc_row(name, "own detector (YuNet-n)", summary(r["nme"][shared], int(shared.sum()))))
    rows.append(acc_row("dlib 68", "own detector (HOG, upsample 1)", summary(d["nme"][d["found"]], n)))
    rows.append(acc_row("dlib 68", "GT box in HOG style (reference)", summary(d["nme_gt"])))
    shared_rows.append(
        acc_row("dlib 68", "own detector (HOG, upsample 1)", summary(d["nme"][shared], int(shared.sum())))
    )
    header = ["system", "boxes", "faces found", "NME %", "FR@0.1 %", "AUC@0.1"]

    curves = {name: r["nme"][shared] for name, r in ours.items()}
    curves["dlib 68 (HOG)"] = d["nme"][shared]
    ced_path = out_dir / "ced_300w.png"
    plot_ced(curves, ced_path, title=f"300W common test, faces both YuNet and dlib-HOG find (n={int(shared.sum())})")

    # speed on the shared faces
    idx = np.flatnonzero(shared)
    idx = idx[np.unique(np.linspace(0, len(idx) - 1, min(a.speed_faces, len(idx))).round().astype(int))]
    sp_res = speed(
        models,
        detector,
        a.threads,
        samples,
        ours["pipnet-fast"]["boxes"],
        d["rects"],
        idx,
        hog,
        sp,
        a.rounds,
        a.e2e_images,
        progress,
    )
    pf, e2e = sp_res["ms_per_face"], sp_res["e2e_ms_per_image"]
    speed_rows = []
    for name in models:
        for t in a.threads:
            for b in (1, 8):
                speed_rows.append(
                    [
                        name,
                        f"landmarks, {t} thread{'s' if t > 1 else ''}, batch {b}",
                        f"{pf[f'{name}|{t}|{b}']:.2f}",
                        f"{pf[f'{name}|{t}|{b}'] / pf['dlib']:.2f}x",
                    ]
                )
    speed_rows.append(["dlib 68", "shape predictor (1 thread, per face)", f"{pf['dlib']:.2f}", "1.00x"])
    e2e_rows = []
    for name, r in ours.items():
        for t in a.threads:
            e2e_rows.append(
                [
                    name,
                    f"YuNet-n + landmarks, {t} thread{'s' if t > 1 else ''}",
                    f"{r['ms_per_image']:.1f}" if t == a.threads[0] else "-",
                    f"{e2e[f'{name}|{t}']:.1f}",
                ]
            )
    e2e_rows.append(["dlib 68", "HOG (upsample 1) + predictor", f"{d['ms_per_image']:.1f}", f"{e2e['dlib']:.1f}"])

    # targets
    fast_shared = float(np.mean(ours["pipnet-fast"]["nme"][shared]))
    ratio = pf[f"pipnet-fast|{a.threads[0]}|1"] / pf["dlib"]
    checks = [
        ("pipnet-fast NME on the shared subset <= 3.0%", f"{fast_shared * 100:.2f}%", fast_shared <= TARGET_FAST_NME),
        (
            f"pipnet-fast landmark ms/face ({a.threads[0]} thread, batch 1) <= 2x dlib's",
            f"{pf[f'pipnet-fast|{a.threads[0]}|1']:.2f} vs {pf['dlib']:.2f} ms ({ratio:.2f}x)",
            ratio <= TARGET_SPEED_RATIO,
        ),
    ]
    r18_names = [k for k in ours if k.startswith("pipnet-r18")]
    for name in r18_names:
        r18_shared = float(np.mean(ours[name]["nme"][shared]))
        checks.append(
            (f"{name} NME on the shared subset <= 2.85%", f"{r18_shared * 100:.2f}%", r18_shared <= TARGET_R18_NME)
        )
    if not r18_names:
        checks.append(("pipnet-r18 NME on the shared subset <= 2.85%", "no model", None))
    check_rows = [[c, v, "SKIP" if ok is None else ("PASS" if ok else "FAIL")] for c, v, ok in checks]

    load1 = os.getloadavg()
    sel = f"{n} of {total} images" + (f" (--limit {a.limit}, spread evenly)" if n < total else "")
    text = "\n".join(
        [
            "# Landmarks benchmark: 300W common test",
            "",
            f"Run {datetime.datetime.now().isoformat(timespec='seconds')} on {platform.node()} "
            f"({cpu_line()}), {sel}. "
            f"Load average at start/end: {load0[0]:.1f}/{load1[0]:.1f}"
            + (
                " - other processes were using the cores, so times are slower than on an idle machine."
                if max(load0[0], load1[0]) > 0.5 * (os.cpu_count() or 1)
                else "."
            ),
            "",
            "Models: "
            + ", ".join(f"{k} = `{v}`" for k, (v, _, _) in plain)
            + (f' ("+{a.test_crops} crops": the same file with test_crops={a.test_crops})' if crops else "")
            + (' ("+flip": with flip_test=True as well)' if a.flip_test else "")
            + f"; detector `{detector.name}`; "
            f"dlib `{Path(sp_path).name}`.",
            f"NME is inter-ocular (outer eye corners, points 36/45), mean over faces; a face is found when a "
            f"detection overlaps its landmark box with IoU > {MIN_IOU}. GT-box rows: the landmark box mapped "
            f"to the detector's box style, fitted on 300W training faces "
            f"(YuNet: {np.round(yunet_style.coef, 3).tolist()}; "
            f"dlib HOG on {dlib_fit_n} faces: {np.round(dlib_style.coef, 3).tolist()}; dx, dy, sw, sh).",
            *(f"Note: {x}." for x in notes),
            "",
            "## Accuracy, faces each system finds",
            "",
            md_table(header, rows),
            "",
            f"## Accuracy, the {int(shared.sum())} faces both YuNet-n and dlib-HOG find (fair comparison)",
            "",
            md_table(header, shared_rows),
            "",
            f"CED plot: `{ced_path.relative_to(ROOT) if ced_path.is_relative_to(ROOT) else ced_path}`",
            "",
            f"## Speed, landmark stage (crop + forward + decode), {sp_res['faces']} faces of the shared subset, "
            f"each face (batch) timed {a.rounds} times, best kept",
            "",
            md_table(["system", "configuration", "ms / face", "vs dlib"], speed_rows),
            "",
            "## Speed, end to end (detector + landmarks on every face found)",
            "",
            md_table(
                [
                    "system",
                    "configuration",
                    f"ms / image, all {n} images",
                    f"ms / image, {sp_res['e2e_images']} images",
                ],
                e2e_rows,
            ),
            "",
            "Faces detected in total: "
            + ", ".join(f"{k} {r['faces_detected']}" for k, r in ours.items())
            + f", dlib {d['faces_detected']} (on {n} images with one labeled face each).",
            "",
            "## Targets",
            "",
            md_table(["target", "measured", "result"], check_rows),
            "",
        ]
    )
    print(text)
    (out_dir / "landmarks.md").write_text(text)
    (out_dir / "landmarks.json").write_text(
        json.dumps(
            {
                "images": n,
                "shared": int(shared.sum()),
                "ms_per_face": pf,
                "e2e_ms_per_image": e2e,
                "accuracy": {
                    h: dict(zip(header, r))
                    for h, r in [(f"{r[0]} / {r[1]}", r) for r in rows]
                    + [(f"shared: {r[0]} / {r[1]}", r) for r in shared_rows]
                },
                "targets": {c: {"measured": v, "pass": ok} for c, v, ok in checks},
            },
            indent=1,
        )
    )
    print(f"wrote {out_dir / 'landmarks.md'}, {out_dir / 'landmarks.json'}, {ced_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
