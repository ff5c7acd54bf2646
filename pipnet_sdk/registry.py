"""Registry of the models the SDK knows by name.

A :class:`ModelSpec` says where a model file comes from and how to check it:

* ``sha256`` is the hex digest of the exact file; ``None`` means "unknown, don't check"
  (used only until a model is trained/published; every published entry pins a hash).
* ``revision`` is the hub commit pinned by ``python -m export.publish``; ``None`` means the
  model is not on the hub yet, so only a local copy (``$PIPNET_MODELS_DIR`` or the file
  packaged in the wheel) can satisfy it.

What ships inside the wheel (``pipnet_sdk/models/``): pipnet-fast, pipnet-r18 and the YuNet-n
detector, so the default pipeline runs offline on a fresh install. yunet-s is known by name but
not packaged.

See :mod:`pipnet_sdk.hub` for how names are resolved to files.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["landmark", "detector"]

HUB_REPO_ID = "pipnet-sdk/models"


@dataclass(frozen=True)
class ModelSpec:
    """One downloadable/packaged ONNX model."""

    name: str
    kind: Kind
    filename: str
    sha256: str | None = None
    repo_id: str = HUB_REPO_ID
    revision: str | None = None
    description: str = ""
    license: str = ""
    source_url: str = ""
    #: not ours: a file given by path under this spec's file name is checked against ``sha256`` too
    third_party: bool = False
    #: where a user gets the file when no source here provides it (for the error message)
    obtain: str = ""


MODELS: dict[str, ModelSpec] = {
    "pipnet-fast": ModelSpec(
        name="pipnet-fast",
        kind="landmark",
        filename="pipnet-fast.onnx",
        sha256="ed189ac9d2ff4b4aad97ec27e0fd5d2b7cbaf61e15fbd88dedce8a4d0fba849b",
        repo_id=HUB_REPO_ID,
        revision=None,
        description="PIPNet ResNet-18 at width 0.75 cut at stride 16, 144 px, int8 (7-bit weights); "
        "68 iBUG points with per-point visibility and calibrated face and point quality; packaged in the wheel",
        license="weights: research use only (trained on 300-W and YouTube Faces data); code: MIT",
        source_url="https://github.com/jhb86253817/PIPNet",
        obtain="it ships inside the pipnet-sdk wheel; reinstall pipnet-sdk if it is missing",
    ),
    "pipnet-r18": ModelSpec(
        name="pipnet-r18",
        kind="landmark",
        filename="pipnet-r18.onnx",
        sha256="f549dc22e93fe72050d5a1fe9346f6d2b2d6f1d24ad93115d81c71a246680c32",
        repo_id=HUB_REPO_ID,
        revision=None,
        description="PIPNet ResNet-18 (the paper's model), 256 px, int8 (7-bit weights); 68 iBUG points "
        "with per-point visibility and calibrated face and point quality; packaged in the wheel",
        license="weights: research use only (trained on 300-W, YouTube Faces and LFW data); code: MIT",
        source_url="https://github.com/jhb86253817/PIPNet",
        obtain="it ships inside the pipnet-sdk wheel; reinstall pipnet-sdk if it is missing",
    ),
    "yunet-n": ModelSpec(
        name="yunet-n",
        kind="detector",
        filename="yunet_n_dynamic.onnx",
        sha256="104ee26c71d5c270ce79a6b3dced91c91013260d29a6bf18f9296c5b8c4c2b12",
        repo_id=HUB_REPO_ID,
        revision=None,
        description="YuNet-n face detector (dynamic input size), libfacedetection.train / OpenCV; "
        "packaged in the wheel",
        license="Apache-2.0 (notice: pipnet_sdk/models/NOTICE-YUNET.md)",
        source_url="https://github.com/ShiqiYu/libfacedetection.train",
        third_party=True,
        obtain="it ships inside the pipnet-sdk wheel; reinstall pipnet-sdk if it is missing",
    ),
    "yunet-s": ModelSpec(
        name="yunet-s",
        kind="detector",
        filename="yunet_s_dynamic.onnx",
        sha256="daede24002cc8590f457998cc5e6c9e8b82f45f6bd969506a8913cd4ed10a2d3",
        repo_id=HUB_REPO_ID,
        revision=None,
        description="YuNet-s face detector (smaller, dynamic input size), libfacedetection.train / OpenCV; "
        "not packaged",
        license="Apache-2.0",
        source_url="https://github.com/ShiqiYu/libfacedetection.train",
        third_party=True,
        obtain=(
            "export yunet_s_dynamic.onnx (dynamic input size) from libfacedetection.train "
            "(https://github.com/ShiqiYu/libfacedetection.train), or take it from a copy you trust"
        ),
    ),
}


def list_models(kind: str | None = None) -> list[str]:
    """Names of the registered models, optionally only those of one ``kind``."""
    if kind is not None and kind not in ("landmark", "detector"):
        raise ValueError(f"kind must be 'landmark', 'detector' or None, not {kind!r}")
    return sorted(n for n, s in MODELS.items() if kind is None or s.kind == kind)
