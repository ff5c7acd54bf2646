"""Helpers every ``pipnet`` subcommand uses (pipnet_sdk.cli and pipnet_sdk.cli_video)."""
from __future__ import annotations

import argparse
import contextlib
import os
import stat
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


def _is_one_of(path: Path, inputs: Iterable[str | os.PathLike]) -> bool:
    """Whether the existing file ``path`` is one of ``inputs`` (the same device and inode)."""
    st = path.stat()
    for i in inputs:
        try:
            other = os.stat(i)
        except OSError:
            continue
        if (other.st_dev, other.st_ino) == (st.st_dev, st.st_ino):
            return True
    return False


@contextlib.contextmanager
def folders_for_a_probe(folder: Path) -> Iterator[Path]:
    """``folder``, with its missing folders made for the time of a check and removed after it, so
    that a run stopped later by another usage error leaves nothing behind (OSError if they cannot
    be made)."""
    made: list[Path] = []
    try:
        for d in reversed([folder, *folder.parents]):
            if not d.exists():
                d.mkdir()
                made.append(d)
        yield folder
    finally:
        for d in reversed(made):
            with contextlib.suppress(OSError):
                d.rmdir()


def _probe(folder: Path, what: str, shown: Path) -> None:
    """ValueError unless a file can be created in ``folder`` (see folders_for_a_probe)."""
    try:
        with folders_for_a_probe(folder), \
                tempfile.NamedTemporaryFile(dir=folder, prefix=".pipnet-", suffix=".check"):
            pass
    except OSError as e:
        raise ValueError(f"cannot write {what} {shown}: {e.strerror or e}") from None


def check_writable(target: str | os.PathLike, what: str, inputs: Iterable[str | os.PathLike] = ()) -> Path:
    """Fail now (ValueError), before any work, if a file cannot be created at ``target`` or if it
    is one of the ``inputs`` (it would be overwritten while being read); returns it as a Path.
    Its folder is made only when the file is written (``make_parent``)."""
    p = Path(target)
    if p.is_dir():
        raise ValueError(f"{what} {p} is a folder, not a file")
    if p.exists() and _is_one_of(p, inputs):
        raise ValueError(f"{what} {p} is one of the inputs: it would be overwritten")
    _probe(p.parent, what, p)
    return p


def check_folder(target: str | os.PathLike, what: str) -> Path:
    """Fail now (ValueError) unless files can be written in the folder ``target`` (made later)."""
    p = Path(target)
    if p.exists() and not p.is_dir():
        raise ValueError(f"{what} {p} exists and is not a folder")
    _probe(p, what, p)
    return p


def check_distinct(**targets: str | None) -> None:
    """ValueError if two of the named output files are the same file."""
    seen: dict[str, str] = {}
    for option, target in targets.items():
        if target is None or target == "-":
            continue
        key = os.path.abspath(target)
        if key in seen:
            raise ValueError(f"{seen[key]} and {option} name the same file: {target}")
        seen[key] = option


def make_parent(path: Path) -> Path:
    """Make the folder ``path`` goes into (checked before by check_writable); returns path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename, so the
    file is either the old one or the whole new one. It keeps the old file's permissions, or
    gets those of any new file (the temporary file's own are private)."""
    mode = stat.S_IMODE(path.stat().st_mode) if path.exists() else 0o666 & ~_umask()
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=make_parent(path).parent,
                                     prefix=f".{path.name}.", suffix=".tmp", delete=False) as f:
        try:
            f.write(text)
        except BaseException:  # e.g. Ctrl-C mid-write: no half-written temporary file is left
            f.close()
            os.unlink(f.name)
            raise
    os.chmod(f.name, mode)
    os.replace(f.name, path)


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Silence what C libraries (OpenCV, FFmpeg) print on the stderr file descriptor, e.g. while
    probing whether a file is a readable video: our own one-line error says what went wrong."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # no real stderr (captured): nothing to silence
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), fd)
            yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)
