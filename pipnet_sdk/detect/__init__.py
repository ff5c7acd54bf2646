"""Face detectors: any object with ``detect(image) -> (boxes (F, 4), scores (F,))`` plugs in.

:class:`Detector` states that contract (a runtime-checkable Protocol; importing it loads no NumPy,
OpenCV or onnxruntime); :class:`YuNet` is the built-in detector, loaded on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import numpy as np

    from .yunet import YuNet, nms

__all__ = ["Detector", "YuNet", "nms"]


@runtime_checkable
class Detector(Protocol):
    """What ``Landmarker(detector=...)`` needs of a face detector.

    ``detect`` takes a uint8 BGR image (H, W, 3) and returns boxes (F, 4) as x1, y1, x2, y2 in that
    image's pixels (x2 > x1, y2 > y1) and their scores (F,), best first; no face: two empty arrays.
    ``isinstance(obj, Detector)`` checks only that ``obj`` has a ``detect`` method.
    """

    def detect(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


def __getattr__(name: str) -> Any:
    if name in ("YuNet", "nms"):  # imported on first use: `from pipnet_sdk import Detector` stays cheap
        value = getattr(importlib.import_module(".yunet", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
