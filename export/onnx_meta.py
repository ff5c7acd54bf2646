"""The pipnet metadata of an exported ONNX file: read it, write it, seal the file with its digest."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import onnx

from pipnet_sdk.hub import DIGEST_KEY, DIGEST_PLACEHOLDER, file_digest
from pipnet_sdk.landmark_model import META_KEY


def file_metadata(model: onnx.ModelProto) -> dict[str, Any]:
    """The pipnet metadata JSON an exported file carries (written by set_metadata)."""
    return json.loads({p.key: p.value for p in model.metadata_props}[META_KEY])


def set_metadata(path: str | Path, meta: dict[str, Any]) -> None:
    """Write ``meta`` as the file's pipnet metadata and seal the file with its own digest."""
    save_with_metadata(onnx.load(str(path)), path, meta)


def save_with_metadata(m: onnx.ModelProto, path: str | Path, meta: dict[str, Any]) -> None:
    """Save ``m`` at ``path`` with ``meta`` as its pipnet metadata, sealed with its own digest."""
    del m.metadata_props[:]
    meta = {k: v for k, v in meta.items() if k != DIGEST_KEY}
    m.metadata_props.add(key=META_KEY, value=json.dumps({**meta, DIGEST_KEY: DIGEST_PLACEHOLDER}))
    m.producer_name = "pipnet-sdk export"
    Path(path).write_bytes(sealed(m.SerializeToString(), str(path)))


def sealed(data: bytes, source: str) -> bytes:
    """The file's bytes with its digest in place of the placeholder (same length, so the bytes
    around it do not move): the sha256 of the bytes as they are with the placeholder. The SDK
    recomputes it at load (pipnet_sdk.hub.check_file_digest)."""
    field = f'"{DIGEST_KEY}": "{{}}"'
    digest = file_digest(data, source)
    return data.replace(field.format(DIGEST_PLACEHOLDER).encode(), field.format(digest).encode(), 1)
