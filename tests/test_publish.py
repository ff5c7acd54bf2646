"""export.publish against the local hub: upload a folder, then resolve the printed entry."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hub_server import LocalHub
from test_hub import ROOT, run_child

from pipnet_sdk.registry import ModelSpec

REPO_ID = "pipnet-test/published"


@pytest.fixture
def folder(tmp_path: Path, shared_dir: Path) -> Path:
    d = tmp_path / "release"
    d.mkdir()
    (d / "yunet_s_dynamic.onnx").symlink_to(shared_dir / "models" / "yunet_s_dynamic.onnx")  # never copy
    (d / "README.md").write_text("---\nlicense: apache-2.0\n---\n# pipnet-sdk models\n")
    (d / "LICENSES.md").write_text("yunet_s_dynamic.onnx: Apache-2.0 (libfacedetection.train)\n")
    return d


def publish_cli(endpoint: str, hf_home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    env.update(
        HF_ENDPOINT=endpoint,
        HF_HOME=str(hf_home),
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        PYTHONPATH=str(ROOT),
    )
    return subprocess.run(
        [sys.executable, "-m", "export.publish", *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def printed_specs(stdout: str) -> list[ModelSpec]:
    """Evaluate the printed ``"name": ModelSpec(...),`` lines."""
    entries = [ln.split(": ", 1)[1].rstrip(",") for ln in stdout.splitlines() if "ModelSpec(" in ln]
    return [eval(e, {"ModelSpec": ModelSpec}) for e in entries]


def test_publish_then_resolve(folder: Path, tmp_path: Path) -> None:
    hub = LocalHub()
    with hub as endpoint:
        r = publish_cli(endpoint, tmp_path / "hf-pub", str(folder), "--repo-id", REPO_ID)
        assert r.returncode == 0, r.stdout + r.stderr
        (spec,) = printed_specs(r.stdout)
        data = (folder / "yunet_s_dynamic.onnx").read_bytes()
        assert spec.sha256 == hashlib.sha256(data).hexdigest()
        assert spec.kind == "detector" and spec.repo_id == REPO_ID
        assert spec.revision == hub.refs[REPO_ID]["main"]
        tree = hub.repos[REPO_ID][spec.revision]
        assert set(tree) == {"yunet_s_dynamic.onnx", "README.md", "LICENSES.md"}

        (got,) = run_child([("resolve", spec, "detector")], endpoint, tmp_path / "hf-user")
        assert Path(got["ok"]).read_bytes() == data

        # publishing the same folder again makes no new commit and prints the same revision
        r2 = publish_cli(endpoint, tmp_path / "hf-pub", str(folder), "--repo-id", REPO_ID)
        assert r2.returncode == 0, r2.stdout + r2.stderr
        assert printed_specs(r2.stdout) == [spec] and len(hub.repos[REPO_ID]) == 1


def test_publish_token_and_private(folder: Path, tmp_path: Path) -> None:
    hub = LocalHub(token="s3cret")
    with hub as endpoint:
        denied = publish_cli(endpoint, tmp_path / "hf", str(folder), "--repo-id", REPO_ID)
        assert denied.returncode != 0 and REPO_ID not in hub.repos
        r = publish_cli(endpoint, tmp_path / "hf", str(folder), "--repo-id", REPO_ID, "--token", "s3cret", "--private")
        assert r.returncode == 0, r.stdout + r.stderr
        assert hub.private[REPO_ID] and printed_specs(r.stdout)[0].revision == hub.refs[REPO_ID]["main"]


def test_publish_refuses_file_names_that_are_not_registry_names(folder: Path) -> None:
    """to_onnx's pipnet-fast.int8.onnx would publish an entry named 'pipnet-fast.int8': refused
    before anything is uploaded (no hub is reachable here: a refusal after an upload attempt would
    be a connection error instead)."""
    from export.publish import publish

    (folder / "yunet_s_dynamic.onnx").rename(folder / "yunet_s_dynamic.int8.onnx")
    with pytest.raises(ValueError, match="rename yunet_s_dynamic.int8.onnx"):
        publish(folder, REPO_ID)
