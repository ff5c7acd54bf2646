"""Publish a folder of models to a Hugging Face Hub repo and print the registry entries.

    python -m export.publish FOLDER --repo-id pipnet-sdk/models [--token T] [--private]

The folder holds the ``.onnx`` files plus a model card (``README.md``) and licence notes;
everything in it is uploaded in one commit (``HfApi.create_repo(exist_ok=True)`` then
``upload_folder``). For each ``.onnx`` the command prints a ``ModelSpec(...)`` literal with
the locally computed sha256 and ``revision`` = the commit hash of the upload, ready to paste
into ``pipnet_sdk/registry.py``. ``HF_ENDPOINT`` selects another hub (e.g. a mirror).
Needs only ``huggingface_hub`` (no torch).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipnet_sdk.hub import sha256_file


def _guess_kind(stem: str) -> str:
    """ "detector" for face detectors (YuNet, FaceBoxes, ...), else "landmark"; edit if wrong."""
    s = stem.lower()
    return "detector" if any(k in s for k in ("yunet", "faceboxes", "detector", "retinaface", "scrfd")) else "landmark"


def publish(
    folder: str | Path,
    repo_id: str,
    token: str | None = None,
    private: bool = False,
) -> list[dict]:
    """Upload ``folder`` to ``repo_id``; return one registry entry (ModelSpec fields) per .onnx."""
    from huggingface_hub import HfApi

    folder = Path(folder)
    onnx = sorted(folder.glob("*.onnx"))
    if not onnx:
        raise FileNotFoundError(f"no .onnx files in {folder}")
    dotted = [p.name for p in onnx if "." in p.stem]
    if dotted:  # e.g. to_onnx's pipnet-fast.int8.onnx: the file name becomes the registry name
        raise ValueError(
            f"rename {', '.join(dotted)} to NAME.onnx (NAME = the registry name, e.g. "
            "pipnet-fast.onnx) before publishing: nothing was uploaded"
        )
    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    info = api.upload_folder(
        repo_id=repo_id,
        folder_path=folder,
        commit_message=f"Publish {', '.join(p.name for p in onnx)}",
    )
    revision = info.oid
    return [
        {
            "name": p.stem,
            "kind": _guess_kind(p.stem),
            "filename": p.name,
            "sha256": sha256_file(p),
            "repo_id": repo_id,
            "revision": revision,
            "description": "",
            "license": "",
            "source_url": "",
        }
        for p in onnx
    ]


def format_entry(entry: dict) -> str:
    """``"name": ModelSpec(...),`` as it goes into ``MODELS`` in pipnet_sdk/registry.py."""
    fields = ", ".join(f"{k}={v!r}" for k, v in entry.items())
    return f"    {entry['name']!r}: ModelSpec({fields}),"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m export.publish", description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path, help="folder with the .onnx files, README.md and licence notes")
    ap.add_argument("--repo-id", required=True, help="hub repo, e.g. pipnet-sdk/models")
    ap.add_argument("--token", default=None, help="hub token (default: HF_TOKEN or the saved login)")
    ap.add_argument("--private", action="store_true", help="create the repo as private")
    args = ap.parse_args(argv)
    entries = publish(args.folder, args.repo_id, token=args.token, private=args.private)
    print(
        f"# published to {args.repo_id}@{entries[0]['revision']}; registry entries "
        "(check kind/description/license, then paste into MODELS in pipnet_sdk/registry.py):"
    )
    for e in entries:
        print(format_entry(e))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
