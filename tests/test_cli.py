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


def test_outputs_checked_before_any_work(
    models_dir: Path, samples: Path, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
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


def test_interrupted_run_keeps_finished_images(
    models_dir: Path, samples: Path, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run that dies on its third image: --jsonl holds the two finished ones, and the --json file
    from an earlier run is left whole (written atomically at the end, never half). The rerun
    appends its lines to --jsonl: the interrupted run's two lines are kept."""
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
    appended = [json.loads(line) for line in lines.read_text().splitlines()]
    assert len(appended) == 2 + 4 and [d["path"] for d in appended[:2]] == images[:2]
    assert whole == [{k: v for k, v in d.items() if k != "provenance"} for d in appended[2:]] and len(whole) == 4


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


@pytest.mark.parametrize(
    "argv, words",
    [
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
        (
            ["models", "download", "yunet-s"],
            ["yunet-s", "yunet_s_dynamic.onnx", "libfacedetection.train", "PIPNET_MODELS_DIR"],
        ),
        (["detect", "{no_face}", "--model", "{tmp}"], ["--model", "is a folder", "pipnet-fast"]),
        (["detect", "{no_face}", "--detector", "{empty_dir}"], ["--detector", "is a folder"]),
        (["detect", "{no_face}", "--json", "-", "--jsonl", "-"], ["--json -", "--jsonl -", "standard output"]),
        (["detect", "{empty_dir}", "--draw", "--out", "{empty_dir}"], ["--out", "is the input folder"]),
        (["detect", "{empty_dir}", "--draw", "--out", "{tmp}"], ["--out", "holds the input folder"]),
    ],
)
def test_user_mistakes_give_one_line(
    models_dir: Path,
    samples: Path,
    tmp_path: Path,
    capsys,
    request: pytest.FixtureRequest,
    argv: list[str],
    words: list[str],
) -> None:
    (tmp_path / "empty").mkdir()
    fill = dict(
        no_face=str(samples / "no_face.jpg"),
        tmp=str(tmp_path),
        empty_dir=str(tmp_path / "empty"),
        missing_onnx=str(tmp_path / "missing.onnx"),
        packaged=str(ROOT / "pipnet_sdk" / "models"),
    )
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
    code, out, err = run(
        capsys, "detect", str(samples / "no_face.jpg"), "--model", str(models_dir / "yunet_n_dynamic.onnx")
    )
    assert code == 2
    assert_one_error_line(err, "metadata")


def test_subprocess_missing_path_no_traceback(models_dir: Path) -> None:
    env = dict(os.environ, PIPNET_MODELS_DIR=str(models_dir))
    res = subprocess.run(
        [sys.executable, "-m", "pipnet_sdk.cli", "detect", "missing.jpg"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
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
    listed = {line.split()[0] for line in out.strip().splitlines()[1:]}
    assert code == 0 and listed == set(registry.list_models("detector"))
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


def test_outputs_never_overwrite_an_input(
    models_dir: Path, samples: Path, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
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


def test_draw_folder_checked_before_any_work(
    models_dir: Path, samples: Path, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--draw --out under a regular file fails at once, naming --out, with an existing --jsonl
    file untouched; a usage error after the output checks leaves no folder behind."""
    import pipnet_sdk.landmarker as L

    real_init = L.Landmarker.__init__
    monkeypatch.setattr(L.Landmarker, "__init__", lambda *a, **k: pytest.fail("models loaded"))
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    kept = tmp_path / "kept.jsonl"
    kept.write_text("an earlier run\n")
    code, out, err = run(
        capsys,
        "detect",
        str(samples / "group_2.jpg"),
        "--jsonl",
        str(kept),
        "--draw",
        "--out",
        str(blocker / "annotated"),
    )
    assert code == 2 and out == ""
    assert_one_error_line(err, "cannot write --out", "annotated")
    assert kept.read_text() == "an earlier run\n"
    monkeypatch.setattr(L.Landmarker, "__init__", real_init)
    code, _, err = run(
        capsys,
        "detect",
        str(samples / "no_face.jpg"),
        "--json",
        str(tmp_path / "new" / "deep" / "o.json"),
        "--model",
        "bogus-model",
    )
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


def test_draw_function_survives_the_cli_and_its_module(models_dir: Path, samples: Path, tmp_path: Path, capsys) -> None:
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


def test_interrupted_json_write_leaves_the_old_file_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C while --json is being written: the old file stays whole and no .tmp file is left."""
    import pipnet_sdk._cli_common as C

    target = tmp_path / "faces.json"
    target.write_text('{"old": true}')
    real = C._write_some

    def interrupted(fd, data):
        real(fd, data[: len(data) // 2])
        raise KeyboardInterrupt

    monkeypatch.setattr(C, "_write_some", interrupted)
    with pytest.raises(KeyboardInterrupt):
        C.write_atomic(target, '{"new": "' + "x" * 10000 + '"}')
    assert target.read_text() == '{"old": true}' and sorted(p.name for p in tmp_path.iterdir()) == ["faces.json"]


# ---------------------------------------------------------------------------------- outputs and inputs
def _small_group(samples: Path, size: int = 320):
    """The 4-face group photo at size x size."""
    return cv2.resize(cv2.imread(str(samples / "group_2.jpg")), (size, size), interpolation=cv2.INTER_AREA)


def test_draw_never_writes_into_an_input(models_dir: Path, samples: Path, tmp_path: Path, capsys) -> None:
    """--draw --out never changes an input: not through a hard link in --out, and not when another
    input of the run has the name its copy would get (that input is read as it was, not annotated)."""
    photo = _small_group(samples)
    for d in ("in", "out", "x", "o"):
        (tmp_path / d).mkdir()
    a = tmp_path / "in" / "a.jpg"
    cv2.imwrite(str(a), photo)
    os.link(a, tmp_path / "out" / "a.jpg")
    before = a.read_bytes()
    code, out, _ = run(capsys, "detect", str(a), "--draw", "--out", str(tmp_path / "out"), "-q")
    assert code == 0 and a.read_bytes() == before
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.jpg", "a_1.jpg"]

    first, second = tmp_path / "x" / "p.jpg", tmp_path / "o" / "p.jpg"
    cv2.imwrite(str(first), photo)
    cv2.imwrite(str(second), photo)
    before = second.read_bytes()
    code, out, _ = run(capsys, "detect", str(first), str(second), "--draw", "--out", str(tmp_path / "o"), "-q")
    assert code == 0 and second.read_bytes() == before
    faces = [e["faces"] for e in json.loads(out)["images"]]
    assert faces[0] == faces[1] and len(faces[0]) == 4
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["p.jpg", "p_1.jpg", "p_2.jpg"]


def test_jsonl_appends(models_dir: Path, samples: Path, tmp_path: Path, capsys) -> None:
    """--jsonl appends (as its help says): an existing file keeps its lines, and one cut within a
    line gets the new lines on lines of their own."""
    lines = tmp_path / "f.jsonl"
    lines.write_text('{"earlier": "line"}\n')
    code, out, _ = run(capsys, "detect", str(samples / "no_face.jpg"), "--jsonl", str(lines), "-q")
    assert code == 0 and out == ""
    got = [json.loads(line) for line in lines.read_text().splitlines()]
    assert len(got) == 2 and got[0] == {"earlier": "line"} and got[1]["faces"] == []
    lines.write_text('{"earlier": "line"}\n{"cut sh')
    assert run(capsys, "detect", str(samples / "no_face.jpg"), "--jsonl", str(lines), "-q")[0] == 0
    assert json.loads(lines.read_text().splitlines()[2])["faces"] == []
    assert main(["detect", "--help"]) == 0
    help_text = " ".join(capsys.readouterr().out.split())
    assert "append one JSON line per image" in help_text and "an existing FILE keeps its lines" in help_text


def test_jsonl_dash_is_standard_output(
    models_dir: Path, samples: Path, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    images = [str(samples / "no_face.jpg"), str(samples / "group_2.jpg")]
    code, out, _ = run(capsys, "detect", *images, "--jsonl", "-", "-q")
    assert code == 0 and list(tmp_path.iterdir()) == []
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["path"] for r in rows] == images and len(rows[1]["faces"]) == 4


def _disk_fills(
    monkeypatch: pytest.MonkeyPatch, which, whole_writes: int | None = None, room: int | None = None
) -> None:
    """Writes to the files whose path passes ``which`` fail as on a full disk (ENOSPC, after
    writing what fits): after ``whole_writes`` writes (the next writes half its bytes), or once
    the file holds ``room`` bytes (cutting the file back makes room again)."""
    import errno

    import pipnet_sdk._cli_common as C

    real, calls = C._write_some, [0]

    def write_some(fd, data):
        if not which(os.readlink(f"/proc/self/fd/{fd}")):
            return real(fd, data)
        calls[0] += 1
        if room is not None:
            free = room - os.fstat(fd).st_size
            if free > 0:
                return real(fd, data[:free])
        elif calls[0] <= whole_writes:
            return real(fd, data)
        elif calls[0] == whole_writes + 1 and len(data) > 1:
            return real(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(C, "_write_some", write_some)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="finds the file written through /proc")
@pytest.mark.parametrize("full", ["jsonl", "json", "draw"])
def test_full_disk_names_the_file_and_keeps_the_rest(
    full: str, models_dir: Path, samples: Path, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One output on a full disk: one error line names the file and the cause, that output keeps
    what was whole (--jsonl its complete lines, --json the old file, --draw the images done) with
    no partial or temporary file, the other outputs are complete, and the exit code is 3."""
    photo = _small_group(samples)
    (tmp_path / "in").mkdir()
    for i in range(4):
        cv2.imwrite(str(tmp_path / "in" / f"p{i}.jpg"), cv2.flip(photo, 1) if i % 2 else photo)
    lines, doc, drawn = tmp_path / "f.jsonl", tmp_path / "f.json", tmp_path / "drawn"
    lines.write_text('{"earlier": "line"}\n')
    doc.write_text('{"earlier": "run"}\n')
    which = {
        "jsonl": lambda p: p == os.path.realpath(lines),
        "json": lambda p: os.path.basename(p).startswith(".f.json."),
        "draw": lambda p: p.startswith(os.path.realpath(drawn)),
    }[full]
    _disk_fills(monkeypatch, which, whole_writes=1)
    code, out, err = run(
        capsys,
        "detect",
        str(tmp_path / "in"),
        "--jsonl",
        str(lines),
        "--json",
        str(doc),
        "--draw",
        "--out",
        str(drawn),
        "-q",
    )
    assert code == 3 and out == ""
    [line] = err.strip().splitlines()
    name = {"jsonl": lines, "json": doc, "draw": drawn / "in" / "p1.jpg"}[full]
    assert line.startswith(f"pipnet: error: cannot write {name}: No space left on device"), line
    kept = [json.loads(x) for x in lines.read_text().splitlines()]  # every line whole
    assert kept[0] == {"earlier": "line"} and len(kept) == (2 if full == "jsonl" else 5)
    if full == "json":
        assert doc.read_text() == '{"earlier": "run"}\n'
    else:
        assert [Path(e["path"]).name for e in json.loads(doc.read_text())["images"]] == [f"p{i}.jpg" for i in range(4)]
    pictures = sorted(p.name for p in (drawn / "in").iterdir())
    assert pictures == (["p0.jpg"] if full == "draw" else [f"p{i}.jpg" for i in range(4)])
    assert all(cv2.imread(str(drawn / "in" / p)) is not None for p in pictures)
    assert not [p for p in tmp_path.rglob(".*")]  # no temporary file left


def run_on_a_tiny_disk(tmp_path: Path, size: str, argv: list[str], env: dict[str, str]) -> dict:
    """``python -m pipnet_sdk.cli *argv`` with a tmpfs of ``size`` mounted at ``tmp_path / "disk"``
    in a mount namespace of its own (``unshare -rm``; the test is skipped where that is not
    allowed). Returns the exit code, stderr and what each file left on the disk holds: JSON
    documents and lines parsed (None if they do not parse), images and videos read back."""
    disk = tmp_path / "disk"
    disk.mkdir(exist_ok=True)
    probe = ["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=64k none '{disk}'"]
    if shutil.which("unshare") is None or subprocess.run(probe, capture_output=True).returncode:
        pytest.skip("no tmpfs can be mounted here (unshare -rm)")
    driver = tmp_path / "tiny_disk_driver.py"
    driver.write_text("""import json, os, subprocess, sys
import cv2
disk = sys.argv[1]
res = subprocess.run([sys.executable, "-m", "pipnet_sdk.cli", *sys.argv[2:]], capture_output=True, text=True)
files = {}
for root, _, names in os.walk(disk):
    for name in names:
        p = os.path.join(root, name)
        try:
            if name.endswith(".jsonl"):
                files[name] = [json.loads(line) for line in open(p)]
            elif name.endswith(".json"):
                files[name] = json.load(open(p))
            elif name.endswith(".mp4"):
                cap = cv2.VideoCapture(p)
                files[name] = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() and cap.read()[0] else None
            else:
                files[name] = None if cv2.imread(p) is None else "image"
        except ValueError:
            files[name] = None
print(json.dumps({"rc": res.returncode, "stderr": res.stderr, "files": files}))
""")
    script = f"mount -t tmpfs -o size={size} none '{disk}' && exec \"$@\""
    res = subprocess.run(
        ["unshare", "-rm", "sh", "-c", script, "sh", sys.executable, str(driver), str(disk), *argv],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def test_detect_on_a_really_full_disk(models_dir: Path, samples: Path, tmp_path: Path) -> None:
    """A 96 kB disk for --jsonl, --json and --draw: exit code 3, each failure named with its cause
    on stderr, and everything left on the disk whole (lines, JSON, images), no temporary file."""
    (tmp_path / "in").mkdir()
    photo = _small_group(samples)
    for i in range(6):
        cv2.imwrite(str(tmp_path / "in" / f"p{i}.png"), cv2.flip(photo, 1) if i % 2 else photo)
    disk = tmp_path / "disk"
    env = dict(os.environ, PIPNET_MODELS_DIR=str(models_dir))
    got = run_on_a_tiny_disk(
        tmp_path,
        "96k",
        [
            "detect",
            str(tmp_path / "in"),
            "--jsonl",
            str(disk / "f.jsonl"),
            "--json",
            str(disk / "f.json"),
            "--draw",
            "--out",
            str(disk / "d"),
            "-q",
        ],
        env,
    )
    assert got["rc"] == 3, got["stderr"]
    errors = got["stderr"].strip().splitlines()
    assert errors and all(e.startswith(f"pipnet: error: cannot write {disk}") or "no output left" in e for e in errors)
    assert any("No space left on device" in e for e in errors)
    assert got["files"] and all(v is not None for v in got["files"].values()), got["files"]
    assert not [name for name in got["files"] if name.startswith(".")]


def test_draw_with_an_extension_opencv_cannot_write(models_dir: Path, samples: Path, tmp_path: Path, capsys) -> None:
    """An input named weird.dat (a JPEG inside): its drawing is written as weird.dat.jpg, the JSON
    is whole."""
    weird = tmp_path / "weird.dat"
    cv2.imwrite(str(tmp_path / "w.jpg"), _small_group(samples))
    (tmp_path / "w.jpg").rename(weird)
    code, out, err = run(capsys, "detect", str(weird), "--draw", "--out", str(tmp_path / "o"), "-q")
    assert code == 0 and len(json.loads(out)["images"][0]["faces"]) == 4
    drawn = cv2.imread(str(tmp_path / "o" / "weird.dat.jpg"))
    assert drawn is not None and drawn.shape == (320, 320, 3)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_fifo_named_like_an_image_does_not_block(models_dir: Path, tmp_path: Path) -> None:
    fifo = tmp_path / "x.jpg"
    os.mkfifo(fifo)
    env = dict(os.environ, PIPNET_MODELS_DIR=str(models_dir))
    res = subprocess.run(
        [sys.executable, "-m", "pipnet_sdk.cli", "detect", str(fifo)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 1
    [entry] = json.loads(res.stdout)["images"]
    assert "FIFO" in entry["error"] and "x.jpg" in res.stderr


def test_threads_are_capped_at_the_cpus(
    models_dir: Path, samples: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--threads 100000000 runs with as many threads as there are CPUs, with a warning (onnxruntime
    would otherwise reserve memory for every thread asked for)."""
    import pipnet_sdk.landmarker as L

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    real, asked = L.Landmarker.__init__, []

    def init(self, *a, **k):
        asked.append(k.get("threads"))
        if (k.get("threads") or 0) > 64:
            pytest.fail(f"a Landmarker with {k['threads']} threads")
        real(self, *a, **k)

    monkeypatch.setattr(L.Landmarker, "__init__", init)
    code, out, err = run(capsys, "detect", str(samples / "no_face.jpg"), "--threads", "100000000")
    assert code == 0 and asked == [cpus]
    assert f"--threads 100000000 is more than the {cpus} CPUs here" in err
    code, out, err = run(capsys, "detect", str(samples / "no_face.jpg"), "--threads", "1")
    assert code == 0 and asked[-1] == 1 and err == ""


def test_only_jsonl_keeps_no_results(models_dir: Path, samples: Path, tmp_path: Path, capsys) -> None:
    """With only --jsonl, memory stays flat however many images there are: 200 images (4 faces,
    ~40 kB of results each) take no more Python memory than 20."""
    import tracemalloc

    (tmp_path / "one.jpg").write_bytes(cv2.imencode(".jpg", _small_group(samples, 256))[1].tobytes())

    def peak(count: int) -> int:
        folder = tmp_path / f"n{count}"
        folder.mkdir()
        for i in range(count):
            (folder / f"{i:03d}.jpg").symlink_to(tmp_path / "one.jpg")
        tracemalloc.start()
        try:
            code, out, _ = run(capsys, "detect", str(folder), "--jsonl", str(tmp_path / f"n{count}.jsonl"), "-q")
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
            assert code == 0 and out == ""

    peak(5)  # models loaded, caches warm
    small, large = peak(20), peak(200)
    assert len((tmp_path / "n200.jsonl").read_text().splitlines()) == 200
    assert large - small < 2_000_000, (small, large)


def test_quiet_silences_the_image_libraries(models_dir: Path, tmp_path: Path) -> None:
    """-q: not a line on stderr, also not libpng's or libjpeg's own (a PNG with a bad checksum, a
    JPEG cut short); without -q our warning is there."""
    import struct

    import numpy as np

    img = np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)
    png = bytearray(cv2.imencode(".png", img)[1].tobytes())
    at = png.index(b"IDAT")
    png[at + 4 + struct.unpack(">I", png[at - 4 : at])[0]] ^= 0xFF  # the IDAT chunk's CRC
    (tmp_path / "bad_crc.png").write_bytes(png)
    jpeg = cv2.imencode(".jpg", img)[1].tobytes()
    (tmp_path / "cut.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    env = dict(os.environ, PIPNET_MODELS_DIR=str(models_dir))
    argv = [sys.executable, "-m", "pipnet_sdk.cli", "detect", str(tmp_path / "bad_crc.png"), str(tmp_path / "cut.jpg")]
    quiet = subprocess.run([*argv, "-q"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert quiet.returncode == 1 and quiet.stderr == ""
    loud = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert loud.returncode == 1 and "pipnet: warning:" in loud.stderr and "bad_crc.png" in loud.stderr


@pytest.mark.skipif(sys.platform in ("darwin", "win32"), reason="needs a file system that takes any bytes")
def test_non_utf8_file_names_are_written_escaped(models_dir: Path, samples: Path, tmp_path: Path, capsys) -> None:
    """A file named with the bytes b"caf\\xe9.jpg" (Latin-1, not UTF-8) is written in the JSON and
    JSONL as the text caf\\xe9.jpg: valid UTF-8, no lone surrogates."""
    name = os.fsdecode(b"caf\xe9.jpg")
    (tmp_path / "in").mkdir()
    shutil.copy(samples / "no_face.jpg", tmp_path / "in" / name)
    lines = tmp_path / "f.jsonl"
    for argv in (["detect", str(tmp_path / "in")], ["detect", str(tmp_path / "in" / name), "--jsonl", str(lines)]):
        code, out, _ = run(capsys, *argv, "-q")
        text = out or lines.read_bytes().decode("utf-8")  # strict: no surrogates
        assert code == 0 and "\\udc" not in text
        record = json.loads(text.splitlines()[0]) if not out else json.loads(text)["images"][0]
        assert record["path"].endswith("caf\\xe9.jpg") and record["faces"] == []


def test_outputs_record_what_made_them(models_dir: Path, samples: Path, tmp_path: Path, capsys) -> None:
    """--json has a "provenance" object (the package version, each model's name, version and
    sha256), and so has every --jsonl line."""
    import hashlib

    from pipnet_sdk import Landmarker, __version__

    expected = Landmarker().provenance()
    assert expected["pipnet_sdk"] == __version__ and expected["model"]["name"] == "pipnet-fast"
    packaged = ROOT / "pipnet_sdk" / "models"
    for key, name in (("model", "pipnet-fast.onnx"), ("detector", "yunet_n_dynamic.onnx")):
        assert expected[key]["sha256"] == hashlib.sha256((packaged / name).read_bytes()).hexdigest()
    doc, lines = tmp_path / "f.json", tmp_path / "f.jsonl"
    images = [str(samples / "no_face.jpg"), str(samples / "group_2.jpg")]
    assert run(capsys, "detect", *images, "--json", str(doc), "--jsonl", str(lines), "-q")[0] == 0
    assert json.loads(doc.read_text())["provenance"] == expected
    rows = [json.loads(line) for line in lines.read_text().splitlines()]
    assert len(rows) == 2 and all(r["provenance"] == expected for r in rows)


def test_min_quality_keeps_the_faces_to_trust(capsys, samples: Path, random_model: Path) -> None:
    code, out, _ = run(capsys, "detect", str(samples / "group_2.jpg"), "--min-quality", "0.5", "-q")
    faces = json.loads(out)["images"][0]["faces"]
    assert code == 0 and len(faces) == 4 and all(f["quality"] >= 0.5 for f in faces)
    assert all(len(f["visibility"]) == 68 and len(f["occluded"]) == 68 for f in faces)
    code, out, _ = run(capsys, "detect", str(samples / "group_2.jpg"), "--min-quality", "1", "-q")
    assert code == 0 and json.loads(out)["images"][0]["faces"] == []  # no face is certain
    code, _, err = run(
        capsys, "detect", str(samples / "group_2.jpg"), "--min-quality", "0.5", "--model", str(random_model)
    )
    assert code == 2
    assert_one_error_line(err, "--min-quality", "no")
