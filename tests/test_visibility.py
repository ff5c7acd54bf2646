"""Per-point visibility: occluder labels in training, the network's sixth head in the shipped
graph, a visibility output grafted onto a trained file, and Face.visibility / occluded."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from export.augment import AugmentConfig, augment_with_visibility  # noqa: E402
from pipnet_sdk import Landmarker  # noqa: E402
from pipnet_sdk.types import Face  # noqa: E402


def test_points_under_the_occluder_are_labeled_hidden() -> None:
    """On black crops with a flat occluder and nothing else, a point is hidden exactly where the
    crop is no longer black, or when it lies outside the crop."""
    rng = np.random.default_rng(0)
    images = torch.zeros(64, 3, 80, 80, dtype=torch.uint8)
    points = torch.from_numpy(rng.uniform(-5, 85, (64, 68, 2)).astype(np.float32))
    cfg = AugmentConfig(
        p_rotate=0,
        scale=0,
        shift=0,
        p_flip=0,
        p_occlude=1.0,
        occlude_max=0.6,
        p_blur=0,
        p_gray=0,
        brightness=0,
        contrast=0,
        noise=0,
        p_occlude_ellipse=0.5,
    )
    x, p, visible = augment_with_visibility(
        images, points, 64, 1.25, torch.arange(68), cfg, torch.Generator().manual_seed(0)
    )
    inside = ((p >= 0) & (p < 1)).all(-1)
    cell = (p.clamp(0, 0.999) * 64).long()
    covered = x.amax(1)[torch.arange(64)[:, None], cell[..., 1], cell[..., 0]] > 0
    assert torch.equal(visible.bool(), inside & ~covered)
    assert 0.1 < float(visible.mean()) < 0.9  # both kinds occur
    _, _, all_seen = augment_with_visibility(images, points, 64, 1.25, torch.arange(68), cfg, train=False)
    assert torch.equal(all_seen.bool(), inside)  # no occluder outside training


def test_light_occluders_are_near_white() -> None:
    """p_occlude_light draws that share of the flat occluders near white (a surgical mask), and
    the points under them are labeled hidden."""
    images = torch.zeros((64, 3, 80, 80), dtype=torch.uint8)  # black faces: the occluder is what is not black
    points = torch.from_numpy(np.random.default_rng(0).uniform(10, 70, (64, 68, 2)).astype(np.float32))
    plain = dict(p_rotate=0, scale=0, shift=0, p_flip=0, p_occlude=1.0, occlude_max=0.6, p_blur=0, p_gray=0)
    cfg = AugmentConfig(**plain, brightness=0, contrast=0, noise=0, p_occlude_light=1.0)
    x, p, visible = augment_with_visibility(
        images, points, 64, 1.25, torch.arange(68), cfg, torch.Generator().manual_seed(0)
    )
    covered = (x > 0.001).any(1)
    darkest = [float(x[i][:, covered[i]].min()) for i in range(len(x)) if covered[i].any()]
    assert len(darkest) > 40 and min(darkest) >= 0.92 - 1e-6
    inside = ((p >= 0) & (p < 1)).all(-1)
    cell = (p.clamp(0, 0.999) * 64).long()
    under = covered[torch.arange(64)[:, None], cell[..., 1], cell[..., 0]]
    assert torch.equal(visible.bool(), inside & ~under)


@pytest.mark.parametrize("kind", ["p_occlude_bar", "p_occlude_edge"])
def test_bars_and_edges_hide_what_they_cover(kind: str) -> None:
    """A bar at any angle and a cut from a side of the crop (the image's edge, black as the SDK
    pads past it): a point is hidden exactly where the crop is no longer white, or outside it.
    Bars are long and thin; edges reach a side of the crop and are black."""
    rng = np.random.default_rng(1)
    images = torch.full((64, 3, 80, 80), 255, dtype=torch.uint8)
    points = torch.from_numpy(rng.uniform(-5, 85, (64, 68, 2)).astype(np.float32))
    plain = dict(p_rotate=0, scale=0, shift=0, p_flip=0, p_occlude=1.0, occlude_max=0.6, p_blur=0, p_gray=0)
    cfg = AugmentConfig(**plain, brightness=0, contrast=0, noise=0, **{kind: 1.0})
    x, p, visible = augment_with_visibility(
        images, points, 64, 1.25, torch.arange(68), cfg, torch.Generator().manual_seed(0)
    )
    inside = ((p >= 0) & (p < 1)).all(-1)
    cell = (p.clamp(0, 0.999) * 64).long()
    covered = (x < 0.999).any(1)  # (B, S, S)
    under = covered[torch.arange(64)[:, None], cell[..., 1], cell[..., 0]]
    assert torch.equal(visible.bool(), inside & ~under)
    assert 0.05 < float(1 - visible.mean()) < 0.9
    for i in range(64):
        ys, xs = np.nonzero(covered[i].numpy())
        if not len(ys):
            continue
        if kind == "p_occlude_edge":
            assert float(x[i][:, covered[i]].max()) == 0.0  # black
            assert xs.min() == 0 or ys.min() == 0 or xs.max() == 63 or ys.max() == 63  # from a side
            assert len(ys) == (xs.max() - xs.min() + 1) * (ys.max() - ys.min() + 1)  # a band, whole
        else:
            spread = np.linalg.eigvalsh(np.cov(np.stack([xs, ys]).astype(float)) + 1e-6 * np.eye(2))
            assert len(ys) < 30 or spread[1] > 2 * spread[0]  # longer than wide


def _model_with_visibility(tmp_path: Path, bias: float) -> Path:
    from export.config import build_model, load_config
    from export.data import neighbor_indices
    from export.to_onnx import export_model, metadata

    torch.manual_seed(0)
    cfg = load_config(
        None,
        {
            "name": "vis",
            "backbone": "resnet18",
            "width": 0.25,
            "input_size": 64,
            "stride": 16,
            "visibility_weight": 0.2,
        },
    )
    model = build_model(cfg)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_var.fill_(1.0)
    torch.nn.init.normal_(model.score.weight, std=0.05)
    torch.nn.init.zeros_(model.visibility.weight)
    torch.nn.init.constant_(model.visibility.bias, bias)
    model.visibility.bias.data[0] = -bias  # point 0 hidden, the others seen
    mean = np.random.default_rng(0).uniform(0.2, 0.8, (68, 2)).astype(np.float32)
    return export_model(model, metadata(cfg, mean, neighbor_indices(mean, 10)), tmp_path / "vis.onnx")


def test_dark_occluders_are_near_black() -> None:
    """p_occlude_dark draws that share of the flat occluders near black (a uniform colour almost
    never is), and the points under them are labeled hidden all the same."""
    images = torch.full((64, 3, 80, 80), 255, dtype=torch.uint8)  # white faces: the occluder is what is not white
    points = torch.from_numpy(np.random.default_rng(0).uniform(10, 70, (64, 68, 2)).astype(np.float32))
    plain = dict(p_rotate=0, scale=0, shift=0, p_flip=0, p_occlude=1.0, occlude_max=0.6, p_blur=0, p_gray=0)
    plain.update(brightness=0, contrast=0, noise=0)

    def fills(dark: float) -> tuple[np.ndarray, float]:
        cfg = AugmentConfig(**plain, p_occlude_dark=dark)
        x, p, visible = augment_with_visibility(
            images, points, 64, 1.25, torch.arange(68), cfg, torch.Generator().manual_seed(0)
        )
        covered = (x < 0.999).any(1)  # (B, S, S)
        per_crop = np.array([float(x[i][:, covered[i]].max()) if covered[i].any() else np.nan for i in range(len(x))])
        hidden_share = float((visible < 0.5).float().mean())
        return per_crop[~np.isnan(per_crop)], hidden_share

    dark, hidden_dark = fills(1.0)
    light, hidden_light = fills(0.0)
    assert len(dark) > 40 and (dark <= 0.08 + 1e-6).all()
    assert np.median(light) > 0.5
    assert hidden_dark > 0.05 and hidden_light > 0.05


def test_a_network_with_a_visibility_head_ships_it(tmp_path: Path, samples: Path) -> None:
    path = _model_with_visibility(tmp_path, 3.0)
    lm = Landmarker(model=path, threads=1)
    assert lm.model.has_visibility
    faces = lm.detect(samples / "group_2.jpg")
    assert len(faces) == 4
    for f in faces:
        assert f.visibility.shape == (68,) and f.visibility.dtype == np.float32
        np.testing.assert_allclose(f.visibility[1:], 1 / (1 + np.exp(-3.0)), rtol=1e-5)
        assert f.occluded[0] and not f.occluded[1:].any()
    flipped = Landmarker(model=path, threads=1, flip_test=True, test_crops=3).detect(samples / "group_2.jpg")
    assert flipped[0].visibility.shape == (68,)


def test_a_file_without_visibility_says_none(random_model: Path, samples: Path) -> None:
    face = Landmarker(model=random_model, threads=1, upright=False).detect(samples / "group_2.jpg")[0]
    assert face.quality is None
    assert face.visibility is None and face.occluded is None
    d = face.to_dict()
    assert d["visibility"] is None and d["occluded"] is None


def test_grafted_visibility_leaves_the_landmarks_alone(tmp_path: Path, random_model: Path, samples: Path) -> None:
    """export.visibility.graft adds the output to a trained file: its landmarks and scores stay
    bit for bit, the new output is the logistic rows on the features its decoding reads."""
    import onnx

    from export.visibility import feature_tensor, graft

    m = onnx.load(str(random_model))
    assert feature_tensor(m)
    dim = next(i for i in m.graph.initializer if i.name == "weight").dims[1]
    bias = np.full(68, 2.0, np.float32)
    bias[5] = -2.0
    out = graft(random_model, np.zeros((68, dim + 1), np.float32), bias, tmp_path / "grafted.onnx", {"version": "9.9"})
    a, b = Landmarker(model=random_model, threads=1), Landmarker(model=out, threads=1)
    assert b.model.spec.version == "9.9" and not a.model.has_visibility and b.model.has_visibility
    fa, fb = a.detect(samples / "group_2.jpg"), b.detect(samples / "group_2.jpg")
    assert len(fa) == len(fb) > 0
    for x, y in zip(fa, fb):
        np.testing.assert_array_equal(x.landmarks, y.landmarks)
        np.testing.assert_array_equal(x.landmark_scores, y.landmark_scores)
        assert list(np.flatnonzero(y.occluded)) == [5]
    with pytest.raises(ValueError, match="already has"):
        graft(out, np.zeros((68, dim + 1), np.float32), bias, tmp_path / "twice.onnx", {})


def _branch_inputs(path: Path, crops: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The file's network input for uint8 crops, and what its graph gives the visibility branch
    there (export.visibility_branch.INPUTS), in float32 as the graph computes it."""
    import onnx

    from export.visibility_branch import INPUTS, branch_sources, with_sources
    from pipnet_sdk.landmark_model import LandmarkModel
    from pipnet_sdk.runtime import make_session

    m = onnx.load(str(path))
    lm = LandmarkModel(path, threads=1)
    x = lm.preprocess(crops)
    session = make_session(path, threads=1, data=with_sources(m, branch_sources(m)))
    return x, dict(zip(INPUTS, session.run(list(INPUTS), {lm.input_name: x})))


def test_a_grafted_branch_leaves_the_landmarks_alone(tmp_path: Path, random_model: Path, samples: Path) -> None:
    """export.visibility_branch finds the trunk's two maps and the landmark cells in a format-3
    graph and grafts a branch on them: landmarks and scores stay bit for bit, the new output is
    the branch's probability on the maps the graph computes, with 0.5 moved to the threshold."""
    import onnx

    from export.onnx_meta import file_metadata, save_with_metadata
    from export.visibility import shifted_probability
    from export.visibility_branch import VisibilityBranch, branch_probability, graft_branch
    from pipnet_sdk.landmark_model import LandmarkModel

    m = onnx.load(str(random_model))
    torch.manual_seed(0)
    branch = VisibilityBranch(64, 16, 68, scale=4).eval()  # width 0.25: layer3 has 64 channels, layer1 16
    with torch.no_grad():
        branch.out.bias.fill_(3.0)
        branch.out.bias[5] = -3.0
        branch.score_weight.fill_(0.5)
    out = tmp_path / "branch.onnx"
    save_with_metadata(graft_branch(m, branch, 0.7), out, {**file_metadata(m), "version": "9.9"})
    a, b = Landmarker(model=random_model, threads=1), Landmarker(model=out, threads=1)
    fa, fb = a.detect(samples / "group_2.jpg"), b.detect(samples / "group_2.jpg")
    assert len(fa) == len(fb) > 0 and b.model.has_visibility
    for x, y in zip(fa, fb):
        np.testing.assert_array_equal(x.landmarks, y.landmarks)
        np.testing.assert_array_equal(x.landmark_scores, y.landmark_scores)
        assert 5 in np.flatnonzero(y.occluded)
    crops = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    x, maps = _branch_inputs(random_model, crops)
    assert maps["features"].shape[2:] == (4, 4) and maps["low"].shape[2:] == (16, 16) and maps["cell"].shape == (3, 68)
    want = shifted_probability(branch_probability(branch, maps), 0.7)
    got = LandmarkModel(out, threads=1).forward(x)[2]
    np.testing.assert_allclose(got, want, atol=1e-5)
    with pytest.raises(ValueError, match="already has"):
        graft_branch(onnx.load(str(out)), branch, 0.7)


def test_the_branch_pools_the_int8_map_as_it_was_trained(tmp_path: Path) -> None:
    """On the shipped int8 file, the grafted branch max-pools the trunk's quantized early map and
    dequantizes it after: its output is the branch's on the dequantized maps, as fitted."""
    import onnx

    from export.onnx_meta import file_metadata, save_with_metadata
    from export.visibility_branch import VisibilityBranch, branch_probability, graft_branch, without_visibility
    from pipnet_sdk.hub import PACKAGED_DIR
    from pipnet_sdk.landmark_model import LandmarkModel

    shipped = without_visibility(onnx.load(str(PACKAGED_DIR / "pipnet-fast.onnx")))
    torch.manual_seed(1)
    branch = VisibilityBranch(192, 48, 68).eval()
    with torch.no_grad():
        branch.score_weight.normal_()
    grafted = graft_branch(shipped, branch, 0.5)
    ops = {n.name: n.op_type for n in grafted.graph.node}
    assert ops["/visibility_branch/pool"] == "MaxPool" and ops["/visibility_branch/pool/DequantizeLinear"]
    out = tmp_path / "branch.onnx"
    save_with_metadata(grafted, out, {**file_metadata(grafted), "outputs": ["candidates", "scores", "visibility"]})
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, (4, 144, 144, 3), dtype=np.uint8)
    x, maps = _branch_inputs(out, crops)
    np.testing.assert_allclose(LandmarkModel(out, threads=1).forward(x)[2], branch_probability(branch, maps), atol=1e-5)


def test_a_fitted_visibility_output_is_replaced_not_taken_as_learned(random_model: Path) -> None:
    """A file whose visibility was fitted here (grafted rows) is fitted anew by export.visibility:
    learned_here says so, and without_visibility gives back the graph as it was before the graft."""
    import onnx

    from export.onnx_meta import file_metadata
    from export.visibility import graft_rows, learned_here
    from export.visibility_branch import without_visibility

    m = onnx.load(str(random_model))
    dim = next(i for i in m.graph.initializer if i.name == "weight").dims[1]
    grafted = graft_rows(m, np.zeros((68, dim + 1), np.float32), np.zeros(68, np.float32))
    meta = file_metadata(grafted)
    meta["visibility"] = {"fitted_on": "crops"}
    grafted.metadata_props[0].value = json.dumps(meta)
    assert not learned_here(m) and not learned_here(grafted)
    back = without_visibility(grafted)
    assert [o.name for o in back.graph.output] == ["candidates", "scores"]
    assert [n.name for n in back.graph.node] == [n.name for n in m.graph.node]
    assert sorted(i.name for i in back.graph.initializer) == sorted(i.name for i in m.graph.initializer)
    meta["visibility"] = {"learned": "a head of the network"}
    grafted.metadata_props[0].value = json.dumps(meta)
    assert learned_here(grafted)


def test_face_fields_for_visibility_and_quality() -> None:
    base = dict(
        box=np.array([0, 0, 10, 10], np.float32),
        score=0.9,
        landmarks=np.zeros((68, 2), np.float32),
        landmark_scores=np.ones(68, np.float32),
    )
    vis = np.ones(68, np.float32)
    vis[:3] = 0.2
    f = Face(**base, visibility=vis, quality=0.87)
    assert f.occluded.sum() == 3
    assert "quality=0.87" in repr(f) and "3 hidden" in repr(f)
    d = f.to_dict()
    assert d["quality"] == 0.87 and d["occluded"][:4] == [True, True, True, False] and d["visibility"][0] == 0.2
    assert f != Face(**base, visibility=np.ones(68, np.float32), quality=0.87)
    assert f != Face(**base, visibility=vis, quality=0.5)
    assert f == Face(**base, visibility=vis.copy(), quality=0.87)
    assert d["point_quality"] is None
    pq = np.linspace(0, 1, 68).astype(np.float32)
    g = Face(**base, point_quality=pq)
    assert g.to_dict()["point_quality"][-1] == 1.0 and len(g.to_dict()["point_quality"]) == 68
    assert g != Face(**base, point_quality=pq[::-1].copy()) and g == Face(**base, point_quality=pq.copy())


def test_hidden_points_are_drawn_as_rings() -> None:
    from pipnet_sdk import draw

    base = dict(
        box=np.array([10, 10, 110, 110], np.float32),
        score=0.9,
        landmarks=np.array([[40.0, 40.0]] * 34 + [[80.0, 80.0]] * 34, np.float32),
        landmark_scores=np.ones(68, np.float32),
    )
    vis = np.ones(68, np.float32)
    vis[34:] = 0.1  # the points at (80, 80) are hidden
    img = draw(np.zeros((120, 120, 3), np.uint8), Face(**base, visibility=vis), boxes=False, radius=6)
    assert img[40, 40, 1] == 255  # a dot: its centre painted
    assert img[80, 80, 1] == 0 and img[80, 80 + 9, 1] > 0  # a ring: centre empty, rim painted


def test_ray_rows_carry_visibility_and_quality(samples: Path) -> None:
    """The Ray predictor's confidence columns, called on a batch directly (no Ray runtime needed)."""
    pytest.importorskip("pyarrow")
    from pipnet_sdk.integrations.ray import LandmarkPredictor

    table = LandmarkPredictor()({"path": np.array([str(samples / "group_2.jpg"), str(samples / "no_face.jpg")])})
    rows = table.to_pylist()
    faces = Landmarker().detect(samples / "group_2.jpg")
    assert rows[0]["num_faces"] == len(faces) == 4 and rows[1]["num_faces"] == 0
    columns = (rows[0][k] for k in ("visibility", "occluded", "quality", "point_quality"))
    for v, o, q, pq, f in zip(*columns, faces):
        np.testing.assert_allclose(v, f.visibility, atol=1e-6)
        np.testing.assert_allclose(pq, f.point_quality, atol=1e-6)
        assert o == f.occluded.tolist() and abs(q - f.quality) < 1e-6 and 0 <= q <= 1


def test_the_visibility_head_learns_and_is_read_at_the_argmax_cell() -> None:
    """Its loss reaches the head (and only through it changes what the file says of visibility),
    and the shipped graph's visibility is the head's map at each landmark's argmax cell."""
    from export.data import neighbor_indices
    from export.deploy import DecodedPIPNet
    from export.model import PIPNet
    from export.targets import make_targets, visibility_loss

    torch.manual_seed(0)
    net = PIPNet(68, 10, "resnet18", stride=16, width=0.25, visibility=True)
    x = torch.randn(2, 3, 64, 64)
    heads = net(x)
    assert len(heads) == 6 and heads[5].shape == (2, 68, 4, 4)
    points = torch.rand(2, 68, 2)
    nb = torch.from_numpy(neighbor_indices(np.random.default_rng(0).uniform(0.2, 0.8, (68, 2)), 10))
    visible = (torch.rand(2, 68) > 0.3).float()
    loss = visibility_loss(heads[5], make_targets(points, 4, nb)["index"], visible)
    loss.backward()
    assert torch.isfinite(loss) and net.visibility.weight.grad.abs().sum() > 0
    net.eval()
    with torch.no_grad():
        heads = net(x)
        _, _, vis = DecodedPIPNet(net, nb.numpy(), 64).eval()(x)
        cell = heads[0].flatten(2).argmax(-1)
        expected = torch.sigmoid(torch.gather(heads[5].flatten(2), 2, cell[..., None])[..., 0])
    torch.testing.assert_close(vis, expected, atol=1e-5, rtol=1e-5)


def test_training_can_read_visibility_where_the_network_decodes() -> None:
    """With "visibility_cell": "decoded" training reads the head at each landmark's argmax cell (where the
    shipped graph reads it), "truth" at its ground-truth cell; the config refuses anything else."""
    from export.config import load_config
    from export.targets import visibility_cells, visibility_loss

    torch.manual_seed(0)
    score = torch.rand(2, 68, 4, 4, requires_grad=True)
    truth = torch.randint(0, 16, (2, 68))
    argmax = score.flatten(2).argmax(-1)
    assert (argmax != truth).any()
    assert torch.equal(visibility_cells("truth", score, truth), truth)
    decoded = visibility_cells("decoded", score, truth)
    assert torch.equal(decoded, argmax) and not decoded.requires_grad
    logits, visible = torch.randn(2, 68, 4, 4), (torch.rand(2, 68) > 0.3).float()
    at_argmax = torch.gather(logits.flatten(2), 2, argmax[..., None])[..., 0]
    expected = torch.nn.functional.binary_cross_entropy_with_logits(at_argmax, visible)
    torch.testing.assert_close(visibility_loss(logits, decoded, visible), expected)
    assert load_config(None, {"visibility_cell": "decoded"})["visibility_cell"] == "decoded"
    with pytest.raises(ValueError, match="visibility_cell"):
        load_config(None, {"visibility_cell": "elsewhere"})


def test_the_visibility_head_can_learn_faster_than_the_rest() -> None:
    """The config key "visibility_lr_scale" gives the visibility head a parameter group of its own at that
    fraction of the learning rate; at 1 (the default) the optimizer is one group as before."""
    from export.config import load_config
    from export.model import PIPNet
    from export.train import make_optimizer

    net = PIPNet(68, 10, "resnet18", stride=16, width=0.25, visibility=True)
    cfg = load_config(None, {"visibility_weight": 0.2, "visibility_lr_scale": 10.0, "trunk_lr_scale": 0.5})
    groups = make_optimizer(cfg, net).param_groups
    assert [g["lr_scale"] for g in groups] == [0.5, 1.0, 10.0]
    assert {id(p) for p in groups[2]["params"]} == {id(p) for p in net.visibility.parameters()}
    assert sum(len(g["params"]) for g in groups) == len(list(net.parameters()))
    assert len(make_optimizer(load_config(None, {"visibility_weight": 0.2}), net).param_groups) == 1
    plain = PIPNet(68, 10, "resnet18", stride=16, width=0.25)  # no head: the scale has nothing to scale
    assert len(make_optimizer(cfg, plain).param_groups) == 2


def test_a_detached_visibility_head_leaves_the_trunk_to_the_landmarks() -> None:
    """With "visibility_detach" the visibility loss trains the head alone: no gradient reaches the
    trunk (nor the landmark heads); without it, the trunk gets one."""
    from export.config import build_model, load_config

    for detach in (True, False):
        torch.manual_seed(0)
        cfg = load_config(None, {"width": 0.25, "stride": 16, "visibility_weight": 0.2, "visibility_detach": detach})
        net = build_model(cfg)
        heads = net(torch.randn(2, 3, 64, 64))
        heads[5].square().mean().backward()
        trunk = [p.grad for p in net.backbone.parameters()]
        assert net.visibility.weight.grad.abs().sum() > 0 and net.score.weight.grad is None
        if detach:
            assert all(g is None for g in trunk)
        else:
            assert any(g is not None and g.abs().sum() > 0 for g in trunk)


@pytest.mark.slow
def test_a_network_that_learned_visibility_gets_its_threshold_and_quality(tmp_path: Path, shared_dir: Path) -> None:
    """export.visibility on a file whose network has its own visibility head: nothing grafted;
    one Add moves its logit so that 0.5 is the validation's best-F1 threshold, the landmarks
    and scores stay bit for bit, and the quality calibration and the output's F1 are written."""
    import onnx
    import onnxruntime as ort

    from export.onnx_meta import file_metadata
    from export.visibility import main, shifted_probability
    from pipnet_sdk.landmark_model import LandmarkModel

    path = _model_with_visibility(tmp_path, 3.0)
    out = tmp_path / "calibrated.onnx"
    config = Path(__file__).resolve().parents[1] / "export" / "configs" / "pipnet-fast-0.7.json"
    main([str(path), "--config", str(config), "--out", str(out), "--version", "9.9", "--limit", "8", "--quiet"])
    a, b = onnx.load(str(path)), onnx.load(str(out))
    ops_a, ops_b = [n.op_type for n in a.graph.node], [n.op_type for n in b.graph.node]
    assert len(ops_b) == len(ops_a) + 1 and sorted(ops_b) == sorted(ops_a + ["Add"])
    assert [o.name for o in b.graph.output] == ["candidates", "scores", "visibility"]
    meta = file_metadata(b)
    assert meta["version"] == "9.9" and "learned" in meta["visibility"]
    assert set(meta["quality"]) >= {"coef", "intercept", "good_nme"}
    assert LandmarkModel(out).has_visibility
    sessions = [ort.InferenceSession(str(f), providers=["CPUExecutionProvider"]) for f in (path, out)]
    feed = sessions[0].get_inputs()[0]
    x = np.random.default_rng(0).integers(0, 256, size=(2, 64, 64, 3))
    x = x.astype(np.uint8 if "uint8" in feed.type else np.float32)
    if feed.shape[1] == 3:
        x = x.transpose(0, 3, 1, 2).copy()
    before, after = (s.run(None, {feed.name: x}) for s in sessions)
    np.testing.assert_array_equal(before[0], after[0])
    np.testing.assert_array_equal(before[1], after[1])
    threshold = meta["visibility"]["shifted_from"]
    np.testing.assert_allclose(after[2], shifted_probability(before[2], threshold), atol=1e-5)
    with pytest.raises(ValueError, match="shifted already"):
        main(
            [
                str(out),
                "--config",
                str(config),
                "--out",
                str(tmp_path / "twice.onnx"),
                "--version",
                "9.9",
                "--limit",
                "8",
                "--quiet",
            ]
        )


@pytest.mark.parametrize("colour", [(0, 0, 0), (128, 128, 128), (255, 255, 255)])
def test_a_band_over_the_mouth_hides_the_mouth(samples: Path, colour: tuple[int, int, int]) -> None:
    """The packaged default model, on the largest face of the sample photo with a band of a flat
    colour over the lower 40 % of its box (examples/occlusion.py's cover): every mouth point is
    flagged hidden, at most a few points above the band are, and the same face without the band
    has none. (A black band once left the mouth "visible".)"""
    import cv2

    img = cv2.imread(str(samples / "group_2.jpg"))
    lm = Landmarker(threads=1)
    face = max(lm.detect(img), key=lambda f: float((f.box[2] - f.box[0]) * (f.box[3] - f.box[1])))
    assert face.occluded is not None and not face.occluded.any()
    x0, y0, x1, y1 = face.box.astype(int)
    top = int(y1 - 0.4 * (y1 - y0))
    banded = img.copy()
    banded[top:y1, x0:x1] = colour
    again = max(lm.detect(banded), key=lambda f: float((f.box[2] - f.box[0]) * (f.box[3] - f.box[1])))
    assert again.occluded is not None
    above = again.landmarks[:, 1] < top - 0.05 * (y1 - y0)
    assert again.occluded[48:68].all()
    assert (again.occluded & above).sum() <= 3
