"""Helpers every ``pipnet`` subcommand uses (pipnet_sdk.cli and pipnet_sdk.cli_video)."""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator


def _positive_int(text: str) -> int:
    """argparse type: a whole number >= 1."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return v


def _progress(items: Iterable[Any], quiet: bool, total: int | None = None, unit: str = "image") -> Iterable[Any]:
    """tqdm when installed, else a one-line counter; on stderr, and only on a terminal."""
    if quiet or not sys.stderr.isatty():
        return items
    total = total if total is not None else (len(items) if hasattr(items, "__len__") else None)
    try:
        from tqdm import tqdm
    except ImportError:
        return _tiny_progress(items, total, unit)
    return tqdm(items, total=total or None, unit=unit, file=sys.stderr)


def _tiny_progress(items: Iterable[Any], total: int | None, unit: str) -> Iterator[Any]:
    n = 0
    for n, item in enumerate(items, 1):
        sys.stderr.write(f"\r{n - 1}/{total or '?'} {unit}s")
        sys.stderr.flush()
        yield item
    sys.stderr.write(f"\r{n}/{total or '?'} {unit}s\n")


def check_writable(target: str | os.PathLike, what: str) -> Path:
    """Fail now (ValueError), before any work, if a file cannot be created at ``target`` (its
    folder is made if missing); returns it as a Path."""
    p = Path(target)
    if p.is_dir():
        raise ValueError(f"{what} {p} is a folder, not a file")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=p.parent, prefix=f".{p.name}.", suffix=".check"):
            pass
    except OSError as e:
        raise ValueError(f"cannot write {what} {p}: {e.strerror or e}") from None
    return p


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename, so the
    file is either the old one or the whole new one."""
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=path.parent, prefix=f".{path.name}.",
                                     suffix=".tmp", delete=False) as f:
        f.write(text)
    os.replace(f.name, path)
