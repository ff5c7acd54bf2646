"""Recover a trainable checkpoint from a shipped format-1 ONNX file (fp32 or int8 QDQ).

Checkpoints are not kept between sessions, but the shipped files are in git. Their graphs hold
each convolution with its BatchNorm folded in (W, b), int8 files as weight x scale. This turns a
file back into a run checkpoint that `"init"` in a config (or a restart) can start from:

- each folded convolution gets its weight W, and its BatchNorm is set so that it passes the
  convolution's output z on as z + b, with statistics measured on training crops: running mean
  mu and variance sigma^2 of z, scale sigma and shift b + mu. Evaluation then computes exactly the
  file's network, and in training the batch statistics start close to those of the data.
- the mean face and neighbour indices come from the file's metadata.

    python -m export.from_onnx old.onnx --config export/configs/pipnet-fast.json --out runs/x/init.pt
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

from .augment import AugmentConfig, augment
from .schemes import get_scheme
from .train import build_model, load_config, normalize, prepare


def folded_convs(model: onnx.ModelProto) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """Torch module name -> (weight, bias) of every Conv node, int8 weights dequantized."""
    init = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    made_by = {o: n for n in model.graph.node for o in n.output}

    def value(name: str) -> np.ndarray:
        if name in init:
            return init[name].astype(np.float32)
        node = made_by.get(name)
        if node is not None and node.op_type == "Identity":  # equal tensors shared by the exporter
            return value(node.input[0])
        if node is None or node.op_type != "DequantizeLinear":
            raise ValueError(f"cannot read constant {name!r}")
        q, scale = init[node.input[0]].astype(np.float32), init[node.input[1]]
        zero = init[node.input[2]].astype(np.float32) if len(node.input) > 2 else np.zeros_like(scale)
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        if scale.ndim:  # per channel
            shape = [1] * q.ndim
            shape[axis] = -1
            scale, zero = scale.reshape(shape), zero.reshape(shape)
        return (q - zero) * scale

    convs = {}
    for node in model.graph.node:
        if node.op_type != "Conv":
            continue
        # "/backbone/stages/stages.0/stages.0.0/conv1/Conv" -> "backbone.stages.0.0.conv1"
        path: list[str] = []
        for part in node.name.strip("/").split("/")[:-1]:
            if path and part.startswith(path[-1] + "."):
                path[-1] = part
            else:
                path.append(part)
        convs[".".join(path)] = (value(node.input[1]), value(node.input[2]) if len(node.input) > 2 else None)
    return convs


def conv_bn_pairs(model: nn.Module) -> dict[str, str | None]:
    """Convolution name -> the BatchNorm right after it (None for the heads, which have biases)."""
    mods = list(model.named_modules())
    pairs = {}
    for i, (name, m) in enumerate(mods):
        if isinstance(m, nn.Conv2d):
            nxt = mods[i + 1] if i + 1 < len(mods) else None
            pairs[name] = nxt[0] if nxt is not None and isinstance(nxt[1], nn.BatchNorm2d) else None
    return pairs


def recover(onnx_path: str | Path, cfg: dict[str, Any], calib: torch.Tensor) -> tuple[nn.Module, dict[str, Any]]:
    """(model, meta) from a format-1 file; `calib`: normalised training crops for the statistics."""
    m = onnx.load(str(onnx_path))
    meta = json.loads({p.key: p.value for p in m.metadata_props}["pipnet"])
    if meta["format"] != 1:
        raise ValueError(f"{onnx_path}: format {meta['format']}; only format-1 files (the five head maps) are recovered")
    model = build_model(cfg).eval()
    convs = folded_convs(m)
    pairs = conv_bn_pairs(model)
    if set(convs) != set(pairs):
        raise ValueError(f"{onnx_path} does not match the config's model: "
                         f"{sorted(set(convs) ^ set(pairs))[:4]} differ")
    mods = dict(model.named_modules())
    stats: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    with torch.no_grad():
        for name, (w, b) in convs.items():
            conv, bn = mods[name], pairs[name]
            if tuple(conv.weight.shape) != w.shape:
                raise ValueError(f"{onnx_path} does not match the config's model: {name} has weights "
                                 f"{w.shape} in the file, {tuple(conv.weight.shape)} in the model")
            conv.weight.copy_(torch.from_numpy(w))
            if bn is None:
                conv.bias.copy_(torch.from_numpy(b))
                continue
            bn_mod = mods[bn]  # pass z on as z + b
            bn_mod.weight.fill_(1.0)
            bn_mod.bias.copy_(torch.from_numpy(b))
            bn_mod.running_mean.zero_()
            bn_mod.running_var.fill_(1.0 - bn_mod.eps)
        hooks = [mods[c].register_forward_hook(
            lambda _m, _i, z, c=c: stats.__setitem__(c, (z.mean((0, 2, 3)), z.var((0, 2, 3), unbiased=False))))
            for c, bn in pairs.items() if bn is not None]
        model(calib)
        for h in hooks:
            h.remove()
        for c, (mu, var) in stats.items():
            bn_mod = mods[pairs[c]]
            sigma = var.clamp_min(1e-4).sqrt()
            bn_mod.bias.add_(mu)
            bn_mod.weight.copy_(sigma)
            bn_mod.running_mean.copy_(mu)
            bn_mod.running_var.copy_(sigma ** 2 - bn_mod.eps)
    return model, {"mean_face": meta["mean_face"], "neighbor_indices": meta["neighbor_indices"]}


def calibration_crops(cfg: dict[str, Any], count: int = 256, seed: int = 0) -> torch.Tensor:
    """Augmented, normalised training crops, as the network sees them in training."""
    d = prepare(cfg, progress=False)
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(d["train_images"]), generator=gen)[:count]
    im = torch.from_numpy(d["train_images"][idx.numpy()]).permute(0, 3, 1, 2)
    x, _ = augment(im, torch.from_numpy(d["train_points"][idx.numpy()]), cfg["input_size"], cfg["margin"],
                   torch.tensor(get_scheme(cfg["scheme"]).flip), AugmentConfig(), gen)
    return normalize(x)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m export.from_onnx", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("onnx")
    ap.add_argument("--config", required=True, help="the config the file was trained with (model shape, data)")
    ap.add_argument("--out", required=True, help="checkpoint to write")
    a = ap.parse_args(argv)
    m = onnx.load(a.onnx)
    meta = json.loads({p.key: p.value for p in m.metadata_props}["pipnet"])
    cfg = load_config(a.config, {})
    for key in ("backbone", "width", "stride", "input_size", "crop", "name", "version"):
        cfg[key] = meta.get(key, cfg[key])
    model, ck_meta = recover(a.onnx, cfg, calibration_crops(cfg))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model.state_dict(), "config": cfg, "meta": ck_meta, "epoch": -1,
                "best": float("nan"), "recovered_from": str(a.onnx)}, a.out)
    print(f"wrote {a.out} ({cfg['name']} {cfg['version']}, from {a.onnx})")


if __name__ == "__main__":
    main()
