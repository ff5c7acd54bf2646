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

from .checkpoint import load_checkpoint
from .config import load_config
from .pseudo import DEFAULT_UNLABELED, pseudo_label, to_base_pixels, unlabeled_crops
from .train import pick_device, train


def run(
    cfg: dict[str, Any],
    teacher: Path,
    out: Path,
    rounds: int = 1,
    unlabeled: str = DEFAULT_UNLABELED,
    device: str | None = None,
    progress: bool = True,
    resume: bool = False,
) -> dict[str, Any]:
    """STC rounds: each round's student becomes the next round's teacher. The first teacher
    may be another model (e.g. pipnet-r18 teaching pipnet-fast): it labels the unlabeled faces
    at its own input size, cut with its own crop settings."""
    dev = pick_device(device)
    images = unlabeled_crops(cfg, unlabeled, progress)
    cfg = dict(cfg, stc=cfg["stc"] or {"grids": [2, 4]})
    summary: dict[str, Any] = {}
    for k in range(rounds):
        model, t_cfg, t_meta = load_checkpoint(teacher)
        if t_cfg["crop"] != cfg["crop"]:
            raise ValueError("teacher and student must share the crop rule")
        # the teacher sees the student's faces (same detector and limit), cut at its own size
        t_images = (
            images
            if (t_cfg["base_size"], t_cfg["margin"]) == (cfg["base_size"], cfg["margin"])
            else unlabeled_crops(dict(t_cfg, detector=cfg["detector"], limit=cfg["limit"]), unlabeled, progress)
        )
        points = to_base_pixels(
            pseudo_label(
                model.to(memory_format=torch.channels_last), t_cfg, t_images, np.array(t_meta["neighbor_indices"]), dev
            ),
            cfg,
        )
        round_out = out / f"round{k + 1}"
        summary = train(cfg, round_out, resume, device, progress, pseudo={"images": images, "points": points})
        summary["round"] = k + 1
        teacher = round_out / "best.pt"
    return summary


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m export.stc", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--config", help="student config (JSON, keys as export.config.DEFAULTS)")
    ap.add_argument("--teacher", required=True, help="checkpoint of a trained model (best.pt)")
    ap.add_argument("--out", required=True, help="run folder (one subfolder per round)")
    ap.add_argument("--rounds", type=int, default=1, help="STC rounds; each student teaches the next (1)")
    ap.add_argument("--unlabeled", default=DEFAULT_UNLABELED, help="folder of unlabeled face images")
    ap.add_argument("--epochs", type=int, help="override the config's epochs")
    ap.add_argument("--limit", type=int, help="faces per folder (smoke runs)")
    ap.add_argument("--device", help="cpu or cuda (default: cuda if available)")
    ap.add_argument("--resume", action="store_true", help="continue from the last finished epoch")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    a = ap.parse_args(argv)
    cfg = load_config(a.config, {"epochs": a.epochs, "limit": a.limit})
    print(json.dumps(run(cfg, Path(a.teacher), Path(a.out), a.rounds, a.unlabeled, a.device, not a.quiet, a.resume)))


if __name__ == "__main__":
    main()
