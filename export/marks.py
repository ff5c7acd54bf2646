"""Remove drawn green annotation marks from face images before training on them.

The shared unlabeled LFW faces (`data/unlabeled/lfw`) all carry a green face box, its index and
68 small green crosses burned into the pixels, from whatever tool produced them. A student
trained on those pixels can learn to find the crosses instead of the facial features, and a
teacher's pseudo-labels would sit right on them. `remove_green_marks` finds the marks (pixels much
greener than both other channels, or greener than their 7x7 neighbourhood) and inpaints them.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

GREEN_OVER_RED_BLUE = 20  # G - max(R, B) above this: a saturated green mark (box, text)
GREEN_OVER_LOCAL = 12  # (G - B) above its 7x7 median by this: a small cross blended into skin


def green_marks_mask(img: np.ndarray) -> np.ndarray:
    """uint8 mask (H, W) of drawn green marks in a BGR image, grown by one pixel."""
    b, g, r = (img[:, :, k].astype(np.int16) for k in range(3))
    saturated = g - np.maximum(r, b) > GREEN_OVER_RED_BLUE
    green_blue = np.clip(g - b + 128, 0, 255).astype(np.uint8)
    local = green_blue.astype(np.int16) - cv2.medianBlur(green_blue, 7).astype(np.int16) > GREEN_OVER_LOCAL
    return cv2.dilate((saturated | local).astype(np.uint8), np.ones((3, 3), np.uint8))


def remove_green_marks(img: np.ndarray) -> np.ndarray:
    """A BGR image with its green marks inpainted (Telea, radius 3)."""
    return cv2.inpaint(img, green_marks_mask(img) * 255, 3, cv2.INPAINT_TELEA)


def cleaned_copy(images: list[str], out: Path, progress: bool = True) -> list[str]:
    """PNG copies of the images with their marks removed, written once into `out` (kept as a
    cache: the folder only appears when complete). Returns the copies' paths, in order."""
    names = [f"{i:06d}-{Path(p).stem}.png" for i, p in enumerate(images)]
    if not out.is_dir():
        tmp = out.with_name(out.name + ".partial")
        tmp.mkdir(parents=True, exist_ok=True)
        for src, name in zip(tqdm(images, desc="removing drawn marks", disable=not progress), names):
            img = cv2.imread(src)
            if img is None:
                raise ValueError(f"cannot read {src}")
            cv2.imwrite(str(tmp / name), remove_green_marks(img))
        tmp.rename(out)
    return [str(out / n) for n in names]
