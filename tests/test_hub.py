"""Model resolution and the hub step, against a local hub server (tests/hub_server.py).

Hub cases run the real ``huggingface_hub`` client in a subprocess whose ``HF_ENDPOINT`` and
``HF_HOME`` point at the local server and a temporary cache (the library reads them at import).
The served payload is a real ONNX read from the shared folder at test time (never copied into
the repository).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hub_server import LocalHub

from pipnet_sdk import hub
from pipnet_sdk.hub import ChecksumError, ModelNotFoundError, resolve
from pipnet_sdk.registry import MODELS, ModelSpec, list_models

ROOT = Path(__file__).resolve().parents[1]
REPO_ID = "pipnet-test/models"
COMMIT = "0123456789abcdef0123456789abcdef01234567"  # the pinned revision our test specs use

# Child program: runs a list of calls [[func, arg, kind], ...] and prints one JSON outcome each.
# ``func`` is resolve/cached_path/download; ``arg`` a name, a path or {"spec": fields}.
CHILD = r"""
import json, os, sys, time
if os.environ.get("TEST_NO_BACKOFF_SLEEP"):
    time.sleep = lambda s: None  # the client's retry back-off (1+2+4+8+8 s) is not under test
from pathlib import Path
from pipnet_sdk import hub
from pipnet_sdk.registry import ModelSpec
if os.environ.get("TEST_PACKAGED_DIR"):
    hub.PACKAGED_DIR = Path(os.environ["TEST_PACKAGED_DIR"])
out = []
for func, arg, kind in json.loads(sys.argv[1]):
    arg = ModelSpec(**arg["spec"]) if isinstance(arg, dict) else arg
    try:
        r = getattr(hub, func)(arg, kind) if kind else getattr(hub, func)(arg)
        if isinstance(r, tuple):
            r = [str(r[0]), r[1]]
        p = Path(r[0] if isinstance(r, list) else r) if r is not None else None
        out.append({"ok": r if isinstance(r, list) else (str(r) if r else None),
                    "sha256": hub.sha256_file(p) if p else None})
    except Exception as e:
        out.append({"error": type(e).__name__, "message": str(e)})
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def payload(shared_dir: Path) -> tuple[bytes, str]:
    data = (shared_dir / "models" / "yunet_s_dynamic.onnx").read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    assert digest == MODELS["yunet-s"].sha256
    return data, digest


@pytest.fixture
def spec(payload: tuple[bytes, str]) -> ModelSpec:
    """yunet-s as if published to the local hub at COMMIT."""
    return dataclasses.replace(MODELS["yunet-s"], repo_id=REPO_ID, revision=COMMIT)


@pytest.fixture
def local_hub(payload: tuple[bytes, str]):
    h = LocalHub()
    h.add_commit(REPO_ID, {"yunet_s_dynamic.onnx": payload[0]}, commit=COMMIT)
    h.start()
    yield h
    h.stop()


def run_child(calls: list[tuple[str, Any, str | None]], endpoint: str, hf_home: Path, **env: str) -> list[dict]:
    """Run ``calls`` in a fresh interpreter with the hub env set; return their outcomes."""
    base = {
        k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_", "PIPNET_MODELS_DIR", "TEST_"))
    }
    base.update(
        HF_ENDPOINT=endpoint,
        HF_HOME=str(hf_home),
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        PYTHONPATH=str(ROOT),
        **env,
    )
    enc = [[f, {"spec": dataclasses.asdict(a)} if isinstance(a, ModelSpec) else str(a), k] for f, a, k in calls]
    r = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(enc)], env=base, cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def _cache_files(hf_home: Path) -> list[Path]:
    repo = hf_home / "hub" / ("models--" + REPO_ID.replace("/", "--"))
    return [p for d in ("blobs", "snapshots") for p in (repo / d).rglob("*") if p.is_file() or p.is_symlink()]


# -- hub step --------------------------------------------------------------------------------


def test_first_download_matches_sha256(local_hub: LocalHub, spec: ModelSpec, tmp_path: Path) -> None:
    (first, again, where) = run_child(
        [("resolve", spec, "detector"), ("download", spec, None), ("cached_path", spec, None)], local_hub.url, tmp_path
    )
    assert first["sha256"] == spec.sha256
    assert Path(first["ok"]).is_relative_to(tmp_path / "hub")
    assert again["ok"] == first["ok"]
    assert where["ok"] == [first["ok"], "hf-cache"]
    assert ("GET", f"/{REPO_ID}/resolve/{COMMIT}/{spec.filename}") in local_hub.requests


def test_cached_file_used_with_server_stopped_and_offline(local_hub: LocalHub, spec: ModelSpec, tmp_path: Path) -> None:
    (first,) = run_child([("resolve", spec, None)], local_hub.url, tmp_path)
    local_hub.stop()
    (down,) = run_child([("resolve", spec, None)], local_hub.url, tmp_path)
    (offline,) = run_child([("resolve", spec, None)], local_hub.url, tmp_path, HF_HUB_OFFLINE="1")
    assert down == first and offline == first and first["sha256"] == spec.sha256


def test_corrupted_download_raises_and_is_not_kept(
    local_hub: LocalHub, spec: ModelSpec, payload: tuple[bytes, str], tmp_path: Path
) -> None:
    bad = bytearray(payload[0])
    bad[len(bad) // 2] ^= 0xFF
    local_hub.repos[REPO_ID][COMMIT][spec.filename] = bytes(bad)
    (err, cached) = run_child([("resolve", spec, None), ("cached_path", spec, None)], local_hub.url, tmp_path)
    assert err["error"] == "ChecksumError", err
    assert spec.sha256 in err["message"] and hashlib.sha256(bad).hexdigest() in err["message"]
    assert cached["ok"] is None
    assert _cache_files(tmp_path) == []  # neither the blob nor its snapshot link is left
    # once the server serves the right bytes, a retry downloads them again
    local_hub.repos[REPO_ID][COMMIT][spec.filename] = payload[0]
    (ok,) = run_child([("resolve", spec, None)], local_hub.url, tmp_path)
    assert ok["sha256"] == spec.sha256


@pytest.mark.parametrize("offline", [False, True])
def test_server_down_empty_cache(local_hub: LocalHub, spec: ModelSpec, tmp_path: Path, offline: bool) -> None:
    local_hub.stop()
    env = {"HF_HUB_OFFLINE": "1"} if offline else {"TEST_NO_BACKOFF_SLEEP": "1"}
    (err,) = run_child([("resolve", spec, None)], local_hub.url, tmp_path, **env)
    assert err["error"] == "ModelNotFoundError", err
    for needle in ("'yunet-s'", "PIPNET_MODELS_DIR", REPO_ID, "packaged", COMMIT):
        assert needle in err["message"], (needle, err["message"])


def test_wrong_revision_is_not_found(local_hub: LocalHub, spec: ModelSpec, tmp_path: Path) -> None:
    other = dataclasses.replace(spec, revision="f" * 40)
    (err,) = run_child([("resolve", other, None)], local_hub.url, tmp_path)
    assert err["error"] == "ModelNotFoundError" and "RevisionNotFoundError" in err["message"]


def test_resolution_order(local_hub: LocalHub, spec: ModelSpec, payload: tuple[bytes, str], tmp_path: Path) -> None:
    """explicit path > $PIPNET_MODELS_DIR > packaged > hub."""
    dirs = {k: tmp_path / k for k in ("explicit", "env", "packaged")}
    for d in dirs.values():
        d.mkdir()
        (d / spec.filename).write_bytes(payload[0])
    explicit = str(dirs["explicit"] / spec.filename)
    hf_home = tmp_path / "hf"
    both = {"PIPNET_MODELS_DIR": str(dirs["env"]), "TEST_PACKAGED_DIR": str(dirs["packaged"])}
    (a, b) = run_child([("resolve", explicit, None), ("resolve", spec, None)], local_hub.url, hf_home, **both)
    assert a["ok"] == explicit
    assert b["ok"] == str(dirs["env"] / spec.filename)
    (c, where) = run_child(
        [("resolve", spec, None), ("cached_path", spec, None)],
        local_hub.url,
        hf_home,
        TEST_PACKAGED_DIR=str(dirs["packaged"]),
    )
    assert c["ok"] == str(dirs["packaged"] / spec.filename) and where["ok"][1] == "packaged"
    assert local_hub.requests == []  # the hub was never asked
    (d,) = run_child([("resolve", spec, None)], local_hub.url, hf_home, TEST_PACKAGED_DIR=str(tmp_path / "none"))
    assert Path(d["ok"]).is_relative_to(hf_home) and d["sha256"] == spec.sha256


# -- local steps and errors (in-process: no hub involved) ----------------------------------------


def test_missing_explicit_path_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "model.onnx"
    with pytest.raises(ModelNotFoundError, match="nope"):
        resolve(missing)
    with pytest.raises(ModelNotFoundError, match="x.onnx"):
        resolve("x.onnx")


def test_unknown_name_lists_known_ones() -> None:
    with pytest.raises(ModelNotFoundError) as e:
        resolve("pipnet-huge")
    assert all(n in str(e.value) for n in list_models())


def test_kind_mismatch() -> None:
    with pytest.raises(ValueError, match="detector"):
        resolve("yunet-n", "landmark")


def test_env_dir_checksum_mismatch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / MODELS["yunet-s"].filename).write_bytes(b"not the model")
    monkeypatch.setenv("PIPNET_MODELS_DIR", str(tmp_path))
    with pytest.raises(ChecksumError, match="yunet-s"):
        resolve("yunet-s")


def test_env_dir_and_unpublished(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, yunet_path: Path) -> None:
    (tmp_path / "yunet_n_dynamic.onnx").symlink_to(yunet_path)
    monkeypatch.setenv("PIPNET_MODELS_DIR", str(tmp_path))
    assert resolve("yunet-n", "detector") == tmp_path / "yunet_n_dynamic.onnx"
    assert hub.cached_path("yunet-n") == (tmp_path / "yunet_n_dynamic.onnx", "PIPNET_MODELS_DIR")
    unpublished = ModelSpec(name="pipnet-x", kind="landmark", filename="pipnet-x.onnx")
    with pytest.raises(ModelNotFoundError, match="not published yet"):
        resolve(unpublished)
    with pytest.raises(ModelNotFoundError, match="not published yet"):
        hub.download(unpublished)
    assert hub.cached_path(unpublished) is None


def test_registry() -> None:
    assert list_models("detector") == ["yunet-n", "yunet-s"]
    assert set(list_models("landmark")) == {"pipnet-fast", "pipnet-r18"}
    assert all(s.name == n and s.repo_id == "pipnet-sdk/models" for n, s in MODELS.items())


# -- the CLI on the hub --------------------------------------------------------------------------

CLI_CHILD = r"""
import dataclasses, json, sys
from pipnet_sdk import registry
spec = registry.MODELS["yunet-s"]  # as if published: the local hub serves it at the pinned commit
registry.MODELS["yunet-s"] = dataclasses.replace(spec, repo_id=sys.argv[1], revision=sys.argv[2])
from pipnet_sdk.cli import main
sys.exit(main(json.loads(sys.argv[3])))
"""


def run_cli(argv: list[str], endpoint: str, hf_home: Path, **env: str) -> subprocess.CompletedProcess:
    base = {
        k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_", "PIPNET_MODELS_DIR", "TEST_"))
    }
    base.update(
        HF_ENDPOINT=endpoint,
        HF_HOME=str(hf_home),
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        PYTHONPATH=str(ROOT),
        **env,
    )
    return subprocess.run(
        [sys.executable, "-c", CLI_CHILD, REPO_ID, COMMIT, json.dumps(argv)],
        env=base,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_cli_download_then_detect_offline(
    local_hub: LocalHub, payload: tuple[bytes, str], tmp_path: Path, shared_dir: Path
) -> None:
    """`pipnet models download` fetches a published detector into the cache and says where; with
    the server stopped and HF_HUB_OFFLINE=1, `pipnet detect --detector` then runs from that copy;
    `models info` reports it as downloaded."""
    r = run_cli(["models", "download", "yunet-s"], local_hub.url, tmp_path)
    assert r.returncode == 0, r.stderr
    path = Path(r.stdout.split(": ", 1)[1].split(" (")[0])
    assert "in the Hugging Face cache" in r.stdout and hashlib.sha256(path.read_bytes()).hexdigest() == payload[1]
    local_hub.stop()
    out = tmp_path / "faces.json"
    r = run_cli(
        [
            "detect",
            str(shared_dir / "data" / "samples" / "group_2.jpg"),
            "--detector",
            "yunet-s",
            "--json",
            str(out),
            "-q",
        ],
        local_hub.url,
        tmp_path,
        HF_HUB_OFFLINE="1",
    )
    assert r.returncode == 0, r.stderr
    d = json.loads(out.read_text())
    assert d["detector"] == "yunet-s" and len(d["images"][0]["faces"]) == 4
    r = run_cli(["models", "info", "yunet-s"], local_hub.url, tmp_path, HF_HUB_OFFLINE="1")
    local = [line for line in r.stdout.splitlines() if line.startswith("local")]
    assert r.returncode == 0 and len(local) == 1 and str(path) in local[0], r.stdout
