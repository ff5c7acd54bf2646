"""Video: the One-Euro filter and VideoLandmarker's state machine (detect / track / lose / ids).

The state-machine tests use the random-weights model (its landmarks are meaningless, so they
only rely on the detector: YuNet, wrapped to count its calls). Tests that need real landmarks
(a track lost by its landmark scores, tracking that follows the face) run with a trained model
when one is available (``pipnet_sdk/models/pipnet-fast.onnx`` or ``$PIPNET_TEST_MODEL``).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipnet_sdk.detect import YuNet
from pipnet_sdk.landmarker import Landmarker
from pipnet_sdk.video import OneEuroFilter, VideoLandmarker

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------- filter
def test_filter_constant_signal_stays_put() -> None:
    f = OneEuroFilter(min_cutoff=0.5, beta=5.0, speed="point")
    x = np.random.default_rng(0).normal(size=(68, 2)) * 50
    for _ in range(20):
        y = f(x)
    np.testing.assert_allclose(y, x, atol=1e-9)


def test_filter_follows_a_step_within_a_few_frames() -> None:
    x0, x1 = np.zeros(4), np.full(4, 10.0)
    fast = OneEuroFilter(min_cutoff=1.0, beta=1.0)
    slow = OneEuroFilter(min_cutoff=1.0, beta=0.0)  # plain low-pass: lags behind a step
    for f in (fast, slow):
        f(x0)
    out_fast = [fast(x1) for _ in range(3)]
    out_slow = [slow(x1) for _ in range(3)]
    assert np.abs(out_fast[-1] - x1).max() < 0.5  # within 5 % after 3 frames
    assert np.abs(out_slow[-1] - x1).max() > 3.0
    assert np.all(np.diff([o[0] for o in out_fast]) >= 0)  # no overshoot / ringing


def test_filter_reduces_noise_variance() -> None:
    rng = np.random.default_rng(1)
    noisy = 100 + rng.normal(0, 1.0, size=(300, 68, 2))
    f = OneEuroFilter(min_cutoff=1.0, beta=0.5, speed="mean")
    out = np.array([f(x, scale=50.0) for x in noisy])
    assert out[30:].var() < 0.25 * noisy[30:].var()


def test_filter_timestamps_and_frame_count_agree() -> None:
    rng = np.random.default_rng(2)
    xs = np.cumsum(rng.normal(size=(30, 5)), axis=0)
    a, b, c = (OneEuroFilter(min_cutoff=1.0, beta=0.1, rate=30.0) for _ in range(3))
    out_a = [a(x) for x in xs]
    out_b = [b(x, t=i / 30.0) for i, x in enumerate(xs)]
    out_c = [c(x, t=i / 10.0) for i, x in enumerate(xs)]  # slower clock: less smoothing
    np.testing.assert_allclose(out_a, out_b, atol=1e-12)
    assert np.abs(np.array(out_c) - xs).mean() < np.abs(np.array(out_a) - xs).mean()


def test_filter_mean_speed_moves_rigidly() -> None:
    f = OneEuroFilter(min_cutoff=1.0, beta=0.5, speed="mean")
    x = np.random.default_rng(3).normal(size=(68, 2)) * 30
    f(x)
    y = f(x + [4.0, -2.0])
    shift = y - x
    np.testing.assert_allclose(shift, np.broadcast_to(shift[0], shift.shape), atol=1e-9)
    f.reset()
    np.testing.assert_allclose(f(x + 7), x + 7)  # first sample after reset passes through


def test_filter_rejects_bad_options() -> None:
    with pytest.raises(ValueError):
        OneEuroFilter(min_cutoff=0)
    with pytest.raises(ValueError):
        OneEuroFilter(speed="fast")


def test_max_lead_takes_back_the_lag_of_a_steady_motion() -> None:
    """On a ramp the plain filter trails by (1 - a) / a frames; max_lead moves the output ahead by
    that lag, at most max_lead frames; the filter's own state is not moved."""
    a = 1 / (1 + 30 / (2 * math.pi))  # min_cutoff 1 Hz at 30 fps
    behind = {}
    for lead in (0.0, 0.25, 100.0):
        f = OneEuroFilter(min_cutoff=1.0, beta=0.0, max_lead=lead)
        for t in range(300):
            y = f(np.array([float(t)]))
        behind[lead] = 299 - float(y[0])
    assert behind[0.0] == pytest.approx((1 - a) / a, abs=1e-3)
    assert behind[0.25] == pytest.approx((1 - a) / a - 0.25, abs=1e-3)
    assert abs(behind[100.0]) < 1e-3
    with pytest.raises(ValueError, match="max_lead"):
        OneEuroFilter(max_lead=-1)


def test_hidden_points_are_held_by_the_factor_given() -> None:
    """Points marked steady move less after a step, by the factor given; a factor of 1 treats them
    like the others; VideoLandmarker checks its factor."""
    steady = np.array([True, False])
    moved = {}
    for factor in (0.25, 1.0):
        f = OneEuroFilter(min_cutoff=1.0, beta=0.0, speed="point")
        f(np.zeros((2, 2)), steady=steady, steady_cutoff=factor)
        moved[factor] = f(np.ones((2, 2)), steady=steady, steady_cutoff=factor)[:, 0]
    assert moved[0.25][0] < 0.5 * moved[0.25][1]
    assert moved[1.0][0] == moved[1.0][1] == moved[0.25][1]
    for bad in (0, 1.5, float("nan")):
        with pytest.raises(ValueError, match="hidden_cutoff"):
            VideoLandmarker(Landmarker(threads=1), hidden_cutoff=bad)


# ---------------------------------------------------------------------------------- frames
class CountingDetector:
    """A real YuNet that counts its calls."""

    def __init__(self, path: Path) -> None:
        self.yunet = YuNet(path, threads=1)
        self.calls = 0

    def detect(self, image: np.ndarray):
        self.calls += 1
        return self.yunet.detect(image)


@pytest.fixture(scope="module")
def two_faces(samples: Path, yunet_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Two faces of the committed group photo, each cut out square (1.5 times its box, no other
    face in it) and scaled to 240 x 240."""
    img = cv2.imread(str(samples / "group_2.jpg"))
    boxes, _ = YuNet(yunet_path).detect(img)
    out = []
    for x1, y1, x2, y2 in boxes[:2]:
        half = 0.75 * max(x2 - x1, y2 - y1)
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        crop = img[round(cy - half) : round(cy + half), round(cx - half) : round(cx + half)]
        out.append(cv2.resize(crop, (240, 240), interpolation=cv2.INTER_AREA))
    return out[0], out[1]


def canvas(*placed: tuple[np.ndarray, float, float]) -> np.ndarray:
    """A 320 x 640 black frame with images pasted at (x, y) (sub-pixel via warpAffine)."""
    frame = np.zeros((320, 640, 3), np.uint8)
    for img, x, y in placed:
        m = np.float32([[1, 0, x], [0, 1, y]])
        layer = cv2.warpAffine(img, m, (640, 320), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0))
        mask = cv2.warpAffine(np.full(img.shape[:2], 255, np.uint8), m, (640, 320)) > 127
        frame[mask] = layer[mask]
    return frame


def make_video(landmarker: Landmarker, **options) -> VideoLandmarker:
    return VideoLandmarker(landmarker, **options)


@pytest.fixture
def counted(random_model: Path, yunet_path: Path) -> tuple[Landmarker, CountingDetector]:
    det = CountingDetector(yunet_path)
    # random weights score faces low and put their points anywhere: no upright search on them
    return Landmarker(model=random_model, detector=det, threads=1, upright=False), det


def test_detect_every_is_honoured(counted, two_faces) -> None:
    lm, det = counted
    v = make_video(lm, detect_every=3, smoothing=False)
    flags = []
    for i in range(8):
        faces = v.track(canvas((two_faces[0], 40 + 0.5 * i, 40)))
        flags.append(v.detected)
        assert len(faces) == 1 and faces[0].track_id == 0
    assert flags == [True, False, False, True, False, False, True, False]
    assert det.calls == 3


def test_same_face_shifted_keeps_its_id(counted, two_faces) -> None:
    lm, det = counted
    v = make_video(lm, detect_every=1)
    ids = []
    for i in range(6):
        faces = v.track(canvas((two_faces[0], 40 + 2 * i, 40 + i)))
        ids.append([f.track_id for f in faces])
    assert ids == [[0]] * 6
    assert det.calls == 6


def test_new_face_gets_a_new_id(counted, two_faces) -> None:
    lm, _ = counted
    v = make_video(lm, detect_every=1)
    a, b = two_faces
    assert [f.track_id for f in v.track(canvas((a, 40, 40)))] == [0]
    faces = v.track(canvas((a, 41, 40), (b, 400, 40)))
    assert [f.track_id for f in faces] == [0, 1]
    right = faces[1].box
    assert right[0] > 320  # id 1 is the new face on the right
    faces = v.track(canvas((a, 42, 40), (b, 401, 40)))
    assert [f.track_id for f in faces] == [0, 1]


def test_face_gone_is_dropped_and_redetected(counted, two_faces) -> None:
    lm, det = counted
    v = make_video(lm, detect_every=1, max_lost=0)
    assert [f.track_id for f in v.track(canvas((two_faces[0], 40, 40)))] == [0]
    assert v.track(canvas()) == [] and v.num_tracks == 0
    calls = det.calls
    faces = v.track(canvas((two_faces[0], 40, 40)))
    assert det.calls == calls + 1 and [f.track_id for f in faces] == [1]


def test_unmatched_track_survives_max_lost_detect_frames(counted, two_faces) -> None:
    lm, _ = counted
    v = make_video(lm, detect_every=1, max_lost=2, min_score=0.0)
    v.track(canvas((two_faces[0], 40, 40)))
    blank = canvas()
    assert len(v.track(blank)) == 1 and len(v.track(blank)) == 1  # missed 1, 2: kept
    assert v.track(blank) == []  # missed 3 > max_lost


def test_reset_starts_over(counted, two_faces) -> None:
    lm, det = counted
    v = make_video(lm, detect_every=10)
    frame = canvas((two_faces[0], 40, 40))
    v.track(frame)
    v.track(frame)
    assert det.calls == 1
    v.reset()
    faces = v.track(frame)
    assert det.calls == 2 and v.detected and [f.track_id for f in faces] == [0]


def test_faces_carry_boxes_and_filtered_landmarks(counted, two_faces) -> None:
    lm, _ = counted
    v = make_video(lm, detect_every=5, smoothing=True)
    frame = canvas((two_faces[0], 40, 40))
    for _ in range(3):
        faces = v.track(frame, timestamp=None)
    (f,) = faces
    assert f.landmarks.shape == (68, 2) and f.landmarks.dtype == np.float32
    assert f.box.shape == (4,) and f.box[2] > f.box[0] and f.box[3] > f.box[1]
    assert f.to_dict()["track_id"] == 0


def test_bad_options() -> None:
    with pytest.raises(ValueError):
        VideoLandmarker(landmarker=object(), detect_every=0)


# ---------------------------------------------------------------------------------- trained
def _trained_model() -> Path | None:
    for p in (os.environ.get("PIPNET_TEST_MODEL"), ROOT / "pipnet_sdk" / "models" / "pipnet-fast.onnx"):
        if p and Path(p).is_file():
            return Path(p)
    return None


@pytest.fixture(scope="module")
def trained(yunet_path: Path) -> tuple[Landmarker, CountingDetector]:
    path = _trained_model()
    if path is None:
        pytest.skip("no trained model (pipnet_sdk/models/pipnet-fast.onnx or $PIPNET_TEST_MODEL)")
    det = CountingDetector(yunet_path)
    return Landmarker(model=path, detector=det, threads=1), det


def test_tracking_follows_the_face(trained, two_faces) -> None:
    lm, det = trained
    v = make_video(lm, detect_every=100, smoothing=False)
    calls = det.calls
    for i in range(10):
        frame = canvas((two_faces[0], 40 + 3 * i, 40 + i))
        faces = v.track(frame)
        ref = lm.detect(frame)[0].landmarks
        iod = np.linalg.norm(ref[36] - ref[45])
        assert len(faces) == 1 and faces[0].track_id == 0
        assert np.linalg.norm(faces[0].landmarks - ref, axis=1).mean() < 0.1 * iod
    assert det.calls - calls == 1 + 10  # one by the tracker, ten by the references


def test_a_detect_frame_crops_where_the_detector_does(trained, two_faces) -> None:
    """On a detect frame a tracked face is cut from the detector's square, as per-frame detection
    cuts it, so its landmarks are per-frame detection's to the bit (unsmoothed); on the frames
    between, from its own landmarks."""
    lm, _ = trained
    v = make_video(lm, detect_every=3, smoothing=False)
    same = []
    for i in range(7):
        frame = canvas((two_faces[0], 40 + 1.5 * i, 40 + 0.5 * i))
        faces = v.track(frame)
        ref = lm.detect(frame)[0].landmarks
        same.append(bool(np.array_equal(faces[0].landmarks, ref)))
    assert same[0] and same[3] and same[6]  # the detect frames
    assert not all(same)  # the tracked frames are cut from the landmarks


def test_face_gone_lost_by_scores(trained, two_faces) -> None:
    lm, det = trained
    v = make_video(lm, detect_every=100)
    v.track(canvas((two_faces[0], 40, 40)))
    calls = det.calls
    assert v.track(canvas()) == []  # tracked, lost by its scores: the detector looks at once
    assert det.calls == calls + 1 and v.detected
    faces = v.track(canvas((two_faces[0], 40, 40)))
    assert v.detected and det.calls == calls + 2 and [f.track_id for f in faces] == [1]


# ---------------------------------------------------------------------------------- CLI
def _video_args(*argv: str):
    import argparse

    from pipnet_sdk import cli_video

    parser = argparse.ArgumentParser(prog="pipnet")
    cli_video.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["video", *argv])


def test_cli_video_writes_json_and_video(
    tmp_path: Path, random_model: Path, yunet_path: Path, two_faces, capsys
) -> None:
    import json

    clip = tmp_path / "clip.mp4"
    w = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 25, (640, 320))
    for i in range(7):
        w.write(canvas((two_faces[0], 40 + 2 * i, 40)))
    w.release()
    out, js = tmp_path / "out" / "a.mp4", tmp_path / "a.json"
    args = _video_args(
        str(clip),
        "--out",
        str(out),
        "--json",
        str(js),
        "--model",
        str(random_model),
        "--no-upright",
        "--detector",
        str(yunet_path),
        "--detect-every",
        "3",
        "--threads",
        "1",
    )
    assert args.func(args) == 0
    d = json.loads(js.read_text())
    assert d["num_frames"] == 7 and len(d["frames"]) == 7 and d["fps"] == 25
    assert d["provenance"] == Landmarker(model=random_model, detector=yunet_path).provenance()
    assert d["provenance"]["model"]["sha256"] and d["provenance"]["detector"]["sha256"]
    assert [f["detected"] for f in d["frames"]] == [True, False, False, True, False, False, True]
    assert all([x["track_id"] for x in f["faces"]] == [0] for f in d["frames"])
    cap = cv2.VideoCapture(str(out))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 7
    cap.release()
    assert "frames/s" in capsys.readouterr().err


def _clip(path: Path, frames: list[np.ndarray]) -> Path:
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, (640, 320))
    for f in frames:
        w.write(f)
    w.release()
    return path


def test_cli_video_unwritable_output_and_crash(
    tmp_path: Path, random_model: Path, yunet_path: Path, two_faces, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--out into a place that cannot hold a file is named as such (not blamed on the codec);
    a run that crashes leaves JSON that says so, with the frames it finished."""
    import json

    from pipnet_sdk import video as video_module

    clip = _clip(tmp_path / "clip.mp4", [canvas((two_faces[0], 40 + 2 * i, 40)) for i in range(6)])
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    models = ["--model", str(random_model), "--no-upright", "--detector", str(yunet_path)]
    for option in ("--out", "--json"):
        args = _video_args(str(clip), option, str(blocker / "x.mp4"), *models)
        assert args.func(args) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"cannot write {option}" in err[0] and "codec" not in err[0]
    real, calls = video_module.VideoLandmarker.track, []

    def fails_on_fourth(self, frame, timestamp=None, color=None):
        calls.append(1)
        if len(calls) == 4:
            raise RuntimeError("simulated failure")
        return real(self, frame, timestamp, color)

    monkeypatch.setattr(video_module.VideoLandmarker, "track", fails_on_fourth)
    js = tmp_path / "run.json"
    args = _video_args(str(clip), "--json", str(js), *models)
    with pytest.raises(RuntimeError, match="simulated"):
        args.func(args)
    d = json.loads(js.read_text())
    assert d["complete"] is False and d["num_frames"] == 3 == len(d["frames"])
    assert "stopped after 3 frames" in d["error"] and "simulated failure" in d["error"]
    monkeypatch.setattr(video_module.VideoLandmarker, "track", real)
    assert args.func(args) == 0
    d = json.loads(js.read_text())
    assert d["complete"] is True and d["num_frames"] == 6 and "error" not in d


def test_cli_video_errors(tmp_path: Path, random_model: Path, capsys) -> None:
    args = _video_args(str(tmp_path / "missing.mp4"), "--model", str(random_model), "--no-upright")
    assert args.func(args) == 2
    bad = tmp_path / "not_a_video.mp4"
    bad.write_text("hello")
    args = _video_args(str(bad), "--model", str(random_model), "--no-upright")
    assert args.func(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("pipnet: error: ") for line in err)


def test_frame_size_change_keeps_tracks(trained, two_faces) -> None:
    """A stream that changes size mid-way (same scene, resized): the first frame at the new size
    has its faces, with their old track ids (the detector runs on that frame)."""
    lm, det = trained
    v = make_video(lm, detect_every=100)
    frame = canvas((two_faces[0], 40, 40), (two_faces[1], 360, 60))
    ids = [f.track_id for f in v.track(frame)]
    v.track(frame)
    assert ids == [0, 1]
    for size in ((960, 480), (400, 200)):  # bigger, then smaller than the first
        calls = det.calls
        faces = v.track(cv2.resize(frame, size, interpolation=cv2.INTER_AREA))
        assert v.detected and det.calls == calls + 1
        assert [f.track_id for f in faces] == ids
        scale = size[0] / 640
        expected = lm.detect(cv2.resize(frame, size, interpolation=cv2.INTER_AREA))
        for f, e in zip(faces, expected):  # on the new frame's pixels
            iod = np.linalg.norm(e.landmarks[36] - e.landmarks[45])
            assert np.linalg.norm(f.landmarks - e.landmarks, axis=1).mean() < 0.1 * iod, scale
        assert [f.track_id for f in v.track(cv2.resize(frame, size, interpolation=cv2.INTER_AREA))] == ids


def test_cli_video_outputs_checked_against_the_input(tmp_path: Path, two_faces, capsys) -> None:
    """--out or --json naming the input video, both naming one file, or a video extension OpenCV
    cannot write: one error line before any model is loaded (the model named here does not
    exist), with the input left whole; a folder given as the input is named as a folder."""
    clip = _clip(tmp_path / "clip.mp4", [canvas((two_faces[0], 40 + 2 * i, 40)) for i in range(5)])
    before = clip.read_bytes()
    cases = [
        (("--out", str(clip)), "is one of the inputs"),
        (("--json", str(clip)), "is one of the inputs"),
        (("--out", str(tmp_path / "a.mp4"), "--json", str(tmp_path / "a.mp4")), "name the same file"),
        (("--out", str(tmp_path / "new" / "out.xyz")), "cannot write the video"),
    ]
    for options, words in cases:
        args = _video_args(str(clip), *options, "--model", str(tmp_path / "no_such_model.onnx"))
        assert args.func(args) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and words in err[0] and "no_such_model" not in err[0], err
    assert clip.read_bytes() == before and not (tmp_path / "new").exists()
    args = _video_args(str(tmp_path))
    assert args.func(args) == 2
    assert "is a folder, not a video file" in capsys.readouterr().err


def test_video_landmarker_checks_its_options_at_once() -> None:
    """Bad filter options and a model name where a Landmarker belongs fail in the constructor."""
    with pytest.raises(ValueError, match="fps"):
        VideoLandmarker(landmarker=object(), fps=0)
    with pytest.raises(ValueError, match="min_cutoff"):
        VideoLandmarker(landmarker=object(), min_cutoff=-1)
    with pytest.raises(TypeError, match="Landmarker"):
        VideoLandmarker("pipnet-r18")


# ---------------------------------------------------------------------------------- hostile inputs
def test_scene_cut_finds_the_new_faces_on_its_first_frame(trained, two_faces) -> None:
    """When every tracked face is lost (a scene cut, or another stream fed to the same
    VideoLandmarker), the detector runs on that same frame: its faces are there at once."""
    lm, det = trained
    a, b = two_faces
    v = make_video(lm, detect_every=100)
    for _ in range(3):
        assert [f.track_id for f in v.track(canvas((a, 40, 40)))] == [0]
    calls = det.calls
    cut = canvas((b, 380, 60))
    faces = v.track(cut)
    assert v.detected and det.calls == calls + 1
    assert [f.track_id for f in faces] == [1] and faces[0].box[0] > 300
    expected = lm.detect(cut)[0].landmarks
    iod = np.linalg.norm(expected[36] - expected[45])
    assert np.linalg.norm(faces[0].landmarks - expected, axis=1).mean() < 0.1 * iod


def test_timestamps_must_be_finite_and_in_order(counted, two_faces) -> None:
    """A NaN or infinite timestamp (or fps), or one before the previous frame's, is refused with
    a clear error and changes nothing: the frames after it get finite landmarks."""
    lm, _ = counted
    frame = canvas((two_faces[0], 40, 40))
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="fps"):
            VideoLandmarker(lm, fps=bad)
    with pytest.raises(ValueError, match="finite"):
        OneEuroFilter()(np.zeros(2), t=float("nan"))
    v = make_video(lm, detect_every=2)
    v.track(frame, timestamp=0.0)
    v.track(frame, timestamp=0.04)
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="finite"):
            v.track(frame, timestamp=bad)
    with pytest.raises(ValueError, match="must not decrease"):
        v.track(frame, timestamp=0.02)
    for k in range(2, 8):
        faces = v.track(frame, timestamp=0.04 * k)
        assert len(faces) == 1 and np.isfinite(faces[0].landmarks).all()
    v.reset()
    assert len(v.track(frame, timestamp=0.0)) == 1  # a new stream starts again


def test_one_video_landmarker_driven_from_several_threads(counted, two_faces) -> None:
    """Three threads feeding one VideoLandmarker frames with 0, 1 and 2 faces (tracks come and
    go): the calls are taken one at a time, no error."""
    import threading

    lm, _ = counted
    a, b = two_faces
    frames = [canvas((a, 40, 40)), canvas(), canvas((a, 40, 40), (b, 380, 60)), canvas((b, 380, 60))]

    def feed(v: VideoLandmarker, results: list, errors: list) -> None:
        try:
            for i in range(24):
                results.append(v.track(frames[i % 4]))
        except Exception as e:  # collected: a failure in a thread would otherwise go unseen
            errors.append(e)

    for detect_every in (1, 3):
        v = make_video(lm, detect_every=detect_every)
        results: list = []
        errors: list = []
        threads = [threading.Thread(target=feed, args=(v, results, errors)) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == [] and len(results) == 72
        assert all(np.isfinite(f.landmarks).all() for faces in results for f in faces)


def _cli(*argv: str, timeout: float = 300, **kw):
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", "pipnet_sdk.cli", *argv], cwd=ROOT, capture_output=True, text=True, timeout=timeout, **kw
    )


def test_damaged_frames_are_skipped_and_reported(
    tmp_path: Path, random_model: Path, yunet_path: Path, two_faces
) -> None:
    """A 100-frame video with 5 kB zeroed at a third: the frames after the damage are tracked too,
    the JSON lists the missing ones with "complete": false, exit code 1 and a warning; with -q
    not a line on stderr, not FFmpeg's either."""
    import json

    clip = _clip(tmp_path / "clip.mp4", [canvas((two_faces[0], 40 + 3 * i, 40)) for i in range(100)])
    data = bytearray(clip.read_bytes())
    data[len(data) // 3 : len(data) // 3 + 5000] = bytes(5000)
    clip.write_bytes(bytes(data))
    js = tmp_path / "t.json"
    models = ["--model", str(random_model), "--no-upright", "--detector", str(yunet_path)]
    quiet = _cli("video", str(clip), "--json", str(js), *models, "-q")
    assert quiet.returncode == 1 and quiet.stderr == ""
    d = json.loads(js.read_text())
    indices = [f["index"] for f in d["frames"]]
    missing = {i for a, b in d["missing_frames"] for i in range(a, b + 1)}
    assert d["complete"] is False and "could not be read" in d["error"] and 0 < len(missing) < 20
    assert d["num_frames"] == len(indices) and sorted(set(indices) | missing) == list(range(100))
    assert max(indices) == 99 and min(missing) > 10
    assert [f["time"] for f in d["frames"]] == [round(i / 25, 4) for i in indices]
    loud = _cli("video", str(clip), "--json", str(js), *models)
    assert loud.returncode == 1 and "pipnet: warning:" in loud.stderr and "could not be read" in loud.stderr


def test_odd_sized_video_json_says_what_was_written(
    tmp_path: Path, random_model: Path, yunet_path: Path, two_faces, capsys
) -> None:
    """A 641 x 481 video: the JSON's width and height are the input's (the landmarks' pixels), and
    "out" says the annotated video's size, which is what was written (642 x 482: the codec
    needs even sizes)."""
    import json

    clip = tmp_path / "odd.avi"
    w = cv2.VideoWriter(str(clip), cv2.CAP_OPENCV_MJPEG, cv2.VideoWriter.fourcc(*"MJPG"), 25, (641, 481))
    for i in range(5):
        frame = np.zeros((481, 641, 3), np.uint8)
        frame[40:280, 40 + i : 280 + i] = two_faces[0]
        w.write(frame)
    w.release()
    cap = cv2.VideoCapture(str(clip))
    assert cap.read()[1].shape == (481, 641, 3)
    cap.release()
    out, js = tmp_path / "o.mp4", tmp_path / "o.json"
    args = _video_args(
        str(clip),
        "--out",
        str(out),
        "--json",
        str(js),
        "--model",
        str(random_model),
        "--no-upright",
        "--detector",
        str(yunet_path),
    )
    assert args.func(args) == 0
    d = json.loads(js.read_text())
    cap = cv2.VideoCapture(str(out))
    written = cap.read()[1]
    cap.release()
    assert (d["width"], d["height"]) == (641, 481)
    assert (d["out"]["width"], d["out"]["height"]) == (written.shape[1], written.shape[0]) == (642, 482)
    assert "642x482" in capsys.readouterr().err


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory: pytest.TempPathFactory, two_faces) -> Path:
    return _clip(
        tmp_path_factory.mktemp("long") / "long.mp4", [canvas((two_faces[0], 40 + (i % 60), 40)) for i in range(400)]
    )


@pytest.mark.skipif(os.name != "posix", reason="POSIX signals")
@pytest.mark.parametrize("signame", ["SIGTERM", "SIGHUP"])
def test_a_signal_stops_the_run_with_whole_outputs(
    signame: str, tmp_path: Path, long_clip: Path, random_model: Path, yunet_path: Path
) -> None:
    """SIGTERM or SIGHUP during `pipnet video` stops it as Ctrl-C does: the JSON is closed with
    the frames done and "complete": false, the video plays with as many frames, exit 128 + N."""
    import json
    import signal
    import subprocess
    import sys
    import time

    out, js = tmp_path / "o.mp4", tmp_path / "o.json"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipnet_sdk.cli",
            "video",
            str(long_clip),
            "--out",
            str(out),
            "--json",
            str(js),
            "--model",
            str(random_model),
            "--no-upright",
            "--detector",
            str(yunet_path),
            "--detect-every",
            "1",
            "-q",
        ],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not js.exists() or js.read_text().count('"index"') < 5:
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.05)
        proc.send_signal(getattr(signal, signame))
        err = proc.communicate(timeout=120)[1]
    finally:
        proc.kill()
    assert proc.returncode == 128 + getattr(signal, signame) and f"interrupted by {signame}" in err
    d = json.loads(js.read_text())
    assert d["complete"] is False and signame in d["error"] and 5 <= d["num_frames"] == len(d["frames"]) < 400
    cap = cv2.VideoCapture(str(out))
    decoded = 0  # frames read back, not the container's count (estimated from its duration: one off at times)
    while cap.isOpened() and cap.read()[0]:
        decoded += 1
    cap.release()
    assert decoded == d["num_frames"]
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_video_on_a_really_full_disk(tmp_path: Path, random_model: Path, yunet_path: Path, two_faces) -> None:
    """--out and --json on a 160 kB disk: exit code 3, the video named with "No space left on
    device" (not ~300 lines of FFmpeg), and what stays on the disk is whole: the JSON parses and
    says it is not complete, no unplayable video, no temporary file."""
    from test_cli import run_on_a_tiny_disk

    clip = _clip(tmp_path / "clip.mp4", [canvas((two_faces[0], 40 + 3 * i, 40)) for i in range(60)])
    disk = tmp_path / "disk"
    got = run_on_a_tiny_disk(
        tmp_path,
        "160k",
        [
            "video",
            str(clip),
            "--out",
            str(disk / "o.mp4"),
            "--json",
            str(disk / "o.json"),
            "--model",
            str(random_model),
            "--no-upright",
            "--detector",
            str(yunet_path),
            "-q",
        ],
        dict(os.environ),
    )
    assert got["rc"] == 3
    errors = got["stderr"].strip().splitlines()
    assert 1 <= len(errors) <= 3 and all(e.startswith("pipnet: error: cannot write") for e in errors), errors
    assert any(f"{disk / 'o.mp4'}: No space left on device" in e for e in errors)
    assert "o.mp4" not in got["files"] and not [n for n in got["files"] if n.startswith(".")]
    if "o.json" in got["files"]:
        d = got["files"]["o.json"]
        assert d is not None and d["num_frames"] == len(d["frames"]) and d["complete"] is False


def test_video_json_on_a_full_disk_keeps_whole_frames(
    tmp_path: Path, random_model: Path, yunet_path: Path, two_faces, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--json's disk fills up: the file keeps the frames written whole and is closed as valid
    JSON that says so; --out is complete; exit code 3 with the file and the cause named."""
    import json

    from test_cli import _disk_fills

    clip = _clip(tmp_path / "clip.mp4", [canvas((two_faces[0], 40 + 3 * i, 40)) for i in range(12)])
    out, js = tmp_path / "o.mp4", tmp_path / "o.json"
    _disk_fills(monkeypatch, lambda p: p == os.path.realpath(js), room=6000)  # the head and a few frames
    args = _video_args(
        str(clip),
        "--out",
        str(out),
        "--json",
        str(js),
        "--model",
        str(random_model),
        "--no-upright",
        "--detector",
        str(yunet_path),
        "-q",
    )
    assert args.func(args) == 3
    err = capsys.readouterr().err
    assert f"cannot write {js}: No space left on device" in err
    d = json.loads(js.read_text())  # closed: the tail went where the cut frames were
    assert d["complete"] is False and "No space left on device" in d["error"]
    assert 1 <= d["num_frames"] == len(d["frames"]) < 12 and js.stat().st_size <= 6000
    cap = cv2.VideoCapture(str(out))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 12
    cap.release()


def test_unplayable_video_is_removed_and_named(
    tmp_path: Path, random_model: Path, yunet_path: Path, two_faces, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OpenCV's writer says nothing when its writes fail: the video is read back, and one that
    does not play is removed (an older file at --out is left as it was), named on stderr with
    the cause, exit code 3."""
    from pipnet_sdk import cli_video

    class BrokenWriter:  # what OpenCV's writer leaves on a full disk: a few bytes, no index
        def __init__(self, path, *a):
            self.path = path

        def isOpened(self):  # noqa: N802 (OpenCV's name)
            return True

        def write(self, image):
            pass

        def release(self):
            Path(self.path).write_bytes(b"\x00\x00\x00\x1cftypisom" + bytes(100))

    clip = _clip(tmp_path / "clip.mp4", [canvas((two_faces[0], 40 + 3 * i, 40)) for i in range(4)])
    out = tmp_path / "o.mp4"
    out.write_bytes(b"an older video")
    monkeypatch.setattr(cli_video, "open_video_writer", BrokenWriter)
    monkeypatch.setattr(cli_video, "_no_room", lambda path: "No space left on device")
    args = _video_args(
        str(clip), "--out", str(out), "--model", str(random_model), "--no-upright", "--detector", str(yunet_path), "-q"
    )
    assert args.func(args) == 3
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"pipnet: error: cannot write {out}: No space left on device")
    assert out.read_bytes() == b"an older video" and sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4", "o.mp4"]


def test_a_face_that_stays_below_min_quality_does_not_make_every_frame_a_detect_frame(trained, two_faces) -> None:
    """A face whose quality falls below min_quality makes the next frame a detect frame; one that
    stays below it (here every face, min_quality 1) waits for the scheduled detections after that.
    (It used to make every frame a detect frame: a face half outside the picture cost the whole
    video its tracking.)"""
    lm, det = trained
    v = make_video(lm, detect_every=10, min_quality=1.0, smoothing=False)
    flags = []
    for i in range(12):
        faces = v.track(canvas((two_faces[0], 40 + 0.5 * i, 40)))
        assert len(faces) == 1 and faces[0].quality is not None and faces[0].quality < 1.0
        flags.append(v.detected)
    assert flags == [True, True] + [False] * 9 + [True]
