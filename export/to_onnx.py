"""Export a trained checkpoint to a self-describing ONNX file the SDK reads, check parity, and
optionally quantize to int8 (static, calibrated on real face crops).

    python -m export.to_onnx runs/fast/best.pt --out runs/fast/pipnet-fast.onnx --name pipnet-fast [--int8]

To ship the file, copy it over pipnet_sdk/models/ and update its sha256 in pipnet_sdk/registry.py
(the SDK refuses a packaged file whose digest the registry does not pin): export/README.md.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from .checkpoint import load_checkpoint
from .config import DEFAULTS, build_model, load_config
from .deploy import DecodedPIPNet, output_names, stem_space_to_depth
from .evaluate import nme_per_face
from .model import MEAN, STD, PIPNet
from .onnx_meta import file_metadata, save_with_metadata, set_metadata
from .pseudo import pseudo_label_settings
from .schemes import get_scheme

HEAD_NAMES = ["score", "offset_x", "offset_y", "neighbor_x", "neighbor_y"]  # format 1


def metadata(cfg: dict[str, Any], mean_face: np.ndarray, neighbors: np.ndarray, **extra: Any) -> dict[str, Any]:
    """The JSON the SDK reads (pipnet_sdk.landmark_model.LandmarkSpec), less "format", which
    export_model sets from the graph it writes."""
    scheme = get_scheme(cfg["scheme"])
    return {
        "name": cfg["name"],
        "version": cfg["version"],
        "num_landmarks": scheme.num_points,
        "scheme": scheme.name,
        "input_size": cfg["input_size"],
        "stride": cfg["stride"],
        "num_neighbors": cfg["num_neighbors"],
        "neighbor_indices": np.asarray(neighbors).tolist(),
        "mean_face": np.round(np.asarray(mean_face), 5).tolist(),
        "normalization": {"color": "rgb", "mean": list(MEAN), "std": list(STD)},
        "crop": dict(cfg["crop"]),
        "flip": list(scheme.flip),
        "norm_points": scheme.norm,
        "backbone": cfg["backbone"],
        "width": cfg["width"],
        **extra,
    }


def export_model(model: PIPNet, meta: dict[str, Any], path: str | Path, opset: int = 17, decoded: bool = True) -> Path:
    """Write model (eval mode, float32) to ONNX with a dynamic batch and the metadata. By default
    in the shipped form, format 3 (export.deploy): each landmark's candidates read in the graph at
    its argmax cell, the stem as SpaceToDepth + conv. ``decoded=False`` writes format 1: the five
    head maps, as the network is. Either way the SDK merges the neighbour votes in NumPy."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.float().eval().to(memory_format=torch.contiguous_format)
    s = meta["input_size"]
    net = DecodedPIPNet(model, np.asarray(meta["neighbor_indices"]), s).eval() if decoded else model
    visibility = ["visibility_map"] if model.visibility is not None else []
    names = output_names(model) if decoded else HEAD_NAMES + visibility
    with torch.no_grad():
        torch.onnx.export(
            net,
            (torch.zeros(1, 3, s, s),),
            str(path),
            input_names=["input"],
            output_names=names,
            dynamic_axes={"input": {0: "batch"}, **{o: {0: "batch"} for o in names}},
            opset_version=opset,
            dynamo=False,
        )
    m = onnx.load(str(path))
    if decoded:
        stem_space_to_depth(m, s)
    save_with_metadata(m, path, {**meta, "format": 3 if decoded else 1, "outputs": names})
    return path


def export_random(
    path: str | Path,
    input_size: int = 64,
    stride: int = 16,
    backbone: str = "resnet18",
    num_landmarks: int = 68,
    seed: int = 0,
    width: float = 0.25,
    decoded: bool = True,
) -> Path:
    """A small random-weights model with full metadata (for tests that need no accuracy)."""
    torch.manual_seed(seed)
    scheme = {68: "ibug68", 98: "wflw98", 29: "cofw29", 19: "aflw19"}[num_landmarks]
    cfg = load_config(
        None,
        {
            "name": "random",
            "scheme": scheme,
            "backbone": backbone,
            "stride": stride,
            "input_size": input_size,
            "width": width,
        },
    )
    model = build_model(cfg)
    for m in model.modules():  # make outputs non-trivial so argmax and offsets vary
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_var.fill_(1.0)
    for head in (model.score, model.offset_x, model.offset_y, model.neighbor_x, model.neighbor_y):
        torch.nn.init.normal_(head.weight, std=0.05)
    rng = np.random.RandomState(seed)
    mean = rng.uniform(0.2, 0.8, (num_landmarks, 2)).astype(np.float32)
    from .data import neighbor_indices

    return export_model(model, metadata(cfg, mean, neighbor_indices(mean, cfg["num_neighbors"])), path, decoded=decoded)


def parity(model: PIPNet, onnx_path: str | Path, crops_bgr: np.ndarray, neighbors: np.ndarray) -> dict[str, float]:
    """Max differences against the reference (export.decode on the torch head maps), in pixels
    of the crop: the in-graph candidates run in torch and merged by the SDK, the SDK's NumPy
    decoder on the head maps (format 1), and the ONNX file in onnxruntime; and the ONNX scores'
    max abs difference."""
    from pipnet_sdk.decode import decode as numpy_decode
    from pipnet_sdk.decode import merge, vote_matrix
    from pipnet_sdk.landmark_model import LandmarkModel

    from .decode import decode as torch_decode

    lm = LandmarkModel(onnx_path)
    x = lm.preprocess(crops_bgr)
    nb = np.asarray(neighbors)
    with torch.no_grad():
        model = model.float().eval()
        heads = model(torch.from_numpy(x))
        graph_cands, graph_scores = DecodedPIPNet(model, nb, x.shape[-1]).eval()(torch.from_numpy(x))[:2]
    graph_pts = merge(graph_cands.numpy(), vote_matrix(nb))
    ref = torch_decode(heads, torch.from_numpy(nb)).numpy()
    ref_scores = heads[0].flatten(2).amax(-1).numpy()
    np_pts, _ = numpy_decode(*(h.numpy() for h in heads[:5]), nb)
    ort_pts, ort_scores = lm.decode(lm.forward(x))
    s = lm.spec.input_size
    px = lambda p: float(np.abs(p - ref).max() * s)  # noqa: E731
    return {
        "decode_px": px(graph_pts),
        "numpy_decode_px": px(np_pts),
        "torch_vs_ort_px": px(ort_pts),
        "scores_max_abs": float(
            max(np.abs(ort_scores - ref_scores).max(), np.abs(graph_scores.numpy() - ref_scores).max())
        ),
    }


def quantize(fp32_path: str | Path, out_path: str | Path, calib_crops_bgr: np.ndarray) -> Path:
    """Static QDQ int8 quantization calibrated on real face crops (uint8 BGR, network size)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from pipnet_sdk.landmark_model import LandmarkModel

    lm = LandmarkModel(fp32_path)
    batches = [lm.preprocess(calib_crops_bgr[i : i + 1]) for i in range(len(calib_crops_bgr))]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(batches)

        def get_next(self):
            b = next(self.it, None)
            return None if b is None else {"input": b}

    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
        # the network (backbone, head convolutions) is int8; in-graph decoding (format 3) stays float.
        # Weights use 7 bits (reduce_range): u8 x s7 pair sums fit in 16 bits, so the u8s8 kernels of
        # CPUs without VNNI (VPMADDUBSW) cannot saturate and every x86 CPU gives the same landmarks
        network = ("/backbone/", "/score/", "/offset_", "/neighbor_", "/visibility/")
        decoding = [n.name for n in onnx.load(str(pre)).graph.node if not n.name.startswith(network)]
        quantize_static(
            str(pre),
            str(out_path),
            Reader(),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
            reduce_range=True,
            nodes_to_exclude=decoding,
            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
        )
    meta = file_metadata(onnx.load(str(fp32_path), load_external_data=False))
    meta["precision"] = "int8 (7-bit weights)"
    set_metadata(out_path, meta)
    return Path(out_path)


def val_crops(cfg: dict[str, Any], count: int) -> tuple[np.ndarray, np.ndarray]:
    """Network-size BGR crops and normalised points from the validation split (no jitter)."""
    from .augment import AugmentConfig, augment
    from .train import prepare

    d = prepare(cfg, progress=True)  # cut first (with a progress bar) only when not cached
    flip = torch.tensor(get_scheme(cfg["scheme"]).flip)
    im = torch.from_numpy(d["val_images"][:count]).permute(0, 3, 1, 2)
    x, p = augment(
        im,
        torch.from_numpy(d["val_points"][:count]),
        cfg["input_size"],
        cfg["margin"],
        flip,
        AugmentConfig(),
        train=False,
    )
    crops = (x.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    return crops, p.numpy()


def val_nme_per_face(path: str | Path, crops: np.ndarray, points: np.ndarray, norm: tuple[int, int]) -> np.ndarray:
    """NME (%) of each crop, an ONNX model run through the SDK."""
    from pipnet_sdk.landmark_model import LandmarkModel

    pred = LandmarkModel(path).run_crops(crops).points
    return nme_per_face(pred, points, norm) * 100


def val_nme_onnx(path: str | Path, crops: np.ndarray, points: np.ndarray, norm: tuple[int, int]) -> float:
    """Mean NME (%) of an ONNX model through the SDK on un-jittered validation crops."""
    return float(val_nme_per_face(path, crops, points, norm).mean())


def export_and_check(
    ckpt: str | Path,
    fp32_path: str | Path,
    int8_path: str | Path | None = None,
    name: str | None = None,
    version: str | None = None,
    decoded: bool = True,
) -> dict[str, Any]:
    """Write the fp32 ONNX (and the static int8 one if int8_path), with parity figures and the
    validation NME of each (the int8 cost)."""
    model, cfg, meta = load_checkpoint(ckpt)
    cfg["name"] = name or cfg["name"]
    cfg["version"] = version or cfg["version"]
    nb = np.array(meta["neighbor_indices"])
    info = metadata(
        cfg,
        np.array(meta["mean_face"]),
        nb,
        training={
            "data": cfg["labeled"],
            "epochs": cfg["epochs"],
            "stc": bool(cfg["stc"]),
            "distilled": bool(cfg["teacher"]),
            "pseudo_labeled": (pseudo_label_settings(cfg) or {}).get("unlabeled"),
        },
    )
    fp32 = export_model(model, info, fp32_path, decoded=decoded)
    # a model fitted on all its faces (val_fraction 0) is calibrated and scored on the usual split
    # of them, which it has seen: the report says so
    crops, pts = val_crops(cfg if cfg["val_fraction"] else dict(cfg, val_fraction=DEFAULTS["val_fraction"]), 10_000)
    norm = get_scheme(cfg["scheme"]).norm
    report: dict[str, Any] = {
        "fp32": str(fp32),
        "val_seen_in_training": not cfg["val_fraction"],
        "parity": parity(model, fp32, crops[:16], nb),
        "val_nme_fp32": val_nme_onnx(fp32, crops, pts, norm),
    }
    if int8_path:
        q = quantize(fp32, int8_path, crops[:128])
        report.update(int8=str(q), val_nme_int8=val_nme_onnx(q, crops, pts, norm))
    return report


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m export.to_onnx", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("checkpoint")
    ap.add_argument("--out", required=True)
    ap.add_argument("--name", help="model name stored in the file (default: the config's)")
    ap.add_argument("--version")
    ap.add_argument(
        "--int8", action="store_true", help="also write static int8 (OUT with .int8.onnx) and report its NME cost"
    )
    ap.add_argument(
        "--int8-only", action="store_true", help="write the int8 model at OUT (fp32 beside it as .fp32.onnx)"
    )
    ap.add_argument(
        "--format",
        type=int,
        choices=(1, 3),
        default=3,
        help="3 (default, shipped): candidates read at the argmax cells in the graph; 1: the five head maps",
    )
    a = ap.parse_args(argv)
    out = Path(a.out)
    fp32 = out.with_suffix(".fp32.onnx") if a.int8_only else out
    int8 = out if a.int8_only else (out.with_suffix(".int8.onnx") if a.int8 else None)
    print(json.dumps(export_and_check(a.checkpoint, fp32, int8, a.name, a.version, a.format == 3), indent=2))


if __name__ == "__main__":
    main()
