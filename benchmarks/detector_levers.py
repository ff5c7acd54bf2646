"""Issue 23: measure each speed lever of our end-to-end path on one core, without editing pipnet_sdk/.

    PIPNET_MODELS_DIR=/work/shared/models python benchmarks/detector_levers.py [--time-images 120]
        [--repeats 3] [--cpu 0] [--levers NAME ...]

Each lever is a detector built by benchmarks/_yunet_fast.py (a prototype of the proposed YuNet code)
or pipnet_sdk's own YuNet (the baseline). For every lever, on the three sets of
benchmarks/end_to_end.py (prepared there, under .cache/end_to_end/):

  * faces found / extra detections (a detection's centre in the reference box), faces lost and
    gained against the baseline, and the mean IoU of its boxes with the baseline's on the faces both find;
  * detector ms per image (--time-images images of each set; every lever runs each image
    --repeats times, levers interleaved image by image, best time kept): median, mean, and the median
    of per-image ratios to the baseline measured in the same loop;
  * end to end (Landmarker(detector=lever, threads=1).detect) for the levers marked e2e;
  * session creation time with and without a saved optimized model (--startup).

int8 YuNet files are quantized here (onnxruntime quantize_static, QDQ, output heads kept fp32,
per-channel s8 weights with reduce_range=True, u8 activations, MinMax calibration on --calib 300W
*training* images at a 640-px long side) and cached under .cache/end_to_end/models/.

Results: stdout, benchmarks/results/detector_levers.md and .json.
"""
from __future__ import annotations

import argparse
import datetime
import glob
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from end_to_end import (ROOT, SET_TITLES, Item, centre_hits, cpu_line, start_one_core_run, write_results,  # noqa: E402
                        prepare_300w, prepare_groups, shared_dir)
from _yunet_fast import FastYuNet, quantize_yunet  # noqa: E402
from pipnet_sdk.boxes import iou as box_iou  # noqa: E402  (after end_to_end's --sdk handling)


@dataclass
class Lever:
    """One row: how to build the detector, and what it changes."""

    name: str
    what: str
    build: Callable[[], Any]
    e2e: bool = False
    same_output: bool = False  # the lever changes no output (checked all the same)
    built: Any = field(default=None, repr=False)


def model_files(cache: Path, calib: int, progress: bool) -> dict[str, str]:
    """YuNet files: fp32 n/s from $PIPNET_MODELS_DIR (or shared/models), int8 made and cached here."""
    src = Path(os.environ.get("PIPNET_MODELS_DIR", shared_dir() / "models"))
    files = {"n": str(src / "yunet_n_dynamic.onnx"), "s": str(src / "yunet_s_dynamic.onnx")}
    out = cache / "models"
    out.mkdir(parents=True, exist_ok=True)
    want = {"n-int8-h": ("n", {}), "n-int8-h-x0": ("n", {"exclude": ["Conv_0"]}),
            "s-int8-h-x0": ("s", {"exclude": ["Conv_0"]}),
            "n-int8-h-x0-8bit": ("n", {"exclude": ["Conv_0"], "reduce_range": False})}
    images = None
    for name, (base, kw) in want.items():
        dst = out / f"yunet_{name}_calib{calib}.onnx"
        if not dst.exists():
            if images is None:
                train = sorted(glob.glob(str(shared_dir() / "data/300w/train/*/*.jpg"))
                               + glob.glob(str(shared_dir() / "data/300w/train/*/*.png")))
                images = []
                picks = train[::max(1, len(train) // calib)][:calib]
                for p in tqdm(picks, desc="calibration images", disable=not progress):
                    im = cv2.imread(p)
                    f = 640 / max(im.shape[:2])
                    interp = cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR
                    images.append(cv2.resize(im, None, fx=f, fy=f, interpolation=interp))
            # heads stay fp32: the obj logits span a range so wide that 8 bits flatten them (obj ~ 0.5)
            kw = {"reduce_range": True, "exclude_heads": True, **kw}
            quantize_yunet(files[base], str(dst), images, **kw)
        files[name] = str(dst)
    return files


def levers(files: dict[str, str]) -> list[Lever]:
    from pipnet_sdk.detect import YuNet

    def fy(model: str = "n", **kw: Any) -> Callable[[], FastYuNet]:
        return lambda: FastYuNet(files[model], **kw)

    sdk = "prep='sdk', decode='sdk'"
    return [
        Lever("baseline", "pipnet_sdk YuNet: YuNet-n fp32, long side 640, ORT_ENABLE_ALL",
              lambda: YuNet(files["n"], size=640, threads=1), e2e=True),
        Lever("proto-as-sdk", f"prototype with the SDK's input and decoding ({sdk}): checks the prototype",
              fy(prep="sdk", decode="sdk"), same_output=True),
        Lever("decode-threshold", "score first, decode only priors >= threshold; prior grids cached",
              fy(prep="sdk", decode="threshold"), same_output=True),
        Lever("prep-blob", "uint8 copyMakeBorder + cv2.dnn.blobFromImage (contiguous NCHW, one pass)",
              fy(prep="blob", decode="sdk"), same_output=True),
        Lever("prep-reuse", "cached contiguous NCHW float buffer per shape, filled per channel",
              fy(prep="reuse", decode="sdk"), same_output=True),
        Lever("code-levers", "prep-blob + decode-threshold (what yunet.py can do with no model change)",
              fy(prep="blob", decode="threshold"), same_output=True, e2e=True),
        Lever("ort-extended", "graph optimization ORT_ENABLE_EXTENDED (no NCHWc layout)",
              fy(prep="blob", decode="threshold", session_options={"level": "extended"}), same_output=True),
        Lever("ort-no-arena", "enable_cpu_mem_arena=False", fy(prep="blob", decode="threshold",
                                                               session_options={"arena": False}), same_output=True),
        Lever("ort-no-spin", "session.intra_op.allow_spinning=0",
              fy(prep="blob", decode="threshold", session_options={"spinning": False}), same_output=True),
        Lever("cv2-dnn", "cv2.dnn instead of onnxruntime", fy(prep="blob", decode="threshold", backend="cv2")),
        Lever("size-480", "YuNet-n at long side 480", fy(size=480)),
        Lever("size-320", "YuNet-n at long side 320", fy(size=320), e2e=True),
        Lever("size-320-cascade", "YuNet-n at 320; again at 640 when 320 finds no face", fy(size=320, cascade=(640,)),
              e2e=True),
        Lever("size-256-cascade", "YuNet-n at 256; again at 640 when 256 finds no face", fy(size=256, cascade=(640,)),
              e2e=True),
        Lever("size-160-cascade", "YuNet-n at 160; again at 640 when 160 finds no face", fy(size=160, cascade=(640,)),
              e2e=True),
        Lever("s-640", "YuNet-s at long side 640", fy("s")),
        Lever("s-320", "YuNet-s at long side 320", fy("s", size=320), e2e=True),
        Lever("s-320-cascade", "YuNet-s at 320; again at 640 (YuNet-s) when 320 finds no face",
              fy("s", size=320, cascade=(640,)), e2e=True),
        Lever("int8-640", "YuNet-n int8 (7-bit weights; output heads fp32) at 640", fy("n-int8-h")),
        Lever("int8-x0-640", "as int8-640, first conv (3 input channels) fp32 too", fy("n-int8-h-x0")),
        Lever("int8-x0-8bit-640", "as int8-x0 with 8-bit weights (reduce_range=False)", fy("n-int8-h-x0-8bit")),
        Lever("int8-x0-320", "YuNet-n int8 (first conv fp32) at 320", fy("n-int8-h-x0", size=320), e2e=True),
        Lever("s-int8-x0-320", "YuNet-s int8 (first conv fp32) at 320", fy("s-int8-h-x0", size=320)),
    ]


def load(item: Item) -> np.ndarray:
    return cv2.imread(item.path)


def match_iou(a: np.ndarray, b: np.ndarray, refs: np.ndarray) -> tuple[list[float], int, int]:
    """Per reference face: IoU of a's and b's detections found in it (both found); lost (a found, b not);
    gained (b found, a not)."""
    def owner(d: np.ndarray) -> dict[int, np.ndarray]:
        out: dict[int, np.ndarray] = {}
        for box in d:
            cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
            for r, ref in enumerate(refs):
                if ref[0] <= cx <= ref[2] and ref[1] <= cy <= ref[3] and r not in out:
                    out[r] = box
        return out
    oa, ob = owner(a), owner(b)
    ious = []
    for r in set(oa) & set(ob):
        ious.append(float(box_iou(oa[r], ob[r])))
    return ious, len(set(oa) - set(ob)), len(set(ob) - set(oa))


def accuracy(levs: list[Lever], sets: dict[str, list[Item]], progress: bool) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for key, items in sets.items():
        base_boxes = []
        res = {lv.name: {"found": 0, "extra": 0, "lost": 0, "gained": 0, "ious": [], "max_dev": 0.0} for lv in levs}
        for it in tqdm(items, desc=f"accuracy set {key}", disable=not progress):
            img = load(it)
            b0 = None
            for lv in levs:
                b, _ = lv.built.detect(img)
                b = np.asarray(b, np.float32).reshape(-1, 4)
                f, e = centre_hits(b, it.refs)
                r = res[lv.name]
                r["found"] += f
                r["extra"] += e
                if b0 is None:
                    b0 = b
                    continue
                ious, lost, gained = match_iou(b0, b, it.refs)
                r["ious"] += ious
                r["lost"] += lost
                r["gained"] += gained
                if b.shape == b0.shape:
                    r["max_dev"] = max(r["max_dev"], float(np.abs(b - b0).max()) if len(b) else 0.0)
                else:
                    r["max_dev"] = float("inf")
            base_boxes.append(b0)
        for r in res.values():
            r["mean_iou"] = float(np.mean(r["ious"])) if r["ious"] else None
            del r["ious"]
        out[key] = {"refs": sum(len(it.refs) for it in items), "images": len(items), "levers": res}
    return out


def timing(levs: list[Lever], sets: dict[str, list[Item]], n: int, repeats: int,
           lm_factory: Callable[[Any], Any] | None, progress: bool) -> dict[str, dict[str, Any]]:
    """Detector (and, for e2e levers, end-to-end) ms per image, interleaved, best of `repeats`."""
    out: dict[str, dict[str, Any]] = {}
    e2e = {lv.name: lm_factory(lv.built) for lv in levs if lv.e2e} if lm_factory else {}
    for key, items in sets.items():
        sel = items if len(items) <= n else [items[i] for i in np.linspace(0, len(items) - 1, n).round().astype(int)]
        det = {lv.name: [] for lv in levs}
        end = {name: [] for name in e2e}
        calls: list[tuple[str, str, Callable[[np.ndarray], Any]]] = [("det", lv.name, lv.built.detect) for lv in levs]
        calls += [("e2e", name, lm.detect) for name, lm in e2e.items()]
        img0 = load(sel[0])
        for _, _, fn in calls:  # warm up
            fn(img0)
        for i, it in enumerate(tqdm(sel, desc=f"timing set {key}", disable=not progress)):
            img = load(it)
            best = [float("inf")] * len(calls)
            for r in range(repeats):
                for k in range(len(calls)):
                    j = (k + i + r) % len(calls)  # rotate the order
                    t0 = time.perf_counter()
                    calls[j][2](img)
                    best[j] = min(best[j], time.perf_counter() - t0)
            for (kind, name, _), t in zip(calls, best):
                (det if kind == "det" else end)[name].append(t * 1000)
        base = np.asarray(det[levs[0].name])
        res: dict[str, Any] = {"images": len(sel), "det": {}, "e2e": {}}
        for name, v in det.items():
            a = np.asarray(v)
            res["det"][name] = {"median": float(np.median(a)), "mean": float(a.mean()),
                                "ratio": float(np.median(a / base))}
        if end:
            eb = np.asarray(end[levs[0].name]) if levs[0].name in end else None
            for name, v in end.items():
                a = np.asarray(v)
                res["e2e"][name] = {"median": float(np.median(a)), "mean": float(a.mean()),
                                    "ratio": float(np.median(a / eb)) if eb is not None else None}
        out[key] = res
    return out


def startup(files: dict[str, str], cache: Path, rounds: int = 5) -> dict[str, float]:
    """Session creation ms: the plain file vs an optimized model saved by onnxruntime (level ALL, then
    loaded with optimizations off: what 'saving the optimized model' would ship)."""
    import onnxruntime as ort

    from _yunet_fast import make_ort_session

    opt = str(cache / "models" / "yunet_n_optimized_all.onnx")
    make_ort_session(files["n"], optimized_path=opt)
    out: dict[str, float] = {}
    for name, fn in (("plain file, ORT_ENABLE_ALL", lambda: make_ort_session(files["n"])),
                     ("saved optimized file, optimizations off", lambda: make_ort_session(opt, level="disable"))):
        ts = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        out[name] = 1000 * float(np.median(ts))
    # the saved file runs as fast as the plain one (same graph once optimized)
    x = np.random.default_rng(0).uniform(0, 255, (1, 3, 480, 640)).astype(np.float32)
    sessions = (("run ms, plain", make_ort_session(files["n"])),
                ("run ms, saved optimized", make_ort_session(opt, level="disable")))
    for name, s in sessions:
        ts = []
        for _ in range(15):
            t0 = time.perf_counter()
            s.run(None, {"input": x})
            ts.append(time.perf_counter() - t0)
        out[name] = 1000 * float(min(ts))
    out["onnxruntime"] = ort.__version__  # type: ignore[assignment]
    return out


def report(meta: dict[str, Any], levs: list[Lever], acc: dict[str, Any], tim: dict[str, Any],
           start: dict[str, Any] | None) -> str:
    L = ["# Detector levers (issue 23), one core", ""]
    L.append(f"Run {meta['date']}: **{meta['cpu_line']}**; pinned to core {meta['cpu']}, 1 thread; load average "
             f"{meta['load_start']:.2f}/{meta['load_end']:.2f} at start/end. onnxruntime {meta['ort']}, "
             f"OpenCV {meta['cv2']}.")
    L.append("")
    L.append("Faces found: a detection's centre in the reference box (see end_to_end.md). *lost/gained*: faces the "
             "baseline finds and the lever does not / the other way round. *IoU*: mean IoU of the lever's box with "
             "the baseline's on faces both find. *max dev*: largest box coordinate difference to the baseline, px "
             "(0 = identical output). Times: detector only, ms per image, best of "
             f"{meta['repeats']} interleaved runs per image; *x base*: median of per-image ratios to the baseline "
             "in the same loop (< 1 = faster).")
    for key in acc:
        A, T = acc[key], tim.get(key)
        L += ["", f"## {SET_TITLES[key].format(face_px=meta['face_px'])}", ""]
        timed = f"{T['images']} images" if T else "not timed"
        L.append(f"| lever | what | faces found ({A['images']} images) | extra | lost | gained | IoU | max dev | "
                 f"det ms median ({timed}) | mean | x base |")
        L.append("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for lv in levs:
            r = A["levers"][lv.name]
            t = T["det"].get(lv.name) if T else None
            iou = "-" if r["mean_iou"] is None or lv.name == levs[0].name else f"{r['mean_iou']:.3f}"
            dev = "-" if lv.name == levs[0].name else ("boxes differ in number" if r["max_dev"] == float("inf")
                                                       else f"{r['max_dev']:.2g}")
            times = f"{t['median']:.2f} | {t['mean']:.2f} | {t['ratio']:.2f}" if t else "- | - | -"
            L.append(f"| {lv.name} | {lv.what} | {r['found']}/{A['refs']} | {r['extra']} | {r['lost']} | "
                     f"{r['gained']} | {iou} | {dev} | {times} |")
        if T and T["e2e"]:
            L += ["", "End to end (Landmarker(detector=lever, threads=1).detect, pipnet-fast landmarks), same loop:",
                  ""]
            L.append("| lever | e2e ms median | mean | x base |")
            L.append("| --- | --- | --- | --- |")
            for name, t in T["e2e"].items():
                ratio = "-" if t["ratio"] is None else f"{t['ratio']:.2f}"
                L.append(f"| {name} | {t['median']:.2f} | {t['mean']:.2f} | {ratio} |")
    if start:
        L += ["", "## Session creation (YuNet-n)", "", "| | ms |", "| --- | --- |"]
        for k, v in start.items():
            if k != "onnxruntime":
                L.append(f"| {k} | {v:.2f} |")
    L.append("")
    return "\n".join(L)


def sweep_table(sweep: dict[int, dict[str, int]], levs: list[Lever]) -> str:
    """Faces found per lever against the face height of set c."""
    sizes = sorted(sweep)
    L = ["", "## Faces found against face size (set c: 300W test faces pasted on a 640x480 canvas; face "
         "height = ground-truth landmark box, brow to chin)", "",
         "| lever | " + " | ".join(f"{fp} px" for fp in sizes) + " |", "| --- |" + " --- |" * len(sizes)]
    for lv in levs:
        L.append(f"| {lv.name} | " + " | ".join(f"{sweep[fp][lv.name]}/{sweep[fp]['_refs']}" for fp in sizes) + " |")
    L.append("")
    return "\n".join(L)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", nargs="*", default=["a", "b", "c"], choices=["a", "b", "c"])
    ap.add_argument("--face-sweep", nargs="*", type=int, default=[],
                    help="also: faces found on set c with faces of these heights (px), e.g. 20 28 32 40 48")
    ap.add_argument("--levers", nargs="+", default=None, help="only these levers (the baseline is always run)")
    ap.add_argument("--time-images", type=int, default=120, help="images timed per set (evenly spaced)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cpu", type=int, default=0, help="core to pin to (-1: none)")
    ap.add_argument("--calib", type=int, default=40, help="300W training images for int8 calibration")
    ap.add_argument("--face-px", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-accuracy", action="store_true")
    ap.add_argument("--no-e2e", action="store_true")
    ap.add_argument("--no-timing", action="store_true", help="faces found only")
    ap.add_argument("--startup", action="store_true", help="also time session creation (saved optimized model)")
    ap.add_argument("--cache", default=str(ROOT / ".cache" / "end_to_end"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "detector_levers"))
    ap.add_argument("--sdk", default=None, help="import pipnet_sdk from this folder (see end_to_end.py --sdk)")
    ap.add_argument("--no-progress", action="store_true")
    a = ap.parse_args()
    progress = not a.no_progress
    info = start_one_core_run(a.cpu)
    load_start = os.getloadavg()[0]
    cache = Path(a.cache)
    sets: dict[str, list[Item]] = {}
    if "a" in a.sets:
        sets["a"] = prepare_300w(cache, None, a.seed, progress)
    if "b" in a.sets:
        sets["b"] = prepare_groups(cache, "yunet-n", progress)[0]
    if "c" in a.sets:
        sets["c"] = prepare_300w(cache, a.face_px, a.seed, progress)
    files = model_files(cache, a.calib, progress)
    levs = levers(files)
    if a.levers:
        unknown = set(a.levers) - {lv.name for lv in levs}
        if unknown:
            raise SystemExit(f"unknown levers {sorted(unknown)}; known: {[lv.name for lv in levs]}")
        levs = [levs[0]] + [lv for lv in levs[1:] if lv.name in a.levers]
    for lv in levs:
        lv.built = lv.build()
    sweep: dict[int, dict[str, int]] = {}
    for fp in a.face_sweep:
        items = prepare_300w(cache, fp, a.seed, progress)
        r = accuracy(levs, {"c": items}, progress)["c"]
        sweep[fp] = {name: v["found"] for name, v in r["levers"].items()}
        sweep[fp]["_refs"] = r["refs"]
    if not sets:
        md = (f"# Detector levers (issue 23): faces found against face size\n\nRun "
              f"{datetime.datetime.now().isoformat(timespec='seconds')}; detectors as in detector_levers.md; a face is "
              "found when a detection's centre lies in its ground-truth landmark box.\n" + sweep_table(sweep, levs))
        print(md)
        write_results(a.out, md, sweep)
        return
    acc = {} if a.no_accuracy else accuracy(levs, sets, progress)
    lm_factory = None
    if not a.no_e2e:
        from pipnet_sdk import Landmarker

        lm_factory = lambda det: Landmarker(detector=det, threads=1)  # noqa: E731
    tim = {} if a.no_timing else timing(levs, sets, a.time_images, a.repeats, lm_factory, progress)
    if not acc:  # timing only: empty accuracy rows
        acc = {k: {"refs": sum(len(i.refs) for i in v), "images": len(v),
                   "levers": {lv.name: {"found": 0, "extra": 0, "lost": 0, "gained": 0, "mean_iou": None,
                                        "max_dev": 0.0} for lv in levs}} for k, v in sets.items()}
    start = startup(files, cache) if a.startup else None
    import onnxruntime as ort

    meta = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "host": platform.node(), "cpu": a.cpu,
            "cpu_info": info, "cpu_line": cpu_line(info), "repeats": a.repeats, "face_px": a.face_px,
            "load_start": load_start, "load_end": os.getloadavg()[0], "ort": ort.__version__, "cv2": cv2.__version__,
            "files": files, "levers": {lv.name: lv.what for lv in levs}}
    md = report(meta, levs, acc, tim, start) + (sweep_table(sweep, levs) if sweep else "")
    print(md)
    write_results(a.out, md, {"meta": meta, "accuracy": acc, "timing": tim, "startup": start})


if __name__ == "__main__":
    main()
