"""The full recipe in one command: train -> self-training with curriculum (if the config has
"stc") -> ONNX (fp32, and static int8 with its NME cost on the validation split).

    python -m export.recipe --config export/configs/pipnet-r18.json --out runs/r18
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from .stc import DEFAULT_UNLABELED
from .stc import run as run_stc
from .train import load_config, train


def val_nme_onnx(path: str | Path, crops: np.ndarray, points: np.ndarray, norm: tuple[int, int]) -> float:
    """Mean NME (%) of an ONNX model through the SDK on un-jittered validation crops."""
    from pipnet_sdk.landmark_model import LandmarkModel

    pred, _ = LandmarkModel(path).run_crops(crops)
    err = np.linalg.norm(pred - points, axis=-1).mean(-1)
    return float((err / np.linalg.norm(points[:, norm[0]] - points[:, norm[1]], axis=-1)).mean() * 100)


def export_and_check(ckpt: Path, out: Path, name: str, int8: bool = True) -> dict[str, Any]:
    """ONNX files for a checkpoint, parity figures, validation NME of fp32 and int8."""
    from .schemes import get_scheme
    from .to_onnx import export_model, load_checkpoint, metadata, parity, quantize, val_crops

    model, cfg, meta = load_checkpoint(ckpt)
    cfg["name"] = name
    nb = np.array(meta["neighbor_indices"])
    info = metadata(cfg, np.array(meta["mean_face"]), nb,
                    training={"data": cfg["labeled"], "epochs": cfg["epochs"], "stc": bool(cfg["stc"])})
    fp32 = export_model(model, info, out / f"{name}.fp32.onnx")
    crops, pts = val_crops(cfg, 10_000)
    norm = get_scheme(cfg["scheme"]).norm
    report: dict[str, Any] = {"parity": parity(model, fp32, crops[:16], nb), "val_nme_fp32": val_nme_onnx(fp32, crops, pts, norm)}
    if int8:
        q = quantize(fp32, out / f"{name}.int8.onnx", crops[:128])
        report["val_nme_int8"] = val_nme_onnx(q, crops, pts, norm)
    return report


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m export.recipe", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--device")
    ap.add_argument("--epochs", type=int, help="override epochs (teacher and students)")
    ap.add_argument("--limit", type=int, help="faces per folder (smoke runs)")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--skip-export", action="store_true")
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args(argv)
    cfg = load_config(a.config, {"epochs": a.epochs, "limit": a.limit})
    out = Path(a.out)
    stc = cfg["stc"]
    report: dict[str, Any] = {"teacher": train(dict(cfg, stc=None), out / "teacher", a.resume, a.device, not a.quiet)}
    best = out / "teacher" / "best.pt"
    if stc:
        s_cfg = dict(cfg, stc={"grids": stc.get("grids", [2, 4])}, epochs=a.epochs or stc.get("epochs", cfg["epochs"]))
        report["stc"] = run_stc(s_cfg, best, out / "stc", stc.get("rounds", 1), stc.get("unlabeled", DEFAULT_UNLABELED),
                                a.device, not a.quiet, a.resume)
        cand = out / "stc" / f"round{stc.get('rounds', 1)}" / "best.pt"
        # keep the student only if it is better on validation
        if report["stc"]["best_val_nme"] < report["teacher"]["best_val_nme"]:
            best = cand
    report["chosen"] = str(best)
    if not a.skip_export:
        report["onnx"] = export_and_check(best, out, cfg["name"])
    (out / "report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
