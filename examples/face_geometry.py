"""Head-pose axes on a photo and each face's ArcFace-aligned crop beside it, in one picture.

    python examples/face_geometry.py photo.jpg out.png [--height 448] [--colors 256]

(``docs/images/face_geometry.png`` is ``shared/data/samples/group_1.jpg`` with ``--height 400
--colors 256``.) Also prints each face's pose, eye and mouth openness.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

import cv2
import numpy as np

from pipnet_sdk import Landmarker, align_many, draw


def picture(image: np.ndarray, faces: list, height: int = 448) -> np.ndarray:
    """The photo scaled to ``height`` (black bars trimmed) with landmarks, pose axes and angles,
    and each face's aligned crop in a column beside it."""
    rows = np.nonzero(image.max(axis=(1, 2)) > 16)[0]
    top = int(rows[0]) if len(rows) else 0
    photo = image[top : int(rows[-1]) + 1] if len(rows) else image
    s = height / photo.shape[0]
    photo = cv2.resize(photo, (round(photo.shape[1] * s), height), interpolation=cv2.INTER_AREA)
    shift = np.array([0, top], np.float32)
    scaled = [
        replace(
            f, box=(f.box - np.tile(shift, 2)) * s, landmarks=(f.landmarks - shift) * s, image_size=photo.shape[1::-1]
        )
        for f in faces
    ]  # same pose (camera scales too)
    shown = draw(photo, scaled, pose=True, boxes=False, radius=1.0)
    for f, g in zip(faces, scaled):
        if f.pose is not None:
            label = "yaw {:+.0f} pitch {:+.0f} roll {:+.0f}".format(*f.pose)
            org = (int(g.box[0]), int(g.box[3]) + 16)
            cv2.putText(shown, label, org, cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 3, cv2.LINE_AA)
            cv2.putText(shown, label, org, cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    if not faces:
        return shown
    size = max(112, min(224, height // len(faces)))
    per_column = height // size
    crops = align_many(image, faces, size=size)
    columns = []
    for i in range(0, len(crops), per_column):
        col = np.zeros((height, size, 3), np.uint8)
        part = crops[i : i + per_column]
        col[: size * len(part)] = part.reshape(-1, size, 3)
        columns.append(col)
    return np.hstack([shown] + columns)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("image")
    ap.add_argument("out")
    ap.add_argument("--height", type=int, default=448, help="picture height in pixels (448)")
    ap.add_argument("--colors", type=int, help="a palette PNG of this many colours, smaller (needs Pillow)")
    ap.add_argument(
        "--min-score",
        type=float,
        default=0.3,
        help="leave out faces whose mean landmark score is lower (not faces: 0.3)",
    )
    args = ap.parse_args(argv)
    image = cv2.imread(args.image)
    if image is None:
        print(f"cannot read {args.image}", file=sys.stderr)
        return 1
    faces = [f for f in Landmarker().detect(image) if f.landmark_scores.mean() >= args.min_score]
    faces.sort(key=lambda f: f.box[0])  # crops: left to right
    for f in faces:
        pose = "unknown" if f.pose is None else "yaw {:+.0f}, pitch {:+.0f}, roll {:+.0f}".format(*f.pose)
        eyes = (
            ""
            if f.eye_openness is None
            else " eyes {:.2f} {:.2f}, mouth {:.2f}".format(*f.eye_openness, f.mouth_openness)
        )
        print(f"face at x={f.box[0]:.0f}: {pose}{eyes}")
    out = picture(image, faces, args.height)
    try:
        if args.colors:
            save_palette(out, args.out, args.colors)
        elif not cv2.imwrite(args.out, out):
            raise OSError("OpenCV could not write it (missing folder or unknown extension?)")
    except (OSError, ValueError) as e:
        print(f"face_geometry: cannot write {args.out}: {e}", file=sys.stderr)
        return 1
    print(f"wrote {args.out}")
    return 0


def save_palette(image: np.ndarray, path: str, colors: int = 256) -> None:
    """A palette PNG: the photo's colours plus the drawing colours, kept exact."""
    from PIL import Image

    drawing = [255, 0, 0, 0, 200, 0, 0, 80, 255, 0, 255, 0, 255, 255, 255, 0, 0, 0]  # RGB
    rgb = Image.fromarray(np.ascontiguousarray(image[..., ::-1]))
    n = max(2, colors - len(drawing) // 3)
    photo = rgb.quantize(colors=n, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    palette = Image.new("P", (1, 1))
    palette.putpalette(photo.getpalette()[: 3 * n] + drawing)
    rgb.quantize(palette=palette, dither=Image.Dither.NONE).save(path, optimize=True)


if __name__ == "__main__":
    sys.exit(main())
