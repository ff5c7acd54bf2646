"""PIPNet in torch: backbones defined here (no torchvision) + the five 1x1 heads, and the
network's input convention (normalize) and precision (autocast)."""

from __future__ import annotations

import math

import torch
from torch import nn

MEAN = (0.485, 0.456, 0.406)  # ImageNet statistics, RGB, on 0-1 values
STD = (0.229, 0.224, 0.225)


def normalize(x: torch.Tensor) -> torch.Tensor:
    """0-1 BGR crops (B, 3, H, W) -> the network's input (RGB, ImageNet mean/std)."""
    x = x.flip(1)
    mean = torch.tensor(MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def autocast(device: torch.device, enabled: bool) -> torch.autocast:
    """bf16 autocast on the device's type (a config's "bf16")."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


def conv_bn(cin: int, cout: int, k: int = 3, s: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    """Conv (no bias) + BN (+ ReLU6): the unit of the mobile trunks."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


def copy_by_position(
    groups: list[tuple[str, str]], own: dict[str, torch.Tensor], src: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Tensors of ``src`` renamed into ``own``'s names, group by group: each (own prefix, src
    prefix) pair must hold the same number of tensors, in the same order, of the same kinds and
    shapes (ValueError naming the first that differs)."""
    out: dict[str, torch.Tensor] = {}
    for own_prefix, src_prefix in groups:
        mine = [k for k in own if k.startswith(own_prefix)]
        theirs = [k for k in src if k.startswith(src_prefix)]
        if len(mine) != len(theirs):
            raise ValueError(f"{own_prefix!r} has {len(mine)} tensors, the weights' {src_prefix!r} {len(theirs)}")
        for a, b in zip(mine, theirs):
            if a.rsplit(".", 1)[-1] != b.rsplit(".", 1)[-1] or own[a].shape != src[b].shape:
                raise ValueError(f"{a} {tuple(own[a].shape)} does not match the weights' {b} {tuple(src[b].shape)}")
            out[a] = src[b]
    return out


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return torch.relu(y + (x if self.down is None else self.down(x)))


class ResNet18(nn.Module):
    """ResNet-18 trunk; stride 32 keeps layer4 (512 ch), stride 16 stops after layer3 (256 ch).
    `blocks`: residual blocks per stage (ResNet-18: 2 each); fewer make a cheaper trunk."""

    def __init__(self, stride: int = 32, width: float = 1.0, blocks: tuple[int, ...] = (2, 2, 2, 2)) -> None:
        super().__init__()
        if stride not in (16, 32):
            raise ValueError("ResNet18 supports stride 16 or 32")
        if len(blocks) < (4 if stride == 32 else 3) or min(blocks) < 1:
            raise ValueError(f"blocks needs at least 1 block for each of the stages, got {list(blocks)}")
        c = [int(64 * width), int(128 * width), int(256 * width), int(512 * width)]
        self.stem = nn.Sequential(
            nn.Conv2d(3, c[0], 7, 2, 3, bias=False), nn.BatchNorm2d(c[0]), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)
        )
        stages, cin = [], c[0]
        for i, cout in enumerate(c[: 4 if stride == 32 else 3]):
            s = 1 if i == 0 else 2
            rest = [BasicBlock(cout, cout, 1) for _ in range(blocks[i] - 1)]
            stages.append(nn.Sequential(BasicBlock(cin, cout, s), *rest))
            cin = cout
        self.stages = nn.Sequential(*stages)
        self.out_channels = cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))


class InvertedResidual(nn.Module):
    """MobileNetV2's block, and EfficientNet-Lite's (its MBConv has no squeeze-excitation)."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int, kernel: int = 3) -> None:
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(conv_bn(cin, hidden, 1))
        layers += [conv_bn(hidden, hidden, kernel, stride, groups=hidden), conv_bn(hidden, cout, 1, act=False)]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.residual else y


class MobileNetV2(nn.Module):
    """MobileNetV2 trunk (CPU-lean). stride 32: all stages + 1x1 to `last` ch; stride 16 stops
    after the 96-channel stage (+ 1x1 to `last` ch). Its layers are torchvision's, in its order:
    ``imagenet_state`` maps torchvision's ImageNet file onto them."""

    SETTINGS = [
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    ]

    def __init__(self, stride: int = 32, width: float = 1.0, last: int = 512) -> None:
        super().__init__()
        if stride not in (16, 32):
            raise ValueError("MobileNetV2 supports stride 16 or 32")

        def ch(v: float) -> int:
            return max(8, int(v * width + 4) // 8 * 8)

        cin = ch(32)
        layers: list[nn.Module] = [conv_bn(3, cin, 3, 2)]
        settings = self.SETTINGS if stride == 32 else self.SETTINGS[:5]
        for t, c, n, s in settings:
            for i in range(n):
                layers.append(InvertedResidual(cin, ch(c), s if i == 0 else 1, t))
                cin = ch(c)
        layers.append(conv_bn(cin, last, 1))
        self.features = nn.Sequential(*layers)
        self.out_channels = last
        self.width = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def imagenet_state(self, src: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """torchvision's MobileNetV2 state dict -> this trunk's tensors (all but the last 1x1)."""
        if self.width != 1.0:
            raise ValueError("the ImageNet weights are of width 1.0")
        used = len(self.features) - 1  # the last 1x1 (to `last` channels) is ours
        groups = [(f"features.{i}.", f"features.{i}.") for i in range(used)]
        return copy_by_position(groups, {k: v for k, v in self.state_dict().items()}, src)


def round_filters(c: float, divisor: int = 8) -> int:
    """EfficientNet's channel rounding."""
    new = max(divisor, int(c + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * c else new


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite0..4 trunk (ReLU6, no squeeze-excitation, stem and head not scaled, the
    first and last stages not deepened). stride 32: all stages + 1x1 to `last` ch; stride 16 stops
    after the 112-channel stage. ``imagenet_state`` maps the converted TF Lite checkpoints
    (efficientnet-lite-pytorch's layout) onto it."""

    # expand, kernel, stride, repeats, out channels (EfficientNet-B0's stages)
    STAGES = [
        (1, 3, 1, 1, 16),
        (6, 3, 2, 2, 24),
        (6, 5, 2, 2, 40),
        (6, 3, 2, 3, 80),
        (6, 5, 1, 3, 112),
        (6, 5, 2, 4, 192),
        (6, 3, 1, 1, 320),
    ]
    SCALES = {0: (1.0, 1.0), 1: (1.0, 1.1), 2: (1.1, 1.2), 3: (1.2, 1.4), 4: (1.4, 1.8)}  # width, depth

    def __init__(self, variant: int = 0, stride: int = 32, width: float = 1.0, last: int = 512) -> None:
        super().__init__()
        if stride not in (16, 32):
            raise ValueError("EfficientNetLite supports stride 16 or 32")
        if width != 1.0:
            raise ValueError("EfficientNetLite is scaled by its variant (0-4), not by width")
        w, d = self.SCALES[variant]
        cin = 32
        layers: list[nn.Module] = [conv_bn(3, cin, 3, 2)]
        stages = self.STAGES if stride == 32 else self.STAGES[:5]
        for i, (t, k, s, n, c) in enumerate(stages):
            repeats = n if i in (0, len(self.STAGES) - 1) else math.ceil(d * n)
            for j in range(repeats):
                layers.append(InvertedResidual(cin, round_filters(c * w), s if j == 0 else 1, t, k))
                cin = round_filters(c * w)
        layers.append(conv_bn(cin, last, 1))
        self.features = nn.Sequential(*layers)
        self.out_channels = last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def imagenet_state(self, src: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """An efficientnet-lite-pytorch state dict -> this trunk's tensors (all but the last 1x1)."""
        stem = {k: v for k, v in src.items() if k.startswith(("_conv_stem.", "_bn0."))}
        own = self.state_dict()
        stem_own = {k: v for k, v in own.items() if k.startswith("features.0.")}
        out = copy_by_position([("features.0.", "")], stem_own, stem)
        blocks = len(self.features) - 2
        groups = [(f"features.{i + 1}.", f"_blocks.{i}.") for i in range(blocks)]
        return {**out, **copy_by_position(groups, dict(own), src)}


def efficientnet_lite(variant: int) -> type[nn.Module]:
    """The EfficientNetLite class with its variant bound (a BACKBONES entry)."""
    return type(
        f"EfficientNetLite{variant}",
        (EfficientNetLite,),
        {"__init__": lambda self, stride=32, width=1.0: EfficientNetLite.__init__(self, variant, stride, width)},
    )


BACKBONES: dict[str, type[nn.Module]] = {
    "resnet18": ResNet18,
    "mobilenetv2": MobileNetV2,
    **{f"efficientnet_lite{v}": efficientnet_lite(v) for v in range(5)},
}


class PIPNet(nn.Module):
    """Backbone + score / offset_x / offset_y / neighbor_x / neighbor_y 1x1 heads, and with
    ``visibility`` a sixth: each landmark's visibility logit, read (like its offsets) at its cell;
    with ``visibility_detached`` its loss does not reach the trunk (the landmark features stay
    the landmarks' own).

    Outputs (B, N, H, W) x3, (B, N*C, H, W) x2 (and (B, N, H, W)); neighbour channel i*C + k is
    landmark i's vote for its k-th neighbour (the SDK's decoder reads this order)."""

    def __init__(
        self,
        num_landmarks: int = 68,
        num_neighbors: int = 10,
        backbone: str = "resnet18",
        stride: int = 32,
        width: float = 1.0,
        coarse_grids: tuple[int, ...] = (),
        blocks: tuple[int, ...] | None = None,
        visibility: bool = False,
        visibility_detached: bool = False,
    ) -> None:
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {backbone!r}; choose from {sorted(BACKBONES)}")
        if blocks is not None and backbone != "resnet18":
            raise ValueError("blocks applies to the resnet18 backbone only")
        self.backbone = BACKBONES[backbone](stride=stride, width=width, **({"blocks": tuple(blocks)} if blocks else {}))
        c, n, k = self.backbone.out_channels, num_landmarks, num_neighbors
        self.score = nn.Conv2d(c, n, 1)
        self.offset_x = nn.Conv2d(c, n, 1)
        self.offset_y = nn.Conv2d(c, n, 1)
        self.neighbor_x = nn.Conv2d(c, n * k, 1)
        self.neighbor_y = nn.Conv2d(c, n * k, 1)
        self.visibility = nn.Conv2d(c, n, 1) if visibility else None
        self.visibility_detached = visibility_detached
        for head in (self.score, self.offset_x, self.offset_y, self.neighbor_x, self.neighbor_y, self.visibility):
            if head is not None:
                nn.init.normal_(head.weight, std=0.001)
                nn.init.zeros_(head.bias)
        for m in self.backbone.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        # extra score heads on pooled features, used only by self-training (STC); not exported
        self.coarse = nn.ModuleDict({str(g): nn.Conv2d(c, n, 1) for g in coarse_grids})
        self.num_landmarks, self.num_neighbors, self.stride = n, k, stride

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.forward_train(x)[0]

    def forward_train(self, x: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], dict[int, torch.Tensor]]:
        """Head outputs and the coarse score maps {grid: (B, N, g, g)}."""
        f = self.backbone(x)
        heads = (self.score(f), self.offset_x(f), self.offset_y(f), self.neighbor_x(f), self.neighbor_y(f))
        if self.visibility is not None:
            heads += (self.visibility(f.detach() if self.visibility_detached else f),)
        coarse = {int(g): conv(nn.functional.adaptive_avg_pool2d(f, int(g))) for g, conv in self.coarse.items()}
        return heads, coarse
