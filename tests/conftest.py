"""Shared fixtures: the committed sample photo (examples/group_2.jpg) and the packaged YuNet-n,
which a clone has, so the core tests run anywhere; the read-only shared data folder (300-W, other
detectors) for the tests that need it, skipped without it (PIPNET_REQUIRE_SHARED=1 makes that a
failure); a random-weights PIPNet model; a models folder."""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `export` (torch side) lives beside pipnet_sdk
    sys.path.insert(0, str(ROOT))

GROUP_PHOTO = ROOT / "examples" / "group_2.jpg"  # 4 faces, 1024 x 1024: examples/NOTICE.md
PACKAGED = ROOT / "pipnet_sdk" / "models"
NEEDS_SHARED = "needs the shared data folder (300-W, detectors): set PIPNET_SHARED"


def shared_path() -> Path:
    """``$PIPNET_SHARED``, else ``../shared`` beside the repository."""
    return Path(os.environ.get("PIPNET_SHARED") or ROOT.parent / "shared")


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The shared data folder (read-only). Tests that ask for it are skipped when it is missing,
    and fail instead with ``PIPNET_REQUIRE_SHARED=1`` (CI runs every test)."""
    p = shared_path()
    if not (p / "data" / "samples").is_dir() or not (p / "models").is_dir():
        if os.environ.get("PIPNET_REQUIRE_SHARED") == "1":
            pytest.fail(
                f"{NEEDS_SHARED} (PIPNET_REQUIRE_SHARED=1, and {p} has no data/samples and models/)", pytrace=False
            )
        pytest.skip(NEEDS_SHARED)
    return p


@pytest.fixture(scope="session")
def shared_samples(shared_dir: Path) -> Path:
    """The shared sample photos: group_1..4.jpg (2, 4, 4, 6 faces) and no_face.jpg."""
    return shared_dir / "data" / "samples"


def faceless_image():
    """A 680 x 366 picture of white folded cloth (no face): smooth shading, horizontal pleats,
    fine noise; the same pixels every time."""
    import cv2
    import numpy as np

    h, w = 366, 680
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = 228 + 12 * np.sin(x / 97.0) * np.cos(y / 143.0)
    for row in (70, 120, 175, 230, 290):
        img -= 22 * np.exp(-(((y - row - 6 * np.sin(x / 60.0)) / 3.0) ** 2))
    img += np.random.default_rng(0).normal(0, 3, (h, w))
    img = cv2.GaussianBlur(img, (3, 3), 0)
    return np.repeat(np.clip(img, 0, 255).astype(np.uint8)[..., None], 3, axis=2)


@pytest.fixture(scope="session")
def samples(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with the committed group photo (group_2.jpg, a link to examples/group_2.jpg) and
    a faceless picture (no_face.jpg, made here): what the core tests need, with no shared data."""
    import cv2

    d = tmp_path_factory.mktemp("samples")
    (d / "group_2.jpg").symlink_to(GROUP_PHOTO)
    assert cv2.imwrite(str(d / "no_face.jpg"), faceless_image(), [cv2.IMWRITE_JPEG_QUALITY, 92])
    return d


@pytest.fixture
def sample_path(samples: Path, request: pytest.FixtureRequest):
    """name -> path of a sample photo: group_2.jpg and no_face.jpg from ``samples``, the others
    (group_1, group_3, group_4) from the shared data (the test is skipped without it)."""

    def path(name: str) -> Path:
        return samples / name if (samples / name).exists() else request.getfixturevalue("shared_samples") / name

    return path


@pytest.fixture(scope="session")
def yunet_path() -> Path:
    """The YuNet-n file the wheel ships (the same bytes as the shared data's copy)."""
    return PACKAGED / "yunet_n_dynamic.onnx"


@pytest.fixture(scope="session")
def random_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weights 68-point PIPNet ONNX (64 px input) with full metadata."""
    from export.to_onnx import export_random

    path = tmp_path_factory.mktemp("random_model") / "pipnet-random.onnx"
    with warnings.catch_warnings():  # torch's exporter deprecation notices are not ours
        warnings.simplefilter("ignore", DeprecationWarning)
        return Path(export_random(path, input_size=64, stride=16, backbone="resnet18", num_landmarks=68))


@pytest.fixture(scope="session")
def _models_folder(tmp_path_factory: pytest.TempPathFactory, yunet_path: Path) -> Path:
    d = tmp_path_factory.mktemp("models")
    (d / "pipnet-fast.onnx").symlink_to(PACKAGED / "pipnet-fast.onnx")
    (d / yunet_path.name).symlink_to(yunet_path)
    return d


@pytest.fixture
def models_dir(_models_folder: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder with links to the packaged ``pipnet-fast.onnx`` and YuNet-n, set as
    ``$PIPNET_MODELS_DIR`` for the test."""
    monkeypatch.setenv("PIPNET_MODELS_DIR", str(_models_folder))
    return _models_folder
