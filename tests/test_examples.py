"""The example scripts as a user runs them: they report a failure instead of pretending success,
and check their options before any work. (Their main jobs are tested where their subject is:
test_geometry.py for blink.py, test_ray.py for the Ray integration.)"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]


def example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_face_geometry_says_when_it_cannot_write(models_dir: Path, samples: Path, tmp_path: Path, capsys) -> None:
    fg = example("face_geometry")
    assert fg.main([str(samples / "group_2.jpg"), str(tmp_path / "missing" / "out.png")]) == 1
    assert "cannot write" in capsys.readouterr().err and not (tmp_path / "missing").exists()
    assert fg.main([str(samples / "group_2.jpg"), str(tmp_path / "out.png")]) == 0
    assert (tmp_path / "out.png").stat().st_size > 0 and "wrote" in capsys.readouterr().out


def test_ray_example_refuses_a_folder_with_earlier_results(tmp_path: Path, capsys) -> None:
    """Ray's writer adds files to a folder, so a second run into it would count every row twice."""
    pytest.importorskip("ray")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "part-0.parquet").write_bytes(b"earlier run")
    assert example("ray_folder_to_parquet").main([str(tmp_path), str(tmp_path / "out")]) == 2
    assert "is not empty" in capsys.readouterr().err


def test_blink_checks_its_thresholds_before_opening_the_video(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        example("blink").main(["--video", str(tmp_path / "none.mp4"), "--close", "0.95"])
    assert info.value.code == 2 and "--close / --open" in capsys.readouterr().err
