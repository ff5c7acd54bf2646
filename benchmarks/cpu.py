"""The machine a benchmark ran on: CPU model and the instruction-set flags that decide which int8,
fp32 and bf16 kernels onnxruntime and torch use. Every benchmark prints this line with its figures."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16")


def cpu_info() -> dict[str, Any]:
    """CPU model, logical CPU count, and which of FLAGS it has (AMX reported as the amx_* it has)."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and ":" in line:
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and ":" in line:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    amx = sorted(f for f in flags if f.startswith("amx"))
    return {
        "model": model,
        "cpus": os.cpu_count(),
        "flags": {f: f in flags for f in FLAGS if not f.startswith("amx")},
        "amx": amx,
    }


def cpu_line(info: dict[str, Any] | None = None) -> str:
    """One line: 'CPU <model> (<n> logical CPUs); flags: ...; absent: ...'."""
    info = info or cpu_info()
    on = [f for f, v in info["flags"].items() if v] + info["amx"]
    off = [f for f, v in info["flags"].items() if not v] + ([] if info["amx"] else ["amx_*"])
    return (
        f"CPU {info['model']} ({info['cpus']} logical CPUs); flags: {' '.join(on) or '-'}; "
        f"absent: {' '.join(off) or '-'}"
    )
