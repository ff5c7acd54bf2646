"""Shrink a checkpoint to its half-precision weights + config/meta, split into parts of at most
--max-mb (to move it off a machine with a file-size limit), and merge the parts back.

    python -m export.slim split runs/r18/teacher/best.pt OUTDIR/r18 [--max-mb 15]
    python -m export.slim merge OUTDIR/r18 runs/r18/best.pt
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch


def split(ckpt: Path, prefix: Path, max_mb: float = 15) -> list[Path]:
    ck = torch.load(ckpt, map_location="cpu", weights_only=False)
    state = {k: (v.half() if v.is_floating_point() else v) for k, v in ck["model"].items()}
    parts: list[dict] = [{}]
    size = 0
    for k, v in state.items():
        n = v.numel() * v.element_size()
        if size + n > max_mb * 1e6 and parts[-1]:
            parts.append({})
            size = 0
        parts[-1][k] = v
        size += n
    prefix.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, p in enumerate(parts):
        path = prefix.with_name(f"{prefix.name}.part{i}.pt")
        extra = {"config": ck["config"], "meta": ck["meta"], "epoch": ck["epoch"], "best": ck["best"]} if i == 0 else {}
        torch.save({"model": p, **extra}, path)
        paths.append(path)
    return paths


def merge(prefix: Path, out: Path) -> Path:
    parts = sorted(prefix.parent.glob(f"{prefix.name}.part*.pt"), key=lambda p: int(p.stem.split("part")[-1]))
    if not parts:
        raise FileNotFoundError(f"no {prefix}.part*.pt")
    first = torch.load(parts[0], map_location="cpu", weights_only=False)
    model = dict(first["model"])
    for p in parts[1:]:
        model.update(torch.load(p, map_location="cpu", weights_only=False)["model"])
    first["model"] = {k: (v.float() if v.is_floating_point() else v) for k, v in model.items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(first, out)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m export.slim", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("split")
    s.add_argument("ckpt", type=Path)
    s.add_argument("prefix", type=Path)
    s.add_argument("--max-mb", type=float, default=15)
    m = sub.add_parser("merge")
    m.add_argument("prefix", type=Path)
    m.add_argument("out", type=Path)
    a = ap.parse_args(argv)
    print(split(a.ckpt, a.prefix, a.max_mb) if a.cmd == "split" else merge(a.prefix, a.out))


if __name__ == "__main__":
    main()
