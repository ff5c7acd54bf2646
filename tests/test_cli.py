"""The `pipnet` command, with a random-weights model found through $PIPNET_MODELS_DIR."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from pipnet_sdk.cli import main

ROOT = Path(__file__).resolve().parents[1]


def run(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_error_line(err: str, *words: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pipnet: error: "), err
    assert "Traceback" not in err
    for w in words:
        assert w in lines[0], (w, err)


def test_detect_json_file(models_dir: Path, samples: Path, tmp_path: Path, capsys) -> None:
    target = tmp_path / "sub" / "out.json"
    code, out, err = run(capsys, "detect", str(samples / "group_2.jpg"), "--json", str(target))
    assert code == 0 and out == ""
    data = json.loads(target.read_text())
    assert data["model"] == "pipnet-fast" and data["detector"] == "yunet-n"
    [entry] = data["images"]
    assert entry["path"] == str(samples / "group_2.jpg")
    assert (entry["width"], entry["height"]) == (1024, 1024)
    assert len(entry["faces"]) == 4
    for face in entry["faces"]:
        assert len(face["landmarks"]) == 68 and len(face["landmark_scores"]) == 68
        assert len(face["box"]) == 4 and 0 < face["score"] <= 1


def test_detect_test_crops_and_flip(models_dir: Path, samples: Path, capsys) -> None:
    """--test-crops / --flip-test reach the Landmarker: same faces, slightly moved landmarks."""
    img = str(samples / "group_2.jpg")
    plain = json.loads(run(capsys, "detect", img, "-q")[1])["images"][0]["faces"]
    tta = json.loads(run(capsys, "detect", img, "-q", "--test-crops", "3", "--flip-test")[1])["images"][0]["faces"]
    assert [f["box"] for f in tta] == [f["box"] for f in plain]
    assert [f["landmarks"] for f in tta] != [f["landmarks"] for f in plain]


def test_detect_stdout_no_face(models_dir: Path, samples: Path, capsys) -> None:
    code, out, err = run(capsys, "detect", str(samples / "no_face.jpg"))
    assert code == 0
    data = json.loads(out)
    assert data["images"][0]["faces"] == []


def test_folder_recursion_errors_and_draw(models_dir: Path, samples: Path, tmp_path: Path, capsys) -> None:
    root = tmp_path / "photos"
    (root / "sub" / "deeper").mkdir(parents=True)
    img = cv2.imread(str(samples / "group_2.jpg"))
    small = cv2.resize(img, (512, 512))
    cv2.imwrite(str(root / "a.jpg"), small)
    cv2.imwrite(str(root / "sub" / "b.PNG"), small)
    shutil.copyfile(samples / "no_face.jpg", root / "sub" / "deeper" / "c.jpeg")
    (root / "notes.txt").write_text("not an image, not an image extension: skipped")
    (root / "sub" / "broken.jpg").write_bytes(b"not really a jpeg")
    out_dir = tmp_path / "drawn"
    code, out, err = run(capsys, "detect", str(root), "--draw", "--out", str(out_dir), "-q")
    assert code == 1  # ran, but one image could not be read
    data = json.loads(out)
    by_name = {Path(e["path"]).name: e for e in data["images"]}
    assert sorted(by_name) == ["a.jpg", "b.PNG", "broken.jpg", "c.jpeg"]
    assert "broken.jpg" in by_name["broken.jpg"]["error"] and "faces" not in by_name["broken.jpg"]
    assert len(by_name["a.jpg"]["faces"]) == len(by_name["b.PNG"]["faces"]) > 0
    assert by_name["c.jpeg"]["faces"] == []
    written = sorted(p.relative_to(out_dir).as_posix() for p in out_dir.rglob("*") if p.is_file())
    assert written == ["photos/a.jpg", "photos/sub/b.PNG", "photos/sub/deeper/c.jpeg"]
    drawn = cv2.imread(str(out_dir / "photos" / "a.jpg"))
    assert drawn.shape == small.shape and (drawn.astype(int) - small).any()
    # a second run into an output folder inside the input folder does not read its own output
    code, out, err = run(capsys, "detect", str(root), "--draw", "--out", str(root / "drawn"), "-q")
    assert code == 1 and len(json.loads(out)["images"]) == 4


def test_outputs_checked_before_any_work(models_dir: Path, samples: Path, tmp_path: Path, capsys,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """An output that cannot be written stops the run at once, before any model is loaded."""
    import pipnet_sdk.landmarker as L

    monkeypatch.setattr(L.Landmarker, "__init__", lambda *a, **k: pytest.fail("models loaded"))
    blocker = tmp_path / "a_file"
    blocker.write_text("a file where a folder would have to be")
    for option in ("--json", "--jsonl"):
        code, out, err = run(capsys, "detect", str(samples / "group_2.jpg"), option, str(blocker / "out.json"))
        assert code == 2 and out == ""
        assert_one_error_line(err, f"cannot write {option}", "out.json")
    code, out, err = run(capsys, "detect", str(samples / "group_2.jpg"), "--json", str(tmp_path))
    assert code == 2
    assert_one_error_line(err, "is a folder")


def test_interrupted_run_keeps_finished_images(models_dir: Path, samples: Path, tmp_path: Path, capsys,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A run that dies on its third image: --jsonl holds the two finished ones, and the --json file
    from an earlier run is left whole (written atomically at the end, never half)."""
    import pipnet_sdk.landmarker as L

    target, lines = tmp_path / "out.json", tmp_path / "out.jsonl"
    target.write_text('{"earlier": "run"}\n')
    real, calls = L.Landmarker.detect, []

    def dies_on_third(self, image, color=None):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(self, image, color)

    monkeypatch.setattr(L.Landmarker, "detect", dies_on_third)
    photo, images = cv2.imread(str(samples / "group_2.jpg")), []
    (tmp_path / "photos").mkdir()
    versions = (photo, cv2.flip(photo, 1), cv2.resize(photo, (768, 768)), cv2.resize(photo, (640, 640)))
    for i, version in enumerate(versions):  # four images of 4 faces each
        images.append(str(tmp_path / "photos" / f"group_{i}.jpg"))
        cv2.imwrite(images[-1], version)
    code, out, err = run(capsys, "detect", *images, "--json", str(target), "--jsonl", str(lines))
    assert code == 130 and "interrupted" in err
    assert json.loads(target.read_text()) == {"earlier": "run"}
    done = [json.loads(line) for line in lines.read_text().splitlines()]
    assert [d["path"] for d in done] == images[:2] and all(len(d["faces"]) >= 2 for d in done)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary files left
    monkeypatch.setattr(L.Landmarker, "detect", real)
    code, out, err = run(capsys, "detect", *images, "--json", str(target), "--jsonl", str(lines), "-q")
    assert code == 0 and out == ""
    whole = json.loads(target.read_text())["images"]
    assert whole == [json.loads(line) for line in lines.read_text().splitlines()] and len(whole) == 4


def test_symlinked_folders_are_followed_once(models_dir: Path, samples: Path, tmp_path: Path, capsys) -> None:
    root, elsewhere = tmp_path / "photos", tmp_path / "elsewhere"
    root.mkdir()
    elsewhere.mkdir()
    shutil.copyfile(samples / "no_face.jpg", root / "a.jpg")
    shutil.copyfile(samples / "no_face.jpg", elsewhere / "b.jpg")
    (root / "linked").symlink_to(elsewhere, target_is_directory=True)
    (elsewhere / "loop").symlink_to(root, target_is_directory=True)  # back up: must not recurse forever
    code, out, err = run(capsys, "detect", str(root))
    assert code == 0
    names = sorted(Path(e["path"]).relative_to(root).as_posix() for e in json.loads(out)["images"])
    assert names == ["a.jpg", "linked/b.jpg"]
    assert "already read" in err and "loop" in err


def test_failed_image_warns(models_dir: Path, tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG but not really")
    code, out, err = run(capsys, "detect", str(bad))
    assert code == 1 and "bad.png" in err and "warning" in err
    assert "error" in json.loads(out)["images"][0]


@pytest.mark.parametrize("argv, words", [
    (["detect", "/no/such/image.jpg"], ["/no/such/image.jpg"]),
    (["detect", "{no_face}", "--model", "bogus-model"], ["bogus-model"]),
    (["detect", "{no_face}", "--detector", "pipnet-fast"], ["detector"]),
    (["detect", "{no_face}", "--model", "{missing_onnx}"], ["missing.onnx"]),
    (["detect", "{no_face}", "--threads", "0"], ["--threads"]),
    (["detect", "{no_face}", "--score-threshold", "1.5"], ["--score-threshold"]),
    (["detect", "{no_face}", "--draw"], ["--out"]),
    (["detect", "{no_face}", "--out", "{tmp}"], ["--draw"]),
    (["detect", "{empty_dir}"], ["no images"]),
    (["detect"], ["PATH"]),
    (["nonsense"], ["nonsense"]),
    (["models", "info", "nope"], ["nope"]),
    (["detect", "{no_face}", "--test-crops", "6"], ["--test-crops", "1 to 5"]),
    (["detect", "{no_face}", "--test-crops", "0"], ["--test-crops"]),
    (["detect", "{no_face}", "--detector", "{packaged}/pipnet-fast.onnx"], ["not a YuNet", "candidates"]),
    (["detect", "{no_face}", "--detector", "{shared_models}/faceboxesv2-640x640.onnx"], ["not a YuNet", "loc"]),
    (["models", "download", "yunet-s"], ["yunet-s", "yunet_s_dynamic.onnx", "libfacedetection.train",
                                         "PIPNET_MODELS_DIR"]),
])
def test_user_mistakes_give_one_line(models_dir: Path, samples: Path, tmp_path: Path, capsys,
                                     request: pytest.FixtureRequest, argv: list[str], words: list[str]) -> None:
    (tmp_path / "empty").mkdir()
    fill = dict(no_face=str(samples / "no_face.jpg"), tmp=str(tmp_path), empty_dir=str(tmp_path / "empty"),
                missing_onnx=str(tmp_path / "missing.onnx"), packaged=str(ROOT / "pipnet_sdk" / "models"))
    if any("{shared_models}" in a for a in argv):  # the FaceBoxes file is in the shared data only
        fill["shared_models"] = str(request.getfixturevalue("shared_dir") / "models")
    code, out, err = run(capsys, *[a.format(**fill) for a in argv])
    assert code == 2 and out == ""
    assert_one_error_line(err, *words)


def test_model_without_metadata(models_dir: Path, samples: Path, tmp_path: Path, capsys) -> None:
    fake = tmp_path / "fake.onnx"
    fake.write_bytes(b"not an onnx file")
    code, out, err = run(capsys, "detect", str(samples / "no_face.jpg"), "--model", str(fake))
    assert code == 2
    assert_one_error_line(err, "fake.onnx")
    code, out, err = run(capsys, "detect", str(samples / "no_face.jpg"), "--model", str(models_dir / "yunet_n_dynamic.onnx"))
    assert code == 2
    assert_one_error_line(err, "metadata")


def test_subprocess_missing_path_no_traceback(models_dir: Path) -> None:
    env = dict(os.environ, PIPNET_MODELS_DIR=str(models_dir))
    res = subprocess.run([sys.executable, "-m", "pipnet_sdk.cli", "detect", "missing.jpg"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and res.stdout == ""
    assert_one_error_line(res.stderr, "missing.jpg")


def test_models_list_and_info(models_dir: Path, capsys) -> None:
    from pipnet_sdk import registry

    code, out, err = run(capsys, "models", "list")
    assert code == 0 and err == ""
    lines = out.strip().splitlines()
    assert lines[0].split() == ["NAME", "KIND", "LOCAL"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert set(rows) == set(registry.list_models())
    assert str(models_dir) in rows["pipnet-fast"] and str(models_dir) in rows["yunet-n"]
    code, out, err = run(capsys, "models", "list", "--kind", "detector")
    assert code == 0 and {line.split()[0] for line in out.strip().splitlines()[1:]} == set(registry.list_models("detector"))
    code, out, err = run(capsys, "models", "info", "yunet-n")
    assert code == 0
    assert registry.MODELS["yunet-n"].sha256 in out and str(models_dir / "yunet_n_dynamic.onnx") in out


def test_models_tell_what_is_packaged(capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without $PIPNET_MODELS_DIR the packaged files (both landmark models and YuNet-n) are
    listed as packaged, and downloading one succeeds, saying where it is."""
    from pipnet_sdk import hub

    monkeypatch.delenv("PIPNET_MODELS_DIR", raising=False)
    code, out, err = run(capsys, "models", "list")
    rows = {line.split()[0]: line for line in out.strip().splitlines()[1:]}
    for name in ("pipnet-fast", "pipnet-r18", "yunet-n"):
        assert rows[name].endswith("(packaged)") and str(hub.PACKAGED_DIR) in rows[name], rows[name]
    assert rows["yunet-s"].endswith("not on this machine")
    for name in ("pipnet-r18", "yunet-n"):
        code, out, err = run(capsys, "models", "download", name)
        assert code == 0 and err == ""
        assert str(hub.PACKAGED_DIR / hub.get_spec(name).filename) in out and "packaged" in out


def test_help_and_version(capsys) -> None:
    import pipnet_sdk

    assert main(["--help"]) == 0
    assert "detect" in capsys.readouterr().out
    assert main(["detect", "--help"]) == 0
    assert "--score-threshold" in capsys.readouterr().out
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"pipnet-sdk {pipnet_sdk.__version__}"


def test_version_is_pyprojects(capsys) -> None:
    """One version: pyproject.toml's, read back from the installed metadata (`pipnet --version`,
    pipnet_sdk.__version__, Landmarker.provenance) or, never installed, from pyproject.toml."""
    import importlib.metadata
    import re

    import pipnet_sdk

    text = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    version = re.search(r'^version = "([^"]+)"', text, re.M).group(1)
    assert pipnet_sdk._version() == version, "stale install: run pip install -e . again"
    assert pipnet_sdk._source_version() == version
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"pipnet-sdk {version}"
    with pytest.MonkeyPatch.context() as mp:
        def missing(name: str) -> str:
            raise importlib.metadata.PackageNotFoundError(name)

        mp.setattr(importlib.metadata, "version", missing)
        assert pipnet_sdk._version() == version  # a source checkout never installed


def test_image_extensions_live_in_images_only() -> None:
    """pipnet_sdk.cli.IMAGE_EXTENSIONS (a deprecated alias kept before the first release) is gone:
    the one list is pipnet_sdk.images.IMAGE_EXTENSIONS."""
    import pipnet_sdk.cli as cli
    from pipnet_sdk.images import IMAGE_EXTENSIONS

    assert ".jpg" in IMAGE_EXTENSIONS
    with pytest.raises(AttributeError):
        cli.IMAGE_EXTENSIONS  # noqa: B018


def test_outputs_never_overwrite_an_input(models_dir: Path, samples: Path, tmp_path: Path, capsys,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """--json or --jsonl naming an input image, or both naming one file, is a usage error before
    any model is loaded, and the image is left as it was."""
    import pipnet_sdk.landmarker as L

    photo = tmp_path / "photo.jpg"
    shutil.copy(samples / "group_2.jpg", photo)
    before = photo.read_bytes()
    monkeypatch.setattr(L.Landmarker, "__init__", lambda *a, **k: pytest.fail("models loaded"))
    for option in ("--json", "--jsonl"):
        code, out, err = run(capsys, "detect", str(tmp_path), option, str(photo))
        assert code == 2 and out == ""
        assert_one_error_line(err, option, "is one of the inputs")
    same = str(tmp_path / "faces.json")
    code, _, err = run(capsys, "detect", str(photo), "--json", same, "--jsonl", same)
    assert code == 2
    assert_one_error_line(err, "--json and --jsonl name the same file")
    assert photo.read_bytes() == before and not (tmp_path / "faces.json").exists()


def test_draw_folder_checked_before_any_work(models_dir: Path, samples: Path, tmp_path: Path, capsys,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """--draw --out under a regular file fails at once, naming --out, with an existing --jsonl
    file untouched; a usage error after the output checks leaves no folder behind."""
    import pipnet_sdk.landmarker as L

    real_init = L.Landmarker.__init__
    monkeypatch.setattr(L.Landmarker, "__init__", lambda *a, **k: pytest.fail("models loaded"))
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    kept = tmp_path / "kept.jsonl"
    kept.write_text("an earlier run\n")
    code, out, err = run(capsys, "detect", str(samples / "group_2.jpg"), "--jsonl", str(kept),
                         "--draw", "--out", str(blocker / "annotated"))
    assert code == 2 and out == ""
    assert_one_error_line(err, "cannot write --out", "annotated")
    assert kept.read_text() == "an earlier run\n"
    monkeypatch.setattr(L.Landmarker, "__init__", real_init)
    code, _, err = run(capsys, "detect", str(samples / "no_face.jpg"), "--json", str(tmp_path / "new" / "deep" / "o.json"),
                       "--model", "bogus-model")
    assert code == 2 and "bogus-model" in err
    assert not (tmp_path / "new").exists()


def test_json_file_gets_ordinary_permissions(models_dir: Path, samples: Path, tmp_path: Path, capsys) -> None:
    """--json is written atomically but not private: a new file follows the umask, an old one keeps
    its mode."""
    old_mask = os.umask(0o022)
    try:
        fresh, kept = tmp_path / "fresh.json", tmp_path / "kept.json"
        kept.write_text("{}")
        kept.chmod(0o640)
        for target in (fresh, kept):
            assert run(capsys, "detect", str(samples / "no_face.jpg"), "--json", str(target), "-q")[0] == 0
            assert json.loads(target.read_text())["images"][0]["faces"] == []
        assert fresh.stat().st_mode & 0o777 == 0o644
        assert kept.stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(old_mask)


def test_draw_function_survives_the_cli_and_its_module(models_dir: Path, samples: Path, tmp_path: Path,
                                                       capsys) -> None:
    """pipnet_sdk.draw stays the function after `detect --draw` ran in this process (the module
    that holds it is pipnet_sdk.drawing)."""
    import numpy as np

    import pipnet_sdk
    import pipnet_sdk.drawing  # noqa: F401

    code, _, _ = run(capsys, "detect", str(samples / "group_2.jpg"), "--draw", "--out", str(tmp_path / "a"), "-q")
    assert code == 0 and len(list((tmp_path / "a").rglob("*.jpg"))) == 1
    from pipnet_sdk import draw

    assert callable(pipnet_sdk.draw) and draw is pipnet_sdk.draw
    img = np.zeros((40, 40, 3), np.uint8)
    assert pipnet_sdk.draw(img, []).shape == img.shape


def test_interrupted_json_write_leaves_the_old_file_and_no_temporary(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C while --json is being written: the old file stays whole and no .tmp file is left."""
    import pipnet_sdk._cli_common as C

    target = tmp_path / "faces.json"
    target.write_text('{"old": true}')
    real = C.tempfile.NamedTemporaryFile

    class Interrupted:
        def __init__(self, *a, **k):
            self.file = real(*a, **k)
            self.name = self.file.name

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.file.close()

        def write(self, text):
            self.file.write(text[: len(text) // 2])
            raise KeyboardInterrupt

        def close(self):
            self.file.close()

    monkeypatch.setattr(C.tempfile, "NamedTemporaryFile", Interrupted)
    with pytest.raises(KeyboardInterrupt):
        C.write_atomic(target, '{"new": "' + "x" * 10000 + '"}')
    assert target.read_text() == '{"old": true}' and sorted(p.name for p in tmp_path.iterdir()) == ["faces.json"]
