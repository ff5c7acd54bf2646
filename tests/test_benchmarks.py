"""The benchmark scripts: each one starts without torch, and they share the repository's helpers
(one .pts reader, the SDK's detector) instead of copies of their own."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p for p in (ROOT / "benchmarks").glob("*.py") if not p.name.startswith("_") and p.name != "cpu.py")
NO_TORCH = """import runpy, sys
sys.modules["torch"] = None  # `import torch` raises ImportError
sys.argv = [sys.argv[1], "--help"]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
except SystemExit as e:
    assert e.code in (0, None), e.code
"""


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_benchmark_starts_without_torch(script: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-c", NO_TORCH, str(script)], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "usage:" in r.stdout


def test_one_pts_reader(tmp_path: Path) -> None:
    """export.data.read_pts (torch-free) is the only .pts parser; the benchmarks and tests import it."""
    from benchmarks import video_stability
    from export import data

    assert video_stability.read_pts is data.read_pts
    f = tmp_path / "a.pts"
    f.write_text("version: 1\nn_points: 2\n{\n1 1\n10.5 20.123456789\n}\n")
    assert data.read_pts(f).dtype == np.float32
    exact = data.read_pts(f, np.float64)
    assert exact.dtype == np.float64 and exact.tolist() == [[0.0, 0.0], [9.5, 20.123456789 - 1]]
    definition = "def read_" + "pts("
    found = [
        p.relative_to(ROOT).as_posix()
        for d in ("benchmarks", "examples", "export", "pipnet_sdk", "tests")
        for p in sorted((ROOT / d).rglob("*.py"))
        if definition in p.read_text(encoding="utf-8")
    ]
    assert found == ["export/data.py"]


def test_end_to_end_presets_are_sdk_detector_options() -> None:
    """`end_to_end.py --proto NAME` rows are the SDK's YuNet with other options (no prototype)."""
    from benchmarks import end_to_end
    from pipnet_sdk.detect.yunet import YuNet, check_options

    assert "n320-cascade" in end_to_end.PRESETS
    for model, options in end_to_end.PRESETS.values():
        assert model in ("n", "s") and set(options) <= set(YuNet.OPTIONS)
        check_options(options)
    assert end_to_end.PRESETS["n320-cascade"][1] == {"size": 320, "fallback_sizes": (640,)}


def test_the_video_error_ratio_has_its_standard_error() -> None:
    """video_stability.error_ratio: the ratio of mean errors on the same sequences, with one
    standard error from the per-sequence differences (zero when every sequence moves alike)."""
    from benchmarks import video_stability

    rng = np.random.default_rng(0)
    truth = rng.uniform(0, 100, (68, 2))
    truth[36], truth[45] = (30, 40), (70, 40)  # inter-ocular distance 40
    seqs = [[(None, truth) for _ in range(10)] for _ in range(6)]
    base = [[truth + 2.0 for _ in range(10)] for _ in range(6)]  # every point off by (2, 2) px
    worse = [[truth + 2.2 for _ in range(10)] for _ in range(6)]
    ratio, se = video_stability.error_ratio(worse, base, seqs)
    assert ratio == pytest.approx(1.1) and se == pytest.approx(0.0, abs=1e-12)
    mixed = [[truth + (2.0 if i % 2 else 2.4) for _ in range(10)] for i in range(6)]
    ratio, se = video_stability.error_ratio(mixed, base, seqs)
    assert ratio == pytest.approx(1.1) and se == pytest.approx(0.1 / np.sqrt(6) * np.sqrt(6 / 5), rel=1e-6)
