"""Benchmark of the speed target, "Faster than MediaPipe end to end on one core, on every CPU".

    PIPNET_MODELS_DIR=/work/shared/models python benchmarks/end_to_end.py [--sets a b c] [--repeats 2]
        [--limit N] [--cpu 0] [--mp-python .venv-mp/bin/python] [--no-mediapipe] [--no-dlib]

Side by side, on one core (every system pinned to core --cpu, one thread each), interleaved image by
image (A, B, C, then B, C, A, ...; each image --repeats times per system, best time kept):

  * ours: ``pipnet_sdk.Landmarker(threads=1).detect`` (YuNet-n at long side 640 + pipnet-fast),
    cv2.setNumThreads(1);
  * MediaPipe Face Mesh (legacy ``solutions.face_mesh``, static_image_mode=True, refine_landmarks
    off: BlazeFace short-range detector + 468-point mesh) in its own virtual environment, driven
    through ``benchmarks/_mediapipe_worker.py`` (MediaPipe is never a dependency of pipnet-sdk);
  * dlib: HOG frontal face detector (upsample --dlib-upsample) + the 68-point shape predictor from
    ``face_recognition_models``.

Sets (prepared once, as PNG under .cache/end_to_end/, so that every system reads the same pixels):

  a. the 554 300W common-test images resized to a 640-px long side;
  b. the group photos in $PIPNET_SHARED/data/samples resized to a 640-px long side; the reference
     faces are those ours finds on the full-size photo with YuNet run at full size (checked against
     the counts stated in STATED_FACES, counted by eye);
  c. small faces: each 300W test image scaled so that its face (ground-truth landmark box) is
     --face-px tall and pasted (seeded random position) on a grey 640x480 canvas.

A face counts as found when a detection's centre lies in its reference box (ground-truth landmark
box, or ours-at-full-size box for set b); "extra" are detections whose centre lies in no reference
box. Times exclude image decoding and BGR->RGB conversion (done before the clock starts).

Landmark stage alone (set a faces that both ours and dlib found, each with its own detector's box):
ours ``Landmarker.landmarks(image, box)`` one face per call vs dlib's shape predictor, 1 thread.

Results: stdout, benchmarks/results/end_to_end.md and .json (--out to change).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from benchmarks.cpu import cpu_info, cpu_line  # noqa: E402


def _sdk_arg(argv: Sequence[str]) -> str | None:
    """--sdk must take effect before anything imports pipnet_sdk (export.data does)."""
    for i, v in enumerate(argv):
        if v == "--sdk" and i + 1 < len(argv):
            return argv[i + 1]
        if v.startswith("--sdk="):
            return v.split("=", 1)[1]
    return None


if _sdk_arg(sys.argv[1:]):
    sys.path.insert(0, str(Path(_sdk_arg(sys.argv[1:])).resolve()))  # type: ignore[arg-type]

from export.data import landmark_box, read_pts_folder, shared_dir  # noqa: E402  (after --sdk)

SIZE = 640
CANVAS = (640, 480)  # w, h of the small-face canvas
#: --proto rows: the SDK's YuNet (one thread) with other options; model n or s, then YuNet's options
PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    "n640-fast": ("n", {"size": 640}),
    "n480-fast": ("n", {"size": 480}),
    "n320-fast": ("n", {"size": 320}),
    "n320-cascade": ("n", {"size": 320, "fallback_sizes": (640,)}),
    "n256-cascade": ("n", {"size": 256, "fallback_sizes": (640,)}),
    "n160-cascade": ("n", {"size": 160, "fallback_sizes": (640,)}),
    "s320-fast": ("s", {"size": 320}),
    "s320-cascade": ("s", {"size": 320, "fallback_sizes": (640,)}),
}
STATED_FACES = {"group_1.jpg": 2, "group_2.jpg": 4, "group_3.jpg": 4, "group_4.jpg": 6, "no_face.jpg": 0}
SET_TITLES = {
    "a": "a. 300W common test, 640-px long side",
    "b": "b. group photos, 640-px long side",
    "c": "c. small faces: 300W test faces {face_px} px tall on a 640x480 canvas",
}


# ------------------------------------------------------------------------------- machine


def write_results(out: str | Path, md: str, data: dict[str, Any]) -> None:
    """Write OUT.md (the printed tables) and OUT.json (the figures behind them)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(md)
    out.with_suffix(".json").write_text(json.dumps(data, indent=1, default=str))
    print(f"wrote {out.with_suffix('.md')} and {out.with_suffix('.json')}")


def pin(cpu: int) -> None:
    """Pin every thread of this process (NumPy's BLAS pool included) and its future threads to `cpu`."""
    for tid in os.listdir("/proc/self/task"):
        os.sched_setaffinity(int(tid), {cpu})


def start_one_core_run(cpu: int) -> dict[str, Any]:
    """Pin to `cpu` (none when negative), give OpenCV one thread, print the CPU line; returns cpu_info()."""
    if cpu >= 0:
        pin(cpu)
    cv2.setNumThreads(1)
    info = cpu_info()
    print(cpu_line(info), flush=True)
    return info


# --------------------------------------------------------------------------------- sets


@dataclass
class Item:
    """One prepared image and its reference face boxes (K, 4) x1, y1, x2, y2."""

    name: str
    path: str
    refs: np.ndarray


def _resize_long(img: np.ndarray, size: int) -> tuple[np.ndarray, float, float]:
    h, w = img.shape[:2]
    f = size / max(h, w)
    nw, nh = max(1, round(w * f)), max(1, round(h * f))
    out = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR)
    return out, nw / w, nh / h


def _scale_points(p: np.ndarray, fx: float, fy: float, ox: float = 0, oy: float = 0) -> np.ndarray:
    """Pixel-centre coordinates through a resize by (fx, fy) and a shift by (ox, oy)."""
    return np.stack([(p[:, 0] + 0.5) * fx - 0.5 + ox, (p[:, 1] + 0.5) * fy - 0.5 + oy], 1)


def _load_manifest(d: Path) -> list[Item] | None:
    m = d / "manifest.json"
    if not m.exists():
        return None
    return [
        Item(e["name"], str(d / e["file"]), np.asarray(e["refs"], np.float32).reshape(-1, 4))
        for e in json.loads(m.read_text())
    ]


def _save_manifest(d: Path, items: list[tuple[str, str, np.ndarray]]) -> list[Item]:
    (d / "manifest.json").write_text(json.dumps([{"name": n, "file": f, "refs": r.tolist()} for n, f, r in items]))
    return _load_manifest(d)  # type: ignore[return-value]


def prepare_300w(cache: Path, face_px: int | None, seed: int, progress: bool) -> list[Item]:
    """Set a (face_px None: resized to SIZE long side) or set c (face scaled to face_px, on a canvas)."""
    d = cache / ("a_300w_640" if face_px is None else f"c_300w_face{face_px}_640x480_seed{seed}")
    got = _load_manifest(d)
    if got is not None:
        return got
    d.mkdir(parents=True, exist_ok=True)
    samples = read_pts_folder(shared_dir() / "data/300w/test")
    rng = np.random.default_rng(seed)
    rows = []
    for sample in tqdm(samples, desc=f"prepare set {'a' if face_px is None else 'c'}", disable=not progress):
        image, points = sample.image, sample.points
        img = cv2.imread(image)
        src = Path(image)
        name = f"{src.parent.name}_{src.stem}"
        if face_px is None:
            out, fx, fy = _resize_long(img, SIZE)
            pts = _scale_points(points, fx, fy)
        else:
            lb = landmark_box(points)
            f = face_px / float(lb[3] - lb[1])
            h, w = img.shape[:2]
            nw, nh = max(1, round(w * f)), max(1, round(h * f))
            small = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR)
            p = _scale_points(points, nw / w, nh / h)
            fb = landmark_box(p)
            cw, ch = CANVAS
            m = 8  # the face stays this far inside the canvas
            offs = []
            for lo_face, hi_face, n, c in ((fb[0], fb[2], nw, cw), (fb[1], fb[3], nh, ch)):
                lo = max(m - lo_face, min(0, c - n))  # face inside; image inside when it fits
                hi = min(c - m - hi_face, max(0, c - n))
                offs.append(int(round(rng.uniform(lo, hi))) if lo <= hi else int(round((lo + hi) / 2)))
            ox, oy = offs
            out = np.full((ch, cw, 3), 127, np.uint8)
            x0, y0 = max(0, ox), max(0, oy)
            x1, y1 = min(cw, ox + nw), min(ch, oy + nh)
            out[y0:y1, x0:x1] = small[y0 - oy : y1 - oy, x0 - ox : x1 - ox]
            pts = p + np.array([ox, oy], np.float32)
        cv2.imwrite(str(d / f"{name}.png"), out)
        rows.append((name, f"{name}.png", landmark_box(pts)[None]))
    return _save_manifest(d, rows)


def prepare_groups(cache: Path, detector: str, progress: bool) -> tuple[list[Item], dict[str, Any]]:
    """Set b; reference boxes from ours with YuNet at each photo's full size."""
    from pipnet_sdk import Landmarker

    d = cache / "b_samples_640"
    d.mkdir(parents=True, exist_ok=True)
    rows, notes = [], {}
    for src in tqdm(sorted((shared_dir() / "data/samples").glob("*.jpg")), desc="prepare set b", disable=not progress):
        img = cv2.imread(str(src))
        full = Landmarker(detector=detector, threads=1, size=max(img.shape[:2])).detect(img)
        out, fx, fy = _resize_long(img, SIZE)
        boxes = np.array([f.box for f in full], np.float32).reshape(-1, 4)
        refs = np.stack([_scale_points(b.reshape(2, 2), fx, fy).reshape(4) for b in boxes]) if len(boxes) else boxes
        cv2.imwrite(str(d / f"{src.stem}.png"), out)
        rows.append((src.stem, f"{src.stem}.png", refs))
        notes[src.name] = {"ours_full_size": len(boxes), "stated": STATED_FACES.get(src.name)}
    return _save_manifest(d, rows), notes


# ------------------------------------------------------------------------------ systems


class System:
    """A face + landmark pipeline: ``run(item) -> (ms, boxes (F, 4))`` on one image."""

    name = ""
    label = ""

    def run(self, item: Item) -> tuple[float, np.ndarray]:
        raise NotImplementedError

    def close(self) -> None:
        pass


class _Cached:
    """Keeps the last image decoded (decoding is never timed)."""

    def __init__(self, rgb: bool) -> None:
        self.rgb, self.key, self.img = rgb, None, None

    def __call__(self, path: str) -> np.ndarray:
        if self.key != path:
            img = cv2.imread(path)
            self.key, self.img = path, np.ascontiguousarray(cv2.cvtColor(img, cv2.COLOR_BGR2RGB)) if self.rgb else img
        return self.img


class Ours(System):
    name = "ours"

    def __init__(self, detector: str | None, size: int, model: str | None, proto: str | None = None) -> None:
        from pipnet_sdk import Landmarker

        cv2.setNumThreads(1)
        if proto is None:
            self.lm = Landmarker(model=model, detector=detector, threads=1, size=size)
            det = getattr(self.lm.detector, "path", detector)
            self.label = (
                f"pipnet-sdk {self._version()}: YuNet ({Path(str(det)).name}, long side {size}) + "
                f"{self.lm.model.spec.name} {self.lm.model.spec.version}"
            )
        else:  # the SDK's YuNet with other options (PRESETS)
            from pipnet_sdk.detect import YuNet

            models = os.environ.get("PIPNET_MODELS_DIR", str(shared_dir() / "models"))
            m, kw = PRESETS[proto]
            detector = YuNet(Path(models) / f"yunet_{m}_dynamic.onnx", threads=1, **kw)
            self.lm = Landmarker(model=model, detector=detector, threads=1)
            self.name = f"ours[{proto}]"
            self.label = (
                f"YuNet-{m} with {', '.join(f'{k}={v}' for k, v in kw.items())} "
                f"+ {self.lm.model.spec.name} {self.lm.model.spec.version}, through the SDK's Landmarker"
            )
        self.image = _Cached(rgb=False)

    @staticmethod
    def _version() -> str:
        import pipnet_sdk

        return pipnet_sdk.__version__

    def run(self, item: Item) -> tuple[float, np.ndarray]:
        img = self.image(item.path)
        t0 = time.perf_counter()
        faces = self.lm.detect(img)
        ms = (time.perf_counter() - t0) * 1000
        return ms, np.array([f.box for f in faces], np.float32).reshape(-1, 4)


def dlib_predictor_path() -> str:
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("face_recognition_models is not installed")
    # importing face_recognition_models needs pkg_resources; find the file without importing it
    return os.path.join(spec.submodule_search_locations[0], "models", "shape_predictor_68_face_landmarks.dat")


class Dlib(System):
    name = "dlib"

    def __init__(self, upsample: int) -> None:
        import dlib

        self.dlib = dlib
        self.hog = dlib.get_frontal_face_detector()
        self.sp = dlib.shape_predictor(dlib_predictor_path())
        self.upsample = upsample
        self.label = f"dlib {dlib.__version__}: HOG (upsample {upsample}) + 68-point shape predictor"
        self.image = _Cached(rgb=True)
        self.rects: list = []  # of the last run

    def run(self, item: Item) -> tuple[float, np.ndarray]:
        rgb = self.image(item.path)
        t0 = time.perf_counter()
        rects = self.hog(rgb, self.upsample)
        shapes = [self.sp(rgb, r) for r in rects]
        ms = (time.perf_counter() - t0) * 1000
        del shapes
        self.rects = list(rects)
        return ms, np.array(
            [[r.left() - 0.5, r.top() - 0.5, r.right() + 0.5, r.bottom() + 0.5] for r in rects], np.float32
        ).reshape(-1, 4)


class MediaPipe(System):
    name = "mediapipe"

    def __init__(self, python: str, cpu: int | None, max_faces: int, log: Path) -> None:
        cmd = [python, str(ROOT / "benchmarks" / "_mediapipe_worker.py"), "--max-faces", str(max_faces)]
        if cpu is not None:
            cmd += ["--cpu", str(cpu)]
        self.log = open(log, "w")
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True, bufsize=1
        )
        hello = self._read()
        if not hello.get("ready"):
            raise RuntimeError(f"MediaPipe worker did not start: {hello}")
        self.version = hello["mediapipe"]
        self.label = (
            f"MediaPipe {self.version}: Face Mesh (static_image_mode, refine off; "
            f"BlazeFace short-range + 468-point mesh), max_num_faces {max_faces}"
        )

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            self.log.flush()
            raise RuntimeError(f"MediaPipe worker exited (rc {self.proc.poll()}); see {self.log.name}")
        return json.loads(line)

    def run(self, item: Item) -> tuple[float, np.ndarray]:
        self.proc.stdin.write(json.dumps({"path": item.path}) + "\n")
        self.proc.stdin.flush()
        r = self._read()
        if "error" in r:
            raise RuntimeError(f"MediaPipe worker: {r['error']}")
        return float(r["ms"]), np.asarray(r["boxes"], np.float32).reshape(-1, 4)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.write("\n")
            self.proc.stdin.flush()
            self.proc.wait(timeout=30)
        self.log.close()


# ---------------------------------------------------------------------------- measuring


def centre_hits(dets: np.ndarray, refs: np.ndarray) -> tuple[int, int]:
    """(reference faces with a detection centre inside, detections whose centre is in no reference)."""
    if not len(dets):
        return 0, 0
    c = (dets[:, :2] + dets[:, 2:]) / 2
    if not len(refs):
        return 0, len(dets)
    inside = (
        (c[:, None, 0] >= refs[None, :, 0])
        & (c[:, None, 0] <= refs[None, :, 2])
        & (c[:, None, 1] >= refs[None, :, 1])
        & (c[:, None, 1] <= refs[None, :, 3])
    )  # (D, R)
    return int(inside.any(0).sum()), int((~inside.any(1)).sum())


@dataclass
class SetResult:
    ms: dict[str, list[float]] = field(default_factory=dict)
    found: dict[str, int] = field(default_factory=dict)
    extra: dict[str, int] = field(default_factory=dict)
    dets: dict[str, int] = field(default_factory=dict)
    boxes: dict[str, list[np.ndarray]] = field(default_factory=dict)
    rects: list = field(default_factory=list)  # dlib rectangles per image (for the landmark stage)
    refs: int = 0
    images: int = 0


def run_set(items: Sequence[Item], systems: Sequence[System], repeats: int, desc: str, progress: bool) -> SetResult:
    """Each image through every system `repeats` times, interleaved and rotated; best time kept."""
    res = SetResult(refs=sum(len(it.refs) for it in items), images=len(items))
    for s in systems:
        res.ms[s.name], res.found[s.name], res.extra[s.name], res.dets[s.name], res.boxes[s.name] = [], 0, 0, 0, []
    for s in systems:  # warm up: first call pays for allocations and lazy init
        s.run(items[0])
    for i, it in enumerate(tqdm(items, desc=desc, disable=not progress)):
        order = [systems[(i + k) % len(systems)] for k in range(len(systems))]
        best: dict[str, float] = {s.name: float("inf") for s in systems}
        boxes: dict[str, np.ndarray] = {}
        for _ in range(repeats):
            for s in order:
                ms, b = s.run(it)
                best[s.name] = min(best[s.name], ms)
                boxes[s.name] = b
                if isinstance(s, Dlib):
                    rects = s.rects
        for s in systems:
            f, e = centre_hits(boxes[s.name], it.refs)
            res.ms[s.name].append(best[s.name])
            res.found[s.name] += f
            res.extra[s.name] += e
            res.dets[s.name] += len(boxes[s.name])
            res.boxes[s.name].append(boxes[s.name])
        if any(isinstance(s, Dlib) for s in systems):
            res.rects.append(rects)
    return res


def same_work(entry: dict[str, Any]) -> dict[str, Any] | None:
    """Times on the images where ours and MediaPipe each find exactly one face (equal landmark work)."""
    sy = entry["systems"]
    if "mediapipe" not in sy:
        return None
    one = [
        i
        for i, (a, b) in enumerate(zip(sy["ours"]["faces_per_image"], sy["mediapipe"]["faces_per_image"]))
        if a == 1 and b == 1
    ]
    if not one:
        return None
    out: dict[str, Any] = {"images": len(one), "systems": {}}
    for name, r in sy.items():
        ms = [r["ms"][i] for i in one]
        mp = [sy["mediapipe"]["ms"][i] for i in one]
        out["systems"][name] = {**stats(ms), "mediapipe_vs": None if name == "mediapipe" else ratios(ms, mp)}
    return out


def stats(ms: Sequence[float]) -> dict[str, float]:
    a = np.asarray(ms, np.float64)
    return {"median": float(np.median(a)), "mean": float(a.mean()), "p90": float(np.percentile(a, 90))}


def ratios(base: Sequence[float], other: Sequence[float]) -> dict[str, float]:
    """How many times slower `other` is than `base` (> 1: base is faster)."""
    b, o = np.asarray(base), np.asarray(other)
    return {
        "median_per_image": float(np.median(o / b)),
        "of_medians": float(np.median(o) / np.median(b)),
        "of_means": float(o.mean() / b.mean()),
    }


def landmark_stage(
    ours: Ours,
    dlib_sys: Dlib | None,
    items: Sequence[Item],
    res: SetResult,
    max_faces: int,
    repeats: int,
    progress: bool,
) -> dict[str, Any]:
    """Per face, 1 thread: ours Landmarker.landmarks(image, box) vs dlib's shape predictor, each with its
    own detector's box, on faces both found (or all ours found without dlib). Two protocols: streaming
    (passes over all the faces, alternating systems, best per face) and warm (each face `repeats` times
    in a row per system, best kept: the protocol of benchmarks/landmarks.py, kinder to dlib's caches)."""
    jobs = []
    for k, it in enumerate(items):
        ob = res.boxes["ours"][k]
        if not len(ob) or not len(it.refs):
            continue
        ref = it.refs[0]
        oc = (ob[:, :2] + ob[:, 2:]) / 2
        oi = np.flatnonzero((oc[:, 0] >= ref[0]) & (oc[:, 0] <= ref[2]) & (oc[:, 1] >= ref[1]) & (oc[:, 1] <= ref[3]))
        if not len(oi):
            continue
        rect = None
        if dlib_sys is not None:
            db = res.boxes["dlib"][k]
            if not len(db):
                continue
            dc = (db[:, :2] + db[:, 2:]) / 2
            di = np.flatnonzero(
                (dc[:, 0] >= ref[0]) & (dc[:, 0] <= ref[2]) & (dc[:, 1] >= ref[1]) & (dc[:, 1] <= ref[3])
            )
            if not len(di):
                continue
            rect = res.rects[k][int(di[0])]
        jobs.append((it, ob[int(oi[0])], rect))
        if len(jobs) >= max_faces:
            break
    # Streaming passes: each system goes through all the faces in turn (as in real use, where every
    # face is new, so dlib's regression trees are not warm in cache for it), passes alternate
    # between the systems, and each face keeps its best time over the passes.
    imgs = {it.path: cv2.imread(it.path) for it, _, _ in jobs}
    rgbs = {k: np.ascontiguousarray(cv2.cvtColor(v, cv2.COLOR_BGR2RGB)) for k, v in imgs.items()}
    ours_fn = lambda it, box, rect: ours.lm.landmarks(imgs[it.path], box[None])  # noqa: E731
    dlib_fn = lambda it, box, rect: dlib_sys.sp(rgbs[it.path], rect)  # noqa: E731
    with_dlib = dlib_sys is not None and bool(jobs) and jobs[0][2] is not None
    fns = [("ours", ours_fn)] + ([("dlib", dlib_fn)] if with_dlib else [])
    best = {name: [float("inf")] * len(jobs) for name, _ in fns}
    if jobs:
        for _, fn in fns:  # warm up
            fn(*jobs[0])
    for r in tqdm(range(repeats), desc="landmark stage passes", disable=not progress):
        for name, fn in fns if r % 2 == 0 else fns[::-1]:
            for j, job in enumerate(jobs):
                t0 = time.perf_counter()
                fn(*job)
                best[name][j] = min(best[name][j], time.perf_counter() - t0)
    warm = {name: [] for name, _ in fns}
    for job in tqdm(jobs, desc="landmark stage, warm", disable=not progress):
        for name, fn in fns:
            b = float("inf")
            for _ in range(repeats):
                t0 = time.perf_counter()
                fn(*job)
                b = min(b, time.perf_counter() - t0)
            warm[name].append(b)
    out: dict[str, Any] = {"faces": len(jobs)}
    for mode, d in (("streaming", best), ("warm", warm)):
        t_ours = [t * 1000 for t in d["ours"]]
        t_dlib = [t * 1000 for t in d.get("dlib", [])]
        out[mode] = {
            "ours": stats(t_ours) if t_ours else None,
            "dlib": stats(t_dlib) if t_dlib else None,
            "dlib_vs_ours": ratios(t_ours, t_dlib) if t_ours and t_dlib else None,
        }
    out["dlib"] = bool(out["streaming"]["dlib"])
    return out


# ------------------------------------------------------------------------------ report


def fmt_ratio(r: dict[str, float] | None) -> str:
    if not r:
        return "-"
    return f"{r['median_per_image']:.2f}x ({r['of_medians']:.2f}x / {r['of_means']:.2f}x)"


def report(meta: dict[str, Any], sets: dict[str, dict[str, Any]], lmk: dict[str, Any] | None) -> str:
    L = ["# End to end on one core: ours vs MediaPipe Face Mesh vs dlib", ""]
    L.append(f"Run {meta['date']} on {meta['host']}: **{meta['cpu_line']}**.")
    L.append(
        f"Every system pinned to core {meta['cpu']} with one thread; load average at start/end "
        f"{meta['load_start']:.2f}/{meta['load_end']:.2f} (the machine is shared: absolute times are noisy, "
        "the ratios measured in the same run much less so)."
    )
    L.append(
        f"Each image ran {meta['repeats']}x per system, interleaved (A, B, C; B, C, A; ...), best time per image "
        "kept; median / mean / p90 over images. Image decoding and BGR->RGB conversion are not timed."
    )
    L.append("")
    for name, label in meta["systems"].items():
        L.append(f"* **{name}**: {label}")
    for s in meta["skipped"]:
        L.append(f"* **skipped**: {s}")
    L.append("")
    L.append(
        "A face is found when a detection's centre lies in its reference box (300W: ground-truth landmark box; "
        "group photos: the faces ours finds at full size with YuNet run at full size); *extra* = detections "
        "whose centre is in no reference box. *x slower than ours*: this system's time over ours, median of "
        "per-image ratios (ratio of medians / ratio of means); *MediaPipe / this*: MediaPipe's time over this "
        "system's, likewise (> 1: this system is faster than MediaPipe)."
    )
    L.append("")
    L.append(
        "| set | system | ms/image median | mean | p90 | faces found | extra | x slower than ours | MediaPipe / this |"
    )
    L.append("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for s in sets.values():
        for name, r in s["systems"].items():
            L.append(
                f"| {s['title']} ({s['images']} images) | {name} | {r['median']:.1f} | {r['mean']:.1f} | "
                f"{r['p90']:.1f} | {r['found']}/{s['refs']} ({100 * r['found'] / max(s['refs'], 1):.1f}%) | "
                f"{r['extra']} | {fmt_ratio(r.get('vs_ours'))} | {fmt_ratio(r.get('mediapipe_vs'))} |"
            )
    sw = {k: v["same_work"] for k, v in sets.items() if v.get("same_work")}
    if sw:
        L += [
            "",
            "Same work: only the images where ours and MediaPipe each find exactly one face (one landmark pass each):",
            "",
            "| set | system | ms/image median | mean | MediaPipe / this |",
            "| --- | --- | --- | --- | --- |",
        ]
        for key, w in sw.items():
            for name, r in w["systems"].items():
                L.append(
                    f"| {key} ({w['images']} images) | {name} | {r['median']:.1f} | {r['mean']:.1f} | "
                    f"{fmt_ratio(r['mediapipe_vs'])} |"
                )
    if "b" in sets and sets["b"].get("notes"):
        L.append("")
        L.append(
            "Set b reference: "
            + "; ".join(
                f"{k}: ours at full size {v['ours_full_size']} faces (stated {v['stated']})"
                for k, v in sets["b"]["notes"].items()
            )
        )
    if lmk:
        L += [
            "",
            f"## Landmark stage alone, 1 thread, per face ({lmk['faces']} faces of set a "
            + ("found by both ours and dlib, each with its own detector box)" if lmk["dlib"] else "found by ours)"),
            "",
            f"*streaming*: {meta['landmark_repeats']} passes per system over all the faces, passes alternating "
            "between the systems, best per face kept (every call meets a new face, as in real use); *warm*: each "
            f"face {meta['landmark_repeats']} times in a row per system, best kept (the protocol of "
            "benchmarks/landmarks.py). dlib's predictor reads a 95 MB model and is cache-sensitive: in a quick "
            "check on this machine one face took ~2.8 ms on its first call and ~0.7 ms after ~30 repeats, and "
            "across runs here it measured 1.4-2.5 ms per face; ours varies far less.",
            "",
        ]
        L.append("| protocol | system | ms/face median | mean | p90 | x slower than ours |")
        L.append("| --- | --- | --- | --- | --- | --- |")
        for mode, title in (("streaming", "streaming (every face new)"), ("warm", "warm (same face repeated)")):
            r = lmk[mode]
            if r["ours"]:
                L.append(
                    f"| {title} | ours: Landmarker.landmarks(image, box) (crop + {meta['model']} + decode) | "
                    f"{r['ours']['median']:.2f} | {r['ours']['mean']:.2f} | {r['ours']['p90']:.2f} | 1.00x |"
                )
            if r["dlib"]:
                L.append(
                    f"| {title} | dlib: shape_predictor(image, rect) | {r['dlib']['median']:.2f} | "
                    f"{r['dlib']['mean']:.2f} | {r['dlib']['p90']:.2f} | {fmt_ratio(r['dlib_vs_ours'])} |"
                )
        L.append("")
        L.append("MediaPipe's mesh stage cannot be timed alone through the legacy Face Mesh API.")
    L.append("")
    return "\n".join(L)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", nargs="+", default=["a", "b", "c"], choices=["a", "b", "c"])
    ap.add_argument("--limit", type=int, default=None, help="first N images of sets a and c (default: all 554)")
    ap.add_argument("--repeats", type=int, default=2, help="runs per image per system; best kept")
    ap.add_argument("--cpu", type=int, default=0, help="core to pin every system to (-1: no pinning)")
    ap.add_argument("--face-px", type=int, default=40, help="face height in set c (landmark box, px)")
    ap.add_argument("--seed", type=int, default=0, help="placement of the small faces in set c")
    ap.add_argument("--detector", default=None, help="ours: detector name or YuNet ONNX path (default yunet-n)")
    ap.add_argument("--model", default=None, help="ours: landmark model name or path (default pipnet-fast)")
    ap.add_argument("--size", type=int, default=SIZE, help="ours: YuNet long side")
    ap.add_argument(
        "--proto",
        nargs="*",
        default=[],
        choices=sorted(PRESETS),
        metavar="PRESET",
        help=f"extra rows: ours with other detector options, one of PRESETS ({' '.join(PRESETS)})",
    )
    ap.add_argument(
        "--mp-python",
        default=str(ROOT / ".venv-mp" / "bin" / "python"),
        help="python of the MediaPipe virtual environment",
    )
    ap.add_argument("--mp-max-faces", type=int, default=20)
    ap.add_argument("--dlib-upsample", type=int, default=1)
    ap.add_argument("--no-mediapipe", action="store_true")
    ap.add_argument("--no-dlib", action="store_true")
    ap.add_argument("--landmark-faces", type=int, default=200, help="faces for the landmark-stage timing (0: skip)")
    ap.add_argument(
        "--landmark-repeats",
        type=int,
        default=5,
        help="landmark stage: passes over the faces per system; best per face kept",
    )
    ap.add_argument("--cache", default=str(ROOT / ".cache" / "end_to_end"), help="prepared images")
    ap.add_argument(
        "--out", default=str(ROOT / "benchmarks" / "results" / "end_to_end"), help="writes OUT.md and OUT.json"
    )
    ap.add_argument(
        "--sdk",
        default=None,
        help="import pipnet_sdk from this folder (e.g. an unpacked release) instead of the repository",
    )
    ap.add_argument("--no-progress", action="store_true")
    a = ap.parse_args()
    progress = not a.no_progress
    cpu = None if a.cpu < 0 else a.cpu
    info = start_one_core_run(a.cpu)
    load_start = os.getloadavg()[0]

    cache = Path(a.cache)
    detector = a.detector or "yunet-n"
    prepared: dict[str, list[Item]] = {}
    notes: dict[str, Any] = {}
    if "a" in a.sets:
        prepared["a"] = prepare_300w(cache, None, a.seed, progress)[: a.limit]
    if "b" in a.sets:
        prepared["b"], notes = prepare_groups(cache, detector, progress)
    if "c" in a.sets:
        prepared["c"] = prepare_300w(cache, a.face_px, a.seed, progress)[: a.limit]

    systems: list[System] = [Ours(a.detector, a.size, a.model)]
    systems += [Ours(None, a.size, a.model, proto=p) for p in a.proto]
    skipped: list[str] = []
    if a.no_mediapipe:
        skipped.append("MediaPipe (--no-mediapipe)")
    elif not Path(a.mp_python).exists():
        skipped.append(
            f"MediaPipe: {a.mp_python} not found (python3 -m venv .venv-mp && "
            ".venv-mp/bin/pip install mediapipe==0.10.21)"
        )
    else:
        try:
            cache.mkdir(parents=True, exist_ok=True)
            systems.append(MediaPipe(a.mp_python, cpu, a.mp_max_faces, cache / "mediapipe_worker.log"))
        except Exception as e:  # noqa: BLE001 - any failure: say so and go on without it
            skipped.append(f"MediaPipe: worker failed to start ({e})")
    if a.no_dlib:
        skipped.append("dlib (--no-dlib)")
    else:
        try:
            systems.append(Dlib(a.dlib_upsample))
        except ImportError as e:
            skipped.append(f"dlib: {e} (pip install dlib-bin face-recognition-models)")
    for s in skipped:
        print(f"SKIPPED {s}", flush=True)

    sets_out: dict[str, dict[str, Any]] = {}
    lmk = None
    try:
        for key, items in prepared.items():
            title = SET_TITLES[key].format(face_px=a.face_px)
            res = run_set(items, systems, a.repeats, f"set {key}", progress)
            entry: dict[str, Any] = {"title": title, "images": res.images, "refs": res.refs, "systems": {}}
            for s in systems:
                r = {
                    **stats(res.ms[s.name]),
                    "found": res.found[s.name],
                    "extra": res.extra[s.name],
                    "detections": res.dets[s.name],
                    "ms": res.ms[s.name],
                    "faces_per_image": [len(b) for b in res.boxes[s.name]],
                }
                if s.name != "ours":
                    r["vs_ours"] = ratios(res.ms["ours"], res.ms[s.name])
                if "mediapipe" in res.ms and s.name != "mediapipe":
                    r["mediapipe_vs"] = ratios(res.ms[s.name], res.ms["mediapipe"])
                entry["systems"][s.name] = r
            if key == "b":
                entry["notes"] = notes
            entry["same_work"] = same_work(entry)
            sets_out[key] = entry
            if key == "a" and a.landmark_faces:
                dl = next((s for s in systems if isinstance(s, Dlib)), None)
                lmk = landmark_stage(systems[0], dl, items, res, a.landmark_faces, a.landmark_repeats, progress)  # type: ignore[arg-type]
    finally:
        for s in systems:
            s.close()

    meta = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpu": cpu,
        "cpu_info": info,
        "cpu_line": cpu_line(info),
        "repeats": a.repeats,
        "landmark_repeats": a.landmark_repeats,
        "load_start": load_start,
        "load_end": os.getloadavg()[0],
        "systems": {s.name: s.label for s in systems},
        "skipped": skipped,
        "model": f"{systems[0].lm.model.spec.name} {systems[0].lm.model.spec.version}",  # type: ignore[attr-defined]
        "sdk": str(Path(sys.modules["pipnet_sdk"].__file__).parent),
        "versions": {
            "python": platform.python_version(),
            "onnxruntime": __import__("onnxruntime").__version__,
            "opencv": cv2.__version__,
            "numpy": np.__version__,
        },
        "command": " ".join([Path(sys.argv[0]).as_posix()] + sys.argv[1:]),
    }
    md = report(meta, sets_out, lmk)
    print()
    print(md)
    write_results(a.out, md, {"meta": meta, "sets": sets_out, "landmark_stage": lmk})


if __name__ == "__main__":
    main()
