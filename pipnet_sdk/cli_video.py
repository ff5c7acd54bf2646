"""``pipnet video IN [--out OUT.mp4] [--json FILE] ...``: track faces through a video file.

Wired into :mod:`pipnet_sdk.cli` with ``add_parser(subparsers)``; ``run(args)`` returns the exit
code: 0 = done, 2 = a usage error (missing file, unreadable video, unwritable output, unusable
model) reported as one ``pipnet: error: ...`` line on stderr.

The JSON (``--json FILE``, ``-`` = stdout) is one document, written frame by frame::

    {"video": ..., "width": W, "height": H, "fps": F, "model": ..., "detector": ...,
     "frames": [{"index": 0, "time": 0.0, "detected": true, "faces": [Face.to_dict(), ...]}, ...],
     "num_frames": N, "complete": true}

A run that stops early (an error, Ctrl-C) still closes the JSON, with the frames it finished,
``"complete": false`` and an ``"error"`` saying why. Outputs are checked before any work.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Iterator

from ._cli_common import (_positive_int, _progress, check_distinct, check_writable, folders_for_a_probe,
                          make_parent, native_stderr_silenced)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "video", help="track faces and landmarks through a video file",
        description="Track faces through a video: steady landmarks with stable ids. "
                    "Writes JSON per frame (--json) and/or an annotated video (--out).")
    p.add_argument("input", metavar="IN", help="video file (anything OpenCV can decode)")
    p.add_argument("--out", metavar="OUT.mp4", help="write the annotated video here")
    p.add_argument("--json", metavar="FILE", help="write per-frame JSON here ('-' = stdout)")
    p.add_argument("--model", metavar="M", help="landmark model: registry name or .onnx path")
    p.add_argument("--detector", metavar="D", help="face detector: registry name or .onnx path")
    p.add_argument("--detect-every", type=_positive_int, default=10, metavar="K",
                   help="run the face detector at least every K frames (default 10)")
    p.add_argument("--no-smooth", action="store_true", help="no One-Euro smoothing of the landmarks")
    p.add_argument("--threads", type=_positive_int, metavar="N", help="onnxruntime threads")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar, no summary line")
    p.set_defaults(func=run)
    return p


def _error(message: str) -> int:
    print(f"pipnet: error: {' '.join(str(message).split())}", file=sys.stderr)
    return 2


def open_video_writer(path: Path, fps: float, size: tuple[int, int]) -> Any:
    """An OpenCV VideoWriter (MPEG-4 part 2) for ``path``; check ``isOpened()``."""
    import cv2

    return cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)


def check_video_writable(path: Path, fps: float, size: tuple[int, int]) -> None:
    """ValueError now, before any work, unless OpenCV can write a video at ``path`` (its extension
    names a container it has): tried on a temporary file beside it, removed after."""
    try:
        with folders_for_a_probe(path.parent) as folder, native_stderr_silenced():  # OpenCV's warnings
            probe = folder / f".pipnet-{os.getpid()}.probe{path.suffix}"
            writer = open_video_writer(probe, fps, size)
            ok = writer.isOpened()
            writer.release()
            with contextlib.suppress(OSError):
                probe.unlink()
    except OSError as e:
        raise ValueError(f"cannot write the video {path}: {e.strerror or e}") from None
    if not ok:
        raise ValueError(f"cannot write the video {path} (unknown extension or codec? .mp4 and .avi work)")


def _frames(cap: Any) -> Iterator[Any]:
    while True:
        ok, frame = cap.read()
        if not ok:
            return
        yield frame


def run(args: argparse.Namespace) -> int:
    import cv2

    from .landmarker import DEFAULT_DETECTOR, DEFAULT_MODEL, Landmarker
    from .video import VideoLandmarker

    if os.path.isdir(args.input):
        return _error(f"{args.input} is a folder, not a video file")
    if not os.path.isfile(args.input):
        return _error(f"no such video file: {args.input}")
    if args.out is None and args.json is None and args.quiet:
        return _error("nothing to do: give --out and/or --json (or drop --quiet to only time it)")
    with native_stderr_silenced():  # FFmpeg's own lines about a file it cannot read
        cap = cv2.VideoCapture(args.input)
        ok, first = cap.read() if cap.isOpened() else (False, None)
    if not ok or first is None:
        cap.release()
        return _error(f"cannot read {args.input} as a video (not a video, or a codec OpenCV lacks)")
    fps = cap.get(cv2.CAP_PROP_FPS)
    fps = fps if fps and 0 < fps < 1000 else 30.0
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    h, w = first.shape[:2]
    try:  # both outputs must be writable, and neither the input, before any model is loaded
        check_distinct(**{"--out": args.out, "--json": args.json})
        if args.json not in (None, "-"):
            check_writable(args.json, "--json", [args.input])
        if args.out is not None:
            check_video_writable(check_writable(args.out, "--out", [args.input]), fps, (w, h))
    except ValueError as e:
        cap.release()
        return _error(str(e))
    try:
        lm = Landmarker(model=args.model, detector=args.detector, threads=args.threads)
    except (OSError, ValueError) as e:
        cap.release()
        return _error(f"cannot load the models: {e}")
    except Exception as e:  # onnxruntime's own errors, e.g. not an ONNX file
        if type(e).__module__.startswith("onnxruntime"):
            cap.release()
            return _error(f"cannot load the models: {e}")
        raise
    video = VideoLandmarker(lm, detect_every=args.detect_every, smoothing=not args.no_smooth, fps=fps)

    writer = None
    if args.out:
        writer = open_video_writer(make_parent(Path(args.out)), fps, (w, h))
        if not writer.isOpened():
            cap.release()
            return _error(f"cannot write the video {args.out} (unknown extension or codec?)")
    js = None
    if args.json:
        try:
            js = sys.stdout if args.json == "-" else open(make_parent(Path(args.json)), "w", encoding="utf-8")
        except OSError as e:
            cap.release()
            if writer is not None:
                writer.release()
            return _error(f"cannot write {args.json}: {e}")
        head = {"video": args.input, "width": w, "height": h, "fps": round(fps, 3),
                "model": args.model or DEFAULT_MODEL, "detector": args.detector or DEFAULT_DETECTOR}
        js.write(json.dumps(head)[:-1] + ', "frames": [')

    def all_frames() -> Iterator[Any]:
        yield first
        yield from _frames(cap)

    n, busy, failure = 0, 0.0, None
    try:
        for frame in _progress(all_frames(), args.quiet, total, unit="frame"):
            t0 = time.perf_counter()
            faces = video.track(frame, timestamp=n / fps)
            busy += time.perf_counter() - t0
            if js is not None:
                entry = {"index": n, "time": round(n / fps, 4), "detected": video.detected,
                         "faces": [f.to_dict() for f in faces]}
                js.write(("," if n else "") + "\n" + json.dumps(entry))
            if writer is not None:
                from .drawing import draw

                writer.write(draw(frame, faces))
            n += 1
    except BaseException as e:  # the JSON says the run stopped early, and why; then the error goes on
        failure = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        raise
    finally:
        cap.release()
        if writer is not None:
            writer.release()
        if js is not None:
            tail = {"num_frames": n, "complete": failure is None}
            if failure is not None:
                tail["error"] = f"stopped after {n} frames: {failure}"
            js.write("\n], " + json.dumps(tail)[1:] + "\n")
            if js is not sys.stdout:
                js.close()
    if not args.quiet:
        rate = n / busy if busy > 0 else float("inf")
        print(f"pipnet video: {n} frames, tracking at {rate:.1f} frames/s "
              f"(detector every {args.detect_every} frames)", file=sys.stderr)
    return 0


if __name__ == "__main__":  # python -m pipnet_sdk.cli_video IN ... (the same as `pipnet video IN ...`)
    parser = argparse.ArgumentParser(prog="pipnet")
    sub = parser.add_subparsers(dest="command")
    add_parser(sub)
    ns = parser.parse_args(["video", *sys.argv[1:]])
    sys.exit(ns.func(ns))
