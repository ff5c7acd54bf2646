"""Webcam demo: faces with stable ids and steady landmarks, live.

    python examples/webcam.py                 # camera 0
    python examples/webcam.py --camera 1
    python examples/webcam.py --video clip.mp4   # machines without a camera

Press q (or Esc) in the window to quit. Needs a GUI build of OpenCV (``opencv-python``; the
SDK's ``opencv-python-headless`` has no imshow).
"""

from __future__ import annotations

import argparse
import sys
import time

import cv2

from pipnet_sdk import Landmarker, draw
from pipnet_sdk.video import VideoLandmarker


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--camera", type=int, default=0, help="camera index (default 0)")
    ap.add_argument("--video", metavar="FILE", help="read this video file instead of a camera")
    ap.add_argument("--model", help="landmark model: registry name or .onnx path")
    ap.add_argument("--detector", help="face detector: registry name or .onnx path")
    ap.add_argument("--detect-every", type=int, default=10, metavar="K")
    ap.add_argument("--no-smooth", action="store_true", help="show the raw (unsmoothed) landmarks")
    args = ap.parse_args()

    cap = cv2.VideoCapture(args.video if args.video else args.camera)
    if not cap.isOpened():
        print(f"cannot open {'video ' + args.video if args.video else f'camera {args.camera}'}", file=sys.stderr)
        return 1
    fps_in = cap.get(cv2.CAP_PROP_FPS) or 30.0
    video = VideoLandmarker(
        Landmarker(model=args.model, detector=args.detector),
        detect_every=args.detect_every,
        smoothing=not args.no_smooth,
        fps=fps_in,
    )
    delay = max(1, int(1000 / fps_in)) if args.video else 1
    t_prev, rate = time.perf_counter(), 0.0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        # live camera: real time stamps; a file: its own frame clock
        stamp = None if args.video else time.perf_counter()
        faces = video.track(frame, timestamp=stamp)
        shown = draw(frame, faces)
        now = time.perf_counter()
        rate = 0.9 * rate + 0.1 / max(now - t_prev, 1e-6) if rate else 1 / max(now - t_prev, 1e-6)
        t_prev = now
        cv2.putText(
            shown,
            f"{rate:.0f} fps  {'detect' if video.detected else 'track'}",
            (10, 25),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.7,
            (0, 255, 255),
            2,
            cv2.LINE_AA,
        )
        try:
            cv2.imshow("pipnet-sdk (q to quit)", shown)
        except cv2.error:
            print("this OpenCV has no GUI (headless build): pip install opencv-python", file=sys.stderr)
            return 1
        if cv2.waitKey(delay) & 0xFF in (ord("q"), 27):
            break
    cap.release()
    cv2.destroyAllWindows()
    return 0


if __name__ == "__main__":
    sys.exit(main())
