"""Helpers every ``pipnet`` subcommand uses (pipnet_sdk.cli and pipnet_sdk.cli_video)."""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import signal
import stat
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Sized
from pathlib import Path
from typing import Any


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
    total = total if total is not None else (len(items) if isinstance(items, Sized) else None)
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
        with folders_for_a_probe(folder), tempfile.NamedTemporaryFile(dir=folder, prefix=".pipnet-", suffix=".check"):
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


# ---------------------------------------------------------------------------------- writing
#: Exit code of a run that could not write one of its outputs (each failure named on stderr).
EXIT_WRITE_FAILED = 3


def os_reason(e: BaseException) -> str:
    """An OSError's cause in words ("No space left on device"), else the exception's own text."""
    if isinstance(e, OSError) and e.errno:
        return os.strerror(e.errno)
    return " ".join(str(e).split()) or type(e).__name__


def display_text(text: str) -> str:
    """``text`` (a path from the file system, or a message naming one) with the bytes of a file
    name that are not UTF-8 written as ``\\xNN``: JSON, Arrow and terminals get valid Unicode
    instead of lone surrogates."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate that is no escaped byte
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


class WriteError(Exception):
    """An output could not be written: the message names the file and the cause (exit code 3)."""

    def __init__(self, path: str | os.PathLike, cause: BaseException | str) -> None:
        self.path = os.fspath(path)
        self.reason = cause if isinstance(cause, str) else os_reason(cause)
        super().__init__(f"cannot write {display_text(self.path)}: {self.reason}")


def _write_some(fd: int, data: memoryview) -> int:
    """One ``os.write``: every byte the commands write to a file goes through here."""
    return os.write(fd, data)


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to the file descriptor ``fd`` (OSError as the system gives it)."""
    view = memoryview(data)
    while view:
        view = view[_write_some(fd, view) :]


class AtomicFile:
    """A new version of ``path``, written into a temporary file beside it and renamed over it by
    :meth:`commit`: the file is the old one or the whole new one, never a mix or a part (and a
    file that is a hard link to another keeps the other intact). The new file keeps the old
    one's permissions, or gets those of any new file. Every failure is a :class:`WriteError`
    naming ``path``, with the temporary file removed; :meth:`discard` removes it too."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            folder = make_parent(path).parent
            self.fd: int | None
            self.fd, self.tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name[:100]}.", suffix=".tmp")
        except OSError as e:
            raise WriteError(path, e) from None

    def write(self, data: bytes) -> None:
        try:
            if self.fd is None:
                raise OSError(errno.EBADF, "the file was closed after an earlier failure")
            write_all(self.fd, data)
        except BaseException as e:  # a full disk, or Ctrl-C: no temporary file is left
            self.discard()
            if isinstance(e, OSError):
                raise WriteError(self.path, e) from None
            raise

    def commit(self) -> None:
        try:
            if self.fd is None:
                raise OSError(errno.EBADF, "the file was closed after an earlier failure")
            try:
                mode = stat.S_IMODE(os.stat(self.path).st_mode)
            except FileNotFoundError:
                mode = 0o666 & ~_umask()
            fd = self.fd
            os.fchmod(fd, mode)
            self.fd = None
            os.close(fd)  # may report a delayed write error (NFS)
            os.replace(self.tmp, self.path)
        except BaseException as e:
            self.discard()
            if isinstance(e, OSError):
                raise WriteError(self.path, e) from None
            raise

    def discard(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = None
        with contextlib.suppress(OSError):
            os.unlink(self.tmp)


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write ``data`` to ``path`` through an :class:`AtomicFile` (WriteError if it cannot)."""
    f = AtomicFile(path)
    f.write(data.encode("utf-8") if isinstance(data, str) else data)
    f.commit()


class JsonLines:
    """``--jsonl``: one JSON line per record, appended to a file (an existing file keeps its
    lines) or written to standard output (``-``). A line is written whole or not at all: when a
    write fails (a full disk) the part written is cut off again and WriteError names the file."""

    def __init__(self, target: str) -> None:
        self.stdout = target == "-"
        self.name = "standard output" if self.stdout else target
        self.lines = 0
        self.fd: int | None = None
        self._prefix = b""
        if self.stdout:
            return
        path = Path(target)
        try:
            self.fd = os.open(
                make_parent(path), os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666
            )
            st = os.fstat(self.fd)
            self.regular = stat.S_ISREG(st.st_mode)
            if self.regular and st.st_size:  # an earlier run cut short within a line: start a new one
                with open(path, "rb") as f:
                    f.seek(-1, os.SEEK_END)
                    self._prefix = b"" if f.read(1) == b"\n" else b"\n"
        except OSError as e:
            self.close()
            raise WriteError(path, e) from None

    def write(self, record: dict[str, Any]) -> None:
        text = json.dumps(record) + "\n"
        if self.stdout:
            try:
                sys.stdout.write(text)
                sys.stdout.flush()
            except OSError as e:
                raise WriteError(self.name, e) from None
            self.lines += 1
            return
        if self.fd is None:
            raise WriteError(self.name, "closed after an earlier failure")
        data = self._prefix + text.encode("utf-8")
        size = os.fstat(self.fd).st_size if self.regular else 0
        try:
            write_all(self.fd, data)
        except BaseException as e:
            if self.regular:  # no half line: cut back to the last whole one
                with contextlib.suppress(OSError):
                    os.ftruncate(self.fd, size)
            if isinstance(e, OSError):
                self.close()
                raise WriteError(self.name, e) from None
            raise
        self._prefix = b""
        self.lines += 1

    def close(self) -> None:
        if self.fd is not None:
            fd, self.fd = self.fd, None
            with contextlib.suppress(OSError):
                os.close(fd)


# ---------------------------------------------------------------------------------- inputs
def walk_files(
    folder: Path, warn: Callable[[str], None] | None = None, keep: Callable[[str], bool] | None = None
) -> list[Path]:
    """The files under ``folder`` whose name passes ``keep`` (default: all), sorted, hidden names
    (``.x``, ``_x``) included; symbolic links to folders are followed once (a link back to a
    folder already walked is skipped, and passed to ``warn``)."""
    found: list[Path] = []
    walked: set[str] = set()
    for root, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in walked:
            if warn is not None:
                warn(f"{display_text(root)} leads back to {display_text(real)}, which is already read: skipped")
            dirs[:] = []
            continue
        walked.add(real)
        dirs.sort()
        found += [Path(root) / f for f in files if keep is None or keep(f)]
    return sorted(f for f in found if f.is_file())


def walk_images(folder: Path, warn: Callable[[str], None] | None = None) -> list[Path]:
    """The image files (``images.IMAGE_EXTENSIONS``, any case) under ``folder``: :func:`walk_files`."""
    from .images import IMAGE_EXTENSIONS

    return walk_files(folder, warn, keep=lambda name: os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS)


def check_model_option(value: str | None, option: str) -> None:
    """ValueError if the model named by ``--model``/``--detector`` is a folder (and no model name)."""
    if value is None:
        return
    from . import registry

    if value not in registry.MODELS and os.path.isdir(value):
        raise ValueError(
            f"{option} {display_text(value)} is a folder, not a model: give a model file "
            f"(.onnx) or a model name ({', '.join(registry.list_models())})"
        )


def available_cpus() -> int:
    """The CPUs this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def cap_threads(threads: int | None, quiet: bool) -> int | None:
    """``--threads``, at most the CPUs there are (more only slows down, and a huge number makes
    onnxruntime reserve memory for every thread), with a warning when it is cut."""
    cpus = available_cpus()
    if threads is None or threads <= cpus:
        return threads
    if not quiet:
        print(f"pipnet: warning: --threads {threads} is more than the {cpus} CPUs here: using {cpus}", file=sys.stderr)
    return cpus


# ---------------------------------------------------------------------------------- signals
_STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


class Interrupted(KeyboardInterrupt):
    """SIGINT (Ctrl-C), SIGTERM or SIGHUP during a run: it stops as Ctrl-C does, every output
    closed whole; exit code 128 + the signal's number."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(signal.Signals(signum).name)


@contextlib.contextmanager
def signals_stop_the_run() -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP raise :class:`Interrupted` in the main thread for the time of
    the block (once: a second signal while the outputs are being closed is not acted on)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    stopping: list[int] = []

    def handler(signum: int, frame: Any) -> None:
        if not stopping:
            stopping.append(signum)
            raise Interrupted(signum)

    old = {}
    for s in _STOP_SIGNALS:
        with contextlib.suppress(OSError, ValueError):
            old[s] = signal.signal(s, handler)
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT, SIGTERM and SIGHUP back while the block runs (outputs being finished), so a
    signal cannot leave them half done; one that came is acted on after the block."""
    mask = getattr(signal, "pthread_sigmask", None)
    if mask is None or threading.current_thread() is not threading.main_thread():
        yield
        return
    old = mask(signal.SIG_BLOCK, _STOP_SIGNALS)
    try:
        yield
    finally:
        mask(signal.SIG_SETMASK, old)


# ---------------------------------------------------------------------------------- stderr
@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Silence what C libraries (OpenCV, FFmpeg, libpng) print on the stderr file descriptor, e.g.
    while probing whether a file is a readable video: our own one-line error says what went wrong."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (AttributeError, OSError, ValueError):  # no stderr descriptor: nothing to silence
        yield
        return
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 2)
        os.close(null)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


@contextlib.contextmanager
def quiet_native_stderr(quiet: bool) -> Iterator[None]:
    """With ``-q``: what C libraries print on the stderr descriptor (libpng, libjpeg, FFmpeg,
    OpenCV's warnings) is dropped for the whole run, while our own lines (errors) still reach
    the real stderr."""
    if not quiet:
        yield
        return
    try:
        ours = sys.stderr.fileno() == 2
        sys.stderr.flush()
        saved = os.dup(2)
    except (AttributeError, OSError, ValueError):  # sys.stderr is no descriptor (captured)
        ours, saved = False, None
    if saved is None:
        yield
        return
    old = sys.stderr
    if ours:  # our own messages go to the real stderr through a copy of its descriptor
        sys.stderr = open(
            saved, "w", encoding=old.encoding or "utf-8", errors="backslashreplace", buffering=1, closefd=False
        )
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 2)
        os.close(null)
        yield
    finally:
        if ours:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            sys.stderr = old
        os.dup2(saved, 2)
        os.close(saved)
