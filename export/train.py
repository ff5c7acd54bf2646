"""Train a PIPNet model: `python -m export.train --config export/configs/pipnet-fast.json`.

Steps: read labeled faces (300W-style folders), find the SDK detector's box for each face,
cut 'base crops' around the SDK crop square (cached), compute the mean face and neighbour
indices, then train with batch augmentation in torch (bf16 autocast + channels_last), a
validation NME per epoch, a log file, a checkpoint every epoch (resume with --resume), and
optionally self-training with curriculum (STC) on unlabeled faces (see export/stc.py).

"teacher": a checkpoint of a bigger model with the same map grid (pipnet-r18: 256 px, stride 32,
for pipnet-fast: 128 px, stride 16). Each batch is then cut at the teacher's size from its own
base crops and area-downscaled for the student, and the loss becomes
(1 - distill_weight) * the paper's loss + distill_weight * targets.distill_loss.

"pseudo_labels": {"teacher": an exported .onnx, "flip_test": true, "test_crops": 3}: the teacher
labels the unlabeled faces (LFW) through the SDK with test-time averaging, and those faces join
the labeled ones with the full loss (export/stc.py, onnx_pseudo_labels). "clean_unlabeled" (on by
default) inpaints the green marks drawn on the shared LFW images first (export/marks.py).
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from .augment import AugmentConfig, augment
from .data import (base_crops, cache_key, detector_boxes, mean_face, neighbor_indices,
                   read_pts_folder, shared_dir, split_validation)
from .decode import decode, nme
from .model import PIPNet
from .pack import load_cache
from .schemes import get_scheme
from .targets import coarse_loss, distill_loss, make_targets, pip_loss

DEFAULTS: dict[str, Any] = {
    "name": "pipnet", "version": "0.1.0", "scheme": "ibug68",
    "backbone": "resnet18", "width": 1.0, "blocks": None, "stride": 16, "input_size": 128, "num_neighbors": 10,
    "labeled": ["data/300w/train", "data/ytf68/train"], "val_from": "data/300w/train",
    "val_fraction": 0.1, "limit": None,
    "detector": "models/yunet_n_dynamic.onnx",
    "crop": {"scale": 1.2, "shift_y": 0.12}, "base_size": 192, "margin": 1.5,
    "epochs": 60, "batch_size": 32, "optimizer": "adamw", "lr": 2e-3, "weight_decay": 1e-4,
    "schedule": "cosine", "milestones": [30, 50], "warmup_epochs": 1,
    "score_weight": 10.0, "offset_weight": 1.0,
    "teacher": None, "distill_weight": 0.5, "pseudo_labels": None, "clean_unlabeled": True,
    "augment": {}, "seed": 0, "bf16": True, "threads": None,
    "stc": None, "max_minutes": None, "init": None, "restarts": [], "average_last": 0,
}
MEAN = (0.485, 0.456, 0.406)  # ImageNet statistics, RGB, on 0-1 values
STD = (0.229, 0.224, 0.225)


def load_config(path: str | None, overrides: dict[str, Any]) -> dict[str, Any]:
    cfg = copy.deepcopy(DEFAULTS)
    if path:
        cfg.update(json.loads(Path(path).read_text()))
    cfg.update({k: v for k, v in overrides.items() if v is not None})
    unknown = set(cfg) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown config keys {sorted(unknown)}")
    return cfg


def data_path(p: str) -> Path:
    return Path(p) if os.path.isabs(p) else shared_dir() / p


def cache_dir() -> Path:
    d = Path(os.environ.get("PIPNET_CACHE", Path(__file__).resolve().parents[1] / ".cache"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def crops_cache_path(cfg: dict[str, Any]) -> Path:
    """Where prepare() keeps the base crops of this config."""
    key = cache_key(cfg["labeled"], cfg["val_from"], cfg["val_fraction"], cfg["limit"], cfg["detector"],
                    cfg["crop"], cfg["base_size"], cfg["margin"], cfg["seed"], 2)
    return cache_dir() / f"crops-{key}.npz"


def prepare(cfg: dict[str, Any], progress: bool = True) -> dict[str, Any]:
    """Base crops and points for train and validation, plus mean face and neighbours (cached)."""
    path = crops_cache_path(cfg)
    d = load_cache(path)
    if d is None:
        train, val = [], []
        for folder in cfg["labeled"]:
            samples = read_pts_folder(data_path(folder))
            if cfg["limit"]:
                samples = samples[: cfg["limit"]]
            if folder == cfg["val_from"]:
                t, v = split_validation(samples, cfg["val_fraction"], cfg["seed"])
                train += t
                val += v
            else:
                train += samples
        d = {}
        for part, samples in (("train", train), ("val", val)):
            boxes, found, _ = detector_boxes(samples, data_path(cfg["detector"]), progress=progress)
            imgs, pts = base_crops(samples, boxes, cfg["crop"]["scale"], cfg["crop"]["shift_y"],
                                   cfg["base_size"], cfg["margin"], progress, f"base crops ({part})")
            d[f"{part}_images"], d[f"{part}_points"], d[f"{part}_found"] = imgs, pts, found
        np.savez(path, **d)
    r, m = cfg["base_size"], cfg["margin"]
    norm = (d["train_points"] - (r - 1) / 2) / (r / m) + 0.5  # normalised to the un-jittered crop
    mean = mean_face(norm)
    d["mean_face"] = mean
    d["neighbors"] = neighbor_indices(mean, cfg["num_neighbors"])
    return d


def build_model(cfg: dict[str, Any], coarse: tuple[int, ...] = ()) -> PIPNet:
    n = get_scheme(cfg["scheme"]).num_points
    return PIPNet(n, cfg["num_neighbors"], cfg["backbone"], cfg["stride"], cfg["width"], coarse, cfg["blocks"])


def load_init(model: PIPNet, weights: dict[str, torch.Tensor], progress: bool) -> None:
    """Start from another run's weights. Every layer of the model must be there; layers the model
    no longer has (residual blocks taken out with "blocks", STC's coarse heads) are left out."""
    own = model.state_dict()
    weights = {k: v for k, v in weights.items() if not k.startswith("coarse.")}  # STC heads never carry over
    missing = [k for k in own if k not in weights and not k.startswith("coarse.")]
    if missing:
        raise ValueError(f"the init weights lack {len(missing)} of the model's tensors, e.g. {missing[:3]}")
    dropped = sorted({k.rsplit(".", 2)[0] for k in weights if k not in own})
    if dropped and progress:
        print(f"init: leaving out {', '.join(dropped)}")
    model.load_state_dict({k: v for k, v in weights.items() if k in own}, strict=False)


def load_checkpoint(path: str | Path) -> tuple[PIPNet, dict[str, Any], dict[str, Any]]:
    """A run's checkpoint -> (model in eval mode on the CPU, its config, its meta)."""
    ck = torch.load(path, map_location="cpu", weights_only=False)
    cfg = load_config(None, ck["config"])
    model = build_model(cfg)
    model.load_state_dict({k: v for k, v in ck["model"].items() if not k.startswith("coarse.")})
    return model.eval(), cfg, ck["meta"]


def load_teacher(cfg: dict[str, Any], data: dict[str, Any], progress: bool
                 ) -> tuple[PIPNet, dict[str, Any], torch.Tensor, torch.Tensor]:
    """The distillation teacher of cfg and its base crops of the student's training faces."""
    teacher, t_cfg, t_meta = load_checkpoint(cfg["teacher"])
    if t_cfg["input_size"] % cfg["input_size"] or grid_of(t_cfg) != grid_of(cfg):
        raise ValueError("the teacher needs an input size that is a multiple of the student's and the same map grid")
    if not np.array_equal(np.asarray(t_meta["neighbor_indices"]), data["neighbors"]):
        raise ValueError("the teacher's neighbour indices differ from the student's: its neighbour offsets "
                         "would supervise other landmarks")
    t_data = prepare(dict(cfg, base_size=t_cfg["base_size"], margin=t_cfg["margin"]), progress)
    if len(t_data["train_images"]) != len(data["train_images"]):
        raise ValueError("distillation needs the teacher's crops of exactly the student's labeled faces")
    t_img = torch.from_numpy(t_data["train_images"]).permute(0, 3, 1, 2).contiguous()
    return teacher, t_cfg, t_img, torch.from_numpy(t_data["train_points"])


def grid_of(cfg: dict[str, Any]) -> int:
    return cfg["input_size"] // cfg["stride"]


def normalize(x: torch.Tensor) -> torch.Tensor:
    """0-1 BGR crops -> the network's input (RGB, ImageNet mean/std)."""
    x = x.flip(1)
    mean = torch.tensor(MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def lr_at(cfg: dict[str, Any], epoch: float) -> float:
    base, total, warm = cfg["lr"], cfg["epochs"], cfg["warmup_epochs"]
    if epoch < warm:
        return base * (epoch + 1e-3) / warm
    if cfg["schedule"] == "cosine":
        return base * 0.5 * (1 + math.cos(math.pi * min(1.0, epoch / total)))
    return base * 0.1 ** sum(epoch >= m for m in cfg["milestones"])


def autocast(device: torch.device, enabled: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


@torch.no_grad()
def evaluate(model: PIPNet, images: torch.Tensor, points: torch.Tensor, cfg: dict[str, Any],
             neighbors: torch.Tensor, device: torch.device, batch: int = 64) -> dict[str, float]:
    """Validation NME (inter-ocular for 68 points) on un-jittered crops, with and without
    neighbour averaging."""
    model.eval()
    scheme = get_scheme(cfg["scheme"])
    flip = torch.tensor(scheme.flip, device=device)
    errs, errs_own = [], []
    for i in range(0, len(images), batch):
        im = images[i:i + batch].to(device)
        x, p = augment(im, points[i:i + batch].to(device), cfg["input_size"], cfg["margin"], flip,
                       AugmentConfig(), train=False)
        x = normalize(x).contiguous(memory_format=torch.channels_last)
        with autocast(device, cfg["bf16"]):
            out = model(x)
        errs.append(nme(decode(out, neighbors), p, scheme.norm))
        errs_own.append(nme(decode(out, neighbors, use_neighbors=False), p, scheme.norm))
    model.train()
    return {"nme": float(torch.cat(errs).mean()) * 100, "nme_own": float(torch.cat(errs_own).mean()) * 100}


def train(cfg: dict[str, Any], out: Path, resume: bool = False, device: str | None = None,
          progress: bool = True, pseudo: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """Train and return the final summary; writes out/{log.txt, last.pt, best.pt, config.json}."""
    out.mkdir(parents=True, exist_ok=True)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if cfg["threads"]:
        torch.set_num_threads(cfg["threads"])
    torch.manual_seed(cfg["seed"])
    random.seed(cfg["seed"])
    np.random.seed(cfg["seed"])
    data = prepare(cfg, progress)
    last, log_path = out / "last.pt", out / "log.txt"
    resumed = torch.load(last, map_location=dev, weights_only=False) if resume and last.exists() else None
    init = (torch.load(cfg["init"], map_location=dev, weights_only=False)  # fine-tune from another run
            if cfg["init"] and resumed is None else None)
    if resumed or init:
        # the neighbour heads are tied to the weights' neighbour indices: keep those (and the mean
        # face) even when this run's data would give others
        meta = (resumed or init)["meta"]
        data["mean_face"] = np.asarray(meta["mean_face"], np.float32)
        data["neighbors"] = np.asarray(meta["neighbor_indices"], np.int64)
    scheme = get_scheme(cfg["scheme"])
    stc = cfg["stc"]
    coarse = tuple(stc["grids"]) if stc else ()
    model = build_model(cfg, coarse).to(dev).to(memory_format=torch.channels_last)
    params = model.parameters()
    opt = (torch.optim.AdamW(params, lr=cfg["lr"], weight_decay=cfg["weight_decay"]) if cfg["optimizer"] == "adamw"
           else torch.optim.Adam(params, lr=cfg["lr"], weight_decay=cfg["weight_decay"]))
    tr_img = torch.from_numpy(data["train_images"]).permute(0, 3, 1, 2).contiguous()
    tr_pts = torch.from_numpy(data["train_points"])
    n_lab = len(tr_img)
    if pseudo is None and cfg["pseudo_labels"]:
        from .stc import onnx_pseudo_labels  # stc builds on this module

        pseudo = onnx_pseudo_labels(cfg, progress)
    if pseudo is not None:  # unlabeled faces with pseudo-labels, appended after the labeled ones
        tr_img = torch.cat([tr_img, torch.from_numpy(pseudo["images"]).permute(0, 3, 1, 2)])
        tr_pts = torch.cat([tr_pts, torch.from_numpy(pseudo["points"])])
    is_pseudo = torch.arange(len(tr_img)) >= n_lab
    # what batches are cut from: the student's base crops, or with a teacher the teacher's (at its
    # size; the student gets them area-downscaled)
    src_img, src_pts, src_size, src_margin = tr_img, tr_pts, cfg["input_size"], cfg["margin"]
    teacher = None
    if cfg["teacher"]:
        if pseudo is not None:
            raise ValueError("distillation ('teacher') and pseudo-labeled faces (STC) do not combine")
        teacher, t_cfg, src_img, src_pts = load_teacher(cfg, data, progress)
        teacher = teacher.to(dev).to(memory_format=torch.channels_last)
        src_size, src_margin = t_cfg["input_size"], t_cfg["margin"]
    if dev.type == "cuda":
        src_img, src_pts = src_img.to(dev), src_pts.to(dev)
    va_img = torch.from_numpy(data["val_images"]).permute(0, 3, 1, 2).contiguous()
    va_pts = torch.from_numpy(data["val_points"])
    nbr = torch.from_numpy(data["neighbors"]).to(dev)
    flip = torch.tensor(scheme.flip, device=dev)
    aug = AugmentConfig(**cfg["augment"])
    grid = grid_of(cfg)
    start, best = 0, float("inf")
    averaged: dict[str, torch.Tensor] = {}  # running mean of the weights over the last epochs
    gen = torch.Generator().manual_seed(cfg["seed"])
    if init is not None:
        load_init(model, init["model"], progress)
    if resumed is not None:
        model.load_state_dict(resumed["model"])
        opt.load_state_dict(resumed["opt"])
        start, best = resumed["epoch"] + 1, resumed["best"]
        gen.set_state(resumed["rng"])
        averaged = resumed.get("averaged", {})
    (out / "config.json").write_text(json.dumps(cfg, indent=2))
    meta = {"mean_face": data["mean_face"].tolist(), "neighbor_indices": data["neighbors"].tolist()}
    steps = max(1, len(tr_img) // cfg["batch_size"])
    log = open(log_path, "a")
    log.write(f"# {time.ctime()} device={dev} train={n_lab}+{int(is_pseudo.sum())} val={len(va_img)} start={start}\n")
    summary: dict[str, Any] = {}
    epoch = start
    while epoch < cfg["epochs"]:
        t0 = time.time()
        totals = {k: torch.zeros((), device=dev) for k in ("loss", "score", "offset", "neighbor")}
        stage = stc_stage(stc, epoch, cfg["epochs"]) if stc else None
        perm = torch.randperm(len(tr_img), generator=gen)
        bar = tqdm(range(steps), desc=f"epoch {epoch + 1}/{cfg['epochs']}", disable=not progress, leave=False)
        for step in bar:
            for g in opt.param_groups:
                g["lr"] = lr_at(cfg, epoch + step / steps)
            idx = perm[step * cfg["batch_size"]:(step + 1) * cfg["batch_size"]]
            im, pt = src_img[idx.to(src_img.device)].to(dev), src_pts[idx.to(src_pts.device)].to(dev)
            x, p = augment(im, pt, src_size, src_margin, flip, aug, gen)
            if teacher is not None:
                with torch.no_grad(), autocast(dev, cfg["bf16"]):
                    t_heads = teacher(normalize(x).contiguous(memory_format=torch.channels_last))
                x = F.avg_pool2d(x, src_size // cfg["input_size"])
            x = normalize(x).contiguous(memory_format=torch.channels_last)
            pseudo_mask = is_pseudo[idx].to(dev)
            with autocast(dev, cfg["bf16"]):
                heads, coarse_maps = model.forward_train(x)
            targets = make_targets(p, grid, nbr)
            # STC: pseudo-labeled faces get full-map supervision only in the last stage
            full_w = (~pseudo_mask | (stage == 0)).float() if stage is not None else None
            loss, parts = pip_loss(heads, targets, cfg["num_neighbors"], cfg["score_weight"], cfg["offset_weight"], full_w)
            if teacher is not None:
                a = cfg["distill_weight"]
                loss = (1 - a) * loss + a * distill_loss(heads, t_heads, cfg["num_neighbors"], cfg["score_weight"])
            if coarse_maps:
                used = {g: m for g, m in coarse_maps.items() if stage == 0 or g <= stage}
                loss = loss + coarse_loss(used, p, torch.ones(len(p), device=dev), cfg["score_weight"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            totals["loss"] += loss.detach()
            for k, v in parts.items():
                totals[k] += v
            if step % 20 == 0:
                bar.set_postfix(loss=f"{float(loss.detach()):.4f}")
        ev = evaluate(model, va_img, va_pts, cfg, nbr, dev) if len(va_img) else {"nme": float("nan"), "nme_own": float("nan")}
        secs = time.time() - t0
        line = {"epoch": epoch + 1, **{k: round(float(v) / steps, 5) for k, v in totals.items()}, **{k: round(v, 3) for k, v in ev.items()},
                "lr": round(lr_at(cfg, epoch + 1), 7), "sec": round(secs, 1), "img_per_s": round(steps * cfg["batch_size"] / secs, 1)}
        if stage is not None:
            line["stc_grid"] = stage
        log.write(json.dumps(line) + "\n")
        log.flush()
        if progress:
            print(json.dumps(line), flush=True)
        avg_from = max(0, cfg["epochs"] - cfg["average_last"])
        if cfg["average_last"] and epoch >= avg_from:
            averaged = average_into(averaged, model.state_dict(), epoch - avg_from + 1)
        state = {"model": model.state_dict(), "opt": opt.state_dict(), "epoch": epoch, "best": best,
                 "rng": gen.get_state(), "config": cfg, "meta": meta, "averaged": averaged}
        if ev["nme"] < best or not len(va_img):  # without a validation split the last epoch is the best
            best = ev["nme"] if len(va_img) else best
            state["best"] = best
            torch.save(state, out / "best.pt")
        torch.save(state, out / "last.tmp")
        os.replace(out / "last.tmp", last)
        summary = {"epoch": epoch + 1, "val_nme": ev["nme"], "best_val_nme": best}
        if cfg["max_minutes"] and epoch == start:
            # fit the schedule into the time budget, measured on the first epoch
            fit = int(cfg["max_minutes"] * 60 / max(secs, 1e-3))
            if fit < cfg["epochs"]:
                cfg = dict(cfg, epochs=max(start + 2, fit))
                log.write(f"# time budget {cfg['max_minutes']} min: epochs set to {cfg['epochs']}\n")
                (out / "config.json").write_text(json.dumps(cfg, indent=2))
        epoch += 1
    if averaged and epoch == cfg["epochs"]:
        # the mean of the last `average_last` epochs' weights (BatchNorm statistics averaged too)
        model.load_state_dict(averaged)
        ev = evaluate(model, va_img, va_pts, cfg, nbr, dev) if len(va_img) else {"nme": float("nan")}
        torch.save({"model": averaged, "epoch": epoch - 1, "best": ev["nme"], "config": cfg, "meta": meta},
                   out / "averaged.pt")
        log.write(json.dumps({"averaged_last": cfg["average_last"], "nme": round(ev["nme"], 3)}) + "\n")
        summary["averaged_val_nme"] = ev["nme"]
    log.close()
    return summary


def average_into(mean: dict[str, torch.Tensor], state: dict[str, torch.Tensor], k: int) -> dict[str, torch.Tensor]:
    """Running mean: the k-th state joins the mean of the k - 1 before it (integer buffers: latest)."""
    out = {}
    for name, v in state.items():
        v = v.detach().clone()
        out[name] = mean[name] + (v - mean[name]) / k if k > 1 and v.is_floating_point() else v
    return out


def stc_stage(stc: dict[str, Any], epoch: int, epochs: int) -> int:
    """Curriculum: the coarse grid whose stage this epoch is in (e.g. 2, then 4), 0 = full maps."""
    grids = list(stc["grids"])
    per = epochs / (len(grids) + 1)
    k = int(epoch // per)
    return grids[k] if k < len(grids) else 0


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m export.train", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", help="JSON config (keys as export.train.DEFAULTS)")
    ap.add_argument("--out", required=True, help="run folder: log.txt, last.pt, best.pt")
    ap.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    ap.add_argument("--device", help="cpu or cuda (default: cuda if available)")
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--limit", type=int, help="use at most this many faces per folder (smoke runs)")
    ap.add_argument("--batch-size", dest="batch_size", type=int)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args(argv)
    cfg = load_config(a.config, {"epochs": a.epochs, "limit": a.limit, "batch_size": a.batch_size, "threads": a.threads})
    print(json.dumps(train(cfg, Path(a.out), a.resume, a.device, not a.quiet)))


if __name__ == "__main__":
    main()
