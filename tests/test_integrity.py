"""Model files check themselves, and the int8 models give the same landmarks on every CPU.

- A landmark model file carries the sha256 of its own bytes (export.onnx_meta.sealed); a few bytes
  flipped inside the weights raise ChecksumError at load, whichever way the file is given.
- A third-party file given by path under a registry file name is checked against the registry.
- The shipped int8 models run through onnxruntime's integer kernels (whatever this CPU has: VNNI,
  AVX-512 or AVX2 u8s8) and again with graph optimisation off (the QDQ graph in float, the same
  on every CPU); the landmarks must agree. With 8-bit weights, AVX2-only CPUs saturated.
- The same files run under qemu-user emulating an AVX2-only CPU (no AVX-512, no VNNI: onnxruntime
  takes its AVX2 u8s8 kernels there) give this CPU's landmarks (skipped without qemu-x86_64).
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks import aarch64_check as arm
from pipnet_sdk.crop import to_image
from pipnet_sdk.hub import PACKAGED_DIR, ChecksumError, resolve
from pipnet_sdk.landmark_model import LandmarkModel
from pipnet_sdk.runtime import make_session

FAST = PACKAGED_DIR / "pipnet-fast.onnx"


def _flip_bytes(src: Path, dst: Path, where: float, count: int = 4) -> None:
    data = bytearray(src.read_bytes())
    at = int(len(data) * where)
    for i in range(at, at + count):
        data[i] ^= 0x5A
    dst.write_bytes(bytes(data))


def test_intact_copy_loads_and_is_sealed(tmp_path: Path) -> None:
    copy = tmp_path / "my-model.onnx"
    shutil.copyfile(FAST, copy)
    assert LandmarkModel(copy).sealed


@pytest.mark.parametrize("where", [0.3, 0.6, 0.9])
def test_flipped_weight_bytes_raise(tmp_path: Path, where: float) -> None:
    bad = tmp_path / "damaged.onnx"
    _flip_bytes(FAST, bad, where)
    with pytest.raises(ChecksumError, match="damaged.onnx"):
        LandmarkModel(bad)


def test_damaged_yunet_by_path_is_refused(tmp_path: Path) -> None:
    from pipnet_sdk import Landmarker

    bad = tmp_path / "yunet_n_dynamic.onnx"
    _flip_bytes(resolve("yunet-n"), bad, 0.5)
    with pytest.raises(ChecksumError, match="yunet-n"):
        Landmarker(detector=str(bad))


def test_unsealed_file_warns(tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    m = onnx.load(str(FAST))
    for p in m.metadata_props:
        p.value = p.value.replace('"file_sha256"', '"no_digest"')
    path = tmp_path / "old.onnx"
    onnx.save(m, str(path))
    with pytest.warns(UserWarning, match="no digest"):
        assert not LandmarkModel(path).sealed


def _one_by_one(model: LandmarkModel, x: np.ndarray) -> np.ndarray:
    """Crop-space landmarks of each input run alone (batch 1)."""
    return np.concatenate([model.decode(model.forward(x[i : i + 1]))[0] for i in range(len(x))])


def _iod(truth: np.ndarray) -> np.ndarray:
    return np.linalg.norm(truth[:, 36:42].mean(1) - truth[:, 42:48].mean(1), axis=-1)


@pytest.mark.parametrize("name, step", [("pipnet-fast", 9), ("pipnet-r18", 18)])  # ~60 and ~30 faces
@pytest.mark.slow
def test_int8_landmarks_do_not_depend_on_the_cpu(shared_dir: Path, name: str, step: int) -> None:
    model, x, squares, truth = arm.labeled_inputs(name, shared_dir, step)
    assert len(x) >= 25
    results = {}
    for optimize in (True, False):
        model.session = make_session(model.path, threads=1, optimize=optimize)
        results[optimize] = to_image(_one_by_one(model, x), squares)
    iod = _iod(truth)
    moved = np.linalg.norm(results[True] - results[False], axis=-1).mean(1) / iod * 100
    assert moved.mean() <= 0.5, f"integer kernels moved the landmarks by {moved.mean():.3f} % of the IOD on average"
    nme = [
        np.linalg.norm(r - truth, axis=-1).mean(1) / np.linalg.norm(truth[:, 36] - truth[:, 45], axis=-1)
        for r in results.values()
    ]
    assert abs(nme[0].mean() - nme[1].mean()) < 0.0005  # accuracy itself is the same, within 0.05 NME points


QEMU = shutil.which("qemu-x86_64")
EMULATED_CPU = "Haswell"  # AVX2 and FMA, no AVX-512, no VNNI
_EMULATED_RUN = """
import sys
import numpy as np
from numpy._core._multiarray_umath import __cpu_features__ as has
assert has["AVX2"] and not has["AVX512F"] and not has["AVX512VNNI"], "the emulated CPU is not AVX2-only"
from pipnet_sdk.landmark_model import LandmarkModel
model = LandmarkModel(sys.argv[1], threads=1)
x = np.load(sys.argv[2])
np.save(sys.argv[3], np.concatenate([model.decode(model.forward(x[i:i + 1]))[0] for i in range(len(x))]))
"""


@pytest.mark.skipif(
    QEMU is None or platform.machine() != "x86_64",
    reason="needs qemu-user on x86-64 (Debian: apt-get install qemu-user)",
)
@pytest.mark.parametrize("name, step", [("pipnet-fast", 36), ("pipnet-r18", 110)])  # ~15 and ~5 faces
@pytest.mark.slow
def test_int8_landmarks_on_an_emulated_avx2_cpu(tmp_path: Path, shared_dir: Path, name: str, step: int) -> None:
    """The shipped int8 file under qemu-user emulating an AVX2-only CPU (onnxruntime's AVX2
    VPMADDUBSW kernels, the ones that saturated with 8-bit weights) gives this CPU's landmarks.
    The same check on the 8-bit versions of these files moved every face, by 0.7-0.9 % of the
    IOD on average (docs/experiments.md). About 25 s for pipnet-fast, 30 s for pipnet-r18."""
    model, x, squares, truth = arm.labeled_inputs(name, shared_dir, step)
    np.save(tmp_path / "x.npy", x)
    done = subprocess.run(
        [
            QEMU,
            "-cpu",
            EMULATED_CPU,
            sys.executable,
            "-c",
            _EMULATED_RUN,
            str(model.path),
            str(tmp_path / "x.npy"),
            str(tmp_path / "emulated.npy"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    here = to_image(_one_by_one(model, x), squares)
    emulated = to_image(np.load(tmp_path / "emulated.npy"), squares)
    moved_px = np.linalg.norm(here - emulated, axis=-1)
    assert moved_px.max() <= 0.05, f"an AVX2-only CPU moved a landmark by {moved_px.max():.2f} px"
    assert (moved_px.mean(1) / _iod(truth) * 100).mean() <= 0.01
