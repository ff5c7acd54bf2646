"""Time the SDK's NumPy PIP decoder on a batch of faces (the target: 64 faces in a few ms).

    python benchmarks/decode_speed.py [--faces 64] [--model pipnet_sdk/models/pipnet-fast.onnx]

Decodes real outputs of the model (on random crops) and, as a baseline in the same run, the
same outputs with a plain per-face Python loop over the same function. For the shipped files
(format 3) that is the neighbour merge of the candidates the graph gives; for a format-1 file
(``python -m export.to_onnx CHECKPOINT --out heads.onnx --format 1``) it is also the argmax and
offset reads on the head maps.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from pipnet_sdk.landmark_model import LandmarkModel

ROOT = Path(__file__).resolve().parents[1]


def best_ms(fn, repeat: int = 50) -> float:
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--faces", type=int, default=64)
    ap.add_argument("--model", default=str(ROOT / "pipnet_sdk" / "models" / "pipnet-fast.onnx"))
    a = ap.parse_args()
    lm = LandmarkModel(a.model, threads=1)
    s = lm.spec.input_size
    crops = np.random.RandomState(0).randint(0, 255, (a.faces, s, s, 3), np.uint8)
    outs = lm.forward(lm.preprocess(crops))
    batched = best_ms(lambda: lm.decode(outs))
    per_face = best_ms(lambda: [lm.decode([o[i : i + 1] for o in outs]) for i in range(a.faces)], 10)
    n = lm.spec.num_landmarks
    print(
        f"model {lm.spec.name} {lm.spec.version}, format {lm.spec.format} ({n} points, "
        f"{lm.spec.num_neighbors} neighbours)"
    )
    print(f"decode {a.faces} faces in one batch : {batched:.3f} ms  ({batched / a.faces * 1000:.1f} us/face)")
    print(f"decode {a.faces} faces one by one   : {per_face:.3f} ms  ({per_face / batched:.1f}x the batched time)")


if __name__ == "__main__":
    main()
