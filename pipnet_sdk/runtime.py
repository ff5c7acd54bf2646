"""The one place that builds onnxruntime sessions."""

from __future__ import annotations

import os
from collections.abc import Sequence

import onnxruntime as ort

from .errors import ModelFormatError

__all__ = ["ModelFormatError", "check_providers", "make_session"]


def check_providers(providers: Sequence | str | None) -> list:
    """onnxruntime providers as a list (a single name is one provider, not its letters; a provider
    may also be a (name, options) pair). At least one must be available here: onnxruntime itself
    skips the others with a warning (so ["CUDAExecutionProvider", "CPUExecutionProvider"] runs
    anywhere)."""
    if not providers:
        return ["CPUExecutionProvider"]
    listed = [providers] if isinstance(providers, str) else list(providers)
    available = ort.get_available_providers()
    names = [p[0] if isinstance(p, tuple) and p else p for p in listed]
    if not any(name in available for name in names):
        raise ValueError(
            f"none of the onnxruntime providers {names} is available here; this onnxruntime has {available}"
        )
    return listed


def make_session(
    path: str | os.PathLike,
    providers: Sequence | str | None = None,
    threads: int | None = None,
    data: bytes | None = None,
    optimize: bool = True,
) -> ort.InferenceSession:
    """An InferenceSession for the model at ``path`` (or its bytes ``data``, already read; ``path``
    then names it in errors); ``threads`` sets intra-op threads (None = ORT default).
    ``optimize=False`` turns graph optimisation off: an int8 QDQ graph then runs in float (the
    reference its integer kernels are checked against)."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    if threads is not None:
        if int(threads) < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(
            os.fspath(path) if data is None else data,
            sess_options=opts,
            providers=check_providers(providers),
        )
    except Exception as e:  # onnxruntime raises its own non-ValueError types for bad files
        if type(e).__module__.startswith("onnxruntime"):
            raise ModelFormatError(f"{os.fspath(path)}: not a loadable ONNX file: {e}") from e
        raise
