"""Landmarker end to end with a random-weights PIPNet (the numbers are meaningless, the
plumbing is not): shapes, consistency between entry points, batching, threads, errors."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from pipnet_sdk import Face, Landmarker, detect_landmarks, draw, landmarker
from pipnet_sdk.detect import YuNet
from pipnet_sdk.landmark_model import ModelFormatError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def lm(random_model: Path, yunet_path: Path) -> Landmarker:
    return Landmarker(model=random_model, detector=yunet_path, threads=1)


@pytest.fixture(scope="module")
def images(samples: Path) -> dict[str, np.ndarray]:
    """The sample photos, and the group photo mirrored and at 640 px (4 faces each)."""
    out = {p.name: cv2.imread(str(p)) for p in sorted(samples.glob("*.jpg"))}
    out["group_2_mirrored.jpg"] = cv2.flip(out["group_2.jpg"], 1)
    out["group_2_640.jpg"] = cv2.resize(out["group_2.jpg"], (640, 640), interpolation=cv2.INTER_AREA)
    return out


class CountingSession:
    """Delegates to the real onnxruntime session and counts run() calls and batch sizes."""

    def __init__(self, session) -> None:
        self._session = session
        self.batches: list[int] = []

    def run(self, names, feeds, *args, **kwargs):
        self.batches.append(len(next(iter(feeds.values()))))
        return self._session.run(names, feeds, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._session, name)


def test_detect_group(lm: Landmarker, images, yunet_path: Path) -> None:
    img = images["group_2.jpg"]
    faces = lm.detect(img)
    assert len(faces) == 4 and all(isinstance(f, Face) for f in faces)
    for f in faces:
        assert f.landmarks.shape == (68, 2) and f.landmarks.dtype == np.float32
        assert f.landmark_scores.shape == (68,) and f.landmark_scores.dtype == np.float32
        assert ((f.landmark_scores >= 0) & (f.landmark_scores <= 1)).all()
        assert f.box.shape == (4,) and 0 < f.score <= 1 and f.track_id is None
    boxes, scores = YuNet(yunet_path).detect(img)
    np.testing.assert_allclose(np.stack([f.box for f in faces]), boxes, atol=1e-3)
    np.testing.assert_allclose([f.score for f in faces], scores, atol=1e-6)
    assert lm.num_landmarks == 68


def test_no_face(lm: Landmarker, images) -> None:
    assert lm.detect(images["no_face.jpg"]) == []
    assert lm.detect_batch([images["no_face.jpg"]]) == [[]]
    assert lm.detect_batch([]) == []


def test_input_kinds_agree(lm: Landmarker, images, samples: Path) -> None:
    img = images["group_2.jpg"]
    ref = lm.detect(img)
    for other in (
        lm.detect(samples / "group_2.jpg"),
        lm.detect(np.ascontiguousarray(img[..., ::-1]), color="rgb"),
        lm.detect(Image.fromarray(img[..., ::-1].copy())),
    ):
        assert len(other) == len(ref)
        for a, b in zip(ref, other):
            np.testing.assert_allclose(a.landmarks, b.landmarks, atol=1e-5)


def test_landmarks_for_given_boxes(lm: Landmarker, images) -> None:
    img = images["group_2.jpg"]
    faces = lm.detect(img)
    boxes = np.stack([f.box for f in faces])
    pts = lm.landmarks(img, boxes)
    assert pts.shape == (4, 68, 2) and pts.dtype == np.float32
    np.testing.assert_allclose(pts, np.stack([f.landmarks for f in faces]), atol=1e-5)
    np.testing.assert_allclose(lm.landmarks(img, boxes[0]), pts[:1], atol=1e-5)  # one (4,) box
    np.testing.assert_allclose(lm.landmarks(img, boxes.tolist()), pts, atol=1e-5)
    assert lm.landmarks(img, np.zeros((0, 4))).shape == (0, 68, 2)


@pytest.mark.parametrize(
    "bad",
    [
        [1, 2, 3],
        np.zeros((2, 5)),
        np.zeros((2, 2, 4)),
        [[0, 0, float("nan"), 10]],
        [[10, 10, 5, 20]],
        [[10, 10, 20, 10]],
        [[0, 0, np.inf, 10]],
    ],
)
def test_bad_boxes(lm: Landmarker, images, bad) -> None:
    with pytest.raises(ValueError, match="box"):
        lm.landmarks(images["group_2.jpg"], bad)


def test_detect_batch_equals_detect_and_batches(random_model: Path, yunet_path: Path, images) -> None:
    # a random model scores every face low, which would send them all to the upright search
    lm = Landmarker(model=random_model, detector=yunet_path, threads=1, batch_size=8, upright=False)
    names = ["group_2_mirrored.jpg", "group_2.jpg", "no_face.jpg", "group_2_640.jpg"]
    imgs = [images[n] for n in names]
    single = [lm.detect(im) for im in imgs]
    counter = CountingSession(lm.model.session)
    lm.model.session = counter
    batch = lm.detect_batch(imgs)
    total = sum(len(s) for s in single)
    assert total > 8
    assert counter.batches == [8] * (total // 8) + ([total % 8] if total % 8 else [])  # not per image
    assert [len(b) for b in batch] == [len(s) for s in single]
    for s, b in zip(single, batch):
        for fs, fb in zip(s, b):
            np.testing.assert_allclose(fs.box, fb.box, atol=1e-4)
            np.testing.assert_allclose(fs.landmarks, fb.landmarks, atol=1e-4)
            np.testing.assert_allclose(fs.landmark_scores, fb.landmark_scores, atol=1e-4)


def test_threads_agree_with_serial(lm: Landmarker, images) -> None:
    imgs = [images[n] for n in ("group_2_mirrored.jpg", "group_2.jpg", "no_face.jpg", "group_2_640.jpg")] * 2
    serial = [lm.detect(im) for im in imgs]
    with ThreadPoolExecutor(4) as pool:
        threaded = list(pool.map(lm.detect, imgs))
    for s, t in zip(serial, threaded):
        assert len(s) == len(t)
        for a, b in zip(s, t):
            np.testing.assert_array_equal(a.box, b.box)
            np.testing.assert_allclose(a.landmarks, b.landmarks, atol=1e-5)


class FixedDetector:
    """A plug-in detector: any object with detect(image) -> (boxes, scores)."""

    def __init__(self, boxes) -> None:
        self.boxes = np.asarray(boxes, np.float32)
        self.calls = 0

    def detect(self, image: np.ndarray):
        self.calls += 1
        return self.boxes, np.linspace(0.9, 0.5, len(self.boxes))


def test_custom_detector(random_model: Path, lm: Landmarker, images) -> None:
    img = images["group_2.jpg"]
    boxes = [[100, 120, 200, 250], [400, 300, 480, 400]]
    det = FixedDetector(boxes)
    custom = Landmarker(model=random_model, detector=det, threads=1)
    faces = custom.detect(img)
    assert det.calls == 1 and len(faces) == 2
    np.testing.assert_allclose([f.box for f in faces], boxes)
    np.testing.assert_allclose([f.score for f in faces], [0.9, 0.5], atol=1e-6)
    np.testing.assert_allclose(np.stack([f.landmarks for f in faces]), lm.landmarks(img, boxes), atol=1e-5)
    with pytest.raises(TypeError, match="detect"):
        Landmarker(model=random_model, detector=object())
    with pytest.raises(TypeError, match="options"):
        Landmarker(model=random_model, detector=det, score_threshold=0.5)


def test_detector_protocol(random_model: Path, yunet_path: Path) -> None:
    """pipnet_sdk.Detector states the plug-in contract: YuNet and any object with detect() are
    Detectors (runtime-checkable); importing it loads no NumPy, OpenCV or onnxruntime."""
    import pipnet_sdk
    from pipnet_sdk.detect import Detector

    assert pipnet_sdk.Detector is Detector and "Detector" in pipnet_sdk.__all__
    assert isinstance(YuNet(yunet_path), Detector) and isinstance(FixedDetector([]), Detector)
    assert not isinstance(object(), Detector)
    code = (
        "import sys\nfrom pipnet_sdk import Detector\nfrom pipnet_sdk.detect import Detector as D\n"
        "print([m for m in ('numpy', 'cv2', 'onnxruntime') if m in sys.modules])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert out.stdout.strip() == "[]"


def test_provenance_names_the_package_version_and_the_files(random_model: Path, yunet_path: Path) -> None:
    import pipnet_sdk
    from pipnet_sdk.hub import sha256_file

    p = Landmarker(model=random_model, detector=yunet_path, threads=1).provenance()
    assert p["pipnet_sdk"] == pipnet_sdk.__version__ == pipnet_sdk._version() != "0+unknown"
    assert p["model"]["sha256"] == sha256_file(random_model) and p["model"]["name"]
    assert p["detector"] == {"name": yunet_path.name, "sha256": sha256_file(yunet_path)}
    custom = Landmarker(model=random_model, detector=FixedDetector([]), threads=1).provenance()
    assert custom["detector"] == {"name": "FixedDetector", "sha256": None}
    json.dumps(p)


def _onnx_identity(path: Path, metadata: dict | None = None) -> Path:
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 64, 64])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 64, 64])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "identity", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    if metadata:
        helper.set_model_props(model, metadata)
    onnx.save(model, str(path))
    return path


def test_both_model_formats_agree(tmp_path: Path, images) -> None:
    """Format 3 (candidates read in the graph, the shipped form) and format 1 (head maps) of the
    same weights give the same landmarks through the one NumPy merge, with every decoding option."""
    to_onnx = pytest.importorskip("export.to_onnx")
    paths = [to_onnx.export_random(tmp_path / f"f{d}.onnx", input_size=64, seed=3, decoded=d) for d in (True, False)]
    image = images["group_2.jpg"]
    squares = np.array([[200.0, 150.0, 120.0], [330.0, 170.0, 90.0]])
    for opts in ({}, {"use_neighbors": False}, {"flip_test": True, "test_crops": 3}):
        graph, numpy_ = (Landmarker(model=p, detector=_NoDetector(), **opts) for p in paths)
        assert (graph.model.spec.format, numpy_.model.spec.format) == (3, 1)
        (pa, sa, _, da), (pb, sb, _, db) = (who.landmarks_in_squares(image, squares) for who in (graph, numpy_))
        np.testing.assert_allclose(pa, pb, atol=1e-3)
        np.testing.assert_allclose(sa, sb, atol=1e-5)
        np.testing.assert_allclose(da, db, atol=1e-4)  # the vote spread, in crop units
    plain = Landmarker(model=paths[0], detector=_NoDetector())
    assert np.abs(pa - plain.landmarks_in_squares(image, squares)[0]).max() > 0.01  # the options matter


class _NoDetector:
    """A plug-in detector that finds nothing (for tests that give their own squares)."""

    def detect(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32)


def test_model_without_metadata(tmp_path: Path, yunet_path: Path) -> None:
    path = _onnx_identity(tmp_path / "plain.onnx")
    with pytest.raises(ModelFormatError, match="no 'pipnet' metadata") as e:
        Landmarker(model=path, detector=yunet_path)
    assert "plain.onnx" in str(e.value)
    with pytest.raises(ModelFormatError, match="lacks"):
        Landmarker(
            model=_onnx_identity(tmp_path / "meta.onnx", {"pipnet": json.dumps({"format": 1})}), detector=yunet_path
        )
    with pytest.raises(ModelFormatError, match="JSON"):
        Landmarker(model=_onnx_identity(tmp_path / "bad.onnx", {"pipnet": "{nope"}), detector=yunet_path)
    with pytest.raises(ModelFormatError):  # a detector given as the landmark model
        Landmarker(model=yunet_path, detector=yunet_path)


def test_registry_names_via_models_dir(models_dir: Path, images, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(landmarker, "_default", None)  # restored afterwards
    faces = detect_landmarks(images["group_2.jpg"])
    assert len(faces) == 4 and faces[0].landmarks.shape == (68, 2)
    assert Path(landmarker._default.model.path).parent == models_dir
    rgb = detect_landmarks(np.ascontiguousarray(images["group_2.jpg"][..., ::-1]), color="rgb")
    np.testing.assert_allclose(rgb[0].landmarks, faces[0].landmarks, atol=1e-5)


def test_import_is_lazy_and_fast() -> None:
    code = (
        "import sys, time, onnxruntime as ort\n"
        "n = [0]\n"
        "orig = ort.InferenceSession.__init__\n"
        "def counting(self, *a, **k):\n"
        "    n[0] += 1\n"
        "    orig(self, *a, **k)\n"
        "ort.InferenceSession.__init__ = counting\n"
        "t = time.perf_counter()\n"
        "import pipnet_sdk, pipnet_sdk.landmarker as L\n"
        "dt = time.perf_counter() - t\n"
        "print(dt, n[0], L._default is None, 'torch' in sys.modules, 'PIL' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    dt, sessions, default_none, torch_loaded, pil_loaded = out.stdout.split()
    assert sessions == "0" and default_none == "True"
    assert torch_loaded == "False" and pil_loaded == "False"
    assert float(dt) < 2.0, f"import pipnet_sdk took {dt} s"


def test_draw_numpy_and_pil(lm: Landmarker, images) -> None:
    img = images["group_2.jpg"]
    before = img.copy()
    faces = lm.detect(img)
    faces[0].track_id = 7
    out = draw(img, faces)
    assert isinstance(out, np.ndarray) and out.shape == img.shape and out.dtype == np.uint8
    assert out is not img and not np.shares_memory(out, img)
    np.testing.assert_array_equal(img, before)  # input untouched
    changed = (out != img).any(axis=2)
    assert changed.sum() > 100
    x1, y1, x2, y2 = faces[1].box.astype(int)
    assert changed[y1 - 5 : y2 + 5, x1 - 5 : x2 + 5].any()
    assert (out[changed] != before[changed]).any()
    # nothing to draw: an equal copy
    same = draw(img, [])
    np.testing.assert_array_equal(same, img)
    assert not np.shares_memory(same, img)
    # PIL in -> PIL out, input untouched, colour given as RGB
    pil = Image.fromarray(img[..., ::-1].copy())
    pil_before = np.asarray(pil).copy()
    pil_out = draw(pil, faces, color=(255, 0, 0), radius=3, boxes=False, ids=False)
    assert isinstance(pil_out, Image.Image) and pil_out.size == pil.size and pil_out.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(pil), pil_before)
    arr = np.asarray(pil_out)
    x, y = np.round(faces[0].landmarks[30]).astype(int)
    if 0 <= x < arr.shape[1] and 0 <= y < arr.shape[0]:
        np.testing.assert_array_equal(arr[y, x], (255, 0, 0))
    # a single Face and a gray image work too
    gray = draw(img[..., 0].copy(), faces[0])
    assert gray.shape == img.shape


def test_flip_test_is_mirror_symmetric(samples: Path, yunet_path: Path) -> None:
    """flip_test averages a crop with its mirror, so predictions on a mirrored image become
    (nearly) the mirrored predictions: far more symmetric than without it. (Not exactly: the
    crop's resampling grid is quantised, and int8 amplifies tiny input differences.)"""
    from pipnet_sdk.landmark_model import LandmarkModel

    packaged = Path(__file__).resolve().parents[1] / "pipnet_sdk" / "models" / "pipnet-fast.onnx"
    flip = LandmarkModel(packaged).spec.extra["flip"]
    img = cv2.imread(str(samples / "group_2.jpg"))
    mirror = np.ascontiguousarray(img[:, ::-1])
    w = img.shape[1]
    boxes, _ = YuNet(yunet_path).detect(img)
    mirrored_boxes = boxes.copy()
    mirrored_boxes[:, [0, 2]] = (w - 1) - boxes[:, [2, 0]]

    def asymmetry(lm: Landmarker) -> float:
        a = lm.landmarks(img, boxes)
        b = lm.landmarks(mirror, mirrored_boxes)[:, flip]
        b[..., 0] = (w - 1) - b[..., 0]
        return float(np.linalg.norm(a - b, axis=-1).mean())

    with_flip = asymmetry(Landmarker(model=packaged, detector=yunet_path, flip_test=True))
    plain = asymmetry(Landmarker(model=packaged, detector=yunet_path))
    assert with_flip < 0.5 * plain, (with_flip, plain)


def test_test_crops_average_the_jittered_crops(samples: Path, yunet_path: Path) -> None:
    """test_crops=K is exactly the image-space mean of the plain model on each face's first K
    jittered squares, for detect, landmarks and detect_batch alike."""
    from pipnet_sdk.crop import jitter_squares

    packaged = ROOT / "pipnet_sdk" / "models" / "pipnet-fast.onnx"
    img = cv2.imread(str(samples / "group_2.jpg"))
    plain = Landmarker(model=packaged, detector=yunet_path, threads=1)
    three = Landmarker(model=packaged, detector=yunet_path, threads=1, test_crops=3)
    boxes, _ = YuNet(yunet_path).detect(img)
    squares = plain.squares(boxes)
    jittered = jitter_squares(squares, 3).reshape(len(boxes), 3, 3)
    expected = np.mean([plain.landmarks_in_squares(img, jittered[:, j])[0] for j in range(3)], axis=0)
    np.testing.assert_allclose(three.landmarks(img, boxes), expected, atol=1e-3)
    faces = three.detect(img)
    np.testing.assert_allclose(np.stack([f.landmarks for f in faces]), expected, atol=1e-3)
    batch = three.detect_batch([img, np.zeros((64, 64, 3), np.uint8), img])
    assert [len(f) for f in batch] == [len(faces), 0, len(faces)]
    np.testing.assert_allclose(np.stack([f.landmarks for f in batch[2]]), expected, atol=1e-3)
    with pytest.raises(ValueError, match="test_crops"):
        Landmarker(model=packaged, detector=yunet_path, test_crops=6)
    with pytest.raises(ValueError, match="test_crops"):
        Landmarker(model=packaged, detector=yunet_path, test_crops=0)


def test_test_crops_more_accurate_and_steadier(shared_dir: Path, yunet_path: Path) -> None:
    """On 30 real 300W test faces, 3 test crops lower the mean NME and make the landmarks move
    much less when the detector box shifts by 2 % of its width."""
    from export.data import iou, landmark_box, read_pts_folder
    from export.evaluate import nme_per_face

    det = YuNet(yunet_path)
    faces = []
    for s in read_pts_folder(shared_dir / "data" / "300w" / "test" / "lfpw")[:30]:
        img = cv2.imread(s.image)
        b, _ = det.detect(img)
        if len(b) and iou(b, landmark_box(s.points)).max() > 0.5:
            faces.append((img, b[iou(b, landmark_box(s.points)).argmax()], s.points))
    assert len(faces) >= 25
    shifts = np.array([(0.02, 0), (-0.02, 0), (0, 0.02), (0, -0.02)])

    def measure(k: int) -> tuple[float, float]:
        lm = Landmarker(detector=det, threads=1, test_crops=k)
        errors, spreads = [], []
        for img, box, gt in faces:
            errors.append(nme_per_face(lm.landmarks(img, box[None])[0], gt)[0])
            w = box[2] - box[0]
            moved = np.stack([lm.landmarks(img, (box + np.r_[s, s] * w)[None])[0] for s in shifts])
            iod = np.linalg.norm(gt[36] - gt[45])
            spreads.append(np.linalg.norm(moved - moved.mean(0), axis=-1).mean() / iod)
        return float(np.mean(errors)), float(np.mean(spreads))

    (nme1, spread1), (nme3, spread3) = measure(1), measure(3)
    assert nme3 < 0.98 * nme1, (nme3, nme1)
    assert spread3 < 0.7 * spread1, (spread3, spread1)


@pytest.mark.slow
def test_detect_landmarks_options_do_not_reload_models(
    samples: Path, models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """detect_landmarks with 50 detector thresholds loads no model again; other options load
    their models once, and at most MAX_CACHED_LANDMARKERS such Landmarkers are kept."""
    import pipnet_sdk.landmarker as L
    from pipnet_sdk import detect_landmarks

    loads = []
    real = L.LandmarkModel
    monkeypatch.setattr(L, "LandmarkModel", lambda *a, **k: loads.append(a) or real(*a, **k))
    monkeypatch.setattr(L, "_default", None)
    monkeypatch.setattr(L, "_custom", type(L._custom)())
    img = cv2.imread(str(samples / "group_2.jpg"))
    counts = [len(detect_landmarks(img, score_threshold=float(t))) for t in np.linspace(0.3, 0.99, 50)]
    assert len(loads) == 1 and len(L._custom) == 0  # the default's model, once
    assert counts[0] >= 4 and counts[-1] < counts[0] and counts == sorted(counts, reverse=True)  # they apply
    assert len(detect_landmarks(img, score_threshold=0.3, max_faces=2)) == 2
    for k in (2, 3, 2, 4, 5, 2):  # 2 again: still cached, not loaded again
        detect_landmarks(img, test_crops=k, score_threshold=0.5)
    assert len(loads) == 1 + 4 and len(L._custom) == L.MAX_CACHED_LANDMARKERS == 4
    detect_landmarks(img, flip_test=True)  # a fifth option set: the least recently used (3) goes
    assert len(loads) == 1 + 5 and len(L._custom) == 4
    assert [dict(key)["test_crops"] for key in list(L._custom)[:3]] == ["4", "5", "2"]
    with pytest.raises(ValueError, match="score_threshold"):
        detect_landmarks(img, score_threshold=1.5)


def test_landmark_model_is_the_network_only(models_dir: Path) -> None:
    """The image side belongs to Landmarker: LandmarkModel has no squares/run_squares/run_images
    (deprecated names of a package that was never released, removed) and takes no test_crops."""
    lm = Landmarker(threads=1)
    for old in ("squares", "run_squares", "run_images"):
        assert not hasattr(lm.model, old)
    with pytest.raises(TypeError, match="Landmarker"):
        type(lm.model)(lm.model.path, test_crops=3)


# ---------------------------------------------------------------------------------- argument checks
@pytest.mark.parametrize(
    "options, error, words",
    [
        ({"batch_size": 0}, ValueError, "batch_size"),
        ({"batch_size": -1}, ValueError, "batch_size"),
        ({"color": "xyz"}, ValueError, "color"),
        ({"test_crops": True}, ValueError, "test_crops"),
        ({"flip": True}, TypeError, "unknown options ['flip']"),
        ({"size": "640"}, ValueError, "detector size"),
        ({"max_faces": 2.5}, ValueError, "max_faces"),
        ({"fallback_sizes": 5}, ValueError, "fallback_sizes"),
        ({"score_threshold": "0.8"}, ValueError, "score_threshold"),
        ({"providers": ["NoSuchExecutionProvider"]}, ValueError, "NoSuchExecutionProvider"),
    ],
)
def test_bad_arguments_fail_in_the_constructor(
    random_model: Path, yunet_path: Path, options: dict, error: type, words: str
) -> None:
    with pytest.raises(error) as info:
        Landmarker(model=random_model, detector=yunet_path, **options)
    assert words in str(info.value)


def test_checked_options_are_stored_as_used(random_model: Path, yunet_path: Path, samples: Path) -> None:
    """Whole floats are sizes, a provider given as one name is one provider, and the options then
    work: max_faces=2.0 keeps two faces of a four-face photo."""
    img = cv2.imread(str(samples / "group_2.jpg"))
    lm = Landmarker(
        model=random_model,
        detector=yunet_path,
        providers="CPUExecutionProvider",
        size=640.0,
        max_faces=2.0,
        fallback_sizes=[320.0],
    )
    assert lm.detector.size == 640 and lm.detector.max_faces == 2 and lm.detector.fallback_sizes == (320,)
    assert len(lm.detect(img)) == 2
    with pytest.raises(TypeError, match=r"unknown options \['sizee'\]"):
        detect_landmarks(img, sizee=320)


def test_steps_reject_mismatched_or_bad_input(random_model: Path, yunet_path: Path, samples: Path) -> None:
    img = cv2.imread(str(samples / "group_2.jpg"))
    lm = Landmarker(model=random_model, detector=yunet_path)
    square = np.array([[200.0, 200.0, 120.0]])
    with pytest.raises(ValueError, match="2 images but 1"):
        lm.landmarks_for_images([img, img], [square])
    for bad in ([[10, 10, 0]], [[10, 10, -5]], [[np.nan, 10, 50]], [[1, 2, 3, 4, 5]]):
        with pytest.raises(ValueError, match="squares"):
            lm.landmarks_in_squares(img, np.array(bad, dtype=float))
    with pytest.raises(ValueError, match="boxes"):
        lm.squares([[1, 2, 3]])
    for one_image in (img, str(samples / "group_2.jpg")):
        with pytest.raises(TypeError, match="for one image use detect"):
            lm.detect_batch(one_image)
    points, scores, visibility, spread = lm.landmarks_in_squares(img, np.zeros((0, 3)))
    assert points.shape == (0, 68, 2) and scores.shape == spread.shape == (0, 68) and visibility is None


class _BrokenDetector:
    def __init__(self, result):
        self.result = result

    def detect(self, image):
        return self.result


@pytest.mark.parametrize(
    "result, words",
    [
        ((np.zeros((1, 3)), np.ones(1)), "returned bad boxes"),
        (None, "must return (boxes (F, 4), scores (F,))"),
        ((np.array([[0, 0, 10, 10]]), np.ones(2)), "1 boxes but 2 scores"),
    ],
)
def test_custom_detector_breaking_the_contract_is_named(random_model: Path, result, words: str) -> None:
    lm = Landmarker(model=random_model, detector=_BrokenDetector(result))
    with pytest.raises(ValueError) as info:
        lm.detect(np.zeros((64, 64, 3), np.uint8))
    assert "_BrokenDetector" in str(info.value) and words in str(info.value)
    no_faces = Landmarker(model=random_model, detector=_BrokenDetector(([], [])))
    assert no_faces.detect(np.zeros((9, 9, 3), np.uint8)) == []


def test_public_names_and_json_safe_faces() -> None:
    """The errors and types the README names are reachable from pipnet_sdk, listed once by dir();
    a hand-made face with NaN points gives JSON null, not NaN."""
    import pipnet_sdk
    from pipnet_sdk.geometry import HeadPose
    from pipnet_sdk.hub import ChecksumError, ModelNotFoundError
    from pipnet_sdk.runtime import ModelFormatError as FormatError

    assert (
        pipnet_sdk.HeadPose,
        pipnet_sdk.ChecksumError,
        pipnet_sdk.ModelNotFoundError,
        pipnet_sdk.ModelFormatError,
    ) == (HeadPose, ChecksumError, ModelNotFoundError, FormatError)
    names = dir(pipnet_sdk)
    assert len(names) == len(set(names)) and set(pipnet_sdk.__all__) <= set(names)
    points = np.full((68, 2), np.nan, np.float32)
    face = Face(
        box=np.array([0, 0, 10, 10], np.float32), score=0.9, landmarks=points, landmark_scores=np.zeros(68, np.float32)
    )
    d = json.loads(json.dumps(face.to_dict(), allow_nan=False))
    assert d["landmarks"][0] == [None, None] and d["pose"] is None and d["box"] == [0, 0, 10, 10]


def test_many_threads_asking_for_one_option_set_load_it_once(
    samples: Path, random_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """16 threads calling detect_landmarks(model=...) at once build one Landmarker, not 16, and all
    get its results."""
    import threading

    import pipnet_sdk.landmarker as L

    loads = []
    real = L.LandmarkModel

    def slow_load(*a, **k):  # a load that takes a while, as a real one does
        loads.append(a)
        threading.Event().wait(0.2)
        return real(*a, **k)

    monkeypatch.setattr(L, "LandmarkModel", slow_load)
    monkeypatch.setattr(L, "_custom", type(L._custom)())
    img = cv2.imread(str(samples / "group_2.jpg"))
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda _: detect_landmarks(img, model=str(random_model)), range(16)))
    assert len(loads) == 1 and len(L._custom) == 1 and not L._loading
    assert all(len(r) == len(results[0]) > 0 for r in results)
    for faces in results[1:]:
        np.testing.assert_array_equal(
            np.stack([f.landmarks for f in faces]), np.stack([f.landmarks for f in results[0]])
        )


def test_the_steps_take_what_image_returns_without_color_again(samples: Path) -> None:
    """An RGB Landmarker's image() gives BGR; the steps must not swap its channels a second time."""
    import cv2

    rgb = cv2.cvtColor(cv2.imread(str(samples / "group_2.jpg")), cv2.COLOR_BGR2RGB)
    lm = Landmarker(color="rgb", threads=1)
    img = lm.image(rgb)
    assert lm.image(img) is img
    boxes, _ = lm.detect_boxes(img)
    np.testing.assert_array_equal(boxes, lm.detect_boxes(rgb)[0])
    marks = lm.landmarks_in_squares(img, lm.squares(boxes))
    np.testing.assert_array_equal(marks.points, lm.landmarks_in_squares(rgb, lm.squares(boxes)).points)
    assert [f.box.tolist() for f in lm.detect(img)] == [f.box.tolist() for f in lm.detect(rgb)]
