"""``pipnet video IN [--out OUT.mp4] [--json FILE] ...``: track faces through a video file.

Wired into :mod:`pipnet_sdk.cli` with ``add_parser(subparsers)``; ``run(args)`` returns the exit
code: 0 = done; 1 = done, but some frames could not be read (skipped, named in the JSON and in a
warning); 2 = a usage error (missing file, unreadable video, unwritable output, unusable model)
reported as one ``pipnet: error: ...`` line on stderr; 3 = an output could not be written (a
full disk: the file and the cause on stderr; what could be kept is kept).

The JSON (``--json FILE``, ``-`` = stdout) is one document, written frame by frame::

    {"video": ..., "width": W, "height": H, "fps": F, "model": ..., "detector": ...,
     "provenance": {"pipnet_sdk": ..., "model": {"name", "version", "sha256"}, "detector": {...}},
     "out": {"path": ..., "width": ..., "height": ...},
     "frames": [{"index": 0, "time": 0.0, "detected": true, "faces": [Face.to_dict(), ...]}, ...],
     "num_frames": N, "complete": true}

``index`` is the frame's position in the video and ``time`` its time in seconds. A frame that
cannot be read (a damaged part of the file) is skipped and reading goes on while the container
says frames remain; those frames are listed as ``"missing_frames": [[first, last], ...]``. A run
that stops early (an error, Ctrl-C, SIGTERM, SIGHUP) or misses frames still closes the JSON, with
``"complete": false`` and an ``"error"`` saying why. ``out`` gives the annotated video's size: the
same as the input's, or one pixel more where the input's is odd (the codec needs even sizes; the
added column or row is black). Outputs are checked before any work; the annotated video is
written beside ``OUT`` under a hidden name and renamed to ``OUT`` once it is complete and playable.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import sys
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ._cli_common import (
    EXIT_WRITE_FAILED,
    WriteError,
    _positive_int,
    _progress,
    cap_threads,
    check_distinct,
    check_model_option,
    check_writable,
    display_text,
    folders_for_a_probe,
    make_parent,
    native_stderr_silenced,
    os_reason,
    signals_deferred,
    write_all,
)

#: Failed reads in a row after which a video is taken to have ended.
MAX_GAP = 250


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "video",
        help="track faces and landmarks through a video file",
        description="Track faces through a video: steady landmarks with stable ids. "
        "Writes JSON per frame (--json) and/or an annotated video (--out).",
    )
    p.add_argument("input", metavar="IN", help="video file (anything OpenCV can decode)")
    p.add_argument("--out", metavar="OUT.mp4", help="write the annotated video here")
    p.add_argument("--json", metavar="FILE", help="write per-frame JSON here ('-' = stdout)")
    p.add_argument("--model", metavar="M", help="landmark model: registry name or .onnx path")
    p.add_argument("--detector", metavar="D", help="face detector: registry name or .onnx path")
    p.add_argument(
        "--detect-every",
        type=_positive_int,
        default=10,
        metavar="K",
        help="run the face detector at least every K frames (default 10)",
    )
    p.add_argument("--no-smooth", action="store_true", help="no One-Euro smoothing of the landmarks")
    p.add_argument(
        "--no-upright",
        action="store_true",
        help="no second look at faces the crop saw turned (on their side, upside down)",
    )
    p.add_argument(
        "--threads", type=_positive_int, metavar="N", help="onnxruntime threads (at most the number of CPUs)"
    )
    p.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="no progress bar, no summary line, no warnings, no messages from FFmpeg/OpenCV",
    )
    p.set_defaults(func=run)
    return p


def _error(message: str, code: int = 2) -> int:
    print(f"pipnet: error: {' '.join(str(message).split())}", file=sys.stderr)
    return code


def open_video_writer(path: Path, fps: float, size: tuple[int, int]) -> Any:
    """An OpenCV VideoWriter (MPEG-4 part 2) for ``path``; check ``isOpened()``."""
    import cv2

    return cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), fps, size)


def check_video_writable(path: Path, fps: float, size: tuple[int, int]) -> None:
    """ValueError now, before any work, unless OpenCV can write a video at ``path`` (its extension
    names a container it has): tried on a temporary file beside it, removed after."""
    try:
        with folders_for_a_probe(path.parent) as folder, native_stderr_silenced():  # OpenCV's warnings
            probe = folder / f".pipnet-{os.getpid()}.probe{path.suffix}"
            writer = open_video_writer(probe, fps, size)
            ok = writer.isOpened()
            writer.release()
            with contextlib.suppress(OSError):
                probe.unlink()
    except OSError as e:
        raise ValueError(f"cannot write the video {path}: {e.strerror or e}") from None
    if not ok:
        raise ValueError(f"cannot write the video {path} (unknown extension or codec? .mp4 and .avi work)")


def read_frames(cap: Any, first: Any, total: int, missing: list[list[int]]) -> Iterator[tuple[int, Any]]:
    """(index, frame) for every frame of ``cap`` that can be read, ``first`` (already read) being
    frame 0. A failed read inside the video (the container's frame count ``total`` says frames
    remain, or a later read succeeds) is skipped: FFmpeg moves past the damaged frame, and its
    index goes to ``missing`` as a [first, last] range. Reading stops at a failed read past the
    count, or after MAX_GAP failed reads in a row. Failed reads at the very end are missing only
    when more than one frame (a count taken from the duration can be one frame off)."""
    yield 0, first
    index, gap = 1, None
    while True:
        ok, frame = cap.read()
        if ok and frame is not None:
            if gap is not None:
                missing.append([gap, index - 1])
                gap = None
            yield index, frame
        else:
            gap = index if gap is None else gap
            if (total > 0 and index >= total) or index - gap + 1 >= MAX_GAP:
                break
        index += 1
    if gap is not None and total > 0 and total - gap > 1:
        missing.append([gap, total - 1])


def _no_room(path: Path) -> str | None:
    """Why writing ``path`` may have failed: its disk is full, or the file reached the size limit."""
    try:
        st = os.statvfs(path.parent)
        if st.f_bavail * st.f_frsize < (1 << 20):
            return os.strerror(errno.ENOSPC)
    except (AttributeError, OSError):
        pass
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        if soft != resource.RLIM_INFINITY and os.path.getsize(path) + (1 << 16) >= soft:
            return os.strerror(errno.EFBIG)
    except (ImportError, OSError, ValueError):
        pass
    return None


class _VideoOut:
    """``--out``: the annotated video, written into a hidden file beside OUT (same extension, so
    the same container) and renamed to OUT once it is complete and plays; else removed, with the
    cause. OpenCV's writer reports nothing when a write fails (a full disk), so the file is
    checked by reading it back. Frames that could not be read are filled with the previous one,
    so the video keeps the input's timing."""

    def __init__(self, target: Path, fps: float, size: tuple[int, int]) -> None:
        self.target, self.size = target, size
        self.written = 0
        self.last: Any = None
        self.tmp = make_parent(target).parent / f".{target.stem[:100]}.pipnet-{os.getpid()}{target.suffix}"
        with native_stderr_silenced():
            self.writer = open_video_writer(self.tmp, fps, size)
        if not self.writer.isOpened():
            self.writer.release()
            self._remove()
            raise WriteError(target, _no_room(self.tmp) or "OpenCV cannot open a video writer for it")

    def write(self, index: int, image: Any) -> None:
        import cv2

        h, w = image.shape[:2]
        if (w, h) != self.size:  # odd sizes: a black column / row at the right / bottom
            image = cv2.copyMakeBorder(image, 0, self.size[1] - h, 0, self.size[0] - w, cv2.BORDER_CONSTANT)
        while self.last is not None and self.written < index:
            self._put(self.last)
        self._put(image)
        self.last = image

    def _put(self, image: Any) -> None:
        with native_stderr_silenced():  # FFmpeg's line per failed frame: our one line says it
            self.writer.write(image)
        self.written += 1

    def _remove(self) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self.tmp)

    def _problem(self) -> str | None:
        import cv2

        with native_stderr_silenced():
            cap = cv2.VideoCapture(str(self.tmp))
            try:
                ok = cap.isOpened()
                count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0) if ok else 0
                ok = ok and cap.read()[0]
            finally:
                cap.release()
        if ok and (count <= 0 or count >= self.written):
            return None
        found = f"it holds {count} of the {self.written} frames" if ok else "it is not a playable video"
        cause = _no_room(self.tmp)
        return f"{cause} ({found})" if cause else f"OpenCV's video writer failed ({found})"

    def finish(self) -> str | None:
        """Close the video and put it in place; None, or what went wrong (the file is removed)."""
        with native_stderr_silenced():
            self.writer.release()
        if self.written == 0:  # stopped before the first frame: nothing to keep
            self._remove()
            return None
        problem = self._problem()
        if problem is None:
            try:
                os.replace(self.tmp, self.target)
                return None
            except OSError as e:
                problem = os_reason(e)
        self._remove()
        return f"{WriteError(self.target, problem)}; nothing was written there"


class _VideoJson:
    """``--json``: the document written frame by frame into the file itself (or stdout), so a run
    that stops keeps its frames. Each frame is written whole or not at all; :meth:`close` ends the
    document, after dropping the last frames if that is what makes room on a full disk (or
    removes the file if nothing does)."""

    def __init__(self, target: str) -> None:
        self.stdout = target == "-"
        self.name = "standard output" if self.stdout else target
        self.count = self.offset = 0
        self.alive = True
        self.ends: deque[tuple[int, int]] = deque(maxlen=1000)  # (frames, file size) after whole frames
        self.fd: int | None = None
        if not self.stdout:
            try:
                self.fd = os.open(
                    make_parent(Path(target)),
                    os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0),
                    0o666,
                )
            except OSError as e:
                raise WriteError(target, e) from None

    def _put(self, text: str) -> None:
        if self.stdout:
            sys.stdout.write(text)
            sys.stdout.flush()
            return
        data = text.encode("utf-8")
        assert self.fd is not None
        write_all(self.fd, data)
        self.offset += len(data)

    def _cut(self, offset: int) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, offset)
                os.lseek(self.fd, offset, os.SEEK_SET)
                self.offset = offset

    def _guarded(self, text: str) -> None:
        start = self.offset
        try:
            self._put(text)
        except BaseException as e:  # no part of a frame stays: cut back to the last whole one
            self._cut(start)
            if isinstance(e, OSError):
                self.alive = False
                raise WriteError(self.name, e) from None
            raise

    def begin(self, head: dict[str, Any]) -> None:
        self._guarded(json.dumps(head)[:-1] + ', "frames": [')
        self.ends.append((0, self.offset))

    def frame(self, entry: dict[str, Any]) -> None:
        self._guarded(("," if self.count else "") + "\n" + json.dumps(entry))
        self.count += 1
        self.ends.append((self.count, self.offset))

    def close(self, tail: dict[str, Any]) -> str | None:
        """End the document with ``tail`` (num_frames is set here). Never raises: returns None, or
        what went wrong."""
        if self.stdout:
            try:
                self._put("\n], " + json.dumps({"num_frames": self.count, **tail})[1:] + "\n")
            except OSError as e:
                return str(WriteError(self.name, e))
            return None
        failure: OSError | None = None
        try:
            while self.ends and self.fd is not None:
                count, offset = self.ends[-1]
                self._cut(offset)
                end = {"num_frames": count, **tail}
                if count < self.count:
                    end["complete"] = False
                    end["error"] = "; ".join(
                        filter(
                            None,
                            [
                                tail.get("error"),
                                (f"the last {self.count - count} frames were dropped to make room to close the file"),
                            ],
                        )
                    )
                try:
                    self._put("\n], " + json.dumps(end)[1:] + "\n")
                    return (
                        None
                        if failure is None
                        else (f"{WriteError(self.name, failure)}; the file keeps {count} whole frames")
                    )
                except OSError as e:
                    failure = failure or e
                    self.ends.pop()
            with contextlib.suppress(OSError):
                os.unlink(self.name)
            return f"{WriteError(self.name, failure or 'closed')}; the unfinished file is removed"
        finally:
            if self.fd is not None:
                with contextlib.suppress(OSError):
                    os.close(self.fd)
                self.fd = None


def run(args: argparse.Namespace) -> int:
    import cv2

    from .landmarker import DEFAULT_DETECTOR, DEFAULT_MODEL, Landmarker
    from .video import VideoLandmarker

    shown = display_text(args.input)
    if os.path.isdir(args.input):
        return _error(f"{shown} is a folder, not a video file")
    if not os.path.isfile(args.input):
        return _error(f"no such video file: {shown}")
    if args.out is None and args.json is None and args.quiet:
        return _error("nothing to do: give --out and/or --json (or drop --quiet to only time it)")
    try:
        check_model_option(args.model, "--model")
        check_model_option(args.detector, "--detector")
    except ValueError as e:
        return _error(str(e))
    with native_stderr_silenced():  # FFmpeg's own lines about a file it cannot read
        cap = cv2.VideoCapture(args.input)
        ok, first = cap.read() if cap.isOpened() else (False, None)
    if not ok or first is None:
        cap.release()
        return _error(f"cannot read {shown} as a video (not a video, or a codec OpenCV lacks)")
    fps = cap.get(cv2.CAP_PROP_FPS)
    fps = fps if fps and 0 < fps < 1000 else 30.0
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    h, w = first.shape[:2]
    size = (w + w % 2, h + h % 2)  # what the writer can write: even sizes
    try:  # both outputs must be writable, and neither the input, before any model is loaded
        check_distinct(**{"--out": args.out, "--json": args.json})
        if args.json not in (None, "-"):
            check_writable(args.json, "--json", [args.input])
        if args.out is not None:
            check_video_writable(check_writable(args.out, "--out", [args.input]), fps, size)
    except ValueError as e:
        cap.release()
        return _error(str(e))
    try:
        lm = Landmarker(
            model=args.model,
            detector=args.detector,
            threads=cap_threads(args.threads, args.quiet),
            upright=not args.no_upright,
        )
        provenance = lm.provenance()
    except (OSError, ValueError) as e:
        cap.release()
        return _error(f"cannot load the models: {e}")
    except Exception as e:  # onnxruntime's own errors, e.g. not an ONNX file
        if type(e).__module__.startswith("onnxruntime"):
            cap.release()
            return _error(f"cannot load the models: {e}")
        raise
    video = VideoLandmarker(lm, detect_every=args.detect_every, smoothing=not args.no_smooth, fps=fps)
    head: dict[str, Any] = {
        "video": shown,
        "width": w,
        "height": h,
        "fps": round(fps, 3),
        "model": display_text(str(args.model or DEFAULT_MODEL)),
        "detector": display_text(str(args.detector or DEFAULT_DETECTOR)),
        "provenance": provenance,
    }
    if args.out is not None:
        head["out"] = {"path": display_text(args.out), "width": size[0], "height": size[1]}
    try:
        return _track(args, cap, first, fps, total, size != (w, h), video, head)
    finally:
        cap.release()


def _track(
    args: argparse.Namespace,
    cap: Any,
    first: Any,
    fps: float,
    total: int,
    padded: bool,
    video: Any,
    head: dict[str, Any],
) -> int:
    from .drawing import draw

    def warn(message: str) -> None:
        if not args.quiet:
            print(f"pipnet: warning: {message}", file=sys.stderr)

    writer = js = None
    try:
        if args.out is not None:
            writer = _VideoOut(Path(args.out), fps, (head["out"]["width"], head["out"]["height"]))
        if args.json is not None:
            js = _VideoJson(args.json)
            js.begin(head)
    except WriteError as e:
        if writer is not None:
            writer.finish()
        if js is not None:
            js.close({"complete": False, "error": str(e)})
        return _error(str(e), EXIT_WRITE_FAILED)
    if padded:
        warn(
            f"{display_text(args.out)} is {head['out']['width']}x{head['out']['height']}, one pixel more than the "
            f"input where it is odd (the codec needs even sizes; the column or row added is black)"
        )

    missing: list[list[int]] = []
    write_errors: list[str] = []
    n, busy, stopped = 0, 0.0, None
    try:
        for index, frame in _progress(read_frames(cap, first, total, missing), args.quiet, total, unit="frame"):
            t0 = time.perf_counter()
            faces = video.track(frame, timestamp=index / fps)
            busy += time.perf_counter() - t0
            entry = {
                "index": index,
                "time": round(index / fps, 4),
                "detected": video.detected,
                "faces": [f.to_dict() for f in faces],
            }
            drawn = None if writer is None else draw(frame, faces)
            with signals_deferred():  # a frame goes into both outputs or neither
                if js is not None and js.alive:
                    try:
                        js.frame(entry)
                    except WriteError as e:
                        write_errors.append(str(e))
                        print(f"pipnet: error: {e} (its {js.count} whole frames are kept)", file=sys.stderr)
                if writer is not None:
                    writer.write(index, drawn)
                n += 1
            if writer is None and (js is None or not js.alive):
                print(f"pipnet: error: no output left to write: stopped after {n} frames", file=sys.stderr)
                break
    except BaseException as e:  # the JSON says the run stopped early, and why; then the error goes on
        stopped = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        raise
    finally:
        with signals_deferred():  # a second signal must not leave the outputs half closed
            video_error = writer.finish() if writer is not None else None
            if video_error is not None:
                write_errors.append(video_error)
                print(f"pipnet: error: {video_error}", file=sys.stderr)
            if js is not None:
                problems = [
                    f"stopped after {n} frames: {stopped}" if stopped else None,
                    _missing_text(missing, total) if missing else None,
                    *write_errors,
                ]
                tail: dict[str, Any] = {"complete": not any(problems)}
                if missing:
                    tail["missing_frames"] = missing
                if any(problems):
                    tail["error"] = "; ".join(p for p in problems if p)
                json_error = js.close(tail)
                if json_error is not None:
                    write_errors.append(json_error)
                    print(f"pipnet: error: {json_error}", file=sys.stderr)
    if missing:
        warn(
            f"{display_text(args.input)}: {_missing_text(missing, total)}: skipped"
            + (' (the JSON says "complete": false)' if js is not None else "")
        )
    if not args.quiet:
        rate = n / busy if busy > 0 else float("inf")
        print(
            f"pipnet video: {n} frames, tracking at {rate:.1f} frames/s (detector every {args.detect_every} frames)",
            file=sys.stderr,
        )
    if write_errors:
        return EXIT_WRITE_FAILED
    return 1 if missing else 0


def _missing_text(missing: list[list[int]], total: int) -> str:
    count = sum(b - a + 1 for a, b in missing)
    where = ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in missing[:10])
    where += ", ..." if len(missing) > 10 else ""
    of = f" of the {total}" if total > 0 else ""
    return f"{count}{of} frames could not be read (frames {where})"
