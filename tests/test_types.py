"""The public types: Face (equality, repr) and the error types (one base, the old bases kept)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import numpy as np
import pytest

import pipnet_sdk
from pipnet_sdk import hub, runtime
from pipnet_sdk.geometry import MEAN_FACE_3D
from pipnet_sdk.images import load_image
from pipnet_sdk.landmark_model import LandmarkSpec
from pipnet_sdk.types import Face

ROOT = Path(__file__).resolve().parents[1]


def _face(shift: float = 0.0, track_id: int | None = None) -> Face:
    """A frontal 68-point face (the 3D mean face seen from the front) in a 400 x 400 image."""
    points = (MEAN_FACE_3D[:, :2] + 200 + shift).astype(np.float32)
    return Face(
        box=np.array([100, 100, 300, 300], np.float32) + shift,
        score=0.98,
        landmarks=points,
        landmark_scores=np.full(68, 0.9, np.float32),
        track_id=track_id,
        image_size=(400, 400),
    )


def test_face_equality_by_value() -> None:
    a, same, other = _face(), _face(), _face(shift=1.5)
    assert a == same and a is not same and a != other
    faces = [other, a]
    assert same in faces and _face(shift=3.0) not in faces
    faces.remove(same)
    assert faces == [other]
    assert a != _face(track_id=4) and a != "a face"
    nan, nan_too = _face(), _face()
    nan.landmarks[0] = nan_too.landmarks[0] = np.nan
    assert nan == nan_too and nan != a
    with pytest.raises(TypeError, match="unhashable"):
        hash(a)


def test_face_repr_one_line() -> None:
    face = _face(track_id=7)
    text = repr(face)
    assert text == "Face(box=[100.0, 100.0, 300.0, 300.0], score=0.980, 68 points, track_id=7)"
    assert "pose" not in face.__dict__  # repr computed nothing
    pose = face.pose
    assert abs(pose.yaw) < 5 and abs(pose.roll) < 5
    assert repr(face).endswith(
        f"68 points, track_id=7, pose=(yaw={pose.yaw:.1f}, pitch={pose.pitch:.1f}, roll={pose.roll:.1f}))"
    )
    assert str(face) == repr(face) and "\n" not in str(face)


@pytest.mark.parametrize(
    "name, base",
    [
        ("ModelNotFoundError", FileNotFoundError),
        ("ChecksumError", ValueError),
        ("ModelFormatError", ValueError),
        ("ImageError", ValueError),
    ],
)
def test_error_types_one_base(name: str, base: type) -> None:
    cls = getattr(pipnet_sdk, name)
    assert issubclass(cls, pipnet_sdk.PipnetError) and issubclass(cls, base)
    assert name in pipnet_sdk.__all__


def test_errors_raised_are_pipnet_errors(tmp_path: Path) -> None:
    assert hub.ModelNotFoundError is pipnet_sdk.ModelNotFoundError  # the old homes still work
    assert hub.ChecksumError is pipnet_sdk.ChecksumError
    assert runtime.ModelFormatError is pipnet_sdk.ModelFormatError
    with pytest.raises(pipnet_sdk.ModelNotFoundError):
        hub.resolve("no-such-model")
    with pytest.raises(pipnet_sdk.ModelFormatError):
        runtime.make_session(tmp_path / "x.onnx", data=b"not onnx")
    (tmp_path / "x.jpg").write_bytes(b"not an image")
    for catch in (pipnet_sdk.PipnetError, ValueError):
        with pytest.raises(catch):
            load_image(tmp_path / "x.jpg")


def test_format_2_message_needs_no_missing_module() -> None:
    meta = (
        '{"format": 2, "name": "m", "version": "1", "num_landmarks": 1, "scheme": "x", '
        '"input_size": 8, "stride": 8, "num_neighbors": 1, "neighbor_indices": [[0]], '
        '"mean_face": [0, 0], "normalization": {"mean": [0], "std": [1]}, '
        '"crop": {"scale": 1, "shift_y": 0}}'
    )
    with pytest.raises(pipnet_sdk.ModelFormatError, match="format-2") as e:
        LandmarkSpec.from_json(meta, "old.onnx")
    assert "export." not in str(e.value) and "not part of the wheel" in str(e.value)
    assert 'pip install -e ".[export]"' in str(e.value)  # what to install, and from where


def _message_strings(tree: ast.AST):
    """(line, text) of every string in a `raise` statement or a `warn(...)` call."""
    for node in ast.walk(tree):
        call = isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "warn"
        if isinstance(node, ast.Raise) or call:
            for sub in ast.walk(node):
                if isinstance(sub, ast.Constant) and isinstance(sub.value, str):
                    yield sub.lineno, sub.value


def test_messages_send_no_one_to_modules_the_wheel_lacks() -> None:
    """The wheel ships pipnet_sdk only: an error or warning must not say `python -m export...`."""
    bad = [
        f"{p.relative_to(ROOT)}:{line}: {text!r}"
        for p in sorted((ROOT / "pipnet_sdk").rglob("*.py"))
        for line, text in _message_strings(ast.parse(p.read_text(), str(p)))
        if re.search(r"python -m export|\bexport\.\w", text)
    ]
    assert not bad, "\n".join(bad)
