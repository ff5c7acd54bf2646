"""Run checkpoints: reading one back as a model, starting a model from another run's weights,
and the running weight average ("average_last").

A checkpoint is a torch.save'd dict: "model" (state dict), "config", "meta" ({"mean_face",
"neighbor_indices"}), "epoch" (0-based, the last one trained), "best" (best validation NME), and
in a run's last.pt also "opt" (optimizer state), "rng" (the batch generator's state) and
"averaged" (the running weight average)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .config import build_model, load_config
from .model import PIPNet


def load_checkpoint(path: str | Path) -> tuple[PIPNet, dict[str, Any], dict[str, Any]]:
    """A run's checkpoint -> (model in eval mode on the CPU, its config, its meta)."""
    ck = torch.load(path, map_location="cpu", weights_only=False)
    cfg = load_config(None, ck["config"])
    model = build_model(cfg)
    model.load_state_dict({k: v for k, v in ck["model"].items() if not k.startswith("coarse.")})
    return model.eval(), cfg, ck["meta"]


def load_init(model: PIPNet, weights: dict[str, torch.Tensor], progress: bool) -> None:
    """Start from another run's weights. Every layer of the model must be there but a visibility
    head (which then starts untrained); layers the model no longer has (residual blocks taken out
    with "blocks", STC's coarse heads, a visibility head) are left out."""
    own = model.state_dict()
    weights = {k: v for k, v in weights.items() if not k.startswith("coarse.")}  # STC heads never carry over
    missing = [k for k in own if k not in weights and not k.startswith(("coarse.", "visibility."))]
    if missing:
        raise ValueError(f"the init weights lack {len(missing)} of the model's tensors, e.g. {missing[:3]}")
    if progress and any(k.startswith("visibility.") and k not in weights for k in own):
        print("init: the visibility head starts untrained")
    dropped = sorted({k.rsplit(".", 2)[0] for k in weights if k not in own})
    if dropped and progress:
        print(f"init: leaving out {', '.join(dropped)}")
    model.load_state_dict({k: v for k, v in weights.items() if k in own}, strict=False)


def average_into(mean: dict[str, torch.Tensor], state: dict[str, torch.Tensor], k: int) -> dict[str, torch.Tensor]:
    """Running mean: the k-th state joins the mean of the k - 1 before it (integer buffers: latest)."""
    out = {}
    for name, v in state.items():
        v = v.detach().clone()
        out[name] = mean[name] + (v - mean[name]) / k if k > 1 and v.is_floating_point() else v
    return out
