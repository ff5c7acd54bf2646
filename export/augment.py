"""Batch augmentation in torch (runs on CPU or GPU): geometric jitter of the crop square around
the detector-style box, rotation, flip with landmark permutation, occlusion, blur, motion blur,
low light, grayscale, colour. Input: base crops (see data.base_crops); output: network input crops +
normalised points."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class AugmentConfig:
    rotate_deg: float = 30.0  # rotation uniform in +-rotate_deg, applied with p_rotate
    p_rotate: float = 0.5
    scale: float = 0.1  # crop side jitter: x (1 +- scale)
    shift: float = 0.08  # crop centre jitter: +- shift * side
    p_flip: float = 0.5
    p_occlude: float = 0.4
    occlude_max: float = 0.4  # occluder side up to this fraction of the crop
    p_occlude_texture: float = 0.0  # of the occluders: filled with another crop of the batch, not a flat colour
    p_occlude_ellipse: float = 0.0  # of the occluders: an ellipse (a hand, a cup, a microphone), not a rectangle
    p_occlude_dark: float = 0.0  # of the flat occluders: near black (a black mask, a phone, padding past the image)
    p_occlude_light: float = 0.0  # of the flat occluders: near white (a surgical mask, paper, a white sleeve); drawn
    # after p_occlude_dark, so p_occlude_dark is then the share of the flat occluders not near white
    p_occlude_bar: float = 0.0  # of the occluders: a thick bar at any angle (a finger, a pen, a microphone)
    p_occlude_edge: float = 0.0  # of the occluders: black from a side of the crop inward (the image's edge)
    p_blur: float = 0.2
    p_motion_blur: float = 0.0  # a straight motion streak, up to motion_max x the crop side long
    motion_max: float = 0.12
    p_low_light: float = 0.0  # gamma-darkened (x ** 1.5-3), scaled down to 0.2-0.6, sensor noise
    p_gray: float = 0.2
    brightness: float = 0.25
    contrast: float = 0.25
    noise: float = 0.02


def upload(t: torch.Tensor, dev: torch.device) -> torch.Tensor:
    """A CPU tensor on dev; to a GPU through pinned memory, so that the host need not wait for the
    work queued there (a plain copy from pageable memory would)."""
    return t.pin_memory().to(dev, non_blocking=True) if dev.type == "cuda" else t.to(dev)


def crop_grid(
    b: int,
    size: int,
    base: int,
    margin: float,
    scale: torch.Tensor,
    angle: torch.Tensor,
    shift: torch.Tensor,
    flip: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Affine maps output pixel -> base pixel as (B, 2, 3), and its inverse (base -> output)."""
    dev = scale.device
    k = (base / margin) * scale / size  # base pixels per output pixel
    cos, sin = torch.cos(angle), torch.sin(angle)
    fx = torch.where(flip, -1.0, 1.0)
    a = torch.zeros(b, 2, 3, device=dev)
    # x_base = c0 + shift + k * R @ diag(fx, 1) @ (u - cu)
    a[:, 0, 0], a[:, 0, 1] = k * cos * fx, -k * sin
    a[:, 1, 0], a[:, 1, 1] = k * sin * fx, k * cos
    c0, cu = (base - 1) / 2, (size - 1) / 2
    t = c0 + shift * (base / margin)
    a[:, :, 2] = t - cu * (a[:, :, 0] + a[:, :, 1])
    lin = a[:, :, :2]
    inv_lin = torch.linalg.inv(lin)
    inv = torch.cat([inv_lin, -(inv_lin @ a[:, :, 2:])], dim=2)
    return a, inv


def warp(images: torch.Tensor, a: torch.Tensor, size: int) -> torch.Tensor:
    """Sample (B, C, size, size) from images (B, C, H, W) with output->input pixel maps a."""
    b, _, h, w = images.shape
    ys, xs = torch.meshgrid(
        torch.arange(size, device=a.device, dtype=torch.float32),
        torch.arange(size, device=a.device, dtype=torch.float32),
        indexing="ij",
    )
    u = torch.stack([xs, ys, torch.ones_like(xs)], -1).reshape(1, -1, 3)  # (1, S*S, 3)
    p = u @ a.transpose(1, 2)  # (B, S*S, 2) base pixel coords
    g = torch.stack([(2 * p[..., 0] + 1) / w - 1, (2 * p[..., 1] + 1) / h - 1], -1)
    return F.grid_sample(
        images, g.reshape(b, size, size, 2), mode="bilinear", padding_mode="zeros", align_corners=False
    )


def transform_points(points: torch.Tensor, inv: torch.Tensor) -> torch.Tensor:
    return points @ inv[:, :, :2].transpose(1, 2) + inv[:, None, :, 2]


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    r = max(1, int(math.ceil(2.5 * sigma)))
    k = torch.exp(-(torch.arange(-r, r + 1, device=x.device, dtype=x.dtype) ** 2) / (2 * sigma**2))
    k = (k / k.sum()).view(1, 1, 1, -1).repeat(x.shape[1], 1, 1, 1)
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), k, groups=x.shape[1])
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), k.transpose(2, 3), groups=x.shape[1])


def motion_blur(x: torch.Tensor, length: float, angle: float) -> torch.Tensor:
    """Blur (B, C, H, W) along a straight line of ``length`` pixels at ``angle`` radians."""
    r = max(1, int(math.ceil(length / 2)))
    t = torch.arange(-r, r + 1, device=x.device, dtype=x.dtype)
    yy, xx = torch.meshgrid(t, t, indexing="ij")
    along = xx * math.cos(angle) + yy * math.sin(angle)
    across = (-xx * math.sin(angle) + yy * math.cos(angle)).abs()
    k = (1 - across).clamp(min=0) * (along.abs() <= length / 2)
    k = (k / k.sum()).view(1, 1, 2 * r + 1, 2 * r + 1).repeat(x.shape[1], 1, 1, 1)
    return F.conv2d(F.pad(x, (r, r, r, r), mode="replicate"), k, groups=x.shape[1])


def augment(
    images: torch.Tensor,
    points: torch.Tensor,
    size: int,
    margin: float,
    flip_perm: torch.Tensor,
    cfg: AugmentConfig,
    generator: torch.Generator | None = None,
    train: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """images: (B, 3, R, R) uint8 base crops (BGR); points (B, N, 2) base pixels (NaN = unknown).
    Returns float crops (B, 3, size, size) in 0-1 BGR and points (B, N, 2) normalised to the crop
    (0 = left/top edge, 1 = right/bottom edge)."""
    x, p, _ = augment_with_visibility(images, points, size, margin, flip_perm, cfg, generator, train)
    return x, p


def visible_points(points: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
    """(B, N) 1.0 where a normalised point lies inside the crop and off the occluder mask hidden
    (B, S, S) bool, else 0.0 (NaN points count as hidden)."""
    b, size = hidden.shape[0], hidden.shape[-1]
    inside = ((points >= 0) & (points < 1)).all(-1)
    cell = (points.nan_to_num(-1.0) * size).floor().long().clamp(0, size - 1)  # (B, N, 2) column, row
    covered = hidden[torch.arange(b, device=hidden.device)[:, None], cell[..., 1], cell[..., 0]]
    return (inside & ~covered).float()


def augment_with_visibility(
    images: torch.Tensor,
    points: torch.Tensor,
    size: int,
    margin: float,
    flip_perm: torch.Tensor,
    cfg: AugmentConfig,
    generator: torch.Generator | None = None,
    train: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """augment, plus each point's visibility label (B, N): 1.0 when it is inside the crop and not
    under the synthetic occluder (visible_points)."""
    b, dev = images.shape[0], images.device

    def draw(*shape: int) -> torch.Tensor:
        """Uniform draws on the CPU: one generator for any device, and no device sync to branch on."""
        return torch.rand(*shape, generator=generator, device="cpu")

    def rand(*shape: int) -> torch.Tensor:
        return upload(draw(*shape), dev)

    if train:
        scale = 1 + cfg.scale * (2 * rand(b) - 1)
        angle = torch.where(
            rand(b) < cfg.p_rotate, math.radians(cfg.rotate_deg) * (2 * rand(b) - 1), torch.zeros(b, device=dev)
        )
        shift = cfg.shift * (2 * rand(b, 2) - 1)
        flip = rand(b) < cfg.p_flip
    else:
        scale, angle = torch.ones(b, device=dev), torch.zeros(b, device=dev)
        shift, flip = torch.zeros(b, 2, device=dev), torch.zeros(b, dtype=torch.bool, device=dev)
    a, inv = crop_grid(b, size, images.shape[-1], margin, scale, angle, shift, flip)
    x = warp(images.float() / 255.0, a, size)
    p = transform_points(points, inv)
    p = torch.where(flip[:, None, None], p[:, flip_perm], p)
    p = (p + 0.5) / size
    if not train:
        return x, p, visible_points(p, torch.zeros(b, size, size, dtype=torch.bool, device=dev))
    # photometric
    gray = draw(b) < cfg.p_gray
    if gray.any():
        g = (0.114 * x[:, 0] + 0.587 * x[:, 1] + 0.299 * x[:, 2]).unsqueeze(1).expand_as(x)
        x = torch.where(upload(gray, dev)[:, None, None, None], g, x)
    blur = upload(torch.nonzero(draw(b) < cfg.p_blur)[:, 0], dev)
    if len(blur):
        x[blur] = gaussian_blur(x[blur], 0.5 + 2.0 * float(draw(1)))
    streak = upload(torch.nonzero(draw(b) < cfg.p_motion_blur)[:, 0], dev)
    if len(streak):  # one streak per batch, like the Gaussian blur's sigma
        u_length, u_angle = draw(2).tolist()
        x[streak] = motion_blur(x[streak], 2 + cfg.motion_max * size * u_length, math.pi * u_angle)
    dark = upload(torch.nonzero(draw(b) < cfg.p_low_light)[:, 0], dev)
    if len(dark):
        k = len(dark)
        gamma, gain = 1.5 + 1.5 * rand(k, 1, 1, 1), 0.2 + 0.4 * rand(k, 1, 1, 1)
        x[dark] = gain * x[dark].clamp(0, 1) ** gamma + 0.02 * torch.randn(x[dark].shape, device=dev)
    con = 1 + cfg.contrast * (2 * rand(b, 1, 1, 1) - 1)
    bri = cfg.brightness * (2 * rand(b, 1, 1, 1) - 1)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * con + mean + bri
    x = x + cfg.noise * rand(b, 1, 1, 1) * torch.randn(x.shape, device=dev)  # global seed
    occ = draw(b) < cfg.p_occlude
    hidden = torch.zeros(b, size, size, dtype=torch.bool, device=dev)
    if occ.any():
        occ = upload(occ, dev)
        ys = torch.arange(size, device=dev).view(1, size, 1).float() + 0.5
        xs = torch.arange(size, device=dev).view(1, 1, size).float() + 0.5
        wh = (cfg.occlude_max * size * rand(b, 2)).clamp(min=1.0)
        x0 = (size - wh[:, 0]) * rand(b)
        y0 = (size - wh[:, 1]) * rand(b)
        rect = (
            (xs >= x0.view(-1, 1, 1))
            & (xs < (x0 + wh[:, 0]).view(-1, 1, 1))
            & (ys >= y0.view(-1, 1, 1))
            & (ys < (y0 + wh[:, 1]).view(-1, 1, 1))
        )
        hidden = rect
        if cfg.p_occlude_ellipse > 0:  # an ellipse inscribed in the same rectangle
            u = (xs - (x0 + wh[:, 0] / 2).view(-1, 1, 1)) / (wh[:, 0] / 2).view(-1, 1, 1)
            v = (ys - (y0 + wh[:, 1] / 2).view(-1, 1, 1)) / (wh[:, 1] / 2).view(-1, 1, 1)
            hidden = torch.where((rand(b) < cfg.p_occlude_ellipse).view(-1, 1, 1), u**2 + v**2 <= 1, rect)
        if cfg.p_occlude_bar > 0:  # through the rectangle's centre, as long as its longer side
            angle = math.pi * rand(b).view(-1, 1, 1)
            u = xs - (x0 + wh[:, 0] / 2).view(-1, 1, 1)
            v = ys - (y0 + wh[:, 1] / 2).view(-1, 1, 1)
            along, across = u * angle.cos() + v * angle.sin(), v * angle.cos() - u * angle.sin()
            half = (wh.max(1).values / 2).view(-1, 1, 1)
            width = size * (0.05 + 0.1 * rand(b)).view(-1, 1, 1)
            bar = (along.abs() <= half) & (across.abs() <= width / 2)
            hidden = torch.where((rand(b) < cfg.p_occlude_bar).view(-1, 1, 1), bar, hidden)
        edge = torch.zeros(b, dtype=torch.bool, device=dev)
        if cfg.p_occlude_edge > 0:  # as deep as the rectangle is wide, from one of the four sides
            side = (4 * rand(b)).long().clamp(max=3).view(-1, 1, 1)
            depth = wh[:, 0].view(-1, 1, 1)
            cut = torch.where(
                side == 0,
                xs < depth,
                torch.where(side == 1, xs >= size - depth, torch.where(side == 2, ys < depth, ys >= size - depth)),
            )
            edge = rand(b) < cfg.p_occlude_edge
            hidden = torch.where(edge.view(-1, 1, 1), cut, hidden)
        hidden = hidden & occ.view(-1, 1, 1)
        fill = rand(b, 3, 1, 1)  # a flat colour
        if cfg.p_occlude_dark > 0:  # a uniform draw is almost never near black
            fill = torch.where((rand(b) < cfg.p_occlude_dark).view(-1, 1, 1, 1), 0.08 * fill, fill)
        if cfg.p_occlude_light > 0:  # nor near white
            fill = torch.where((rand(b) < cfg.p_occlude_light).view(-1, 1, 1, 1), 1 - 0.08 * rand(b, 3, 1, 1), fill)
        fill = fill.expand_as(x)
        if cfg.p_occlude_texture > 0:  # or the same pixels of another face's crop, darkened or lightened
            other = torch.roll(x, 1, 0) * (0.5 + rand(b, 1, 1, 1))
            fill = torch.where((rand(b) < cfg.p_occlude_texture).view(-1, 1, 1, 1), other, fill)
        fill = torch.where(edge.view(-1, 1, 1, 1), torch.zeros_like(fill), fill)  # the SDK pads with black
        x = torch.where(hidden[:, None], fill, x)
    return x.clamp(0, 1), p, visible_points(p, hidden)
