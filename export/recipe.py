"""The full recipe in one command: train -> warm restarts (if the config has "restarts") ->
self-training with curriculum (if it has "stc") -> ONNX (fp32, and static int8 with its NME
cost on the validation split).

The stages are named "teacher" (the first training), "restart1", "restart2", ... and "stc";
each writes its run folder OUT/<stage>.

"restarts": [{"lr": .., "epochs": .., ...}, ...]: each restart trains a new cosine cycle from the
previous stage's result; other keys override the config for that stage, e.g.
"labeled": ["data/300w/train"] fine-tunes on the test set's domain alone (same validation split;
the neighbour indices stay those of the weights), "val_fraction": 0 fits every labeled face (no
validation: the last epoch is taken), "average_last": K makes the stage's result the mean of its
last K epochs' weights, "teacher": checkpoint distils a bigger model into this stage,
"pseudo_labels": {"teacher": model.onnx or an earlier stage's name, ...} adds unlabeled faces
labeled by an exported model (both in export/train.py); an earlier stage named there is exported
first, as static int8, to OUT/<stage>.onnx. "stc": {"grids", "rounds", "epochs", "lr", "teacher"}:
with "teacher" (a checkpoint of another model, e.g. pipnet-r18 for pipnet-fast) the student
starts from the previous stage's weights and learns from that teacher's pseudo-labels
(distillation on the unlabeled faces); without it the previous stage is the teacher and the
student starts afresh.

    python -m export.recipe --config export/configs/pipnet-r18.json --out runs/r18

A recipe longer than one sitting: `--stop-after MINUTES` stops the stage in progress at an epoch
end once the minutes are spent (its schedule unchanged), and a later `--resume` goes on from there.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from .config import check_files, load_config
from .pseudo import DEFAULT_UNLABELED
from .stc import run as run_stc
from .to_onnx import export_and_check
from .train import train


def stage_result(run: Path, summary: dict[str, Any], cfg: dict[str, Any]) -> tuple[Path, float]:
    """A training stage's result and its validation NME: best.pt, or with "average_last" the
    weight average."""
    if cfg["average_last"]:
        return run / "averaged.pt", summary["averaged_val_nme"]
    return run / "best.pt", summary["best_val_nme"]


def exported_stage(name: str, result: Path, out: Path, resume: bool) -> dict[str, Any]:
    """Export a stage's result as static int8 to OUT/<name>.onnx (fp32 beside it), for a later
    stage's "pseudo_labels" teacher; kept when resuming. Returns the export report."""
    onnx = out / f"{name}.onnx"
    if resume and onnx.exists():
        return {"int8": str(onnx), "reused": True}
    return export_and_check(result, out / f"{name}.fp32.onnx", onnx)


def write_report(out: Path, report: dict[str, Any]) -> None:
    """OUT/report.json, and the same on stdout."""
    (out / "report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m export.recipe", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--config", required=True, help="JSON config (keys: export/config.py DEFAULTS)")
    ap.add_argument("--out", required=True, help="folder for the stages' run folders, the ONNX files and report.json")
    ap.add_argument("--device", help="cpu or cuda (default: cuda if available)")
    ap.add_argument("--epochs", type=int, help="override epochs (teacher and students)")
    ap.add_argument("--limit", type=int, help="faces per folder (smoke runs)")
    ap.add_argument("--resume", action="store_true", help="skip finished stages and continue the interrupted one")
    ap.add_argument("--skip-export", action="store_true", help="no final ONNX export")
    ap.add_argument(
        "--stop-after",
        dest="stop_after",
        type=float,
        metavar="MINUTES",
        help="stop at the first epoch end after this many minutes; --resume goes on",
    )
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    a = ap.parse_args(argv)
    started = time.time()
    cfg = load_config(a.config, {"epochs": a.epochs, "limit": a.limit})
    if a.stop_after is not None and a.stop_after <= 0:
        ap.error("--stop-after must be positive")
    if a.stop_after is not None and cfg["stc"]:
        ap.error("--stop-after: this recipe has STC, whose rounds cannot pause; run it without --stop-after")
    check_files(cfg, a.config)  # every file the recipe needs, before any work
    stages = ("teacher",)
    for i, restart in enumerate(cfg["restarts"], 1):
        check_files({**cfg, "init": None, "stc": None, **restart}, f"{a.config}: restart{i}", stages)
        stages += (f"restart{i}",)
    out = Path(a.out)
    stc = cfg["stc"]

    def minutes_left() -> float | None:
        return None if a.stop_after is None else max(1e-3, a.stop_after - (time.time() - started) / 60)

    def stopped(report: dict[str, Any], stage: str) -> bool:
        """True, with the report written, when --stop-after ended the stage early."""
        if not report[stage]["paused"]:
            return False
        report["stopped_in"] = stage
        write_report(out, report)
        print(
            f"stopped in stage {stage} at epoch {report[stage]['epoch']} of {report[stage]['epochs']}: "
            f"run the same command with --resume to go on"
        )
        return True

    report: dict[str, Any] = {
        "teacher": train(
            dict(cfg, stc=None), out / "teacher", a.resume, a.device, not a.quiet, stop_after=minutes_left()
        )
    }
    if stopped(report, "teacher"):
        return
    results = {"teacher": stage_result(out / "teacher", report["teacher"], cfg)}  # stage -> (result, its NME)
    best, best_nme = results["teacher"]
    for i, restart in enumerate(cfg["restarts"], 1):
        name = f"restart{i}"
        # a restart has its own time budget only if it names one
        r_cfg = {**cfg, "max_minutes": None, **restart, "stc": None, "init": str(best)}
        r_cfg["epochs"] = a.epochs or restart["epochs"]
        teacher = (r_cfg["pseudo_labels"] or {}).get("teacher")
        if teacher in results:  # an earlier stage labels the unlabeled faces
            report[f"{teacher}.onnx"] = exported_stage(teacher, results[teacher][0], out, a.resume)
            r_cfg["pseudo_labels"] = dict(r_cfg["pseudo_labels"], teacher=str((out / f"{teacher}.onnx").resolve()))
        report[name] = train(r_cfg, out / name, a.resume, a.device, not a.quiet, stop_after=minutes_left())
        if stopped(report, name):
            return
        results[name] = stage_result(out / name, report[name], r_cfg)
        best, best_nme = results[name]
    if stc:
        s_cfg = dict(
            cfg,
            stc={"grids": stc.get("grids", [2, 4])},
            epochs=a.epochs or stc.get("epochs", cfg["epochs"]),
            lr=stc.get("lr", cfg["lr"]),
            max_minutes=None,
        )
        teacher = best
        if stc.get("teacher"):
            teacher, s_cfg["init"] = Path(stc["teacher"]), str(best)
        report["stc"] = run_stc(
            s_cfg,
            teacher,
            out / "stc",
            stc.get("rounds", 1),
            stc.get("unlabeled", DEFAULT_UNLABELED),
            a.device,
            not a.quiet,
            a.resume,
        )
        # keep the student only if it is better on validation
        if report["stc"]["best_val_nme"] < best_nme:
            best = out / "stc" / f"round{stc.get('rounds', 1)}" / "best.pt"
    report["chosen"] = str(best)
    if not a.skip_export:
        report["onnx"] = export_and_check(best, out / f"{cfg['name']}.fp32.onnx", out / f"{cfg['name']}.int8.onnx")
    write_report(out, report)


if __name__ == "__main__":
    main()
