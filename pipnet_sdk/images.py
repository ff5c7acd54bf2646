"""Turn any accepted image input into a checked, C-contiguous uint8 H x W x 3 BGR array.

Accepted inputs:

- a path (``str`` or ``os.PathLike``) to a regular image file (read with OpenCV; unicode paths
  work; EXIF orientation is applied, so phone photos come upright). 16-bit files (PNG, TIFF) are
  scaled to 8 bits by the bit depth their largest value needs, so 10- or 12-bit data in a 16-bit
  file keeps its brightness (a file whose values all fit in 8 bits is kept as is);
  floating-point files (``.pfm``, float TIFF) are refused, as float arrays are;
- a NumPy ``uint8`` array: H x W x 3 (BGR, or RGB with ``color="rgb"``), H x W or H x W x 1
  (gray), H x W x 4 (BGRA, or RGBA with ``color="rgb"``; alpha is dropped, not composited);
- a PIL image (``color`` is ignored: PIL images know their own mode), with its EXIF orientation
  applied as for files: any mode PIL converts to RGB (alpha dropped; ``La``/``RGBa`` un-premultiplied
  first), and the 16-bit gray modes (``I;16``..., and ``I`` with values in 0-65535) scaled like
  16-bit files, so a 16-bit gray file gives the same array by path or opened with PIL (PIL itself
  cuts 16-bit colour files to 8 bits when it opens them); ``F`` (float) is refused.

Nothing else is guessed: arrays of other dtypes are refused with a message saying how to
convert, because a float image may be in [0, 1] or [0, 255] and a uint16 array may use 10, 12 or
16 bits, and a wrong guess would silently give wrong landmarks. An array already in the right
form is returned as is (no copy): treat the result as read-only.

Files and PIL images larger than :func:`max_pixels` (``MAX_PIXELS`` = 2**28, 268 megapixels, e.g.
16384 x 16384; set ``PIPNET_MAX_IMAGE_PIXELS`` to change it) are refused before they are decoded
when the header says their size (PNG, JPEG, TIFF, BMP, GIF; WebP cannot exceed it), so a small
file that declares a huge image (a decompression bomb) costs no memory. Every image refused is
an :class:`~pipnet_sdk.errors.ImageError` (a ``ValueError``) that names the file; a path that is
not a regular file (a FIFO, a device) is refused without being opened.
"""

from __future__ import annotations

import os
import stat
import struct
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
#: Default largest image (width x height) read from a file or a PIL image.
MAX_PIXELS = 1 << 28
ENV_MAX_PIXELS = "PIPNET_MAX_IMAGE_PIXELS"
_PIL_16BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def max_pixels() -> int:
    """The largest image (width x height) read from a file or a PIL image: ``$PIPNET_MAX_IMAGE_PIXELS``
    or :data:`MAX_PIXELS`. OpenCV's own limit (``OPENCV_IO_MAX_IMAGE_PIXELS``, 2**30) applies too."""
    value = os.environ.get(ENV_MAX_PIXELS, "").strip()
    if not value:
        return MAX_PIXELS
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(f"{ENV_MAX_PIXELS} must be a positive whole number of pixels, got {value!r}")
    return n


def _check_size(width: int, height: int, source: str) -> None:
    limit = max_pixels()
    if width * height > limit:
        raise ImageError(
            f"{source} is {width}x{height} pixels ({width * height / 1e6:.0f} megapixels), more than "
            f"the limit of {limit} pixels (a decompression bomb, or a very large image: set "
            f"{ENV_MAX_PIXELS} to allow it)"
        )


def _declared_size(head: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG, JPEG, TIFF, BMP or GIF header; None for other formats or when
    the header does not say (the decoded size is checked then)."""
    try:
        if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
            w, h = struct.unpack_from(">II", head, 16)
            return w, h
        if head[:2] == b"\xff\xd8":
            i = 2
            while head[i] == 0xFF:
                marker = head[i + 1]
                if marker == 0xFF:  # fill byte
                    i += 1
                    continue
                if marker in _JPEG_SOF:
                    h, w = struct.unpack_from(">HH", head, i + 5)
                    return w, h
                i += 2 + struct.unpack_from(">H", head, i + 2)[0]
            return None
        if head[:4] in (b"II*\x00", b"MM\x00*"):
            e = "<" if head[:2] == b"II" else ">"
            ifd = struct.unpack_from(e + "I", head, 4)[0]
            size: dict[int, int] = {}
            for k in range(struct.unpack_from(e + "H", head, ifd)[0]):
                tag, kind = struct.unpack_from(e + "HH", head, ifd + 2 + 12 * k)
                if tag in (256, 257):  # ImageWidth, ImageLength: SHORT or LONG
                    size[tag] = struct.unpack_from(e + ("H" if kind == 3 else "I"), head, ifd + 10 + 12 * k)[0]
            return (size[256], size[257]) if len(size) == 2 else None
        if head[:2] == b"BM" and struct.unpack_from("<I", head, 14)[0] >= 40:
            w, h = struct.unpack_from("<ii", head, 18)
            return abs(w), abs(h)
        if head[:6] in (b"GIF87a", b"GIF89a"):
            w, h = struct.unpack_from("<HH", head, 6)
            return w, h
    except (IndexError, struct.error):  # a header cut short: the decoder will say what is wrong
        return None
    return None


def _to_8bit(img: np.ndarray, source: str) -> np.ndarray:
    """uint8 as is; uint16 scaled by the bit depth its largest value needs; others refused."""
    if img.dtype == np.uint8:
        return img
    if img.dtype != np.uint16:
        kind = "floating-point" if np.issubdtype(img.dtype, np.floating) else str(img.dtype)
        raise ImageError(
            f"{source} holds {kind} pixels, which have no fixed range: convert it to an 8-bit "
            "image (PNG, JPEG) with the scaling or tone mapping your data needs"
        )
    bits = max(8, int(img.max()).bit_length())
    return cv2.convertScaleAbs(img, alpha=255.0 / ((1 << bits) - 1))


def check_color(color: Any) -> str:
    """ "bgr" or "rgb" (any case), lower-cased; ValueError for anything else."""
    c = color.lower() if isinstance(color, str) else color
    if c not in ("bgr", "rgb"):
        raise ValueError(f"color must be 'bgr' or 'rgb', got {color!r}")
    return c


def decode_image(data: Any, source: str = "the bytes") -> np.ndarray:
    """Encoded file contents (bytes or a uint8 array) -> uint8 BGR, as :func:`load_image` reads a
    file; ``source`` names the data in errors."""
    buf = np.frombuffer(memoryview(data), dtype=np.uint8)
    size = _declared_size(buf[: 1 << 20].tobytes())
    if size is not None:
        _check_size(*size, source)
    try:
        img = cv2.imdecode(buf, cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH) if buf.size else None
    except cv2.error as e:  # e.g. OpenCV's own size limit
        reason = str(e).strip().splitlines()[-1]
        raise ImageError(f"cannot read {source} as an image: OpenCV refused it ({reason})") from None
    if img is None or img.size == 0:
        raise ImageError(f"cannot read {source} as an image (not an image file, or a format OpenCV cannot decode)")
    _check_size(img.shape[1], img.shape[0], source)
    return np.ascontiguousarray(_to_8bit(img, source))


def _read_file(path: str | os.PathLike) -> np.ndarray:
    p = os.fspath(path)
    try:
        mode = os.stat(p).st_mode
    except (FileNotFoundError, NotADirectoryError):
        raise FileNotFoundError(f"image file not found: {p}") from None
    if stat.S_ISDIR(mode):
        raise ImageError(f"{p} is a directory, not an image file")
    if not stat.S_ISREG(mode):  # reading a FIFO would wait for a writer forever
        raise ImageError(f"{p} is not a regular file (a FIFO, socket or device), not an image file")
    return decode_image(np.fromfile(p, dtype=np.uint8), p)


def _dtype_error(a: np.ndarray) -> ImageError:
    hint = ""
    if a.dtype == np.bool_:
        hint = "; for a mask use (mask * 255).astype(np.uint8)"
    elif np.issubdtype(a.dtype, np.floating):
        hint = (
            "; for values in [0, 1] use (img * 255).round().clip(0, 255).astype(np.uint8), "
            "for values in [0, 255] use img.round().clip(0, 255).astype(np.uint8)"
        )
    elif a.dtype == np.uint16:
        hint = "; for 16-bit images use (img >> 8).astype(np.uint8) (or shift by bits - 8)"
    elif np.issubdtype(a.dtype, np.integer):
        hint = "; use img.clip(0, 255).astype(np.uint8) if the values are 0-255"
    return ImageError(f"image arrays must have dtype uint8, got {a.dtype}{hint}")


def _from_array(a: np.ndarray, color: str) -> np.ndarray:
    if a.dtype != np.uint8:
        raise _dtype_error(a)
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (1, 3, 4)):
        raise ImageError(f"image array has shape {a.shape}; accepted: (H, W), (H, W, 1), (H, W, 3) or (H, W, 4)")
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
    if image.width == 0 or image.height == 0:
        raise ImageError(f"image is empty (size {image.size})")
    _check_size(image.width, image.height, f"the PIL image ({image.mode})")
    if image.getexif().get(0x0112, 1) in range(2, 9):  # EXIF orientation: upright, as files are
        from PIL import ImageOps

        image = ImageOps.exif_transpose(image)
    if image.mode in _PIL_16BIT_MODES:
        gray = np.asarray(image)
        if gray.min() < 0 or gray.max() > 0xFFFF:
            raise ImageError(
                f"PIL image mode {image.mode!r} holds values outside 0-65535; convert "
                "it to an 8-bit mode ('L' or 'RGB') with the scaling your data needs"
            )
        gray = _to_8bit(gray.astype(np.uint16), "the PIL image")
        return cv2.cvtColor(np.ascontiguousarray(gray), cv2.COLOR_GRAY2BGR)
    if image.mode == "F":
        raise ImageError(
            "PIL image mode 'F' holds floating-point pixels, which have no fixed "
            "range: convert it to an 8-bit mode ('L' or 'RGB') with the scaling your data needs"
        )
    try:
        if image.mode in ("La", "RGBa"):  # premultiplied alpha: PIL un-premultiplies via LA/RGBA
            image = image.convert(image.mode.upper())
        rgb = np.asarray(image.convert("RGB") if image.mode != "RGB" else image)
    except ValueError as e:  # PIL has no conversion from this mode
        raise ImageError(
            f"PIL image mode {image.mode!r} cannot be converted to RGB ({e}); convert it to 'RGB' or 'L' first"
        ) from None
    return np.ascontiguousarray(rgb[..., ::-1])


def load_image(image: Any, color: str = "bgr") -> np.ndarray:
    """A C-contiguous uint8 (H, W, 3) BGR array from any accepted input (see the module doc).

    ``color`` is the channel order of 3- and 4-channel arrays: "bgr" (OpenCV, the default) or
    "rgb" (PIL, matplotlib, most other libraries). Raises FileNotFoundError for a missing file,
    :class:`~pipnet_sdk.errors.ImageError` (a ValueError) for an unreadable, too large or
    unconvertible image or an array of the wrong dtype/shape, TypeError for other types.
    """
    color = check_color(color)
    if isinstance(image, (str, os.PathLike)):
        return _read_file(image)
    if isinstance(image, np.ndarray):
        return _from_array(image, color)
    if is_pil_image(image):
        return _from_pil(image)
    raise TypeError(f"cannot use {type(image).__name__} as an image; accepted: {ACCEPTED}")
