"""Recover a trainable checkpoint from a shipped ONNX file (format 1, 2 or 3, fp32 or int8 QDQ).

Checkpoints (runs/) are not kept in git, but the shipped files are. Their graphs hold
each convolution with its BatchNorm folded in (W, b), int8 files as weight x scale; format 2
(export/deploy.py) also holds the stem as SpaceToDepth + a stride-1 convolution, and the offset
and neighbour heads as per-landmark rows of the in-graph decoding, both undone here. This turns a
file back into a run checkpoint that `"init"` in a config (or a restart) can start from:

- each folded convolution gets its weight W, and its BatchNorm is set so that it passes the
  convolution's output z on as z + b, with statistics measured on training crops: running mean
  mu and variance sigma^2 of z, scale sigma and shift b + mu. Evaluation then computes exactly the
  file's network, and in training the batch statistics start close to those of the data.
- the mean face and neighbour indices come from the file's metadata.
- a visibility head the network learned is recovered with it; a visibility output fitted onto the
  file by export.visibility (rows or a branch) is not part of the network and is left out; a
  config with a visibility head for a file without one leaves the head as built, to be trained,
  and a config without one drops the file's.

    python -m export.from_onnx old.onnx --config export/configs/pipnet-fast.json --out runs/x/init.pt
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

from .augment import AugmentConfig, augment
from .config import build_model, load_config
from .model import normalize
from .onnx_meta import file_metadata
from .schemes import get_scheme
from .train import prepare
from .visibility import learned_here
from .visibility_branch import without_visibility


def folded_convs(
    model: onnx.ModelProto, init: dict[str, np.ndarray]
) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """Torch module name -> (weight, bias) of every Conv node, int8 weights dequantized;
    `init`: the graph's initializers as arrays."""
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


def stem_from_space_to_depth(w2: np.ndarray, k: int) -> np.ndarray:
    """The k x k stride-2 stem weights (O, C, k, k) back from export.deploy.stem_space_to_depth's
    (O, 4C, s/2, s/2) stride-1 weights on SpaceToDepth(2) channels (padding k // 2)."""
    o, c4, half, _ = w2.shape
    ch, size, shift = c4 // 4, 2 * half, (k // 2) % 2
    # channel (y * 2 + x) * C + ch at kernel cell (i, j) is pixel (2i + y, 2j + x) of channel ch
    w8 = w2.reshape(o, 2, 2, ch, half, half).transpose(0, 3, 4, 1, 5, 2).reshape(o, ch, size, size)
    w = w8[:, :, shift : shift + k, shift : shift + k]
    outside = np.abs(w8).sum() - np.abs(w).sum()
    if outside > 1e-6 * max(1.0, float(np.abs(w).sum())):
        raise ValueError("the stem's SpaceToDepth weights do not come from a k x k convolution")
    return np.ascontiguousarray(w)


def decoded_heads(init: dict[str, np.ndarray], n: int, c: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The offset and neighbour 1x1 heads back from export.deploy.DecodedPIPNet's per-landmark
    rows: weight (N, D, 2 + 2C) and bias (N, 1, 2 + 2C), columns own x, C votes x, own y, C votes y;
    a learned visibility head is one more column, its logit shifted by the file's
    ``visibility_threshold_shift`` (export.visibility), which goes back into its bias."""
    w, b = init["weight"].astype(np.float32), init["bias"].astype(np.float32)
    cols = b.size // n
    if cols not in (2 + 2 * c, 3 + 2 * c):
        raise ValueError(f"the head rows have {cols} columns per landmark, not {2 + 2 * c} (or one more)")
    b = b.reshape(n, cols)
    d = w.shape[1]
    parts = {
        "offset_x": slice(0, 1),
        "neighbor_x": slice(1, 1 + c),
        "offset_y": slice(1 + c, 2 + c),
        "neighbor_y": slice(2 + c, 2 + 2 * c),
    }
    if cols == 3 + 2 * c:
        parts["visibility"] = slice(2 + 2 * c, 3 + 2 * c)
        b[:, -1] += float(init.get("visibility_threshold_shift", 0.0))
    out = {}
    for name, span in parts.items():
        rows = w[:, :, span].transpose(0, 2, 1).reshape(-1, d)  # landmark-major: i * k + j
        out[name] = (rows.reshape(-1, d, 1, 1), b[:, span].reshape(-1))
    return out


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
    """(model, meta) from a format-1, 2 or 3 file; `calib`: normalised training crops for the
    BatchNorm statistics."""
    m = onnx.load(str(onnx_path))
    if any(o.name == "visibility" for o in m.graph.output) and not learned_here(m):
        m = without_visibility(m)  # fitted onto the file (rows or a branch), not part of its network
    meta = file_metadata(m)
    if meta["format"] not in (1, 2, 3):
        raise ValueError(f"{onnx_path}: format {meta['format']} is not one this code recovers (1, 2 or 3)")
    model = build_model(cfg).eval()
    init = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    convs = folded_convs(m, init)
    if meta["format"] in (2, 3):  # in-graph decoding: the same stem and head rows in both
        if any(n.op_type == "SpaceToDepth" for n in m.graph.node):  # the first convolution, rewritten
            first, conv = next((k, v) for k, v in model.named_modules() if isinstance(v, nn.Conv2d))
            w2, b = convs[first]
            convs[first] = (stem_from_space_to_depth(w2, conv.kernel_size[0]), b)
        convs.update(decoded_heads(init, model.num_landmarks, model.num_neighbors))
    pairs = conv_bn_pairs(model)
    if "visibility" in convs and "visibility" not in pairs:  # the config trains without it
        del convs["visibility"]
    if "visibility" in pairs and "visibility" not in convs:  # the config adds a head the file lacks: left as built
        del pairs["visibility"]
    if set(convs) != set(pairs):
        raise ValueError(f"{onnx_path} does not match the config's model: {sorted(set(convs) ^ set(pairs))[:4]} differ")
    mods = dict(model.named_modules())
    stats: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    with torch.no_grad():
        for name, (w, b) in convs.items():
            conv, bn = mods[name], pairs[name]
            if tuple(conv.weight.shape) != w.shape:
                raise ValueError(
                    f"{onnx_path} does not match the config's model: {name} has weights "
                    f"{w.shape} in the file, {tuple(conv.weight.shape)} in the model"
                )
            conv.weight.copy_(torch.from_numpy(w))
            if bn is None:
                conv.bias.copy_(torch.from_numpy(b))
                continue
            bn_mod = mods[bn]  # pass z on as z + b
            bn_mod.weight.fill_(1.0)
            bn_mod.bias.copy_(torch.from_numpy(b))
            bn_mod.running_mean.zero_()
            bn_mod.running_var.fill_(1.0 - bn_mod.eps)
        hooks = [
            mods[c].register_forward_hook(
                lambda _m, _i, z, c=c: stats.__setitem__(c, (z.mean((0, 2, 3)), z.var((0, 2, 3), unbiased=False)))
            )
            for c, bn in pairs.items()
            if bn is not None
        ]
        model(calib)
        for h in hooks:
            h.remove()
        for c, (mu, var) in stats.items():
            bn_mod = mods[pairs[c]]
            sigma = var.clamp_min(1e-4).sqrt()
            bn_mod.bias.add_(mu)
            bn_mod.weight.copy_(sigma)
            bn_mod.running_mean.copy_(mu)
            bn_mod.running_var.copy_(sigma**2 - bn_mod.eps)
    return model, {"mean_face": meta["mean_face"], "neighbor_indices": meta["neighbor_indices"]}


def calibration_crops(cfg: dict[str, Any], count: int = 256, seed: int = 0, progress: bool = True) -> torch.Tensor:
    """Augmented, normalised training crops, as the network sees them in training (the config's
    crops are cut first when not cached: minutes, with a progress bar)."""
    d = prepare(cfg, progress=progress)
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(d["train_images"]), generator=gen)[:count]
    im = torch.from_numpy(d["train_images"][idx.numpy()]).permute(0, 3, 1, 2)
    x, _ = augment(
        im,
        torch.from_numpy(d["train_points"][idx.numpy()]),
        cfg["input_size"],
        cfg["margin"],
        torch.tensor(get_scheme(cfg["scheme"]).flip),
        AugmentConfig(),
        gen,
    )
    return normalize(x)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m export.from_onnx", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("onnx")
    ap.add_argument("--config", required=True, help="the config the file was trained with (model shape, data)")
    ap.add_argument("--out", required=True, help="checkpoint to write")
    ap.add_argument("--limit", type=int, help="faces per folder for the calibration crops (smoke runs)")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    a = ap.parse_args(argv)
    meta = file_metadata(onnx.load(a.onnx, load_external_data=False))
    cfg = load_config(a.config, {"limit": a.limit})
    for key in ("backbone", "width", "stride", "input_size", "crop", "name", "version"):
        cfg[key] = meta.get(key, cfg[key])
    model, ck_meta = recover(a.onnx, cfg, calibration_crops(cfg, progress=not a.quiet))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "model": model.state_dict(),
            "config": cfg,
            "meta": ck_meta,
            "epoch": -1,
            "best": float("nan"),
            "recovered_from": str(a.onnx),
        },
        a.out,
    )
    print(f"wrote {a.out} ({cfg['name']} {cfg['version']}, from {a.onnx})")


if __name__ == "__main__":
    main()
