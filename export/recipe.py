"""The full recipe in one command: train -> self-training with curriculum (if the config has
"stc") -> ONNX (fp32, and static int8 with its NME cost on the validation split).

    python -m export.recipe --config export/configs/pipnet-r18.json --out runs/r18
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


from .stc import DEFAULT_UNLABELED
from .stc import run as run_stc
from .to_onnx import export_and_check
from .train import load_config, train


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
        report["onnx"] = export_and_check(best, out / f"{cfg['name']}.fp32.onnx", out / f"{cfg['name']}.int8.onnx")
    (out / "report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
