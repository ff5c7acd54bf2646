"""pipnet-sdk: fast, accurate and stable face landmarks (PIPNet) on ONNX Runtime + NumPy.

Public names are imported lazily so that ``import pipnet_sdk`` is cheap and loads no model.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "ChecksumError",
    "Detector",
    "Face",
    "HeadPose",
    "ImageError",
    "Landmarker",
    "ModelFormatError",
    "ModelNotFoundError",
    "PipnetError",
    "VideoLandmarker",
    "align",
    "align_many",
    "detect_landmarks",
    "draw",
    "list_models",
]

_WHERE = {
    "ChecksumError": ".errors",
    "Detector": ".detect",
    "Face": ".types",
    "HeadPose": ".geometry",
    "ImageError": ".errors",
    "ModelFormatError": ".errors",
    "ModelNotFoundError": ".errors",
    "PipnetError": ".errors",
    "align": ".geometry",
    "align_many": ".geometry",
    "Landmarker": ".landmarker",
    "detect_landmarks": ".landmarker",
    "draw": ".drawing",
    "list_models": ".registry",
    "VideoLandmarker": ".video",
}


def _version() -> str:
    """The installed distribution's version (pyproject.toml's, the one source of it); in a source
    checkout that was never installed, the version pyproject.toml beside the package states, else
    "0+unknown"."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pipnet-sdk")
    except PackageNotFoundError:
        return _source_version()


def _source_version() -> str:
    import re
    from pathlib import Path

    try:
        text = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text(encoding="utf-8")
    except OSError:
        return "0+unknown"
    project = re.search(r"^\[project\]\s*$(.*?)(?=^\[)", text + "\n[", re.M | re.S)
    table = project.group(1) if project else ""
    found = re.search(r'^version\s*=\s*"([^"]+)"', table, re.M)
    if found is None or not re.search(r'^name\s*=\s*"pipnet-sdk"', table, re.M):
        return "0+unknown"
    return found.group(1)


def __getattr__(name: str) -> Any:
    if name == "__version__":  # read on first use: importlib.metadata is not free
        globals()[name] = _version()
        return globals()[name]
    if name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'pipnet_sdk' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
