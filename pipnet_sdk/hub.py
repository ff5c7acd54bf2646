"""Find model files: explicit paths, registry names, local copies and the Hugging Face Hub.

``resolve(name_or_path)`` looks, in order, at:

1. an explicit file path (a string containing a path separator or ending in ``.onnx``); a file
   named like a third-party registry model (``yunet_n_dynamic.onnx``...) is checked against
   that model's sha256 too;
2. ``$PIPNET_MODELS_DIR/<filename>`` when that variable is set and the file exists;
3. the file packaged in the wheel, ``pipnet_sdk/models/<filename>``;
4. the hub: ``huggingface_hub.hf_hub_download(repo_id, filename, revision=<pinned commit>)``,
   which uses the Hugging Face cache (``HF_HOME``/``HF_HUB_CACHE``), honours ``HF_ENDPOINT``
   and ``HF_HUB_OFFLINE``, and needs no network once the file is cached.

Files found by steps 2-4 are checked against the registry's sha256 (once per file per
process); a mismatch raises :class:`ChecksumError`. A bad download is removed from the
Hugging Face cache (blob and snapshot link) so a retry downloads it again.
A spec whose ``sha256`` is ``None`` is not checked.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Union

from .errors import ChecksumError, ModelNotFoundError
from .registry import MODELS, ModelSpec, list_models

__all__ = [
    "ChecksumError",
    "ModelNotFoundError",
    "cached_path",
    "check_file_digest",
    "download",
    "file_digest",
    "get_spec",
    "resolve",
    "sha256_file",
]

ENV_MODELS_DIR = "PIPNET_MODELS_DIR"
#: Where model files shipped inside the wheel live.
PACKAGED_DIR = Path(__file__).resolve().parent / "models"

ModelRef = Union[str, "os.PathLike[str]", ModelSpec]

_verified: set[tuple[str, str, int, int]] = set()  # (path, sha256, size, mtime_ns) already checked


#: A landmark model file carries its own digest in its pipnet metadata: the sha256 of the file's
#: bytes with the digest's 64 hex characters replaced by this placeholder (export.onnx_meta.sealed).
DIGEST_KEY = "file_sha256"
DIGEST_PLACEHOLDER = "0" * 64
_DIGEST_FIELD = re.compile(b'"' + DIGEST_KEY.encode() + rb'": "([0-9a-f]{64})"')


def file_digest(data: bytes, source: str) -> str:
    """The self-digest of a model file's bytes (placeholder in, or digest to be replaced by it)."""
    fields = _DIGEST_FIELD.findall(data)
    if len(fields) != 1:
        raise ChecksumError(f"{source}: expected one {DIGEST_KEY} field in the file, found {len(fields)}")
    return hashlib.sha256(data.replace(fields[0], DIGEST_PLACEHOLDER.encode(), 1)).hexdigest()


def check_file_digest(data: bytes, expected: str, source: str) -> None:
    """Raise ChecksumError unless the file's bytes hash to the digest its metadata records."""
    if file_digest(data, source) != expected:
        raise ChecksumError(
            f"{source} is damaged: its bytes do not match the digest recorded in it ({expected[:12]}...). "
            "Do not use it; get the file again"
        )


class _HubUnavailable(Exception):
    """Internal: the hub step could not provide the file (reason in the message)."""


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def get_spec(name: str | ModelSpec) -> ModelSpec:
    """The registry entry for ``name`` (a ModelSpec is returned as is)."""
    if isinstance(name, ModelSpec):
        return name
    try:
        return MODELS[name]
    except KeyError:
        raise ModelNotFoundError(
            f"unknown model {name!r}; known models: {', '.join(list_models())} (or pass a path to an .onnx file)"
        ) from None


def _looks_like_path(s: str) -> bool:
    seps = [sep for sep in ("/", os.sep, os.altsep) if sep]
    return any(sep in s for sep in seps) or s.lower().endswith(".onnx")


def _verify(path: Path, spec: ModelSpec) -> None:
    """Raise ChecksumError if ``path`` does not hash to ``spec.sha256`` (skipped when None)."""
    if spec.sha256 is None:
        return
    st = path.stat()
    key = (str(path), spec.sha256.lower(), st.st_size, st.st_mtime_ns)
    if key in _verified:
        return
    digest = sha256_file(path)
    if digest != spec.sha256.lower():
        raise ChecksumError(f"model {spec.name!r}: {path} has sha256 {digest}, expected {spec.sha256}")
    _verified.add(key)


def _local_candidates(spec: ModelSpec, why: list[str] | None = None) -> list[tuple[Path, str]]:
    """Existing local copies (env dir, packaged), best first; reasons for misses go to ``why``."""
    why = why if why is not None else []
    found: list[tuple[Path, str]] = []
    env_dir = os.environ.get(ENV_MODELS_DIR)
    if env_dir:
        p = Path(env_dir).expanduser() / spec.filename
        if p.is_file():
            found.append((p, ENV_MODELS_DIR))
        else:
            why.append(f"${ENV_MODELS_DIR}: {p} does not exist")
    else:
        why.append(f"${ENV_MODELS_DIR}: not set")
    p = PACKAGED_DIR / spec.filename
    if p.is_file():
        found.append((p, "packaged"))
    else:
        why.append(f"packaged: {p} does not exist")
    return found


def _evict(path: Path) -> None:
    """Remove a cached file: its snapshot link and the blob it points to."""
    blob = Path(os.path.realpath(path))
    for f in (path, blob):
        try:
            f.unlink()
        except FileNotFoundError:
            pass


def _summary(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


def _from_hub(spec: ModelSpec) -> Path:
    """hf_hub_download at the pinned revision, then checksum (a bad file is evicted)."""
    if spec.revision is None:
        raise _HubUnavailable("not published yet (the registry pins no hub revision for it)")
    from huggingface_hub import hf_hub_download

    try:
        path = Path(hf_hub_download(spec.repo_id, spec.filename, revision=spec.revision))
    except Exception as e:  # network, offline mode, 404, bad endpoint...: all mean "not from the hub"
        from huggingface_hub import constants

        reason = _summary(e)
        root: BaseException = e
        for _ in range(10):  # innermost cause, e.g. "ConnectError: Connection refused"
            if root.__cause__ is None:
                break
            root = root.__cause__
        if root is not e:
            reason += f" (caused by {_summary(root)})"
        if getattr(constants, "HF_HUB_OFFLINE", False):
            reason += " [HF_HUB_OFFLINE is set: only the local cache was looked at]"
        raise _HubUnavailable(reason) from e
    try:
        _verify(path, spec)
    except ChecksumError as e:
        _evict(path)
        raise ChecksumError(
            f"{e}; downloaded from {spec.repo_id}@{spec.revision}. The file was removed from the "
            "Hugging Face cache and was not used; retrying downloads it again."
        ) from None
    return path


def _not_found(spec: ModelSpec, why: list[str]) -> ModelNotFoundError:
    tried = "\n".join(f"  - {w}" for w in why)
    if spec.revision is None:  # no hub copy: only a local file can do
        fix = (
            f"Get the file {spec.filename}: {spec.obtain or 'see ' + (spec.source_url or 'the model card')}. "
            f"Then put it in a folder named by ${ENV_MODELS_DIR}, or pass its path."
        )
    else:
        fix = (
            f"Fix: make the hub repo {spec.repo_id!r} reachable (HF_ENDPOINT; a file downloaded once is "
            f"then used offline, also with HF_HUB_OFFLINE=1), put {spec.filename} in a folder named by "
            f"${ENV_MODELS_DIR}, or pass the path to the .onnx file."
        )
    return ModelNotFoundError(f"model {spec.name!r} (file {spec.filename}) not found. Tried:\n{tried}\n{fix}")


def _third_party_spec(path: Path) -> ModelSpec | None:
    """The third-party registry model whose file name ``path`` has, if any."""
    return next((s for s in MODELS.values() if s.third_party and s.filename == path.name), None)


def resolve(name_or_path: ModelRef, kind: str | None = None) -> Path:
    """Path of a usable model file for a path, a registry name or a :class:`ModelSpec`.

    ``kind`` ("landmark"/"detector") rejects a registry model of the other kind (ValueError).
    Raises :class:`ModelNotFoundError` (nothing found, with the reasons) or
    :class:`ChecksumError` (a found file is not the pinned one).
    """
    if isinstance(name_or_path, ModelSpec):
        spec = name_or_path
    else:
        s = os.fspath(name_or_path)
        if _looks_like_path(s):
            p = Path(s).expanduser()
            if not p.is_file():
                raise ModelNotFoundError(f"model file not found: {p}")
            known = _third_party_spec(p)
            if known is not None:
                _verify(p, known)
            return p
        spec = get_spec(s)
    if kind is not None and spec.kind != kind:
        raise ValueError(
            f"{spec.name!r} is a {spec.kind} model, not a {kind} model; "
            f"{kind} models: {', '.join(list_models(kind)) or '(none)'}"
        )
    why: list[str] = []
    for path, _source in _local_candidates(spec, why)[:1]:
        _verify(path, spec)
        return path
    try:
        return _from_hub(spec)
    except _HubUnavailable as e:
        why.append(f"hub {spec.repo_id}@{spec.revision or '-'}: {e}")
        raise _not_found(spec, why) from e.__cause__


def cached_path(name: str | ModelSpec) -> tuple[Path, str] | None:
    """Where a model is available without network, and from which source
    ("PIPNET_MODELS_DIR", "packaged" or "hf-cache"); None if it must be downloaded.
    Does not verify the checksum (``resolve`` does)."""
    spec = get_spec(name)
    local = _local_candidates(spec)
    if local:
        return local[0]
    if spec.revision is None:
        return None
    from huggingface_hub import try_to_load_from_cache

    hit = try_to_load_from_cache(spec.repo_id, spec.filename, revision=spec.revision)
    return (Path(hit), "hf-cache") if isinstance(hit, str) else None


def download(name: str | ModelSpec) -> Path:
    """Make a registry model available offline and return its path: a local copy (packaged or in
    $PIPNET_MODELS_DIR, checked) needs no download; otherwise the file is fetched into the
    Hugging Face cache (a no-op if it is cached). ``cached_path`` then says where it is from."""
    return resolve(get_spec(name))
