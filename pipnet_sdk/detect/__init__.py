"""Face detectors: any object with ``detect(image) -> (boxes (F, 4), scores (F,))`` plugs in."""
from .yunet import YuNet, nms

__all__ = ["YuNet", "nms"]
