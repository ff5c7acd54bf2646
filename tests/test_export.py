"""export/: heads, targets, schemes, NME, decoding parity, STC curriculum, augmentation, a tiny run."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from export.augment import AugmentConfig, augment  # noqa: E402
from export.data import neighbor_indices, read_list_file, read_pts  # noqa: E402
from export.decode import decode as torch_decode  # noqa: E402
from export.decode import nme  # noqa: E402
from export.model import PIPNet  # noqa: E402
from export.schemes import SCHEMES, get_scheme  # noqa: E402
from export.targets import coarse_score, distill_loss, make_targets, pip_loss  # noqa: E402
from export.train import stc_stage  # noqa: E402
from pipnet_sdk.decode import decode as numpy_decode  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "backbone,stride,size,grid",
    [("resnet18", 32, 256, 8), ("resnet18", 16, 128, 8), ("mobilenetv2", 32, 128, 4), ("mobilenetv2", 16, 64, 4)],
)
def test_head_shapes(backbone: str, stride: int, size: int, grid: int) -> None:
    m = PIPNet(68, 10, backbone, stride, width=0.25, coarse_grids=(2, 4)).eval()
    heads, coarse = m.forward_train(torch.zeros(2, 3, size, size))
    assert [tuple(h.shape) for h in heads] == [(2, 68, grid, grid)] * 3 + [(2, 680, grid, grid)] * 2
    assert {g: tuple(c.shape) for g, c in coarse.items()} == {2: (2, 68, 2, 2), 4: (2, 68, 4, 4)}


def test_targets_at_known_position() -> None:
    nb = torch.tensor([[1], [0], [1]])
    pts = torch.tensor([[[0.30, 0.80], [0.99, 0.01], [0.5, 0.5]]])  # grid 4
    t = make_targets(pts, 4, nb)
    # landmark 0: x 1.2 cells, y 3.2 cells -> cell (row 3, col 1) = 13, offset (0.2, 0.2)
    assert t["index"].tolist() == [[13, 3, 10]]
    score = t["score"].reshape(1, 3, 4, 4)
    assert score[0, 0, 3, 1] == 1 and score[0, 0].sum() == 1
    np.testing.assert_allclose(t["offset"][0, 0].numpy(), [0.2, 0.2], atol=1e-6)
    np.testing.assert_allclose(t["offset"][0, 1].numpy(), [0.96, 0.04], atol=1e-6)
    # neighbour of landmark 0 is landmark 1 at (3.96, 0.04) cells, seen from cell (col 1, row 3)
    np.testing.assert_allclose(t["neighbor"][0, 0, 0].numpy(), [2.96, -2.96], atol=1e-6)


def test_loss_is_zero_for_perfect_outputs() -> None:
    nb = torch.tensor([[1], [0]])
    pts = torch.tensor([[[0.3, 0.8], [0.6, 0.1]]])
    t = make_targets(pts, 4, nb)
    score = t["score"].reshape(1, 2, 4, 4)
    ox, oy = torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 4)
    nx, ny = torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 4)
    for i in range(2):
        r, c = divmod(int(t["index"][0, i]), 4)
        ox[0, i, r, c], oy[0, i, r, c] = t["offset"][0, i]
        nx[0, i, r, c], ny[0, i, r, c] = t["neighbor"][0, i, 0]
    loss, parts = pip_loss((score, ox, oy, nx, ny), t, 1)
    assert float(loss) == pytest.approx(0.0, abs=1e-7)
    # and decoding those outputs gives the points back
    np.testing.assert_allclose(torch_decode((score, ox, oy, nx, ny), nb).numpy(), pts.numpy(), atol=1e-6)
    loss2, _ = pip_loss((score, ox + 0.1, oy, nx, ny), t, 1)
    assert float(loss2) == pytest.approx(0.1 * 2 / 4, rel=1e-5)  # L1 mean over N and x/y


def test_distill_loss_reads_offsets_where_the_teacher_decodes() -> None:
    """Score maps count on every cell, offsets only at the teacher's argmax cells."""
    g = torch.Generator().manual_seed(0)
    teacher = tuple(torch.rand(2, k, 4, 4, generator=g) for k in (3, 3, 3, 6, 6))  # 3 landmarks, 2 neighbours
    assert float(distill_loss(teacher, teacher, 2)) == 0.0
    idx = teacher[0].reshape(2, 3, 16).argmax(-1)
    r, c = divmod(int(idx[0, 1]), 4)
    off_cell = [(rr, cc) for rr in range(4) for cc in range(4) if (rr, cc) != (r, c)][0]
    away = [t.clone() for t in teacher]
    away[1][0, 1, off_cell[0], off_cell[1]] += 1.0  # an x offset where the teacher does not decode
    assert float(distill_loss(tuple(away), teacher, 2)) == 0.0
    at = [t.clone() for t in teacher]
    at[1][0, 1, r, c] += 1.0
    assert float(distill_loss(tuple(at), teacher, 2)) == pytest.approx(1.0 / (2 * 3) / 2)  # L1 mean, x and y halves
    score = [t.clone() for t in teacher]
    score[0][0, 1, off_cell[0], off_cell[1]] += 1.0
    assert float(distill_loss(tuple(score), teacher, 2, score_weight=10.0)) == pytest.approx(10.0 / (2 * 3 * 16))


@pytest.mark.parametrize("name", sorted(SCHEMES))
def test_flip_is_an_involution(name: str) -> None:
    s = get_scheme(name)
    flip = np.array(s.flip)
    assert len(flip) == s.num_points and sorted(flip) == list(range(s.num_points))
    assert (flip[flip] == np.arange(s.num_points)).all()
    assert flip[s.left_eye] == s.right_eye


def test_ibug68_flip_maps_eyes_and_mouth() -> None:
    f = get_scheme("ibug68").flip
    assert f[36] == 45 and f[39] == 42 and f[48] == 54 and f[0] == 16 and f[30] == 30 and f[8] == 8


def test_nme_hand_computed() -> None:
    gt = torch.zeros(1, 68, 2)
    gt[0, 36] = torch.tensor([0.0, 0.0])
    gt[0, 45] = torch.tensor([10.0, 0.0])
    pred = gt.clone()
    pred[0, 0] += torch.tensor([3.0, 4.0])  # one point off by 5 px
    assert float(nme(pred, gt, (36, 45))[0]) == pytest.approx(5 / 68 / 10)


def test_torch_and_numpy_decoding_agree() -> None:
    rng = np.random.RandomState(1)
    b, n, c, g = 3, 20, 5, 6
    outs = [
        rng.randn(b, n, g, g),
        rng.rand(b, n, g, g),
        rng.rand(b, n, g, g),
        rng.randn(b, n * c, g, g),
        rng.randn(b, n * c, g, g),
    ]
    outs = [o.astype(np.float32) for o in outs]
    nb = neighbor_indices(rng.rand(n, 2).astype(np.float32), c)
    p_np, _ = numpy_decode(*outs, nb)
    p_t = torch_decode(tuple(torch.from_numpy(o) for o in outs), torch.from_numpy(nb)).numpy()
    np.testing.assert_allclose(p_np, p_t, atol=1e-6)


def test_neighbors_exclude_self_and_are_nearest() -> None:
    mean = np.array([[0, 0], [1, 0], [5, 0], [6, 0]], np.float32)
    assert neighbor_indices(mean, 1)[:, 0].tolist() == [1, 0, 3, 2]


def test_stc_coarse_targets_and_stages() -> None:
    pts = torch.tensor([[[0.30, 0.80], [0.74, 0.26]]])
    c2 = coarse_score(pts, 2).reshape(1, 2, 2, 2)
    c4 = coarse_score(pts, 4).reshape(1, 2, 4, 4)
    assert c2[0, 0, 1, 0] == 1 and c2[0, 1, 0, 1] == 1 and c2.sum() == 2
    assert c4[0, 0, 3, 1] == 1 and c4[0, 1, 1, 2] == 1 and c4.sum() == 2
    stages = [stc_stage({"grids": [2, 4]}, e, 9) for e in range(9)]
    assert stages == [2, 2, 2, 4, 4, 4, 0, 0, 0]


def test_augment_moves_pixels_and_points_together() -> None:
    """A bright dot drawn at a landmark stays under the transformed landmark (rotation, flip)."""
    base = 96
    img = torch.zeros(1, 3, base, base, dtype=torch.uint8)
    pts = torch.full((1, 68, 2), 48.0)
    pts[0, 36] = torch.tensor([40.0, 35.0])
    ys, xs = torch.meshgrid(torch.arange(base), torch.arange(base), indexing="ij")
    img[0, :, ((xs - 40) ** 2 + (ys - 35) ** 2) <= 4] = 255
    flip = torch.tensor(get_scheme("ibug68").flip)
    cfg = AugmentConfig(p_rotate=1.0, p_flip=1.0, p_occlude=0, p_blur=0, p_gray=0, brightness=0, contrast=0, noise=0)
    for seed in range(4):
        x, p = augment(img, pts, 64, 1.5, flip, cfg, torch.Generator().manual_seed(seed))
        w = x[0, 0]
        cy = float((w.sum(1) * torch.arange(64)).sum() / w.sum())
        cx = float((w.sum(0) * torch.arange(64)).sum() / w.sum())
        u = p[0, 45] * 64 - 0.5  # flipped: point 36 became 45
        assert math.hypot(cx - float(u[0]), cy - float(u[1])) < 0.6


def test_read_pts_is_zero_based(tmp_path: Path) -> None:
    f = tmp_path / "a.pts"
    f.write_text("version: 1\nn_points: 2\n{\n1 1\n10.5 20\n}\n")
    np.testing.assert_allclose(read_pts(f), [[0, 0], [9.5, 19]])


def test_read_list_files(tmp_path: Path) -> None:
    wflw = tmp_path / "wflw.txt"
    wflw.write_text(" ".join(["1"] * 196) + " 0 0 9 9 0 0 0 0 0 0 sub/img.jpg\n")
    s = read_list_file(wflw, tmp_path, 98)
    assert s[0].image == str(tmp_path / "sub/img.jpg") and s[0].points.shape == (98, 2)
    cofw = tmp_path / "cofw.txt"
    cofw.write_text("a.jpg " + " ".join(str(i) for i in range(58)) + "\n")
    s = read_list_file(cofw, tmp_path, 29, layout="name_first")
    assert s[0].points[1].tolist() == [2, 3]
    with pytest.raises(ValueError, match="coordinates"):
        read_list_file(cofw, tmp_path, 30, layout="name_first")


def test_pack_round_trip(tmp_path: Path) -> None:
    from export.pack import load_cache, pack

    rng = np.random.RandomState(0)
    imgs = np.zeros((3, 32, 32, 3), np.uint8)
    imgs[:, 8:24, 8:24] = rng.randint(0, 255, (3, 1, 1, 3))
    src = tmp_path / "c.npz"
    np.savez(src, images=imgs, points=rng.rand(3, 5, 2))
    pack(src, 95)
    src.unlink()
    d = load_cache(src)
    assert d["images"].shape == imgs.shape and np.abs(d["images"].astype(int) - imgs).mean() < 3
    assert d["points"].shape == (3, 5, 2)


@pytest.mark.parametrize("backbone", ["resnet18", "mobilenetv2"])
def test_export_parity(tmp_path: Path, backbone: str) -> None:
    """The shipped graph (decoding inside, stem as SpaceToDepth + conv) matches the reference
    decoding of the torch head maps."""
    from export.to_onnx import export_model, metadata, parity
    from export.train import build_model, load_config

    cfg = load_config(None, {"name": "t", "width": 0.25, "input_size": 64, "backbone": backbone})
    model = build_model(cfg).eval()
    mean = np.random.RandomState(0).uniform(0.2, 0.8, (68, 2)).astype(np.float32)
    nb = neighbor_indices(mean, 10)
    path = export_model(model, metadata(cfg, mean, nb), tmp_path / "m.onnx")
    crops = np.random.RandomState(1).randint(0, 255, (4, 64, 64, 3), np.uint8)
    assert "SpaceToDepth" in {n.op_type for n in onnx.load(str(path)).graph.node}
    r = parity(model, path, crops, nb)
    assert r["decode_px"] < 1e-4 and r["numpy_decode_px"] < 1e-4 and r["torch_vs_ort_px"] < 1e-2
    assert r["scores_max_abs"] < 1e-4


@pytest.mark.slow
def test_tiny_recipe_trains_stc_and_exports(tmp_path: Path, shared_dir: Path) -> None:
    """The CI run of the whole recipe: teacher, one STC round, ONNX fp32 + int8, in well under a minute."""
    cfg = {
        "name": "tiny",
        "width": 0.25,
        "stride": 16,
        "input_size": 64,
        "base_size": 96,
        "margin": 1.5,
        "epochs": 2,
        "batch_size": 16,
        "limit": 24,
        "val_fraction": 0.2,
        "stc": {"grids": [2, 4], "rounds": 1, "epochs": 3},
    }
    conf = tmp_path / "tiny.json"
    conf.write_text(json.dumps(cfg))
    env = {"PIPNET_SHARED": str(shared_dir), "PIPNET_CACHE": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin"}
    r = subprocess.run(
        [sys.executable, "-m", "export.recipe", "--config", str(conf), "--out", str(tmp_path / "run"), "--quiet"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["teacher"]["epoch"] == 2 and report["stc"]["epoch"] == 3
    lines = (tmp_path / "run" / "stc" / "round1" / "log.txt").read_text().splitlines()
    log = [json.loads(line) for line in lines if line.startswith("{")]
    assert [entry["stc_grid"] for entry in log] == [2, 4, 0]
    assert (tmp_path / "run" / "tiny.int8.onnx").exists() and report["onnx"]["parity"]["decode_px"] < 1e-3
    # the exported model runs in the SDK
    from pipnet_sdk.landmark_model import LandmarkModel

    lm = LandmarkModel(tmp_path / "run" / "tiny.fp32.onnx")
    assert lm.spec.name == "tiny" and lm.spec.num_landmarks == 68 and lm.spec.crop_scale == 1.2


@pytest.mark.slow
def test_recipe_restarts_and_distils_from_a_bigger_teacher(tmp_path: Path, shared_dir: Path) -> None:
    """A warm restart on other data (300W alone), then distillation: a teacher at another input
    size labels the unlabeled faces on its own crops, and the student learns from those labels
    starting from its restart."""
    env = {"PIPNET_SHARED": str(shared_dir), "PIPNET_CACHE": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin"}
    common = {"width": 0.25, "stride": 16, "margin": 1.5, "batch_size": 16, "limit": 24, "val_fraction": 0.2}
    teacher_cfg = {"name": "teacher", "input_size": 96, "base_size": 144, "epochs": 1, **common}
    student_cfg = {
        "name": "student",
        "input_size": 64,
        "base_size": 96,
        "epochs": 1,
        **common,
        "restarts": [
            {"lr": 1e-3, "epochs": 2, "labeled": ["data/300w/train"]},
            {"lr": 5e-4, "epochs": 2, "labeled": ["data/300w/train"], "val_fraction": 0.0, "average_last": 2},
        ],
        "stc": {"grids": [], "epochs": 2, "lr": 5e-4, "teacher": str(tmp_path / "t" / "best.pt")},
    }
    for name, cfg in (("teacher", teacher_cfg), ("student", student_cfg)):
        (tmp_path / f"{name}.json").write_text(json.dumps(cfg))
    run = [sys.executable, "-m"]
    r = subprocess.run(
        run + ["export.train", "--config", str(tmp_path / "teacher.json"), "--out", str(tmp_path / "t"), "--quiet"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    r = subprocess.run(
        run
        + [
            "export.recipe",
            "--config",
            str(tmp_path / "student.json"),
            "--out",
            str(tmp_path / "s"),
            "--quiet",
            "--skip-export",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads((tmp_path / "s" / "report.json").read_text())
    assert report["teacher"]["epoch"] == 1 and report["restart1"]["epoch"] == 2 and report["stc"]["epoch"] == 2
    # the restart fine-tuned on 300W alone, keeping the teacher stage's neighbour indices
    restart = json.loads((tmp_path / "s" / "restart1" / "config.json").read_text())
    assert restart["labeled"] == ["data/300w/train"] and restart["lr"] == 1e-3
    # then a fit on all 300W faces whose result is its weight average: the distillation starts there
    assert (tmp_path / "s" / "restart2" / "averaged.pt").exists()
    stc_config = json.loads((tmp_path / "s" / "stc" / "round1" / "config.json").read_text())
    assert stc_config["init"].endswith("restart2/averaged.pt")
    # the teacher cut the unlabeled faces at its own size, the student at its own
    sizes = sorted(np.load(p)["images"].shape[1] for p in (tmp_path / "cache").glob("unlabeled-*.npz"))
    assert sizes == [96, 144]
    lines = (tmp_path / "s" / "stc" / "round1" / "log.txt").read_text().splitlines()
    log = [json.loads(line) for line in lines if line.startswith("{")]
    assert [entry["stc_grid"] for entry in log] == [0, 0]  # no coarse stage: full maps from the start


@pytest.mark.slow
def test_fine_tune_on_other_data_keeps_the_neighbour_indices(tmp_path: Path, shared_dir: Path, monkeypatch) -> None:
    """The neighbour heads are tied to the neighbour indices they were trained with: fine-tuning
    on other faces (here 300W only, after 300W + ytf68) and resuming that run keep the initial
    weights' mean face and neighbours instead of recomputing them from the new data."""
    import torch

    from export.train import load_config, prepare, train

    monkeypatch.setenv("PIPNET_SHARED", str(shared_dir))
    monkeypatch.setenv("PIPNET_CACHE", str(tmp_path / "cache"))
    common = {
        "width": 0.25,
        "input_size": 64,
        "base_size": 96,
        "margin": 1.5,
        "batch_size": 16,
        "limit": 24,
        "val_fraction": 0.2,
        "epochs": 1,
    }
    base = load_config(None, common)
    train(base, tmp_path / "base", device="cpu", progress=False)
    tuned = load_config(
        None, {**common, "labeled": ["data/300w/train"], "init": str(tmp_path / "base" / "best.pt"), "lr": 1e-4}
    )
    assert not np.array_equal(prepare(tuned, progress=False)["neighbors"], prepare(base, progress=False)["neighbors"])
    tuned["epochs"] = 2
    train(tuned, tmp_path / "tuned", device="cpu", progress=False, stop_after=1e-9)  # paused after its first epoch
    train(tuned, tmp_path / "tuned", resume=True, device="cpu", progress=False)
    metas = [torch.load(p, weights_only=False) for p in (tmp_path / "base" / "best.pt", tmp_path / "tuned" / "last.pt")]
    assert metas[1]["epoch"] == 1  # resumed: the second epoch ran
    for key in ("neighbor_indices", "mean_face"):
        np.testing.assert_array_equal(metas[0]["meta"][key], metas[1]["meta"][key])


@pytest.mark.slow
def test_final_fit_on_all_faces(tmp_path: Path, shared_dir: Path, monkeypatch) -> None:
    """val_fraction 0 (pipnet-fast's last cycle, on every labeled face): no
    validation, so best.pt is the last epoch, and the export scores the model on the usual
    split of those faces and says it saw them."""
    from export.to_onnx import export_and_check
    from export.train import load_config, prepare, train

    monkeypatch.setenv("PIPNET_SHARED", str(shared_dir))
    monkeypatch.setenv("PIPNET_CACHE", str(tmp_path / "cache"))
    cfg = load_config(
        None,
        {
            "width": 0.25,
            "input_size": 64,
            "base_size": 96,
            "margin": 1.5,
            "batch_size": 16,
            "limit": 20,
            "labeled": ["data/300w/train"],
            "val_fraction": 0.0,
            "epochs": 2,
        },
    )
    d = prepare(cfg, progress=False)
    assert len(d["val_images"]) == 0 and len(d["train_images"]) == 20
    summary = train(cfg, tmp_path / "all", device="cpu", progress=False)
    assert summary["epoch"] == 2 and math.isnan(summary["val_nme"])
    best = torch.load(tmp_path / "all" / "best.pt", weights_only=False)
    assert best["epoch"] == 1  # the last epoch (0-based)
    report = export_and_check(tmp_path / "all" / "best.pt", tmp_path / "m.onnx", tmp_path / "m.int8.onnx")
    assert report["val_seen_in_training"] and np.isfinite(report["val_nme_int8"])  # 2 epochs: no accuracy yet


@pytest.mark.slow
def test_fine_tune_at_a_bigger_input_size_with_a_block_fewer(tmp_path: Path, shared_dir: Path, monkeypatch) -> None:
    """The 144-px pipnet-fast candidates (model card): weights trained at one input size continue at
    a bigger one (a bigger map on the same stride), with one residual block taken out ("blocks"). The
    initial weights are loaded, the neighbour indices kept, and the exported file tells the SDK
    the new size; weights that lack a layer of the model are refused."""
    from export.to_onnx import export_and_check
    from export.train import load_config, train
    from pipnet_sdk.landmark_model import LandmarkModel

    monkeypatch.setenv("PIPNET_SHARED", str(shared_dir))
    monkeypatch.setenv("PIPNET_CACHE", str(tmp_path / "cache"))
    common = {
        "width": 0.25,
        "stride": 16,
        "margin": 1.5,
        "batch_size": 16,
        "limit": 24,
        "val_fraction": 0.2,
        "labeled": ["data/300w/train"],
        "epochs": 1,
    }
    train(
        load_config(None, {**common, "input_size": 64, "base_size": 96}),
        tmp_path / "small",
        device="cpu",
        progress=False,
    )
    # learning rate 0: the weights stay the initial ones (BatchNorm statistics still move)
    bigger = load_config(
        None,
        {
            **common,
            "input_size": 80,
            "base_size": 120,
            "lr": 0.0,
            "blocks": [1, 2, 2],
            "init": str(tmp_path / "small" / "best.pt"),
        },
    )
    train(bigger, tmp_path / "big", device="cpu", progress=False)
    small, big = (torch.load(tmp_path / p / "best.pt", weights_only=False) for p in ("small", "big"))
    assert not any(k.startswith("backbone.stages.0.1.") for k in big["model"])
    for key in ("score.weight", "backbone.stages.0.0.conv1.weight", "backbone.stages.1.1.conv2.weight"):
        torch.testing.assert_close(big["model"][key], small["model"][key])
    np.testing.assert_array_equal(big["meta"]["neighbor_indices"], small["meta"]["neighbor_indices"])
    export_and_check(tmp_path / "big" / "best.pt", tmp_path / "big.onnx")
    lm = LandmarkModel(tmp_path / "big.onnx", threads=1)
    assert (lm.spec.input_size, lm.spec.stride) == (80, 16)
    candidates, scores = lm.forward(np.zeros((1, 3, 80, 80), np.float32))
    assert candidates.shape == (1, 68, 11, 2) and scores.shape == (1, 68)  # own + 10 neighbour votes
    with pytest.raises(ValueError, match="lack"):  # the block taken out cannot come back from nothing
        init = str(tmp_path / "big" / "best.pt")
        train(
            load_config(None, {**common, "input_size": 64, "base_size": 96, "init": init}),
            tmp_path / "again",
            device="cpu",
            progress=False,
        )


@pytest.mark.slow
def test_weight_averaging_over_the_last_epochs(tmp_path: Path, shared_dir: Path, monkeypatch) -> None:
    """average_last K: the running mean of the last K epochs' weights goes to averaged.pt."""
    from export.train import average_into, load_config, train

    a = {"w": torch.tensor([1.0, 2.0]), "n": torch.tensor(5)}
    b = {"w": torch.tensor([3.0, 6.0]), "n": torch.tensor(7)}
    c = {"w": torch.tensor([5.0, 1.0]), "n": torch.tensor(9)}
    mean = average_into(average_into(average_into({}, a, 1), b, 2), c, 3)
    torch.testing.assert_close(mean["w"], torch.tensor([3.0, 3.0]))
    assert int(mean["n"]) == 9  # integer buffers (BatchNorm's counter) keep the latest
    monkeypatch.setenv("PIPNET_SHARED", str(shared_dir))
    monkeypatch.setenv("PIPNET_CACHE", str(tmp_path / "cache"))
    cfg = load_config(
        None,
        {
            "width": 0.25,
            "input_size": 64,
            "base_size": 96,
            "margin": 1.5,
            "batch_size": 8,
            "limit": 20,
            "labeled": ["data/300w/train"],
            "val_fraction": 0.2,
            "epochs": 3,
            "average_last": 2,
        },
    )
    summary = train(cfg, tmp_path / "run", device="cpu", progress=False)
    avg = torch.load(tmp_path / "run" / "averaged.pt", weights_only=False)
    last = torch.load(tmp_path / "run" / "last.pt", weights_only=False)
    key = "score.weight"
    assert not torch.equal(avg["model"][key], last["model"][key])
    assert np.isfinite(summary["averaged_val_nme"]) and avg["meta"] == last["meta"]


@pytest.mark.slow
def test_distillation_from_a_teacher_on_the_same_grid(tmp_path: Path, shared_dir: Path, monkeypatch) -> None:
    """A teacher at twice the input size and twice the stride (the same map) supervises the
    student on the same augmented crops, the student's downscaled from the teacher's."""
    from export.train import load_config, train

    monkeypatch.setenv("PIPNET_SHARED", str(shared_dir))
    monkeypatch.setenv("PIPNET_CACHE", str(tmp_path / "cache"))
    common = {
        "width": 0.25,
        "margin": 1.5,
        "batch_size": 8,
        "limit": 20,
        "labeled": ["data/300w/train"],
        "val_fraction": 0.2,
        "epochs": 1,
    }
    train(
        load_config(None, {**common, "input_size": 128, "stride": 32, "base_size": 192}),
        tmp_path / "t",
        device="cpu",
        progress=False,
    )
    teacher = str(tmp_path / "t" / "best.pt")
    student = load_config(
        None, {**common, "input_size": 64, "stride": 16, "base_size": 96, "teacher": teacher, "distill_weight": 0.7}
    )
    summary = train(student, tmp_path / "s", device="cpu", progress=False)
    assert summary["epoch"] == 1 and np.isfinite(summary["val_nme"])
    sizes = sorted(np.load(p)["train_images"].shape[1] for p in (tmp_path / "cache").glob("crops-*.npz"))
    assert sizes == [96, 192]  # the student's own crops (validation) and the teacher's (training)
    with pytest.raises(ValueError, match="same map grid"):
        train({**student, "input_size": 32}, tmp_path / "bad", device="cpu", progress=False)
    other = torch.load(teacher, weights_only=False)  # a teacher whose neighbour heads mean other landmarks
    other["meta"]["neighbor_indices"] = np.roll(np.array(other["meta"]["neighbor_indices"]), 1, axis=1).tolist()
    torch.save(other, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="neighbour indices"):
        train({**student, "teacher": str(tmp_path / "other.pt")}, tmp_path / "bad", device="cpu", progress=False)


def test_drawn_green_marks_are_removed_from_the_unlabeled_faces(shared_dir: Path, tmp_path: Path) -> None:
    """Every shared LFW face has a green box and 68 green crosses drawn on it: cleaning removes
    the saturated green and touches only the masked pixels, a small part of the image."""
    import cv2

    from export.marks import cleaned_copy, green_marks_mask

    def saturated_green(img: np.ndarray) -> float:
        i = img.astype(int)
        return float((i[:, :, 1] - np.maximum(i[:, :, 0], i[:, :, 2]) > 40).mean())

    files = sorted(str(p) for p in (shared_dir / "data" / "unlabeled" / "lfw").glob("*.jpg"))[:5]
    copies = cleaned_copy(files, tmp_path / "clean", progress=False)
    assert [Path(c).parent for c in copies] == [tmp_path / "clean"] * 5
    for src, dst in zip(files, copies):
        img, clean = cv2.imread(src), cv2.imread(dst)
        mask = green_marks_mask(img).astype(bool)
        assert saturated_green(img) > 0.01 and saturated_green(clean) < 0.0005
        assert mask.mean() < 0.15
        assert np.array_equal(img[~mask], clean[~mask])


@pytest.mark.slow
def test_pseudo_labels_from_an_exported_teacher(tmp_path: Path, shared_dir: Path, monkeypatch) -> None:
    """ "pseudo_labels": the shipped pipnet-fast labels cleaned unlabeled faces through the SDK with
    test-time averaging; the labels land on the faces of the student's crops and join training."""
    from export.pseudo import onnx_pseudo_labels
    from export.train import load_config, train

    monkeypatch.setenv("PIPNET_SHARED", str(shared_dir))
    monkeypatch.setenv("PIPNET_CACHE", str(tmp_path / "cache"))
    teacher = "pipnet_sdk/models/pipnet-fast.onnx"  # relative paths are the repository's
    cfg = load_config(
        None,
        {
            "width": 0.25,
            "input_size": 64,
            "base_size": 96,
            "margin": 1.5,
            "batch_size": 8,
            "limit": 6,
            "val_fraction": 0.2,
            "epochs": 1,  # 6 faces a folder
            "pseudo_labels": {"teacher": teacher, "flip_test": True, "test_crops": 3},
        },
    )
    averaged = onnx_pseudo_labels(cfg, progress=False)
    images, points = averaged["images"], averaged["points"]
    assert images.shape == (6, 96, 96, 3) and points.shape == (6, 68, 2)
    green = images.astype(int)[..., 1] - np.maximum(images[..., 0], images[..., 2]).astype(int)
    assert (green > 40).mean() < 0.0005  # the drawn marks were removed before labelling
    lo, hi = 48 - 32, 48 + 32  # the crop square: the central base_size / margin pixels
    assert ((points > lo) & (points < hi)).all()
    plain = onnx_pseudo_labels(dict(cfg, pseudo_labels={"teacher": teacher}), progress=False)["points"]
    assert 0.01 < np.abs(plain - points).mean() < 1.5  # other labels without averaging, but close
    train(cfg, tmp_path / "run", device="cpu", progress=False)
    assert "train=10+6 " in (tmp_path / "run" / "log.txt").read_text()


class _FakeDlib:
    """dlib's detector and predictor as export.pseudo calls them: the detector finds one face,
    the box given for even images and a far one for odd images; the predictor puts 68 points on a
    grid inside the box it gets."""

    class Rect:
        def __init__(self, box) -> None:
            self.box = [int(round(v)) for v in box]

        def left(self) -> int:
            return self.box[0]

        def top(self) -> int:
            return self.box[1]

        def right(self) -> int:
            return self.box[2]

        def bottom(self) -> int:
            return self.box[3]

    def __init__(self, boxes) -> None:
        self.boxes, self.calls = list(boxes), 0

    def get_frontal_face_detector(self):
        def hog(rgb, upsample):
            assert rgb.ndim == 3 and upsample == 1
            box = self.boxes[self.calls]
            self.calls += 1
            return [self.Rect(box if self.calls % 2 else np.array(box) + 500)]

        return hog

    def shape_predictor(self, path):
        from types import SimpleNamespace

        def predict(rgb, rect):
            x1, y1, x2, y2 = rect.box
            u = np.linspace(0.2, 0.8, 68)
            return SimpleNamespace(
                parts=lambda: [SimpleNamespace(x=x1 + a * (x2 - x1), y=y1 + a * (y2 - y1)) for a in u]
            )

        return predict


@pytest.mark.slow
def test_dlib_teacher_labels_only_the_faces_its_detector_agrees_on(
    tmp_path: Path, shared_dir: Path, monkeypatch
) -> None:
    """ "pseudo_labels": {"teacher": "dlib"}: dlib's predictor labels each unlabeled face whose box
    dlib's own detector also finds (IoU >= 0.3); a face it finds elsewhere is left out, and the
    labels land on the student's crops of the kept faces."""
    import sys

    import export.pseudo as pseudo
    from export.train import load_config

    monkeypatch.setenv("PIPNET_SHARED", str(shared_dir))
    monkeypatch.setenv("PIPNET_CACHE", str(tmp_path / "cache"))
    predictor = tmp_path / "shape_predictor_68_face_landmarks.dat"
    predictor.write_bytes(b"not read by the fake")
    monkeypatch.setattr(pseudo, "dlib_predictor_file", lambda: predictor)
    cfg = load_config(
        None,
        {
            "width": 0.25,
            "input_size": 64,
            "base_size": 96,
            "margin": 1.5,
            "limit": 6,
            "pseudo_labels": {"teacher": "dlib"},
        },
    )
    _, boxes = pseudo.unlabeled_boxes(cfg, pseudo.DEFAULT_UNLABELED, progress=False)
    monkeypatch.setitem(sys.modules, "dlib", _FakeDlib(boxes))
    labels = pseudo.onnx_pseudo_labels(cfg, progress=False)
    assert labels["images"].shape == (3, 96, 96, 3) and labels["points"].shape == (3, 68, 2)
    lo, hi = 48 - 32 * 1.2, 48 + 32 * 1.2  # the detector box lies about inside the crop square
    assert ((labels["points"] > lo) & (labels["points"] < hi)).all()
    assert np.ptp(labels["points"][0, :, 0]) > 10  # spread over the face, not one point


@pytest.mark.slow
def test_recover_a_checkpoint_from_a_shipped_file(tmp_path: Path) -> None:
    """export.from_onnx: a format-1 or format-2 file (fp32, or int8 QDQ) back to trainable weights.
    The recovered model computes the file's network in evaluation; its BatchNorm statistics are
    those of the calibration batch, so in training mode on that batch it computes the same; a file
    of another shape is refused."""
    from export.from_onnx import recover
    from export.to_onnx import export_model, metadata, quantize
    from export.train import build_model, load_config

    cfg = load_config(None, {"name": "t", "width": 0.25, "input_size": 64})
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    for m in model.modules():  # BatchNorms that do something, so that folding them matters
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.2)
            m.running_mean.normal_(0, 0.3)
            m.running_var.uniform_(0.5, 2.0)
    for head in (model.score, model.offset_x, model.neighbor_y):
        torch.nn.init.normal_(head.weight, std=0.05)
    mean = np.random.RandomState(0).uniform(0.2, 0.8, (68, 2)).astype(np.float32)
    meta = metadata(cfg, mean, neighbor_indices(mean, 10))
    fp32 = export_model(model, meta, tmp_path / "m.onnx", decoded=False)
    calib = torch.randn(8, 3, 64, 64)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        want = model(x)
        back, back_meta = recover(fp32, cfg, calib)
        for a, b in zip(back.eval()(x), want):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
        on_calib = back(calib)
        for a, b in zip(back.train()(calib), on_calib):
            torch.testing.assert_close(a, b, atol=2e-3, rtol=2e-3)
    np.testing.assert_array_equal(back_meta["neighbor_indices"], meta["neighbor_indices"])
    # int8: the same network up to the weights' rounding
    crops = np.random.RandomState(1).randint(0, 255, (8, 64, 64, 3), np.uint8)
    int8 = quantize(fp32, tmp_path / "m.int8.onnx", crops)
    with torch.no_grad():
        back8, _ = recover(int8, cfg, calib)
        got = back8.eval()(x)
    for a, b in zip(got, want):
        assert float((a - b).abs().max()) < 0.05 * float(b.abs().max())
    assert float((got[0] - want[0]).abs().max()) > 0  # the weights did come from the int8 tensors
    for other in ({"width": 0.5}, {"blocks": [1, 2, 2]}):
        with pytest.raises(ValueError, match="does not match"):
            recover(fp32, dict(cfg, **other), calib)
    # format 2 (as shipped): the stem back from SpaceToDepth + conv, the heads from the decoding's rows
    f2 = export_model(model, meta, tmp_path / "f2.onnx")
    assert "SpaceToDepth" in {n.op_type for n in onnx.load(str(f2)).graph.node}
    with torch.no_grad():
        back2, _ = recover(f2, cfg, calib)
        for a, b in zip(back2.eval()(x), want):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
        back2_8, _ = recover(quantize(f2, tmp_path / "f2.int8.onnx", crops), cfg, calib)
        for a, b in zip(back2_8.eval()(x), want):
            assert float((a - b).abs().max()) < 0.05 * float(b.abs().max())


def test_recover_a_learned_visibility_head(tmp_path: Path) -> None:
    """A file whose network learned visibility (its threshold moved by export.visibility) comes
    back with that head: the recovered network's visibility matches the file's output. A config
    without the head drops it; the file without the head, under a config with one, leaves the
    head as built."""
    from export.from_onnx import recover
    from export.to_onnx import export_model, metadata
    from export.train import build_model, load_config
    from export.visibility import shift_learned

    ort = pytest.importorskip("onnxruntime")
    cfg = load_config(None, {"name": "t", "width": 0.25, "input_size": 64, "visibility_weight": 0.2})
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    for head in (model.score, model.visibility):
        torch.nn.init.normal_(head.weight, std=0.05)
    torch.nn.init.normal_(model.visibility.bias, std=1.0)
    mean = np.random.RandomState(0).uniform(0.2, 0.8, (68, 2)).astype(np.float32)
    meta = metadata(cfg, mean, neighbor_indices(mean, 10))
    path = export_model(model, meta, tmp_path / "v.onnx")
    shifted = tmp_path / "v.shifted.onnx"
    onnx.save(shift_learned(onnx.load(str(path)), 0.8), str(shifted))
    x = torch.randn(2, 3, 64, 64)
    sess = ort.InferenceSession(str(shifted), providers=["CPUExecutionProvider"])
    want = sess.run(["visibility"], {sess.get_inputs()[0].name: x.numpy()})[0]
    calib = torch.randn(8, 3, 64, 64)
    with torch.no_grad():
        back, _ = recover(shifted, cfg, calib)
        heads = back.eval()(x)
        cell = heads[0].flatten(2).argmax(-1)
        got = torch.sigmoid(torch.gather(heads[5].flatten(2), 2, cell[..., None])[..., 0])
    np.testing.assert_allclose(got.numpy(), want, atol=1e-4)
    with torch.no_grad():
        unshifted = torch.sigmoid(torch.gather(model(x)[5].flatten(2), 2, cell[..., None])[..., 0])
    assert not np.allclose(want, unshifted.numpy(), atol=1e-2)  # the shift is in the file, and came back
    plain_cfg = dict(cfg, visibility_weight=0.0)
    assert recover(shifted, plain_cfg, calib)[0].visibility is None
    plain = build_model(plain_cfg).eval()
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("visibility.")})
    no_head = export_model(plain, meta, tmp_path / "plain.onnx")
    torch.manual_seed(1)
    fresh, _ = recover(no_head, cfg, calib)
    torch.manual_seed(1)
    built = build_model(cfg)
    torch.testing.assert_close(fresh.visibility.weight, built.visibility.weight)


def test_recover_leaves_a_fitted_visibility_branch_out(tmp_path: Path, random_model: Path) -> None:
    """A file with a visibility branch grafted by export.visibility (as the shipped files have)
    comes back as the network it was grafted on: the branch is not part of it. (It used to stop
    recovery with "does not match the config's model".)"""
    from export.from_onnx import recover
    from export.onnx_meta import file_metadata, save_with_metadata
    from export.train import load_config
    from export.visibility_branch import VisibilityBranch, graft_branch

    m = onnx.load(str(random_model))
    grafted = graft_branch(m, VisibilityBranch(64, 16, 68).eval(), 0.5)
    path = tmp_path / "grafted.onnx"
    meta = {**file_metadata(m), "visibility": {"fitted_on": "crops", "head": "branch"}}
    save_with_metadata(grafted, path, {**meta, "outputs": ["candidates", "scores", "visibility"]})
    cfg = load_config(
        None,
        {"name": "random", "scheme": "ibug68", "backbone": "resnet18", "stride": 16, "input_size": 64, "width": 0.25},
    )
    calib = torch.randn(8, 3, 64, 64)
    with torch.no_grad():
        want = recover(random_model, cfg, calib)[0].state_dict()
        got = recover(path, cfg, calib)[0].state_dict()
    assert set(got) == set(want)
    for k in want:
        torch.testing.assert_close(got[k], want[k])


@pytest.mark.slow
def test_gpu_run_trains_from_packed_crops_and_the_cpu_goes_on(tmp_path: Path, shared_dir: Path, monkeypatch) -> None:
    """export.gpu_run as the GPU machine runs it, here with --device cpu: the crops of a few faces
    packed, a first stage trained from the pack alone (no shared data) into small weights-only
    checkpoints, which load back here and let the recipe resume: the first stage is done (its
    schedule is the GPU run's, not the config's), the restart starts from its weights."""
    from export import gpu_run, recipe
    from export.checkpoint import load_checkpoint

    cfg = {
        "name": "tiny",
        "width": 0.25,
        "input_size": 64,
        "base_size": 96,
        "margin": 1.5,
        "batch_size": 8,
        "epochs": 3,
        "val_fraction": 0.2,
        "labeled": ["data/300w/train"],
        "restarts": [{"lr": 1e-3, "epochs": 1}],
    }
    conf, data, returned, run = tmp_path / "tiny.json", tmp_path / "data", tmp_path / "OUT", tmp_path / "run"
    conf.write_text(json.dumps(cfg))
    monkeypatch.setenv("PIPNET_SHARED", str(shared_dir))
    monkeypatch.setenv("PIPNET_CACHE", str(tmp_path / "cache"))
    gpu_run.main(["pack", "--config", str(conf), "--data", str(data), "--limit", "12", "--quiet"])
    monkeypatch.setenv("PIPNET_SHARED", str(tmp_path / "nowhere"))
    gpu_run.main(
        [
            "train",
            "--config",
            str(conf),
            "--data",
            str(data),
            "--limit",
            "12",
            "--out",
            str(returned),
            "--minutes",
            "2",
            "--epochs",
            "2",
            "--device",
            "cpu",
            "--quiet",
        ]
    )
    assert sorted(p.name for p in returned.iterdir()) == ["best.pt", "config.json", "last.pt", "log.txt"]
    last = torch.load(returned / "last.pt", weights_only=False)
    assert last["epoch"] == 1 and "opt" not in last
    assert json.loads((returned / "config.json").read_text())["max_minutes"]
    gpu_run.main(["fetch", str(returned), "--out", str(run / "teacher")])
    model, _, meta = load_checkpoint(run / "teacher" / "best.pt")
    assert len(meta["neighbor_indices"]) == 68
    parts = gpu_run.save_portable(run / "teacher" / "best.pt", tmp_path / "split.pt", max_mb=1.05)
    assert len(parts) > 1 and all(p.stat().st_size < 1.1e6 for p in parts)
    split = gpu_run.load_portable(tmp_path / "split.pt")["model"]
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in split.items() if not k.startswith("coarse."))
    monkeypatch.setenv("PIPNET_SHARED", str(shared_dir))
    monkeypatch.chdir(ROOT)
    recipe.main(["--config", str(conf), "--out", str(run), "--limit", "12", "--resume", "--skip-export", "--quiet"])
    report = json.loads((run / "report.json").read_text())
    assert report["teacher"] == {"epoch": 2, "best_val_nme": last["best"], "epochs": 2, "paused": False}
    assert report["restart1"]["epoch"] == 1
    assert json.loads((run / "restart1" / "config.json").read_text())["init"] == str(run / "teacher" / "best.pt")


@pytest.mark.slow
def test_a_long_schedule_trains_in_legs_on_the_cpu_and_a_gpu(tmp_path: Path, shared_dir: Path, monkeypatch) -> None:
    """A schedule longer than one sitting: the recipe's --stop-after pauses the first stage at an
    epoch end, handoff gives its weights to a GPU run (here --device cpu, no shared data) that goes
    on with the same schedule (not fitted to its minutes), fetch brings that back into the same
    folder (and refuses to go backwards), and the recipe's --resume finishes from there."""
    from types import SimpleNamespace

    import export.train
    from export import gpu_run, recipe
    from export.config import load_config
    from export.train import lr_at

    cfg = {
        "name": "tiny",
        "width": 0.25,
        "input_size": 64,
        "base_size": 96,
        "margin": 1.5,
        "batch_size": 8,
        "epochs": 5,
        "val_fraction": 0.2,
        "labeled": ["data/300w/train"],
        "restarts": [{"lr": 1e-3, "epochs": 1}],
    }
    conf, data, returned, run, hand = (tmp_path / n for n in ("tiny.json", "data", "OUT", "run", "resume"))
    conf.write_text(json.dumps(cfg))
    monkeypatch.setenv("PIPNET_SHARED", str(shared_dir))
    monkeypatch.setenv("PIPNET_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(ROOT)
    common = ["--config", str(conf), "--out", str(run), "--limit", "12", "--skip-export", "--quiet"]
    clock = iter(range(0, 10**6, 10))  # training's clock: 10 s a reading, so the pause does not hang on the CPU's speed
    with monkeypatch.context() as m:
        m.setattr(export.train, "time", SimpleNamespace(time=lambda: next(clock), ctime=time.ctime))
        recipe.main([*common, "--stop-after", "0.0001"])
    report = json.loads((run / "report.json").read_text())
    assert report["stopped_in"] == "teacher" and report["teacher"]["paused"]
    assert report["teacher"]["epoch"] == 1 and report["teacher"]["epochs"] == 5 and "restart1" not in report
    assert "stopped after" in (run / "teacher" / "log.txt").read_text()
    gpu_run.main(["pack", "--config", str(conf), "--data", str(data), "--limit", "12", "--quiet"])
    gpu_run.main(["handoff", str(run / "teacher"), "--to", str(hand)])
    assert "opt" not in torch.load(hand / "last.pt", weights_only=False)  # AdamW's state travels beside it
    handed = gpu_run.load_portable(hand / "last.pt")["opt"]
    cpu_leg = torch.load(run / "teacher" / "last.pt", weights_only=False)["opt"]
    assert handed["param_groups"] == cpu_leg["param_groups"] and handed["state"].keys() == cpu_leg["state"].keys()
    assert all(
        torch.equal(v, cpu_leg["state"][i][k].bfloat16().float())
        for i, s in handed["state"].items()
        for k, v in s.items()
    )  # the moments travel in bfloat16
    with pytest.raises(FileExistsError, match="--resume"):  # the same command without --resume keeps the run
        recipe.main(common)
    monkeypatch.setenv("PIPNET_SHARED", str(tmp_path / "nowhere"))
    monkeypatch.setattr(gpu_run, "PROCESS_START", time.time())  # --minutes counts from the command's start
    gpu_run.main(
        [
            "train",
            "--config",
            str(conf),
            "--data",
            str(data),
            "--limit",
            "12",
            "--out",
            str(returned),
            "--minutes",
            "3",
            "--device",
            "cpu",
            "--resume-from",
            str(hand),
            "--quiet",
        ]
    )
    lines = [json.loads(x) for x in (returned / "log.txt").read_text().splitlines() if x.startswith("{")]
    assert [x["epoch"] for x in lines] == [2, 3, 4, 5]  # the rest of the 5-epoch schedule, not fitted to 3 minutes
    assert lines[0]["lr"] == round(lr_at(load_config(str(conf), {}), 2), 7)
    assert json.loads((returned / "config.json").read_text())["max_minutes"] is None
    (run / "teacher" / "train.lock").write_text(str(os.getpid()))  # a live process training that folder
    with pytest.raises(RuntimeError, match="stop it first"):
        gpu_run.main(["fetch", str(returned), "--out", str(run / "teacher")])
    (run / "teacher" / "train.lock").unlink()
    assert {p.name for p in returned.iterdir()} - {"best.pt"} == {"config.json", "last.opt.pt", "last.pt", "log.txt"}
    gpu_run.main(["fetch", str(returned), "--out", str(run / "teacher")])
    fetched = torch.load(run / "teacher" / "last.pt", weights_only=False)
    assert fetched["epoch"] == 4
    # one AdamW went through both legs: its step count is every step of the 5 epochs (a fresh
    # optimizer at the handoff would have counted only the GPU leg's)
    assert {float(s["step"]) for s in fetched["opt"]["state"].values()} == {5.0 * (10 // 8)}
    assert (run / "teacher" / "log.txt").read_text().count("start=") == 2  # both legs' logs
    with pytest.raises(ValueError, match="not newer"):
        gpu_run.main(["fetch", str(returned), "--out", str(run / "teacher")])
    monkeypatch.setenv("PIPNET_SHARED", str(shared_dir))
    recipe.main([*common, "--resume"])
    report = json.loads((run / "report.json").read_text())
    assert report["teacher"]["epoch"] == 5 and report["restart1"]["epoch"] == 1 and "stopped_in" not in report


def test_fetch_keeps_the_better_best_and_with_no_validation_the_newer(tmp_path: Path) -> None:
    """fetch into a folder a leg was handed off from: the returned best.pt replaces the folder's
    only when its validation NME is lower, or when there is no validation (NME inf: the newest
    epoch is the best)."""
    from export import gpu_run

    def ckpt(epoch: int, best: float) -> dict:
        return {"model": {"w": torch.full((2,), float(epoch))}, "config": {}, "meta": {}, "epoch": epoch, "best": best}

    for here_best, back_best, taken in ((3.5, 3.6, False), (3.5, 3.4, True), (math.inf, math.inf, True)):
        run, back = tmp_path / f"run{back_best}", tmp_path / f"back{back_best}"
        run.mkdir(), back.mkdir()
        for folder, epoch, best in ((run, 9, here_best), (back, 19, back_best)):
            torch.save(ckpt(epoch, best), folder / "last.pt")
            torch.save(ckpt(epoch, best), folder / "best.pt")
        gpu_run.fetch(back, run)
        assert torch.load(run / "last.pt", weights_only=False)["epoch"] == 19
        assert torch.load(run / "best.pt", weights_only=False)["epoch"] == (19 if taken else 9)


def test_the_optimizer_state_travels_split_within_the_file_limits(tmp_path: Path) -> None:
    """AdamW's state beside a portable checkpoint: split into parts like the weights, read back
    (its moments rounded to bfloat16: the size of the weights), refused when it is of another
    epoch than the weights beside it or a part is missing, and left out of a GPU leg's returned
    files, then best.pt too, when they would pass --max-files (8 by default)."""
    from export import gpu_run

    model = torch.nn.Sequential(torch.nn.Linear(400, 400), torch.nn.Linear(400, 68))
    opt = torch.optim.AdamW(model.parameters())
    model(torch.randn(4, 400)).square().mean().backward()
    opt.step()
    full = {"model": model.state_dict(), "opt": opt.state_dict(), "config": {}, "meta": {}, "epoch": 7, "best": 3.5}
    torch.save(full, tmp_path / "full.pt")
    out = tmp_path / "OUT"
    out.mkdir()
    written = gpu_run.save_portable(tmp_path / "full.pt", out / "last.pt", max_mb=1.6, optimizer=True)
    assert [p.name for p in written] == ["last.part0.pt", "last.part1.pt", "last.opt.part0.pt", "last.opt.part1.pt"]
    back = gpu_run.load_portable(out / "last.pt")["opt"]
    assert back["param_groups"] == full["opt"]["param_groups"]
    assert all(
        torch.equal(v, full["opt"]["state"][i][k].bfloat16().float())
        for i, s in back["state"].items()
        for k, v in s.items()
    )  # the moments in bfloat16, step counts exact
    assert all(v.dtype == torch.float32 for s in back["state"].values() for v in s.values())
    (out / "log.txt").write_text("")
    assert gpu_run.trim_to_limit(out) == []  # 5 files
    best = [out / f"best.part{i}.pt" for i in range(4)]
    for p in best:
        p.write_text("")
    assert gpu_run.trim_to_limit(out, max_files=0) == [] and len(list(out.iterdir())) == 9  # 0: no limit
    assert gpu_run.trim_to_limit(out) == ["last.opt.part0.pt", "last.opt.part1.pt"]  # 9 with it
    assert sorted(p.name for p in out.glob("last*")) == ["last.part0.pt", "last.part1.pt"]
    for i in range(4, 7):
        best.append(out / f"best.part{i}.pt")
        best[-1].write_text("")
    assert len(gpu_run.trim_to_limit(out)) == 7  # then best.pt: fetch keeps the folder's
    assert sorted(p.name for p in out.iterdir()) == ["last.part0.pt", "last.part1.pt", "log.txt"]
    assert "opt" not in gpu_run.load_portable(out / "last.pt")
    gpu_run.save_portable(tmp_path / "full.pt", out / "last.pt", max_mb=1.6, optimizer=True)
    torch.save(dict(full, epoch=8), tmp_path / "newer.pt")
    gpu_run.save_portable(tmp_path / "newer.pt", out / "last.pt", max_mb=1.6)  # weights moved on, optimizer not
    with pytest.raises(ValueError, match="stale optimizer state"):
        gpu_run.load_portable(out / "last.pt")
    (out / "last.part1.pt").unlink()  # a part that did not arrive
    with pytest.raises(ValueError, match="1 of its 2 parts"):
        gpu_run.load_portable(out / "last.pt")


def test_a_weights_only_checkpoint_inside_the_averaging_window_is_refused(tmp_path: Path) -> None:
    """ "average_last" needs the running average: a leg resumed from weights alone (a handoff)
    inside the averaged epochs is refused with a message, before it is an hour in; before the
    window it goes on. fetch refuses a GPU leg that stopped inside the window, leaving the
    folder's resumable last.pt as it was."""
    from types import SimpleNamespace

    from export import gpu_run
    from export.train import restore

    model = torch.nn.Linear(2, 2)
    cfg = {"epochs": 10, "average_last": 3, "seed": 0}
    for epoch, ok in ((5, True), (6, True), (7, False)):  # epochs 7, 8, 9 (0-based) are averaged
        run = SimpleNamespace(model=model, opt=None, gen=torch.Generator(), cfg=dict(cfg), dev=torch.device("cpu"))
        resumed = {"model": model.state_dict(), "epoch": epoch, "best": 3.5, "config": {}}
        if ok:
            assert restore(run, resumed)[0] == epoch + 1
        else:
            with pytest.raises(ValueError, match="average_last"):
                restore(run, resumed)
    here, back = tmp_path / "run", tmp_path / "OUT"
    here.mkdir(), back.mkdir()
    torch.save({"model": model.state_dict(), "epoch": 5, "best": 3.5, "config": cfg, "meta": {}}, here / "last.pt")
    torch.save({"model": model.state_dict(), "epoch": 7, "best": 3.5, "config": cfg, "meta": {}}, back / "last.pt")
    with pytest.raises(ValueError, match="inside the last 3 epochs"):
        gpu_run.fetch(back, here)
    assert torch.load(here / "last.pt", weights_only=False)["epoch"] == 5


def test_a_resume_with_another_schedule_is_refused() -> None:
    """A leg resumed with a config that differs from its checkpoint's (another learning rate,
    epoch count, augmentation or validation split) is refused with the keys named; the same
    config goes on, and so does a schedule that a time budget fitted, leg after leg (its epochs
    are the checkpoint's)."""
    from types import SimpleNamespace

    from export.config import load_config
    from export.train import check_resumable_config, restore

    cfg = load_config(None, {"epochs": 600, "lr": 2e-3, "augment": {"p_blur": 0.3}})
    check_resumable_config({"config": cfg}, dict(cfg, threads=2, name="other"))
    for changes, named in (
        ({"lr": 1e-3}, "lr: 0.002 there, 0.001 here"),
        ({"epochs": 300}, "epochs"),
        ({"augment": {}}, "augment"),
        ({"val_fraction": 0.2}, "val_fraction"),
    ):
        with pytest.raises(ValueError, match=named):
            check_resumable_config({"config": cfg}, dict(cfg, **changes))
    model = torch.nn.Linear(2, 2)
    ck = {
        "model": model.state_dict(),
        "epoch": 120,
        "best": 4.0,
        "config": dict(cfg, epochs=135, max_minutes=8.0),
    }  # a GPU run fitted 135 epochs into its minutes
    for _leg in range(3):  # then CPU legs, each resumed from the one before, with the config's 600
        check_resumable_config(ck, cfg)
        run = SimpleNamespace(
            model=model, opt=None, gen=torch.Generator(), dev=torch.device("cpu"), cfg=dict(cfg), fitted=False
        )
        restore(run, ck)
        assert run.cfg["epochs"] == 135 and run.fitted
        ck = dict(ck, config=run.cfg, fitted=run.fitted)  # what save_checkpoints writes
    with pytest.raises(ValueError, match="epochs"):  # unfitted, 135 epochs are not the config's 600
        check_resumable_config(dict(ck, fitted=False), cfg)


def test_labeled_faces_from_a_list_file(tmp_path: Path, shared_dir: Path, monkeypatch) -> None:
    """A "labeled" entry may be a landmark list file ({"list", "images", "layout"}): the same
    faces, points and validation split as the folder it lists."""
    from export.data import read_pts_folder
    from export.train import labeled_faces, load_config

    monkeypatch.setenv("PIPNET_SHARED", str(shared_dir))
    root = shared_dir / "data" / "300w" / "train"
    faces = read_pts_folder(root)[:8]
    lines = [" ".join([str(Path(s.image).relative_to(root))] + [f"{v:.3f}" for v in s.points.ravel()]) for s in faces]
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    entry = {"list": str(tmp_path / "list.txt"), "images": "data/300w/train", "layout": "name_first"}
    common = {"limit": 8, "val_fraction": 0.5}
    from_list = labeled_faces(load_config(None, {**common, "labeled": [entry], "val_from": entry}))
    from_folder = labeled_faces(load_config(None, {**common, "labeled": ["data/300w/train"]}))
    for got, want in zip(from_list, from_folder):
        assert [s.image for s in got] == [s.image for s in want] and len(want)
        np.testing.assert_allclose(np.array([s.points for s in got]), np.array([s.points for s in want]), atol=1e-3)


def test_time_budget_fits_the_schedule_then_stops(tmp_path: Path) -> None:
    """ "max_minutes": the first epoch's time sets the epoch count; a budget spent with epochs left
    stops the run."""
    import io
    from types import SimpleNamespace

    from export.train import apply_time_budget

    run, log = SimpleNamespace(cfg={"max_minutes": 1.0, "epochs": 100}), io.StringIO()
    assert not apply_time_budget(run, tmp_path, log, 1, 2.0, 2.0)  # 60 s at 2 s an epoch
    assert run.cfg["epochs"] == 30 and json.loads((tmp_path / "config.json").read_text())["epochs"] == 30
    assert not apply_time_budget(run, tmp_path, log, 2, 2.0, 59.0)
    assert apply_time_budget(run, tmp_path, log, 3, 2.0, 61.0)
    assert not apply_time_budget(run, tmp_path, log, 30, 2.0, 70.0)  # nothing left to stop
    assert "epochs set to 30" in log.getvalue() and "spent after epoch 3" in log.getvalue()


def test_motion_blur_and_low_light_augmentations() -> None:
    """p_motion_blur streaks the crops along one line and p_low_light darkens them; neither moves
    the landmarks (the geometry is the same as without them)."""
    from export.augment import AugmentConfig, augment

    rng = np.random.RandomState(0)
    images = torch.from_numpy(rng.randint(0, 255, (8, 3, 80, 80)).astype(np.uint8))
    points = torch.from_numpy(rng.uniform(20, 60, (8, 68, 2)).astype(np.float32))
    flip = torch.arange(68)
    plain_cfg = AugmentConfig(p_blur=0, p_gray=0, p_occlude=0, noise=0, brightness=0, contrast=0)
    runs = {}
    for name, extra in (("plain", {}), ("streak", {"p_motion_blur": 1.0}), ("dark", {"p_low_light": 1.0})):
        cfg = AugmentConfig(**{**plain_cfg.__dict__, **extra})
        runs[name] = augment(images, points, 64, 1.25, flip, cfg, torch.Generator().manual_seed(1))
    for name in ("streak", "dark"):
        torch.testing.assert_close(runs[name][1], runs["plain"][1])
    x, streak, dark = runs["plain"][0], runs["streak"][0], runs["dark"][0]
    assert streak.std() < 0.8 * x.std()  # random pixels averaged along the streak
    assert dark.mean() < 0.6 * x.mean()


def test_motion_blur_runs_along_its_angle() -> None:
    """A streak at angle 0 smears a dot along x only, one at pi/2 along y only, and keeps its sum."""
    from export.augment import motion_blur

    dot = torch.zeros(1, 1, 21, 21)
    dot[0, 0, 10, 10] = 1.0
    for angle, axis in ((0.0, 1), (math.pi / 2, 0)):
        out = motion_blur(dot, 9.0, angle)[0, 0]
        rows, cols = torch.nonzero(out > 1e-3, as_tuple=True)
        along, across = (cols, rows) if axis == 1 else (rows, cols)
        assert along.max() - along.min() >= 8 and across.max() == across.min() == 10
        assert abs(float(out.sum()) - 1.0) < 1e-5


@pytest.mark.slow
def test_resume_after_a_kill_gives_the_uninterrupted_run(tmp_path: Path, shared_dir: Path, monkeypatch) -> None:
    """A run stopped after its second of four epochs and resumed ends with the same weights as the
    run that was never stopped: the generators of both the crop draws and the pixel noise are
    saved in last.pt (and best.pt / last.pt are never left half-written)."""
    import torch

    import export.train as T

    monkeypatch.setenv("PIPNET_SHARED", str(shared_dir))
    monkeypatch.setenv("PIPNET_CACHE", str(tmp_path / "cache"))
    cfg = T.load_config(
        None,
        {
            "width": 0.25,
            "input_size": 64,
            "base_size": 96,
            "margin": 1.5,
            "batch_size": 16,
            "limit": 24,
            "val_fraction": 0.2,
            "epochs": 4,
            "threads": 1,
        },
    )
    T.train(cfg, tmp_path / "whole", device="cpu", progress=False)
    real_save = T.save_checkpoints

    def killed_after_second(run, out, epoch, *args):
        best = real_save(run, out, epoch, *args)
        if epoch == 1:
            raise KeyboardInterrupt("simulated kill")
        return best

    monkeypatch.setattr(T, "save_checkpoints", killed_after_second)
    with pytest.raises(KeyboardInterrupt):
        T.train(cfg, tmp_path / "cut", device="cpu", progress=False)
    monkeypatch.setattr(T, "save_checkpoints", real_save)
    T.train(cfg, tmp_path / "cut", resume=True, device="cpu", progress=False)
    whole, cut = (torch.load(tmp_path / r / "last.pt", weights_only=False) for r in ("whole", "cut"))
    assert whole["epoch"] == cut["epoch"] == 3
    for key, value in whole["model"].items():
        torch.testing.assert_close(cut["model"][key], value, rtol=0, atol=0, msg=key)
    assert not list((tmp_path / "cut").glob("*.tmp"))


@pytest.mark.parametrize(
    "bad, words",
    [
        ({"restarts": [{"lr": 1e-3, "epoch": 90}]}, "restart1: unknown keys ['epoch']"),
        ({"restarts": [{"lr": 1e-3}]}, 'restart1 needs "epochs"'),
        ({"schedule": "cosin"}, "schedule must be one of"),
        ({"optimizer": "sgd"}, "optimizer must be one of"),
        ({"augment": {"p_blurr": 0.3}}, "augment takes a dict with keys from"),
        ({"stc": {"techer": "x.pt"}}, "stc takes a dict"),
        ({"restarts": [{"epochs": 2, "pseudo_labels": {"teachr": "restart1"}}]}, "pseudo_labels takes a dict"),
    ],
)
def test_config_mistakes_are_caught_on_loading(bad: dict, words: str) -> None:
    """Every level of a config is checked when it is read, before any crop is cut or epoch trained."""
    from export.config import load_config

    with pytest.raises(ValueError) as info:
        load_config(None, bad)
    assert words in str(info.value)


def test_recipe_checks_the_files_it_needs_before_any_work(tmp_path: Path, monkeypatch) -> None:
    """A missing STC teacher, or a pseudo-label teacher that is neither a file nor an earlier stage,
    stops the recipe before its first stage trains."""
    import export.recipe as R

    monkeypatch.setattr(R, "train", lambda *a, **k: pytest.fail("a stage trained"))
    for extra, words in (
        ({"stc": {"teacher": str(tmp_path / "none.pt")}}, "stc teacher"),
        ({"restarts": [{"epochs": 1, "pseudo_labels": {"teacher": "restart1"}}]}, "pseudo_labels teacher"),
    ):
        conf = tmp_path / "c.json"
        conf.write_text(json.dumps(extra))
        with pytest.raises(FileNotFoundError, match=words):
            R.main(["--config", str(conf), "--out", str(tmp_path / "run"), "--quiet"])


@pytest.mark.slow
def test_the_shipping_comparison_needs_a_real_gain(tmp_path: Path, shared_dir: Path, monkeypatch) -> None:
    """export.compare on real validation faces: blur and a covered lower face cost the shipped model
    accuracy, a file no better than the shipped one does not ship, each clause of the rule decides,
    and files of another input size are refused."""
    from export.compare import blurred, compare, covered, judge, report
    from export.config import load_config

    monkeypatch.setenv("PIPNET_SHARED", str(shared_dir))
    monkeypatch.setenv("PIPNET_CACHE", str(tmp_path / "cache"))
    cfg = load_config(
        ROOT / "export" / "configs" / "pipnet-fast-0.6.json",
        {"labeled": ["data/300w/train"], "limit": 40, "val_fraction": 0.5},
    )
    fast, r18 = (str(ROOT / "pipnet_sdk" / "models" / f"{m}.onnx") for m in ("pipnet-fast", "pipnet-r18"))
    r = compare(fast, fast, cfg, limit=12, timing_crops=4)
    assert r["faces"] == 12 and r["paired_clean"] == (0.0, 0.0) and r["paired_blurred"] == (0.0, 0.0)
    assert r["paired_covered"] == (0.0, 0.0)
    assert r["nme_blurred"][fast] > r["nme_clean"][fast] > 0
    assert r["nme_covered"][fast] > r["nme_clean"][fast]
    assert "lower covered" in report(r)
    assert not r["verdict"]["ships"] and not r["verdict"]["clean: better by more than one SE"]
    assert "DOES NOT SHIP" in report(r)
    crops = np.full((2, 32, 32, 3), 0, np.uint8)
    crops[:, :, 16:] = 255
    soft = blurred(crops)
    assert soft.shape == crops.shape and 0 < soft[0, 16, 15, 0] < 255 and (soft[:, :, :8] == 0).all()
    points = np.tile(np.array([[0.3, 0.2], [0.7, 0.2], [0.5, 0.6], [0.5, 0.9]], np.float32), (2, 1, 1))
    hidden = covered(np.zeros((2, 40, 40, 3), np.uint8), points)
    band = hidden[0].any(-1)  # landmark box x 12..28, y 8..36: the band from y 8 + 0.55 * 28 to past 36
    assert band[24:37, 12:28].all() and not band[:23].any() and not band[:, :9].any() and not band[39:].any()
    even = (0.0, 0.02)
    assert judge((-0.03, 0.02), (0.01, 0.02), even, 1.01)["ships"]
    assert not judge((-0.01, 0.02), even, even, 1.0)["ships"]  # inside one SE: no gain
    assert not judge((-0.03, 0.02), (0.05, 0.02), even, 1.0)["ships"]  # worse under blur
    assert not judge((-0.03, 0.02), even, (0.05, 0.02), 1.0)["ships"]  # worse with the lower face covered
    assert not judge((-0.03, 0.02), even, even, 1.06)["ships"]  # slower
    with pytest.raises(ValueError, match="input size, crop"):
        compare(fast, r18, cfg)
    with pytest.raises(ValueError, match="input size, crop"):  # crops framed otherwise than the files
        compare(fast, fast, dict(cfg, crop={"scale": 1.3, "shift_y": 0.12}))


def test_the_learning_curve_reads_resumed_logs_and_draws_the_stages(tmp_path: Path) -> None:
    """export.curve: an epoch a resumed leg logged again counts once (its later record),
    comment lines are skipped, the running median follows the trend, and the picture is drawn."""
    import cv2

    from export.curve import plot_curve, read_log, running_median, stage_offsets

    run = tmp_path / "teacher"
    run.mkdir()
    lines = [
        "# started",
        *[json.dumps({"epoch": e, "nme": 5.0 - e * 0.1, "lr": 1e-3}) for e in (1, 2, 3)],
        "# stopped after 1 min at epoch 3; --resume goes on",
        json.dumps({"epoch": 3, "nme": 4.5, "lr": 9e-4}),
        json.dumps({"epoch": 4, "nme": 4.4, "lr": 8e-4}),
    ]
    (run / "log.txt").write_text("\n".join(lines) + "\n")
    records = read_log(run)
    assert [r["epoch"] for r in records] == [1, 2, 3, 4] and records[2]["nme"] == 4.5
    np.testing.assert_allclose(running_median(np.array([1.0, 9.0, 2.0, 3.0, 4.0]), 3), [5.0, 2.0, 3.0, 3.0, 3.5])
    with pytest.raises(FileNotFoundError, match="no training log"):
        read_log(tmp_path / "missing")
    two = {"teacher": records, "restart1": [{"epoch": 1, "nme": 4.2, "lr": 5e-4}]}
    img = cv2.imread(str(plot_curve(two, tmp_path / "c.png")))
    assert img is not None and img.shape[0] > 300 and img.std() > 10
    assert stage_offsets(two) == [0, 4] and stage_offsets(two, overlay=True) == [0, 0]
    assert cv2.imread(str(plot_curve(two, tmp_path / "o.png", overlay=True))) is not None
