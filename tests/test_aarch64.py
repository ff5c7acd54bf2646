"""The int8 models on aarch64 (Raspberry Pi, Graviton, Apple Silicon under Linux) against this
x86-64 CPU (benchmarks/aarch64_check.py, docs/aarch64.md).

- Under qemu-user, an arm64 Python with onnxruntime's aarch64 wheel runs pipnet-fast on crops cut
  here, on two emulated CPUs that take different int8 kernels: cortex-a72 (no dot product, like a
  Raspberry Pi 4) and qemu's max (dot product, i8mm, SVE). The landmarks must be this CPU's.
  Skipped without qemu-aarch64 or the arm64 userland (`python benchmarks/aarch64_check.py
  --prepare-only` makes it under .cache/aarch64).
- Natively, no emulation: onnxruntime's ARM kernel for the residual adds (QLinearAdd, NEON:
  22-bit fixed-point multipliers) rounds a few uint8 input pairs differently from its x86 kernel
  (float32 FMA). The 0.5.2 files have such pairs (pipnet-fast 6 over 6 adds, pipnet-r18 3 over 8):
  13 of the 554 test faces (fast) and 2 (r18) meet one, and move by up to 1.5 px on ARM. Files
  whose add scales are nudged (benchmarks/aarch64_check.arm_safe_add_scales) have none.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from benchmarks import aarch64_check as arm

MISSING = arm.missing()
STEP = 60  # every 60th 300-W test image: 10 faces, about 20 s per emulated CPU
# the emulated CPU must show the features that pick each kernel family
KERNELS = {"cortex-a72": {"asimddp": False, "i8mm": False}, "max": {"asimddp": True, "i8mm": True}}


@pytest.mark.slow
@pytest.mark.skipif(MISSING is not None, reason=MISSING or "")
@pytest.mark.parametrize("cpu", sorted(KERNELS))
def test_int8_landmarks_on_an_emulated_arm64_cpu(tmp_path: Path, shared_dir: Path, cpu: str) -> None:
    """Every quantized activation is bit-identical to this CPU's on these faces; the raw outputs
    differ by float rounding in the graph's float tail only (~1e-7 in crop units), so landmarks
    agree to ~1e-4 px. The bound, 0.01 px on any landmark, breaks by orders of magnitude when the
    ARM side differs by one integer step anywhere: fed the 8-bit pipnet-fast file (0.5.0) this
    test fails, 2.08 px on one of its 10 faces (one residual-add element off by one), and so does
    the QDQ graph run in float on ARM (1.59 px; docs/aarch64.md)."""
    model, x, squares, truth = arm.labeled_inputs("pipnet-fast", shared_dir, STEP)
    assert len(x) >= 8
    np.save(tmp_path / "x.npy", x)
    info = arm.run_emulated(cpu, [(Path(model.path), tmp_path / "x.npy", tmp_path / "arm.npz")], timeout=600)
    assert info["machine"] == "aarch64"
    assert {k: info["features"][k] for k in KERNELS[cpu]} == KERNELS[cpu], info["features"]
    with np.load(tmp_path / "arm.npz") as z:
        there = {k: z[k] for k in z.files}
    r = arm.compare(arm.native_outputs(model, x), there, squares, truth)
    assert r["max_px"] <= 0.01, f"on an emulated {cpu} a landmark moved by {r['max_px']:.3g} px ({r})"
    assert r["max_candidate_diff"] <= 1e-5  # float rounding, not a different integer result


def test_arm_safe_add_scales_remove_every_differing_pair(tmp_path: Path) -> None:
    """The emulation of both QLinearAdd kernels finds the shipped pipnet-fast's differing pairs
    (the same ones qemu shows), and the nudged file has none."""
    pytest.importorskip("onnx")
    shipped = arm.add_rounding_pairs("pipnet-fast")
    assert len(shipped) == 6 and sum(int(t.sum()) for t in shipped.values()) > 0
    safe = tmp_path / "pipnet-fast-arm-safe.onnx"
    nudges = [k for _, k in arm.arm_safe_add_scales("pipnet-fast", safe)]
    assert max(abs(k) for k in nudges) <= 8  # a few 2**-20 steps: the scales barely move
    assert sum(int(t.sum()) for t in arm.add_rounding_pairs(safe).values()) == 0


@pytest.mark.xfail(
    strict=True,
    reason="the 0.5.2 files round a few residual-add inputs differently on ARM "
    "(NEON fixed-point QLinearAdd); a re-export with arm_safe_add_scales fixes it, then drop this mark",
)
@pytest.mark.parametrize("name", ["pipnet-fast", "pipnet-r18"])
def test_shipped_residual_adds_round_the_same_on_arm(name: str) -> None:
    pytest.importorskip("onnx")
    pairs = {k[2]: int(t.sum()) for k, t in arm.add_rounding_pairs(name).items()}
    assert sum(pairs.values()) == 0, f"{name}: input pairs that round differently on ARM, per add: {pairs}"
