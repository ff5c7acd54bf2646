"""MediaPipe Face Mesh worker for benchmarks/end_to_end.py. Runs in its own virtual environment
(MediaPipe pins protobuf < 5 and numpy < 2, which clash with onnx), so MediaPipe is never a
dependency of pipnet-sdk:

    python3 -m venv .venv-mp && .venv-mp/bin/pip install "mediapipe==0.10.21"
    .venv-mp/bin/python benchmarks/_mediapipe_worker.py --cpu 0

0.10.21 is pinned because the newer wheels checked (0.10.35, 1.2.3) no longer have the legacy
``mediapipe.solutions`` API nor any .tflite model inside, and the Tasks API needs a model file
downloaded from outside PyPI. 0.10.21 brings numpy 1.26 and protobuf 4.25 into its own venv.

Protocol (JSON lines): the worker first prints {"ready": true, "mediapipe": VERSION, ...}; then for
each request line {"path": IMAGE} it runs Face Mesh once on that image (read and converted to RGB
before the clock starts; the last image is cached so repeated calls do not re-read it) and prints
{"ms": TIME, "boxes": [[x1, y1, x2, y2], ...]}: one box per face, the extent of its 468 mesh points
in pixels. An empty line or EOF ends it. Only the standard library, NumPy and OpenCV (both
MediaPipe dependencies) besides MediaPipe.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import cv2
import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpu", type=int, default=None, help="pin this process (and MediaPipe's threads) to this core")
    ap.add_argument("--max-faces", type=int, default=20)
    ap.add_argument("--min-detection-confidence", type=float, default=0.5)
    a = ap.parse_args()
    if a.cpu is not None:  # every thread started so far (NumPy's BLAS), and MediaPipe's later ones inherit it
        for tid in os.listdir("/proc/self/task"):
            os.sched_setaffinity(int(tid), {a.cpu})
    cv2.setNumThreads(1)
    # the protocol gets a private copy of stdout; fd 1 (and sys.stdout) go to stderr, so that
    # nothing MediaPipe or its C++ code prints can corrupt it
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    import mediapipe as mp

    mesh = mp.solutions.face_mesh.FaceMesh(
        static_image_mode=True,
        max_num_faces=a.max_faces,
        refine_landmarks=False,
        min_detection_confidence=a.min_detection_confidence,
    )
    cached: tuple[str, np.ndarray] | None = None

    def reply(obj: dict) -> None:
        out.write(json.dumps(obj) + "\n")
        out.flush()

    reply({"ready": True, "mediapipe": mp.__version__, "cpu": a.cpu, "max_faces": a.max_faces})
    for line in sys.stdin:
        line = line.strip()
        if not line:
            break
        req = json.loads(line)
        try:
            if cached is None or cached[0] != req["path"]:
                bgr = cv2.imread(req["path"])
                if bgr is None:
                    raise ValueError(f"cannot read {req['path']}")
                cached = (req["path"], np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)))
            rgb = cached[1]
            t0 = time.perf_counter()
            res = mesh.process(rgb)
            ms = (time.perf_counter() - t0) * 1000
            h, w = rgb.shape[:2]
            boxes = []
            for face in res.multi_face_landmarks or []:
                xy = np.array([(p.x * w, p.y * h) for p in face.landmark], np.float32)
                boxes.append([float(v) for v in (*xy.min(0), *xy.max(0))])
            reply({"ms": ms, "boxes": boxes})
        except Exception as e:  # report, keep serving
            reply({"error": f"{type(e).__name__}: {e}"})


if __name__ == "__main__":
    main()
