"""Face geometry on real faces (300W test images with their ground truth, and the SDK's own
detections): five points, head pose invariants, alignment, eye and mouth openness, the lazy Face
fields, drawing and the blink example. Tolerances are set from measured errors with a margin
(the measured figures are in the comments)."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from export.data import read_pts
from pipnet_sdk import Face, Landmarker, align, align_many, draw, geometry
from pipnet_sdk.geometry import (
    ARCFACE_112,
    MEAN_FACE_3D,
    MIRROR_68,
    HeadPose,
    eye_openness,
    five_points,
    head_pose,
    mouth_openness,
)

ROOT = Path(__file__).resolve().parents[1]
NUM_FACES = 24


@pytest.fixture(scope="module")
def test_set(shared_dir: Path) -> list[tuple[Path, np.ndarray, tuple[int, int]]]:
    """Every 300W test face: (image path, ground truth, (width, height))."""
    out = []
    for pts in sorted((shared_dir / "data" / "300w" / "test").rglob("*.pts")):
        img = pts.with_suffix(".jpg")
        h, w = cv2.imread(str(img)).shape[:2]
        out.append((img, read_pts(pts, np.float64), (w, h)))
    assert len(out) > 500
    return out


@pytest.fixture(scope="module")
def sample(test_set):
    """NUM_FACES faces spread over helen and lfpw."""
    return test_set[:: len(test_set) // NUM_FACES][:NUM_FACES]


@pytest.fixture(scope="module")
def lm(_models_folder: Path) -> Landmarker:
    """The default models by registry name, from the tests' models folder."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PIPNET_MODELS_DIR", str(_models_folder))
        return Landmarker(threads=1)


def matched(faces: list[Face], gt: np.ndarray) -> Face | None:
    """The detected face on the ground-truth face (mean error under 0.3 eye distances)."""
    if not faces:
        return None
    err = [np.linalg.norm(f.landmarks - gt, axis=1).mean() for f in faces]
    i = int(np.argmin(err))
    return faces[i] if err[i] < 0.3 * np.linalg.norm(gt[36] - gt[45]) else None


@pytest.fixture(scope="module")
def detected(lm, sample):
    """(image, ground truth, detected face) for the sample."""
    out = []
    for path, gt, _ in sample:
        img = cv2.imread(str(path))
        face = matched(lm.detect(img), gt)
        assert face is not None, path
        out.append((img, gt, face))
    return out


@pytest.fixture(scope="module")
def group_faces(lm, samples: Path):
    """(image, None, detected face) for the 4 faces of the committed group photo: for the tests
    that need real faces but no ground truth."""
    img = cv2.imread(str(samples / "group_2.jpg"))
    faces = lm.detect(img)
    assert len(faces) == 4
    return [(img, None, f) for f in faces]


def angle_diff(a: float, b: float) -> float:
    return (a - b + 180) % 360 - 180


def mirror_points(p: np.ndarray, width: int) -> np.ndarray:
    q = p[MIRROR_68].copy()
    q[:, 0] = (width - 1) - q[:, 0]
    return q


# ------------------------------------------------------------------------------ five points
def test_five_points(sample) -> None:
    for _, gt, _ in sample:
        fp = five_points(gt)
        assert fp.shape == (5, 2) and fp.dtype == np.float32
        want = [gt[36:42].mean(0), gt[42:48].mean(0), gt[30], gt[48], gt[54]]
        np.testing.assert_allclose(fp, want, atol=1e-3)
        eye_line = fp[1] - fp[0]
        if abs(math.degrees(math.atan2(eye_line[1], eye_line[0]))) < 45:  # upright: image order
            assert fp[0, 0] < fp[1, 0] and fp[3, 0] < fp[4, 0]
    assert five_points(np.zeros((98, 2))) is None
    bad = sample[0][1].copy()
    bad[3] = np.nan
    assert five_points(bad) is None and head_pose(bad) is None and eye_openness(bad) is None


# ------------------------------------------------------------------------------ head pose
def test_pose_conventions_on_a_projected_mean_face() -> None:
    """Rotate the 3-D mean face by known motions, project it and read the pose back."""
    K = np.array([[640.0, 0, 319.5], [0, 640.0, 239.5], [0, 0, 1]])

    def project(R: np.ndarray) -> np.ndarray:
        p, _ = cv2.projectPoints(MEAN_FACE_3D, cv2.Rodrigues(R)[0], np.array([0, 0, 700.0]), K, None)
        return p.reshape(-1, 2)

    a = math.radians(20)
    c, s = math.cos(a), math.sin(a)
    face_up = np.array([[1, 0, 0], [0, c, s], [0, -s, c]])  # forward (0, 0, -1) -> y < 0: up
    face_right = np.array([[c, 0, -s], [0, 1, 0], [s, 0, c]])  # forward -> x > 0: image right
    clockwise = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])  # x axis -> down-right on screen
    assert (face_up @ [0, 0, -1])[1] < 0 and (face_right @ [0, 0, -1])[0] > 0
    assert (clockwise @ [1, 0, 0])[1] > 0
    for R, want in [(np.eye(3), (0, 0, 0)), (face_up, (0, 20, 0)), (face_right, (20, 0, 0)), (clockwise, (0, 0, 20))]:
        np.testing.assert_allclose(head_pose(project(R), (640, 480)), want, atol=1e-3)


def test_pose_signs_on_ground_truth(sample, test_set) -> None:
    """Roll follows the eye line; yaw's sign is the side the nose tip sits on (strong yaw)."""
    rolls = []
    for _, gt, size in sample:
        eye_line = gt[42:48].mean(0) - gt[36:42].mean(0)
        rolls.append(angle_diff(head_pose(gt, size).roll, math.degrees(math.atan2(eye_line[1], eye_line[0]))))
    assert np.abs(rolls).mean() < 3, rolls  # measured 1.7 deg mean over the 554 test faces
    agree = []
    for _, gt, size in test_set:
        yaw = head_pose(gt, size).yaw
        if abs(yaw) > 20:
            agree.append(np.sign(yaw) == np.sign(gt[30, 0] - (gt[0, 0] + gt[16, 0]) / 2))
    assert len(agree) > 30 and np.mean(agree) > 0.95, (len(agree), np.mean(agree))


def test_pose_mirror_and_rotation_exact_on_ground_truth(sample) -> None:
    """Exact geometry: a mirrored face negates yaw and roll and keeps pitch; turning the image
    about its centre (the principal point) turns roll and nothing else (measured < 1e-5 deg)."""
    for _, gt, (w, h) in sample:
        a = head_pose(gt, (w, h))
        m = head_pose(mirror_points(gt, w), (w, h))
        np.testing.assert_allclose([m.yaw, m.pitch, m.roll], [-a.yaw, a.pitch, -a.roll], atol=1e-3)
        for theta in (-30, 15, 60):  # getRotationMatrix2D: positive = counter-clockwise
            M = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), theta, 1.0)
            r = head_pose(cv2.transform(gt[None], M)[0], (w, h))
            assert abs(angle_diff(r.roll, a.roll - theta)) < 1e-3
            assert abs(r.yaw - a.yaw) < 1e-3 and abs(r.pitch - a.pitch) < 1e-3


def test_pose_mirror_redetected(lm, detected) -> None:
    """Detect again on the mirrored image. Measured |yaw + yaw'|, |pitch - pitch'|,
    |roll + roll'| on these 24 faces: mean 1.0, 1.2, 0.5 deg, max 5.2, 6.4, 3.2; on all 554
    test faces: mean 0.7, 0.9, 0.5, 95th percentile 1.7, 2.1, 1.2."""
    errs = []
    for img, gt, face in detected:
        w = img.shape[1]
        m = matched(lm.detect(cv2.flip(img, 1)), mirror_points(gt, w))
        assert m is not None
        a, b = face.pose, m.pose
        errs.append([a.yaw + b.yaw, a.pitch - b.pitch, a.roll + b.roll])
    errs = np.abs(errs)
    p90 = np.percentile(errs, 90, axis=0)
    print("mirror |err| mean", errs.mean(0).round(2), "p90", p90.round(2), "max", errs.max(0).round(2))
    assert (errs.mean(0) < [2.0, 2.5, 1.5]).all() and (p90 < [4, 5, 3]).all(), errs
    assert (errs.max(0) < [15, 15, 8]).all(), errs


def test_pose_rotation_redetected(lm, detected) -> None:
    """Turn the image by 15 and 30 degrees and detect again: roll moves by the angle.
    Measured |roll error| on these 24 faces (48 turns): 0.6 deg mean, 1.1 p90, 3.0 max; on all
    554 test faces turned by -30, -15, 15, 30: 0.6 mean, 1.6 p95, 8.0 max."""
    errs = []
    for img, gt, face in detected:
        h, w = img.shape[:2]
        for theta in (-30, 15):
            M = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), theta, 1.0)
            r = matched(lm.detect(cv2.warpAffine(img, M, (w, h))), cv2.transform(gt[None], M)[0])
            if r is not None:  # a face turned partly out of the frame may be lost
                errs.append(abs(angle_diff(r.pose.roll, face.pose.roll - theta)))
    assert len(errs) >= 0.9 * 2 * len(detected)
    print(
        "rotation |roll error| mean",
        np.mean(errs).round(2),
        "p90",
        np.percentile(errs, 90).round(2),
        "max",
        np.max(errs).round(2),
        "n",
        len(errs),
    )
    assert np.mean(errs) < 2.0 and np.percentile(errs, 90) < 4.0 and max(errs) < 8, errs


def test_pose_without_image_size(group_faces) -> None:
    """No image size: the camera sits on the face's axis, so the pose is close to the one of
    the face centred in a square image (measured on 554 faces: 0.3-1.7 deg mean, 5 max)."""
    errs = []
    for _, _, face in group_faces:
        p = face.landmarks.astype(np.float64)
        side = int(np.linalg.norm(p[0] - p[16]))
        centred = p - p.mean(0) + side
        errs.append(np.subtract(head_pose(p), head_pose(centred, (2 * side + 1, 2 * side + 1))))
    errs = np.abs(errs)
    assert errs.mean() < 2 and errs.max() < 6, errs
    no_size = Face(np.zeros(4, np.float32), 1.0, group_faces[0][2].landmarks, np.ones(68, np.float32))
    assert no_size.image_size is None and no_size.pose is not None


def test_pose_none() -> None:
    assert head_pose(np.zeros((68, 2))) is None  # all points on one spot
    assert head_pose(np.zeros((5, 2))) is None
    assert head_pose(np.full((68, 2), np.inf)) is None
    with pytest.raises(ValueError, match="image_size"):
        head_pose(MEAN_FACE_3D[:, :2] + 100, (0, 100))


# ------------------------------------------------------------------------------ alignment
def test_align_puts_the_eyes_on_the_template(lm, detected) -> None:
    """Align to 112 px, upscale x2 with a border, detect again: the eyes land on the ArcFace
    template, and all five points where the transform put them. Measured (px of the 112 crop):
    eyes vs template 2.3 mean, 4.1 p90, 8.2 max on all 554 test faces (2.7 / 5.1 / 7.9 on these
    24); vs where the transform put them 0.55 mean, 1.2 max."""
    errs = []
    for img, _, face in detected:
        crop = align(img, face)
        assert crop.shape == (112, 112, 3) and crop.dtype == np.uint8
        big = cv2.copyMakeBorder(
            cv2.resize(crop, (224, 224), interpolation=cv2.INTER_CUBIC), 56, 56, 56, 56, cv2.BORDER_CONSTANT
        )
        found = lm.detect(big)
        assert found
        fp = (max(found, key=lambda f: f.score).five_points - 56) / 2
        moved = cv2.transform(face.five_points[None], geometry.similarity(face.five_points, ARCFACE_112))[0]
        errs.append([np.linalg.norm(fp - ARCFACE_112, axis=1), np.linalg.norm(fp - moved, axis=1)])
    errs = np.array(errs)
    for what, e in (("eyes vs template", errs[:, 0, :2]), ("eyes vs transform", errs[:, 1, :2])):
        print(what, "mean", e.mean().round(2), "p90", np.percentile(e, 90).round(2), "max", e.max().round(2))
    eyes = errs[:, 0, :2]  # includes each face's own misfit to the template's shape
    assert eyes.mean() < 3.5 and np.percentile(eyes, 90) < 6.5 and eyes.max() < 10, eyes
    warped = errs[:, 1]  # the crop is the similarity transform of the image: sub-pixel
    assert warped[:, :2].mean() < 1.0 and warped[:, :2].max() < 2.5, warped


def test_align_api(group_faces) -> None:
    img, _, face = group_faces[0]
    crop = align(img, face)
    np.testing.assert_array_equal(crop, align(img, face.five_points))
    np.testing.assert_array_equal(crop, align(img, face.landmarks))
    np.testing.assert_array_equal(align(img[..., ::-1], face), crop[..., ::-1])  # channel order kept
    big = align(img, face, size=224)
    assert big.shape == (224, 224, 3)
    small = cv2.resize(big, (112, 112), interpolation=cv2.INTER_AREA)
    assert np.abs(small.astype(int) - crop).mean() < 12  # same crop, twice the pixels
    mine = align(img, face, size=64, template=ARCFACE_112 * (64 / 112))
    np.testing.assert_array_equal(mine, align(img, face, size=64))
    faces = [f for _, _, f in group_faces[:3]]
    many = align_many(img, faces, size=96)
    assert many.shape == (3, 96, 96, 3) and many.dtype == np.uint8
    np.testing.assert_array_equal(many[0], align(img, face, size=96))
    assert align_many(img, [], size=80).shape == (0, 80, 80, 3)
    from PIL import Image

    np.testing.assert_array_equal(align(Image.fromarray(img[..., ::-1]), face), crop[..., ::-1])
    with pytest.raises(ValueError, match="five points"):
        align(img, np.zeros((7, 2)))
    with pytest.raises(ValueError, match="NaN"):
        align(img, np.full((5, 2), np.nan))
    with pytest.raises(ValueError, match="coincide"):
        align(img, np.zeros((5, 2)))
    with pytest.raises(ValueError, match="template"):
        align(img, face, template="vggface")
    with pytest.raises(ValueError, match="size"):
        align(img, face, size=0)
    with pytest.raises(ValueError, match="dtype uint8"):
        align(img.astype(np.float32), face)


def test_similarity_recovers_a_known_transform() -> None:
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, (5, 2))
    a, s, t = math.radians(25), 1.7, np.array([12.0, -30.0])
    R = s * np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    M = geometry.similarity(src, src @ R.T + t)
    np.testing.assert_allclose(M, np.c_[R, t], atol=1e-9)


# ------------------------------------------------------------------------------ openness
@pytest.fixture(scope="module")
def by_state(lm, test_set):
    """Detected faces on ground-truth closed eyes (EAR < 0.1, both kinds of eye), wide open
    eyes, closed and open mouths: the first faces of each kind, at most 10."""
    kinds = {
        "closed_eyes": lambda g: min(eye_openness(g)) < 0.1,
        "open_eyes": lambda g: min(eye_openness(g)) > 0.3,
        "closed_mouth": lambda g: mouth_openness(g) < 0.02,
        "open_mouth": lambda g: mouth_openness(g) > 0.25,
    }
    out = {}
    for kind, test in kinds.items():
        chosen = [(p, g) for p, g, _ in test_set if test(g)]
        chosen = chosen[:: max(1, len(chosen) // 10)][:10]
        assert len(chosen) >= 4, kind
        out[kind] = [(g, matched(lm.detect(str(p)), g)) for p, g in chosen]
        assert all(f is not None for _, f in out[kind])
    return out


def test_eye_openness_on_faces(by_state) -> None:
    """pipnet-fast on 300W test: closed eyes 0.01-0.23 (median 0.17), open ones 0.33 median;
    below 0.2: 8 of 14 closed eyes, 0.8 % of open ones."""

    def ears(kind, closed_only=False):
        v = []
        for g, f in by_state[kind]:
            e = np.array(f.eye_openness)
            v += list(e[np.array(eye_openness(g)) < 0.1] if closed_only else e)
        return np.array(v)

    closed, opened = ears("closed_eyes", True), ears("open_eyes")
    assert np.median(closed) < 0.2 and np.median(opened) > 0.28, (closed, opened)
    assert (opened > 0.2).mean() >= 0.95
    auc = (closed[:, None] < opened[None]).mean()
    assert auc > 0.9, auc


def test_mouth_openness_on_faces(by_state) -> None:
    """Closed mouths (ground truth < 0.02): 95 % under 0.06; open ones (> 0.25): all over 0.18."""
    closed = np.array([f.mouth_openness for _, f in by_state["closed_mouth"]])
    opened = np.array([f.mouth_openness for _, f in by_state["open_mouth"]])
    assert (closed < 0.15).all() and (opened > 0.15).all(), (closed, opened)


# ------------------------------------------------------------------------------ Face fields
def test_face_fields_and_json(group_faces) -> None:
    img, _, face = group_faces[0]
    assert face.image_size == (img.shape[1], img.shape[0])
    assert isinstance(face.pose, HeadPose)
    assert face.pose == head_pose(face.landmarks, face.image_size)
    d = face.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert set(d["pose"]) == {"yaw", "pitch", "roll"}
    np.testing.assert_allclose(list(d["pose"].values()), face.pose, atol=0.006)
    np.testing.assert_allclose(d["five_points"], face.five_points, atol=0.006)
    np.testing.assert_allclose(d["eye_openness"], face.eye_openness, atol=6e-5)
    assert abs(d["mouth_openness"] - face.mouth_openness) < 6e-5
    few = Face(np.zeros(4, np.float32), 0.9, np.zeros((5, 2), np.float32), np.ones(5, np.float32))
    d = few.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["five_points"] is d["pose"] is d["eye_openness"] is d["mouth_openness"] is None


def test_fields_are_lazy(models_dir: Path, group_faces, monkeypatch: pytest.MonkeyPatch) -> None:
    """Making Faces (detect, detect_batch, video tracking) computes none of the fields; the
    first read computes one, later reads use the cache."""
    from pipnet_sdk.video import VideoLandmarker

    calls = {}
    for name in ("five_points", "head_pose", "eye_openness", "mouth_openness"):
        real = getattr(geometry, name)

        def counted(*a, _real=real, _name=name, **k):
            calls[_name] = calls.get(_name, 0) + 1
            return _real(*a, **k)

        monkeypatch.setattr(geometry, name, counted)
    img = group_faces[1][0]
    lm = Landmarker(threads=1)
    faces = lm.detect(img) + lm.detect_batch([img, img])[1] + VideoLandmarker(lm).track(img)
    assert len(faces) >= 3 and calls == {}
    for f in faces:
        assert f.image_size == (img.shape[1], img.shape[0])
        assert not {"five_points", "pose", "eye_openness", "mouth_openness"} & set(vars(f))
    first = faces[0].pose
    assert faces[0].pose is first and calls == {"head_pose": 1}
    faces[0].to_dict()
    faces[0].to_dict()
    assert calls == {"head_pose": 1, "five_points": 1, "eye_openness": 1, "mouth_openness": 1}


# ------------------------------------------------------------------------------ drawing
def test_draw_pose(group_faces) -> None:
    img, _, face = group_faces[2]
    plain = draw(img, face)
    axes = draw(img, face, pose=True)
    changed = np.abs(axes.astype(int) - plain).sum(-1) > 0
    assert changed.sum() > 50
    ys, xs = np.nonzero(changed)
    x1, y1, x2, y2 = face.box
    size = max(x2 - x1, y2 - y1)
    assert xs.min() > x1 - size and xs.max() < x2 + size and ys.min() > y1 - size and ys.max() < y2 + size
    ends = geometry.pose_axes(face.landmarks, face.image_size, 60.0)
    for end, color in zip(ends[1:], ((0, 0, 255), (0, 200, 0), (255, 80, 0))):
        mid = np.round(ends[0] * 0.4 + end * 0.6).astype(int)  # on each axis, its colour
        assert np.abs(axes[mid[1], mid[0]].astype(int) - color).max() < 60
    few = Face(face.box, 0.9, face.landmarks[:5], face.landmark_scores[:5])
    np.testing.assert_array_equal(draw(img, few, pose=True), draw(img, few))


def test_cli_draw_pose(models_dir: Path, group_faces, tmp_path: Path, capsys) -> None:
    from pipnet_sdk.cli import main

    src = tmp_path / "face.png"
    cv2.imwrite(str(src), group_faces[0][0])
    assert main(["detect", str(src), "--draw", "--out", str(tmp_path / "a"), "-q"]) == 0
    capsys.readouterr()
    assert main(["detect", str(src), "--draw", "--draw-pose", "--out", str(tmp_path / "b"), "-q"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["images"][0]["faces"][0]["pose"] is not None
    a, b = cv2.imread(str(tmp_path / "a" / "face.png")), cv2.imread(str(tmp_path / "b" / "face.png"))
    assert (a != b).any()
    assert main(["detect", str(src), "--draw-pose"]) != 0


# ------------------------------------------------------------------------------ blink example
def close_eyes(img: np.ndarray, p: np.ndarray, amount: float) -> np.ndarray:
    """A synthetic blink: the skin above each eye stretched down over it (amount 0-1)."""
    h, w = img.shape[:2]
    mx, my = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    for a in (36, 42):
        e = p[a : a + 6]
        x0, x1 = sorted((e[0, 0], e[3, 0]))
        wid = x1 - x0
        up, lo = e[[0, 1, 2, 3]], e[[0, 5, 4, 3]]
        xs = np.arange(max(0, int(x0 - 0.15 * wid)), min(w, int(x1 + 0.15 * wid) + 2))
        yu = np.interp(xs, *up[np.argsort(up[:, 0])].T)
        yl = np.interp(xs, *lo[np.argsort(lo[:, 0])].T)
        taper = np.clip(np.minimum(xs - (x0 - 0.15 * wid), x1 + 0.15 * wid - xs) / (0.3 * wid), 0, 1)
        edge = yu + (yl - yu + 0.08 * wid) * taper * amount  # where the upper lid ends up
        top = yu - 0.45 * wid
        for x, t, u, ed in zip(xs, top, yu, edge):
            if ed - t >= 1:
                ys = np.arange(max(0, int(t)), min(h, int(np.ceil(ed)) + 1))
                my[ys, x] = t + (ys - t) * (u - t) / (ed - t)
    return cv2.remap(img, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def blink_video(path: Path, img: np.ndarray, gt: np.ndarray, starts: list[int], n: int = 90) -> None:
    """n frames at 30 fps, a few pixels of jitter, blinks (7 frames each) at ``starts``."""
    profile = [0.35, 0.75, 1, 1, 0.8, 0.5, 0.2]
    amount = np.zeros(n)
    for s in starts:
        amount[s : s + len(profile)] = profile
    c = gt.mean(0)
    side = int(np.ptp(gt, axis=0).max() * 1.6) // 2 * 2
    x0, y0 = int(c[0] - side / 2), int(c[1] - side / 2)
    rng = np.random.default_rng(0)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (side, side))
    assert writer.isOpened()
    frames = {a: close_eyes(img, gt, a) for a in set(amount)}
    for a in amount:
        dx, dy = rng.normal(0, 0.7, 2)
        M = np.float32([[1, 0, -x0 + dx], [0, 1, -y0 + dy]])
        writer.write(cv2.warpAffine(frames[a], M, (side, side), borderMode=cv2.BORDER_REPLICATE))
    writer.release()


@pytest.mark.slow
def test_blink_example_counts_synthetic_blinks(models_dir: Path, test_set, tmp_path: Path, capsys) -> None:
    """There is no real blink video here: a 300W face (wide open eyes, frontal) gets three
    synthetic blinks. The example counts 3 on it and 0 on the same clip without blinks."""
    spec = importlib.util.spec_from_file_location("blink_example", ROOT / "examples" / "blink.py")
    blink = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(blink)
    path, gt, _ = next(t for t in test_set if t[0].stem == "3234996955_1")
    img = cv2.imread(str(path))
    blink_video(tmp_path / "blinks.avi", img, gt, [20, 50, 75])
    blink_video(tmp_path / "still.avi", img, gt, [])
    assert blink.main(["--video", str(tmp_path / "blinks.avi")]) == 0
    assert "face 0: 3 blinks" in capsys.readouterr().out
    assert blink.main(["--video", str(tmp_path / "still.avi")]) == 0
    assert "face 0: 0 blinks" in capsys.readouterr().out

    counter = blink.BlinkCounter(fps=10, max_closed=0.5)  # a long closure is not a blink
    values = [0.3] * 10 + [0.1] * 8 + [0.3] * 5 + [0.1] * 2 + [0.3] * 3
    assert [i for i, v in enumerate(values) if counter.update(v)] == [25] and counter.blinks == 1
