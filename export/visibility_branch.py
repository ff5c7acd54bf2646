"""A visibility branch of its own, grafted onto a trained model file without changing its landmarks.

A format-3 file computes the trunk's feature map, a score map per landmark and each landmark's
argmax cell. The branch reads two of the trunk's maps, the last one (the landmarks' own features)
and an early one at ``scale`` (2 or 4) times its resolution (edges and texture, where an occluder
shows), and the landmark cells and scores: a 1x1 convolution of the first plus, on the second
max-pooled by 2, a convolution with kernel and stride ``scale`` / 2; a few 3x3 convolutions for
context; then one logit map per landmark read at that landmark's cell, plus a learned multiple of
its score. The pooling runs in the file on the trunk's int8 map before it is dequantized (the same
numbers: dequantizing is increasing), which keeps the branch cheap. Its loss never reaches the
trunk (the trunk is the file's, frozen, int8 as shipped), so the landmarks and scores stay exactly
those of the file; the branch runs in float beside it.

``export.visibility --head branch`` fits it on the maps the file itself computes on occluded
training crops (export.visibility.occluded_crops) and grafts it (graft_branch).
"""

from __future__ import annotations

import copy
import io
import json
import math

import numpy as np
import onnx
import torch
from onnx import helper, shape_inference
from torch import nn

from pipnet_sdk.landmark_model import META_KEY

from .evaluate import auroc

#: the branch's three inputs, as names of tensors of the file's graph (branch_sources)
SOURCES = ("features", "low", "cell")
#: what the branch reads, stored per crop: its SOURCES and the landmarks' scores (an output already)
INPUTS = (*SOURCES, "scores")
PREFIX = "visibility_branch"


class VisibilityBranch(nn.Module):
    """Visibility logits (B, N) from the trunk's last map (B, C, H, W), an earlier map at
    ``scale`` times the resolution (B, C2, scale H, scale W), each landmark's cell (B, N)
    (row-major index of H x W) and its score there (B, N)."""

    def __init__(
        self, channels: int, low_channels: int, num_landmarks: int, width: int = 32, depth: int = 1, scale: int = 4
    ) -> None:
        super().__init__()
        if width < 1 or depth < 0 or scale not in (2, 4):
            raise ValueError(f"width must be >= 1, depth >= 0 and scale 2 or 4, got {width}, {depth} and {scale}")
        self.reduce = nn.Sequential(nn.Conv2d(channels, width, 1), nn.BatchNorm2d(width))
        self.pool = nn.MaxPool2d(2)  # in the file, on the int8 map before it is dequantized: cheaper
        self.low = nn.Sequential(nn.Conv2d(low_channels, width, scale // 2, scale // 2), nn.BatchNorm2d(width))
        layers: list[nn.Module] = [nn.ReLU()]
        for _ in range(depth):
            layers += [nn.Conv2d(width, width, 3, 1, 1), nn.BatchNorm2d(width), nn.ReLU()]
        self.context = nn.Sequential(*layers)
        self.out = nn.Conv2d(width, num_landmarks, 1)
        self.score_weight = nn.Parameter(torch.zeros(num_landmarks))  # each landmark's own score, as the rows had
        self.options = {"width": width, "depth": depth, "scale": scale}

    def forward(
        self, features: torch.Tensor, low: torch.Tensor, cell: torch.Tensor, score: torch.Tensor
    ) -> torch.Tensor:
        return self.from_pooled(features, self.pool(low), cell, score)

    def from_pooled(
        self,
        features: torch.Tensor,
        pooled: torch.Tensor,
        cell: torch.Tensor,
        score: torch.Tensor,
        cells: int | None = None,
    ) -> torch.Tensor:
        """The logits from the early map already pooled; ``cells``: H x W when known, so that an
        exported graph reshapes by a constant."""
        maps = self.out(self.context(self.reduce(features) + self.low(pooled)))
        flat = maps.flatten(2) if cells is None else maps.reshape(-1, self.out.out_channels, cells)
        logits = flat.gather(2, cell.unsqueeze(2)).squeeze(2)
        return logits + self.score_weight * score


class _Shipped(nn.Module):
    """The branch as the file runs it, on the early map already pooled (graft_branch pools it):
    probabilities, with 0.5 moved to ``threshold`` (folded into the output convolution's bias) and
    the cells read from a map of fixed size."""

    def __init__(self, branch: VisibilityBranch, threshold: float, cells: int) -> None:
        super().__init__()
        self.visibility_branch = copy.deepcopy(branch).eval()
        with torch.no_grad():
            self.visibility_branch.out.bias -= math.log(threshold / (1 - threshold))
        self.cells = cells

    def forward(
        self, features: torch.Tensor, pooled: torch.Tensor, cell: torch.Tensor, score: torch.Tensor
    ) -> torch.Tensor:
        return torch.sigmoid(self.visibility_branch.from_pooled(features, pooled, cell, score, self.cells))


def _producer(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {o: n for n in model.graph.node for o in n.output}


def branch_sources(
    model: onnx.ModelProto, scale: int = 4, shapes: dict[str, tuple[int, list[int]]] | None = None
) -> dict[str, str]:
    """Names of the branch's inputs in a format-3 graph: the map the score convolution reads
    ("features"), the last float map at ``scale`` times its resolution ("low"), the landmark cells
    the decoding gathers at ("cell", the ArgMax's output), and the score convolution's weight
    ("score_weight", which gives the number of landmarks). ValueError when the graph has none of
    them. ``shapes``: _map_shapes(model), when the caller has it."""
    argmax = [n for n in model.graph.node if n.op_type == "ArgMax"]
    if len(argmax) != 1:
        raise ValueError("not a format-3 graph: it should have exactly one ArgMax (the landmark cells)")
    made_by, node = _producer(model), argmax[0]
    while node.op_type != "Conv":  # back from the cells, through Reshape and (de)quantization, to the score conv
        if node.input[0] not in made_by:
            raise ValueError("the landmark cells do not come from a convolution of the trunk")
        node = made_by[node.input[0]]
    features, score_conv = node.input[0], node
    shapes = _map_shapes(model) if shapes is None else shapes
    if features not in shapes or len(shapes[features][1]) != 4:
        raise ValueError(f"cannot infer the shape of the trunk's map {features!r}")
    h, w = shapes[features][1][2:]
    low = None
    for n in model.graph.node:  # the last float map at that resolution, in graph order
        for o in n.output:
            kind, dims = shapes.get(o, (0, []))
            if kind == onnx.TensorProto.FLOAT and len(dims) == 4 and dims[2:] == [scale * h, scale * w]:
                low = o
    if low is None:
        raise ValueError(f"the graph has no float map of {scale * h}x{scale * w} before the trunk's {h}x{w}")
    return {"features": features, "low": low, "cell": argmax[0].output[0], "score_weight": score_conv.input[1]}


def _map_shapes(model: onnx.ModelProto) -> dict[str, tuple[int, list[int]]]:
    """Element type and batch-1 shape of each tensor of the graph (shape inference on a copy whose
    input has batch 1)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    inferred = shape_inference.infer_shapes(m)
    return {
        v.name: (v.type.tensor_type.elem_type, [d.dim_value for d in v.type.tensor_type.shape.dim])
        for v in inferred.graph.value_info
    }


def with_sources(model: onnx.ModelProto, sources: dict[str, str]) -> bytes:
    """The graph's bytes with the branch's inputs as extra outputs, under their SOURCES names."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for key in SOURCES:
        m.graph.node.append(helper.make_node("Identity", [sources[key]], [key], name=f"{key}_out"))
        kind = onnx.TensorProto.INT64 if key == "cell" else onnx.TensorProto.FLOAT
        m.graph.output.append(helper.make_tensor_value_info(key, kind, None))
    return m.SerializeToString()


def fit_branch(
    train: dict[str, np.ndarray],
    val: dict[str, np.ndarray],
    epochs: int = 12,
    width: int = 32,
    depth: int = 1,
    lr: float = 2e-3,
    batch: int = 128,
    seed: int = 0,
    progress: bool = True,
) -> tuple[VisibilityBranch, list[dict[str, float]]]:
    """Fit a VisibilityBranch on the file's maps: dicts of "features", "low" (float16), "cell",
    "scores" and "labels" (1 = visible); AdamW with a one-cycle schedule, the epoch with the lowest
    validation loss kept. Returns the branch (eval mode) and the per-epoch log."""
    from tqdm import tqdm

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    f, lo = torch.from_numpy(train["features"]), torch.from_numpy(train["low"])
    cell, y = torch.from_numpy(train["cell"]).long(), torch.from_numpy(train["labels"].astype(np.float32))
    sc, vsc = torch.from_numpy(train["scores"]).float(), torch.from_numpy(val["scores"]).float()
    vf, vlo = torch.from_numpy(val["features"]).float(), torch.from_numpy(val["low"]).float()
    vcell, vy = torch.from_numpy(val["cell"]).long(), torch.from_numpy(val["labels"].astype(np.float32))
    branch = VisibilityBranch(f.shape[1], lo.shape[1], y.shape[1], width, depth, lo.shape[2] // f.shape[2])
    steps = max(1, len(f) // batch)
    opt = torch.optim.AdamW(branch.parameters(), lr=lr, weight_decay=1e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=epochs * steps)
    best: tuple[float, dict[str, torch.Tensor]] = (math.inf, {})
    log = []
    for epoch in range(epochs):
        branch.train()
        perm = torch.randperm(len(f), generator=gen)
        for i in tqdm(range(steps), desc=f"branch {epoch + 1}/{epochs}", disable=not progress, leave=False):
            idx = perm[i * batch : (i + 1) * batch]
            logits = branch(f[idx].float(), lo[idx].float(), cell[idx], sc[idx])
            loss = nn.functional.binary_cross_entropy_with_logits(logits, y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        branch.eval()
        with torch.no_grad():
            v_logits = branch(vf, vlo, vcell, vsc)
            v_loss = float(nn.functional.binary_cross_entropy_with_logits(v_logits, vy))
        p, hidden = torch.sigmoid(v_logits).numpy(), val["labels"] < 0.5
        record = {
            "epoch": epoch + 1,
            "val_bce": round(v_loss, 4),
            "val_auroc_hidden": round(auroc(p[~hidden], p[hidden]), 4),
        }
        log.append(record)
        if progress:
            print(json.dumps(record), flush=True)
        if v_loss < best[0]:
            best = (v_loss, {k: v.clone() for k, v in branch.state_dict().items()})
    branch.load_state_dict(best[1])
    return branch.eval(), log


def branch_probability(branch: VisibilityBranch, maps: dict[str, np.ndarray], batch: int = 512) -> np.ndarray:
    """The branch's sigmoid (M, N) on stored maps (fit_branch's dict keys)."""
    out = []
    with torch.no_grad():
        for i in range(0, len(maps["cell"]), batch):
            part = [torch.from_numpy(maps[k][i : i + batch]) for k in INPUTS]
            logits = branch(part[0].float(), part[1].float(), part[2].long(), part[3].float())
            out.append(torch.sigmoid(logits).numpy())
    return np.concatenate(out)


def graft_branch(model: onnx.ModelProto, branch: VisibilityBranch, threshold: float) -> onnx.ModelProto:
    """The model with a ``visibility`` output: the branch (0.5 moved to ``threshold``) on the
    graph's own maps (branch_sources); its nodes and weights are named under PREFIX, nothing else
    changes. ValueError if the model has a visibility output already."""
    if any(o.name == "visibility" for o in model.graph.output):
        raise ValueError("the model already has a visibility output")
    inferred = _map_shapes(model)
    sources = branch_sources(model, branch.options["scale"], inferred)
    shapes = _source_shapes(model, sources, inferred)
    shipped = _Shipped(branch, threshold, shapes["features"][2] * shapes["features"][3]).eval()
    pool_nodes, pooled = _pooled(model, sources["low"])
    low_shape = [shapes["low"][0], shapes["low"][1], shapes["low"][2] // 2, shapes["low"][3] // 2]
    example = (
        torch.zeros(shapes["features"]),
        torch.zeros(low_shape),
        torch.zeros(shapes["cell"], dtype=torch.int64),
        torch.zeros(shapes["cell"]),
    )
    inputs = {"features": sources["features"], "low": pooled, "cell": sources["cell"], "scores": "scores"}
    buf = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(
            shipped,
            example,
            buf,
            input_names=[inputs[k] for k in INPUTS],
            output_names=["visibility"],
            dynamic_axes={**{inputs[k]: {0: "batch"} for k in INPUTS}, "visibility": {0: "batch"}},
            opset_version=max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
            dynamo=False,
        )
    sub = onnx.load_from_string(buf.getvalue())
    taken = {o for n in model.graph.node for o in n.output} | {i.name for i in model.graph.initializer}
    rename = {}
    for name in [o for n in sub.graph.node for o in n.output] + [i.name for i in sub.graph.initializer]:
        if name != "visibility":
            rename[name] = (
                name if name.startswith(f"/{PREFIX}/") or name.startswith(f"{PREFIX}.") else f"/{PREFIX}/{name}"
            )
    clash = sorted(set(rename.values()) & taken)
    if clash:
        raise ValueError(f"the branch's names clash with the graph's: {clash[:3]}")
    out = onnx.ModelProto()
    out.CopyFrom(model)
    out.graph.node.extend(pool_nodes)
    for init in sub.graph.initializer:
        init.name = rename[init.name]
        out.graph.initializer.append(init)
    for node in sub.graph.node:
        node.input[:] = [rename.get(i, i) for i in node.input]
        node.output[:] = [rename.get(o, o) for o in node.output]
        node.name = node.name if node.name.startswith(f"/{PREFIX}/") else f"/{PREFIX}/{node.name.lstrip('/')}"
        out.graph.node.append(node)
    n = shapes["cell"][1]
    out.graph.output.append(helper.make_tensor_value_info("visibility", onnx.TensorProto.FLOAT, ["batch", n]))
    onnx.checker.check_model(out)
    return out


def _pooled(model: onnx.ModelProto, low: str) -> tuple[list[onnx.NodeProto], str]:
    """Nodes that max-pool the map ``low`` by 2, and the name of the pooled float map: on the
    quantized map when ``low`` is a DequantizeLinear's output (then dequantized the same way),
    else on ``low`` itself."""
    pool = {"kernel_shape": [2, 2], "strides": [2, 2]}
    dq = _producer(model).get(low)
    name = f"/{PREFIX}/pool"
    if dq is None or dq.op_type != "DequantizeLinear":
        return [helper.make_node("MaxPool", [low], [f"{name}/output_0"], name=name, **pool)], f"{name}/output_0"
    nodes = [
        helper.make_node("MaxPool", [dq.input[0]], [f"{name}/quantized"], name=name, **pool),
        helper.make_node(
            "DequantizeLinear",
            [f"{name}/quantized", *dq.input[1:]],
            [f"{name}/output_0"],
            name=f"{name}/DequantizeLinear",
            **{a.name: helper.get_attribute_value(a) for a in dq.attribute},
        ),
    ]
    return nodes, f"{name}/output_0"


def _source_shapes(
    model: onnx.ModelProto, sources: dict[str, str], shapes: dict[str, tuple[int, list[int]]]
) -> dict[str, list[int]]:
    """Batch-1 shapes of the branch's inputs; the cells' (1, N) from the score convolution's weight."""
    made_by = _producer(model)
    weight = sources["score_weight"]
    while weight in made_by:  # a quantized weight: back through its DequantizeLinear
        weight = made_by[weight].input[0]
    n = next(i.dims[0] for i in model.graph.initializer if i.name == weight)
    return {"features": shapes[sources["features"]][1], "low": shapes[sources["low"]][1], "cell": [1, int(n)]}


def without_visibility(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model less its ``visibility`` output and whatever computed only that; its metadata, if
    it has some, then lists the outputs left and no longer describes a visibility output."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    kept_outputs = [o for o in out.graph.output if o.name != "visibility"]
    del out.graph.output[:]
    out.graph.output.extend(kept_outputs)
    needed = {o.name for o in kept_outputs}
    nodes = []
    for node in reversed(list(out.graph.node)):
        if any(o in needed for o in node.output):
            nodes.append(node)
            needed.update(i for i in node.input if i)
    del out.graph.node[:]
    out.graph.node.extend(reversed(nodes))
    inits = [i for i in out.graph.initializer if i.name in needed]
    del out.graph.initializer[:]
    out.graph.initializer.extend(inits)
    for prop in out.metadata_props:
        if prop.key == META_KEY:
            meta = json.loads(prop.value)
            meta.pop("visibility", None)
            prop.value = json.dumps({**meta, "outputs": [o.name for o in kept_outputs]})
    onnx.checker.check_model(out)
    return out
