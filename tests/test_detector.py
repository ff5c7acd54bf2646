"""Our NumPy-decoded YuNet against OpenCV's own FaceDetectorYN on the same model and input."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from pipnet_sdk.detect import YuNet, nms

SAMPLES = ["group_1.jpg", "group_2.jpg", "group_3.jpg", "group_4.jpg", "no_face.jpg"]
FACES = {"group_1.jpg": 2, "group_2.jpg": 4, "group_3.jpg": 4, "group_4.jpg": 6, "no_face.jpg": 0}


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(A, 4) x (B, 4) -> (A, B) IoU of x1, y1, x2, y2 boxes."""
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = lambda t: (t[:, 2] - t[:, 0]) * (t[:, 3] - t[:, 1])  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter)


def opencv_detect(path: Path, image: np.ndarray, thr: float = 0.6, nms_iou: float = 0.3):
    """cv2.FaceDetectorYN at the image's own size (it pads bottom/right to a multiple of 32 with
    zeros, as our YuNet does): boxes x1 y1 x2 y2, scores, 5 keypoints."""
    h, w = image.shape[:2]
    det = cv2.FaceDetectorYN.create(str(path), "", (w, h), thr, nms_iou, 5000)
    _, faces = det.detect(image)
    if faces is None:
        return np.zeros((0, 4)), np.zeros(0), np.zeros((0, 5, 2))
    boxes = faces[:, :4].copy()
    boxes[:, 2:] += boxes[:, :2]
    return boxes, faces[:, 14], faces[:, 4:14].reshape(-1, 5, 2)


def _match(ours: np.ndarray, theirs: np.ndarray) -> np.ndarray:
    assert len(ours) == len(theirs)
    if not len(ours):
        return np.zeros(0, np.int64)
    m = iou(theirs, ours)
    best = m.argmax(1)
    assert (m.max(1) > 0.9).all(), m
    assert len(set(best.tolist())) == len(best)  # one to one
    return best


@pytest.fixture(scope="module")
def detector(yunet_path: Path) -> YuNet:
    return YuNet(yunet_path, score_threshold=0.6, nms_iou=0.3)


@pytest.mark.parametrize("name", SAMPLES)
def test_same_as_opencv_full_size(name: str, sample_path, yunet_path: Path, detector: YuNet) -> None:
    img = cv2.imread(str(sample_path(name)))
    detector.size = max(img.shape[:2])  # no resize: both see the very same padded input
    try:
        boxes, scores, kps = detector.detect_with_keypoints(img)
    finally:
        detector.size = 640
    cb, cs, ck = opencv_detect(yunet_path, img)
    assert len(boxes) == FACES[name]
    idx = _match(boxes, cb)
    np.testing.assert_allclose(boxes[idx], cb, atol=1.0)
    np.testing.assert_allclose(scores[idx], cs, atol=1e-3)
    np.testing.assert_allclose(kps[idx], ck, atol=1.0)
    assert boxes.dtype == np.float32 and scores.dtype == np.float32
    assert (np.diff(scores) <= 0).all()  # best first


@pytest.mark.parametrize("name", ["group_2.jpg", "group_4.jpg"])
def test_same_as_opencv_after_resize(name: str, sample_path, yunet_path: Path, detector: YuNet) -> None:
    img = cv2.imread(str(sample_path(name)))  # 1024 px or more: our default size 640 shrinks it
    h, w = img.shape[:2]
    f = 640 / max(h, w)
    small = cv2.resize(img, (round(w * f), round(h * f)), interpolation=cv2.INTER_LINEAR)
    boxes, _ = detector.detect(img)
    cb, _, _ = opencv_detect(yunet_path, small)
    _match(boxes, cb / f)


def test_no_face(samples: Path, detector: YuNet) -> None:
    boxes, scores, kps = detector.detect_with_keypoints(cv2.imread(str(samples / "no_face.jpg")))
    assert boxes.shape == (0, 4) and scores.shape == (0,)
    assert kps.shape == (0, 5, 2)


def test_tiny_and_odd_images(detector: YuNet) -> None:
    for shape in [(1, 1, 3), (7, 300, 3), (33, 65, 3)]:
        boxes, scores = detector.detect(np.zeros(shape, np.uint8))
        assert boxes.shape == (0, 4)


def test_nms() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 9.5], [50, 50, 60, 60]], np.float32)
    scores = np.array([0.8, 0.9, 0.7, 0.85, 0.1], np.float32)
    np.testing.assert_array_equal(nms(boxes, scores, 0.5), [1, 2, 4])
    # IoU of 0 and 1 is 81/119 = 0.68: a looser threshold keeps both; 0 and 3 overlap by 0.95
    np.testing.assert_array_equal(nms(boxes, scores, 0.7), [1, 3, 2, 4])
    np.testing.assert_array_equal(nms(boxes, scores, 0.5, max_out=2), [1, 2])
    assert nms(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), 0.5).shape == (0,)
    # equal scores: stable order
    np.testing.assert_array_equal(nms(boxes[[2, 4]], np.array([0.5, 0.5]), 0.5), [0, 1])


def test_fallback_sizes_rescue_a_small_face(shared_dir: Path, yunet_path: Path) -> None:
    """size=320 misses a small face that 640 finds; with fallback_sizes=(640,) the second pass
    finds it, with the 640 pass's box; an image where 320 finds a face needs no second pass."""
    yunet = YuNet(yunet_path)
    photo = cv2.imread(str(shared_dir / "data" / "300w" / "test" / "lfpw" / "image_0008.jpg"))
    small = cv2.resize(photo, (round(photo.shape[1] * 40 / photo.shape[0]), 40), interpolation=cv2.INTER_AREA)
    canvas = np.zeros((480, 640, 3), np.uint8)
    canvas[200:240, 300 : 300 + small.shape[1]] = small
    full, _ = yunet.detect(canvas)
    assert len(full) == 1 and len(yunet.with_options(size=320).detect(canvas)[0]) == 0
    rescued, _ = yunet.with_options(size=320, fallback_sizes=(640,)).detect(canvas)
    np.testing.assert_array_equal(rescued, full)
    big = cv2.resize(photo, (640, 514))
    quick = yunet.with_options(size=320, fallback_sizes=(640,))
    np.testing.assert_array_equal(quick.detect(big)[0], yunet.with_options(size=320).detect(big)[0])
    with pytest.raises(ValueError, match="size"):
        yunet.with_options(fallback_sizes=(16,))
