"""Faces turned in the image plane: turned crop squares, the mean-face fit, and the upright search
of Landmarker (a face on its side or upside down gets its landmarks, not points anywhere)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipnet_sdk import Landmarker
from pipnet_sdk.crop import crop_faces, jitter_squares, to_crop, to_image
from pipnet_sdk.landmarker import fit_mean_face


def _rot90_points(p: np.ndarray, shape: tuple[int, ...], k: int) -> np.ndarray:
    """Where pixel centres (N, 2) of an image of shape (H, W, ...) land after np.rot90(image, k)."""
    h, w = shape[:2]
    for i in range(k):
        width = w if i % 2 == 0 else h
        p = np.stack([p[:, 1], width - 1 - p[:, 0]], 1)
    return p


@pytest.mark.parametrize("angle", [0.0, 0.5, math.pi / 2, 3.0, -2.0])
def test_a_turned_square_crops_and_maps_back(angle: float) -> None:
    """A bright dot lands in the crop where to_crop puts it, also on the downscaling path, and
    to_image inverts to_crop."""
    img = np.zeros((300, 400, 3), np.uint8)
    cv2.circle(img, (250, 120), 4, (255, 255, 255), -1)
    ys, xs = np.mgrid[:64, :64]
    for side in (160.0, 400.0):  # enlarged, and shrunk (area averaging + blur first)
        sq = np.array([[200.0, 150.0, side, angle]])
        n = to_crop(np.array([[[250.0, 120.0]]]), sq)
        np.testing.assert_allclose(to_image(n, sq), [[[250.0, 120.0]]], atol=1e-3)
        c = crop_faces(img, sq, 64)[0, ..., 0].astype(float)
        centre = [(c * xs).sum() / c.sum(), (c * ys).sum() / c.sum()]
        np.testing.assert_allclose(centre, n[0, 0] * 64 - 0.5, atol=0.15)


def test_test_crops_shift_along_the_crop_axes() -> None:
    sq = np.array([[200.0, 150.0, 160.0, math.pi / 2]])
    j = jitter_squares(sq, 3)
    assert j.shape == (3, 4) and (j[:, 3] == math.pi / 2).all()
    # the first test crop's shift (0.03, 0.03) in crop axes is (-0.03, 0.03) in the image a quarter turn on
    np.testing.assert_allclose(j[1, :3], [200 - 4.8, 150 + 4.8, 152.0], atol=1e-9)
    np.testing.assert_allclose(jitter_squares(sq[:, :3], 3)[1], [204.8, 154.8, 152.0])  # upright as before


def test_fit_mean_face_recovers_a_similarity() -> None:
    rng = np.random.default_rng(0)
    mean = rng.uniform(0.2, 0.8, (68, 2))
    for angle in (0.0, 0.7, -2.5, math.pi):
        square = np.array([320.0, 240.0, 150.0, angle])
        points = to_image((mean + rng.normal(0, 1e-4, mean.shape))[None], square[None])
        fit = fit_mean_face(points.astype(np.float64), mean)[0]
        np.testing.assert_allclose(fit[:3], square[:3], atol=0.1)
        assert abs((fit[3] - angle + math.pi) % (2 * math.pi) - math.pi) < 1e-3


def test_turned_faces_get_their_landmarks(samples: Path) -> None:
    """The group photo upside down (every face found) and a quarter turn the other way (the face
    YuNet finds): with the upright search each face's landmarks are those of the upright photo
    turned with it; without it they land anywhere."""
    img = cv2.imread(str(samples / "group_2.jpg"))
    lm, plain = Landmarker(threads=1), Landmarker(threads=1, upright=False)
    upright = lm.detect(img)
    assert len(upright) == 4
    for k in (2, 3):
        turned = np.ascontiguousarray(np.rot90(img, k))
        expected = [_rot90_points(f.landmarks, img.shape, k) for f in upright]
        errors = {}
        for name, who in (("search", lm), ("plain", plain)):
            faces = who.detect(turned)
            errors[name] = [
                min(np.linalg.norm(f.landmarks - e, axis=1).mean() / np.linalg.norm(e[36] - e[45]) for f in faces)
                for e in expected
            ]
        found = [i for i, e in enumerate(errors["search"]) if e < 0.05]
        assert len(found) >= (4 if k == 2 else 1)
        assert all(errors["plain"][i] > 0.5 for i in found)  # today's crop rule alone fails on them


def test_an_upside_down_face_is_cropped_where_its_upright_crop_would_be(samples: Path) -> None:
    """The crop rule shifts a face's square down its box (crop_shift_y); the turned tries shift it
    along the face's own down, so an upside-down face's crop lands near the upright crop turned
    with the image, along the face's up-down axis much nearer than the detector's square on the
    turned image (which a try only turned about its centre would keep)."""
    img = cv2.imread(str(samples / "group_2.jpg"))
    lm = Landmarker(threads=1)
    upright = lm.squares(lm.detect_boxes(img)[0])
    turned = np.ascontiguousarray(np.rot90(img, 2))
    squares = lm.squares(lm.detect_boxes(turned)[0])
    (chosen,), _ = lm.upright([lm.image(turned)], [squares], [lm.landmarks_in_squares(turned, squares)])
    for e, side in zip(_rot90_points(upright[:, :2], img.shape, 2), upright[:, 2]):
        i = int(np.argmin(np.linalg.norm(squares[:, :2] - e, axis=1)))
        assert abs(abs(chosen[i, 3]) - math.pi) < 0.35  # cropped upside down (within 20 degrees)
        assert squares[i, 1] - e[1] > 0.1 * side  # the detector's square: shifted the wrong way
        assert abs(chosen[i, 1] - e[1]) < 0.5 * (squares[i, 1] - e[1])


def test_boxes_a_caller_gives_on_a_turned_image(samples: Path) -> None:
    """landmarks(image, boxes) gives turned faces the same second look: the faces of the group
    photo a quarter turn on, in the boxes of their upright detections turned with them."""
    img = cv2.imread(str(samples / "group_2.jpg"))
    lm = Landmarker(threads=1)
    upright = lm.detect(img)
    turned = np.ascontiguousarray(np.rot90(img, 1))
    corners = [_rot90_points(np.array([f.box[:2], f.box[2:]]), img.shape, 1) for f in upright]
    boxes = np.array([[*c.min(0), *c.max(0)] for c in corners])
    points = lm.landmarks(turned, boxes)
    plain = Landmarker(threads=1, upright=False).landmarks(turned, boxes)
    for f, got, bad in zip(upright, points, plain):
        e = _rot90_points(f.landmarks, img.shape, 1)
        iod = np.linalg.norm(e[36] - e[45])
        assert np.linalg.norm(got - e, axis=1).mean() / iod < 0.05
        assert np.linalg.norm(bad - e, axis=1).mean() / iod > 0.3


def test_upright_faces_keep_their_crops(samples: Path) -> None:
    """On an upright photo the search changes nothing: the same landmarks to the bit."""
    img = cv2.imread(str(samples / "group_2.jpg"))
    a, b = Landmarker(threads=1).detect(img), Landmarker(threads=1, upright=False).detect(img)
    assert len(a) == len(b) == 4
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.landmarks, y.landmarks)


def test_upright_option_is_checked() -> None:
    with pytest.raises(TypeError, match="upright"):
        Landmarker(upright="yes")


def test_boxes_outside_the_image_or_in_fractions_are_refused(samples: Path) -> None:
    """Caller boxes in 0-1 units, or wholly off the image, used to give confident points anywhere."""
    img = cv2.imread(str(samples / "group_2.jpg"))
    lm = Landmarker(threads=1)
    h, w = img.shape[:2]
    with pytest.raises(ValueError, match="fractions of the image"):
        lm.landmarks(img, [[0.2, 0.3, 0.4, 0.6]])
    with pytest.raises(ValueError, match="box 1 .* entirely outside"):
        lm.landmarks(img, [[10, 10, 100, 100], [w + 10, 10, w + 90, 100]])
    assert lm.landmarks(img, [[-20, -20, 60, 60]]).shape == (1, 68, 2)  # partly inside: a face at the edge


def _with_rule(tmp_path: Path, rule: dict) -> Path:
    """A copy of the packaged default model with another upright rule in its metadata (sealed
    again, as the export writes files)."""
    import shutil

    pytest.importorskip("onnx")
    import onnx

    from export.onnx_meta import file_metadata, set_metadata
    from pipnet_sdk.hub import resolve

    path = tmp_path / "rule.onnx"
    shutil.copy(resolve("pipnet-fast", "landmark"), path)
    meta = file_metadata(onnx.load(str(path)))
    meta["crop"]["upright"] = rule
    set_metadata(path, meta)
    return path


def test_the_model_file_sets_the_upright_rule(samples: Path, tmp_path: Path) -> None:
    """The rule comes from the model file: a file whose rule never looks again (score 0, no
    refits) gives the plain crop rule's landmarks on the upside-down photo; files without the
    key get the defaults; a damaged rule is refused when the file is opened."""
    from pipnet_sdk.landmark_model import LandmarkModel, ModelFormatError, UprightRule

    img = np.ascontiguousarray(np.rot90(cv2.imread(str(samples / "group_2.jpg")), 2))
    never = Landmarker(model=str(_with_rule(tmp_path, {"score": 0.0, "refits": 0})), threads=1)
    assert never.model.spec.upright == UprightRule(score=0.0, roll=20.0, refits=0)
    plain = Landmarker(threads=1, upright=False).detect(img)
    searched = Landmarker(threads=1).detect(img)
    got = never.detect(img)
    assert len(got) == len(plain) >= 4
    for a, b in zip(got, plain):
        np.testing.assert_array_equal(a.landmarks, b.landmarks)
    assert any(np.abs(a.landmarks - b.landmarks).max() > 10 for a, b in zip(searched, plain))
    with pytest.raises(ModelFormatError, match="crop.upright"):
        LandmarkModel(_with_rule(tmp_path, {"score": 2.0}))


def test_a_training_config_carries_the_rule_into_the_file() -> None:
    """The config's crop rule is what the export writes (so the file says how it was tuned); a
    damaged rule stops the config before any work."""
    pytest.importorskip("torch")
    from export.config import check_config, load_config
    from export.to_onnx import metadata
    from pipnet_sdk.landmark_model import LandmarkSpec, UprightRule

    rule = {"score": 0.6, "roll": 15.0, "refits": 1}
    cfg = load_config(None, {"crop": {"scale": 1.2, "shift_y": 0.12, "upright": rule}})
    meta = metadata(cfg, np.zeros((68, 2)), np.zeros((68, 10), int)) | {"format": 3}
    assert LandmarkSpec.from_json(json.dumps(meta)).upright == UprightRule(**rule)
    with pytest.raises(ValueError, match="crop.upright"):
        check_config(load_config(None, {}) | {"crop": {"scale": 1.2, "shift_y": 0.12, "upright": {"roll": 0}}})
