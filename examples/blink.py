"""Count blinks in a video or a camera stream from eye openness (eye aspect ratio).

    python examples/blink.py --video clip.mp4     # prints the blinks, then the count per face
    python examples/blink.py --camera 0 --show    # live, in a window (needs opencv-python)

Each tracked face's eye openness (mean of both eyes' aspect ratios, from VideoLandmarker's
smoothed landmarks) is compared with that face's own open-eye level (the median of its last
``--window`` seconds): the eyes count as closed below ``--close`` x that level and as open again
above ``--open`` x it (hysteresis, so noise near one threshold does not count twice). A closed
spell of at most ``--max-closed`` seconds that ends is one blink; longer ones are not blinks.
Relative thresholds suit PIPNet, whose closed eyes rarely reach the textbook EAR of 0.1: on the
300W test set pipnet-fast gives closed eyes 0.01-0.23 against about 0.33 for open ones, and the
landmark smoothing makes short blinks shallower still (``--no-smooth`` for raw landmarks).
"""

from __future__ import annotations

import argparse
import sys
from collections import deque
from collections.abc import Iterable

import numpy as np


class BlinkCounter:
    """Hysteresis blink counter for one face; feed it one openness value per frame."""

    def __init__(
        self,
        fps: float = 30.0,
        close_ratio: float = 0.8,
        open_ratio: float = 0.9,
        window: float = 2.0,
        max_closed: float = 0.5,
        warmup: int = 5,
    ) -> None:
        if not 0 < close_ratio < open_ratio <= 1:
            raise ValueError(f"need 0 < close_ratio < open_ratio <= 1, got {close_ratio}, {open_ratio}")
        self.close, self.open, self.warmup = close_ratio, open_ratio, warmup
        self.max_closed = max(1, int(round(max_closed * fps)))
        self.history: deque[float] = deque(maxlen=max(warmup, int(round(window * fps))))
        self.closed_for = 0  # frames the eyes have been closed (0 = open)
        self.blinks = 0

    def update(self, openness: float | None) -> bool:
        """True on the frame where a blink ends (the eyes open again)."""
        if openness is None or not np.isfinite(openness):
            return False
        level = float(np.median(self.history)) if len(self.history) >= self.warmup else None
        if self.closed_for == 0:  # the open level is learnt from open frames only
            self.history.append(openness)
        if level is None:
            return False
        if self.closed_for == 0:
            self.closed_for = int(openness < self.close * level)
            return False
        if openness > self.open * level:
            blink = self.closed_for <= self.max_closed
            self.blinks += blink
            self.closed_for = 0
            return blink
        self.closed_for += 1
        return False


def count_blinks(
    frames: Iterable[np.ndarray], landmarker=None, fps: float = 30.0, smoothing: bool = True, **options
) -> dict[int, list[int]]:
    """{track id: frame numbers where its blinks ended} over BGR frames."""
    from pipnet_sdk.video import VideoLandmarker

    BlinkCounter(fps=fps, **options)  # bad thresholds fail now, not at the first face
    video = VideoLandmarker(landmarker, smoothing=smoothing, fps=fps)
    counters: dict[int, BlinkCounter] = {}
    blinks: dict[int, list[int]] = {}
    for i, frame in enumerate(frames):
        for face in video.track(frame):
            eyes = face.eye_openness
            if face.track_id not in counters:
                counters[face.track_id] = BlinkCounter(fps=fps, **options)
            counter = counters[face.track_id]
            if counter.update(None if eyes is None else float(np.mean(eyes))):
                blinks.setdefault(face.track_id, []).append(i)
            blinks.setdefault(face.track_id, [])
    return blinks


def _frames(cap, show: bool):
    import cv2

    while True:
        ok, frame = cap.read()
        if not ok:
            return
        yield frame
        if show:
            try:
                cv2.imshow("blink (q to quit)", frame)
            except cv2.error:
                print("this OpenCV has no GUI (headless build): pip install opencv-python", file=sys.stderr)
                return
            if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
                return


def main(argv: list[str] | None = None) -> int:
    import cv2

    from pipnet_sdk import Landmarker

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--video", metavar="FILE", help="a video file (default: a camera)")
    ap.add_argument("--camera", type=int, default=0, help="camera index (default 0)")
    ap.add_argument("--model", help="landmark model: registry name or .onnx path")
    ap.add_argument("--close", type=float, default=0.8, help="closed below this x the open level (0.8)")
    ap.add_argument("--open", type=float, default=0.9, help="open again above this x the open level (0.9)")
    ap.add_argument("--window", type=float, default=2.0, help="seconds of history for the open level (2)")
    ap.add_argument("--max-closed", type=float, default=0.5, help="longest blink in seconds (0.5)")
    ap.add_argument("--no-smooth", action="store_true", help="raw landmarks instead of smoothed ones")
    ap.add_argument("--show", action="store_true", help="show the frames in a window")
    args = ap.parse_args(argv)
    try:
        BlinkCounter(close_ratio=args.close, open_ratio=args.open)
    except ValueError as e:
        ap.error(f"--close / --open: {e}")

    cap = cv2.VideoCapture(args.video if args.video else args.camera)
    if not cap.isOpened():
        source = f"video {args.video}" if args.video else f"camera {args.camera}"
        print(f"cannot open {source}", file=sys.stderr)
        return 1
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    try:
        blinks = count_blinks(
            _frames(cap, args.show),
            Landmarker(model=args.model),
            fps=fps,
            smoothing=not args.no_smooth,
            close_ratio=args.close,
            open_ratio=args.open,
            window=args.window,
            max_closed=args.max_closed,
        )
    except KeyboardInterrupt:
        return 130
    finally:
        cap.release()
    for track, ends in sorted(blinks.items()):
        times = ", ".join(f"{i / fps:.2f}s" for i in ends)
        when = f" (ending at {times})" if ends else ""
        print(f"face {track}: {len(ends)} blink{'s' * (len(ends) != 1)}{when}")
    if not blinks:
        print("no face found")
    return 0


if __name__ == "__main__":
    sys.exit(main())
