"""Landmark millions of images with Ray Data (``pip install "pipnet-sdk[ray]"``).

One :class:`~pipnet_sdk.Landmarker` per Ray actor, real batching inside each actor, one output
row per input image, and bad images become error rows instead of failing the job::

    import ray
    from pipnet_sdk.integrations.ray import landmark_dataset

    ds = landmark_dataset("s3://bucket/faces/", model="pipnet-fast", concurrency=8)
    ds.write_parquet("s3://bucket/landmarks/")

or, with your own pipeline, the callable class directly::

    from pipnet_sdk.integrations.ray import LandmarkPredictor

    ds = ray.data.read_binary_files("faces/", include_paths=True)
    ds = ds.map_batches(LandmarkPredictor, fn_constructor_kwargs={"model": "pipnet-fast"},
                        compute=ray.data.ActorPoolStrategy(size=4), batch_size=64)

Input rows hold one image each, in one of these columns (the first present, or ``column=``):

- ``bytes``: encoded image file contents (``ray.data.read_binary_files``), decoded with OpenCV;
- ``image``: decoded arrays (``ray.data.read_images``, which gives RGB: hence ``color="rgb"``
  is this integration's default for arrays; pass ``color="bgr"`` for OpenCV arrays);
- ``path`` or ``item``: file paths read by the actor (they must be reachable from every node,
  e.g. a shared file system); ``ray.data.from_items(["a.jpg", ...])`` gives ``item``.

Output columns (Arrow types, so Parquet holds them as they are; N = landmarks per face):

====================  ==========================================  ==============================
path                  string                                      ``path`` column or the path read
width, height         int32                                       decoded image size (pixels)
num_faces             int32                                       faces found (0 is a valid result)
boxes                 list<fixed_size_list<float32, 4>>           x1, y1, x2, y2 per face
scores                list<float32>                               detector score per face
landmarks             list<fixed_size_list<fixed_size_list<       (N, 2) x, y per face, pixels of
                      float32, 2>, N>>                            the input image
landmark_scores       list<fixed_size_list<float32, N>>           per-point confidence in [0, 1]
visibility            list<fixed_size_list<float32, N>>           per point: seen (1) or hidden (0)
                                                                  (null per face: model has none)
occluded              list<fixed_size_list<bool, N>>              visibility < 0.5 (null likewise)
quality               list<float32>                               P(NME <= 8 %) per face (null:
                                                                  model not calibrated)
point_quality         list<fixed_size_list<float32, N>>           per point: P(error <= 10 % of
                                                                  the eye distance) (null likewise)
five_points           list<fixed_size_list<fixed_size_list<       InsightFace's 5 points per face
                      float32, 2>, 5>>                            (null without 68 landmarks)
pose                  list<fixed_size_list<float32, 3>>           yaw, pitch, roll in degrees
                                                                  (null when unknown)
eye_openness          list<fixed_size_list<float32, 2>>           eye aspect ratios (36-41, 42-47)
mouth_openness        list<float32>                               inner-lip gap / mouth width
error                 string                                      null on success; else the reason
provenance            struct<pipnet_sdk: string, model: struct<   what made the row: the package
                      name, version, sha256: string>, detector:   version, each model's name,
                      struct<name, sha256: string>>               version and file sha256
====================  ==========================================  ==============================

On an error row every result column but ``provenance`` is null. A file name that is not UTF-8
appears in ``path`` with those bytes written as ``\\xNN``. Other input columns (ids, labels...)
are kept unless ``keep_columns=False`` (or a list of the ones to keep); the image column is
dropped.

Ray is imported only by this module, never by ``import pipnet_sdk``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._cli_common import display_text, walk_files
from ..images import IMAGE_EXTENSIONS as _SUFFIXES
from ..images import decode_image, load_image
from ..landmarker import Landmarker

__all__ = ["IMAGE_EXTENSIONS", "LandmarkPredictor", "landmark_dataset", "output_schema", "read_image_files"]

#: File extensions that :func:`landmark_dataset` reads from a folder.
IMAGE_EXTENSIONS = [e.lstrip(".") for e in _SUFFIXES]
#: Input column names looked for, in this order, when ``column`` is not given.
INPUT_COLUMNS = ("bytes", "image", "path", "item")
RESULT_COLUMNS = (
    "path",
    "width",
    "height",
    "num_faces",
    "boxes",
    "scores",
    "landmarks",
    "landmark_scores",
    "visibility",
    "occluded",
    "quality",
    "point_quality",
    "five_points",
    "pose",
    "eye_openness",
    "mouth_openness",
    "error",
    "provenance",
)


def provenance_type():
    """The Arrow type of the ``provenance`` column (``Landmarker.provenance()``)."""
    import pyarrow as pa

    s = pa.string()
    return pa.struct(
        [
            ("pipnet_sdk", s),
            ("model", pa.struct([("name", s), ("version", s), ("sha256", s)])),
            ("detector", pa.struct([("name", s), ("sha256", s)])),
        ]
    )


def output_schema(num_landmarks: int):
    """The Arrow schema of the result columns for a model with ``num_landmarks`` points."""
    import pyarrow as pa

    f32 = pa.float32()
    return pa.schema(
        [
            ("path", pa.string()),
            ("width", pa.int32()),
            ("height", pa.int32()),
            ("num_faces", pa.int32()),
            ("boxes", pa.list_(pa.list_(f32, 4))),
            ("scores", pa.list_(f32)),
            ("landmarks", pa.list_(pa.list_(pa.list_(f32, 2), num_landmarks))),
            ("landmark_scores", pa.list_(pa.list_(f32, num_landmarks))),
            ("visibility", pa.list_(pa.list_(f32, num_landmarks))),
            ("occluded", pa.list_(pa.list_(pa.bool_(), num_landmarks))),
            ("quality", pa.list_(f32)),
            ("point_quality", pa.list_(pa.list_(f32, num_landmarks))),
            ("five_points", pa.list_(pa.list_(pa.list_(f32, 2), 5))),  # see pipnet_sdk.geometry
            ("pose", pa.list_(pa.list_(f32, 3))),
            ("eye_openness", pa.list_(pa.list_(f32, 2))),
            ("mouth_openness", pa.list_(f32)),
            ("error", pa.string()),
            ("provenance", provenance_type()),
        ]
    )


def _columns(batch: Any) -> dict[str, Any]:
    """A Ray batch (dict of NumPy arrays, pandas DataFrame or pyarrow Table) as name -> values."""
    if isinstance(batch, dict):
        return dict(batch)
    if hasattr(batch, "column_names") and hasattr(batch, "column"):  # pyarrow.Table
        return {n: _arrow_values(batch.column(n)) for n in batch.column_names}
    if hasattr(batch, "columns") and hasattr(batch, "__getitem__"):  # pandas.DataFrame
        return {str(n): batch[n].to_numpy() for n in batch.columns}
    raise TypeError(f"unsupported batch type {type(batch).__name__}: use batch_format 'numpy', 'pandas' or 'pyarrow'")


def _arrow_values(col: Any) -> list:
    """The values of a pyarrow (chunked) column, Ray's tensor extension columns as arrays."""
    import pyarrow as pa

    if isinstance(col.type, pa.ExtensionType):  # e.g. Ray's tensor type (read_images)
        return [v for chunk in col.chunks for v in chunk.to_numpy(zero_copy_only=False)]
    return list(col.to_numpy(zero_copy_only=False))


def _geometry(face: Any) -> tuple:
    """A face's five points, pose, eye and mouth openness as Arrow-ready values (None: null)."""
    fp, pose = face.five_points, face.pose
    eyes, mouth = face.eye_openness, face.mouth_openness
    return (
        None if fp is None else fp.tolist(),
        None if pose is None else list(pose),
        None if eyes is None else list(eyes),
        mouth,
    )


def _message(exc: BaseException) -> str:
    return display_text(f"{type(exc).__name__}: {exc}")


class LandmarkPredictor:
    """Callable class for ``Dataset.map_batches``: one Landmarker per actor.

    model, detector, threads, providers: as for :class:`~pipnet_sdk.Landmarker` (``threads``
        is onnxruntime's intra-op thread count per actor; give the actor as many CPUs).
    crop_batch_size: face crops per landmark-network run (the Landmarker's ``batch_size``).
    color: channel order of array inputs ("rgb", what ``ray.data.read_images`` gives, or "bgr").
    column: the image column; by default the first of ``bytes``, ``image``, ``path``, ``item``.
    keep_columns: True keeps the other input columns, False drops them, a list keeps those.
    Other keyword options go to the Landmarker (``score_threshold``, ``max_faces``, ``size``...).

    Calling it on a batch returns a ``pyarrow.Table`` with one row per input row (see the module
    doc for the columns), whatever the input batch format.
    """

    def __init__(
        self,
        model: str | os.PathLike | None = None,
        detector: Any = None,
        *,
        threads: int | None = 1,
        providers: Sequence | None = None,
        crop_batch_size: int = 32,
        color: str = "rgb",
        column: str | None = None,
        keep_columns: bool | Sequence[str] = True,
        **landmarker_options: Any,
    ) -> None:
        self.landmarker = Landmarker(
            model=model,
            detector=detector,
            providers=providers,
            threads=threads,
            batch_size=crop_batch_size,
            color=color,
            **landmarker_options,
        )
        self.color = color
        self.column = column
        self.keep_columns = keep_columns
        self.schema = output_schema(self.landmarker.num_landmarks)
        self.provenance = self.landmarker.provenance()

    # -- inputs -------------------------------------------------------------------------------
    def _input_column(self, cols: dict[str, Any]) -> str:
        if self.column is not None:
            if self.column not in cols:
                raise KeyError(f"image column {self.column!r} not in the batch (columns: {sorted(cols)})")
            return self.column
        for name in INPUT_COLUMNS:
            if name in cols:
                return name
        raise KeyError(
            f"no image column in the batch (columns: {sorted(cols)}); expected one of "
            f"{list(INPUT_COLUMNS)} or pass column="
        )

    def _load(self, value: Any, path: str | None) -> np.ndarray:
        if isinstance(value, np.ndarray) and value.dtype == object and value.ndim == 0:
            value = value.item()
        if isinstance(value, (bytes, bytearray, memoryview)):
            return decode_image(value, path if path is not None else "the bytes")
        return load_image(value, color=self.color)

    # -- the call -----------------------------------------------------------------------------
    def __call__(self, batch: Any):
        cols = _columns(batch)
        name = self._input_column(cols)
        values = list(cols[name])
        n = len(values)
        given_paths = list(cols["path"]) if "path" in cols else [None] * n
        paths = [None if p is None or (isinstance(p, float) and p != p) else str(p) for p in given_paths]
        for i, v in enumerate(values):
            if paths[i] is None and isinstance(v, (str, os.PathLike)):
                paths[i] = os.fspath(v)

        images: list[np.ndarray | None] = [None] * n
        errors: list[str | None] = [None] * n
        for i, v in enumerate(values):
            try:
                images[i] = self._load(v, paths[i])
            except Exception as exc:  # one bad image must not fail the job
                errors[i] = _message(exc)

        ok = [i for i in range(n) if images[i] is not None]
        faces: dict[int, list] = {}
        try:  # all crops of all readable images through the network in real batches
            for i, f in zip(ok, self.landmarker.detect_batch([images[i] for i in ok], color="bgr")):
                faces[i] = f
        except Exception:  # find the image that failed; the others still get results
            for i in ok:
                try:
                    faces[i] = self.landmarker.detect(images[i], color="bgr")
                except Exception as exc:
                    errors[i] = _message(exc)
        return self._table(paths, images, faces, errors, cols, name)

    def _table(self, paths, images, faces, errors, cols, name):
        import pyarrow as pa

        n = len(paths)
        width, height, count, boxes, scores, lms, lscores, geometry = ([None] * n for _ in range(8))
        vis, occ, quality, point_quality = ([None] * n for _ in range(4))
        for i in range(n):
            if errors[i] is not None:
                continue
            fs = faces[i]
            height[i], width[i] = images[i].shape[:2]
            count[i] = len(fs)
            boxes[i] = [f.box.tolist() for f in fs]
            scores[i] = [float(f.score) for f in fs]
            lms[i] = [f.landmarks.tolist() for f in fs]
            lscores[i] = [f.landmark_scores.tolist() for f in fs]
            vis[i] = [None if f.visibility is None else f.visibility.tolist() for f in fs]
            occ[i] = [None if f.occluded is None else f.occluded.tolist() for f in fs]
            quality[i] = [f.quality for f in fs]
            point_quality[i] = [None if f.point_quality is None else f.point_quality.tolist() for f in fs]
            geometry[i] = [_geometry(f) for f in fs]
        shown = [None if p is None else display_text(p) for p in paths]
        data = dict(
            path=shown,
            width=width,
            height=height,
            num_faces=count,
            boxes=boxes,
            scores=scores,
            landmarks=lms,
            landmark_scores=lscores,
            visibility=vis,
            occluded=occ,
            quality=quality,
            point_quality=point_quality,
            error=errors,
            provenance=[self.provenance] * n,
        )
        for k, key in enumerate(("five_points", "pose", "eye_openness", "mouth_openness")):
            data[key] = [None if g is None else [v[k] for v in g] for g in geometry]
        arrays = [pa.array(data[f.name], type=f.type) for f in self.schema]
        fields = list(self.schema)
        for col in self._kept(cols, name):
            values = cols[col]
            try:
                arr = pa.array(values)
            except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError):
                arr = pa.array([v.tolist() if isinstance(v, np.ndarray) else v for v in values])
            arrays.append(arr)
            fields.append(pa.field(col, arr.type))
        return pa.Table.from_arrays(arrays, schema=pa.schema(fields))

    def _kept(self, cols: dict[str, Any], name: str) -> list[str]:
        drop = {name, "bytes", "image", *RESULT_COLUMNS}
        if self.keep_columns is True:
            return [c for c in cols if c not in drop]
        if not self.keep_columns:
            return []
        missing = [c for c in self.keep_columns if c not in cols]
        if missing:
            raise KeyError(f"keep_columns {missing} not in the batch (columns: {sorted(cols)})")
        return [c for c in self.keep_columns if c not in drop]


def _compute(concurrency: int | tuple[int, int] | None):
    from ray.data import ActorPoolStrategy

    if concurrency is None:
        return ActorPoolStrategy(min_size=1, max_size=None)
    if isinstance(concurrency, int):
        return ActorPoolStrategy(size=concurrency)
    lo, hi = concurrency
    return ActorPoolStrategy(min_size=lo, max_size=hi)


def read_image_files(
    paths: str | os.PathLike | Sequence[str],
    *,
    file_extensions: Sequence[str] | None = IMAGE_EXTENSIONS,
    num_cpus: float = 0,
    concurrency: int | None = 4,
    **read_options: Any,
):
    """``ray.data.read_binary_files(paths, include_paths=True)`` tuned for a landmarking job:
    rows ``bytes`` + ``path`` (only ``file_extensions`` when listing folders). Every file in a
    folder gets a row, as ``pipnet detect FOLDER`` reads it: also names that start with ``_`` or
    ``.`` (``_DSC0001.jpg``), which Ray's own listing leaves out; a local folder's links to
    folders are followed once.

    num_cpus: CPUs reserved per read task. Default 0: reading is mostly I/O, and a read task
        that needs a CPU waits forever when the actors hold every CPU (e.g. 2 one-CPU actors
        on a 2-CPU machine).
    concurrency: read tasks at once. A bound matters with ``num_cpus=0``: without it Ray
        starts a worker process for every read task at once.
    read_options: passed on to ``read_binary_files`` (``filesystem``, ``shuffle``...).
    """
    import inspect

    import ray.data

    reader = ray.data.read_binary_files
    params = inspect.signature(reader).parameters
    if "num_cpus" in params:
        read_options.setdefault("num_cpus", num_cpus)
    else:  # older Ray
        read_options.setdefault("ray_remote_args", {"num_cpus": num_cpus})
    if concurrency is not None and "concurrency" in params:
        read_options.setdefault("concurrency", concurrency)
    src = [os.fspath(paths)] if isinstance(paths, (str, os.PathLike)) else [os.fspath(p) for p in paths]
    src = _with_every_file(src, file_extensions, read_options.get("filesystem"))
    return reader(
        src, include_paths=True, file_extensions=list(file_extensions) if file_extensions else None, **read_options
    )


def _with_every_file(paths: list[str], file_extensions: Sequence[str] | None, filesystem: Any) -> list[str]:
    """``paths`` for read_binary_files with nothing left out: a local folder becomes its files
    (links to folders followed once, as the CLI reads them); a remote folder (``s3://...``) stays
    a folder, plus the files in it that Ray's listing skips (a first name starting with ``.``
    or ``_``)."""
    exts = None if not file_extensions else {"." + e.lower().lstrip(".") for e in file_extensions}

    def wanted(name: str) -> bool:
        return exts is None or os.path.splitext(name)[1].lower() in exts

    out: list[str] = []
    for p in paths:
        if filesystem is None and "://" not in p:
            if os.path.isdir(p):
                found = walk_files(Path(p), keep=wanted)
                if not found:
                    raise FileNotFoundError(f"no files ({', '.join(sorted(exts or ['any']))}) in the folder {p}")
                out += [str(f) for f in found]
            else:
                out.append(p)
            continue
        out.append(p)
        out += _skipped_by_ray(p, filesystem, wanted)
    return out


def _skipped_by_ray(uri: str, filesystem: Any, wanted: Any) -> list[str]:
    """The files under the folder ``uri`` that Ray's listing leaves out (their path below the
    folder starts with ``.`` or ``_``); [] when ``uri`` is no folder or cannot be listed here."""
    import pyarrow.fs as pafs

    try:
        fs, root = (filesystem, uri) if filesystem is not None else pafs.FileSystem.from_uri(uri)
        if fs.get_file_info(root).type != pafs.FileType.Directory:
            return []
        infos = fs.get_file_info(pafs.FileSelector(root, recursive=True))
    except Exception:  # e.g. no credentials here: Ray lists the folder itself, as it would anyway
        return []
    base = root.rstrip("/") + "/"
    prefix = uri[: uri.index("://") + 3] if filesystem is None and "://" in uri else ""
    return sorted(
        prefix + i.path
        for i in infos
        if i.is_file and i.path.startswith(base) and i.path[len(base) :].startswith((".", "_")) and wanted(i.path)
    )


def landmark_dataset(
    source: Any,
    *,
    model: str | os.PathLike | None = None,
    detector: Any = None,
    threads: int = 1,
    concurrency: int | tuple[int, int] | None = None,
    batch_size: int = 64,
    num_cpus: float | None = None,
    file_extensions: Sequence[str] | None = IMAGE_EXTENSIONS,
    **predictor_options: Any,
):
    """A lazy ``ray.data.Dataset`` of landmark rows (columns in the module doc).

    source: a folder, file, glob or URI (``s3://...``; read with :func:`read_image_files`, only
        ``file_extensions``), a list of local paths (each actor reads its files; a missing
        or unreadable one gives an error row), or a ``ray.data.Dataset`` with an image column.
    concurrency: actors (an int, or (min, max) to autoscale; default 1 to as many as fit).
    batch_size: images per actor call (all their faces go through the network together).
    num_cpus: CPUs reserved per actor (default ``threads``).
    predictor_options: the other :class:`LandmarkPredictor` options (``crop_batch_size``,
        ``color``, ``column``, ``keep_columns``, ``providers``, detector options...).

    Nothing runs until the dataset is consumed (``write_parquet``, ``iter_rows``, ``take``...).
    """
    import ray.data

    if isinstance(source, ray.data.Dataset):
        ds = source
    elif isinstance(source, (str, os.PathLike)):
        ds = read_image_files(source, file_extensions=file_extensions)
    elif isinstance(source, Iterable):
        ds = ray.data.from_items([{"path": os.fspath(p)} for p in source])
    else:
        raise TypeError(f"source must be a path, a list of paths or a ray.data.Dataset, got {type(source).__name__}")
    return ds.map_batches(
        LandmarkPredictor,
        fn_constructor_kwargs=dict(model=model, detector=detector, threads=threads, **predictor_options),
        compute=_compute(concurrency),
        batch_size=batch_size,
        batch_format="numpy",
        num_cpus=num_cpus if num_cpus is not None else threads,
    )
