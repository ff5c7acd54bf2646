"""Images per second: local Ray Data runtime vs the plain single-process loop, same images, same run.

    python benchmarks/ray_throughput.py --model /tmp/fast.onnx            # the 554 300W test images
    python benchmarks/ray_throughput.py --model pipnet-fast --limit 200 --actors 4

Modes (all over the same image files, read from disk by every mode):

- ``detect loop``: one process, ``Landmarker.detect(path)`` per image, onnxruntime with
  ``--threads-single`` threads (default: every core);
- ``detect_batch``: one process, ``Landmarker.detect_batch`` over chunks of ``--batch-size``;
- ``ray``: ``read_image_files`` (``ray.data.read_binary_files``) + ``landmark_dataset`` on a local Ray runtime,
  ``--actors`` actors x ``--threads`` onnxruntime threads, ``--batch-size`` images per call.

Single-process timings exclude model loading; the Ray timing is the whole job (actor start,
model load in each actor, reading, landmarking), without ``ray.init``; the steady-state rate
counts from the first result batch on (start-up and the first batch excluded). The table is printed
and written to ``benchmarks/results/ray_throughput.txt`` (``--out``).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.cpu import cpu_line  # noqa: E402


def _images(args) -> list[str]:
    folder = Path(
        args.images or Path(os.environ.get("PIPNET_SHARED", ROOT.parent / "shared")) / "data" / "300w" / "test"
    )
    paths = sorted(str(p) for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not paths:
        sys.exit(f"no images under {folder}")
    return paths[: args.limit] if args.limit else paths


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="pipnet-fast", help="registry name or .onnx path")
    ap.add_argument(
        "--detector",
        help="registry name or .onnx path (default: "
        "$PIPNET_SHARED/models/yunet_n_dynamic.onnx if present, else yunet-n)",
    )
    ap.add_argument("--images", help="folder of images (default: $PIPNET_SHARED/data/300w/test)")
    ap.add_argument("--limit", type=int, help="use only the first N images")
    ap.add_argument("--actors", type=int, default=os.cpu_count(), help="Ray actors (default: cores)")
    ap.add_argument("--threads", type=int, default=1, help="onnxruntime threads per Ray actor")
    ap.add_argument(
        "--threads-single",
        type=int,
        default=os.cpu_count(),
        help="onnxruntime threads of the single-process modes (default: cores)",
    )
    ap.add_argument("--batch-size", type=int, default=32, help="images per detect_batch / Ray call")
    ap.add_argument("--label", help="how to name the model in the table (default: --model)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "ray_throughput.txt"))
    args = ap.parse_args(argv)

    from pipnet_sdk import Landmarker

    detector = args.detector
    if detector is None:
        shared = Path(os.environ.get("PIPNET_SHARED", ROOT.parent / "shared")) / "models" / "yunet_n_dynamic.onnx"
        detector = str(shared) if shared.is_file() else None
    paths = _images(args)
    n = len(paths)
    rows: list[tuple[str, str, float, str]] = []  # mode, setup, images/s, note

    lm = Landmarker(model=args.model, detector=detector, threads=args.threads_single)
    lm.detect(paths[0])  # warm-up
    t = time.perf_counter()
    ref = {p: lm.detect(p) for p in paths}
    dt = time.perf_counter() - t
    faces = sum(len(f) for f in ref.values())
    rows.append(("detect loop", f"1 process x {args.threads_single} threads", n / dt, f"{dt:.1f} s"))

    t = time.perf_counter()
    batched = []
    for i in range(0, n, args.batch_size):
        batched += lm.detect_batch(paths[i : i + args.batch_size])
    dt = time.perf_counter() - t
    rows.append(
        ("detect_batch", f"1 process x {args.threads_single} threads, {args.batch_size}/batch", n / dt, f"{dt:.1f} s")
    )
    del lm

    import ray

    from pipnet_sdk.integrations.ray import landmark_dataset, read_image_files

    t = time.perf_counter()
    ray.init(
        num_cpus=os.cpu_count(),
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}},
    )
    init_s = time.perf_counter() - t
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False

    start = time.perf_counter()
    src = read_image_files(paths)
    ds = landmark_dataset(
        src,
        model=args.model,
        detector=detector,
        threads=args.threads,
        concurrency=args.actors,
        batch_size=args.batch_size,
    )
    out, first = [], None  # stream the results; note when the first batch comes out
    # consume the actors' output directly: a further task-based step (select_columns...) would
    # need a free CPU, and the actors hold them all
    for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
        if first is None:
            first = (time.perf_counter(), batch.num_rows)
        out += batch.to_pylist()
    ray_s = time.perf_counter() - start
    ray.shutdown()
    setup = f"{args.actors} actors x {args.threads} threads, {args.batch_size}/batch"
    rows.append(("ray (whole job)", setup, n / ray_s, f"{ray_s:.1f} s incl. actor start-up"))
    first_s = first[0] - start
    steady = (n - first[1]) / max(ray_s - first_s, 1e-9)
    rows.append(("ray (steady)", setup, steady, f"after the first result ({first_s:.1f} s: start-up + first batch)"))

    # the results must agree with the single-process loop
    worst, errors = 0.0, [r for r in out if r["error"] is not None]
    for r in out:
        if r["error"] is None:
            assert r["num_faces"] == len(ref[r["path"]]), r["path"]
            if r["num_faces"]:
                a = np.asarray(r["landmarks"], np.float32)
                worst = max(worst, float(np.abs(a - np.stack([f.landmarks for f in ref[r["path"]]])).max()))
    assert len(out) == n and not errors, errors[:3]
    batch_worst = max(
        (
            float(np.abs(np.stack([f.landmarks for f in b]) - np.stack([f.landmarks for f in ref[p]])).max())
            for p, b in zip(paths, batched)
            if b
        ),
        default=0.0,
    )

    lines = [
        f"pipnet-sdk Ray Data throughput: {n} images ({faces} faces), model {args.label or args.model}",
        f"machine: {cpu_line()}; python {platform.python_version()}, ray {ray.__version__}",
        f"load during the run: {os.getloadavg()[0]:.2f} (1-min average; other jobs share these cores)",
        "",
        f"{'mode':<20} {'setup':<40} {'images/s':>9}  note",
        f"{'-' * 20} {'-' * 40} {'-' * 9}  {'-' * 4}",
    ]
    lines += [f"{m:<20} {s:<40} {v:>9.1f}  {note}" for m, s, v, note in rows]
    lines += [
        "",
        f"ray.init (not counted): {init_s:.1f} s; max |landmark difference| vs detect loop: "
        f"ray {worst:.2e} px, detect_batch {batch_worst:.2e} px",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(f"saved {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
