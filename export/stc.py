"""Self-training with curriculum (STC): pseudo-label unlabeled faces with a trained teacher,
then train a student on labeled + pseudo-labeled faces, supervising the pseudo-labels first on
coarse score maps (2x2, then 4x4) and only in the last stage on the full maps with offsets.

    python -m export.stc --config export/configs/pipnet-r18.json --teacher runs/r18/best.pt \
        --out runs/r18-stc [--rounds 1]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from .augment import AugmentConfig, augment
from .data import Sample, base_crops, cache_key, read_image_folder
from .decode import decode
from .marks import cleaned_copy
from .pack import load_cache
from .schemes import get_scheme
from .train import autocast, cache_dir, data_path, load_checkpoint, load_config, normalize, train

DEFAULT_UNLABELED = "data/unlabeled/lfw"


def unlabeled_boxes(cfg: dict[str, Any], folder: str, progress: bool = True) -> tuple[list[Sample], np.ndarray]:
    """The SDK detector's most central confident face in each unlabeled image (cached, so that
    crops of any size cut the same faces): the images with a face and those boxes (M, 4)."""
    from pipnet_sdk.detect import YuNet
    import cv2

    samples = read_image_folder(data_path(folder))
    if cfg["limit"]:
        samples = samples[: cfg["limit"]]
    if cfg["clean_unlabeled"]:
        out = cache_dir() / f"clean-{cache_key(folder, len(samples), 1)}"
        samples = [Sample(p, None) for p in cleaned_copy([s.image for s in samples], out, progress)]
    path = cache_dir() / f"boxes-unlabeled-{cache_key(folder, cfg['detector'], cfg['limit'], cfg['clean_unlabeled'], 1)}.npz"
    if path.exists():
        d = np.load(path)
        return [samples[i] for i in d["keep"]], d["boxes"]
    det = YuNet(data_path(cfg["detector"]), score_threshold=0.5, upscale=True)
    keep, boxes = [], []
    for i, s in enumerate(tqdm(samples, desc="detector boxes (unlabeled)", disable=not progress)):
        img = cv2.imread(s.image)
        b, _ = det.detect(img) if img is not None else (np.zeros((0, 4)), np.zeros(0))
        if len(b):  # the most central confident face (LFW images are centred on one person)
            c = (b[:, :2] + b[:, 2:]) / 2 - np.array(img.shape[1::-1]) / 2
            keep.append(i)
            boxes.append(b[np.argmin((c**2).sum(1))])
    box_array = np.array(boxes, np.float32).reshape(-1, 4)
    np.savez(path, keep=np.array(keep, np.int64), boxes=box_array)
    return [samples[i] for i in keep], box_array


def unlabeled_crops(cfg: dict[str, Any], folder: str, progress: bool = True) -> np.ndarray:
    """Base crops of the unlabeled faces (cached), around unlabeled_boxes()."""
    key = cache_key(folder, cfg["detector"], cfg["crop"], cfg["base_size"], cfg["margin"], cfg["limit"],
                    cfg["clean_unlabeled"], 1)
    path = cache_dir() / f"unlabeled-{key}.npz"
    cached = load_cache(path)
    if cached is not None:
        return cached["images"]
    samples, boxes = unlabeled_boxes(cfg, folder, progress)
    images, _ = base_crops(samples, boxes, cfg["crop"]["scale"], cfg["crop"]["shift_y"],
                           cfg["base_size"], cfg["margin"], progress, "base crops (unlabeled)")
    np.savez(path, images=images)
    return images


@torch.no_grad()
def pseudo_label(model: torch.nn.Module, cfg: dict[str, Any], images: np.ndarray, neighbors: np.ndarray,
                 device: torch.device, batch: int = 128) -> np.ndarray:
    """Teacher predictions on un-jittered crops (cfg: the teacher's), normalised to the crop
    square (M, N, 2)."""
    model.eval().to(device)
    n = get_scheme(cfg["scheme"]).num_points
    flip = torch.tensor(get_scheme(cfg["scheme"]).flip, device=device)
    nb = torch.from_numpy(np.asarray(neighbors)).to(device)
    out = []
    for i in range(0, len(images), batch):
        im = torch.from_numpy(images[i:i + batch]).permute(0, 3, 1, 2).to(device)
        dummy = torch.zeros(len(im), n, 2, device=device)
        x, _ = augment(im, dummy, cfg["input_size"], cfg["margin"], flip, AugmentConfig(), train=False)
        with autocast(device, cfg["bf16"]):
            heads = model(normalize(x).contiguous(memory_format=torch.channels_last))
        out.append(decode(heads, nb).float().cpu().numpy())
    return np.concatenate(out).astype(np.float32)


def pseudo_label_settings(cfg: dict[str, Any]) -> dict[str, Any] | None:
    """cfg["pseudo_labels"] with its defaults filled in; None when the config has none."""
    if not cfg["pseudo_labels"]:
        return None
    return {"flip_test": False, "test_crops": 1, "unlabeled": DEFAULT_UNLABELED, **cfg["pseudo_labels"]}


def onnx_pseudo_labels(cfg: dict[str, Any], progress: bool = True) -> dict[str, np.ndarray]:
    """cfg["pseudo_labels"] = {"teacher": an exported model (.onnx), "flip_test", "test_crops",
    "unlabeled"}: the teacher labels the unlabeled faces through the SDK, with its test-time
    averaging, on its own crops of the detector's boxes; returns the student's base crops of those
    faces and the labels in their pixels (cached), for train(pseudo=...)."""
    from pipnet_sdk.hub import sha256_file
    from pipnet_sdk.landmark_model import LandmarkModel
    import cv2

    pl = pseudo_label_settings(cfg)
    teacher = Path(pl["teacher"])
    teacher = teacher if teacher.is_absolute() else Path(__file__).resolve().parents[1] / teacher
    if not teacher.is_file():
        raise FileNotFoundError(f"pseudo_labels teacher {teacher} not found: export it first, e.g. "
                                f"python -m export.to_onnx runs/r18/restart2/best.pt --out {pl['teacher']} --int8-only")
    samples, boxes = unlabeled_boxes(cfg, pl["unlabeled"], progress)
    key = cache_key(pl, sha256_file(teacher), cfg["detector"], cfg["crop"],
                    cfg["base_size"], cfg["margin"], cfg["limit"], cfg["clean_unlabeled"], 1)
    path = cache_dir() / f"pseudo-{key}.npz"
    if path.exists():
        d = np.load(path)
        return {"images": d["images"], "points": d["points"]}
    model = LandmarkModel(teacher, flip_test=pl["flip_test"], test_crops=pl["test_crops"])
    squares = model.squares(boxes)
    labeled = []
    for s, sq in zip(tqdm(samples, desc="pseudo-labels", disable=not progress), squares):
        points, _ = model.run_squares(cv2.imread(s.image), sq[None])
        labeled.append(Sample(s.image, points[0]))
    images, points = base_crops(labeled, boxes, cfg["crop"]["scale"], cfg["crop"]["shift_y"], cfg["base_size"],
                                cfg["margin"], progress, "base crops (pseudo-labeled)")
    np.savez(path, images=images, points=points)
    return {"images": images, "points": points}


def to_base_pixels(points_norm: np.ndarray, cfg: dict[str, Any]) -> np.ndarray:
    """Points normalised to the crop square -> pixels of cfg's base crops."""
    r, m = cfg["base_size"], cfg["margin"]
    return ((points_norm - 0.5) * (r / m) + (r - 1) / 2).astype(np.float32)


def run(cfg: dict[str, Any], teacher: Path, out: Path, rounds: int = 1, unlabeled: str = DEFAULT_UNLABELED,
        device: str | None = None, progress: bool = True, resume: bool = False) -> dict[str, Any]:
    """STC rounds: each round's student becomes the next round's teacher. The first teacher
    may be another model (e.g. pipnet-r18 teaching pipnet-fast): it labels the unlabeled faces
    at its own input size, cut with its own crop settings."""
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    images = unlabeled_crops(cfg, unlabeled, progress)
    cfg = dict(cfg, stc=cfg["stc"] or {"grids": [2, 4]})
    summary: dict[str, Any] = {}
    for k in range(rounds):
        model, t_cfg, t_meta = load_checkpoint(teacher)
        if t_cfg["crop"] != cfg["crop"]:
            raise ValueError("teacher and student must share the crop rule")
        # the teacher sees the student's faces (same detector and limit), cut at its own size
        t_images = images if (t_cfg["base_size"], t_cfg["margin"]) == (cfg["base_size"], cfg["margin"]) \
            else unlabeled_crops(dict(t_cfg, detector=cfg["detector"], limit=cfg["limit"]), unlabeled, progress)
        points = to_base_pixels(pseudo_label(model.to(memory_format=torch.channels_last), t_cfg, t_images,
                                             np.array(t_meta["neighbor_indices"]), dev), cfg)
        round_out = out / f"round{k + 1}"
        summary = train(cfg, round_out, resume, device, progress, pseudo={"images": images, "points": points})
        summary["round"] = k + 1
        teacher = round_out / "best.pt"
    return summary


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m export.stc", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", help="student config (JSON, keys as export.train.DEFAULTS)")
    ap.add_argument("--teacher", required=True, help="checkpoint of a trained model (best.pt)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--unlabeled", default=DEFAULT_UNLABELED, help="folder of unlabeled face images")
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--limit", type=int)
    ap.add_argument("--device")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args(argv)
    cfg = load_config(a.config, {"epochs": a.epochs, "limit": a.limit})
    print(json.dumps(run(cfg, Path(a.teacher), Path(a.out), a.rounds, a.unlabeled, a.device, not a.quiet, a.resume)))


if __name__ == "__main__":
    main()
