"""The one place that builds onnxruntime sessions."""
from __future__ import annotations

import os
from typing import Sequence

import onnxruntime as ort


class ModelFormatError(ValueError):
    """The file is not a model this SDK can use."""


def make_session(
    path: str | os.PathLike, providers: Sequence | None = None, threads: int | None = None,
    data: bytes | None = None, optimize: bool = True,
) -> ort.InferenceSession:
    """An InferenceSession for the model at ``path`` (or its bytes ``data``, already read; ``path``
    then names it in errors); ``threads`` sets intra-op threads (None = ORT default).
    ``optimize=False`` turns graph optimisation off: an int8 QDQ graph then runs in float (the
    reference its integer kernels are checked against)."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                     else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    if threads is not None:
        if int(threads) < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(
            os.fspath(path) if data is None else data, sess_options=opts,
            providers=list(providers) if providers else ["CPUExecutionProvider"],
        )
    except Exception as e:  # onnxruntime raises its own non-ValueError types for bad files
        if type(e).__module__.startswith("onnxruntime"):
            raise ModelFormatError(f"{os.fspath(path)}: not a loadable ONNX file: {e}") from e
        raise
