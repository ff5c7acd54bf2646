"""Every shipped training config runs its whole recipe (export.recipe: first stage, restarts, STC,
ONNX fp32 + int8), shrunk to a few faces, one epoch per stage and small crops."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "export" / "configs"
R18_RUN = "runs/r18/"  # pipnet-fast-distill.json's STC teacher comes from pipnet-r18.json's recipe


def shrink_sizes(stage: dict[str, Any], stride: int, base: dict[str, Any]) -> dict[str, Any]:
    """A quarter of the map grid (at least 2 cells), the crops scaled alike, for a config or a
    restart that sets an input size (base: the values it inherits otherwise)."""
    if "input_size" not in stage:
        return stage
    size = stride * max(2, stage["input_size"] // stride // 4)
    base_size = stage.get("base_size", base["base_size"])
    return dict(stage, input_size=size, base_size=round(base_size * size / stage["input_size"]))


def shrunk(cfg: dict[str, Any], r18_out: Path) -> dict[str, Any]:
    """cfg on a tiny network (width 0.25; an ImageNet-initialised trunk keeps its width and starts
    from its weights when they are installed) and crops, batches of 8, a validation split big
    enough to calibrate int8 on 12 faces a folder, and pipnet-r18's run folder at r18_out. An
    "init" (weights from another run, made by export.from_onnx or a recipe) is left out: the tiny
    network starts from its own weights."""
    from export.pretrained import find_weights

    tiny: dict[str, Any] = {"width": 0.25}
    if cfg.get("pretrained"):
        try:
            find_weights(cfg["backbone"], cfg.get("pretrained_path"))
            tiny = {}
        except FileNotFoundError:
            tiny = {"pretrained": None}
    small = shrink_sizes(dict(cfg, **tiny, batch_size=8, val_fraction=0.25), cfg["stride"], cfg)
    small.pop("init", None)
    small["restarts"] = [shrink_sizes(r, cfg["stride"], small) for r in cfg.get("restarts", [])]
    if cfg.get("stc", {}).get("teacher", "").startswith(R18_RUN):
        small["stc"] = dict(cfg["stc"], teacher=str(r18_out / cfg["stc"]["teacher"][len(R18_RUN) :]))
    return small


@pytest.mark.slow
def test_each_shipped_config_runs_its_recipe(tmp_path: Path, shared_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from export import recipe

    names = sorted(p.name for p in CONFIGS.glob("*.json"))
    assert "pipnet-r18.json" in names
    monkeypatch.setenv("PIPNET_SHARED", str(shared_dir))
    monkeypatch.setenv("PIPNET_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(ROOT)
    for name in ["pipnet-r18.json"] + [n for n in names if n != "pipnet-r18.json"]:  # r18 teaches distill
        cfg = json.loads((CONFIGS / name).read_text())
        conf, out = tmp_path / name, tmp_path / name.removesuffix(".json")
        conf.write_text(json.dumps(shrunk(cfg, tmp_path / "pipnet-r18")))
        recipe.main(["--config", str(conf), "--out", str(out), "--epochs", "1", "--limit", "12", "--quiet"])
        report = json.loads((out / "report.json").read_text())
        stages = ["teacher"] + [f"restart{i}" for i in range(1, len(cfg.get("restarts", [])) + 1)]
        stages += ["stc"] if cfg.get("stc") else []
        assert all(report[s]["epoch"] == 1 for s in stages), name
        assert (out / f"{cfg['name']}.int8.onnx").exists(), name
