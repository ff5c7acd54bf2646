"""load_image: every accepted input kind gives the same BGR array; every bad input a clear error."""

from __future__ import annotations

import os
import struct
import threading
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from pipnet_sdk.errors import ImageError
from pipnet_sdk.images import MAX_PIXELS, decode_image, load_image


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


@pytest.mark.parametrize(
    "dtype, hint",
    [
        (np.float32, r"\* 255"),
        (np.float64, r"\* 255"),
        (np.uint16, ">> 8"),
        (np.int32, "clip"),
        (np.bool_, "mask"),
    ],
)
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


def _png(width: int, height: int, rows: bytes) -> bytes:
    """A PNG (8-bit RGB) declaring width x height, with `rows` as its compressed data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b"")


def test_decompression_bomb_png(tmp_path: Path) -> None:
    """A 254-byte PNG declaring 60000 x 60000 pixels is refused by its header, size named."""
    bomb = _png(60000, 60000, b"\0" * (1 + 3 * 60000))
    assert len(bomb) == 254
    (tmp_path / "bomb.png").write_bytes(bomb)
    for source in (lambda: load_image(tmp_path / "bomb.png"), lambda: decode_image(bomb, "bomb.png")):
        with pytest.raises(ImageError, match="60000x60000") as e:
            source()
        assert "bomb.png" in str(e.value) and "PIPNET_MAX_IMAGE_PIXELS" in str(e.value)


def test_decompression_bomb_jpeg_header() -> None:
    """A JPEG's size is read from its frame header, after the segments before it."""
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\0" + bytes(9)
    sof = b"\xff\xc2" + struct.pack(">HBHHB", 11, 8, 50000, 40000, 1) + b"\x01\x11\x00"
    with pytest.raises(ImageError, match="40000x50000"):
        decode_image(b"\xff\xd8" + app0 + b"\xff" + sof + b"\xff\xd9", "big.jpg")


def test_pixel_limit_exact_and_overridable(monkeypatch: pytest.MonkeyPatch, bgr: np.ndarray) -> None:
    """Each format is held to the limit at its exact size (headers of PNG, JPEG, TIFF, BMP; the
    decoded size for the others), and the limit follows PIPNET_MAX_IMAGE_PIXELS."""
    h, w = bgr.shape[:2]
    assert MAX_PIXELS == 1 << 28
    for ext in (".png", ".jpg", ".tif", ".bmp", ".webp", ".ppm"):
        data = cv2.imencode(ext, bgr)[1]
        monkeypatch.setenv("PIPNET_MAX_IMAGE_PIXELS", str(w * h))
        assert decode_image(data).shape == bgr.shape
        monkeypatch.setenv("PIPNET_MAX_IMAGE_PIXELS", str(w * h - 1))
        with pytest.raises(ImageError, match=f"{w}x{h} pixels"):
            decode_image(data, "x" + ext)
    with pytest.raises(ImageError, match=f"{w}x{h}"):
        load_image(Image.fromarray(bgr))
    monkeypatch.setenv("PIPNET_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(ValueError, match="PIPNET_MAX_IMAGE_PIXELS"):
        load_image(Image.fromarray(bgr))


def test_opencv_refusal_is_an_image_error() -> None:
    """A format whose header is not read (PPM) declaring more than OpenCV's own limit."""
    with pytest.raises(ImageError, match="huge.ppm.*OpenCV refused"):
        decode_image(b"P6\n60000 60000\n255\n" + bytes(30), "huge.ppm")


def test_16bit_png_scaled_by_its_range(tmp_path: Path) -> None:
    """12-bit data in a 16-bit PNG keeps its brightness (not 16x darker); full 16-bit data is
    scaled by 65535; a PIL image of the same file gives the same array."""
    ramp = np.linspace(0, 4095, 64 * 48).round().astype(np.uint16).reshape(48, 64)
    for data, top in ((ramp, 4095), (ramp * 16, 65535)):
        cv2.imwrite(str(tmp_path / "deep.png"), data)
        out = load_image(tmp_path / "deep.png")
        _check(out, (48, 64, 3))
        want = (data.astype(np.float64) * 255 / top).round()
        assert np.abs(out[..., 1].astype(np.float64) - want).max() <= 1
        with Image.open(tmp_path / "deep.png") as im:
            assert im.mode.startswith("I")
            np.testing.assert_array_equal(load_image(im), out)
    cv2.imwrite(str(tmp_path / "dim.png"), (ramp // 20).astype(np.uint16))  # fits in 8 bits: as is
    np.testing.assert_array_equal(load_image(tmp_path / "dim.png")[..., 0], ramp // 20)


def test_float_files_refused(tmp_path: Path) -> None:
    img = np.random.RandomState(1).rand(10, 12, 3).astype(np.float32)
    cv2.imwrite(str(tmp_path / "hdr.pfm"), img)
    with pytest.raises(ImageError, match="hdr.pfm holds floating-point pixels"):
        load_image(tmp_path / "hdr.pfm")


@pytest.mark.parametrize("mode", ["LA", "La", "P", "PA", "RGBa", "CMYK", "YCbCr", "1"])
def test_pil_odd_modes(bgr: np.ndarray, mode: str) -> None:
    """Every 8-bit PIL mode gives what PIL's own RGB conversion shows; La is un-premultiplied."""
    rgb = Image.fromarray(np.ascontiguousarray(bgr[..., ::-1]))
    source = {"La": "LA", "RGBa": "RGBA", "PA": "RGBA"}.get(mode, "RGB")
    im = rgb.convert(source).convert(mode)
    want = np.asarray(im.convert({"La": "LA", "RGBa": "RGBA"}.get(mode, mode)).convert("RGB"))[..., ::-1]
    out = load_image(im)
    _check(out, bgr.shape)
    np.testing.assert_array_equal(out, want)


def test_pil_wide_modes() -> None:
    values = np.arange(48, dtype=np.uint16).reshape(6, 8) * 80  # 0..3760: 12-bit data
    want = np.repeat((values * (255 / 4095)).round()[..., None], 3, axis=2)
    for im in (Image.fromarray(values), Image.fromarray(values).convert("I")):
        assert im.mode in ("I;16", "I")
        assert np.abs(load_image(im) - want).max() <= 1
    with pytest.raises(ImageError, match="outside 0-65535"):
        load_image(Image.fromarray(values.astype(np.int32) - 1).convert("I"))
    with pytest.raises(ImageError, match="'F' holds floating-point"):
        load_image(Image.new("F", (4, 4)))


def test_pil_exif_orientation_applied(tmp_path: Path) -> None:
    """A PIL image comes upright as the same file read by path does."""
    im = Image.fromarray(np.random.RandomState(2).randint(0, 256, (20, 40, 3)).astype(np.uint8))
    exif = im.getexif()
    exif[0x0112] = 6
    im.save(tmp_path / "rotated.png", exif=exif)
    with Image.open(tmp_path / "rotated.png") as opened:
        out = load_image(opened)
    assert out.shape == (40, 20, 3)
    np.testing.assert_array_equal(out, load_image(tmp_path / "rotated.png"))


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_fifo_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "x.jpg"
    os.mkfifo(fifo)
    raised: list[BaseException] = []

    def read() -> None:
        try:
            load_image(fifo)
        except (OSError, ValueError) as e:
            raised.append(e)

    t = threading.Thread(target=read, daemon=True)
    t.start()
    t.join(10)
    if t.is_alive():  # release the blocked reader before failing
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("load_image blocked on a FIFO")
    assert len(raised) == 1 and isinstance(raised[0], ImageError)
    assert "not a regular file" in str(raised[0]) and "x.jpg" in str(raised[0])


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
