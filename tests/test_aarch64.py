"""The shipped int8 model gives this CPU's landmarks on aarch64 (Raspberry Pi, Graviton, Apple
Silicon under Linux), checked under qemu-user: an arm64 Python with onnxruntime's aarch64 wheel
runs pipnet-fast on crops cut here (benchmarks/aarch64_check.py, docs/aarch64.md).

Two emulated CPUs, two families of onnxruntime int8 kernels: cortex-a72 (no dot product, like a
Raspberry Pi 4: NEON multiply + pairwise-add kernels) and qemu's max (dot product and i8mm, like
Graviton3: SDOT convolutions, UMMLA/SMMLA GEMMs). Skipped without qemu-aarch64 or the arm64
userland (`python benchmarks/aarch64_check.py --prepare-only` makes it under .cache/aarch64).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from benchmarks import aarch64_check as arm

pytestmark = pytest.mark.slow
MISSING = arm.missing()
STEP = 45  # every 45th 300-W test image: 13 faces, about 25 s per emulated CPU
# the emulated CPU must show the features that pick each kernel family
KERNELS = {"cortex-a72": {"asimddp": False, "i8mm": False}, "max": {"asimddp": True, "i8mm": True}}


@pytest.mark.skipif(MISSING is not None, reason=MISSING or "")
@pytest.mark.parametrize("cpu", sorted(KERNELS))
def test_int8_landmarks_on_an_emulated_arm64_cpu(tmp_path: Path, shared_dir: Path, cpu: str) -> None:
    """Raw outputs differ from this CPU's by float rounding only (≈1e-7 in crop units), so the
    landmarks agree to ~1e-4 px. The bound, 0.01 px at most on any landmark, is what the ARM side
    breaks by orders of magnitude when it computes differently: with graph optimisation off
    there (the QDQ graph in float instead of the integer kernels) landmarks moved by up to
    several pixels (docs/aarch64.md)."""
    model, x, squares, truth = arm.labeled_inputs("pipnet-fast", shared_dir, STEP)
    assert len(x) >= 10
    np.save(tmp_path / "x.npy", x)
    info = arm.run_emulated(cpu, [(Path(model.path), tmp_path / "x.npy", tmp_path / "arm.npz")], timeout=600)
    assert info["machine"] == "aarch64"
    assert {k: info["features"][k] for k in KERNELS[cpu]} == KERNELS[cpu], info["features"]
    with np.load(tmp_path / "arm.npz") as z:
        there = {k: z[k] for k in z.files}
    r = arm.compare(arm.native_outputs(model, x), there, squares, truth)
    assert r["max_px"] <= 0.01, f"on an emulated {cpu} a landmark moved by {r['max_px']:.3g} px"
    assert r["faces_moved"] == 0
    assert r["max_candidate_diff"] <= 1e-5  # float rounding, not a different integer result
