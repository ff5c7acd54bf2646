"""Bring an exported PIPNet file up to the current shipped form without retraining:

* format 2 -> format 3: the graph stops before the neighbour averaging and outputs each
  landmark's candidates (own prediction + neighbour votes); the SDK merges them in NumPy;
* int8 weights -> 7-bit weights (per output channel, symmetric, [-64, 64]; int32 biases
  rescaled to match), so onnxruntime's u8s8 kernels on CPUs without VNNI cannot saturate;
* the file's own digest in its metadata (``export.onnx_meta.sealed``).

    python -m export.upgrade pipnet_sdk/models/pipnet-fast.onnx --out pipnet-fast.v3.onnx
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .onnx_meta import file_metadata, save_with_metadata

WEIGHT_LEVELS = 64  # 7-bit symmetric: |u8 x w| pair sums stay below 2^15


def _producers(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    return {o: n for n in graph.node for o in n.output}


def seven_bit_weights(model: onnx.ModelProto) -> int:
    """Requantize every int8 Conv weight of a QDQ graph to [-64, 64] per output channel (in
    place), rescaling its int32 bias so that bias scale = input scale x weight scale still holds.
    Returns the number of weights changed."""
    g = model.graph
    init = {t.name: t for t in g.initializer}
    made_by = _producers(g)
    changed = 0
    for conv in (n for n in g.node if n.op_type == "Conv"):
        w_dq = made_by.get(conv.input[1])
        if w_dq is None or w_dq.op_type != "DequantizeLinear" or w_dq.input[0] not in init:
            continue
        w_t, s_t = init[w_dq.input[0]], init[w_dq.input[1]]
        if w_t.data_type != onnx.TensorProto.INT8:
            continue
        w = numpy_helper.to_array(w_t).astype(np.float64)
        scale = numpy_helper.to_array(s_t).astype(np.float64)
        peak = np.abs(w).reshape(len(w), -1).max(axis=1)
        if peak.max() <= WEIGHT_LEVELS:
            continue  # already within 7 bits
        factor = np.maximum(peak, 1) / WEIGHT_LEVELS  # new scale = old scale x factor
        shape = (-1,) + (1,) * (w.ndim - 1)
        w7 = np.clip(np.round(w / factor.reshape(shape)), -WEIGHT_LEVELS, WEIGHT_LEVELS).astype(np.int8)
        w_t.CopyFrom(numpy_helper.from_array(w7, w_t.name))
        s_t.CopyFrom(numpy_helper.from_array((scale * factor).astype(np.float32), s_t.name))
        if len(conv.input) > 2:  # int32 bias: same float values on the new scale
            b_dq = made_by.get(conv.input[2])
            if b_dq is not None and b_dq.op_type == "DequantizeLinear" and b_dq.input[0] in init:
                b_t, bs_t = init[b_dq.input[0]], init[b_dq.input[1]]
                b = numpy_helper.to_array(b_t).astype(np.float64) * numpy_helper.to_array(bs_t)
                bias_scale = numpy_helper.to_array(bs_t).astype(np.float64) * factor
                b_t.CopyFrom(numpy_helper.from_array(np.round(b / bias_scale).astype(np.int32), b_t.name))
                bs_t.CopyFrom(numpy_helper.from_array(bias_scale.astype(np.float32), bs_t.name))
        changed += 1
    return changed


def _prune(graph: onnx.GraphProto) -> None:
    """Remove nodes and initializers that no graph output depends on."""
    needed = {o.name for o in graph.output}
    keep: list[onnx.NodeProto] = []
    for node in reversed(list(graph.node)):
        if any(o in needed for o in node.output):
            keep.append(node)
            needed.update(node.input)
    del graph.node[:]
    graph.node.extend(reversed(keep))
    unused = [t for t in graph.initializer if t.name not in needed]
    for t in unused:
        graph.initializer.remove(t)


def candidates_output(model: onnx.ModelProto, num_landmarks: int, num_neighbors: int) -> None:
    """Format 2 -> 3 in place: the averaging MatMul's candidate input, (B, N * (1 + C), 2) made
    by a Reshape of (B, N, 1 + C, 2), becomes the output ``candidates``; ``points`` and
    ``points_own`` go."""
    g = model.graph
    made_by = _producers(g)
    matmul = made_by["points"]
    reshape = made_by[matmul.input[1]]
    if matmul.op_type != "MatMul" or reshape.op_type != "Reshape":
        raise ValueError("not the format-2 graph export.deploy wrote: no averaging MatMul before 'points'")
    source = reshape.input[0]  # (B, N, 1 + C, 2)
    g.node.append(helper.make_node("Identity", [source], ["candidates"], name="/candidates"))
    scores = next(o for o in g.output if o.name == "scores")
    out = helper.make_tensor_value_info(
        "candidates", onnx.TensorProto.FLOAT, ["batch", num_landmarks, 1 + num_neighbors, 2]
    )
    del g.output[:]
    g.output.extend([out, scores])
    _prune(g)


def upgrade(src: str | Path, dst: str | Path, version: str | None = None) -> dict:
    """Write ``src`` in the current form at ``dst`` (with a new model ``version`` if given);
    returns what changed."""
    m = onnx.load(str(src))
    meta = file_metadata(m)
    report = {"from_format": meta["format"], "weights_to_7_bit": 0, "version": version or meta["version"]}
    meta["version"] = report["version"]
    if meta["format"] == 2:
        candidates_output(m, meta["num_landmarks"], meta["num_neighbors"])
        meta["format"] = 3
    if meta.get("precision", "").startswith("int8"):
        report["weights_to_7_bit"] = seven_bit_weights(m)
        meta["precision"] = "int8 (7-bit weights)"
    onnx.checker.check_model(m)
    save_with_metadata(m, dst, meta)
    return report


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m export.upgrade", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("model", help="an exported PIPNet .onnx (format 1, 2 or 3)")
    ap.add_argument("--out", required=True, help="where to write the upgraded file")
    ap.add_argument("--version", help="the model version to record (default: keep the file's)")
    a = ap.parse_args(argv)
    print(json.dumps(upgrade(a.model, a.out, a.version)))


if __name__ == "__main__":
    main()
