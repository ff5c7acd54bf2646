"""pipnet-sdk: fast, accurate and stable face landmarks (PIPNet) on ONNX Runtime + NumPy.

Public names are imported lazily so that ``import pipnet_sdk`` is cheap and loads no model.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"
__all__ = ["Face", "Landmarker", "VideoLandmarker", "detect_landmarks", "draw", "list_models"]

_WHERE = {
    "Face": ".types",
    "Landmarker": ".landmarker",
    "detect_landmarks": ".landmarker",
    "draw": ".draw",
    "list_models": ".registry",
    "VideoLandmarker": ".video",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'pipnet_sdk' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
