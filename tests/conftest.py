"""Shared fixtures: the read-only data folder, a random-weights PIPNet model, a models folder."""
from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `export` (torch side) lives beside pipnet_sdk
    sys.path.insert(0, str(ROOT))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """``$PIPNET_SHARED`` or ``../shared`` beside the repository (read-only)."""
    p = Path(os.environ.get("PIPNET_SHARED", ROOT.parent / "shared"))
    if not (p / "data" / "samples").is_dir() or not (p / "models").is_dir():
        pytest.fail(f"shared data not found at {p} (need data/samples and models/): "
                    "set PIPNET_SHARED to the folder that holds them")
    return p


@pytest.fixture(scope="session")
def samples(shared_dir: Path) -> Path:
    return shared_dir / "data" / "samples"


@pytest.fixture(scope="session")
def yunet_path(shared_dir: Path) -> Path:
    return shared_dir / "models" / "yunet_n_dynamic.onnx"


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
    (d / "pipnet-fast.onnx").symlink_to(ROOT / "pipnet_sdk" / "models" / "pipnet-fast.onnx")
    (d / yunet_path.name).symlink_to(yunet_path)  # never copy shared files
    return d


@pytest.fixture
def models_dir(_models_folder: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder with links to the packaged ``pipnet-fast.onnx`` and to YuNet-n, set as
    ``$PIPNET_MODELS_DIR`` for the test."""
    monkeypatch.setenv("PIPNET_MODELS_DIR", str(_models_folder))
    return _models_folder
