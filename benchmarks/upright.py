"""Faces turned in the image plane: the 300-W common test images turned by 90, 180 and 270 degrees
and by a random angle (uniform over the circle, seeded per image), through ``Landmarker.detect``
with its upright search (the default) and without it, beside the same faces upright.

    python benchmarks/upright.py [--model pipnet-fast] [--step 1] [--out benchmarks/results/upright.md]

Each image is turned about its centre onto a canvas that holds all of it. NME is inter-ocular
(outer eye corners), on the faces YuNet finds (a detection matched to the ground truth by IoU of
the landmark box), per condition. Targets: at every angle, NME with the search within 10 % of the
upright NME; upright, no loss against the search turned off (NME at most 0.01 point higher).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.cpu import cpu_line  # noqa: E402
from benchmarks.landmarks import MIN_IOU, md_table, pct  # noqa: E402
from benchmarks.robustness import turn  # noqa: E402
from export.data import landmark_box, read_pts_folder  # noqa: E402
from export.evaluate import data_path, match, nme_per_face  # noqa: E402

ANGLES = ("0", "90", "180", "270", "random")
WITHIN = 1.10  # NME turned / NME upright
UPRIGHT_SLACK = 0.0001  # NME (fraction) the search may cost upright


def angle_of(name: str, index: int, seed: int) -> float:
    return float(np.random.default_rng([seed, index]).uniform(0, 360)) if name == "random" else float(name)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="pipnet-fast")
    ap.add_argument("--step", type=int, default=1, help="every k-th test image")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", help="also write the table (markdown) here")
    ap.add_argument("--angles", nargs="+", choices=ANGLES[1:], default=list(ANGLES[1:]), help="turns (upright always)")
    a = ap.parse_args(argv)
    angles = ("0", *a.angles)
    from pipnet_sdk import Landmarker

    samples = read_pts_folder(data_path("data/300w/test"))[:: a.step]
    systems = {
        "search": Landmarker(model=a.model, threads=a.threads),
        "no search": Landmarker(model=a.model, threads=a.threads, upright=False),
    }
    spec = systems["search"].model.spec
    gt_all: dict[str, list] = {c: [] for c in angles}
    pred: dict[tuple[str, str], list] = {(c, s): [] for c in angles for s in systems}
    seconds = {(c, s): 0.0 for c in angles for s in systems}
    t0 = time.time()
    for i, sample in enumerate(samples):
        img = cv2.imread(sample.image)
        for c in angles:
            im, gt = turn(img, sample.points, angle_of(c, i, a.seed))
            gt_all[c].append(gt)
            for s, lm in systems.items():
                t = time.perf_counter()
                faces = lm.detect(im, "bgr")
                seconds[(c, s)] += time.perf_counter() - t
                boxes = np.array([f.box for f in faces], np.float32).reshape(-1, 4)
                k = match(boxes, landmark_box(gt), MIN_IOU)
                pred[(c, s)].append(faces[k].landmarks if k >= 0 else np.full(gt.shape, np.nan, np.float32))
        if i % 50 == 0:
            print(f"{i + 1}/{len(samples)} images, {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
    rows, nme = [], {}
    for c in angles:
        gt = np.stack(gt_all[c])
        for s in systems:
            p = np.stack(pred[(c, s)])
            found = np.isfinite(p).all(axis=(1, 2))
            nme[(c, s)] = float(np.mean(nme_per_face(p[found], gt[found]))) if found.any() else float("nan")
            rows.append(
                [
                    f"{c}°" if c != "random" else "random",
                    s,
                    f"{found.sum()}/{len(p)}",
                    pct(nme[(c, s)]),
                    f"{1000 * seconds[(c, s)] / len(p):.1f}",
                ]
            )
    base = nme[("0", "search")]
    checks = [
        (
            f"upright: search costs at most {100 * UPRIGHT_SLACK:.2f} point",
            f"{pct(base)} vs {pct(nme[('0', 'no search')])}",
            base <= nme[("0", "no search")] + UPRIGHT_SLACK,
        )
    ]
    for c in angles[1:]:
        checks.append(
            (
                f"{c}: NME within {WITHIN:.2f}x of upright",
                f"{pct(nme[(c, 'search')])} ({nme[(c, 'search')] / base:.2f}x)",
                nme[(c, "search")] <= WITHIN * base,
            )
        )
    text = "\n".join(
        [
            f"# Faces turned in the image plane ({spec.name} {spec.version}, {len(samples)} 300-W test images)",
            "",
            cpu_line(),
            "",
            md_table(["angle", "upright search", "found", "NME", "ms / image"], rows),
            "",
            md_table(["target", "measured", "result"], [[t, m, "PASS" if ok else "FAIL"] for t, m, ok in checks]),
            "",
        ]
    )
    print(text)
    if a.out:
        Path(a.out).write_text(text)
    return 0 if all(ok for _, _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
