"""Landmark every image under a folder (or bucket) with Ray Data and write Parquet.

    pip install "pipnet-sdk[ray]"
    python examples/ray_folder_to_parquet.py photos/ landmarks/            # this machine
    python examples/ray_folder_to_parquet.py s3://bucket/photos/ s3://bucket/landmarks/ --actors 32

The same command runs on a laptop (a local Ray runtime is started) or on a cluster: when
``RAY_ADDRESS`` is set (``ray job submit`` sets it) it joins that cluster instead, e.g.

    ray job submit --address http://head:8265 \\
        --runtime-env-json '{"pip": ["pipnet-sdk[ray]"]}' \\
        -- python ray_folder_to_parquet.py s3://bucket/photos/ s3://bucket/landmarks/ --actors 32

On a cluster the input and output must be reachable from every node (object store or shared
file system), and ``--model``/``--detector`` should be registry names (each node downloads and
caches them) or paths that exist on every node.

One row per image: path, width, height, num_faces, boxes, scores, landmarks, landmark_scores,
five_points, pose, eye_openness, mouth_openness, error (null on success; unreadable images give
an error row and the job goes on). Read it back with ``pyarrow.parquet.read_table(OUT)``,
``pandas.read_parquet(OUT)`` or ``ray.data.read_parquet``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("input", help="folder, glob or URI of images (searched recursively)")
    ap.add_argument("output", help="Parquet output folder or URI")
    ap.add_argument("--model", help="landmark model: registry name or .onnx path (default pipnet-fast)")
    ap.add_argument("--detector", help="face detector: registry name or .onnx path (default yunet-n)")
    ap.add_argument("--actors", type=int, help="landmarking actors (default: autoscale to the CPUs)")
    ap.add_argument("--threads", type=int, default=1, help="onnxruntime threads (= CPUs) per actor")
    ap.add_argument("--batch-size", type=int, default=64, help="images per actor call")
    ap.add_argument("--num-cpus", type=int, help="CPUs of the local Ray runtime (default: all)")
    args = ap.parse_args(argv)
    if "://" not in args.output and Path(args.output).exists() and any(Path(args.output).iterdir()):
        print(
            f"ray_folder_to_parquet: {args.output} is not empty: Ray would add to it (rows of an earlier "
            "run counted twice); remove it or choose another folder",
            file=sys.stderr,
        )
        return 2

    import ray

    from pipnet_sdk.integrations.ray import landmark_dataset

    if os.environ.get("RAY_ADDRESS"):
        ray.init(address="auto")
    else:  # local runtime; workers import pipnet_sdk from where this process found it
        import pipnet_sdk

        src = str(Path(pipnet_sdk.__file__).resolve().parents[1])
        pythonpath = os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))
        ray.init(num_cpus=args.num_cpus, include_dashboard=False, runtime_env={"env_vars": {"PYTHONPATH": pythonpath}})

    start = time.perf_counter()
    ds = landmark_dataset(
        args.input,
        model=args.model,
        detector=args.detector,
        threads=args.threads,
        concurrency=args.actors,
        batch_size=args.batch_size,
    )
    # writing is light next to landmarking; reserving no CPU for it keeps the writes flowing
    # while the actors hold every CPU (else results pile up until the last image is done)
    ds.write_parquet(args.output, ray_remote_args={"num_cpus": 0})
    seconds = time.perf_counter() - start

    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    summary = pq.read_table(args.output, columns=["path", "num_faces", "error"])
    failed = summary.filter(pc.is_valid(summary["error"]))
    n = summary.num_rows
    print(
        f"{n} images ({failed.num_rows} unreadable), {pc.sum(summary['num_faces']).as_py() or 0} "
        f"faces in {seconds:.1f} s ({n / seconds:.1f} images/s, start-up included) -> {args.output}"
    )
    for row in failed.slice(0, 5).to_pylist():
        print(f"  {row['path']}: {row['error']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
