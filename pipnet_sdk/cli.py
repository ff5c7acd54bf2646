"""The ``pipnet`` command.

Exit codes: 0 = success; 1 = it ran, but some images could not be read (each gets an
``"error"`` entry in the JSON and a warning on stderr) or drawn (a warning); 2 = usage error (bad
option, missing path, unknown or unusable model): one ``pipnet: error: ...`` line on stderr,
nothing processed; 3 = an output could not be written (a full disk): each such file and the
cause on stderr, the other outputs finished, what was whole kept; 128 + N = stopped by signal N
(SIGINT, SIGTERM and SIGHUP all stop a run as Ctrl-C does, its outputs closed whole).

Run as ``pipnet ...`` (console script) or ``python -m pipnet_sdk.cli ...``.
Adding a subcommand = one ``_cmd_x(args) -> int`` function + one ``_add_x(subparsers)`` that
sets ``func=_cmd_x``, listed in ``_SUBCOMMANDS``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import signal
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from ._cli_common import (
    EXIT_WRITE_FAILED,
    AtomicFile,
    JsonLines,
    WriteError,
    _positive_int,
    _progress,
    cap_threads,
    check_distinct,
    check_folder,
    check_model_option,
    check_writable,
    display_text,
    quiet_native_stderr,
    signals_deferred,
    signals_stop_the_run,
    walk_images,
    write_atomic,
)

if TYPE_CHECKING:
    from .registry import ModelSpec


class UsageError(Exception):
    """A user mistake: reported as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, no usage dump
        raise UsageError(f"{message} (see `{self.prog} --help`)")


# ---------------------------------------------------------------------------------- helpers
def _unit_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}")
    return v


def _check_out_folder(out: Path, paths: Sequence[str]) -> None:
    """UsageError if the annotated copies would go among the input images: ``--out`` is an input
    folder, or holds one under the name its copies get."""
    target = out.resolve()
    for text in paths:
        p = Path(text)
        if not p.is_dir():
            continue
        folder = p.resolve()
        if target == folder:
            raise UsageError(
                f"--out {display_text(str(out))} is the input folder {display_text(text)}: the "
                "annotated copies would go among the images; give another folder"
            )
        if target / (folder.name or "root") == folder:
            raise UsageError(
                f"--out {display_text(str(out))} holds the input folder {display_text(text)}, where "
                "the annotated copies would go (--out DIR/<folder name>/...); give another folder"
            )


def _collect_images(paths: Sequence[str], exclude: Path | None, warn: bool = True) -> list[tuple[Path, Path]]:
    """(file, name relative to the output folder) for every image under ``paths``."""
    from .images import IMAGE_EXTENSIONS

    def warning(message: str) -> None:
        if warn:
            print(f"pipnet: warning: {message}", file=sys.stderr)

    found: list[tuple[Path, Path]] = []
    for text in paths:
        p = Path(text)
        if p.is_dir():
            for f in walk_images(p, warning):
                if exclude is not None and exclude in f.resolve().parents:
                    continue  # our own earlier output inside an input folder
                found.append((f, Path(p.resolve().name or "root") / f.relative_to(p)))
        elif p.exists():
            found.append((p, Path(p.name)))
        else:
            raise UsageError(f"no such file or folder: {display_text(text)}")
    if not found:
        raise UsageError(
            f"no images ({', '.join(IMAGE_EXTENSIONS)}) found in {', '.join(display_text(p) for p in paths)}"
        )
    return found


class _NotDrawn(Exception):
    """An annotated image that OpenCV cannot encode (a warning; the run goes on)."""


def _can_encode(suffix: str) -> bool:
    import cv2

    try:
        return bool(suffix) and cv2.haveImageWriter("x" + suffix)
    except cv2.error:
        return False


def _encode_image(path: Path, image: Any) -> bytes:
    import cv2

    try:
        ok, buf = cv2.imencode(path.suffix, image)
    except cv2.error as e:
        ok, reason = False, str(e).strip().splitlines()[-1]
    else:
        reason = "OpenCV could not encode it"
    if not ok:
        raise _NotDrawn(f"cannot draw {display_text(str(path))}: {reason}")
    return buf.tobytes()


def _file_ids(paths: Iterable[Path]) -> set[tuple[int, int]]:
    """(device, inode) of each file: a name that leads to one of them (also by a hard link) is
    that file."""
    ids = set()
    for p in paths:
        with contextlib.suppress(OSError):
            st = os.stat(p)
            ids.add((st.st_dev, st.st_ino))
    return ids


def _is_one_of(path: Path, ids: set[tuple[int, int]]) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) in ids


def _out_path(out: Path, rel: Path, used: set[Path], inputs: set[tuple[int, int]]) -> Path:
    """A name under ``out`` for the annotated copy of ``rel``: not one used in this run, never an
    input (by device and inode, so not through a hard link either), with an extension OpenCV
    can write (``weird.dat`` gives ``weird.dat.jpg``)."""
    cand = out / rel
    if not _can_encode(cand.suffix):
        cand = cand.with_name(cand.name + ".jpg")
    stem, suffix, k = cand.with_suffix(""), cand.suffix, 1
    while cand in used or _is_one_of(cand, inputs):
        cand = Path(f"{stem}_{k}{suffix}")
        k += 1
    used.add(cand)
    return cand


class _JsonDoc:
    """The JSON document of ``detect``: into ``--json FILE`` image by image (through a temporary
    file renamed at the end, so nothing piles up in memory and the file is the old one or the
    whole new one), or for standard output (kept as text, printed at the end)."""

    def __init__(self, head: dict[str, Any], path: Path | None) -> None:
        self.path = path
        self.count = 0
        self.parts: list[str] = []
        self.file = None if path is None else AtomicFile(path)
        self._put(json.dumps(head)[:-1] + ', "images": [')

    def _put(self, text: str) -> None:
        if self.file is None:
            self.parts.append(text)
        else:
            self.file.write(text.encode("utf-8"))

    def add(self, entry: dict[str, Any]) -> None:
        self._put(("," if self.count else "") + "\n" + json.dumps(entry))
        self.count += 1

    def close(self) -> None:
        self._put("\n]}\n")
        if self.file is not None:
            self.file.commit()
            return
        try:
            sys.stdout.write("".join(self.parts))
            sys.stdout.flush()
        except OSError as e:
            raise WriteError("standard output", e) from None

    def discard(self) -> None:
        if self.file is not None:
            self.file.discard()


# ---------------------------------------------------------------------------------- detect
def _add_detect(sub: Any) -> None:
    p = sub.add_parser(
        "detect",
        help="faces and landmarks of images or folders of images",
        description="Detect faces and their landmarks; JSON on stdout, or in --json "
        "and/or --jsonl (one line per image, written as it goes).",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders (searched recursively)")
    p.add_argument("--out", metavar="DIR", help="folder for the annotated images of --draw")
    p.add_argument(
        "--json",
        metavar="FILE",
        help="write the JSON here instead of stdout ('-' = stdout), "
        "whole or not at all: the old file stays until the new one is complete",
    )
    p.add_argument(
        "--jsonl",
        metavar="FILE",
        help="append one JSON line per image as it is done ('-' = stdout; "
        "an existing FILE keeps its lines), so an interrupted run keeps what it finished",
    )
    p.add_argument("--draw", action="store_true", help="write annotated images into --out DIR")
    p.add_argument("--draw-pose", action="store_true", help="with --draw: also draw head-pose axes")
    p.add_argument("--model", metavar="M", help="landmark model: registry name or .onnx path")
    p.add_argument("--detector", metavar="D", help="face detector: registry name or .onnx path")
    p.add_argument(
        "--threads", type=_positive_int, metavar="N", help="onnxruntime threads (at most the number of CPUs)"
    )
    p.add_argument(
        "--test-crops",
        type=_positive_int,
        default=1,
        metavar="K",
        help="average each face over K (1-5) shifted/zoomed crops: more accurate, K times slower",
    )
    p.add_argument("--flip-test", action="store_true", help="also average over mirrored crops (2x slower)")
    p.add_argument(
        "--no-upright",
        action="store_true",
        help="no second look at faces the crop saw turned (on their side, upside down)",
    )
    p.add_argument("--score-threshold", type=_unit_float, metavar="T", help="detector score threshold (0-1)")
    p.add_argument(
        "--min-quality",
        type=_unit_float,
        metavar="Q",
        help="leave out faces whose quality (0-1, P(landmarks good)) is below Q; needs a calibrated model",
    )
    p.add_argument(
        "-q", "--quiet", action="store_true", help="no progress bar, no warnings, no messages from the image libraries"
    )
    p.set_defaults(func=_cmd_detect)


def _cmd_detect(args: argparse.Namespace) -> int:
    from .crop import TEST_CROPS
    from .landmarker import DEFAULT_DETECTOR, DEFAULT_MODEL, Landmarker

    if args.draw and not args.out:
        raise UsageError("--draw needs --out DIR")
    if args.draw_pose and not args.draw:
        raise UsageError("--draw-pose needs --draw")
    if args.out and not args.draw:
        raise UsageError("--out is only used with --draw")
    if args.json == "-" and args.jsonl == "-":
        raise UsageError("--json - and --jsonl - both ask for standard output: give one of them a file")
    out = Path(args.out) if args.out else None
    if out is not None and out.exists() and not out.is_dir():
        raise UsageError(f"--out {display_text(str(out))} exists and is not a folder")
    if out is not None:
        _check_out_folder(out, args.paths)
    images = _collect_images(args.paths, out.resolve() if out else None, warn=not args.quiet)
    options = {} if args.score_threshold is None else {"score_threshold": args.score_threshold}
    if args.test_crops > len(TEST_CROPS):
        raise UsageError(f"--test-crops must be 1 to {len(TEST_CROPS)}, got {args.test_crops}")
    try:  # every output, before any model is loaded or any file emptied
        check_model_option(args.model, "--model")
        check_model_option(args.detector, "--detector")
        check_distinct(**{"--json": args.json, "--jsonl": args.jsonl})
        sources = [path for path, _ in images]
        json_path = None if args.json in (None, "-") else check_writable(args.json, "--json", sources)
        lines_path = None if args.jsonl in (None, "-") else check_writable(args.jsonl, "--jsonl", sources)
        if out is not None:
            check_folder(out, "--out")
    except ValueError as e:
        raise UsageError(str(e)) from None
    lm = Landmarker(
        model=args.model,
        detector=args.detector,
        threads=cap_threads(args.threads, args.quiet),
        test_crops=args.test_crops,
        flip_test=args.flip_test,
        upright=not args.no_upright,
        **options,
    )
    if args.min_quality is not None and not lm.model.spec.extra.get("quality"):
        raise UsageError(
            f"--min-quality needs a model with a quality calibration; "
            f"{lm.model.spec.name} {lm.model.spec.version} has none"
        )
    head = {
        "model": display_text(str(args.model or DEFAULT_MODEL)),
        "detector": display_text(str(args.detector or DEFAULT_DETECTOR)),
        "provenance": lm.provenance(),
    }
    to_stdout = args.json == "-" or (args.json is None and args.jsonl is None)
    lines_target = None if args.jsonl is None else "-" if args.jsonl == "-" else str(lines_path)
    return _run_detect(args, lm, images, out, head, json_path, to_stdout, lines_target)


def _run_detect(
    args: argparse.Namespace,
    lm: Any,
    images: list[tuple[Path, Path]],
    out: Path | None,
    head: dict[str, Any],
    json_path: Path | None,
    to_stdout: bool,
    lines_target: str | None,
) -> int:
    """The images through ``lm`` into every output. An output that fails (a full disk) is named
    on stderr with the cause and dropped, the others go on (exit code 3); a run with no output
    left stops."""
    from .images import load_image

    failed = not_drawn = 0
    write_errors: list[str] = []

    def write_failed(e: WriteError, what: str) -> None:
        write_errors.append(str(e))
        print(f"pipnet: error: {e} ({what})", file=sys.stderr)

    def warn(message: str) -> None:
        if not args.quiet:
            print(f"pipnet: warning: {message}", file=sys.stderr)

    doc = None if json_path is None and not to_stdout else _JsonDoc(head, json_path)
    try:
        lines = None if lines_target is None else JsonLines(lines_target)
    except WriteError:
        if doc is not None:
            doc.discard()
        raise
    drawing = out is not None
    if drawing:
        from .drawing import draw
    inputs = _file_ids(path for path, _ in images) if drawing else set()
    used: set[Path] = set()
    try:
        for done, (path, rel) in enumerate(_progress(images, args.quiet), 1):
            entry: dict[str, Any] = {"path": display_text(str(path))}
            faces = None
            try:
                img = load_image(path)
            except (OSError, ValueError) as e:
                failed += 1
                entry["error"] = display_text(str(e))
                warn(entry["error"])
            else:
                faces = lm.detect(img)
                if args.min_quality is not None:
                    faces = [f for f in faces if f.quality is not None and f.quality >= args.min_quality]
                entry.update(width=int(img.shape[1]), height=int(img.shape[0]), faces=[f.to_dict() for f in faces])
            if doc is not None:
                try:
                    doc.add(entry)
                except WriteError as e:
                    write_failed(e, "the old file, if any, is left as it was")
                    doc = None
            if lines is not None:
                try:
                    lines.write({**entry, "provenance": head["provenance"]})
                except WriteError as e:
                    write_failed(e, f"the {lines.lines} whole lines this run wrote before are kept")
                    lines = None
            if drawing and faces is not None and out is not None:
                target = _out_path(out, rel, used, inputs)
                try:
                    write_atomic(target, _encode_image(target, draw(img, faces, pose=args.draw_pose)))
                except _NotDrawn as e:
                    not_drawn += 1
                    warn(str(e))
                except WriteError as e:
                    write_failed(e, "no more annotated images are written")
                    drawing = False
            if doc is None and lines is None and not drawing:
                print(
                    f"pipnet: error: no output left to write: stopped after {done} of {len(images)} images",
                    file=sys.stderr,
                )
                break
        if doc is not None:
            with signals_deferred():
                finishing, doc = doc, None
                try:
                    finishing.close()
                except WriteError as e:
                    write_failed(e, "the old file, if any, is left as it was")
    except BaseException:  # Ctrl-C, SIGTERM, a bug: --json stays the old file, no temporary file left
        if doc is not None:
            doc.discard()
        raise
    finally:
        if lines is not None:
            lines.close()
    if write_errors:
        return EXIT_WRITE_FAILED
    return 1 if failed or not_drawn else 0


# ---------------------------------------------------------------------------------- models
def _add_models(sub: Any) -> None:
    p = sub.add_parser("models", help="list, describe and download models")
    msub = p.add_subparsers(dest="models_cmd", metavar="{list,info,download}", parser_class=_Parser)
    msub.required = True
    q = msub.add_parser("list", help="registered models and where they are available locally")
    q.add_argument("--kind", choices=("landmark", "detector"), help="only this kind")
    q.set_defaults(func=_cmd_models_list)
    q = msub.add_parser("info", help="a model's registry entry and local path")
    q.add_argument("name", metavar="NAME")
    q.set_defaults(func=_cmd_models_info)
    q = msub.add_parser("download", help="fetch a model from the hub into the local cache")
    q.add_argument("name", metavar="NAME")
    q.set_defaults(func=_cmd_models_download)


def _spec(name: str) -> ModelSpec:
    from . import registry

    if name not in registry.MODELS:
        raise UsageError(f"unknown model {name!r}; known: {', '.join(registry.list_models())}")
    return registry.MODELS[name]


def _local(name: str) -> str:
    from . import hub

    hit = hub.cached_path(name)
    if hit is not None:
        return f"{hit[0]} ({hit[1]})"
    return "not on this machine" if hub.get_spec(name).revision is None else "not downloaded"


def _cmd_models_list(args: argparse.Namespace) -> int:
    from . import registry

    rows = [("NAME", "KIND", "LOCAL")]
    rows += [(n, registry.MODELS[n].kind, _local(n)) for n in registry.list_models(args.kind)]
    widths = [max(len(r[i]) for r in rows) for i in range(2)]
    for r in rows:
        print(f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]}")
    return 0


def _cmd_models_info(args: argparse.Namespace) -> int:
    spec = _spec(args.name)
    fields = dataclasses.asdict(spec) if dataclasses.is_dataclass(spec) else dict(vars(spec))
    fields["local"] = _local(args.name)
    width = max(len(k) for k in fields)
    for k, v in fields.items():
        print(f"{k:<{width}}  {v}")
    return 0


def _cmd_models_download(args: argparse.Namespace) -> int:
    from . import hub

    _spec(args.name)
    try:
        path = hub.download(args.name)
    except (UsageError, FileNotFoundError):
        raise
    except Exception as e:  # network, hub or hash errors: the user's to fix, not a bug of ours
        raise UsageError(f"download of {args.name} failed: {type(e).__name__}: {e}") from e
    cached = hub.cached_path(args.name)
    source = cached[1] if cached else "hf-cache"  # a download lands in the Hugging Face cache
    how = {
        "packaged": "packaged in pipnet-sdk, nothing to download",
        hub.ENV_MODELS_DIR: f"found in ${hub.ENV_MODELS_DIR}, nothing to download",
        "hf-cache": "in the Hugging Face cache",
    }[source]
    print(f"{args.name}: {path} ({how})")
    return 0


# ---------------------------------------------------------------------------------- main
def _add_video(sub: Any) -> None:
    from .cli_video import add_parser  # imported here: `pipnet --help` need not load it

    add_parser(sub)


_SUBCOMMANDS = (_add_detect, _add_models, _add_video)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = _Parser(prog="pipnet", description="PIPNet face landmarks on ONNX Runtime.")
    parser.add_argument("--version", action="version", version=f"pipnet-sdk {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for add in _SUBCOMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``pipnet`` command; returns the exit code (see the module doc)."""
    try:
        args = build_parser().parse_args(argv)
        with signals_stop_the_run(), quiet_native_stderr(getattr(args, "quiet", False)):
            return int(args.func(args))
    except SystemExit as e:  # --help / --version
        return e.code if isinstance(e.code, int) else 0
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM / SIGHUP (Interrupted): the outputs are closed
        signum = getattr(e, "signum", signal.SIGINT)
        by = "" if signum == signal.SIGINT else f" by {signal.Signals(signum).name}"
        print(f"pipnet: interrupted{by}", file=sys.stderr)
        return 128 + signum
    except WriteError as e:
        print(f"pipnet: error: {_one_line(e)}", file=sys.stderr)
        return EXIT_WRITE_FAILED
    except (UsageError, OSError, ValueError) as e:  # incl. ModelNotFoundError, ModelFormatError
        print(f"pipnet: error: {_one_line(e)}", file=sys.stderr)
        return 2


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text


if __name__ == "__main__":
    sys.exit(main())
