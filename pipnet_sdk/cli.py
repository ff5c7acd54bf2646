"""The ``pipnet`` command.

Exit codes: 0 = success; 1 = it ran, but some images could not be read (each gets an
``"error"`` entry in the JSON and a warning on stderr); 2 = usage error (bad option, missing
path, unknown or unusable model): one ``pipnet: error: ...`` line on stderr, nothing processed.

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
import sys
from pathlib import Path
from typing import Any, Sequence

from ._cli_common import (_positive_int, _progress, check_distinct, check_folder, check_writable,
                          make_parent, write_atomic)


class UsageError(Exception):
    """A user mistake: reported as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage dump
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


def _walk_images(folder: Path, warn: bool) -> list[Path]:
    """Image files under ``folder``, sorted; symbolic links to folders are followed once (a link
    back to a folder already walked is reported and skipped)."""
    from .images import IMAGE_EXTENSIONS

    found: list[Path] = []
    walked: set[str] = set()
    for root, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in walked:
            if warn:
                print(f"pipnet: warning: {root} leads back to {real}, which is already read: skipped",
                      file=sys.stderr)
            dirs[:] = []
            continue
        walked.add(real)
        dirs.sort()
        found += [Path(root) / f for f in files if Path(f).suffix.lower() in IMAGE_EXTENSIONS]
    return sorted(f for f in found if f.is_file())


def _collect_images(paths: Sequence[str], exclude: Path | None, warn: bool = True) -> list[tuple[Path, Path]]:
    """(file, name relative to the output folder) for every image under ``paths``."""
    from .images import IMAGE_EXTENSIONS

    found: list[tuple[Path, Path]] = []
    for text in paths:
        p = Path(text)
        if p.is_dir():
            for f in _walk_images(p, warn):
                if exclude is not None and exclude in f.resolve().parents:
                    continue  # our own earlier output inside an input folder
                found.append((f, Path(p.resolve().name or "root") / f.relative_to(p)))
        elif p.exists():
            found.append((p, Path(p.name)))
        else:
            raise UsageError(f"no such file or folder: {text}")
    if not found:
        raise UsageError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found in {', '.join(paths)}")
    return found


def _write_image(path: Path, image: Any) -> None:
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(path.suffix or ".png", image)
    if not ok:
        raise ValueError(f"cannot encode {path}")
    buf.tofile(str(path))  # works with unicode paths, unlike cv2.imwrite on Windows


def _out_path(out: Path, rel: Path, used: set[Path], source: Path) -> Path:
    """A free name under ``out``; never the source image itself."""
    cand = out / rel
    stem, suffix, k = cand.with_suffix(""), cand.suffix, 1
    while cand in used or (cand.exists() and cand.resolve() == source.resolve()):
        cand = Path(f"{stem}_{k}{suffix}")
        k += 1
    used.add(cand)
    return cand


# ---------------------------------------------------------------------------------- detect
def _add_detect(sub: Any) -> None:
    p = sub.add_parser("detect", help="faces and landmarks of images or folders of images",
                       description="Detect faces and their landmarks; JSON on stdout, or in --json "
                                   "and/or --jsonl (one line per image, written as it goes).")
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders (searched recursively)")
    p.add_argument("--out", metavar="DIR", help="folder for the annotated images of --draw")
    p.add_argument("--json", metavar="FILE", help="write the JSON here (at the end, atomically) instead of stdout")
    p.add_argument("--jsonl", metavar="FILE", help="also append one JSON line per image as it is done, so an "
                   "interrupted run keeps what it finished")
    p.add_argument("--draw", action="store_true", help="write annotated images into --out DIR")
    p.add_argument("--draw-pose", action="store_true", help="with --draw: also draw head-pose axes")
    p.add_argument("--model", metavar="M", help="landmark model: registry name or .onnx path")
    p.add_argument("--detector", metavar="D", help="face detector: registry name or .onnx path")
    p.add_argument("--threads", type=_positive_int, metavar="N", help="onnxruntime threads")
    p.add_argument("--test-crops", type=_positive_int, default=1, metavar="K",
                   help="average each face over K (1-5) shifted/zoomed crops: more accurate, K times slower")
    p.add_argument("--flip-test", action="store_true", help="also average over mirrored crops (2x slower)")
    p.add_argument("--score-threshold", type=_unit_float, metavar="T", help="detector score threshold (0-1)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar, no warnings")
    p.set_defaults(func=_cmd_detect)


def _cmd_detect(args: argparse.Namespace) -> int:
    from .crop import TEST_CROPS
    from .images import load_image
    from .landmarker import DEFAULT_DETECTOR, DEFAULT_MODEL, Landmarker

    if args.draw and not args.out:
        raise UsageError("--draw needs --out DIR")
    if args.draw_pose and not args.draw:
        raise UsageError("--draw-pose needs --draw")
    if args.out and not args.draw:
        raise UsageError("--out is only used with --draw")
    out = Path(args.out) if args.out else None
    if out is not None and out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a folder")
    images = _collect_images(args.paths, out.resolve() if out else None, warn=not args.quiet)
    options = {} if args.score_threshold is None else {"score_threshold": args.score_threshold}
    if args.test_crops > len(TEST_CROPS):
        raise UsageError(f"--test-crops must be 1 to {len(TEST_CROPS)}, got {args.test_crops}")
    try:  # every output, before any model is loaded or any file emptied
        check_distinct(**{"--json": args.json, "--jsonl": args.jsonl})
        sources = [path for path, _ in images]
        json_path = None if args.json in (None, "-") else check_writable(args.json, "--json", sources)
        lines_path = None if args.jsonl is None else check_writable(args.jsonl, "--jsonl", sources)
        if out is not None:
            check_folder(out, "--out")
    except ValueError as e:
        raise UsageError(str(e)) from None
    lm = Landmarker(model=args.model, detector=args.detector, threads=args.threads,
                    test_crops=args.test_crops, flip_test=args.flip_test, **options)

    results, failed, used = [], 0, set()
    with contextlib.ExitStack() as stack:
        lines = None if lines_path is None else stack.enter_context(
            open(make_parent(lines_path), "w", encoding="utf-8"))
        for path, rel in _progress(images, args.quiet):
            entry: dict[str, Any] = {"path": str(path)}
            try:
                img = load_image(path)
            except (OSError, ValueError) as e:
                failed += 1
                entry["error"] = str(e)
                if not args.quiet:
                    print(f"pipnet: warning: {e}", file=sys.stderr)
            else:
                faces = lm.detect(img)
                entry.update(width=int(img.shape[1]), height=int(img.shape[0]), faces=[f.to_dict() for f in faces])
                if out is not None:
                    from .drawing import draw

                    _write_image(_out_path(out, rel, used, path), draw(img, faces, pose=args.draw_pose))
            results.append(entry)
            if lines is not None:
                lines.write(json.dumps(entry) + "\n")
                lines.flush()
    text = json.dumps({"images": results, "model": args.model or DEFAULT_MODEL,
                       "detector": args.detector or DEFAULT_DETECTOR}) + "\n"
    if json_path is not None:
        write_atomic(json_path, text)
    elif lines_path is None or args.json == "-":
        sys.stdout.write(text)
    return 1 if failed else 0


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


def _spec(name: str) -> Any:
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
    source = hub.cached_path(args.name)[1]
    how = {"packaged": "packaged in pipnet-sdk, nothing to download",
           hub.ENV_MODELS_DIR: f"found in ${hub.ENV_MODELS_DIR}, nothing to download",
           "hf-cache": "in the Hugging Face cache"}[source]
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
        return int(args.func(args))
    except SystemExit as e:  # --help / --version
        return e.code if isinstance(e.code, int) else 0
    except KeyboardInterrupt:
        print("pipnet: interrupted", file=sys.stderr)
        return 130
    except (UsageError, OSError, ValueError) as e:  # incl. ModelNotFoundError, ModelFormatError
        print(f"pipnet: error: {_one_line(e)}", file=sys.stderr)
        return 2


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text


if __name__ == "__main__":
    sys.exit(main())
