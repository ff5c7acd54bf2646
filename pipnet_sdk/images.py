"""Turn any accepted image input into a checked, C-contiguous uint8 H x W x 3 BGR array.

Accepted inputs:

- a path (``str`` or ``os.PathLike``) to an image file (read with OpenCV; unicode paths work;
  EXIF orientation is applied, so phone photos come upright);
- a NumPy ``uint8`` array: H x W x 3 (BGR, or RGB with ``color="rgb"``), H x W or H x W x 1
  (gray), H x W x 4 (BGRA, or RGBA with ``color="rgb"``; alpha is dropped, not composited);
- a PIL image of any 8-bit mode (``color`` is ignored: PIL images know their own mode; EXIF
  orientation is not applied, use ``PIL.ImageOps.exif_transpose`` first if you need it).

Nothing is guessed: other dtypes are refused with a message saying how to convert, because a
float image may be in [0, 1] or [0, 255] and a uint16 image may use 10, 12 or 16 bits, and a
wrong guess would silently give wrong landmarks. An array already in the right form is returned
as is (no copy): treat the result as read-only.
"""
from __future__ import annotations

import os
import sys
from typing import Any

import cv2
import numpy as np

from .errors import ImageError

#: Image file name extensions the SDK's commands and integrations read from folders (OpenCV decodes them).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
ACCEPTED = (
    "a path to an image file, a uint8 NumPy array (H x W x 3 BGR/RGB, H x W or H x W x 1 gray, "
    "H x W x 4 BGRA/RGBA) or a PIL image"
)
_PIL_WIDE_MODES = ("I", "F", "I;16", "I;16L", "I;16B", "I;16N")


def check_color(color: Any) -> str:
    """"bgr" or "rgb" (any case), lower-cased; ValueError for anything else."""
    c = color.lower() if isinstance(color, str) else color
    if c not in ("bgr", "rgb"):
        raise ValueError(f"color must be 'bgr' or 'rgb', got {color!r}")
    return c


def _read_file(path: str | os.PathLike) -> np.ndarray:
    p = os.fspath(path)
    if not os.path.exists(p):
        raise FileNotFoundError(f"image file not found: {p}")
    if os.path.isdir(p):
        raise ImageError(f"{p} is a directory, not an image file")
    data = np.fromfile(p, dtype=np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if img is None or img.size == 0:
        raise ImageError(f"cannot read {p} as an image (not an image file, or a format OpenCV cannot decode)")
    return np.ascontiguousarray(img)


def _dtype_error(a: np.ndarray) -> ImageError:
    hint = ""
    if a.dtype == np.bool_:
        hint = "; for a mask use (mask * 255).astype(np.uint8)"
    elif np.issubdtype(a.dtype, np.floating):
        hint = ("; for values in [0, 1] use (img * 255).round().clip(0, 255).astype(np.uint8), "
                "for values in [0, 255] use img.round().clip(0, 255).astype(np.uint8)")
    elif a.dtype == np.uint16:
        hint = "; for 16-bit images use (img >> 8).astype(np.uint8) (or shift by bits - 8)"
    elif np.issubdtype(a.dtype, np.integer):
        hint = "; use img.clip(0, 255).astype(np.uint8) if the values are 0-255"
    return ImageError(f"image arrays must have dtype uint8, got {a.dtype}{hint}")


def _from_array(a: np.ndarray, color: str) -> np.ndarray:
    if a.dtype != np.uint8:
        raise _dtype_error(a)
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (1, 3, 4)):
        raise ImageError(
            f"image array has shape {a.shape}; accepted: (H, W), (H, W, 1), (H, W, 3) or (H, W, 4)"
        )
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise ImageError(f"image is empty (shape {a.shape})")
    if a.ndim == 2 or a.shape[2] == 1:
        return cv2.cvtColor(np.ascontiguousarray(a.reshape(a.shape[:2])), cv2.COLOR_GRAY2BGR)
    if a.shape[2] == 4:
        code = cv2.COLOR_RGBA2BGR if color == "rgb" else cv2.COLOR_BGRA2BGR
        return cv2.cvtColor(np.ascontiguousarray(a), code)
    if color == "rgb":
        return np.ascontiguousarray(a[..., ::-1])
    return np.ascontiguousarray(a)


def is_pil_image(image: Any) -> bool:
    """Whether `image` is a PIL image (without importing PIL)."""
    pil = sys.modules.get("PIL.Image")  # a PIL image exists only if PIL.Image was imported
    return pil is not None and isinstance(image, pil.Image)


def _from_pil(image: Any) -> np.ndarray:
    if image.mode in _PIL_WIDE_MODES:
        raise ImageError(
            f"PIL image mode {image.mode!r} holds more than 8 bits per pixel; convert it to an "
            "8-bit mode ('L' or 'RGB') with the scaling your data needs"
        )
    if image.width == 0 or image.height == 0:
        raise ImageError(f"image is empty (size {image.size})")
    rgb = np.asarray(image.convert("RGB") if image.mode != "RGB" else image)
    return np.ascontiguousarray(rgb[..., ::-1])


def load_image(image: Any, color: str = "bgr") -> np.ndarray:
    """A C-contiguous uint8 (H, W, 3) BGR array from any accepted input (see the module doc).

    ``color`` is the channel order of 3- and 4-channel arrays: "bgr" (OpenCV, the default) or
    "rgb" (PIL, matplotlib, most other libraries). Raises FileNotFoundError for a missing file,
    ValueError for an unreadable file or an array of the wrong dtype/shape, TypeError otherwise.
    """
    color = check_color(color)
    if isinstance(image, (str, os.PathLike)):
        return _read_file(image)
    if isinstance(image, np.ndarray):
        return _from_array(image, color)
    if is_pil_image(image):
        return _from_pil(image)
    raise TypeError(f"cannot use {type(image).__name__} as an image; accepted: {ACCEPTED}")
