"""Prototype YuNet detector with the speed levers of issue 23, for benchmarks/detector_levers.py.

A drop-in for ``pipnet_sdk.detect.YuNet`` (same ``detect`` / ``detect_with_keypoints`` contract, same
decoding formula and NMS), written outside pipnet_sdk/ so that every lever can be measured without
touching the SDK. Each lever is an option, so a row of the levers table is one constructor call:

* ``size``: long side the image is resized to (never enlarged); ``cascade``: further sizes tried, in
  order, only while no face has been found (e.g. size=320, cascade=(640,): a second pass at 640 on
  images where 320 finds nothing);
* ``prep``: "sdk" (float canvas allocated per call, filled, transposed: a non-contiguous view that
  onnxruntime copies again), "blob" (uint8 pad + cv2.dnn.blobFromImage: one pass to contiguous
  NCHW float32), "reuse" (a cached contiguous NCHW buffer per input shape, filled per channel);
* ``decode``: "sdk" (decode all priors, then threshold) or "threshold" (score first, decode only the
  priors above the threshold; prior grids cached per input shape);
* ``backend``: "ort" (onnxruntime with ``session_options``: graph optimisation level, memory arena,
  spinning, optimized-model file) or "cv2" (cv2.dnn);
* the model file itself: YuNet-n / YuNet-s, fp32 / int8 (see ``quantize_yunet``).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import cv2
import numpy as np
import onnxruntime as ort

from pipnet_sdk.detect.yunet import YuNet, decode_outputs, first_faces

LEVELS = {"disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL, "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
          "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED, "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}


def make_ort_session(path: str, threads: int = 1, level: str = "all", arena: bool = True,
                     spinning: bool | None = None, optimized_path: str | None = None) -> ort.InferenceSession:
    """An onnxruntime CPU session with the options the levers vary."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = LEVELS[level]
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.enable_cpu_mem_arena = arena
    opts.log_severity_level = 3
    if spinning is not None:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    if optimized_path:
        opts.optimized_model_filepath = optimized_path
    return ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])


class FastYuNet:
    """YuNet with the levers of issue 23 as options (see the module docstring)."""

    def __init__(self, path: str | os.PathLike, size: int = 640, cascade: Sequence[int] = (),
                 score_threshold: float = 0.6, nms_iou: float = 0.3, max_faces: int = 100,
                 prep: str = "blob", decode: str = "threshold", backend: str = "ort", threads: int = 1,
                 session_options: dict[str, Any] | None = None) -> None:
        if prep not in ("sdk", "blob", "reuse") or decode not in ("sdk", "threshold") or backend not in ("ort", "cv2"):
            raise ValueError(f"bad option: prep={prep!r} decode={decode!r} backend={backend!r}")
        self.path = os.fspath(path)
        self.sizes = (size, *cascade)
        self.score_threshold, self.nms_iou, self.max_faces = score_threshold, nms_iou, max_faces
        self.prep, self.decode, self.backend = prep, decode, backend
        if backend == "ort":
            self.session = make_ort_session(self.path, threads, **(session_options or {}))
            self.input_name = self.session.get_inputs()[0].name
            self.output_names = [o.name for o in self.session.get_outputs()]
        else:
            self.net = cv2.dnn.readNet(self.path)
            self.output_names = list(self.net.getUnconnectedOutLayersNames())
        self._buffers: dict[tuple[int, int], np.ndarray] = {}

    # ----------------------------------------------------------------------------- input
    def blob(self, image: np.ndarray, size: int) -> tuple[np.ndarray, float]:
        """(1, 3, H32, W32) float32 BGR 0-255 input (zero padded to multiples of 32) and the scale."""
        h, w = image.shape[:2]
        f = min(size / max(h, w), 1.0)
        nh, nw = max(1, round(h * f)), max(1, round(w * f))
        resized = image if (nh, nw) == (h, w) else cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
        ph, pw = -(-nh // 32) * 32, -(-nw // 32) * 32
        if self.prep == "sdk":
            canvas = np.zeros((ph, pw, 3), np.float32)
            canvas[:nh, :nw] = resized
            return canvas.transpose(2, 0, 1)[None], f
        if self.prep == "blob":
            if (ph, pw) != (nh, nw):
                resized = cv2.copyMakeBorder(resized, 0, ph - nh, 0, pw - nw, cv2.BORDER_CONSTANT, value=(0, 0, 0))
            return cv2.dnn.blobFromImage(resized), f
        buf = self._buffers.get((ph, pw, nh, nw))  # "reuse": the padding stays zero for this shape
        if buf is None:
            buf = self._buffers[(ph, pw, nh, nw)] = np.zeros((1, 3, ph, pw), np.float32)
        for c in range(3):
            buf[0, c, :nh, :nw] = resized[:, :, c]
        return buf, f

    # ------------------------------------------------------------------------- inference
    def forward(self, blob: np.ndarray) -> dict[str, np.ndarray]:
        if self.backend == "ort":
            return dict(zip(self.output_names, self.session.run(self.output_names, {self.input_name: blob})))
        self.net.setInput(np.ascontiguousarray(blob))
        return dict(zip(self.output_names, self.net.forward(self.output_names)))

    def candidates(self, outs: dict[str, np.ndarray], h: int, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Boxes (K, 4), scores (K,), keypoints (K, 5, 2) of the priors at or above the score threshold:
        "threshold" decodes only those (the SDK's decoding), "sdk" decodes all priors, then filters."""
        if self.decode == "threshold":
            return decode_outputs(outs, h, w, self.score_threshold)
        b, sc, k = decode_outputs(outs, h, w)
        m = sc >= self.score_threshold
        return b[m], sc[m], k[m]

    def detect_with_keypoints(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        def passes():
            for size in self.sizes:
                blob, f = self.blob(image, size)
                yield (*self.candidates(self.forward(blob), blob.shape[2], blob.shape[3]), f)

        return first_faces(passes(), self.nms_iou, self.max_faces)

    def detect(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        boxes, scores, _ = self.detect_with_keypoints(image)
        return boxes, scores


# ------------------------------------------------------------------------------- int8

class _Calibration:
    """onnxruntime CalibrationDataReader over images, fed as YuNet blobs at a 640 long side."""

    def __init__(self, images: Iterable[np.ndarray], input_name: str, size: int = 640) -> None:
        det = FastYuNet.__new__(FastYuNet)
        det.prep = "blob"
        self.blobs = iter([{input_name: det.blob(im, size)[0]} for im in images])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.blobs, None)


def quantize_yunet(src: str, dst: str, images: Sequence[np.ndarray], reduce_range: bool = True,
                   per_channel: bool = True, exclude_heads: bool = False, fmt: str = "qdq",
                   exclude: Sequence[str] = (),
                   op_types: Sequence[str] = ("Conv", "Relu", "MaxPool", "Add", "Resize")) -> str:
    """Static int8 YuNet (u8 activations, s8 weights) calibrated on `images`. reduce_range=True keeps
    weights to 7 bits, so that u8 x s8 products summed in pairs (vpmaddubsw, on CPUs without VNNI)
    cannot saturate int16. exclude_heads keeps the output head convolutions in fp32."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = str(Path(dst).with_suffix(".pre.onnx"))
    model = onnx.load(src)
    if model.opset_import[0].version < 13:  # per-channel QDQ (the axis attribute) needs opset 13
        from onnx import version_converter

        model = version_converter.convert_version(model, 13)
    onnx.save(model, pre)
    quant_pre_process(pre, pre, skip_symbolic_shape=True)
    model = onnx.load(pre)
    exclude = list(exclude)  # node names kept in fp32 (e.g. Conv_0: 3 input channels, slow in int8)
    if exclude_heads:  # walk back from each output until a tensor shared by several heads
        producers = {out: n for n in model.graph.node for out in n.output}
        consumers: dict[str, int] = {}
        for n in model.graph.node:
            for i in n.input:
                consumers[i] = consumers.get(i, 0) + 1
        for o in model.graph.output:
            t = o.name
            while t in producers and consumers.get(t, 0) <= 1:
                n = producers[t]
                if n.op_type == "Conv" and n.name not in exclude:
                    exclude.append(n.name)
                t = n.input[0]
    name = model.graph.input[0].name
    quantize_static(
        pre, dst, _Calibration(images, name),
        quant_format=QuantFormat.QDQ if fmt == "qdq" else QuantFormat.QOperator,
        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=per_channel,
        reduce_range=reduce_range, calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=exclude,
        op_types_to_quantize=list(op_types),
    )
    os.remove(pre)
    return dst


#: Detector settings end_to_end.py can add as extra "ours" rows (--proto NAME): model key
#: ("n" / "s" = yunet_{n,s}_dynamic.onnx in $PIPNET_MODELS_DIR) and the SDK's YuNet options.
PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    "n640-fast": ("n", {"size": 640}),                      # code levers only: same boxes as the SDK
    "n480-fast": ("n", {"size": 480}),
    "n320-fast": ("n", {"size": 320}),
    "n320-cascade": ("n", {"size": 320, "fallback_sizes": (640,)}),
    "n256-cascade": ("n", {"size": 256, "fallback_sizes": (640,)}),
    "n160-cascade": ("n", {"size": 160, "fallback_sizes": (640,)}),
    "s320-fast": ("s", {"size": 320}),
    "s320-cascade": ("s", {"size": 320, "fallback_sizes": (640,)}),
}


def preset(name: str, models_dir: str | os.PathLike) -> YuNet:
    """The SDK's YuNet (one thread) with a PRESETS entry's options."""
    model, kw = PRESETS[name]
    return YuNet(Path(models_dir) / f"yunet_{model}_dynamic.onnx", threads=1, **kw)
