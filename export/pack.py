"""Pack a crop cache (.npz of uint8 images) as compressed image bytes (WebP by default: at the
same quality about 30 % smaller than JPEG), e.g. to move it to a training machine that cannot
read ../shared; `prepare`, `unlabeled_crops` and `onnx_pseudo_labels` read packed caches too.
`python -m export.gpu_run pack` packs what a config trains on.

    python -m export.pack .cache/crops-XXXX.npz [--quality 90]   -> .cache/crops-XXXX.packed.npz
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

QUALITY_FLAG = {".webp": cv2.IMWRITE_WEBP_QUALITY, ".jpg": cv2.IMWRITE_JPEG_QUALITY}


def pack(src: Path, quality: int = 90, dst: Path | None = None, fmt: str = ".webp") -> Path:
    """Write src's uint8 image arrays as fmt (.webp or .jpg) bytes, other arrays as they are, to
    dst, by default the packed twin beside src that load_cache finds."""
    d = dict(np.load(src))
    out: dict[str, np.ndarray] = {}
    for k, v in d.items():
        if v.dtype == np.uint8 and v.ndim == 4:
            blobs = [cv2.imencode(fmt, im, [QUALITY_FLAG[fmt], quality])[1].tobytes() for im in v]
            out[f"{k}__bytes"] = np.frombuffer(b"".join(blobs), np.uint8)
            out[f"{k}__offsets"] = np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64)
            out[f"{k}__shape"] = np.array(v.shape)
        else:
            out[k] = v
    dst = dst or src.with_suffix(".packed.npz")
    np.savez(dst, **out)
    return dst


def unpack(path: Path) -> dict[str, np.ndarray]:
    """A packed file's arrays, the images decoded (older packs name their bytes NAME__jpeg)."""
    d = dict(np.load(path))
    out = {}
    for k in [k for k in d if k.endswith(("__bytes", "__jpeg"))]:
        name = k.rpartition("__")[0]
        buf, off, shape = d.pop(k), d.pop(f"{name}__offsets"), d.pop(f"{name}__shape")
        arr = np.empty(tuple(shape), np.uint8)
        for i in range(shape[0]):
            arr[i] = cv2.imdecode(buf[off[i] : off[i + 1]], cv2.IMREAD_COLOR)
        out[name] = arr
    out.update(d)
    return out


def load_cache(path: Path) -> dict[str, np.ndarray] | None:
    """The cache at path (.npz), or its packed twin, or None."""
    if path.exists():
        return dict(np.load(path))
    packed = path.with_suffix(".packed.npz")
    return unpack(packed) if packed.exists() else None


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m export.pack", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("cache", nargs="+", type=Path)
    ap.add_argument("--quality", type=int, default=90)
    ap.add_argument("--format", choices=(".webp", ".jpg"), default=".webp")
    a = ap.parse_args(argv)
    for p in a.cache:
        dst = pack(p, a.quality, fmt=a.format)
        print(f"{p} -> {dst} ({dst.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
