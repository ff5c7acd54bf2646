"""load_image: every accepted input kind gives the same BGR array; every bad input a clear error."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from pipnet_sdk.images import load_image


@pytest.fixture(scope="module")
def bgr() -> np.ndarray:
    rng = np.random.RandomState(0)
    return rng.randint(0, 256, (23, 31, 3)).astype(np.uint8)


def _check(out: np.ndarray, shape: tuple) -> None:
    assert out.dtype == np.uint8 and out.shape == shape and out.flags.c_contiguous


def test_path_str_and_pathlib(samples: Path) -> None:
    p = samples / "group_2.jpg"
    ref = cv2.imread(str(p), cv2.IMREAD_COLOR)
    for arg in (str(p), p):
        out = load_image(arg)
        _check(out, ref.shape)
        np.testing.assert_array_equal(out, ref)


def test_unicode_path(tmp_path: Path, bgr: np.ndarray) -> None:
    p = tmp_path / "visage_été_顔.png"
    ok, buf = cv2.imencode(".png", bgr)
    buf.tofile(str(p))
    np.testing.assert_array_equal(load_image(p), bgr)


def test_bgr_array_and_rgb(bgr: np.ndarray) -> None:
    out = load_image(bgr)
    _check(out, bgr.shape)
    np.testing.assert_array_equal(out, bgr)
    rgb = bgr[..., ::-1]  # a non-contiguous view, as users often have
    out = load_image(rgb, color="rgb")
    _check(out, bgr.shape)
    np.testing.assert_array_equal(out, bgr)
    np.testing.assert_array_equal(load_image(np.ascontiguousarray(rgb), color="RGB"), bgr)


def test_gray(bgr: np.ndarray) -> None:
    gray = bgr[..., 1].copy()
    want = np.repeat(gray[..., None], 3, axis=2)
    for arr in (gray, gray[..., None]):
        out = load_image(arr)
        _check(out, bgr.shape)
        np.testing.assert_array_equal(out, want)


def test_four_channels(bgr: np.ndarray) -> None:
    alpha = np.full(bgr.shape[:2] + (1,), 77, np.uint8)
    np.testing.assert_array_equal(load_image(np.concatenate([bgr, alpha], 2)), bgr)
    rgba = np.concatenate([bgr[..., ::-1], alpha], 2)
    np.testing.assert_array_equal(load_image(rgba, color="rgb"), bgr)


def test_pil_modes(bgr: np.ndarray) -> None:
    rgb = Image.fromarray(np.ascontiguousarray(bgr[..., ::-1]))
    np.testing.assert_array_equal(load_image(rgb), bgr)
    np.testing.assert_array_equal(load_image(rgb, color="rgb"), bgr)  # PIL knows its own mode
    np.testing.assert_array_equal(load_image(rgb.convert("RGBA")), bgr)
    gray = rgb.convert("L")
    out = load_image(gray)
    _check(out, bgr.shape)
    np.testing.assert_array_equal(out, np.repeat(np.asarray(gray)[..., None], 3, axis=2))
    _check(load_image(rgb.convert("P")), bgr.shape)


def test_missing_file_names_path(tmp_path: Path) -> None:
    p = tmp_path / "nope.jpg"
    with pytest.raises(FileNotFoundError, match="nope.jpg"):
        load_image(p)


@pytest.mark.parametrize("content", [b"this is not an image", b""])
def test_not_an_image_names_path(tmp_path: Path, content: bytes) -> None:
    p = tmp_path / "fake.jpg"
    p.write_bytes(content)
    with pytest.raises(ValueError, match="fake.jpg"):
        load_image(str(p))


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="directory"):
        load_image(tmp_path)


@pytest.mark.parametrize("shape", [(0, 0, 3), (0, 10, 3), (10, 0), (5, 0, 1), (0, 4, 4)])
def test_empty(shape: tuple) -> None:
    with pytest.raises(ValueError, match="empty"):
        load_image(np.zeros(shape, np.uint8))


@pytest.mark.parametrize("dtype, hint", [
    (np.float32, r"\* 255"), (np.float64, r"\* 255"), (np.uint16, ">> 8"), (np.int32, "clip"),
    (np.bool_, "mask"),
])
def test_bad_dtype(dtype, hint: str) -> None:
    with pytest.raises(ValueError, match="uint8") as e:
        load_image(np.zeros((8, 8, 3), dtype))
    assert e.match(hint)


@pytest.mark.parametrize("shape", [(8, 8, 2), (8, 8, 5), (8,), (2, 8, 8, 3), ()])
def test_bad_shape(shape: tuple) -> None:
    with pytest.raises(ValueError, match="shape") as e:
        load_image(np.zeros(shape, np.uint8))
    assert str(shape) in str(e.value) and "(H, W, 3)" in str(e.value)


@pytest.mark.parametrize("bad", [None, [[1, 2, 3]], b"\xff\xd8\xff", 42, 3.5])
def test_bad_type(bad) -> None:
    with pytest.raises(TypeError, match=type(bad).__name__) as e:
        load_image(bad)
    assert "uint8 NumPy array" in str(e.value)


def test_pil_wide_mode() -> None:
    with pytest.raises(ValueError, match="8-bit"):
        load_image(Image.new("I;16", (4, 4)))


@pytest.mark.parametrize("color", ["rgba", "", None, 3])
def test_bad_color(bgr: np.ndarray, color) -> None:
    with pytest.raises(ValueError, match="color"):
        load_image(bgr, color=color)


def test_no_copy_when_already_right(bgr: np.ndarray) -> None:
    assert load_image(bgr) is bgr


def test_exif_orientation_applied(tmp_path: Path) -> None:
    """Phone photos: a file read from disk comes upright, as viewers show it."""
    im = Image.fromarray(np.zeros((20, 40, 3), np.uint8))
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    im.save(tmp_path / "rotated.jpg", exif=exif)
    assert load_image(tmp_path / "rotated.jpg").shape == (40, 20, 3)
