"""The shipped form of a PIPNet (model format 3): decoding at the argmax cells inside the graph, the
neighbour averaging in the SDK's NumPy decoder, and a cheaper stem.

Two exact rewrites of a trained model, for CPU speed at batch 1. Measured on the 2-core VM, same
weights, one process: pipnet-fast's landmark stage (crop + forward + decode, 1 thread) is 11-13 %
faster than as a format-1 file, pipnet-r18's 5 %.

* ``DecodedPIPNet`` puts the PIP decoding in the graph. The offset and neighbour heads are
  1x1 convolutions, so instead of computing them on every cell (680 + 680 + 68 + 68 channels of
  8x8 for 68 points) it reads each landmark's feature vector at its argmax cell and applies only
  that landmark's rows of the head weights: a (1, D) x (D, 2 + 2C) product per landmark. The
  outputs are each landmark's candidates (its own prediction and its C neighbour votes) and
  scores; the SDK merges the votes (``pipnet_sdk.decode.merge``), the same code as for format-1
  head maps. These head rows stay float in the int8 file (+1 MB for pipnet-fast).
* ``stem_space_to_depth`` turns the first stride-2 convolution on 3 channels (im2col-bound, 20 %
  of pipnet-fast's int8 forward) into SpaceToDepth(2) + a stride-1 convolution on 12 channels.
"""

from __future__ import annotations

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper
from torch import nn

from .model import PIPNet

OUTPUT_NAMES = ["candidates", "scores"]
VISIBILITY_OUTPUT = "visibility"  # a third output, of a network with a visibility head


def output_names(net: PIPNet) -> list[str]:
    """The shipped graph's outputs for this network."""
    return OUTPUT_NAMES + ([VISIBILITY_OUTPUT] if net.visibility is not None else [])


class DecodedPIPNet(nn.Module):
    """A trained PIPNet whose outputs are decoded landmarks.

    Returns ``candidates`` (B, N, 1 + C, 2) in [0, 1] crop units (each landmark's own prediction,
    then its votes for its C neighbours) and ``scores`` (B, N), the score map at each landmark's
    cell: merged by ``pipnet_sdk.decode.merge``, the same numbers as ``export.decode.decode`` on
    the full head maps. A network with a visibility head also returns ``visibility`` (B, N): the
    sigmoid of its logit at each landmark's cell, one more row of the per-landmark product."""

    def __init__(self, net: PIPNet, neighbors: np.ndarray, input_size: int) -> None:
        super().__init__()
        self.backbone, self.score = net.backbone, net.score
        nb = np.asarray(neighbors)
        n, c = nb.shape
        d = net.score.in_channels
        # per landmark, the head rows it needs: own x, its C votes in x, own y, its C votes in y
        heads: tuple[nn.Conv2d, ...] = (net.offset_x, net.neighbor_x, net.offset_y, net.neighbor_y)
        rows: tuple[int, ...] = (1, c, 1, c)
        self.with_visibility = net.visibility is not None
        if net.visibility is not None:
            heads, rows = heads + (net.visibility,), rows + (1,)
        weight = torch.cat([h.weight.detach().reshape(n, r, d) for h, r in zip(heads, rows)], 1)
        bias = torch.cat([h.bias.detach().reshape(n, r) for h, r in zip(heads, rows)], 1)
        self.register_buffer("weight", weight.transpose(1, 2).contiguous())  # (N, D, 2 + 2C [+ 1])
        self.register_buffer("bias", bias.reshape(n, 1, sum(rows)))
        self.num_landmarks, self.num_neighbors = n, c
        with torch.no_grad():
            h, w = net.backbone.eval()(torch.zeros(1, 3, input_size, input_size)).shape[2:]
        yx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
        self.register_buffer("grid", torch.stack([yx[1], yx[0]], -1).reshape(h * w, 2))  # cell -> column, row
        self.register_buffer("cell_size", torch.tensor([[1.0 / w], [1.0 / h]]))  # (2, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        f = self.backbone(x)
        b, d, h, w = f.shape
        n, c = self.num_landmarks, self.num_neighbors
        scores, cell = self.score(f).reshape(-1, n, h * w).max(dim=2)  # (B, N)
        # each landmark's feature vector at its cell: rows of the (B * HW, D) features
        rows = (cell + torch.arange(b, device=x.device).unsqueeze(1) * (h * w)).reshape(-1)
        feat = f.reshape(b, d, h * w).transpose(1, 2).reshape(b * h * w, d)[rows].reshape(b, n, d)
        v = torch.matmul(feat.unsqueeze(2), self.weight) + self.bias  # (B, N, 1, 2 + 2C [+ 1])
        cell_xy = self.grid[cell]  # (B, N, 2): column, row
        offsets = v[..., : 2 + 2 * c]
        cand = (offsets.reshape(-1, n, 2, 1 + c) + cell_xy.unsqueeze(-1)) * self.cell_size  # (B, N, 2, 1 + C)
        if self.with_visibility:
            return cand.transpose(2, 3), scores, torch.sigmoid(v[:, :, 0, -1])  # + (B, N)
        return cand.transpose(2, 3), scores  # (B, N, 1 + C, 2), (B, N)


def stem_space_to_depth(model: onnx.ModelProto, input_size: int) -> bool:
    """Rewrite the graph's first Conv, if it is a stride-2 convolution on the 3-channel input,
    into SpaceToDepth(2) + an equivalent stride-1 convolution (in place). Exact up to float
    rounding. Returns whether it rewrote."""
    g = model.graph
    conv = next((n for n in g.node if n.op_type == "Conv"), None)
    if conv is None or conv.input[0] != g.input[0].name or input_size % 2:
        return False
    at = {a.name: helper.get_attribute_value(a) for a in conv.attribute}
    init = {i.name: i for i in g.initializer}
    if (
        list(at.get("strides", [1, 1])) != [2, 2]
        or at.get("group", 1) != 1
        or any(v != 1 for v in at.get("dilations", [1, 1]))
        or conv.input[1] not in init
    ):
        return False
    w = numpy_helper.to_array(init[conv.input[1]])
    o, ch, k, k2 = w.shape
    pads = list(at.get("pads", [0, 0, 0, 0]))
    if k != k2 or len(set(pads)) != 1:
        return False
    p = pads[0]
    shift = p % 2  # pad one more pixel so the padding is whole 2x2 blocks; shift the kernel to match
    size = k + shift + (k + shift) % 2
    w8 = np.zeros((o, ch, size, size), w.dtype)
    w8[:, :, shift : shift + k, shift : shift + k] = w
    # SpaceToDepth puts pixel (2i + y, 2j + x) of channel ch at channel (y * 2 + x) * C + ch
    half = size // 2
    w2 = w8.reshape(o, ch, half, 2, half, 2).transpose(0, 3, 5, 1, 2, 4).reshape(o, 4 * ch, half, half)
    out = (input_size + 2 * p - k) // 2 + 1
    top = (p + shift) // 2
    bottom = out - 1 + size // 2 - input_size // 2 - top
    if bottom < 0:
        return False
    g.initializer.remove(init[conv.input[1]])
    g.initializer.append(numpy_helper.from_array(w2, conv.input[1]))
    i = list(g.node).index(conv)
    s2d = helper.make_node(
        "SpaceToDepth",
        [conv.input[0]],
        ["/backbone/stem/space_to_depth"],
        blocksize=2,
        name="/backbone/stem/space_to_depth",
    )
    new = helper.make_node(
        "Conv",
        ["/backbone/stem/space_to_depth", *conv.input[1:]],
        list(conv.output),
        name=conv.name,
        kernel_shape=[half] * 2,
        strides=[1, 1],
        pads=[top, top, bottom, bottom],
    )
    g.node.remove(conv)
    g.node.insert(i, new)
    g.node.insert(i, s2d)
    return True
