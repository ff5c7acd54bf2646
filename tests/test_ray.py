"""Ray Data integration on a local Ray runtime: same landmarks as the single-process SDK, bad
files become error rows, the Parquet output reads back. Random-weights model (the numbers are
meaningless, the plumbing is not)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

# the optional extra (pip install "pipnet-sdk[ray]") is part of the test environment: no skip
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray
import ray.data

from pipnet_sdk import Landmarker
from pipnet_sdk.integrations.ray import LandmarkPredictor, landmark_dataset, output_schema

ROOT = Path(__file__).resolve().parents[1]
NUM_IMAGES = 12
pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning:ray"),  # Ray's own notices
    pytest.mark.slow,
]


@pytest.fixture(scope="module")
def ray_runtime():
    """A small local Ray runtime for this module (2 CPUs, no dashboard), shut down after."""
    if ray.is_initialized():
        ray.shutdown()
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    ray.init(
        num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False, runtime_env={"env_vars": env}
    )
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def image_paths(shared_dir: Path) -> list[str]:
    paths = sorted((shared_dir / "data" / "300w" / "test").rglob("*.jpg"))
    assert len(paths) >= NUM_IMAGES
    step = len(paths) // NUM_IMAGES  # spread over helen and lfpw
    return [str(p) for p in paths[::step][:NUM_IMAGES]]


@pytest.fixture(scope="module")
def bad_file(tmp_path_factory: pytest.TempPathFactory) -> str:
    p = tmp_path_factory.mktemp("bad") / "not_an_image.jpg"
    p.write_text("this is a text file, not a JPEG\n")
    return str(p)


@pytest.fixture(scope="module")
def options(random_model: Path, yunet_path: Path) -> dict:
    return {"model": str(random_model), "detector": str(yunet_path), "threads": 1}


@pytest.fixture(scope="module")
def reference(options: dict, image_paths: list[str]) -> dict[str, list]:
    """Single-process SDK results, one image at a time."""
    lm = Landmarker(**options)
    return {p: lm.detect(p) for p in image_paths}


def check_row(row: dict, faces: list, atol: float = 1e-4) -> None:
    assert row["error"] is None
    assert row["num_faces"] == len(faces) == len(row["boxes"]) == len(row["landmarks"])
    if not faces:
        return
    np.testing.assert_allclose(
        np.asarray(row["landmarks"], np.float32), np.stack([f.landmarks for f in faces]), atol=atol, rtol=0
    )
    np.testing.assert_allclose(
        np.asarray(row["boxes"], np.float32), np.stack([f.box for f in faces]), atol=atol, rtol=0
    )
    np.testing.assert_allclose(row["scores"], [f.score for f in faces], atol=atol, rtol=0)
    np.testing.assert_allclose(
        np.asarray(row["landmark_scores"], np.float32), np.stack([f.landmark_scores for f in faces]), atol=atol, rtol=0
    )
    np.testing.assert_allclose(
        np.asarray(row["five_points"], np.float32), np.stack([f.five_points for f in faces]), atol=atol, rtol=0
    )
    np.testing.assert_allclose(row["eye_openness"], [f.eye_openness for f in faces], atol=1e-4, rtol=0)
    np.testing.assert_allclose(row["mouth_openness"], [f.mouth_openness for f in faces], atol=1e-4, rtol=0)
    assert [p is None for p in row["pose"]] == [f.pose is None for f in faces]  # geometry columns
    for v, o, q, f in zip(row["visibility"], row["occluded"], row["quality"], faces):  # confidence columns
        assert (v is None) == (f.visibility is None) and (q is None) == (f.quality is None)
        if v is not None:
            np.testing.assert_allclose(v, f.visibility, atol=1e-6, rtol=0)
            assert list(o) == f.occluded.tolist()
        if q is not None:
            assert abs(q - f.quality) < 1e-6
    for p, f in zip(row["pose"], faces):
        if p is not None:
            np.testing.assert_allclose(p, f.pose, atol=1e-2, rtol=0)


def test_binary_files_to_parquet(ray_runtime, options, image_paths, bad_file, reference, tmp_path) -> None:
    """read_binary_files -> map_batches(LandmarkPredictor) on 2 actors -> Parquet -> pyarrow."""
    ds = ray.data.read_binary_files(image_paths + [bad_file], include_paths=True)
    # 2 actors x 0.5 CPU: the read tasks need a CPU too (2 actors x 1 CPU would starve them)
    ds = ds.map_batches(
        LandmarkPredictor,
        fn_constructor_kwargs=options,
        compute=ray.data.ActorPoolStrategy(size=2),
        num_cpus=0.5,
        batch_size=5,
        batch_format="numpy",
    )
    rows = {r["path"]: r for r in ds.take_all()}
    assert set(rows) == set(image_paths) | {bad_file}
    assert sum(len(reference[p]) for p in image_paths) >= NUM_IMAGES  # faces were found
    for p in image_paths:
        check_row(rows[p], reference[p])
    bad = rows[bad_file]
    assert "cannot read" in bad["error"] and bad_file in bad["error"]
    assert bad["num_faces"] is None and bad["landmarks"] is None and bad["width"] is None

    out = tmp_path / "landmarks"
    ds.write_parquet(str(out))
    table = pq.read_table(str(out))
    assert table.num_rows == NUM_IMAGES + 1
    schema = output_schema(68)
    for field in schema:
        assert table.schema.field(field.name).type == field.type, field.name
    back = {r["path"]: r for r in table.to_pylist()}
    for p in image_paths:
        check_row(back[p], reference[p])
        assert (back[p]["width"], back[p]["height"]) == (rows[p]["width"], rows[p]["height"])
    assert back[bad_file]["error"] == bad["error"]


def test_landmark_dataset_paths(ray_runtime, options, image_paths, bad_file, reference) -> None:
    """landmark_dataset over a list of paths (missing and non-image ones included) and over a
    folder (2 actors x 1 CPU on 2 CPUs: the reads must not starve), and pandas batches via
    map_batches, give the same rows."""
    missing = str(Path(bad_file).with_name("does_not_exist.jpg"))
    paths = image_paths[:6] + [missing, bad_file]
    ds = landmark_dataset(paths, concurrency=1, batch_size=4, **options)
    rows = {r["path"]: r for r in ds.take_all()}
    assert len(rows) == len(paths)
    for p in image_paths[:6]:
        check_row(rows[p], reference[p])
        assert rows[p]["width"] > 0 and rows[p]["height"] > 0
    assert rows[missing]["error"].startswith("FileNotFoundError")
    assert rows[bad_file]["error"].startswith("ImageError: cannot read")

    folder = Path(bad_file).parent  # a folder: read_binary_files inside the helper
    for p in image_paths[:6]:
        link = folder / Path(p).name
        if not link.exists():
            link.symlink_to(p)  # never copy shared files
    (folder / "notes.txt").write_text("not an image extension: skipped\n")
    by_folder = landmark_dataset(str(folder), concurrency=2, batch_size=4, **options).take_all()
    assert len(by_folder) == 7  # 6 images + not_an_image.jpg; notes.txt skipped
    for r in by_folder:
        name = Path(r["path"]).name
        if name == Path(bad_file).name:
            assert r["error"] == rows[bad_file]["error"]
        else:
            check_row(r, reference[next(p for p in image_paths if Path(p).name == name)])

    items = [{"path": p, "id": i} for i, p in enumerate(paths)]
    ds2 = ray.data.from_items(items).map_batches(
        LandmarkPredictor,
        fn_constructor_kwargs=options,
        compute=ray.data.ActorPoolStrategy(size=1),
        batch_size=3,
        batch_format="pandas",
    )
    rows2 = {r["path"]: r for r in ds2.take_all()}
    for i, p in enumerate(paths):
        assert rows2[p]["id"] == i  # other columns are kept
        assert rows2[p]["error"] == rows[p]["error"]
        if rows[p]["error"] is None:
            check_row(rows2[p], reference[p])


def test_predictor_inputs_without_ray_runtime(options, image_paths, reference) -> None:
    """The callable alone: paths, encoded bytes and RGB arrays give the same rows."""
    import cv2

    pred = LandmarkPredictor(**options)
    paths = image_paths[:3]
    by_path = pred({"path": np.array(paths, dtype=object)}).to_pylist()
    by_bytes = pred(pa.table({"bytes": [Path(p).read_bytes() for p in paths], "path": paths})).to_pylist()
    rgb = [cv2.imread(p)[..., ::-1] for p in paths]
    by_array = pred({"image": np.array(rgb + [np.zeros((4, 4, 3), np.float32)], dtype=object)}).to_pylist()
    for i, p in enumerate(paths):
        check_row(by_path[i], reference[p])
        check_row(by_bytes[i], reference[p])
        check_row(by_array[i], reference[p])
        assert by_array[i]["path"] is None
    assert "dtype uint8" in by_array[3]["error"]
    with pytest.raises(KeyError, match="no image column"):
        pred({"x": np.arange(2)})


def test_import_does_not_load_ray() -> None:
    code = (
        "import sys, pipnet_sdk; pipnet_sdk.Landmarker; import pipnet_sdk.integrations; "
        "assert 'ray' not in sys.modules and 'pyarrow' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_rows_record_what_made_them(options, image_paths, tmp_path) -> None:
    """Every row, an error row too, has the provenance column (package version, each model's
    name, version and sha256); a file name that is not UTF-8 is in `path` with the bytes escaped."""
    pred = LandmarkPredictor(**options)
    expected = Landmarker(**options).provenance()
    odd = tmp_path / os.fsdecode(b"caf\xe9.jpg")
    odd.symlink_to(image_paths[0])
    table = pred({"path": np.array([image_paths[0], str(odd), str(tmp_path / "missing.jpg")], dtype=object)})
    rows = table.to_pylist()
    assert table.schema.field("provenance").type == output_schema(68).field("provenance").type
    assert all(r["provenance"] == expected for r in rows) and expected["model"]["sha256"]
    assert rows[1]["path"] == f"{tmp_path}/caf\\xe9.jpg" and rows[1]["error"] is None
    assert rows[1]["landmarks"] == rows[0]["landmarks"] and rows[2]["error"].startswith("FileNotFoundError")


CAMERA_NAMES = ("_DSC0001.jpg", ".hidden.jpg", "plain.jpg", "_raw/a.jpg", ".cache/b.jpg", "sub/_c.JPG")


def test_folder_reader_keeps_names_ray_skips(ray_runtime, image_paths, tmp_path) -> None:
    """A folder's files whose names start with _ or . (cameras write _DSC0001.jpg), also in such
    folders, each get a row: the files `pipnet detect FOLDER` reads."""
    from pipnet_sdk.integrations.ray import read_image_files

    root = tmp_path / "photos"
    for rel in CAMERA_NAMES:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).symlink_to(image_paths[0])
    (root / "notes.txt").write_text("not an image\n")
    cli_reads = sorted(str(root / rel) for rel in CAMERA_NAMES)
    rows = read_image_files(str(root)).take_all()
    assert sorted(r["path"] for r in rows) == cli_reads
    assert all(r["bytes"] == Path(image_paths[0]).read_bytes() for r in rows)


def test_remote_folder_adds_the_names_ray_skips(tmp_path) -> None:
    """A folder given as a URI stays a folder for Ray to list, plus the files Ray's listing leaves
    out (paths below it starting with _ or .), found with pyarrow's file systems."""
    from pipnet_sdk.integrations.ray import IMAGE_EXTENSIONS, _with_every_file

    root = tmp_path / "photos"
    for rel in (*CAMERA_NAMES, "notes.txt", "_notes.txt"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x")
    uri = f"file://{root}"
    got = _with_every_file([uri], IMAGE_EXTENSIONS, None)
    assert got[0] == uri
    assert got[1:] == [f"{uri}/{rel}" for rel in (".cache/b.jpg", ".hidden.jpg", "_DSC0001.jpg", "_raw/a.jpg")]
