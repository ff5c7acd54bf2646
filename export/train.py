"""Train a PIPNet model: `python -m export.train --config export/configs/pipnet-fast.json`.

Steps: read labeled faces (300W-style folders or landmark list files), find the SDK detector's
box for each face, cut 'base crops' around the SDK crop square (cached), compute the mean face
and neighbour indices, then train with batch augmentation in torch (bf16 autocast +
channels_last), a validation NME per epoch, a log file, a checkpoint every epoch (resume with
--resume), and optionally self-training with curriculum (STC) on unlabeled faces (see
export/stc.py).

"teacher": a checkpoint of a bigger model with the same map grid (pipnet-r18: 256 px, stride 32,
for pipnet-fast: 128 px, stride 16). Each batch is then cut at the teacher's size from its own
base crops and area-downscaled for the student, and the loss becomes
(1 - distill_weight) * the paper's loss + distill_weight * targets.distill_loss.

"pseudo_labels": {"teacher": an exported .onnx, "flip_test": true, "test_crops": 3}: the teacher
labels the unlabeled faces (LFW) through the SDK with test-time averaging, and those faces join
the labeled ones with the full loss (export/pseudo.py, onnx_pseudo_labels). "clean_unlabeled" (on
by default) inpaints the green marks drawn on the shared LFW images first (export/marks.py).

"max_minutes": a time budget for the epochs. The schedule is fitted to it after the first epoch
(fewer epochs: the cosine ends on time), training stops early if it is spent all the same, and a
run resumed from a checkpoint with a budget keeps that checkpoint's schedule.

`--stop-after MINUTES` is the other kind of budget, for a schedule longer than one sitting: the
schedule stays as configured, training stops at the first epoch end past the budget, and
`--resume` goes on from there (on this machine, or on a CUDA machine with `export.gpu_run`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TextIO

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from .augment import AugmentConfig, augment, augment_with_visibility, upload
from .checkpoint import average_into, load_checkpoint, load_init
from .config import build_model, check_files, grid_of, load_config
from .data import (
    Sample,
    base_crops,
    cache_dir,
    cache_key,
    detector_boxes,
    mean_face,
    neighbor_indices,
    read_labeled,
    shared_path,
    split_validation,
)
from .decode import decode, nme
from .model import PIPNet, autocast, normalize
from .pack import load_cache
from .pretrained import load_imagenet
from .pseudo import onnx_pseudo_labels
from .schemes import get_scheme
from .targets import coarse_loss, distill_loss, make_targets, pip_loss, visibility_cells, visibility_loss

LOSS_PARTS = ("loss", "score", "offset", "neighbor")


# ------------------------------------------------------------------------------------- data
def crops_cache_path(cfg: dict[str, Any]) -> Path:
    """Where prepare() keeps the base crops of this config."""
    key = cache_key(
        cfg["labeled"],
        cfg["val_from"],
        cfg["val_fraction"],
        cfg["limit"],
        cfg["detector"],
        cfg["crop"],
        cfg["base_size"],
        cfg["margin"],
        cfg["seed"],
        2,
    )
    return cache_dir() / f"crops-{key}.npz"


def labeled_faces(cfg: dict[str, Any]) -> tuple[list[Sample], list[Sample]]:
    """Training and validation faces of cfg["labeled"]; the validation faces are a fixed
    fraction of the cfg["val_from"] entry."""
    num_points = get_scheme(cfg["scheme"]).num_points
    train, val = [], []
    for entry in cfg["labeled"]:
        samples = read_labeled(entry, num_points)
        if cfg["limit"]:
            samples = samples[: cfg["limit"]]
        if entry == cfg["val_from"]:
            t, v = split_validation(samples, cfg["val_fraction"], cfg["seed"])
            train += t
            val += v
        else:
            train += samples
    return train, val


def prepare(cfg: dict[str, Any], progress: bool = True) -> dict[str, Any]:
    """Base crops and points for train and validation, plus mean face and neighbours (cached)."""
    path = crops_cache_path(cfg)
    d = load_cache(path)
    if d is None:
        d = {}
        for part, samples in zip(("train", "val"), labeled_faces(cfg)):
            boxes, found, _ = detector_boxes(samples, shared_path(cfg["detector"]), progress=progress)
            imgs, pts = base_crops(samples, boxes, cfg, progress, f"base crops ({part})")
            d[f"{part}_images"], d[f"{part}_points"], d[f"{part}_found"] = imgs, pts, found
        np.savez(path, **d)
    r, m = cfg["base_size"], cfg["margin"]
    norm = (d["train_points"] - (r - 1) / 2) / (r / m) + 0.5  # normalised to the un-jittered crop
    mean = mean_face(norm)
    d["mean_face"] = mean
    d["neighbors"] = neighbor_indices(mean, cfg["num_neighbors"])
    return d


def as_tensor_images(images: np.ndarray) -> torch.Tensor:
    """(M, R, R, 3) uint8 crops -> (M, 3, R, R)."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()


def load_teacher(
    cfg: dict[str, Any], data: dict[str, Any], progress: bool
) -> tuple[PIPNet, dict[str, Any], torch.Tensor, torch.Tensor]:
    """The distillation teacher of cfg and its base crops of the student's training faces."""
    teacher, t_cfg, t_meta = load_checkpoint(cfg["teacher"])
    if t_cfg["input_size"] % cfg["input_size"] or grid_of(t_cfg) != grid_of(cfg):
        raise ValueError("the teacher needs an input size that is a multiple of the student's and the same map grid")
    if not np.array_equal(np.asarray(t_meta["neighbor_indices"]), data["neighbors"]):
        raise ValueError(
            "the teacher's neighbour indices differ from the student's: its neighbour offsets "
            "would supervise other landmarks"
        )
    t_data = prepare(dict(cfg, base_size=t_cfg["base_size"], margin=t_cfg["margin"]), progress)
    if len(t_data["train_images"]) != len(data["train_images"]):
        raise ValueError("distillation needs the teacher's crops of exactly the student's labeled faces")
    return teacher, t_cfg, as_tensor_images(t_data["train_images"]), torch.from_numpy(t_data["train_points"])


# ------------------------------------------------------------------------------- schedule
def lr_at(cfg: dict[str, Any], epoch: float) -> float:
    """Learning rate at a fractional epoch: linear warm-up, then cosine or steps."""
    base, total, warm = cfg["lr"], cfg["epochs"], cfg["warmup_epochs"]
    if epoch < warm:
        return base * (epoch + 1e-3) / warm
    if cfg["schedule"] == "cosine":
        return base * 0.5 * (1 + math.cos(math.pi * min(1.0, epoch / total)))
    return base * 0.1 ** sum(epoch >= m for m in cfg["milestones"])


def stc_stage(stc: dict[str, Any], epoch: int, epochs: int) -> int:
    """Curriculum: the coarse grid whose stage this epoch is in (e.g. 2, then 4), 0 = full maps."""
    grids = list(stc["grids"])
    per = epochs / (len(grids) + 1)
    k = int(epoch // per)
    return grids[k] if k < len(grids) else 0


@torch.no_grad()
def evaluate(
    model: PIPNet,
    images: torch.Tensor,
    points: torch.Tensor,
    cfg: dict[str, Any],
    neighbors: torch.Tensor,
    device: torch.device,
    batch: int = 64,
) -> dict[str, float]:
    """Validation NME (inter-ocular for 68 points) on un-jittered crops, with and without
    neighbour averaging."""
    model.eval()
    scheme = get_scheme(cfg["scheme"])
    flip = torch.tensor(scheme.flip, device=device)
    errs, errs_own = [], []
    for i in range(0, len(images), batch):
        im = images[i : i + batch].to(device)
        x, p = augment(
            im, points[i : i + batch].to(device), cfg["input_size"], cfg["margin"], flip, AugmentConfig(), train=False
        )
        x = normalize(x).contiguous(memory_format=torch.channels_last)
        with autocast(device, cfg["bf16"]):
            out = model(x)
        errs.append(nme(decode(out, neighbors), p, scheme.norm))
        errs_own.append(nme(decode(out, neighbors, use_neighbors=False), p, scheme.norm))
    model.train()
    return {"nme": float(torch.cat(errs).mean()) * 100, "nme_own": float(torch.cat(errs_own).mean()) * 100}


# -------------------------------------------------------------------------------- training
@dataclass
class Batches:
    """What training batches are cut from: base crops with their points (the student's, or with a
    distillation teacher the teacher's, at its size: the student gets them area-downscaled)."""

    images: torch.Tensor  # (M, 3, R, R) uint8 BGR
    points: torch.Tensor  # (M, N, 2) pixels of the base crops
    is_pseudo: torch.Tensor  # (M,) bool: pseudo-labeled faces, after the labeled ones
    size: int  # side of the crops cut from them
    margin: float


@dataclass
class Run:
    """Everything a training step and the epoch bookkeeping read."""

    cfg: dict[str, Any]  # replaced when the time budget shortens the schedule
    dev: torch.device
    model: PIPNet
    forward: Callable[[torch.Tensor], Any]  # model.forward_train, compiled or not
    opt: torch.optim.Optimizer
    batches: Batches
    teacher: PIPNet | None  # distillation teacher
    val_images: torch.Tensor
    val_points: torch.Tensor
    neighbors: torch.Tensor
    flip: torch.Tensor
    aug: AugmentConfig
    gen: torch.Generator  # the batch order and augmentation draws
    meta: dict[str, Any]  # mean face and neighbour indices, saved with every checkpoint
    fitted: bool = False  # a time budget set cfg["epochs"] (now or in a run this one resumes)


def pick_device(device: str | None) -> torch.device:
    """The named device, else CUDA when there is one, else the CPU."""
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def seed_everything(cfg: dict[str, Any]) -> None:
    """Seed torch, random and NumPy from cfg["seed"] (and set cfg["threads"])."""
    if cfg["threads"]:
        torch.set_num_threads(cfg["threads"])
    torch.manual_seed(cfg["seed"])
    random.seed(cfg["seed"])
    np.random.seed(cfg["seed"])


def starting_checkpoints(
    cfg: dict[str, Any], last: Path, resume: bool
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(this run's last.pt when resuming, else None; cfg["init"]'s checkpoint when starting afresh
    from another run's weights, else None)."""
    # on the CPU: the generator states must stay CPU tensors; load_state_dict moves the rest
    resumed = torch.load(last, map_location="cpu", weights_only=False) if resume and last.exists() else None
    init = torch.load(cfg["init"], map_location="cpu", weights_only=False) if cfg["init"] and resumed is None else None
    return resumed, init


LOCK = "train.lock"


def lock_holder(out: Path) -> int | None:
    """The process id of a live training process writing the run folder out (on this machine),
    else None: a lock left by a killed process does not count."""
    try:
        pid = int((out / LOCK).read_text())
    except (FileNotFoundError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return pid


@contextmanager
def writer_lock(out: Path) -> Iterator[None]:
    """Hold out/train.lock while training writes out, so that gpu_run's fetch and handoff do not
    act on a folder whose checkpoints are about to be replaced."""
    holder = lock_holder(out)
    if holder is not None and holder != os.getpid():
        raise RuntimeError(f"{out} is being trained by process {holder}; stop it first")
    (out / LOCK).write_text(str(os.getpid()))
    try:
        yield
    finally:
        (out / LOCK).unlink(missing_ok=True)


def keep_neighbors(data: dict[str, Any], meta: dict[str, Any]) -> None:
    """Use the starting weights' mean face and neighbour indices: the neighbour heads are tied to
    them, even when this run's data would give others."""
    data["mean_face"] = np.asarray(meta["mean_face"], np.float32)
    data["neighbors"] = np.asarray(meta["neighbor_indices"], np.int64)


def make_optimizer(cfg: dict[str, Any], model: PIPNet) -> torch.optim.Optimizer:
    """AdamW or Adam, as cfg["optimizer"] says; the trunk's learning rate scaled by
    cfg["trunk_lr_scale"] and the visibility head's by cfg["visibility_lr_scale"], each a
    parameter group of its own when its scale is not 1."""
    opt = torch.optim.AdamW if cfg["optimizer"] == "adamw" else torch.optim.Adam
    vis_scale = cfg["visibility_lr_scale"] if model.visibility is not None else 1.0
    if cfg["trunk_lr_scale"] == 1.0 and vis_scale == 1.0:
        return opt(model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    trunk = list(model.backbone.parameters())
    vis = list(model.visibility.parameters()) if model.visibility is not None and vis_scale != 1.0 else []
    taken = {id(p) for p in trunk + vis}
    heads = [p for p in model.parameters() if id(p) not in taken]
    groups = [{"params": trunk, "lr_scale": cfg["trunk_lr_scale"]}, {"params": heads, "lr_scale": 1.0}]
    if vis:
        groups.append({"params": vis, "lr_scale": vis_scale})
    return opt(groups, lr=cfg["lr"], weight_decay=cfg["weight_decay"])


def training_faces(
    cfg: dict[str, Any], data: dict[str, Any], pseudo: dict[str, np.ndarray] | None, progress: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Labeled base crops and points, then the pseudo-labeled ones (given, or labeled by
    cfg["pseudo_labels"]'s exported model); and which faces are pseudo-labeled."""
    images, points = as_tensor_images(data["train_images"]), torch.from_numpy(data["train_points"])
    num_labeled = len(images)
    if pseudo is None and cfg["pseudo_labels"]:
        pseudo = onnx_pseudo_labels(cfg, progress)
    if pseudo is not None:
        images = torch.cat([images, as_tensor_images(pseudo["images"])])
        points = torch.cat([points, torch.from_numpy(pseudo["points"])])
    return images, points, torch.arange(len(images)) >= num_labeled


def setup(
    cfg: dict[str, Any],
    data: dict[str, Any],
    pseudo: dict[str, np.ndarray] | None,
    dev: torch.device,
    progress: bool,
    compile_model: bool = False,
) -> Run:
    """The model, its optimizer, the faces batches are cut from, the distillation teacher and the
    validation faces (in this order: building a model draws from torch's global generator)."""
    stc = cfg["stc"]
    model = build_model(cfg, tuple(stc["grids"]) if stc else ()).to(dev).to(memory_format=torch.channels_last)
    opt = make_optimizer(cfg, model)
    images, points, is_pseudo = training_faces(cfg, data, pseudo, progress)
    batches = Batches(images, points, is_pseudo, cfg["input_size"], cfg["margin"])
    teacher = None
    if cfg["teacher"]:
        if is_pseudo.any():
            raise ValueError("distillation ('teacher') and pseudo-labeled faces (STC) do not combine")
        teacher, t_cfg, batches.images, batches.points = load_teacher(cfg, data, progress)
        teacher = teacher.to(dev).to(memory_format=torch.channels_last)
        batches.size, batches.margin = t_cfg["input_size"], t_cfg["margin"]
    if dev.type == "cuda":  # the crops live on the GPU: batches are cut and augmented there
        batches.images, batches.points = batches.images.to(dev), batches.points.to(dev)
    meta = {"mean_face": data["mean_face"].tolist(), "neighbor_indices": data["neighbors"].tolist()}
    return Run(
        cfg,
        dev,
        model,
        torch.compile(model.forward_train) if compile_model else model.forward_train,
        opt,
        batches,
        teacher,
        as_tensor_images(data["val_images"]),
        torch.from_numpy(data["val_points"]),
        torch.from_numpy(data["neighbors"]).to(dev),
        torch.tensor(get_scheme(cfg["scheme"]).flip, device=dev),
        AugmentConfig(**cfg["augment"]),
        torch.Generator().manual_seed(cfg["seed"]),
        meta,
    )


#: config keys a resumed run may change: names, threads, precision, and the keys that say where a
#: stage starts or what follows it; every other key (the model, the schedule, the optimizer, the
#: data and its split, the loss) must be the checkpoint's
MAY_CHANGE_ON_RESUME = (
    "name",
    "version",
    "threads",
    "bf16",
    "max_minutes",
    "init",
    "pretrained",
    "pretrained_path",
    "restarts",
    "stc",
)


def schedule_fitted(ck: dict[str, Any]) -> bool:
    """Whether a time budget fitted the checkpoint's epochs (then a resume keeps them)."""
    return bool(ck["config"].get("max_minutes") or ck.get("fitted"))


def check_resumable_config(ck: dict[str, Any], cfg: dict[str, Any]) -> None:
    """ValueError when cfg differs from the checkpoint's config in a key outside
    MAY_CHANGE_ON_RESUME (epochs excepted when a time budget fitted them: the checkpoint's are
    kept). Going on with another learning rate, epoch count or data would silently train a run
    that neither config describes."""
    saved = ck["config"]
    skip = set(MAY_CHANGE_ON_RESUME) | ({"epochs"} if schedule_fitted(ck) else set())
    differ = [k for k in saved if k in cfg and k not in skip and saved[k] != cfg[k]]
    if differ:
        what = ", ".join(f"{k}: {saved[k]!r} there, {cfg[k]!r} here" for k in differ)
        raise ValueError(
            f"the checkpoint was trained with another config ({what}): resume with its config, "
            f'or start a new run folder from it with "init"'
        )


def restore(run: Run, resumed: dict[str, Any]) -> tuple[int, float, dict[str, torch.Tensor]]:
    """Continue from a last.pt: weights, optimizer and generator state (when it has them: a
    weights-only checkpoint starts a fresh optimizer), and a schedule that a time budget
    shortened (train_stage has checked the config against the checkpoint's). Returns (first epoch
    to train, best NME so far, running weight average)."""
    run.model.load_state_dict(resumed["model"])
    if resumed.get("opt"):
        run.opt.load_state_dict(resumed["opt"])
    if resumed.get("torch_rng") is not None:
        set_global_rng_state(resumed["torch_rng"])
    if resumed.get("rng") is not None:
        run.gen.set_state(resumed["rng"])
    else:
        run.gen.manual_seed(run.cfg["seed"] + resumed["epoch"] + 1)
    if schedule_fitted(resumed):
        run.cfg = dict(run.cfg, epochs=resumed["config"]["epochs"])
        run.fitted = True
    start = resumed["epoch"] + 1
    averaged = {name: v.to(run.dev) for name, v in (resumed.get("averaged") or {}).items()}
    k = run.cfg["average_last"]
    if k and start > run.cfg["epochs"] - k and not averaged:
        raise ValueError(
            f"the checkpoint is at epoch {start} of {run.cfg['epochs']}, inside the last {k} epochs "
            f'that "average_last" averages, and holds no average (a weights-only copy): resume '
            f"from the full checkpoint, or end a leg before the averaging starts"
        )
    return start, resumed["best"], averaged


def batch_loss(run: Run, idx: torch.Tensor, stage: int | None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Loss of the faces idx: augment their crops, run the model (and the distillation teacher),
    the paper's loss (pseudo-labels on the full maps only in STC's last stage), plus distillation
    and STC's coarse-map losses when they apply. Returns the loss and its detached parts."""
    cfg, b, dev = run.cfg, run.batches, run.dev
    on_crops = upload(idx, b.images.device)  # the crops are on the GPU when training there
    im, pt = b.images[on_crops].to(dev), b.points[on_crops].to(dev)
    x, p, visible = augment_with_visibility(im, pt, b.size, b.margin, run.flip, run.aug, run.gen)
    if run.teacher is not None:
        with torch.no_grad(), autocast(dev, cfg["bf16"]):
            t_heads = run.teacher(normalize(x).contiguous(memory_format=torch.channels_last))
        x = F.avg_pool2d(x, b.size // cfg["input_size"])
    x = normalize(x).contiguous(memory_format=torch.channels_last)
    with autocast(dev, cfg["bf16"]):
        heads, coarse_maps = run.forward(x)
    targets = make_targets(p, grid_of(cfg), run.neighbors)
    # STC: pseudo-labeled faces get the full-map loss only in its last stage
    full_w = (~upload(b.is_pseudo[idx], dev) | (stage == 0)).float() if stage is not None else None
    loss, parts = pip_loss(heads, targets, cfg["num_neighbors"], cfg["score_weight"], cfg["offset_weight"], full_w)
    if cfg["visibility_weight"] > 0:  # the sixth head: is each point seen or hidden
        cells = visibility_cells(cfg["visibility_cell"], heads[0], targets["index"])
        l_vis = visibility_loss(heads[5], cells, visible, full_w)
        loss = loss + cfg["visibility_weight"] * l_vis
        parts["visibility"] = l_vis.detach()
    if run.teacher is not None:
        a = cfg["distill_weight"]
        loss = (1 - a) * loss + a * distill_loss(heads, t_heads, cfg["num_neighbors"], cfg["score_weight"])
    if coarse_maps:
        used = {g: m for g, m in coarse_maps.items() if stage == 0 or g <= stage}
        loss = loss + coarse_loss(used, p, torch.ones(len(p), device=dev), cfg["score_weight"])
    return loss, parts


def set_train_mode(model: PIPNet, freeze_bn: bool) -> None:
    """Training mode; with freeze_bn the trunk's BatchNorm layers keep the running statistics they
    started with (their scales and shifts still learn)."""
    model.train()
    if freeze_bn:
        for m in model.backbone.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.eval()


def train_epoch(run: Run, epoch: int, steps: int, stage: int | None, progress: bool) -> dict[str, torch.Tensor]:
    """One pass over the faces in a random order; the losses summed over its steps."""
    cfg = run.cfg
    logged = LOSS_PARTS + (("visibility",) if cfg["visibility_weight"] > 0 else ())
    totals = {k: torch.zeros((), device=run.dev) for k in logged}
    perm = torch.randperm(len(run.batches.images), generator=run.gen)
    set_train_mode(run.model, cfg["freeze_bn"])
    bar = tqdm(range(steps), desc=f"epoch {epoch + 1}/{cfg['epochs']}", disable=not progress, leave=False)
    for step in bar:
        for g in run.opt.param_groups:
            g["lr"] = lr_at(cfg, epoch + step / steps) * g.get("lr_scale", 1.0)
        loss, parts = batch_loss(run, perm[step * cfg["batch_size"] : (step + 1) * cfg["batch_size"]], stage)
        run.opt.zero_grad(set_to_none=True)
        loss.backward()
        run.opt.step()
        totals["loss"] += loss.detach()
        for k, v in parts.items():
            totals[k] += v
        if step % 20 == 0:
            bar.set_postfix(loss=f"{float(loss.detach()):.4f}")
    return totals


def validate(run: Run) -> dict[str, float]:
    """evaluate() on the validation faces; NaN without a validation split."""
    if not len(run.val_images):
        return {"nme": float("nan"), "nme_own": float("nan")}
    return evaluate(run.model, run.val_images, run.val_points, run.cfg, run.neighbors, run.dev)


def save_checkpoints(
    run: Run, out: Path, epoch: int, best: float, nme_now: float, averaged: dict[str, torch.Tensor]
) -> float:
    """Write out/last.pt, and out/best.pt when the validation NME improved (every epoch without a
    validation split: the last epoch is the best). Returns the best NME so far."""
    has_val = len(run.val_images) > 0
    state = {
        "model": run.model.state_dict(),
        "opt": run.opt.state_dict(),
        "epoch": epoch,
        "best": best,
        "rng": run.gen.get_state(),
        "torch_rng": global_rng_state(),
        "config": run.cfg,
        "meta": run.meta,
        "averaged": averaged,
        "fitted": run.fitted,
    }
    improved = nme_now < best or not has_val
    if improved:
        best = nme_now if has_val else best
        state["best"] = best
    # serialised once, through temporary files: a kill mid-write never leaves a broken checkpoint
    torch.save(state, out / "last.tmp")
    if improved:
        shutil.copyfile(out / "last.tmp", out / "best.tmp")
        os.replace(out / "best.tmp", out / "best.pt")
    os.replace(out / "last.tmp", out / "last.pt")
    return best


def global_rng_state() -> dict[str, Any]:
    """torch's global generators (the augmentation's pixel noise draws from them), CPU and CUDA."""
    return {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_global_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["cpu"])
    if state.get("cuda") is not None and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def epoch_line(
    run: Run,
    epoch: int,
    totals: dict[str, torch.Tensor],
    steps: int,
    ev: dict[str, float],
    secs: float,
    stage: int | None,
) -> dict[str, Any]:
    """An epoch's JSON log line: mean losses, validation NME, the next learning rate, time."""
    line = {
        "epoch": epoch + 1,
        **{k: round(float(v) / steps, 5) for k, v in totals.items()},
        **{k: round(v, 3) for k, v in ev.items()},
        "lr": round(lr_at(run.cfg, epoch + 1), 7),
        "sec": round(secs, 1),
        "img_per_s": round(steps * run.cfg["batch_size"] / secs, 1),
    }
    return line if stage is None else {**line, "stc_grid": stage}


def apply_time_budget(run: Run, out: Path, log: TextIO, epochs_done: int, epoch_seconds: float, elapsed: float) -> bool:
    """ "max_minutes": after the first epoch, fit the schedule to the budget at that epoch's time
    (fewer epochs, at least 2); later, True once the budget is spent with epochs left."""
    budget = run.cfg["max_minutes"]
    if not budget:
        return False
    fit = int(budget * 60 / max(epoch_seconds, 1e-3))
    if epochs_done == 1 and fit < run.cfg["epochs"]:
        run.cfg = dict(run.cfg, epochs=max(2, fit))
        run.fitted = True
        log.write(f"# time budget {budget} min: epochs set to {run.cfg['epochs']}\n")
        (out / "config.json").write_text(json.dumps(run.cfg, indent=2))
    if epochs_done < run.cfg["epochs"] and elapsed > budget * 60:
        log.write(f"# time budget {budget} min spent after epoch {epochs_done}\n")
        return True
    return False


def save_average(run: Run, averaged: dict[str, torch.Tensor], out: Path, epoch: int) -> float:
    """Load the mean of the last "average_last" epochs' weights (BatchNorm statistics averaged
    too) into the model, write it as out/averaged.pt; returns its validation NME."""
    run.model.load_state_dict(averaged)
    val_nme = validate(run)["nme"]
    torch.save(
        {"model": averaged, "epoch": epoch, "best": val_nme, "config": run.cfg, "meta": run.meta}, out / "averaged.pt"
    )
    return val_nme


def train(
    cfg: dict[str, Any],
    out: Path,
    resume: bool = False,
    device: str | None = None,
    progress: bool = True,
    pseudo: dict[str, np.ndarray] | None = None,
    compile_model: bool = False,
    stop_after: float | None = None,
) -> dict[str, Any]:
    """Train and return the final summary ("paused": True when stop_after ended it early);
    writes out/{log.txt, last.pt, best.pt, config.json} (and averaged.pt with "average_last").
    pseudo: pseudo-labeled faces {"images", "points"} in base-crop pixels, trained on after the
    labeled ones (STC). stop_after: minutes, after which the run stops at an epoch end with its
    schedule unchanged, for a later --resume."""
    out.mkdir(parents=True, exist_ok=True)
    if not resume and (out / "last.pt").exists():
        raise FileExistsError(
            f"{out} holds a run already (last.pt): resume it (--resume), or give another folder to start afresh"
        )
    with writer_lock(out):
        return train_stage(cfg, out, resume, device, progress, pseudo, compile_model, stop_after)


def train_stage(
    cfg: dict[str, Any],
    out: Path,
    resume: bool,
    device: str | None,
    progress: bool,
    pseudo: dict[str, np.ndarray] | None,
    compile_model: bool,
    stop_after: float | None,
) -> dict[str, Any]:
    """train's work, with the folder checked and locked."""
    dev = pick_device(device)
    seed_everything(cfg)
    resumed, init = starting_checkpoints(cfg, out / "last.pt", resume)
    if resumed is not None:
        check_resumable_config(resumed, cfg)  # before the crops are cut or loaded
    data = prepare(cfg, progress)
    if resumed or init:
        keep_neighbors(data, (resumed or init)["meta"])
    run = setup(cfg, data, pseudo, dev, progress, compile_model)
    start, best, averaged = 0, float("inf"), {}
    if init is not None:
        load_init(run.model, init["model"], progress)
    elif resumed is None and cfg["pretrained"]:
        load_imagenet(run.model, cfg["backbone"], cfg["pretrained_path"], progress)
    if resumed is not None:
        start, best, averaged = restore(run, resumed)
    (out / "config.json").write_text(json.dumps(run.cfg, indent=2))
    steps = max(1, len(run.batches.images) // cfg["batch_size"])
    summary: dict[str, Any] = {"epoch": start, "best_val_nme": best}
    epoch, t_start, paused = start, time.time(), False
    with open(out / "log.txt", "a") as log:
        log.write(
            f"# {time.ctime()} device={dev} train={int((~run.batches.is_pseudo).sum())}+"
            f"{int(run.batches.is_pseudo.sum())} val={len(run.val_images)} start={start}\n"
        )
        while epoch < run.cfg["epochs"]:
            t0 = time.time()
            stage = stc_stage(cfg["stc"], epoch, run.cfg["epochs"]) if cfg["stc"] else None
            totals = train_epoch(run, epoch, steps, stage, progress)
            ev = validate(run)
            secs = time.time() - t0
            line = epoch_line(run, epoch, totals, steps, ev, secs, stage)
            log.write(json.dumps(line) + "\n")
            log.flush()
            if progress:
                print(json.dumps(line), flush=True)
            avg_from = max(0, run.cfg["epochs"] - cfg["average_last"])
            if cfg["average_last"] and epoch >= avg_from:
                averaged = average_into(averaged, run.model.state_dict(), epoch - avg_from + 1)
            best = save_checkpoints(run, out, epoch, best, ev["nme"], averaged)
            summary = {"epoch": epoch + 1, "val_nme": ev["nme"], "best_val_nme": best}
            epoch += 1
            if apply_time_budget(run, out, log, epoch, secs, time.time() - t_start):
                break
            if stop_after is not None and epoch < run.cfg["epochs"] and time.time() - t_start > stop_after * 60:
                log.write(
                    f"# stopped after {stop_after:g} min at epoch {epoch} of {run.cfg['epochs']}; --resume goes on\n"
                )
                paused = True
                break
        if averaged and epoch == run.cfg["epochs"]:
            summary["averaged_val_nme"] = save_average(run, averaged, out, epoch - 1)
            record = {"averaged_last": cfg["average_last"], "nme": round(summary["averaged_val_nme"], 3)}
            log.write(json.dumps(record) + "\n")
    summary.update(epochs=run.cfg["epochs"], paused=paused)
    return summary


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m export.train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--config", help="JSON config (keys as export.config.DEFAULTS)")
    ap.add_argument("--out", required=True, help="run folder: log.txt, last.pt, best.pt")
    ap.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    ap.add_argument("--device", help="cpu or cuda (default: cuda if available)")
    ap.add_argument("--epochs", type=int, help="override the config's epochs")
    ap.add_argument("--limit", type=int, help="use at most this many faces per folder (smoke runs)")
    ap.add_argument("--batch-size", dest="batch_size", type=int, help="override the config's batch size")
    ap.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    ap.add_argument(
        "--stop-after",
        dest="stop_after",
        type=float,
        metavar="MINUTES",
        help="stop at the first epoch end after this many minutes, keeping the schedule (--resume goes on)",
    )
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    a = ap.parse_args(argv)
    if a.stop_after is not None and a.stop_after <= 0:
        ap.error("--stop-after must be positive")
    cfg = load_config(
        a.config, {"epochs": a.epochs, "limit": a.limit, "batch_size": a.batch_size, "threads": a.threads}
    )
    check_files(cfg, a.config or "config")
    print(json.dumps(train(cfg, Path(a.out), a.resume, a.device, not a.quiet, stop_after=a.stop_after)))


if __name__ == "__main__":
    main()
