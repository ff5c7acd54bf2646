"""Face.point_quality and Face.quality: the vote spread they read, the calibrations a file
carries (export.calibrate), and what they predict on real faces."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from pipnet_sdk import Landmarker
from pipnet_sdk.decode import merge, vote_matrix, vote_spread, vote_targets
from pipnet_sdk.landmark_model import LandmarkModel
from pipnet_sdk.runtime import ModelFormatError

PACKAGED = Path(__file__).resolve().parents[1] / "pipnet_sdk" / "models"


def _neighbours(n: int = 6, c: int = 2) -> np.ndarray:
    return np.array([[(i + k + 1) % n for k in range(c)] for i in range(n)])


def test_the_vote_spread_is_zero_when_the_candidates_agree_and_follows_a_stray_vote() -> None:
    nb = _neighbours()
    avg = vote_matrix(nb)
    rng = np.random.default_rng(0)
    truth = rng.random((1, 6, 2)).astype(np.float32)
    cand = np.zeros((1, 6, 3, 2), np.float32)
    cand[0, :, 0] = truth[0]  # own predictions
    for i in range(6):
        for k in range(2):
            cand[0, i, 1 + k] = truth[0, nb[i, k]]  # each vote lands on its neighbour
    points = merge(cand, avg)
    np.testing.assert_allclose(points, truth, atol=1e-6)
    np.testing.assert_allclose(vote_spread(cand, points, avg, vote_targets(nb)), 0, atol=1e-6)
    cand[0, 2, 1] += [0.3, 0.4]  # landmark 2's vote for its first neighbour (3) goes astray by 0.5
    spread = vote_spread(cand, points, avg, vote_targets(nb))[0]
    votes_for_3 = 1 + (nb == 3).sum()
    assert spread[3] == pytest.approx(0.5 / votes_for_3, abs=1e-6)
    np.testing.assert_allclose(np.delete(spread, 3), 0, atol=1e-6)


def test_the_packaged_models_give_each_point_a_quality(samples: Path) -> None:
    for model in ("pipnet-fast", "pipnet-r18"):
        faces = Landmarker(model=model, threads=1).detect(samples / "group_2.jpg")
        assert len(faces) == 4
        for f in faces:
            assert f.point_quality is not None and f.point_quality.shape == (68,)
            assert f.point_quality.dtype == np.float32 and ((f.point_quality > 0) & (f.point_quality < 1)).all()


def test_flip_and_test_crops_average_the_spread(samples: Path) -> None:
    """Both views of a flip test and every test crop feed the spread, as they feed the points."""
    import cv2

    img = cv2.imread(str(samples / "group_2.jpg"))
    one = Landmarker(threads=1).detect(img)
    both = Landmarker(threads=1, flip_test=True, test_crops=3).detect(img)
    assert len(one) == len(both) == 4
    for a, b in zip(one, both):
        assert b.point_quality is not None and a.point_quality is not None
        assert not np.array_equal(a.point_quality, b.point_quality)
        assert np.abs(a.point_quality - b.point_quality).mean() < 0.1  # the same face, a steadier estimate


def _with_meta(src: Path, dst: Path, change: dict) -> Path:
    import onnx

    from export.onnx_meta import file_metadata, save_with_metadata

    m = onnx.load(str(src))
    meta = {**file_metadata(m), **change}
    save_with_metadata(m, dst, {k: v for k, v in meta.items() if v is not None})
    return dst


def test_a_file_without_the_calibration_gives_none_and_a_damaged_one_is_refused(tmp_path: Path, samples: Path) -> None:
    src = PACKAGED / "pipnet-fast.onnx"
    plain = _with_meta(src, tmp_path / "plain.onnx", {"point_quality": None})
    faces = Landmarker(model=plain, threads=1).detect(samples / "group_2.jpg")
    assert faces and all(f.point_quality is None and f.visibility is not None for f in faces)
    q = json.loads(json.dumps(LandmarkModel(src).spec.extra["point_quality"]))
    q["intercepts"] = q["intercepts"][:10]
    with pytest.raises(ModelFormatError, match="68 intercepts"):
        LandmarkModel(_with_meta(src, tmp_path / "short.onnx", {"point_quality": q}))
    q = json.loads(json.dumps(LandmarkModel(src).spec.extra["point_quality"]))
    q["features"][0] = "phase_of_the_moon"
    with pytest.raises(ModelFormatError, match="features from"):
        LandmarkModel(_with_meta(src, tmp_path / "unknown.onnx", {"point_quality": q}))


def test_point_quality_finds_the_badly_placed_points(shared_dir: Path) -> None:
    """On held-out 300-W training faces (the validation split), half of them under a textured
    band over the lower face: points off by more than 10 % of the inter-ocular distance rank below
    good ones by point_quality, better than by visibility or by the landmark score."""
    import cv2

    from export.data import landmark_box, read_pts_folder, split_validation
    from export.evaluate import auroc, match

    _, val = split_validation(read_pts_folder(shared_dir / "data/300w/train"), 0.1)
    lm = Landmarker(threads=1)
    rng = np.random.default_rng(0)
    pq, vis, score, bad = [], [], [], []
    for j, s in enumerate(val[:60]):
        img = cv2.imread(s.image)
        pts = s.points
        if j % 2:
            x0, y0, x1, y1 = landmark_box(pts).astype(int)
            top = int(y1 - rng.uniform(0.3, 0.5) * (y1 - y0))
            img[max(top, 0) : y1, max(x0, 0) : x1] = rng.integers(0, 256, (max(y1 - max(top, 0), 0), 1, 3))
        faces = lm.detect(img, "bgr")
        k = match(np.array([f.box for f in faces], np.float32).reshape(-1, 4), landmark_box(pts), 0.3)
        if k < 0:
            continue
        f = faces[k]
        err = np.linalg.norm(f.landmarks - pts, axis=1) / np.linalg.norm(pts[36] - pts[45])
        pq.append(f.point_quality)
        vis.append(f.visibility)
        score.append(f.landmark_scores)
        bad.append(err > 0.1)
    assert len(bad) >= 50
    b = np.concatenate(bad)
    assert 0.02 < b.mean() < 0.5
    ranks = {name: auroc(v[~b], v[b]) for name, v in (("pq", np.concatenate(pq)), ("vis", np.concatenate(vis)))}
    ranks["score"] = auroc(np.concatenate(score)[~b], np.concatenate(score)[b])
    assert ranks["pq"] > 0.8 and ranks["pq"] > ranks["vis"] + 0.03 and ranks["pq"] > ranks["score"] + 0.03, ranks


def test_a_two_feature_quality_still_reads_and_an_unknown_feature_is_refused(tmp_path: Path, samples: Path) -> None:
    """Files before 0.6.3 calibrate the face quality on the mean score and visibility alone."""
    src = PACKAGED / "pipnet-fast.onnx"
    old = {"good_nme": 0.08, "features": ["mean_score", "mean_visibility"], "coef": [19.7, 2.5], "intercept": -14.5}
    faces = Landmarker(model=_with_meta(src, tmp_path / "old.onnx", {"quality": old}), threads=1).detect(
        samples / "group_2.jpg"
    )
    assert len(faces) == 4
    for f in faces:
        assert f.visibility is not None and f.quality is not None
        z = old["intercept"] + 19.7 * f.landmark_scores.mean() + 2.5 * f.visibility.mean()
        assert f.quality == pytest.approx(1 / (1 + np.exp(-z)), abs=1e-5)
    with pytest.raises(ModelFormatError, match="newer than this SDK"):
        LandmarkModel(_with_meta(src, tmp_path / "new.onnx", {"quality": {**old, "features": ["mean_hue", "x"]}}))


@pytest.mark.slow
def test_export_calibrate_writes_both_calibrations_and_leaves_the_graph(tmp_path: Path, shared_dir: Path) -> None:
    import onnx

    from export.calibrate import FEATURES, main
    from export.onnx_meta import file_metadata

    src = tmp_path / "plain.onnx"
    _with_meta(PACKAGED / "pipnet-fast.onnx", src, {"point_quality": None})
    out = tmp_path / "calibrated.onnx"
    config = Path(__file__).resolve().parents[1] / "export" / "configs" / "pipnet-fast.json"
    main([str(src), "--config", str(config), "--out", str(out), "--version", "9.9", "--limit", "40", "--quiet"])
    a, b = onnx.load(str(src)), onnx.load(str(out))
    assert a.graph.SerializeToString() == b.graph.SerializeToString()
    meta = file_metadata(b)
    q = meta["point_quality"]
    assert meta["version"] == "9.9" and q["features"] == list(FEATURES) and len(q["intercepts"]) == 68
    assert q["validation_auroc"] > q["validation_auroc_visibility"]
    assert meta["quality"]["features"] == ["mean_score", "mean_visibility", "mean_log_spread"]
    m = LandmarkModel(out)
    crops = np.zeros((2, m.spec.input_size, m.spec.input_size, 3), np.uint8)
    marks = m.run_crops(crops)
    got, quality = m.point_quality(marks), m.quality(marks)
    assert got is not None and got.shape == (2, 68) and quality is not None and quality.shape == (2,)
    shutil.rmtree(tmp_path)
