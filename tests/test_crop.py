"""The crop rule: squares, crops and the two coordinate maps."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from pipnet_sdk.crop import crop_faces, crop_matrix, jitter_squares, squares_from_boxes, to_crop, to_image


def test_squares_from_boxes() -> None:
    sq = squares_from_boxes(np.array([[10, 20, 50, 100]]), scale=1.2, shift_y=0.1)
    np.testing.assert_allclose(sq, [[30, 60 + 8, 96]])
    sq = squares_from_boxes(np.array([[0, 0, 30, 10], [5, 5, 6, 6]]), scale=1.0, shift_y=0.0)
    np.testing.assert_allclose(sq, [[15, 5, 30], [5.5, 5.5, 1]])
    assert squares_from_boxes(np.zeros((0, 4)), 1.0, 0.0).shape == (0, 3)


def test_round_trip() -> None:
    rng = np.random.RandomState(0)
    sq = np.stack([rng.uniform(0, 500, 7), rng.uniform(0, 500, 7), rng.uniform(20, 300, 7)], 1)
    pts = rng.uniform(-50, 550, (7, 68, 2)).astype(np.float32)
    np.testing.assert_allclose(to_image(to_crop(pts, sq), sq), pts, atol=1e-3)
    norm = rng.uniform(0, 1, (7, 68, 2)).astype(np.float32)
    np.testing.assert_allclose(to_crop(to_image(norm, sq), sq), norm, atol=1e-5)
    # the crop's edges map to the square's edges
    edges = to_image(np.array([[[0, 0], [1, 1]]], np.float32), sq[:1])
    cx, cy, side = sq[0]
    np.testing.assert_allclose(edges[0], [[cx - side / 2, cy - side / 2], [cx + side / 2, cy + side / 2]], atol=1e-3)


def test_crop_matrix_formula() -> None:
    m = crop_matrix(np.array([110.5, 90.5, 128.0]), 64)
    x, y = 120.0, 80.0
    u, v = m @ [x, y, 1]
    assert u == pytest.approx((x - 110.5) * 64 / 128 + 31.5)
    assert v == pytest.approx((y - 90.5) * 64 / 128 + 31.5)


def test_pixel_lands_at_crop_pixel() -> None:
    img = np.zeros((200, 300, 3), np.uint8)
    img[80, 120] = (255, 128, 7)  # x = 120, y = 80
    sq = np.array([[110.5, 90.5, 64.0]])  # scale 1: u = x - cx + 31.5 = 41, v = 21
    crop = crop_faces(img, sq, 64)
    assert crop.shape == (1, 64, 64, 3) and crop.dtype == np.uint8
    np.testing.assert_array_equal(crop[0, 21, 41], (255, 128, 7))
    assert crop[0].sum() == 255 + 128 + 7
    # and the normalised coordinate says the same: u = n * S - 0.5
    n = to_crop(np.array([[[120.0, 80.0]]]), sq)[0, 0]
    np.testing.assert_allclose(n * 64 - 0.5, [41, 21], atol=1e-4)


@pytest.mark.parametrize("side", [50.0, 128.0, 333.0])
def test_blob_centre_lands_where_formula_says(side: float) -> None:
    h, w, size = 400, 500, 64
    x0, y0 = 231.3, 187.8
    yy, xx = np.mgrid[0:h, 0:w]
    sigma = side / 12
    blob = 250 * np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / (2 * sigma**2))
    img = np.repeat(blob.round().astype(np.uint8)[..., None], 3, axis=2)
    cx, cy = 240.0, 180.0
    crop = crop_faces(img, np.array([[cx, cy, side]]), size)[0, ..., 0].astype(np.float64)
    vv, uu = np.mgrid[0:size, 0:size]
    u_c, v_c = (crop * uu).sum() / crop.sum(), (crop * vv).sum() / crop.sum()
    s = size / side
    assert u_c == pytest.approx((x0 - cx) * s + (size - 1) / 2, abs=0.1)
    assert v_c == pytest.approx((y0 - cy) * s + (size - 1) / 2, abs=0.1)


def test_outside_is_black_not_a_crash() -> None:
    img = np.full((100, 120, 3), 200, np.uint8)
    crops = crop_faces(img, np.array([[0.0, 0.0, 100.0], [-500.0, -500.0, 80.0], [119.5, 99.5, 3000.0]]), 32)
    assert crops.shape == (3, 32, 32, 3)
    c = crops[0]  # centred on the top-left pixel: top-left quarter outside
    assert (c[:10, :10] == 0).all() and (c[22:, 22:] == 200).all()
    assert (crops[1] == 0).all()  # wholly outside
    assert crops[2].max() > 0 and (crops[2][:5, :5] == 0).all()  # image is ~1 crop pixel


def test_no_squares() -> None:
    out = crop_faces(np.zeros((10, 10, 3), np.uint8), np.zeros((0, 3)), 64)
    assert out.shape == (0, 64, 64, 3)


@pytest.mark.parametrize("side", [512, 600, 173])
def test_big_shrink_equals_area_resize(side: int) -> None:
    """Shrinking a whole image through the crop (integer area step, then the rest) stays close
    to one cv2.INTER_AREA resize of it: no black edge, no shift (up to rounding for a power-of-two factor)."""
    rng = np.random.default_rng(0)
    img = cv2.GaussianBlur(rng.integers(0, 256, (side, side, 3), dtype=np.uint8), (0, 0), side / 64)
    img = cv2.normalize(img, None, 0, 255, cv2.NORM_MINMAX)
    size = 64
    crop = crop_faces(img, np.array([[(side - 1) / 2, (side - 1) / 2, float(side)]]), size)[0].astype(int)
    ref = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA).astype(int)
    diff = np.abs(crop - ref)
    if side == 512:  # 2x area steps only: equal up to uint8 rounding at each step
        assert diff.mean() < 1.0 and diff.max() <= 8
    else:
        assert diff.mean() < 4.0 and diff.max() <= 24


def test_jitter_squares() -> None:
    sq = np.array([[100.0, 50.0, 40.0], [10.0, 20.0, 8.0]])
    np.testing.assert_allclose(jitter_squares(sq, 1), sq)
    j = jitter_squares(sq, 3)
    assert j.shape == (6, 3)
    np.testing.assert_allclose(j[[0, 3]], sq)  # the plain crop comes first for every face
    np.testing.assert_allclose(j[1], [100 + 0.03 * 40, 50 + 0.03 * 40, 0.95 * 40])
    np.testing.assert_allclose(j[5], [10 - 0.03 * 8, 20 - 0.03 * 8, 1.05 * 8])
    assert jitter_squares(np.zeros((0, 3)), 5).shape == (0, 3)
    for bad in (0, 6):
        with pytest.raises(ValueError):
            jitter_squares(sq, bad)
