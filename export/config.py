"""A training config: its keys and defaults (DEFAULTS), reading one (load_config), and the model
it describes (build_model). export/README.md explains the keys."""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from .model import PIPNet
from .schemes import get_scheme

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


def load_config(path: str | Path | None, overrides: dict[str, Any]) -> dict[str, Any]:
    """DEFAULTS, updated by the JSON file at path, then by the overrides that are not None."""
    cfg = copy.deepcopy(DEFAULTS)
    if path:
        cfg.update(json.loads(Path(path).read_text()))
    cfg.update({k: v for k, v in overrides.items() if v is not None})
    unknown = set(cfg) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown config keys {sorted(unknown)}")
    return cfg


def build_model(cfg: dict[str, Any], coarse: tuple[int, ...] = ()) -> PIPNet:
    """The untrained network of cfg; coarse: STC's extra score-map grids."""
    n = get_scheme(cfg["scheme"]).num_points
    return PIPNet(n, cfg["num_neighbors"], cfg["backbone"], cfg["stride"], cfg["width"], coarse, cfg["blocks"])


def grid_of(cfg: dict[str, Any]) -> int:
    """Side of the network's score maps, in cells."""
    return cfg["input_size"] // cfg["stride"]
