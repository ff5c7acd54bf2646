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
    "name": "pipnet",
    "version": "0.1.0",
    "scheme": "ibug68",
    "backbone": "resnet18",
    "width": 1.0,
    "blocks": None,
    "stride": 16,
    "input_size": 128,
    "num_neighbors": 10,
    "labeled": ["data/300w/train", "data/ytf68/train"],
    "val_from": "data/300w/train",
    "val_fraction": 0.1,
    "limit": None,
    "detector": "models/yunet_n_dynamic.onnx",
    "crop": {"scale": 1.2, "shift_y": 0.12},
    "base_size": 192,
    "margin": 1.5,
    "epochs": 60,
    "batch_size": 32,
    "optimizer": "adamw",
    "lr": 2e-3,
    "weight_decay": 1e-4,
    "schedule": "cosine",
    "milestones": [30, 50],
    "warmup_epochs": 1,
    "score_weight": 10.0,
    "offset_weight": 1.0,
    "visibility_weight": 0.0,
    "visibility_cell": "truth",
    "visibility_detach": False,
    "teacher": None,
    "distill_weight": 0.5,
    "pseudo_labels": None,
    "clean_unlabeled": True,
    "augment": {},
    "seed": 0,
    "bf16": True,
    "threads": None,
    "stc": None,
    "max_minutes": None,
    "init": None,
    "pretrained": None,
    "pretrained_path": None,
    "trunk_lr_scale": 1.0,
    "freeze_bn": False,
    "visibility_lr_scale": 1.0,
    "restarts": [],
    "average_last": 0,
}


#: the keys of the config's sub-dicts ("augment"'s are AugmentConfig's fields; a restart's, any of DEFAULTS)
SUB_KEYS: dict[str, set[str]] = {
    "crop": {"scale", "shift_y", "upright"},
    "stc": {"grids", "rounds", "epochs", "lr", "teacher", "unlabeled"},
    "pseudo_labels": {"teacher", "flip_test", "test_crops", "unlabeled"},
}
CHOICES: dict[str, tuple[str, ...]] = {
    "schedule": ("cosine", "step"),
    "optimizer": ("adamw", "adam"),
    "visibility_cell": ("truth", "decoded"),
}


def check_config(cfg: dict[str, Any], where: str = "config", epochs_given: bool = False) -> None:
    """ValueError now, before any data is cut or any epoch trained, for an unknown key at any level
    (restarts, "augment", "crop", "stc", "pseudo_labels"), a value outside its choices, or a
    restart without "epochs" (unless --epochs gives them)."""
    from .augment import AugmentConfig

    unknown = set(cfg) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}")
    for key, allowed in CHOICES.items():
        if key in cfg and cfg[key] not in allowed:
            raise ValueError(f"{where}: {key} must be one of {list(allowed)}, got {cfg[key]!r}")
    if cfg.get("pretrained") not in (None, "imagenet"):
        raise ValueError(f'{where}: pretrained must be "imagenet" or null, got {cfg["pretrained"]!r}')
    subs = {**SUB_KEYS, "augment": set(AugmentConfig.__dataclass_fields__)}
    for key, allowed in subs.items():
        value = cfg.get(key)
        if value is not None and (not isinstance(value, dict) or set(value) - allowed):
            raise ValueError(f"{where}: {key} takes a dict with keys from {sorted(allowed)}, got {value!r}")
    if "upright" in (cfg.get("crop") or {}):  # the rule the SDK reads from the exported file
        from pipnet_sdk.landmark_model import ModelFormatError, UprightRule

        try:
            UprightRule.from_dict(cfg["crop"]["upright"], where)
        except ModelFormatError as e:
            raise ValueError(str(e)) from None
    for i, restart in enumerate(cfg.get("restarts") or [], 1):
        name = f"{where}: restart{i}"
        if not isinstance(restart, dict):
            raise ValueError(f"{name} must be a dict of config keys, got {restart!r}")
        if {"restarts", "stc"} & set(restart):
            raise ValueError(f"{name}: a restart cannot hold 'restarts' or 'stc'")
        check_config(restart, name)
        if "epochs" not in restart and not epochs_given:
            raise ValueError(f'{name} needs "epochs"')


REPO = Path(__file__).resolve().parents[1]


def check_files(cfg: dict[str, Any], where: str = "config", stages: tuple[str, ...] = ()) -> None:
    """FileNotFoundError now, before any work, for a checkpoint or model the config names that is
    not there: "init", "teacher", "stc"'s teacher, and "pseudo_labels"' teacher (an exported
    model, relative to the repository, or one of ``stages``: a recipe's earlier stage)."""
    named = [
        ("init", cfg.get("init"), Path),
        ("teacher", cfg.get("teacher"), Path),
        ("stc teacher", (cfg.get("stc") or {}).get("teacher"), Path),
    ]
    pseudo = (cfg.get("pseudo_labels") or {}).get("teacher")
    if pseudo == "dlib":
        from .pseudo import dlib_predictor_file

        named.append(("pseudo_labels teacher", str(dlib_predictor_file()), Path))
    elif pseudo is not None and pseudo not in stages:
        named.append(("pseudo_labels teacher", pseudo, lambda p: REPO / p))
    if cfg.get("pretrained"):
        from .pretrained import find_weights

        find_weights(cfg["backbone"], cfg.get("pretrained_path"))
    for what, value, to_path in named:
        if value and not to_path(value).is_file():
            hint = f" (nor a stage before this one: {list(stages)})" if what == "pseudo_labels teacher" else ""
            raise FileNotFoundError(f"{where}: {what} {to_path(value)} not found{hint}")


def load_config(path: str | Path | None, overrides: dict[str, Any]) -> dict[str, Any]:
    """DEFAULTS, updated by the JSON file at path, then by the overrides that are not None;
    checked (check_config)."""
    cfg = copy.deepcopy(DEFAULTS)
    if path:
        cfg.update(json.loads(Path(path).read_text()))
    cfg.update({k: v for k, v in overrides.items() if v is not None})
    check_config(cfg, str(path or "config"), overrides.get("epochs") is not None)
    return cfg


def build_model(cfg: dict[str, Any], coarse: tuple[int, ...] = ()) -> PIPNet:
    """The untrained network of cfg; coarse: STC's extra score-map grids."""
    n = get_scheme(cfg["scheme"]).num_points
    return PIPNet(
        n,
        cfg["num_neighbors"],
        cfg["backbone"],
        cfg["stride"],
        cfg["width"],
        coarse,
        cfg["blocks"],
        visibility=cfg["visibility_weight"] > 0,
        visibility_detached=bool(cfg["visibility_detach"]),
    )


def grid_of(cfg: dict[str, Any]) -> int:
    """Side of the network's score maps, in cells."""
    return cfg["input_size"] // cfg["stride"]
