"""Train a config's first stage on a CUDA machine, from packed crops, and bring the weights back.

The CUDA machine needs the repository and the packed crops, not the shared data (../shared);
what it writes is a few checkpoint files, in parts of a chosen size when bigger. So:

    # 1. here, on the CPU: cut the crops the stage trains on and pack them (WebP) into .gpu/data
    python -m export.gpu_run pack --config export/configs/pipnet-fast.json
    # 2. on any CUDA machine, with a copy of the repository and the file(s) step 1 printed:
    python -m export.gpu_run train --config export/configs/pipnet-fast.json --device cuda --minutes 8 --out OUT_DIR
    # 3. here again: OUT_DIR, copied back, becomes a run folder the CPU side continues
    python -m export.gpu_run fetch OUT_DIR --out runs/fast/teacher
    python -m export.recipe --config export/configs/pipnet-fast.json --out runs/fast --resume

`train` is export.train.train on the stage the recipe calls "teacher" (the config without
"restarts" and "stc"), with the packed crops as its cache, the batches cut and augmented on the
GPU, bf16 autocast and channels_last, optionally torch.compile, and "max_minutes" set from
--minutes less the time already spent (the schedule is fitted to what is left). It writes into
the output folder (--out) best.pt and last.pt as portable checkpoints (weights, no generator
states; split into NAME.partK.pt files of at most --part-mb MB, 15 by default, when bigger),
log.txt and config.json: at most --max-files files (8 by default, 0 for no limit), for a
transfer that brings back only so many.

A schedule longer than one GPU run (or one sitting on the CPU) is trained in legs instead: the CPU
runs the recipe with `--stop-after`; `handoff` writes that run's last.pt (weights, and AdamW's
state in last.opt.pt) into .gpu/resume; `train --resume-from .gpu/resume` goes on with the same
schedule and optimizer state for --minutes (`--keep-schedule` does the same from the start) and
returns last.pt with its optimizer state as well; `fetch` into the same run folder brings it back
(it refuses a checkpoint older than the one there), and the recipe's `--resume` goes on.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from .config import load_config
from .pack import pack
from .pseudo import onnx_pseudo_labels, onnx_pseudo_labels_path
from .train import crops_cache_path, lock_holder, prepare, train

PROCESS_START = time.time()  # --minutes counts from here; the reserve covers the imports before it
DATA = Path(".gpu/data")
RESUME = Path(".gpu/resume")
PART_MB = 15.0
MAX_FILES = 8  # files left in the output folder (--max-files), for a transfer that brings back only so many


def stage_config(path: str, limit: int | None = None, epochs: int | None = None) -> dict[str, Any]:
    """The first stage of the config's recipe."""
    return dict(load_config(path, {"limit": limit, "epochs": epochs}), restarts=[], stc=None)


def pack_data(cfg: dict[str, Any], data: Path, quality: int = 85, progress: bool = True) -> list[Path]:
    """Cut (from the shared data, cached) the crops cfg trains on and write packed copies (WebP)
    into data: the labeled crops, and the pseudo-labeled faces of cfg["pseudo_labels"]."""
    caches = [crops_cache_path(cfg)]
    if not caches[0].exists():  # cut once; a cut cache is packed as it is, not loaded first
        prepare(cfg, progress)
    if cfg["pseudo_labels"]:
        caches.append(onnx_pseudo_labels_path(cfg))
        if not caches[-1].exists():
            onnx_pseudo_labels(cfg, progress)
    data.mkdir(parents=True, exist_ok=True)
    return [pack(c, quality, data / c.with_suffix(".packed.npz").name) for c in caches]


def save_split(
    tensors: dict[str, torch.Tensor], head: dict[str, Any], dest: Path, max_mb: float = PART_MB
) -> list[Path]:
    """tensors, with head (small, picklable) in the first file: dest when they fit in max_mb, else
    dest.part0.pt, dest.part1.pt, ... (for a transfer that takes files up to a size)."""
    parts: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for k, v in tensors.items():
        n = v.numel() * v.element_size()
        if parts[-1] and size + n > max_mb * 1e6 - 1e6:  # 1 MB for the head and pickling
            parts.append({})
            size = 0
        parts[-1][k] = v
        size += n
    paths = [dest] if len(parts) == 1 else [dest.with_suffix(f".part{i}.pt") for i in range(len(parts))]
    for i, (path, part) in enumerate(zip(paths, parts)):
        torch.save({"model": part, **(dict(head, parts=len(parts)) if i == 0 else {})}, path)
    return paths


def portable_paths(dest: Path) -> list[Path]:
    """The files save_split wrote for dest: dest itself, or its parts in order ([] if none)."""
    return (
        [dest]
        if dest.exists()
        else sorted(dest.parent.glob(f"{dest.stem}.part*.pt"), key=lambda p: int(p.stem.rpartition("part")[2]))
    )


def load_split(dest: Path) -> dict[str, Any]:
    """What save_split wrote to dest: the head, with all the tensors under "model"."""
    paths = portable_paths(dest)
    if not paths:
        raise FileNotFoundError(f"neither {dest} nor {dest.stem}.part*.pt in {dest.parent}")
    ck = torch.load(paths[0], map_location="cpu", weights_only=False)
    expected = ck.pop("parts", len(paths))  # files written before "parts" was recorded: not checked
    if len(paths) != expected:
        raise ValueError(
            f"{dest}: {len(paths)} of its {expected} parts are here; the others did not arrive "
            f"(carry or return all of them)"
        )
    for p in paths[1:]:
        ck["model"].update(torch.load(p, map_location="cpu", weights_only=False)["model"])
    return ck


def optimizer_path(dest: Path) -> Path:
    """Where save_portable puts the optimizer state of the checkpoint dest (last.pt -> last.opt.pt)."""
    return dest.with_name(f"{dest.stem}.opt.pt")


def save_portable(
    ckpt: Path, dest: Path, half: bool = False, max_mb: float = PART_MB, optimizer: bool = False
) -> list[Path]:
    """A checkpoint's weights (fp16 with half), config, meta, epoch and best NME into dest (split
    into parts when bigger than max_mb); with optimizer, its optimizer state into
    optimizer_path(dest), split the same way, AdamW's moments in bfloat16 (as big as the weights
    then, not twice: a 0.4 % rounding of a running average, and bfloat16 keeps float32's range, so
    no second moment underflows). Generator states and the running weight average stay behind."""
    ck = torch.load(ckpt, map_location="cpu", weights_only=False)
    weights = {k: v.half() if half and v.is_floating_point() else v for k, v in ck["model"].items()}
    head = {
        "config": ck["config"],
        "meta": ck["meta"],
        "epoch": ck["epoch"],
        "best": ck["best"],
        "fitted": ck.get("fitted", False),
    }
    paths = save_split(weights, head, dest, max_mb)
    if optimizer and ck.get("opt"):
        state = ck["opt"]["state"]
        moments = {
            f"{i}.{name}": v.bfloat16() if name != "step" and v.is_floating_point() else v
            for i, s in state.items()
            for name, v in s.items()
        }
        paths += save_split(
            moments, {"param_groups": ck["opt"]["param_groups"], "epoch": ck["epoch"]}, optimizer_path(dest), max_mb
        )
    return paths


def load_portable(dest: Path) -> dict[str, Any]:
    """What save_portable wrote to dest, as one checkpoint with float32 weights, and with "opt"
    when the optimizer state was saved beside it (of the same epoch, else ValueError)."""
    ck = load_split(dest)
    ck["model"] = {k: v.float() if v.is_floating_point() else v for k, v in ck["model"].items()}
    if portable_paths(optimizer_path(dest)):
        saved = load_split(optimizer_path(dest))
        if saved["epoch"] != ck["epoch"]:
            raise ValueError(
                f"{optimizer_path(dest)} is of epoch {saved['epoch'] + 1}, {dest} of epoch "
                f"{ck['epoch'] + 1}: a stale optimizer state (remove it, or write both again)"
            )
        state: dict[int, dict[str, torch.Tensor]] = {}
        for key, v in saved["model"].items():
            i, name = key.split(".", 1)
            state.setdefault(int(i), {})[name] = v.float() if v.is_floating_point() else v
        ck["opt"] = {"state": state, "param_groups": saved["param_groups"]}
    return ck


def train_on_device(
    cfg: dict[str, Any],
    data: Path,
    out: Path,
    minutes: float,
    device: str | None = None,
    compile_model: bool = False,
    half: bool = False,
    progress: bool = True,
    resume_from: Path | None = None,
    keep_schedule: bool = False,
    max_files: int = MAX_FILES,
    part_mb: float = PART_MB,
) -> dict[str, Any]:
    """Train cfg from the packed crops in data within `minutes` of wall clock (counted from the
    process start), then write the portable checkpoints (in parts of at most part_mb MB), log.txt
    and config.json into out, at most max_files files (0: no limit).
    The schedule is fitted to the minutes, unless keep_schedule or resume_from (a folder with a
    last.pt to go on from): then it stays the config's, the run stops when the minutes are spent,
    and last.pt's optimizer state returns too (trim_to_limit)."""
    os.environ["PIPNET_CACHE"] = str(data.resolve())  # the packed crops stand in for ../shared
    crops = crops_cache_path(cfg)
    if not (crops.exists() or crops.with_suffix(".packed.npz").exists()):
        raise FileNotFoundError(
            f"no {crops.stem}.packed.npz in {data}: pack this config (same --config "
            f"and --limit) with `python -m export.gpu_run pack` first"
        )
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    spent = (time.time() - PROCESS_START) / 60
    reserve = 0.5  # minutes for imports, the last epoch past the budget and the portable copies
    left = max(0.1, minutes - spent - reserve)
    keep_schedule = keep_schedule or resume_from is not None
    cfg = dict(cfg, max_minutes=None if keep_schedule else left)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:  # full checkpoints (with optimizer state) stay here
        run = Path(tmp)
        if resume_from is not None:  # train checks its config before any crops reach the device
            torch.save(load_portable(resume_from / "last.pt"), run / "last.pt")
        summary = train(
            cfg,
            run,
            resume=resume_from is not None,
            device=device,
            progress=progress,
            compile_model=compile_model,
            stop_after=left if keep_schedule else None,
        )
        for name in ("log.txt", "config.json"):
            shutil.copy(run / name, out / name)
        for name in ("best", "averaged", "last"):  # a resumed run has no best.pt when it did not improve
            if (run / f"{name}.pt").exists():
                save_portable(
                    run / f"{name}.pt", out / f"{name}.pt", half, part_mb, optimizer=keep_schedule and name == "last"
                )
    summary["left_out"] = trim_to_limit(out, max_files)
    summary["optimizer_returned"] = bool(portable_paths(optimizer_path(out / "last.pt")))
    summary["minutes"] = round((time.time() - PROCESS_START) / 60, 2)
    return summary


def trim_to_limit(out: Path, max_files: int = MAX_FILES) -> list[str]:
    """Keep the output folder within max_files files (0: no limit): when out holds more, leave out
    last.pt's optimizer state first (the next leg then starts a fresh optimizer), then best.pt
    (fetch keeps the folder's); last.pt, the log and the config always return. Says what it left
    out, and returns those names."""
    dropped: list[str] = []
    if not max_files:
        return dropped
    for dest in (optimizer_path(out / "last.pt"), out / "best.pt"):
        if len(list(out.iterdir())) <= max_files:
            break
        for p in portable_paths(dest):
            p.unlink()
            dropped.append(p.name)
    if dropped:
        print(f"note: left out {', '.join(dropped)}: at most {max_files} files (--max-files)")
    if len(list(out.iterdir())) > max_files:
        print(
            f"warning: last.pt alone is in {len(list(out.glob('last.part*.pt')))} parts: with the log and "
            f"config more than {max_files} files (--max-files); raise --part-mb or --max-files"
        )
    return dropped


def check_not_training(run: Path) -> None:
    """Refuse a run folder that a live training process is writing (its next epoch would
    replace what handoff reads or fetch writes)."""
    holder = lock_holder(run)
    if holder is not None:
        raise RuntimeError(
            f"a training process (pid {holder}) is writing {run}: stop it first (with "
            f"--stop-after it stops by itself at an epoch end)"
        )


def save_atomic(obj: Any, path: Path) -> None:
    """torch.save through a temporary file: an interrupted write never leaves a broken checkpoint."""
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def leg_start(log: Path) -> int | None:
    """The epoch a returned leg started from (its log's first "start=" header), if it says."""
    found = re.search(r"^#.* start=(\d+)$", log.read_text(), re.M) if log.exists() else None
    return int(found.group(1)) if found else None


def handoff(run: Path, dest: Path = RESUME, optimizer: bool = True) -> list[Path]:
    """A run folder's last.pt (split when big) into dest for `train --resume-from`: its weights,
    and with optimizer its optimizer state, so that the next leg goes on with AdamW's moments
    instead of starting them afresh (as much again to carry)."""
    if not (run / "last.pt").exists():
        raise FileNotFoundError(f"no last.pt in {run}")
    check_not_training(run)
    for old in dest.glob("last*.pt"):
        old.unlink()
    dest.mkdir(parents=True, exist_ok=True)
    return save_portable(run / "last.pt", dest / "last.pt", optimizer=optimizer)


def fetch(returned: Path, run: Path) -> list[Path]:
    """What a GPU run returned -> a run folder on this machine: last.pt and best.pt (float32
    weights; last.pt with the optimizer state when the leg returned it, else --resume starts a
    fresh optimizer), averaged.pt if any, config.json, and its log.txt (appended to the folder's
    log). Into a
    folder that holds a run already (a leg handed off from it), last.pt must be newer than the
    one there, and best.pt replaces the one there only when it is better (or when there is no
    validation split: then the newer is the best)."""
    check_not_training(run)
    last = load_portable(returned / "last.pt")
    window, epochs, done = last["config"].get("average_last"), last["config"].get("epochs"), last["epoch"] + 1
    if window and epochs and epochs - window < done < epochs:
        raise ValueError(
            f"the returned leg stopped at epoch {done} of {epochs}, inside the last {window} epochs "
            f'that "average_last" averages; the running average does not travel, so no leg could '
            f"go on from it: {run} is left as it was (end GPU legs before that window)"
        )
    here = run / "last.pt"
    if here.exists():
        old = torch.load(here, map_location="cpu", weights_only=False)["epoch"]
        if old >= last["epoch"]:
            raise ValueError(
                f"{here} has trained {old + 1} epochs and the returned last.pt {last['epoch'] + 1}: "
                f"it is not newer; fetch into another folder"
            )
        start = leg_start(returned / "log.txt")
        if start is not None and old + 1 > start:
            print(
                f"note: {run} had trained {old + 1} epochs, the returned leg went on from epoch {start}: "
                f"the folder's epochs {start + 1}-{old + 1} are replaced"
            )
    best = load_portable(returned / "best.pt") if portable_paths(returned / "best.pt") else None
    if best is not None and (run / "best.pt").exists():
        old_best = torch.load(run / "best.pt", map_location="cpu", weights_only=False)["best"]
        if math.isfinite(old_best) and old_best <= best["best"]:
            best = None
    averaged = load_portable(returned / "averaged.pt") if portable_paths(returned / "averaged.pt") else None
    run.mkdir(parents=True, exist_ok=True)
    written = []
    for name, ck in (("last", last), ("best", best), ("averaged", averaged)):
        if ck is not None:
            save_atomic(ck, run / f"{name}.pt")
            written.append(run / f"{name}.pt")
    if (returned / "config.json").exists():
        shutil.copy(returned / "config.json", run / "config.json")
        written.append(run / "config.json")
    if (returned / "log.txt").exists():
        with open(run / "log.txt", "a") as log:
            log.write((returned / "log.txt").read_text())
        written.append(run / "log.txt")
    return written


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m export.gpu_run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack", help="cut and pack (WebP) the crops a config's first stage trains on (CPU)")
    t = sub.add_parser("train", help="train the first stage from packed crops (GPU)")
    for s in (p, t):
        s.add_argument("--config", required=True)
        s.add_argument("--data", type=Path, default=DATA, help=f"folder of packed crops (default {DATA})")
        s.add_argument("--limit", type=int, help="faces per folder (smoke runs)")
        s.add_argument("--quiet", action="store_true")
    p.add_argument("--quality", type=int, default=85, help="WebP quality (0-100)")
    t.add_argument(
        "--out", type=Path, required=True, help="output folder: the checkpoints, log.txt and config.json to bring back"
    )
    t.add_argument("--minutes", type=float, required=True, help="wall-clock budget of the whole command")
    t.add_argument("--epochs", type=int)
    t.add_argument("--device", help="cuda (default when there is one) or cpu")
    t.add_argument("--compile", action="store_true", help="torch.compile the model's forward pass")
    t.add_argument(
        "--keep-schedule",
        action="store_true",
        help="train the config's schedule until the minutes are spent (not fitted to them); fetch, then "
        "the recipe's --resume goes on",
    )
    t.add_argument(
        "--resume-from",
        type=Path,
        metavar="DIR",
        help=f"go on from DIR/last.pt (handoff writes it into {RESUME}), keeping its schedule",
    )
    t.add_argument("--half", action="store_true", help="return fp16 weights (half the size)")
    t.add_argument(
        "--part-mb",
        type=float,
        default=PART_MB,
        help=f"split checkpoints bigger than this into parts of at most this size (default {PART_MB:g} MB)",
    )
    t.add_argument(
        "--max-files",
        type=int,
        default=MAX_FILES,
        help=f"leave at most this many files in --out, leaving out the optimizer state, then best.pt "
        f"(default {MAX_FILES}; 0: no limit)",
    )
    f = sub.add_parser("fetch", help="turn the returned files into a run folder (CPU)")
    f.add_argument("returned", type=Path, help="folder holding the returned files")
    f.add_argument("--out", type=Path, required=True, help="run folder, e.g. runs/fast/teacher")
    h = sub.add_parser(
        "handoff", help="a run folder's last.pt, with its optimizer state, for train --resume-from (CPU)"
    )
    h.add_argument("run", type=Path, help="run folder, e.g. runs/fast06/teacher")
    h.add_argument("--to", type=Path, default=RESUME, help=f"where it goes (default {RESUME}); carry its files")
    h.add_argument(
        "--weights-only",
        action="store_true",
        help="leave the optimizer state out (half the size to carry; the next leg starts a fresh AdamW)",
    )
    a = ap.parse_args(argv)
    if a.cmd == "pack":
        paths = pack_data(stage_config(a.config, a.limit), a.data, a.quality, not a.quiet)
        # what the GPU machine needs: these files, not the whole folder (other configs' packs are
        # there too)
        print(
            json.dumps(
                {"carry": [str(p) for p in paths], "MiB": round(sum(p.stat().st_size for p in paths) / 2**20, 1)}
            )
        )
    elif a.cmd == "train":
        cfg = stage_config(a.config, a.limit, a.epochs)
        if a.resume_from is not None and not portable_paths(a.resume_from / "last.pt"):
            ap.error(f"--resume-from: no last.pt in {a.resume_from} (write it with `handoff`, and carry it)")
        if a.half and (a.resume_from is not None or a.keep_schedule):
            ap.error(
                "--half returns fp16 weights, which the next leg would train on: not with --resume-from "
                "or --keep-schedule"
            )
        print(
            json.dumps(
                train_on_device(
                    cfg,
                    a.data,
                    a.out,
                    a.minutes,
                    a.device,
                    a.compile,
                    a.half,
                    not a.quiet,
                    a.resume_from,
                    a.keep_schedule,
                    a.max_files,
                    a.part_mb,
                )
            )
        )
    elif a.cmd == "handoff":
        paths = handoff(a.run, a.to, not a.weights_only)
        print(
            json.dumps(
                {
                    "carry": [os.path.relpath(p) for p in paths],
                    "MiB": round(sum(p.stat().st_size for p in paths) / 2**20, 1),
                }
            )
        )
    else:
        print(json.dumps([str(p) for p in fetch(a.returned, a.out)]))


if __name__ == "__main__":
    main()
