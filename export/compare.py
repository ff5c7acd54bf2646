"""Should a new model file replace the shipped one? Paired validation NME, clean, motion-blurred and
with the lower face covered, and the landmark stage's speed, of two ONNX files in one run, judged
by the shipping rule.

    python -m export.compare SHIPPED.onnx NEW.onnx --config CONFIG.json [--json out.json]

Both files run through the SDK (``pipnet_sdk.LandmarkModel``) on the same un-jittered validation
crops of CONFIG's split, on a motion-blurred copy of each crop (6-18 px, random direction,
seeded), and on a copy with a flat band over the lower part of the face (mouth and jaw hidden,
as in benchmarks/robustness.py's occlusion_lower: a learned visibility head once made hidden
points collapse there while clean and blurred faces stayed as good). Differences are per face
(NEW minus SHIPPED), with the standard error of their mean. Speed: the landmark stage on a cut
crop (normalise, forward, decode; cutting costs the same at one input size), one thread, batch 1,
the two files interleaved crop by crop; the median per file.
Run it with the CPU otherwise idle: beside a training run (and under nice), two files of the same
graph timed 0.93x and 0.73-0.80x of each other; idle, 1.01x.

The rule (docs/experiments.md; set before the 0.6 run ended, the covered clause added after a
candidate failed there): NEW ships if it beats SHIPPED on clean
faces by more than one paired SE, loses at most one SE on blurred and on covered faces, and its
landmark stage takes at most 5 % longer. Only then is the test set read, once, by the benchmarks.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .augment import motion_blur
from .config import load_config
from .schemes import get_scheme
from .to_onnx import val_crops, val_nme_per_face

MAX_SLOWDOWN = 1.05
BLUR_PX = (6.0, 18.0)
COVER_FROM = 0.55  # the band's top, as a fraction of the landmark box's height: about the nose tip


def blurred(crops: np.ndarray, seed: int = 0) -> np.ndarray:
    """Each uint8 crop under a linear motion blur of random length in BLUR_PX and direction."""
    rng = np.random.RandomState(seed)  # the draws of the 0.5.2 and 0.6 comparisons in docs/experiments.md
    out = []
    for c in crops:
        x = torch.from_numpy(c.astype(np.float32)).permute(2, 0, 1)[None]
        length, angle = BLUR_PX[0] + (BLUR_PX[1] - BLUR_PX[0]) * rng.rand(), math.pi * rng.rand()
        out.append(motion_blur(x, length, angle)[0].permute(1, 2, 0).round().clamp(0, 255).byte().numpy())
    return np.stack(out)


def band(points: np.ndarray) -> tuple[slice, slice]:
    """Rows and columns of the flat band over the lower COVER_FROM..1 of a face's landmark box
    (points in pixels), widened by 5 % of the box."""
    (x0, y0), (x1, y1) = points.min(0), points.max(0)
    pad = 0.05 * max(x1 - x0, y1 - y0)
    top = y0 + COVER_FROM * (y1 - y0)
    rows = slice(max(0, int(top)), max(0, int(np.ceil(y1 + pad))))
    return rows, slice(max(0, int(x0 - pad)), max(0, int(np.ceil(x1 + pad))))


def covered(crops: np.ndarray, points: np.ndarray, seed: int = 0) -> np.ndarray:
    """Each uint8 crop with its band (band()) in a flat random colour (points in crop units, as
    val_crops gives them)."""
    rng = np.random.RandomState(seed + 1)
    out = crops.copy()
    for c, p in zip(out, points * crops.shape[1]):
        c[band(p)] = rng.randint(0, 256, 3)
    return out


def under_band(points: np.ndarray, size: int) -> np.ndarray:
    """Which points (M, N) of crops of side ``size`` (points in crop units) covered() hides."""
    hidden = []
    for p in points * size:
        rows, cols = band(p)
        hidden.append((p[:, 1] >= rows.start) & (p[:, 1] < rows.stop) & (p[:, 0] >= cols.start) & (p[:, 0] < cols.stop))
    return np.array(hidden)


def paired(new: np.ndarray, old: np.ndarray) -> tuple[float, float]:
    """Mean per-face difference (new - old) and its standard error."""
    d = np.asarray(new, np.float64) - np.asarray(old, np.float64)
    return float(d.mean()), float(d.std(ddof=1) / math.sqrt(len(d)))


def landmark_ms(paths: list[str], crops: np.ndarray, repeats: int = 3) -> list[float]:
    """Median ms per crop of each file (1 thread, batch 1), the files interleaved crop by crop,
    which goes first alternating."""
    from pipnet_sdk.landmark_model import LandmarkModel

    models = [LandmarkModel(p, threads=1) for p in paths]
    for m in models:  # warm up
        m.run_crops(crops[:4], batch_size=1)
    times: list[list[float]] = [[] for _ in models]
    for _ in range(repeats):
        for i, c in enumerate(crops):
            for k in range(len(models))[:: 1 if i % 2 == 0 else -1]:
                start = time.perf_counter()
                models[k].run_crops(c[None], batch_size=1)
                times[k].append(time.perf_counter() - start)
    return [float(np.median(t) * 1000) for t in times]


def judge(
    clean: tuple[float, float], blur: tuple[float, float], cover: tuple[float, float], slowdown: float
) -> dict[str, bool]:
    """The shipping rule, one verdict per clause and overall."""
    v = {
        "clean: better by more than one SE": clean[0] < -clean[1],
        "blurred: worse by at most one SE": blur[0] <= blur[1],
        "covered: worse by at most one SE": cover[0] <= cover[1],
        f"landmark stage at most {MAX_SLOWDOWN:g}x": slowdown <= MAX_SLOWDOWN,
    }
    return {**v, "ships": all(v.values())}


def compare(
    shipped: str, new: str, cfg: dict[str, Any], limit: int = 10_000, seed: int = 0, timing_crops: int = 64
) -> dict[str, Any]:
    """Paired validation NME (clean, blurred, covered), speed and the verdict for two ONNX files."""
    from pipnet_sdk.landmark_model import LandmarkModel

    def framing(spec: Any) -> tuple:
        return spec.input_size, round(spec.crop_scale, 4), round(spec.crop_shift_y, 4), spec.num_landmarks

    want = (
        cfg["input_size"],
        round(cfg["crop"]["scale"], 4),
        round(cfg["crop"]["shift_y"], 4),
        get_scheme(cfg["scheme"]).num_points,
    )
    have = {p: framing(LandmarkModel(p).spec) for p in (shipped, new)}
    if any(h != want for h in have.values()):  # the crops are cut once, as the config frames them
        raise ValueError(
            "the files and the config must share one input size, crop and landmark scheme "
            f"(size, scale, shift_y, points): config {want}, " + ", ".join(f"{p} {h}" for p, h in have.items())
        )
    crops, pts = val_crops(cfg, limit)
    soft, hidden = blurred(crops, seed), covered(crops, pts, seed)
    norm = get_scheme(cfg["scheme"]).norm
    n = len(crops)
    both = {
        p: val_nme_per_face(p, np.concatenate([crops, soft, hidden]), np.concatenate([pts, pts, pts]), norm)
        for p in (shipped, new)
    }  # one ORT session per file: clean crops, their blurred copies, their covered copies
    nme = {p: (v[:n], v[n : 2 * n], v[2 * n :]) for p, v in both.items()}
    clean, blur, cover = (paired(nme[new][k], nme[shipped][k]) for k in range(3))
    ms = landmark_ms([shipped, new], crops[:timing_crops])
    return {
        "faces": len(crops),
        "shipped": shipped,
        "new": new,
        "nme_clean": {p: float(v[0].mean()) for p, v in nme.items()},
        "nme_blurred": {p: float(v[1].mean()) for p, v in nme.items()},
        "nme_covered": {p: float(v[2].mean()) for p, v in nme.items()},
        "paired_clean": clean,
        "paired_blurred": blur,
        "paired_covered": cover,
        "ms_per_face": dict(zip((shipped, new), ms)),
        "slowdown": ms[1] / ms[0],
        "verdict": judge(clean, blur, cover, ms[1] / ms[0]),
    }


def report(r: dict[str, Any]) -> str:
    """The comparison as lines of text."""
    a, b = r["shipped"], r["new"]
    lines = [f"{r['faces']} validation faces; NME % (inter-ocular), new - shipped per face, +- one SE"]
    for label, key in (("clean", "clean"), ("motion-blurred", "blurred"), ("lower covered", "covered")):
        d, se = r[f"paired_{key}"]
        lines.append(
            f"{label:>15}: shipped {r[f'nme_{key}'][a]:.3f}, new {r[f'nme_{key}'][b]:.3f}, "
            f"difference {d:+.3f} +- {se:.3f}"
        )
    lines.append(
        f"{'landmark stage':>15}: shipped {r['ms_per_face'][a]:.2f} ms, new {r['ms_per_face'][b]:.2f} ms "
        f"per face ({r['slowdown']:.3f}x; 1 thread, batch 1, interleaved)"
    )
    lines += [f"{'PASS' if ok else 'FAIL'}: {k}" for k, ok in r["verdict"].items() if k != "ships"]
    lines.append(("SHIPS" if r["verdict"]["ships"] else "DOES NOT SHIP") + f": {b} against {a}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m export.compare", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("shipped")
    ap.add_argument("new")
    ap.add_argument("--config", required=True, help="training config whose validation split is used")
    ap.add_argument("--limit", type=int, default=10_000, help="at most this many validation faces")
    ap.add_argument("--seed", type=int, default=0, help="seed of the blur draws")
    ap.add_argument("--json", help="also write the figures here")
    a = ap.parse_args(argv)
    r = compare(a.shipped, a.new, load_config(a.config, {}), a.limit, a.seed)
    print(report(r))
    if a.json:
        Path(a.json).write_text(json.dumps(r, indent=2))
    return 0 if r["verdict"]["ships"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
