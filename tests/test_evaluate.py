"""export.evaluate: metrics on hand-computed cases, the CED plot, and a smoke run of the
ground-truth-box protocol with a random-weights model (plumbing only, no accuracy)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from export.data import BoxStyle, read_pts_folder
from export.evaluate import auc, ced_curve, evaluate, evaluate_gt, failure_rate, nme_per_face, plot_ced, summary


def _face(eye_dist: float) -> np.ndarray:
    """68 points; outer eye corners 36 and 45 eye_dist apart on a horizontal line."""
    rng = np.random.RandomState(0)
    p = rng.uniform(0, 100, (68, 2))
    p[36] = (10.0, 50.0)
    p[45] = (10.0 + eye_dist, 50.0)
    return p


def test_nme_hand_computed() -> None:
    gt = np.stack([_face(50.0), _face(100.0)])
    pred = gt.copy()
    pred[0, :, 0] += 3.0  # every point 3 px off (3-4-5 below): error 3, / 50 -> 0.06
    pred[1, :, 0] += 3.0
    pred[1, :, 1] += 4.0  # every point 5 px off: / 100 -> 0.05
    np.testing.assert_allclose(nme_per_face(pred, gt), [0.06, 0.05], rtol=1e-12)
    # one point off by 68 px, the rest exact: mean error 1 px
    pred2 = gt.copy()
    pred2[0, 10, 1] += 68.0
    np.testing.assert_allclose(nme_per_face(pred2[:1], gt[:1]), [1 / 50], rtol=1e-12)
    # another normaliser pair, and box-size normalisation
    np.testing.assert_allclose(nme_per_face(pred[:1], gt[:1], norm=(45, 36)), [0.06])
    box = np.array([[0, 0], [40, 0], [0, 10], [40, 10]], float)  # sqrt(40 * 10) = 20
    np.testing.assert_allclose(nme_per_face(box + [0, 2], box, norm=None), [0.1])


def test_failure_rate_and_auc_hand_computed() -> None:
    assert failure_rate(np.zeros(5)) == 0.0 and auc(np.zeros(5)) == 1.0
    assert failure_rate(np.full(4, 0.2)) == 1.0 and auc(np.full(4, 0.2)) == 0.0
    # each face contributes max(0, 1 - e / 0.1): 1, 0.5, 0.75, 0 -> mean 0.5625
    mix = [0.0, 0.05, 0.025, 0.3]
    assert auc(mix) == pytest.approx(0.5625, abs=1e-12)
    assert failure_rate(mix) == 0.25
    assert failure_rate([0.1, 0.1000001]) == 0.5  # a failure is strictly above the threshold
    assert auc([0.05], threshold=0.2) == pytest.approx(0.75)
    # the exact integral agrees with a fine trapezoid over the CED curve
    e = np.random.RandomState(1).uniform(0, 0.15, 200)
    x, y = ced_curve(e, 0.1, steps=100001)
    assert auc(e) == pytest.approx(np.trapezoid(y, x) / 0.1, abs=1e-4)
    assert y[0] == 0 and y[-1] == pytest.approx((e <= 0.1).mean())
    s = summary([0.0, 0.05], total=4)
    assert s["found"] == 2 and s["faces"] == 4 and s["detection_rate"] == 0.5
    assert s["nme"] == pytest.approx(0.025) and s["fr"] == 0 and s["auc"] == pytest.approx(0.75)


def test_plot_ced_writes_png(tmp_path: Path) -> None:
    out = plot_ced({"a": [0.01, 0.03, 0.2], "b": np.linspace(0, 0.1, 20)}, tmp_path / "sub" / "ced.png")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000


def test_gt_protocol_smoke(random_model: Path, yunet_path: Path, shared_dir: Path) -> None:
    from pipnet_sdk import Landmarker

    samples = read_pts_folder(shared_dir / "data" / "300w" / "test" / "lfpw")[:3]
    lm = Landmarker(model=random_model, detector=yunet_path, threads=1)
    style = BoxStyle((0.0, 0.05, 1.0, 1.1))
    r = evaluate_gt(lm, samples, style, progress=False)
    assert set(r) == {"nme", "found", "pred", "boxes"}
    assert r["nme"].shape == (3,) and np.isfinite(r["nme"]).all() and (r["nme"] >= 0).all()
    assert r["found"].shape == (3,) and r["found"].all()
    assert r["pred"].shape == (3, 68, 2) and r["boxes"].shape == (3, 4)
    # the whole entry point, given the style so no detector pass over the training set is needed
    out = evaluate(
        random_model,
        shared_dir / "data" / "300w" / "test" / "lfpw",
        protocol="gt",
        detector=yunet_path,
        threads=1,
        limit=3,
        style=style,
        progress=False,
    )
    assert set(out) == {"images", "gt"} and len(out["images"]) == 3
    s = out["gt"]["summary"]
    assert set(s) == {"faces", "found", "detection_rate", "nme", "fr", "auc"}
    assert s["faces"] == s["found"] == 3 and s["detection_rate"] == 1.0 and 0 <= s["auc"] <= 1
    np.testing.assert_allclose(out["gt"]["nme"], r["nme"], rtol=1e-6)


def test_match_needs_iou_above_half() -> None:
    from export.evaluate import match

    gt = np.array([0, 0, 10, 10], np.float32)
    dets = np.array([[20, 20, 30, 30], [0, 0, 10, 12], [1, 0, 11, 10]], np.float32)
    assert match(dets, gt) == 1  # IoU 100/120 beats 90/110
    assert match(dets[:1], gt) == -1 and match(np.zeros((0, 4)), gt) == -1
    assert match(np.array([[0, 0, 10, 20]], np.float32), gt) == -1  # IoU exactly 0.5 is not > 0.5


def test_evaluate_takes_a_detector_by_registry_name() -> None:
    """--detector yunet-n is the packaged YuNet-n, the file the registry names (the same bytes as
    the shared data's copy)."""
    from export.evaluate import detector_path
    from pipnet_sdk.hub import sha256_file
    from pipnet_sdk.registry import MODELS

    packaged = detector_path("yunet-n")
    assert packaged.parent.name == "models" and packaged.parent.parent.name == "pipnet_sdk"
    assert sha256_file(packaged) == MODELS["yunet-n"].sha256
