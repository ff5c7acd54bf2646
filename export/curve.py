"""The learning curve of a run: validation NME and learning rate per epoch, stage after stage.

    python -m export.curve runs/fast06/teacher runs/fast06/restart1 --out curve.png [--window 9]
    python -m export.curve runs/a runs/b --overlay --out probes.png

Each argument is a stage's run folder (or its log.txt); the stages follow one another on the x
axis, or with --overlay each starts at epoch 1 (runs side by side, to compare). Validation NME is
drawn per epoch (dots) and as a running median over --window epochs (line), which shows the trend
through the epoch-to-epoch noise, up to 1.5x the best; the learning rate on the right.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def read_log(path: str | Path) -> list[dict]:
    """The epoch records of a stage's log.txt (or its folder), one per epoch: where a resumed
    leg logged an epoch again, the later record counts."""
    path = Path(path)
    path = path / "log.txt" if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"no training log at {path}")
    records = {}
    for line in path.read_text().splitlines():
        if line.startswith("{"):
            r = json.loads(line)
            records[r["epoch"]] = r
    return [records[e] for e in sorted(records)]


def running_median(values: np.ndarray, window: int) -> np.ndarray:
    """The median of each value and its neighbours, window values centred on it (fewer at the ends)."""
    half = window // 2
    return np.array([np.nanmedian(values[max(0, i - half) : i + half + 1]) for i in range(len(values))])


def stage_offsets(stages: dict[str, list[dict]], overlay: bool = False) -> list[int]:
    """Where each stage's epoch 0 sits on the x axis: after the stage before it, or at 0 (overlay)."""
    offsets, start = [], 0
    for records in stages.values():
        offsets.append(start)
        if not overlay and records:
            start += int(records[-1]["epoch"])
    return offsets


def plot_curve(stages: dict[str, list[dict]], path: str | Path, window: int = 9, overlay: bool = False) -> Path:
    """Write a PNG of the stages' validation NME and learning rate, one after another (or overlaid)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    lr_ax = ax.twinx()
    lows = []
    for i, ((name, records), start) in enumerate(zip(stages.items(), stage_offsets(stages, overlay))):
        x = start + np.array([r["epoch"] for r in records])
        nme = np.array([r.get("nme", np.nan) for r in records], float)
        color = f"C{i}"
        ax.plot(x, nme, ".", color=color, alpha=0.3, markersize=3)
        best = int(np.nanargmin(nme)) if np.isfinite(nme).any() else None
        if best is not None:
            lows.append(nme[best])
        label = name + (f" (best {nme[best]:.2f} % at epoch {int(x[best] - start)})" if best is not None else "")
        ax.plot(x, running_median(nme, window), "-", color=color, label=label)
        lr_ax.plot(x, [r["lr"] for r in records], "--", color=color, alpha=0.5, linewidth=1)
        if start:
            ax.axvline(start + 0.5, color="grey", linewidth=0.8)
    if lows:  # the first epochs' errors are far above the rest: keep the scale for the tail
        ax.set_ylim(0.95 * min(lows), 1.5 * min(lows))
    lr_ax.set_ylim(bottom=0)
    ax.set_xlabel("epoch" if overlay else "epoch (stages one after another)")
    ax.set_ylabel(f"validation NME % (dots; line: median of {window})")
    lr_ax.set_ylabel("learning rate (dashed)")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m export.curve", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("stages", nargs="+", help="run folders (or log.txt files), in the order they trained")
    ap.add_argument("--out", required=True, help="PNG to write")
    ap.add_argument("--window", type=int, default=9, help="epochs in the running median")
    ap.add_argument("--overlay", action="store_true", help="each run from epoch 1, to compare runs")
    a = ap.parse_args(argv)
    stages = {Path(s).name if Path(s).is_dir() else Path(s).parent.name: read_log(s) for s in a.stages}
    print(plot_curve(stages, a.out, a.window, a.overlay))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
