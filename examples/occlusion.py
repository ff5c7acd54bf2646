"""What the model says of a covered face: its quality, and which points it sees as hidden.

    python examples/occlusion.py photo.jpg out.png [--cover 0.4] [--size 300]

Takes the largest face of the photo, then the same photo with a black band over the lower
``--cover`` of that face's box (its mouth and chin), and draws both crops side by side: hidden
points (``Face.occluded``) as rings, the face's quality and hidden count above each.
(``docs/images/occlusion.png`` is ``examples/group_2.jpg`` with the defaults.)
"""

from __future__ import annotations

import argparse
import sys

import cv2
import numpy as np

from pipnet_sdk import Face, Landmarker, draw
from pipnet_sdk.boxes import area, iou


def largest(faces: list[Face]) -> Face | None:
    """The face with the biggest box, or None."""
    return max(faces, key=lambda f: float(area(f.box)), default=None)


def covered(image: np.ndarray, face: Face, cover: float) -> np.ndarray:
    """A copy of image with a black band over the lower ``cover`` of the face's box."""
    x0, y0, x1, y1 = np.clip(face.box, 0, [image.shape[1], image.shape[0]] * 2).astype(int)
    out = image.copy()
    out[int(y1 - cover * (y1 - y0)) : y1, x0:x1] = 0
    return out


def panel(image: np.ndarray, face: Face, size: int) -> np.ndarray:
    """The face drawn on the image, cut around its box, scaled to size x size, captioned."""
    shown = draw(image, face, radius=2.0)
    x0, y0, x1, y1 = face.box
    cx, cy, half = (x0 + x1) / 2, (y0 + y1) / 2, 0.75 * max(x1 - x0, y1 - y0)
    k = size / (2 * half)
    m = np.float32([[k, 0, size / 2 - cx * k], [0, k, size / 2 - cy * k]])
    crop = cv2.warpAffine(shown, m, (size, size), flags=cv2.INTER_AREA, borderValue=(255, 255, 255))
    hidden = int(face.occluded.sum()) if face.occluded is not None else 0
    quality = f"{face.quality:.2f}" if face.quality is not None else "-"
    caption = np.full((32, size, 3), 255, np.uint8)
    cv2.putText(caption, f"quality {quality}, {hidden} hidden", (6, 23), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1)
    return np.vstack([caption, crop])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("photo")
    ap.add_argument("out")
    ap.add_argument("--cover", type=float, default=0.4, help="fraction of the face box covered, from its bottom")
    ap.add_argument("--size", type=int, default=300, help="side of each panel in pixels")
    a = ap.parse_args(argv)
    image = cv2.imread(a.photo)
    if image is None:
        print(f"cannot read {a.photo}", file=sys.stderr)
        return 1
    lm = Landmarker()
    face = largest(lm.detect(image))
    if face is None:
        print(f"no face found in {a.photo}", file=sys.stderr)
        return 1
    hidden_image = covered(image, face, a.cover)
    faces = lm.detect(hidden_image)
    overlap = iou(np.array([f.box for f in faces]).reshape(-1, 4), face.box)
    match = faces[int(overlap.argmax())] if len(faces) and overlap.max() > 0.5 else None
    if match is None:
        print("the detector no longer finds the covered face", file=sys.stderr)
        return 1
    cv2.imwrite(a.out, np.hstack([panel(image, face, a.size), panel(hidden_image, match, a.size)]))
    for name, f in (("as it is", face), ("covered", match)):
        print(f"{name}: quality {f.quality}, hidden points {np.flatnonzero(f.occluded).tolist()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
